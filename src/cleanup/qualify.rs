//! Bare local names in the address fields of locally submitted mail get
//! this host's domain: cron's `From: root (Cron Daemon)` and `To: root`
//! become `root@HOST (Cron Daemon)` and `root@HOST`, the domain sendmail
//! gives the envelope of such mail (mta.conf's `hostname`). Only what
//! pickup hands over is rewritten: a network client's header is its own.
//!
//! Only the address itself changes: display names, comments, groups,
//! white space and folding stay byte for byte. A field whose value cannot
//! be read as an address list (of any bytes: Latin-1 display names are
//! common) is left as it is, whole.
//!
//! Trusts: nothing in the message; the header block is bounded by cleanup's
//! header size limit before it gets here.

use memchr::memchr;

/// The fields whose bare names are qualified (RFC 5322 3.6.2, 3.6.3,
/// 3.6.6).
const ADDRESS_FIELDS: [&str; 12] = [
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Resent-From",
    "Resent-Sender",
    "Resent-Reply-To",
    "Resent-To",
    "Resent-Cc",
    "Resent-Bcc",
];

/// `content` (CR LF line ends, the header block first) with every bare
/// local name in its address fields followed by `@domain`; `None` when
/// nothing needs to change (or `domain` is empty).
pub fn qualify_header(content: &[u8], domain: &str) -> Option<Vec<u8>> {
    if domain.is_empty() {
        return None;
    }
    let mut inserts = Vec::new();
    let mut pos = 0;
    // One field at a time: its first line, then its continuation lines.
    while pos < content.len() {
        let line_end = |from: usize| memchr(b'\n', &content[from..]).map_or(content.len(), |nl| from + nl + 1);
        let first_end = line_end(pos);
        let line = &content[pos..first_end];
        let Some(colon) = field_colon(line) else { break };
        let mut end = first_end;
        while end < content.len() && matches!(content[end], b' ' | b'\t') {
            end = line_end(end);
        }
        let name = trim_blanks(&line[..colon]);
        if ADDRESS_FIELDS.iter().any(|f| f.as_bytes().eq_ignore_ascii_case(name)) {
            let start = pos + colon + 1;
            if let Some(points) = bare_names(&content[start..end]) {
                inserts.extend(points.into_iter().map(|p| start + p));
            }
        }
        pos = end;
    }
    if inserts.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(content.len() + inserts.len() * (domain.len() + 1));
    let mut from = 0;
    for at in inserts {
        out.extend_from_slice(&content[from..at]);
        out.push(b'@');
        out.extend_from_slice(domain.as_bytes());
        from = at;
    }
    out.extend_from_slice(&content[from..]);
    Some(out)
}

/// The offset of the colon of a header field line (`name:`, blanks
/// allowed before the colon); `None` for anything else, which ends the
/// header block (the empty line among them).
fn field_colon(line: &[u8]) -> Option<usize> {
    let name = line.iter().take_while(|&&b| (0x21..=0x7e).contains(&b) && b != b':').count();
    let blanks = line[name..].iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    (name > 0 && line.get(name + blanks) == Some(&b':')).then_some(name + blanks)
}

fn trim_blanks(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(0, |i| i + 1);
    &s[..end]
}

/// A token of an address list, by its place in the value; comments and
/// white space (folding included) are skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    /// An atom or a quoted string, ending before `end`.
    Word { end: usize },
    /// A domain literal.
    Literal,
    /// One of `<>:;@,.`.
    Special(u8),
}

/// The tokens of a field value ([`crate::address::lex`]); `None` if it
/// does not tokenize.
fn tokens(v: &[u8]) -> Option<Vec<Tok>> {
    use crate::address::lex::{self, Kind};
    let toks = lex::tokens(v).ok()?;
    Some(
        toks.into_iter()
            .map(|t| match t.kind {
                Kind::Atom | Kind::Quoted => Tok::Word { end: t.end },
                Kind::Literal => Tok::Literal,
                Kind::Special(b) => Tok::Special(b),
            })
            .collect(),
    )
}

/// Where `@domain` goes after each bare local name in an address list
/// value (offsets into `value`); `None` if the value is not an address
/// list, and then nothing in it is touched.
fn bare_names(value: &[u8]) -> Option<Vec<usize>> {
    let toks = tokens(value)?;
    let mut points = Vec::new();
    let mut member: Vec<Tok> = Vec::new();
    let (mut in_angle, mut in_group) = (false, false);
    for t in toks {
        match t {
            Tok::Special(b'<') if !in_angle => {
                in_angle = true;
                member.push(t);
            }
            Tok::Special(b'<') => return None,
            Tok::Special(b'>') if in_angle => {
                in_angle = false;
                member.push(t);
            }
            Tok::Special(b'>') => return None,
            // Inside <...> a comma or a colon belongs to a source route.
            _ if in_angle => member.push(t),
            Tok::Special(b',') => points.extend(member_point(&std::mem::take(&mut member))?),
            Tok::Special(b':') if !in_group && !member.contains(&Tok::Special(b'<')) => {
                // A group's display name: words only.
                if member.is_empty() || !member.iter().all(|t| matches!(t, Tok::Word { .. } | Tok::Special(b'.'))) {
                    return None;
                }
                member.clear();
                in_group = true;
            }
            Tok::Special(b';') if in_group => {
                points.extend(member_point(&std::mem::take(&mut member))?);
                in_group = false;
            }
            Tok::Special(b':' | b';') => return None,
            t => member.push(t),
        }
    }
    if in_angle || in_group {
        return None;
    }
    points.extend(member_point(&member)?);
    Some(points)
}

/// For one member of a list: `Some(Some(at))` when it is a bare local
/// name (`@domain` goes at `at`), `Some(None)` when it needs nothing (it
/// has a domain, is `<>`, or is empty), `None` when it is malformed.
fn member_point(member: &[Tok]) -> Option<Option<usize>> {
    let Some(open) = member.iter().position(|t| *t == Tok::Special(b'<')) else {
        return addr_point(member);
    };
    // phrase <addr-spec>, nothing after the '>'.
    let phrase = &member[..open];
    if !phrase.iter().all(|t| matches!(t, Tok::Word { .. } | Tok::Special(b'.'))) {
        return None;
    }
    let close = member.iter().position(|t| *t == Tok::Special(b'>'))?;
    if close != member.len() - 1 {
        return None;
    }
    let mut inner = &member[open + 1..close];
    // An obsolete source route, @a,@b: before the address.
    if inner.first() == Some(&Tok::Special(b'@')) {
        let colon = inner.iter().position(|t| *t == Tok::Special(b':'))?;
        inner = &inner[colon + 1..];
    }
    if inner.is_empty() && open + 2 == member.len() {
        return Some(None);
    }
    addr_point(inner)
}

/// An addr-spec: with a domain it needs nothing; without one it must be
/// a local part (words joined by dots), after whose last word the domain
/// goes.
fn addr_point(spec: &[Tok]) -> Option<Option<usize>> {
    if spec.is_empty() {
        return Some(None);
    }
    if let Some(at) = spec.iter().position(|t| *t == Tok::Special(b'@')) {
        let (local, domain) = (&spec[..at], &spec[at + 1..]);
        return (local_part_end(local).is_some() && !domain.is_empty()).then_some(None);
    }
    local_part_end(spec).map(Some)
}

/// Where a local part (word, then dot and word, ...) ends; `None` if the
/// tokens are not one.
fn local_part_end(tokens: &[Tok]) -> Option<usize> {
    let mut end = None;
    for (i, t) in tokens.iter().enumerate() {
        match (t, i % 2) {
            (Tok::Word { end: e }, 0) => end = Some(*e),
            (Tok::Special(b'.'), 1) => {}
            _ => return None,
        }
    }
    if tokens.len().is_multiple_of(2) {
        return None;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(header: &str) -> String {
        let content = format!("{header}\r\nbody root\r\n");
        match qualify_header(content.as_bytes(), "host.example") {
            Some(c) => String::from_utf8(c).unwrap().strip_suffix("\r\nbody root\r\n").unwrap().to_string(),
            None => header.to_string(),
        }
    }

    #[test]
    fn crons_header_gets_the_domain() {
        assert_eq!(
            q("From: root (Cron Daemon)\r\nTo: root\r\nSubject: Cron <root@h> run-parts\r\n"),
            "From: root@host.example (Cron Daemon)\r\nTo: root@host.example\r\nSubject: Cron <root@h> run-parts\r\n"
        );
    }

    #[test]
    fn display_names_comments_and_groups_are_kept() {
        assert_eq!(q("From: \"Cron Daemon\" <root>"), "From: \"Cron Daemon\" <root@host.example>");
        assert_eq!(
            q("To: Jo Bloggs <jo>, ann@else.example, (x) bob (y)"),
            "To: Jo Bloggs <jo@host.example>, ann@else.example, (x) bob@host.example (y)"
        );
        assert_eq!(
            q("Cc: friends: ann, \"b c\"@x.example, <dee>;, eve"),
            "Cc: friends: ann@host.example, \"b c\"@x.example, <dee@host.example>;, eve@host.example"
        );
        assert_eq!(q("Reply-To: \"john doe\""), "Reply-To: \"john doe\"@host.example");
        assert_eq!(q("To: first.last"), "To: first.last@host.example");
        assert_eq!(q("To: <@relay.example:jo>"), "To: <@relay.example:jo@host.example>");
    }

    #[test]
    fn folded_fields_and_every_address_field_are_rewritten() {
        assert_eq!(
            q("To: ann,\r\n\tbob\r\nRESENT-TO : carol\r\nbcc: dave\r\nSender: op\r\nResent-From: root"),
            "To: ann@host.example,\r\n\tbob@host.example\r\nRESENT-TO : carol@host.example\r\nbcc: dave@host.example\r\nSender: op@host.example\r\nResent-From: root@host.example"
        );
    }

    #[test]
    fn other_fields_and_the_body_are_not_touched() {
        let content = b"Subject: root\r\nX-To: root\r\nTo: a@b.example\r\n\r\nTo: root\r\n";
        assert_eq!(qualify_header(content, "host.example"), None);
        // A line that is no header field ends the header block.
        let content = b"Subject: x\r\nnot a field\r\nTo: root\r\n";
        assert_eq!(qualify_header(content, "host.example"), None);
    }

    #[test]
    fn qualified_null_and_empty_addresses_need_nothing() {
        for h in ["To: a@b.example", "From: <>", "To: undisclosed-recipients:;", "To: a@[192.0.2.1]", "To: ,,a@b"] {
            assert_eq!(q(h), h, "{h}");
        }
    }

    #[test]
    fn a_field_that_is_not_an_address_list_is_left_whole() {
        for h in [
            "To: root; bob",
            "To: Jo Bloggs",
            "To: root, <unclosed",
            "From: root (unclosed comment",
            "To: a@",
            "To: <a> b",
            "To: a <b> <c>",
            "To: g: a; b: c",
        ] {
            assert_eq!(q(h), h, "{h}");
        }
    }

    #[test]
    fn latin1_display_names_are_kept_byte_for_byte() {
        let content = b"From: J\xf6rg <joerg>\r\n\r\n";
        let out = qualify_header(content, "host.example").unwrap();
        assert_eq!(out, b"From: J\xf6rg <joerg@host.example>\r\n\r\n");
    }

    #[test]
    fn no_domain_no_change() {
        assert_eq!(qualify_header(b"To: root\r\n\r\n", ""), None);
    }
}

//! Bare local names in the address fields of locally submitted mail get
//! this host's domain: cron's `From: root (Cron Daemon)` and `To: root`
//! become `root@HOST (Cron Daemon)` and `root@HOST`, the domain sendmail
//! gives the envelope of such mail (mta.conf's `hostname`). Only what
//! pickup hands over is rewritten: a network client's header is its own.
//!
//! Only the address itself changes: display names, comments, groups,
//! white space and folding stay byte for byte, but for a line the domains
//! make longer than RFC 5322's 998 octets, which is folded again after the
//! commas between its addresses (keeping to 76 characters where they
//! allow). A field whose value cannot be read as an address list (of any
//! bytes: Latin-1 display names are common), or with a line no folding
//! could bring within the limit once qualified (one address near 998
//! octets), is left as it is, whole.
//!
//! Trusts: nothing in the message; the header block is bounded by cleanup's
//! header size limit before it gets here.

use memchr::memchr;

use crate::header::{FOLD_AT, MAX_LINE};

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
    let mut out = Vec::new();
    // Of `content`, what is in `out` already.
    let mut copied = 0;
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
        if ADDRESS_FIELDS.iter().any(|f| f.as_bytes().eq_ignore_ascii_case(name))
            && let Some(list) = bare_names(&content[pos + colon + 1..end])
            && !list.points.is_empty()
        {
            let shift = |at: &Vec<usize>| at.iter().map(|p| colon + 1 + p).collect::<Vec<_>>();
            if let Some(field) = qualified_field(&content[pos..end], &shift(&list.points), &shift(&list.breaks), domain)
            {
                out.extend_from_slice(&content[copied..pos]);
                out.extend_from_slice(&field);
                copied = end;
            }
        }
        pos = end;
    }
    if copied == 0 {
        return None;
    }
    out.extend_from_slice(&content[copied..]);
    Some(out)
}

/// A header field (its lines with their line ends) with `@domain` at each
/// of `points`, each line the domains made longer than [`MAX_LINE`]
/// folded again at `breaks` (just after the commas between addresses);
/// `None` if such a line cannot be brought within the limit.
fn qualified_field(field: &[u8], points: &[usize], breaks: &[usize], domain: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(field.len() + points.len() * (domain.len() + 1));
    let mut start = 0;
    for line in field.split_inclusive(|&b| b == b'\n') {
        let end = start + line.len();
        let text_end = end - line.iter().rev().take_while(|&&b| b == b'\n' || b == b'\r').count();
        let here: Vec<usize> = points.iter().copied().filter(|&p| p > start && p <= text_end).collect();
        // The line with its domains, and where it may be folded there.
        let mut text = Vec::with_capacity(text_end - start + here.len() * (domain.len() + 1));
        let mut from = start;
        for &at in &here {
            text.extend_from_slice(&field[from..at]);
            text.push(b'@');
            text.extend_from_slice(domain.as_bytes());
            from = at;
        }
        text.extend_from_slice(&field[from..text_end]);
        if here.is_empty() || text.len() <= MAX_LINE {
            out.extend_from_slice(&text);
        } else {
            let moved = |b: usize| b - start + here.iter().filter(|&&p| p < b).count() * (domain.len() + 1);
            let folds: Vec<usize> = breaks.iter().filter(|&&b| b > start && b < text_end).map(|&b| moved(b)).collect();
            out.extend_from_slice(&refold(&text, &folds)?);
        }
        out.extend_from_slice(&field[text_end..end]);
        start = end;
    }
    Some(out)
}

/// `line` (no line end) folded at some of `folds` (offsets just after
/// a comma): before the white space there, or with a space added where
/// there is none, so that each line keeps to [`FOLD_AT`] where the folds
/// allow and to [`MAX_LINE`] always; `None` if a part between two folds is
/// too long for that. No fold leaves a line of white space alone.
fn refold(line: &[u8], folds: &[usize]) -> Option<Vec<u8>> {
    let blank = |b: u8| b == b' ' || b == b'\t';
    // Only where something follows on the line.
    let folds: Vec<usize> = folds.iter().copied().filter(|&f| line[f..].iter().any(|&b| !blank(b))).collect();
    let mut out = Vec::with_capacity(line.len() + folds.len() * 3);
    let (mut from, mut lead) = (0, 0);
    while line.len() - from + lead > FOLD_AT {
        // The last fold that keeps the line to FOLD_AT, or else the first
        // that keeps it to MAX_LINE.
        let later: Vec<usize> = folds.iter().copied().filter(|&f| f > from).collect();
        let fits = |limit: usize| move |&f: &usize| f - from + lead <= limit;
        let Some(at) =
            later.iter().copied().take_while(fits(FOLD_AT)).last().or(later.iter().copied().find(fits(MAX_LINE)))
        else {
            break;
        };
        out.extend_from_slice(&line[from..at]);
        out.extend_from_slice(b"\r\n");
        lead = usize::from(!blank(line[at]));
        if lead == 1 {
            out.push(b' ');
        }
        from = at;
    }
    (line.len() - from + lead <= MAX_LINE).then(|| {
        out.extend_from_slice(&line[from..]);
        out
    })
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

/// The tokens of a field value ([`crate::address::lex`]), each with
/// where it ends; `None` if it does not tokenize.
fn tokens(v: &[u8]) -> Option<Vec<(Tok, usize)>> {
    use crate::address::lex::{self, Kind};
    let toks = lex::tokens(v).ok()?;
    Some(
        toks.into_iter()
            .map(|t| match t.kind {
                Kind::Atom | Kind::Quoted => (Tok::Word { end: t.end }, t.end),
                Kind::Literal => (Tok::Literal, t.end),
                Kind::Special(b) => (Tok::Special(b), t.end),
            })
            .collect(),
    )
}

/// What qualifying an address list needs to know of it, by offsets into
/// its value.
#[derive(Debug, Default, PartialEq, Eq)]
struct List {
    /// Where `@domain` goes, after each bare local name.
    points: Vec<usize>,
    /// Just after each comma between its addresses: where a line may be
    /// folded.
    breaks: Vec<usize>,
}

/// The [`List`] of an address list value; `None` if the value is not an
/// address list, and then nothing in it is touched.
fn bare_names(value: &[u8]) -> Option<List> {
    let toks = tokens(value)?;
    let mut points = Vec::new();
    let mut breaks = Vec::new();
    let mut member: Vec<Tok> = Vec::new();
    let (mut in_angle, mut in_group) = (false, false);
    for (t, end) in toks {
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
            Tok::Special(b',') => {
                points.extend(member_point(&std::mem::take(&mut member))?);
                breaks.push(end);
            }
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
    Some(List { points, breaks })
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

    /// The lines of a header block, each checked: within MAX_LINE, and a
    /// continuation line not white space alone.
    fn checked_lines(header: &str) -> Vec<&str> {
        let lines: Vec<&str> = header.strip_suffix("\r\n").unwrap().split("\r\n").collect();
        for (i, l) in lines.iter().enumerate() {
            assert!(l.len() <= MAX_LINE, "line {i}: {} octets", l.len());
            assert!(!l.trim().is_empty(), "line {i} is blank");
        }
        lines
    }

    #[test]
    fn a_line_qualified_past_the_limit_is_folded_after_its_commas() {
        // 120 bare names on one line of 960 octets: 13 octets more each.
        let names: Vec<String> = (0..120).map(|i| format!("u{i:04}")).collect();
        let line = format!("To: {}", names.join(", "));
        assert!(line.len() < MAX_LINE);
        let header = format!("Subject: x\r\n{line}\r\nCc: jo\r\n");
        let out = q(&header);
        let lines = checked_lines(&out);
        // Folded before the space after a comma, each line within 76
        // characters: unfolded, the field is the qualified one.
        assert!(lines.len() > 20, "{out}");
        assert!(lines.iter().all(|l| l.len() <= FOLD_AT), "{out}");
        let qualified: Vec<String> = names.iter().map(|n| format!("{n}@host.example")).collect();
        assert_eq!(
            out.replace("\r\n ", " "),
            format!("Subject: x\r\nTo: {}\r\nCc: jo@host.example\r\n", qualified.join(", "))
        );
        assert!(lines[1].starts_with("To: u0000@host.example, u0001@host.example,"), "{}", lines[1]);
        assert!(lines[2].starts_with(" u0"), "{}", lines[2]);
    }

    #[test]
    fn only_the_lines_that_grew_past_the_limit_are_folded_again() {
        // A folded field: its first line is short and stays as it is; its
        // second line, with commas and no spaces, is folded with a space
        // added after a comma; its third, not lengthened, stays too.
        let names: Vec<String> = (0..150).map(|i| format!("u{i:04}")).collect();
        let long = names.join(",");
        let tail = format!("x@y.example,{}", "z".repeat(900));
        let header = format!("To: Jo <jo>,\r\n\t{long},\r\n {tail}@y.example\r\n");
        let out = q(&header);
        let lines = checked_lines(&out);
        assert_eq!(lines[0], "To: Jo <jo@host.example>,");
        assert!(lines[1].starts_with("\tu0000@host.example,u0001@host.example,"), "{}", lines[1]);
        assert!(lines[2].starts_with(" u00"), "{}", lines[2]);
        // The line that got no domain: byte for byte.
        assert_eq!(lines.last().unwrap(), &format!(" {tail}@y.example"));
        let qualified: Vec<String> = names.iter().map(|n| format!("{n}@host.example")).collect();
        assert_eq!(
            out.replace("\r\n ", ""),
            format!("To: Jo <jo@host.example>,\r\n\t{},{tail}@y.example\r\n", qualified.join(","))
        );
    }

    #[test]
    fn a_field_no_folding_can_bring_within_the_limit_is_left_whole() {
        // One name of 990 octets: with the domain, no line holds it.
        let long = "n".repeat(990);
        let header = format!("To: ann, {long}\r\nCc: bob\r\n");
        assert_eq!(q(&header), format!("To: ann, {long}\r\nCc: bob@host.example\r\n"));
        // Alone on a continuation line, one that fits: qualified.
        let fits = "n".repeat(MAX_LINE - 1 - "@host.example".len());
        let header = format!("To: ann, {fits}\r\n");
        let out = q(&header);
        assert_eq!(out, format!("To: ann@host.example,\r\n {fits}@host.example\r\n"));
        checked_lines(&out);
    }

    #[test]
    fn no_domain_no_change() {
        assert_eq!(qualify_header(b"To: root\r\n\r\n", ""), None);
    }
}

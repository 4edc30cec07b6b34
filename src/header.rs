//! The originator fields a message ought to carry (RFC 5322 3.6: From:
//! and Date: are required, Message-ID: is expected) and that mta gives a
//! message lacking them: sendmail to every message a local user submits,
//! cleanup to mail from the SMTP clients `cleanup.add_missing_headers`
//! names and to local submissions that bypassed sendmail's header work
//! (`sendmail -bs`). Both append them at the end of the header block, in
//! the order Message-ID:, Date:, From:, or their Resent- forms when the
//! message has a Resent- field (a message a user resends), as Postfix
//! does. This module decides which are missing and what they say; the
//! callers only say which fields a header has and where it ends.
//!
//! Every line it writes keeps to RFC 5322's 998 octets: a field is folded
//! before the spaces between its words (between the words of a display
//! name, before `<address>`), keeping to 76 characters where the words
//! allow. Nothing it writes has a word too long for a line: a display name
//! with such a word is written as RFC 2047 encoded words (by the caller),
//! which split anywhere, and an envelope sender is at most
//! [`MAX_SENDER`] octets (cleanup and sendmail refuse longer ones), so an
//! address is never broken.
//!
//! Trusts: nothing; the names it is given come from a message's header.
//! The values are the caller's, checked by it for control characters.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// RFC 5322 2.1.1: the most octets a line may hold, its CR LF not
/// counted.
pub const MAX_LINE: usize = 998;

/// Where a field mta writes is folded when its words allow: RFC 2047's 76
/// characters for a line with encoded words, within RFC 5322's 78.
pub const FOLD_AT: usize = 76;

/// The longest envelope sender mta takes, in octets: local's
/// `Return-Path: <sender>`, the longest header line that holds the sender
/// as one word, must fit in [`MAX_LINE`]; an address cannot be folded
/// (RFC 5321 allows only 256 octets in a path, which smtpd holds to; this
/// bounds what a local user gives `sendmail -f`).
pub const MAX_SENDER: usize = MAX_LINE - "Return-Path: <>".len();

/// The fields this module adds, in the order added.
const FIELDS: [&str; 3] = ["Message-ID", "Date", "From"];
const RESENT_FIELDS: [&str; 3] = ["Resent-Message-ID", "Resent-Date", "Resent-From"];

/// Which originator fields a header block has, noted name by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// A field whose name starts with `Resent-`.
    resent: bool,
    /// Bit i: FIELDS[i] seen; bit 3 + i: RESENT_FIELDS[i] seen.
    fields: u8,
}

impl Seen {
    /// A field named `name` (without the colon or white space before it;
    /// case does not matter).
    pub fn note(&mut self, name: &[u8]) {
        if name.len() > 7 && name[..7].eq_ignore_ascii_case(b"Resent-") {
            self.resent = true;
        }
        for (i, f) in FIELDS.iter().chain(RESENT_FIELDS.iter()).enumerate() {
            if name.eq_ignore_ascii_case(f.as_bytes()) {
                self.fields |= 1 << i;
            }
        }
    }

    /// The names of the fields the block lacks, in the order they are
    /// added: the plain ones, or with a Resent- field in the block, the
    /// Resent- ones.
    pub fn missing(&self) -> impl Iterator<Item = &'static str> + '_ {
        let (names, shift) = if self.resent { (RESENT_FIELDS, 3) } else { (FIELDS, 0) };
        names.into_iter().enumerate().filter(move |(i, _)| self.fields & (1 << (i + shift)) == 0).map(|(_, n)| n)
    }

    /// Whether a field would be added.
    pub fn complete(&self) -> bool {
        self.missing().next().is_none()
    }
}

/// What the fields added say.
#[derive(Clone, Copy, Debug)]
pub struct Values<'a> {
    /// For (Resent-)Message-ID:, without angle brackets ([`message_id`]).
    pub message_id: &'a str,
    /// For (Resent-)Date:, an RFC 5322 date ([`crate::date::rfc5322_date`]).
    pub date: &'a str,
    /// For (Resent-)From: ([`originator`]).
    pub from: &'a Originator,
}

/// The value of an added From:, as the words it may be folded between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Originator {
    /// The words of an RFC 5322 display name, already quoted or encoded
    /// (a quoted string may be split into words at its spaces: folding
    /// white space is allowed inside it); empty for none.
    pub display: Vec<String>,
    /// The address, at most [`MAX_SENDER`] octets.
    pub address: String,
}

impl Originator {
    /// The words of the field value: the address alone, or the display
    /// name and `<address>`.
    fn words(&self) -> Vec<String> {
        if self.display.is_empty() {
            return vec![self.address.clone()];
        }
        let mut words = self.display.clone();
        words.push(format!("<{}>", self.address));
        words
    }
}

/// Append the fields `seen` lacks to `out` as header lines (CR LF
/// ended, folded as [`folded_field`] folds them), and return their names
/// in the order added. A From: whose words do not fit in lines (an
/// address longer than [`MAX_SENDER`], which the callers refuse before
/// this) is not added: no line is ever longer than [`MAX_LINE`].
pub fn append_missing(out: &mut Vec<u8>, seen: &Seen, values: &Values<'_>) -> Vec<&'static str> {
    let mut added = Vec::new();
    for name in seen.missing() {
        let words = match name {
            "Message-ID" | "Resent-Message-ID" => vec![format!("<{}>", values.message_id)],
            "Date" | "Resent-Date" => vec![values.date.to_string()],
            _ => values.from.words(),
        };
        if let Some(field) = folded_field(name, &words) {
            out.extend_from_slice(field.as_bytes());
            added.push(name);
        }
    }
    added
}

/// The header field `name: ` and `words` joined by single spaces, CR LF
/// ended, folded before those spaces (RFC 5322 3.2.2) so that its lines
/// keep to [`FOLD_AT`] characters where the words allow and never pass
/// [`MAX_LINE`] octets: a word goes on after the last as long as the line
/// stays within FOLD_AT (the first word after the name as long as it
/// stays within MAX_LINE), and starts a line of its own otherwise. None
/// if a word is too long for any line. Each word must be free of line
/// ends and hold no space it could be folded at only with a quoted pair
/// broken (the callers' words are atoms, parts of a quoted string split
/// at unescaped spaces, encoded words, `<address>`).
pub fn folded_field(name: &str, words: &[impl AsRef<str>]) -> Option<String> {
    let mut out = format!("{name}:");
    let mut line = out.len();
    for (i, word) in words.iter().map(AsRef::as_ref).enumerate() {
        let need = 1 + word.len();
        if need > MAX_LINE {
            return None;
        }
        let room = if i == 0 { MAX_LINE } else { FOLD_AT };
        if line + need <= room {
            line += need;
        } else {
            out.push_str("\r\n");
            line = need;
        }
        out.push(' ');
        out.push_str(word);
    }
    out.push_str("\r\n");
    Some(out)
}

/// The value of a missing From: for the envelope sender `sender` (empty
/// or `<>` for the null sender, written `MAILER-DAEMON@hostname`), with
/// `display` (the words of an RFC 5322 display name, already quoted or
/// encoded; empty for none) before the address.
pub fn originator(sender: &str, display: Vec<String>, hostname: &str) -> Originator {
    let address = match sender {
        "" | "<>" => format!("MAILER-DAEMON@{hostname}"),
        from => from.to_string(),
    };
    Originator { display, address }
}

/// A new Message-ID, without angle brackets: [`unique`]`@hostname`.
pub fn message_id(hostname: &str) -> String {
    format!("{}@{hostname}", unique())
}

/// A name no other process picks: time, pid and randomness, in hex
/// (maildrop file names in postdrop, Message-ID local parts).
pub fn unique() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut h = RandomState::new().build_hasher();
    h.write_u128(now.as_nanos());
    h.write_u32(std::process::id());
    format!("{:010X}{:08X}{:016X}", now.as_secs(), std::process::id(), h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(names: &[&str]) -> Seen {
        let mut s = Seen::default();
        names.iter().for_each(|n| s.note(n.as_bytes()));
        s
    }

    fn missing(names: &[&str]) -> Vec<&'static str> {
        seen(names).missing().collect()
    }

    #[test]
    fn missing_fields_by_name_without_case() {
        assert_eq!(missing(&[]), ["Message-ID", "Date", "From"]);
        assert_eq!(missing(&["Subject", "date", "FROM"]), ["Message-ID"]);
        assert_eq!(missing(&["message-id", "Date", "From"]), Vec::<&str>::new());
        assert!(seen(&["Message-Id", "Date", "From"]).complete());
        // Names that only look alike.
        assert_eq!(missing(&["X-Date", "From-", "Message-IDs"]), ["Message-ID", "Date", "From"]);
    }

    #[test]
    fn a_resent_field_asks_for_the_resent_forms() {
        assert_eq!(missing(&["Resent-To", "Date", "From", "Message-ID"]), RESENT_FIELDS);
        assert_eq!(missing(&["resent-from", "Resent-Date"]), ["Resent-Message-ID"]);
        // `Resent-` alone is no Resent- field.
        assert_eq!(missing(&["Resent-", "Date", "From", "Message-ID"]), Vec::<&str>::new());
    }

    #[test]
    fn appended_lines() {
        let mut out = b"Subject: x\r\n".to_vec();
        let from = originator("a@b.example", Vec::new(), "h");
        let values = Values { message_id: "u@h.example", date: "Thu, 1 Jan 1970 00:00:00 +0000", from: &from };
        let added = append_missing(&mut out, &seen(&["Subject", "From"]), &values);
        assert_eq!(added, ["Message-ID", "Date"]);
        assert_eq!(out, b"Subject: x\r\nMessage-ID: <u@h.example>\r\nDate: Thu, 1 Jan 1970 00:00:00 +0000\r\n");
    }

    /// The From: line(s) added for `from`, as `name`.
    fn from_field(from: &Originator, resent: bool) -> String {
        let mut out = Vec::new();
        let names: &[&str] =
            if resent { &["Resent-To", "Resent-Date", "Resent-Message-ID"] } else { &["Date", "Message-ID"] };
        let values = Values { message_id: "u@h", date: "d", from };
        append_missing(&mut out, &seen(names), &values);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn from_values() {
        let words = |w: &[&str]| w.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(from_field(&originator("", Vec::new(), "h.example"), false), "From: MAILER-DAEMON@h.example\r\n");
        assert_eq!(
            from_field(&originator("<>", words(&["Mail", "System"]), "h.example"), false),
            "From: Mail System <MAILER-DAEMON@h.example>\r\n"
        );
        assert_eq!(from_field(&originator("a@b.example", Vec::new(), "h"), true), "Resent-From: a@b.example\r\n");
    }

    /// Every line of `field` within MAX_LINE (and FOLD_AT unless `long`
    /// allows a longer word), continuation lines starting with a space,
    /// and the field unfolded as `unfolded`.
    fn check_folded(field: &str, unfolded: &str, long: bool) {
        let lines: Vec<&str> = field.strip_suffix("\r\n").unwrap().split("\r\n").collect();
        for (i, l) in lines.iter().enumerate() {
            assert!(l.len() <= MAX_LINE, "line {i} has {} octets", l.len());
            assert!(long || l.len() <= FOLD_AT, "line {i}: {l:?}");
            assert!(i == 0 || (l.starts_with(' ') && !l.trim().is_empty()), "line {i}: {l:?}");
        }
        assert_eq!(field.replace("\r\n", ""), unfolded);
    }

    #[test]
    fn a_long_display_name_is_folded_between_its_words() {
        // A full name far longer than a line: folded before its words and
        // before the address, which stays whole.
        let name: Vec<String> = (0..400).map(|i| format!("Name{i}")).collect();
        let from = originator("someone@b.example", name.clone(), "h");
        let field = from_field(&from, false);
        check_folded(&field, &format!("From: {} <someone@b.example>", name.join(" ")), false);
        assert!(field.ends_with(" <someone@b.example>\r\n"), "{field}");
        let field = from_field(&from, true);
        check_folded(&field, &format!("Resent-From: {} <someone@b.example>", name.join(" ")), false);
        // A short one stays on one line, as before.
        let from = originator("a@b.example", vec![String::from("Jo"), String::from("Bloggs")], "h");
        assert_eq!(from_field(&from, false), "From: Jo Bloggs <a@b.example>\r\n");
    }

    #[test]
    fn the_longest_sender_fits_a_line_of_its_own() {
        // The longest sender, after a display name: its own line.
        let address = format!("{}@{}", "l".repeat(64), "d".repeat(MAX_SENDER - 65));
        assert_eq!(address.len(), MAX_SENDER);
        let from = originator(&address, vec![String::from("Jo")], "h");
        let field = from_field(&from, true);
        check_folded(&field, &format!("Resent-From: Jo <{address}>"), true);
        assert!(field.ends_with(&format!("\r\n <{address}>\r\n")));
        // Without one, on the first line of the longest name there is.
        let field = from_field(&originator(&address, Vec::new(), "h"), true);
        assert_eq!(field, format!("Resent-From: {address}\r\n"));
        assert!(field.len() - 2 <= MAX_LINE);
        assert_eq!(format!("Return-Path: <{address}>").len(), MAX_LINE);
    }

    #[test]
    fn a_word_too_long_for_any_line_is_not_written() {
        let address = format!("{}@d.example", "l".repeat(MAX_LINE));
        let mut out = Vec::new();
        let from = originator(&address, vec![String::from("Jo")], "h");
        let values = Values { message_id: "u@h", date: "d", from: &from };
        assert_eq!(append_missing(&mut out, &seen(&[]), &values), ["Message-ID", "Date"]);
        assert!(!String::from_utf8(out).unwrap().contains("From:"));
        // The longest word there can be: on a line of its own.
        let word = "a".repeat(MAX_LINE - 1);
        assert_eq!(folded_field("X", &[&word]), Some(format!("X:\r\n {word}\r\n")));
        assert_eq!(folded_field("X", &["a".repeat(MAX_LINE)]), None);
    }

    #[test]
    fn every_added_field_fits_with_the_longest_host_name() {
        // A host name at its limit (253 octets, mta.conf), the longest
        // sender: no line of the added fields passes the limit.
        let host = format!("{}.example", "h".repeat(245));
        let id = message_id(&host);
        let from = originator(&"s".repeat(MAX_SENDER), Vec::new(), &host);
        let date = crate::date::rfc5322_date(u64::from(u32::MAX));
        let mut out = Vec::new();
        let values = Values { message_id: &id, date: &date, from: &from };
        append_missing(&mut out, &seen(&["Resent-To"]), &values);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.lines().all(|l| l.len() <= MAX_LINE), "{text}");
    }

    #[test]
    fn message_ids_differ_and_name_the_host() {
        let (a, b) = (message_id("h.example"), message_id("h.example"));
        assert_ne!(a, b);
        let (local, host) = a.split_once('@').unwrap();
        assert_eq!(host, "h.example");
        assert_eq!(local.len(), 34);
        assert!(local.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
    }
}

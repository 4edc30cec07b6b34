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
//! Trusts: nothing; the names it is given come from a message's header.
//! The values are the caller's, checked by it for control characters.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

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
    /// For (Resent-)From: ([`from_value`]).
    pub from: &'a str,
}

/// Append the fields `seen` lacks to `out` as header lines (CR LF
/// ended), and return their names in the order added.
pub fn append_missing(out: &mut Vec<u8>, seen: &Seen, values: &Values<'_>) -> Vec<&'static str> {
    let mut added = Vec::new();
    for name in seen.missing() {
        let value = match name {
            "Message-ID" | "Resent-Message-ID" => format!("<{}>", values.message_id),
            "Date" | "Resent-Date" => values.date.to_string(),
            _ => values.from.to_string(),
        };
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        added.push(name);
    }
    added
}

/// The value of a missing From: for the envelope sender `sender` (empty
/// or `<>` for the null sender, written `MAILER-DAEMON@hostname`), with
/// `display` (an RFC 5322 display name, already quoted or encoded) before
/// the address when there is one.
pub fn from_value(sender: &str, display: Option<&str>, hostname: &str) -> String {
    let address = match sender {
        "" | "<>" => format!("MAILER-DAEMON@{hostname}"),
        from => from.to_string(),
    };
    match display {
        Some(name) => {
            // Keep the line under RFC 5322's 998 bytes: fold before the
            // address when it would not be.
            let fold = if "Resent-From: ".len() + name.len() + address.len() + 3 > 998 { "\r\n" } else { "" };
            format!("{name}{fold} <{address}>")
        }
        None => address,
    }
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
        let values = Values { message_id: "u@h.example", date: "Thu, 1 Jan 1970 00:00:00 +0000", from: "a@b.example" };
        let added = append_missing(&mut out, &seen(&["Subject", "From"]), &values);
        assert_eq!(added, ["Message-ID", "Date"]);
        assert_eq!(out, b"Subject: x\r\nMessage-ID: <u@h.example>\r\nDate: Thu, 1 Jan 1970 00:00:00 +0000\r\n");
    }

    #[test]
    fn from_values() {
        assert_eq!(from_value("", None, "h.example"), "MAILER-DAEMON@h.example");
        assert_eq!(from_value("<>", Some("Mail System"), "h.example"), "Mail System <MAILER-DAEMON@h.example>");
        assert_eq!(from_value("a@b.example", None, "h.example"), "a@b.example");
        let long = "x".repeat(990);
        assert!(from_value("a@b.example", Some(&long), "h").contains("\r\n <a@b.example>"));
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

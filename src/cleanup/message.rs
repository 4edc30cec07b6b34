//! What cleanup does to a message's content on its way into the queue:
//! it prepends a Received: header built only from values it checks (no
//! CR, LF or control character from the envelope can reach the header
//! block), and scans the header block as it streams past, counting
//! Received: headers (the hop count) and its size.
//!
//! Trusts: nothing in the content or envelope; smtpd's parsing is not
//! relied upon for header safety.

use std::net::IpAddr;

use crate::ipc::msg::MessageEnvelope;

/// The header block, scanned as content streams through.
#[derive(Debug, Default)]
pub struct HeaderScan {
    /// Bytes of header block seen so far.
    pub size: u64,
    /// Received: headers seen.
    pub hops: u32,
    /// A byte that is not ASCII was seen in the block (a header that
    /// needs SMTPUTF8 to be relayed).
    pub non_ascii: bool,
    /// The header block has ended: at its empty line, or at the first
    /// line that is neither a header field nor a continuation (which
    /// starts the body, as Postfix takes it; that line is not counted).
    pub done: bool,
    /// Bytes of the current line seen (up to the name's end).
    line: Vec<u8>,
    at_line_start: bool,
    /// Bytes of the current line seen in all.
    line_len: u64,
    /// What the current line has shown itself to be so far.
    kind: LineKind,
}

/// A header block line, classified as its bytes arrive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum LineKind {
    /// Nothing seen yet.
    #[default]
    Start,
    /// A field name so far (RFC 5322 ftext).
    Name,
    /// A field name and white space (the obsolete syntax allows it
    /// before the colon).
    NameSpace,
    /// A field, a continuation, or an empty line (ends at its LF).
    Known,
}

/// RFC 5322 ftext: printable ASCII but the colon.
fn ftext(b: u8) -> bool {
    (33..=126).contains(&b) && b != b':'
}

/// How much of a line start is kept to recognise the header name.
const NAME_PREFIX: usize = 9;

impl HeaderScan {
    pub fn new() -> HeaderScan {
        HeaderScan { at_line_start: true, ..HeaderScan::default() }
    }

    /// Scan a chunk of content (CR LF line ends).
    pub fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if self.done {
                return;
            }
            self.size += 1;
            if self.at_line_start {
                self.line.clear();
                self.at_line_start = false;
                self.line_len = 0;
                self.kind = LineKind::Start;
            }
            self.line_len += 1;
            self.kind = match (self.kind, b) {
                (LineKind::Known, _) => LineKind::Known,
                (LineKind::Start, b' ' | b'\t' | b'\r' | b'\n') => LineKind::Known,
                (LineKind::Start | LineKind::Name, b) if ftext(b) => LineKind::Name,
                (LineKind::Name | LineKind::NameSpace, b':') => LineKind::Known,
                (LineKind::Name | LineKind::NameSpace, b' ' | b'\t') => LineKind::NameSpace,
                _ => {
                    // Not a header field: the body starts with this line.
                    self.size -= self.line_len;
                    self.done = true;
                    return;
                }
            };
            self.non_ascii |= !b.is_ascii();
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                if line == b"\r" || line.is_empty() {
                    self.done = true;
                } else if line.len() >= NAME_PREFIX && line[..NAME_PREFIX].eq_ignore_ascii_case(b"received:") {
                    self.hops += 1;
                }
                self.at_line_start = true;
            } else if self.line.len() < NAME_PREFIX {
                self.line.push(b);
            }
        }
    }
}

/// Why cleanup refuses a message whose header block scanned as `scan`,
/// given the limits on `Received:` headers (`hops`) and on the block's
/// size: code, enhanced status and text; None if it takes it. sendmail
/// asks the same before it hands a message on.
pub fn header_refusal(scan: &HeaderScan, hops: u32, header_size: u32) -> Option<(u16, &'static str, String)> {
    if scan.hops > hops {
        Some((554, "5.4.6", format!("too many hops ({} Received: headers); mail loop?", scan.hops)))
    } else if scan.size > u64::from(header_size) {
        Some((552, "5.3.4", format!("the message header is larger than {header_size} bytes")))
    } else {
        None
    }
}

/// Keep only characters that are safe in a header: printable ASCII, with
/// anything else replaced, and bounded in length.
pub fn header_safe(s: &str, max: usize) -> String {
    s.chars().take(max).map(|c| if (' '..='~').contains(&c) && c != '\\' { c } else { '?' }).collect()
}

/// An RFC 5322 date in UTC (sandboxed roles never read time zone files).
pub use crate::date::rfc5322_date;

/// A client address as the inside of an RFC 5321 address literal:
/// `192.0.2.1`, `IPv6:2001:db8::1` (4.1.3).
fn address_literal(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("IPv6:{v6}"),
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => header_safe(address, 64),
    }
}

/// The Received: header cleanup adds (folded, CR LF terminated).
pub fn received(env: &MessageEnvelope, hostname: &str, queue_id: &str, unix: u64) -> String {
    if let Some(uid) = env.submitter {
        return format!(
            "Received: by {hostname} (mta, from userid {uid})\r\n\tid {queue_id};\r\n\t{}\r\n",
            rfc5322_date(unix)
        );
    }
    if env.protocol == "local" {
        // A delivery status notification mta wrote itself.
        return format!("Received: by {hostname} (mta)\r\n\tid {queue_id};\r\n\t{}\r\n", rfc5322_date(unix));
    }
    let helo = header_safe(&env.helo, 255);
    let client_name = header_safe(&env.client_hostname, 255);
    let client_addr = address_literal(&env.client_address);
    let mut h = format!("Received: from {helo} ({client_name} [{client_addr}])\r\n\tby {hostname} (mta)");
    if let Some(tls) = &env.tls {
        h.push_str(&format!(" ({})", header_safe(tls, 128)));
    }
    h.push_str(&format!(" with {} id {queue_id}", header_safe(&env.protocol, 16)));
    if let [only] = env.recipients.as_slice() {
        h.push_str(&format!("\r\n\tfor <{}>", header_safe(&only.address, 512)));
    }
    h.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(unix)));
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::msg::MessageRecipient;

    #[test]
    fn hops_and_size() {
        let mut s = HeaderScan::new();
        s.feed(b"Received: a\r\n\tcontinued\r\nRECEIVED: b\r\nSubject: Received: no\r\n");
        s.feed(b"X-Received: no\r\n\r\nReceived: in body\r\n");
        assert_eq!(s.hops, 2);
        assert!(s.done);
        assert_eq!(s.size, 79);
    }

    #[test]
    fn a_line_that_is_no_header_field_starts_the_body() {
        // No empty line: a script's `Subject:` and then its log.
        let mut s = HeaderScan::new();
        s.feed(b"Subject: backup log\r\nReceived: a\r\n");
        s.feed(b"2026-11-23 backup started\r\nReceived: in the log\r\n");
        s.feed(&b"x".repeat(200_000));
        assert!(s.done);
        assert_eq!((s.hops, s.size), (1, 34));
        // White space before the colon is a field (obsolete syntax); a
        // name with a space inside, or no colon, is not.
        for (text, fields) in [
            (&b"Subject : x\r\nA b: c\r\n"[..], 13),
            (b"Subject: x\r\nnocolon\r\n", 12),
            (b"Subject: x\r\n:x\r\n", 12),
            (b"From sender Mon Nov 23\r\nSubject: x\r\n", 0),
        ] {
            let mut s = HeaderScan::new();
            s.feed(text);
            assert!(s.done, "{text:?}");
            assert_eq!(s.size, fields, "{text:?}");
        }
        // No header at all.
        let mut s = HeaderScan::new();
        s.feed(b"just text\r\n");
        assert_eq!((s.done, s.size), (true, 0));
    }

    #[test]
    fn non_ascii_in_the_header_block_only() {
        let scan = |chunks: &[&[u8]]| {
            let mut h = HeaderScan::new();
            chunks.iter().for_each(|c| h.feed(c));
            h.non_ascii
        };
        assert!(!scan(&[b"Subject: plain\r\n\r\nbody \xc3\xa9t\xc3\xa9\r\n"]));
        assert!(scan(&[b"Subject: \xc3\xa9t\xc3\xa9\r\n\r\nbody\r\n"]));
        assert!(!scan(&[b"Subject: plain\n\nbody \xff\n"]), "LF line ends");
        // Split anywhere, even between the CR and the LF of the empty line.
        assert!(!scan(&[b"Subject: x\r\n\r", b"\n\xc3\xa9"]));
        assert!(scan(&[b"Subject: x\r\nFrom: a", b"\xc3", b"\xa9\r\n\r\n"]));
        // A CR alone is no empty line; a folded line goes on.
        assert!(scan(&[b"Subject: x\r\r\n \xc3\xa9\r\n\r\n"]));
        // No empty line: the whole content is the header block...
        assert!(!scan(&[b"Subject: x\r\n", b"To: y"]));
        assert!(scan(&[b"Subject: x\r\nTo: \xe2\x82\xac"]));
        assert!(!scan(&[b""]));
        // ...up to a line that is no header field.
        assert!(!scan(&[b"Subject: x\r\n\xc3\xa9t\xc3\xa9 in the body\r\n"]));
    }

    #[test]
    fn hops_across_chunks() {
        let mut s = HeaderScan::new();
        for b in b"Rece" {
            s.feed(&[*b]);
        }
        s.feed(b"ived: x\r\n\r\n");
        assert_eq!(s.hops, 1);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(1_795_000_000), "Wed, 18 Nov 2026 11:06:40 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn an_ipv6_client_is_an_ipv6_address_literal() {
        // RFC 5321 4.1.3: `[IPv6:...]`, as Postfix writes it.
        let first = |client: &str| {
            let env = MessageEnvelope {
                client_address: client.to_string(),
                ..MessageEnvelope::internal(String::new(), Vec::new(), false, false, "client.example")
            };
            let env =
                MessageEnvelope { protocol: String::from("ESMTP"), client_hostname: String::from("unknown"), ..env };
            received(&env, "mx.example.org", "Q1", 0).lines().next().unwrap().to_string()
        };
        assert_eq!(first("2001:db8::1"), "Received: from client.example (unknown [IPv6:2001:db8::1])");
        assert_eq!(first("::1"), "Received: from client.example (unknown [IPv6:::1])");
        assert_eq!(first("192.0.2.1"), "Received: from client.example (unknown [192.0.2.1])");
        // What is no address at all is only made safe.
        assert_eq!(first("no\raddress"), "Received: from client.example (unknown [no?address])");
    }

    #[test]
    fn the_with_word_is_written_as_given() {
        let env = MessageEnvelope {
            protocol: String::from("UTF8SMTPS"),
            client_address: String::from("192.0.2.1"),
            ..MessageEnvelope::internal(String::new(), Vec::new(), false, false, "client.example")
        };
        assert!(received(&env, "mx.example.org", "Q1", 0).contains("\tby mx.example.org (mta) with UTF8SMTPS id Q1"));
    }

    #[test]
    fn received_refuses_injection() {
        let env = MessageEnvelope {
            sender: String::from("a@b.example"),
            recipients: vec![MessageRecipient { address: String::from("x@y\r\nBcc: evil"), notify: None, orcpt: None }],
            body: Default::default(),
            smtputf8: false,
            ret: None,
            envid: None,
            helo: String::from("evil\r\nX-Injected: yes"),
            protocol: String::from("ESMTP"),
            client_address: String::from("192.0.2.1"),
            client_hostname: String::from("unknown"),
            tls: None,
            submitter: None,
        };
        let h = received(&env, "mx.example.org", "Q1", 0);
        assert!(!h.contains("\r\nX-Injected"));
        assert!(!h.contains("\r\nBcc"));
        assert_eq!(h.matches("\r\n").count(), 4, "{h}");
        assert!(h.starts_with("Received: from evil??X-Injected: yes (unknown [192.0.2.1])\r\n\tby mx.example.org"));
    }
}

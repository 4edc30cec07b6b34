//! What cleanup does to a message's content on its way into the queue:
//! it prepends a Received: header built only from values it checks (no
//! CR, LF or control character from the envelope can reach the header
//! block), scans the header block as it streams past, counting Received:
//! headers (the hop count) and its size and noting its originator fields
//! and where it ends, and for the clients it completes the header of,
//! appends the fields missing there.
//!
//! Trusts: nothing in the content or envelope; smtpd's parsing is not
//! relied upon for header safety.

use std::net::IpAddr;

use crate::config::smtp::{HeaderClients, Network};
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
    /// The block ended at its empty line (not at a line of the body).
    pub empty_line: bool,
    /// Bytes of the block's complete lines before its end (its empty
    /// line, or the line that starts the body): where fields can be
    /// added to it.
    pub fields: u64,
    /// The originator fields the block has (for [`crate::header`]).
    pub seen: crate::header::Seen,
    /// The value of the block's first Message-ID: field, continuation
    /// lines joined, at most [`MAX_MESSAGE_ID`] bytes (for the log).
    pub message_id: Option<Vec<u8>>,
    /// The current line is that field or its continuation.
    in_message_id: bool,
    /// The first bytes of the current line (enough for the names noted).
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

/// How much of a line start is kept to recognise a field name: the
/// longest name noted (`Resent-Message-ID`) and some white space after it.
const NAME_PREFIX: usize = 32;

/// The most bytes of a Message-ID: field's value kept for the log.
pub const MAX_MESSAGE_ID: usize = 256;

impl HeaderScan {
    pub fn new() -> HeaderScan {
        HeaderScan { at_line_start: true, ..HeaderScan::default() }
    }

    /// The scan of a whole message (or of its header).
    pub fn scan(content: &[u8]) -> HeaderScan {
        let mut s = HeaderScan::new();
        s.feed(content);
        s
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
                // Only a continuation line goes on with the field.
                self.in_message_id &= b == b' ' || b == b'\t';
            }
            self.line_len += 1;
            let was = self.kind;
            self.kind = match (was, b) {
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
            if b == b':' && was != LineKind::Known {
                // A field's colon: the line so far is its name, perhaps
                // with white space (cut short past NAME_PREFIX, when it is
                // none of the names noted).
                self.field(self.line.len());
            }
            self.non_ascii |= !b.is_ascii();
            if self.in_message_id
                && let Some(v) = self.message_id.as_mut()
                && v.len() < MAX_MESSAGE_ID
                && b != b'\r'
                && b != b'\n'
            {
                v.push(b);
            }
            if b == b':' && was != LineKind::Known && self.message_id.is_none() {
                let name = self.line.trim_ascii_end();
                if name.eq_ignore_ascii_case(b"Message-ID") {
                    self.message_id = Some(Vec::new());
                    self.in_message_id = true;
                }
            }
            if b == b'\n' {
                if self.line_len == 1 || (self.line_len == 2 && self.line.first() == Some(&b'\r')) {
                    self.done = true;
                    self.empty_line = true;
                } else {
                    self.fields = self.size;
                }
                self.at_line_start = true;
            } else if self.line.len() < NAME_PREFIX {
                self.line.push(b);
            }
        }
    }

    /// A field whose name (and white space) is the first `len` bytes of
    /// the line.
    fn field(&mut self, len: usize) {
        let name = self.line[..len].trim_ascii_end();
        if name.eq_ignore_ascii_case(b"Received") {
            self.hops += 1;
        }
        self.seen.note(name);
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

/// Whether cleanup gives this message the originator fields it lacks
/// (Message-ID:, Date:, From:; `cleanup.add_missing_headers`): a local
/// user's submission (through pickup) unless `none`; mail from an SMTP
/// client as `clients` says, where a client on this host is one at a
/// loopback address or at the address it connected to; never mail this
/// host makes itself (notices, forwarded mail), which is foreign or
/// complete.
pub fn completes_header(clients: HeaderClients, env: &MessageEnvelope, networks: &[Network]) -> bool {
    if env.protocol == "local" {
        return env.submitter.is_some() && clients != HeaderClients::None;
    }
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let client = env.client_address.parse::<IpAddr>().ok().map(canonical);
    let server = env.server_address.parse::<IpAddr>().ok().map(canonical);
    let on_this_host = client.is_some_and(|c| c.is_loopback() || Some(c) == server);
    match clients {
        HeaderClients::None => false,
        HeaderClients::Local => on_this_host,
        HeaderClients::Networks => on_this_host || client.is_some_and(|c| networks.iter().any(|n| n.contains(c))),
        HeaderClients::All => true,
    }
}

/// The header lines cleanup adds to a message whose header block has
/// the originator fields `seen`: a Message-ID: as sendmail makes one, the
/// arrival time as Date:, and the envelope sender as From: (or their
/// Resent- forms). None for a sender that cannot be written into a
/// header (cleanup refuses such an envelope before this). With them, the
/// Message-ID given, when a Message-ID: field (not a Resent- one) is
/// among them.
pub fn missing_fields(
    seen: &crate::header::Seen,
    env: &MessageEnvelope,
    hostname: &str,
    unix: u64,
) -> (Vec<u8>, Option<String>) {
    let mut out = Vec::new();
    if seen.complete() || env.sender.chars().any(char::is_control) {
        return (out, None);
    }
    let message_id = crate::header::message_id(hostname);
    let date = rfc5322_date(unix);
    let from = crate::header::originator(&env.sender, Vec::new(), hostname);
    let values = crate::header::Values { message_id: &message_id, date: &date, from: &from };
    let added = crate::header::append_missing(&mut out, seen, &values);
    let id = added.contains(&"Message-ID").then(|| format!("<{message_id}>"));
    (out, id)
}

/// What cleanup logs of a message's Message-ID, as Postfix does
/// (`QUEUEID: message-id=<...>`): the value of its Message-ID: field
/// (`found`, as [`HeaderScan`] kept it), white space collapsed; else the
/// one cleanup gave it (`added`); else `<>`. Made safe for the log and
/// at most [`MAX_MESSAGE_ID`] bytes.
pub fn logged_message_id(found: Option<&[u8]>, added: Option<&str>) -> String {
    let value = match (found, added) {
        (Some(v), _) => String::from_utf8_lossy(v).split_whitespace().collect::<Vec<_>>().join(" "),
        (None, Some(a)) => a.to_string(),
        (None, None) => String::new(),
    };
    if value.is_empty() {
        return String::from("<>");
    }
    crate::log::sanitize(&value, MAX_MESSAGE_ID)
}

/// Append `body` to `out` with `fields` (complete header lines) added at
/// the end of its header block, which `scan` (of all of `body`)
/// describes: before the block's empty line; before the line that starts
/// the body, with the empty line the block lacked; or, when the content
/// is all header, after it (its last line ended first). Without fields,
/// `body` as it is.
pub fn append_with_fields(out: &mut Vec<u8>, body: &[u8], scan: &HeaderScan, fields: &[u8]) {
    if fields.is_empty() {
        return out.extend_from_slice(body);
    }
    let at = if scan.done { usize::try_from(scan.fields).unwrap_or(usize::MAX).min(body.len()) } else { body.len() };
    out.extend_from_slice(&body[..at]);
    if !scan.done {
        match body.last() {
            None | Some(b'\n') => {}
            Some(b'\r') => out.push(b'\n'),
            Some(_) => out.extend_from_slice(b"\r\n"),
        }
    }
    out.extend_from_slice(fields);
    if scan.done && !scan.empty_line {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&body[at..]);
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
    fn the_first_message_id_is_kept_for_the_log() {
        let header: &[u8] = b"Subject: x\r\nmessage-id : <a@b.example>\r\nMessage-ID: <second@b>\r\n\r\n";
        // Whatever the chunks, the first one's value.
        for split in 0..header.len() {
            let mut s = HeaderScan::new();
            s.feed(&header[..split]);
            s.feed(&header[split..]);
            assert_eq!(s.message_id.as_deref(), Some(&b" <a@b.example>"[..]), "split at {split}");
        }
        let s = HeaderScan::scan(b"Message-ID:\r\n <folded@b.example>\r\nX-Other: y\r\n\r\nMessage-ID: <body@b>\r\n");
        assert_eq!(logged_message_id(s.message_id.as_deref(), None), "<folded@b.example>");
        // Not one in the body, nor a Resent- one.
        let s = HeaderScan::scan(b"Resent-Message-ID: <r@b>\r\n\r\nMessage-ID: <body@b>\r\n");
        assert_eq!(s.message_id, None);
        assert_eq!(logged_message_id(None, Some("<added@h>")), "<added@h>");
        assert_eq!(logged_message_id(None, None), "<>");
        assert_eq!(logged_message_id(Some(b"  "), None), "<>");
        // Bounded, and made safe for the log.
        let long = format!("Message-ID: <{}@b>\x01\r\n\r\n", "x".repeat(1000));
        let s = HeaderScan::scan(long.as_bytes());
        assert_eq!(s.message_id.as_ref().map(Vec::len), Some(MAX_MESSAGE_ID));
        assert!(logged_message_id(s.message_id.as_deref(), None).len() <= MAX_MESSAGE_ID);
        let s = HeaderScan::scan(b"Message-ID: <a\x01\xff@b>\r\n\r\n");
        let logged = logged_message_id(s.message_id.as_deref(), None);
        assert!(logged.bytes().all(|b| (b' '..=b'~').contains(&b)), "{logged}");
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

    /// An envelope from an SMTP client at `client` that reached `server`.
    fn smtp_env(client: &str, server: &str) -> MessageEnvelope {
        MessageEnvelope {
            sender: String::from("a@b.example"),
            recipients: vec![MessageRecipient { address: String::from("x@y.example"), notify: None, orcpt: None }],
            body: Default::default(),
            smtputf8: false,
            ret: None,
            envid: None,
            helo: String::from("client.example"),
            protocol: String::from("ESMTP"),
            client_address: client.to_string(),
            server_address: server.to_string(),
            client_hostname: String::from("unknown"),
            tls: None,
            submitter: None,
        }
    }

    #[test]
    fn received_refuses_injection() {
        let mut env = smtp_env("192.0.2.1", "192.0.2.25");
        env.recipients[0].address = String::from("x@y\r\nBcc: evil");
        env.helo = String::from("evil\r\nX-Injected: yes");
        let h = received(&env, "mx.example.org", "Q1", 0);
        assert!(!h.contains("\r\nX-Injected"));
        assert!(!h.contains("\r\nBcc"));
        assert_eq!(h.matches("\r\n").count(), 4, "{h}");
        assert!(h.starts_with("Received: from evil??X-Injected: yes (unknown [192.0.2.1])\r\n\tby mx.example.org"));
    }

    #[test]
    fn received_lines_stay_within_the_limit() {
        // Every value at the most header_safe lets through, the host name
        // at mta.conf's limit: no line passes RFC 5322's 998 octets.
        let mut env = smtp_env("2001:db8:1:2:3:4:5:6", "");
        env.helo = "h".repeat(2000);
        env.client_hostname = "c".repeat(2000);
        env.tls = Some("t".repeat(2000));
        env.protocol = "p".repeat(2000);
        env.recipients[0].address = format!("{}@{}", "r".repeat(2000), "d".repeat(2000));
        let host = format!("{}.example", "m".repeat(245));
        let h = received(&env, &host, "0123456789ABCDEF", u64::from(u32::MAX));
        assert!(h.split("\r\n").all(|l| l.len() <= crate::header::MAX_LINE), "{h}");
        env.submitter = Some(u32::MAX);
        let h = received(&env, &host, "0123456789ABCDEF", u64::from(u32::MAX));
        assert!(h.split("\r\n").all(|l| l.len() <= crate::header::MAX_LINE), "{h}");
    }

    #[test]
    fn an_ipv6_client_is_an_ipv6_address_literal() {
        // RFC 5321 4.1.3: `[IPv6:...]`, as Postfix writes it.
        let first = |client: &str| {
            let h = received(&smtp_env(client, ""), "mx.example.org", "Q1", 0);
            h.lines().next().unwrap().to_string()
        };
        assert_eq!(first("2001:db8::1"), "Received: from client.example (unknown [IPv6:2001:db8::1])");
        assert_eq!(first("::1"), "Received: from client.example (unknown [IPv6:::1])");
        assert_eq!(first("192.0.2.1"), "Received: from client.example (unknown [192.0.2.1])");
        // What is no address at all is only made safe.
        assert_eq!(first("no\raddress"), "Received: from client.example (unknown [no?address])");
    }

    #[test]
    fn the_with_word_is_written_as_given() {
        let mut env = smtp_env("192.0.2.1", "");
        env.protocol = String::from("UTF8SMTPS");
        assert!(received(&env, "mx.example.org", "Q1", 0).contains("\tby mx.example.org (mta) with UTF8SMTPS id Q1"));
    }

    #[test]
    fn whose_header_is_completed() {
        use HeaderClients::*;
        let nets: Vec<Network> = vec!["10.0.0.0/8".parse().unwrap()];
        let cases = [
            // (client, server it reached, what each of None, Local, Networks, All says)
            ("127.0.0.1", "127.0.0.1", [false, true, true, true]),
            ("127.0.0.2", "192.0.2.25", [false, true, true, true]),
            ("::1", "::1", [false, true, true, true]),
            ("::ffff:127.0.0.1", "::ffff:127.0.0.1", [false, true, true, true]),
            // The host's own address, reached from itself.
            ("192.0.2.25", "192.0.2.25", [false, true, true, true]),
            ("::ffff:192.0.2.25", "192.0.2.25", [false, true, true, true]),
            ("2001:db8::25", "2001:db8::25", [false, true, true, true]),
            // A trusted network's client: only with `networks` and `all`.
            ("10.1.2.3", "10.0.0.1", [false, false, true, true]),
            // Anyone else: only with `all`.
            ("192.0.2.1", "192.0.2.25", [false, false, false, true]),
            ("2001:db8::1", "2001:db8::25", [false, false, false, true]),
            ("192.0.2.1", "", [false, false, false, true]),
        ];
        for (client, server, want) in cases {
            for (clients, want) in [None, Local, Networks, All].into_iter().zip(want) {
                let env = smtp_env(client, server);
                assert_eq!(completes_header(clients, &env, &nets), want, "{client} to {server}, {clients:?}");
            }
        }
        // A local user's submission, unless `none`; mail this host made
        // (notices, forwarded mail) never.
        let mut local = MessageEnvelope::internal(String::new(), vec![String::from("r@x.example")], false, false, "h");
        assert!([None, Local, Networks, All].iter().all(|c| !completes_header(*c, &local, &nets)));
        local.submitter = Some(1000);
        assert!(!completes_header(None, &local, &nets));
        assert!([Local, Networks, All].iter().all(|c| completes_header(*c, &local, &nets)));
    }

    /// `content` with the fields for `env` added, as cleanup stores it
    /// (without its Received:), the added lines' values masked.
    fn completed(content: &[&[u8]], env: &MessageEnvelope) -> String {
        let mut scan = HeaderScan::new();
        content.iter().for_each(|c| scan.feed(c));
        let (fields, id) = missing_fields(&scan.seen, env, "mx.example.org", 1_795_000_000);
        assert_eq!(id.is_some(), String::from_utf8_lossy(&fields).starts_with("Message-ID: <"));
        let mut out = Vec::new();
        append_with_fields(&mut out, &content.concat(), &scan, &fields);
        let text = String::from_utf8(out).unwrap();
        let mut masked = String::new();
        for line in text.split_inclusive('\n') {
            match line.split_once(": ") {
                Some(("Message-ID" | "Resent-Message-ID", id)) if id.ends_with("@mx.example.org>\r\n") => {
                    let local = id.trim_start_matches('<').split_once('@').unwrap().0;
                    assert!(local.len() == 34 && local.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
                    masked.push_str(&line.replace(local, "ID"));
                }
                _ => masked.push_str(line),
            }
        }
        masked
    }

    #[test]
    fn missing_fields_go_at_the_end_of_the_header_block() {
        let env = smtp_env("127.0.0.1", "127.0.0.1");
        let added = "Message-ID: <ID@mx.example.org>\r\nDate: Wed, 18 Nov 2026 11:06:40 +0000\r\nFrom: a@b.example\r\n";
        // Before the empty line, the block arriving in pieces.
        assert_eq!(
            completed(&[b"Subject: hi\r\nTo: x@y.example\r", b"\n\r", b"\nbody\r\n"], &env),
            format!("Subject: hi\r\nTo: x@y.example\r\n{added}\r\nbody\r\n")
        );
        // A folded field stays whole.
        assert_eq!(completed(&[b"Subject: a\r\n\tb\r\n\r\n"], &env), format!("Subject: a\r\n\tb\r\n{added}\r\n"));
        // No empty line: before the line that starts the body, with one.
        assert_eq!(
            completed(&[b"Subject: log\r\n2026-11-23 backup started\r\n"], &env),
            format!("Subject: log\r\n{added}\r\n2026-11-23 backup started\r\n")
        );
        assert_eq!(completed(&[b"just text\r\n"], &env), format!("{added}\r\njust text\r\n"));
        // All header: after it, its last line ended first.
        assert_eq!(completed(&[b"Subject: x\r\n"], &env), format!("Subject: x\r\n{added}"));
        assert_eq!(completed(&[b"Subject: x"], &env), format!("Subject: x\r\n{added}"));
        assert_eq!(completed(&[b"Subject: x\r"], &env), format!("Subject: x\r\n{added}"));
        assert_eq!(completed(&[b""], &env), added);
        // An empty header block.
        assert_eq!(completed(&[b"\r\nbody\r\n"], &env), format!("{added}\r\nbody\r\n"));
    }

    #[test]
    fn present_fields_are_not_added_again() {
        let env = smtp_env("127.0.0.1", "127.0.0.1");
        let whole =
            "From: Someone <s@b.example>\r\nDATE: Tue, 1 Jan 2030 00:00:00 +0000\r\nmessage-id: <x@y>\r\n\r\nb\r\n";
        assert_eq!(completed(&[whole.as_bytes()], &env), whole);
        // The obsolete syntax: white space before the colon.
        assert_eq!(
            completed(&[b"From : s@b.example\r\nDate\t: x\r\n\r\n"], &env),
            "From : s@b.example\r\nDate\t: x\r\nMessage-ID: <ID@mx.example.org>\r\n\r\n"
        );
        // Only in the body, or only in a field's value: missing.
        let text = completed(&[b"Subject: Date: x\r\n\r\nDate: y\r\n"], &env);
        assert!(text.starts_with("Subject: Date: x\r\nMessage-ID: <ID@mx.example.org>\r\nDate: Wed,"), "{text}");
    }

    #[test]
    fn resent_messages_get_resent_fields() {
        let mut env = smtp_env("127.0.0.1", "127.0.0.1");
        env.sender = String::new();
        assert_eq!(
            completed(&[b"Resent-To: z@y.example\r\nFrom: a@b.example\r\nDate: x\r\nMessage-ID: <m@b>\r\n\r\n"], &env),
            "Resent-To: z@y.example\r\nFrom: a@b.example\r\nDate: x\r\nMessage-ID: <m@b>\r\n\
             Resent-Message-ID: <ID@mx.example.org>\r\nResent-Date: Wed, 18 Nov 2026 11:06:40 +0000\r\n\
             Resent-From: MAILER-DAEMON@mx.example.org\r\n\r\n"
        );
    }

    #[test]
    fn the_scan_marks_where_the_fields_end() {
        let s = HeaderScan::scan(b"A: 1\r\n b\r\nC: 2\r\n\r\nD: 3\r\n");
        assert_eq!((s.done, s.empty_line, s.fields, s.size), (true, true, 16, 18));
        let s = HeaderScan::scan(b"A: 1\r\nbody\r\n");
        assert_eq!((s.done, s.empty_line, s.fields, s.size), (true, false, 6, 6));
        let s = HeaderScan::scan(b"A: 1\r\nB: 2");
        assert_eq!((s.done, s.fields, s.size), (false, 6, 10));
        let s = HeaderScan::scan(b"A: 1\n\nbody\n");
        assert_eq!((s.done, s.empty_line, s.fields), (true, true, 5));
        // A CR alone is no empty line.
        let s = HeaderScan::scan(b"A: 1\r\n\r\r\n\r\n");
        assert_eq!((s.done, s.empty_line, s.fields), (true, true, 9));
    }
}

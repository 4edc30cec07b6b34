//! The prepended headers, loop detection, LF conversion and the error.

use std::io;

use proptest::prelude::*;

use super::crlf;
use crate::local::deliver::{Envelope, Error, LfLines, Scratch, copy_message, delivered_to_loop, prepended_headers};

fn env<'a>(sender: &'a str, recipient: &'a str) -> Envelope<'a> {
    Envelope { sender, recipient, arrival: 0 }
}

#[test]
fn prepended_headers_are_return_path_and_delivered_to() {
    let h = prepended_headers(&env("alice@example.org", "bob@example.com")).unwrap();
    assert_eq!(h, b"Return-Path: <alice@example.org>\nDelivered-To: bob@example.com\n");
    let h = prepended_headers(&env("", "bob@example.com")).unwrap();
    assert_eq!(h, b"Return-Path: <>\nDelivered-To: bob@example.com\n");
    // SMTPUTF8 addresses are fine.
    let h = prepended_headers(&env("jörg@exämple.de", "δοκιμή@παράδειγμα.δοκιμή")).unwrap();
    assert_eq!(h, "Return-Path: <jörg@exämple.de>\nDelivered-To: δοκιμή@παράδειγμα.δοκιμή\n".as_bytes());
}

#[test]
fn a_prepended_field_too_long_for_its_line_is_folded_after_the_colon() {
    let max = crate::header::MAX_SENDER;
    // The longest sender cleanup takes: one line of 998 octets.
    let sender = format!("{}@x.example", "s".repeat(max - "@x.example".len()));
    let h = prepended_headers(&env(&sender, "bob@example.com")).unwrap();
    let first = h.split(|&b| b == b'\n').next().unwrap();
    assert_eq!(first.len(), crate::header::MAX_LINE);
    // Longer (a queue file from before the bound): on a line of its own,
    // which delivered_to_loop and mail readers unfold.
    let longer = format!("s{sender}");
    let recipient = format!("{}@x.example", "r".repeat(985));
    let h = prepended_headers(&env(&longer, &recipient)).unwrap();
    let text = String::from_utf8(h).unwrap();
    assert_eq!(text, format!("Return-Path:\n <{longer}>\nDelivered-To:\n {recipient}\n"));
    assert!(text.lines().all(|l| l.len() <= crate::header::MAX_LINE));
    assert!(delivered_to_loop(text.as_bytes(), &recipient));
}

#[test]
fn header_injection_through_an_address_refused() {
    for bad in ["a\r\nX-Evil: 1@x", "a\n@x", "a\r@x", "a\0@x", "a\t@x", "a\x7f@x", "a>@x", "<a@x", "a\x1b@x"] {
        for e in [env(bad, "bob@x"), env("alice@x", bad)] {
            match prepended_headers(&e) {
                Err(Error::Unsafe(why)) => assert!(why.contains("address"), "{why}"),
                other => panic!("{bad:?} not refused: {other:?}"),
            }
        }
    }
    assert!(matches!(prepended_headers(&env("a@x", "")), Err(Error::Unsafe(_))));
}

#[test]
fn delivered_to_loop_found_in_the_header_section() {
    let msg = b"Received: from x\r\n\tby y\r\nDelivered-To: Bob@Example.COM \r\nSubject: hi\r\n\r\nbody\r\n";
    assert!(delivered_to_loop(msg, "bob@example.com"));
    assert!(!delivered_to_loop(msg, "carol@example.com"));
    // Name case, space before the colon, angle brackets, LF line ends.
    assert!(delivered_to_loop(b"dElIvErEd-tO : <bob@example.com>\n\nbody\n", "bob@example.com"));
    // The last header, no empty line after it.
    assert!(delivered_to_loop(b"Subject: x\r\nDelivered-To: bob@x", "bob@x"));
    // Other headers whose names start the same way do not count.
    assert!(!delivered_to_loop(b"Delivered-To-Old: bob@x\r\nX-Delivered-To: bob@x\r\n\r\n", "bob@x"));
}

#[test]
fn delivered_to_loop_unfolds_continuation_lines() {
    let msg = b"Delivered-To:\r\n bob@example.com\r\nSubject: x\r\n\r\n";
    assert!(delivered_to_loop(msg, "bob@example.com"));
    let msg = b"Delivered-To: bob@example.com\r\n\tand-more\r\n\r\n";
    assert!(!delivered_to_loop(msg, "bob@example.com"));
    // A continuation of another header is not a Delivered-To.
    let msg = b"Subject: x\r\n Delivered-To: bob@x\r\n\r\n";
    assert!(!delivered_to_loop(msg, "bob@x"));
}

#[test]
fn delivered_to_loop_ignores_the_body() {
    let msg = b"Subject: x\r\n\r\nDelivered-To: bob@x\r\n";
    assert!(!delivered_to_loop(msg, "bob@x"));
    let msg = b"Subject: x\n\nDelivered-To: bob@x\n";
    assert!(!delivered_to_loop(msg, "bob@x"));
}

/// Converts `input` fed in pieces of `sizes` (cycled).
fn convert(input: &[u8], quote_from: bool, sizes: &[usize]) -> Vec<u8> {
    let mut lines = LfLines::new(quote_from);
    let mut out = Vec::new();
    let mut rest = input;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = n.clamp(1, rest.len());
        lines.feed(&rest[..n], &mut out);
        rest = &rest[n..];
    }
    lines.finish(&mut out);
    out
}

/// What the conversion should give, line by line on the whole input.
fn model(input: &[u8], quote_from: bool) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut line = Vec::new();
    let mut i = 0;
    while i < input.len() {
        match (input[i], input.get(i + 1)) {
            (b'\n', _) => lines.push(std::mem::take(&mut line)),
            (b'\r', Some(b'\n')) => {
                lines.push(std::mem::take(&mut line));
                i += 1;
            }
            (b, _) => line.push(b),
        }
        i += 1;
    }
    if !line.is_empty() {
        lines.push(line);
    }
    let mut out = Vec::new();
    for l in lines {
        let unquoted = l.iter().position(|&b| b != b'>').map_or(&l[..0], |p| &l[p..]);
        if quote_from && unquoted.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(&l);
        out.push(b'\n');
    }
    out
}

#[test]
fn crlf_becomes_lf_in_any_chunking() {
    let input = b"Subject: x\r\n\r\nline one\r\nbare\rcr\r\nbare lf\nlast";
    let want = b"Subject: x\n\nline one\nbare\rcr\nbare lf\nlast\n".to_vec();
    for sizes in [&[1][..], &[2], &[3], &[5, 1, 7], &[input.len()]] {
        assert_eq!(convert(input, false, sizes), want, "sizes {sizes:?}");
    }
    // A CR LF split exactly between two chunks is one line end.
    let mut lines = LfLines::new(false);
    let mut out = Vec::new();
    lines.feed(b"a\r", &mut out);
    lines.feed(b"", &mut out);
    lines.feed(b"\nb\r", &mut out);
    lines.finish(&mut out);
    assert_eq!(out, b"a\nb\r\n");
}

#[test]
fn final_newline_added_only_when_missing() {
    assert_eq!(convert(b"no end", false, &[100]), b"no end\n");
    assert_eq!(convert(b"ended\r\n", false, &[100]), b"ended\n");
    assert_eq!(convert(b"", false, &[100]), b"");
    assert_eq!(convert(b"\r\n", false, &[100]), b"\n");
    assert_eq!(convert(b"From", true, &[1]), b"From\n");
    assert_eq!(convert(b">>", true, &[1]), b">>\n");
}

#[test]
fn mboxrd_quotes_from_lines() {
    let input = crlf(&[
        "From x", ">From x", ">>From y", "Fromage", "From", "from x", " From x", "x From y", ">>Frox", ">", "From ",
    ]);
    let want = "\
>From x
>>From x
>>>From y
Fromage
From
from x
 From x
x From y
>>Frox
>
>From 
";
    for sizes in [&[1][..], &[2], &[3], &[4], &[7, 2], &[input.len()]] {
        assert_eq!(String::from_utf8(convert(&input, true, sizes)).unwrap(), want, "sizes {sizes:?}");
    }
    // Without quoting (Maildir) the lines are left alone.
    assert_eq!(convert(b"From x\r\n>From y\r\n", false, &[1]), b"From x\n>From y\n");
}

proptest! {
    #[test]
    fn lf_lines_match_the_model_in_random_chunks(
        input in proptest::collection::vec(
            proptest::sample::select(vec![b'\r', b'\n', b'>', b'F', b'r', b'o', b'm', b' ', b'x']), 0..200),
        sizes in proptest::collection::vec(1usize..20, 1..10),
        quote_from in any::<bool>(),
    ) {
        prop_assert_eq!(convert(&input, quote_from, &sizes), model(&input, quote_from));
    }
}

/// A reader giving `data` a few bytes at a time, then failing.
struct Failing {
    data: Vec<u8>,
    at: usize,
}

impl io::Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.data.len() {
            return Err(io::Error::other("queue file unreadable"));
        }
        let n = buf.len().min(3).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn copy_message_streams_large_content() {
    // Several chunks' worth, with a line end straddling every chunk edge.
    let line = "From the start, a line of some length\r\n";
    let input = line.repeat(10_000).into_bytes();
    let mut out = Vec::new();
    copy_message(&mut out, b"H\n", &mut &input[..], true, b"\n", "test", &mut Scratch::default()).unwrap();
    let want = format!("H\n{}\n", ">From the start, a line of some length\n".repeat(10_000));
    assert_eq!(String::from_utf8(out).unwrap(), want);

    let mut failing = Failing { data: b"a\r\nb".to_vec(), at: 0 };
    let e = copy_message(&mut Vec::new(), b"", &mut failing, false, b"", "test", &mut Scratch::default()).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert_eq!(e.to_string(), "read the message content: queue file unreadable");
}

#[test]
fn errors_classified_for_the_delivery_status() {
    let full = Error::Io { what: String::from("write to mailbox bob"), error: io::Error::from_raw_os_error(28) };
    assert!(full.mailbox_full() && full.temporary());
    assert_eq!(full.dsn(), "4.2.2");
    assert!(full.to_string().ends_with("(mailbox full)"), "{full}");
    let quota = Error::Io { what: String::new(), error: io::Error::from(nix::errno::Errno::EDQUOT) };
    assert_eq!(quota.dsn(), "4.2.2");
    let eio = Error::Io { what: String::from("fsync mailbox bob"), error: io::Error::from_raw_os_error(5) };
    assert!(!eio.mailbox_full() && eio.temporary());
    assert_eq!(eio.dsn(), "4.3.0");
    let locked = Error::Locked {
        mailbox: String::from("bob"),
        lock: String::from("its dot-lock bob.lock"),
        waited: std::time::Duration::from_secs(30),
    };
    assert!(locked.temporary());
    assert_eq!(locked.dsn(), "4.2.0");
    assert_eq!(locked.to_string(), "cannot lock bob: its dot-lock bob.lock still held by another process after 30s");
    let unsafe_ = Error::Unsafe(String::from("mailbox bob is a symbolic link"));
    assert!(unsafe_.temporary());
    assert_eq!(unsafe_.dsn(), "4.2.0");
    assert!(!Error::Loop.temporary());
    assert_eq!(Error::Loop.dsn(), "5.4.6");
}

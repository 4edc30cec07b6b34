//! Tests of the maildrop format: round trips, every field rule, truncation,
//! damage, bounds that must hold against hostile lengths, and property
//! tests.

use std::io::{self, Read, Write};

use proptest::prelude::*;

use super::{
    BodyType, Envelope, Error, Limits, MAX_ADDRESS, MAX_DATA, MAX_ENVID, MAX_FULL_NAME, MAX_ORCPT, MAX_SENDER, Notify,
    Reader, Recipient, Ret, Writer,
};

const SNDR: [u8; 4] = *b"SNDR";
const OPTS: [u8; 4] = *b"OPTS";
const RCPT: [u8; 4] = *b"RCPT";
const DATA: [u8; 4] = *b"DATA";
const END: [u8; 4] = *b"END ";

// ----- helpers -----

/// An envelope using every option.
fn full_envelope() -> Envelope {
    Envelope {
        sender: "alice@example.org".into(),
        body: BodyType::EightBitMime,
        smtputf8: true,
        ret: Some(Ret::Headers),
        envid: Some("QQ314159+2B".into()),
        full_name: Some("Alice Ñandú".into()),
        recipients: vec![
            Recipient {
                address: "bob@example.net".into(),
                orcpt: Some("rfc822;bob@example.net".into()),
                notify: Some(Notify::On { success: true, failure: true, delay: false }),
            },
            Recipient { address: "carol@example.net".into(), orcpt: None, notify: Some(Notify::Never) },
            Recipient { address: "dávid@exämple.net".into(), orcpt: None, notify: None },
        ],
    }
}

/// An envelope using no option.
fn bare_envelope() -> Envelope {
    Envelope {
        sender: String::new(),
        recipients: vec![Recipient { address: "root".into(), orcpt: None, notify: None }],
        ..Envelope::default()
    }
}

/// `n` bytes of content that are not all alike.
fn content(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ (i >> 8) as u8).collect()
}

fn encode(e: &Envelope, c: &[u8]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), e).expect("writer");
    w.write(c).expect("write");
    w.finish().expect("finish")
}

/// What a whole stream reads as: the envelope, the content and the sizes
/// of its chunks.
struct Whole {
    envelope: Envelope,
    content: Vec<u8>,
    chunks: Vec<usize>,
}

fn read_from<R: Read>(r: R, limits: Limits) -> Result<Whole, Error> {
    let (mut rd, envelope) = Reader::new(r, limits)?;
    let mut content = Vec::new();
    let mut chunks = Vec::new();
    while let Some(c) = rd.next_chunk()? {
        chunks.push(c.len());
        content.extend_from_slice(&c);
        assert_eq!(rd.content_len(), content.len() as u64);
    }
    assert_eq!(rd.content_len(), content.len() as u64);
    // Once done, done.
    assert!(matches!(rd.next_chunk(), Ok(None)));
    Ok(Whole { envelope, content, chunks })
}

fn read_all(bytes: &[u8]) -> Result<Whole, Error> {
    read_from(bytes, Limits::default())
}

#[track_caller]
fn expect_invalid(bytes: &[u8], want: &str, offset: u64) {
    match read_all(bytes) {
        Err(Error::Invalid { offset: o, what }) => {
            assert!(what.contains(want), "expected an error about `{want}`, got `{what}`");
            assert_eq!(o, offset, "offset of `{what}`");
        }
        Err(e) => panic!("expected Invalid about `{want}`, got {e}"),
        Ok(_) => panic!("expected Invalid about `{want}`, the stream was accepted"),
    }
}

// A hand-made stream, for what the writer refuses to make.

fn s(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u16).to_le_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

fn opt(b: Option<&[u8]>) -> Vec<u8> {
    match b {
        None => vec![0],
        Some(b) => {
            let mut v = vec![1];
            v.extend(s(b));
            v
        }
    }
}

fn opts(body: u8, utf8: u8, ret: u8, envid: Option<&[u8]>, name: Option<&[u8]>) -> Vec<u8> {
    let mut v = vec![body, utf8, ret];
    v.extend(opt(envid));
    v.extend(opt(name));
    v
}

fn rcpt(address: &[u8], orcpt: Option<&[u8]>, notify: u8) -> Vec<u8> {
    let mut v = s(address);
    v.extend(opt(orcpt));
    v.push(notify);
    v
}

type Records = Vec<([u8; 4], Vec<u8>)>;

/// A good stream's records (without END): the sender takes 13 bytes.
fn good_records() -> Records {
    vec![
        (SNDR, s(b"a@example.org")),
        (OPTS, opts(1, 1, 1, Some(b"ID1"), Some(b"Alice"))),
        (RCPT, rcpt(b"b@example.net", Some(b"rfc822;b@example.net"), 3)),
        (RCPT, rcpt(b"c@example.net", None, 0x80)),
        (DATA, b"Subject: hi\r\n\r\n".to_vec()),
        (DATA, b"hello\r\n".to_vec()),
    ]
}

/// The header and `records`, without END; and the offset of each record.
fn build(records: &Records) -> (Vec<u8>, Vec<u64>) {
    let mut out = b"MTAD\x01\x00\x00\x00".to_vec();
    let mut at = Vec::new();
    for (tag, p) in records {
        at.push(out.len() as u64);
        out.extend_from_slice(tag);
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    (out, at)
}

/// Append an END record to `out`: `total` content bytes, the CRC of `out`
/// xored with `crc_xor`, `reserved`.
fn end_with(out: &mut Vec<u8>, total: u64, crc_xor: u32, reserved: u32) {
    let crc = crc32fast::hash(out) ^ crc_xor;
    out.extend_from_slice(&END);
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&reserved.to_le_bytes());
}

/// The header, `records` and a good END record; and the record offsets
/// (the END record's last).
fn build_full(records: &Records) -> (Vec<u8>, Vec<u64>) {
    let (mut out, mut at) = build(records);
    let total = records.iter().filter(|(t, _)| *t == DATA).map(|(_, p)| p.len() as u64).sum();
    at.push(out.len() as u64);
    end_with(&mut out, total, 0, 0);
    (out, at)
}

/// A reader that serves `prefix`, then the record `rec` over and over.
struct Endless {
    prefix: Vec<u8>,
    rec: Vec<u8>,
    served: u64,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let p = self.prefix.len() as u64;
        let (src, off) = if self.served < p {
            (&self.prefix, self.served as usize)
        } else {
            (&self.rec, ((self.served - p) % self.rec.len() as u64) as usize)
        };
        let n = (src.len() - off).min(buf.len());
        buf[..n].copy_from_slice(&src[off..off + n]);
        self.served += n as u64;
        Ok(n)
    }
}

/// A reader that returns one byte at a time, and `Interrupted` in between.
struct Trickle<'a> {
    b: &'a [u8],
    interrupt: bool,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if self.b.is_empty() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.b[0];
        self.b = &self.b[1..];
        Ok(1)
    }
}

// ----- round trips -----

#[test]
fn roundtrip_sizes() {
    for e in [full_envelope(), bare_envelope()] {
        for n in [0, 1, MAX_DATA - 1, MAX_DATA, MAX_DATA + 1, 2 * MAX_DATA, 300 * 1024 + 7] {
            let c = content(n);
            let bytes = encode(&e, &c);
            let r = read_all(&bytes).unwrap_or_else(|err| panic!("{n} bytes: {err}"));
            assert_eq!(r.envelope, e);
            assert_eq!(r.content, c, "{n} bytes");
            // Full records, then the rest.
            let mut want = vec![MAX_DATA; n / MAX_DATA];
            if n % MAX_DATA != 0 {
                want.push(n % MAX_DATA);
            }
            assert_eq!(r.chunks, want, "{n} bytes");
        }
    }
}

#[test]
fn roundtrip_every_option() {
    let bodies = [BodyType::SevenBit, BodyType::EightBitMime, BodyType::BinaryMime];
    let rets = [None, Some(Ret::Full), Some(Ret::Headers)];
    let mut notifies = vec![None, Some(Notify::Never)];
    for n in 1u8..8 {
        notifies.push(Some(Notify::On { success: n & 1 != 0, failure: n & 2 != 0, delay: n & 4 != 0 }));
    }
    for (i, body) in bodies.into_iter().enumerate() {
        for ret in rets {
            for smtputf8 in [false, true] {
                let e = Envelope {
                    sender: if smtputf8 { "ünïcode@example.org".into() } else { String::new() },
                    body,
                    smtputf8,
                    ret,
                    envid: if i == 1 { None } else { Some("!~x+2B".into()) },
                    full_name: if i == 2 { None } else { Some(String::new()) },
                    recipients: notifies
                        .iter()
                        .enumerate()
                        .map(|(k, &notify)| Recipient {
                            address: format!("r{k}@example.net"),
                            orcpt: if k % 2 == 0 { Some(format!("rfc822;r{k}@example.net")) } else { None },
                            notify,
                        })
                        .collect(),
                };
                let r = read_all(&encode(&e, b"x")).expect("read");
                assert_eq!(r.envelope, e);
            }
        }
    }
}

#[test]
fn roundtrip_at_the_bounds() {
    let e = Envelope {
        sender: "s".repeat(MAX_SENDER),
        envid: Some("!".repeat(MAX_ENVID)),
        full_name: Some("ä".repeat(MAX_FULL_NAME / 2)),
        recipients: vec![Recipient {
            address: "a".repeat(MAX_ADDRESS),
            orcpt: Some("o".repeat(MAX_ORCPT)),
            notify: Some(Notify::On { success: true, failure: true, delay: true }),
        }],
        ..Envelope::default()
    };
    let bytes = encode(&e, b"");
    assert_eq!(read_all(&bytes).expect("read").envelope, e);
}

/// The bytes doc/maildrop-format.md describes, for a small message.
#[test]
fn layout() {
    let e = Envelope {
        sender: "a@b".into(),
        body: BodyType::BinaryMime,
        smtputf8: true,
        ret: Some(Ret::Full),
        envid: Some("E".into()),
        full_name: None,
        recipients: vec![Recipient {
            address: "c@d".into(),
            orcpt: Some("x".into()),
            notify: Some(Notify::On { success: false, failure: true, delay: true }),
        }],
    };
    let bytes = encode(&e, b"hi");
    let mut want: Vec<u8> = Vec::new();
    want.extend_from_slice(b"MTAD\x01\x00\x00\x00");
    want.extend_from_slice(b"SNDR\x05\x00\x00\x00\x03\x00a@b");
    want.extend_from_slice(b"OPTS\x08\x00\x00\x00\x02\x01\x01\x01\x01\x00E\x00");
    want.extend_from_slice(b"RCPT\x0a\x00\x00\x00\x03\x00c@d\x01\x01\x00x\x06");
    want.extend_from_slice(b"DATA\x02\x00\x00\x00hi");
    let crc = crc32fast::hash(&want);
    assert_eq!(crc, 0x7b25_097b, "the example in doc/maildrop-format.md");
    want.extend_from_slice(b"END \x10\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00");
    want.extend_from_slice(&crc.to_le_bytes());
    want.extend_from_slice(&[0; 4]);
    assert_eq!(bytes, want);

    // No content: no DATA record.
    let bytes = encode(&e, b"");
    assert_eq!(&bytes[bytes.len() - 24..bytes.len() - 8], b"END \x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    assert!(!bytes.windows(4).any(|w| w == DATA));
}

/// The stream does not depend on how the content is cut into writes.
#[test]
fn writes_of_any_size() {
    let e = full_envelope();
    let c = content(3 * MAX_DATA + 123);
    let whole = encode(&e, &c);
    for piece in [1, 7, 4096, MAX_DATA - 1, MAX_DATA, MAX_DATA + 1] {
        let mut w = Writer::new(Vec::new(), &e).expect("writer");
        for p in c.chunks(piece) {
            w.write(p).expect("write");
        }
        w.write(b"").expect("empty write");
        assert_eq!(w.finish().expect("finish"), whole, "pieces of {piece}");
    }
}

/// The reader takes DATA records of any size from 1 to 64 KiB, in any
/// order, one byte per read, with reads interrupted.
#[test]
fn reader_takes_any_data_sizes() {
    let mut recs = good_records();
    recs.truncate(4);
    let sizes = [1, MAX_DATA, 3, MAX_DATA - 1, 1];
    let mut want = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let c = content(n + i);
        let c = &c[i..];
        want.extend_from_slice(c);
        recs.push((DATA, c.to_vec()));
    }
    let (bytes, _) = build_full(&recs);
    let r = read_all(&bytes).expect("read");
    assert_eq!(r.chunks, sizes);
    assert_eq!(r.content, want);
    let r = read_from(Trickle { b: &bytes, interrupt: false }, Limits::default()).expect("trickle");
    assert_eq!(r.content, want);
}

#[test]
fn good_records_are_good() {
    let (bytes, _) = build_full(&good_records());
    let r = read_all(&bytes).expect("read");
    assert_eq!(r.envelope.sender, "a@example.org");
    assert_eq!(r.envelope.envid.as_deref(), Some("ID1"));
    assert_eq!(r.envelope.recipients.len(), 2);
    assert_eq!(r.content, b"Subject: hi\r\n\r\nhello\r\n");
}

// ----- every rule of the reader -----

#[test]
fn header_rules() {
    let (good, _) = build_full(&good_records());
    let mut b = good.clone();
    b[0] = b'X';
    expect_invalid(&b, "bad magic", 0);
    let mut b = good.clone();
    b[4] = 2;
    expect_invalid(&b, "version 2", 4);
    let mut b = good.clone();
    b[7] = 1;
    expect_invalid(&b, "reserved header", 6);
}

/// One record changed from a good stream, the error, and where: (record
/// index, offset from the record's start).
type Case = (&'static str, Records, &'static str, usize, u64);

fn with(i: usize, tag: [u8; 4], payload: Vec<u8>) -> Records {
    let mut r = good_records();
    r[i] = (tag, payload);
    r
}

fn inserted(i: usize, tag: [u8; 4], payload: Vec<u8>) -> Records {
    let mut r = good_records();
    r.insert(i, (tag, payload));
    r
}

fn cases() -> Vec<Case> {
    let long = |n: usize| vec![b'a'; n];
    let mut sender_1025 = vec![0x01, 0x04];
    sender_1025.extend(long(1024));
    let mut v: Vec<Case> = vec![
        // SNDR
        ("sender not UTF-8", with(0, SNDR, s(b"\xff@x")), "sender address is not UTF-8", 0, 8),
        ("sender over its bound", with(0, SNDR, sender_1025), "sender address of 1025 bytes", 0, 8),
        ("SNDR over its bound", with(0, SNDR, s(&long(1025))), "SNDR record of 1027 bytes", 0, 4),
        ("SNDR with a byte left", with(0, SNDR, [s(b"a@b"), vec![0]].concat()), "end of the SNDR record", 0, 13),
        ("SNDR short", with(0, SNDR, vec![10, 0, b'a']), "SNDR record is shorter", 0, 10),
        ("SNDR empty", with(0, SNDR, vec![]), "SNDR record is shorter", 0, 8),
        // OPTS
        ("body type", with(1, OPTS, opts(3, 0, 0, None, None)), "body type", 1, 8),
        ("SMTPUTF8 flag", with(1, OPTS, opts(0, 2, 0, None, None)), "SMTPUTF8 flag 2", 1, 9),
        ("RET", with(1, OPTS, opts(0, 0, 3, None, None)), "RET value", 1, 10),
        ("ENVID presence", with(1, OPTS, vec![0, 0, 0, 2, 0]), "presence flag 2 for ENVID", 1, 11),
        ("ENVID too long", with(1, OPTS, opts(0, 0, 0, Some(&long(101)), None)), "ENVID of 101 bytes", 1, 12),
        ("ENVID space", with(1, OPTS, opts(0, 0, 0, Some(b"a b"), None)), "ENVID contains", 1, 12),
        ("ENVID DEL", with(1, OPTS, opts(0, 0, 0, Some(b"a\x7f"), None)), "ENVID contains", 1, 12),
        ("ENVID NUL", with(1, OPTS, opts(0, 0, 0, Some(b"\0"), None)), "ENVID contains", 1, 12),
        ("ENVID non-ASCII", with(1, OPTS, opts(0, 0, 0, Some("é".as_bytes()), None)), "ENVID contains", 1, 12),
        ("ENVID not UTF-8", with(1, OPTS, opts(0, 0, 0, Some(b"\xff"), None)), "ENVID is not UTF-8", 1, 12),
        ("name presence", with(1, OPTS, vec![0, 0, 0, 0, 7]), "presence flag 7 for full name", 1, 12),
        ("name too long", with(1, OPTS, opts(0, 0, 0, None, Some(&long(257)))), "full name of 257 bytes", 1, 13),
        ("name newline", with(1, OPTS, opts(0, 0, 0, None, Some(b"A\nB"))), "full name contains", 1, 13),
        ("name CR", with(1, OPTS, opts(0, 0, 0, None, Some(b"A\rB"))), "full name contains", 1, 13),
        ("name tab", with(1, OPTS, opts(0, 0, 0, None, Some(b"A\tB"))), "full name contains", 1, 13),
        ("name DEL", with(1, OPTS, opts(0, 0, 0, None, Some(b"A\x7f"))), "full name contains", 1, 13),
        ("name C1", with(1, OPTS, opts(0, 0, 0, None, Some("A\u{85}".as_bytes()))), "full name contains", 1, 13),
        ("name not UTF-8", with(1, OPTS, opts(0, 0, 0, None, Some(b"\xc3"))), "full name is not UTF-8", 1, 13),
        ("OPTS with a byte left", with(1, OPTS, vec![0, 0, 0, 0, 0, 0]), "end of the OPTS record", 1, 13),
        ("OPTS short", with(1, OPTS, vec![0, 0]), "OPTS record is shorter", 1, 10),
        ("OPTS over its bound", with(1, OPTS, long(366)), "OPTS record of 366 bytes", 1, 4),
        // RCPT
        ("address empty", with(2, RCPT, rcpt(b"", None, 0)), "recipient address is empty", 2, 8),
        ("address too long", with(2, RCPT, rcpt(&long(1025), None, 0)), "recipient address of 1025 bytes", 2, 8),
        ("address not UTF-8", with(2, RCPT, rcpt(b"\xfe", None, 0)), "recipient address is not UTF-8", 2, 8),
        ("ORCPT presence", with(2, RCPT, [s(b"a"), vec![9, 0]].concat()), "presence flag 9 for ORCPT", 2, 11),
        ("ORCPT too long", with(2, RCPT, rcpt(b"a", Some(&long(1025)), 0)), "ORCPT of 1025 bytes", 2, 12),
        ("ORCPT not UTF-8", with(2, RCPT, rcpt(b"a", Some(b"\x80"), 0)), "ORCPT is not UTF-8", 2, 12),
        ("RCPT with a byte left", with(2, RCPT, [rcpt(b"a", None, 0), vec![0]].concat()), "end of the RCPT", 2, 13),
        ("RCPT short", with(2, RCPT, s(b"a")), "RCPT record is shorter", 2, 11),
        ("RCPT over its bound", with(2, RCPT, long(2055)), "RCPT record of 2055 bytes", 2, 4),
        // Order and tags
        ("RCPT first", with(0, RCPT, rcpt(b"a", None, 0)), "expected a SNDR record, found a RCPT record", 0, 0),
        ("two SNDR", inserted(1, SNDR, s(b"")), "expected an OPTS record, found a SNDR record", 1, 0),
        ("OPTS after RCPT", inserted(3, OPTS, opts(0, 0, 0, None, None)), "found an OPTS record", 3, 0),
        ("RCPT after DATA", inserted(5, RCPT, rcpt(b"a", None, 0)), "expected a DATA or END record", 5, 0),
        ("SNDR after DATA", inserted(5, SNDR, s(b"")), "found a SNDR record", 5, 0),
        ("unknown tag first", with(0, *b"XXXX", vec![]), "unknown record tag `XXXX`", 0, 0),
        ("lower-case tag", with(1, *b"opts", vec![0; 5]), "unknown record tag `opts`", 1, 0),
        ("binary tag", with(2, *b"\0\x01\xffR", vec![]), "unknown record tag `\\x00\\x01\\xffR`", 2, 0),
        ("unknown tag in content", inserted(5, *b"DATX", vec![1]), "unknown record tag `DATX`", 5, 0),
        ("END without space", inserted(6, *b"END\0", vec![0; 16]), "unknown record tag `END\\x00`", 6, 0),
        // DATA
        ("empty DATA", with(4, DATA, vec![]), "DATA record of 0 bytes", 4, 4),
        ("DATA over its bound", with(4, DATA, long(MAX_DATA + 1)), "DATA record of 65537 bytes", 4, 4),
    ];
    for n in [0x08u8, 0x10, 0x40, 0x81, 0x82, 0x84, 0x87, 0xff] {
        v.push(("NOTIFY", with(2, RCPT, rcpt(b"a", None, n)), "bad NOTIFY bits", 2, 12));
    }
    v
}

#[test]
fn record_rules() {
    for (name, records, want, rec, off) in cases() {
        let (bytes, at) = build_full(&records);
        match read_all(&bytes) {
            Err(Error::Invalid { offset, what }) => {
                assert!(what.contains(want), "{name}: expected an error about `{want}`, got `{what}`");
                assert_eq!(offset, at[rec] + off, "{name}: offset of `{what}`");
            }
            Err(e) => panic!("{name}: expected Invalid about `{want}`, got {e}"),
            Ok(_) => panic!("{name}: accepted"),
        }
    }
}

#[test]
fn no_recipient() {
    let mut r = good_records();
    r.drain(2..4);
    let (bytes, at) = build_full(&r);
    expect_invalid(&bytes, "no recipient before a DATA record", at[2]);
    r.truncate(2);
    let (bytes, at) = build_full(&r);
    expect_invalid(&bytes, "no recipient before an END record", at[2]);
}

#[test]
fn end_rules() {
    let recs = good_records();
    let (body, _) = build(&recs);
    let total = 22;
    let end_at = body.len() as u64;

    let mut b = body.clone();
    end_with(&mut b, total, 0, 0);
    assert!(read_all(&b).is_ok());

    let mut b = body.clone();
    end_with(&mut b, total + 1, 0, 0);
    expect_invalid(&b, "content length of 23 bytes", end_at + 8);
    let mut b = body.clone();
    end_with(&mut b, total - 1, 0, 0);
    expect_invalid(&b, "content length of 21 bytes", end_at + 8);
    let mut b = body.clone();
    end_with(&mut b, total, 1, 0);
    expect_invalid(&b, "CRC mismatch", end_at + 16);
    let mut b = body.clone();
    end_with(&mut b, total, 0, 0x100);
    expect_invalid(&b, "reserved END bytes", end_at + 20);

    for len in [0u32, 15, 17, u32::MAX] {
        let mut b = body.clone();
        end_with(&mut b, total, 0, 0);
        b[end_at as usize + 4..end_at as usize + 8].copy_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        expect_invalid(&b, &format!("END record of {len} bytes"), end_at + 4);
    }

    // Anything after END.
    let mut good = body.clone();
    end_with(&mut good, total, 0, 0);
    for extra in [&b"\0"[..], b"\n", b"MTAD", &good[..]] {
        let mut b = good.clone();
        b.extend_from_slice(extra);
        expect_invalid(&b, "bytes after the END record", good.len() as u64);
    }
    // A second END.
    let mut b = good.clone();
    let tail = b[b.len() - 24..].to_vec();
    b.extend_from_slice(&tail);
    expect_invalid(&b, "bytes after the END record", good.len() as u64);
}

// ----- the writer applies the same rules -----

#[test]
fn writer_rules() {
    let long = |n: usize| "a".repeat(n);
    let base = full_envelope;
    let rcpt0 = |f: &dyn Fn(&mut Recipient)| {
        let mut e = base();
        f(&mut e.recipients[0]);
        e
    };
    let cases: Vec<(&str, Envelope, &str)> = vec![
        ("sender", Envelope { sender: long(1025), ..base() }, "sender address of 1025 bytes"),
        ("envid long", Envelope { envid: Some(long(101)), ..base() }, "ENVID of 101 bytes"),
        ("envid space", Envelope { envid: Some("a b".into()), ..base() }, "ENVID contains"),
        ("envid non-ASCII", Envelope { envid: Some("é".into()), ..base() }, "ENVID contains"),
        ("envid control", Envelope { envid: Some("a\r\n".into()), ..base() }, "ENVID contains"),
        ("name long", Envelope { full_name: Some(long(257)), ..base() }, "full name of 257 bytes"),
        ("name long UTF-8", Envelope { full_name: Some("é".repeat(129)), ..base() }, "full name of 258 bytes"),
        ("name newline", Envelope { full_name: Some("A\nB".into()), ..base() }, "full name contains"),
        ("name NUL", Envelope { full_name: Some("A\0".into()), ..base() }, "full name contains"),
        ("name C1", Envelope { full_name: Some("\u{9b}".into()), ..base() }, "full name contains"),
        ("no recipient", Envelope { recipients: vec![], ..base() }, "no recipient"),
        ("address empty", rcpt0(&|r| r.address.clear()), "recipient address is empty"),
        ("address long", rcpt0(&|r| r.address = long(1025)), "recipient address of 1025 bytes"),
        ("orcpt long", rcpt0(&|r| r.orcpt = Some(long(1025))), "ORCPT of 1025 bytes"),
        (
            "notify nothing",
            rcpt0(&|r| r.notify = Some(Notify::On { success: false, failure: false, delay: false })),
            "NOTIFY with no condition",
        ),
    ];
    for (name, e, want) in cases {
        let mut sink = Vec::new();
        match Writer::new(&mut sink, &e) {
            Err(Error::Invalid { what, .. }) => assert!(what.contains(want), "{name}: got `{what}`"),
            Err(err) => panic!("{name}: expected Invalid, got {err}"),
            Ok(_) => panic!("{name}: accepted"),
        }
        assert!(sink.is_empty(), "{name}: bytes written for a refused envelope");
    }
}

/// The writer's offsets are those the field would have in the stream.
#[test]
fn writer_offsets() {
    let mut e = bare_envelope();
    e.sender = "a".repeat(1025);
    assert!(matches!(Writer::new(Vec::new(), &e), Err(Error::Invalid { offset: 16, .. })));
    let mut e = bare_envelope();
    e.recipients[0].address.clear();
    // header 8, SNDR 8 + 2, OPTS 8 + 5, RCPT header 8.
    assert!(matches!(Writer::new(Vec::new(), &e), Err(Error::Invalid { offset: 39, .. })));
}

struct Failing {
    ok_writes: usize,
}

impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.ok_writes == 0 {
            return Err(io::Error::other("disk on fire"));
        }
        self.ok_writes -= 1;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn writer_io_errors() {
    let e = full_envelope();
    assert!(matches!(Writer::new(Failing { ok_writes: 0 }, &e), Err(Error::Io(_))));
    let mut w = Writer::new(Failing { ok_writes: 1 }, &e).expect("header written");
    w.write(&content(100)).expect("buffered");
    assert!(matches!(w.write(&content(MAX_DATA)), Err(Error::Io(_))));
    // Broken for good.
    assert!(matches!(w.write(b"x"), Err(Error::Io(_))));
    assert!(matches!(w.finish(), Err(Error::Io(_))));
    let w = Writer::new(Failing { ok_writes: 1 }, &e).expect("header written");
    assert!(matches!(w.finish(), Err(Error::Io(_))));
}

// ----- truncation and damage -----

fn small_streams() -> Vec<Vec<u8>> {
    vec![
        encode(&full_envelope(), b"Subject: x\r\n\r\nbody\r\n"),
        encode(&bare_envelope(), b""),
        build_full(&good_records()).0,
    ]
}

#[test]
fn truncated_everywhere() {
    for bytes in small_streams() {
        assert!(read_all(&bytes).is_ok());
        for cut in 0..bytes.len() {
            match read_all(&bytes[..cut]) {
                Err(Error::Truncated { offset }) => assert_eq!(offset, cut as u64),
                Err(e) => panic!("cut at {cut}: {e}"),
                Ok(_) => panic!("cut at {cut}: accepted"),
            }
        }
    }
}

/// Writing stops without `finish`: what is there is truncated.
#[test]
fn abandoned_writer_is_truncated() {
    let mut sink = Vec::new();
    let mut w = Writer::new(&mut sink, &full_envelope()).expect("writer");
    w.write(&content(2 * MAX_DATA + 5)).expect("write");
    drop(w);
    let got = read_all(&sink);
    assert!(matches!(got, Err(Error::Truncated { offset }) if offset == sink.len() as u64), "{:?}", got.err());
}

#[test]
fn every_single_byte_change_is_caught() {
    for bytes in small_streams() {
        for i in 0..bytes.len() {
            for x in 1..=255u8 {
                let mut b = bytes.clone();
                b[i] ^= x;
                if let Ok(r) = read_all(&b) {
                    panic!("byte {i} ^ {x:#04x} accepted, as {:?}", r.envelope);
                }
            }
        }
    }
}

// ----- hostile lengths and limits -----

/// The stream up to and including the first RCPT record.
fn prefix() -> Vec<u8> {
    let mut r = good_records();
    r.truncate(3);
    build(&r).0
}

#[test]
fn huge_lengths_are_refused_at_once() {
    for (tag, what) in [
        (SNDR, "SNDR record of 4294967295 bytes"),
        (OPTS, "OPTS record of 4294967295 bytes"),
        (RCPT, "RCPT record of 4294967295 bytes"),
        (DATA, "DATA record of 4294967295 bytes"),
    ] {
        let mut recs = good_records();
        let i = recs.iter().position(|(t, _)| *t == tag).expect("tag");
        recs.truncate(i);
        let (mut b, _) = build(&recs);
        let at = b.len() as u64;
        b.extend_from_slice(&tag);
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        // An endless payload: a reader that believed the length would
        // allocate 4 GiB, or never stop reading.
        let r = Endless { prefix: b, rec: vec![b'a'; 1000], served: 0 };
        match read_from(r, Limits::default()) {
            Err(Error::Invalid { offset, what: w }) => {
                assert!(w.contains(what), "{w}");
                assert_eq!(offset, at + 4);
            }
            Err(e) => panic!("{what}: {e}"),
            Ok(_) => panic!("{what}: accepted"),
        }
    }
}

/// Counts what it serves.
struct Counting<R> {
    r: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

#[test]
fn too_big() {
    let e = bare_envelope();
    for (n, limit) in [(101, 100), (MAX_DATA + 1, MAX_DATA as u64), (300 * 1024, 70_000), (1, 0)] {
        let bytes = encode(&e, &content(n));
        let mut r = Counting { r: &bytes[..], n: 0 };
        let got = read_from(&mut r, Limits { max_content: limit, ..Limits::default() });
        assert!(matches!(got, Err(Error::TooBig { limit: l }) if l == limit), "{n} over {limit}: {:?}", got.err());
        // Read no further than the header of the record that went over.
        let records = n.div_ceil(MAX_DATA);
        let envelope = (bytes.len() - 24 - n - 8 * records) as u64;
        let accepted = limit / MAX_DATA as u64;
        assert_eq!(r.n, envelope + accepted * (8 + MAX_DATA as u64) + 8, "{n} over {limit}");
        // Exactly the limit is fine.
        let bytes = encode(&e, &content(limit as usize));
        let got = read_from(&bytes[..], Limits { max_content: limit, ..Limits::default() });
        assert_eq!(got.expect("at the limit").content.len() as u64, limit);
    }

    // Endless content: stops just past the limit.
    let mut rec = DATA.to_vec();
    rec.extend_from_slice(&(MAX_DATA as u32).to_le_bytes());
    rec.extend(content(MAX_DATA));
    let mut r = Endless { prefix: prefix(), rec, served: 0 };
    let limit = 1024 * 1024;
    let (mut rd, _) = Reader::new(&mut r, Limits { max_content: limit, ..Limits::default() }).expect("envelope");
    let mut chunks = 0;
    let err = loop {
        match rd.next_chunk() {
            Ok(Some(_)) => chunks += 1,
            Ok(None) => panic!("endless stream ended"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::TooBig { limit: l } if l == limit), "{err}");
    assert_eq!(chunks, 16);
    assert_eq!(rd.content_len(), limit);
    // After an error, nothing more is read.
    assert!(rd.next_chunk().is_err());
    assert_eq!(r.served, prefix().len() as u64 + 16 * (8 + MAX_DATA as u64) + 8);
}

#[test]
fn too_many_recipients() {
    let mut e = bare_envelope();
    e.recipients = (0..5).map(|i| Recipient { address: format!("r{i}"), orcpt: None, notify: None }).collect();
    let bytes = encode(&e, b"x");
    for limit in [0, 1, 4] {
        let got = read_from(&bytes[..], Limits { max_recipients: limit, ..Limits::default() });
        assert!(matches!(got, Err(Error::TooManyRecipients { limit: l }) if l == limit), "{limit}: {:?}", got.err());
    }
    let got = read_from(&bytes[..], Limits { max_recipients: 5, ..Limits::default() });
    assert_eq!(got.expect("at the limit").envelope.recipients.len(), 5);

    // Endless recipients: stops at the default limit.
    let mut rec = RCPT.to_vec();
    let p = rcpt(b"x@example.org", None, 0);
    rec.extend_from_slice(&(p.len() as u32).to_le_bytes());
    rec.extend(&p);
    let mut r = Endless { prefix: prefix(), rec: rec.clone(), served: 0 };
    let got = Reader::new(&mut r, Limits::default());
    assert!(matches!(got, Err(Error::TooManyRecipients { limit: 10_000 })), "{:?}", got.err());
    assert_eq!(r.served, prefix().len() as u64 + 9_999 * rec.len() as u64 + 8);
}

/// pickup, refusing a message with more recipients than its limit, still
/// reads the sender, the first recipients and the content for its notice.
#[test]
fn recipients_past_the_limit_can_be_counted_instead() {
    let mut e = full_envelope();
    e.recipients.extend((0..4).map(|i| Recipient { address: format!("r{i}@example.net"), orcpt: None, notify: None }));
    let body = content(70_000);
    let bytes = encode(&e, &body);
    let limits = Limits { max_recipients: 2, ..Limits::default() };
    let (mut r, got, beyond) = Reader::new_counting(&bytes[..], limits).expect("counted");
    assert_eq!(beyond, 5);
    assert_eq!(got.sender, e.sender);
    assert_eq!(got.recipients, e.recipients[..2]);
    let mut read = Vec::new();
    while let Some(c) = r.next_chunk().expect("content") {
        read.extend(c);
    }
    assert_eq!(read, body, "the stream, CRC included, still checks out");
    // Within the limit: nothing beyond, as Reader::new reads it.
    let (_, got, beyond) = Reader::new_counting(&bytes[..], Limits::default()).expect("read");
    assert_eq!((got, beyond), (e.clone(), 0));
    // Recipients past the limit are checked all the same.
    let mut bad = bytes.clone();
    let at = bytes.windows(14).position(|w| w == b"r3@example.net").expect("r3");
    bad[at] = 0xff;
    assert!(matches!(Reader::new_counting(&bad[..], limits), Err(Error::Invalid { .. })));
}

#[test]
fn read_errors() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("cable cut"))
        }
    }
    let bytes = encode(&full_envelope(), b"hi");
    assert!(matches!(read_all(b""), Err(Error::Truncated { offset: 0 })));
    assert!(matches!(Reader::new(Broken, Limits::default()), Err(Error::Io(_))));
    let cut = bytes.len() - 30;
    let got = read_from((&bytes[..cut]).chain(Broken), Limits::default());
    assert!(matches!(got, Err(Error::Io(_))));
    // An error after END, while checking for the end of the stream.
    let got = read_from((&bytes[..]).chain(Broken), Limits::default());
    assert!(matches!(got, Err(Error::Io(_))));
}

#[test]
fn error_messages() {
    let cases = [
        (Error::Io(io::Error::other("boom")), "maildrop I/O error: boom"),
        (Error::invalid(12, "bad NOTIFY bits 0x81"), "invalid maildrop stream at byte 12: bad NOTIFY bits 0x81"),
        (Error::Truncated { offset: 99 }, "maildrop stream truncated: it ends at byte 99, before its END record"),
        (Error::TooBig { limit: 100 }, "message content larger than the limit of 100 bytes"),
        (Error::TooManyRecipients { limit: 3 }, "more recipients than the limit of 3"),
    ];
    for (e, want) in cases {
        assert_eq!(e.to_string(), want);
    }
    assert!(std::error::Error::source(&Error::Io(io::Error::other("x"))).is_some());
    assert_eq!(Limits::default(), Limits { max_recipients: 10_000, max_content: 52_428_800 });
}

// ----- properties -----

fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(&format!("[a-zA-Z0-9@._+-]{{0,{max}}}")).expect("regex"),
        any::<String>().prop_filter("within the bound", move |s| s.len() <= max),
    ]
}

fn no_control(max: usize) -> impl Strategy<Value = String> {
    any::<String>().prop_map(move |s| {
        let mut out = String::new();
        for c in s.chars().filter(|c| !c.is_control()) {
            if out.len() + c.len_utf8() > max {
                break;
            }
            out.push(c);
        }
        out
    })
}

fn notify() -> impl Strategy<Value = Option<Notify>> {
    (0u8..9).prop_map(|n| match n {
        0 => None,
        8 => Some(Notify::Never),
        n => Some(Notify::On { success: n & 1 != 0, failure: n & 2 != 0, delay: n & 4 != 0 }),
    })
}

fn recipient() -> impl Strategy<Value = Recipient> {
    (text(64).prop_map(|a| if a.is_empty() { "x".into() } else { a }), proptest::option::of(text(64)), notify())
        .prop_map(|(address, orcpt, notify)| Recipient { address, orcpt, notify })
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        text(64),
        0u8..3,
        any::<bool>(),
        0u8..3,
        proptest::option::of(proptest::string::string_regex("[!-~]{0,100}").expect("regex")),
        proptest::option::of(no_control(MAX_FULL_NAME)),
        proptest::collection::vec(recipient(), 1..5),
    )
        .prop_map(|(sender, b, smtputf8, r, envid, full_name, recipients)| Envelope {
            sender,
            body: [BodyType::SevenBit, BodyType::EightBitMime, BodyType::BinaryMime][b as usize],
            smtputf8,
            ret: [None, Some(Ret::Full), Some(Ret::Headers)][r as usize],
            envid,
            full_name,
            recipients,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn roundtrip(
        e in envelope(),
        len in prop_oneof![0usize..300, 0usize..3 * MAX_DATA],
        seed in any::<u8>(),
        pieces in proptest::collection::vec(1usize..100_000, 1..8),
    ) {
        let c: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        let mut w = Writer::new(Vec::new(), &e).expect("writer");
        let mut rest = &c[..];
        for &p in pieces.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = p.min(rest.len());
            w.write(&rest[..n]).expect("write");
            rest = &rest[n..];
        }
        let bytes = w.finish().expect("finish");
        let r = read_all(&bytes).expect("read");
        prop_assert_eq!(r.envelope, e);
        prop_assert_eq!(r.content, c);
    }

    #[test]
    fn arbitrary_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = read_all(&bytes);
        let mut framed = b"MTAD\x01\x00\x00\x00".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = read_all(&framed);
        let mut after = prefix();
        after.extend_from_slice(&bytes);
        let _ = read_all(&after);
    }

    /// Records of known tags with arbitrary payloads and lengths.
    #[test]
    fn arbitrary_records_do_not_panic(
        recs in proptest::collection::vec(
            (0usize..6, proptest::collection::vec(any::<u8>(), 0..64), proptest::option::of(any::<u32>())),
            0..10,
        ),
    ) {
        let mut b = b"MTAD\x01\x00\x00\x00".to_vec();
        for (t, p, len) in recs {
            b.extend_from_slice(&[SNDR, OPTS, RCPT, DATA, END, *b"XXXX"][t]);
            b.extend_from_slice(&len.unwrap_or(p.len() as u32).to_le_bytes());
            b.extend_from_slice(&p);
        }
        let _ = read_all(&b);
    }

    /// Any damage is caught, or it is no damage.
    #[test]
    fn damage_is_caught(
        e in envelope(),
        len in 0usize..200,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let bytes = encode(&e, &content(len));
        let mut b = bytes.clone();
        for (i, x) in flips {
            b[i.index(bytes.len())] ^= x;
        }
        if b != bytes {
            prop_assert!(read_all(&b).is_err());
        }
    }
}

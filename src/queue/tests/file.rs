//! The queue file format: round trips, validation, in-place updates.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use proptest::prelude::*;

use super::super::file::{STAT_RECORD, stored_reason};
use super::super::file::{read_checked, read_sized, read_small};
use super::super::{
    BodyType, Client, CorruptError, DoneAction, Envelope, Error, MAX_ADDRESS, MAX_REASON, Notify, Protocol, QueueFile,
    QueueId, QueueIdGen, Recipient, Ret, State, Status, Time, move_to_corrupt, read_content, read_envelope,
    read_queue_file, update_status_at, verify_content,
};
use super::{TempDir, sample};

fn write_file(dir: &TempDir, q: &QueueFile) -> File {
    let path = dir.path.join(q.id.as_str());
    let mut f = File::create(&path).expect("create");
    f.write_all(&q.encode().expect("encode")).expect("write");
    OpenOptions::new().read(true).write(true).open(&path).expect("reopen")
}

#[test]
fn roundtrip() {
    let mut ids = QueueIdGen::new(7);
    for (n, c) in [(1, 0), (3, 5120), (50, 100_000)] {
        let q = sample(&mut ids, n, c);
        let bytes = q.encode().expect("encode");
        assert_eq!(&bytes[0..4], b"MTAQ");
        assert_eq!(QueueFile::decode(&bytes).expect("decode"), q);
    }
}

#[test]
fn null_sender_and_options_absent() {
    let mut ids = QueueIdGen::new(1);
    let mut q = sample(&mut ids, 2, 10);
    q.envelope.sender.clear();
    q.envelope.dsn_ret = None;
    q.envelope.dsn_envid = None;
    q.envelope.client.tls = None;
    q.envelope.body = BodyType::BinaryMime;
    q.envelope.smtputf8 = true;
    q.envelope.client.protocol = Protocol::Local;
    q.recipients[0].orcpt = None;
    q.recipients[0].notify = None;
    q.recipients[1].notify = Some(Notify::Never);
    assert_eq!(QueueFile::decode(&q.encode().expect("encode")).expect("decode"), q);
}

#[test]
fn limits_refused_when_encoding() {
    let mut ids = QueueIdGen::new(1);
    let mut q = sample(&mut ids, 1, 10);
    q.recipients[0].address = "a".repeat(MAX_ADDRESS + 1);
    assert!(matches!(q.encode(), Err(Error::Invalid(_))));
    let mut q = sample(&mut ids, 1, 10);
    q.recipients.clear();
    assert!(matches!(q.encode(), Err(Error::Invalid(_))));
    let mut q = sample(&mut ids, 1, 10);
    q.recipients[0].notify = Some(Notify::On { success: false, failure: false, delay: false });
    assert!(matches!(q.encode(), Err(Error::Invalid(_))));
    // encode_into leaves the buffer as it was.
    let mut buf = b"keep".to_vec();
    assert!(q.encode_into(&mut buf).is_err());
    assert_eq!(buf, b"keep");
}

#[test]
fn long_reason_is_cut_with_a_marker() {
    let long = "é".repeat(400); // 800 bytes, two-byte characters
    let cut = stored_reason(&long).into_owned();
    assert!(cut.len() <= MAX_REASON && cut.ends_with("..."));
    let mut ids = QueueIdGen::new(1);
    let mut q = sample(&mut ids, 1, 10);
    q.recipients[0].status.reason = long;
    let d = QueueFile::decode(&q.encode().expect("encode")).expect("decode");
    assert_eq!(d.recipients[0].status.reason, cut);
}

/// The bytes of recipient `i`'s first status slot's reason field in an
/// encoded file (a new file's status is in its first slot).
fn first_slot_reason(bytes: &[u8], i: usize) -> String {
    let rcpt = (0..=i).fold(None, |from: Option<usize>, _| {
        let start = from.map_or(0, |p| p + 1);
        bytes[start..].windows(4).position(|w| w == b"RCPT").map(|p| start + p)
    });
    let rcpt = rcpt.expect("RCPT record");
    let len = u32::from_le_bytes(bytes[rcpt + 4..rcpt + 8].try_into().unwrap()) as usize;
    let slot = rcpt + 12 + len;
    assert_eq!(&bytes[slot..slot + 4], b"STAT");
    let p = &bytes[slot + 12..];
    let rlen = u16::from_le_bytes([p[6], p[7]]) as usize;
    String::from_utf8(p[32..32 + rlen].to_vec()).unwrap()
}

#[test]
fn a_done_recipients_action_goes_in_front_of_its_reason() {
    let mut ids = QueueIdGen::new(1);
    let mut q = sample(&mut ids, 6, 10);
    let done = |action, reason: &str| Status {
        state: State::Done,
        action,
        attempts: 1,
        changed: 1_700_000_000,
        reason: reason.into(),
        ..Status::default()
    };
    q.recipients[0].status = done(Some(DoneAction::Delivered), "delivered to maildir");
    q.recipients[1].status = done(Some(DoneAction::Relayed), "250 2.0.0 Ok: queued as X");
    q.recipients[2].status = done(Some(DoneAction::Expanded), "forwarded as Y to <a@x.example>");
    // As a version that recorded no action wrote it.
    q.recipients[3].status = done(None, "250 2.0.0 Ok");
    q.recipients[4].status = done(Some(DoneAction::Relayed), "");
    q.recipients[5].status =
        Status { state: State::Deferred, reason: "451 4.3.0 later".into(), next_attempt: 5, ..Status::default() };
    let bytes = q.encode().expect("encode");
    assert_eq!(QueueFile::decode(&bytes).expect("decode"), q);
    // What a reader that knows nothing of the action reads as the reason:
    // the same field, in the same bounds, with the action word in front.
    let fields: Vec<String> = (0..6).map(|i| first_slot_reason(&bytes, i)).collect();
    assert_eq!(
        fields,
        [
            "delivered: delivered to maildir",
            "relayed: 250 2.0.0 Ok: queued as X",
            "expanded: forwarded as Y to <a@x.example>",
            "250 2.0.0 Ok",
            "relayed: ",
            "451 4.3.0 later",
        ]
    );
    // Only a done recipient has one: any other state's reason is its own,
    // whatever it starts with.
    let mut q = sample(&mut ids, 1, 10);
    q.recipients[0].status = Status { state: State::Bounced, reason: "relayed: no".into(), ..Status::default() };
    assert_eq!(QueueFile::decode(&q.encode().expect("encode")).expect("decode"), q);
    q.recipients[0].status.action = Some(DoneAction::Delivered);
    let d = QueueFile::decode(&q.encode().expect("encode")).expect("decode");
    assert_eq!(d.recipients[0].status.action, None, "not written for a bounced recipient");
    assert_eq!(d.recipients[0].status.reason, "relayed: no");
}

#[test]
fn a_long_reason_keeps_its_action() {
    let mut ids = QueueIdGen::new(1);
    let mut q = sample(&mut ids, 1, 10);
    let long = "é".repeat(400);
    q.recipients[0].status =
        Status { state: State::Done, action: Some(DoneAction::Expanded), reason: long, ..Status::default() };
    let bytes = q.encode().expect("encode");
    let field = first_slot_reason(&bytes, 0);
    assert!(field.len() <= MAX_REASON && field.starts_with("expanded: é") && field.ends_with("..."), "{field}");
    let d = QueueFile::decode(&bytes).expect("decode");
    assert_eq!(d.recipients[0].status.action, Some(DoneAction::Expanded));
    assert_eq!(d.recipients[0].status.reason, field["expanded: ".len()..]);
}

#[test]
fn rejects_damage() {
    let mut ids = QueueIdGen::new(1);
    let q = sample(&mut ids, 2, 300);
    let good = q.encode().expect("encode");
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(QueueFile::decode(&trailing).is_err());
    for cut in [0, 3, 8, 20, 100, good.len() - 1] {
        assert!(QueueFile::decode(&good[..cut]).is_err(), "truncated at {cut}");
    }
    let mut v2 = good.clone();
    v2[4] = 2;
    let e = QueueFile::decode(&v2).expect_err("version 2");
    assert!(e.reason.contains("version 2"), "{e}");
    assert_eq!(e.to_string(), format!("corrupt at byte 4: {}", e.reason));
}

#[test]
fn every_single_byte_flip_is_detected() {
    let mut ids = QueueIdGen::new(3);
    let q = sample(&mut ids, 2, 64);
    let good = q.encode().expect("encode");
    let mut unnoticed = 0;
    for i in 0..good.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[i] ^= x;
            match QueueFile::decode(&bad) {
                Err(_) => {}
                // Only damage to a recipient's unused second status slot
                // can go unnoticed, and it changes nothing.
                Ok(d) => {
                    assert_eq!(d, q, "flip at {i} decoded to something else");
                    unnoticed += 1;
                }
            }
        }
    }
    assert!(unnoticed <= 2 * 3 * STAT_RECORD, "{unnoticed} flips unnoticed");
}

#[test]
fn envelope_content_range_and_verify() {
    let dir = TempDir::new("env");
    let mut ids = QueueIdGen::new(1);
    let q = sample(&mut ids, 3, 5000);
    let f = write_file(&dir, &q);
    let env = read_envelope(&f).expect("read_envelope");
    assert_eq!((env.id, &env.envelope, &env.recipients), (q.id, &q.envelope, &q.recipients));
    let r = env.content_range();
    assert_eq!(r.len, 5000);
    let mut content = vec![0u8; r.len as usize];
    f.read_exact_at(&mut content, r.offset).expect("pread");
    assert_eq!(content, q.content);
    verify_content(&f, r).expect("content ok");
    // Read into a buffer that held a longer message before: only this
    // content is left in it.
    let mut held = vec![7u8; 9000];
    read_content(&f, r, &mut held).expect("read_content");
    assert_eq!(held, q.content);
    f.write_all_at(b"X", r.offset + 10).expect("damage");
    assert!(matches!(verify_content(&f, r), Err(Error::Corrupt(_))));
    assert!(matches!(read_content(&f, r, &mut held), Err(Error::Corrupt(_))));
    assert!(matches!(read_queue_file(&f), Err(Error::Corrupt(_))));
    // A range past the end of the file: too short, not a panic.
    let past = crate::queue::ContentRange { offset: r.offset, len: r.len + 1, crc: r.crc };
    assert!(matches!(read_content(&f, past, &mut held), Err(Error::Corrupt(_))));
}

#[test]
fn small_file_read_whole_checked_and_large_one_left_to_stream() {
    let dir = TempDir::new("small");
    let mut ids = QueueIdGen::new(1);
    // Sizes around the first read's 16 KiB and a limit of 64 KiB.
    for c in [0, 5000, 16 * 1024, 40_000] {
        let q = sample(&mut ids, 2, c);
        let f = write_file(&dir, &q);
        let (env, bytes) = read_small(&f, 64 * 1024).expect("read_small").expect("small enough");
        assert_eq!((env.id, &env.envelope, &env.recipients), (q.id, &q.envelope, &q.recipients));
        assert_eq!(bytes, q.encode().expect("encode"));
        assert_eq!(&bytes[env.content_range().offset as usize..], &q.content[..]);
        let size = bytes.len();
        // One byte over the limit: streamed instead; exactly at it: whole.
        assert!(read_small(&f, size - 1).expect("read_small").is_none());
        assert!(read_small(&f, size).expect("read_small").is_some());
    }
    let q = sample(&mut ids, 1, 5000);
    let f = write_file(&dir, &q);
    let at = read_envelope(&f).expect("read_envelope").content_range().offset;
    f.write_all_at(b"X", at + 10).expect("damage");
    assert!(matches!(read_small(&f, 64 * 1024), Err(Error::Corrupt(_))), "content CRC checked");
    f.set_len(at + 100).expect("truncate");
    assert!(matches!(read_small(&f, 64 * 1024), Err(Error::Corrupt(_))), "short file refused");
}

/// A file, or content, too large for the memory there is: an error of
/// the process, which says nothing of the file (recovery took such a
/// valid file for corrupt, removed it and wrote its journal copy again
/// over its statuses: duplicates).
#[test]
fn no_memory_for_a_file_is_an_io_error_not_corruption() {
    let dir = TempDir::new("nomem");
    let mut ids = QueueIdGen::new(1);
    let q = sample(&mut ids, 1, 5000);
    let f = write_file(&dir, &q);
    // More than any allocation can be (over isize::MAX): refused at once.
    for size in [u64::MAX, u64::MAX / 2 + 1] {
        match read_sized(&f, size) {
            Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory, "{e}"),
            other => panic!("{size}: {other:?}"),
        }
    }
    let r = read_envelope(&f).expect("read_envelope").content_range();
    let huge = crate::queue::ContentRange { offset: r.offset, len: u64::MAX / 2 + 1, crc: r.crc };
    let mut buf = Vec::new();
    match read_content(&f, huge, &mut buf) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory, "{e}"),
        other => panic!("{other:?}"),
    }
}

/// What a delivery agent reads: a small file whole, a larger one in parts,
/// the content's CRC checked either way.
#[test]
fn read_checked_reads_small_files_whole_and_checks_every_content() {
    let dir = TempDir::new("checked");
    let mut ids = QueueIdGen::new(1);
    let q = sample(&mut ids, 1, 5000);
    let f = write_file(&dir, &q);
    let (env, bytes) = read_checked(&f, 64 * 1024).expect("read_checked");
    assert_eq!((env.id, bytes), (q.id, Some(q.encode().expect("encode"))));
    let (env, bytes) = read_checked(&f, 1000).expect("read_checked");
    assert_eq!((env.id, bytes), (q.id, None), "over the limit: read in parts");
    let at = env.content_range().offset;
    f.write_all_at(b"X", at + 4000).expect("damage");
    for max in [64 * 1024, 1000] {
        assert!(matches!(read_checked(&f, max), Err(Error::Corrupt(_))), "content CRC checked (limit {max})");
    }
}

#[test]
fn recipient_status_updated_in_place() {
    let dir = TempDir::new("status");
    let mut ids = QueueIdGen::new(1);
    let q = sample(&mut ids, 3, 100);
    let f = write_file(&dir, &q);
    let size = f.metadata().expect("stat").len();
    let mut env = read_envelope(&f).expect("read_envelope");
    for round in 0..5u32 {
        let st = Status {
            state: if round == 4 { State::Done } else { State::Deferred },
            action: (round == 4).then_some(DoneAction::Relayed),
            attempts: round + 1,
            next_attempt: 1_700_000_000 + i64::from(round) * 300,
            changed: 1_700_000_000,
            reason: format!("451 4.7.1 try again later (round {round})"),
        };
        env.update_recipient(&f, 1, st.clone()).expect("update");
        assert_eq!(env.recipients[1].status, st);
        let d = read_queue_file(&f).expect("decode after update");
        assert_eq!(d.recipients[1].status, st);
        assert_eq!(d.recipients[0].status, Status::default());
        assert_eq!(d.recipients[2].status, Status::default());
        assert_eq!(d.content, q.content);
        assert_eq!(read_envelope(&f).expect("reread").recipients, env.recipients);
    }
    assert_eq!(f.metadata().expect("stat").len(), size, "updates do not grow the file");
    assert!(env.update_recipient(&f, 3, Status::default()).is_err());
}

#[test]
fn torn_status_write_falls_back_to_the_previous_status() {
    let dir = TempDir::new("torn-status");
    let mut ids = QueueIdGen::new(1);
    let q = sample(&mut ids, 1, 100);
    let f = write_file(&dir, &q);
    let mut env = read_envelope(&f).expect("read_envelope");
    let first = Status { state: State::Deferred, attempts: 1, reason: "first".into(), ..Status::default() };
    env.update_recipient(&f, 0, first.clone()).expect("update"); // goes to slot B (seq 2)
    let second = Status { state: State::Done, attempts: 2, reason: "second".into(), ..Status::default() };
    env.update_recipient(&f, 0, second).expect("update"); // slot A (seq 3)
    // A crash tore the write of slot A: its tail never reached the disk.
    let at = env.status_offset(0).expect("offset");
    f.write_all_at(&[0xaa; 100], at + 200).expect("tear");
    let d = read_queue_file(&f).expect("still readable");
    assert_eq!(d.recipients[0].status, first);
    // The next update overwrites the torn slot.
    let third = Status { state: State::Bounced, reason: "third".into(), ..Status::default() };
    let mut env = read_envelope(&f).expect("read_envelope");
    env.update_recipient(&f, 0, third.clone()).expect("update");
    assert_eq!(read_queue_file(&f).expect("decode").recipients[0].status, third);
}

#[test]
fn a_status_written_again_goes_to_the_same_slot() {
    // A write whose sync failed is redone as it was: the slot holding the
    // status known to be on disk is left alone.
    let dir = TempDir::new("redo-status");
    let mut ids = QueueIdGen::new(1);
    let q = sample(&mut ids, 1, 100);
    let f = write_file(&dir, &q);
    let env = read_envelope(&f).expect("read_envelope");
    let at = env.status_offset(0).expect("offset");
    let synced = Status { state: State::Deferred, attempts: 1, reason: "synced".into(), ..Status::default() };
    let (_, first) = update_status_at(&f, at, &synced).expect("update");
    let lost = Status {
        state: State::Done,
        action: Some(DoneAction::Delivered),
        attempts: 2,
        reason: "lost".into(),
        ..Status::default()
    };
    let (_, second) = update_status_at(&f, at, &lost).expect("update");
    assert_ne!(first.at, second.at, "alternate slots");
    // The disk lost the second write (its sync failed): the slot went back.
    f.write_all_at(&[0xaa; 50], second.at + 100).expect("lose");
    assert_eq!(read_queue_file(&f).expect("decode").recipients[0].status, synced);
    second.redo(&f).expect("redo");
    assert_eq!(read_queue_file(&f).expect("decode").recipients[0].status, lost);
    // The synced slot was not touched by the redo.
    let mut now = vec![0u8; first.record.len()];
    f.read_exact_at(&mut now, first.at).expect("read");
    assert_eq!(now, first.record);
}

#[test]
fn huge_recipient_count_does_not_allocate() {
    let mut ids = QueueIdGen::new(1);
    let q = sample(&mut ids, 1, 0);
    let mut bytes = q.encode().expect("encode");
    // Patch the recipient count (ENVL payload offset 20 + 8 + 4 + 8) and
    // fix the record CRC, so that only the count is wrong.
    let at = 8 + 12 + 40;
    bytes[at..at + 4].copy_from_slice(&100_000u32.to_le_bytes());
    let len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[8..16]);
    h.update(&bytes[20..20 + len]);
    bytes[16..20].copy_from_slice(&h.finalize().to_le_bytes());
    let e: CorruptError = QueueFile::decode(&bytes).expect_err("too many recipients for the size");
    assert!(e.reason.contains("cannot fit"), "{e}");
}

#[test]
fn move_to_corrupt_keeps_older_files() {
    let dir = TempDir::new("corrupt");
    let incoming = dir.sub("incoming");
    let corrupt = dir.sub("corrupt");
    for round in 0..3 {
        std::fs::write(dir.path.join("incoming/X"), format!("{round}")).expect("write");
        let name = move_to_corrupt(incoming.as_fd(), "X", corrupt.as_fd()).expect("move");
        assert_eq!(name, if round == 0 { "X".to_string() } else { format!("X.{round}") });
    }
    assert_eq!(dir.names("corrupt"), ["X", "X.1", "X.2"]);
    assert!(move_to_corrupt(incoming.as_fd(), "../X", corrupt.as_fd()).is_err());
}

#[test]
fn queue_ids() {
    let mut g = QueueIdGen::new(0x12345);
    let t = Time { secs: 1_750_000_000, micros: 123_456 };
    let a = g.next_at(t);
    let b = g.next_at(t);
    let c = g.next_at(Time { secs: t.secs, micros: t.micros + 1 });
    let back = g.next_at(Time { secs: t.secs - 100, micros: 0 });
    assert_ne!(a, b);
    assert!(a < c && b < c && c < back, "ordered by arrival, never backwards");
    assert_eq!(a.instance(), 0x12345);
    assert_eq!(a.time(), t);
    assert_eq!(a.as_str().len(), 20);
    assert!(a.as_str().bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
    assert_eq!(QueueId::parse(a.as_str()), Some(a));
    assert_eq!(QueueId::parse("0000000000000000000I"), None);
    assert_eq!(QueueId::parse("short"), None);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10_000 {
        assert!(seen.insert(g.next_id()));
    }
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(&format!("[a-zA-Z0-9@._+-]{{0,{max}}}")).expect("regex"),
        any::<String>().prop_filter("within the bound", move |s| s.len() <= max),
    ]
}

fn status() -> impl Strategy<Value = Status> {
    (0u8..4, 0u8..4, any::<u32>(), any::<i64>(), any::<i64>(), text(MAX_REASON)).prop_map(
        |(s, a, attempts, n, c, reason)| {
            let state = [State::Pending, State::Done, State::Deferred, State::Bounced][s as usize];
            // A done recipient's action, where the reason leaves room for
            // it in front (a longer one is cut: `a_long_reason_keeps_its_action`).
            let action = [None, Some(DoneAction::Delivered), Some(DoneAction::Relayed), Some(DoneAction::Expanded)]
                [a as usize]
                .filter(|a| state == State::Done && reason.len() + a.as_str().len() + 2 <= MAX_REASON);
            Status { state, action, attempts, next_attempt: n, changed: c, reason }
        },
    )
}

fn notify() -> impl Strategy<Value = Option<Notify>> {
    (0u8..9).prop_map(|n| match n {
        0 => None,
        8 => Some(Notify::Never),
        n => Some(Notify::On { success: n & 1 != 0, failure: n & 2 != 0, delay: n & 4 != 0 }),
    })
}

fn recipient() -> impl Strategy<Value = Recipient> {
    (text(64), proptest::option::of(text(64)), notify(), status())
        .prop_map(|(address, orcpt, notify, status)| Recipient { address, orcpt, notify, status })
}

fn queue_file() -> impl Strategy<Value = QueueFile> {
    let client = (text(40), text(64), text(64), 0u8..6, proptest::option::of(text(64))).prop_map(
        |(address, hostname, helo, p, tls)| {
            let protocol = [
                Protocol::Local,
                Protocol::Smtp,
                Protocol::Esmtp,
                Protocol::Esmtpa,
                Protocol::Esmtps,
                Protocol::Esmtpsa,
            ][p as usize];
            Client { address, hostname, helo, protocol, tls }
        },
    );
    let envelope = (
        text(64),
        any::<i64>(),
        0u32..1_000_000,
        client,
        0u8..3,
        any::<bool>(),
        0u8..3,
        proptest::option::of(text(100)),
        any::<u64>(),
    )
        .prop_map(|(sender, secs, micros, client, b, smtputf8, r, dsn_envid, size)| Envelope {
            sender,
            arrival: Time { secs, micros },
            client,
            body: [BodyType::SevenBit, BodyType::EightBitMime, BodyType::BinaryMime][b as usize],
            smtputf8,
            dsn_ret: [None, Some(Ret::Full), Some(Ret::Headers)][r as usize],
            dsn_envid,
            size,
        });
    (
        any::<(i64, u32, u32)>(),
        envelope,
        proptest::collection::vec(recipient(), 1..5),
        proptest::collection::vec(any::<u8>(), 0..2000),
    )
        .prop_map(|((s, i, c), envelope, recipients, content)| QueueFile {
            id: QueueId::new(Time { secs: s, micros: i % 1_000_000 }, i, c),
            envelope,
            recipients,
            content,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn queue_file_roundtrip(q in queue_file()) {
        let bytes = q.encode().expect("encode");
        prop_assert_eq!(QueueFile::decode(&bytes).expect("decode"), q);
    }

    #[test]
    fn queue_file_decode_no_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = QueueFile::decode(&bytes);
        let mut framed = b"MTAQ\x01\x00\x00\x00".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = QueueFile::decode(&framed);
    }

    /// Damage inside record payloads whose CRCs are then made good again:
    /// the field checks, not the CRCs, must catch it.
    #[test]
    fn queue_file_fields_damaged_no_panic(
        q in queue_file(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
    ) {
        let mut f = q.encode().expect("encode");
        // The payload ranges of all records, up to CONT's end.
        let mut records = Vec::new();
        let mut pos = 8;
        loop {
            let len = u32::from_le_bytes([f[pos + 4], f[pos + 5], f[pos + 6], f[pos + 7]]) as usize;
            records.push((pos, len));
            let cont = &f[pos..pos + 4] == b"CONT";
            pos += 12 + len;
            if cont {
                break;
            }
        }
        let payload: Vec<usize> = records.iter().flat_map(|&(p, l)| p + 12..p + 12 + l).collect();
        for (i, x) in &flips {
            f[payload[i.index(payload.len())]] ^= x;
        }
        for &(p, l) in &records {
            let mut c = crc32fast::Hasher::new();
            c.update(&f[p..p + 8]);
            c.update(&f[p + 12..p + 12 + l]);
            let crc = c.finalize().to_le_bytes();
            f[p + 8..p + 12].copy_from_slice(&crc);
        }
        let _ = QueueFile::decode(&f);
    }

    /// Records with good CRCs around random payloads: the field checks,
    /// not the CRCs, must catch everything.
    #[test]
    fn queue_file_fields_no_panic(
        envl in proptest::collection::vec(any::<u8>(), 0..200),
        rcpt in proptest::collection::vec(any::<u8>(), 0..40),
        slot in proptest::collection::vec(any::<u8>(), 544),
        zero_slot in any::<bool>(),
        cont in proptest::collection::vec(any::<u8>(), 16),
        content in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        fn rec(out: &mut Vec<u8>, tag: &[u8; 4], payload: &[u8]) {
            let mut h = tag.to_vec();
            h.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            let mut c = crc32fast::Hasher::new();
            c.update(&h);
            c.update(payload);
            out.extend_from_slice(&h);
            out.extend_from_slice(&c.finalize().to_le_bytes());
            out.extend_from_slice(payload);
        }
        let mut f = b"MTAQ\x01\x00\x00\x00".to_vec();
        rec(&mut f, b"ENVL", &envl);
        rec(&mut f, b"RCPT", &rcpt);
        rec(&mut f, b"STAT", &slot);
        rec(&mut f, b"STAT", if zero_slot { &[0u8; 544][..] } else { &slot });
        rec(&mut f, b"CONT", &cont);
        f.extend_from_slice(&content);
        let _ = QueueFile::decode(&f);
    }

    #[test]
    fn queue_file_mutation_detected(
        q in queue_file(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let good = q.encode().expect("encode");
        let mut bad = good.clone();
        for (i, x) in &flips {
            let i = i.index(bad.len());
            bad[i] ^= x;
        }
        if let Some(c) = cut {
            bad.truncate(c.index(bad.len()));
        }
        if let Ok(d) = QueueFile::decode(&bad) {
            prop_assert_eq!(d, q, "damage decoded to something else");
        }
    }
}

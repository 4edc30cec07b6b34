//! cleanup trusts its peers no more than their input: an smtpd (or
//! pickup, bounce, local) that opens transactions without end is a peer
//! that does not follow the protocol, and cleanup's memory must not grow
//! with it. Here the test plays master and an smtpd for a real `cleanup`.

mod common;

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use mta::ipc::msg::{CleanupToSmtpd, CommitResult, FromMaster, Intake, MessageEnvelope, SmtpdToCleanup, ToMaster};
use mta::ipc::{self, Channel};
use mta::roles::Role;

/// limits.sessions in the test's configuration.
const SESSIONS: u32 = 4;
/// What cleanup allows one peer beyond it.
const SPARE: usize = 64;

struct Cleanup {
    started: common::Started,
    master: Channel,
    smtpd: Channel,
}

fn start(name: &str) -> Cleanup {
    let dir = std::env::temp_dir().join(format!("mta-cleanup-bounds-{}-{name}", std::process::id()));
    let mut dirs = common::queue_spool(&dir);
    std::fs::create_dir_all(dir.join(mta::roles::JOURNAL_DIR)).unwrap();
    dirs.insert(0, std::fs::File::open(dir.join(mta::roles::JOURNAL_DIR)).unwrap());
    dirs.truncate(5); // journal, incoming, active, deferred, hold
    let (mine, theirs) = ipc::pair().unwrap();
    let mut fds = vec![theirs.as_raw_fd()];
    fds.extend(dirs.iter().map(|d| d.as_raw_fd()));
    let pid = common::spawn(Path::new(env!("CARGO_BIN_EXE_cleanup")), "cleanup", &fds);
    let mut master = Channel::new(mine);
    let FromMaster::Init(mut init) = common::init(Role::Cleanup, &dir, None, Vec::new(), Duration::from_secs(10))
    else {
        unreachable!()
    };
    let config = mta::config::Config::default();
    init.intake = Some(Intake {
        listeners: Vec::new(),
        tls_certificate: None,
        tls_key: None,
        domains: vec![String::from("test.example")],
        networks: Vec::new(),
        limits: mta::config::smtp::Limits { sessions: SESSIONS, ..config.limits.clone() },
        smtpd: config.smtpd.clone(),
        cleanup: config.cleanup.clone(),
        min_free_space: 0,
        memory_messages: config.queue.memory_messages,
        memory_message_size: config.queue.memory_message_size,
        recipient_delimiter: String::new(),
        recipient_check: false,
        directory_lookup: None,
        incomplete: false,
        own_addresses: Vec::new(),
    });
    master.send(&FromMaster::Init(init), &[]).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < end, "cleanup did not say it was ready");
        match master.recv::<ToMaster>() {
            Ok(Some((ToMaster::Ready { .. }, _))) => break,
            Ok(Some(_)) => {}
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("master channel: {e}"),
        }
    }
    let (a, b) = ipc::pair().unwrap();
    master.send(&FromMaster::Peer { role: Role::Smtpd, pid: 1 }, &[a.as_fd()]).unwrap();
    let started = common::Started { pid, dir };
    Cleanup { started, master, smtpd: Channel::new(b) }
}

fn envelope() -> Box<MessageEnvelope> {
    let mut e = MessageEnvelope::internal(
        String::from("sender@example.org"),
        vec![String::from("postmaster@test.example")],
        false,
        false,
        "client.example",
    );
    e.protocol = String::from("ESMTP");
    e.client_address = String::from("127.0.0.1");
    Box::new(e)
}

fn begin(c: &mut Cleanup, txn: u64) {
    c.smtpd.send(&SmtpdToCleanup::Begin { txn, id: None, envelope: envelope() }, &[]).unwrap();
    c.smtpd.flush_within(Duration::from_secs(5)).unwrap();
}

/// The verdict on `txn`, within 10 s (other messages skipped).
fn verdict(c: &mut Cleanup, txn: u64) -> CommitResult {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < end, "no verdict on transaction {txn}");
        match c.smtpd.recv::<CleanupToSmtpd>() {
            Ok(Some((CleanupToSmtpd::Committed { txn: t, result }, _))) if t == txn => return result,
            Ok(Some(_)) => {}
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("smtpd channel: {e}"),
        }
    }
}

#[test]
fn open_transactions_are_bounded_per_peer_and_those_within_commit() {
    let mut c = start("open");
    let max = SESSIONS as usize + SPARE;
    for txn in 1..=max as u64 {
        begin(&mut c, txn);
    }
    // Within the bound, every transaction still works: one ends and is
    // queued, and its place is free again.
    let content = b"Subject: bounded\r\n\r\nwithin the bound\r\n".to_vec();
    c.smtpd.send(&SmtpdToCleanup::Content { txn: 1, data: content }, &[]).unwrap();
    c.smtpd.send(&SmtpdToCleanup::End { txn: 1 }, &[]).unwrap();
    c.smtpd.flush_within(Duration::from_secs(5)).unwrap();
    assert!(matches!(verdict(&mut c, 1), CommitResult::Queued(_)));
    c.smtpd.send(&SmtpdToCleanup::Abort { txn: 2 }, &[]).unwrap();
    begin(&mut c, max as u64 + 1);
    begin(&mut c, max as u64 + 2);
    assert!(c.started.running(), "cleanup ended within the bound");
    // One more than the bound open at once: the peer is broken.
    begin(&mut c, max as u64 + 3);
    let text = common::fatal_record(&mut c.master).expect("a fatal record");
    assert!(text.contains(&format!("smtpd opened more than {max} transactions at once")), "{text}");
    assert_eq!(c.started.exit_code(Duration::from_secs(10)), 1);
}

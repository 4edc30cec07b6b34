//! Delivery workers at work: the `local` program built beside these
//! tests (skipped when it is not there), started as we are and given
//! jobs over its socket, as the agent gives them: one worker delivers
//! message after message, opening the mailbox by name for each (a
//! mailbox removed or replaced between two jobs is created or found
//! anew), and says when it cannot; a dead worker's job is lost, never
//! taken for delivered. Stand-ins (Python on the socket) show that a
//! worker that replies garbage, runs past the time limit or ends without
//! a verdict is killed (if need be), reaped, and its job deferred as a
//! killed delivery's.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};

use super::TempDir;
use crate::ipc::msg::{RecipientStatus, ToWorker};
use crate::local::child::Kind;
use crate::local::pool::Key;
use crate::local::repair::{Progress, progress};
use crate::local::spawn::{Ran, Worker};
use crate::queue::QueueIdGen;

const LIMIT: Duration = Duration::from_secs(20);

/// The `local` program of this build, if built.
pub(super) fn program() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("local");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skipped: no {}", p.display());
        None
    }
}

fn start(program: &Path, kind: Kind, dir: &Path, name: &str, lock_ms: u64) -> Worker {
    let key = Key {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        kind,
        dir: dir.to_str().unwrap().to_string(),
        name: name.to_string(),
        hostname: String::from("mx.example.org"),
        lock_ms,
        // Confined as in use, wherever the kernel has what it takes.
        confinement: if sandbox::describe_kernel().contains("landlock ABI") { "confined" } else { "unconfined" },
    };
    Worker::start(program, &key.argv(), None).expect("start a worker")
}

/// A queue file in `dir` holding `body` as its content.
pub(super) fn queue(dir: &TempDir, body: &str) -> File {
    let mut ids = QueueIdGen::new(3);
    let mut q = crate::queue::tests::sample(&mut ids, 1, 0);
    q.content = format!("Subject: test\r\n\r\n{body}\r\n").into_bytes();
    q.envelope.size = q.content.len() as u64;
    let path = dir.path.join(q.id.as_str());
    std::fs::write(&path, q.encode().unwrap()).unwrap();
    File::open(&path).unwrap()
}

/// The job for queue file `f`, as the agent makes it.
fn job(f: &File) -> ToWorker {
    let r = crate::queue::read_envelope(f).unwrap().content_range();
    ToWorker::Deliver {
        sender: String::from("alice@example.org"),
        recipient: String::from("bob@example.org"),
        arrival: 1_795_349_197,
        content: (r.offset, r.len, r.crc),
        batched: false,
    }
}

/// Give `w` the job for queue file `f`.
fn run(w: Worker, f: &File, limit: Duration) -> (Option<Worker>, Ran) {
    w.job(&job(f), Some(f), limit)
}

/// Give `w` a job with `body`; its verdict must come back, with the
/// worker.
fn deliver(w: Worker, q: &TempDir, body: &str) -> (Worker, Ran) {
    let (back, ran) = run(w, &queue(q, body), LIMIT);
    let w = back.unwrap_or_else(|| panic!("the worker was lost: {:?}", ran.lost));
    (w, ran)
}

fn sent(ran: &Ran, what: &str) {
    let o = ran.outcome(LIMIT);
    assert!(matches!(o.status, RecipientStatus::Delivered { .. }), "{o:?}");
    assert_eq!(o.reason, what);
    assert!(!ran.killed());
}

fn read(p: &Path) -> String {
    String::from_utf8(std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn one_worker_delivers_again_and_again_to_the_mailbox_by_name() {
    let Some(program) = program() else { return };
    let spool = TempDir::new("worker-spool");
    let q = TempDir::new("worker-queue");
    let w = start(&program, Kind::Mbox, &spool.path, "bob", 5_000);
    let pid = w.pid();
    let box_path = spool.path.join("bob");

    let (w, ran) = deliver(w, &q, "first");
    sent(&ran, "delivered to mailbox");
    assert_eq!(progress(&ran.text), Progress::Appended, "{}", String::from_utf8_lossy(&ran.text));
    let (mut w, ran) = deliver(w, &q, "second");
    sent(&ran, "delivered to mailbox");
    let text = read(&box_path);
    assert_eq!(text.matches("\nfirst\n").count() + text.matches("\nsecond\n").count(), 2, "{text}");
    assert!(!spool.path.join("bob.lock").exists(), "the dot-lock is let go after each job");
    assert!(w.usable());

    // A mail reader removed the mailbox: it is created again.
    std::fs::remove_file(&box_path).unwrap();
    let (w, ran) = deliver(w, &q, "third");
    sent(&ran, "delivered to mailbox");
    let text = read(&box_path);
    assert!(text.starts_with("From alice@example.org ") && text.contains("\nthird\n"), "{text}");
    assert!(!text.contains("first"), "{text}");

    // ...or replaced it: the new file gets the next message.
    let replaced = spool.path.join("bob.new");
    std::fs::write(&replaced, "From x Thu Jan  1 00:00:00 1970\n\nkept\n\n").unwrap();
    std::fs::rename(&replaced, &box_path).unwrap();
    let (mut w, ran) = deliver(w, &q, "fourth");
    sent(&ran, "delivered to mailbox");
    let text = read(&box_path);
    assert!(text.starts_with("From x ") && text.contains("\nkept\n\nFrom alice@example.org "), "{text}");
    assert!(text.contains("\nfourth\n") && !text.contains("third"), "{text}");

    assert_eq!(w.pid(), pid, "one worker did all of it");
    assert!(w.usable());
    w.close();
    assert!(nix::sys::signal::kill(pid, None).is_err(), "closed and reaped");
}

#[test]
fn a_locked_mailbox_is_reported_and_the_worker_goes_on() {
    let Some(program) = program() else { return };
    let spool = TempDir::new("worker-locked");
    let q = TempDir::new("worker-locked-queue");
    let file = File::create(spool.path.join("bob")).unwrap();
    let held = Flock::lock(file, FlockArg::LockExclusive).unwrap();
    let w = start(&program, Kind::File, &spool.path, "bob", 300);
    let (w, ran) = deliver(w, &q, "waits");
    let o = ran.outcome(LIMIT);
    assert_eq!((o.status, o.dsn.as_str()), (RecipientStatus::Deferred, "4.2.0"), "{}", o.reason);
    assert!(o.reason.contains("cannot lock bob"), "{}", o.reason);
    assert_eq!(progress(&ran.text), Progress::NotWriting);
    drop(held);
    let (w, ran) = deliver(w, &q, "now");
    sent(&ran, "delivered to file");
    assert!(read(&spool.path.join("bob")).contains("\nnow\n"));
    w.close();
}

#[test]
fn content_that_fails_its_crc_is_not_delivered_and_the_worker_goes_on() {
    let Some(program) = program() else { return };
    let spool = TempDir::new("worker-crc");
    let q = TempDir::new("worker-crc-queue");
    let w = start(&program, Kind::Mbox, &spool.path, "bob", 5_000);
    // The range says one CRC, the file holds other bytes.
    let f = queue(&q, "damaged");
    let ToWorker::Deliver { sender, recipient, arrival, content: (offset, len, crc), batched } = job(&f) else {
        unreachable!()
    };
    let bad = ToWorker::Deliver { sender, recipient, arrival, content: (offset, len, crc ^ 1), batched };
    let (back, ran) = w.job(&bad, Some(&f), LIMIT);
    let w = back.expect("the worker is kept");
    let o = ran.outcome(LIMIT);
    assert_eq!((o.status, o.dsn.as_str()), (RecipientStatus::Deferred, "4.3.0"), "{}", o.reason);
    assert!(o.reason.contains("the message content cannot be read: "), "{}", o.reason);
    assert!(!spool.path.join("bob").exists(), "nothing written");
    let (w, ran) = deliver(w, &q, "sound");
    sent(&ran, "delivered to mailbox");
    w.close();
}

#[test]
fn a_maildir_worker_delivers_each_message_as_its_own_file() {
    let Some(program) = program() else { return };
    let home = TempDir::new("worker-home");
    let q = TempDir::new("worker-md-queue");
    let w = start(&program, Kind::Maildir, &home.path, "Maildir/", 5_000);
    let pid = w.pid().as_raw();
    let (w, ran) = deliver(w, &q, "one");
    sent(&ran, "delivered to maildir");
    // Removed between two jobs: made again.
    std::fs::remove_dir_all(home.path.join("Maildir")).unwrap();
    let (w, ran) = deliver(w, &q, "two");
    sent(&ran, "delivered to maildir");
    let (w, ran) = deliver(w, &q, "three");
    sent(&ran, "delivered to maildir");
    let names = home.names("Maildir/new");
    assert_eq!(names.len(), 2, "{names:?}");
    // One process, counting its deliveries.
    for n in &names {
        assert!(n.contains(&format!("P{pid}Q")), "{n}");
    }
    assert!(home.names("Maildir/tmp").is_empty());
    w.close();
}

/// The batched job for queue file `f`, as the agent makes it for a
/// Maildir.
fn batched_job(f: &File) -> ToWorker {
    match job(f) {
        ToWorker::Deliver { sender, recipient, arrival, content, .. } => {
            ToWorker::Deliver { sender, recipient, arrival, content, batched: true }
        }
        other => other,
    }
}

/// Give `w` a batched job with `body`.
fn deliver_batched(w: Worker, q: &TempDir, body: &str) -> (Worker, Ran) {
    let f = queue(q, body);
    let (back, ran) = w.job(&batched_job(&f), Some(&f), LIMIT);
    (back.unwrap_or_else(|| panic!("the worker was lost: {:?}", ran.lost)), ran)
}

/// A Maildir worker with two batched deliveries written to `tmp/`, not
/// yet committed: its home, its queue folder and the worker.
fn two_uncommitted(program: &Path, tag: &str) -> (TempDir, TempDir, Worker) {
    let home = TempDir::new(tag);
    let q = TempDir::new(&format!("{tag}-queue"));
    let mut w = start(program, Kind::Maildir, &home.path, "Maildir/", 5_000);
    for body in ["one", "two"] {
        let (back, ran) = deliver_batched(w, &q, body);
        sent(&ran, "delivered to maildir");
        w = back;
    }
    assert_eq!(home.names("Maildir/tmp").len(), 2);
    (home, q, w)
}

#[test]
fn a_batch_of_maildir_deliveries_is_synced_once_when_asked() {
    let Some(program) = program() else { return };
    let home = TempDir::new("worker-batch");
    let q = TempDir::new("worker-batch-queue");
    let w = start(&program, Kind::Maildir, &home.path, "Maildir/", 5_000);
    // Nothing to sync yet: said so, plainly.
    let (back, ran) = w.job(&ToWorker::Sync, None, LIMIT);
    sent(&ran, "synced");
    let mut w = back.expect("the worker answered");
    for body in ["one", "two", "three"] {
        let (back, ran) = deliver_batched(w, &q, body);
        sent(&ran, "delivered to maildir");
        w = back;
    }
    // Written to tmp/, none of them in new/ before the sync: a reader
    // never sees a message not yet on disk.
    assert_eq!(home.names("Maildir/tmp").len(), 3);
    assert!(home.names("Maildir/new").is_empty());
    let (back, ran) = w.job(&ToWorker::Sync, None, LIMIT);
    sent(&ran, "synced");
    // All three whole in new/, tmp/ empty.
    let new = home.path.join("Maildir/new");
    let mut bodies: Vec<String> = home.names("Maildir/new").iter().map(|n| read(&new.join(n))).collect();
    bodies.sort();
    assert_eq!(bodies.len(), 3);
    for (text, body) in bodies.iter().zip(["one", "three", "two"]) {
        assert!(text.ends_with(&format!("\n\n{body}\n")), "{text}");
    }
    assert!(home.names("Maildir/tmp").is_empty());
    // A second sync has nothing to do.
    let (back, ran) = back.expect("the worker answered").job(&ToWorker::Sync, None, LIMIT);
    sent(&ran, "synced");
    // A plain job after the batch syncs on its own, as ever.
    let (w, ran) = deliver(back.expect("the worker answered"), &q, "four");
    sent(&ran, "delivered to maildir");
    assert_eq!(home.names("Maildir/new").len(), 4);
    w.close();
}

#[test]
fn jobs_handed_without_waiting_are_answered_in_turn() {
    let Some(program) = program() else { return };
    let home = TempDir::new("worker-handed");
    let q = TempDir::new("worker-handed-queue");
    let mut w = start(&program, Kind::Maildir, &home.path, "Maildir/", 5_000);
    let files: Vec<File> = ["one", "two", "three"].iter().map(|b| queue(&q, b)).collect();
    for f in &files {
        w.submit(&batched_job(f), Some(f)).expect("hand over a job");
    }
    // A fourth job's content is damaged: the first three are answered
    // delivered, the fourth not, each in its turn.
    let ToWorker::Deliver { sender, recipient, arrival, content: (o, l, crc), batched } = batched_job(&files[0]) else {
        unreachable!()
    };
    let bad = ToWorker::Deliver { sender, recipient, arrival, content: (o, l, crc ^ 1), batched };
    w.submit(&bad, Some(&files[0])).expect("hand over a job");
    for _ in 0..3 {
        let (back, ran) = w.answer(LIMIT);
        sent(&ran, "delivered to maildir");
        w = back.expect("the worker answered");
    }
    let (back, ran) = w.answer(LIMIT);
    let o = ran.outcome(LIMIT);
    assert_eq!(o.status, RecipientStatus::Deferred, "{o:?}");
    assert!(o.reason.contains("the message content cannot be read"), "{}", o.reason);
    let (back, ran) = back.expect("the worker answered").job(&ToWorker::Sync, None, LIMIT);
    sent(&ran, "synced");
    assert_eq!(home.names("Maildir/new").len(), 3);
    back.expect("the worker answered").close();
}

#[test]
fn a_batch_larger_than_the_files_a_worker_keeps_open_is_delivered_whole() {
    // A worker may hold 64 descriptors: a batch of 70 keeps some files
    // open for one syncfs and syncs the rest as it writes them.
    let Some(program) = program() else { return };
    let home = TempDir::new("worker-bigbatch");
    let q = TempDir::new("worker-bigbatch-queue");
    let mut w = start(&program, Kind::Maildir, &home.path, "Maildir/", 5_000);
    for i in 0..70 {
        let (back, ran) = deliver_batched(w, &q, &format!("message {i}"));
        sent(&ran, "delivered to maildir");
        w = back;
    }
    assert!(home.names("Maildir/new").is_empty());
    let (back, ran) = w.job(&ToWorker::Sync, None, LIMIT);
    sent(&ran, "synced");
    assert_eq!(home.names("Maildir/new").len(), 70);
    assert!(home.names("Maildir/tmp").is_empty());
    back.expect("the worker answered").close();
}

#[test]
fn a_worker_whose_parent_hangs_up_removes_what_it_did_not_commit() {
    let Some(program) = program() else { return };
    let (home, _q, w) = two_uncommitted(&program, "worker-hangup");
    // The socket closes (as when the parent dies); the worker is not killed.
    let pid = w.pid();
    {
        let _hung_up = w;
    }
    assert_eq!(nix::sys::wait::waitpid(pid, None).unwrap(), nix::sys::wait::WaitStatus::Exited(pid, 0));
    assert!(home.names("Maildir/tmp").is_empty(), "{:?}", home.names("Maildir/tmp"));
    assert!(home.names("Maildir/new").is_empty());
}

#[test]
fn a_batch_whose_commit_fails_leaves_nothing_in_tmp_or_new() {
    // A directory in new/ with the name of the batch's second file: the
    // first is renamed, the second cannot be, and the whole batch is
    // refused (deferred by the parent) and taken out of new/ and tmp/
    // again; nothing half-delivered remains.
    let Some(program) = program() else { return };
    let (home, q, w) = two_uncommitted(&program, "worker-badcommit");
    let md = home.path.join("Maildir");
    let mut names = home.names("Maildir/tmp");
    assert_eq!(names.len(), 2, "{names:?}");
    // Unique names carry a count of the worker's deliveries: Q0, Q1.
    names.sort_by_key(|n| n.split('Q').nth(1).map(String::from));
    let blocker = md.join("new").join(&names[1]);
    std::fs::create_dir(&blocker).unwrap();
    let (back, ran) = w.job(&ToWorker::Sync, None, LIMIT);
    let o = ran.outcome(LIMIT);
    assert_eq!(o.status, RecipientStatus::Deferred, "{o:?}");
    assert!(o.reason.contains("to new/ in the maildir"), "{}", o.reason);
    assert!(home.names("Maildir/tmp").is_empty(), "{:?}", home.names("Maildir/tmp"));
    assert_eq!(home.names("Maildir/new"), vec![names[1].clone()], "only the blocker is left");
    // The next batch goes through.
    std::fs::remove_dir(&blocker).unwrap();
    let (w, ran) = deliver_batched(back.expect("the worker answered"), &q, "three");
    sent(&ran, "delivered to maildir");
    let (back, ran) = w.job(&ToWorker::Sync, None, LIMIT);
    sent(&ran, "synced");
    let new = home.names("Maildir/new");
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(read(&md.join("new").join(&new[0])).ends_with("\n\nthree\n"));
    back.expect("the worker answered").close();
}

#[test]
fn a_sync_request_with_a_descriptor_is_refused() {
    let Some(program) = program() else { return };
    let home = TempDir::new("worker-badsync");
    let q = TempDir::new("worker-badsync-queue");
    let w = start(&program, Kind::Maildir, &home.path, "Maildir/", 5_000);
    let f = queue(&q, "x");
    let (back, ran) = w.job(&ToWorker::Sync, Some(&f), LIMIT);
    let o = ran.outcome(LIMIT);
    assert_eq!(o.status, RecipientStatus::Deferred, "{o:?}");
    assert!(o.reason.contains("a descriptor with a sync request"), "{}", o.reason);
    if let Some(w) = back {
        w.close();
    }
}

#[test]
fn large_and_small_messages_in_turn_arrive_whole() {
    let Some(program) = program() else { return };
    let home = TempDir::new("worker-sizes");
    let q = TempDir::new("worker-sizes-queue");
    let mut w = start(&program, Kind::Maildir, &home.path, "Maildir/", 5_000);
    // Over the size a worker holds in memory (streamed from the queue
    // file), under it, and over it again: each file holds its own
    // message and nothing of the one before.
    let large = |c: char| (0..6000).map(|i| format!("{c}{i:070}")).collect::<Vec<_>>().join("\r\n");
    let bodies = [large('a'), String::from("small"), large('b')];
    for body in &bodies {
        let (back, ran) = deliver(w, &q, body);
        sent(&ran, "delivered to maildir");
        w = back;
    }
    let mut texts: Vec<String> =
        home.names("Maildir/new").iter().map(|n| read(&home.path.join("Maildir/new").join(n))).collect();
    texts.sort_by_key(String::len);
    let want = |body: &str| {
        format!(
            "Return-Path: <alice@example.org>\nDelivered-To: bob@example.org\nSubject: test\n\n{}\n",
            body.replace("\r\n", "\n")
        )
    };
    assert_eq!(texts.len(), 3);
    assert_eq!(texts[0], want("small"));
    assert!(texts[1..].contains(&want(&bodies[0])) && texts[1..].contains(&want(&bodies[2])));
    w.close();
}

#[test]
fn a_worker_that_cannot_start_says_why() {
    let Some(program) = program() else { return };
    let q = TempDir::new("worker-nodir-queue");
    let missing = q.path.join("no-such-directory");
    let w = start(&program, Kind::Mbox, &missing, "bob", 5_000);
    let (back, ran) = run(w, &queue(&q, "lost"), LIMIT);
    let o = ran.outcome(LIMIT);
    assert_eq!(o.status, RecipientStatus::Deferred, "{o:?}");
    assert!(o.reason.contains("no-such-directory"), "{}", o.reason);
    // It answered, then ended: not usable for another job.
    let mut w = back.expect("it answered");
    let deadline = Instant::now() + Duration::from_secs(5);
    while w.usable() {
        assert!(Instant::now() < deadline, "the worker did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
    w.close();
}

#[test]
fn a_dead_workers_job_is_lost_not_delivered() {
    let Some(program) = program() else { return };
    let spool = TempDir::new("worker-dead");
    let q = TempDir::new("worker-dead-queue");
    let w = start(&program, Kind::Mbox, &spool.path, "bob", 5_000);
    let (mut w, ran) = deliver(w, &q, "first");
    sent(&ran, "delivered to mailbox");
    kill(w.pid(), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while w.usable() {
        assert!(Instant::now() < deadline, "a killed worker still looks usable");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Given a job all the same, it cannot take it.
    let w2 = start(&program, Kind::Mbox, &spool.path, "bob", 5_000);
    kill(w2.pid(), Signal::SIGKILL).unwrap();
    let (back, ran) = run(w2, &queue(&q, "second"), LIMIT);
    assert!(back.is_none());
    assert!(ran.killed());
    let o = ran.outcome(LIMIT);
    assert_eq!(o.status, RecipientStatus::Deferred, "{o:?}");
    assert_eq!(o.reason, "delivery killed by SIGKILL");
    assert!(!read(&spool.path.join("bob")).contains("second"));
    w.close();
}

/// A stand-in worker: Python running `script`, with the socket at
/// descriptor 3 as a worker has it.
fn fake(script: &str) -> Option<Worker> {
    let python = Path::new(super::PYTHON);
    if !python.exists() {
        eprintln!("skipped: no {}", python.display());
        return None;
    }
    let argv = ["python3", "-c", script].map(String::from);
    Some(Worker::start(python, &argv, None).expect("start python3"))
}

#[test]
fn a_worker_that_replies_garbage_is_killed_and_its_job_lost() {
    let q = TempDir::new("worker-garbage-queue");
    // Not a frame at all; then it would go on as if nothing were amiss.
    let Some(w) = fake("import os, time\nos.write(3, b'at 0 0 0')\ntime.sleep(60)") else { return };
    let pid = w.pid();
    let started = Instant::now();
    let (back, ran) = run(w, &queue(&q, "garbage"), LIMIT);
    assert!(back.is_none(), "a worker that said garbage is not kept");
    assert!(started.elapsed() < Duration::from_secs(30), "it was not waited for");
    assert!(ran.killed(), "taken as killed: the mailbox gets repaired");
    let o = ran.outcome(LIMIT);
    assert_eq!(o.status, RecipientStatus::Deferred, "{o:?}");
    assert!(o.reason.starts_with("the delivery worker sent a malformed reply"), "{}", o.reason);
    assert!(nix::sys::signal::kill(pid, None).is_err(), "killed and reaped");
}

#[test]
fn a_worker_past_the_time_limit_is_killed() {
    let q = TempDir::new("worker-slow-queue");
    let Some(w) = fake("import time\ntime.sleep(60)") else { return };
    let pid = w.pid();
    let (back, ran) = run(w, &queue(&q, "slow"), Duration::from_millis(300));
    assert!(back.is_none());
    assert!(ran.timed_out && ran.killed());
    let o = ran.outcome(Duration::from_secs(1));
    assert_eq!((o.status, o.reason.as_str()), (RecipientStatus::Deferred, "delivery stopped after 1s"));
    assert!(nix::sys::signal::kill(pid, None).is_err(), "killed and reaped");
}

#[test]
fn a_worker_that_ends_without_a_verdict_delivered_nothing() {
    let q = TempDir::new("worker-quits-queue");
    // Exit 0, as if delivered, but never said so.
    let Some(w) = fake("import sys\nsys.exit(0)") else { return };
    let (back, ran) = run(w, &queue(&q, "quits"), LIMIT);
    assert!(back.is_none());
    assert!(ran.killed());
    let o = ran.outcome(LIMIT);
    assert_eq!(o.status, RecipientStatus::Deferred, "{o:?}");
    assert_eq!(o.reason, "the delivery worker ended (status 0) without a verdict");
}

/// Under a file size limit (RLIMIT_FSIZE, from an init script or
/// systemd's LimitFSIZE=), a mailbox that would pass it is "mailbox
/// full", deferred, the mailbox cut back: the worker is not killed by
/// SIGXFSZ, and goes on.
#[test]
fn a_mailbox_past_the_file_size_limit_is_full_not_a_killed_worker() {
    let Some(program) = program() else { return };
    let Some(prlimit) = ["/usr/bin/prlimit", "/bin/prlimit"].into_iter().map(Path::new).find(|p| p.is_file()) else {
        eprintln!("skipped: no prlimit");
        return;
    };
    let spool = TempDir::new("worker-fsize");
    let q = TempDir::new("worker-fsize-queue");
    let mut argv = Key {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        kind: Kind::Mbox,
        dir: spool.path.to_str().unwrap().to_string(),
        name: String::from("bob"),
        hostname: String::from("mx.example.org"),
        lock_ms: 5_000,
        confinement: if sandbox::describe_kernel().contains("landlock ABI") { "confined" } else { "unconfined" },
    }
    .argv();
    argv[0] = program.to_str().unwrap().to_string();
    let mut args = vec![String::from("prlimit"), String::from("--fsize=8192")];
    args.extend(argv);
    let w = Worker::start(prlimit, &args, None).expect("start a worker");
    let (w, ran) = deliver(w, &q, "small");
    sent(&ran, "delivered to mailbox");
    let before = std::fs::metadata(spool.path.join("bob")).unwrap().len();
    let (w, ran) = deliver(w, &q, &"x".repeat(20_000));
    assert!(!ran.killed(), "killed: {:?}", ran.status);
    let o = ran.outcome(LIMIT);
    assert_eq!((&o.status, o.dsn.as_str()), (&RecipientStatus::Deferred, "4.2.2"), "{o:?}");
    assert!(o.reason.contains("mailbox full"), "{}", o.reason);
    assert_eq!(std::fs::metadata(spool.path.join("bob")).unwrap().len(), before, "not cut back");
    let (mut w, ran) = deliver(w, &q, "small again");
    sent(&ran, "delivered to mailbox");
    assert!(w.usable());
    w.close();
}

#[test]
fn a_worker_hung_up_on_takes_its_deliveries_back_out_and_is_reaped() {
    // What local does with a batch when qmgr has gone: qmgr hands the
    // deliveries out again, so none may reach new/ now.
    let Some(program) = program() else { return };
    let (home, _q, w) = two_uncommitted(&program, "worker-hang-up");
    let pid = w.pid();
    w.hang_up(Duration::from_secs(10));
    assert!(nix::sys::signal::kill(pid, None).is_err(), "not reaped");
    assert!(home.names("Maildir/tmp").is_empty(), "{:?}", home.names("Maildir/tmp"));
    assert!(home.names("Maildir/new").is_empty());
}

//! bounce at a stop, on a real bounce process: asked to stop while its
//! qmgr is there (qmgr drains: `qmgr::drain`), it goes on serving that
//! qmgr (a notice asked after the stop is composed, queued through
//! cleanup and answered) and exits once qmgr's channel closes; without
//! a qmgr it exits at once. Here the test plays master, qmgr and cleanup.
//! Every wait is bounded.

mod common;

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use mta::ipc::msg::{
    BounceToQmgr, CleanupToSmtpd, CommitResult, FromMaster, NoticeRequest, QmgrToBounce, SmtpdToCleanup, ToMaster,
};
use mta::ipc::{self, Channel};
use mta::queue::{QueueFile, QueueIdGen, Recipient, State, Status, Time};
use mta::roles::Role;

/// Longest any wait here.
const LIMIT: Duration = Duration::from_secs(10);

struct Bounce {
    started: common::Started,
    master: Channel,
}

fn start(name: &str) -> Bounce {
    let dir = std::env::temp_dir().join(format!("mta-bounce-stop-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (mine, theirs) = ipc::pair().unwrap();
    let fds = [theirs.as_raw_fd()];
    let pid = common::spawn(Path::new(env!("CARGO_BIN_EXE_bounce")), "bounce", &fds);
    let mut master = Channel::new(mine);
    let init = common::init(Role::Bounce, &dir, None, Vec::new(), Duration::from_secs(10));
    master.send(&init, &[]).unwrap();
    let end = Instant::now() + LIMIT;
    loop {
        if let Ok(Some((ToMaster::Ready { .. }, _))) = master.recv::<ToMaster>() {
            break;
        }
        assert!(Instant::now() < end, "bounce did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    Bounce { started: common::Started { pid, dir }, master }
}

impl Bounce {
    /// A channel to a peer of `role`, given to bounce.
    fn peer(&mut self, role: Role) -> Channel {
        let (theirs, mine) = ipc::pair().unwrap();
        self.master.send(&FromMaster::Peer { role, pid: 100 }, &[theirs.as_fd()]).unwrap();
        Channel::new(mine)
    }

    fn running(&self) -> bool {
        self.started.running()
    }

    fn exit_code(&self) -> i32 {
        self.started.exit_code(LIMIT)
    }

    /// A queue file whose one recipient bounced, opened read-only.
    fn bounced_message(&self) -> (String, std::fs::File) {
        let id = QueueIdGen::new(1).next_id();
        let content = b"Subject: lost\r\n\r\nbody\r\n".to_vec();
        let now = Time::now();
        let qf = QueueFile {
            id,
            envelope: common::envelope(content.len(), now),
            recipients: vec![Recipient {
                address: String::from("nobody@example.net"),
                orcpt: None,
                notify: None,
                status: Status {
                    state: State::Bounced,
                    changed: now.secs,
                    reason: String::from("550 5.1.1 no such user"),
                    ..Status::default()
                },
            }],
            content,
        };
        let path = self.started.dir.join(id.as_str());
        std::fs::write(&path, qf.encode().unwrap()).unwrap();
        (id.to_string(), std::fs::File::open(&path).unwrap())
    }
}

/// Wait (bounded) for the next message on `ch`.
fn next<T: serde::de::DeserializeOwned>(ch: &mut Channel) -> T {
    let end = Instant::now() + LIMIT;
    loop {
        if let Some((m, _)) = ch.recv::<T>().unwrap() {
            return m;
        }
        assert!(Instant::now() < end, "nothing came");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_stop_serves_the_draining_qmgr_and_exits_when_it_is_gone() {
    let mut b = start("drain");
    let mut qmgr = b.peer(Role::Qmgr);
    let mut cleanup = b.peer(Role::Cleanup);
    b.master.send(&FromMaster::Stop, &[]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(b.running(), "bounce exited while its qmgr drains");
    // The notice of a delivery qmgr heard of while draining.
    let (id, file) = b.bounced_message();
    let r = NoticeRequest { req: 7, queue_id: id, failure: vec![0], delay: Vec::new(), success: Vec::new() };
    qmgr.send(&QmgrToBounce::Notify(Box::new(r)), &[file.as_fd()]).unwrap();
    let txn = match next::<SmtpdToCleanup>(&mut cleanup) {
        SmtpdToCleanup::Begin { txn, envelope, .. } => {
            let to: Vec<&str> = envelope.recipients.iter().map(|r| r.address.as_str()).collect();
            assert_eq!((envelope.sender.as_str(), to), ("", vec!["sender@example.org"]));
            txn
        }
        m => panic!("not a Begin: {m:?}"),
    };
    loop {
        match next::<SmtpdToCleanup>(&mut cleanup) {
            SmtpdToCleanup::Content { .. } => {}
            SmtpdToCleanup::End { txn: t } if t == txn => break,
            m => panic!("unexpected: {m:?}"),
        }
    }
    cleanup
        .send(&CleanupToSmtpd::Committed { txn, result: CommitResult::Queued(String::from("NOTICE1")) }, &[])
        .unwrap();
    match next::<BounceToQmgr>(&mut qmgr) {
        BounceToQmgr::Done { req, result } => assert_eq!((req, result), (7, Ok(vec![String::from("NOTICE1")]))),
        m => panic!("unexpected answer: {m:?}"),
    }
    assert!(b.running());
    // qmgr has every answer and exits: so does bounce.
    drop(qmgr);
    assert_eq!(b.exit_code(), 0);
}

#[test]
fn a_stop_without_a_qmgr_exits_at_once() {
    let mut b = start("alone");
    let _cleanup = b.peer(Role::Cleanup);
    b.master.send(&FromMaster::Stop, &[]).unwrap();
    assert_eq!(b.exit_code(), 0);
}

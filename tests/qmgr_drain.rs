//! qmgr's drain (`qmgr::drain`), on a real qmgr process: asked to stop
//! with a delivery in flight, it hands out nothing new, waits for the
//! delivery agent's report and writes it into the queue (the message
//! delivered is removed), and only then exits; a report that never comes
//! is given up at the drain's bound, before master would kill it, and the
//! message is left for the next qmgr. Here the test plays master and the
//! delivery agents. Every wait is bounded.

mod common;

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use mta::ipc::msg::{FromMaster, QmgrToSmtp, RecipientReport, RecipientStatus, SiteReport, SmtpToQmgr, ToMaster};
use mta::ipc::{self, Channel};
use mta::queue::{DoneAction, QueueFile, QueueIdGen, Recipient, Status, Time};
use mta::roles::Role;

/// Longest any wait here.
const LIMIT: Duration = Duration::from_secs(10);

struct Qmgr {
    started: common::Started,
    master: Channel,
    smtp: Channel,
    _local: Channel,
    logs: Vec<String>,
    ids: QueueIdGen,
}

impl Qmgr {
    /// A qmgr serving a fresh spool, with a channel to an smtp and a
    /// local agent; master gives it `stop_timeout`.
    fn start(name: &str, stop_timeout: Duration) -> Qmgr {
        let dir = std::env::temp_dir().join(format!("mta-qmgr-drain-{}-{name}", std::process::id()));
        let dirs = common::queue_spool(&dir);
        let (mine, theirs) = ipc::pair().unwrap();
        let mut fds = vec![theirs.as_raw_fd()];
        fds.extend(dirs.iter().map(|d| d.as_raw_fd()));
        let pid = common::spawn(Path::new(env!("CARGO_BIN_EXE_qmgr")), "qmgr", &fds);
        let mut master = Channel::new(mine);
        let init = common::init(Role::Qmgr, &dir, None, Vec::new(), stop_timeout);
        master.send(&init, &[]).unwrap();
        let (smtp_end, smtp) = ipc::pair().unwrap();
        let (local_end, local) = ipc::pair().unwrap();
        master.send(&FromMaster::Peer { role: Role::Smtp, pid: 100 }, &[smtp_end.as_fd()]).unwrap();
        master.send(&FromMaster::Peer { role: Role::Local, pid: 101 }, &[local_end.as_fd()]).unwrap();
        let mut q = Qmgr {
            started: common::Started { pid, dir },
            master,
            smtp: Channel::new(smtp),
            _local: Channel::new(local),
            logs: Vec::new(),
            ids: QueueIdGen::new(1),
        };
        q.until("running", |q| q.logs.iter().any(|l| l.contains("deferred/ indexed")));
        q
    }

    /// A new message to `rcpt` in incoming/, as cleanup leaves it.
    fn queue(&mut self, rcpt: &str) -> String {
        let id = self.ids.next_id();
        let content = b"Subject: drain\r\n\r\nbody\r\n".to_vec();
        let qf = QueueFile {
            id,
            envelope: common::envelope(content.len(), Time::now()),
            recipients: vec![Recipient {
                address: rcpt.to_string(),
                orcpt: None,
                notify: None,
                status: Status::default(),
            }],
            content,
        };
        let path = self.started.dir.join("incoming").join(id.as_str());
        std::fs::write(&path, qf.encode().unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        id.to_string()
    }

    /// Read what qmgr logged so far.
    fn read_logs(&mut self) {
        while let Ok(Some((m, _))) = self.master.recv::<ToMaster>() {
            if let ToMaster::Log { text, .. } = m {
                self.logs.push(text);
            }
        }
    }

    /// Wait (bounded) until `done` holds, reading the logs meanwhile.
    fn until(&mut self, what: &str, mut done: impl FnMut(&mut Qmgr) -> bool) {
        let end = Instant::now() + LIMIT;
        loop {
            self.read_logs();
            if done(self) {
                return;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}; logs {:#?}", self.logs);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The next delivery handed to the smtp agent, within `wait`.
    fn delivery(&mut self, wait: Duration) -> Option<(u64, String)> {
        let end = Instant::now() + wait;
        loop {
            if let Some((QmgrToSmtp::Deliver(d), _fds)) = self.smtp.recv::<QmgrToSmtp>().unwrap() {
                return Some((d.job, d.queue_id));
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn report_delivered(&mut self, job: u64) {
        let r = RecipientReport {
            index: 0,
            status: RecipientStatus::Delivered { dsn_passed: false, action: DoneAction::Relayed },
            dsn: String::from("2.0.0"),
            reason: String::from("250 2.0.0 Ok"),
        };
        let done = SmtpToQmgr::Done { job, site: SiteReport::Reached, recipients: vec![r] };
        self.smtp.send(&done, &[]).unwrap();
    }

    /// Whether the process still runs.
    fn running(&self) -> bool {
        self.started.running()
    }

    /// Its exit status, within `wait`.
    fn exit_code(&mut self, wait: Duration) -> i32 {
        let end = Instant::now() + wait;
        loop {
            self.read_logs();
            if let Some(c) = self.started.exited() {
                self.read_logs();
                return c;
            }
            assert!(Instant::now() < end, "qmgr did not exit; logs {:#?}", self.logs);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn queued(&self, dir: &str, id: &str) -> bool {
        self.started.dir.join(dir).join(id).exists()
    }
}

#[test]
fn stop_waits_for_the_delivery_in_flight_and_records_it() {
    let mut q = Qmgr::start("waits", Duration::from_secs(10));
    let id = q.queue("rcpt@example.net");
    let (job, got) = q.delivery(LIMIT).expect("no delivery handed out");
    assert_eq!(got, id);
    q.master.send(&FromMaster::Stop, &[]).unwrap();
    q.until("the drain", |q| q.logs.iter().any(|l| l.contains("stopping: waiting for the reports of 1 delivery")));
    // New mail meanwhile is left for the next qmgr: nothing is handed out.
    let later = q.queue("later@example.net");
    assert_eq!(q.delivery(Duration::from_millis(500)), None, "a new delivery while draining");
    assert!(q.running(), "qmgr exited with a delivery in flight; logs {:#?}", q.logs);
    q.report_delivered(job);
    assert_eq!(q.exit_code(LIMIT), 0);
    assert!(!q.queued("incoming", &id) && !q.queued("active", &id), "the delivered message is still queued");
    assert!(q.logs.iter().any(|l| l == &format!("{id}: removed")), "{:#?}", q.logs);
    assert!(q.queued("incoming", &later), "the message that came during the drain is gone");
    assert!(!q.logs.iter().any(|l| l.contains("unreported")), "{:#?}", q.logs);
}

#[test]
fn stop_gives_up_on_a_report_that_never_comes_before_master_would_kill() {
    let mut q = Qmgr::start("gives-up", Duration::from_secs(1));
    let id = q.queue("rcpt@example.net");
    q.delivery(LIMIT).expect("no delivery handed out");
    let asked = Instant::now();
    q.master.send(&FromMaster::Stop, &[]).unwrap();
    assert_eq!(q.exit_code(LIMIT), 0);
    // A fifth of the second less (drain_time), and no later than master's kill.
    let took = asked.elapsed();
    assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(1), "exited after {took:?}");
    assert!(
        q.logs.iter().any(|l| l.contains("stopping with 1 delivery and 0 notices left unreported")),
        "{:#?}",
        q.logs
    );
    // The next qmgr finds it where it was, its recipient still to deliver.
    assert!(q.queued("incoming", &id));
}

#[test]
fn stop_with_nothing_in_flight_exits_at_once() {
    let mut q = Qmgr::start("idle", Duration::from_secs(10));
    let asked = Instant::now();
    q.master.send(&FromMaster::Stop, &[]).unwrap();
    assert_eq!(q.exit_code(LIMIT), 0);
    assert!(asked.elapsed() < Duration::from_secs(2), "took {:?}", asked.elapsed());
}

//! What the process tests share: starting a child program as master
//! does (its channel and role descriptors at their numbers) and the
//! configuration master sends it first. Each test file that plays
//! master includes it (`mod common;`).

#![allow(dead_code)]

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mta::config::delivery::DeliveryConf;
use mta::ipc::msg::{ChildConfig, FromMaster};
use mta::roles::Role;
use nix::unistd::Pid;

/// Start `program` (argv[0] `name`) with `fds` at master's descriptor
/// numbers (the channel first), unconfined by the test itself.
pub fn spawn(program: &Path, name: &str, fds: &[RawFd]) -> Pid {
    let spec = sandbox::Spawn {
        program,
        argv: &[name],
        env: &[],
        fds,
        stderr: None,
        credentials: None,
        limits: &[],
        new_session: false,
    };
    Pid::from_raw(sandbox::spawn(&spec).expect("spawn"))
}

/// The Init message master sends a child of `role` whose spool is `spool`
/// (verbose, hostname test.example, no intake material), with `delivery`
/// (the defaults when None) and `socket_dirs`, and a stop_timeout of
/// `stop_timeout`.
pub fn init(
    role: Role,
    spool: &Path,
    delivery: Option<DeliveryConf>,
    socket_dirs: Vec<PathBuf>,
    stop_timeout: Duration,
) -> FromMaster {
    FromMaster::Init(Box::new(ChildConfig {
        role,
        generation: 1,
        session: 0,
        hostname: String::from("test.example"),
        spool: spool.to_path_buf(),
        verbose: true,
        open_files: 0,
        allow_unconfined: false,
        log_line_length: 2048,
        control: mta::config::Control::default(),
        operator: None,
        intake: None,
        delivery: Some(Box::new(delivery.unwrap_or_else(|| mta::config::Config::default().delivery(None)))),
        socket_dirs,
        lookup_threads: 2,
        stop_timeout,
    }))
}

/// A child the test started, with the folder it works in: killed,
/// reaped and its folder removed when dropped.
pub struct Started {
    pub pid: Pid,
    pub dir: PathBuf,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Started {
    /// Whether the process still runs.
    pub fn running(&self) -> bool {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        matches!(waitpid(self.pid, Some(WaitPidFlag::WNOHANG)), Ok(WaitStatus::StillAlive))
    }

    /// Its exit status once it exits, or None while it runs; a panic if
    /// a signal ended it.
    pub fn exited(&self) -> Option<i32> {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
            WaitStatus::Exited(_, c) => Some(c),
            WaitStatus::Signaled(_, s, _) => panic!("pid {} killed by {s}", self.pid),
            _ => None,
        }
    }

    /// Its exit status, within `wait` (a panic after).
    pub fn exit_code(&self, wait: Duration) -> i32 {
        let end = std::time::Instant::now() + wait;
        loop {
            if let Some(c) = self.exited() {
                return c;
            }
            assert!(std::time::Instant::now() < end, "pid {} did not exit", self.pid);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `dir` made afresh with the queue folders in it, opened as master hands
/// them to qmgr.
pub fn queue_spool(dir: &Path) -> Vec<std::fs::File> {
    let _ = std::fs::remove_dir_all(dir);
    mta::roles::QUEUE_DIRS
        .iter()
        .map(|d| {
            std::fs::create_dir_all(dir.join(d)).expect("mkdir");
            std::fs::File::open(dir.join(d)).expect("open")
        })
        .collect()
}

/// The envelope of a plain test message from sender@example.org of
/// `size` bytes, arrived at `arrival`.
pub fn envelope(size: usize, arrival: mta::queue::Time) -> mta::queue::Envelope {
    mta::queue::Envelope {
        sender: "sender@example.org".into(),
        arrival,
        client: mta::queue::Client::default(),
        body: mta::queue::BodyType::SevenBit,
        smtputf8: false,
        dsn_ret: None,
        dsn_envid: None,
        size: size as u64,
    }
}

/// The text of the child's fatal record on its master channel, if one
/// comes within 10 s (other messages skipped).
pub fn fatal_record(master: &mut mta::ipc::Channel) -> Option<String> {
    use mta::ipc::msg::ToMaster;
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < end {
        match master.recv::<ToMaster>() {
            Ok(Some((ToMaster::Log { text, .. }, _))) if text.contains("fatal") => return Some(text),
            Ok(Some(_)) => {}
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return None,
        }
    }
    None
}

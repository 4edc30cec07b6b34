//! Running the local role's children as users: one-shot programs
//! (`local forward`, `local repair`: [`run`], its report on standard
//! error, its exit status the verdict; `local pipe` alike, but started by
//! the command spawner, [`super::spawner`]) and mailbox delivery
//! workers (`local deliver`, [`super::child`]: [`Worker`], jobs over a
//! socket pair, waited for one at a time or handed over several at once
//! and answered in turn, each report as messages).
//!
//! Either way the parent gets a [`Ran`]: the child's report (progress
//! lines, then `D.D.D reason`) and how it ended. A worker that answers a
//! job stays; one that dies, runs past the time limit or sends a
//! malformed reply in the middle of a job is killed if need be, reaped,
//! and its job ends as a killed one-shot delivery's would (deferred, and
//! the mailbox repaired by the caller).
//!
//! Trusts: nothing a child says, beyond its bounded report, which only
//! informs the reason text and, for a killed delivery, the repair run as
//! the same user.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::agent::{EX_DATAERR, EX_NOUSER, EX_OK, Outcome};
use super::child::MAX_WORKER_MESSAGE;
use super::mbox::Mark;
use super::repair::{APPENDED, AT};
use crate::ipc::Channel;
use crate::ipc::msg::{FromWorker, ToWorker};

/// The largest report kept from a child.
pub const MAX_CHILD_REPORT: usize = 4096;
/// The most progress a worker may report for one job (it has two lines
/// to say, of a few dozen bytes).
const MAX_PROGRESS: usize = 1024;

/// A child that ran, or a worker's job.
pub struct Ran {
    pub pid: Pid,
    /// How it ended; for a worker that answered, `Exited` with the code
    /// of its verdict.
    pub status: nix::Result<WaitStatus>,
    pub text: Vec<u8>,
    pub timed_out: bool,
    /// A worker's job that ended without a verdict, and why: the worker
    /// died, or sent what it may not and was killed.
    pub lost: Option<String>,
}

impl Ran {
    /// Whether it was killed, by a signal or by us at its time limit,
    /// or (a worker) ended its job without a verdict: it had no chance
    /// to clean up.
    pub fn killed(&self) -> bool {
        self.timed_out || self.lost.is_some() || matches!(self.status, Ok(WaitStatus::Signaled(..)))
    }

    /// A delivery's verdict: its exit code (or a worker's answer) and
    /// report.
    pub fn outcome(&self, limit: Duration) -> Outcome {
        if self.timed_out {
            return Outcome::defer("4.3.0", &format!("delivery stopped after {}s", limit.as_secs()));
        }
        if let Some(why) = &self.lost {
            return Outcome::defer("4.3.0", why);
        }
        let (dsn, reason) = split_report(&String::from_utf8_lossy(&self.text));
        match self.status {
            Ok(WaitStatus::Exited(_, EX_OK)) => Outcome::sent(&reason),
            Ok(WaitStatus::Exited(_, EX_NOUSER | EX_DATAERR)) => Outcome::bounce(dsn.unwrap_or("5.1.1"), &reason),
            Ok(WaitStatus::Exited(_, code)) => {
                let reason = if reason.is_empty() { format!("delivery failed (status {code})") } else { reason };
                Outcome::defer(dsn.filter(|d| d.starts_with('4')).unwrap_or("4.3.0"), &reason)
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => Outcome::defer("4.3.0", &format!("delivery killed by {sig}")),
            ref other => Outcome::defer("4.3.0", &format!("delivery ended oddly: {other:?}")),
        }
    }
}

/// The child's report ends in one line: `D.D.D reason` (progress lines
/// before it, [`super::repair`], are passed over). Anything else is the
/// reason alone.
pub(super) fn split_report(text: &str) -> (Option<&'static str>, String) {
    let line = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let line: String = line.chars().filter(|c| !c.is_control()).take(512).collect();
    let (code, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
    match super::resolve::known_dsn(code) {
        Some(d) => (Some(d), rest.to_string()),
        None => (None, line),
    }
}

pub(super) const LIMITS: [sandbox::Limit; 2] = [
    sandbox::Limit { resource: sandbox::Resource::OpenFiles, soft: 64, hard: 64 },
    sandbox::Limit { resource: sandbox::Resource::CoreSize, soft: 0, hard: 0 },
];
pub(super) const ENV: [(&str, &str); 1] = [("PATH", "/usr/bin:/bin")];

/// Start `program` with `argv` as `creds` (the queue file, when given,
/// at descriptor 3, its standard error a pipe to us) and wait for it, at
/// most `limit`; keep at most `max` bytes of its report.
pub(super) fn run(
    program: &Path,
    argv: &[&str],
    creds: &sandbox::Credentials,
    queue: Option<&File>,
    limit: Duration,
    max: usize,
) -> Result<Ran, Outcome> {
    let (rd, wr) = nix::unistd::pipe().map_err(|e| Outcome::defer("4.3.0", &format!("pipe: {e}")))?;
    let fds: Vec<i32> = queue.iter().map(|f| f.as_raw_fd()).collect();
    let spec = sandbox::Spawn {
        program,
        argv,
        env: &ENV,
        fds: &fds,
        stderr: Some(wr.as_raw_fd()),
        credentials: Some(creds),
        limits: &LIMITS,
        // In local's process group, which is a session of its own.
        new_session: false,
    };
    let pid = match sandbox::spawn(&spec) {
        Ok(p) => Pid::from_raw(p),
        Err(e) => return Err(Outcome::defer("4.3.0", &format!("cannot start the delivery: {e}"))),
    };
    drop(wr);
    let (text, timed_out) = read_report(rd, limit, max);
    if timed_out {
        let _ = kill(pid, Signal::SIGKILL);
    }
    Ok(Ran { pid, status: wait(pid), text, timed_out, lost: None })
}

/// waitpid, blocking, retrying EINTR.
fn wait(pid: Pid) -> nix::Result<WaitStatus> {
    loop {
        match waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// The child's report: read until end of file, at most `max` bytes kept,
/// within `limit`. Returns the bytes and whether time ran out.
pub(super) fn read_report(rd: OwnedFd, limit: Duration, max: usize) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut f = File::from(rd);
    let mut kept = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (kept, true);
        }
        let ms = u16::try_from(left.as_millis().min(60_000)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return (kept, false),
        }
        match f.read(&mut buf) {
            Ok(0) => return (kept, false),
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return (kept, false),
        }
    }
}

/// A mailbox delivery worker (`local deliver`), idle between jobs.
pub(super) struct Worker {
    pid: Pid,
    chan: Channel,
    /// Already waited for (it died while idle).
    reaped: bool,
}

/// How a worker's job went wrong before its verdict.
enum Broken {
    /// The socket closed: the worker is gone (or going).
    Closed,
    /// Past the time limit.
    TimedOut,
    /// A reply it may not send.
    Malformed(String),
}

impl Worker {
    /// Start a worker of `program` with `argv` as `creds` (None: as we
    /// are, for tests), the other end of a new socket pair at its
    /// descriptor 3.
    pub fn start(program: &Path, argv: &[String], creds: Option<&sandbox::Credentials>) -> std::io::Result<Worker> {
        let (ours, theirs) = crate::ipc::pair()?;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let spec = sandbox::Spawn {
            program,
            argv: &argv,
            env: &ENV,
            fds: &[theirs.as_raw_fd()],
            stderr: None,
            credentials: creds,
            limits: &LIMITS,
            new_session: false,
        };
        let pid = Pid::from_raw(sandbox::spawn(&spec)?);
        Ok(Worker { pid, chan: Channel::new(ours).with_max_message(MAX_WORKER_MESSAGE), reaped: false })
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Whether an idle worker can take a job: it has nothing to say (an
    /// idle worker says nothing; a worker that could not start has said
    /// why and exited) and has not ended.
    pub fn usable(&mut self) -> bool {
        let mut fds = [PollFd::new(self.chan.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0)) && !self.ended()
    }

    /// Close an idle worker: it holds nothing between jobs, so it is
    /// killed, and waited for.
    pub fn close(self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = wait(self.pid);
        }
    }

    /// Hang up on a worker with uncommitted Maildir deliveries: its socket
    /// closes, on which it takes what it wrote to `tmp/` since its last
    /// sync back out and exits. Waited for at most `wait`, then killed.
    pub fn hang_up(self, wait: Duration) {
        let Worker { pid, chan, reaped } = self;
        drop(chan);
        if reaped {
            return;
        }
        let end = Instant::now() + wait;
        loop {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
                _ => return,
            }
            if Instant::now() >= end {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = self::wait(pid);
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Hand the worker a job, the queue file with it (none with a
    /// [`ToWorker::Sync`], or a [`ToWorker::DeliverHeld`], which carries
    /// its content), and wait for its verdict, at most `limit`.
    /// Returns the worker when it answered (it may take the next job),
    /// and the job as a [`Ran`].
    pub fn job(mut self, job: &ToWorker, queue: Option<&File>, limit: Duration) -> (Option<Worker>, Ran) {
        // A worker that could not start has said why and ended: its
        // socket may be closed already, with that answer still to read.
        match self.submit(job, queue) {
            Ok(_) => self.answer(limit),
            Err(why) => {
                let deadline = Instant::now() + limit;
                (None, self.lost(Broken::Malformed(why), Vec::new(), deadline))
            }
        }
    }

    /// Hand the worker a job without waiting: its verdict is read by
    /// [`Worker::answer`], the verdicts of several jobs handed so in
    /// turn. Ok(false): the worker has closed its socket, and the job
    /// cannot reach it (what it said before may still be read). Err: it
    /// could not be sent, and never will be (reading the worker's
    /// verdicts afterwards cannot send it after all).
    pub fn submit(&mut self, job: &ToWorker, queue: Option<&File>) -> Result<bool, String> {
        let fds: Vec<BorrowedFd<'_>> = queue.iter().map(|f| f.as_fd()).collect();
        let sent = self.chan.send(job, &fds);
        if sent.is_err() {
            self.chan.discard_unsent();
        }
        match sent {
            Ok(()) => Ok(true),
            Err(crate::ipc::Error::Closed) => Ok(false),
            Err(e) => Err(format!("cannot send it the job: {e}")),
        }
    }

    /// Whether the worker has ended (then waited for), or cannot be
    /// waited for.
    fn ended(&mut self) -> bool {
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => false,
            Ok(_) => {
                self.reaped = true;
                true
            }
            Err(_) => true,
        }
    }

    /// Wait for the verdict on the next job handed to the worker, at
    /// most `limit`, as [`Worker::job`] does.
    pub fn answer(mut self, limit: Duration) -> (Option<Worker>, Ran) {
        let deadline = Instant::now() + limit;
        let mut text = Vec::new();
        // A worker that could not start has said why and ended: its
        // socket may be closed already, with that answer still to read.
        // Linux reports a peer that closed with our job unread as
        // ECONNRESET once, before the messages it left: read on once.
        let mut reset = false;
        let broken = loop {
            match self.chan.recv::<FromWorker>() {
                Ok(Some((FromWorker::Progress(line), fds))) if fds.is_empty() && progress_line(&line) => {
                    if text.len() + line.len() >= MAX_PROGRESS {
                        break Broken::Malformed(String::from("too many progress lines"));
                    }
                    text.extend_from_slice(line.as_bytes());
                    text.push(b'\n');
                }
                Ok(Some((FromWorker::Done { code, report }, fds))) if fds.is_empty() => {
                    text.extend_from_slice(report.as_bytes());
                    text.truncate(MAX_CHILD_REPORT);
                    let status = Ok(WaitStatus::Exited(self.pid, code));
                    let ran = Ran { pid: self.pid, status, text, timed_out: false, lost: None };
                    return (Some(self), ran);
                }
                Ok(Some((m, _))) => break Broken::Malformed(format!("{m:?}")),
                Ok(None) => match self.wait_readable(deadline) {
                    Ok(()) => {}
                    Err(b) => break b,
                },
                Err(crate::ipc::Error::Closed) if !reset => reset = true,
                Err(crate::ipc::Error::Closed) => break Broken::Closed,
                Err(e) => break Broken::Malformed(e.to_string()),
            }
        };
        (None, self.lost(broken, text, deadline))
    }

    /// Wait for the worker's next reply, until `deadline`.
    fn wait_readable(&mut self, deadline: Instant) -> Result<(), Broken> {
        if self.chan.flush().is_err() {
            return Err(Broken::Closed);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Broken::TimedOut);
        }
        let flags = if self.chan.wants_write() { PollFlags::POLLIN | PollFlags::POLLOUT } else { PollFlags::POLLIN };
        let ms = u16::try_from(left.as_millis().min(60_000)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.chan.as_fd(), flags)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(Broken::Malformed(format!("poll: {e}"))),
        }
    }

    /// The job of a worker that is lost: killed unless it ended (after
    /// its socket closed, it is given until `deadline` to), waited for.
    fn lost(self, broken: Broken, text: Vec<u8>, deadline: Instant) -> Ran {
        let pid = self.pid;
        drop(self.chan);
        let (status, timed_out) = match broken {
            Broken::Closed => reap(pid, deadline),
            Broken::TimedOut | Broken::Malformed(_) => {
                let _ = kill(pid, Signal::SIGKILL);
                (wait(pid), matches!(broken, Broken::TimedOut))
            }
        };
        let lost = match (&broken, &status) {
            _ if timed_out => None,
            (Broken::Malformed(what), _) => {
                let what = crate::log::sanitize(what, 200);
                Some(format!("the delivery worker sent a malformed reply ({what}) and was killed"))
            }
            (_, Ok(WaitStatus::Signaled(_, sig, _))) => Some(format!("delivery killed by {sig}")),
            (_, Ok(WaitStatus::Exited(_, code))) => {
                Some(format!("the delivery worker ended (status {code}) without a verdict"))
            }
            (_, other) => Some(format!("the delivery worker ended oddly: {other:?}")),
        };
        Ran { pid, status, text, timed_out, lost }
    }
}

/// Wait for `pid`, which is ending, until `deadline`; then kill it.
/// Returns its status and whether it had to be killed.
pub(super) fn reap(pid: Pid, deadline: Instant) -> (nix::Result<WaitStatus>, bool) {
    reap_or(pid, deadline, |p| {
        let _ = kill(p, Signal::SIGKILL);
    })
}

/// As [`reap`], for a child that leads its process group (`local
/// pipe`): at the deadline the whole group is killed.
pub(super) fn reap_group(pid: Pid, deadline: Instant) -> (nix::Result<WaitStatus>, bool) {
    reap_or(pid, deadline, kill_group)
}

/// Kill the process group `pid` leads, and `pid` alone if it leads none.
pub(super) fn kill_group(pid: Pid) {
    if killpg(pid, Signal::SIGKILL).is_err() {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

fn reap_or(pid: Pid, deadline: Instant, stop: impl Fn(Pid)) -> (nix::Result<WaitStatus>, bool) {
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
            other => return (other, false),
        }
        if Instant::now() >= deadline {
            stop(pid);
            return (wait(pid), true);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether `line` is a progress line a worker may send: `at SIZE DEV
/// INO` or `appended`.
pub(super) fn progress_line(line: &str) -> bool {
    match line.split(' ').collect::<Vec<_>>()[..] {
        [AT, size, dev, ino] => Mark::parse(size, dev, ino).is_some(),
        [APPENDED] => true,
        _ => false,
    }
}

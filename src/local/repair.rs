//! Repairing an mbox or file after its delivery child was killed in the
//! middle of an append (`kill -9`, or by the parent at
//! `local.time_limit`): the child could neither truncate what it had
//! written nor remove its dot-lock, so the mailbox would end in part of
//! a message, and the next delivery would wait for a lock nobody holds.
//!
//! The delivery child ([`super::child`]) reports its progress, each a
//! line of its own before its last line `D.D.D reason`:
//!
//! ```text
//! at SIZE DEV INO    it holds the locks, and writes next; the mailbox is
//!                    SIZE bytes long, on device DEV with inode INO (decimal)
//! appended           the whole message is written and synced; it lets go
//!                    of the locks next
//! ```
//!
//! When such a child ends by a signal, its parent ([`super::agent`])
//! reads them ([`progress`]) and runs, with the delivery's user and
//! group ids (never as root),
//!
//! ```text
//! local repair mbox|file DIR NAME SENDER RECIPIENT ARRIVAL DEADPID LOCK_MS confined|unconfined [SIZE DEV INO]
//! ```
//!
//! the delivery's own arguments, the dead child's pid, and the mark of
//! its `at` line if it had not reported `appended` (then with the queue
//! file at descriptor 3):
//!
//! - With a mark, [`mbox::repair`] removes the dead child's dot-lock,
//!   opens the mailbox (never creating it; it must be the file of the
//!   mark), locks it as a delivery does, and cuts the mailbox back to SIZE
//!   if all that lies past it is a beginning of this very message. The
//!   recipient is deferred, so the retry delivers the message once.
//! - Without one, it only removes the dead child's dot-lock (kind mbox;
//!   a file has none, and no process is started for it). After
//!   `appended` the message was delivered, and counts as such.
//!
//! It reports one line, `2.0.0 what it did` (exit 0) or `D.D.D why not`
//! (exit 75), which the parent logs. A Maildir needs no repair: a killed
//! child leaves a file in `tmp/` and nothing in `new/`.
//!
//! Trusts: its parent for the arguments. The mark and the progress lines
//! come from the delivery child, which ran as the same user: at worst
//! they make the repair, run as that user, cut that user's own mailbox.

use std::path::PathBuf;
use std::time::Duration;

use sandbox::{Grant, Unconfined};

use super::agent::{EX_OK, EX_SOFTWARE, EX_TEMPFAIL, Outcome};
use super::child::{Content, QUEUE_FD, confine, dir_grant, finish, lock_timeout, open_dir, queue_content, unconfined};
use super::deliver::Envelope;
use super::mbox::{self, LockConf, Mark};

/// The progress line a delivery child writes before its first byte.
pub const AT: &str = "at";
/// The progress line a delivery child writes once the message is whole.
pub const APPENDED: &str = "appended";

/// The `at` line for `mark`: `at SIZE DEV INO`.
pub fn at_line(mark: &Mark) -> String {
    format!("{AT} {mark}")
}

/// How far a delivery child got, by the progress lines of its report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// No `at` line: it had written nothing (it may hold the dot-lock).
    NotWriting,
    /// `at` and no `appended`: the mailbox may end in part of the message.
    Writing(Mark),
    /// `appended`: the whole message was in the mailbox, synced.
    Appended,
}

/// The progress a child's report shows (malformed lines are not progress).
pub fn progress(report: &[u8]) -> Progress {
    let mut p = Progress::NotWriting;
    for line in String::from_utf8_lossy(report).lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields[..] {
            [AT, size, dev, ino] => {
                if let Some(mark) = Mark::parse(size, dev, ino) {
                    p = Progress::Writing(mark);
                }
            }
            [APPENDED] if matches!(p, Progress::Writing(_)) => p = Progress::Appended,
            _ => {}
        }
    }
    p
}

/// A killed mbox or file delivery, as the parent knows it.
#[derive(Clone, Copy, Debug)]
pub struct Killed<'a> {
    /// `mbox` or `file`.
    pub kind: &'a str,
    pub dir: &'a str,
    pub name: &'a str,
    pub env: Envelope<'a>,
    /// The dead child's pid.
    pub pid: i32,
    pub progress: Progress,
}

impl Killed<'_> {
    /// The arguments of `local repair` (argv\[0\] included), or None when
    /// there is nothing to repair.
    pub fn argv(&self, lock_ms: &str, confinement: &str) -> Option<Vec<String>> {
        let mark = match self.progress {
            Progress::Writing(mark) => Some(mark),
            Progress::NotWriting | Progress::Appended => None,
        };
        if mark.is_none() && self.kind != "mbox" {
            return None;
        }
        let mut argv: Vec<String> = [
            "local",
            "repair",
            self.kind,
            self.dir,
            self.name,
            self.env.sender,
            self.env.recipient,
            &self.env.arrival.to_string(),
            &self.pid.to_string(),
            lock_ms,
            confinement,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if let Some(m) = mark {
            argv.extend([m.size.to_string(), m.dev.to_string(), m.ino.to_string()]);
        }
        Some(argv)
    }

    /// Whether the repair reads the message (the queue file at
    /// descriptor 3): when it may cut the mailbox back.
    pub fn needs_content(&self) -> bool {
        matches!(self.progress, Progress::Writing(_))
    }

    /// The recipient's outcome: `killed` is the delivery's (deferred),
    /// `repaired` what the repair reported, if one ran (Err: it failed).
    pub fn outcome(&self, killed: Outcome, repaired: Option<Result<String, String>>) -> Outcome {
        let dest = if self.kind == "mbox" { "mailbox" } else { "file" };
        match (self.progress, repaired) {
            (Progress::Appended, _) => Outcome::sent(&format!("delivered to {dest} (then {})", killed.reason)),
            (Progress::Writing(_), Some(Ok(done))) => {
                Outcome { reason: format!("{}; {done}", killed.reason), ..killed }
            }
            (Progress::Writing(_), Some(Err(why))) => {
                Outcome { reason: format!("{}; the {dest} was not repaired: {why}", killed.reason), ..killed }
            }
            (Progress::Writing(_) | Progress::NotWriting, _) => killed,
        }
    }
}

/// `local repair`'s arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub kind: &'a str,
    pub dir: &'a str,
    pub name: &'a str,
    pub env: Envelope<'a>,
    pub dead: i32,
    pub lock_timeout: Duration,
    pub unconfined: Unconfined,
    pub mark: Option<Mark>,
}

/// Reads `local repair`'s arguments (those after `repair`).
pub fn parse(args: &[String]) -> Result<Request<'_>, String> {
    let (fixed, mark) = match args {
        [fixed @ .., size, dev, ino] if args.len() == 12 => {
            (fixed, Some(Mark::parse(size, dev, ino).ok_or("a malformed mark")?))
        }
        fixed if args.len() == 9 => (fixed, None),
        _ => return Err(String::from("wrong arguments")),
    };
    let [kind, dir, name, sender, recipient, arrival, dead, lock_ms, confinement] = fixed else {
        return Err(String::from("wrong arguments"));
    };
    if kind != "mbox" && kind != "file" {
        return Err(format!("no repair for mailbox kind {kind}"));
    }
    let arrival = arrival.parse().map_err(|_| format!("arrival {arrival:?} is not a number"))?;
    let dead = dead.parse().ok().filter(|&p: &i32| p > 0).ok_or_else(|| format!("{dead:?} is not a pid"))?;
    Ok(Request {
        kind,
        dir,
        name,
        env: Envelope { sender, recipient, arrival },
        dead,
        lock_timeout: lock_timeout(lock_ms),
        unconfined: unconfined(confinement),
        mark,
    })
}

/// `local repair ...`: never returns.
pub fn main(args: &[String]) -> ! {
    // The queue file comes to us: not to be read from us by the user's
    // other processes.
    if let Err(e) = sandbox::no_trace() {
        finish(EX_TEMPFAIL, "4.3.0", &format!("cannot shut out tracing: {e}"));
    }
    if let Err(e) = super::deliver::block_file_size_signal() {
        finish(EX_TEMPFAIL, "4.3.0", &format!("cannot block SIGXFSZ: {e}"));
    }
    let r = parse(args).unwrap_or_else(|e| finish(EX_SOFTWARE, "4.3.0", &format!("local repair: {e}")));
    let conf = LockConf { timeout: r.lock_timeout, dotlock: r.kind == "mbox", ..LockConf::default() };
    let dir_fd = open_dir(r.dir);
    let dir = dir_grant(&dir_fd, PathBuf::from(r.dir));
    let Some(mark) = r.mark else {
        if !conf.dotlock {
            finish(EX_OK, "2.0.0", "nothing to repair");
        }
        confine(std::slice::from_ref(&dir), r.unconfined);
        match mbox::remove_dead_dotlock(&dir_fd, r.name, r.dead) {
            Ok(true) => finish(EX_OK, "2.0.0", &format!("the killed delivery's dot-lock {}.lock removed", r.name)),
            Ok(false) => finish(EX_OK, "2.0.0", "the killed delivery left no dot-lock"),
            Err(e) => finish(EX_TEMPFAIL, e.dsn(), &e.to_string()),
        }
    };
    let (queue, range) = queue_content();
    let mut content = Content { file: &queue, range, at: 0 };
    // Confined before anything is opened or locked: the lock's duplicate
    // descriptors (FreeBSD: rights and all) are made within the sandbox.
    confine(&[Grant::File { fd: QUEUE_FD, write: false }, dir], r.unconfined);
    match mbox::repair(&dir_fd, r.name, &mark, r.dead, &r.env, &mut content, &conf) {
        Ok(done) => finish(EX_OK, "2.0.0", &mbox::describe(&done, r.name)),
        Err(e) => finish(EX_TEMPFAIL, e.dsn(), &e.to_string()),
    }
}

//! One mailbox delivery, as the recipient: the program `local` run by its
//! root parent with the recipient's user and group ids (the spool's group
//! for an mbox in a spool that is not world-writable) as
//!
//! ```text
//! local deliver mbox|file|maildir DIR NAME SENDER RECIPIENT ARRIVAL HOSTNAME LOCK_MS confined|unconfined
//! ```
//!
//! with the read-only queue file at descriptor 3 and a pipe to the parent
//! as standard error. It opens the spool directory and the mailbox (or
//! the home directory and the Maildir), takes the mailbox's locks, then
//! enters a sandbox that holds only those descriptors (Landlock beneath
//! that one directory plus seccomp on Linux, unveil of it plus pledge on
//! OpenBSD, capability mode on FreeBSD) before it reads a byte of the
//! message or writes one. It reports one line, `D.D.D reason`, and exits
//! with a sysexits code: 0 delivered, 75 try again later, 65 for a
//! failure that another try would not mend. (The parent has already
//! checked the message for a `Delivered-To:` loop.)
//!
//! Appending to an mbox or file, it also reports its progress, each a
//! line before that last one, for the parent to repair the mailbox
//! ([`super::repair`]) should it be killed: `at SIZE DEV INO` once it
//! holds the locks and before it writes, `appended` once the whole
//! message is written and synced, before it lets go of the locks.
//!
//! Trusts: its parent for the arguments (root started it); nothing in
//! the message, which is copied, never interpreted.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Duration;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use sandbox::{DirAccess, Grant, Policy, Unconfined};

use super::agent::{EX_DATAERR, EX_OK, EX_SOFTWARE, EX_TEMPFAIL};
use super::deliver::{self, Envelope};
use super::{maildir, mbox, repair};
use crate::queue::{ContentRange, read_envelope, verify_content};

/// The queue file's descriptor.
pub(super) const QUEUE_FD: i32 = 3;

/// Report and exit.
pub(super) fn finish(code: i32, dsn: &str, reason: &str) -> ! {
    let mut e = std::io::stderr();
    let _ = writeln!(e, "{dsn} {reason}");
    let _ = e.flush();
    std::process::exit(code);
}

fn fail(err: &deliver::Error) -> ! {
    let code = if err.temporary() { EX_TEMPFAIL } else { EX_DATAERR };
    finish(code, err.dsn(), &err.to_string())
}

/// The content of the queue file, read with pread.
pub struct Content<'a> {
    pub file: &'a File,
    pub range: ContentRange,
    pub at: u64,
}

impl Read for Content<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.range.len - self.at;
        if left == 0 {
            return Ok(0);
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = self.file.read_at(&mut buf[..n], self.range.offset + self.at)?;
        self.at += got as u64;
        Ok(got)
    }
}

/// `local deliver ...`: never returns.
pub fn main(args: &[String]) -> ! {
    let [kind, dir, name, sender, recipient, arrival, hostname, lock_ms, confinement] = args else {
        finish(EX_SOFTWARE, "4.3.0", "local deliver: wrong arguments");
    };
    let arrival: i64 = arrival.parse().unwrap_or(0);
    let lock_timeout = lock_timeout(lock_ms);
    let unconfined = unconfined(confinement);
    let (queue, range) = queue_content();
    let env = Envelope { sender, recipient, arrival };
    let dir_fd = open_dir(dir);
    let mut grants = vec![Grant::File { fd: QUEUE_FD, write: false }];
    match kind.as_str() {
        // A file named in an alias or .forward is written as an mbox is,
        // with the kernel locks only: its directory need not be writable.
        "mbox" | "file" => {
            let file = mbox::open_mailbox(&dir_fd, name, 0o600).unwrap_or_else(|e| fail(&e));
            let dotlock = kind == "mbox";
            let conf = mbox::LockConf { timeout: lock_timeout, dotlock, ..mbox::LockConf::default() };
            let lock = mbox::lock(&dir_fd, name, &file, &conf).unwrap_or_else(|e| fail(&e));
            let mark = mbox::Mark::of(&file, &lock).unwrap_or_else(|e| fail(&e));
            report_progress(&repair::at_line(&mark));
            grants.push(Grant::File { fd: file.as_raw_fd(), write: true });
            grants.push(dir_grant(&dir_fd, PathBuf::from(dir.as_str())));
            confine(&grants, unconfined);
            let mut content = Content { file: &queue, range, at: 0 };
            mbox::append(&file, &env, &mut content, &lock).unwrap_or_else(|e| fail(&e));
            report_progress(repair::APPENDED);
            lock.release().unwrap_or_else(|e| fail(&e));
            finish(EX_OK, "2.0.0", if dotlock { "delivered to mailbox" } else { "delivered to file" });
        }
        "maildir" => {
            let md = maildir::open_maildir(&dir_fd, name).unwrap_or_else(|e| fail(&e));
            grants.push(dir_grant(&md, PathBuf::from(dir.as_str()).join(name.as_str())));
            confine(&grants, unconfined);
            let mut content = Content { file: &queue, range, at: 0 };
            maildir::deliver(&md, hostname, &env, &mut content).unwrap_or_else(|e| fail(&e));
            finish(EX_OK, "2.0.0", "delivered to maildir");
        }
        other => finish(EX_SOFTWARE, "4.3.0", &format!("local deliver: unknown mailbox kind {other}")),
    }
}

/// A progress line for the parent. If the parent cannot be told, it
/// cannot repair the mailbox either: the delivery stops.
fn report_progress(line: &str) {
    let mut e = std::io::stderr();
    if writeln!(e, "{line}").and_then(|()| e.flush()).is_err() {
        finish(EX_TEMPFAIL, "4.3.0", "cannot report to the parent");
    }
}

/// The lock timeout in milliseconds, as the parent passes it.
pub(super) fn lock_timeout(ms: &str) -> Duration {
    Duration::from_millis(ms.parse().unwrap_or(30_000))
}

/// `confined` or `unconfined`, as the parent passes it.
pub(super) fn unconfined(confinement: &str) -> Unconfined {
    if confinement == "unconfined" { Unconfined::Allowed } else { Unconfined::Refused }
}

/// The queue file the parent placed at descriptor 3, and its checked
/// content range.
pub(super) fn queue_content() -> (File, ContentRange) {
    let queue = match sandbox::fds::take_inherited(QUEUE_FD) {
        Ok(fd) => File::from(fd),
        Err(e) => finish(EX_SOFTWARE, "4.3.0", &format!("no queue file: {e}")),
    };
    let qe = match read_envelope(&queue) {
        Ok(q) => q,
        Err(e) => finish(EX_TEMPFAIL, "4.3.0", &format!("cannot read the queue file: {e}")),
    };
    let range = qe.content_range();
    if let Err(e) = verify_content(&queue, range) {
        finish(EX_TEMPFAIL, "4.3.0", &format!("the message content cannot be read: {e}"));
    }
    (queue, range)
}

/// The directory of the mailbox (the spool, or a home), not through a
/// symbolic link at its last component.
pub(super) fn open_dir(dir: &str) -> OwnedFd {
    match open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => finish(EX_TEMPFAIL, "4.3.0", &format!("{dir}: {}", e.desc())),
    }
}

pub(super) fn dir_grant(fd: &OwnedFd, path: PathBuf) -> Grant {
    Grant::Dir { fd: fd.as_raw_fd(), path, access: DirAccess::ReadWrite, watch: false, times: false }
}

/// Enter the delivery's sandbox: only the descriptors it holds.
pub(super) fn confine(grants: &[Grant], unconfined: Unconfined) {
    let mut p = Policy::new("local");
    p.grants = grants.to_vec();
    match sandbox::enter(&p, unconfined) {
        Ok(_) => {}
        Err(e) => finish(EX_TEMPFAIL, "4.3.0", &format!("cannot enter the delivery sandbox: {e}")),
    }
}

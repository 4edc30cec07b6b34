//! Mailbox delivery as the recipient: a worker, the program `local` run
//! by its root parent with the recipient's user and group ids (the
//! spool's group for an mbox in a spool that is not world-writable) as
//!
//! ```text
//! local deliver mbox|file|maildir DIR NAME HOSTNAME LOCK_MS confined|unconfined
//! ```
//!
//! with one end of a socket pair to the parent at descriptor 3 (the
//! project's channel framing, [`crate::ipc`]). It opens DIR (the spool,
//! a home directory, or the directory of a file named in an alias or a
//! `.forward`) without following a symbolic link and enters its sandbox
//! at once, holding only that directory and the socket: Landlock beneath
//! DIR plus seccomp on Linux, unveil of DIR plus pledge on OpenBSD,
//! capability mode on FreeBSD. Then it serves one job after another, for
//! that one mailbox (NAME in DIR: an mbox or file, or the Maildir NAME
//! beneath a home), until the parent closes the socket.
//!
//! A job is a [`ToWorker::Deliver`] with the queue file's read-only
//! descriptor (SCM_RIGHTS) and where its content lies (as the parent
//! read the envelope), or, for a small message to a Maildir that the
//! parent has read whole, a [`ToWorker::DeliverHeld`] that carries the
//! content itself and no descriptor. For each, the worker checks the content's CRC
//! (content up to 256 KiB is read into memory once, checked and copied
//! from there; larger content is checked, then streamed), opens the
//! mailbox by name afresh (a mail reader may have
//! replaced or removed it since the last job; it is created when
//! missing), takes its locks, writes, fsyncs and lets go of the locks,
//! exactly as a one-shot delivery would, and answers with its progress
//! ([`FromWorker::Progress`]: for an mbox or file, `at SIZE DEV INO` once
//! it holds the locks and before it writes, `appended` once the whole
//! message is written and synced, before it lets go of the locks; see
//! [`super::repair`]) and its verdict ([`FromWorker::Done`]: a sysexits
//! code, 0 delivered, 75 try again later, 65 for a failure that another
//! try would not mend, and the line `D.D.D reason`). It holds nothing of
//! a job after answering: the mailbox and the queue file are closed.
//! Verdicts are sent when the worker has no request left to read, before
//! it syncs a batch, or once one has waited [`ANSWER_WAIT`] (looked at
//! between jobs), several in one datagram: the parent, which reads a
//! batch's verdicts at its end, is woken once for them, not once per
//! job. Progress lines go out at once, with any verdicts before them.
//!
//! A Maildir job may be *batched*: its file is written to `tmp/` and
//! left there (on Linux usually not even fsynced), and the Maildir the
//! batch's first job opened is kept for the batch's next jobs. The
//! parent asks for [`ToWorker::Sync`] before it reports any of them:
//! their data made stable (on Linux usually one `syncfs` for all of
//! them), each renamed into `new/`, one fsync of `new/`, or, failing
//! that, they are removed again and the parent defers them
//! ([`maildir::Pending`]). (An fsync of the file and of the directory
//! per message flushed the disk twice per message.) A worker lost
//! before its sync has delivered nothing: what it wrote is in `tmp/`
//! only (and removed from there when the parent closes the socket
//! without asking for the sync).
//! (The parent has already checked the message for a `Delivered-To:`
//! loop.) A worker that cannot start (DIR cannot be opened, the sandbox
//! cannot be entered) answers its first job with the reason, unasked,
//! and exits.
//!
//! Trusts: its parent for the arguments and requests (root started it);
//! nothing in the message, which is copied, never interpreted.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use sandbox::{DirAccess, Grant, Policy, Unconfined};

use super::agent::{EX_DATAERR, EX_OK, EX_SOFTWARE, EX_TEMPFAIL};
use super::deliver::{self, Envelope};
use super::{maildir, mbox, repair};
use crate::ipc::msg::{FromWorker, ToWorker};
use crate::ipc::{self, Channel};
use crate::queue::{ContentRange, read_content, read_envelope, verify_content};

/// The queue file's descriptor, for `local repair` and `local pipe`.
pub(super) const QUEUE_FD: i32 = 3;
/// A delivery worker's socket to its parent.
pub(super) const CHANNEL_FD: i32 = 3;
/// The largest message either way on a worker's socket.
pub const MAX_WORKER_MESSAGE: usize = 16 * 1024;
/// The longest a verdict waits to be sent while requests keep coming.
const ANSWER_WAIT: Duration = Duration::from_millis(200);

/// Report and exit (the one-shot programs: `local repair`, `local pipe`).
pub(super) fn finish(code: i32, dsn: &str, reason: &str) -> ! {
    report(dsn, reason);
    std::process::exit(code);
}

/// Write the verdict line of a one-shot program's report.
pub(super) fn report(dsn: &str, reason: &str) {
    let mut e = std::io::stderr();
    let _ = writeln!(e, "{dsn} {reason}");
    let _ = e.flush();
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

/// What a worker delivers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An mbox in the spool: dot-lock and kernel locks.
    Mbox,
    /// A file named in an alias or `.forward`, written as an mbox is,
    /// with the kernel locks only (its directory need not be writable).
    File,
    /// A Maildir beneath a home directory.
    Maildir,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "mbox" => Some(Kind::Mbox),
            "file" => Some(Kind::File),
            "maildir" => Some(Kind::Maildir),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mbox => "mbox",
            Kind::File => "file",
            Kind::Maildir => "maildir",
        }
    }
}

/// Why a job failed: its exit code, status code and reason.
struct Failure {
    code: i32,
    dsn: &'static str,
    reason: String,
}

impl From<deliver::Error> for Failure {
    fn from(e: deliver::Error) -> Failure {
        let code = if e.temporary() { EX_TEMPFAIL } else { EX_DATAERR };
        Failure { code, dsn: e.dsn(), reason: e.to_string() }
    }
}

fn tempfail(reason: String) -> Failure {
    Failure { code: EX_TEMPFAIL, dsn: "4.3.0", reason }
}

/// The worker's socket to its parent (corked: see [`Parent::answer`]).
struct Parent {
    chan: Channel,
    /// Since when a verdict waits to be sent.
    unsent_since: Option<Instant>,
}

impl Parent {
    fn new(fd: OwnedFd) -> Parent {
        let mut chan = Channel::new(fd).with_max_message(MAX_WORKER_MESSAGE);
        chan.cork();
        Parent { chan, unsent_since: None }
    }

    /// Send `m`, and everything waiting before it, and wait until it is
    /// out. False: the parent is gone.
    fn send(&mut self, m: &FromWorker) -> bool {
        if self.chan.send(m, &[]).is_err() {
            return false;
        }
        self.flush()
    }

    /// Queue a verdict, to be sent before the worker next waits for a
    /// request ([`Parent::next`]). False: the parent is gone.
    fn answer(&mut self, m: &FromWorker) -> bool {
        if self.chan.send(m, &[]).is_err() {
            return false;
        }
        // (A send past the cork's limit flushes what it can.)
        self.unsent_since =
            if self.chan.wants_write() { Some(self.unsent_since.unwrap_or_else(Instant::now)) } else { None };
        true
    }

    /// Send everything queued, waiting until it is out. False: the
    /// parent is gone.
    fn flush(&mut self) -> bool {
        loop {
            match self.chan.flush() {
                Ok(true) => {
                    self.unsent_since = None;
                    return true;
                }
                Ok(false) => {
                    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
                    let mut fds = [PollFd::new(self.chan.as_fd(), PollFlags::POLLOUT)];
                    if let Err(e) = poll(&mut fds, PollTimeout::from(1000u16))
                        && e != nix::errno::Errno::EINTR
                    {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Answer (the job in hand, or the first one) and exit.
    fn fatal(&mut self, code: i32, dsn: &str, reason: &str) -> ! {
        let _ = self.send(&FromWorker::Done { code, report: format!("{dsn} {reason}") });
        std::process::exit(code);
    }

    /// The next request, with the queue file a job comes with; exits
    /// when the parent sends what a worker does not expect. The verdicts
    /// waiting are sent first if there is none to read yet, or if they
    /// have waited [`ANSWER_WAIT`]; and before a sync, which the parent's
    /// time limit for them should not have to cover.
    fn next(&mut self) -> Request {
        loop {
            let got = if self.chan.wants_write() {
                let overdue = self.unsent_since.is_some_and(|t| t.elapsed() >= ANSWER_WAIT);
                match if overdue { Ok(None) } else { self.chan.recv::<ToWorker>() } {
                    Ok(Some((ToWorker::Sync, fds))) if fds.is_empty() => {
                        return if self.flush() { Request::Sync } else { Request::Lost };
                    }
                    Ok(Some(m)) => Ok(m),
                    Ok(None) if self.flush() => continue,
                    Ok(None) => return Request::Lost,
                    Err(e) => Err(e),
                }
            } else {
                self.chan.recv_blocking::<ToWorker>(Duration::from_secs(3600))
            };
            match got {
                Ok((ToWorker::Deliver { sender, recipient, arrival, content, batched }, mut fds)) if fds.len() == 1 => {
                    let fd: OwnedFd = fds.remove(0);
                    if let Err(e) = sandbox::limit_received(&Grant::File { fd: fd.as_raw_fd(), write: false }) {
                        self.fatal(EX_SOFTWARE, "4.3.0", &format!("limiting the queue file: {e}"));
                    }
                    let (offset, len, crc) = content;
                    let range = ContentRange { offset, len, crc };
                    let queue = Source::File(File::from(fd));
                    return Request::Deliver { sender, recipient, arrival, range, batched, queue };
                }
                Ok((ToWorker::DeliverHeld { sender, recipient, arrival, crc, content }, fds)) if fds.is_empty() => {
                    let range = ContentRange { offset: 0, len: content.len() as u64, crc };
                    let queue = Source::Held(content);
                    return Request::Deliver { sender, recipient, arrival, range, batched: true, queue };
                }
                Ok((ToWorker::DeliverHeld { .. }, _)) => {
                    self.fatal(EX_SOFTWARE, "4.3.0", "a descriptor with a job that carries its content")
                }
                Ok((ToWorker::Sync, fds)) if fds.is_empty() => return Request::Sync,
                Ok((ToWorker::Deliver { .. }, _)) => {
                    self.fatal(EX_SOFTWARE, "4.3.0", "a job without exactly one queue file")
                }
                Ok((ToWorker::Sync, _)) => self.fatal(EX_SOFTWARE, "4.3.0", "a descriptor with a sync request"),
                Err(ipc::Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(ipc::Error::Closed) => return Request::End,
                Err(e) => self.fatal(EX_SOFTWARE, "4.3.0", &format!("the parent's socket: {e}")),
            }
        }
    }

    /// A progress line. If the parent cannot be told, it cannot repair
    /// the mailbox either: the delivery stops.
    fn progress(&mut self, line: String) -> Result<(), Failure> {
        if self.send(&FromWorker::Progress(line)) {
            Ok(())
        } else {
            Err(tempfail(String::from("cannot report to the parent")))
        }
    }
}

/// What the parent asks of a worker.
enum Request {
    Deliver {
        sender: String,
        recipient: String,
        arrival: i64,
        range: ContentRange,
        batched: bool,
        queue: Source,
    },
    Sync,
    /// The parent has closed the socket.
    End,
    /// The parent cannot be told the verdicts.
    Lost,
}

/// Where a job's content is: in the queue file that came with it, at the
/// job's range, or in the job itself (its range then starts at 0).
enum Source {
    File(File),
    Held(Vec<u8>),
}

/// `local deliver ...`: never returns.
pub fn main(args: &[String]) -> ! {
    let [kind, dir, name, hostname, lock_ms, confinement] = args else {
        finish(EX_SOFTWARE, "4.3.0", "local deliver: wrong arguments");
    };
    let mut parent = match sandbox::fds::take_inherited(CHANNEL_FD) {
        Ok(fd) => Parent::new(fd),
        Err(e) => finish(EX_SOFTWARE, "4.3.0", &format!("no socket to the parent: {e}")),
    };
    // Queue files come to us: the user's other processes must not read
    // them from us.
    if let Err(e) = sandbox::no_trace() {
        parent.fatal(EX_TEMPFAIL, "4.3.0", &format!("cannot shut out tracing: {e}"));
    }
    if let Err(e) = super::deliver::block_file_size_signal() {
        parent.fatal(EX_TEMPFAIL, "4.3.0", &format!("cannot block SIGXFSZ: {e}"));
    }
    let Some(kind) = Kind::parse(kind) else {
        parent.fatal(EX_SOFTWARE, "4.3.0", &format!("local deliver: unknown mailbox kind {kind}"));
    };
    let dir_fd = match open_dir_fd(dir) {
        Ok(fd) => fd,
        Err(e) => parent.fatal(EX_TEMPFAIL, "4.3.0", &format!("{dir}: {}", e.desc())),
    };
    let grants = [Grant::Channel { fd: CHANNEL_FD }, dir_grant(&dir_fd, PathBuf::from(dir.as_str()))];
    if let Err(e) = enter(&grants, unconfined(confinement)) {
        parent.fatal(EX_TEMPFAIL, "4.3.0", &format!("cannot enter the delivery sandbox: {e}"));
    }
    let lock = mbox::LockConf { timeout: lock_timeout(lock_ms), dotlock: kind == Kind::Mbox, ..Default::default() };
    let mut bufs = Buffers::default();
    // The batched Maildir deliveries since the last sync (a batch opens
    // its Maildir once).
    let mut unsynced: Option<maildir::Pending> = None;
    loop {
        let answer = match parent.next() {
            Request::Deliver { sender, recipient, arrival, range, batched, queue } => {
                let env = Envelope { sender: &sender, recipient: &recipient, arrival };
                let target = Target { kind, dir: &dir_fd, name, hostname, lock: &lock };
                let batch = if batched { Some(&mut unsynced) } else { None };
                job(&mut parent, &target, &env, &queue, range, &mut bufs, batch)
            }
            Request::Sync => match unsynced.take() {
                Some(batch) => batch.commit().map(|()| "synced").map_err(Failure::from),
                None => Ok("synced"),
            },
            // What was written and not committed is delivered to no one.
            Request::End => {
                if let Some(batch) = unsynced {
                    batch.abandon();
                }
                std::process::exit(EX_OK);
            }
            Request::Lost => {
                if let Some(batch) = unsynced {
                    batch.abandon();
                }
                std::process::exit(EX_TEMPFAIL);
            }
        };
        let (code, dsn, reason) = match answer {
            Ok(what) => (EX_OK, "2.0.0", what.to_string()),
            Err(f) => (f.code, f.dsn, f.reason),
        };
        if !parent.answer(&FromWorker::Done { code, report: format!("{dsn} {reason}") }) {
            if let Some(batch) = unsynced {
                batch.abandon();
            }
            std::process::exit(EX_TEMPFAIL);
        }
    }
}

/// The worker's mailbox.
struct Target<'a> {
    kind: Kind,
    dir: &'a OwnedFd,
    name: &'a str,
    hostname: &'a str,
    lock: &'a mbox::LockConf,
}

/// Content up to this size is read into memory once (and its CRC checked
/// there); larger content is checked, then streamed from the file.
const HELD_MAX: u64 = 256 * 1024;

/// What a worker keeps from one job to the next.
#[derive(Default)]
struct Buffers {
    /// The content of a message up to [`HELD_MAX`].
    held: Vec<u8>,
    scratch: deliver::Scratch,
}

/// One delivery: the content's CRC checked (where it lies is the
/// parent's word, from the envelope it read), the mailbox opened by
/// name, locked, written, synced, let go. With `batch`, a Maildir
/// delivery is written to `tmp/` and joins the batch, to be synced and
/// moved into `new/` when the parent asks (the Maildir the batch opened
/// first is delivered to again).
fn job(
    parent: &mut Parent,
    t: &Target<'_>,
    env: &Envelope<'_>,
    queue: &Source,
    range: ContentRange,
    bufs: &mut Buffers,
    batch: Option<&mut Option<maildir::Pending>>,
) -> Result<&'static str, Failure> {
    let Buffers { held, scratch } = bufs;
    let (mut in_memory, mut streamed);
    let content: &mut dyn Read = match queue {
        // Checked as one read from the file would be.
        Source::Held(bytes) => {
            if crc32fast::hash(bytes) != range.crc {
                return Err(tempfail(String::from("the message content handed over does not match its CRC")));
            }
            in_memory = &bytes[..];
            &mut in_memory
        }
        Source::File(queue) if range.len <= HELD_MAX => {
            read_content(queue, range, held).map_err(|e| tempfail(content_error(&e)))?;
            in_memory = &held[..];
            &mut in_memory
        }
        Source::File(queue) => {
            verify_content(queue, range).map_err(|e| tempfail(content_error(&e)))?;
            streamed = Content { file: queue, range, at: 0 };
            &mut streamed
        }
    };
    match t.kind {
        Kind::Mbox | Kind::File => {
            let (file, lock) = mbox::open_locked(t.dir, t.name, 0o600, t.lock)?;
            let mark = mbox::Mark::of(&file, &lock)?;
            parent.progress(repair::at_line(&mark))?;
            mbox::append(&file, env, content, &lock, scratch)?;
            parent.progress(String::from(repair::APPENDED))?;
            // The message is in, synced: a lock that will not go (a
            // dot-lock another process broke as stale, say) is said, and
            // the delivery stands (deferred, it would be appended twice).
            let released = lock.release();
            Ok(match (t.kind == Kind::Mbox, released.is_ok()) {
                (true, true) => "delivered to mailbox",
                (true, false) => "delivered to mailbox (its lock could not be removed)",
                (false, true) => "delivered to file",
                (false, false) => "delivered to file (its lock could not be removed)",
            })
        }
        Kind::Maildir => {
            let Some(batch) = batch else {
                let md = maildir::open_maildir(t.dir, t.name)?;
                maildir::deliver(&md, t.hostname, env, content, scratch)?;
                return Ok("delivered to maildir");
            };
            if batch.is_none() {
                *batch = Some(maildir::Pending::new(maildir::open_maildir(t.dir, t.name)?));
            }
            if let Some(b) = batch.as_mut() {
                b.write(t.hostname, env, content, scratch)?;
            }
            Ok("delivered to maildir")
        }
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
    match checked_content(&queue) {
        Ok(range) => (queue, range),
        Err(e) => finish(EX_TEMPFAIL, "4.3.0", &e),
    }
}

/// The content range of a queue file, its CRC checked: the delivery
/// child reads what it writes itself, whatever the parent checked.
fn checked_content(queue: &File) -> Result<ContentRange, String> {
    let qe = read_envelope(queue).map_err(|e| format!("cannot read the queue file: {e}"))?;
    let range = qe.content_range();
    verify_content(queue, range).map_err(|e| content_error(&e))?;
    Ok(range)
}

fn content_error(e: &crate::queue::Error) -> String {
    format!("the message content cannot be read: {e}")
}

/// The directory of the mailbox (the spool, or a home), not through a
/// symbolic link at its last component.
fn open_dir_fd(dir: &str) -> nix::Result<OwnedFd> {
    open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
}

/// [`open_dir_fd`], or report and exit.
pub(super) fn open_dir(dir: &str) -> OwnedFd {
    match open_dir_fd(dir) {
        Ok(fd) => fd,
        Err(e) => finish(EX_TEMPFAIL, "4.3.0", &format!("{dir}: {}", e.desc())),
    }
}

pub(super) fn dir_grant(fd: &OwnedFd, path: PathBuf) -> Grant {
    Grant::Dir { fd: fd.as_raw_fd(), path, access: DirAccess::ReadWrite, watch: false, times: false, modes: false }
}

/// Enter a delivery's sandbox: only the descriptors it holds, and
/// mailbox locks.
fn enter(grants: &[Grant], unconfined: Unconfined) -> Result<(), sandbox::Error> {
    let mut p = Policy::new("local");
    p.grants = grants.to_vec();
    p.locks = true;
    sandbox::enter(&p, unconfined).map(drop)
}

/// [`enter`], or report and exit.
pub(super) fn confine(grants: &[Grant], unconfined: Unconfined) {
    if let Err(e) = enter(grants, unconfined) {
        finish(EX_TEMPFAIL, "4.3.0", &format!("cannot enter the delivery sandbox: {e}"));
    }
}

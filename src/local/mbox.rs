//! Appending a message to a Unix mailbox (mbox) in the mail spool, so
//! that mail readers and other deliveries only ever see whole messages:
//!
//! - [`open_mailbox`] opens (or creates) the mailbox beneath the spool's
//!   descriptor without following a symbolic link; it must be a regular
//!   file with one link, owned by the recipient.
//! - [`lock`] takes the locks mail readers honour, in the order mutt and
//!   Postfix take them: a `NAME.lock` dot-lock in the spool (what BSD
//!   mail(1), liblockfile and procmail use), then kernel locks on the
//!   mailbox: flock(2) and, on Linux, an fcntl(2) lock as well. Linux
//!   keeps the two kinds apart, so a reader using either is kept out only
//!   if we hold both. The BSDs keep both kinds in one table, where an
//!   flock and an fcntl lock conflict even within one process: flock
//!   alone keeps out readers of both kinds there (Postfix's FreeBSD
//!   default is flock and dot-lock, too).
//!   The dot-lock holds the pid of the process that took it.
//! - [`append`] writes the message on the end in the mboxrd format: a
//!   `From ` line, our headers, the content with LF line ends and quoted
//!   `From ` lines ([`super::deliver::LfLines`]), an empty line; it
//!   fsyncs, and on any failure truncates the mailbox back to its old
//!   length, so a reader never sees half a message.
//! - [`repair`] does that truncation for a delivery process killed
//!   mid-append (which could not): from where the process said it began
//!   (its [`Mark`]), after removing the dot-lock it left
//!   ([`remove_dead_dotlock`]), and only if every byte past the mark is
//!   a beginning of the message that process was writing.
//!
//! Trusts: the caller, to run as the recipient with its groups (the spool
//! permissions decide what it may do). Nothing in the spool: each name is
//! opened relative to the spool's descriptor, never through a link, and
//! checked on its descriptor after opening.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, FcntlArg, Flock, FlockArg, OFlag, fcntl, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, geteuid, unlinkat};

use super::deliver::{Envelope, Error, Scratch, copy_message, prepended_headers};

/// How a mailbox is locked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockConf {
    /// Take a `NAME.lock` dot-lock in the spool as well as the kernel
    /// locks (the spool must then be writable by the recipient: mode 1777,
    /// or group-writable by a group the delivery runs with).
    pub dotlock: bool,
    /// How long to wait for all the locks together before giving up
    /// ([`Error::Locked`], a temporary failure).
    pub timeout: Duration,
    /// A dot-lock not modified for this long is left over from a crash
    /// and removed, as BSD mail readers and liblockfile do.
    pub stale_after: Duration,
}

impl Default for LockConf {
    fn default() -> LockConf {
        LockConf { dotlock: true, timeout: Duration::from_secs(30), stale_after: Duration::from_secs(300) }
    }
}

/// Opens the mailbox `name` in `spool` for appending, creating it with
/// `create_mode` (0o600, less the umask) if missing.
///
/// Refused ([`Error::Unsafe`]): a name with '/', "", "." or ".."; a
/// symbolic link; anything but a regular file with exactly one link
/// owned by our effective uid (a file we just created is ours; someone
/// else's file, or a hard link to it, is not written to).
pub fn open_mailbox(spool: &OwnedFd, name: &str, create_mode: u32) -> Result<File, Error> {
    open_in(spool, name, Some(create_mode))
}

/// Opens the mailbox `name` in `spool` as [`open_mailbox`] does, with
/// the same refusals, but never creates it (a missing mailbox is an
/// [`Error::Io`] with ENOENT).
pub fn open_existing_mailbox(spool: &OwnedFd, name: &str) -> Result<File, Error> {
    open_in(spool, name, None)
}

fn open_in(spool: &OwnedFd, name: &str, create_mode: Option<u32>) -> Result<File, Error> {
    check_name(name)?;
    let mut flags = OFlag::O_RDWR
        | OFlag::O_APPEND
        | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        // A FIFO in its place must not hang us: refused after fstat.
        | OFlag::O_NONBLOCK;
    if create_mode.is_some() {
        flags |= OFlag::O_CREAT;
    }
    let mode = Mode::from_bits_truncate((create_mode.unwrap_or(0) & 0o777) as libc::mode_t);
    let fd = match openat(spool, name, flags, mode) {
        Ok(fd) => fd,
        // Linux says ELOOP for a symbolic link under O_NOFOLLOW, FreeBSD EMLINK.
        Err(Errno::ELOOP | Errno::EMLINK) => {
            return Err(Error::Unsafe(format!("mailbox {name} is a symbolic link")));
        }
        Err(Errno::EISDIR) => return Err(Error::Unsafe(format!("mailbox {name} is a directory"))),
        Err(e) => return Err(Error::errno(format!("open mailbox {name}"))(e)),
    };
    let st = fstat(&fd).map_err(Error::errno(format!("stat mailbox {name}")))?;
    check_mailbox(&st, name)?;
    let status = fcntl(&fd, FcntlArg::F_GETFL).map_err(Error::errno(format!("get the flags of mailbox {name}")))?;
    let status = OFlag::from_bits_retain(status) - OFlag::O_NONBLOCK;
    fcntl(&fd, FcntlArg::F_SETFL(status)).map_err(Error::errno(format!("set the flags of mailbox {name}")))?;
    Ok(File::from(fd))
}

/// A mailbox name is one plain name in the spool.
fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Error::Unsafe(format!("{name:?} is not a mailbox name")));
    }
    Ok(())
}

fn check_mailbox(st: &FileStat, name: &str) -> Result<(), Error> {
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Err(Error::Unsafe(format!("mailbox {name} is not a regular file")));
    }
    if st.st_nlink != 1 {
        return Err(Error::Unsafe(format!("mailbox {name} has {} hard links", st.st_nlink)));
    }
    // A program (a hook named as a file in an alias or .forward) must not
    // get a sender's text appended, to be run later: Postfix's local
    // refuses it too.
    if st.st_mode & 0o111 != 0 {
        return Err(Error::Unsafe(format!("mailbox {name} is executable")));
    }
    let me = geteuid().as_raw();
    if st.st_uid != me {
        return Err(Error::Unsafe(format!(
            "mailbox {name} belongs to uid {}, not to the recipient (uid {me})",
            st.st_uid
        )));
    }
    Ok(())
}

/// How many times [`open_locked`] takes the locks at most.
const LOCK_TRIES: usize = 5;

/// Opens the mailbox `name` in `spool` as [`open_mailbox`] does, locks
/// it ([`lock`]), and checks that the name still holds the file locked:
/// a mail reader that held the locks meanwhile may have removed the
/// mailbox (emptied, BSD mail(1) and mutt remove it) or renamed it, and
/// mail appended to that file would be lost. Then the locks go and the
/// file the name holds now is opened and locked, at most [`LOCK_TRIES`]
/// times within `conf.timeout` in all (past that, a temporary failure).
pub fn open_locked(spool: &OwnedFd, name: &str, create_mode: u32, conf: &LockConf) -> Result<(File, Lock), Error> {
    let deadline = Instant::now() + conf.timeout;
    for _ in 0..LOCK_TRIES {
        let file = open_mailbox(spool, name, create_mode)?;
        let left = LockConf { timeout: deadline.saturating_duration_since(Instant::now()), ..conf.clone() };
        let lock = lock(spool, name, &file, &left)?;
        let held = fstat(&file).map_err(Error::errno(format!("stat mailbox {name}")))?;
        match fstatat(spool, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(now) if now.st_dev == lock.dev && now.st_ino == lock.ino && held.st_nlink == 1 => {
                return Ok((file, lock));
            }
            // Removed, or another file in its place: again, with that.
            Ok(_) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(Error::errno(format!("stat mailbox {name}"))(e)),
        }
        // (A lock that will not go is the next try's to wait for.)
        let _ = lock.release();
    }
    Err(Error::Io {
        what: format!("lock mailbox {name}"),
        error: std::io::Error::other(format!("removed or replaced {LOCK_TRIES} times while its locks were awaited")),
    })
}

/// The locks held on a mailbox; they go when this is dropped, or with
/// [`Lock::release`], which says whether that worked.
///
/// The kernel locks are held on a duplicate of the mailbox's descriptor.
/// Keep the mailbox open until the lock is released: closing any
/// descriptor of the file lets go of the process's fcntl locks on it.
#[derive(Debug)]
pub struct Lock {
    /// The mailbox's name in the spool, for messages.
    mailbox: String,
    /// The locked file's device and inode: [`append`] checks that it
    /// writes to the file it holds the lock for.
    dev: libc::dev_t,
    ino: libc::ino_t,
    dotlock: Option<DotLock>,
    /// The duplicate descriptor, flock(2)ed.
    kernel: Option<Flock<File>>,
    /// Whether the fcntl(2) lock is held too.
    #[cfg(target_os = "linux")]
    fcntl: bool,
}

#[derive(Debug)]
struct DotLock {
    /// A duplicate of the spool's descriptor, to remove the lock by.
    spool: OwnedFd,
    name: String,
}

/// Locks the mailbox `name` in `spool`, opened as `mailbox`: the dot-lock
/// (if `conf.dotlock`), then the kernel locks, each retried every 50 to
/// 200 ms until `conf.timeout` has passed for all of them together.
///
/// A dot-lock older than `conf.stale_after` is removed and taken. As in
/// every dot-lock implementation, a process that found a stale lock can
/// remove the fresh one another process took in its place a moment
/// before; the kernel locks taken next still keep the two apart.
pub fn lock(spool: &OwnedFd, name: &str, mailbox: &File, conf: &LockConf) -> Result<Lock, Error> {
    check_name(name)?;
    let deadline = Instant::now() + conf.timeout;
    let st = fstat(mailbox).map_err(Error::errno(format!("stat mailbox {name}")))?;
    let mut lock = Lock {
        mailbox: name.to_string(),
        dev: st.st_dev,
        ino: st.st_ino,
        dotlock: None,
        kernel: None,
        #[cfg(target_os = "linux")]
        fcntl: false,
    };
    if conf.dotlock {
        lock.dotlock = Some(dotlock(spool, name, conf, deadline)?);
    }
    let dup = mailbox.try_clone().map_err(Error::io(format!("duplicate the descriptor of mailbox {name}")))?;
    let locked = lock.kernel.insert(flock(dup, name, conf, deadline)?);
    #[cfg(target_os = "linux")]
    {
        posix_lock(locked, name, conf, deadline)?;
        lock.fcntl = true;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = locked;
    Ok(lock)
}

impl Lock {
    /// Lets go of every lock: the kernel locks, then the dot-lock. An
    /// error says which failed (a dot-lock already gone was broken as
    /// stale by another process while we held it).
    pub fn release(mut self) -> Result<(), Error> {
        self.unlock()
    }

    fn unlock(&mut self) -> Result<(), Error> {
        let mut first = None;
        #[cfg(target_os = "linux")]
        if std::mem::take(&mut self.fcntl)
            && let Some(file) = &self.kernel
            && let Err(e) = set_posix_lock(file, libc::F_UNLCK)
        {
            first = Some(Error::errno(format!("remove the fcntl lock of mailbox {}", self.mailbox))(e));
        }
        if let Some(locked) = self.kernel.take()
            && let Err((locked, e)) = locked.unlock()
        {
            // nix's Flock panics if unlocking fails again as it drops; the
            // descriptor, and the lock, go when the process exits.
            std::mem::forget(locked);
            first.get_or_insert(Error::errno(format!("remove the flock of mailbox {}", self.mailbox))(e));
        }
        if let Some(d) = self.dotlock.take()
            && let Err(e) = unlinkat(&d.spool, d.name.as_str(), UnlinkatFlags::NoRemoveDir)
        {
            first.get_or_insert(Error::errno(format!("remove the dot-lock {}", d.name))(e));
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.unlock();
    }
}

fn dotlock(spool: &OwnedFd, name: &str, conf: &LockConf, deadline: Instant) -> Result<DotLock, Error> {
    let lock_name = format!("{name}.lock");
    let spool = spool.try_clone().map_err(Error::io("duplicate the descriptor of the mail spool"))?;
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut tries = 0;
    // Why a stale lock is still there, if we could not remove it.
    let mut stuck = None;
    loop {
        match openat(&spool, lock_name.as_str(), flags, Mode::from_bits_truncate(0o600)) {
            Ok(fd) => {
                // Our pid, as liblockfile writes it, so that a repair
                // after we are killed knows the lock for ours. A lock
                // without it still locks (it is only never taken for a
                // dead process's, and goes when it is stale).
                let _ = File::from(fd).write_all(format!("{}\n", std::process::id()).as_bytes());
                return Ok(DotLock { spool, name: lock_name });
            }
            Err(Errno::EEXIST) => match break_stale(&spool, &lock_name, conf.stale_after) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => stuck = Some(e),
            },
            Err(Errno::EINTR) => continue,
            Err(e @ (Errno::EACCES | Errno::EPERM | Errno::EROFS)) => {
                return Err(Error::errno(format!(
                    "create the dot-lock {lock_name} (the mail spool must be writable by the recipient, \
                     or dot-locking turned off)"
                ))(e));
            }
            Err(e) => return Err(Error::errno(format!("create the dot-lock {lock_name}"))(e)),
        }
        if !pause(deadline, &mut tries) {
            let lock = match stuck {
                None => format!("its dot-lock {lock_name}"),
                Some(e) => format!("its stale dot-lock {lock_name}, which we may not remove ({e}),"),
            };
            return Err(Error::Locked { mailbox: name.to_string(), lock, waited: conf.timeout });
        }
    }
}

/// Removes the dot-lock if it was last modified more than `stale_after`
/// ago: true if it is gone (removed by us or by someone else).
fn break_stale(spool: &OwnedFd, lock_name: &str, stale_after: Duration) -> Result<bool, Errno> {
    let st = match fstatat(spool, lock_name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(true),
        Err(e) => return Err(e),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let age = i64::try_from(now).unwrap_or(i64::MAX).saturating_sub(st.st_mtime);
    if u64::try_from(age).is_ok_and(|age| age > stale_after.as_secs()) {
        match unlinkat(spool, lock_name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => return Ok(true),
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

fn flock(mut file: File, name: &str, conf: &LockConf, deadline: Instant) -> Result<Flock<File>, Error> {
    let mut tries = 0;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => return Ok(locked),
            Err((f, Errno::EWOULDBLOCK | Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(Error::errno(format!("flock mailbox {name}"))(e)),
        }
        if !pause(deadline, &mut tries) {
            let lock = String::from("an flock(2) lock on it");
            return Err(Error::Locked { mailbox: name.to_string(), lock, waited: conf.timeout });
        }
    }
}

#[cfg(target_os = "linux")]
fn posix_lock(file: &File, name: &str, conf: &LockConf, deadline: Instant) -> Result<(), Error> {
    let mut tries = 0;
    loop {
        match set_posix_lock(file, libc::F_WRLCK) {
            Ok(()) => return Ok(()),
            // POSIX allows EACCES as well as EAGAIN for a lock held elsewhere.
            Err(Errno::EAGAIN | Errno::EACCES | Errno::EINTR) => {}
            Err(e) => return Err(Error::errno(format!("fcntl-lock mailbox {name}"))(e)),
        }
        if !pause(deadline, &mut tries) {
            let lock = String::from("an fcntl(2) lock on it");
            return Err(Error::Locked { mailbox: name.to_string(), lock, waited: conf.timeout });
        }
    }
}

/// Sets (F_WRLCK) or removes (F_UNLCK) an fcntl lock on the whole file.
#[cfg(target_os = "linux")]
fn set_posix_lock(file: &File, kind: libc::c_int) -> Result<(), Errno> {
    let whole = libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    fcntl(file, FcntlArg::F_SETLK(&whole)).map(drop)
}

/// Sleeps 50 to 200 ms, but not past `deadline`; false once it has passed.
fn pause(deadline: Instant, tries: &mut u32) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    *tries = tries.wrapping_add(1);
    // Varied, so that processes waiting for one mailbox do not retry in step.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let spread = (nanos ^ std::process::id().wrapping_mul(2_654_435_761) ^ tries.wrapping_mul(40_503)) % 151;
    std::thread::sleep(Duration::from_millis(50 + u64::from(spread)).min(deadline - now));
    true
}

/// Appends the message to the mailbox, which `lock` holds locked: a
/// `From ` line with the sender (MAILER-DAEMON for the null sender) and
/// the arrival time, the [`prepended_headers`], the content read from
/// `content` (CR LF lines from the queue) with LF line ends and mboxrd
/// quoting, and an empty line; then fsync.
///
/// A mailbox that does not end in an empty line gets line ends first, so
/// that our `From ` line starts a message. On any failure the mailbox is
/// truncated back to its old length, and the error returned.
pub fn append(
    mailbox: &File,
    env: &Envelope<'_>,
    content: &mut dyn Read,
    lock: &Lock,
    scratch: &mut Scratch,
) -> Result<(), Error> {
    let name = lock.mailbox.as_str();
    let start = Mark::of(mailbox, lock)?.size;
    let head = message_head(mailbox, start, env, name)?;
    let mut out = mailbox;
    let written = copy_message(&mut out, &head, content, true, MESSAGE_END, &format!("mailbox {name}"), scratch)
        .and_then(|()| mailbox.sync_all().map_err(Error::io(format!("fsync mailbox {name}"))));
    match written {
        Ok(()) => Ok(()),
        Err(e) => Err(truncate_back(mailbox, start, name, e)),
    }
}

/// What ends a message in the mailbox, after its content: an empty line.
const MESSAGE_END: &[u8] = b"\n";

/// What [`append`] writes before the content of a message going on the
/// end of a mailbox of `len` bytes: the line ends it needs, the `From `
/// line, our headers.
fn message_head(mailbox: &File, len: u64, env: &Envelope<'_>, name: &str) -> Result<Vec<u8>, Error> {
    let headers = prepended_headers(env)?;
    let mut head = separator(mailbox, len, name)?.to_vec();
    head.extend_from_slice(from_line(env).as_bytes());
    head.extend_from_slice(&headers);
    Ok(head)
}

/// What a mailbox of `len` bytes needs before a new `From ` line: nothing
/// if empty or ending in an empty line, else one or two line ends.
fn separator(mailbox: &File, len: u64, name: &str) -> Result<&'static [u8], Error> {
    if len == 0 {
        return Ok(b"");
    }
    let mut last = [0; 2];
    let n = len.min(2) as usize;
    mailbox
        .read_exact_at(&mut last[..n], len - n as u64)
        .map_err(Error::io(format!("read the end of mailbox {name}")))?;
    Ok(match &last[..n] {
        [.., b'\n', b'\n'] => b"",
        [.., b'\n'] => b"\n",
        _ => b"\n\n",
    })
}

fn truncate_back(mailbox: &File, len: u64, name: &str, e: Error) -> Error {
    match (mailbox.set_len(len), e) {
        (Ok(()), e) => e,
        (Err(t), Error::Io { what, error }) => {
            Error::Io { what: format!("{what} (and truncating mailbox {name} back to {len} bytes failed: {t})"), error }
        }
        (Err(_), e) => e,
    }
}

/// Where a delivery began: the mailbox's length and identity (device
/// and inode) once the delivery held its locks, before it wrote. The
/// delivery child reports it ([`super::repair`] says how); [`repair`]
/// cuts the mailbox back to it if the child is killed mid-append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub size: u64,
    pub dev: libc::dev_t,
    pub ino: libc::ino_t,
}

impl Mark {
    /// The mark of `mailbox`, which `lock` holds locked (refused if
    /// `lock` is for another file).
    pub fn of(mailbox: &File, lock: &Lock) -> Result<Mark, Error> {
        let name = lock.mailbox.as_str();
        let st = fstat(mailbox).map_err(Error::errno(format!("stat mailbox {name}")))?;
        if (st.st_dev, st.st_ino) != (lock.dev, lock.ino) {
            return Err(Error::Unsafe(format!("the mailbox written to is not the mailbox {name} locked")));
        }
        Ok(Mark { size: u64::try_from(st.st_size).unwrap_or(0), dev: st.st_dev, ino: st.st_ino })
    }

    /// The mark written as `SIZE DEV INO` (see the `Display`), from
    /// its three decimal fields.
    pub fn parse(size: &str, dev: &str, ino: &str) -> Option<Mark> {
        Some(Mark { size: size.parse().ok()?, dev: dev.parse().ok()?, ino: ino.parse().ok()? })
    }
}

/// `SIZE DEV INO`, in decimal.
impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.size, self.dev, self.ino)
    }
}

/// Removes the dot-lock `NAME.lock` in `spool` if the process `dead`,
/// which has ended, left it: a regular file of ours holding that pid.
/// True if it was removed; false if there is none, or it is another
/// process's (left alone: [`lock`] waits for it as for any).
pub fn remove_dead_dotlock(spool: &OwnedFd, name: &str, dead: i32) -> Result<bool, Error> {
    check_name(name)?;
    let lock_name = format!("{name}.lock");
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match openat(spool, lock_name.as_str(), flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(false),
        // A link or a FIFO in its place is no lock we took.
        Err(Errno::ELOOP | Errno::EMLINK | Errno::ENXIO) => return Ok(false),
        Err(e) => return Err(Error::errno(format!("open the dot-lock {lock_name}"))(e)),
    };
    let st = fstat(&fd).map_err(Error::errno(format!("stat the dot-lock {lock_name}")))?;
    let regular = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG;
    if !regular || st.st_uid != geteuid().as_raw() {
        return Ok(false);
    }
    let mut text = Vec::with_capacity(16);
    File::from(fd).take(32).read_to_end(&mut text).map_err(Error::io(format!("read the dot-lock {lock_name}")))?;
    let holder = std::str::from_utf8(&text).ok().and_then(|t| t.trim().parse::<i32>().ok());
    if holder != Some(dead) {
        return Ok(false);
    }
    // The name may have been taken over since we opened it (by one who
    // broke it as stale and locked): only the file we read is removed.
    match fstatat(spool, lock_name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(now) if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) => {}
        Ok(_) | Err(Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(Error::errno(format!("stat the dot-lock {lock_name}"))(e)),
    }
    match unlinkat(spool, lock_name.as_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(Error::errno(format!("remove the dot-lock {lock_name}"))(e)),
    }
}

/// What [`repair`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Repair {
    /// The mailbox had grown to `from` bytes: cut back to `to`, synced.
    CutBack { from: u64, to: u64 },
    /// Nothing had been written: it has its `size` from before.
    Intact { size: u64 },
}

/// Undoes what the delivery process `dead`, killed while it appended to
/// the mailbox `name` in `spool`, wrote after `mark`: the message of
/// `env` with `content` (the queued content, as [`append`] read it).
///
/// In order: its dot-lock is removed ([`remove_dead_dotlock`], if
/// `conf.dotlock`); the mailbox is opened as [`open_existing_mailbox`]
/// does (never created) and must be the file of the mark; it is locked
/// as [`lock`] does (waiting for any other holder); then, if the
/// mailbox is longer than the mark, it is truncated back and fsynced,
/// and the locks let go. The caller is already in its sandbox, with
/// `spool` (and the content) granted: every descriptor made here,
/// duplicates for the locks included, is made within it.
///
/// Refused ([`Error::Unsafe`], nothing changed): another file in the
/// mailbox's place; a mailbox now shorter than the mark, or whose bytes
/// past the mark are not a beginning of that message exactly (a reader
/// rewrote it, or another writer appended after the killed one): they
/// are not ours to remove.
#[allow(clippy::too_many_arguments)]
pub fn repair(
    spool: &OwnedFd,
    name: &str,
    mark: &Mark,
    dead: i32,
    env: &Envelope<'_>,
    content: &mut dyn Read,
    conf: &LockConf,
) -> Result<Repair, Error> {
    if conf.dotlock {
        remove_dead_dotlock(spool, name, dead)?;
    }
    let mailbox = open_existing_mailbox(spool, name)?;
    let st = fstat(&mailbox).map_err(Error::errno(format!("stat mailbox {name}")))?;
    if (st.st_dev, st.st_ino) != (mark.dev, mark.ino) {
        return Err(Error::Unsafe(format!(
            "mailbox {name} is not the file the killed delivery wrote to (device {} inode {}, not {} {})",
            st.st_dev, st.st_ino, mark.dev, mark.ino
        )));
    }
    let held = lock(spool, name, &mailbox, conf)?;
    let now = Mark::of(&mailbox, &held)?.size;
    let done = cut_back(&mailbox, name, mark.size, now, env, content)?;
    held.release().map_err(|e| match e {
        Error::Io { what, error } => Error::Io { what: format!("{what} (after {})", describe(&done, name)), error },
        e => e,
    })?;
    Ok(done)
}

/// What [`repair`] did, in words.
pub fn describe(done: &Repair, name: &str) -> String {
    match done {
        Repair::CutBack { from, to } => format!("mailbox {name} cut back from {from} to {to} bytes"),
        Repair::Intact { size } => format!("mailbox {name} left at {size} bytes, as before the delivery"),
    }
}

/// Truncates the locked `mailbox`, now `now` bytes long, back to `size`
/// if what lies past `size` is a beginning of the message of `env` and
/// `content` as [`append`] writes it there.
fn cut_back(
    mailbox: &File,
    name: &str,
    size: u64,
    now: u64,
    env: &Envelope<'_>,
    content: &mut dyn Read,
) -> Result<Repair, Error> {
    if now < size {
        return Err(Error::Unsafe(format!(
            "mailbox {name} is {now} bytes, shorter than the {size} it had before the killed delivery"
        )));
    }
    if now == size {
        return Ok(Repair::Intact { size });
    }
    let head = message_head(mailbox, size, env, name)?;
    let mut tail = Tail { mailbox, at: size, end: now, differs: false, covered: false, buf: Vec::new() };
    let dest = format!("mailbox {name}");
    let compared = copy_message(&mut tail, &head, content, true, MESSAGE_END, &dest, &mut Scratch::default());
    if tail.differs {
        return Err(Error::Unsafe(format!(
            "mailbox {name} differs from the killed delivery's message at byte {}: left at {now} bytes",
            tail.at
        )));
    }
    // Stopped by `Tail` once all was compared, or an error of its own.
    if !tail.covered {
        compared?;
    }
    if tail.at < now {
        return Err(Error::Unsafe(format!(
            "mailbox {name} holds more than the killed delivery's message past byte {size}: left at {now} bytes"
        )));
    }
    let what = format!("cut mailbox {name} back to {size} bytes");
    mailbox.set_len(size).map_err(Error::io(what.clone()))?;
    mailbox.sync_all().map_err(Error::io(what))?;
    Ok(Repair::CutBack { from: now, to: size })
}

/// A writer that compares what it is given with the mailbox from `at`
/// up to `end`, and stops the copy (with an error) at the first byte
/// that differs, or at the first byte past `end`.
struct Tail<'a> {
    mailbox: &'a File,
    /// How far the mailbox matched; where it differs, once `differs`.
    at: u64,
    end: u64,
    differs: bool,
    /// All up to `end` matched, and the message goes on past it.
    covered: bool,
    buf: Vec<u8>,
}

impl Write for Tail<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.at == self.end && !data.is_empty() {
            self.covered = true;
            return Err(std::io::Error::other("the mailbox ends within the message"));
        }
        let n = usize::try_from(self.end - self.at).unwrap_or(usize::MAX).min(data.len());
        self.buf.resize(n, 0);
        self.mailbox.read_exact_at(&mut self.buf, self.at)?;
        if let Some(i) = self.buf.iter().zip(data).position(|(ours, theirs)| ours != theirs) {
            self.at += i as u64;
            self.differs = true;
            return Err(std::io::Error::other("the mailbox differs"));
        }
        self.at += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The mbox `From ` line that starts a message, LF included:
/// `From sender Sun Nov 22 12:06:37 2026` (the arrival, in UTC).
pub fn from_line(env: &Envelope<'_>) -> String {
    let sender = if env.sender.is_empty() { "MAILER-DAEMON" } else { env.sender };
    format!("From {sender} {}\n", asctime(env.arrival))
}

/// asctime(3)'s form of a time, in UTC (the delivery child reads no time
/// zone files).
pub(crate) use crate::date::asctime;

//! Making materialised queue files durable in bulk, and the small
//! descriptor-relative file helpers the journal uses.
//!
//! Linux has `syncfs`: one call writes back every file of the spool file
//! system, so nothing is kept; it reports the write-back errors of those
//! files from Linux 5.8 on, and before that each file is `fsync`ed, as
//! elsewhere (FreeBSD, OpenBSD): descriptors are kept until the journal
//! segment that the files came from is retired, at most [`MAX_KEPT`] at
//! a time (the oldest are synced early when more arrive).
//!
//! Trusts: the names it is given are plain file names (checked by the
//! callers).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, fchmod};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Most descriptors kept for a later `fsync` (not with `syncfs`).
pub const MAX_KEPT: usize = 256;

/// Whether `syncfs(2)` reports the write-back errors of the files it
/// writes, which Linux does from 5.8 on (before, only errors of the
/// file system itself: a file that never reached the disk would be taken
/// as durable). Nowhere else is there a `syncfs`.
pub(crate) fn syncfs_reports() -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        static REPORTS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *REPORTS.get_or_init(|| {
            let u = nix::sys::utsname::uname();
            u.ok().and_then(|u| u.release().to_str().and_then(|r| release_at_least(r, (5, 8)))).unwrap_or(false)
        })
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    false
}

/// Whether a kernel release (`6.1.0-26-amd64`) is `want` or later; None
/// if it does not parse.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
fn release_at_least(release: &str, want: (u32, u32)) -> Option<bool> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse::<u32>().ok()?;
    let minor = parts.next()?.parse::<u32>().ok()?;
    Some((major, minor) >= want)
}

/// Files written but not yet known to be on stable storage.
///
/// A failed sync is final for the life of the process: the kernel may
/// drop the pages it could not write and report the error only once
/// (Linux marks them clean), so a later sync that succeeds would prove
/// nothing. From then on every [`Unsynced::sync`] fails, nothing that
/// relies on one (a journal segment's retirement) happens, and the
/// journal keeps its copies until the next start's recovery.
#[derive(Default)]
pub struct Unsynced {
    /// Kept for their `fsync` (none with `syncfs`).
    files: Vec<File>,
    failed: Option<String>,
}

impl Unsynced {
    /// Remember a written file (it may be renamed meanwhile). Past
    /// [`MAX_KEPT`] the kept ones are synced early; if that fails, the
    /// failure is kept for the next [`Unsynced::sync`] to report: the
    /// file is written whatever happens, and its journal record is kept.
    pub fn add(&mut self, file: File) {
        if syncfs_reports() || self.failed.is_some() {
            // One syncfs for all; or no sync will count any more: keep
            // no descriptors.
            return;
        }
        self.files.push(file);
        if self.files.len() > MAX_KEPT {
            let _ = self.flush_files();
        }
    }

    /// Whether a sync has failed (see the type's documentation).
    pub fn failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Fail as a sync would (tests).
    #[cfg(test)]
    pub(crate) fn fail_for_test(&mut self) {
        self.fail(&io::Error::other("injected sync failure"));
    }

    fn fail(&mut self, e: &io::Error) {
        if self.failed.is_none() {
            self.failed = Some(e.to_string());
        }
        self.files.clear();
    }

    fn flush_files(&mut self) -> io::Result<()> {
        while let Some(f) = self.files.last() {
            if let Err(e) = f.sync_all() {
                self.fail(&e);
                return Err(e);
            }
            self.files.pop();
        }
        Ok(())
    }

    /// Make every remembered file and the entries of `dir` durable.
    pub fn sync(&mut self, dir: BorrowedFd<'_>) -> io::Result<()> {
        if let Some(why) = &self.failed {
            return Err(io::Error::other(format!(
                "a sync of queue files failed ({why}); none is taken as durable until the next start"
            )));
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let r = if syncfs_reports() { nix::unistd::syncfs(dir).map_err(io::Error::from) } else { self.flush_files() };
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let r = self.flush_files();
        let r = r.and_then(|()| nix::unistd::fsync(dir).map_err(io::Error::from));
        if let Err(e) = &r {
            self.fail(e);
        }
        r
    }
}

/// Open `name` in `dir` for reading (no symlink); `None` if it is absent.
pub fn open_read(dir: BorrowedFd<'_>, name: &str) -> io::Result<Option<File>> {
    match openat(dir, name, OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(fd) => Ok(Some(File::from(fd))),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Remove `name` from `dir`; absent is fine.
pub fn remove(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The mode of a queue file while it is written (0200): its owner (qmgr and
/// cleanup run as the mail user) may write it but not open it to read,
/// so no reader takes half a file for a whole one; a reader with root's
/// privileges checks the mode ([`complete`]).
pub const MODE_WRITING: Mode = Mode::S_IWUSR;
/// The mode of a complete queue file (0600).
pub const MODE_DONE: Mode = Mode::S_IRUSR.union(Mode::S_IWUSR);

/// Whether a queue file of mode `mode` is complete (readable by its
/// owner: see [`MODE_WRITING`]).
pub fn complete(mode: impl Into<u32>) -> bool {
    mode.into() & 0o400 != 0
}

/// Whether `name` in `dir` is a queue file of ours still being written
/// (mode [`MODE_WRITING`]): why opening it to read fails with EACCES.
/// Any other file we may not read is a fault to report.
pub fn being_written(dir: BorrowedFd<'_>, name: &str) -> bool {
    nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| writing(st.st_mode) && st.st_uid == nix::unistd::geteuid().as_raw())
}

/// Whether a queue file of mode `mode` is one being written (exactly
/// [`MODE_WRITING`]); `st_mode` is 16 bits wide on FreeBSD.
fn writing(mode: impl Into<u32>) -> bool {
    mode.into() & 0o777 == 0o200
}

/// Write `bytes` as the new file `name` in `dir`: created with mode
/// [`MODE_WRITING`], written, then given [`MODE_DONE`] (one `fchmod`
/// instead of a temporary name and a rename, as Postfix marks a queue
/// file complete). No reader takes a half-written file for a whole one;
/// a crash leaves it for the journal's recovery to replace. The file is
/// not synced: it is handed to `unsynced`.
pub fn publish(dir: BorrowedFd<'_>, name: &str, bytes: &[u8], unsynced: &mut Unsynced) -> io::Result<()> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut file = File::from(openat(dir, name, flags, MODE_WRITING)?);
    let r = file.write_all(bytes).and_then(|()| fchmod(file.as_fd(), MODE_DONE).map_err(io::Error::from));
    if let Err(e) = r {
        let _ = remove(dir, name);
        return Err(e);
    }
    unsynced.add(file);
    Ok(())
}

/// Whether this system has sealed memory files ([`memory_file`]).
pub const HAS_MEMORY_FILES: bool = cfg!(any(target_os = "linux", target_os = "android", target_os = "freebsd"));

/// `bytes` in an anonymous memory file (memfd), sealed against any
/// change (write, grow, shrink, more seals): a queue file that lives in
/// memory only, handed to qmgr and the delivery agents as a descriptor,
/// which they read like a file in the queue. Not on OpenBSD, which has no
/// memfd (see [`HAS_MEMORY_FILES`]).
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
pub fn memory_file(bytes: &[u8]) -> io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create("mta-queue-file", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    let mut file = File::from(fd);
    file.write_all(bytes)?;
    let seals = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL;
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals))?;
    Ok(file.into())
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
pub fn memory_file(_bytes: &[u8]) -> io::Result<std::os::fd::OwnedFd> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// The file names in `dir` (not `.` and `..`; names that are not UTF-8
/// are skipped: they are none of ours).
pub fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<String>> {
    let mut d = nix::dir::Dir::openat(
        dir.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e?;
        if let Ok(name) = e.file_name().to_str()
            && name != "."
            && name != ".."
        {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_sync_fails_every_later_one() {
        let dir = crate::queue::tests::TempDir::new("unsynced");
        let d = File::open(&dir.path).expect("open dir");
        let mut u = Unsynced::default();
        u.sync(d.as_fd()).expect("a good sync");
        assert!(!u.failed());
        // fsync of a pipe fails (EINVAL): a sync that did not happen.
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        assert!(u.sync(r.as_fd()).is_err());
        assert!(u.failed());
        // A later sync that would succeed proves nothing now.
        u.add(File::create(dir.path.join("q")).expect("file"));
        let e = u.sync(d.as_fd()).expect_err("still failed");
        assert!(e.to_string().contains("none is taken as durable"), "{e}");
    }
}

//! Making materialised queue files durable in bulk, and the small
//! descriptor-relative file helpers the journal uses.
//!
//! Linux has `syncfs`: one call writes back every file of the spool file
//! system, so nothing is kept. Elsewhere (FreeBSD, OpenBSD) each file is
//! `fsync`ed: descriptors are kept until the journal segment that the
//! files came from is retired, at most [`MAX_KEPT`] at a time (the oldest
//! are synced early when more arrive).
//!
//! Trusts: the names it is given are plain file names (checked by the
//! callers).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Most descriptors kept for a later `fsync` (not on Linux).
#[cfg_attr(any(target_os = "linux", target_os = "android"), allow(dead_code))]
pub const MAX_KEPT: usize = 256;

/// Files written but not yet known to be on stable storage.
#[derive(Default)]
pub struct Unsynced {
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    files: Vec<File>,
}

impl Unsynced {
    /// Remember a written file (it may be renamed meanwhile).
    pub fn add(&mut self, file: File) -> io::Result<()> {
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            if self.files.len() >= MAX_KEPT {
                self.flush_files()?;
            }
            self.files.push(file);
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        drop(file);
        Ok(())
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn flush_files(&mut self) -> io::Result<()> {
        while let Some(f) = self.files.last() {
            f.sync_all()?;
            self.files.pop();
        }
        Ok(())
    }

    /// Make every remembered file and the entries of `dir` durable.
    pub fn sync(&mut self, dir: BorrowedFd<'_>) -> io::Result<()> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        nix::unistd::syncfs(dir)?;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        self.flush_files()?;
        nix::unistd::fsync(dir)?;
        Ok(())
    }
}

/// Create `name` in `dir` (exclusive, no symlink, mode 0600), for writing.
pub fn create(dir: BorrowedFd<'_>, name: &str) -> io::Result<File> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(File::from(openat(dir, name, flags, Mode::from_bits_truncate(0o600))?))
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

/// Write `bytes` as the file `name` in `dir`: create `tmp` (removing a
/// stale one left by a crash), write, rename to `name`. No half-written
/// file is ever visible as `name`. The file is not synced: it is handed to
/// `unsynced`.
pub fn publish(dir: BorrowedFd<'_>, tmp: &str, name: &str, bytes: &[u8], unsynced: &mut Unsynced) -> io::Result<()> {
    let mut file = match create(dir, tmp) {
        Err(e) if e.raw_os_error() == Some(Errno::EEXIST as i32) => {
            remove(dir, tmp)?;
            create(dir, tmp)?
        }
        r => r?,
    };
    let r = file.write_all(bytes).and_then(|()| renameat(dir, tmp, dir, name).map_err(io::Error::from));
    if let Err(e) = r {
        let _ = remove(dir, tmp);
        return Err(e);
    }
    unsynced.add(file)
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

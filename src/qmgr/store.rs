//! The queue directories as qmgr moves messages between them: incoming/
//! (new mail, from cleanup), active/ (in the scheduler's hands), the
//! sixteen hashed subfolders of deferred/ (waiting for their next attempt,
//! which is the file's mtime), hold/ (set aside by the operator) and
//! corrupt/ (failed validation). Every access is by directory descriptor
//! and file name; every file is opened without following links and must
//! be a regular file with one link whose queue ID is its name.
//!
//! Trusts: nothing in the files (the queue format's reader validates
//! them); names come from listings and are checked to be queue IDs.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat, futimens, mkdirat};
use nix::sys::time::TimeSpec;
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::queue::{self, QueueEnvelope, QueueId, Time};

use super::schedule::{DEFERRED_SUBDIRS, deferred_subdir};

/// A queue directory qmgr holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Incoming,
    Active,
    Deferred,
    Hold,
}

impl Dir {
    pub fn name(self) -> &'static str {
        match self {
            Dir::Incoming => "incoming",
            Dir::Active => "active",
            Dir::Deferred => "deferred",
            Dir::Hold => "hold",
        }
    }
}

/// Why a file could not be used.
#[derive(Debug)]
pub enum Problem {
    /// Gone (delivered, deleted, moved meanwhile).
    Gone,
    /// The kernel refused: try again later, keep the file.
    Io(io::Error),
    /// Not a queue file we can use: move it to corrupt/.
    Corrupt(String),
    /// Still being written by cleanup (not readable yet): leave it, it
    /// is named when complete.
    Incomplete,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Gone => f.write_str("the file is gone"),
            Problem::Incomplete => f.write_str("the file is still being written"),
            Problem::Io(e) => write!(f, "{e}"),
            Problem::Corrupt(why) => f.write_str(why),
        }
    }
}

impl From<Errno> for Problem {
    fn from(e: Errno) -> Problem {
        if e == Errno::ENOENT { Problem::Gone } else { Problem::Io(io::Error::from(e)) }
    }
}

/// Open `name` beneath `dir` without following links: a regular file
/// with one link, or an error saying why not.
pub fn open_checked(dir: &OwnedFd, name: &str, write: bool) -> Result<File, Problem> {
    open_checked_sized(dir, name, write).map(|(f, _)| f)
}

/// [`open_checked`], with the file's size.
pub fn open_checked_sized(dir: &OwnedFd, name: &str, write: bool) -> Result<(File, u64), Problem> {
    let access = if write { OFlag::O_RDWR } else { OFlag::O_RDONLY };
    let flags = access | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match open_noatime(dir, name, flags) {
        Ok(fd) => fd,
        Err(Errno::ELOOP) | Err(Errno::EMLINK) => return Err(Problem::Corrupt(String::from("a symbolic link"))),
        // Ours, and not readable yet: cleanup is writing it. Anything
        // else we may not read is a fault to report.
        Err(Errno::EACCES) if queue::file_being_written(dir.as_fd(), name) => return Err(Problem::Incomplete),
        Err(e) => return Err(e.into()),
    };
    let st = fstat(&fd).map_err(Problem::from)?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG || st.st_nlink != 1 {
        return Err(Problem::Corrupt(String::from("not a regular file with one link")));
    }
    // (Opened all the same with root's privileges.)
    if !queue::file_complete(st.st_mode) {
        return Err(Problem::Incomplete);
    }
    Ok((File::from(fd), u64::try_from(st.st_size).unwrap_or(0)))
}

/// Open without updating the access time where the system can (Linux:
/// `O_NOATIME`, allowed to the file's owner, which qmgr is): the first
/// read of a new queue file would otherwise dirty its inode, a journal
/// update per message for a time nobody reads. Anyone else's file is
/// opened plainly.
fn open_noatime(dir: &OwnedFd, name: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    match openat(dir, name, flags | OFlag::O_NOATIME, Mode::empty()) {
        Err(Errno::EPERM) => {}
        r => return r,
    }
    openat(dir, name, flags, Mode::empty())
}

/// Read and validate a queue file's envelope; its ID must be `id`.
pub fn read(file: &File, id: &QueueId) -> Result<QueueEnvelope, Problem> {
    checked(queue::read_envelope(file), id)
}

/// [`read`] of a file of `size` bytes ([`open_checked_sized`]).
pub fn read_sized(file: &File, size: u64, id: &QueueId) -> Result<QueueEnvelope, Problem> {
    checked(queue::read_envelope_sized(file, size), id)
}

fn checked(r: Result<QueueEnvelope, queue::Error>, id: &QueueId) -> Result<QueueEnvelope, Problem> {
    match r {
        Ok(q) if q.id == *id => Ok(q),
        Ok(q) => Err(Problem::Corrupt(format!("holds queue ID {}", q.id))),
        Err(queue::Error::Io(e)) => Err(Problem::Io(e)),
        Err(e) => Err(Problem::Corrupt(e.to_string())),
    }
}

/// qmgr's queue directories.
pub struct Store {
    pub incoming: OwnedFd,
    pub active: OwnedFd,
    pub deferred: OwnedFd,
    pub hold: OwnedFd,
    pub corrupt: OwnedFd,
}

/// The name of `id` beneath `dir` (deferred/ hashes into a subfolder).
pub fn path(dir: Dir, id: &QueueId) -> String {
    match dir {
        Dir::Deferred => format!("{}/{}", deferred_subdir(id), id.as_str()),
        _ => id.as_str().to_string(),
    }
}

/// The names of a directory listing split into queue IDs (at most `max`)
/// and other names (not cleanup's temporary dot-files, which are never
/// listed, and not deferred/'s subfolders).
pub fn ids(dir: &OwnedFd, max: usize) -> io::Result<(Vec<QueueId>, Vec<String>)> {
    let mut out = Vec::new();
    let mut other = Vec::new();
    for name in queue_names(dir)? {
        match QueueId::parse(&name) {
            Some(id) if out.len() < max => out.push(id),
            Some(_) => {}
            None if DEFERRED_SUBDIRS.contains(&name.as_str()) => {}
            None => other.push(name),
        }
    }
    Ok((out, other))
}

/// The names in `dir` not starting with a dot.
pub fn queue_names(dir: &OwnedFd) -> io::Result<Vec<String>> {
    let mut d =
        nix::dir::Dir::openat(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if !n.starts_with(b".")
            && let Ok(s) = std::str::from_utf8(n)
        {
            names.push(s.to_string());
        }
    }
    Ok(names)
}

impl Store {
    /// The five directories in `roles::QUEUE_DIRS` order.
    pub fn new(fds: Vec<OwnedFd>) -> Result<Store, String> {
        let [incoming, active, deferred, hold, corrupt] =
            <[OwnedFd; 5]>::try_from(fds).map_err(|f| format!("expected 5 queue directories, got {}", f.len()))?;
        Ok(Store { incoming, active, deferred, hold, corrupt })
    }

    pub fn fd(&self, dir: Dir) -> &OwnedFd {
        match dir {
            Dir::Incoming => &self.incoming,
            Dir::Active => &self.active,
            Dir::Deferred => &self.deferred,
            Dir::Hold => &self.hold,
        }
    }

    /// Make the subfolders of deferred/ that are missing.
    pub fn prepare(&self) -> io::Result<()> {
        for sub in DEFERRED_SUBDIRS {
            match mkdirat(&self.deferred, sub, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Move whatever active/ holds back to incoming/: a pass cut short by
    /// a crash or a restart starts over. Returns how many.
    pub fn recover_active(&self) -> io::Result<usize> {
        let mut n = 0;
        for name in queue_names(&self.active)? {
            renameat(&self.active, name.as_str(), &self.incoming, name.as_str())?;
            n += 1;
        }
        Ok(n)
    }

    /// Up to `max` queue IDs waiting in incoming/, and the names there
    /// that are no queue ID (for corrupt/).
    pub fn list_incoming(&self, max: usize) -> io::Result<(Vec<QueueId>, Vec<String>)> {
        ids(&self.incoming, max)
    }

    /// Every message in deferred/ with its next attempt time (the file's
    /// mtime). A file directly in deferred/ (not hashed) is moved into its
    /// subfolder first.
    pub fn scan_deferred(&self, found: &mut dyn FnMut(QueueId, Time)) -> io::Result<Vec<String>> {
        let mut problems = Vec::new();
        for id in ids(&self.deferred, usize::MAX)?.0 {
            let to = path(Dir::Deferred, &id);
            if let Err(e) = renameat(&self.deferred, id.as_str(), &self.deferred, to.as_str()) {
                problems.push(format!("deferred/{id}: cannot move it to deferred/{to}: {e}"));
            }
        }
        for sub in DEFERRED_SUBDIRS {
            let fd = match openat(
                &self.deferred,
                sub,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            for id in ids(&fd, usize::MAX)?.0 {
                match fstatat(&fd, id.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => found(id, Time { secs: st.st_mtime, micros: 0 }),
                    Err(Errno::ENOENT) => {}
                    Err(e) => problems.push(format!("deferred/{sub}/{id}: {e}")),
                }
            }
        }
        Ok(problems)
    }

    /// Move `id` from `from` to `to` (deferred/ by its hashed name).
    pub fn rename(&self, id: &QueueId, from: Dir, to: Dir) -> Result<(), Problem> {
        let (a, b) = (path(from, id), path(to, id));
        renameat(self.fd(from), a.as_str(), self.fd(to), b.as_str()).map_err(Problem::from)
    }

    /// Open `id` in `dir`.
    pub fn open(&self, dir: Dir, id: &QueueId, write: bool) -> Result<File, Problem> {
        open_checked(self.fd(dir), &path(dir, id), write)
    }

    /// [`Store::open`], with the file's size.
    pub fn open_sized(&self, dir: Dir, id: &QueueId, write: bool) -> Result<(File, u64), Problem> {
        open_checked_sized(self.fd(dir), &path(dir, id), write)
    }

    /// Remove `id` from `dir`; Ok(false) when it was not there.
    pub fn remove(&self, dir: Dir, id: &QueueId) -> io::Result<bool> {
        match unlinkat(self.fd(dir), path(dir, id).as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Move a file that failed validation from `dir` to corrupt/; returns
    /// its name there.
    pub fn to_corrupt(&self, dir: Dir, name: &str) -> Result<String, queue::Error> {
        match dir {
            Dir::Deferred => {
                // The hashed subfolder is the directory to move from.
                let (sub, file) = name.split_once('/').unwrap_or((".", name));
                let fd = openat(
                    &self.deferred,
                    sub,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                queue::move_to_corrupt(fd.as_fd(), file, self.corrupt.as_fd())
            }
            _ => queue::move_to_corrupt(self.fd(dir).as_fd(), name, self.corrupt.as_fd()),
        }
    }

    /// Defer `id` (in `from`: active/, or incoming/ after its first
    /// attempt) until `until`: date it and move it to its subfolder of
    /// deferred/.
    pub fn defer(&self, id: &QueueId, from: Dir, until: Time) -> Result<(), Problem> {
        let file = self.open(from, id, false)?;
        let t = TimeSpec::new(until.secs, 0);
        futimens(file.as_fd(), &t, &t).map_err(Problem::from)?;
        self.rename(id, from, Dir::Deferred)
    }

    /// Date a file in deferred/ due now (flush), so a restart finds it due.
    pub fn make_due(&self, id: &QueueId, now: Time) -> Result<(), Problem> {
        self.date(Dir::Deferred, id, now.secs)
    }

    /// Set the modification time of `id` in `dir` (seconds since the
    /// epoch).
    pub fn date(&self, dir: Dir, id: &QueueId, secs: i64) -> Result<(), Problem> {
        let file = self.open(dir, id, false)?;
        let t = TimeSpec::new(secs, 0);
        futimens(file.as_fd(), &t, &t).map_err(Problem::from)
    }

    /// The modification time of `id` in `dir` (seconds since the epoch).
    pub fn dated(&self, dir: Dir, id: &QueueId) -> Result<i64, Problem> {
        let st = fstatat(self.fd(dir), path(dir, id).as_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(Problem::from)?;
        Ok(st.st_mtime)
    }

    /// Where `id` is, if anywhere.
    pub fn find(&self, id: &QueueId) -> Option<Dir> {
        [Dir::Active, Dir::Incoming, Dir::Deferred, Dir::Hold]
            .into_iter()
            .find(|&d| fstatat(self.fd(d), path(d, id).as_str(), AtFlags::AT_SYMLINK_NOFOLLOW).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Envelope, QueueFile, QueueIdGen, Recipient};

    fn spool(tag: &str) -> (std::path::PathBuf, Store) {
        let d = std::env::temp_dir().join(format!("mta-qmgr-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let mut fds = Vec::new();
        for sub in crate::roles::QUEUE_DIRS {
            std::fs::create_dir_all(d.join(sub)).unwrap();
            fds.push(OwnedFd::from(File::open(d.join(sub)).unwrap()));
        }
        let s = Store::new(fds).unwrap();
        s.prepare().unwrap();
        (d, s)
    }

    fn message(dir: &std::path::Path, sub: &str) -> QueueId {
        let id = QueueIdGen::new(1).next_id();
        let q = QueueFile {
            id,
            envelope: Envelope { sender: String::from("a@example.org"), ..Envelope::default() },
            recipients: vec![Recipient { address: String::from("b@example.org"), ..Recipient::default() }],
            content: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
        };
        std::fs::write(dir.join(sub).join(id.as_str()), q.encode().unwrap()).unwrap();
        id
    }

    #[test]
    fn defer_dates_and_hashes_and_a_scan_finds_it() {
        let (d, s) = spool("defer");
        let id = message(&d, "active");
        s.defer(&id, Dir::Active, Time { secs: 2_000_000_000, micros: 0 }).unwrap();
        assert!(d.join("deferred").join(deferred_subdir(&id)).join(id.as_str()).is_file());
        assert_eq!(s.find(&id), Some(Dir::Deferred));
        let mut found = Vec::new();
        let problems = s.scan_deferred(&mut |i, t| found.push((i, t.secs))).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(found, vec![(id, 2_000_000_000)]);
        // Read back through the hashed name.
        let f = s.open(Dir::Deferred, &id, false).unwrap();
        assert_eq!(read(&f, &id).unwrap().id, id);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn active_goes_back_to_incoming_and_links_are_refused() {
        let (d, s) = spool("recover");
        let id = message(&d, "active");
        assert_eq!(s.recover_active().unwrap(), 1);
        assert_eq!(s.list_incoming(10).unwrap().0, vec![id]);
        // A second link to a queue file is not a queue file.
        std::fs::hard_link(d.join("incoming").join(id.as_str()), d.join("hold").join("extra")).unwrap();
        assert!(matches!(s.open(Dir::Incoming, &id, false), Err(Problem::Corrupt(_))));
        // A name that is no queue ID is reported for corrupt/.
        std::fs::write(d.join("incoming").join("junk"), b"x").unwrap();
        let (ids, junk) = s.list_incoming(10).unwrap();
        assert_eq!((ids.len(), junk), (1, vec![String::from("junk")]));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reading_a_queue_file_leaves_its_access_time() {
        use std::os::unix::fs::MetadataExt;
        let (d, s) = spool("atime");
        let id = message(&d, "incoming");
        let path = d.join("incoming").join(id.as_str());
        // An access time before the modification: a plain read would
        // set it (relatime, the default, and strictatime alike).
        let old = nix::sys::time::TimeSpec::new(1_000_000_000, 0);
        let now = nix::sys::time::TimeSpec::new(std::fs::metadata(&path).unwrap().mtime(), 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &path,
            &old,
            &now,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        let f = s.open(Dir::Incoming, &id, false).unwrap();
        assert_eq!(read(&f, &id).unwrap().id, id);
        drop(f);
        let atime = std::fs::metadata(&path).unwrap().atime();
        if cfg!(target_os = "linux") {
            assert_eq!(atime, 1_000_000_000, "the read updated the access time");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_still_being_written_is_left_alone_not_called_corrupt() {
        use std::os::unix::fs::PermissionsExt;
        let (d, s) = spool("writing");
        let id = message(&d, "incoming");
        let path = d.join("incoming").join(id.as_str());
        // cleanup creates it unreadable and makes it readable once whole.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o200)).unwrap();
        assert!(matches!(s.open(Dir::Incoming, &id, false), Err(Problem::Incomplete)));
        let mut cursor = super::super::scan::Cursor::new(true);
        let mut budget = super::super::scan::Budget { names: 100, files: 100, until: None };
        let part = cursor.advance(&s, &mut budget).unwrap();
        assert!(part.last && part.entries.is_empty(), "{:?}", part.entries);
        assert!(cursor.take_problems().is_empty());
        assert!(path.exists(), "left where it is");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let f = s.open(Dir::Incoming, &id, false).unwrap();
        assert_eq!(read(&f, &id).unwrap().id, id);
        std::fs::remove_dir_all(&d).unwrap();
    }
}

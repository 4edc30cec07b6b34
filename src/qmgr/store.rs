//! The queue directories as qmgr moves messages between them: incoming/
//! (new mail, from cleanup), active/ (in the scheduler's hands), the
//! sixteen hashed subfolders of deferred/ (waiting for their next attempt,
//! which is the file's mtime), hold/ (set aside by the operator) and
//! corrupt/ (failed validation). Every access is by directory descriptor
//! and file name; every file is opened without following links and must
//! be a regular file with one link whose queue ID is its name.
//!
//! A file is never moved over another: a message may have two copies at
//! once, when cleanup's journal recovery could not find a valid one where
//! qmgr had put it (damaged, or unreadable: cleanup may only read active/,
//! deferred/ and hold/) and wrote the journal's copy to incoming/ again.
//! When two copies meet ([`Store::resolve_twin`], [`Store::recover_active`],
//! [`Store::defer`]), the one in incoming/ is used unless it is corrupt,
//! and the other is set aside in corrupt/ (never removed), and logged.
//! But for a message on hold ([`Store::resolve_held`]): the operator
//! holds it, so the copy in incoming/ is never delivered; the message
//! stays held (the journal's copy takes a damaged one's place in hold/),
//! or the copy goes to corrupt/.
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
    /// Another copy of the message is where it was to go (see the module
    /// documentation): nothing was moved.
    Twin(Dir),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Gone => f.write_str("the file is gone"),
            Problem::Incomplete => f.write_str("the file is still being written"),
            Problem::Twin(d) => write!(f, "another copy of the message is in {}/", d.name()),
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

/// Which of two copies of a message is used ([`Store::resolve_twin`]),
/// with the line for the log.
#[derive(Debug)]
pub enum Twin {
    /// No copy in incoming/: go on with the other.
    None,
    /// The copy in incoming/ is corrupt and was set aside: go on with the
    /// other.
    IncomingCorrupt(String),
    /// The copy in incoming/ is used; the other was set aside.
    OtherSetAside(String),
}

/// What became of a copy in incoming/ of a message with a file in hold/
/// ([`Store::resolve_held`]), with the line for the log.
#[derive(Debug)]
pub enum Held {
    /// No file of the message in hold/: take the copy in incoming/.
    No,
    /// The message stays held; the copy in incoming/ is gone from there.
    Kept(String),
    /// The copy in incoming/ could not be moved: it stays there, and must
    /// not be taken.
    Blocked(String),
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
    /// a crash or a restart starts over. A message with a copy in
    /// incoming/ already keeps that one ([`Store::resolve_twin`]). Returns
    /// how many were moved, and what went wrong or was set aside (for the
    /// log); only a failed listing is an error.
    pub fn recover_active(&self) -> io::Result<(usize, Vec<String>)> {
        let mut n = 0;
        let mut said = Vec::new();
        for name in queue_names(&self.active)? {
            if let Some(id) = QueueId::parse(&name) {
                match self.resolve_twin(&id, Dir::Active) {
                    Twin::None => {}
                    Twin::IncomingCorrupt(line) => said.push(line),
                    Twin::OtherSetAside(line) => {
                        said.push(line);
                        continue;
                    }
                }
            }
            match self.rename_name(&name, Dir::Active, Dir::Incoming) {
                Ok(()) => n += 1,
                Err(p) => said.push(format!("active/{name}: cannot move it back to incoming/: {p}")),
            }
        }
        Ok((n, said))
    }

    /// Whether a file named after `id` is in `dir`.
    pub fn exists(&self, dir: Dir, id: &QueueId) -> bool {
        fstatat(self.fd(dir), path(dir, id).as_str(), AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
    }

    /// Two copies of message `id`, one in incoming/ and one in `other`:
    /// which one is used. The copy in incoming/ (cleanup writes one there
    /// only when it found no valid copy elsewhere) wins unless it is
    /// corrupt; the loser goes to corrupt/. Nothing is removed.
    pub fn resolve_twin(&self, id: &QueueId, other: Dir) -> Twin {
        let elsewhere = path(other, id);
        match self.open(Dir::Incoming, id, false).and_then(|f| read(&f, id)) {
            Err(Problem::Gone) => Twin::None,
            Err(Problem::Corrupt(why)) => {
                let line = match self.to_corrupt(Dir::Incoming, id.as_str()) {
                    Ok(to) => format!(
                        "incoming/{id}: {why}; moved to corrupt/{to} (the copy in {}/{elsewhere} is used)",
                        other.name()
                    ),
                    Err(e) => format!("incoming/{id}: {why}; cannot move it to corrupt/: {e}"),
                };
                Twin::IncomingCorrupt(line)
            }
            // Valid, still being written by cleanup's recovery, or not
            // readable now: the copy in incoming/ is the one to use.
            _ => {
                let what = format!(
                    "{}/{elsewhere}: a second copy of the message, left by cleanup's journal recovery; the copy in \
                     incoming/ is used",
                    other.name()
                );
                Twin::OtherSetAside(match self.to_corrupt(other, &elsewhere) {
                    Ok(to) => format!("{what}, this one moved to corrupt/{to}"),
                    Err(e) => format!("{what}; cannot move this one to corrupt/: {e}"),
                })
            }
        }
    }

    /// Message `id` has a copy in incoming/ and a file in hold/: it was
    /// put on hold, and cleanup's journal recovery wrote the journal's
    /// copy to incoming/ because it found the one in hold/ damaged, or
    /// could not read it (see doc/queue-format.md). Taken, the copy in
    /// incoming/ would be delivered as if never held. Instead, the
    /// message stays held: a valid copy in hold/ (checked whole, its
    /// content's CRC too, as recovery checked it) is kept and the copy in
    /// incoming/ set aside in corrupt/; a corrupt one is set aside in
    /// corrupt/ and the copy in incoming/ moved to hold/ in its place,
    /// dated `held_since` (see `admin`: its release takes it as new
    /// mail); while the one in hold/ cannot be read, it stays and the
    /// copy in incoming/ is set aside. Nothing is removed.
    pub fn resolve_held(&self, id: &QueueId, held_since: i64) -> Held {
        let checked = self.open(Dir::Hold, id, false).and_then(|f| {
            let q = read(&f, id)?;
            queue::verify_content(&f, q.content_range()).map_err(|e| match e {
                queue::Error::Io(e) => Problem::Io(e),
                e => Problem::Corrupt(e.to_string()),
            })
        });
        let aside = |why: &str| match self.to_corrupt(Dir::Incoming, id.as_str()) {
            Ok(to) => Held::Kept(format!("incoming/{id}: a copy of a message on hold ({why}): moved to corrupt/{to}")),
            Err(e) => Held::Blocked(format!(
                "incoming/{id}: a copy of a message on hold ({why}): cannot move it to corrupt/: {e}; not taken"
            )),
        };
        let why = match checked {
            Err(Problem::Gone) => return Held::No,
            Ok(()) => return aside("written by cleanup's journal recovery; the copy in hold/ is valid and kept"),
            Err(Problem::Corrupt(why)) => why,
            Err(p) => return aside(&format!("the copy in hold/ cannot be read now, and is kept: {p}")),
        };
        let to = match self.to_corrupt(Dir::Hold, id.as_str()) {
            Ok(to) => to,
            Err(e) => {
                return aside(&format!("the copy in hold/ is damaged ({why}) and cannot be moved to corrupt/: {e}"));
            }
        };
        let damaged = format!("hold/{id}: {why}; moved to corrupt/{to}");
        match self.date(Dir::Incoming, id, held_since).and_then(|()| self.rename(id, Dir::Incoming, Dir::Hold)) {
            Ok(()) => Held::Kept(format!(
                "{damaged}, and the journal's copy, which cleanup's recovery wrote to incoming/, held in its place"
            )),
            Err(p) => aside(&format!("{damaged}; it cannot be held in its place: {p}")),
        }
    }

    /// Up to `max` queue IDs waiting in incoming/, and the names there
    /// that are no queue ID (for corrupt/).
    pub fn list_incoming(&self, max: usize) -> io::Result<(Vec<QueueId>, Vec<String>)> {
        ids(&self.incoming, max)
    }

    /// Move `id`, found as `name` in deferred/, into its own subfolder;
    /// whether it is there now. A file already there is the message's
    /// copy: this one is set aside in corrupt/.
    pub(super) fn move_home(&self, id: &QueueId, name: &str, problems: &mut Vec<String>) -> bool {
        let to = path(Dir::Deferred, id);
        match self.rename_paths(name, Dir::Deferred, &to, Dir::Deferred) {
            Ok(()) => {
                problems.push(format!("deferred/{name}: not in its subfolder; moved to deferred/{to}"));
                true
            }
            Err(Problem::Gone) => false,
            Err(Problem::Twin(_)) => {
                let line = match self.to_corrupt(Dir::Deferred, name) {
                    Ok(c) => format!("deferred/{name}: a second copy of deferred/{to}; moved to corrupt/{c}"),
                    Err(e) => {
                        format!("deferred/{name}: a second copy of deferred/{to}; cannot move it to corrupt/: {e}")
                    }
                };
                problems.push(line);
                false
            }
            Err(p) => {
                problems.push(format!("deferred/{name}: cannot move it to deferred/{to}: {p}"));
                false
            }
        }
    }

    /// Move `name` (beneath deferred/), which is no queue file name, to
    /// corrupt/; the line for the log.
    pub(super) fn junk_to_corrupt(&self, name: &str) -> String {
        match self.to_corrupt(Dir::Deferred, name) {
            Ok(to) => format!("deferred/{name}: not a queue file name; moved to corrupt/{to}"),
            Err(e) => format!("deferred/{name}: not a queue file name; cannot move it to corrupt/: {e}"),
        }
    }

    /// Move `id` from `from` to `to` (deferred/ by its hashed name), never
    /// over a file there ([`Problem::Twin`]). (qmgr alone moves queue
    /// files; cleanup only creates them in incoming/, `O_EXCL`.)
    pub fn rename(&self, id: &QueueId, from: Dir, to: Dir) -> Result<(), Problem> {
        let (a, b) = (path(from, id), path(to, id));
        self.rename_paths(&a, from, &b, to)
    }

    fn rename_name(&self, name: &str, from: Dir, to: Dir) -> Result<(), Problem> {
        self.rename_paths(name, from, name, to)
    }

    fn rename_paths(&self, a: &str, from: Dir, b: &str, to: Dir) -> Result<(), Problem> {
        match fstatat(self.fd(to), b, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => return Err(Problem::Twin(to)),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        renameat(self.fd(from), a, self.fd(to), b).map_err(Problem::from)
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
    /// deferred/. A file in its way there is an older copy of the message
    /// (see the module documentation): it is set aside in corrupt/ first,
    /// and the returned line says so.
    pub fn defer(&self, id: &QueueId, from: Dir, until: Time) -> Result<Option<String>, Problem> {
        let file = self.open(from, id, false)?;
        let t = TimeSpec::new(until.secs, 0);
        futimens(file.as_fd(), &t, &t).map_err(Problem::from)?;
        match self.rename(id, from, Dir::Deferred) {
            Err(Problem::Twin(_)) => {}
            r => return r.map(|()| None),
        }
        let name = path(Dir::Deferred, id);
        let to = self.to_corrupt(Dir::Deferred, &name).map_err(|e| match e {
            queue::Error::Io(e) => Problem::Io(e),
            e => Problem::Io(io::Error::other(e.to_string())),
        })?;
        self.rename(id, from, Dir::Deferred)?;
        Ok(Some(format!(
            "deferred/{name}: an older copy of the message, left by cleanup's journal recovery, was in the way; \
             moved to corrupt/{to}"
        )))
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
    use super::super::rescan::{Kind, scan_all};
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
        let problems = scan_all(&s, Kind::Index, &mut |i, t| found.push((i, t.secs)));
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
        assert_eq!(s.recover_active().unwrap(), (1, Vec::new()));
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

    /// A copy of message `id` in `sub` (with `deferred`, its hashed
    /// subfolder), its first recipient in `state`; `damaged`: cut short.
    fn copy(dir: &std::path::Path, sub: &str, id: QueueId, state: crate::queue::State, damaged: bool) {
        let mut q = QueueFile {
            id,
            envelope: Envelope { sender: String::from("a@example.org"), ..Envelope::default() },
            recipients: vec![Recipient { address: String::from("b@example.org"), ..Recipient::default() }],
            content: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
        };
        q.recipients[0].status.state = state;
        let mut bytes = q.encode().unwrap();
        if damaged {
            bytes.truncate(100);
        }
        let at = match sub {
            "deferred" => dir.join(sub).join(deferred_subdir(&id)),
            _ => dir.join(sub),
        };
        std::fs::write(at.join(id.as_str()), bytes).unwrap();
    }

    fn state_in(s: &Store, dir: Dir, id: &QueueId) -> crate::queue::State {
        read(&s.open(dir, id, false).unwrap(), id).unwrap().recipients[0].status.state
    }

    #[test]
    fn a_file_is_never_moved_over_another() {
        use crate::queue::State;
        let (d, s) = spool("twin");
        let id = QueueIdGen::new(1).next_id();
        copy(&d, "incoming", id, State::Pending, false);
        copy(&d, "hold", id, State::Deferred, false);
        assert!(matches!(s.rename(&id, Dir::Incoming, Dir::Hold), Err(Problem::Twin(Dir::Hold))));
        assert_eq!(state_in(&s, Dir::Incoming, &id), State::Pending);
        assert_eq!(state_in(&s, Dir::Hold, &id), State::Deferred);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// cleanup's recovery found active/ID damaged (or could not read it)
    /// and wrote the journal's copy to incoming/: at qmgr's start the
    /// copy in active/ must not replace it.
    #[test]
    fn the_copy_in_incoming_wins_over_a_second_one_unless_it_is_corrupt() {
        use crate::queue::State;
        let (d, s) = spool("twins");
        let mut ids = QueueIdGen::new(1);
        let (a, b) = (ids.next_id(), ids.next_id());
        // a: the journal's copy in incoming/, a damaged one in active/.
        copy(&d, "incoming", a, State::Pending, false);
        copy(&d, "active", a, State::Deferred, true);
        // b: a corrupt one in incoming/, a valid one in active/.
        copy(&d, "incoming", b, State::Pending, true);
        copy(&d, "active", b, State::Deferred, false);
        let (n, said) = s.recover_active().unwrap();
        assert_eq!(n, 1, "{said:?}");
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said.iter().any(|l| l.contains("second copy")), "{said:?}");
        assert_eq!(state_in(&s, Dir::Incoming, &a), State::Pending, "the journal's copy of a is used");
        assert_eq!(state_in(&s, Dir::Incoming, &b), State::Deferred, "the valid copy of b is used");
        assert!(queue_names(&s.active).unwrap().is_empty());
        let mut set_aside = queue_names(&s.corrupt).unwrap();
        set_aside.sort();
        let mut want = vec![a.to_string(), b.to_string()];
        want.sort();
        assert_eq!(set_aside, want);
        // The same when one due in deferred/ meets one in incoming/.
        let c = ids.next_id();
        copy(&d, "incoming", c, State::Pending, false);
        copy(&d, "deferred", c, State::Deferred, false);
        assert!(matches!(s.resolve_twin(&c, Dir::Deferred), Twin::OtherSetAside(_)));
        assert!(!s.exists(Dir::Deferred, &c));
        assert_eq!(state_in(&s, Dir::Incoming, &c), State::Pending);
        assert!(matches!(s.resolve_twin(&ids.next_id(), Dir::Deferred), Twin::None));
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A message on hold whose file there is damaged, and whose journal's
    /// copy cleanup's recovery wrote to incoming/: it stays held, never
    /// taken as new mail.
    #[test]
    fn a_journal_copy_of_a_held_message_is_never_taken_the_message_stays_held() {
        use crate::queue::State;
        let (d, s) = spool("held");
        let mut ids = QueueIdGen::new(1);
        let (a, b, c, e) = (ids.next_id(), ids.next_id(), ids.next_id(), ids.next_id());
        // a: damaged in hold/ (its content: qmgr's read of the envelope
        // alone would not see it), the journal's copy in incoming/.
        copy(&d, "hold", a, State::Deferred, false);
        let p = d.join("hold").join(a.as_str());
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x20;
        std::fs::write(&p, bytes).unwrap();
        copy(&d, "incoming", a, State::Pending, false);
        match s.resolve_held(&a, 0) {
            Held::Kept(l) => assert!(l.contains("content CRC") && l.contains("held in its place"), "{l}"),
            h => panic!("{h:?}"),
        }
        assert!(!s.exists(Dir::Incoming, &a), "taken out of incoming/");
        assert_eq!(state_in(&s, Dir::Hold, &a), State::Pending, "the journal's copy is held");
        assert_eq!(s.dated(Dir::Hold, &a).unwrap(), 0, "released, it is taken as new mail");
        // b: valid in hold/: kept; the copy in incoming/ set aside.
        copy(&d, "hold", b, State::Deferred, false);
        copy(&d, "incoming", b, State::Pending, false);
        assert!(matches!(s.resolve_held(&b, 0), Held::Kept(l) if l.contains("valid and kept")));
        assert_eq!(state_in(&s, Dir::Hold, &b), State::Deferred);
        assert!(!s.exists(Dir::Incoming, &b));
        use std::os::unix::fs::PermissionsExt;
        // c: cannot be read in hold/ now (here: still being written):
        // kept, the copy in incoming/ set aside.
        copy(&d, "hold", c, State::Deferred, false);
        std::fs::set_permissions(d.join("hold").join(c.as_str()), std::fs::Permissions::from_mode(0o200)).unwrap();
        copy(&d, "incoming", c, State::Pending, false);
        assert!(matches!(s.resolve_held(&c, 0), Held::Kept(l) if l.contains("cannot be read now")));
        assert!(s.exists(Dir::Hold, &c) && !s.exists(Dir::Incoming, &c));
        // e: not on hold.
        copy(&d, "incoming", e, State::Pending, false);
        assert!(matches!(s.resolve_held(&e, 0), Held::No));
        assert!(s.exists(Dir::Incoming, &e));
        // Nothing removed: a's damaged copy, b's and c's copies from
        // incoming/ are in corrupt/.
        let mut aside = queue_names(&s.corrupt).unwrap();
        aside.sort();
        let mut want = vec![a.to_string(), b.to_string(), c.to_string()];
        want.sort();
        assert_eq!(aside, want);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A file in another subfolder of deferred/ than its own was found by
    /// the scan and then never by its name: never delivered.
    #[test]
    fn a_scan_moves_misplaced_files_home_and_junk_to_corrupt() {
        use crate::queue::State;
        let (d, s) = spool("misplaced");
        let mut ids = QueueIdGen::new(1);
        let (a, b) = (ids.next_id(), ids.next_id());
        let wrong = DEFERRED_SUBDIRS.iter().find(|&&x| x != deferred_subdir(&a)).unwrap();
        copy(&d, "deferred", a, State::Deferred, false);
        std::fs::rename(
            d.join("deferred").join(deferred_subdir(&a)).join(a.as_str()),
            d.join("deferred").join(wrong).join(a.as_str()),
        )
        .unwrap();
        // b: in its own subfolder, and a second copy elsewhere.
        copy(&d, "deferred", b, State::Deferred, false);
        let other = DEFERRED_SUBDIRS.iter().find(|&&x| x != deferred_subdir(&b)).unwrap();
        std::fs::write(d.join("deferred").join(other).join(b.as_str()), b"second").unwrap();
        std::fs::write(d.join("deferred").join(wrong).join("junk"), b"x").unwrap();
        std::fs::write(d.join("deferred").join("junk-top"), b"x").unwrap();
        let mut found = Vec::new();
        let said = scan_all(&s, Kind::Index, &mut |i, _| found.push(i));
        found.sort();
        found.dedup();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(found, want, "{said:?}");
        assert!(s.open(Dir::Deferred, &a, false).is_ok(), "not found by its name: {said:?}");
        assert_eq!(state_in(&s, Dir::Deferred, &b), State::Deferred);
        let mut aside = queue_names(&s.corrupt).unwrap();
        aside.sort();
        let mut expect = vec![b.to_string(), String::from("junk"), String::from("junk-top")];
        expect.sort();
        assert_eq!(aside, expect, "{said:?}");
        assert_eq!(said.len(), 4, "{said:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn deferring_sets_aside_an_older_copy_in_the_way() {
        use crate::queue::State;
        let (d, s) = spool("defertwin");
        let id = QueueIdGen::new(1).next_id();
        copy(&d, "incoming", id, State::Deferred, false);
        copy(&d, "deferred", id, State::Pending, true);
        let said = s.defer(&id, Dir::Incoming, Time { secs: 2_000_000_000, micros: 0 }).unwrap();
        assert!(said.is_some_and(|l| l.contains("older copy")));
        assert_eq!(state_in(&s, Dir::Deferred, &id), State::Deferred);
        assert_eq!(queue_names(&s.corrupt).unwrap(), vec![id.to_string()]);
        assert!(!s.exists(Dir::Incoming, &id));
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

//! Reading the queue as it is on disk, for listings: every queue file is
//! opened by descriptor (no path), checked as a regular file with one
//! link, and validated by the queue format's reader. A file that fails
//! validation is moved to corrupt/ and logged; it never stops the scan.
//!
//! Trusts: nothing in the files.

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

use crate::ipc::msg::QueueEntry;
use crate::queue::{self, QueueEnvelope, QueueId};

use super::schedule::DEFERRED_SUBDIRS;
use super::store::{self, Dir, Problem, Store};

/// One queue directory's entries, and what went wrong on the way.
pub struct Scan {
    pub entries: Vec<QueueEntry>,
    pub moved_to_corrupt: Vec<String>,
    pub errors: Vec<String>,
}

/// List and validate the queue files of `dir`, at most `limit`; files
/// that are no queue files are moved to corrupt/.
pub fn scan(store: &Store, dir: Dir, limit: usize) -> Scan {
    scan_as(store, dir, limit, true)
}

/// The whole queue under `spool`, read directly and changing nothing (for
/// `mailq` while mta is not running): at most `limit` entries, and what
/// could not be read (a file that is no queue file is reported, left where
/// it is). Fails when the queue directories cannot be opened.
pub fn read_directly(spool: &std::path::Path, limit: usize) -> Result<(Vec<QueueEntry>, Vec<String>), String> {
    let mut fds = Vec::new();
    for name in crate::roles::QUEUE_DIRS {
        let path = spool.join(name);
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        fds.push(nix::fcntl::open(&path, flags, Mode::empty()).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    let store = Store::new(fds)?;
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for dir in [Dir::Incoming, Dir::Active, Dir::Deferred, Dir::Hold] {
        let s = scan_as(&store, dir, limit.saturating_sub(entries.len()), false);
        entries.extend(s.entries);
        problems.extend(s.errors);
    }
    Ok((entries, problems))
}

fn scan_as(store: &Store, dir: Dir, limit: usize, fix: bool) -> Scan {
    let mut out = Scan { entries: Vec::new(), moved_to_corrupt: Vec::new(), errors: Vec::new() };
    let (names, junk) = match names(store, dir) {
        Ok(n) => n,
        Err(e) => {
            out.errors.push(format!("listing {}: {e}", dir.name()));
            return out;
        }
    };
    for name in junk {
        if !fix {
            out.errors.push(format!("{}/{name}: not a queue file name", dir.name()));
            continue;
        }
        match store.to_corrupt(dir, &name) {
            Ok(to) => out
                .moved_to_corrupt
                .push(format!("{}/{name}: not a queue file name; moved to corrupt/{to}", dir.name())),
            Err(e) => out
                .errors
                .push(format!("{}/{name}: not a queue file name; cannot move it to corrupt/: {e}", dir.name())),
        }
    }
    for id in names {
        if out.entries.len() >= limit {
            break;
        }
        match read(store, dir, &id) {
            Ok(q) => out.entries.push(entry(dir, &q)),
            // Gone meanwhile, or not complete yet (a listing taken while
            // cleanup writes it).
            Err(Problem::Gone | Problem::Incomplete) => {}
            Err(p @ (Problem::Io(_) | Problem::Twin(_))) => out.errors.push(format!("{}/{id}: {p}", dir.name())),
            Err(Problem::Corrupt(why)) if !fix => {
                out.errors.push(format!("{}/{}: {why}", dir.name(), store::path(dir, &id)));
            }
            Err(Problem::Corrupt(why)) => {
                let name = store::path(dir, &id);
                match store.to_corrupt(dir, &name) {
                    Ok(to) => out.moved_to_corrupt.push(format!("{}/{name}: {why}; moved to corrupt/{to}", dir.name())),
                    Err(e) => out.errors.push(format!("{}/{name}: {why}; cannot move it to corrupt/: {e}", dir.name())),
                }
            }
        }
    }
    out
}

/// The queue IDs in `dir` (deferred/: in its hashed subfolders), sorted,
/// and the names there that are no queue ID (deferred/: at its top).
fn names(store: &Store, dir: Dir) -> std::io::Result<(Vec<QueueId>, Vec<String>)> {
    let (mut ids, junk) = store::ids(store.fd(dir), usize::MAX)?;
    if dir == Dir::Deferred {
        for sub in DEFERRED_SUBDIRS {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
            let fd = match openat(&store.deferred, sub, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            ids.extend(store::ids(&fd, usize::MAX)?.0);
        }
    }
    ids.sort();
    Ok((ids, junk))
}

/// Open and read one file's envelope.
pub fn read(store: &Store, dir: Dir, id: &QueueId) -> Result<QueueEnvelope, Problem> {
    let file = store.open(dir, id, false)?;
    store::read(&file, id)
}

/// A recipient's state by name.
pub fn state_name(s: queue::State) -> &'static str {
    match s {
        queue::State::Pending => "pending",
        queue::State::Done => "done",
        queue::State::Deferred => "deferred",
        queue::State::Bounced => "bounced",
    }
}

/// The listing entry of a message.
pub fn entry(dir: Dir, q: &QueueEnvelope) -> QueueEntry {
    QueueEntry {
        id: q.id.to_string(),
        queue: dir.name().to_string(),
        size: q.envelope.size,
        arrival: q.envelope.arrival.secs,
        sender: q.envelope.sender.clone(),
        recipients: q
            .recipients
            .iter()
            .map(|r| (r.address.clone(), state_name(r.status.state).to_string(), r.status.reason.clone()))
            .collect(),
    }
}

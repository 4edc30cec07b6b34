//! Reading the queue as it is on disk, for listings: every queue file is
//! opened by descriptor (no path), checked as a regular file with one
//! link, and validated by the queue format's reader. A file that fails
//! validation is moved to corrupt/ and logged; it never stops the scan.
//!
//! A listing is a [`Cursor`]: it holds one open directory stream at a
//! time and reads the queue a slice at a time ([`Cursor::advance`] within
//! a [`Budget`]), so that qmgr lists between the turns of its event loop
//! and deliveries go on meanwhile. It hands out the entries in parts of
//! bounded size, in the order incoming/, active/, deferred/ (its hashed
//! subfolders one after the other), hold/, and within a directory in the
//! order the kernel lists it: nothing holds the whole queue, or even the
//! names of one directory. A message moved between directories while a
//! listing runs may be listed twice or not at all, as with any listing
//! of a changing directory.
//!
//! qmgr's listings begin with the messages it holds in memory files (see
//! `memory`: they have no queue file yet), read from those files, named
//! when the listing starts and each skipped if it is no longer in memory
//! when the cursor reaches it (it has its file by then, listed from its
//! directory, or is gone); a message listed from memory is not listed
//! again from a directory.
//!
//! Trusts: nothing in the files.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::time::Instant;

use nix::dir::{Dir as NixDir, OwningIter};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::ipc::msg::QueueEntry;
use crate::queue::{self, QueueEnvelope, QueueId};

use super::schedule::DEFERRED_SUBDIRS;
use super::store::{self, Dir, Problem, Store};

/// Most entries in one part.
pub const PART_ENTRIES: usize = 500;
/// A part is sent once its entries' estimated encoding reaches this.
pub const PART_BYTES: usize = 64 * 1024;
/// Largest estimated encoding of one entry: recipients beyond it are
/// left out (and counted). With [`PART_BYTES`] this keeps every part far
/// below the channel's bound on a message.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// How much one call of [`Cursor::advance`] may do.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Directory entries read.
    pub names: usize,
    /// Queue files opened and read (or moved to corrupt/).
    pub files: usize,
    /// Stop after this, whatever is left.
    pub until: Option<Instant>,
}

impl Budget {
    /// Nothing is left of it.
    pub fn spent(&self) -> bool {
        self.names == 0 || self.files == 0 || self.until.is_some_and(|t| Instant::now() >= t)
    }
}

/// The messages held in memory files, by queue ID (qmgr's, see
/// `memory`).
pub trait InMemory {
    /// The memory file of message `id`, while it is in memory.
    fn file(&self, id: &QueueId) -> Option<&File>;
}

/// No message in memory (`mailq` reading the queue directly, tests).
pub struct NoMemory;

impl InMemory for NoMemory {
    fn file(&self, _id: &QueueId) -> Option<&File> {
        None
    }
}

/// A part of a listing.
#[derive(Debug, Default)]
pub struct Part {
    pub entries: Vec<QueueEntry>,
    /// The listing ends with this part.
    pub last: bool,
}

/// One directory to read: a queue directory, or a subfolder of deferred/.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Source {
    dir: Dir,
    /// A subfolder of deferred/; `None` for a directory's top.
    sub: Option<&'static str>,
}

impl Source {
    fn name(&self) -> String {
        match self.sub {
            Some(s) => format!("{}/{s}", self.dir.name()),
            None => self.dir.name().to_string(),
        }
    }
}

/// Where a listing is.
pub struct Cursor {
    /// Move what is no queue file to corrupt/ (qmgr), or only report it
    /// (mailq reading the queue itself).
    fix: bool,
    /// Messages in memory still to list (before the directories).
    memory: VecDeque<QueueId>,
    /// Messages listed from memory: not listed again from a directory.
    from_memory: HashSet<QueueId>,
    /// Directories still to read, the current one first.
    sources: VecDeque<Source>,
    /// The current directory's stream, once opened.
    reader: Option<OwningIter>,
    part: Vec<QueueEntry>,
    part_bytes: usize,
    /// Everything is read; the last part is still to be handed out.
    ended: bool,
    /// The last part was handed out.
    finished: bool,
    /// What went wrong on the way, and files moved to corrupt/, to log.
    problems: Vec<String>,
}

impl Cursor {
    /// A listing of the whole queue.
    pub fn new(fix: bool) -> Cursor {
        let mut sources = VecDeque::new();
        for dir in [Dir::Incoming, Dir::Active, Dir::Deferred] {
            sources.push_back(Source { dir, sub: None });
        }
        for sub in DEFERRED_SUBDIRS {
            sources.push_back(Source { dir: Dir::Deferred, sub: Some(sub) });
        }
        sources.push_back(Source { dir: Dir::Hold, sub: None });
        Cursor {
            fix,
            memory: VecDeque::new(),
            from_memory: HashSet::new(),
            sources,
            reader: None,
            part: Vec::new(),
            part_bytes: 0,
            ended: false,
            finished: false,
            problems: Vec::new(),
        }
    }

    /// The listing begins with these messages in memory (see
    /// [`InMemory`]).
    pub fn with_memory(mut self, ids: Vec<QueueId>) -> Cursor {
        self.memory = ids.into();
        self
    }

    /// The last part was handed out.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// What went wrong since the last call (to log or show).
    pub fn take_problems(&mut self) -> Vec<String> {
        std::mem::take(&mut self.problems)
    }

    /// Read on within `budget`: the next part once it is full, or the last
    /// one at the end; `None` when the budget ran out first (call again).
    /// After the last part, always `None`.
    pub fn advance(&mut self, store: &Store, budget: &mut Budget) -> Option<Part> {
        self.advance_with(store, budget, &NoMemory)
    }

    /// The same, the messages in memory read from `memory`.
    pub fn advance_with(&mut self, store: &Store, budget: &mut Budget, memory: &dyn InMemory) -> Option<Part> {
        loop {
            if self.finished {
                return None;
            }
            if self.part.len() >= PART_ENTRIES || self.part_bytes >= PART_BYTES {
                self.part_bytes = 0;
                return Some(Part { entries: std::mem::take(&mut self.part), last: false });
            }
            if self.ended {
                self.finished = true;
                self.part_bytes = 0;
                return Some(Part { entries: std::mem::take(&mut self.part), last: true });
            }
            if budget.spent() {
                return None;
            }
            if let Some(id) = self.memory.pop_front() {
                self.in_memory(memory, id, budget);
                continue;
            }
            self.step(store, budget);
        }
    }

    /// One message named as in memory: listed if it still is.
    fn in_memory(&mut self, memory: &dyn InMemory, id: QueueId, budget: &mut Budget) {
        let Some(file) = memory.file(&id) else { return };
        budget.files = budget.files.saturating_sub(1);
        match store::read(file, &id) {
            Ok(q) => {
                let (e, bytes) = bounded_entry(Dir::Incoming, &q);
                self.part.push(e);
                self.part_bytes += bytes;
                self.from_memory.insert(id);
            }
            // Not expected of what cleanup sealed: said, and the message
            // left to its delivery.
            Err(p) => self.problems.push(format!("{id} (in memory): {p}")),
        }
    }

    /// One directory entry (opening the next directory when one ends).
    fn step(&mut self, store: &Store, budget: &mut Budget) {
        let Some(&source) = self.sources.front() else {
            self.ended = true;
            return;
        };
        let opened = || open(store, source.dir, source.sub);
        let Some(name) =
            next_name(&mut self.reader, &mut self.sources, &mut self.problems, budget, &source.name(), opened)
        else {
            return;
        };
        let Ok(name) = String::from_utf8(name) else {
            self.problems.push(format!("{}: a name that is not UTF-8", source.name()));
            return;
        };
        match (QueueId::parse(&name), source.sub) {
            // deferred/ holds its subfolders, and queue files only in them
            // (one at its top is never read, by delivery either).
            (Some(_), None) if source.dir == Dir::Deferred => {}
            (None, None) if source.dir == Dir::Deferred && DEFERRED_SUBDIRS.contains(&name.as_str()) => {}
            (Some(id), _) if self.from_memory.contains(&id) => {}
            (Some(id), _) => {
                budget.files = budget.files.saturating_sub(1);
                self.file(store, source.dir, &id);
            }
            // What else a subfolder of deferred/ holds is left alone.
            (None, Some(_)) => {}
            (None, None) => {
                budget.files = budget.files.saturating_sub(1);
                self.junk(store, source, &name);
            }
        }
    }

    /// A name that is no queue ID.
    fn junk(&mut self, store: &Store, source: Source, name: &str) {
        let shown = format!("{}/{name}", source.name());
        if !self.fix {
            self.problems.push(format!("{shown}: not a queue file name"));
            return;
        }
        match store.to_corrupt(source.dir, name) {
            Ok(to) => self.problems.push(format!("{shown}: not a queue file name; moved to corrupt/{to}")),
            Err(e) => self.problems.push(format!("{shown}: not a queue file name; cannot move it to corrupt/: {e}")),
        }
    }

    /// One queue file.
    fn file(&mut self, store: &Store, dir: Dir, id: &QueueId) {
        match read(store, dir, id) {
            Ok(q) => {
                let (e, bytes) = bounded_entry(dir, &q);
                self.part.push(e);
                self.part_bytes += bytes;
            }
            // Gone meanwhile (delivered, moved, deleted), or not complete
            // yet (cleanup is writing it).
            Err(Problem::Gone | Problem::Incomplete) => {}
            Err(p @ (Problem::Io(_) | Problem::Twin(_))) => self.problems.push(format!("{}/{id}: {p}", dir.name())),
            Err(Problem::Corrupt(why)) => {
                let name = store::path(dir, id);
                if !self.fix {
                    self.problems.push(format!("{}/{name}: {why}", dir.name()));
                    return;
                }
                match store.to_corrupt(dir, &name) {
                    Ok(to) => self.problems.push(format!("{}/{name}: {why}; moved to corrupt/{to}", dir.name())),
                    Err(e) => {
                        self.problems.push(format!("{}/{name}: {why}; cannot move it to corrupt/: {e}", dir.name()))
                    }
                }
            }
        }
    }
}

/// A stream of the names of `dir` (`sub`: of that subfolder of it);
/// `None` for a subfolder that does not exist (of deferred/, not made
/// yet).
pub(super) fn open(store: &Store, dir: Dir, sub: Option<&str>) -> nix::Result<Option<OwningIter>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let d = match sub {
        None => NixDir::openat(store.fd(dir), ".", flags, Mode::empty())?,
        Some(sub) => match NixDir::openat(store.fd(dir), sub, flags | OFlag::O_NOFOLLOW, Mode::empty()) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        },
    };
    Ok(Some(d.into_iter()))
}

/// One step of a cursor over the directories in `sources`, read a name
/// at a time (the listing's and the deferred/ rescan's): the next name
/// of the front directory (`reader`, opened with `open` when none is),
/// its bytes, counted in `budget`. None for this step when the directory
/// does not exist or ends (it is then taken off `sources`), cannot be
/// read (also noted in `problems` as `listing WHAT: error`), or the name
/// starts with a dot (`.` and `..`, and cleanup's files being written).
pub(super) fn next_name<S>(
    reader: &mut Option<OwningIter>,
    sources: &mut VecDeque<S>,
    problems: &mut Vec<String>,
    budget: &mut Budget,
    what: &str,
    open: impl FnOnce() -> nix::Result<Option<OwningIter>>,
) -> Option<Vec<u8>> {
    if reader.is_none() {
        match open() {
            Ok(Some(r)) => *reader = Some(r),
            Ok(None) => {
                sources.pop_front();
                return None;
            }
            Err(e) => {
                problems.push(format!("listing {what}: {e}"));
                sources.pop_front();
                return None;
            }
        }
    }
    let next = reader.as_mut().and_then(Iterator::next);
    budget.names = budget.names.saturating_sub(1);
    let name = match next {
        None => {
            *reader = None;
            sources.pop_front();
            return None;
        }
        Some(Err(e)) => {
            problems.push(format!("listing {what}: {e}"));
            *reader = None;
            sources.pop_front();
            return None;
        }
        Some(Ok(entry)) => entry.file_name().to_bytes().to_vec(),
    };
    if name.starts_with(b".") {
        return None;
    }
    Some(name)
}

/// The queue directories under `spool`, opened to be read directly (for
/// `mailq` while mta is not running).
pub fn open_spool(spool: &std::path::Path) -> Result<Store, String> {
    let mut fds = Vec::new();
    for name in crate::roles::QUEUE_DIRS {
        let path = spool.join(name);
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        fds.push(nix::fcntl::open(&path, flags, Mode::empty()).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    Store::new(fds)
}

/// The whole queue, read directly and changing nothing (for `mailq`
/// while mta is not running): each entry handed to `entry` as it is read
/// (it returns false to stop), and what could not be read (a file that is
/// no queue file is reported, left where it is) to `problem`.
pub fn read_directly(store: &Store, entry: &mut dyn FnMut(&QueueEntry) -> bool, problem: &mut dyn FnMut(&str)) {
    let mut cursor = Cursor::new(false);
    loop {
        let mut budget = Budget { names: usize::MAX, files: usize::MAX, until: None };
        let part = cursor.advance(store, &mut budget);
        for p in cursor.take_problems() {
            problem(&p);
        }
        let Some(part) = part else { continue };
        for e in &part.entries {
            if !entry(e) {
                return;
            }
        }
        if part.last {
            return;
        }
    }
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

/// The listing entry of a message without its recipients.
pub fn heading(dir: Dir, q: &QueueEnvelope) -> QueueEntry {
    QueueEntry {
        id: q.id.to_string(),
        queue: dir.name().to_string(),
        size: q.envelope.size,
        arrival: q.envelope.arrival.secs,
        sender: q.envelope.sender.clone(),
        recipients: Vec::new(),
        omitted: 0,
    }
}

/// The encoding of a string, about (a length and the bytes).
fn str_bytes(s: &str) -> usize {
    s.len() + 3
}

/// The listing entry of a message within [`MAX_ENTRY_BYTES`]: the
/// recipients that fit, in order, and how many were left out; with the
/// estimated size of its encoding.
pub fn bounded_entry(dir: Dir, q: &QueueEnvelope) -> (QueueEntry, usize) {
    let mut e = heading(dir, q);
    let mut bytes = str_bytes(&e.id) + str_bytes(&e.queue) + str_bytes(&e.sender) + 32;
    for (i, r) in q.recipients.iter().enumerate() {
        let state = state_name(r.status.state);
        let n = str_bytes(&r.address) + str_bytes(state) + str_bytes(&r.status.reason);
        if bytes + n > MAX_ENTRY_BYTES {
            e.omitted = u32::try_from(q.recipients.len() - i).unwrap_or(u32::MAX);
            break;
        }
        bytes += n;
        e.recipients.push((r.address.clone(), state.to_string(), r.status.reason.clone()));
    }
    (e, bytes)
}

#[cfg(test)]
#[path = "scan_tests.rs"]
pub(crate) mod tests;

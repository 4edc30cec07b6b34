//! The intake journal: cleanup's commit point, with group commit.
//!
//! [`Journal::append`] encodes a message into a memory buffer (no system
//! call); [`Journal::commit`] writes everything appended since the last
//! commit with one `pwrite` (after the zeros ahead of it, when it has run
//! past them) and makes it durable with one `fdatasync`, and
//! returns the tickets whose clients may now hear 250. One flush serves
//! every message that arrived while the previous flush ran: the caller
//! appends all it has read, then commits.
//!
//! After the 250s are out, [`Journal::materialize`] writes each committed
//! message as its own queue file in incoming/ (created unreadable under
//! its final name, written, then made readable: [`super::disk::publish`]),
//! without syncing it. A journal segment is retired (unlinked)
//! only once every message in it is materialised and the queue files are
//! on stable storage (`syncfs`, or an `fsync` of each file, then an
//! `fsync` of incoming/). Until then the segment is the durable copy, and
//! [`Journal::open`] writes again whatever a crash lost (see `recover.rs`
//! and `doc/queue-format.md`).
//!
//! Segments are named `IIIIIIII-SSSSSSSSSSSSSSSS.jnl` (instance and
//! sequence number in hex), so each cleanup instance has its own.
//!
//! Where it pays ([`ZeroAhead`]), a segment is extended with zeros ahead of
//! its records, so that a commit overwrites blocks the file already has:
//! its `fdatasync` then writes data only, not a new size and block map (on
//! ext4 and XFS, no metadata journal commit per batch). Recovery takes an
//! all-zero tail after the last record for the segment's clean end.
//!
//! Each record carries the number of its commit in the segment and marks
//! the last record of a commit (format version 2), so that recovery can
//! tell damage inside the last commit, which a crash during its flush can
//! leave (its pages reach the disk in any order) and which no client was
//! told was safe, from damage to a commit that was acknowledged.
//!
//! Trusts: the directory descriptors it is given; the journal's own
//! records are validated on recovery like any other file.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use super::Error;
use super::disk::{self, Unsynced};
use super::id::{LEN as ID_LEN, MAX_INSTANCE, QueueId};
use super::progress::{self, BootId, Progress};
use super::recover::{self, Recovery};
use super::types::QueueFile;

/// First bytes of a segment.
pub const SEGMENT_MAGIC: &[u8; 4] = b"MTJS";
/// First bytes of a journal record.
pub const RECORD_MAGIC: &[u8; 4] = b"MTAJ";
/// The journal format version written (recovery reads 1 and 2).
pub const JOURNAL_VERSION: u16 = 2;
/// Segment header: magic, version, reserved, instance, salt, CRC.
pub const SEGMENT_HEADER: usize = 24;
/// Record header: magic, length, queue ID, commit number, flags, CRC.
pub const RECORD_HEADER: usize = 8 + ID_LEN + 4 + 4 + 4;
/// Record header of a version 1 segment: magic, length, queue ID, CRC.
pub const RECORD_HEADER_V1: usize = 8 + ID_LEN + 4;
/// Where a record header holds its commit number, flags and CRC.
pub(crate) const COMMIT_AT: usize = 8 + ID_LEN;
pub(crate) const FLAGS_AT: usize = COMMIT_AT + 4;
pub(crate) const CRC_AT: usize = FLAGS_AT + 4;
const _: () = assert!(CRC_AT + 4 == RECORD_HEADER);
/// Record flag: the last record of its commit.
pub const LAST_OF_COMMIT: u32 = 1;
/// Largest queue file one record carries.
pub const MAX_RECORD: usize = u32::MAX as usize;
/// Pause after a failed retirement (a full disk, an I/O error).
const RETIRE_RETRY: Duration = Duration::from_secs(1);
/// Pause after a queue file could not be written for a reason of the
/// disk's (full, read-only, an I/O error) or the process's (no descriptor
/// or memory to spare): materialisation waits this long, and the file is
/// the first one tried again.
const MATERIALIZE_RETRY: Duration = Duration::from_secs(1);
/// How often the queue files that could not be written for a reason of
/// their own (something in the way that cannot be removed) are tried
/// again; the others are written meanwhile.
const UNWRITTEN_RETRY: Duration = Duration::from_secs(5);
/// The same once a sync of queue files has failed (see [`Unsynced`]).
const RETIRE_STUCK: Duration = Duration::from_secs(300);
/// Zeros written ahead of the records at a time: as much as the segment
/// already holds, within these bounds (so the first extensions of a
/// segment are small and a later one costs one flush of at most 1 MiB).
const ZERO_AHEAD_MIN: u64 = 64 << 10;
const ZERO_AHEAD_MAX: u64 = 1 << 20;
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Whether segments are extended with zeros ahead of their records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroAhead {
    /// Where the file system overwrites written blocks in place, so that
    /// a commit into them changes no metadata: Linux's ext2/3/4 and XFS.
    /// Not on copy-on-write file systems (ZFS, Btrfs), where every write
    /// allocates anyway and the zeros would only double the writing, nor
    /// where it has not been measured (FreeBSD's and OpenBSD's UFS).
    Auto,
    Always,
    Never,
}

impl ZeroAhead {
    fn applies(self, dir: BorrowedFd<'_>) -> bool {
        match self {
            ZeroAhead::Always => true,
            ZeroAhead::Never => false,
            ZeroAhead::Auto => overwrites_in_place(dir),
        }
    }
}

#[cfg(target_os = "linux")]
fn overwrites_in_place(dir: BorrowedFd<'_>) -> bool {
    use nix::sys::statfs::{EXT4_SUPER_MAGIC, FsType, fstatfs};
    const XFS_SUPER_MAGIC: FsType = FsType(0x5846_5342);
    // (ext2 and ext3 have ext4's magic number.)
    matches!(fstatfs(dir).map(|s| s.filesystem_type()), Ok(EXT4_SUPER_MAGIC | XFS_SUPER_MAGIC))
}

#[cfg(not(target_os = "linux"))]
fn overwrites_in_place(_dir: BorrowedFd<'_>) -> bool {
    false
}

/// Tuning of the journal.
#[derive(Clone, Copy, Debug)]
pub struct JournalOptions {
    /// Start a new segment once the active one has reached this size.
    pub segment_size: u64,
    /// Retire the active segment once all of it is materialised and its
    /// first message is this old. A crash re-queues the messages of unretired segments that
    /// are no longer in the queue (delivered meanwhile): this bounds that
    /// window.
    pub retire_after: Duration,
    /// Most bytes held in memory for messages appended or committed but
    /// not yet materialised; [`Journal::append`] refuses more (a
    /// temporary failure) until materialisation catches up.
    pub max_backlog: usize,
    /// Whether segments are extended with zeros ahead of their records.
    pub zero_ahead: ZeroAhead,
    /// This boot of the machine (`sandbox::boot_id`): with it, the
    /// journal notes how far its queue files are written, and a recovery
    /// in the same boot does not write again those gone meanwhile (see
    /// `progress.rs`). Without it, recovery writes again every message it
    /// does not find.
    pub boot: Option<BootId>,
    /// The session of the master that started this process
    /// (`ChildConfig::session`): the note is trusted only under the same
    /// master.
    pub session: u64,
}

impl Default for JournalOptions {
    fn default() -> JournalOptions {
        JournalOptions {
            segment_size: 64 << 20,
            retire_after: Duration::from_secs(1),
            max_backlog: 256 << 20,
            zero_ahead: ZeroAhead::Auto,
            boot: None,
            session: 0,
        }
    }
}

/// The directories the journal works in, by descriptor.
#[derive(Clone, Copy, Debug)]
pub struct JournalDirs<'a> {
    /// Where the segments live (read, write, create, unlink, fsync).
    pub journal: BorrowedFd<'a>,
    /// Where queue files are materialised.
    pub incoming: BorrowedFd<'a>,
    /// The other queue directories a message may have moved to (active,
    /// deferred, hold), each with its name for the log: recovery looks
    /// there before writing a message again (lookup and read rights are
    /// enough; a copy there that is not valid is left for qmgr).
    pub elsewhere: &'a [(&'a str, BorrowedFd<'a>)],
}

/// A committed message whose queue file could not be written for a
/// reason of its own (something in its place that cannot be removed),
/// by recovery or by [`Journal::materialize_some`]: a copy of its queue
/// file, kept and tried again every [`UNWRITTEN_RETRY`] while the others
/// are written. Its segment is not retired meanwhile, and the progress
/// note stays before it.
pub(crate) struct Unwritten {
    pub id: QueueId,
    /// None: not in memory (an offered message whose segment could not be
    /// read back when qmgr went away), read from its segment, which stays
    /// open, at each try.
    pub payload: Option<Vec<u8>>,
    pub segment: u64,
    /// Where its record starts and ends in its segment.
    pub start: u64,
    pub end: u64,
}

impl Unwritten {
    /// The memory it holds.
    pub(crate) fn size(&self) -> usize {
        self.payload.as_ref().map_or(0, Vec::len)
    }
}

/// What becomes of a sealed segment once every message in it is written
/// out and durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SegmentFate {
    Remove,
    /// Damaged (recovery found corruption in it): kept as `*.jnl.corrupt`.
    KeepAsCorrupt,
    /// Kept as it is until the next boot (see `progress.rs`).
    Keep,
}

/// A message appended to the journal, durable once returned by
/// [`Journal::commit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket {
    pub id: QueueId,
}

/// A commit that failed: none of `failed` is durable (tell their clients
/// 451 4.3.0). The journal stays usable.
#[derive(Debug)]
pub struct CommitError {
    pub failed: Vec<Ticket>,
    pub error: Error,
}

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "journal commit of {} messages failed: {}", self.failed.len(), self.error)
    }
}

impl std::error::Error for CommitError {}

/// A message in a buffer: its ticket, where its record starts, its length,
/// and (once committed) the segment it went to.
struct Entry {
    ticket: Ticket,
    start: usize,
    len: usize,
    segment: u64,
    /// Where the record ends in its segment (once committed).
    seg_end: u64,
}

struct Segment {
    seq: u64,
    file: File,
    /// Where the records end.
    len: u64,
    /// Where the zeros written ahead of the records end (at least `len`;
    /// what is between is zero).
    zeroed: u64,
    /// When the first record was committed to it.
    first: Option<Instant>,
    /// The last commit number used in it: by a commit made durable, or
    /// by a failed one whose records could not be removed (the next is
    /// `commits + 1`).
    commits: u32,
}

/// A segment no longer written: retired when `outstanding` reaches 0.
struct Sealed {
    seq: u64,
    outstanding: usize,
    fate: SegmentFate,
    /// The segment, to read offered messages back from, open until it
    /// retires (not for the segments recovery holds, which had none).
    file: Option<File>,
}

pub(crate) fn segment_name(instance: u32, seq: u64) -> String {
    format!("{instance:08x}-{seq:016x}.jnl")
}

/// The CRC of a record: of the salt, its `header` (of either version,
/// whole) but the CRC itself, and its payload.
pub(crate) fn record_crc(salt: u64, header: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_le_bytes());
    h.update(&header[..header.len().saturating_sub(4)]);
    h.update(payload);
    h.finalize()
}

pub(crate) fn segment_header(instance: u32, salt: u64) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[0..4].copy_from_slice(SEGMENT_MAGIC);
    h[4..6].copy_from_slice(&JOURNAL_VERSION.to_le_bytes());
    h[8..12].copy_from_slice(&instance.to_le_bytes());
    h[12..20].copy_from_slice(&salt.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

impl Segment {
    /// Create segment `seq` with its header, durable (file and directory
    /// entry) before any record goes in.
    fn create(dir: BorrowedFd<'_>, instance: u32, seq: u64, salt: u64) -> Result<Segment, Error> {
        let name = segment_name(instance, seq);
        let file = File::from(nix::fcntl::openat(
            dir,
            name.as_str(),
            nix::fcntl::OFlag::O_RDWR
                | nix::fcntl::OFlag::O_CREAT
                | nix::fcntl::OFlag::O_EXCL
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )?);
        let r = file
            .write_all_at(&segment_header(instance, salt), 0)
            .and_then(|()| file.sync_all())
            .and_then(|()| nix::unistd::fsync(dir).map_err(Into::into));
        if let Err(e) = r {
            let _ = disk::remove(dir, &name);
            return Err(e.into());
        }
        Ok(Segment { seq, file, len: SEGMENT_HEADER as u64, zeroed: SEGMENT_HEADER as u64, first: None, commits: 0 })
    }

    /// Extend the zeros past `end`, by as much as the segment holds
    /// (within bounds), but not past `limit` unless `end` is. Not synced
    /// here: the commit's flush carries it. A failure (a full disk) is
    /// left to the records' own write, which then appends as it would
    /// without zeros; what was zeroed counts.
    fn zero_ahead(&mut self, end: u64, limit: u64) {
        let step = self.zeroed.clamp(ZERO_AHEAD_MIN, ZERO_AHEAD_MAX);
        let target = end.saturating_add(step).min(limit.max(end));
        let (reached, r) = zero_fill(&self.file, self.zeroed, target);
        self.zeroed = reached;
        // The zeros past the records took the last free space: give it
        // back to the queue files that are to be written from them.
        if r.is_err() && self.zeroed > end && self.file.set_len(end).is_ok() {
            self.zeroed = end;
        }
    }
}

/// Write zeros over `[from, to)` of `file`; how far it got, and the error
/// that stopped it short.
fn zero_fill(file: &File, from: u64, to: u64) -> (u64, std::io::Result<()>) {
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        match file.write_at(&ZEROS[..n], at) {
            Ok(0) => return (at, Err(std::io::ErrorKind::WriteZero.into())),
            Ok(k) => at += k as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (at, Err(e)),
        }
    }
    (at, Ok(()))
}

/// Errors of the disk's or the process's rather than of one file: a full
/// or read-only disk, an I/O error, no descriptor or memory to spare.
fn disk_wide(e: &io::Error) -> bool {
    use nix::libc::{EDQUOT, EIO, EMFILE, ENFILE, ENOMEM, ENOSPC, EROFS};
    matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT | EROFS | EIO | EMFILE | ENFILE | ENOMEM))
        || e.kind() == io::ErrorKind::OutOfMemory
}

/// Write `payload` as the queue file of `id` in `incoming` (see
/// [`disk::publish`]). Something already under its name is looked at: a
/// valid copy of this very message is taken as written (it may carry
/// statuses since); anything else (our own leftover of mode 0200 from a
/// write that failed and whose removal failed too, a damaged copy) is
/// removed, and the file written again. A valid queue file of another
/// message under the same ID (IDs are unique by their time and a random
/// counter, not by construction: see `id.rs`) is left alone. When the file
/// cannot be written, the error says why.
fn write_out(incoming: BorrowedFd<'_>, id: &QueueId, payload: &[u8], unsynced: &mut Unsynced) -> io::Result<()> {
    match disk::publish(incoming, id.as_str(), payload, unsynced) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EEXIST) => {}
        r => return r,
    }
    match recover::examine(incoming, id.as_str(), id) {
        Ok(recover::Copy::Valid(f)) if same_message(&f, payload) => {
            unsynced.add(f);
            return Ok(());
        }
        Ok(recover::Copy::Valid(_)) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "another message with the same queue ID is in its place",
            ));
        }
        Ok(recover::Copy::Absent) => {}
        Ok(recover::Copy::Bad(why)) => {
            if let Err(e) = disk::remove(incoming, id.as_str()) {
                return Err(io::Error::new(e.kind(), format!("a file in its place ({why}) cannot be removed: {e}")));
            }
        }
        Err(Error::Io(e)) => return Err(e),
        Err(e) => return Err(io::Error::other(e.to_string())),
    }
    disk::publish(incoming, id.as_str(), payload, unsynced)
}

/// Whether `file`, a valid queue file, holds the message of `payload`
/// (its statuses aside, which qmgr writes): the same envelope and
/// recipients, and content of the same length and CRC.
pub(crate) fn same_message(file: &File, payload: &[u8]) -> bool {
    let (Ok((have, _)), Ok(want)) = (super::file::read_checked(file, 64 << 10), QueueFile::decode(payload)) else {
        return false;
    };
    let range = have.content_range();
    let addresses = |r: &super::Recipient| (r.address.clone(), r.orcpt.clone(), r.notify);
    have.id == want.id
        && have.envelope == want.envelope
        && have.recipients.iter().map(addresses).eq(want.recipients.iter().map(addresses))
        && range.len == want.content.len() as u64
        && range.crc == crc32fast::hash(&want.content)
}

/// The intake journal of one cleanup instance.
pub struct Journal {
    dir: OwnedFd,
    incoming: OwnedFd,
    instance: u32,
    salt: u64,
    options: JournalOptions,
    /// Segments get zeros ahead of their records ([`ZeroAhead`]).
    zero_ahead: bool,
    active: Segment,
    /// Committed records in the active segment not yet materialised.
    active_outstanding: usize,
    sealed: VecDeque<Sealed>,
    /// Appended, not committed.
    buf: Vec<u8>,
    appended: Vec<Entry>,
    /// Committed, not materialised (from `done_from` on; what is before
    /// it is written and is dropped when it is worth moving the rest).
    done: Vec<u8>,
    done_from: usize,
    todo: VecDeque<Entry>,
    /// Committed messages that could not be written out, in journal
    /// order (see [`Unwritten`]), and the bytes they hold.
    unwritten: VecDeque<Unwritten>,
    unwritten_bytes: usize,
    /// When to try the unwritten ones again.
    unwritten_retry: Option<Instant>,
    /// Materialisation waits until then (a full disk: see
    /// [`MATERIALIZE_RETRY`]).
    paused_until: Option<Instant>,
    /// The end of the furthest record written out (segment, offset): with
    /// the first unwritten one, what the progress note says.
    written: (u64, u64),
    unsynced: Unsynced,
    /// A failed commit could not be rolled back: start a new segment.
    broken: bool,
    /// Retirement failed: not before this.
    retry_at: Option<Instant>,
    /// The progress note, when the boot is known (see `progress.rs`).
    progress: Option<(progress::Writer, Progress)>,
    /// Committed messages offered to qmgr in memory files and not yet
    /// settled, by where their records start (segment, offset): the
    /// queue ID and where the record ends. Until qmgr says it delivered
    /// one or wrote its file, it counts as not written out.
    offered: BTreeMap<(u64, u64), (QueueId, u64)>,
    offered_at: HashMap<QueueId, (u64, u64)>,
}

impl Journal {
    /// Open the journal of cleanup `instance` (at most
    /// [`MAX_INSTANCE`](super::MAX_INSTANCE); no two live processes may
    /// share one). Recovers what a previous process of this instance left:
    /// every committed message not found valid in the queue is written to
    /// incoming/ again and made durable, then the old segments are retired
    /// (a damaged one is kept as `*.jnl.corrupt`). Starts a new segment.
    pub fn open(dirs: &JournalDirs<'_>, instance: u32, options: JournalOptions) -> Result<(Journal, Recovery), Error> {
        if instance > MAX_INSTANCE {
            return Err(Error::Invalid(format!("instance number {instance} over {MAX_INSTANCE}")));
        }
        let dir = dirs.journal.try_clone_to_owned()?;
        let incoming = dirs.incoming.try_clone_to_owned()?;
        let mut unsynced = Unsynced::default();
        let (recovery, recovered) = recover::recover(dirs, instance, &mut unsynced, options.boot, options.session)?;
        let recover::Recovered { next: next_seq, kept_through, unwritten, held } = recovered;
        let mut h = RandomState::new().build_hasher();
        h.write_u64(next_seq);
        let salt = h.finish();
        let active = Segment::create(dir.as_fd(), instance, next_seq, salt)?;
        let zero_ahead = options.zero_ahead.applies(dir.as_fd());
        // Everything before the new segment is accounted for now, but for
        // the messages recovery could not write. Without a note, recovery
        // writes again what it does not find, as it always may.
        let unwritten = VecDeque::from(unwritten);
        let written = (next_seq, 0);
        let (seq, end) = unwritten.front().map_or(written, |u| written.min((u.segment, u.start)));
        let progress = options.boot.and_then(|boot| {
            let p = Progress { boot, session: options.session, seq, end, kept_through };
            let w = progress::Writer::open(dir.as_fd(), instance).ok()?;
            w.write(&p).ok()?;
            Some((w, p))
        });
        if progress.is_none() {
            // A note that cannot be kept true goes (sequence numbers
            // already stay above it while it is there).
            let _ = progress::remove(dir.as_fd(), instance);
        }
        let journal = Journal {
            dir,
            incoming,
            instance,
            salt,
            options,
            zero_ahead,
            active,
            active_outstanding: 0,
            sealed: held
                .into_iter()
                .map(|(seq, outstanding, fate)| Sealed { seq, outstanding, fate, file: None })
                .collect(),
            buf: Vec::with_capacity(1 << 20),
            appended: Vec::new(),
            done: Vec::with_capacity(1 << 20),
            done_from: 0,
            todo: VecDeque::new(),
            unwritten_bytes: unwritten.iter().map(Unwritten::size).sum(),
            unwritten_retry: (!unwritten.is_empty()).then(Instant::now),
            unwritten,
            paused_until: None,
            written,
            unsynced,
            broken: false,
            retry_at: None,
            progress,
            offered: BTreeMap::new(),
            offered_at: HashMap::new(),
        };
        Ok((journal, recovery))
    }

    /// Buffer a message for the next commit (encoding it; no system
    /// call). An [`Error::Invalid`] message is not buffered, nor any while
    /// the backlog is over [`JournalOptions::max_backlog`] ([`Error::Io`]).
    pub fn append(&mut self, file: &QueueFile) -> Result<Ticket, Error> {
        if self.buf.len() + self.backlog() + self.unwritten_bytes >= self.options.max_backlog {
            let max = self.options.max_backlog;
            return Err(Error::Io(std::io::Error::other(format!(
                "{max} bytes wait to be written as queue files: check incoming/ and its disk"
            ))));
        }
        let start = self.buf.len();
        self.buf.resize(start + RECORD_HEADER, 0);
        if let Err(e) = file.encode_into(&mut self.buf) {
            self.buf.truncate(start);
            return Err(e);
        }
        let len = self.buf.len() - start;
        let plen = len - RECORD_HEADER;
        if plen > MAX_RECORD {
            self.buf.truncate(start);
            return Err(Error::Invalid(format!("queue file of {plen} bytes, over the journal's {MAX_RECORD}")));
        }
        // The commit number, flags and CRC are filled in by the commit.
        let head = &mut self.buf[start..start + RECORD_HEADER];
        head[0..4].copy_from_slice(RECORD_MAGIC);
        head[4..8].copy_from_slice(&(plen as u32).to_le_bytes());
        head[8..8 + ID_LEN].copy_from_slice(file.id.as_bytes());
        let ticket = Ticket { id: file.id };
        self.appended.push(Entry { ticket, start, len, segment: 0, seg_end: 0 });
        Ok(ticket)
    }

    /// Messages appended and not yet committed.
    pub fn uncommitted(&self) -> usize {
        self.appended.len()
    }

    /// Messages committed and not yet materialised (not counting those
    /// that could not be written: [`Journal::unwritten`]).
    pub fn unmaterialised(&self) -> usize {
        self.todo.len()
    }

    /// Committed messages whose queue files could not be written for a
    /// reason of their own, tried again now and then.
    pub fn unwritten(&self) -> usize {
        self.unwritten.len()
    }

    /// When [`Journal::materialize_some`] has work: now while messages
    /// wait to be written out (unless a full disk or the like paused
    /// that), otherwise when a segment is due to retire or an unwritten
    /// message to be tried again; `None` when nothing waits.
    pub fn work_due(&self) -> Option<Duration> {
        let now = Instant::now();
        let until = |t: Option<Instant>| t.map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        let todo = (!self.todo.is_empty()).then(|| until(self.paused_until));
        let unwritten = (!self.unwritten.is_empty()).then(|| until(self.unwritten_retry));
        [todo, unwritten, self.retire_due()].into_iter().flatten().min()
    }

    /// Bytes committed and not yet materialised.
    pub fn backlog(&self) -> usize {
        self.done.len() - self.done_from
    }

    /// Bytes held for materialisation, written or not (tests).
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.done.len()
    }

    /// Make every later sync of queue files fail (tests).
    #[cfg(test)]
    pub(crate) fn fail_syncs(&mut self) {
        self.unsynced.fail_for_test();
    }

    /// Try the unwritten messages again at the next call (tests).
    #[cfg(test)]
    pub(crate) fn retry_unwritten_now(&mut self) {
        self.unwritten_retry = None;
    }

    /// The last commit number used in the active segment (tests).
    #[cfg(test)]
    pub(crate) fn set_commits(&mut self, n: u32) {
        self.active.commits = n;
    }

    /// When [`Journal::materialize`] has a segment to retire even with
    /// nothing left to materialise: `None` if no segment is waiting,
    /// otherwise how long until one is (zero: now). Call `materialize`
    /// then, also when idle, so that a crash re-queues as few delivered
    /// messages as possible.
    pub fn retire_due(&self) -> Option<Duration> {
        let unwritten = self.unwritten.iter().filter(|u| u.segment == self.active.seq).count();
        let due = if self.sealed.iter().any(|s| s.outstanding == 0) {
            Duration::ZERO
        } else {
            match self.active.first {
                Some(t) if self.active_outstanding == unwritten => {
                    self.options.retire_after.saturating_sub(t.elapsed())
                }
                _ => return None,
            }
        };
        let retry = self.retry_at.map_or(Duration::ZERO, |t| t.saturating_duration_since(Instant::now()));
        Some(due.max(retry))
    }

    /// Write everything appended since the last commit (one `pwrite`, and
    /// when it runs past the zeros ahead, up to 16 more of zeros) and
    /// make it durable (one `fdatasync`). Returns the tickets now durable,
    /// in append order. On error none of them is, and the journal is as
    /// before the appends (a partial write is truncated away, with the
    /// zeros ahead).
    pub fn commit(&mut self) -> Result<Vec<Ticket>, CommitError> {
        if self.appended.is_empty() {
            return Ok(Vec::new());
        }
        let full = self.active.len > SEGMENT_HEADER as u64
            && (self.active.len.saturating_add(self.buf.len() as u64) > self.options.segment_size
                || self.active.commits == u32::MAX);
        if self.broken || full {
            // A rotation that fails (full disk?) is not fatal: the batch
            // goes where the last good commit ended.
            let _ = self.rotate();
        }
        // Each record gets the commit's number in this segment and the
        // last one the mark that ends the commit; then its CRC. Numbers
        // are never shared: a failed commit's is used again only when
        // its records are gone, and a segment with no number left takes
        // no more.
        let Some(number) = self.active.commits.checked_add(1) else {
            let entries = std::mem::take(&mut self.appended);
            self.buf.clear();
            let failed = entries.iter().map(|e| e.ticket).collect();
            let error =
                std::io::Error::other("the journal segment is out of commit numbers and no new one can be started");
            return Err(CommitError { failed, error: Error::Io(error) });
        };
        let last = self.appended.len() - 1;
        for (k, e) in self.appended.iter().enumerate() {
            let (head, payload) = self.buf[e.start..e.start + e.len].split_at_mut(RECORD_HEADER);
            head[COMMIT_AT..FLAGS_AT].copy_from_slice(&number.to_le_bytes());
            let flags = if k == last { LAST_OF_COMMIT } else { 0 };
            head[FLAGS_AT..CRC_AT].copy_from_slice(&flags.to_le_bytes());
            let crc = record_crc(self.salt, head, payload);
            head[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        }
        let at = self.active.len;
        let end = at + self.buf.len() as u64;
        if self.zero_ahead && end > self.active.zeroed {
            self.active.zero_ahead(end, self.options.segment_size);
        }
        let r = self.active.file.write_all_at(&self.buf, at).and_then(|()| self.active.file.sync_data());
        let mut entries = std::mem::take(&mut self.appended);
        if let Err(error) = r {
            // Nothing of this batch was acknowledged: cut it off, or, if
            // that fails (truncating needs the file system's journal),
            // blank it, so that no record of it is found later. When both
            // fail, what follows `at` is unknown: the next commit starts a
            // new segment (or, if it cannot, goes to `at` under a number
            // of its own), and any zeros here start at `at`.
            self.active.zeroed = at;
            let file = &self.active.file;
            if file.set_len(at).and_then(|()| file.sync_all()).is_err()
                && zero_fill(file, at, end).1.and_then(|()| file.sync_data()).is_err()
            {
                self.broken = true;
                self.active.commits = number;
            }
            self.buf.clear();
            let failed = entries.iter().map(|e| e.ticket).collect();
            return Err(CommitError { failed, error: Error::Io(error) });
        }
        self.active.len = end;
        self.active.commits = number;
        self.active.zeroed = self.active.zeroed.max(end);
        self.active.first.get_or_insert_with(Instant::now);
        if self.broken && self.active.file.set_len(end).is_ok() {
            self.active.zeroed = end;
            self.broken = self.active.file.sync_all().is_err();
        }
        self.active_outstanding += entries.len();
        let base = self.done.len();
        if base == 0 {
            std::mem::swap(&mut self.buf, &mut self.done);
        } else {
            self.done.extend_from_slice(&self.buf);
        }
        self.buf.clear();
        let tickets = entries.iter().map(|e| e.ticket).collect();
        for mut e in entries.drain(..) {
            e.seg_end = at + (e.start + e.len) as u64;
            e.start += base;
            e.segment = self.active.seq;
            self.todo.push_back(e);
        }
        self.appended = entries;
        Ok(tickets)
    }

    /// Write each committed message as its own queue file in incoming/
    /// (no sync), pushing its ID to `out`; then retire the segments whose
    /// messages are all materialised. On error the messages not yet
    /// written stay queued for the next call (they are safe in the
    /// journal).
    pub fn materialize(&mut self, out: &mut Vec<QueueId>) -> Result<(), Error> {
        self.materialize_some(out, usize::MAX)
    }

    /// Like [`Journal::materialize`], but at most `max` queue files, so
    /// that a caller can go back to taking mail (and committing it) while
    /// a backlog is written out: the journal is the durable copy until
    /// then.
    ///
    /// A file that cannot be written for a reason of the disk's or the
    /// process's (a full or read-only disk, an I/O error, no descriptor or
    /// memory to spare) stops the slice, stays first in line and pauses
    /// materialisation for [`MATERIALIZE_RETRY`]. One that cannot be
    /// written for a reason of its own (something in its place that
    /// cannot be removed) is set aside as [`Unwritten`], tried again every
    /// [`UNWRITTEN_RETRY`], and holds back no other. Either is returned as
    /// the error, after the slice.
    pub fn materialize_some(&mut self, out: &mut Vec<QueueId>, max: usize) -> Result<(), Error> {
        let now = Instant::now();
        let mut failed = None;
        // The progress note is rewritten once for the slice, not per file:
        // qmgr is told these names only after this returns, so none of
        // them is delivered and removed before the note covers it (but
        // for one a restarted qmgr's scan of incoming/ finds within the
        // slice, delivered twice if cleanup also dies then).
        let mut noted = false;
        if !self.unwritten.is_empty() && self.unwritten_retry.is_none_or(|t| t <= now) {
            match self.retry_unwritten(out) {
                Ok(n) => noted |= n > 0,
                Err(e) => failed = Some(e),
            }
        }
        if self.paused_until.is_some_and(|t| t <= now) {
            self.paused_until = None;
        }
        let mut n = 0;
        while n < max && self.paused_until.is_none() {
            let Some(e) = self.todo.front() else { break };
            let (id, seg, seg_end, start, len) = (e.ticket.id, e.segment, e.seg_end, e.start, e.len);
            let payload = &self.done[start + RECORD_HEADER..start + len];
            match write_out(self.incoming.as_fd(), &id, payload, &mut self.unsynced) {
                Err(err) if disk_wide(&err) => {
                    // Nothing is written now: first in line after a pause.
                    self.paused_until = Some(now + MATERIALIZE_RETRY);
                    failed = Some(Error::Io(err));
                    break;
                }
                Err(err) => {
                    // Its own trouble: set aside, and the others go on.
                    let payload = Some(payload.to_vec());
                    let at = seg_end - len as u64;
                    let u = Unwritten { id, payload, segment: seg, start: at, end: seg_end };
                    self.unwritten_bytes += u.size();
                    self.unwritten.push_back(u);
                    self.unwritten_retry.get_or_insert(now + UNWRITTEN_RETRY);
                    let why = format!(
                        "incoming/{id}: {err}; the message stays in the journal and is tried again every {} s",
                        UNWRITTEN_RETRY.as_secs()
                    );
                    failed.get_or_insert(Error::Io(io::Error::new(err.kind(), why)));
                }
                Ok(()) => {
                    self.written = self.written.max((seg, seg_end));
                    noted = true;
                    out.push(id);
                    self.settle(seg);
                }
            }
            self.done_from = start + len;
            self.todo.pop_front();
            n += 1;
        }
        if noted {
            self.note();
        }
        self.compact_done();
        let retired = self.retire();
        match failed {
            Some(e) => Err(e),
            None => retired,
        }
    }

    /// Drop from memory what is written out or offered.
    fn compact_done(&mut self) {
        if self.todo.is_empty() {
            self.done.clear();
            self.done_from = 0;
            if self.done.capacity() > 16 << 20 {
                self.done.shrink_to(1 << 20);
            }
        } else if self.done_from >= 4 << 20 && self.done_from * 2 >= self.done.len() {
            // Under steady load the buffer never empties: drop what is
            // written once it is most of it, so memory stays bounded.
            let cut = self.done_from;
            self.done.drain(..cut);
            self.done_from = 0;
            for e in &mut self.todo {
                e.start -= cut;
            }
        }
    }

    /// Offer committed messages to qmgr instead of writing their queue
    /// files: from the front of those waiting, each of at most `max_size`
    /// bytes, up to `max` messages offered at once, each in a sealed
    /// memory file pushed to `out` with its ID. A message offered is
    /// settled by [`Journal::settle_offered`] (qmgr delivered it, or
    /// wrote its file itself) or written out by [`Journal::write_offered`]
    /// (qmgr went away); until then its segment stays and the progress
    /// note stays before it. Stops at the first message too large, which
    /// [`Journal::materialize_some`] writes out in its turn. Nothing on
    /// systems without memory files.
    pub fn offer_some(&mut self, out: &mut Vec<(QueueId, OwnedFd)>, max: usize, max_size: usize) {
        if !disk::HAS_MEMORY_FILES {
            return;
        }
        while self.offered.len() < max {
            let Some(e) = self.todo.front() else { break };
            if e.len - RECORD_HEADER > max_size {
                break;
            }
            let (id, seg, seg_end, start, len) = (e.ticket.id, e.segment, e.seg_end, e.start, e.len);
            let Ok(fd) = disk::memory_file(&self.done[start + RECORD_HEADER..start + len]) else {
                // Out of memory or descriptors: written out as usual.
                break;
            };
            let at = (seg, seg_end - len as u64);
            self.offered.insert(at, (id, seg_end));
            self.offered_at.insert(id, at);
            out.push((id, fd));
            self.done_from = start + len;
            self.todo.pop_front();
        }
        self.compact_done();
    }

    /// Messages offered and not yet settled.
    pub fn offered(&self) -> usize {
        self.offered.len()
    }

    /// qmgr delivered these offered messages (no queue file is needed) or
    /// wrote and synced their queue files itself: their records need the
    /// segment no longer. IDs not offered are ignored; returns how many
    /// were.
    pub fn settle_offered(&mut self, ids: &[QueueId]) -> usize {
        let mut n = 0;
        for id in ids {
            let Some(at) = self.offered_at.remove(id) else { continue };
            let Some((_, end)) = self.offered.remove(&at) else { continue };
            self.written = self.written.max((at.0, end));
            self.settle(at.0);
            n += 1;
        }
        if n > 0 {
            self.note();
        }
        n
    }

    /// Write out the queue file of every message offered and not settled
    /// (qmgr went away, or cleanup stops), read back from its segment,
    /// pushing the IDs written to `out`. One that cannot be written, or
    /// read back, is kept as [`Unwritten`] and tried again like any other:
    /// never written from anything but what was read.
    pub fn write_offered(&mut self, out: &mut Vec<QueueId>) {
        let offered = std::mem::take(&mut self.offered);
        self.offered_at.clear();
        for ((seg, start), (id, end)) in offered {
            let payload = self.read_back(seg, start, end).ok();
            let written =
                payload.as_ref().is_some_and(|p| write_out(self.incoming.as_fd(), &id, p, &mut self.unsynced).is_ok());
            if written {
                self.written = self.written.max((seg, end));
                self.settle(seg);
                out.push(id);
            } else {
                let u = Unwritten { id, payload, segment: seg, start, end };
                self.unwritten_bytes += u.size();
                self.unwritten.push_back(u);
                self.unwritten_retry.get_or_insert(Instant::now());
            }
        }
        // In journal order: the progress note stays before the first.
        self.unwritten.make_contiguous().sort_by_key(|u| (u.segment, u.start));
        self.note();
    }

    /// The queue file in the record of segment `seg` from `start` to `end`,
    /// read from the segment (open until it retires: see [`Sealed`]).
    fn read_back(&self, seg: u64, start: u64, end: u64) -> io::Result<Vec<u8>> {
        let file = if seg == self.active.seq {
            Some(&self.active.file)
        } else {
            self.sealed.iter().find(|s| s.seq == seg).and_then(|s| s.file.as_ref())
        };
        let Some(file) = file else { return Err(io::Error::other("its journal segment is not open")) };
        let len = usize::try_from(end - start).map_err(io::Error::other)?;
        let mut payload = vec![0u8; len.saturating_sub(RECORD_HEADER)];
        file.read_exact_at(&mut payload, start + RECORD_HEADER as u64)?;
        Ok(payload)
    }

    /// A message of segment `seg` is written out: one fewer for it to wait for.
    fn settle(&mut self, seg: u64) {
        if seg == self.active.seq {
            self.active_outstanding -= 1;
        } else if let Some(s) = self.sealed.iter_mut().find(|s| s.seq == seg) {
            s.outstanding -= 1;
        }
    }

    /// Try every unwritten message again, in order (one that still fails
    /// holds back no other); how many were written, or the first failure,
    /// saying how many are left.
    fn retry_unwritten(&mut self, out: &mut Vec<QueueId>) -> Result<usize, Error> {
        let mut n = 0;
        let mut first: Option<(QueueId, io::Error)> = None;
        let mut left = VecDeque::new();
        while let Some(mut u) = self.unwritten.pop_front() {
            if u.payload.is_none() {
                // (Counted in `unwritten_bytes` from now on.)
                u.payload = self.read_back(u.segment, u.start, u.end).ok();
                self.unwritten_bytes += u.size();
            }
            let r = match &u.payload {
                Some(p) => write_out(self.incoming.as_fd(), &u.id, p, &mut self.unsynced),
                None => Err(io::Error::other("its record cannot be read back from its journal segment")),
            };
            match r {
                Ok(()) => {
                    self.unwritten_bytes -= u.size();
                    self.written = self.written.max((u.segment, u.end));
                    self.settle(u.segment);
                    out.push(u.id);
                    n += 1;
                }
                Err(e) => {
                    first.get_or_insert((u.id, e));
                    left.push_back(u);
                }
            }
        }
        self.unwritten = left;
        let Some((id, e)) = first else {
            self.unwritten_retry = None;
            return Ok(n);
        };
        self.unwritten_retry = Some(Instant::now() + UNWRITTEN_RETRY);
        let why = format!(
            "incoming/{id}: {e}; {} message(s) stay in the journal, tried again every {} s",
            self.unwritten.len(),
            UNWRITTEN_RETRY.as_secs()
        );
        Err(Error::Io(io::Error::new(e.kind(), why)))
    }

    /// Rewrite the progress note: every record before the end of the
    /// furthest one written out, or before the first unwritten one if it
    /// comes first, is written out. Once a sync has failed the note also
    /// keeps every segment so far until the next boot: queue files may
    /// read back from the page cache that never reached the disk.
    fn note(&mut self) {
        let failed = self.unsynced.failed();
        let active = self.active.seq;
        let mut at = self.unwritten.front().map_or(self.written, |u| self.written.min((u.segment, u.start)));
        if let Some((first, _)) = self.offered.first_key_value() {
            at = at.min(*first);
        }
        let Some((w, p)) = self.progress.as_mut() else { return };
        (p.seq, p.end) = at;
        if failed {
            p.kept_through = p.kept_through.max(active);
        }
        // Behind the truth at worst: messages written again.
        let _ = w.write(p);
    }

    /// Start a new segment; the active one is sealed.
    fn rotate(&mut self) -> Result<(), Error> {
        let next = Segment::create(self.dir.as_fd(), self.instance, self.active.seq + 1, self.salt)?;
        let old = std::mem::replace(&mut self.active, next);
        // Kept open while messages of it may have to be read back (offered
        // ones, once offered, when qmgr goes away).
        let file = (self.active_outstanding > 0).then_some(old.file);
        self.sealed.push_back(Sealed {
            seq: old.seq,
            outstanding: self.active_outstanding,
            fate: SegmentFate::Remove,
            file,
        });
        self.active_outstanding = 0;
        self.broken = false;
        Ok(())
    }

    /// Seal the active segment when it is all materialised and old enough,
    /// then sync the queue files of the fully materialised sealed segments
    /// and unlink those segments.
    fn retire(&mut self) -> Result<(), Error> {
        if self.retry_at.is_some_and(|t| t > Instant::now()) {
            return Ok(());
        }
        let r = self.retire_now();
        // After a failed sync nothing retires until the next start: say
        // so now and then, not every second; and the note keeps the
        // segments until the next boot.
        let wait = if self.unsynced.failed() { RETIRE_STUCK } else { RETIRE_RETRY };
        if self.unsynced.failed() {
            self.note();
        }
        self.retry_at = if r.is_err() { Some(Instant::now() + wait) } else { None };
        r
    }

    fn retire_now(&mut self) -> Result<(), Error> {
        // (Messages of the active segment that could not be written do
        // not keep it from being sealed: it then waits for them alone.)
        let unwritten = self.unwritten.iter().filter(|u| u.segment == self.active.seq).count();
        if self.active_outstanding == unwritten
            && self.active.first.is_some_and(|t| t.elapsed() >= self.options.retire_after)
        {
            self.rotate()?;
        }
        if !self.sealed.iter().any(|s| s.outstanding == 0) {
            return Ok(());
        }
        self.unsynced.sync(self.incoming.as_fd())?;
        // Every segment whose messages are all written out, wherever it
        // is in line: one waiting for a message that cannot be written
        // holds back no other (each is the durable copy of its own).
        while let Some(i) = self.sealed.iter().position(|s| s.outstanding == 0) {
            self.release(&self.sealed[i])?;
            self.sealed.remove(i);
        }
        Ok(())
    }

    /// Do with a sealed segment whose messages are all written out what
    /// its fate says: remove it, keep it as corrupt, or keep it.
    fn release(&self, s: &Sealed) -> Result<(), Error> {
        let name = segment_name(self.instance, s.seq);
        match s.fate {
            SegmentFate::Remove => disk::remove(self.dir.as_fd(), &name)?,
            SegmentFate::KeepAsCorrupt => {
                let kept = super::free_name(self.dir.as_fd(), &format!("{name}.corrupt"))?;
                nix::fcntl::renameat(self.dir.as_fd(), name.as_str(), self.dir.as_fd(), kept.as_str())?;
            }
            SegmentFate::Keep => {}
        }
        Ok(())
    }

    /// Shut down cleanly: materialise everything committed, sync, and
    /// remove every segment, so that the next open has nothing to recover.
    /// Messages appended and not committed are dropped (their clients never
    /// heard 250). Returns the IDs materialised now. On error the segments
    /// stay for recovery.
    pub fn close(mut self) -> Result<Vec<QueueId>, Error> {
        let mut out = Vec::new();
        self.paused_until = None;
        self.unwritten_retry = None;
        self.write_offered(&mut out);
        self.materialize(&mut out)?;
        if !self.unwritten.is_empty() {
            // (The note stays before the first of them.)
            self.retry_unwritten(&mut out)?;
        }
        if let Err(e) = self.unsynced.sync(self.incoming.as_fd()) {
            // The note keeps every segment until the next boot.
            self.note();
            return Err(e.into());
        }
        for s in &self.sealed {
            self.release(s)?;
        }
        disk::remove(self.dir.as_fd(), &segment_name(self.instance, self.active.seq))?;
        nix::unistd::fsync(self.dir.as_fd())?;
        Ok(out)
    }
}

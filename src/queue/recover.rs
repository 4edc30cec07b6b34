//! Journal recovery: what [`Journal::open`](super::Journal::open) does
//! with the segments a previous process of the same instance left.
//!
//! Each segment is read whole and scanned. A record counts when it is
//! complete and its CRC (salted with the segment's random salt, so content
//! that imitates a record does not pass) is good and its queue file
//! decodes. Damage is classified:
//! - torn: bytes at the end of the newest segment (or of a version 1
//!   one) from which no good record starts, and (version 2) bad bytes inside the last commit of the
//!   newest segment, whose pages a crash during its flush may have left
//!   half written, in any order. Such a commit was never acknowledged;
//!   the bad bytes are dropped, its good records queued. (A new segment
//!   is started only once the commits before it are durable, so an older
//!   segment's last commit was acknowledged.) Bytes that are all zero to
//!   the end are not damage but the zeros the journal writes ahead of its
//!   records: the clean end.
//! - corruption: any other bad bytes followed by a good record (in the
//!   newest version 2 segment: by a good record of a later commit; a
//!   commit is only written once the one before it is durable, so the bad
//!   bytes were acknowledged data). It is reported, the scan resumes at
//!   the next good record, and the segment is kept as `*.jnl.corrupt` for
//!   inspection.
//!
//! Each good record whose queue file is not found valid in incoming/ or
//! the other queue directories is written to incoming/ again. A copy
//! that is not valid (left by a crash before the file reached the disk,
//! still marked as being written, or one that cannot be read: whether it
//! is good cannot be told) is removed first when it is in incoming/; in
//! the directories cleanup may only read (active/, deferred/, hold/) it
//! is left for qmgr, which moves it to corrupt/ when it meets it (and
//! lets the copy in incoming/ win: see `qmgr::store`; but for a message
//! on hold, which stays held, the journal's copy taking the damaged
//! one's place in hold/, never delivered meanwhile), and reported. A
//! message that cannot be written (a bad copy in incoming/ that cannot be
//! removed, a failed write) is handed to the journal as unwritten: its
//! segment stays until it is written, and the journal tries again. The
//! files are synced, then the other segments retired.
//!
//! Trusts: nothing in the segments or the queue directories.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::disk::{self, Unsynced};
use super::file::{read_checked, read_whole};
use super::id::{LEN as ID_LEN, QueueId};
use super::journal::{
    COMMIT_AT, FLAGS_AT, JOURNAL_VERSION, JournalDirs, LAST_OF_COMMIT, RECORD_HEADER, RECORD_HEADER_V1, RECORD_MAGIC,
    SEGMENT_HEADER, SEGMENT_MAGIC, SegmentFate, Unwritten, record_crc, same_message,
};
use super::progress::{self, BootId, Progress};
use super::types::QueueFile;
use super::{Error, free_name};

/// A damaged stretch of a journal segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub segment: String,
    pub offset: u64,
    pub len: u64,
    pub what: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} bytes at {}: {}", self.segment, self.len, self.offset, self.what)
    }
}

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segments found.
    pub segments: usize,
    /// Good records in them.
    pub records: usize,
    /// Messages written to incoming/ again.
    pub materialised: Vec<QueueId>,
    /// Messages found valid in a queue directory.
    pub present: usize,
    /// Messages written out before, in this boot, and gone since
    /// (delivered, or removed): not written again (see `progress.rs`).
    pub settled: usize,
    /// Messages whose copy in a queue directory was not valid (or could
    /// not be read), written again to incoming/.
    pub replaced: Vec<QueueId>,
    /// Copies that are not valid, found in a directory cleanup may only
    /// read (active/, deferred/, hold/) and left there for qmgr (which
    /// moves them to corrupt/), with where and why; the journal's copy
    /// went to incoming/.
    pub left: Vec<String>,
    /// Messages that could not be written to incoming/ (why): kept in
    /// their segments, which stay, and tried again by the journal.
    pub unwritten: Vec<String>,
    /// Torn tails dropped (never acknowledged).
    pub torn: Vec<Damage>,
    /// Corruption inside segments: report it.
    pub corrupt: Vec<Damage>,
    /// Segments kept as `*.jnl.corrupt`.
    pub kept: Vec<String>,
    /// Segments kept as they are until the next boot: a sync of their
    /// queue files failed (see `progress.rs`).
    pub kept_unsynced: Vec<String>,
    /// Temporary files of this instance removed from incoming/.
    pub temps_removed: usize,
}

impl Recovery {
    /// Whether there is anything to log.
    pub fn is_empty(&self) -> bool {
        self.segments == 0 && self.temps_removed == 0
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "journal recovery: {} segments, {} messages ({} written again, {} replaced, {} already queued, \
             {} gone since they were written), {} torn tails dropped, {} corrupt stretches, {} temporary files removed",
            self.segments,
            self.records,
            self.materialised.len(),
            self.replaced.len(),
            self.present,
            self.settled,
            self.torn.len(),
            self.corrupt.len(),
            self.temps_removed
        )?;
        for d in &self.corrupt {
            write!(f, "; corrupt: {d}")?;
        }
        for l in &self.left {
            write!(f, "; {l}")?;
        }
        for u in &self.unwritten {
            write!(f, "; {u}")?;
        }
        for k in &self.kept {
            write!(f, "; kept {k}")?;
        }
        for k in &self.kept_unsynced {
            write!(f, "; kept {k} until the next boot (a sync of its queue files failed)")?;
        }
        Ok(())
    }
}

/// A good record: its queue ID, where it starts, where its payload lies
/// in the segment, and (version 2) its commit's number and whether it is
/// the commit's last record.
pub(crate) struct Found {
    pub id: QueueId,
    pub at: usize,
    pub start: usize,
    pub len: usize,
    pub commit: u32,
    pub last: bool,
}

/// The outcome of scanning one segment's bytes: its good records, the
/// stretches dropped as torn, and the corrupt ones (offset, length, what).
pub(crate) struct Scan {
    pub records: Vec<Found>,
    pub torn: Vec<(u64, u64, String)>,
    pub corrupt: Vec<(u64, u64, String)>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The record at `pos` of a segment of format `version` (1 or 2), if it
/// is complete with a good CRC.
fn record_at(seg: &[u8], pos: usize, salt: u64, version: u16) -> Result<Found, String> {
    let header = if version == 1 { RECORD_HEADER_V1 } else { RECORD_HEADER };
    let Some(h) = seg.get(pos..pos.saturating_add(header)) else {
        return Err("incomplete record header".into());
    };
    if &h[0..4] != RECORD_MAGIC {
        return Err("no record magic".into());
    }
    let len = u32_at(h, 4) as usize;
    let start = pos + header;
    let Some(payload) = seg.get(start..start.saturating_add(len)) else {
        return Err(format!("record of {len} bytes runs past the end"));
    };
    if record_crc(salt, h, payload) != u32_at(h, header - 4) {
        return Err("record CRC mismatch".into());
    }
    let id = QueueId::from_bytes(&h[8..8 + ID_LEN]).ok_or("bad queue ID in a record")?;
    let (commit, last) = if version == 1 {
        (0, false)
    } else {
        let flags = u32_at(h, FLAGS_AT);
        if flags & !LAST_OF_COMMIT != 0 || u32_at(h, COMMIT_AT) == 0 {
            return Err("bad commit number or flags in a record".into());
        }
        (u32_at(h, COMMIT_AT), flags & LAST_OF_COMMIT != 0)
    };
    Ok(Found { id, at: pos, start, len, commit, last })
}

/// A stretch of bad bytes with good records after it: `after` is the
/// index of the first of them.
struct Hole {
    at: usize,
    len: usize,
    why: String,
    after: usize,
}

/// Whether a hole of a version 2 segment lies inside the segment's last
/// commit, so a crash during that commit's flush can explain it: the
/// records before it end where that commit begins or are part of it, and
/// every record after it belongs to it. Otherwise a later commit was
/// written, which happens only once the earlier ones are durable: the
/// hole is damage to acknowledged data.
fn inside_last_commit(records: &[Found], hole: &Hole) -> bool {
    let (before, last) =
        hole.after.checked_sub(1).and_then(|i| records.get(i)).map_or((0, true), |r| (u64::from(r.commit), r.last));
    let commit = if last { before + 1 } else { before };
    records[hole.after..].iter().all(|r| u64::from(r.commit) == commit)
}

/// Scan a segment of instance `instance`; `newest`: no segment of the
/// instance has a higher sequence number, so its last commit may be one
/// a crash cut. Never panics, whatever the bytes.
pub(crate) fn scan(seg: &[u8], instance: u32, newest: bool) -> Scan {
    let mut s = Scan { records: Vec::new(), torn: Vec::new(), corrupt: Vec::new() };
    let total = seg.len() as u64;
    let Some(h) = seg.get(..SEGMENT_HEADER) else {
        // A crash while the segment was created: nothing was committed.
        s.torn.push((0, total, "segment shorter than its header".into()));
        return s;
    };
    let crc = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    let version = u16::from_le_bytes([h[4], h[5]]);
    let owner = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if &h[0..4] != SEGMENT_MAGIC
        || crc32fast::hash(&h[..20]) != crc
        || !(1..=JOURNAL_VERSION).contains(&version)
        || owner != instance
    {
        let what = format!("bad segment header (version {version}, instance {owner}): no record can be checked");
        s.corrupt.push((0, total, what));
        return s;
    }
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&h[12..20]);
    let salt = u64::from_le_bytes(salt);
    // Bound the work spent looking for a good record after damage.
    let mut budget = seg.len().saturating_mul(8).max(1 << 20);
    let mut holes = Vec::new();
    let mut gave_up = false;
    let mut pos = SEGMENT_HEADER;
    while pos < seg.len() {
        match record_at(seg, pos, salt, version) {
            Ok(f) => {
                pos = f.start + f.len;
                s.records.push(f);
            }
            // Zeros written ahead of the records: the segment's clean end.
            Err(_) if seg[pos..].iter().all(|&b| b == 0) => break,
            Err(why) => match next_good(seg, pos + 1, salt, version, &mut budget) {
                Next::At(next) => {
                    holes.push(Hole { at: pos, len: next - pos, why, after: s.records.len() });
                    pos = next;
                }
                // Only the newest segment can end in a commit that a
                // crash cut short: an older one was sealed once its last
                // commit was durable, so bad bytes at its end were
                // acknowledged (or left by a commit that failed and could
                // not be blanked: reported all the same, to be safe).
                Next::None if newest || version < 2 => {
                    s.torn.push((pos as u64, total - pos as u64, why));
                    break;
                }
                Next::None => {
                    s.corrupt.push((pos as u64, total - pos as u64, format!("{why} (at the end of a sealed segment)")));
                    break;
                }
                Next::GaveUp => {
                    let what = format!("{why}; too much damage to search the rest for good records");
                    s.corrupt.push((pos as u64, total - pos as u64, what));
                    gave_up = true;
                    break;
                }
            },
        }
    }
    // After a search that gave up, the records past it are unknown: a
    // hole cannot be shown to be inside the last commit.
    let torn_possible = version >= 2 && newest && !gave_up;
    for h in holes {
        if torn_possible && inside_last_commit(&s.records, &h) {
            s.torn.push((h.at as u64, h.len as u64, format!("{} (inside the last commit)", h.why)));
        } else {
            s.corrupt.push((h.at as u64, h.len as u64, h.why));
        }
    }
    s.corrupt.sort_by_key(|c| c.0);
    s.torn.sort_by_key(|t| t.0);
    s
}

enum Next {
    At(usize),
    None,
    GaveUp,
}

/// Where the next good record starts at or after `from`, if any.
fn next_good(seg: &[u8], from: usize, salt: u64, version: u16, budget: &mut usize) -> Next {
    let mut pos = from;
    while let Some(i) = seg.get(pos..).and_then(|rest| rest.windows(4).position(|w| w == RECORD_MAGIC)) {
        let at = pos + i;
        let claimed = seg.get(at + 4..at + 8).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        match budget.checked_sub(claimed.min(seg.len() - at) + 64) {
            Some(left) => *budget = left,
            None => return Next::GaveUp,
        }
        if record_at(seg, at, salt, version).is_ok() {
            return Next::At(at);
        }
        pos = at + 1;
    }
    Next::None
}

/// Parse `IIIIIIII-SSSSSSSSSSSSSSSS.jnl` of `instance`; its sequence number.
fn segment_seq(name: &str, instance: u32) -> Option<u64> {
    let rest = name.strip_prefix(&format!("{instance:08x}-"))?.strip_suffix(".jnl")?;
    if rest.len() != 16 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(rest, 16).ok()
}

/// Errors of the process rather than of a file (no descriptor or memory
/// to spare): recovery stops, and the next start tries again.
fn process_wide(e: &io::Error) -> bool {
    use nix::libc::{EMFILE, ENFILE, ENOMEM};
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOMEM)) || e.kind() == io::ErrorKind::OutOfMemory
}

/// Files up to this size are read whole to be checked; larger ones are
/// checked in pieces (bounded memory whatever the file's size).
const CHECK_WHOLE: usize = 64 << 10;

/// What is under a name.
pub(crate) enum Copy {
    Absent,
    Valid(File),
    /// Not a copy to rely on, and why: invalid, still being written, or
    /// unreadable (whether it is good cannot be told).
    Bad(String),
}

/// Look at `name` in `dir`, which should be the queue file of `id`.
pub(crate) fn examine(dir: BorrowedFd<'_>, name: &str, id: &QueueId) -> Result<Copy, Error> {
    let file = match disk::open_read(dir, name) {
        Ok(None) => return Ok(Copy::Absent),
        Ok(Some(f)) => f,
        // Still being written when a crash came (see disk::MODE_WRITING).
        Err(e) if e.raw_os_error() == Some(nix::libc::EACCES) && disk::being_written(dir, name) => {
            return Ok(Copy::Bad(String::from("still being written (mode 0200)")));
        }
        // (deferred/'s hashed name looked for where there are no subfolders.)
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTDIR) => return Ok(Copy::Absent),
        Err(e) if process_wide(&e) => return Err(e.into()),
        Err(e) => return Ok(Copy::Bad(format!("cannot be opened: {e}"))),
    };
    match file.metadata() {
        Ok(m) if !disk::complete(m.mode()) => return Ok(Copy::Bad(String::from("still being written (mode 0200)"))),
        Ok(_) => {}
        Err(e) if process_wide(&e) => return Err(e.into()),
        Err(e) => return Ok(Copy::Bad(format!("cannot be looked at: {e}"))),
    }
    match read_checked(&file, CHECK_WHOLE) {
        Ok((q, _)) if q.id == *id => Ok(Copy::Valid(file)),
        Ok((q, _)) => Ok(Copy::Bad(format!("holds queue ID {}", q.id))),
        Err(Error::Io(e)) if process_wide(&e) => Err(Error::Io(e)),
        Err(Error::Io(e)) => Ok(Copy::Bad(format!("cannot be read: {e}"))),
        Err(e) => Ok(Copy::Bad(e.to_string())),
    }
}

/// What the looks for one message found besides a valid copy.
#[derive(Default)]
struct Seen {
    /// A copy in incoming/ that was not valid was removed.
    removed: bool,
    /// Copies that are not valid in the read-only directories, left for
    /// qmgr: where and why.
    left: Vec<String>,
    /// A copy in incoming/ that is not valid and could not be removed:
    /// nothing can be written in its place.
    blocked: Option<String>,
}

impl Seen {
    /// Whether the message was in the queue, in some shape.
    fn any(&self) -> bool {
        self.removed || !self.left.is_empty() || self.blocked.is_some()
    }
}

/// Whether a valid copy of `id` is in incoming/ or one of the other
/// directories, by its name or in the hashed subfolder qmgr gives it in
/// deferred/ (see [`look`]).
///
/// A cleanup restarted alone recovers while qmgr runs and moves files
/// from directory to directory (deferred/ to active/, hold/ to
/// incoming/): one that moves from a directory not yet looked at to one
/// already passed is missed, and writing it again would deliver its done
/// recipients once more. So a miss is checked with a second look, which
/// only a second such move, at that very moment, could fool (qmgr moves
/// a file back towards incoming/ at most once in a row).
fn present(
    id: &QueueId,
    incoming: BorrowedFd<'_>,
    elsewhere: &[(&str, BorrowedFd<'_>)],
    seen: &mut Seen,
) -> Result<Option<File>, Error> {
    match look(id, incoming, elsewhere, seen)? {
        Some(f) => Ok(Some(f)),
        None => look(id, incoming, elsewhere, seen),
    }
}

/// One look for `id` (see [`present`]): the valid copy, open. A copy that
/// is not valid is removed from incoming/ (the journal has a good one);
/// elsewhere cleanup may not remove it, and it is noted in `seen`.
fn look(
    id: &QueueId,
    incoming: BorrowedFd<'_>,
    elsewhere: &[(&str, BorrowedFd<'_>)],
    seen: &mut Seen,
) -> Result<Option<File>, Error> {
    let hashed = format!("{}/{}", crate::qmgr::schedule::deferred_subdir(id), id.as_str());
    for (k, &(dname, dir)) in std::iter::once(&("incoming", incoming)).chain(elsewhere).enumerate() {
        for name in [id.as_str(), hashed.as_str()] {
            let why = match examine(dir, name, id)? {
                Copy::Absent => continue,
                Copy::Valid(f) => return Ok(Some(f)),
                Copy::Bad(why) => why,
            };
            let place = format!("{dname}/{name}");
            if k == 0 {
                match disk::remove(dir, name) {
                    Ok(()) => seen.removed = true,
                    Err(e) => seen.blocked = Some(format!("{place} ({why}) cannot be removed: {e}")),
                }
            } else {
                let what = format!("{place}: {why}");
                if !seen.left.contains(&what) {
                    seen.left.push(what);
                }
            }
        }
    }
    Ok(None)
}

/// What recovery leaves to the journal it opens: the next sequence
/// number, the last segment kept until the next boot (0: none), the
/// messages it could not write, and the segments it could therefore not
/// retire (sequence number, how many of those messages each holds, and
/// what becomes of it once they are written).
pub(crate) struct Recovered {
    pub next: u64,
    pub kept_through: u64,
    pub unwritten: Vec<Unwritten>,
    pub held: Vec<(u64, usize, SegmentFate)>,
}

/// Recover the segments of `instance`, in `boot` and under the master of
/// `session` (see `progress.rs`). Returns the report and what the
/// journal takes over ([`Recovered`]).
pub(crate) fn recover(
    dirs: &JournalDirs<'_>,
    instance: u32,
    unsynced: &mut Unsynced,
    boot: Option<BootId>,
    session: u64,
) -> Result<(Recovery, Recovered), Error> {
    let mut rec = Recovery::default();
    let found = progress::read(dirs.journal, instance);
    // What segments to keep holds for the boot; what was written out,
    // only after cleanup alone died (the same master).
    let same_boot = found.filter(|p| boot == Some(p.boot));
    let note = same_boot.filter(|p| p.session == session);
    // Temporary names were used before queue files were marked complete
    // by their mode: a spool of an older version may hold some.
    for name in disk::list(dirs.incoming)? {
        if let Some(id) = name.strip_prefix(".tmp.").and_then(QueueId::parse)
            && id.instance() == instance
            && disk::remove(dirs.incoming, &name).is_ok()
        {
            rec.temps_removed += 1;
        }
    }
    let mut segments: Vec<(u64, String)> =
        disk::list(dirs.journal)?.into_iter().filter_map(|n| segment_seq(&n, instance).map(|s| (s, n))).collect();
    segments.sort();
    rec.segments = segments.len();
    // Never below a note's: one left behind covers no later segment.
    let last = segments.last().map_or(0, |(s, _)| *s).max(found.map_or(0, |p| p.seq));
    let next = last.saturating_add(1);
    let elsewhere = dirs.elsewhere;
    let mut unwritten = Vec::new();

    let mut damaged = Vec::with_capacity(segments.len());
    // Where the newest segment's torn tail starts, if it has one.
    let mut torn_tail = None;
    for (k, (seq, name)) in segments.iter().enumerate() {
        let Some(file) = disk::open_read(dirs.journal, name)? else {
            damaged.push(false);
            continue;
        };
        let bytes = read_whole(&file)?;
        let scan = scan(&bytes, instance, k + 1 == segments.len());
        if k + 1 == segments.len() {
            torn_tail = scan.torn.iter().find(|t| t.0 + t.1 == bytes.len() as u64).map(|t| t.0);
        }
        let mut bad = !scan.corrupt.is_empty();
        let damage = |(offset, len, what): (u64, u64, String)| Damage { segment: name.clone(), offset, len, what };
        rec.corrupt.extend(scan.corrupt.into_iter().map(damage));
        rec.torn.extend(scan.torn.into_iter().map(damage));
        for f in scan.records {
            let payload = &bytes[f.start..f.start + f.len];
            match QueueFile::decode(payload) {
                Ok(q) if q.id == f.id => {}
                Ok(_) => {
                    bad = true;
                    let what = format!("record for {} holds another queue ID", f.id);
                    rec.corrupt.push(damage((f.at as u64, (f.start - f.at + f.len) as u64, what)));
                    continue;
                }
                Err(e) => {
                    bad = true;
                    let what = format!("record for {} holds an invalid queue file: {e}", f.id);
                    rec.corrupt.push(damage((f.at as u64, (f.start - f.at + f.len) as u64, what)));
                    continue;
                }
            }
            rec.records += 1;
            let mut seen = Seen::default();
            let found = if note.is_some_and(|p| p.covers(*seq, (f.start + f.len) as u64)) {
                // Written out before, in this boot, so qmgr may have
                // delivered it since: only a copy that is not valid is
                // written again.
                let found = look(&f.id, dirs.incoming, elsewhere, &mut seen)?;
                if found.is_none() && !seen.any() {
                    rec.settled += 1;
                    continue;
                }
                found
            } else {
                present(&f.id, dirs.incoming, elsewhere, &mut seen)?
            };
            // A valid file of another message under its ID (IDs are unique
            // by time and a random counter: see `id.rs`) is left alone, and
            // this one stays in the journal, as `Journal::materialize`
            // does.
            let mut collided = None;
            if let Some(file) = found {
                if same_message(&file, payload) {
                    unsynced.add(file);
                    rec.present += 1;
                    continue;
                }
                collided = Some(String::from("another message with the same queue ID is in its place"));
            } else if seen.any() {
                rec.replaced.push(f.id);
            }
            for l in seen.left {
                // (A message on hold stays held: qmgr holds the journal's
                // copy in place of the damaged one.)
                let held = if l.starts_with("hold/") { "; qmgr holds it in this one's place" } else { "" };
                rec.left.push(format!("{}: {l}, left for qmgr; the journal's copy goes to incoming/{held}", f.id));
            }
            let failed = match collided.or(seen.blocked) {
                Some(why) => why,
                None => match disk::publish(dirs.incoming, f.id.as_str(), payload, unsynced) {
                    Ok(()) => {
                        rec.materialised.push(f.id);
                        continue;
                    }
                    Err(e) if process_wide(&e) => return Err(e.into()),
                    Err(e) => format!("incoming/{}: {e}", f.id),
                },
            };
            rec.unwritten.push(format!("{}: not written ({failed}); its journal segment {name} stays", f.id));
            unwritten.push(Unwritten {
                id: f.id,
                payload: Some(payload.to_vec()),
                segment: *seq,
                start: f.at as u64,
                end: (f.start + f.len) as u64,
            });
        }
        damaged.push(bad);
    }
    if let Err(e) = unsynced.sync(dirs.incoming) {
        // Files that read back whole may not be on the disk: keep every
        // segment until the next boot, whatever process recovers next
        // (the error may be reported only once).
        if let Some(boot) = boot {
            let kept = Progress {
                boot,
                // (Of no master: it tells nothing of what was written out.)
                session: !session,
                seq: last,
                end: 0,
                kept_through: last.max(same_boot.map_or(0, |p| p.kept_through)),
            };
            if let Ok(w) = progress::Writer::open(dirs.journal, instance) {
                let _ = w.write(&kept);
            }
        }
        return Err(e.into());
    }
    let mut kept_through = 0;
    let mut held = Vec::new();
    let newest = segments.last().map(|(s, _)| *s);
    for ((seq, name), bad) in segments.iter().zip(damaged) {
        let waiting = unwritten.iter().filter(|u: &&Unwritten| u.segment == *seq).count();
        let kept = same_boot.filter(|p| *seq <= p.kept_through);
        if kept.is_some() || waiting > 0 {
            // Sealed from now on (the next writer starts a new segment):
            // its torn tail, never acknowledged, is cut off, or a later
            // recovery would take it for damage in a sealed segment.
            if let Some(at) = torn_tail.filter(|_| Some(*seq) == newest) {
                cut_tail(dirs.journal, name, at);
            }
        }
        if let Some(p) = kept {
            // Its queue files may read back from the page cache without
            // being on the disk: until the next boot shows what is.
            rec.kept_unsynced.push(name.clone());
            kept_through = p.kept_through;
            if waiting > 0 {
                held.push((*seq, waiting, SegmentFate::Keep));
            }
        } else if waiting > 0 {
            // The only copy of a message not written yet: the journal
            // retires it once that is written (as `*.jnl.corrupt` if it
            // is damaged).
            let fate = if bad { SegmentFate::KeepAsCorrupt } else { SegmentFate::Remove };
            held.push((*seq, waiting, fate));
        } else if bad {
            let kept = free_name(dirs.journal, &format!("{name}.corrupt"))?;
            nix::fcntl::renameat(dirs.journal, name.as_str(), dirs.journal, kept.as_str())?;
            rec.kept.push(kept);
        } else {
            disk::remove(dirs.journal, name)?;
        }
    }
    Ok((rec, Recovered { next, kept_through, unwritten, held }))
}

/// Cut segment `name` off at `at` and sync it. At worst (it fails) a
/// later recovery reports the torn tail as damage and keeps the segment
/// as `*.jnl.corrupt`: nothing is lost.
fn cut_tail(journal: BorrowedFd<'_>, name: &str, at: u64) {
    let opened =
        nix::fcntl::openat(journal, name, OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty());
    if let Ok(fd) = opened {
        let file = File::from(fd);
        let _ = file.set_len(at).and_then(|()| file.sync_all());
    }
}

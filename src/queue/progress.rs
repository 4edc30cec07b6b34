//! The journal's note of how far materialisation has got, true for one
//! boot of the machine.
//!
//! Recovery after a crash of cleanup alone (the machine still up) used
//! to write again every committed message of the unretired segments that
//! it could not find in a queue directory. A message not found had most
//! often been written out, delivered and removed meanwhile (a segment
//! lives a second or more under load), so it was delivered again. Its
//! queue file had been written: only the page cache, which the new
//! process shares with the old one, remembers that, and only until the
//! machine restarts.
//!
//! So the journal keeps, in `IIIIIIII.progress` beside its segments,
//! how far its queue files are written (the segment and the offset in it
//! where the last record written out ends; records are written out in
//! journal order) with the boot it was written in ([`BootId`]) and the
//! session of the master that started the process. It is rewritten in
//! place after each slice of queue files (before qmgr hears their names),
//! never synced. Recovery trusts it only in
//! the same boot and under the same master, that is after cleanup alone
//! died: a record it covers whose file is gone is not written again.
//! After a reboot the note may have reached the disk without the files it
//! speaks of; and stopping mta is what it takes to unmount the spool (an
//! XFS forced shutdown drops dirty pages in the same boot) or to restore
//! it from a backup: in all of these the note is ignored. Sequence
//! numbers never go below the note's, so a note left behind never covers
//! a later process's segments.
//!
//! It also carries the last segment whose queue files a failed sync
//! left of unknown durability ([`Progress::kept_through`]): in the same
//! boot, such a file reads back from the page cache as if it were on the
//! disk, so recovery keeps those segments until the next boot, when
//! reading a file shows what the disk holds.
//!
//! Trusts: nothing it reads (magic, size, CRC; anything else is no note).

use std::fs::File;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

/// First bytes of a progress note.
pub const PROGRESS_MAGIC: &[u8; 4] = b"MTJP";
/// The progress note's format version.
const VERSION: u16 = 1;
/// Longest boot identity kept.
const MAX_BOOT: usize = 64;
/// magic, version, boot length, segment, end, kept through, session,
/// boot, CRC.
pub const PROGRESS_SIZE: usize = 4 + 2 + 2 + 8 + 8 + 8 + 8 + MAX_BOOT + 4;

/// What tells one boot of the machine from every other (see
/// `sandbox::boot_id`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BootId {
    len: u8,
    bytes: [u8; MAX_BOOT],
}

impl BootId {
    /// `None` when empty or longer than 64 bytes.
    pub fn new(id: &str) -> Option<BootId> {
        let b = id.as_bytes();
        if b.is_empty() || b.len() > MAX_BOOT {
            return None;
        }
        let mut bytes = [0; MAX_BOOT];
        bytes[..b.len()].copy_from_slice(b);
        Some(BootId { len: b.len() as u8, bytes })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for BootId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BootId({})", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// How far a journal's queue files are written, in one boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub boot: BootId,
    /// The session of the master that started the writer
    /// (`ChildConfig::session`).
    pub session: u64,
    /// Every record of a segment before `seq`, and of segment `seq` up
    /// to offset `end`, has been written out as a queue file.
    pub seq: u64,
    pub end: u64,
    /// Segments up to this one (0: none) must be kept until the next
    /// boot: a sync of their queue files failed.
    pub kept_through: u64,
}

impl Progress {
    /// Whether the record of segment `seq` ending at `end` was written out.
    pub fn covers(&self, seq: u64, end: u64) -> bool {
        seq < self.seq || (seq == self.seq && end <= self.end)
    }

    pub fn encode(&self) -> [u8; PROGRESS_SIZE] {
        let mut b = [0u8; PROGRESS_SIZE];
        b[0..4].copy_from_slice(PROGRESS_MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6..8].copy_from_slice(&u16::from(self.boot.len).to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.end.to_le_bytes());
        b[24..32].copy_from_slice(&self.kept_through.to_le_bytes());
        b[32..40].copy_from_slice(&self.session.to_le_bytes());
        b[40..40 + MAX_BOOT].copy_from_slice(&self.boot.bytes);
        let crc = crc32fast::hash(&b[..PROGRESS_SIZE - 4]);
        b[PROGRESS_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The note in `b`, if it is one.
    pub fn decode(b: &[u8]) -> Option<Progress> {
        let b = b.get(..PROGRESS_SIZE)?;
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        let crc = u32::from_le_bytes(b[PROGRESS_SIZE - 4..].try_into().ok()?);
        if &b[0..4] != PROGRESS_MAGIC
            || u16::from_le_bytes([b[4], b[5]]) != VERSION
            || crc32fast::hash(&b[..PROGRESS_SIZE - 4]) != crc
        {
            return None;
        }
        let len = usize::from(u16::from_le_bytes([b[6], b[7]]));
        let boot = std::str::from_utf8(b.get(40..40 + len)?).ok().and_then(BootId::new)?;
        Some(Progress { boot, session: u64_at(32), seq: u64_at(8), end: u64_at(16), kept_through: u64_at(24) })
    }
}

/// The note's file name for journal instance `instance`.
pub fn file_name(instance: u32) -> String {
    format!("{instance:08x}.progress")
}

/// Remove the note of `instance` (one that cannot be kept true).
pub fn remove(dir: BorrowedFd<'_>, instance: u32) -> std::io::Result<()> {
    super::disk::remove(dir, &file_name(instance))
}

/// The note of `instance` in `dir`, if there is a valid one.
pub fn read(dir: BorrowedFd<'_>, instance: u32) -> Option<Progress> {
    let file = super::disk::open_read(dir, &file_name(instance)).ok()??;
    let mut b = [0u8; PROGRESS_SIZE];
    file.read_exact_at(&mut b, 0).ok()?;
    Progress::decode(&b)
}

/// The note, open for rewriting in place.
pub struct Writer {
    file: File,
}

impl Writer {
    /// Open (creating) the note of `instance` in `dir`.
    pub fn open(dir: BorrowedFd<'_>, instance: u32) -> std::io::Result<Writer> {
        let fd = openat(
            dir,
            file_name(instance).as_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        Ok(Writer { file: File::from(fd) })
    }

    /// Write `p` over the note (one `pwrite`, no sync). A failure leaves
    /// the note behind the truth, which only costs messages written again.
    pub fn write(&self, p: &Progress) -> std::io::Result<()> {
        self.file.write_all_at(&p.encode(), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note() -> Progress {
        Progress { boot: BootId::new("linux:0f3c").unwrap(), session: 99, seq: 7, end: 4096, kept_through: 3 }
    }

    #[test]
    fn a_note_decodes_to_itself_and_any_damage_makes_it_none() {
        let p = note();
        let b = p.encode();
        assert_eq!(Progress::decode(&b), Some(p));
        for i in 0..PROGRESS_SIZE {
            let mut d = b;
            d[i] ^= 0x20;
            assert_eq!(Progress::decode(&d), None, "byte {i} flipped");
        }
        assert_eq!(Progress::decode(&b[..PROGRESS_SIZE - 1]), None);
    }

    #[test]
    fn covers_the_earlier_segments_and_the_records_ending_by_its_offset() {
        let p = note();
        assert!(p.covers(6, u64::MAX));
        assert!(p.covers(7, 4096));
        assert!(!p.covers(7, 4097));
        assert!(!p.covers(8, 0));
    }

    #[test]
    fn boot_identities_are_bounded() {
        assert!(BootId::new("").is_none());
        assert!(BootId::new(&"x".repeat(65)).is_none());
        assert_eq!(BootId::new("a"), BootId::new("a"));
        assert_ne!(BootId::new("a"), BootId::new("b"));
    }
}

//! The queue: the queue file format and the intake journal.
//!
//! One message, one queue ID, one queue file: a versioned binary file
//! (`MTAQ`) holding the envelope, the DSN parameters, each recipient with
//! a status block that is updated in place, and the content
//! ([`file`]). cleanup does not write queue files on the acknowledgement
//! path: it appends messages to an intake journal and makes a whole batch
//! durable with one `fdatasync` (group commit), then materialises each
//! message as its own queue file in incoming/ and retires a journal
//! segment once the files made from it are on stable storage
//! ([`journal`]). `doc/queue-format.md` describes both formats byte by
//! byte and argues why no acknowledged message is lost in a crash.
//!
//! Every file access is relative to a directory descriptor (`openat`,
//! `renameat`, `unlinkat`), so the code runs inside Capsicum, unveil or
//! Landlock with nothing but the queue directories.
//!
//! Trusts: nothing it reads. Every length is checked against its bound and
//! against the size of the file before anything is allocated; a file that
//! fails validation is an [`Error::Corrupt`], for the caller to move to
//! corrupt/ with [`move_to_corrupt`].

pub mod disk;
pub mod file;
mod id;
pub mod journal;
mod progress;
mod recover;
mod types;

#[cfg(test)]
pub(crate) mod tests;

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, renameat};
use nix::sys::stat::fstatat;

pub use disk::{being_written as file_being_written, complete as file_complete};
pub use file::{
    ContentRange, QueueEnvelope, SlotWrite, read_content, read_envelope, read_envelope_sized, read_queue_file,
    update_status_at, verify_content,
};
pub use id::{LEN as ID_LEN, MAX_INSTANCE, QueueId, QueueIdGen};
pub use journal::{CommitError, Journal, JournalDirs, JournalOptions, Ticket, ZeroAhead};
pub use progress::BootId;
pub use recover::{Damage, Recovery};
pub use types::{
    BodyType, Client, DoneAction, Envelope, Notify, Protocol, QueueFile, Recipient, Ret, State, Status, Time,
};

/// Longest address (sender, recipient, ORCPT), in bytes.
pub const MAX_ADDRESS: usize = 1024;
/// Longest client host name or HELO argument, in bytes.
pub const MAX_HOSTNAME: usize = 1024;
/// Longest client address text, in bytes.
pub const MAX_CLIENT_ADDRESS: usize = 256;
/// Longest TLS description (version and cipher), in bytes.
pub const MAX_TLS: usize = 256;
/// Longest DSN ENVID, in bytes (RFC 3461 allows 100 characters).
pub const MAX_ENVID: usize = 1024;
/// Most recipients in one queue file.
pub const MAX_RECIPIENTS: usize = 100_000;
/// Size of the reason field of a status block; longer reasons are cut at a
/// character boundary and end in `...`.
pub const MAX_REASON: usize = 512;

/// A queue file or journal record that failed validation, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptError {
    /// Byte offset in the file (or record) where validation failed.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
}

impl CorruptError {
    pub(crate) fn new(offset: u64, reason: impl Into<String>) -> CorruptError {
        CorruptError { offset, reason: reason.into() }
    }
}

impl fmt::Display for CorruptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for CorruptError {}

/// What went wrong in the queue.
#[derive(Debug)]
pub enum Error {
    /// The disk or the kernel refused (full disk, I/O error, descriptor
    /// limit): the operation may succeed later; tell an SMTP client 451
    /// 4.3.0 and check the disk and its free space.
    Io(io::Error),
    /// A queue file or journal record failed validation: move the file to
    /// corrupt/ and keep it for inspection.
    Corrupt(CorruptError),
    /// A message that cannot be written as a queue file (a field over its
    /// bound, no recipient): refuse the message.
    Invalid(String),
}

impl Error {
    /// Whether the disk was full (ENOSPC or EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Io(e) if is_disk_full(e))
    }
}

pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == Errno::ENOSPC as i32 || code == Errno::EDQUOT as i32)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) if is_disk_full(e) => write!(f, "queue disk full ({e}): free space on the spool file system"),
            Error::Io(e) => write!(f, "queue I/O error: {e}"),
            Error::Corrupt(c) => write!(f, "queue file {c}; it belongs in corrupt/"),
            Error::Invalid(m) => write!(f, "message cannot be queued: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<Errno> for Error {
    fn from(e: Errno) -> Error {
        Error::Io(io::Error::from(e))
    }
}

impl From<CorruptError> for Error {
    fn from(e: CorruptError) -> Error {
        Error::Corrupt(e)
    }
}

/// Bytes available to an unprivileged writer on the file system of `dir`,
/// for the "refuse mail (452 4.3.1) below N free bytes" bound.
#[cfg(not(target_os = "freebsd"))]
pub fn free_space(dir: BorrowedFd<'_>) -> io::Result<u64> {
    let st = nix::sys::statvfs::fstatvfs(dir)?;
    #[allow(clippy::useless_conversion)] // the C types differ per system
    let (avail, frag) = (u64::from(st.blocks_available()), u64::from(st.fragment_size()));
    Ok(avail.saturating_mul(frag))
}

/// The same from fstatfs(2) (`f_bavail` counts blocks of `f_bsize`, which
/// is also what statvfs gives as the fragment size there): FreeBSD's C
/// library builds fstatvfs from fstatfs and an fpathconf, which needs
/// `CAP_FPATHCONF`, a right no queue directory has (it fails with
/// ENOTCAPABLE, or traps with `kern.trap_enotcap` set).
#[cfg(target_os = "freebsd")]
pub fn free_space(dir: BorrowedFd<'_>) -> io::Result<u64> {
    let st = nix::sys::statfs::fstatfs(dir)?;
    // f_bavail is signed: below zero when only root's reserve is left.
    let avail = u64::try_from(st.blocks_available()).unwrap_or(0);
    Ok(avail.saturating_mul(st.block_size()))
}

/// Whether `name` is a plain file name (no separator, not `.` or `..`).
pub(crate) fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// Move the file `name` from the directory `from` to the directory
/// `corrupt` (both by descriptor, on one file system). An older file of
/// the same name in corrupt/ is kept: the new one gets a suffix `.1`,
/// `.2`, ... Returns the name it got there.
pub fn move_to_corrupt(from: BorrowedFd<'_>, name: &str, corrupt: BorrowedFd<'_>) -> Result<String, Error> {
    if !plain_name(name) {
        return Err(Error::Invalid(format!("`{name}` is not a plain file name")));
    }
    let target = free_name(corrupt, name)?;
    renameat(from, name, corrupt, target.as_str())?;
    Ok(target)
}

/// `base`, or `base.N` for the smallest N, whichever is not taken in `dir`.
pub(crate) fn free_name(dir: BorrowedFd<'_>, base: &str) -> Result<String, Error> {
    for n in 0..1000u32 {
        let target = if n == 0 { base.to_string() } else { format!("{base}.{n}") };
        match fstatat(dir, target.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => continue,
            Err(Errno::ENOENT) => return Ok(target),
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Io(io::Error::other(format!("1000 files named {base}.N already: clean them up"))))
}

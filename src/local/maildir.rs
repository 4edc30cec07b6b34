//! Delivery into a Maildir (<https://cr.yp.to/proto/maildir.html>): the
//! message is written to a file of a unique name in `tmp/`, synced, and
//! renamed into `new/`, so a mail reader sees the whole message or
//! nothing, and no lock is needed. A batch of messages can be written
//! first and synced and renamed together ([`Pending`]). Content gets LF
//! line ends and no `From ` quoting: each message is a file of its own.
//!
//! Trusts: the caller, to run as the recipient. Nothing beneath the home
//! directory: every component of the Maildir's path, and `tmp`, `new`
//! and `cur`, is opened relative to its parent's descriptor without
//! following a symbolic link, and must be a directory owned by us.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, fsync, geteuid, unlinkat};

use super::deliver::{Envelope, Error, Scratch, copy_message, prepended_headers};

/// Deliveries made by this process: the `Q` part of unique names.
static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// A Maildir's `tmp` and `new`, opened by [`open_maildir`].
#[derive(Debug)]
pub struct Maildir {
    tmp: OwnedFd,
    new: OwnedFd,
}

/// Opens the Maildir at `path` beneath `home`, creating it (mode 0700)
/// and its `tmp`, `new` and `cur` where missing, and returns its `tmp`
/// and `new`.
///
/// `path` is relative to `home` and may have several components
/// ("Mail/inbox/"). Refused ([`Error::Unsafe`]): an absolute path, a
/// ".." component, a component that is a symbolic link, not a directory,
/// or not owned by our effective uid.
pub fn open_maildir(home: &OwnedFd, path: &str) -> Result<Maildir, Error> {
    let mut dir: Option<OwnedFd> = None;
    let within = format!("maildir {path}");
    for component in components(path)? {
        let parent = dir.as_ref().unwrap_or(home);
        let next = open_dir(parent, component, &within)?;
        dir = Some(next);
    }
    let dir = dir.ok_or_else(|| Error::Unsafe(format!("maildir path {path:?} names no directory")))?;
    let tmp = open_dir(&dir, "tmp", &within)?;
    let new = open_dir(&dir, "new", &within)?;
    open_dir(&dir, "cur", &within)?;
    Ok(Maildir { tmp, new })
}

/// The components of a Maildir path ("." and empty ones dropped).
fn components(path: &str) -> Result<Vec<&str>, Error> {
    if path.starts_with('/') {
        return Err(Error::Unsafe(format!("maildir path {path:?} is absolute, not relative to the home directory")));
    }
    if path.contains('\0') {
        return Err(Error::Unsafe(format!("maildir path {path:?} contains NUL")));
    }
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if parts.contains(&"..") {
        return Err(Error::Unsafe(format!("maildir path {path:?} has a \"..\" component")));
    }
    if parts.is_empty() {
        return Err(Error::Unsafe(format!("maildir path {path:?} names no directory")));
    }
    Ok(parts)
}

/// Opens the directory `name` beneath `parent`, creating it (0700) if
/// missing; it must be a directory, not a link, owned by us. `within`
/// names the Maildir in messages ("maildir Mail/inbox").
fn open_dir(parent: &OwnedFd, name: &str, within: &str) -> Result<OwnedFd, Error> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut created = false;
    let fd = loop {
        match openat(parent, name, flags, Mode::empty()) {
            Ok(fd) => break fd,
            Err(Errno::ENOENT) if !created => {
                created = true;
                match mkdirat(parent, name, Mode::S_IRWXU) {
                    // EEXIST: made meanwhile by a delivery running beside us.
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(Error::errno(format!("create {name} in {within}"))(e)),
                }
            }
            // A symbolic link under O_NOFOLLOW: ELOOP, or EMLINK on FreeBSD,
            // or ENOTDIR on Linux with O_DIRECTORY; ENOTDIR for a file too.
            Err(Errno::ELOOP | Errno::EMLINK | Errno::ENOTDIR) => {
                let what = if is_symlink(parent, name) { "a symbolic link" } else { "not a directory" };
                return Err(Error::Unsafe(format!("{name} in {within} is {what}")));
            }
            Err(e) => return Err(Error::errno(format!("open {name} in {within}"))(e)),
        }
    };
    let st = fstat(&fd).map_err(Error::errno(format!("stat {name} in {within}")))?;
    let me = geteuid().as_raw();
    if st.st_uid != me {
        return Err(Error::Unsafe(format!(
            "{name} in {within} belongs to uid {}, not to the recipient (uid {me})",
            st.st_uid
        )));
    }
    Ok(fd)
}

fn is_symlink(parent: &OwnedFd, name: &str) -> bool {
    fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFLNK)
}

/// How the data of the messages a batch writes to `tmp/` reaches stable
/// storage before they are renamed into `new/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataSync {
    /// An fsync of each file as soon as it is written.
    File,
    /// The files are kept open and, when the batch is committed, made
    /// stable by one `syncfs` of the Maildir's file system (Linux, on a
    /// local disk file system): it writes them all back and flushes the
    /// disk once, where an fsync of each flushes it once per message.
    FileSystem,
}

impl DataSync {
    /// For a batch written beneath `dir`: one `syncfs` on Linux where
    /// the file system is one whose `syncfs` flushes the disk (ext3/4,
    /// XFS, Btrfs, F2FS); an fsync of each file anywhere else (FUSE
    /// passes no `syncfs` on to its daemon, and the BSDs have none).
    /// (ext2 shares ext4's magic number; mounted by the old ext2 driver,
    /// whose `syncfs` does not flush the disk's cache, the data reaches
    /// the disk with the fsync of `new/` that ends the commit, before
    /// anything is reported, but not before the renames.)
    /// Before Linux 5.8, `syncfs` did not report the files' write-back
    /// errors: an fsync of each there too.
    #[cfg(target_os = "linux")]
    fn for_dir(dir: &OwnedFd) -> DataSync {
        use nix::sys::statfs::{BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, F2FS_SUPER_MAGIC, FsType, fstatfs};
        const XFS_SUPER_MAGIC: FsType = FsType(0x5846_5342);
        if !crate::queue::disk::syncfs_reports() {
            return DataSync::File;
        }
        match fstatfs(dir).map(|s| s.filesystem_type()) {
            // (ext2 and ext3 have ext4's magic number.)
            Ok(EXT4_SUPER_MAGIC | XFS_SUPER_MAGIC | BTRFS_SUPER_MAGIC | F2FS_SUPER_MAGIC) => DataSync::FileSystem,
            _ => DataSync::File,
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn for_dir(_dir: &OwnedFd) -> DataSync {
        DataSync::File
    }
}

/// The most files a batch keeps open for one `syncfs`; those written
/// beyond are fsynced one by one. (A delivery worker may hold 64
/// descriptors: this leaves room for its own and a job's.)
const KEPT_FILES: usize = 32;

/// Deliveries written to a Maildir's `tmp/` that are to be moved into
/// `new/` together, durably, by [`Pending::commit`], or removed by
/// [`Pending::abandon`].
#[derive(Debug)]
pub struct Pending {
    maildir: Maildir,
    sync: DataSync,
    written: Vec<Written>,
}

#[derive(Debug)]
struct Written {
    name: String,
    /// Open until the commit makes it stable; None: fsynced as written.
    file: Option<File>,
}

impl Pending {
    /// An empty batch for `maildir`.
    pub fn new(maildir: Maildir) -> Pending {
        Pending { sync: DataSync::for_dir(&maildir.tmp), maildir, written: Vec::new() }
    }

    /// The names in `tmp/` of the deliveries written so far.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.written.iter().map(|w| w.name.as_str())
    }

    /// Writes a message to `tmp/` ([`write_tmp`]) as part of the batch.
    pub fn write(
        &mut self,
        hostname: &str,
        env: &Envelope<'_>,
        content: &mut dyn Read,
        scratch: &mut Scratch,
    ) -> Result<(), Error> {
        let kept = self.written.iter().filter(|w| w.file.is_some()).count();
        let keep = self.sync == DataSync::FileSystem && kept < KEPT_FILES;
        let (name, file) = write_tmp(&self.maildir, hostname, env, content, scratch, !keep)?;
        self.written.push(Written { name, file: keep.then_some(file) });
        Ok(())
    }

    /// Delivers the batch durably ([`commit`]).
    pub fn commit(self) -> Result<(), Error> {
        commit(&self.maildir, &self.written)
    }

    /// Removes the batch's files from `tmp/`: they are delivered to no one.
    pub fn abandon(self) {
        for w in &self.written {
            let _ = unlinkat(&self.maildir.tmp, w.name.as_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// Delivers the messages `written` to `tmp/` durably: the data of their
/// files made stable (those kept open: by one `syncfs` when there are
/// several, and if that fails, since it reports a write-back error of any
/// file on the file system, by an fsync of each), then each renamed into
/// `new/`, then one fsync of `new/` for all of them. A reader never sees a
/// message in `new/` whose content is not on disk. If any step fails,
/// every one of them is removed from `tmp/` and `new/` again (the unlinks
/// are not synced: after a crash one may still arrive, and again when the
/// delivery is retried).
fn commit(maildir: &Maildir, written: &[Written]) -> Result<(), Error> {
    let Maildir { tmp, new } = maildir;
    if written.is_empty() {
        return Ok(());
    }
    let mut moved = 0;
    let mut steps = || -> Result<(), Error> {
        sync_data(tmp, written)?;
        for w in written {
            let name = w.name.as_str();
            renameat(tmp, name, new, name)
                .map_err(Error::errno(format!("rename tmp/{name} to new/ in the maildir")))?;
            moved += 1;
        }
        fsync(new).map_err(Error::errno("fsync new/ in the maildir"))
    };
    let done = steps();
    if done.is_err() {
        for (i, w) in written.iter().enumerate() {
            let _ = unlinkat(new, w.name.as_str(), UnlinkatFlags::NoRemoveDir);
            if i >= moved {
                let _ = unlinkat(tmp, w.name.as_str(), UnlinkatFlags::NoRemoveDir);
            }
        }
    }
    done
}

/// The data of the files `written` kept open made stable.
fn sync_data(tmp: &OwnedFd, written: &[Written]) -> Result<(), Error> {
    let open: Vec<(&str, &File)> =
        written.iter().filter_map(|w| w.file.as_ref().map(|f| (w.name.as_str(), f))).collect();
    if open.len() > 1 && sync_file_system(tmp).is_ok() {
        return Ok(());
    }
    for (name, file) in open {
        file.sync_all().map_err(Error::io(format!("fsync tmp/{name} in the maildir")))?;
    }
    Ok(())
}

/// Delivers the message into `maildir` (opened by [`open_maildir`]) on
/// its own: [`write_tmp`] with an fsync of the file, renamed into `new/`,
/// `new/` fsynced. Returns NAME. On failure nothing is left behind in
/// `tmp/` or `new/`.
pub fn deliver(
    maildir: &Maildir,
    hostname: &str,
    env: &Envelope<'_>,
    content: &mut dyn Read,
    scratch: &mut Scratch,
) -> Result<String, Error> {
    let (name, _) = write_tmp(maildir, hostname, env, content, scratch, true)?;
    commit(maildir, &[Written { name: name.clone(), file: None }])?;
    Ok(name)
}

/// Writes the message to `tmp/NAME` (a new file, mode 0600): the
/// [`prepended_headers`] and the content read from `content` (CR LF lines
/// from the queue) with LF line ends; fsynced if `sync`. Returns NAME
/// and the file. On failure nothing is left behind.
///
/// NAME is unique as the Maildir specification asks:
/// `SECS.MUSECSPPIDQN.HOST`, with N counting this process's deliveries
/// and `/` and `:` in `hostname` written `\057` and `\072`.
fn write_tmp(
    maildir: &Maildir,
    hostname: &str,
    env: &Envelope<'_>,
    content: &mut dyn Read,
    scratch: &mut Scratch,
    sync: bool,
) -> Result<(String, File), Error> {
    let headers = prepended_headers(env)?;
    let name = unique_name(hostname);
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(&maildir.tmp, name.as_str(), flags, Mode::from_bits_truncate(0o600))
        .map_err(Error::errno(format!("create tmp/{name} in the maildir")))?;
    let mut file = File::from(fd);
    let dest = format!("tmp/{name} in the maildir");
    let written = copy_message(&mut file, &headers, content, false, b"", &dest, scratch)
        .and_then(|()| if sync { file.sync_all().map_err(Error::io(format!("fsync {dest}"))) } else { Ok(()) });
    if let Err(e) = written {
        let _ = unlinkat(&maildir.tmp, name.as_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    Ok((name, file))
}

/// Every file of the file system `fd` is on, written back and flushed
/// to the disk (with write-back errors since `fd` was opened reported).
#[cfg(target_os = "linux")]
fn sync_file_system(fd: &OwnedFd) -> nix::Result<()> {
    nix::unistd::syncfs(fd)
}

/// No `syncfs` here: [`DataSync::for_dir`] never asks for it.
#[cfg(not(target_os = "linux"))]
fn sync_file_system(_fd: &OwnedFd) -> nix::Result<()> {
    Err(Errno::ENOSYS)
}

/// A name no other delivery, here or on another host sharing the
/// Maildir, can have: time to the microsecond, process ID, a count of
/// this process's deliveries, and the host name.
fn unique_name(hostname: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let n = DELIVERIES.fetch_add(1, Ordering::Relaxed);
    // (A worker neither forks nor is forked while it delivers: its
    // process ID, asked once, stays true.)
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    format!("{}.M{}P{pid}Q{n}.{}", now.as_secs(), now.subsec_micros(), host_part(hostname))
}

/// The host name as a file name part: `/`, `:` (which separates the
/// info in `cur/`), and so that the escape stays unambiguous `\` and
/// control characters, as backslash and three octal digits.
fn host_part(hostname: &str) -> String {
    if hostname.is_empty() {
        return String::from("localhost");
    }
    let mut out = String::with_capacity(hostname.len());
    for c in hostname.chars() {
        if c == '/' || c == ':' || c == '\\' || c.is_ascii_control() {
            out.push_str(&format!("\\{:03o}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

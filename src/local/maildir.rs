//! Delivery into a Maildir (<https://cr.yp.to/proto/maildir.html>): the
//! message is written to a file of a unique name in `tmp/`, synced, and
//! renamed into `new/`, so a mail reader sees the whole message or
//! nothing, and no lock is needed. Content gets LF line ends and no
//! `From ` quoting: each message is a file of its own.
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

/// Delivers the message into `maildir` (opened by [`open_maildir`]):
/// the [`prepended_headers`] and the content read from `content` (CR LF
/// lines from the queue) with LF line ends, written to `tmp/NAME` (a new
/// file, mode 0600), fsynced, renamed to `new/NAME`, and, if `sync`,
/// `new/` fsynced (otherwise the caller does it for several deliveries
/// at once, [`sync_new`]). Returns NAME. On failure nothing is left
/// behind in `tmp/` or `new/`.
///
/// NAME is unique as the Maildir specification asks:
/// `SECS.MUSECSPPIDQN.HOST`, with N counting this process's deliveries
/// and `/` and `:` in `hostname` written `\057` and `\072`.
pub fn deliver(
    maildir: &Maildir,
    hostname: &str,
    env: &Envelope<'_>,
    content: &mut dyn Read,
    scratch: &mut Scratch,
    sync: bool,
) -> Result<String, Error> {
    let headers = prepended_headers(env)?;
    let Maildir { tmp, new } = maildir;
    let name = unique_name(hostname);
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(tmp, name.as_str(), flags, Mode::from_bits_truncate(0o600))
        .map_err(Error::errno(format!("create tmp/{name} in the maildir")))?;
    let written = write(File::from(fd), &headers, content, &name, scratch).and_then(|()| {
        renameat(tmp, name.as_str(), new, name.as_str())
            .map_err(Error::errno(format!("rename tmp/{name} to new/ in the maildir")))
    });
    if let Err(e) = written {
        let _ = unlinkat(tmp, name.as_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    if sync {
        sync_new(maildir, std::slice::from_ref(&name))?;
    }
    Ok(name)
}

/// Makes the renames of the deliveries `names` (and any other made
/// before) into `new/` durable with one fsync of `new/`. If that fails,
/// they are not known to be on disk: they are taken back out of `new/`
/// (their deliveries are retried, and must not arrive twice).
pub fn sync_new(maildir: &Maildir, names: &[String]) -> Result<(), Error> {
    if let Err(e) = fsync(&maildir.new) {
        for name in names {
            let _ = unlinkat(&maildir.new, name.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        return Err(Error::errno("fsync new/ in the maildir")(e));
    }
    Ok(())
}

fn write(
    mut file: File,
    headers: &[u8],
    content: &mut dyn Read,
    name: &str,
    scratch: &mut Scratch,
) -> Result<(), Error> {
    let dest = format!("tmp/{name} in the maildir");
    copy_message(&mut file, headers, content, false, b"", &dest, scratch)?;
    file.sync_all().map_err(Error::io(format!("fsync {dest}")))
}

/// A name no other delivery, here or on another host sharing the
/// Maildir, can have: time to the microsecond, process ID, a count of
/// this process's deliveries, and the host name.
fn unique_name(hostname: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let n = DELIVERIES.fetch_add(1, Ordering::Relaxed);
    format!("{}.M{}P{}Q{n}.{}", now.as_secs(), now.subsec_micros(), std::process::id(), host_part(hostname))
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

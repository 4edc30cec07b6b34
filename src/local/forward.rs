//! Reading a user's `.forward` (or an `:include:` file it names), as that
//! user: the program `local` run by its root parent with the user's ids as
//!
//! ```text
//! local forward HOME FILE confined|unconfined
//! ```
//!
//! where FILE is `.forward` (in HOME) or an absolute path. It opens the
//! file with the user's rights only, so no file the user could not read
//! is ever read for them, checks that it is safe to obey, enters a
//! sandbox that holds that one descriptor, and writes the content to
//! standard error (a pipe to the parent, which parses it).
//!
//! Ignored (exit 77 with the reason, which the parent logs as a warning):
//! - a file not owned by the user or root, not a regular file, or
//!   writable by group or others;
//! - a file in a directory (the home directory for `.forward`) that is
//!   writable by group or others, or owned by someone else than the user
//!   or root;
//! - a symbolic link into a directory the user does not own (one link is
//!   followed; a link to a link is refused);
//! - more than [`MAX_FORWARD_SIZE`] bytes.
//!
//! Exit 66: there is no such file (nor a home directory). Exit 75: it
//! could not be read for another reason (try again later).
//!
//! Trusts: nothing in the file system but the kernel's answers.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};
use sandbox::Grant;

use super::agent::{EX_OK, EX_SOFTWARE, EX_TEMPFAIL};

/// The largest `.forward` or `:include:` file obeyed.
pub const MAX_FORWARD_SIZE: u64 = 1 << 20;
/// No such file.
pub const EX_NOINPUT: i32 = 66;
/// Not safe to obey: ignored.
pub const EX_NOPERM: i32 = 77;

fn quit(code: i32, reason: &str) -> ! {
    let mut e = std::io::stderr();
    let _ = writeln!(e, "{reason}");
    let _ = e.flush();
    std::process::exit(code);
}

/// Why a file is not obeyed, if it is not.
pub fn unsafe_file(st: &FileStat, me: u32) -> Option<&'static str> {
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Some("not a regular file");
    }
    if st.st_uid != me && st.st_uid != 0 {
        return Some("owned by another user");
    }
    if st.st_mode & 0o022 != 0 {
        return Some("writable by group or others");
    }
    None
}

/// Why a directory holding such a file is not safe, if it is not.
pub fn unsafe_dir(st: &FileStat, me: u32) -> Option<&'static str> {
    if st.st_uid != me && st.st_uid != 0 {
        return Some("in a directory owned by another user");
    }
    if st.st_mode & 0o022 != 0 {
        return Some("in a directory writable by group or others");
    }
    None
}

fn open_dir(path: &Path) -> Result<OwnedFd, Errno> {
    open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
}

fn open_leaf(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(dir, name, OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty())
}

fn errno_exit(what: &Path, e: Errno) -> ! {
    match e {
        Errno::ENOENT | Errno::ENOTDIR => quit(EX_NOINPUT, &format!("{}: no such file", what.display())),
        Errno::EACCES | Errno::EPERM => quit(EX_NOPERM, &format!("{}: not readable by the user", what.display())),
        e => quit(EX_TEMPFAIL, &format!("{}: {}", what.display(), e.desc())),
    }
}

/// Open `name` in `dir` (`dir_path`), following one symbolic link when it
/// leads into a directory the user owns.
fn open_checked(dir: &OwnedFd, dir_path: &Path, name: &OsStr, me: u32) -> (OwnedFd, PathBuf) {
    let path = dir_path.join(name);
    match fstat(dir) {
        Ok(st) => {
            if let Some(why) = unsafe_dir(&st, me) {
                quit(EX_NOPERM, &format!("{}: {why}", path.display()));
            }
        }
        Err(e) => errno_exit(dir_path, e),
    }
    match open_leaf(dir, name) {
        Ok(fd) => (fd, path),
        // Linux says ELOOP for a symbolic link under O_NOFOLLOW, FreeBSD EMLINK.
        Err(Errno::ELOOP | Errno::EMLINK) => {
            let target = readlinkat(dir, name).unwrap_or_else(|e| errno_exit(&path, e));
            let target = dir_path.join(PathBuf::from(target));
            let (Some(parent), Some(leaf)) = (target.parent(), target.file_name()) else {
                quit(EX_NOPERM, &format!("{}: a symbolic link to {}", path.display(), target.display()));
            };
            let pdir = open_dir(parent).unwrap_or_else(|e| errno_exit(parent, e));
            match fstat(&pdir) {
                Ok(st) if st.st_uid == me && st.st_mode & 0o022 == 0 => {}
                Ok(_) => quit(
                    EX_NOPERM,
                    &format!(
                        "{}: a symbolic link into {}, which the user does not own",
                        path.display(),
                        parent.display()
                    ),
                ),
                Err(e) => errno_exit(parent, e),
            }
            match open_leaf(&pdir, leaf) {
                Ok(fd) => (fd, target),
                Err(Errno::ELOOP | Errno::EMLINK) => {
                    quit(EX_NOPERM, &format!("{}: a symbolic link to a symbolic link", path.display()))
                }
                Err(e) => errno_exit(&target, e),
            }
        }
        Err(e) => errno_exit(&path, e),
    }
}

/// `local forward HOME FILE confined|unconfined`: never returns.
pub fn main(args: &[String]) -> ! {
    let [home, file, confinement] = args else { quit(EX_SOFTWARE, "local forward: wrong arguments") };
    let unconfined = super::child::unconfined(confinement);
    let me = nix::unistd::getuid().as_raw();
    let file = Path::new(file.as_str());
    let (dir_path, name) = if file.is_absolute() {
        match (file.parent(), file.file_name()) {
            (Some(d), Some(n)) => (d.to_path_buf(), n),
            _ => quit(EX_NOPERM, &format!("{}: not a file name", file.display())),
        }
    } else if file.as_os_str().as_bytes() == b".forward" {
        (PathBuf::from(home.as_str()), file.as_os_str())
    } else {
        quit(EX_SOFTWARE, "local forward: FILE is .forward or an absolute path")
    };
    let dir = open_dir(&dir_path).unwrap_or_else(|e| errno_exit(&dir_path, e));
    let (fd, path) = open_checked(&dir, &dir_path, name, me);
    drop(dir);
    let st = fstat(&fd).unwrap_or_else(|e| errno_exit(&path, e));
    if let Some(why) = unsafe_file(&st, me) {
        quit(EX_NOPERM, &format!("{}: {why}", path.display()));
    }
    if st.st_size as u64 > MAX_FORWARD_SIZE {
        quit(EX_NOPERM, &format!("{}: larger than {MAX_FORWARD_SIZE} bytes", path.display()));
    }
    super::child::confine(&[Grant::File { fd: fd.as_raw_fd(), write: false }], unconfined);
    let mut text = Vec::new();
    if let Err(e) = File::from(fd).take(MAX_FORWARD_SIZE + 1).read_to_end(&mut text) {
        quit(EX_TEMPFAIL, &format!("{}: {e}", path.display()));
    }
    if text.len() as u64 > MAX_FORWARD_SIZE {
        quit(EX_NOPERM, &format!("{}: larger than {MAX_FORWARD_SIZE} bytes", path.display()));
    }
    let mut e = std::io::stderr();
    if e.write_all(&text).and_then(|_| e.flush()).is_err() {
        std::process::exit(EX_TEMPFAIL);
    }
    std::process::exit(EX_OK);
}

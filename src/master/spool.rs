//! The spool tree, master's lock, the control socket and the checks on
//! the programs master starts. All of this runs as root (or as the
//! invoking user in development mode) before any child exists.
//!
//! Trusts: the configuration. Checks the file system it finds.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag, open};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, chown};

use crate::roles::QUEUE_DIRS;

/// Who owns the queue: the configured user when master is root, the
/// invoking user otherwise.
#[derive(Clone, Debug)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// The submission group (postdrop's, set-gid): maildrop/ belongs to it
    /// and pickup holds it. The invoking user's group when unprivileged.
    pub submission_gid: u32,
    /// Master runs as root and children change to this user.
    pub privileged: bool,
}

impl Owner {
    /// Resolve the configured user (root) or take the invoking user.
    pub fn resolve(user: &str, group: &str) -> Result<Owner, String> {
        if !nix::unistd::geteuid().is_root() {
            let gid = nix::unistd::getegid().as_raw();
            return Ok(Owner { uid: nix::unistd::geteuid().as_raw(), gid, submission_gid: gid, privileged: false });
        }
        let submission_gid = match nix::unistd::Group::from_name(group) {
            Ok(Some(g)) if g.gid.as_raw() == 0 => {
                return Err(format!("group `{group}` is root's; the submission group must be its own"));
            }
            Ok(Some(g)) => g.gid.as_raw(),
            Ok(None) => {
                return Err(format!(
                    "group `{group}` does not exist; create it (e.g. `pw groupadd {group}` on FreeBSD, \
                     `groupadd -r {group}` on Linux) or set `submission_group`"
                ));
            }
            Err(e) => return Err(format!("looking up group `{group}`: {e}")),
        };
        match nix::unistd::User::from_name(user) {
            Ok(Some(u)) if u.uid.is_root() => Err(format!("user `{user}` is root; the mail user must be unprivileged")),
            Ok(Some(u)) if u.gid.as_raw() == submission_gid => {
                Err(format!("user `{user}`'s own group is the submission group `{group}`; they must differ"))
            }
            Ok(Some(u)) => Ok(Owner { uid: u.uid.as_raw(), gid: u.gid.as_raw(), submission_gid, privileged: true }),
            Ok(None) => Err(format!(
                "user `{user}` does not exist; create it (e.g. `pw useradd {user} -d /nonexistent -s /sbin/nologin` \
                 on FreeBSD, `useradd -r -s /usr/sbin/nologin {user}` on Linux) or set `user`"
            )),
            Err(e) => Err(format!("looking up user `{user}`: {e}")),
        }
    }
}

/// The exclusive lock a running master holds on SPOOL/master.lock, which
/// holds its pid for the message a second master gives.
pub struct Lock {
    lock: Flock<File>,
}

impl Lock {
    /// Write this process's pid into the lock file: again after
    /// daemonizing (the lock goes on with the descriptor, the pid does not).
    pub fn record_pid(&mut self) -> Result<(), String> {
        let l = &mut self.lock;
        l.set_len(0)
            .and_then(|()| l.rewind())
            .and_then(|()| writeln!(l, "{}", std::process::id()))
            .and_then(|()| l.sync_data())
            .map_err(|e| format!("master.lock: {e}"))
    }
}

/// Take the master lock, or say which process holds it.
pub fn lock(spool: &Path) -> Result<Lock, String> {
    let path = spool.join("master.lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => {
            let mut lock = Lock { lock: l };
            let _ = lock.record_pid();
            Ok(lock)
        }
        Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            Err(format!("another master is running (pid {}) and holds {}", pid.trim(), path.display()))
        }
        Err((_, e)) => Err(format!("{}: {e}", path.display())),
    }
}

/// Check the spool tree as it is, changing nothing (for `mta -n`; start
/// makes the same checks as it prepares the tree): SPOOL, when it
/// exists, as [`prepare`] wants it, and each of its directories that
/// exists as [`prepare_dir`] does.
pub fn check(spool: &Path, owner: &Owner) -> Result<(), String> {
    if fs::symlink_metadata(spool).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(());
    }
    check_root(spool, owner)?;
    let names = QUEUE_DIRS.iter().chain([&crate::roles::JOURNAL_DIR, &crate::roles::MAILDROP_DIR]);
    for name in names {
        let dir = spool.join(name);
        if fs::symlink_metadata(&dir).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
            continue;
        }
        check_dir(&dir, owner)?;
    }
    Ok(())
}

/// SPOOL: a directory, root's when master is root, not group- or
/// world-writable.
fn check_root(spool: &Path, owner: &Owner) -> Result<(), String> {
    let meta = fs::symlink_metadata(spool).map_err(|e| format!("{}: {e}", spool.display()))?;
    if !meta.is_dir() {
        return Err(format!("{}: not a directory", spool.display()));
    }
    if owner.privileged && meta.uid() != 0 {
        return Err(format!("{}: must be owned by root", spool.display()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!("{}: must not be group- or world-writable", spool.display()));
    }
    Ok(())
}

/// One directory of the spool: a directory, and when master is not
/// root the invoking user's (root makes it the mail user's).
fn check_dir(dir: &Path, owner: &Owner) -> Result<(), String> {
    let m = fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !m.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    if !owner.privileged && m.uid() != owner.uid {
        return Err(format!("{}: owned by uid {}, not by the user running mta", dir.display(), m.uid()));
    }
    Ok(())
}

/// Create or check the spool tree: SPOOL (root, 0755) and the queue
/// directories (owner's, 0700). Returns descriptors of the queue
/// directories in QUEUE_DIRS order.
pub fn prepare(spool: &Path, owner: &Owner) -> Result<Vec<OwnedFd>, String> {
    check_root(spool, owner)?;
    // Set at each start, not left to the umask of whoever started the
    // first master: postdrop, as the submitting user, passes through it
    // to maildrop/. (A spool the invoking user does not own is left.)
    let ours = fs::symlink_metadata(spool).is_ok_and(|m| m.uid() == owner.uid);
    if owner.privileged || ours {
        fs::set_permissions(spool, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", spool.display()))?;
    }
    QUEUE_DIRS.iter().map(|name| prepare_dir(spool, name, owner)).collect()
}

/// Create or check one directory of the spool, owned by the mail user,
/// mode 0700, and open it.
pub fn prepare_dir(spool: &Path, name: &str, owner: &Owner) -> Result<OwnedFd, String> {
    prepare_dir_as(spool, name, owner, owner.gid, 0o700)
}

/// maildrop/: the mail user's, group the submission group, mode 2730 (new
/// files take the directory's group on every system), so
/// that postdrop (set-gid) can create files in it but not list it, and
/// nobody else can do either.
pub fn prepare_maildrop(spool: &Path, owner: &Owner) -> Result<OwnedFd, String> {
    // OpenBSD has no search-only open (O_PATH, O_SEARCH) for postdrop to
    // hold the directory by: there the group may list it too.
    let mode = if cfg!(target_os = "openbsd") { 0o2770 } else { 0o2730 };
    prepare_dir_as(spool, crate::roles::MAILDROP_DIR, owner, owner.submission_gid, mode)
}

fn prepare_dir_as(spool: &Path, name: &str, owner: &Owner, gid: u32, mode: u32) -> Result<OwnedFd, String> {
    {
        let dir = spool.join(name);
        make_dir(&dir, mode)?;
        check_dir(&dir, owner)?;
        if owner.privileged {
            chown(&dir, Some(Uid::from_raw(owner.uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
        open(&dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW, Mode::empty())
            .map_err(|e| format!("{}: {e}", dir.display()))
    }
}

/// Create the spool directory if it is missing (root's, 0755).
pub fn make_spool_root(spool: &Path) -> Result<(), String> {
    make_dir(spool, 0o755)
}

fn make_dir(path: &Path, mode: u32) -> Result<(), String> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("creating {}: {e}", path.display())),
    }
}

/// Bind the control socket (mode 0666: peer credentials decide access).
/// A stale socket left by a dead master is replaced; master holds the
/// spool lock, so no live master owns it.
pub fn bind_control(path: &Path) -> Result<UnixListener, String> {
    if check_control(path)? {
        fs::remove_file(path).map_err(|e| format!("removing stale {}: {e}", path.display()))?;
    }
    let l = UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    Ok(l)
}

/// Check the control socket's path, changing nothing: nothing there but
/// perhaps a socket (true then). A file of another kind is not replaced.
pub fn check_control(path: &Path) -> Result<bool, String> {
    use std::os::unix::fs::FileTypeExt;
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => Ok(true),
        Ok(_) => Err(format!("{}: exists and is not a socket", path.display())),
        Err(_) => Ok(false),
    }
}

/// Check a program master is about to start: it must exist, be a regular
/// executable file, and when master is root be owned by root and not
/// writable by group or others.
pub fn check_program(path: &Path, privileged: bool) -> Result<(), String> {
    let m = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !m.is_file() || m.mode() & 0o111 == 0 {
        return Err(format!("{}: not an executable file", path.display()));
    }
    if privileged {
        if m.uid() != 0 {
            return Err(format!("{}: not owned by root; refusing to run it as root's child", path.display()));
        }
        if m.mode() & 0o022 != 0 {
            return Err(format!("{}: group- or world-writable; refusing to run it", path.display()));
        }
    }
    Ok(())
}

/// Write the pid file.
pub fn write_pidfile(path: &Path) -> Result<(), String> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    writeln!(f, "{}", std::process::id()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

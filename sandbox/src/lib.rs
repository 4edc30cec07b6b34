//! mta's sandbox: the one crate with platform FFI.
//!
//! A process role describes what it may do as a [`Policy`] (plain data,
//! the same value on every system), and [`enter`] applies it with the
//! system's own mechanism: Capsicum on FreeBSD, unveil+pledge on OpenBSD,
//! Landlock+seccomp+no_new_privs on Linux. `enter` returns a [`Sandboxed`]
//! token that serving code takes as an argument, so code that serves before
//! the sandbox is entered does not compile.
//!
//! The crate also holds the fenced process helpers: [`spawn`] (fork and
//! exec a program with its descriptors at known numbers, a clean
//! environment, resource limits and reduced credentials) and [`fork_wait`]
//! and [`fork_wait_with`] (run a closure in a forked child, for tests; the
//! latter with descriptors placed at 3, 4, ... as `spawn` places them),
//! and [`daemonize`] (become a daemon while the process started from the
//! shell waits to hear whether the start-up succeeded).
//! [`fds`] claims descriptors by number. Every `unsafe` block
//! carries a `// SAFETY:` argument.
//!
//! Trusts: its caller (the policy is the caller's word). Distrusts nothing
//! else, since it parses no input.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

mod daemon;
pub mod fds;
pub mod reaper;
mod rights;
mod spawn;
mod threads;
mod trace;
mod users;

#[cfg(target_os = "freebsd")]
mod freebsd;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "openbsd")]
mod openbsd;

pub use daemon::{Detached, daemonize};
pub use rights::{CapRight, MODIFYING_RIGHTS, capsicum_rights, pledge_promises, policy_rights, unveil_paths};
pub use spawn::{Credentials, Limit, Resource, Spawn, default_sigchld, fork_wait, fork_wait_with, spawn};
pub use trace::no_trace;
pub use users::{OneThread, one_thread, user_names};

/// What a role may do with one inherited directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirAccess {
    /// List and read files beneath it.
    Read,
    /// Read, create, write, truncate, rename within, unlink, make and
    /// remove subdirectories, fsync.
    ReadWrite,
}

/// One inherited descriptor and what the role may do with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// A directory, named by its descriptor and by its path (unveil
    /// takes paths). With `watch`, the role waits for entries to arrive
    /// in it: a kqueue `EVFILT_VNODE` filter on the descriptor, which
    /// Capsicum allows with `CAP_EVENT` (and pledge with "stdio"). On
    /// Linux an inotify watch takes a path, so the role adds it before
    /// entering; the field changes nothing there. With `times` (and
    /// `ReadWrite`), the role may set the times of files beneath it
    /// (futimens: Capsicum `CAP_FUTIMES`, pledge "fattr"; nothing more
    /// on Linux, where writing allows it). With `modes` (and
    /// `ReadWrite`), the role may change the mode of files beneath it
    /// (fchmod: Capsicum `CAP_FCHMOD`, pledge "fattr"; nothing more on
    /// Linux).
    Dir { fd: RawFd, path: PathBuf, access: DirAccess, watch: bool, times: bool, modes: bool },
    /// A regular file opened before entering.
    File { fd: RawFd, write: bool },
    /// A listening stream socket (TCP or UNIX). Accepted sockets inherit
    /// its rights on FreeBSD, so it carries what a session needs: read,
    /// write, shutdown, getpeername, getsockname, socket options, event,
    /// fstat.
    Listener { fd: RawFd },
    /// A connected socket: an IPC channel (SOCK_SEQPACKET) that may
    /// carry descriptors both ways, or a connected stream.
    Channel { fd: RawFd },
    /// A directory (`path`) holding pathname UNIX sockets the role
    /// connects to, by name (`sockets`): with [`connect_unix`], the
    /// connector reaches the LMTP servers listening there and nothing
    /// else beneath it. FreeBSD: the descriptor is limited to lookup and
    /// `CAP_CONNECTAT`, and [`connect_unix`] uses connectat(2) on it.
    /// OpenBSD: each socket is unveiled "rw" and the role pledges "unix".
    /// Linux: AF_UNIX sockets may be created, and Landlock (from ABI 9,
    /// where it governs connecting to pathname sockets) allows connecting
    /// beneath the directory only. On Linux the descriptor may be an
    /// `O_PATH` one.
    SocketDir { fd: RawFd, path: PathBuf, sockets: Vec<OsString> },
}

impl Grant {
    pub fn fd(&self) -> RawFd {
        match self {
            Grant::Dir { fd, .. }
            | Grant::File { fd, .. }
            | Grant::Listener { fd }
            | Grant::Channel { fd }
            | Grant::SocketDir { fd, .. } => *fd,
        }
    }
}

/// Outbound network access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// No new sockets at all: only inherited or received descriptors.
    None,
    /// May create AF_INET/AF_INET6 sockets, connect them and resolve
    /// names (the connector).
    Connect,
}

/// A role's whole sandbox, one declarative value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Role name, for messages.
    pub role: &'static str,
    /// Inherited descriptors. Descriptors not listed here are not
    /// restricted by Capsicum rights and should not exist.
    pub grants: Vec<Grant>,
    /// Outbound network access.
    pub net: Net,
    /// May fork (and so create processes).
    pub fork: bool,
    /// May execute programs. Implies no no_new_privs on Linux.
    pub exec: bool,
    /// May change user and group ids (setgroups, setgid, setuid).
    pub change_uid: bool,
    /// May open files by path outside the granted directories (a role
    /// that does not enter capability mode, e.g. local's root parent).
    pub open_paths: Vec<PathBuf>,
    /// No file-system confinement at all: no Landlock ruleset and no
    /// unveil (seccomp or pledge still apply). Only for local's root
    /// parent, whose children open mailboxes and files wherever the
    /// recipients' homes are and confine themselves to their target
    /// before they write (a Landlock domain or unveil list would bind
    /// them too, and can only narrow).
    pub whole_fs: bool,
    /// The whole file system readable by path, and nothing in it
    /// changed: Linux, a Landlock rule reading beneath "/" (with its
    /// UNIX sockets reachable from ABI 9) and a filter that refuses every
    /// call changing a file by path, modes, owners, times and attributes
    /// included, which Landlock does not govern; OpenBSD, "/" unveiled
    /// "r" and "rpath"; FreeBSD, no capability mode. For a process that
    /// only looks users up through the C library, whose name service
    /// modules read their configuration and libraries wherever they are
    /// (master's lister of directory users).
    pub read_fs: bool,
    /// May take advisory locks (flock(2), fcntl(2) locks) on files it
    /// holds or opens beneath its read-write directory grants: pledge
    /// "flock" on OpenBSD, `CAP_FLOCK` on those descriptors on FreeBSD;
    /// nothing on Linux, where locking is not filtered. (local's
    /// delivery children lock mailboxes inside their sandbox.)
    pub locks: bool,
    /// May create connected AF_UNIX socket pairs (socketpair(2)), to
    /// talk to children it starts; no other sockets unless `net` says.
    /// Linux lets the filter pass socketpair(AF_UNIX); OpenBSD's
    /// "stdio" and FreeBSD allow it anyway. (local's root parent and
    /// its delivery workers.)
    pub socketpairs: bool,
    /// May create AF_UNIX stream sockets and connect them anywhere, for
    /// the C library's name services: getpwnam(3) and getgrouplist(3)
    /// ask nscd, sssd, nslcd or systemd-userdbd over such a socket when
    /// nsswitch.conf names them (directory users). Linux lets the filter
    /// pass socket(AF_UNIX, SOCK_STREAM) and connect(2) (no other
    /// family, no datagram sockets); on OpenBSD the "getpw" promise
    /// covers YP, the only name service there; on FreeBSD a policy with
    /// it does not enter capability mode. Only with `whole_fs` or
    /// `read_fs` ([`enter`] refuses it otherwise). (local's root parent,
    /// which also forks, execs and changes ids: a narrower filter would
    /// buy nothing there; master's lister of directory users.)
    pub name_service: bool,
    /// May start threads: on Linux the filter lets clone(2) pass with
    /// CLONE_THREAD (never with a namespace flag, nor without
    /// CLONE_THREAD unless `fork`); OpenBSD's "stdio" and FreeBSD's
    /// capability mode allow threads anyway. Threads started after
    /// [`enter`] are in the same sandbox: Landlock's domain and the
    /// seccomp filter pass to them, and pledge, unveil and Capsicum bind
    /// the whole process. (The lookup role, whose getpwnam(3) calls block:
    /// a few run at once, so that one slow name does not hold up the
    /// others.)
    pub threads: bool,
}

impl Policy {
    /// A policy with no grants and nothing allowed.
    pub fn new(role: &'static str) -> Policy {
        Policy {
            role,
            grants: Vec::new(),
            net: Net::None,
            fork: false,
            exec: false,
            change_uid: false,
            open_paths: Vec::new(),
            whole_fs: false,
            read_fs: false,
            locks: false,
            socketpairs: false,
            name_service: false,
            threads: false,
        }
    }
}

/// Proof that the calling process is inside its sandbox (or was
/// explicitly allowed to run unconfined). Serving code takes one.
#[derive(Debug)]
pub struct Sandboxed {
    role: &'static str,
    confined: bool,
}

impl Sandboxed {
    pub fn role(&self) -> &'static str {
        self.role
    }
    /// False only when the configuration allowed running unconfined and
    /// the sandbox could not be entered.
    pub fn confined(&self) -> bool {
        self.confined
    }
}

/// What went wrong entering a sandbox.
#[derive(Debug)]
pub enum Error {
    /// More than one thread exists: the sandbox would not cover them.
    MultiThreaded(usize),
    /// A system call failed; `what` names the step.
    Sys { what: &'static str, errno: i32 },
    /// The kernel lacks the mechanism (e.g. Landlock disabled).
    Unsupported(&'static str),
    /// The policy cannot be expressed on this system.
    Policy(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::MultiThreaded(n) => {
                write!(f, "process has {n} threads; the sandbox must be entered before any thread exists")
            }
            Error::Sys { what, errno } => write!(f, "{what}: {}", std::io::Error::from_raw_os_error(*errno)),
            Error::Unsupported(what) => write!(f, "kernel does not support {what}"),
            Error::Policy(m) => write!(f, "policy: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Whether running outside the sandbox is allowed when it cannot be
/// entered. Only the administrator's configuration sets `Allowed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unconfined {
    Refused,
    Allowed,
}

/// Apply `policy` to the calling process. Refuses if the process has
/// more than one thread. On failure with `Unconfined::Allowed`, returns
/// an unconfined token (the caller logs that at every start); otherwise
/// returns the error and the caller exits.
pub fn enter(policy: &Policy, unconfined: Unconfined) -> Result<Sandboxed, Error> {
    let result = threads::require_single().and_then(|()| check(policy)).and_then(|()| platform_enter(policy));
    match result {
        Ok(()) => Ok(Sandboxed { role: policy.role, confined: true }),
        Err(e) if unconfined == Unconfined::Allowed && !matches!(e, Error::MultiThreaded(_)) => {
            Ok(Sandboxed { role: policy.role, confined: false })
        }
        Err(e) => Err(e),
    }
}

/// Refuse a policy whose parts cannot all hold: `name_service` only with
/// `whole_fs` or `read_fs`, since a narrower file-system sandbox
/// (Landlock from ABI 9, unveil) would keep the name services' sockets
/// and files out of reach, which the policy says are reachable; and not
/// both of these, one of which says nothing may be changed by path and
/// the other that anything may.
fn check(policy: &Policy) -> Result<(), Error> {
    if policy.name_service && !policy.whole_fs && !policy.read_fs {
        return Err(Error::Policy(format!("{}: name_service needs whole_fs or read_fs", policy.role)));
    }
    if policy.whole_fs && policy.read_fs {
        return Err(Error::Policy(format!("{}: whole_fs and read_fs together", policy.role)));
    }
    Ok(())
}

/// Restrict a descriptor received after entering (e.g. a peer channel
/// passed by SCM_RIGHTS) to the rights its grant kind needs. A no-op
/// where descriptors carry no rights (Linux, OpenBSD).
pub fn limit_received(grant: &Grant) -> Result<(), Error> {
    #[cfg(target_os = "freebsd")]
    {
        freebsd::limit(grant)
    }
    #[cfg(not(target_os = "freebsd"))]
    {
        let _ = grant;
        Ok(())
    }
}

/// Connect a new AF_UNIX stream socket to the socket `name` in the
/// directory held by `dir` (a [`Grant::SocketDir`]; `dir_path` is its
/// path). FreeBSD connects with connectat(2) on the descriptor, which
/// Capsicum allows with `CAP_CONNECTAT` even in capability mode; the
/// other systems connect to `dir_path/name`, which their sandboxes judge
/// by path (Landlock beneath the directory, unveil by name). The socket
/// is non-blocking while it connects, so a server whose listen queue is
/// full makes it fail at once (EAGAIN or ECONNREFUSED) rather than block
/// the caller; it is returned blocking, close-on-exec.
pub fn connect_unix(dir: BorrowedFd<'_>, dir_path: &Path, name: &OsStr) -> io::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, socket};
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name);
    if bytes.is_empty() || bytes.contains(&b'/') || bytes == b"." || bytes == b".." {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a file name in the socket directory"));
    }
    let sock = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
        .map_err(io::Error::from)?;
    #[cfg(target_os = "freebsd")]
    {
        let _ = dir_path;
        let addr = UnixAddr::new(name).map_err(io::Error::from)?;
        freebsd::connectat(dir, &sock, &addr)?;
    }
    #[cfg(not(target_os = "freebsd"))]
    {
        let _ = dir;
        let addr = UnixAddr::new(&dir_path.join(name)).map_err(io::Error::from)?;
        nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&sock), &addr).map_err(io::Error::from)?;
    }
    let stream = std::os::unix::net::UnixStream::from(sock);
    stream.set_nonblocking(false)?;
    Ok(OwnedFd::from(stream))
}

fn platform_enter(policy: &Policy) -> Result<(), Error> {
    #[cfg(target_os = "linux")]
    {
        linux::enter(policy)
    }
    #[cfg(target_os = "freebsd")]
    {
        freebsd::enter(policy)
    }
    #[cfg(target_os = "openbsd")]
    {
        openbsd::enter(policy)
    }
    #[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd")))]
    {
        let _ = policy;
        Err(Error::Unsupported("a sandbox on this system"))
    }
}

/// What the running kernel offers, for the test command's banner and
/// for `mta -v`: e.g. "landlock ABI 7, seccomp available".
pub fn describe_kernel() -> String {
    #[cfg(target_os = "linux")]
    {
        linux::describe()
    }
    #[cfg(target_os = "freebsd")]
    {
        String::from("capsicum")
    }
    #[cfg(target_os = "openbsd")]
    {
        String::from("pledge and unveil")
    }
    #[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd")))]
    {
        String::from("no sandbox")
    }
}

/// What tells this boot of the machine from every other: the kernel's
/// random boot ID on Linux, the boot time to the microsecond on the BSDs
/// (`kern.boottime`; stepping the clock moves it, which only makes a boot
/// look new). `None` if it cannot be read. The queue's journal keeps it
/// beside what it knows to be true only until the next boot (the page
/// cache is the same one after a process restart, not after a reboot).
pub fn boot_id() -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id = id.trim();
        (!id.is_empty() && id.len() <= 64).then(|| format!("linux:{id}"))
    }
    #[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
    {
        let mib = [libc::CTL_KERN, libc::KERN_BOOTTIME];
        let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
        let mut len: libc::size_t = std::mem::size_of::<libc::timeval>();
        // SAFETY: `mib` is a valid array of two ints and its length is
        // passed; `tv` is a properly aligned, writable timeval and `len`
        // holds its size, which the kernel does not write past (it
        // reports ENOMEM instead); no new value is set (null, 0; a
        // `*mut` null coerces where FreeBSD declares `*const`).
        let r = unsafe {
            libc::sysctl(
                mib.as_ptr(),
                mib.len() as libc::c_uint,
                (&raw mut tv).cast::<libc::c_void>(),
                &raw mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        (r == 0 && len == std::mem::size_of::<libc::timeval>() && tv.tv_sec > 0)
            .then(|| format!("boottime:{}.{:06}", tv.tv_sec, tv.tv_usec))
    }
    #[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd")))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_service_needs_the_file_system_readable() {
        let mut p = Policy::new("t");
        assert!(check(&p).is_ok());
        p.name_service = true;
        assert!(matches!(check(&p), Err(Error::Policy(m)) if m.contains("whole_fs")));
        p.whole_fs = true;
        assert!(check(&p).is_ok());
        p.read_fs = true;
        assert!(matches!(check(&p), Err(Error::Policy(m)) if m.contains("together")));
        p.whole_fs = false;
        assert!(check(&p).is_ok());
    }
}

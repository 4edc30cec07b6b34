//! The FreeBSD back end: Capsicum.
//!
//! Every granted descriptor is limited to [`capsicum_rights`] of its
//! grant (fcntl(2) further to F_GETFL/F_SETFL, ioctl(2) to FIONBIO, so
//! that std's `set_nonblocking` works on sockets), stdin to reading and
//! stdout/stderr to writing; then the process enters capability mode,
//! where no global namespace (paths, new sockets by address, pids) can be
//! reached.
//!
//! Which roles stay out of capability mode: a policy with
//! [`Net::Connect`] (the connector must connect to new addresses), with
//! `open_paths` (local's root parent opens mailboxes, .forward files and
//! the password database by path) or with `exec` (local's root parent
//! executes its delivery children by path). Such a role still has every
//! inherited descriptor rights-limited, but its file-system and network
//! access is only as narrow as its user id makes it.
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::socket::{SockaddrLike, UnixAddr};

use capsicum::{CapRights, Fcntl, FcntlRights, FileRights, IoctlRights, Right};

use crate::{CapRight, Error, Grant, Net, Policy, capsicum_rights, policy_rights};

fn right(r: CapRight) -> Right {
    match r {
        CapRight::Read => Right::Read,
        CapRight::Write => Right::Write,
        CapRight::Seek => Right::Seek,
        CapRight::Fstat => Right::Fstat,
        CapRight::Fsync => Right::Fsync,
        CapRight::Ftruncate => Right::Ftruncate,
        CapRight::Lookup => Right::Lookup,
        CapRight::Create => Right::Create,
        CapRight::Unlinkat => Right::Unlinkat,
        CapRight::RenameatSource => Right::RenameatSource,
        CapRight::RenameatTarget => Right::RenameatTarget,
        CapRight::Mkdirat => Right::Mkdirat,
        CapRight::Futimes => Right::Futimes,
        CapRight::Fchmod => Right::Fchmod,
        CapRight::Accept => Right::Accept,
        CapRight::Event => Right::Event,
        CapRight::Shutdown => Right::Shutdown,
        CapRight::Getpeername => Right::Getpeername,
        CapRight::Getsockname => Right::Getsockname,
        CapRight::Getsockopt => Right::Getsockopt,
        CapRight::Setsockopt => Right::Setsockopt,
        CapRight::Fcntl => Right::Fcntl,
        CapRight::Fstatat => Right::Fstatat,
        CapRight::Fstatfs => Right::Fstatfs,
        CapRight::Ioctl => Right::Ioctl,
        CapRight::Connectat => Right::Connectat,
        CapRight::Flock => Right::Flock,
    }
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn sys(what: &'static str, e: &std::io::Error) -> Error {
    match errno_of(e) {
        libc::ENOSYS => Error::Unsupported("capsicum"),
        errno => Error::Sys { what, errno },
    }
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1
}

/// Limits `fd` to `rights`. The caller has checked that it is open.
fn limit_fd(fd: RawFd, rights: &[CapRight]) -> Result<(), Error> {
    // SAFETY: the caller checked that fd is open, and the borrow ends
    // with this function, during which nothing closes it.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut fr = FileRights::new();
    for &r in rights {
        fr.allow(right(r));
    }
    fr.limit(&fd).map_err(|e| sys("cap_rights_limit", &e))?;
    if rights.contains(&CapRight::Fcntl) {
        let mut fc = FcntlRights::new();
        fc.allow(Fcntl::GetFL).allow(Fcntl::SetFL);
        fc.limit(&fd).map_err(|e| sys("cap_fcntls_limit", &e))?;
    }
    if rights.contains(&CapRight::Ioctl) {
        IoctlRights::Limited(vec![libc::FIONBIO]).limit(&fd).map_err(|e| sys("cap_ioctls_limit", &e))?;
    }
    Ok(())
}

/// Limits a granted (or received) descriptor to its grant's rights.
pub(crate) fn limit(g: &Grant) -> Result<(), Error> {
    if !is_open(g.fd()) {
        return Err(Error::Policy(format!("granted descriptor {} is not open", g.fd())));
    }
    limit_fd(g.fd(), &capsicum_rights(g))
}

/// Whether the policy can live in capability mode (see the module note).
fn capability_mode(p: &Policy) -> bool {
    p.net == Net::None && p.open_paths.is_empty() && !p.exec && !p.whole_fs && !p.read_fs && !p.name_service
}

pub(crate) fn enter(p: &Policy) -> Result<(), Error> {
    for g in &p.grants {
        if !is_open(g.fd()) {
            return Err(Error::Policy(format!("{}: granted descriptor {} is not open", p.role, g.fd())));
        }
    }
    for g in &p.grants {
        limit_fd(g.fd(), &policy_rights(p, g))?;
    }
    let stdio: [(RawFd, &[CapRight]); 3] = [
        (0, &[CapRight::Read, CapRight::Fstat, CapRight::Event]),
        (1, &[CapRight::Write, CapRight::Fstat, CapRight::Event]),
        (2, &[CapRight::Write, CapRight::Fstat, CapRight::Event]),
    ];
    for (fd, rights) in stdio {
        // A granted descriptor at 0..2 keeps its grant's rights.
        if is_open(fd) && !p.grants.iter().any(|g| g.fd() == fd) {
            limit_fd(fd, rights)?;
        }
    }
    if capability_mode(p) {
        capsicum::enter().map_err(|e| sys("cap_enter", &e))?;
    }
    Ok(())
}

unsafe extern "C" {
    /// connectat(2), FreeBSD 10 and later (not in the libc crate).
    #[link_name = "connectat"]
    fn sys_connectat(
        fd: libc::c_int,
        s: libc::c_int,
        name: *const libc::sockaddr,
        namelen: libc::socklen_t,
    ) -> libc::c_int;
}

/// Connect `sock` to the UNIX socket `addr` (a name relative to `dir`)
/// with connectat(2), which needs `CAP_CONNECTAT` on `dir`.
pub(crate) fn connectat(dir: BorrowedFd<'_>, sock: &OwnedFd, addr: &UnixAddr) -> std::io::Result<()> {
    // SAFETY: both descriptors are open for the duration of the call (a
    // borrow and an owned one); addr.as_ptr() points to a sockaddr_un of
    // addr.len() bytes that lives across the call, and the kernel only
    // reads it.
    let rc = unsafe { sys_connectat(dir.as_raw_fd(), sock.as_raw_fd(), SockaddrLike::as_ptr(addr), addr.len()) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

//! Claiming descriptors by number: the ones a child inherits at known
//! numbers from master, and the ones the kernel hands over by SCM_RIGHTS.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Claim the inherited descriptor `fd` (placed there by [`crate::spawn`]):
/// checks that it is open, marks it close-on-exec and returns its owner.
/// Each number may be claimed once per process; a second claim fails.
pub fn take_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    use std::sync::Mutex;
    static CLAIMED: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());
    if fd < 3 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "descriptors 0-2 are stdio"));
    }
    let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    if claimed.contains(&fd) {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("descriptor {fd} already claimed")));
    }
    // SAFETY: fcntl(F_GETFD) on any integer is sound; it only reports.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("descriptor {fd} was not inherited")));
    }
    // SAFETY: sets a flag on a descriptor we just saw open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    claimed.push(fd);
    // SAFETY: the descriptor is open (checked above), was placed at this
    // number for this process by its parent, and the claim list ensures
    // no other OwnedFd in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One datagram received with [`recv_datagram`].
pub struct Datagram {
    /// Bytes received into the buffer.
    pub len: usize,
    /// The datagram or its control message was cut (MSG_TRUNC/MSG_CTRUNC).
    pub truncated: bool,
    /// A control message other than SCM_RIGHTS arrived.
    pub foreign_control: bool,
    /// Descriptors that came with it, close-on-exec.
    pub fds: Vec<OwnedFd>,
}

/// Most descriptors accepted with one datagram.
pub const MAX_RECEIVED_FDS: usize = 8;

/// recvmsg(2) on a datagram socket with MSG_CMSG_CLOEXEC, taking ownership
/// of any descriptors that arrive. `Err(WouldBlock)` when nothing waits.
pub fn recv_datagram(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Datagram> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut space = nix::cmsg_space!([RawFd; MAX_RECEIVED_FDS]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let m = loop {
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.map_err(io::Error::from)?,
        }
    };
    let mut fds = Vec::new();
    let mut foreign_control = false;
    for c in m.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::ScmRights(list) => {
                for fd in list {
                    // SAFETY: the kernel installed this descriptor in our table
                    // during the recvmsg above; its number has not been handed
                    // to anything else, so this OwnedFd is its only owner.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            _ => foreign_control = true,
        }
    }
    let truncated = m.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    Ok(Datagram { len: m.bytes, truncated, foreign_control, fds })
}

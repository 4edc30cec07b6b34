//! Shutting out debuggers of the same user. A process that runs as a
//! user and holds what that user must not read (a queue file names every
//! recipient of its message, blind copies too) makes itself untraceable
//! by that user's other processes: a command it runs must not read the
//! file through `/proc/PPID/fd` or ptrace(2).
//!
//! - Linux: `PR_SET_DUMPABLE` 0, which leaves ptrace to root and makes
//!   the process's `/proc` entries root's. A program it runs is dumpable
//!   again (execve resets it).
//! - FreeBSD: `procctl(2)` `PROC_TRACE_CTL_DISABLE`, which also ends at
//!   execve.
//! - OpenBSD: nothing to do: there is no `/proc`, and a process may trace
//!   only its own children unless `kern.global_ptrace` is set (it is 0 by
//!   default).
//!
//! Trusts: nothing.

use std::io;

/// Make the calling process untraceable by its user's other processes
/// (see the module's documentation).
pub fn no_trace() -> io::Result<()> {
    imp::no_trace()
}

#[cfg(target_os = "linux")]
mod imp {
    pub fn no_trace() -> std::io::Result<()> {
        nix::sys::prctl::set_dumpable(false).map_err(std::io::Error::from)
    }
}

#[cfg(target_os = "freebsd")]
mod imp {
    pub fn no_trace() -> std::io::Result<()> {
        let mut ctl: libc::c_int = libc::PROC_TRACE_CTL_DISABLE;
        // SAFETY: PROC_TRACE_CTL reads one int, which `ctl` is, alive and
        // exclusively borrowed for the call; it acts on this process,
        // named by its own pid.
        let r = unsafe {
            libc::procctl(
                libc::P_PID,
                libc::id_t::from(libc::getpid()),
                libc::PROC_TRACE_CTL,
                (&raw mut ctl).cast::<libc::c_void>(),
            )
        };
        if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
mod imp {
    pub fn no_trace() -> std::io::Result<()> {
        Ok(())
    }
}

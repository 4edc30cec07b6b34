//! The kernel's word that something arrived in maildrop/, so that pickup
//! takes a dropped file at once instead of on its next timed look:
//! inotify on Linux, a kqueue `EVFILT_VNODE` filter on FreeBSD and
//! OpenBSD. Both are descriptors pickup's mio loop waits on.
//!
//! A notification only means "list the directory now". pickup lists and
//! checks every file exactly as it would on its timer; no name or count a
//! notification carries is used for anything else, and a burst of them
//! comes to one look.
//!
//! The watch is made before pickup enters its sandbox. On Linux
//! `inotify_add_watch` takes a path (`/proc/self/fd/N` names the directory
//! master passed, whatever its path is), and inside the sandbox seccomp
//! refuses the call and Landlock the path; reading the inotify descriptor
//! afterwards is a plain `read`. On FreeBSD and OpenBSD the filter is
//! attached to the directory descriptor itself: Capsicum allows that with
//! `CAP_EVENT` (pickup's maildrop grant has it, so a watch could be made
//! inside the sandbox too), and pledge with "stdio". The kqueue is not a
//! granted descriptor and carries all its rights, as mio's own does.
//!
//! Trusts: the kernel.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Reads (Linux) or `kevent` calls (BSD) one drain makes at most. The
/// queue a drain empties is bounded by the kernel (inotify's
/// `max_queued_events`, one note per directory for a kqueue), and this
/// bounds the work when files keep arriving while it reads. Whatever is
/// left unread reports files that arrived before the look this drain asks
/// for, which therefore finds them; it is read at the next wakeup.
const DRAIN_CALLS: usize = 256;

/// What a drained watch says.
#[derive(Debug, PartialEq, Eq)]
pub enum Wakeup {
    /// Nothing that needs a look.
    Nothing,
    /// Something arrived under a final name, or the kernel lost events:
    /// list the directory.
    Scan,
    /// The watch is gone (the directory was removed or its file system
    /// unmounted, or reading failed) and tells nothing more; list the
    /// directory and fall back to looking on a timer.
    Lost(String),
}

/// A watch on one directory for files arriving in it.
#[derive(Debug)]
pub struct Watch {
    imp: imp::Imp,
}

impl Watch {
    /// Watch `dir` for files moved into it (how postdrop completes a
    /// file). Call before entering the sandbox. On FreeBSD and OpenBSD
    /// the watch lasts while `dir` stays open at its number.
    pub fn new(dir: BorrowedFd<'_>) -> io::Result<Watch> {
        Ok(Watch { imp: imp::Imp::new(dir, false)? })
    }

    /// Watch `dir` for files moved into it and, on Linux, for files made
    /// readable in it (how cleanup completes a queue file: created
    /// unreadable, written, then given its final mode). A kqueue filter
    /// on a directory hears of the file's creation only: the reader,
    /// finding it still being written, looks again soon.
    pub fn with_attributes(dir: BorrowedFd<'_>) -> io::Result<Watch> {
        Ok(Watch { imp: imp::Imp::new(dir, true)? })
    }

    /// Register a watch made before the sandbox (or the error that kept
    /// it from being made) with a poll, readable under `token`.
    pub fn register(watch: io::Result<Watch>, registry: &mio::Registry, token: mio::Token) -> io::Result<Watch> {
        let w = watch?;
        registry.register(&mut mio::unix::SourceFd(&w.as_raw_fd()), token, mio::Interest::READABLE)?;
        Ok(w)
    }

    /// Read everything pending (bounded by `DRAIN_CALLS`) and say
    /// whether the directory needs a look. Never blocks.
    pub fn drain(&mut self) -> Wakeup {
        self.imp.drain()
    }
}

impl AsRawFd for Watch {
    /// The descriptor to wait on for readability.
    fn as_raw_fd(&self) -> RawFd {
        self.imp.as_raw_fd()
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
    use std::os::unix::ffi::OsStrExt;

    use nix::errno::Errno;
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

    use super::{DRAIN_CALLS, Wakeup};

    #[derive(Debug)]
    pub(super) struct Imp {
        inotify: Inotify,
    }

    impl Imp {
        pub(super) fn new(dir: BorrowedFd<'_>, attributes: bool) -> io::Result<Imp> {
            let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
            // The magic link is the open directory itself, not a path
            // that could have been replaced since master opened it.
            let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
            // Only completed names: postdrop renames a whole file into
            // place; with `attributes`, cleanup makes one readable (a
            // change of attributes) once it is whole. Creations and
            // writes, and pickup's own removals and moves, say nothing.
            let mut mask = AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ONLYDIR;
            if attributes {
                mask |= AddWatchFlags::IN_ATTRIB;
            }
            inotify.add_watch(path.as_str(), mask)?;
            Ok(Imp { inotify })
        }

        pub(super) fn drain(&mut self) -> Wakeup {
            let mut scan = false;
            for _ in 0..DRAIN_CALLS {
                let events = match self.inotify.read_events() {
                    Ok(events) => events,
                    Err(Errno::EAGAIN) => break,
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Wakeup::Lost(format!("reading inotify events: {e}")),
                };
                for e in events {
                    if e.mask.intersects(AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_UNMOUNT) {
                        return Wakeup::Lost(String::from("the directory was removed or unmounted"));
                    }
                    // Events were dropped: anything may have arrived.
                    if e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                        scan = true;
                    }
                    // A dot name is a temporary one, which pickup never takes.
                    if e.mask.intersects(AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ATTRIB)
                        && !e.name.as_ref().is_some_and(|n| n.as_bytes().starts_with(b"."))
                    {
                        scan = true;
                    }
                }
            }
            if scan { Wakeup::Scan } else { Wakeup::Nothing }
        }

        pub(super) fn as_raw_fd(&self) -> RawFd {
            self.inotify.as_fd().as_raw_fd()
        }
    }
}

#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
mod imp {
    use std::io;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

    use nix::errno::Errno;
    use nix::sys::event::{EvFlags, EventFilter, FilterFlag, KEvent, Kqueue};

    use super::{DRAIN_CALLS, Wakeup};

    /// `kevent` returns at once.
    const NO_WAIT: libc::timespec = libc::timespec { tv_sec: 0, tv_nsec: 0 };

    #[derive(Debug)]
    pub(super) struct Imp {
        kq: Kqueue,
    }

    impl Imp {
        /// `_attributes`: a vnode filter on a directory cannot hear of a
        /// file's mode changing; NOTE_WRITE (its creation) is all.
        pub(super) fn new(dir: BorrowedFd<'_>, _attributes: bool) -> io::Result<Imp> {
            let kq = Kqueue::new()?;
            let ident = usize::try_from(dir.as_raw_fd()).map_err(|_| io::Error::from(Errno::EBADF))?;
            // NOTE_WRITE: an entry was added, removed or renamed (the
            // filter cannot tell which, so pickup's own removals cost a
            // look that finds nothing new). EV_CLEAR: reported once until
            // it happens again.
            let change = KEvent::new(
                ident,
                EventFilter::EVFILT_VNODE,
                EvFlags::EV_ADD | EvFlags::EV_CLEAR,
                FilterFlag::NOTE_WRITE | FilterFlag::NOTE_DELETE | FilterFlag::NOTE_REVOKE,
                0,
                0,
            );
            // With no room for events, a failed change is the call's error.
            kq.kevent(&[change], &mut [], Some(NO_WAIT))?;
            Ok(Imp { kq })
        }

        pub(super) fn drain(&mut self) -> Wakeup {
            let empty = KEvent::new(0, EventFilter::EVFILT_VNODE, EvFlags::empty(), FilterFlag::empty(), 0, 0);
            let mut events = [empty; 8];
            let mut scan = false;
            for _ in 0..DRAIN_CALLS {
                let n = match self.kq.kevent(&[], &mut events, Some(NO_WAIT)) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Wakeup::Lost(format!("kevent: {e}")),
                };
                for ev in &events[..n] {
                    if ev.flags().contains(EvFlags::EV_ERROR) {
                        let errno = i32::try_from(ev.data()).unwrap_or(libc::EIO);
                        return Wakeup::Lost(format!("kevent: {}", io::Error::from_raw_os_error(errno)));
                    }
                    if ev.fflags().intersects(FilterFlag::NOTE_DELETE | FilterFlag::NOTE_REVOKE) {
                        return Wakeup::Lost(String::from("the directory was removed or unmounted"));
                    }
                    if ev.fflags().contains(FilterFlag::NOTE_WRITE) {
                        scan = true;
                    }
                }
            }
            if scan { Wakeup::Scan } else { Wakeup::Nothing }
        }

        pub(super) fn as_raw_fd(&self) -> RawFd {
            self.kq.as_fd().as_raw_fd()
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd")))]
mod imp {
    use std::io;
    use std::os::fd::{BorrowedFd, RawFd};

    use super::Wakeup;

    /// No watch exists here; pickup looks on its timer.
    #[derive(Debug)]
    pub(super) enum Imp {}

    impl Imp {
        pub(super) fn new(_dir: BorrowedFd<'_>, _attributes: bool) -> io::Result<Imp> {
            Err(io::Error::new(io::ErrorKind::Unsupported, "no directory notification on this system"))
        }

        pub(super) fn drain(&mut self) -> Wakeup {
            match *self {}
        }

        pub(super) fn as_raw_fd(&self) -> RawFd {
            match *self {}
        }
    }
}

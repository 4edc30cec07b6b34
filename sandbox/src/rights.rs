//! Policies as data: the Capsicum rights, pledge promises and unveil
//! paths a policy means, computed the same on every system so tests on
//! Linux check them.
use std::path::PathBuf;

use crate::{DirAccess, Grant, Net, Policy};

/// Capsicum rights by name (mapped to capsicum::Right on FreeBSD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CapRight {
    Read,
    Write,
    Seek,
    Fstat,
    Fsync,
    Ftruncate,
    Lookup,
    Create,
    Unlinkat,
    RenameatSource,
    RenameatTarget,
    Mkdirat,
    /// futimens(2) on a file opened beneath (qmgr dates a deferred
    /// message's next attempt in its mtime).
    Futimes,
    /// fchmod(2) on a file opened beneath (cleanup marks a queue file
    /// complete by its mode).
    Fchmod,
    Accept,
    Event,
    Shutdown,
    Getpeername,
    /// getsockname(2): the address a client reached (smtpd tells its own
    /// addresses from others by it).
    Getsockname,
    Getsockopt,
    Setsockopt,
    /// fcntl(2) at all; the FreeBSD back end further limits the commands
    /// to F_GETFL and F_SETFL (enough to set O_NONBLOCK; F_GETFD/F_SETFD
    /// need no right).
    Fcntl,
    /// fstatat(2) beneath a directory (listing a queue and statting its
    /// entries without opening them).
    Fstatat,
    /// fstatfs(2): free space of the file system (cleanup's spool check).
    Fstatfs,
    /// ioctl(2); the FreeBSD back end further limits the requests to
    /// FIONBIO, which std's `set_nonblocking` uses on sockets.
    Ioctl,
    /// connectat(2) to a UNIX socket beneath a directory.
    Connectat,
    /// flock(2) and fcntl(2) locks: only where the policy has `locks`
    /// ([`policy_rights`]).
    Flock,
}

/// Rights that let a descriptor change things or reach new ones: a
/// read-only grant has none of them, and a role should hold only those
/// its operations need.
pub const MODIFYING_RIGHTS: &[CapRight] = &[
    CapRight::Write,
    CapRight::Create,
    CapRight::Unlinkat,
    CapRight::RenameatSource,
    CapRight::RenameatTarget,
    CapRight::Mkdirat,
    CapRight::Futimes,
    CapRight::Fchmod,
    CapRight::Ftruncate,
    CapRight::Accept,
];

/// The rights `grant` is limited to on FreeBSD, sorted and without
/// duplicates.
///
/// Files opened beneath a directory with openat(2) inherit the
/// directory's rights (less `Lookup`), so a directory's set includes what
/// its files need (read, write, seek for pread/pwrite, fsync, ftruncate).
/// A read-only directory has `Fsync` too: fsync(2) and fdatasync(2) need
/// `CAP_FSYNC` and change nothing a reader could see, and cleanup's
/// journal recovery makes durable the valid copies of its messages it
/// finds in active/, deferred/ and hold/ (the process that wrote them may
/// have died before syncing them). Without it every such fsync fails with
/// `ENOTCAPABLE`. (OpenBSD's pledge allows fsync under "stdio", unveil
/// does not govern calls on a descriptor, and Linux's Landlock and
/// seccomp filter neither.)
/// An accepted socket inherits its listener's rights, so a listener's set
/// includes what a session needs.
pub fn capsicum_rights(grant: &Grant) -> Vec<CapRight> {
    use CapRight::*;
    let mut rights: Vec<CapRight> = match grant {
        Grant::Dir { access, watch, times, modes, .. } => {
            let mut r = vec![Lookup, Read, Fstat, Fstatat, Fstatfs, Seek, Fcntl, Fsync];
            if *access == DirAccess::ReadWrite {
                r.extend([Write, Create, Ftruncate, Unlinkat, RenameatSource, RenameatTarget, Mkdirat]);
                if *times {
                    r.push(Futimes);
                }
                if *modes {
                    r.push(Fchmod);
                }
            }
            // kevent(2) attaching a filter to the descriptor. Files opened
            // beneath inherit it, which lets them be polled: nothing more.
            if *watch {
                r.push(Event);
            }
            r
        }
        Grant::File { write, .. } => {
            let mut r = vec![Read, Fstat, Seek, Fcntl];
            if *write {
                // Ftruncate: a failed or killed mbox append is cut back.
                r.extend([Write, Fsync, Ftruncate]);
            }
            r
        }
        Grant::Listener { .. } => {
            vec![
                Accept,
                Event,
                Fstat,
                Read,
                Write,
                Shutdown,
                Getpeername,
                Getsockname,
                Getsockopt,
                Setsockopt,
                Fcntl,
                Ioctl,
            ]
        }
        Grant::Channel { .. } => vec![Read, Write, Event, Fstat, Shutdown, Getsockopt, Fcntl, Ioctl],
        // Look up a name beneath it and connect to the socket found: no
        // reading (so no listing) and nothing opened or created.
        Grant::SocketDir { .. } => vec![Lookup, Connectat],
    };
    rights.sort();
    rights.dedup();
    rights
}

/// The rights `grant` is limited to on FreeBSD within `policy`: its
/// [`capsicum_rights`], and `Flock` on writable files and read-write
/// directories (whose files inherit it) when the policy has `locks`.
pub fn policy_rights(policy: &Policy, grant: &Grant) -> Vec<CapRight> {
    let mut rights = capsicum_rights(grant);
    let writable = matches!(grant, Grant::File { write: true, .. } | Grant::Dir { access: DirAccess::ReadWrite, .. });
    if policy.locks && writable {
        rights.push(CapRight::Flock);
        rights.sort();
        rights.dedup();
    }
    rights
}

/// The pledge(2) promises for `policy` on OpenBSD, space separated, in a
/// fixed order without duplicates.
pub fn pledge_promises(policy: &Policy) -> String {
    let mut p: Vec<&'static str> = vec!["stdio"];
    let has = |f: fn(&Grant) -> bool| policy.grants.iter().any(f);
    if has(|g| matches!(g, Grant::Dir { .. })) || !policy.open_paths.is_empty() || policy.whole_fs || policy.read_fs {
        p.push("rpath");
    }
    if policy.whole_fs {
        p.extend(["wpath", "cpath", "fattr", "flock"]);
    }
    // Writing to an already open file is "stdio"; "wpath cpath" are for
    // opening and creating by name beneath a writable directory, "fattr"
    // for setting a file's times (futimens) or mode (fchmod) there.
    if has(|g| matches!(g, Grant::Dir { access: DirAccess::ReadWrite, .. })) {
        p.extend(["wpath", "cpath"]);
    }
    if has(|g| matches!(g, Grant::Dir { access: DirAccess::ReadWrite, times, modes, .. } if *times || *modes)) {
        p.push("fattr");
    }
    if policy.locks {
        p.push("flock");
    }
    if has(|g| matches!(g, Grant::Channel { .. })) {
        p.extend(["recvfd", "sendfd"]);
    }
    // A listener's grant does not say its address family: accept(2) on
    // a UNIX socket needs "unix", on a TCP socket "inet".
    if has(|g| matches!(g, Grant::Listener { .. })) {
        p.extend(["unix", "inet"]);
    }
    // Creating and connecting an AF_UNIX socket.
    if has(|g| matches!(g, Grant::SocketDir { .. })) {
        p.push("unix");
    }
    if policy.net == Net::Connect {
        p.extend(["inet", "dns"]);
    }
    if policy.fork {
        p.push("proc");
    }
    if policy.exec {
        p.push("exec");
    }
    if policy.change_uid {
        p.extend(["id", "getpw"]);
    }
    // YP (and LDAP through ypldap), OpenBSD's name services.
    if policy.name_service {
        p.push("getpw");
    }
    let mut seen = Vec::with_capacity(p.len());
    for promise in p {
        if !seen.contains(&promise) {
            seen.push(promise);
        }
    }
    seen.join(" ")
}

/// The unveil(2) calls for `policy` on OpenBSD: each directory grant by
/// path ("r" to read, "rwc" to read, write and create), each UNIX socket
/// of a socket directory ("rw": connect(2) needs write permission on the
/// socket; read adds nothing, since a socket cannot be opened), and each
/// path the policy may open ("r", or "rx" when the policy may exec, since
/// unveil also governs execve(2)). A socket is unveiled by name within
/// its directory, so a server that makes its socket again (a restart) is
/// still reached; a directory made again is not (the connector is
/// restarted then: see mta's master).
pub fn unveil_paths(policy: &Policy) -> Vec<(PathBuf, &'static str)> {
    let mut v = Vec::new();
    for g in &policy.grants {
        match g {
            Grant::Dir { path, access, .. } => {
                let perms = match access {
                    DirAccess::Read => "r",
                    DirAccess::ReadWrite => "rwc",
                };
                v.push((path.clone(), perms));
            }
            Grant::SocketDir { path, sockets, .. } => {
                v.extend(sockets.iter().map(|name| (path.join(name), "rw")));
            }
            _ => {}
        }
    }
    let open_perms = if policy.exec { "rx" } else { "r" };
    for path in &policy.open_paths {
        v.push((path.clone(), open_perms));
    }
    if policy.read_fs {
        v.push((PathBuf::from("/"), "r"));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::path::Path;

    fn dir(fd: i32, access: DirAccess) -> Grant {
        Grant::Dir { fd, path: PathBuf::from(format!("/spool/{fd}")), access, watch: false, times: false, modes: false }
    }

    #[test]
    fn rights_are_sorted_and_unique() {
        for g in [
            dir(4, DirAccess::Read),
            dir(4, DirAccess::ReadWrite),
            Grant::File { fd: 5, write: false },
            Grant::File { fd: 5, write: true },
            Grant::Listener { fd: 6 },
            Grant::Channel { fd: 3 },
        ] {
            let r = capsicum_rights(&g);
            let mut s = r.clone();
            s.sort();
            s.dedup();
            assert_eq!(r, s, "{g:?}");
        }
    }

    #[test]
    fn read_only_grants_cannot_modify() {
        for g in [dir(4, DirAccess::Read), Grant::File { fd: 5, write: false }] {
            let r = capsicum_rights(&g);
            for &d in MODIFYING_RIGHTS {
                assert!(!r.contains(&d), "{g:?} has {d:?}");
            }
        }
        let rw = capsicum_rights(&dir(4, DirAccess::ReadWrite));
        for need in [CapRight::Lookup, CapRight::Create, CapRight::Write, CapRight::Fsync, CapRight::Unlinkat] {
            assert!(rw.contains(&need), "{need:?}");
        }
        // Its files can be made durable all the same (cleanup's recovery
        // syncs the copies it finds in active/, deferred/ and hold/).
        assert!(capsicum_rights(&dir(4, DirAccess::Read)).contains(&CapRight::Fsync));
        assert!(capsicum_rights(&Grant::File { fd: 5, write: true }).contains(&CapRight::Write));
        assert!(capsicum_rights(&Grant::File { fd: 5, write: true }).contains(&CapRight::Ftruncate));
    }

    #[test]
    fn a_watched_directory_gets_event_and_nothing_else() {
        for access in [DirAccess::Read, DirAccess::ReadWrite] {
            let plain = capsicum_rights(&dir(4, access));
            assert!(!plain.contains(&CapRight::Event), "{access:?}");
            let watched = capsicum_rights(&Grant::Dir {
                fd: 4,
                path: PathBuf::from("/spool/4"),
                access,
                watch: true,
                times: false,
                modes: false,
            });
            let mut expected = plain.clone();
            expected.push(CapRight::Event);
            expected.sort();
            assert_eq!(watched, expected, "{access:?}");
        }
    }

    #[test]
    fn sockets_get_session_rights() {
        let l = capsicum_rights(&Grant::Listener { fd: 4 });
        for need in [
            CapRight::Accept,
            CapRight::Read,
            CapRight::Write,
            CapRight::Getpeername,
            CapRight::Getsockname,
            CapRight::Event,
        ] {
            assert!(l.contains(&need), "{need:?}");
        }
        let c = capsicum_rights(&Grant::Channel { fd: 3 });
        assert!(!c.contains(&CapRight::Accept));
        assert!(!c.contains(&CapRight::Lookup));
    }

    #[test]
    fn a_socket_directory_only_connects() {
        let g = Grant::SocketDir {
            fd: 4,
            path: PathBuf::from("/run/dovecot"),
            sockets: vec![OsString::from("lmtp"), OsString::from("lmtp-b")],
        };
        assert_eq!(capsicum_rights(&g), vec![CapRight::Lookup, CapRight::Connectat]);
        let mut p = Policy::new("connector");
        p.grants.push(Grant::Channel { fd: 3 });
        p.net = Net::Connect;
        assert_eq!(pledge_promises(&p), "stdio recvfd sendfd inet dns");
        p.grants.push(g);
        assert_eq!(pledge_promises(&p), "stdio recvfd sendfd unix inet dns");
        assert_eq!(
            unveil_paths(&p),
            vec![(PathBuf::from("/run/dovecot/lmtp"), "rw"), (PathBuf::from("/run/dovecot/lmtp-b"), "rw")]
        );
    }

    #[test]
    fn promises() {
        let mut p = Policy::new("t");
        assert_eq!(pledge_promises(&p), "stdio");
        p.grants.push(Grant::Channel { fd: 3 });
        assert_eq!(pledge_promises(&p), "stdio recvfd sendfd");
        p.grants.push(dir(4, DirAccess::Read));
        assert_eq!(pledge_promises(&p), "stdio rpath recvfd sendfd");
        p.grants.push(dir(5, DirAccess::ReadWrite));
        assert_eq!(pledge_promises(&p), "stdio rpath wpath cpath recvfd sendfd");

        let mut q = Policy::new("t");
        q.grants.push(Grant::Listener { fd: 4 });
        q.net = Net::Connect;
        assert_eq!(pledge_promises(&q), "stdio unix inet dns");

        let mut l = Policy::new("local");
        l.fork = true;
        l.exec = true;
        l.change_uid = true;
        l.grants.push(Grant::File { fd: 4, write: true });
        assert_eq!(pledge_promises(&l), "stdio proc exec id getpw");

        // A delivery child: its directory, its channel to the parent,
        // mailbox locks.
        let mut d = Policy::new("local");
        d.grants.push(dir(4, DirAccess::ReadWrite));
        d.grants.push(Grant::Channel { fd: 3 });
        d.locks = true;
        assert_eq!(pledge_promises(&d), "stdio rpath wpath cpath flock recvfd sendfd");

        // master's lister of directory users: reads, asks YP, writes its
        // listing; "/" unveiled for reading only.
        let mut u = Policy::new("local users");
        u.grants.push(Grant::File { fd: 3, write: true });
        u.name_service = true;
        u.read_fs = true;
        assert_eq!(pledge_promises(&u), "stdio rpath getpw");
        assert_eq!(unveil_paths(&u), [(PathBuf::from("/"), "r")]);
    }

    #[test]
    fn locks_add_flock_to_writable_descriptors_only() {
        let mut p = Policy::new("t");
        let grants = [
            dir(4, DirAccess::ReadWrite),
            dir(5, DirAccess::Read),
            Grant::File { fd: 6, write: true },
            Grant::File { fd: 7, write: false },
            Grant::Channel { fd: 3 },
        ];
        for g in &grants {
            assert!(!policy_rights(&p, g).contains(&CapRight::Flock), "{g:?}");
            assert_eq!(policy_rights(&p, g), capsicum_rights(g));
        }
        p.locks = true;
        for (g, flock) in grants.iter().zip([true, false, true, false, false]) {
            assert_eq!(policy_rights(&p, g).contains(&CapRight::Flock), flock, "{g:?}");
        }
    }

    #[test]
    fn unveil() {
        let mut p = Policy::new("t");
        assert!(unveil_paths(&p).is_empty());
        p.grants.push(Grant::Channel { fd: 3 });
        p.grants.push(dir(4, DirAccess::Read));
        p.grants.push(dir(5, DirAccess::ReadWrite));
        p.open_paths.push(PathBuf::from("/etc/mail"));
        let u = unveil_paths(&p);
        assert_eq!(u.len(), 3);
        assert_eq!(u[0], (PathBuf::from("/spool/4"), "r"));
        assert_eq!(u[1], (PathBuf::from("/spool/5"), "rwc"));
        assert_eq!(u[2].0, Path::new("/etc/mail"));
        assert_eq!(u[2].1, "r");
        p.exec = true;
        assert_eq!(unveil_paths(&p)[2].1, "rx");
    }
}

//! Every role's sandbox policy, proven on the running kernel.
//!
//! For each role a forked child gets the descriptors master would give
//! it, at the numbers the role's policy names, enters the policy with
//! `Unconfined::Refused`, and then tries what the policy forbids (each
//! attempt must fail with a sandbox denial, although the child runs as
//! root, so nothing but the sandbox stops it) and what the role does
//! (each must work). A synthetic policy covers what no role has yet:
//! exec. The connector, whose policy has outbound connections
//! (`Net::Connect`), builds its resolver before entering as its program
//! does, then inside the sandbox resolves a domain (MX, then the implicit
//! MX's address) through a DNS responder on loopback that the child runs
//! itself, and connects to the address it found; given a socket
//! directory (as master opens it for the transport table's LMTP
//! sockets), it connects to a UNIX socket there, and where the kernel can
//! tell (Landlock ABI 9, unveil) to no UNIX socket elsewhere.
//!
//! A pure-data part checks each role's policy against its operations
//! (`roles::operations`): every operation's Capsicum rights and pledge
//! promises are granted, and no dangerous right or promise is granted that
//! no operation needs (nor the event right on a directory no one watches).
//!
//! pickup's watch on maildrop/ is made before entering, as its program
//! does, and must report a file renamed into the directory from inside
//! the sandbox.
//!
//! local's command spawner, started before local enters its sandbox, must
//! start a command outside it (this program, run as `local pipe`, makes
//! sockets from a thread), as the user it is given, while local itself
//! can do neither; and refuse uid 0 unless commands may run as root.
//!
//! This is a `harness = false` test: `sandbox::enter` and
//! `sandbox::fork_wait_with` refuse multi-threaded processes, and libtest
//! runs tests on threads. Each check prints `ok <role>: <what>` or
//! `FAIL <role>: <what>: <detail>`; the last line is `N passed, M failed`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mta::config::delivery::Dns;
use mta::ipc::msg::NexthopSpec;
use mta::pickup::watch::{Wakeup, Watch};
use mta::roles::{self, CLEANUP_DIRS, FIRST_ROLE_FD, Layout, MASTER_FD, Operation, QUEUE_DIRS, Role};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, connect, sendmsg, socket, socketpair,
};
use nix::sys::stat::{Mode, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fsync, pipe, setuid, unlinkat};
use sandbox::{
    CapRight, DirAccess, Grant, MODIFYING_RIGHTS, Net, Policy, Unconfined, capsicum_rights, pledge_promises,
};

/// Counts checks and prints one line per check.
struct Tally {
    role: String,
    passed: u32,
    failed: u32,
}

impl Tally {
    fn new(role: &str) -> Tally {
        Tally { role: role.to_string(), passed: 0, failed: 0 }
    }

    fn check(&mut self, what: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.passed += 1;
                println!("ok {}: {what}", self.role);
            }
            Err(detail) => {
                self.failed += 1;
                println!("FAIL {}: {what}: {detail}", self.role);
            }
        }
    }

    fn add(&mut self, other: &Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// Errors that mean "the sandbox said no": seccomp's EPERM, Landlock's
/// EACCES, Capsicum's ENOTCAPABLE and ECAPMODE.
fn is_denial(errno: i32) -> bool {
    #[cfg(target_os = "freebsd")]
    if errno == libc::ENOTCAPABLE || errno == libc::ECAPMODE {
        return true;
    }
    errno == libc::EPERM || errno == libc::EACCES
}

/// The attempt must have been refused by the sandbox.
fn denied<T>(r: Result<T, impl Into<io::Error>>) -> Result<(), String> {
    match r {
        Ok(_) => Err("succeeded".into()),
        Err(e) => {
            let e: io::Error = e.into();
            match e.raw_os_error() {
                Some(n) if is_denial(n) => Ok(()),
                _ => Err(format!("failed, but not by a sandbox denial: {e}")),
            }
        }
    }
}

/// The attempt must have worked.
fn works<T>(r: Result<T, impl std::fmt::Display>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// Files and sockets the children use, made by the parent before forking.
struct World {
    root: PathBuf,
    spool: PathBuf,
    /// A TCP and a UNIX listener the children try to connect to (their
    /// backlogs accept without anyone calling accept).
    _tcp: TcpListener,
    tcp_addr: SocketAddr,
    _unix: UnixListener,
    unix_path: PathBuf,
    /// A socket directory with an LMTP server's listening socket in it.
    lmtp_dir: PathBuf,
    _lmtp: UnixListener,
}

impl World {
    fn new() -> io::Result<World> {
        let root = std::env::temp_dir().join(format!("mta-sandbox-policies-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let spool = root.join("spool");
        for d in QUEUE_DIRS {
            std::fs::create_dir_all(spool.join(d))?;
        }
        std::fs::write(spool.join("secret"), "outside the queue\n")?;
        std::fs::write(spool.join("incoming").join("existing"), "queued\n")?;
        std::fs::create_dir_all(root.join("readable"))?;
        std::fs::write(root.join("readable").join("file"), "readable\n")?;
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let tcp_addr = tcp.local_addr()?;
        let unix_path = root.join("listening.sock");
        let unix = UnixListener::bind(&unix_path)?;
        let lmtp_dir = root.join("lmtp");
        std::fs::create_dir_all(&lmtp_dir)?;
        let lmtp = UnixListener::bind(lmtp_dir.join(LMTP_SOCKET))?;
        Ok(World { root, spool, _tcp: tcp, tcp_addr, _unix: unix, unix_path, lmtp_dir, _lmtp: lmtp })
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The LMTP socket's name in its directory.
const LMTP_SOCKET: &str = "lmtp.sock";

/// What a child gets on its master channel before it starts, and what it
/// sends back.
const TO_CHILD: &[u8] = b"descriptor from master\n";
const FROM_CHILD: &[u8] = b"descriptor from the child\n";

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(errno_io)
}

/// Sends `data` with `fd` attached over a SOCK_SEQPACKET socket.
fn send_fd(sock: BorrowedFd<'_>, data: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<UnixAddr>(sock.as_raw_fd(), &[IoSlice::new(data)], &cmsg, MsgFlags::empty(), None).map_err(errno_io)?;
    Ok(())
}

/// A pipe whose read end yields `data`, then end of file.
fn pipe_with(data: &[u8]) -> io::Result<OwnedFd> {
    let (r, w) = pipe().map_err(errno_io)?;
    File::from(w).write_all(data)?;
    Ok(r)
}

fn read_all(fd: OwnedFd) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    File::from(fd).read_to_end(&mut v)?;
    Ok(v)
}

/// The master side of a child's channel, loaded with one message that
/// carries a descriptor.
fn master_channel() -> io::Result<(OwnedFd, OwnedFd)> {
    let (parent, child) = seqpacket_pair()?;
    let carried = pipe_with(TO_CHILD)?;
    send_fd(parent.as_fd(), b"peer", carried.as_fd())?;
    Ok((parent, child))
}

/// In the child: receive master's message and read through its
/// descriptor; then send a descriptor back.
fn channel_checks(t: &mut Tally, channel: &OwnedFd) {
    t.check(
        "receive a descriptor on the master channel (SCM_RIGHTS)",
        (|| {
            let mut buf = [0u8; 64];
            let d = works(sandbox::fds::recv_datagram(channel.as_fd(), &mut buf))?;
            if &buf[..d.len] != b"peer" || d.fds.len() != 1 || d.truncated {
                return Err(format!("got {} bytes and {} descriptors", d.len, d.fds.len()));
            }
            let data = works(read_all(d.fds.into_iter().next().ok_or("no descriptor")?))?;
            if data != TO_CHILD {
                return Err(format!("read {data:?} through it"));
            }
            Ok(())
        })(),
    );
    t.check(
        "send a descriptor on the master channel (SCM_RIGHTS)",
        (|| {
            let r = works(pipe_with(FROM_CHILD))?;
            works(send_fd(channel.as_fd(), b"back", r.as_fd()))
        })(),
    );
}

/// In the parent, after the child exited: what the child sent.
fn channel_received(t: &mut Tally, parent: &OwnedFd) {
    t.check(
        "master received the child's descriptor and read through it",
        (|| {
            let mut buf = [0u8; 64];
            let d = works(sandbox::fds::recv_datagram(parent.as_fd(), &mut buf))?;
            if &buf[..d.len] != b"back" || d.fds.len() != 1 {
                return Err(format!("got {} bytes and {} descriptors", d.len, d.fds.len()));
            }
            let data = works(read_all(d.fds.into_iter().next().ok_or("no descriptor")?))?;
            if data != FROM_CHILD {
                return Err(format!("read {data:?} through it"));
            }
            Ok(())
        })(),
    );
}

/// What every sandboxed role must be refused, whatever its grants.
/// `unix_socket` is an unconnected AF_UNIX socket made before entering.
fn common_denials(t: &mut Tally, policy: &Policy, world: &World, unix_socket: &OwnedFd) {
    if !policy.whole_fs && !policy.read_fs {
        t.check("open /etc/passwd", denied(File::open("/etc/passwd")));
    }
    if policy.open_paths.is_empty() && !policy.whole_fs && !policy.read_fs {
        t.check("open a spool file by absolute path", denied(File::open(world.spool.join("secret"))));
        t.check("stat a path", denied(std::fs::metadata("/etc/passwd")));
    }
    if policy.open_paths.is_empty() && !policy.whole_fs {
        t.check("create a file by path", denied(File::create(world.root.join("created-by-path"))));
    }
    if !policy.exec {
        let what = if policy.fork { "exec /bin/true" } else { "fork and exec /bin/true" };
        t.check(what, denied(Command::new("/bin/true").status()));
    }
    if policy.net == Net::None {
        t.check(
            "create an AF_INET socket",
            denied(socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)),
        );
        t.check("connect to a listening TCP port", denied(TcpStream::connect(world.tcp_addr)));
        if !policy.name_service {
            t.check(
                "connect a pre-made AF_UNIX socket to a listening socket",
                match UnixAddr::new(&world.unix_path) {
                    Ok(addr) => denied(connect(unix_socket.as_raw_fd(), &addr)),
                    Err(e) => Err(e.to_string()),
                },
            );
        }
    }
    if !policy.name_service && !policy.grants.iter().any(|g| matches!(g, Grant::SocketDir { .. })) {
        t.check(
            "create an AF_UNIX socket",
            denied(socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)),
        );
    }
    if policy.socketpairs {
        t.check(
            "create an AF_UNIX socket pair (for its own children)",
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
                .map(drop)
                .map_err(|e| e.to_string()),
        );
    } else {
        t.check(
            "create a socket pair",
            denied(socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)),
        );
    }
    #[cfg(target_os = "linux")]
    if !policy.threads {
        t.check(
            "threads cannot be created",
            match std::thread::Builder::new().spawn(|| ()) {
                Ok(h) => {
                    let _ = h.join();
                    Err("a thread started".into())
                }
                Err(_) => Ok(()),
            },
        );
    }
}

/// Checked last: if the sandbox let it through, the child would run on
/// as another user and later checks would fail for the wrong reason.
fn uid_denial(t: &mut Tally, policy: &Policy) {
    if !policy.change_uid {
        t.check("setuid(65534)", denied(setuid(Uid::from_raw(65534))));
    }
}

/// Directory denials through a granted directory descriptor.
fn dir_denials(t: &mut Tally, dir: &OwnedFd) {
    let ro = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    t.check("openat(queue dir, \"/etc/passwd\")", denied(openat(dir, "/etc/passwd", ro, Mode::empty())));
    t.check("openat(queue dir, \"../secret\")", denied(openat(dir, "../secret", ro, Mode::empty())));
    t.check(
        "openat(queue dir, \"../..\", O_DIRECTORY)",
        denied(openat(dir, "../..", ro | OFlag::O_DIRECTORY, Mode::empty())),
    );
    t.check(
        "openat(queue dir, \"../new\", O_CREAT)",
        denied(openat(
            dir,
            "../new",
            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )),
    );
    t.check("mkdirat(queue dir, \"../newdir\")", denied(mkdirat(dir, "../newdir", Mode::from_bits_truncate(0o700))));
    t.check(
        "mknodat a FIFO in a queue dir",
        denied(nix::sys::stat::mknodat(
            dir,
            "fifo",
            nix::sys::stat::SFlag::S_IFIFO,
            Mode::from_bits_truncate(0o600),
            0,
        )),
    );
}

/// What qmgr does with its queue directories.
fn queue_work(t: &mut Tally, incoming: &OwnedFd, active: &OwnedFd, deferred: &OwnedFd) {
    let wr = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(0o600);
    t.check(
        "create, write and fsync a queue file",
        (|| {
            let fd = works(openat(incoming, "qf", wr, mode))?;
            let mut f = File::from(fd);
            works(f.write_all(b"queue file\n"))?;
            works(fsync(&f))
        })(),
    );
    t.check(
        "read a queue file back",
        (|| {
            let fd = works(openat(incoming, "qf", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()))?;
            let data = works(read_all(fd))?;
            if data == b"queue file\n" { Ok(()) } else { Err(format!("read {data:?}")) }
        })(),
    );
    t.check("read a file queued before entering", {
        match openat(incoming, "existing", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map(read_all) {
            Ok(Ok(d)) if d == b"queued\n" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    t.check(
        "write out a message held in memory (mta::queue::disk::publish: complete by its mode) and sync it",
        publish(incoming, "qm"),
    );
    t.check("rename within a queue dir", works(renameat(incoming, "qf", incoming, "qf2")));
    t.check("rename from incoming to active", works(renameat(incoming, "qf2", active, "qf")));
    t.check("stat a queue file by name", works(fstatat(active, "qf", AtFlags::AT_SYMLINK_NOFOLLOW)).map(|_| ()));
    t.check(
        "count a queue dir's entries (mta::qmgr::count_entries)",
        match mta::qmgr::count_entries(active) {
            Ok(1) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    t.check(
        "truncate a queue file (O_TRUNC)",
        works(openat(active, "qf", OFlag::O_WRONLY | OFlag::O_TRUNC | OFlag::O_CLOEXEC, Mode::empty())).map(drop),
    );
    t.check("unlink a queue file", works(unlinkat(active, "qf", UnlinkatFlags::NoRemoveDir)));
    t.check(
        "make and remove a subdirectory",
        works(mkdirat(deferred, "sub", Mode::from_bits_truncate(0o700)))
            .and_then(|()| works(unlinkat(deferred, "sub", UnlinkatFlags::RemoveDir))),
    );
}

/// A queue file written as cleanup and qmgr write them (created
/// unreadable, written, its mode set to mark it complete: fchmod, which
/// Capsicum allows only with `CAP_FCHMOD`), then synced as they sync them;
/// then it must read as complete.
fn publish(dir: &OwnedFd, name: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mut unsynced = mta::queue::disk::Unsynced::default();
    works(mta::queue::disk::publish(dir.as_fd(), name, b"queue file\n", &mut unsynced))?;
    works(unsynced.sync(dir.as_fd()))?;
    let f = File::from(works(openat(dir, name, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()))?);
    let mode = works(f.metadata())?.permissions().mode() & 0o7777;
    // mta::queue::disk::MODE_DONE: read and write for the owner.
    if mode == 0o600 { Ok(()) } else { Err(format!("mode {mode:o}")) }
}

/// What control does with its listener: accept the connection the
/// parent made, check the peer, read its request and answer.
fn control_work(t: &mut Tally, listener: OwnedFd) {
    let listener = UnixListener::from(listener);
    t.check("set the listener non-blocking", works(listener.set_nonblocking(true)));
    let stream = match listener.accept() {
        Ok((s, _)) => {
            t.check("accept on the pre-opened listener", Ok(()));
            s
        }
        Err(e) => {
            t.check("accept on the pre-opened listener", Err(e.to_string()));
            return;
        }
    };
    #[cfg(target_os = "linux")]
    t.check(
        "peer credentials of the accepted client",
        match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
            Ok(c) if c.uid() == nix::unistd::getuid().as_raw() => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let mut stream = stream;
    t.check(
        "read the request and answer on the accepted socket",
        (|| {
            works(stream.set_nonblocking(false))?;
            let mut req = [0u8; 5];
            works(stream.read_exact(&mut req))?;
            if &req != b"ping\n" {
                return Err(format!("read {req:?}"));
            }
            works(stream.write_all(b"pong\n"))
        })(),
    );
}

/// Ends a child: reports its counts through `report` and returns its
/// exit code, the number of failures.
fn finish(t: &Tally, report: OwnedFd) -> i32 {
    let _ = File::from(report).write_all(format!("{} {}\n", t.passed, t.failed).as_bytes());
    t.failed.min(255) as i32
}

/// Runs `body` in a forked child with `fds` at 3, 4, ... and a report
/// pipe after them; adds the child's counts to `total`.
fn run_child(total: &mut Tally, role: &str, fds: &[BorrowedFd<'_>], body: impl FnOnce(&mut Tally, Vec<OwnedFd>)) {
    let mut parent = Tally::new(role);
    let (report_r, report_w) = match pipe() {
        Ok(p) => p,
        Err(e) => {
            parent.check("make the report pipe", Err(e.to_string()));
            total.add(&parent);
            return;
        }
    };
    let mut all: Vec<BorrowedFd<'_>> = fds.to_vec();
    all.push(report_w.as_fd());
    let n = fds.len();
    let code = sandbox::fork_wait_with(&all, |mut placed| {
        let report = placed.remove(n);
        let mut t = Tally::new(role);
        body(&mut t, placed);
        finish(&t, report)
    });
    drop(report_w);
    let report = read_all(report_r).ok().and_then(|v| String::from_utf8(v).ok()).unwrap_or_default();
    let counts: Vec<u32> = report.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    match (code, counts.as_slice()) {
        (Ok(code), [passed, failed]) if code == (*failed).min(255) as i32 => {
            parent.passed += passed;
            parent.failed += failed;
        }
        (code, _) => parent.check("the child ran to its end", Err(format!("exit {code:?}, report {report:?}"))),
    }
    total.add(&parent);
}

/// In the child: make the socket the denial checks use (before entering,
/// when sockets are still allowed), then enter `policy`. None if either
/// failed (already counted).
fn prepare_and_enter(t: &mut Tally, policy: &Policy) -> Option<OwnedFd> {
    let unix = match unix_socket() {
        Ok(s) => s,
        Err(e) => {
            t.check("make a socket before entering", Err(e.to_string()));
            return None;
        }
    };
    enter(t, policy).then_some(unix)
}

/// Enters `policy` in the child, checking it says confined.
fn enter(t: &mut Tally, policy: &Policy) -> bool {
    match sandbox::enter(policy, Unconfined::Refused) {
        Ok(token) if token.confined() => {
            t.check("enter the sandbox", Ok(()));
            true
        }
        Ok(_) => {
            t.check("enter the sandbox", Err("unconfined".into()));
            false
        }
        Err(e) => {
            t.check("enter the sandbox", Err(e.to_string()));
            false
        }
    }
}

fn unix_socket() -> io::Result<OwnedFd> {
    socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(errno_io)
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(errno_io)
}

/// A socket directory as master opens it (for lookups only on Linux).
fn open_socket_dir(path: &Path) -> io::Result<OwnedFd> {
    #[cfg(target_os = "linux")]
    let base = OFlag::O_PATH;
    #[cfg(not(target_os = "linux"))]
    let base = OFlag::O_RDONLY;
    nix::fcntl::open(path, base | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(errno_io)
}

fn live_role(total: &mut Tally, world: &World, role: Role) -> io::Result<()> {
    let layout = Layout {
        spool: world.spool.clone(),
        listeners: 1,
        socket_dirs: vec![(world.lmtp_dir.clone(), vec![LMTP_SOCKET.into()])],
    };
    let policy = roles::policy(role, &layout);
    let (master, child_end) = master_channel()?;
    let mut tcp_client: Option<TcpStream> = None;
    let mut fds: Vec<OwnedFd> = vec![child_end];
    // Kept alive in the parent until the child has finished.
    let mut client: Option<UnixStream> = None;
    match role {
        Role::Control => {
            let path = world.root.join("control.sock");
            let listener = UnixListener::bind(&path)?;
            let mut c = UnixStream::connect(&path)?;
            c.write_all(b"ping\n")?;
            client = Some(c);
            fds.push(OwnedFd::from(listener));
        }
        Role::Qmgr => {
            for d in QUEUE_DIRS {
                fds.push(open_dir(&world.spool.join(d))?);
            }
        }
        Role::Smtpd => {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            let mut c = TcpStream::connect(listener.local_addr()?)?;
            c.write_all(b"ping\n")?;
            tcp_client = Some(c);
            fds.push(OwnedFd::from(listener));
            let table = world.root.join("table");
            std::fs::write(&table, b"local recipients")?;
            fds.push(OwnedFd::from(File::open(&table)?));
        }
        Role::Pickup => {
            let maildrop = world.spool.join("maildrop");
            std::fs::create_dir_all(&maildrop)?;
            std::fs::write(maildrop.join("dropped"), "submitted\n")?;
            let _ = std::fs::remove_file(maildrop.join("link"));
            std::os::unix::fs::symlink("/etc/passwd", maildrop.join("link"))?;
            fds.push(open_dir(&maildrop)?);
            fds.push(open_dir(&world.spool.join("corrupt"))?);
        }
        Role::Cleanup => {
            std::fs::write(world.spool.join("active").join("taken"), "qmgr's\n")?;
            for (d, _) in CLEANUP_DIRS {
                std::fs::create_dir_all(world.spool.join(d))?;
                fds.push(open_dir(&world.spool.join(d))?);
            }
        }
        Role::Connector => fds.push(open_socket_dir(&world.lmtp_dir)?),
        // Only their master channel.
        Role::Smtp | Role::Bounce | Role::Local | Role::Lookup => {}
    }
    // The policy must name exactly these descriptors.
    let named: Vec<RawFd> = policy.grants.iter().map(Grant::fd).collect();
    let expected: Vec<RawFd> = (MASTER_FD..MASTER_FD + fds.len() as RawFd).collect();
    let mut setup = Tally::new(role.name());
    setup.check(
        "the policy names the descriptors master passes",
        if named == expected && FIRST_ROLE_FD == MASTER_FD + 1 {
            Ok(())
        } else {
            Err(format!("policy {named:?}, passed {expected:?}"))
        },
    );
    total.add(&setup);

    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    run_child(total, role.name(), &borrowed, |t, mut placed| {
        // pickup watches maildrop/ (after the master channel) before
        // entering, as its program does.
        let watch = (role == Role::Pickup).then(|| Watch::new(placed[1].as_fd()));
        // The connector builds its runtime and resolver before entering.
        let net = (role == Role::Connector).then(ConnectorKit::new);
        let Some(unix) = prepare_and_enter(t, &policy) else { return };
        common_denials(t, &policy, world, &unix);
        let channel = placed.remove(0);
        channel_checks(t, &channel);
        match role {
            Role::Control => control_work(t, placed.remove(0)),
            Role::Qmgr => {
                dir_denials(t, &placed[0]);
                queue_work(t, &placed[0], &placed[1], &placed[2]);
            }
            Role::Smtpd => smtpd_work(t, placed.remove(0), &placed[0]),
            Role::Cleanup => {
                dir_denials(t, &placed[0]);
                cleanup_work(t, &placed[0], &placed[1], &placed[2]);
            }
            Role::Pickup => {
                dir_denials(t, &placed[0]);
                if let Some(watch) = watch {
                    pickup_watch(t, watch, &placed[0]);
                }
                pickup_work(t, &placed[0], &placed[1]);
            }
            Role::Smtp | Role::Bounce => {}
            // local's root parent reads the password database and the
            // aliases by path; its deliveries confine themselves.
            Role::Local => {
                t.check(
                    "read /etc/passwd (users are looked up)",
                    File::open("/etc/passwd").map(drop).map_err(|e| e.to_string()),
                );
                local_name_service(t, world);
            }
            // lookup reads by path and asks the name services; it
            // changes nothing by path.
            Role::Lookup => {
                read_only_fs(t, world);
                local_name_service(t, world);
                t.check(
                    "look users up",
                    match (mta::lookup::look_up("root"), mta::lookup::look_up("no-such-user-mta-test")) {
                        ((mta::ipc::msg::UserFound::Yes, _), (mta::ipc::msg::UserFound::No, _)) => Ok(()),
                        other => Err(format!("{other:?}")),
                    },
                );
                // Its threads look names up, in the same sandbox: a
                // process (what fork and posix_spawn make) is refused to
                // a thread as to the main one.
                t.check(
                    "threads look users up, and start no process",
                    std::thread::Builder::new()
                        .spawn(|| {
                            let found = mta::lookup::look_up("root").0;
                            let spawned = std::process::Command::new("/bin/true").status();
                            (found, spawned.is_err())
                        })
                        .map_err(|e| format!("no thread: {e}"))
                        .and_then(|h| h.join().map_err(|_| String::from("the thread panicked")))
                        .and_then(|r| match r {
                            (mta::ipc::msg::UserFound::Yes, true) => Ok(()),
                            other => Err(format!("{other:?}")),
                        }),
                );
            }
            Role::Connector => {
                connector_unix_work(t, &placed[0], world);
                if let Some(kit) = net {
                    connector_work(t, kit, world);
                }
            }
        }
        uid_denial(t, &policy);
    });
    drop(fds);

    let mut after = Tally::new(role.name());
    channel_received(&mut after, &master);
    if let Some(mut c) = client {
        after.check(
            "the client got the answer",
            (|| {
                let mut reply = Vec::new();
                works(c.read_to_end(&mut reply))?;
                if reply == b"pong\n" { Ok(()) } else { Err(format!("read {reply:?}")) }
            })(),
        );
    }
    if let Some(mut c) = tcp_client {
        after.check(
            "the TCP client got the answer",
            (|| {
                let mut reply = Vec::new();
                works(c.read_to_end(&mut reply))?;
                if reply == b"pong\n" { Ok(()) } else { Err(format!("read {reply:?}")) }
            })(),
        );
    }
    total.add(&after);
    Ok(())
}

/// master's lister of directory users (`local users`), in its sandbox:
/// it reads any file by path and asks the name services over AF_UNIX
/// stream sockets, as the C library's modules do, and writes its listing
/// to the descriptor it has; it changes nothing by path (writes, creates,
/// removes, modes, times), execs nothing, connects nowhere else.
fn live_user_lister(total: &mut Tally, world: &World) -> io::Result<()> {
    let (out_r, out_w) = pipe().map_err(errno_io)?;
    run_child(total, "local users", &[out_w.as_fd()], |t, placed| {
        let policy = mta::local::users::policy(placed[0].as_raw_fd());
        let Some(unix) = prepare_and_enter(t, &policy) else { return };
        common_denials(t, &policy, world, &unix);
        read_only_fs(t, world);
        local_name_service(t, world);
        t.check(
            "write the listing",
            File::from(placed.into_iter().next().expect("placed")).write_all(b"listed\n").map_err(|e| e.to_string()),
        );
        uid_denial(t, &policy);
    });
    drop(out_w);
    let mut after = Tally::new("local users");
    after.check(
        "the listing came out",
        match read_all(out_r) {
            Ok(v) if v == b"listed\n" => Ok(()),
            Ok(v) => Err(format!("read {v:?}")),
            Err(e) => Err(e.to_string()),
        },
    );
    after.check(
        "nothing changed by path",
        if std::fs::read(world.spool.join("secret")).is_ok_and(|v| v == b"outside the queue\n")
            && !world.root.join("renamed").exists()
            && !world.root.join("made").exists()
            && !world.root.join("ln").exists()
        {
            Ok(())
        } else {
            Err("a change went through".into())
        },
    );
    total.add(&after);
    Ok(())
}

/// A `read_fs` policy: files are read anywhere by path, and nothing is
/// written, made, removed, renamed, linked or changed by path.
fn read_only_fs(t: &mut Tally, world: &World) {
    t.check(
        "read /etc/passwd and a file elsewhere by path",
        (|| {
            std::fs::read("/etc/passwd")?;
            std::fs::read(world.spool.join("secret")).map(drop)
        })()
        .map_err(|e| e.to_string()),
    );
    let secret = world.spool.join("secret");
    t.check("open a file for writing by path", denied(std::fs::OpenOptions::new().append(true).open(&secret)));
    t.check("remove a file by path", denied(std::fs::remove_file(&secret)));
    t.check("rename a file by path", denied(std::fs::rename(&secret, world.root.join("renamed"))));
    t.check("make a directory by path", denied(std::fs::create_dir(world.root.join("made"))));
    t.check(
        "change a file's mode by path",
        denied(std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o666))),
    );
    t.check("make a symbolic link by path", denied(std::os::unix::fs::symlink("/etc/passwd", world.root.join("ln"))));
}

/// local's user lookups may ask a name service (sssd, nslcd, nscd,
/// systemd-userdbd) over an AF_UNIX stream socket: it makes one and
/// connects it to a listening socket; other AF_UNIX types and other
/// families stay refused.
fn local_name_service(t: &mut Tally, world: &World) {
    t.check(
        "create an AF_UNIX stream socket and connect it (name services)",
        (|| {
            let s = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(errno_io)?;
            let addr = UnixAddr::new(&world.unix_path).map_err(errno_io)?;
            connect(s.as_raw_fd(), &addr).map_err(errno_io)
        })()
        .map_err(|e| e.to_string()),
    );
    t.check(
        "create an AF_UNIX datagram socket",
        denied(socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)),
    );
}

/// What smtpd does: accept on a TCP listener, talk, and read its table.
fn smtpd_work(t: &mut Tally, listener: OwnedFd, table: &OwnedFd) {
    let listener = TcpListener::from(listener);
    t.check(
        "accept on a TCP listener and answer",
        (|| {
            let (mut s, _) = works(listener.accept())?;
            let mut req = [0u8; 5];
            works(s.read_exact(&mut req))?;
            works(s.write_all(b"pong\n"))
        })(),
    );
    t.check(
        "pread the local-recipient table",
        (|| {
            use std::os::unix::fs::FileExt;
            let f = File::from(works(table.try_clone())?);
            let mut buf = [0u8; 5];
            works(f.read_exact_at(&mut buf, 6))?;
            if &buf == b"recip" { Ok(()) } else { Err(format!("read {buf:?}")) }
        })(),
    );
}

/// What cleanup does: append to its journal, materialise into incoming/,
/// and look (only look) into the other queue directories.
fn cleanup_work(t: &mut Tally, journal: &OwnedFd, incoming: &OwnedFd, active: &OwnedFd) {
    let wr = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(0o600);
    t.check(
        "append to the journal and fdatasync",
        (|| {
            let mut f = File::from(works(openat(journal, "segment", wr, mode))?);
            works(f.write_all(b"record"))?;
            works(f.sync_data())
        })(),
    );
    t.check(
        "write a queue file under a temporary name and rename it",
        (|| {
            let mut f = File::from(works(openat(incoming, ".tmp.q1", wr, mode))?);
            works(f.write_all(b"queue file"))?;
            works(renameat(incoming, ".tmp.q1", incoming, "q1"))
        })(),
    );
    t.check(
        "materialise a queue file (mta::queue::disk::publish: complete by its mode) and sync it",
        publish(incoming, "q2"),
    );
    t.check(
        "look into active/ (count_entries)",
        mta::qmgr::count_entries(active).map(|_| ()).map_err(|e| e.to_string()),
    );
    t.check(
        "fsync a file opened read-only in active/ (recovery syncs the copies it finds)",
        (|| {
            let f = File::from(works(openat(active, "taken", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()))?);
            works(f.sync_all())
        })(),
    );
    t.check("create in active/ (read-only to cleanup)", denied(openat(active, "x", wr, mode)));
    t.check("unlink in active/", denied(unlinkat(active, "taken", UnlinkatFlags::NoRemoveDir)));
}

/// What pickup does: read a dropped file without following links, put a
/// bad one aside, remove a taken one.
fn pickup_work(t: &mut Tally, maildrop: &OwnedFd, corrupt: &OwnedFd) {
    let ro = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    t.check("read a maildrop file", {
        match openat(maildrop, "dropped", ro, Mode::empty()).map(read_all) {
            Ok(Ok(d)) if d == b"submitted\n" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    t.check("a symlink in maildrop/ is not followed (ELOOP)", {
        match openat(maildrop, "link", ro, Mode::empty()) {
            Err(nix::errno::Errno::ELOOP) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    t.check("move a file to corrupt/", works(renameat(maildrop, "dropped", corrupt, "maildrop.dropped")));
    t.check("remove a file (the symlink)", works(unlinkat(maildrop, "link", UnlinkatFlags::NoRemoveDir)));
}

/// pickup's watch, made before entering, inside the sandbox: a file
/// renamed into maildrop/ (as postdrop completes one) wakes a mio poll on
/// it, and draining it asks for a look, once.
fn pickup_watch(t: &mut Tally, watch: io::Result<Watch>, maildrop: &OwnedFd) {
    let mut watch = match watch {
        Ok(w) => {
            t.check("watch maildrop/ before entering (mta::pickup::watch)", Ok(()));
            w
        }
        Err(e) => return t.check("watch maildrop/ before entering (mta::pickup::watch)", Err(e.to_string())),
    };
    t.check(
        "the watch reports nothing before anything arrives",
        match watch.drain() {
            Wakeup::Nothing => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    t.check(
        "a file renamed into maildrop/ wakes a poll on the watch, which asks for a look",
        (|| {
            let mut poll = works(mio::Poll::new())?;
            let raw = watch.as_raw_fd();
            works(poll.registry().register(&mut mio::unix::SourceFd(&raw), mio::Token(0), mio::Interest::READABLE))?;
            let wr = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
            let mut f = File::from(works(openat(maildrop, ".tmp.arrival", wr, Mode::from_bits_truncate(0o640)))?);
            works(f.write_all(b"whole\n"))?;
            drop(f);
            works(renameat(maildrop, ".tmp.arrival", maildrop, "arrival"))?;
            let mut events = mio::Events::with_capacity(4);
            works(poll.poll(&mut events, Some(Duration::from_secs(5))))?;
            if events.is_empty() {
                return Err("no wakeup within 5 s".into());
            }
            match watch.drain() {
                Wakeup::Scan => Ok(()),
                other => Err(format!("drained {other:?}")),
            }
        })(),
    );
    t.check(
        "one drain takes every report",
        match watch.drain() {
            Wakeup::Nothing => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // Why pickup watches before entering: the call takes a path.
    #[cfg(target_os = "linux")]
    t.check("add an inotify watch inside the sandbox", denied(Watch::new(maildrop.as_fd())));
    // Capsicum's CAP_EVENT on maildrop/ lets a kqueue filter be attached.
    #[cfg(not(target_os = "linux"))]
    t.check("attach a kqueue filter to maildrop/ inside the sandbox", works(Watch::new(maildrop.as_fd())).map(drop));
    t.check("remove the arrived file", works(unlinkat(maildrop, "arrival", UnlinkatFlags::NoRemoveDir)));
}

/// What the connector sets up before entering: its runtime and resolver
/// (asking `dns`, a loopback UDP socket the child answers from itself).
struct ConnectorKit {
    runtime: tokio::runtime::Runtime,
    connector: mta::connector::Connector,
    dns: UdpSocket,
}

impl ConnectorKit {
    fn new() -> io::Result<ConnectorKit> {
        let dns = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        dns.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
        let conf =
            Dns { servers: vec![dns.local_addr()?], timeout: Duration::from_secs(2), attempts: 1, ..Dns::default() };
        let (resolver, _) = {
            let _context = runtime.enter();
            mta::connector::Resolver::new(&conf).map_err(io::Error::other)?
        };
        let connector = mta::connector::Connector::new(resolver, Duration::from_secs(2));
        Ok(ConnectorKit { runtime, connector, dns })
    }
}

/// A DNS answer made by hand: the question echoed, and for an A query
/// one record, 127.0.0.1; every other type exists without records.
fn dns_reply(query: &[u8]) -> Option<Vec<u8>> {
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    end += 5;
    let qtype = u16::from_be_bytes([*query.get(end - 4)?, *query.get(end - 3)?]);
    let mut r = query.get(..end)?.to_vec();
    r[2] = 0x81; // response, recursion desired
    r[3] = 0x80; // recursion available, no error
    let answers: u8 = if qtype == 1 { 1 } else { 0 };
    r[4..12].copy_from_slice(&[0, 1, 0, answers, 0, 0, 0, 0]);
    if qtype == 1 {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some(r)
}

/// What the connector does: resolve and connect with its resolver, over
/// UDP and TCP sockets it creates inside the sandbox.
fn connector_work(t: &mut Tally, kit: io::Result<ConnectorKit>, world: &World) {
    let kit = match kit {
        Ok(k) => {
            t.check("build the runtime and the resolver before entering", Ok(()));
            k
        }
        Err(e) => return t.check("build the runtime and the resolver before entering", Err(e.to_string())),
    };
    t.check("connect a TCP socket to a loopback listener", works(TcpStream::connect(world.tcp_addr)).map(drop));
    t.check(
        "send a UDP datagram to loopback",
        (|| {
            let s = works(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))?;
            works(s.send_to(b"datagram", kit.dns.local_addr().map_err(|e| e.to_string())?))?;
            let mut buf = [0u8; 16];
            std::thread::sleep(Duration::from_millis(50));
            let (n, from) = works(kit.dns.recv_from(&mut buf))?;
            if &buf[..n] == b"datagram" && Ok(from) == s.local_addr().map_err(|e| e.to_string()) {
                Ok(())
            } else {
                Err(format!("received {:?} from {from}", &buf[..n]))
            }
        })(),
    );
    t.check(
        "resolve a domain (MX, then the implicit MX's A and AAAA) and connect to its address",
        (|| {
            let nexthop = NexthopSpec { host: "sandbox.example".into(), port: Some(world.tcp_addr.port()), mx: true };
            let ConnectorKit { runtime, connector, dns } = kit;
            let conn = runtime.block_on(async {
                let dns = works(tokio::net::UdpSocket::from_std(dns))?;
                let answer = async {
                    let mut buf = [0u8; 1500];
                    loop {
                        if let Ok((n, peer)) = dns.recv_from(&mut buf).await
                            && let Some(reply) = dns_reply(&buf[..n])
                        {
                            let _ = dns.send_to(&reply, peer).await;
                        }
                    }
                };
                tokio::select! {
                    r = connector.connect(&nexthop, 25, &[]) => r.map_err(|f| f.reason),
                    () = answer => Err("the responder ended".to_string()),
                }
            })?;
            if conn.host == "sandbox.example" && conn.addr == world.tcp_addr {
                Ok(())
            } else {
                Err(format!("connected to {}[{}]", conn.host, conn.addr))
            }
        })(),
    );
}

/// Whether the kernel makes connecting to a pathname UNIX socket a
/// sandbox matter: Landlock from ABI 9, unveil. (FreeBSD's connector
/// stays out of capability mode for its TCP connections.)
fn unix_connect_confined() -> bool {
    if cfg!(target_os = "openbsd") {
        return true;
    }
    let k = sandbox::describe_kernel();
    k.strip_prefix("landlock ABI ")
        .and_then(|r| r.split(',').next())
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|v| v >= 9)
}

/// What the connector does for LMTP: connect to a socket in its socket
/// directory (and, where the sandbox governs it, to no other).
fn connector_unix_work(t: &mut Tally, dir: &OwnedFd, world: &World) {
    t.check(
        "connect to the LMTP socket in its socket directory (sandbox::connect_unix)",
        works(sandbox::connect_unix(dir.as_fd(), &world.lmtp_dir, LMTP_SOCKET.as_ref())).map(drop),
    );
    t.check(
        "connect_unix refuses a name that leaves the directory",
        denied_or_invalid(sandbox::connect_unix(dir.as_fd(), &world.lmtp_dir, "../listening.sock".as_ref())),
    );
    t.check(
        "create an AF_UNIX datagram socket",
        denied(socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)),
    );
    if unix_connect_confined() {
        t.check(
            "connect to a UNIX socket outside its socket directories",
            denied(UnixStream::connect(&world.unix_path)),
        );
    } else {
        println!("note connector: this kernel does not confine connecting to pathname UNIX sockets (Landlock < 9)");
    }
}

/// A refusal by the code (invalid input) rather than the sandbox.
fn denied_or_invalid<T>(r: io::Result<T>) -> Result<(), String> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        other => denied(other),
    }
}

/// A policy that may fork and exec and read a few paths, as local's
/// root parent will (its real path list is its own business).
fn live_exec(total: &mut Tally, world: &World) -> io::Result<()> {
    let mut policy = Policy::new("exec");
    policy.grants.push(Grant::Channel { fd: MASTER_FD });
    policy.fork = true;
    policy.exec = true;
    // What /bin/true needs (the loader, the C library), and a directory
    // of our own to read.
    for p in ["/bin", "/usr", "/lib", "/lib64", "/etc/ld.so.cache"] {
        if Path::new(p).exists() {
            policy.open_paths.push(PathBuf::from(p));
        }
    }
    policy.open_paths.push(world.root.join("readable"));
    let (master, child_end) = master_channel()?;
    run_child(total, policy.role, &[child_end.as_fd()], |t, mut placed| {
        let Some(unix) = prepare_and_enter(t, &policy) else { return };
        common_denials(t, &policy, world, &unix);
        #[cfg(target_os = "linux")]
        t.check(
            "no_new_privs is not set (set-gid postdrop must work)",
            match nix::sys::prctl::get_no_new_privs() {
                Ok(false) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        t.check(
            "fork and exec /bin/true",
            match Command::new("/bin/true").status() {
                Ok(s) if s.success() => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        t.check(
            "read a file under an open path",
            match std::fs::read(world.root.join("readable").join("file")) {
                Ok(d) if d == b"readable\n" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        t.check(
            "create a file under a read-only open path",
            denied(File::create(world.root.join("readable").join("new"))),
        );
        t.check("open a spool file outside the open paths", denied(File::open(world.spool.join("secret"))));
        channel_checks(t, &placed.remove(0));
        uid_denial(t, &policy);
    });
    drop(child_end);
    let mut after = Tally::new(policy.role);
    channel_received(&mut after, &master);
    total.add(&after);
    Ok(())
}

/// local's command spawner ([`mta::local::spawner`]), started before
/// local enters its sandbox (here: this program as `local spawner`),
/// starts users' commands outside it. In a child that
/// starts two spawners (one that may run commands as root, one that may
/// not) and then enters local's policy: local itself can create neither
/// a socket nor a thread; a command the spawner starts (this program,
/// as `local pipe`: see [`pipe_command`]) runs as the user it was given
/// (nobody, when we are root), with no seccomp filter, and connects a TCP
/// and a UNIX socket from a thread it starts; a spawner that may not run
/// commands as root refuses uid 0; a spawner ends when local's end of its
/// socket closes.
fn live_local_commands(total: &mut Tally, world: &World) -> io::Result<()> {
    let policy = roles::policy(Role::Local, &Layout { spool: world.spool.clone(), listeners: 0, socket_dirs: vec![] });
    let program = std::env::current_exe()?;
    // A UNIX listener any user may connect to.
    let unix_path = world.root.join("commands.sock");
    let _unix = UnixListener::bind(&unix_path)?;
    std::fs::set_permissions(&unix_path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    let (master, child_end) = master_channel()?;
    run_child(total, "local commands", &[child_end.as_fd()], |t, _placed| {
        use mta::local::spawner::Spawner;
        let spawners = Spawner::start(&program, true).and_then(|r| Ok((r, Spawner::start(&program, false)?)));
        let (mut root_ok, mut no_root) = match spawners {
            Ok(s) => s,
            Err(e) => return t.check("start the command spawners before entering", Err(e.to_string())),
        };
        // (run_child closes what the child is not given: opened here.)
        let queue = match File::open(world.spool.join("secret")) {
            Ok(f) => f,
            Err(e) => return t.check("open a queue file", Err(e.to_string())),
        };
        if prepare_and_enter(t, &policy).is_none() {
            return;
        }
        t.check(
            "local itself creates no AF_INET socket",
            denied(socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)),
        );
        #[cfg(target_os = "linux")]
        t.check(
            "local itself starts no thread",
            match std::thread::Builder::new().spawn(|| ()) {
                Ok(h) => {
                    let _ = h.join();
                    Err("a thread started".into())
                }
                Err(_) => Ok(()),
            },
        );
        let root = Uid::effective().is_root();
        // As nobody when we may change ids; else as ourselves (without
        // root, setgroups fails: a command cannot run at all).
        let (uid, gid) = if root { (65534, 65534) } else { (Uid::effective().as_raw(), Gid::effective().as_raw()) };
        let creds = sandbox::Credentials { uid, gid, groups: vec![gid] };
        let tcp = world.tcp_addr.to_string();
        let unix = unix_path.to_string_lossy().into_owned();
        let args = [tcp.as_str(), unix.as_str(), "", "", "+", "0", "nobody", "/", "10"];
        let limit = Duration::from_secs(20);
        if root {
            t.check(
                "a command from the spawner: its ids, no seccomp filter, sockets and a thread",
                match root_ok.run(&args, &creds, &queue, limit, 4096) {
                    Ok(ran) => {
                        let text = String::from_utf8_lossy(&ran.text).into_owned();
                        let want = format!("uid={uid} gid={gid} seccomp=0 thread tcp unix");
                        match ran.status {
                            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) if text.trim() == want => Ok(()),
                            other => Err(format!("{other:?}: {text}")),
                        }
                    }
                    Err(o) => Err(o.reason),
                },
            );
            // One that outlives its time: killed at local's word.
            let sleep = ["sleep", "", "", "", "+", "0", "nobody", "/", "10"];
            t.check(
                "a command past its time is killed by the spawner",
                match root_ok.run(&sleep, &creds, &queue, Duration::from_secs(1), 4096) {
                    Ok(ran) if ran.timed_out => match ran.status {
                        Ok(nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)) => Ok(()),
                        other => Err(format!("{other:?}")),
                    },
                    Ok(ran) => Err(format!("not timed out: {:?}", ran.status)),
                    Err(o) => Err(o.reason),
                },
            );
        } else {
            println!("note local commands: not root, so no command can change ids and none is run");
        }
        let as_root = sandbox::Credentials { uid: 0, gid: 0, groups: vec![0] };
        t.check(
            "uid 0 refused by a spawner that may not run commands as root",
            match no_root.run(&args, &as_root, &queue, limit, 4096) {
                Ok(ran) => Err(format!("ran: {:?}", ran.status)),
                Err(o) if o.reason.contains("refused: a command as root") && no_root.lost().is_none() => Ok(()),
                Err(o) => Err(o.reason),
            },
        );
        for (what, s) in [("may", root_ok), ("may not", no_root)] {
            t.check(
                &format!("the spawner that {what} run commands as root ends when local's end closes"),
                match s.close(Duration::from_secs(5)) {
                    (Ok(nix::sys::wait::WaitStatus::Exited(_, 0)), false) => Ok(()),
                    other => Err(format!("{other:?}")),
                },
            );
        }
    });
    drop(child_end);
    drop(master);
    Ok(())
}

/// This program run by a command spawner as `local pipe TCP UNIX ...`
/// (from [`live_local_commands`]): it starts a thread that connects to
/// the TCP address and the UNIX socket, and reports on standard error
/// its ids, its seccomp mode (0 where there is no /proc) and what
/// worked; exit status 0, or 75 (and why) when something did not. As
/// `local pipe sleep ...`, it sleeps for 30 s.
fn pipe_command(args: &[String]) -> i32 {
    if args.get(2).map(String::as_str) == Some("sleep") {
        std::thread::sleep(Duration::from_secs(30));
        return 0;
    }
    let (Some(tcp), Some(unix)) = (args.get(2), args.get(3)) else {
        eprintln!("arguments: {args:?}");
        return 64;
    };
    let (tcp, unix) = (tcp.clone(), unix.clone());
    let talk = move || -> Result<String, String> {
        TcpStream::connect(tcp.as_str()).map_err(|e| format!("tcp {tcp}: {e}"))?;
        UnixStream::connect(&unix).map_err(|e| format!("unix {unix}: {e}"))?;
        Ok(String::from("thread tcp unix"))
    };
    let done = match std::thread::Builder::new().spawn(talk) {
        Ok(h) => h.join().unwrap_or_else(|_| Err(String::from("the thread panicked"))),
        Err(e) => Err(format!("no thread: {e}")),
    };
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim().to_string())))
        .unwrap_or_else(|| String::from("0"));
    match done {
        Ok(what) => {
            eprintln!("uid={} gid={} seccomp={seccomp} {what}", Uid::current(), Gid::current());
            0
        }
        Err(why) => {
            eprintln!("{why}");
            75
        }
    }
}

/// The Capsicum rights an operation needs on its descriptor (`Connect`
/// has none: it needs to stay out of capability mode, which
/// `Net::Connect` says).
fn op_rights(op: Operation) -> &'static [CapRight] {
    use CapRight::*;
    match op {
        Operation::Talk(_) => &[Read, Write, Event],
        Operation::ReceiveFds(_) => &[Read],
        Operation::Serve(_) => &[Accept, Read, Write, Getpeername, Getsockname, Getsockopt, Event],
        Operation::List(_) => &[Lookup, Read, Fstat],
        Operation::Modify(_) => {
            &[Lookup, Create, Write, Fsync, Ftruncate, RenameatSource, RenameatTarget, Unlinkat, Mkdirat]
        }
        Operation::ReadFile(_) => &[Read, Seek, Fstat],
        Operation::Watch(_) => &[Event],
        Operation::SetTimes(_) => &[Futimes],
        Operation::SetModes(_) => &[Fchmod],
        Operation::SyncFiles(_) => &[Fsync],
        Operation::ConnectUnix(_) => &[Lookup, Connectat],
        Operation::Connect | Operation::DeliverAsUsers | Operation::LookUpUsers => &[],
    }
}

/// The pledge promises an operation needs; for `Serve`, any one of them.
fn op_promises(op: Operation) -> (&'static [&'static str], bool) {
    match op {
        Operation::Talk(_) => (&["stdio"], false),
        Operation::ReceiveFds(_) => (&["recvfd"], false),
        Operation::Serve(_) => (&["unix", "inet"], true),
        Operation::List(_) => (&["rpath"], false),
        Operation::Modify(_) => (&["wpath", "cpath"], false),
        Operation::ReadFile(_) => (&["stdio"], false),
        Operation::Watch(_) | Operation::SyncFiles(_) => (&["stdio"], false),
        Operation::SetTimes(_) | Operation::SetModes(_) => (&["fattr"], false),
        Operation::Connect => (&["inet", "dns"], false),
        Operation::ConnectUnix(_) => (&["unix"], false),
        Operation::DeliverAsUsers => (&["rpath", "proc", "exec", "id", "getpw"], false),
        Operation::LookUpUsers => (&["rpath", "getpw"], false),
    }
}

/// Promises that widen what a process can reach, and which operations
/// justify each. Talk exchanges descriptors, so it justifies "sendfd".
fn promise_justified(promise: &str, op: Operation) -> bool {
    matches!(
        (promise, op),
        ("rpath", Operation::List(_))
            | ("wpath" | "cpath", Operation::Modify(_))
            | ("unix" | "inet", Operation::Serve(_))
            | ("recvfd", Operation::ReceiveFds(_))
            | ("sendfd", Operation::Talk(_))
            | ("inet" | "dns", Operation::Connect)
            | ("unix", Operation::ConnectUnix(_))
            | ("fattr", Operation::SetTimes(_) | Operation::SetModes(_))
            | ("rpath" | "wpath" | "cpath" | "fattr" | "proc" | "exec" | "id" | "getpw", Operation::DeliverAsUsers)
            | ("rpath" | "getpw", Operation::LookUpUsers)
    )
}
const WIDENING_PROMISES: &[&str] =
    &["rpath", "wpath", "cpath", "fattr", "unix", "inet", "dns", "recvfd", "sendfd", "proc", "exec", "id", "getpw"];

/// The descriptor an operation uses (none for `Connect`).
fn op_fd(op: Operation) -> Option<RawFd> {
    match op {
        Operation::Talk(fd)
        | Operation::ReceiveFds(fd)
        | Operation::Serve(fd)
        | Operation::List(fd)
        | Operation::Modify(fd)
        | Operation::ReadFile(fd)
        | Operation::Watch(fd)
        | Operation::SetTimes(fd)
        | Operation::SetModes(fd)
        | Operation::SyncFiles(fd)
        | Operation::ConnectUnix(fd) => Some(fd),
        Operation::Connect | Operation::DeliverAsUsers | Operation::LookUpUsers => None,
    }
}

fn check_promises(t: &mut Tally, op: Operation, promises: &BTreeSet<String>) {
    let (need, any) = op_promises(op);
    let ok = if any { need.iter().any(|p| promises.contains(*p)) } else { need.iter().all(|p| promises.contains(*p)) };
    t.check(
        &format!("{op:?}: pledge promises"),
        if ok { Ok(()) } else { Err(format!("needs {need:?}, policy pledges {promises:?}")) },
    );
}

fn data_checks(total: &mut Tally, role: Role) {
    let mut t = Tally::new(role.name());
    // Two listeners and two socket directories, to check that every one
    // is granted.
    let layout = Layout {
        spool: PathBuf::from("/var/spool/mta"),
        listeners: 2,
        socket_dirs: vec![
            (PathBuf::from("/run/dovecot"), vec!["lmtp".into()]),
            (PathBuf::from("/run/other"), vec!["a".into(), "b".into()]),
        ],
    };
    let policy = roles::policy(role, &layout);
    let ops = roles::operations(role, &layout);
    let promises: BTreeSet<String> = pledge_promises(&policy).split_whitespace().map(String::from).collect();

    for &op in &ops {
        let what = format!("{op:?}: Capsicum rights");
        let Some(fd) = op_fd(op) else {
            if op == Operation::DeliverAsUsers {
                // Forks, execs and changes ids, with the file system open.
                t.check(
                    "DeliverAsUsers: fork, exec, change_uid and whole_fs, no network",
                    if policy.fork && policy.exec && policy.change_uid && policy.whole_fs && policy.net == Net::None {
                        Ok(())
                    } else {
                        Err(format!("{policy:?}"))
                    },
                );
                check_promises(&mut t, op, &promises);
                continue;
            }
            if op == Operation::LookUpUsers {
                // Reads by path and asks the name services; changes
                // nothing, starts nothing, no network.
                t.check(
                    "LookUpUsers: read_fs and name_service only",
                    if policy.read_fs
                        && policy.name_service
                        && !policy.whole_fs
                        && !policy.fork
                        && !policy.exec
                        && !policy.change_uid
                        && policy.net == Net::None
                    {
                        Ok(())
                    } else {
                        Err(format!("{policy:?}"))
                    },
                );
                check_promises(&mut t, op, &promises);
                continue;
            }
            // FreeBSD: outside capability mode; Linux: inet sockets allowed.
            t.check(
                "Connect: the policy may open outbound connections (Net::Connect)",
                if policy.net == Net::Connect { Ok(()) } else { Err(format!("net is {:?}", policy.net)) },
            );
            check_promises(&mut t, op, &promises);
            continue;
        };
        match policy.grants.iter().find(|g| g.fd() == fd) {
            None => t.check(&what, Err(format!("no grant for descriptor {fd}"))),
            Some(g) => {
                let have = capsicum_rights(g);
                let missing: Vec<_> = op_rights(op).iter().filter(|r| !have.contains(r)).collect();
                t.check(&what, if missing.is_empty() { Ok(()) } else { Err(format!("missing {missing:?}")) });
            }
        }
        check_promises(&mut t, op, &promises);
    }
    t.check(
        "no outbound network without a Connect operation",
        if policy.net == Net::None || ops.contains(&Operation::Connect) {
            Ok(())
        } else {
            Err(format!("net is {:?}", policy.net))
        },
    );

    for g in &policy.grants {
        let fd = g.fd();
        let needed: BTreeSet<CapRight> =
            ops.iter().filter(|&&op| op_fd(op) == Some(fd)).flat_map(|&op| op_rights(op).iter().copied()).collect();
        t.check(
            &format!("descriptor {fd} is used by an operation"),
            if needed.is_empty() { Err("granted but no operation uses it".into()) } else { Ok(()) },
        );
        let excess: Vec<_> =
            capsicum_rights(g).into_iter().filter(|r| MODIFYING_RIGHTS.contains(r) && !needed.contains(r)).collect();
        t.check(
            &format!("descriptor {fd}: no dangerous right beyond its operations"),
            if excess.is_empty() { Ok(()) } else { Err(format!("{excess:?} granted, needed by no operation")) },
        );
        if let Grant::Dir { watch, .. } = g {
            let watched = ops.contains(&Operation::Watch(fd));
            t.check(
                &format!("descriptor {fd}: the event right exactly when the directory is watched"),
                if capsicum_rights(g).contains(&CapRight::Event) == watched && *watch == watched {
                    Ok(())
                } else {
                    Err(format!("watch {watch}, watched by an operation: {watched}"))
                },
            );
        }
        if let Grant::Dir { access: DirAccess::Read, .. } = g {
            t.check(
                &format!("descriptor {fd}: a read-only directory cannot be modified"),
                if capsicum_rights(g).iter().any(|r| MODIFYING_RIGHTS.contains(r)) {
                    Err("it has a modifying right".into())
                } else {
                    Ok(())
                },
            );
        }
    }
    let unjustified: Vec<&str> = WIDENING_PROMISES
        .iter()
        .copied()
        .filter(|p| promises.contains(*p) && !ops.iter().any(|&op| promise_justified(p, op)))
        .collect();
    t.check(
        "no pledge promise beyond its operations",
        if unjustified.is_empty() { Ok(()) } else { Err(format!("{unjustified:?} needed by no operation")) },
    );
    let unveiled = sandbox::unveil_paths(&policy);
    let dirs = policy.grants.iter().filter(|g| matches!(g, Grant::Dir { .. })).count();
    let sockets: Vec<PathBuf> = policy
        .grants
        .iter()
        .filter_map(|g| match g {
            Grant::SocketDir { path, sockets, .. } => Some(sockets.iter().map(|n| path.join(n)).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    t.check(
        "unveil names every directory grant and socket and nothing else",
        if unveiled.len() == dirs + policy.open_paths.len() + sockets.len() + usize::from(policy.read_fs)
            && unveiled.iter().all(|(p, perms)| {
                p.starts_with("/var/spool/mta")
                    || policy.open_paths.contains(p)
                    || (sockets.contains(p) && *perms == "rw")
                    || (policy.read_fs && p == Path::new("/") && *perms == "r")
            })
        {
            Ok(())
        } else {
            Err(format!("{unveiled:?}"))
        },
    );
    total.add(&t);
}

fn main() {
    // Started as a command spawner, and by it (see `live_local_commands`).
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("spawner") => mta::local::spawner::main(&args[2..]),
        Some("pipe") => std::process::exit(pipe_command(&args)),
        _ => {}
    }
    println!("# kernel: {}", sandbox::describe_kernel());
    let mut total = Tally::new("all");
    for role in Role::ALL {
        data_checks(&mut total, role);
    }
    match World::new() {
        Ok(world) => {
            for role in Role::ALL {
                if let Err(e) = live_role(&mut total, &world, role) {
                    println!("FAIL {}: set up: {e}", role.name());
                    total.failed += 1;
                }
            }
            if let Err(e) = live_exec(&mut total, &world) {
                println!("FAIL exec: set up: {e}");
                total.failed += 1;
            }
            if let Err(e) = live_local_commands(&mut total, &world) {
                println!("FAIL local commands: set up: {e}");
                total.failed += 1;
            }
            if let Err(e) = live_user_lister(&mut total, &world) {
                println!("FAIL local users: set up: {e}");
                total.failed += 1;
            }
        }
        Err(e) => {
            println!("FAIL all: set up the test spool: {e}");
            total.failed += 1;
        }
    }
    println!("{} passed, {} failed", total.passed, total.failed);
    let _ = io::stdout().flush();
    if total.failed > 0 {
        std::process::exit(1);
    }
}

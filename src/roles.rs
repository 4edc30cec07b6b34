//! The process roles master starts, the descriptors each one receives at
//! known numbers, and each role's sandbox policy: one declarative value
//! per role, reviewable here as a unit. The same `Policy` is applied by
//! Capsicum on FreeBSD, unveil+pledge on OpenBSD and Landlock+seccomp on
//! Linux (see the sandbox crate for how each field maps).
//!
//! Trusts: nothing here parses input.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::PathBuf;

use sandbox::{DirAccess, Grant, Net, Policy};

/// Every child's channel to master.
pub const MASTER_FD: RawFd = 3;
/// The first role-specific descriptor.
pub const FIRST_ROLE_FD: RawFd = 4;

/// The queue directories qmgr holds, in descriptor order from FIRST_ROLE_FD.
pub const QUEUE_DIRS: [&str; 5] = ["incoming", "active", "deferred", "hold", "corrupt"];

/// The intake journal's directory (cleanup's), beside the queue directories.
pub const JOURNAL_DIR: &str = "journal";

/// cleanup's directories, in descriptor order from FIRST_ROLE_FD, and
/// whether it writes there: the journal and incoming/ (read-write), and the
/// other queue directories (read-only, so recovery can tell a message
/// qmgr already took from one that was lost).
pub const CLEANUP_DIRS: [(&str, bool); 5] =
    [(JOURNAL_DIR, true), ("incoming", true), ("active", false), ("deferred", false), ("hold", false)];

/// Local submission's drop directory (postdrop writes, pickup reads).
pub const MAILDROP_DIR: &str = "maildrop";

/// What varies between installations in the descriptors a role gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The spool directory (unveil names directories by path).
    pub spool: PathBuf,
    /// smtpd's listening sockets, from FIRST_ROLE_FD; the local-recipient
    /// table follows them.
    pub listeners: usize,
    /// The connector's socket directories (the transport table's LMTP
    /// sockets, by name), from FIRST_ROLE_FD.
    pub socket_dirs: Vec<(PathBuf, Vec<OsString>)>,
}

/// A process role started by master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Role {
    Control,
    Qmgr,
    Smtpd,
    Cleanup,
    Pickup,
    Smtp,
    Connector,
    Bounce,
    Local,
    Lookup,
}

impl Role {
    pub const ALL: [Role; 10] = [
        Role::Control,
        Role::Qmgr,
        Role::Cleanup,
        // Before smtpd, so that smtpd's first RCPT finds it.
        Role::Lookup,
        Role::Smtpd,
        Role::Pickup,
        Role::Connector,
        Role::Smtp,
        Role::Bounce,
        Role::Local,
    ];

    /// The role's name in logs, status output and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Qmgr => "qmgr",
            Role::Smtpd => "smtpd",
            Role::Cleanup => "cleanup",
            Role::Pickup => "pickup",
            Role::Smtp => "smtp",
            Role::Connector => "connector",
            Role::Bounce => "bounce",
            Role::Local => "local",
            Role::Lookup => "lookup",
        }
    }

    /// The program in libexec_directory that runs this role.
    pub fn program(self) -> &'static str {
        self.name()
    }

    /// Singletons never run twice at once, not even across a reload.
    pub fn singleton(self) -> bool {
        match self {
            Role::Control | Role::Qmgr | Role::Cleanup | Role::Pickup | Role::Connector | Role::Bounce => true,
            // lookup keeps no state: on a reload the new one starts while
            // the old one still answers, until the smtpd processes have
            // the new one.
            Role::Smtpd | Role::Smtp | Role::Local | Role::Lookup => false,
        }
    }

    /// Whether the configuration may set how many run (`processes`).
    /// lookup runs once, or not at all when smtpd asks it nothing
    /// (`local.directory_lookup`).
    pub fn fixed_count(self) -> bool {
        self.singleton() || self == Role::Lookup
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// What [`Role::open_files`] is made of, for the log.
    pub fn open_files_basis(self) -> &'static str {
        match self {
            Role::Smtpd => "limits.sessions + 256",
            Role::Smtp => "3 * (transport.smtp.processes + transport.lmtp.processes) + 256",
            _ => "its role's",
        }
    }

    /// Open-files limit for the role's processes, given the session limit
    /// (smtpd) or the deliveries at once (smtp).
    pub fn open_files(self, sessions: u32, deliveries: u32) -> u64 {
        match self {
            // control: its channels plus mtactl clients (bounded by control.clients).
            // bounce: one queue file at a time per request.
            // lookup: its channels (one per smtpd process) and what the
            // C library's name services open.
            Role::Control | Role::Pickup | Role::Bounce | Role::Lookup => 256,
            // local: channels, the queue file being delivered, a child's
            // pipe, the command spawner's socket.
            Role::Local => 256,
            // qmgr: its directories and channels, the queue files it is
            // reading or handing on, up to 1,024 kept for a first delivery.
            Role::Qmgr => 2048,
            // connector: a socket per connection attempt and per lookup
            // in progress, a channel per smtp and smtpd process.
            Role::Connector => 4096,
            // smtp: a socket and a queue file per delivery, idle
            // sessions kept for reuse, channels.
            Role::Smtp => 3 * u64::from(deliveries) + 256,
            // cleanup: channels to every smtpd, its directories and journal.
            Role::Cleanup => 1024,
            // smtpd: one descriptor per session, plus listeners and channels.
            Role::Smtpd => u64::from(sessions) + 256,
        }
    }
}

/// Role pairs that may talk to each other directly. master creates one
/// SOCK_SEQPACKET channel per pair and nothing else; order within a pair
/// does not matter.
pub const CHANNELS: &[(Role, Role)] = &[
    (Role::Control, Role::Qmgr),
    (Role::Smtpd, Role::Cleanup),
    (Role::Pickup, Role::Cleanup),
    (Role::Qmgr, Role::Smtp),
    (Role::Smtp, Role::Connector),
    (Role::Smtpd, Role::Connector),
    (Role::Qmgr, Role::Bounce),
    (Role::Bounce, Role::Cleanup),
    (Role::Qmgr, Role::Local),
    (Role::Local, Role::Cleanup),
    (Role::Cleanup, Role::Qmgr),
    (Role::Smtpd, Role::Lookup),
];

/// Whether `a` and `b` may have a channel.
pub fn channel_allowed(a: Role, b: Role) -> bool {
    CHANNELS.iter().any(|&(x, y)| (x == a && y == b) || (x == b && y == a))
}

/// What a role does with its descriptors, for the test that checks each
/// policy's Capsicum rights and pledge promises against its behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Exchange messages (and descriptors) on a channel.
    Talk(RawFd),
    /// Receive descriptors (peer channels) on a channel.
    ReceiveFds(RawFd),
    /// Accept connections on a listener and talk on them, checking peer credentials.
    Serve(RawFd),
    /// List and stat files in a directory.
    List(RawFd),
    /// Create, write, fsync, rename and unlink files in a directory, and make
    /// subdirectories in it (the hashed folders of deferred/).
    Modify(RawFd),
    /// Read an open file with pread (a compiled table).
    ReadFile(RawFd),
    /// Wait for entries to arrive in a directory (kqueue EVFILT_VNODE on
    /// the descriptor; inotify on Linux, added before entering).
    Watch(RawFd),
    /// Resolve names and connect new sockets to the network, then pass
    /// them on (the connector).
    Connect,
    /// Connect new UNIX sockets to the LMTP servers' sockets in a
    /// directory, then pass them on (the connector).
    ConnectUnix(RawFd),
    /// Set the times of files beneath a directory (qmgr dates a deferred
    /// message's next attempt in its mtime).
    SetTimes(RawFd),
    /// Change the mode of files beneath a directory (cleanup, and qmgr
    /// writing out a message it held in memory, mark a queue file
    /// complete by its mode).
    SetModes(RawFd),
    /// Make files opened read-only beneath a directory durable (fsync),
    /// changing nothing in them: cleanup's journal recovery syncs the
    /// valid copies of its messages it finds in active/, deferred/ and
    /// hold/, which the process that wrote them may not have synced.
    SyncFiles(RawFd),
    /// Look users up and start each delivery as its recipient: fork,
    /// exec, change ids, open paths anywhere (local's root parent; its
    /// command spawner, outside any policy, starts users' commands).
    DeliverAsUsers,
    /// Ask the system's name service about users by name: read files by
    /// path (nsswitch.conf, /etc/passwd, the name-service modules) and
    /// connect to the name services' AF_UNIX sockets; nothing written,
    /// made or changed (the lookup role).
    LookUpUsers,
}

/// The operations each role performs.
pub fn operations(role: Role, layout: &Layout) -> Vec<Operation> {
    let mut ops = vec![Operation::Talk(MASTER_FD), Operation::ReceiveFds(MASTER_FD)];
    match role {
        Role::Control => ops.push(Operation::Serve(FIRST_ROLE_FD)),
        Role::Qmgr => {
            ops.push(Operation::Watch(FIRST_ROLE_FD));
            for (i, dir) in QUEUE_DIRS.iter().enumerate() {
                let fd = FIRST_ROLE_FD + i as RawFd;
                ops.push(Operation::List(fd));
                ops.push(Operation::Modify(fd));
                // Dating a deferred message's next attempt, before it
                // moves to deferred/ from active/ or (first attempt)
                // incoming/.
                if matches!(*dir, "incoming" | "active" | "deferred") {
                    ops.push(Operation::SetTimes(fd));
                }
                // Writing out a message it holds in memory: its queue
                // file is marked complete by its mode, as cleanup's are.
                if *dir == "incoming" {
                    ops.push(Operation::SetModes(fd));
                }
            }
        }
        // smtp and bounce: only what they are sent (sockets, read-only
        // queue files), which they limit as they receive it.
        Role::Smtp | Role::Bounce => {}
        Role::Lookup => ops.push(Operation::LookUpUsers),
        // local: what it is sent, and (outside this list, which covers
        // descriptors only) the file system as root: see its policy.
        Role::Local => ops.push(Operation::DeliverAsUsers),
        Role::Connector => {
            ops.push(Operation::Connect);
            let n = layout.socket_dirs.len() as RawFd;
            ops.extend((0..n).map(|i| Operation::ConnectUnix(FIRST_ROLE_FD + i)));
        }
        Role::Smtpd => {
            let n = layout.listeners as RawFd;
            ops.extend((0..n).map(|i| Operation::Serve(FIRST_ROLE_FD + i)));
            ops.push(Operation::ReadFile(FIRST_ROLE_FD + n));
        }
        Role::Cleanup => {
            for (i, (dir, write)) in CLEANUP_DIRS.iter().enumerate() {
                let fd = FIRST_ROLE_FD + i as RawFd;
                ops.push(Operation::List(fd));
                if *write {
                    ops.push(Operation::Modify(fd));
                } else {
                    ops.push(Operation::SyncFiles(fd));
                }
                if *dir == "incoming" {
                    ops.push(Operation::SetModes(fd));
                }
            }
        }
        // pickup: maildrop/ (wait for files, take them, remove them) and
        // corrupt/ (put bad ones aside).
        Role::Pickup => {
            ops.push(Operation::Watch(FIRST_ROLE_FD));
            for fd in [FIRST_ROLE_FD, FIRST_ROLE_FD + 1] {
                ops.push(Operation::List(fd));
                ops.push(Operation::Modify(fd));
            }
        }
    }
    ops
}

/// The role's sandbox: one declarative value per role.
pub fn policy(role: Role, layout: &Layout) -> Policy {
    let mut p = Policy::new(role.name());
    p.grants.push(Grant::Channel { fd: MASTER_FD });
    match role {
        // control: the control socket's listener.
        Role::Control => {
            p.grants.push(Grant::Listener { fd: FIRST_ROLE_FD });
        }
        // qmgr: every queue directory, read-write, and incoming/ watched
        // for new mail.
        Role::Qmgr => {
            for (i, dir) in QUEUE_DIRS.iter().enumerate() {
                p.grants.push(Grant::Dir {
                    fd: FIRST_ROLE_FD + i as RawFd,
                    path: layout.spool.join(dir),
                    access: DirAccess::ReadWrite,
                    watch: *dir == "incoming",
                    times: matches!(*dir, "incoming" | "active" | "deferred"),
                    modes: *dir == "incoming",
                });
            }
        }
        // smtp: nothing but its channels; each delivery brings a
        // connected socket (from the connector) and a read-only queue
        // file (from qmgr). bounce: the same without sockets.
        Role::Smtp | Role::Bounce => {}
        // lookup: asks the system's name service whether a user exists
        // (getpwnam: /etc/passwd, and NIS, LDAP, sssd or systemd's user
        // database as nsswitch.conf says), so the file system is readable
        // (the C library reads nsswitch.conf and loads its modules) and
        // the name services' AF_UNIX sockets reachable; nothing is
        // written, made or changed by path, and no process started. A
        // few threads look names up at once (`local.directory_lookup_threads`).
        Role::Lookup => {
            p.read_fs = true;
            p.name_service = true;
            p.threads = true;
        }
        // local: the one role that keeps root. It looks users up and
        // spawns each delivery as the recipient (a child of its own
        // program, which opens the mailbox and confines itself to it
        // before writing), so it may fork, exec and change ids, and its
        // file system is not confined (a Landlock domain or unveil list
        // would bind the children too). The seccomp filter or pledge
        // still applies; no sockets but the AF_UNIX socket pairs to its
        // mailbox delivery workers and to its command spawner, and AF_UNIX
        // stream sockets for the name services its user lookups may ask
        // (nscd, sssd, nslcd, systemd-userdbd: directory users). Users'
        // commands are not started under this policy: a sandbox is
        // inherited and never lifted, and a command must run as from its
        // user's shell (sockets, threads, set-gid programs). The command
        // spawner, started before this policy is entered and never under
        // any (local::spawner), starts them on local's bounded requests.
        Role::Local => {
            p.fork = true;
            p.exec = true;
            p.change_uid = true;
            p.whole_fs = true;
            p.socketpairs = true;
            p.name_service = true;
        }
        // connector: no file system; new inet sockets and DNS; new UNIX
        // sockets to the LMTP servers' sockets in its socket directories
        // (master opens them; see Grant::SocketDir for each system).
        Role::Connector => {
            p.net = Net::Connect;
            for (i, (path, sockets)) in layout.socket_dirs.iter().enumerate() {
                p.grants.push(Grant::SocketDir {
                    fd: FIRST_ROLE_FD + i as RawFd,
                    path: path.clone(),
                    sockets: sockets.clone(),
                });
            }
        }
        // smtpd: its listeners and the local-recipient table; no file
        // system and no outgoing sockets.
        Role::Smtpd => {
            let n = layout.listeners as RawFd;
            for i in 0..n {
                p.grants.push(Grant::Listener { fd: FIRST_ROLE_FD + i });
            }
            p.grants.push(Grant::File { fd: FIRST_ROLE_FD + n, write: false });
        }
        // cleanup: the journal and incoming/ read-write, the rest of the
        // queue read-only.
        Role::Cleanup => {
            for (i, (dir, write)) in CLEANUP_DIRS.iter().enumerate() {
                let access = if *write { DirAccess::ReadWrite } else { DirAccess::Read };
                p.grants.push(Grant::Dir {
                    fd: FIRST_ROLE_FD + i as RawFd,
                    path: layout.spool.join(dir),
                    access,
                    watch: false,
                    times: false,
                    // A queue file is marked complete by its mode.
                    modes: *dir == "incoming",
                });
            }
        }
        // pickup: maildrop/ and corrupt/, read-write, and maildrop/
        // watched for arrivals; nothing else.
        Role::Pickup => {
            for (i, dir) in [MAILDROP_DIR, "corrupt"].iter().enumerate() {
                p.grants.push(Grant::Dir {
                    fd: FIRST_ROLE_FD + i as RawFd,
                    path: layout.spool.join(dir),
                    access: DirAccess::ReadWrite,
                    watch: *dir == MAILDROP_DIR,
                    times: false,
                    modes: false,
                });
            }
        }
    }
    p
}

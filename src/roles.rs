//! The process roles master starts, the descriptors each one receives at
//! known numbers, and each role's sandbox policy: one declarative value
//! per role, reviewable here as a unit. The same `Policy` is applied by
//! Capsicum on FreeBSD, unveil+pledge on OpenBSD and Landlock+seccomp on
//! Linux (see the sandbox crate for how each field maps).
//!
//! Trusts: nothing here parses input.

use std::os::fd::RawFd;
use std::path::Path;

use sandbox::{DirAccess, Grant, Net, Policy};

/// Every child's channel to master.
pub const MASTER_FD: RawFd = 3;
/// The first role-specific descriptor.
pub const FIRST_ROLE_FD: RawFd = 4;

/// The queue directories qmgr holds, in descriptor order from FIRST_ROLE_FD.
pub const QUEUE_DIRS: [&str; 5] = ["incoming", "active", "deferred", "hold", "corrupt"];

/// A process role started by master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Role {
    Control,
    Qmgr,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Control, Role::Qmgr];

    /// The role's name in logs, status output and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Qmgr => "qmgr",
        }
    }

    /// The program in libexec_directory that runs this role.
    pub fn program(self) -> &'static str {
        self.name()
    }

    /// Singletons never run twice at once, not even across a reload.
    pub fn singleton(self) -> bool {
        match self {
            Role::Control | Role::Qmgr => true,
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Open-files limit for the role's processes.
    pub fn open_files(self) -> u64 {
        match self {
            // control: its channels plus mtactl clients (bounded by control.clients).
            Role::Control => 256,
            Role::Qmgr => 256,
        }
    }
}

/// Role pairs that may talk to each other directly. master creates one
/// SOCK_SEQPACKET channel per pair and nothing else; order within a pair
/// does not matter.
pub const CHANNELS: &[(Role, Role)] = &[(Role::Control, Role::Qmgr)];

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
}

/// The operations each role performs.
pub fn operations(role: Role) -> Vec<Operation> {
    let mut ops = vec![Operation::Talk(MASTER_FD), Operation::ReceiveFds(MASTER_FD)];
    match role {
        Role::Control => ops.push(Operation::Serve(FIRST_ROLE_FD)),
        Role::Qmgr => {
            for i in 0..QUEUE_DIRS.len() as RawFd {
                ops.push(Operation::List(FIRST_ROLE_FD + i));
                ops.push(Operation::Modify(FIRST_ROLE_FD + i));
            }
        }
    }
    ops
}

/// The role's sandbox. `spool` is the spool directory's path (unveil
/// names directories by path as well as by descriptor).
pub fn policy(role: Role, spool: &Path) -> Policy {
    let mut p = Policy::new(role.name());
    p.grants.push(Grant::Channel { fd: MASTER_FD });
    match role {
        Role::Control => {
            p.grants.push(Grant::Listener { fd: FIRST_ROLE_FD });
        }
        Role::Qmgr => {
            for (i, dir) in QUEUE_DIRS.iter().enumerate() {
                p.grants.push(Grant::Dir {
                    fd: FIRST_ROLE_FD + i as RawFd,
                    path: spool.join(dir),
                    access: DirAccess::ReadWrite,
                });
            }
        }
    }
    p.net = Net::None;
    p
}

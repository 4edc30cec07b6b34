//! The typed messages of each channel direction. A receiver matches them
//! exhaustively; a message that a receiver's role does not expect is a
//! protocol violation (the receiving child exits; master kills a child
//! that sends what its role may not).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Control;
use crate::roles::Role;

/// Everything a child needs from the configuration, sent by master
/// before the child enters its sandbox (children never read the file).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChildConfig {
    pub role: Role,
    pub generation: u64,
    pub hostname: String,
    pub spool: PathBuf,
    pub verbose: bool,
    pub allow_unconfined: bool,
    pub log_line_length: u32,
    pub control: Control,
}

/// Log severities, as syslog's.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warning,
    Info,
    Debug,
}

/// master → child.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum FromMaster {
    /// The first message on every master channel.
    Init(ChildConfig),
    /// A channel to a peer (the descriptor travels with it). Replaces any
    /// earlier channel to that peer instance.
    Peer { role: Role, pid: u32 },
    /// Finish the work in hand and exit.
    Stop,
    /// To control: the answer to `ToMaster::Status`.
    Status { id: u64, status: MasterStatus },
    /// To control: the answer to `ToMaster::Reload`.
    Reloaded { id: u64, result: Result<u64, String> },
    /// To control: the stop request is being carried out.
    Stopping { id: u64 },
}

/// child → master.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum ToMaster {
    /// A log record (bounded by the child; master sanitises it again).
    Log { level: Level, text: String },
    /// The child has entered its sandbox and serves.
    Ready { confined: bool },
    /// control only: report the process table.
    Status { id: u64 },
    /// control only: re-read the configuration.
    Reload { id: u64 },
    /// control only: stop the mail system.
    Stop { id: u64 },
}

impl ToMaster {
    /// Whether a child of `role` may send this message.
    pub fn allowed_from(&self, role: Role) -> bool {
        match self {
            ToMaster::Log { .. } | ToMaster::Ready { .. } => true,
            ToMaster::Status { .. } | ToMaster::Reload { .. } | ToMaster::Stop { .. } => role == Role::Control,
        }
    }
}

/// The process table master reports.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MasterStatus {
    pub version: String,
    pub pid: u32,
    pub generation: u64,
    pub uptime_secs: u64,
    pub children: Vec<ChildStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChildStatus {
    pub role: Role,
    pub pid: u32,
    pub generation: u64,
    pub uptime_secs: u64,
    pub restarts: u32,
    pub state: ChildState,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ChildState {
    /// Started, not yet in its sandbox.
    Starting,
    Running,
    /// Asked to finish (old generation or shutdown).
    Stopping,
}

impl ChildState {
    pub fn name(self) -> &'static str {
        match self {
            ChildState::Starting => "starting",
            ChildState::Running => "running",
            ChildState::Stopping => "stopping",
        }
    }
}

/// control → qmgr.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum ControlToQmgr {
    /// How many files each queue directory holds.
    QueueCounts { id: u64 },
}

/// qmgr → control.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum QmgrToControl {
    QueueCounts { id: u64, counts: Vec<(String, u64)> },
}

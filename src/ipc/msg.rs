//! The typed messages of each channel direction. A receiver matches them
//! exhaustively; a message that a receiver's role does not expect is a
//! protocol violation (the receiving child exits; master kills a child
//! that sends what its role may not).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Control;
use crate::config::smtp::{Limits, ListenTls, Network, Smtpd};
use crate::roles::Role;

/// Everything a child needs from the configuration, sent by master
/// before the child enters its sandbox (children never read the file).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChildConfig {
    pub role: Role,
    pub generation: u64,
    /// Drawn at random when master starts, the same for every child it
    /// starts until it exits: cleanup trusts its journal's progress note
    /// only from a process of the same master (see `queue/progress.rs`).
    pub session: u64,
    pub hostname: String,
    pub spool: PathBuf,
    pub verbose: bool,
    /// The limit on open files master asked for this process (see
    /// `Role::open_files`); a child that got less warns.
    pub open_files: u64,
    pub allow_unconfined: bool,
    pub log_line_length: u32,
    pub control: Control,
    /// control: who besides root may use every command: the user running
    /// master when it is not root; None when it is (the mail user's
    /// processes may not).
    pub operator: Option<u32>,
    /// smtpd and cleanup: how mail is taken in.
    pub intake: Option<Intake>,
    /// qmgr, smtp, connector, bounce and local: how mail is delivered;
    /// pickup: for `bounce.size_limit` of its failure notices.
    pub delivery: Option<Box<crate::config::delivery::DeliveryConf>>,
    /// connector: the directories of the transport table's UNIX sockets
    /// that master opened and passed, in descriptor order (those it could
    /// not open are left out).
    pub socket_dirs: Vec<PathBuf>,
    /// lookup: how many names it looks up at once
    /// (`local.directory_lookup_threads`).
    pub lookup_threads: u32,
    /// How long master lets this process finish once asked to stop
    /// (`supervise.stop_timeout` when it was started) before it kills it:
    /// qmgr's drain ends sooner (see `qmgr::drain::drain_time`).
    pub stop_timeout: std::time::Duration,
}

impl ChildConfig {
    /// The descriptor layout this configuration implies.
    pub fn layout(&self) -> crate::roles::Layout {
        let listeners = match (&self.intake, self.role) {
            (Some(i), Role::Smtpd) => i.listeners.len(),
            _ => 0,
        };
        let mut socket_dirs = Vec::new();
        if let (Role::Connector, Some(d)) = (self.role, &self.delivery) {
            let mut table = d.transport_map.socket_dirs();
            for dir in &self.socket_dirs {
                socket_dirs.push((dir.clone(), table.remove(dir).unwrap_or_default()));
            }
        }
        crate::roles::Layout { spool: self.spool.clone(), listeners, socket_dirs }
    }
}

/// The intake settings smtpd and cleanup need (children never read the
/// configuration file).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Intake {
    /// Listener names and TLS modes, in descriptor order.
    pub listeners: Vec<(String, ListenTls)>,
    /// PEM certificate chain and key (smtpd only; None elsewhere or when unset).
    pub tls_certificate: Option<Vec<u8>>,
    pub tls_key: Option<Vec<u8>>,
    pub domains: Vec<String>,
    pub networks: Vec<Network>,
    pub limits: Limits,
    pub smtpd: Smtpd,
    /// cleanup's settings.
    pub cleanup: crate::config::smtp::Cleanup,
    pub min_free_space: u64,
    /// `queue.memory_messages` and `queue.memory_message_size` (cleanup's
    /// offers to qmgr).
    pub memory_messages: u32,
    pub memory_message_size: u64,
    /// `local.recipient_delimiter` (smtpd's recipient check).
    pub recipient_delimiter: String,
    /// `local.recipient_check`: off, smtpd takes any local name.
    pub recipient_check: bool,
    /// A local name the table lacks is asked of the lookup process
    /// (`local.directory_lookup`, with the recipient check and
    /// `local.directory_users` on): the answer's bound and how long smtpd
    /// remembers it. None: no lookups.
    pub directory_lookup: Option<DirectoryLookup>,
    /// The table may lack names: the aliases file exists but was never
    /// compiled, or the directory users were never listed yet. A local
    /// name missing from it may be an alias or a directory user, and
    /// smtpd answers 451 4.3.0 instead of 550 (smtpd's recipient check).
    pub incomplete: bool,
    /// This host's addresses (its interfaces'): mail to an address
    /// literal of one of them (`postmaster@[192.0.2.1]`) is local mail,
    /// as RFC 1123 5.2.17 requires.
    pub own_addresses: Vec<std::net::IpAddr>,
}

/// smtpd's lookups of local names the table lacks.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DirectoryLookup {
    /// `local.directory_lookup_timeout`: past it the client gets 451.
    pub timeout: std::time::Duration,
    /// `local.directory_lookup_cache`: how long an answer is reused.
    pub cache: std::time::Duration,
    /// `local.directory_lookup_cache_names`: answers kept at most.
    pub cache_names: u32,
    /// `local.directory_lookup_backlog`: questions unanswered at most.
    pub backlog: u32,
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
    Init(Box<ChildConfig>),
    /// A channel to a peer (the descriptor travels with it). Replaces any
    /// earlier channel to that peer instance.
    Peer { role: Role, pid: u32 },
    /// Finish the work in hand and exit.
    Stop,
    /// To smtpd at a full stop: as `Stop`, and end the sessions in hand
    /// too, with a 421 (one in the middle of a message may finish it
    /// within half of `stop_timeout`). A reload sends `Stop`: the old
    /// process's sessions end by themselves.
    Shutdown,
    /// To smtpd: the local-recipient table was built again (`newaliases`,
    /// `useradd`); the descriptor of the new one travels with it, to be
    /// read in place of the one in hand, by the sessions in progress too.
    RecipientTable { incomplete: bool },
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
    /// A log record (bounded by the child; master sanitises it again),
    /// and when the child logged it ([`crate::log::monotonic_ns`]): master
    /// writes the records of each turn of its loop in that order.
    Log { at: u64, level: Level, text: String },
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
    /// Every message in the queue, answered in parts (`QmgrToControl::List`):
    /// qmgr sends [`LIST_WINDOW`] parts, then one more for each `ListMore`.
    List { id: u64 },
    /// Control passed a part of listing (or show) `id` on to its client:
    /// one more part may come.
    ListMore { id: u64 },
    /// The client of listing (or show) `id` went away: qmgr stops it.
    ListCancel { id: u64 },
    /// One message in full: envelope, headers, recipients. Answered in
    /// parts (`QmgrToControl::Shown`), however many recipients it has,
    /// with the credit of a listing (`ListMore`, `ListCancel`).
    Show { id: u64, queue_id: String },
    /// An operator's action on one message.
    Admin { id: u64, op: AdminOp, queue_id: String },
    /// Make every deferred message due now (`sendmail -q`).
    Flush { id: u64 },
}

/// What an operator may do to a message.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum AdminOp {
    /// Set it aside in hold/: no delivery until released.
    Hold,
    /// Back from hold/ to deferred/, due at once.
    Release,
    /// Try it again now, as new mail (from deferred/ or hold/).
    Requeue,
    /// Remove it without telling anyone.
    Delete,
}

impl AdminOp {
    pub fn name(self) -> &'static str {
        match self {
            AdminOp::Hold => "hold",
            AdminOp::Release => "release",
            AdminOp::Requeue => "requeue",
            AdminOp::Delete => "delete",
        }
    }
}

/// One message as `mtactl queue show` prints it, but for its recipients,
/// which follow it in parts ([`RecipientDetail`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MessageDetail {
    /// Queue ID, queue, size, arrival and sender (`recipients` empty).
    pub entry: QueueEntry,
    /// How many recipients follow.
    pub recipients: u32,
    /// Client address, host name, HELO and protocol (and TLS).
    pub client: Vec<(String, String)>,
    /// BODY, SMTPUTF8, RET, ENVID.
    pub parameters: Vec<(String, String)>,
    /// The header block as stored (bounded; cut at a line end).
    #[serde(with = "serde_bytes")]
    pub headers: Vec<u8>,
}

/// One recipient of a message shown: ORCPT, NOTIFY, state, attempts,
/// next attempt (Unix seconds), last reason.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RecipientDetail {
    pub address: String,
    pub orcpt: Option<String>,
    pub notify: Option<String>,
    pub state: String,
    pub attempts: u32,
    pub next_attempt: i64,
    pub reason: String,
}

/// qmgr → control.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum QmgrToControl {
    QueueCounts {
        id: u64,
        counts: Vec<(String, u64)>,
    },
    /// Part of a listing; `last` ends it. A listing qmgr will not start
    /// (too many under way) is answered with `Done` and an error instead.
    List {
        id: u64,
        entries: Vec<QueueEntry>,
        last: bool,
    },
    /// Part of a message shown (`Show`): the first carries the message,
    /// each some of its recipients, in order; `last` ends it. A message
    /// qmgr cannot show (not in the queue, unreadable, too many shown at
    /// once) is answered with `Done` and the error instead.
    Shown {
        id: u64,
        message: Option<Box<MessageDetail>>,
        recipients: Vec<RecipientDetail>,
        last: bool,
    },
    /// The answer to `Admin` and `Flush`: what was done, or why not.
    Done {
        id: u64,
        result: Result<String, String>,
    },
}

/// One message as the queue listing shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct QueueEntry {
    pub id: String,
    /// incoming, active, deferred or hold.
    pub queue: String,
    pub size: u64,
    /// Unix seconds.
    pub arrival: i64,
    pub sender: String,
    /// Address, state (pending, done, deferred, bounced) and last reason.
    pub recipients: Vec<(String, String, String)>,
    /// Recipients left out of `recipients` to keep the entry within its
    /// bound (the rest of a message with very many).
    pub omitted: u32,
}

/// Parts of a listing qmgr sends before control asks for more.
pub const LIST_WINDOW: u32 = 2;
/// Most queue listings under way at once (qmgr refuses more; control
/// keeps to it, and to its own limits per user).
pub const MAX_LISTINGS: usize = 4;
/// Most messages being shown at once, besides the listings (qmgr refuses
/// more; only the administrator may ask).
pub const MAX_SHOWS: usize = 4;

/// Queue IDs cleanup keeps set aside for each smtpd and pickup
/// ([`CleanupToSmtpd::Ids`]): it sends more when half are used, so a
/// peer has at most this many.
pub const RESERVED_IDS: usize = 32;

/// The queue IDs a peer of cleanup holds for its next messages
/// ([`CleanupToSmtpd::Ids`]), at most [`RESERVED_IDS`], used in order.
#[derive(Debug, Default)]
pub struct SetAside(std::collections::VecDeque<String>);

impl SetAside {
    pub fn add(&mut self, ids: Vec<String>) {
        let room = RESERVED_IDS.saturating_sub(self.0.len());
        self.0.extend(ids.into_iter().take(room));
    }

    /// The ID for the next message, if any is left.
    pub fn take(&mut self) -> Option<String> {
        self.0.pop_front()
    }

    /// A new cleanup: the old one's are not its.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod set_aside_tests {
    use super::{RESERVED_IDS, SetAside};

    #[test]
    fn ids_are_used_in_order_and_bounded() {
        let mut s = SetAside::default();
        assert_eq!(s.take(), None);
        s.add((0..RESERVED_IDS + 5).map(|i| i.to_string()).collect());
        assert_eq!(s.take().as_deref(), Some("0"));
        assert_eq!(s.take().as_deref(), Some("1"));
        // Beyond the bound nothing was kept.
        let rest: Vec<String> = std::iter::from_fn(|| s.take()).collect();
        assert_eq!(rest.len(), RESERVED_IDS - 2);
        s.add(vec![String::from("x")]);
        s.clear();
        assert_eq!(s.take(), None);
    }
}

/// smtpd → cleanup: a message, streamed. `txn` numbers transactions
/// within one channel.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum SmtpdToCleanup {
    Begin {
        txn: u64,
        /// The queue ID the message is to have: the next of those cleanup
        /// set aside for this peer ([`CleanupToSmtpd::Ids`]), in order.
        /// None: cleanup names it when it commits it.
        id: Option<String>,
        envelope: Box<MessageEnvelope>,
    },
    Content {
        txn: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    End {
        txn: u64,
    },
    Abort {
        txn: u64,
    },
}

/// cleanup → smtpd.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum CleanupToSmtpd {
    /// The verdict on transaction `txn`.
    Committed { txn: u64, result: CommitResult },
    /// Whether the spool has room (below `queue.min_free_space`: no).
    Space { ok: bool },
    /// Queue IDs set aside for this peer's next messages (smtpd's and
    /// pickup's), to be used in this order: the peer logs a message's
    /// origin under its ID as the message begins, so that the line comes
    /// before every line another process logs about the message (log
    /// summarisers such as pflogsumm credit a sender only in that order).
    Ids { ids: Vec<String> },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum CommitResult {
    Queued(String),
    TempFail(String),
    NoSpace,
    Refused { code: u16, enhanced: String, text: String },
}

/// A recipient as smtpd accepted it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MessageRecipient {
    /// `local@domain`, or `postmaster` for `<Postmaster>`.
    pub address: String,
    pub notify: Option<crate::smtpd::params::Notify>,
    pub orcpt: Option<String>,
}

/// Everything about a message but its content.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MessageEnvelope {
    /// Empty for the null sender.
    pub sender: String,
    pub recipients: Vec<MessageRecipient>,
    pub body: crate::smtpd::params::Body,
    pub smtputf8: bool,
    pub ret: Option<crate::smtpd::params::Ret>,
    pub envid: Option<String>,
    pub helo: String,
    /// The Received: header's `with` word (RFC 3848, RFC 6531): SMTP,
    /// ESMTP, ESMTPS, UTF8SMTP, UTF8SMTPS; `local` for local mail.
    pub protocol: String,
    pub client_address: String,
    /// The address the client connected to (this host's, as the client
    /// reached it); empty for local submission.
    pub server_address: String,
    pub client_hostname: String,
    /// TLS version and cipher, when the session was encrypted.
    pub tls: Option<String>,
    /// Local submission (pickup): the uid that owned the maildrop file.
    pub submitter: Option<u32>,
}

impl MessageEnvelope {
    /// A message this host makes itself (bounce's reports, local's
    /// forwards): protocol `local`, from `localhost`, no DSN parameters,
    /// each recipient without NOTIFY or ORCPT.
    pub fn internal(
        sender: String,
        recipients: Vec<String>,
        eight_bit: bool,
        smtputf8: bool,
        hostname: &str,
    ) -> MessageEnvelope {
        use crate::smtpd::params::Body;
        MessageEnvelope {
            sender,
            recipients: recipients
                .into_iter()
                .map(|address| MessageRecipient { address, notify: None, orcpt: None })
                .collect(),
            body: if eight_bit { Body::EightBitMime } else { Body::SevenBit },
            smtputf8,
            ret: None,
            envid: None,
            helo: hostname.to_string(),
            protocol: String::from("local"),
            client_address: String::new(),
            server_address: String::new(),
            client_hostname: String::from("localhost"),
            tls: None,
            submitter: None,
        }
    }
}

// ----- delivery: qmgr, smtp, connector, bounce -----

/// A point in time as it crosses a channel (Unix seconds, microseconds).
pub type Stamp = (i64, u32);

/// qmgr → smtp (and local): deliver some recipients of one message. The
/// queue file, opened read-only, travels with it; smtp reads the
/// envelope, the recipients and the content from it (with pread),
/// trusting qmgr only for which recipients to take, where to send them
/// and how.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    /// The scheduler's job number, echoed in the report.
    pub job: u64,
    /// The queue ID (the file's name), checked against the file.
    pub queue_id: String,
    /// SMTP or LMTP (the local delivery agent ignores it).
    pub protocol: Protocol,
    /// Where to connect: a next hop in Postfix notation (`[host]:port`,
    /// or `host` by MX), or an LMTP server's UNIX socket.
    pub nexthop: Target,
    /// Recipient indexes in the queue file, at least one.
    pub recipients: Vec<u32>,
    /// When qmgr took the message into its active queue (for `delays=`).
    pub active_at: Stamp,
}

/// The protocol smtp speaks for a delivery.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum Protocol {
    Smtp,
    /// RFC 2033: LHLO, and a reply per recipient after the content.
    Lmtp,
}

/// Where smtp is to connect (the scheduler's `Hop`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum Target {
    Inet(NexthopSpec),
    /// A UNIX socket's absolute path (LMTP); the connector connects only
    /// to the sockets of its configuration.
    Unix(PathBuf),
}

/// A next hop on the network (the scheduler's `Nexthop`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct NexthopSpec {
    /// Lower case: a host name or an address without brackets.
    pub host: String,
    /// None: the transport's default port.
    pub port: Option<u16>,
    /// Look up MX records for `host` (false: its address records only).
    pub mx: bool,
}

/// qmgr → smtp.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum QmgrToSmtp {
    Deliver(Box<Delivery>),
}

/// How a delivery went for one recipient.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum RecipientStatus {
    /// `dsn_passed`: the next hop took the DSN request over; `action`:
    /// how, for the success notice.
    Delivered {
        dsn_passed: bool,
        action: crate::queue::DoneAction,
    },
    Deferred,
    Bounced,
}

/// One recipient's result, with the reason as the log and the DSN show it
/// (`host H[A] said: 550 5.1.1 ... (in reply to RCPT TO command)`) and
/// the status code (`5.1.1`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecipientReport {
    pub index: u32,
    pub status: RecipientStatus,
    pub dsn: String,
    pub reason: String,
}

/// How the delivery went for the destination (the scheduler's feedback).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum SiteReport {
    Reached,
    Unreachable(String),
    Unknown,
}

/// smtp → qmgr.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum SmtpToQmgr {
    /// The end of a delivery: one report per recipient of the job.
    Done { job: u64, site: SiteReport, recipients: Vec<RecipientReport> },
    /// The job's queue file failed validation as the agent read it (its
    /// content's CRC, which qmgr's read of the envelope does not check;
    /// another queue ID): nothing was delivered; qmgr moves the file to
    /// corrupt/ (doc/queue-format.md, the corrupt/ rule).
    Corrupt { job: u64, reason: String },
}

/// smtp → connector: connect to a next hop (`default_port` when it names
/// none) or to a UNIX socket, passing over the addresses in `skip` (those
/// this delivery already had a session with; empty for a first try).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum SmtpToConnector {
    Connect { req: u64, nexthop: Target, default_port: u16, skip: Vec<std::net::IpAddr> },
}

/// connector → smtp.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum ConnectorToSmtp {
    /// The connected stream socket travels with it.
    Connected {
        req: u64,
        /// The host name connected to (or the address, for a literal; the
        /// path, for a UNIX socket).
        host: String,
        /// The peer's address and port; None for a UNIX socket.
        addr: Option<std::net::SocketAddr>,
    },
    /// No connection. `permanent`: the name does not exist (NXDOMAIN, no
    /// address at all) or accepts no mail (null MX), which bounces;
    /// anything else defers. `dsn`: the enhanced status code for the
    /// recipients (its class agrees with `permanent`).
    Failed { req: u64, reason: String, permanent: bool, dsn: String },
}

/// smtpd → connector: who is the client at `addr`? Asked once per
/// session, before the greeting.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum SmtpdToConnector {
    ClientName { req: u64, addr: std::net::IpAddr },
}

/// connector → smtpd.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum ConnectorToSmtpd {
    /// The client's forward-confirmed name, or None (`unknown`).
    ClientName { req: u64, name: Option<String> },
}

/// smtpd → lookup: is `name` (a local part, lower case, its extension
/// removed) a user the system's name service knows? Asked at RCPT for a
/// local name the local-recipient table lacks.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum SmtpdToLookup {
    User { req: u64, name: String },
}

/// lookup → smtpd.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum LookupToSmtpd {
    User { req: u64, found: UserFound },
}

/// What the name service said of a user.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum UserFound {
    Yes,
    No,
    /// The lookup failed (the name service is down, or timed out): the
    /// client is told to try again later.
    Unavailable,
}

/// qmgr → bounce: tell the sender about recipients of one message. The
/// queue file (read-only) travels with it; the reasons are in the
/// recipients' statuses there.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NoticeRequest {
    pub req: u64,
    pub queue_id: String,
    /// Recipient indexes per kind of notice.
    pub failure: Vec<u32>,
    pub delay: Vec<u32>,
    pub success: Vec<u32>,
}

/// The most notice requests qmgr has outstanding with bounce at once
/// (more wait in qmgr); bounce takes a qmgr that sends more as out of
/// step.
pub const MAX_NOTICES_OUTSTANDING: usize = 1_000;

/// qmgr → bounce.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum QmgrToBounce {
    Notify(Box<NoticeRequest>),
}

/// bounce → qmgr.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum BounceToQmgr {
    /// The notices are queued (their queue IDs; none when nothing was
    /// owed to anyone, e.g. a bounce of a bounce with no postmaster), or
    /// why not (qmgr tries again later).
    Done { req: u64, result: Result<Vec<String>, String> },
    /// The queue file failed validation as bounce read it before quoting
    /// its content (the content's CRC, which qmgr's read of the envelope
    /// does not check; another queue ID): no notice was queued; qmgr
    /// moves the file to corrupt/ (doc/queue-format.md, the corrupt/
    /// rule), as for a delivery agent's `SmtpToQmgr::Corrupt`.
    Corrupt { req: u64, reason: String },
}

/// cleanup → qmgr: queue files now in incoming/ (their queue IDs), so
/// that qmgr need not list the directory to find them; committed messages
/// offered before any queue file is written; and cleanup's stop.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum CleanupToQmgr {
    Queued {
        ids: Vec<String>,
    },
    /// Committed messages (durable in cleanup's journal) with no queue
    /// file yet: each queue file's bytes in a sealed memory file that
    /// travels with the message, one descriptor per ID in the same order
    /// (at most [`crate::ipc::MAX_FDS`]). qmgr answers each with
    /// [`QmgrToCleanup::Done`] or [`QmgrToCleanup::Taken`].
    Offered {
        ids: Vec<String>,
    },
    /// cleanup is stopping: qmgr writes out every offered message it
    /// holds, then answers [`QmgrToCleanup::Closed`].
    Closing,
}

/// qmgr → cleanup: what became of offered messages.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum QmgrToCleanup {
    /// Delivered (or otherwise finished) with nothing left to record: no
    /// queue file is ever written for them.
    Done { ids: Vec<String> },
    /// qmgr wrote their queue files to incoming/ itself and synced them.
    Taken { ids: Vec<String> },
    /// The answer to [`CleanupToQmgr::Closing`]: every offered message
    /// qmgr held is accounted for above.
    Closed,
}

/// local → one of its mailbox delivery workers (`local deliver`, on the
/// socket pair at the worker's descriptor 3): deliver the message of the
/// queue file that travels with it (read-only), or the small message the
/// job carries itself, to the worker's mailbox; or make the Maildir
/// deliveries it left unsynced durable.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum ToWorker {
    /// One job: the envelope fields the mailbox needs, and where the
    /// content lies in the queue file that comes with it (offset, length,
    /// CRC-32), as the parent read it. `batched`: a Maildir delivery
    /// is written to `tmp/` and left there until [`ToWorker::Sync`] (an
    /// mbox or file is delivered and synced whole either way).
    Deliver { sender: String, recipient: String, arrival: i64, content: (u64, u64, u32), batched: bool },
    /// A batched Maildir job whose content comes in the message itself
    /// (a small message the parent has read whole), with its CRC-32, and
    /// no descriptor: the worker reads no queue file.
    DeliverHeld {
        sender: String,
        recipient: String,
        arrival: i64,
        crc: u32,
        #[serde(with = "serde_bytes")]
        content: Vec<u8>,
    },
    /// Commit every batched delivery since the last `Sync` (no
    /// descriptor comes with it): synced, renamed into `new/`, `new/`
    /// synced once. The verdict is one `Done`: 0 when they are all on
    /// disk in `new/`; otherwise they have been taken back out of `tmp/`
    /// and `new/`, and the code and reason say why.
    Sync,
}

/// A mailbox delivery worker → local, for the job in hand: its progress
/// lines (`at SIZE DEV INO`, `appended`; see `local::repair`), then its
/// verdict, a sysexits(3) code and the line `D.D.D reason`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum FromWorker {
    Progress(String),
    Done { code: i32, report: String },
}

/// local → its command spawner (`local::spawner`: the process it forks
/// before it enters its sandbox, on a socket pair of their own). One
/// command at a time: a `Run`, answered `Started` or `Refused`; after a
/// `Started`, a `Reap`, answered `Ended`. Anything else, or out of that
/// order, ends the spawner.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum ToSpawner {
    /// Start `local pipe` with these arguments as this user. Two
    /// descriptors come with it: the write end of the pipe that becomes
    /// the command's standard error (its report to local), then the
    /// queue file, read-only (its descriptor 3).
    Run(RunCommand),
    /// The command started last has closed its report, or ran out of
    /// time: wait for it and say how it ended. `kill`: the delivery is
    /// given up (out of time, or `local pipe` ended without a verdict),
    /// and `local pipe`'s process group, the command's, is killed first.
    /// No descriptor.
    Reap { kill: bool },
}

/// A [`ToSpawner::Run`] request, checked by the spawner before anything
/// is started (`local::spawner::check`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunCommand {
    /// The request format's version (`local::spawner::VERSION`).
    pub version: u32,
    /// The arguments of `local pipe` after `pipe` (`local::pipe`).
    pub args: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    /// The supplementary groups.
    pub groups: Vec<u32>,
}

/// The command spawner → local.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum FromSpawner {
    /// `local pipe` runs, with this pid (a child of the spawner's).
    Started { pid: i32 },
    /// Nothing was started, and why (a request the spawner refuses, or
    /// a failed fork or exec).
    Refused { reason: String },
    /// How the command started last ended.
    Ended(CommandExit),
}

/// How a `local pipe` process ended, as the spawner's waitpid(2) saw it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum CommandExit {
    Code(i32),
    Signal(i32),
    /// waitpid failed with this errno.
    Error(i32),
}

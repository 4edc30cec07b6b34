//! The queue manager's scheduler: every policy of qmgr as logic without
//! I/O and without a clock, after Postfix's qmgr. The shell around it
//! (reading queue files, moving them between incoming/, active/ and
//! deferred/, talking to delivery agents) tells it what happened and asks
//! what to do next; the time is always passed in.
//!
//! The shell's loop, in outline:
//!
//! 1. At start-up: move active/ back to incoming/ (a pass cut short), then
//!    [`Scheduler::begin_deferred_scan`] and [`Scheduler::deferred_found`]
//!    for each file of deferred/ with its next attempt time (its mtime).
//! 2. Admission: while [`Scheduler::next_admission`] says
//!    [`Admit::Incoming`] or [`Admit::Deferred`], take that file (the next
//!    of incoming/, or the named one from `deferred/<subdir>/`), move it to
//!    active/, read it and call [`Scheduler::add_message`] (or
//!    [`Scheduler::drop_message`] if it is gone or corrupt). New and
//!    deferred mail take turns, so neither starves the other.
//! 3. Delivery: while [`Scheduler::next_job`] gives a [`Job`], hand it to an
//!    agent of its transport; report the result with
//!    [`Scheduler::job_finished`] (or [`Scheduler::job_failed`] when the
//!    agent died or sent nonsense).
//! 4. Carry out the returned [`Action`]s in order: status writes into the
//!    queue file, notices to bounce, more recipients of a big message,
//!    and the message's fate (remove it, or move it to
//!    `deferred/<subdir>/` with its next attempt time as mtime).
//! 5. Sleep until an agent answers, new mail arrives, or
//!    [`Scheduler::next_wakeup`]; rescan deferred/ when
//!    [`Scheduler::wants_deferred_scan`].
//!
//! The policies in brief (each submodule says more): messages are
//! admitted while the active queue has room, new and deferred mail in
//! turn; each recipient is routed to a destination (transport and next
//! hop), and a delivery is one message's recipients for one destination,
//! up to `recipient_limit`; destinations are served round robin, each
//! within its concurrency window (slow start, feedback, dead after a
//! failed cohort until `dead_time` has passed) and each transport within
//! its `processes`; a message is the unit of retry: when none of its
//! recipients is left to deliver in this pass, it is removed, or
//! deferred as a whole with Postfix's backoff, and a temporary failure
//! past the queue lifetime is a bounce. Notices are owed at least once:
//! a crash may repeat one, never lose one.
//!
//! Bounds on memory (each collection has one):
//!
//! | what | bound |
//! |------|-------|
//! | messages in the active queue | `active_messages` |
//! | recipients held (in slices, plus room kept for a slice to come) | `active_recipients` |
//! | destinations with recipients or deliveries | `active_recipients` + deliveries running |
//! | dead destinations remembered with nothing queued | `active_recipients` (the earliest to expire are forgotten first) |
//! | deliveries running, each at most `recipient_limit` recipients | sum of the transports' `processes` |
//! | destinations in the round-robin rings | the destinations |
//! | deferred index | `deferred_index` (the latest due are dropped and found again by a scan) |
//! | reasons kept (dead destinations) | 512 bytes each, as in the queue file |
//!
//! Submodules: `route` (next hops), `transport_map` (the transport
//! table route consults), `destination` (a destination's queue,
//! concurrency window and feedback), `message` (a message's slice and its
//! notices), `retry` (backoff, lifetime, deferred subfolders), `deferred`
//! (the deferred index), `settings`; `load` and `deliver` hold the
//! scheduler's two halves (taking messages in, running deliveries).
//!
//! Trusts: the shell, for the order of events; delivery reports are
//! checked against the job they name ([`Error::BadReport`]).

mod deferred;
mod deliver;
mod destination;
mod load;
mod message;
mod retry;
mod route;
mod settings;
mod transport_map;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;

use crate::queue::{DoneAction, QueueId, Status, Time};

use deferred::DeferredIndex;
use destination::DestinationQueue;
use message::Message;

pub use message::{Notices, Origin};
pub use retry::{DEFERRED_SUBDIRS, deferred_subdir, expired, next_attempt, retry_delay};
pub use route::{Destination, Hop, Nexthop, NexthopError, Routing, Transport, recipient_domain, route, route_domain};
pub use settings::{Backoff, Settings, TransportSettings};
pub use transport_map::{LMTP_PORT, MAX_SOCKET_PATH, Route, TransportMap};

/// Names one delivery handed to an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {}", self.0)
    }
}

/// One recipient of a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRecipient {
    /// Its index in the queue file (for ORCPT, NOTIFY and the status).
    pub index: u32,
    pub address: String,
}

/// One delivery: one message, some of its recipients, one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub destination: Destination,
    pub message: QueueId,
    /// At least one, at most the transport's `recipient_limit`.
    pub recipients: Vec<JobRecipient>,
}

/// How a delivery went for one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered, relayed or expanded (`action`, stored with the status
    /// for the success notice). `dsn_passed`: the next hop took NOTIFY
    /// over, so no success notice is owed here.
    Delivered { reason: String, dsn_passed: bool, action: DoneAction },
    /// Failed for now; tried again later.
    Deferred { reason: String },
    /// Failed for good.
    Bounced { reason: String },
}

/// How a delivery went for the destination as a whole: the feedback for
/// its concurrency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteStatus {
    /// The site was reached (whatever it said about the recipients).
    Reached,
    /// The site could not be reached (no connection, no greeting, a
    /// handshake failure). Recipients without an outcome are deferred with
    /// this reason.
    Unreachable { reason: String },
    /// No feedback (say, a local delivery that never talks to a site).
    Unknown,
}

/// What a delivery agent said about a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub site: SiteStatus,
    /// By recipient index; each at most once, each in the job. A recipient
    /// of the job left out is deferred.
    pub outcomes: Vec<(u32, Outcome)>,
}

/// What becomes of a message that leaves the active queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Every recipient is done or bounced: remove the queue file.
    Remove,
    /// Some recipient was deferred: move the file to
    /// `deferred/<subdir>/` and try again at `until` (the scheduler has put
    /// it in its deferred index already).
    Defer { until: Time, subdir: &'static str },
}

/// Something the shell must do, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write `status` into recipient `recipient` of the message `message`
    /// (in place, then `fdatasync`) before anything that follows. A
    /// deferred status carries the next attempt as seen at that moment;
    /// the message's own time is the one in [`Fate::Defer`]. `log`: no
    /// delivery agent logged this result (deferred without a delivery,
    /// the agent gone, or the message expired): the shell logs it.
    Write { message: QueueId, recipient: u32, status: Status, log: bool },
    /// Have bounce send these notices for the message (before removing or
    /// moving its file).
    Notify { message: QueueId, notices: Notices },
    /// The recipients in memory are finished but the file holds more:
    /// read it again and call [`Scheduler::add_message`]. The file stays
    /// in active/.
    LoadMore { message: QueueId, from: u32 },
    /// The message leaves the active queue.
    Finish { message: QueueId, fate: Fate },
}

/// Which message to take into the active queue next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// The next file of incoming/.
    Incoming,
    /// This message from deferred/ (it has left the deferred index).
    Deferred(QueueId),
}

/// Room left in the active queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Room {
    pub messages: usize,
    pub recipients: usize,
}

/// The scheduler's counters, for `mtactl status` and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub messages: usize,
    pub recipients: usize,
    pub destinations: usize,
    pub dead_destinations: usize,
    pub deliveries: usize,
    pub deferred_indexed: usize,
    /// Whether the deferred index holds every deferred message.
    pub deferred_complete: bool,
}

/// A destination as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationInfo {
    /// Deliveries allowed at once (0 while dead).
    pub window: u32,
    /// Deliveries running.
    pub busy: u32,
    /// Recipients waiting.
    pub queued: usize,
    /// Until when it is not tried, and why.
    pub dead: Option<(Time, String)>,
}

/// A request the scheduler cannot take; nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The settings do not make sense (the message names the key).
    Settings(String),
    /// No room in the active queue for this message: leave it where it is.
    NoRoom(QueueId),
    /// The message is in the active queue already (and no more of its
    /// recipients were asked for).
    AlreadyActive(QueueId),
    /// More recipients than a queue file may hold.
    TooManyRecipients(QueueId),
    /// No delivery by that name is running.
    UnknownJob(JobId),
    /// A report that does not fit its job: the agent is at fault; call
    /// [`Scheduler::job_failed`] instead.
    BadReport { job: JobId, why: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Settings(m) => write!(f, "scheduler settings: {m}"),
            Error::NoRoom(id) => write!(f, "{id}: no room in the active queue; it waits"),
            Error::AlreadyActive(id) => write!(f, "{id}: already in the active queue"),
            Error::TooManyRecipients(id) => write!(f, "{id}: more recipients than a queue file may hold"),
            Error::UnknownJob(j) => write!(f, "{j}: no such delivery is running"),
            Error::BadReport { job, why } => write!(f, "{job}: bad delivery report: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// A delivery running.
struct Running {
    destination: Destination,
    message: QueueId,
    recipients: Vec<u32>,
}

/// The scheduling state of the queue manager.
pub struct Scheduler {
    settings: Settings,
    routing: Routing,
    messages: HashMap<QueueId, Message>,
    /// Recipients in slices plus room kept for slices to come.
    recipients: usize,
    destinations: HashMap<Destination, DestinationQueue>,
    /// Per transport, destinations that could start a delivery, served in
    /// turn; a destination is in its ring at most once (`in_ring`).
    rings: [VecDeque<Destination>; Transport::ALL.len()],
    /// Per transport, deliveries running.
    busy: [usize; Transport::ALL.len()],
    /// The transport served first by the next `next_job`.
    next_transport: usize,
    /// Dead destinations by the time they are tried again.
    dead: BTreeSet<(i64, Destination)>,
    jobs: HashMap<JobId, Running>,
    next_job: u64,
    deferred: DeferredIndex,
    /// Whether deferred mail has the next turn of admission.
    deferred_turn: bool,
}

impl Scheduler {
    /// A scheduler with nothing queued.
    pub fn new(settings: Settings, routing: Routing) -> Result<Scheduler, Error> {
        settings.check().map_err(Error::Settings)?;
        let deferred = DeferredIndex::new(settings.deferred_index);
        Ok(Scheduler {
            settings,
            routing,
            messages: HashMap::new(),
            recipients: 0,
            destinations: HashMap::new(),
            rings: std::array::from_fn(|_| VecDeque::new()),
            busy: [0; Transport::ALL.len()],
            next_transport: 0,
            dead: BTreeSet::new(),
            jobs: HashMap::new(),
            next_job: 1,
            deferred,
            deferred_turn: false,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// Room left in the active queue.
    pub fn room(&self) -> Room {
        Room {
            messages: self.settings.active_messages.saturating_sub(self.messages.len()),
            recipients: self.settings.active_recipients.saturating_sub(self.recipients),
        }
    }

    /// Which message to take in next, if there is room: incoming and due
    /// deferred mail take turns. `incoming_waiting` says whether incoming/
    /// has a file. Call [`Scheduler::add_message`] (or
    /// [`Scheduler::drop_message`]) for the answer before asking again.
    pub fn next_admission(&mut self, now: Time, incoming_waiting: bool) -> Option<Admit> {
        let room = self.room();
        if room.messages == 0 || room.recipients == 0 {
            return None;
        }
        let deferred_due = self.deferred.has_due(now.secs);
        let take_deferred = match (incoming_waiting, deferred_due) {
            (false, false) => return None,
            (true, false) => false,
            (false, true) => true,
            (true, true) => self.deferred_turn,
        };
        self.deferred_turn = !take_deferred;
        if take_deferred { self.deferred.pop_due(now.secs).map(Admit::Deferred) } else { Some(Admit::Incoming) }
    }

    /// Forget the index of deferred/: a scan follows, at `now`, reporting
    /// each file with [`Scheduler::deferred_found`].
    pub fn begin_deferred_scan(&mut self, now: Time) {
        self.deferred.clear(now.secs);
    }

    /// A message waits in deferred/ until `next_attempt` (from a scan, or
    /// `now` to flush it).
    pub fn deferred_found(&mut self, id: QueueId, next_attempt: Time) {
        if !self.messages.contains_key(&id) {
            self.deferred.insert(id, next_attempt.secs);
        }
    }

    /// A message left deferred/ other than by admission (deleted, held).
    pub fn forget_deferred(&mut self, id: &QueueId) -> bool {
        self.deferred.remove(id)
    }

    /// Whether deferred/ must be scanned again: the index overflowed and
    /// messages outside it may be due.
    pub fn wants_deferred_scan(&self, now: Time) -> bool {
        self.deferred.wants_scan(now.secs)
    }

    /// When something falls due without any event (deferred mail due, a
    /// dead destination to try again, a scan of deferred/); None when
    /// nothing is waiting for the clock.
    pub fn next_wakeup(&self) -> Option<Time> {
        let dead = self.dead.first().map(|(t, _)| *t);
        let next = match (self.deferred.next_event(), dead) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(|secs| Time { secs, micros: 0 })
    }

    pub fn counts(&self) -> Counts {
        Counts {
            messages: self.messages.len(),
            recipients: self.recipients,
            destinations: self.destinations.len(),
            dead_destinations: self.dead.len(),
            deliveries: self.jobs.len(),
            deferred_indexed: self.deferred.len(),
            deferred_complete: self.deferred.complete(),
        }
    }

    /// How a destination stands, if the scheduler knows it.
    pub fn destination(&self, d: &Destination) -> Option<DestinationInfo> {
        let q = self.destinations.get(d)?;
        Some(DestinationInfo {
            window: q.window,
            busy: q.busy,
            queued: q.queued,
            dead: q.dead.as_ref().map(|x| (Time { secs: x.until, micros: 0 }, x.reason.clone())),
        })
    }

    /// Whether the message is in the active queue.
    pub fn is_active(&self, id: &QueueId) -> bool {
        self.messages.contains_key(id)
    }

    /// Put a destination that could start a delivery into its ring.
    fn refresh(&mut self, d: &Destination) {
        if let Some(q) = self.destinations.get_mut(d)
            && q.eligible()
            && !q.in_ring
        {
            q.in_ring = true;
            self.rings[d.transport.index()].push_back(d.clone());
        }
    }

    /// Forget a destination with nothing queued, nothing running, not
    /// dead and not in a ring (its window starts over next time, as in
    /// Postfix).
    fn forget_if_idle(&mut self, d: &Destination) {
        if self.destinations.get(d).is_some_and(|q| q.idle() && q.dead.is_none() && !q.in_ring) {
            self.destinations.remove(d);
        }
    }
}

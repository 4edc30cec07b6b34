//! qmgr: the queue manager. It holds the queue directories (incoming,
//! active, deferred, hold, corrupt) as descriptors and nothing else, and
//! is the shell around the scheduler ([`schedule`]): it takes new mail
//! from incoming/ (woken by the kernel when cleanup publishes a file),
//! deferred mail when it falls due, hands deliveries to the smtp agents
//! with a read-only descriptor of the queue file, writes each recipient's
//! result into the file, asks bounce for notices, and removes or defers
//! each message when its pass ends. Everything it knows is rebuilt from
//! the files at start-up: active/ goes back to incoming/, deferred/ is
//! indexed by the files' mtimes (their next attempt), a slice per turn of
//! the event loop as flushes are ([`rescan`]).
//!
//! Control's requests (counts, listing, show, hold, release, requeue,
//! delete, flush) are served here too, since qmgr owns the queue.
//!
//! Asked to stop, qmgr drains ([`drain`]): no new deliveries, the reports
//! of those in flight (and the notices they call for) written into their
//! files, then exit, within a bound shorter than master's.
//!
//! Trusts: master; queue files are validated by the queue format's
//! reader; agents' reports are checked against their jobs by the
//! scheduler; control's requests are checked for shape only (control
//! already checked who asked).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::dir::Dir as NixDir;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use sandbox::Sandboxed;

use crate::child::Child;
use crate::ipc::Channel;
use crate::ipc::msg::{
    BounceToQmgr, CleanupToQmgr, ControlToQmgr, Delivery, FromMaster, NexthopSpec, NoticeRequest, Protocol,
    QmgrToBounce, QmgrToControl, QmgrToSmtp, RecipientStatus, SiteReport, SmtpToQmgr, Target,
};
use crate::pickup::watch::{Wakeup, Watch};
use crate::queue::{QueueEnvelope, QueueId, SlotWrite, Time, update_status_at};
use crate::roles::{QUEUE_DIRS, Role};

pub mod admin;
pub mod drain;
pub mod intake;
pub mod listing;
pub mod memory;
pub mod rescan;
pub mod scan;
pub mod schedule;
pub mod store;

use schedule::{Action, Admit, Fate, Hop, Job, JobId, Origin, Outcome, Report, Scheduler, SiteStatus, Transport};
use store::{Dir, Held, Problem, Store, Twin};

const MASTER: Token = Token(0);
const WATCH: Token = Token(1);
const FIRST_PEER: usize = 16;
/// Names of incoming/ read in one listing.
const INCOMING_BATCH: usize = 10_000;
/// Admissions per turn of the loop, so replies and reports are not kept
/// waiting behind a full incoming/.
const ADMIT_PER_TURN: usize = 500;
/// incoming/ is listed at least this often (a watch may miss nothing, but
/// a file whose move failed is picked up again).
const INCOMING_SCAN: Duration = Duration::from_secs(60);
/// Without a watch, incoming/ is listed this often.
const INCOMING_POLL: Duration = Duration::from_secs(1);
/// A notice bounce could not queue is asked for again after this.
const NOTICE_RETRY: Duration = Duration::from_secs(60);
/// Until bounce is there, a notice waits this long before asking again.
const NOTICE_WAIT: Duration = Duration::from_secs(5);
/// A recipient's status that could not be written is tried again after
/// this; what depends on it waits.
const STATUS_RETRY: Duration = Duration::from_secs(10);
/// While bounce has as many requests as it takes
/// ([`crate::ipc::msg::MAX_NOTICES_OUTSTANDING`]), a notice waits this
/// long before asking again.
const NOTICE_BUSY: Duration = Duration::from_secs(1);
/// Frames queued to a peer beyond which no more work is sent to it.
const PEER_BACKLOG: usize = 1024;

/// A delivery agent as [`pick_agent`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Candidate {
    token: Token,
    /// Deliveries it is running.
    jobs: usize,
    /// Whether its channel can take more (not backed up).
    room: bool,
}

/// Which agent gets a delivery: with an affinity `key`, the agent the key
/// hashes to among all of them (ordered by token, so the choice stays the
/// same while the agents and their channels do), as long as it has room;
/// otherwise, and without a key, the least busy agent with room. `None`
/// when none has room.
fn pick_agent(mut agents: Vec<Candidate>, key: Option<&str>) -> Option<Token> {
    agents.sort_by_key(|a| a.token);
    if let Some(key) = key
        && !agents.is_empty()
    {
        use std::hash::{Hash, Hasher};
        // Fixed keys: the same choice in every run of one build.
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        let preferred = agents[(h.finish() % agents.len() as u64) as usize];
        if preferred.room {
            return Some(preferred.token);
        }
    }
    agents.iter().filter(|a| a.room).min_by_key(|a| a.jobs).map(|a| a.token)
}

/// Count the queue files of a directory held by descriptor (deferred/
/// counts its hashed subfolders).
pub fn count_entries(dir: &OwnedFd) -> std::io::Result<u64> {
    let mut d = NixDir::openat(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    let mut n = 0;
    let mut subdirs = Vec::new();
    for e in d.iter() {
        let e = e?;
        let name = e.file_name().to_bytes();
        // Names starting with a dot are cleanup's files being written.
        if name.starts_with(b".") {
            continue;
        }
        if e.file_type() == Some(nix::dir::Type::Directory) {
            if let Ok(s) = std::str::from_utf8(name) {
                subdirs.push(s.to_string());
            }
        } else {
            n += 1;
        }
    }
    for s in subdirs {
        if let Ok(fd) =
            nix::fcntl::openat(dir, s.as_str(), OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        {
            n += count_entries(&fd)?;
        }
    }
    Ok(n)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeerKind {
    Control,
    Smtp,
    Bounce,
    /// The local delivery agent: the same protocol as smtp.
    Local,
    /// A cleanup: names the queue files it writes to incoming/.
    Cleanup,
}

struct Peer {
    kind: PeerKind,
    pid: u32,
    chan: Channel,
    /// Deliveries handed to this agent (smtp).
    jobs: HashSet<JobId>,
}

/// A message in the active queue, as the shell keeps it.
struct Active {
    /// Where its file is: incoming/ when it came from there (a message
    /// is not moved for its first attempt), active/ when it came from
    /// deferred/.
    dir: Dir,
    env: QueueEnvelope,
    origin: Origin,
    active_at: Time,
    /// Actions waiting their turn (behind a notice being queued).
    pending: VecDeque<Action>,
    /// A notice asked of bounce and not answered yet.
    notice: Option<u64>,
    /// When to ask bounce again.
    retry_at: Option<Instant>,
    /// The file as opened when it was taken, kept for its first delivery
    /// (saves opening it again; at most [`KEPT_FILES`] are kept).
    file: Option<File>,
    /// Status records whose fdatasync failed: written again, each to the
    /// same slot, and synced, before any pending action runs.
    rewrite: Vec<SlotWrite>,
    /// In memory, with no queue file yet (see [`memory`]): counted with
    /// the kept files.
    memory: Option<memory::Memory>,
}

impl Active {
    fn new(
        dir: Dir,
        env: QueueEnvelope,
        origin: Origin,
        now: Time,
        file: Option<File>,
        memory: Option<memory::Memory>,
    ) -> Active {
        Active {
            dir,
            env,
            origin,
            active_at: now,
            pending: VecDeque::new(),
            notice: None,
            retry_at: None,
            file,
            rewrite: Vec::new(),
            memory,
        }
    }
}

/// The log line of a new message taken into the active queue.
fn log_active(child: &mut Child, id: &QueueId, env: &QueueEnvelope) {
    let n = env.recipients.len();
    let sender = crate::log::sanitize(&env.envelope.sender, 1024);
    child.info(&format!("{id}: from=<{sender}>, size={}, nrcpt={n} (queue active)", env.envelope.size));
}

/// Most queue files kept open between taking a message and its first
/// delivery: a burst of this many waiting for delivery is not opened a
/// second time (the open-files limit master sets for qmgr allows for
/// them; [`kept_files_limit`] keeps to half of the limit there is).
const KEPT_FILES: usize = 1024;

/// How many queue files may be kept open: [`KEPT_FILES`], or half of the
/// open-files limit if that is less (read before entering the sandbox).
pub fn kept_files_limit() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft);
    KEPT_FILES.min(usize::try_from(soft / 2).unwrap_or(usize::MAX))
}

/// Most messages remembered as stuck; beyond, listings of incoming/ are
/// not taken until qmgr starts again (see [`intake`]).
const MAX_STUCK: usize = 10_000;

/// Most names of incoming/ held waiting for room in the active queue;
/// past this, listings find the rest.
const MAX_WAITING: usize = 100_000;

/// A step of the wall clock back by more than this many seconds, seen
/// while qmgr runs, has it index deferred/ again (see [`clock_went_back`]).
const CLOCK_STEP: i64 = 60;

/// How many seconds the wall clock went back, if by more than
/// [`CLOCK_STEP`]: it read `then` when the monotonic clock was `elapsed`
/// ago, and reads `now`. The next attempts of deferred messages are wall
/// times (their files' mtimes); set back by a day, the clock would keep
/// them waiting a day longer, past `queue.backoff.max`, and dead
/// destinations resting as long.
fn clock_went_back(then: Time, elapsed: Duration, now: Time) -> Option<i64> {
    let expected = then.secs.saturating_add(i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX));
    let back = expected.saturating_sub(now.secs);
    (back > CLOCK_STEP).then_some(back)
}

/// How soon incoming/ is listed again after a listing met a file still
/// being written, while no cleanup names files (see `watch_readable`).
const INCOMPLETE_RELIST: Duration = Duration::from_millis(200);

/// What a job was for, to match its report.
struct Running {
    message: QueueId,
    agent: Token,
}

pub struct Qmgr {
    child: Child,
    poll: Poll,
    store: Store,
    sched: Scheduler,
    peers: HashMap<Token, Peer>,
    next_token: usize,
    watch: Option<Watch>,
    /// The watch is in the poll: only while no cleanup names new files
    /// (its events would wake us for every file cleanup completes and
    /// every one we remove).
    watching: bool,
    active: HashMap<QueueId, Active>,
    /// How many of the active messages keep their file open.
    kept_files: usize,
    /// At most this many are kept ([`kept_files_limit`]).
    kept_limit: usize,
    running: HashMap<JobId, Running>,
    /// incoming/ names read or announced and not yet admitted, and the
    /// messages whose file could not be removed or deferred (see
    /// [`Qmgr::stuck`]).
    incoming: intake::Intake,
    /// When to list incoming/ again for a file met still being written.
    relist_at: Option<Instant>,
    /// incoming/ must be listed again.
    incoming_dirty: bool,
    last_incoming_scan: Instant,
    notices: HashMap<u64, QueueId>,
    /// Notices to ask bounce for again, by time.
    retries: BTreeSet<(Instant, QueueId)>,
    next_req: u64,
    /// Asked to stop: waiting for what is in flight (see [`drain`]).
    drain: Option<drain::Drain>,
    /// Queue listings under way, for control.
    listings: listing::Listings,
    /// The scan of deferred/ under way (an index or a flush), and those
    /// waiting for it to end.
    rescans: rescan::Rescans,
    /// The wall clock as last read, and when (monotonic): to notice it
    /// set back ([`clock_went_back`]).
    clock: (Instant, Time),
    /// Messages cleanup offered in memory, waiting for their admission
    /// (counted with the kept files; see [`memory`]).
    offers: HashMap<QueueId, memory::Memory>,
    /// When each message in memory came, oldest first (some may have a
    /// file by now).
    memory_since: VecDeque<(Instant, QueueId)>,
    /// How long a message stays in memory before it gets its file
    /// (`queue.memory_time`).
    memory_time: Duration,
    /// What to tell the cleanups at the end of the turn, or once synced.
    settled: memory::Settled,
    /// Queue files written from memory, not yet synced.
    unsynced: crate::queue::disk::Unsynced,
    /// Delivered messages a dead cleanup's successor may write again.
    orphans: memory::Orphans,
}

/// Prepare the watch on incoming/ (before the sandbox: on Linux it takes
/// a path).
pub fn watch_incoming(child: &Child) -> std::io::Result<Watch> {
    let dir = child.fds.first().ok_or_else(|| std::io::Error::other("no incoming/ descriptor"))?;
    Watch::with_attributes(dir.as_fd())
}

/// Serve until master says stop.
pub fn serve(_token: Sandboxed, mut child: Child, watch: std::io::Result<Watch>, kept_limit: usize) -> ! {
    let poll = Poll::new().unwrap_or_else(|e| crate::child::die(Role::Qmgr, &format!("poll: {e}")));
    let Some(delivery) = child.config.delivery.clone() else { child.fatal("no delivery settings from master") };
    let store = match Store::new(std::mem::take(&mut child.fds)) {
        Ok(s) => s,
        Err(e) => child.fatal(&e),
    };
    let sched = match Scheduler::new(delivery.settings(), delivery.routing()) {
        Ok(s) => s,
        Err(e) => child.fatal(&e.to_string()),
    };
    if let Err(e) = child.register_master(poll.registry(), MASTER) {
        child.fatal(&format!("registering the master channel: {e}"));
    }
    let watch = match Watch::register(watch, poll.registry(), WATCH) {
        Ok(w) => Some(w),
        Err(e) => {
            child.warn(&format!("cannot watch incoming/ ({e}); looking every {} s", INCOMING_POLL.as_secs()));
            None
        }
    };
    let mut q = Qmgr {
        child,
        poll,
        store,
        sched,
        peers: HashMap::new(),
        next_token: FIRST_PEER,
        watching: watch.is_some(),
        watch,
        active: HashMap::new(),
        kept_files: 0,
        kept_limit,
        running: HashMap::new(),
        incoming: intake::Intake::new(MAX_WAITING, MAX_STUCK),
        relist_at: None,
        incoming_dirty: true,
        last_incoming_scan: Instant::now(),
        notices: HashMap::new(),
        retries: BTreeSet::new(),
        next_req: 1,
        drain: None,
        listings: listing::Listings::default(),
        rescans: rescan::Rescans::default(),
        clock: (Instant::now(), Time::now()),
        offers: HashMap::new(),
        memory_since: VecDeque::new(),
        memory_time: delivery.queue.memory_time,
        settled: memory::Settled::default(),
        unsynced: crate::queue::disk::Unsynced::default(),
        orphans: memory::Orphans::default(),
    };
    q.start_up();
    // Log records go once per turn.
    q.child.master.cork();
    let mut events = Events::with_capacity(256);
    loop {
        let timeout = q.timeout();
        if let Err(e) = q.poll.poll(&mut events, Some(timeout))
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            q.child.fatal(&format!("poll: {e}"));
        }
        for ev in events.iter() {
            match ev.token() {
                MASTER => {
                    if q.child.master_event(ev) {
                        q.master_readable();
                    }
                }
                WATCH => q.watch_readable(),
                t => {
                    if ev.is_writable() {
                        q.flush_peer(t);
                    }
                    if ev.is_readable() || ev.is_read_closed() {
                        q.peer_readable(t);
                    }
                }
            }
        }
        q.report_done();
        q.work();
        q.settle_memory();
        q.child.end_turn(q.poll.registry());
    }
}

/// What qmgr holds that the queue directories do not show as it is
/// counted: active messages whose files stay in incoming/ count as
/// active; messages in memory (no file yet) count where their files
/// would be, offered ones in incoming/, the others as active.
struct Holding {
    /// Active messages with their file in incoming/.
    in_incoming: u64,
    /// Active messages in memory.
    in_memory: u64,
    /// Messages offered in memory, waiting for their admission.
    offered: u64,
}

impl Holding {
    /// The count of queue directory `name`, which holds `n` entries.
    fn count(&self, name: &str, n: u64) -> u64 {
        match name {
            "incoming" => n.saturating_sub(self.in_incoming) + self.offered,
            "active" => n + self.in_incoming + self.in_memory,
            _ => n,
        }
    }
}

/// The log line for a recipient the scheduler settled without a delivery
/// agent's word (a destination resting after failures, an agent gone, a
/// message expired), in the shape an agent's lines have.
fn settled_line(
    id: &QueueId,
    env: &QueueEnvelope,
    recipient: u32,
    status: &crate::queue::Status,
    now: Time,
) -> Option<String> {
    let r = env.recipients.get(recipient as usize)?;
    let delay = now.secs.saturating_sub(env.envelope.arrival.secs).max(0);
    let to = crate::log::sanitize(&r.address, 1024);
    let state = match status.state {
        crate::queue::State::Deferred => "deferred",
        crate::queue::State::Bounced => "bounced",
        _ => "sent",
    };
    Some(format!("{id}: to=<{to}>, relay=none, delay={delay}, status={state} ({})", status.reason))
}

/// The statuses that record a message as finished, for a file that could
/// not be removed: those left unwritten (`moot`), and every bounced
/// recipient's (among `recipients`, the file's) again, as done, since its
/// notice is queued. Bounced ones in `moot` become done too.
fn finished_statuses(
    recipients: &[crate::queue::Recipient],
    moot: &[(u32, crate::queue::Status)],
) -> Vec<(u32, crate::queue::Status)> {
    use crate::queue::State;
    let mut writes = moot.to_vec();
    for (i, r) in recipients.iter().enumerate() {
        if r.status.state == State::Bounced && !moot.iter().any(|(j, _)| *j as usize == i) {
            writes.push((i as u32, r.status.clone()));
        }
    }
    for (_, status) in &mut writes {
        if status.state == State::Bounced {
            status.state = State::Done;
        }
    }
    writes
}

/// Whether the actions left are only status writes and then the file's
/// removal.
fn removal_follows(pending: &VecDeque<Action>) -> bool {
    for a in pending {
        match a {
            Action::Write { .. } => {}
            Action::Finish { fate: Fate::Remove, .. } => return true,
            _ => return false,
        }
    }
    false
}

/// How often qmgr looks again at a scheduler event that is due and that
/// its last turn could not act on.
const DUE_RECHECK: Duration = Duration::from_millis(100);

fn time_to_instant(t: Time, now: Time) -> Duration {
    let secs = t.secs.saturating_sub(now.secs);
    if secs <= 0 { Duration::ZERO } else { Duration::from_secs(secs as u64) }
}

impl Qmgr {
    /// Rebuild the state from the files.
    fn start_up(&mut self) {
        if let Err(e) = self.store.prepare() {
            self.child.fatal(&format!("making the subfolders of deferred/: {e}"));
        }
        match self.store.recover_active() {
            Ok((n, said)) => {
                if n > 0 {
                    self.child.info(&format!("{n} message(s) of an interrupted pass moved back to incoming/"));
                }
                for line in said {
                    self.child.warn(&line);
                }
            }
            Err(e) => self.child.fatal(&format!("moving active/ back to incoming/: {e}")),
        }
        // Indexed a slice per turn: mail flows meanwhile.
        self.index_deferred();
    }

    /// Index deferred/ anew, a slice per turn (see [`rescan`]): from
    /// now, or once the scan under way ends.
    fn index_deferred(&mut self) {
        if self.rescans.index() {
            self.sched.begin_deferred_scan(Time::now());
        }
    }

    /// Go on with the scan of deferred/ under way, a slice of it; when it
    /// ends, answer the flush requests it covers and start the scan
    /// waiting, if any.
    fn rescan_some(&mut self) {
        if !self.rescans.busy() {
            return;
        }
        let now = Time::now();
        // No deferral waits longer than queue.backoff.max: a next attempt
        // later than that (the clock set back, a file touched) is that.
        let latest =
            now.secs.saturating_add(i64::try_from(self.sched.settings().backoff.max.as_secs()).unwrap_or(i64::MAX));
        let sched = &mut self.sched;
        let mut found = |id: QueueId, t: Time| {
            let t = if t.secs > latest { Time { secs: latest, micros: 0 } } else { t };
            sched.deferred_found(id, t);
        };
        let mut problems = Vec::new();
        let ended = self.rescans.turn(&self.store, &mut rescan::turn_budget(), &mut found, &mut problems);
        for p in problems {
            self.child.warn(&p);
        }
        let Some(ended) = ended else { return };
        match ended.kind {
            rescan::Kind::Index => {
                let n = self.sched.counts().deferred_indexed;
                self.child.debug(&format!("deferred/ indexed: {n} message(s)"));
            }
            rescan::Kind::Flush(_) => {
                let n = ended.found;
                self.child
                    .info(&format!("flush: {n} deferred message(s) due now ({} request(s))", ended.waiters.len()));
                for (token, id) in ended.waiters {
                    let result = Ok(format!("{n} deferred message(s) to be tried now"));
                    self.send_to(token, &QmgrToControl::Done { id, result }, &[]);
                }
            }
        }
        if self.rescans.start_next(now) == Some(rescan::Kind::Index) {
            self.sched.begin_deferred_scan(now);
        }
    }

    fn timeout(&self) -> Duration {
        if let Some(d) = &self.drain {
            // Only reports, answers and control's requests are waited for.
            if self.listings.ready() {
                return Duration::ZERO;
            }
            let t = d.until.saturating_duration_since(Instant::now());
            return self.taken_due().map_or(t, |due| t.min(due));
        }
        let now = Time::now();
        let mut t = if self.watch.is_some() { INCOMING_SCAN } else { INCOMING_POLL };
        if let Some(w) = self.sched.next_wakeup() {
            let wait = time_to_instant(w, now);
            // Due, and still there after this turn's dispatch: it cannot
            // be done now (no room in the active queue, or no agent), and
            // what makes it possible (a delivery's end, an agent) is an
            // event; only a look now and then, not a wake-up every 5 ms.
            t = t.min(if wait.is_zero() { DUE_RECHECK } else { wait + Duration::from_millis(5) });
        }
        if let Some((at, _)) = self.retries.first() {
            t = t.min(at.saturating_duration_since(Instant::now()));
        }
        if let Some(at) = self.relist_at {
            t = t.min(at.saturating_duration_since(Instant::now()));
        }
        if let Some(due) = self.memory_due() {
            t = t.min(due);
        }
        if let Some(due) = self.taken_due() {
            t = t.min(due);
        }
        // Names wait and there is room for them: go on at once (with no
        // room, a delivery's end makes some and wakes us).
        let room = self.sched.room();
        if !self.incoming.is_empty() && room.messages > 0 && room.recipients > 0 {
            t = Duration::ZERO;
        }
        // A listing control is waiting for, and a scan of deferred/, go
        // on in the next turn.
        if self.listings.ready() || self.rescans.busy() {
            t = Duration::ZERO;
        }
        t
    }

    fn master_readable(&mut self) {
        loop {
            match self.child.master.recv::<FromMaster>() {
                Ok(None) => break,
                Ok(Some((FromMaster::Peer { role, pid }, fds))) => {
                    let kind = match role {
                        Role::Control => PeerKind::Control,
                        Role::Smtp => PeerKind::Smtp,
                        Role::Bounce => PeerKind::Bounce,
                        Role::Local => PeerKind::Local,
                        Role::Cleanup => PeerKind::Cleanup,
                        other => self.child.fatal(&format!("master sent a channel to {}", other.name())),
                    };
                    let chan = self.child.peer_channel(role, fds);
                    self.add_peer(kind, pid, chan);
                }
                Ok(Some((FromMaster::Stop, _))) => self.begin_drain(),
                Ok(Some((m, _))) => self.child.fatal(&format!("unexpected message from master: {m:?}")),
                Err(crate::ipc::Error::Closed) => {
                    self.settle_before_exit();
                    std::process::exit(0)
                }
                Err(e) => self.child.fatal(&format!("master channel: {e}")),
            }
        }
    }

    fn add_peer(&mut self, kind: PeerKind, pid: u32, chan: Channel) {
        // A singleton's new channel replaces the old one; an smtp agent
        // is replaced by pid.
        let old: Vec<Token> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.kind == kind
                    && (kind == PeerKind::Bounce
                        || (matches!(kind, PeerKind::Smtp | PeerKind::Local | PeerKind::Cleanup) && p.pid == pid))
            })
            .map(|(t, _)| *t)
            .collect();
        for t in old {
            self.drop_peer(t, "replaced");
        }
        let token = Token(self.next_token);
        self.next_token += 1;
        let raw = chan.as_raw_fd();
        if let Err(e) =
            self.poll.registry().register(&mut SourceFd(&raw), token, Interest::READABLE | Interest::WRITABLE)
        {
            self.child.fatal(&format!("registering a peer channel: {e}"));
        }
        self.peers.insert(token, Peer { kind, pid, chan, jobs: HashSet::new() });
        self.child.debug(&format!("channel to {kind:?} pid {pid}"));
        if kind == PeerKind::Cleanup {
            // What it wrote before the channel was there: one look.
            self.incoming_dirty = true;
            self.watch_incoming(false);
        }
        if kind == PeerKind::Bounce {
            // Notices waiting for bounce go now.
            let waiting: Vec<QueueId> = std::mem::take(&mut self.retries).into_iter().map(|(_, id)| id).collect();
            for id in waiting {
                self.retry_later(id, Duration::ZERO);
            }
        }
    }

    fn drop_peer(&mut self, token: Token, why: &str) {
        let Some(p) = self.peers.remove(&token) else { return };
        self.listings.drop_peer(token);
        self.rescans.drop_peer(token);
        let raw = p.chan.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
        if why != "closed" && why != "replaced" {
            self.child.warn(&format!("dropping the {:?} channel: {why}", p.kind));
        }
        let now = Time::now();
        for job in p.jobs {
            if self.running.remove(&job).is_some() {
                match self.sched.job_failed(job, "the delivery agent went away; delivery will be retried", now) {
                    Ok(actions) => self.apply(actions),
                    Err(e) => self.child.warn(&e.to_string()),
                }
            }
        }
        if p.kind == PeerKind::Cleanup {
            // What it offered gets its files now (see `memory`); nothing
            // more can be reported to it.
            self.materialise_all(Some(token));
            self.settled.done.remove(&token);
            if self.forget_taken(token) {
                let _ = self.unsynced.sync(self.store.fd(Dir::Incoming).as_fd());
            }
            // It may have written files it could not name: one look, and
            // the kernel's word until a cleanup is back.
            self.incoming_dirty = true;
            if !self.cleanup_connected() {
                self.watch_incoming(true);
            }
        }
        if p.kind == PeerKind::Bounce {
            let lost: Vec<u64> = self.notices.keys().copied().collect();
            for req in lost {
                self.notice_failed(req, "bounce went away");
            }
        }
    }

    fn flush_peer(&mut self, token: Token) {
        if let Some(p) = self.peers.get_mut(&token)
            && let Err(e) = p.chan.flush()
        {
            let why = e.to_string();
            self.drop_peer(token, if matches!(e, crate::ipc::Error::Closed) { "closed" } else { &why });
        }
    }

    /// Whether a cleanup names the files it writes to us.
    fn cleanup_connected(&self) -> bool {
        self.peers.values().any(|p| p.kind == PeerKind::Cleanup)
    }

    /// Put the watch on incoming/ in the poll, or take it out.
    fn watch_incoming(&mut self, on: bool) {
        let Some(w) = self.watch.as_mut() else { return };
        if on == self.watching {
            return;
        }
        let raw = w.as_raw_fd();
        let r = if on {
            // What it gathered meanwhile is stale: a listing follows.
            let _ = w.drain();
            self.poll.registry().register(&mut SourceFd(&raw), WATCH, Interest::READABLE)
        } else {
            self.poll.registry().deregister(&mut SourceFd(&raw))
        };
        match r {
            Ok(()) => self.watching = on,
            Err(e) => self.child.warn(&format!("the watch on incoming/: {e}")),
        }
    }

    fn watch_readable(&mut self) {
        let Some(w) = self.watch.as_mut() else { return };
        match w.drain() {
            Wakeup::Nothing => {}
            Wakeup::Scan => self.incoming_dirty = true,
            Wakeup::Lost(why) => {
                if let Some(w) = self.watch.take() {
                    let _ = self.poll.registry().deregister(&mut SourceFd(&w.as_raw_fd()));
                }
                self.child.warn(&format!("lost the watch on incoming/ ({why}); looking every second"));
                self.incoming_dirty = true;
            }
        }
    }

    fn peer_readable(&mut self, token: Token) {
        loop {
            let Some(p) = self.peers.get_mut(&token) else { return };
            match p.kind {
                PeerKind::Control => match p.chan.recv::<ControlToQmgr>() {
                    Ok(None) => return,
                    Ok(Some((m, fds))) => {
                        if !fds.is_empty() {
                            self.child.fatal("control sent descriptors");
                        }
                        self.control_request(token, m);
                    }
                    Err(crate::ipc::Error::Closed) => return self.drop_peer(token, "closed"),
                    Err(e) => self.child.fatal(&format!("control channel: {e}")),
                },
                PeerKind::Smtp | PeerKind::Local => match p.chan.recv::<SmtpToQmgr>() {
                    Ok(None) => return,
                    Ok(Some((SmtpToQmgr::Done { job, site, recipients }, fds))) => {
                        if !fds.is_empty() {
                            self.child.fatal("a delivery agent sent descriptors with a report");
                        }
                        self.report(token, JobId(job), site, recipients);
                    }
                    Ok(Some((SmtpToQmgr::Corrupt { job, reason }, fds))) => {
                        if !fds.is_empty() {
                            self.child.fatal("a delivery agent sent descriptors with a report");
                        }
                        self.corrupt_report(token, JobId(job), &reason);
                    }
                    Err(crate::ipc::Error::Closed) => return self.drop_peer(token, "closed"),
                    // The agent is at fault: its jobs are retried.
                    Err(e) => return self.drop_peer(token, &format!("delivery agent channel: {e}")),
                },
                PeerKind::Cleanup => match p.chan.recv::<CleanupToQmgr>() {
                    Ok(None) => return,
                    Ok(Some((m, fds))) => self.cleanup_said(token, m, fds),
                    Err(crate::ipc::Error::Closed) => return self.drop_peer(token, "closed"),
                    Err(e) => return self.drop_peer(token, &format!("cleanup channel: {e}")),
                },
                PeerKind::Bounce => match p.chan.recv::<BounceToQmgr>() {
                    Ok(None) => return,
                    Ok(Some((BounceToQmgr::Done { req, result }, fds))) => {
                        if !fds.is_empty() {
                            self.child.fatal("bounce sent descriptors");
                        }
                        match result {
                            Ok(ids) => self.notice_done(req, &ids),
                            Err(why) => self.notice_failed(req, &why),
                        }
                    }
                    Ok(Some((BounceToQmgr::Corrupt { req, reason }, fds))) => {
                        if !fds.is_empty() {
                            self.child.fatal("bounce sent descriptors");
                        }
                        self.notice_corrupt(req, &reason);
                    }
                    Err(crate::ipc::Error::Closed) => return self.drop_peer(token, "closed"),
                    Err(e) => return self.drop_peer(token, &format!("bounce channel: {e}")),
                },
            }
        }
    }

    /// Send to a peer; a failed channel is dropped (its work retried).
    fn send_to<T: serde::Serialize>(&mut self, token: Token, msg: &T, fds: &[std::os::fd::BorrowedFd<'_>]) -> bool {
        let Some(p) = self.peers.get_mut(&token) else { return false };
        let r = p.chan.send(msg, fds);
        self.sent(token, r)
    }

    /// [`Qmgr::send_to`], giving the descriptors away.
    fn send_owned_to<T: serde::Serialize>(&mut self, token: Token, msg: &T, fds: Vec<OwnedFd>) -> bool {
        let Some(p) = self.peers.get_mut(&token) else { return false };
        let r = p.chan.send_owned(msg, fds);
        self.sent(token, r)
    }

    fn sent(&mut self, token: Token, r: Result<(), crate::ipc::Error>) -> bool {
        match r {
            Ok(()) => true,
            Err(crate::ipc::Error::Closed) => {
                self.drop_peer(token, "closed");
                false
            }
            Err(e) => {
                let why = e.to_string();
                self.drop_peer(token, &why);
                false
            }
        }
    }

    // ----- the work loop -----

    fn work(&mut self) {
        if let Some(d) = self.drain {
            return self.drain_turn(d);
        }
        let now = Time::now();
        let (then_at, then) = std::mem::replace(&mut self.clock, (Instant::now(), now));
        if let Some(back) = clock_went_back(then, then_at.elapsed(), now) {
            // deferred/ is indexed again, each next attempt no later than
            // queue.backoff.max from now (see `rescan_some`).
            self.child.warn(&format!(
                "the clock went back by {back} s: deferred/ indexed again, and dead destinations tried again"
            ));
            self.sched.clock_went_back(now);
            self.index_deferred();
        }
        if self.watch.is_none() && self.last_incoming_scan.elapsed() >= INCOMING_POLL
            || self.last_incoming_scan.elapsed() >= INCOMING_SCAN
        {
            self.incoming_dirty = true;
        }
        if self.relist_at.is_some_and(|t| t <= Instant::now()) {
            self.relist_at = None;
            self.incoming_dirty = true;
        }
        if !self.rescans.busy() && self.sched.wants_deferred_scan(now) {
            self.index_deferred();
        }
        self.rescan_some();
        self.age_memory();
        self.admit(now);
        self.dispatch(now);
        self.retry_notices();
        self.list_some();
    }

    fn admit(&mut self, now: Time) {
        for _ in 0..ADMIT_PER_TURN {
            // A listing when no names wait, and once a minute whatever
            // waits (names are taken once: what waits is skipped).
            let overdue = self.last_incoming_scan.elapsed() >= INCOMING_SCAN;
            // (No listing is taken once a stuck message could not be
            // remembered: see `intake`.)
            if self.incoming_dirty && (self.incoming.is_empty() || overdue) && self.incoming.takes_listings() {
                self.incoming_dirty = false;
                self.last_incoming_scan = Instant::now();
                // Active and waiting messages are in incoming/: they are
                // listed too (and skipped), so they do not count toward
                // the batch.
                let max = INCOMING_BATCH + self.active.len() + self.incoming.stuck_len() + self.incoming.len();
                match self.store.list_incoming(max) {
                    Ok((ids, junk)) => {
                        let full = ids.len() >= max;
                        let active = &self.active;
                        if self.incoming.listed(ids, |id| active.contains_key(id)) || full {
                            self.incoming_dirty = true;
                        }
                        for name in junk {
                            match self.store.to_corrupt(Dir::Incoming, &name) {
                                Ok(to) => self
                                    .child
                                    .warn(&format!("incoming/{name}: not a queue file name; moved to corrupt/{to}")),
                                Err(e) => self.child.warn(&format!(
                                    "incoming/{name}: not a queue file name; cannot move it to corrupt/: {e}"
                                )),
                            }
                        }
                    }
                    Err(e) => self.child.warn(&format!("listing incoming/: {e}")),
                }
            }
            match self.sched.next_admission(now, !self.incoming.is_empty()) {
                None => return,
                Some(Admit::Incoming) => {
                    let Some(id) = self.incoming.pop() else { return };
                    if !self.take(id, Dir::Incoming, Origin::Incoming, now) {
                        // No room for it yet: first in line next turn.
                        self.incoming.put_back(id);
                        return;
                    }
                }
                Some(Admit::Deferred(id)) => {
                    self.take(id, Dir::Deferred, Origin::Deferred, now);
                }
            }
        }
    }

    /// Take a message out of the active queue (closing a kept file).
    fn remove_active(&mut self, id: &QueueId) -> Option<Active> {
        let mut m = self.active.remove(id)?;
        self.kept_files -= usize::from(m.file.is_some());
        if let Some(mem) = m.memory.take() {
            // (Callers give it its file first, or tell cleanup it is done.)
            self.kept_files -= 1;
            if let Err(e) = self.write_memory(*id, &mem.fd, mem.cleanup) {
                self.child.warn(&format!("{id}: cannot write its queue file: {e}"));
            }
        }
        Some(m)
    }

    /// Queue an incoming/ name for admission, once (a message already in
    /// the active queue is not taken again).
    fn queue_incoming(&mut self, id: QueueId) {
        if self.incoming.offer(id, self.active.contains_key(&id)) == intake::Offer::Full {
            // Memory stays bounded: a listing finds it once names drain.
            self.incoming_dirty = true;
        }
    }

    /// Move message `id` from `from` to active/ and hand it to the
    /// scheduler. False: no room for it in the active queue now (it waits
    /// where it is).
    fn take(&mut self, id: QueueId, from: Dir, origin: Origin, now: Time) -> bool {
        if from == Dir::Incoming
            && let Some(mem) = self.offers.remove(&id)
        {
            return self.take_memory(id, mem, origin, now);
        }
        if from == Dir::Incoming && self.orphans.take(&id) {
            // Delivered from memory; a restarted cleanup's recovery wrote
            // it again, not knowing.
            match self.store.remove(Dir::Incoming, &id) {
                Ok(_) => self.child.info(&format!(
                    "{id}: removed a copy written again by cleanup's journal recovery (delivered already)"
                )),
                Err(e) => self.child.warn(&format!("{id}: cannot remove a copy of a delivered message: {e}")),
            }
            return true;
        }
        // Its next attempt fell due while it is still in the active queue
        // and deferred/ does not have it yet (a notice holds the move
        // back): not a second copy. The index lets it go; the move puts
        // it back (see `finish`).
        if from == Dir::Deferred && self.active.contains_key(&id) && !self.store.exists(Dir::Deferred, &id) {
            self.sched.forget_deferred(&id);
            return true;
        }
        // A second copy of a message with one in incoming/ (see
        // `store::Store::resolve_twin`): one of them is set aside.
        if from != Dir::Incoming && (self.active.contains_key(&id) || self.store.exists(Dir::Incoming, &id)) {
            match self.store.resolve_twin(&id, from) {
                Twin::None => {}
                Twin::IncomingCorrupt(line) => self.child.warn(&line),
                Twin::OtherSetAside(line) => {
                    self.child.warn(&line);
                    if from == Dir::Deferred {
                        self.sched.forget_deferred(&id);
                    }
                    self.queue_incoming(id);
                    return true;
                }
            }
        }
        // A copy in incoming/ of a message on hold, left by cleanup's
        // journal recovery: the message stays held (see
        // `store::Store::resolve_held`). (One lookup per new message.)
        if from == Dir::Incoming && self.store.exists(Dir::Hold, &id) {
            match self.store.resolve_held(&id, admin::HELD_UNSETTLED) {
                Held::No => {}
                Held::Kept(line) => {
                    self.child.warn(&line);
                    return true;
                }
                Held::Blocked(line) => {
                    // Not taken again until qmgr starts again.
                    self.child.warn(&line);
                    self.stuck(id);
                    return true;
                }
            }
        }
        let (file, size) = match self.store.open_sized(from, &id, false) {
            Ok(f) => f,
            Err(p) => {
                self.unusable(&id, from, p);
                return true;
            }
        };
        let env = match store::read_sized(&file, size, &id) {
            Ok(e) => e,
            Err(p) => {
                self.unusable(&id, from, p);
                return true;
            }
        };
        let actions = match self.sched.add_message(id, &env.envelope, &env.recipients, origin, now) {
            Ok(a) => a,
            Err(schedule::Error::NoRoom(_)) => {
                if from == Dir::Deferred {
                    self.sched.deferred_found(id, now);
                }
                return false;
            }
            Err(e) => {
                self.child.warn(&format!("{id}: {e}"));
                return true;
            }
        };
        // A new message stays in incoming/ (cleanup names new files to
        // us, and listings skip the active ones): a rename saved. One
        // from deferred/ leaves it for active/, out of the deferred scan.
        let dir = if from == Dir::Incoming { Dir::Incoming } else { Dir::Active };
        if dir != from
            && let Err(p) = self.store.rename(&id, from, dir)
        {
            self.sched.drop_message(&id);
            if !matches!(p, Problem::Gone) {
                self.child.warn(&format!("{id}: cannot move it to active/: {p}; trying again in a minute"));
                if from == Dir::Deferred {
                    self.sched.deferred_found(id, Time { secs: now.secs + 60, micros: 0 });
                }
            }
            return true;
        }
        if from == Dir::Incoming {
            log_active(&mut self.child, &id, &env);
        }
        let file = (self.kept_files < self.kept_limit).then_some(file);
        self.kept_files += usize::from(file.is_some());
        self.active.insert(id, Active::new(dir, env, origin, now, file, None));
        self.apply(actions);
        true
    }

    /// [`Qmgr::take`] for a message cleanup offered in memory (see
    /// [`memory`]); one that finds no room gets its file and waits.
    fn take_memory(&mut self, id: QueueId, mem: memory::Memory, origin: Origin, now: Time) -> bool {
        let read = mem.fd.metadata().map_err(Problem::Io).and_then(|st| store::read_sized(&mem.fd, st.len(), &id));
        let env = match read {
            Ok(e) => e,
            Err(p) => {
                // Not expected of cleanup: written out as a file, for the
                // usual checks.
                self.child.warn(&format!("{id}: reading it from memory: {p}"));
                if self.file_offer(id, mem) {
                    self.queue_incoming(id);
                }
                return true;
            }
        };
        let actions = match self.sched.add_message(id, &env.envelope, &env.recipients, origin, now) {
            Ok(a) => a,
            Err(e) => {
                // It waits with its file (or in memory, if that fails).
                self.file_offer(id, mem);
                if let schedule::Error::NoRoom(_) = e {
                    return false;
                }
                self.child.warn(&format!("{id}: {e}"));
                return true;
            }
        };
        log_active(&mut self.child, &id, &env);
        self.active.insert(id, Active::new(Dir::Incoming, env, origin, now, None, Some(mem)));
        self.apply(actions);
        true
    }

    /// A file that could not be taken: gone, unreadable now, or corrupt.
    fn unusable(&mut self, id: &QueueId, dir: Dir, p: Problem) {
        // (A name for incoming/ that comes late says nothing of deferred/.)
        if dir == Dir::Deferred {
            self.sched.forget_deferred(id);
        }
        match p {
            Problem::Gone => {}
            // Not complete yet: cleanup names it once it is; with no
            // cleanup to name it (and a kernel watch that woke us at its
            // creation, before it was complete), look again soon.
            Problem::Incomplete => {
                if !self.cleanup_connected() {
                    self.relist_at.get_or_insert(Instant::now() + INCOMPLETE_RELIST);
                }
            }
            Problem::Io(_) | Problem::Twin(_) => {
                self.child.warn(&format!("{}/{id}: {p}; trying again in a minute", dir.name()));
                // incoming/ is listed again anyway; deferred/ is not.
                if dir == Dir::Deferred {
                    let now = Time::now();
                    self.sched.deferred_found(*id, Time { secs: now.secs + 60, micros: 0 });
                }
            }
            Problem::Corrupt(why) => {
                let name = store::path(dir, id);
                match self.store.to_corrupt(dir, &name) {
                    Ok(to) => self.child.warn(&format!("{}/{name}: {why}; moved to corrupt/{to}", dir.name())),
                    Err(e) => {
                        self.child.warn(&format!("{}/{name}: {why}; cannot move it to corrupt/: {e}", dir.name()))
                    }
                }
            }
        }
    }

    /// The least busy agent of `kind` that can take more work.
    fn agent(&self, kind: PeerKind) -> Option<Token> {
        self.agent_for(kind, None)
    }

    /// The agent of `kind` for a delivery with affinity `key` (see
    /// [`pick_agent`]).
    fn agent_for(&self, kind: PeerKind, key: Option<&str>) -> Option<Token> {
        let agents: Vec<Candidate> = self
            .peers
            .iter()
            .filter(|(_, p)| p.kind == kind)
            .map(|(t, p)| Candidate { token: *t, jobs: p.jobs.len(), room: p.chan.queued() < PEER_BACKLOG })
            .collect();
        pick_agent(agents, key)
    }

    fn dispatch(&mut self, now: Time) {
        // Until both delivery agents are there, nothing is started (so a
        // start-up race does not defer mail).
        while self.agent(PeerKind::Smtp).is_some() && self.agent(PeerKind::Local).is_some() {
            let Some(job) = self.sched.next_job(now) else { return };
            match job.destination.transport {
                // LMTP is the smtp client's other mode.
                Transport::Smtp | Transport::Lmtp => self.start_delivery(job, now, PeerKind::Smtp),
                Transport::Local => self.start_delivery(job, now, PeerKind::Local),
            }
        }
    }

    fn start_delivery(&mut self, job: Job, now: Time, kind: PeerKind) {
        let fail = |q: &mut Qmgr, why: &str| match q.sched.job_failed(job.id, why, now) {
            Ok(a) => q.apply(a),
            Err(e) => q.child.warn(&e.to_string()),
        };
        // A local delivery keeps to the process its first recipient
        // hashes to: one user's mail is then written in batches by one
        // worker, with one flush per batch, instead of in smaller ones by
        // every local process (and mbox deliveries to one mailbox do not
        // contend for its lock across processes).
        let key = match job.destination.transport {
            Transport::Local => job.recipients.first().map(|r| r.address.to_ascii_lowercase()),
            Transport::Smtp | Transport::Lmtp => None,
        };
        let Some(agent) = self.agent_for(kind, key.as_deref()) else {
            return fail(self, "no delivery agent for it is running");
        };
        let Some(a) = self.active.get_mut(&job.message) else { return fail(self, "message not in the active queue") };
        let active_at = (a.active_at.secs, a.active_at.micros);
        // In memory: a descriptor of its memory file.
        let kept = match &a.memory {
            Some(mem) => match mem.fd.try_clone() {
                Ok(f) => Some(f),
                Err(e) => return fail(self, &format!("cannot hand on its memory file: {e}")),
            },
            None => a.file.take(),
        };
        let in_memory = a.memory.is_some();
        let dir = a.dir;
        self.kept_files -= usize::from(kept.is_some() && !in_memory);
        let file = match kept.map_or_else(|| self.store.open(dir, &job.message, false), Ok) {
            Ok(f) => f,
            Err(p) => {
                let why = format!("cannot open the queue file: {p}");
                self.child.warn(&format!("{}: {why}", job.message));
                return fail(self, &why);
            }
        };
        let nexthop = match &job.destination.nexthop {
            Hop::Inet(n) => Target::Inet(NexthopSpec { host: n.host.clone(), port: n.port, mx: n.mx }),
            Hop::Unix(path) => Target::Unix(path.clone()),
        };
        let protocol = if job.destination.transport == Transport::Lmtp { Protocol::Lmtp } else { Protocol::Smtp };
        let d = Delivery {
            job: job.id.0,
            queue_id: job.message.to_string(),
            protocol,
            nexthop,
            recipients: job.recipients.iter().map(|r| r.index).collect(),
            active_at,
        };
        self.running.insert(job.id, Running { message: job.message, agent });
        if let Some(p) = self.peers.get_mut(&agent) {
            p.jobs.insert(job.id);
        }
        // When the send fails, drop_peer has failed the job already.
        self.send_owned_to(agent, &QmgrToSmtp::Deliver(Box::new(d)), vec![OwnedFd::from(file)]);
    }

    /// The running job `job` that agent `token` reports on, no longer
    /// running; None (and the agent dropped) when it was not given `job`.
    fn take_reported(&mut self, token: Token, job: JobId) -> Option<Running> {
        match self.running.get(&job) {
            None => {
                self.drop_peer(token, &format!("report for {job}, which it was not given"));
                return None;
            }
            Some(r) if r.agent != token => {
                self.drop_peer(token, &format!("report for {job}, which another agent has"));
                return None;
            }
            Some(_) => {}
        }
        let r = self.running.remove(&job)?;
        if let Some(p) = self.peers.get_mut(&token) {
            p.jobs.remove(&job);
        }
        Some(r)
    }

    fn report(
        &mut self,
        token: Token,
        job: JobId,
        site: SiteReport,
        recipients: Vec<crate::ipc::msg::RecipientReport>,
    ) {
        // The job stays the other agent's if this one reports it: that
        // one's report, or its loss, still ends the job.
        let Some(r) = self.take_reported(token, job) else { return };
        let now = Time::now();
        let site = match site {
            SiteReport::Reached => SiteStatus::Reached,
            SiteReport::Unreachable(reason) => SiteStatus::Unreachable { reason },
            SiteReport::Unknown => SiteStatus::Unknown,
        };
        let outcomes = recipients
            .into_iter()
            .map(|mut r| {
                // Our own reasons carry their status code in front, so the
                // queue file (mailq, the DSN) keeps it; a server's reply
                // has its own.
                if !matches!(r.status, RecipientStatus::Delivered { .. })
                    && !r.reason.starts_with("host ")
                    && !r.reason.starts_with(|c: char| c.is_ascii_digit())
                    && crate::bounce::StatusCode::parse(&r.dsn).is_some()
                {
                    r.reason = format!("{} {}", r.dsn, r.reason);
                }
                let o = match r.status {
                    RecipientStatus::Delivered { dsn_passed, action } => {
                        Outcome::Delivered { reason: r.reason, dsn_passed, action }
                    }
                    RecipientStatus::Deferred => Outcome::Deferred { reason: r.reason },
                    RecipientStatus::Bounced => Outcome::Bounced { reason: r.reason },
                };
                (r.index, o)
            })
            .collect();
        let report = Report { site, outcomes };
        let actions = match self.sched.job_finished(job, &report, now) {
            Ok(a) => a,
            Err(e @ schedule::Error::BadReport { .. }) => {
                self.child.warn(&format!("{}: {e}", r.message));
                match self.sched.job_failed(job, "the delivery agent's report did not fit the delivery", now) {
                    Ok(a) => a,
                    Err(e) => return self.child.warn(&e.to_string()),
                }
            }
            Err(e) => return self.child.warn(&e.to_string()),
        };
        self.apply(actions);
    }

    /// An agent found the queue file of `job` corrupt, which qmgr's read
    /// of the envelope cannot see (the content's CRC): the message leaves
    /// the active queue and its file goes to corrupt/ (the corrupt/ rule
    /// of doc/queue-format.md). Other deliveries of it still running end
    /// without effect. Retried, it would fail the same way until
    /// `queue.lifetime`, and then bounce built its notice from the
    /// damaged content.
    fn corrupt_report(&mut self, token: Token, job: JobId, reason: &str) {
        let Some(r) = self.take_reported(token, job) else { return };
        let id = r.message;
        self.sched.drop_message(&id);
        // The job ends; its destination hears nothing of it.
        match self.sched.job_failed(job, "the queue file is corrupt", Time::now()) {
            Ok(actions) => self.apply(actions),
            Err(e) => self.child.warn(&e.to_string()),
        }
        self.set_aside_corrupt(&id, "the delivery agent", "nothing delivered", reason);
    }

    /// Move message `id`, which `who` found corrupt, out of the active
    /// queue to corrupt/, and log it (`what` says what was not done).
    fn set_aside_corrupt(&mut self, id: &QueueId, who: &str, what: &str, reason: &str) {
        let reason = crate::log::sanitize(reason, 512);
        let Some(m) = self.remove_active(id) else {
            // Held or deleted meanwhile: where it went, it is found again.
            return self.child.warn(&format!("{id}: {who} found the queue file corrupt: {reason}"));
        };
        let (dir, name) = (m.dir, store::path(m.dir, id));
        drop(m);
        let d = dir.name();
        match self.store.to_corrupt(dir, &name) {
            Ok(to) => {
                self.child.warn(&format!("{d}/{name}: {who} found it corrupt: {reason}; moved to corrupt/{to}, {what}"))
            }
            Err(e) => self
                .child
                .warn(&format!("{d}/{name}: {who} found it corrupt: {reason}; cannot move it to corrupt/: {e}")),
        }
    }

    // ----- carrying out the scheduler's actions -----

    fn apply(&mut self, actions: Vec<Action>) {
        let mut touched = Vec::new();
        let now = Time::now();
        for a in actions {
            let id = match &a {
                Action::Write { message, .. }
                | Action::Notify { message, .. }
                | Action::LoadMore { message, .. }
                | Action::Finish { message, .. } => *message,
            };
            let Some(m) = self.active.get_mut(&id) else {
                self.child.warn(&format!("{id}: an action for a message not in the active queue: {a:?}"));
                continue;
            };
            if let Action::Write { recipient, status, log: true, .. } = &a
                && let Some(line) = settled_line(&id, &m.env, *recipient, status, now)
            {
                self.child.info(&line);
            }
            m.pending.push_back(a);
            if !touched.contains(&id) {
                touched.push(id);
            }
        }
        for id in touched {
            self.run_pending(id);
        }
    }

    /// Carry out a message's pending actions until one must wait.
    fn run_pending(&mut self, id: QueueId) {
        let mut file: Option<File> = None;
        // Status records written since the last fdatasync: written again
        // should it fail (Linux forgets the pages it could not write back,
        // and a second fdatasync would succeed without them).
        let mut unsynced: Vec<SlotWrite> = Vec::new();
        // Statuses not written because the removal follows (see below).
        let mut moot: Vec<(u32, crate::queue::Status)> = Vec::new();
        if !self.rewrite(id, &mut file) {
            return;
        }
        loop {
            let Some(m) = self.active.get_mut(&id) else { return };
            if m.notice.is_some() || m.retry_at.is_some() {
                break;
            }
            let Some(action) = m.pending.pop_front() else { break };
            // A message in memory gets its file before anything but its
            // removal (and the statuses that removal makes moot).
            let needs_file = match &action {
                Action::Write { .. } => !removal_follows(&m.pending),
                Action::Finish { fate: Fate::Remove, .. } => false,
                Action::Notify { .. } | Action::LoadMore { .. } | Action::Finish { .. } => true,
            };
            if needs_file
                && m.memory.is_some()
                && let Err(why) = self.materialise(id)
            {
                self.child.warn(&format!("{id}: {why}; trying again in {}s", STATUS_RETRY.as_secs()));
                if let Some(m) = self.active.get_mut(&id) {
                    m.pending.push_front(action);
                }
                self.retry_later(id, STATUS_RETRY);
                break;
            }
            let Some(m) = self.active.get_mut(&id) else { return };
            // Statuses reach the disk before anything that depends on
            // them, but not before a removal, which makes them moot.
            let needs_sync = !matches!(action, Action::Write { .. } | Action::Finish { fate: Fate::Remove, .. });
            if !unsynced.is_empty()
                && needs_sync
                && let Some(f) = &file
            {
                if let Err(e) = f.sync_data() {
                    return self.sync_failed(id, Some(action), unsynced, &e.to_string());
                }
                unsynced.clear();
            }
            match action {
                Action::Write { recipient, status, .. } => {
                    // Statuses that only lead up to the file's removal are
                    // moot: not written (should the removal fail, the
                    // statuses are written then, in `finish`).
                    if removal_follows(&m.pending) {
                        moot.push((recipient, status));
                        continue;
                    }
                    if file.is_none() {
                        match self.store.open(m.dir, &id, true) {
                            Ok(f) => file = Some(f),
                            Err(Problem::Gone) => {
                                self.child.warn(&format!("{id}: cannot open to record a status: {}", Problem::Gone));
                                continue;
                            }
                            // What follows (a notice, the move to deferred/)
                            // depends on the status: all of it waits.
                            Err(p) => {
                                self.write_later(
                                    id,
                                    recipient,
                                    status,
                                    &format!("cannot open to record a status: {p}"),
                                );
                                break;
                            }
                        }
                    }
                    let (Some(f), Some(m)) = (&file, self.active.get_mut(&id)) else { continue };
                    let Some(at) = m.env.status_offset(recipient as usize) else { continue };
                    match update_status_at(f, at, &status) {
                        Ok((stored, written)) => {
                            if let Some(r) = m.env.recipients.get_mut(recipient as usize) {
                                r.status = stored;
                            }
                            unsynced.push(written);
                        }
                        Err(e) => {
                            let why = format!("recording the status of recipient {recipient}: {e}");
                            self.write_later(id, recipient, status, &why);
                            break;
                        }
                    }
                }
                Action::Notify { notices, .. } => {
                    let m = self.active.get_mut(&id).expect("checked above");
                    // Put it back: it is done when bounce says so.
                    m.pending.push_front(Action::Notify { message: id, notices: notices.clone() });
                    self.ask_bounce(id, &notices);
                }
                Action::LoadMore { .. } => {
                    drop(file.take());
                    self.load_more(id);
                }
                Action::Finish { fate, .. } => {
                    drop(file.take());
                    self.finish(id, fate, moot);
                    return;
                }
            }
        }
        if !unsynced.is_empty()
            && let Some(f) = &file
            && let Err(e) = f.sync_data()
        {
            self.sync_failed(id, None, unsynced, &e.to_string());
        }
    }

    /// Writes again, each to its slot, the status records of message `id`
    /// whose sync failed before, and syncs them (opening its file into
    /// `file`); false if that failed again and everything waits.
    fn rewrite(&mut self, id: QueueId, file: &mut Option<File>) -> bool {
        let Some(m) = self.active.get_mut(&id) else { return false };
        if m.rewrite.is_empty() || m.notice.is_some() || m.retry_at.is_some() {
            return true;
        }
        let records = std::mem::take(&mut m.rewrite);
        let f = match self.store.open(m.dir, &id, true) {
            Ok(f) => file.insert(f),
            Err(p) => {
                self.sync_failed(id, None, records, &format!("cannot open it again: {p}"));
                return false;
            }
        };
        let done = records.iter().try_for_each(|w| w.redo(f)).and_then(|()| f.sync_data());
        match done {
            Ok(()) => true,
            Err(e) => {
                self.sync_failed(id, None, records, &e.to_string());
                false
            }
        }
    }

    /// The status records `unsynced` may not be on disk: they are kept to
    /// be written again as they were and synced ([`Qmgr::rewrite`]), and
    /// the message's actions (`next`, the one that was to follow them,
    /// first) wait [`STATUS_RETRY`].
    fn sync_failed(&mut self, id: QueueId, next: Option<Action>, unsynced: Vec<SlotWrite>, why: &str) {
        self.child.warn(&format!(
            "{id}: syncing {} recorded status(es): {why}; writing them again in {}s",
            unsynced.len(),
            STATUS_RETRY.as_secs()
        ));
        if let Some(m) = self.active.get_mut(&id) {
            if let Some(a) = next {
                m.pending.push_front(a);
            }
            m.rewrite.extend(unsynced);
        }
        self.retry_later(id, STATUS_RETRY);
    }

    /// A status that could not be written goes back to the front of the
    /// message's actions, which wait [`STATUS_RETRY`] (the others depend
    /// on it).
    fn write_later(&mut self, id: QueueId, recipient: u32, status: crate::queue::Status, why: &str) {
        self.child.warn(&format!("{id}: {why}; trying again in {}s", STATUS_RETRY.as_secs()));
        if let Some(m) = self.active.get_mut(&id) {
            m.pending.push_front(Action::Write { message: id, recipient, status, log: false });
        }
        self.retry_later(id, STATUS_RETRY);
    }

    fn load_more(&mut self, id: QueueId) {
        let now = Time::now();
        let Some(dir) = self.active.get(&id).map(|m| m.dir) else { return };
        let env = match self.store.open(dir, &id, false).and_then(|f| store::read(&f, &id)) {
            Ok(e) => e,
            Err(p) => {
                self.child.warn(&format!("{id}: cannot read it again for more recipients: {p}"));
                self.sched.drop_message(&id);
                self.remove_active(&id);
                return;
            }
        };
        let Some(m) = self.active.get_mut(&id) else { return };
        let result = self.sched.add_message(id, &env.envelope, &env.recipients, m.origin, now);
        m.env = env;
        match result {
            Ok(a) => self.apply(a),
            Err(e) => self.child.warn(&format!("{id}: {e}")),
        }
    }

    /// The message's last action. `moot`: the statuses left unwritten
    /// because the removal was to follow them.
    fn finish(&mut self, id: QueueId, fate: Fate, moot: Vec<(u32, crate::queue::Status)>) {
        if let Fate::Remove = fate
            && let Some(mem) = self.active.get_mut(&id).and_then(|m| m.memory.take())
        {
            // No file was ever written: cleanup's journal needs it no more.
            self.kept_files -= 1;
            self.remove_active(&id);
            if self.peers.contains_key(&mem.cleanup) {
                self.settled.done.entry(mem.cleanup).or_default().push(id);
            }
            // A cleanup's recovery may write it again (see `memory::Orphans`).
            self.orphans.finished(id);
            self.child.info(&format!("{id}: removed"));
            return;
        }
        let Some(m) = self.remove_active(&id) else { return };
        if let Fate::Remove = fate {
            self.finished_file(id);
        }
        let dir = m.dir;
        match fate {
            Fate::Remove => match self.store.remove(dir, &id) {
                Ok(_) => self.child.info(&format!("{id}: removed")),
                Err(e) => {
                    // Recorded after all, so that whoever reads the file
                    // again (a listing, the next start) finds nothing left
                    // to deliver instead of delivering it again.
                    let recorded = self.record_moot(dir, &m.env, id, &moot);
                    self.child.warn(&format!(
                        "{id}: cannot remove it from {}/: {e}{}",
                        dir.name(),
                        match &recorded {
                            Ok(()) => String::from(" (every recipient is recorded done in it: it is removed when read again)"),
                            Err(w) => format!(" (and cannot record its recipients done: {w}; it may be delivered again)"),
                        }
                    ));
                    self.stuck(id);
                }
            },
            Fate::Defer { until, .. } => {
                let moved = self.store.defer(&id, dir, until);
                if let Ok(Some(line)) = &moved {
                    self.child.warn(line);
                }
                if let Err(p) = moved {
                    self.child.warn(&format!("{id}: cannot move it to deferred/: {p}"));
                    self.sched.forget_deferred(&id);
                    self.stuck(id);
                } else {
                    // In the index already, unless its time came while a
                    // notice held the move back and deferred/ did not have
                    // it yet (the index then let it go).
                    self.sched.deferred_found(id, until);
                }
            }
        }
    }

    /// Writes and syncs the statuses `moot` into the file of message `id`
    /// (in `dir`, envelope `env`), with each bounced recipient recorded
    /// done: its notice was queued before the removal was asked for, and
    /// a file read again from incoming/ has its bounced recipients
    /// reported (a crash may have lost their notices).
    fn record_moot(
        &self,
        dir: Dir,
        env: &QueueEnvelope,
        id: QueueId,
        moot: &[(u32, crate::queue::Status)],
    ) -> Result<(), String> {
        let writes = finished_statuses(&env.recipients, moot);
        if writes.is_empty() {
            return Ok(());
        }
        let f = self.store.open(dir, &id, true).map_err(|p| p.to_string())?;
        for (recipient, status) in &writes {
            let at = env.status_offset(*recipient as usize).ok_or("no such recipient")?;
            update_status_at(&f, at, status).map_err(|e| e.to_string())?;
        }
        f.sync_data().map_err(|e| e.to_string())
    }

    /// A message whose file could not be removed or deferred: it is taken
    /// again at the next start (not by a listing of incoming/ meanwhile,
    /// which would deliver it again and again). Past [`MAX_STUCK`] of
    /// them no listing is taken until then (see [`intake`]).
    fn stuck(&mut self, id: QueueId) {
        if self.incoming.stuck(id) {
            self.child.warn(&format!(
                "{id}: more than {MAX_STUCK} messages could not be removed or deferred (is the spool read-only or \
                 failing?): no more can be remembered, so incoming/ is no longer listed (its files would be \
                 delivered again at each listing) and only the files cleanup names are taken, until qmgr starts \
                 again (mtactl reload, or a restart, once the spool is writable)"
            ));
        }
    }

    // ----- notices -----

    fn ask_bounce(&mut self, id: QueueId, notices: &schedule::Notices) {
        let bounce = self.peers.iter().find(|(_, p)| p.kind == PeerKind::Bounce).map(|(t, _)| *t);
        let Some(token) = bounce else { return self.retry_later(id, NOTICE_WAIT) };
        if self.notices.len() >= crate::ipc::msg::MAX_NOTICES_OUTSTANDING {
            return self.retry_later(id, NOTICE_BUSY);
        }
        let dir = self.active.get(&id).map_or(Dir::Active, |m| m.dir);
        let file = match self.store.open(dir, &id, false) {
            Ok(f) => f,
            Err(p) => {
                self.child.warn(&format!("{id}: cannot open it for bounce: {p}"));
                return self.retry_later(id, NOTICE_RETRY);
            }
        };
        let req = self.next_req;
        self.next_req += 1;
        let msg = QmgrToBounce::Notify(Box::new(NoticeRequest {
            req,
            queue_id: id.to_string(),
            failure: notices.failure.clone(),
            delay: notices.delay.clone(),
            success: notices.success.clone(),
        }));
        if let Some(m) = self.active.get_mut(&id) {
            m.notice = Some(req);
        }
        self.notices.insert(req, id);
        self.send_to(token, &msg, &[file.as_fd()]);
    }

    fn notice_done(&mut self, req: u64, ids: &[String]) {
        let Some(id) = self.notices.remove(&req) else { return };
        let Some(m) = self.active.get_mut(&id) else { return };
        if m.notice != Some(req) {
            return;
        }
        m.notice = None;
        if matches!(m.pending.front(), Some(Action::Notify { .. })) {
            m.pending.pop_front();
        }
        for n in ids {
            self.child.info(&format!("{id}: sender delivery status notification: {n}"));
        }
        self.run_pending(id);
    }

    fn notice_failed(&mut self, req: u64, why: &str) {
        let Some(id) = self.notices.remove(&req) else { return };
        self.child.warn(&format!("{id}: the delivery status notification could not be queued ({why}); trying again"));
        // Only for the notice the message waits for: one of an earlier
        // pass (held and released meanwhile) fails no newer one.
        match self.active.get_mut(&id) {
            Some(m) if m.notice == Some(req) => m.notice = None,
            _ => return,
        }
        self.retry_later(id, NOTICE_RETRY);
    }

    /// bounce found the queue file of notice `req` corrupt as it read it
    /// to quote its content (the content's CRC, which qmgr's read of the
    /// envelope cannot see): no notice goes out, and the message leaves
    /// the active queue for corrupt/, as when a delivery agent finds it
    /// so (see `corrupt_report`). Its actions still pending (the rest of
    /// its statuses, the next slice, its removal) are dropped with it.
    fn notice_corrupt(&mut self, req: u64, reason: &str) {
        let Some(id) = self.notices.remove(&req) else { return };
        if self.active.get(&id).is_none_or(|m| m.notice != Some(req)) {
            return;
        }
        self.sched.drop_message(&id);
        self.set_aside_corrupt(&id, "bounce", "no notice sent", reason);
    }

    /// Ask bounce again for `id`'s notice after `wait`; its actions wait.
    fn retry_later(&mut self, id: QueueId, wait: Duration) {
        let Some(m) = self.active.get_mut(&id) else { return };
        let at = Instant::now() + wait;
        m.retry_at = Some(at);
        self.retries.insert((at, id));
    }

    /// Notices whose retry time has come (entries of messages that left
    /// the active queue or were rescheduled are stale and skipped).
    fn retry_notices(&mut self) {
        let now = Instant::now();
        while let Some(&(at, id)) = self.retries.first() {
            if at > now {
                break;
            }
            self.retries.pop_first();
            match self.active.get_mut(&id) {
                Some(m) if m.retry_at == Some(at) => m.retry_at = None,
                _ => continue,
            }
            self.run_pending(id);
        }
    }

    // ----- control -----

    fn control_request(&mut self, token: Token, m: ControlToQmgr) {
        match m {
            ControlToQmgr::QueueCounts { id } => {
                let mut counts = Vec::with_capacity(QUEUE_DIRS.len());
                let mut errors = Vec::new();
                let fds = [
                    &self.store.incoming,
                    &self.store.active,
                    &self.store.deferred,
                    &self.store.hold,
                    &self.store.corrupt,
                ];
                let held = Holding {
                    in_incoming: self.active.values().filter(|m| m.dir == Dir::Incoming && m.memory.is_none()).count()
                        as u64,
                    in_memory: self.active.values().filter(|m| m.memory.is_some()).count() as u64,
                    offered: self.offers.len() as u64,
                };
                for (name, fd) in QUEUE_DIRS.iter().zip(fds) {
                    match count_entries(fd) {
                        Ok(n) => counts.push((name.to_string(), held.count(name, n))),
                        Err(e) => errors.push(format!("counting {name}: {e}")),
                    }
                }
                for e in errors {
                    self.child.warn(&e);
                }
                self.send_to(token, &QmgrToControl::QueueCounts { id, counts }, &[]);
            }
            ControlToQmgr::List { id } => {
                if let Err(e) = self.listings.start(token, id, self.in_memory()) {
                    self.send_to(token, &QmgrToControl::Done { id, result: Err(e) }, &[]);
                }
            }
            ControlToQmgr::ListMore { id } => self.listings.more(token, id),
            ControlToQmgr::ListCancel { id } => {
                self.listings.cancel(token, id);
            }
            other => self.admin(token, other),
        }
    }

    /// Go on with the listings under way, a slice of the queue per turn
    /// (see [`listing`]), and send control the parts made.
    fn list_some(&mut self) {
        if !self.listings.ready() {
            return;
        }
        let mut budget = listing::turn_budget();
        let memory = memory::Files { offers: &self.offers, active: &self.active };
        let (parts, problems) = self.listings.turn(&self.store, &mut budget, &memory);
        for p in problems {
            self.child.warn(&p);
        }
        for out in parts {
            let msg = match out.piece {
                listing::Piece::List(mut part) => {
                    // A message in the scheduler's hands is active,
                    // wherever its file.
                    for e in &mut part.entries {
                        if e.queue == Dir::Incoming.name()
                            && QueueId::parse(&e.id).is_some_and(|id| self.active.contains_key(&id))
                        {
                            e.queue = Dir::Active.name().to_string();
                        }
                    }
                    QmgrToControl::List { id: out.id, entries: part.entries, last: part.last }
                }
                listing::Piece::Show(p) => {
                    QmgrToControl::Shown { id: out.id, message: p.message, recipients: p.recipients, last: p.last }
                }
            };
            // (A channel that fails is dropped, and its listings with it.)
            self.send_to(out.peer, &msg, &[]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Candidate, Token, clock_went_back, finished_statuses, pick_agent};
    use crate::queue::Time;
    use std::time::Duration;

    #[test]
    fn messages_in_memory_are_counted_where_their_files_would_be() {
        // incoming/ holds three files, one of them an active message's;
        // two active messages and one offered have no file yet.
        let held = super::Holding { in_incoming: 1, in_memory: 2, offered: 1 };
        assert_eq!(held.count("incoming", 3), 3);
        assert_eq!(held.count("active", 0), 3);
        assert_eq!(held.count("deferred", 7), 7);
        // Nothing in memory: as the directories say, active files moved.
        let held = super::Holding { in_incoming: 2, in_memory: 0, offered: 0 };
        assert_eq!((held.count("incoming", 2), held.count("active", 1)), (0, 3));
    }

    #[test]
    fn a_clock_set_back_is_noticed_and_time_passing_is_not() {
        let t = |secs| Time { secs, micros: 0 };
        let then = t(1_800_000_000);
        // An hour later by the monotonic clock: the wall clock read an
        // hour later (fine), a little less (drift), or a day earlier.
        let hour = Duration::from_secs(3600);
        assert_eq!(clock_went_back(then, hour, t(1_800_003_600)), None);
        assert_eq!(clock_went_back(then, hour, t(1_800_003_570)), None);
        assert_eq!(clock_went_back(then, hour, t(1_800_003_600 - 86_400)), Some(86_400));
        // Set forward: nothing to do (everything is due the sooner).
        assert_eq!(clock_went_back(then, hour, t(1_800_090_000)), None);
    }
    use crate::queue::{Recipient, State, Status};

    fn recipient(state: State, reason: &str) -> Recipient {
        Recipient {
            address: String::from("r@example.org"),
            status: Status { state, reason: reason.into(), ..Status::default() },
            ..Recipient::default()
        }
    }

    #[test]
    fn an_unremovable_file_is_recorded_with_nothing_left_to_deliver_or_report() {
        // 0 delivered (status moot), 1 bounced and reported (written
        // before the notice), 2 done in an earlier pass, 3 bounced with
        // its status moot (no notice wanted).
        let file = [
            recipient(State::Pending, ""),
            recipient(State::Bounced, "550 no such user"),
            recipient(State::Done, "250 ok"),
            recipient(State::Pending, ""),
        ];
        let done = Status { state: State::Done, reason: "250 sent".into(), ..Status::default() };
        let bounced = Status { state: State::Bounced, reason: "554 refused".into(), ..Status::default() };
        let mut w = finished_statuses(&file, &[(0, done.clone()), (3, bounced)]);
        w.sort_by_key(|(i, _)| *i);
        let got: Vec<(u32, State, &str)> = w.iter().map(|(i, s)| (*i, s.state, s.reason.as_str())).collect();
        assert_eq!(
            got,
            [(0, State::Done, "250 sent"), (1, State::Done, "550 no such user"), (3, State::Done, "554 refused")]
        );
        assert!(finished_statuses(&[recipient(State::Done, "")], &[]).is_empty());
    }

    fn c(token: usize, jobs: usize, room: bool) -> Candidate {
        Candidate { token: Token(token), jobs, room }
    }

    #[test]
    fn without_a_key_the_least_busy_agent_with_room_is_chosen() {
        let agents = vec![c(7, 3, true), c(5, 1, false), c(9, 2, true)];
        assert_eq!(pick_agent(agents, None), Some(Token(9)));
        assert_eq!(pick_agent(vec![c(1, 0, false)], None), None);
        assert_eq!(pick_agent(Vec::new(), Some("alice@example.org")), None);
    }

    #[test]
    fn a_key_keeps_to_one_agent_however_busy_and_in_whatever_order() {
        let agents = vec![c(3, 0, true), c(4, 0, true), c(8, 0, true)];
        let first = pick_agent(agents.clone(), Some("alice@example.org")).unwrap();
        for jobs in [0, 5, 500] {
            let mut busy: Vec<Candidate> =
                agents.iter().map(|a| if a.token == first { c(a.token.0, jobs, true) } else { *a }).collect();
            busy.reverse();
            assert_eq!(pick_agent(busy, Some("alice@example.org")), Some(first));
        }
        // Keys spread over the agents.
        let chosen: std::collections::HashSet<Token> =
            (0..64).filter_map(|i| pick_agent(agents.clone(), Some(&format!("user{i}@example.org")))).collect();
        assert_eq!(chosen.len(), 3);
    }

    #[test]
    fn a_key_whose_agent_is_backed_up_goes_to_the_least_busy_other() {
        let agents = vec![c(3, 0, true), c(4, 0, true)];
        let first = pick_agent(agents.clone(), Some("bob@example.org")).unwrap();
        let full: Vec<Candidate> = agents
            .iter()
            .map(|a| if a.token == first { c(a.token.0, 0, false) } else { c(a.token.0, 9, true) })
            .collect();
        let other = pick_agent(full, Some("bob@example.org")).unwrap();
        assert_ne!(other, first);
    }
}

//! The local role's root parent: qmgr sends it deliveries to local
//! recipients (the smtp agent's protocol: a request and a read-only queue
//! file); for each recipient it follows the aliases to the users whose
//! mailboxes the mail ends in ([`super::resolve`]), and hands each
//! mailbox delivery to a worker of its own program, started as the
//! recipient (`local deliver ...`, [`super::child`]), confined to the
//! mailbox's directory, which opens the mailbox for each job and writes.
//! Workers are kept between deliveries, one per user and mailbox
//! ([`super::pool`], [`super::spawn`]). The parent never opens a mailbox
//! and never writes as root; it reports one result per recipient. When
//! an mbox or file delivery is killed, by a signal or by us at the time
//! limit, the parent runs `local repair` as the same user
//! ([`super::repair`]) to cut the mailbox back to where the delivery
//! began and remove its dot-lock, and logs what it did.
//!
//! Deliveries are waited for one at a time (each bounded by
//! `local.time_limit`); more processes (`processes.local`) deliver in
//! parallel. The requests qmgr has sent are served as a batch (at most
//! [`MAX_BATCH`]): each Maildir worker writes the batch's deliveries to
//! `tmp/` and leaves them there until the batch is served, then syncs
//! them and moves them into `new/` all at once (on Linux usually with
//! one `syncfs` and one fsync of `new/`, see [`super::maildir::Pending`]),
//! and only then is any of them logged and reported ([`Batch`]). A
//! recipient's delivery to its own Maildir (its last destination) is
//! handed to the worker without waiting for the verdict, which is read
//! when the batch ends: a worker takes the batch's jobs one after
//! another while the parent goes on.
//! A batch keeps at most [`MAX_SLOTS`] workers out of the pool; the
//! deliveries of a worker lost in the middle of a batch are deferred
//! (before its commit they never left `tmp/`; one lost during the commit,
//! or this process after asking for it, may have moved some into `new/`,
//! which then arrive twice).
//!
//! Asked to stop (a reload or a stop), local takes no work of its own
//! accord but serves what its qmgr has sent and still sends (a draining
//! qmgr hands out nothing new: see `qmgr::drain`), each batch settled and
//! reported as always, and exits once that qmgr's channel closes (it
//! exits when every report is in) or at once when it has none. Idle
//! workers are closed at once.
//!
//! Trusts: master and qmgr for the request; the queue file is read by
//! the queue module; the aliases database is read by the bounded reader;
//! a child's report is bounded and only informs the reason text, and,
//! for a killed delivery, the repair run as the same user.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use nix::sys::wait::WaitStatus;
use sandbox::{Grant, Sandboxed};

use super::child::Kind;
use super::deliver::{Envelope, Error as DeliverError};
use super::pool::{Key, Pool};
use super::repair::{Killed, progress};
use super::resolve::{
    DbNote, Dest, ForwardDsn, Resolver, Step, Target, User, done_action, forward_dsn, push_new, steps,
};
use super::spawn::{MAX_CHILD_REPORT, Worker, run, split_report};
use super::spawner::Spawner;
use crate::aliases::{self, Target as AliasTarget};
use crate::child::{Child, drop_channel, install_channel};
use crate::config::delivery::{DeliveryConf, MailboxKind};
use crate::ipc::Channel;
use crate::ipc::msg::{
    CleanupToSmtpd, CommitResult, Delivery, FromMaster, MessageEnvelope, QmgrToSmtp, RecipientReport, RecipientStatus,
    SiteReport, SmtpToQmgr, SmtpdToCleanup, ToWorker,
};
use crate::queue::QueueEnvelope;
use crate::queue::file::read_checked;
use crate::queue::{BodyType, DoneAction, Recipient};
use crate::roles::Role;

const MASTER: Token = Token(0);
const QMGR: Token = Token(1);
const CLEANUP: Token = Token(2);
/// The command spawner's socket, watched between batches for its end.
const SPAWNER: Token = Token(3);
/// Content handed to cleanup per message on the channel.
const CHUNK: usize = 32 * 1024;
/// Frames queued on the cleanup channel before we wait for it to drain.
const MAX_QUEUED_FRAMES: usize = 64;
/// How deep `:include:` files of a `.forward` may nest.
const MAX_FORWARD_DEPTH: usize = 5;
/// The most `:include:` files read for one user's `.forward` in all
/// (each read is a process of its own; the paths need not be the same
/// to name the same file).
const MAX_FORWARD_READS: usize = 32;
/// The most entries looked at for one user's `.forward`, its includes'
/// with it.
const MAX_FORWARD_ENTRIES: usize = crate::aliases::MAX_TARGETS;

/// What one user's `.forward` expansion has used of its bounds.
#[derive(Default)]
struct ForwardReach {
    /// `:include:` files read, by path.
    includes: HashSet<PathBuf>,
    entries: usize,
    /// The bound on entries was said.
    cut: bool,
}
/// A queue file up to this size is read whole, with one `pread`.
const SMALL_FILE: usize = 64 * 1024;
/// How long a Maildir worker hung up on has to take its files back out.
const HANG_UP_WAIT: Duration = Duration::from_secs(5);
/// Room a [`ToWorker::DeliverHeld`] job takes beyond its content and
/// addresses (encoding, arrival, CRC), with a margin.
const HELD_JOB_OVERHEAD: usize = 64;
/// The most requests from qmgr served before their Maildir deliveries
/// are synced and reported.
const MAX_BATCH: usize = 32;
/// The most jobs handed to one worker whose verdicts are still to read.
const MAX_HANDED: usize = 32;
/// The most Maildir workers a batch keeps out of the pool at once (each
/// holds a socket; the role's open-files limit is 256, `local.workers`
/// at most 128): beyond it the oldest is answered, synced and put back.
const MAX_SLOTS: usize = 32;

/// sysexits(3) codes the delivery child exits with.
pub const EX_OK: i32 = 0;
pub const EX_DATAERR: i32 = 65;
pub const EX_NOUSER: i32 = 67;
pub const EX_SOFTWARE: i32 = 70;
pub const EX_TEMPFAIL: i32 = 75;

/// What the parent prepares before the sandbox.
pub struct Prepared {
    resolver: Resolver,
    spawner: Spawner,
}

/// Start the command spawner, which stays outside the sandbox
/// ([`super::spawner`]), and open the aliases database (one that cannot
/// be used is logged).
pub fn prepare(child: &mut Child) -> Prepared {
    let Some(d) = child.config.delivery.clone() else { child.fatal("no delivery settings from master") };
    // Commands run as root only when local.default_user is root (see
    // `run_as` and the resolver's `alias_user`); the spawner checks it.
    let root = matches!(nix::unistd::User::from_name(&d.local.default_user), Ok(Some(u)) if u.uid.is_root());
    let spawner = match Spawner::start(&d.libexec.join(Role::Local.program()), root) {
        Ok(s) => s,
        Err(e) => child.fatal(&format!("cannot start the command spawner: {e}")),
    };
    child.debug(&format!("command spawner pid {}", spawner.pid()));
    let (resolver, note) = Resolver::new(&d, &child.config.hostname);
    if let Some(DbNote::Warning(w)) = note {
        child.warn(&w);
    }
    Prepared { resolver, spawner }
}

struct Local {
    child: Child,
    poll: Poll,
    qmgr: Option<Channel>,
    cleanup: Option<Channel>,
    next_txn: u64,
    conf: DeliveryConf,
    resolver: Resolver,
    program: PathBuf,
    /// Starts the commands, outside the sandbox.
    spawner: Spawner,
    /// Mailbox delivery workers between jobs.
    workers: Pool<Worker>,
    batch: Batch,
    /// The content of the message being served, when it was read whole.
    whole: Option<Vec<u8>>,
    /// Master asked us to stop: we exit once qmgr's channel is gone.
    stopping: bool,
}

/// The requests of the batch in hand, served but not yet reported, and
/// the Maildir workers whose deliveries for them wait for their
/// verdicts and their sync. What a delivery waits for is an *item*: the
/// verdict on a job handed to a worker without waiting, or a worker's
/// sync (its batch committed into `new/`); `results` holds each item's
/// failure once known.
#[derive(Default)]
struct Batch {
    /// Workers holding deliveries written to `tmp/` but not committed,
    /// or jobs whose verdicts are still to read, out of the pool until
    /// they are finished ([`Local::finish_slot`]: at the batch's end, or
    /// earlier beyond [`MAX_SLOTS`]). An entry stays where it is until
    /// the batch ends.
    slots: Vec<Slot>,
    /// Per item, why it failed (None: it did not, or not yet known).
    results: Vec<Option<Outcome>>,
    /// The items the recipient being served depends on.
    touched: Vec<usize>,
    /// The log lines of deliveries that wait for items.
    logs: Vec<HeldLog>,
    served: Vec<Served>,
    /// `.forward` files (paths beneath a home) found missing in this
    /// batch: not looked for again until the next (one made meanwhile is
    /// obeyed from the next batch on).
    no_forward: HashSet<PathBuf>,
}

/// A Maildir worker of the batch.
struct Slot {
    key: Key,
    /// None: lost (the verdicts it had not given with it), or done.
    worker: Option<Worker>,
    /// Answered and synced already (to keep few workers out of the pool).
    done: bool,
    /// A delivery by it waits for its sync.
    delivered: bool,
    /// The items of the jobs handed to it whose verdicts are still to
    /// read, in the order handed.
    handed: Vec<usize>,
    /// The item of its sync.
    sync: usize,
}

impl Batch {
    fn item(&mut self) -> usize {
        self.results.push(None);
        self.results.len() - 1
    }
}

/// A delivery's log line, written once its worker has synced.
struct HeldLog {
    id: String,
    start: Instant,
    to: String,
    orig: Option<String>,
    outcome: Outcome,
    items: Vec<usize>,
}

/// A request served: qmgr's job, one report per recipient, and the
/// items each report depends on.
struct Served {
    job: u64,
    recipients: Vec<RecipientReport>,
    depends: Vec<Vec<usize>>,
    /// The queue file failed validation (why): nothing was delivered, and
    /// qmgr is told so (it moves the file to corrupt/).
    corrupt: Option<String>,
}

/// The reports of a batch, once its workers have answered and synced:
/// `failed[i]` is why item `i` failed. A recipient delivered but
/// depending on a failed item gets that item's outcome (the first
/// failed among them); one that failed anyway keeps its own.
pub(super) fn settled(
    recipients: Vec<RecipientReport>,
    depends: &[Vec<usize>],
    failed: &[Option<Outcome>],
) -> Vec<RecipientReport> {
    recipients
        .into_iter()
        .zip(depends)
        .map(|(r, deps)| match sync_failure(deps, failed) {
            // (A bounce for one member of a list gives way to a deferral
            // of another, delivered meanwhile: the retry repeats the list.)
            Some(o)
                if matches!(r.status, RecipientStatus::Delivered { .. })
                    || (matches!(r.status, RecipientStatus::Bounced)
                        && matches!(o.status, RecipientStatus::Deferred)) =>
            {
                report(r.index, o)
            }
            _ => r,
        })
        .collect()
}

/// The first failure among the items `deps`.
fn sync_failure(deps: &[usize], failed: &[Option<Outcome>]) -> Option<Outcome> {
    deps.iter().find_map(|&i| failed.get(i).cloned().flatten())
}

/// Serve until master says stop.
pub fn serve(_token: Sandboxed, child: Child, prepared: Prepared) -> ! {
    let mut child = child;
    let poll = Poll::new().unwrap_or_else(|e| crate::child::die(Role::Local, &format!("poll: {e}")));
    let Some(conf) = child.config.delivery.clone() else { child.fatal("no delivery settings from master") };
    if let Err(e) = child.register_master(poll.registry(), MASTER) {
        child.fatal(&format!("registering the master channel: {e}"));
    }
    let program = conf.libexec.join(Role::Local.program());
    if let Err(e) = prepared.spawner.limit() {
        child.fatal(&format!("limiting the command spawner's socket: {e}"));
    }
    // A spawner that ends is noticed at once, not at the next command.
    if let Some(raw) = prepared.spawner.raw_fd()
        && let Err(e) = poll.registry().register(&mut mio::unix::SourceFd(&raw), SPAWNER, mio::Interest::READABLE)
    {
        child.fatal(&format!("registering the command spawner's socket: {e}"));
    }
    let workers = Pool::new(conf.local.workers as usize, conf.local.worker_idle_time);
    let mut l = Local {
        child,
        poll,
        qmgr: None,
        cleanup: None,
        next_txn: 1,
        conf: *conf,
        resolver: prepared.resolver,
        program,
        spawner: prepared.spawner,
        workers,
        batch: Batch::default(),
        whole: None,
        stopping: false,
    };
    let mut events = Events::with_capacity(16);
    // Log records go once per turn, and after each request and each
    // batch (a turn may serve many, and a pipe may run for minutes).
    l.child.master.cork();
    loop {
        // Awake when the next idle worker is due to be closed.
        let timeout = l.workers.next_expiry().map(|t| t.saturating_duration_since(Instant::now()));
        if let Err(e) = l.poll.poll(&mut events, timeout)
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            l.child.fatal(&format!("poll: {e}"));
        }
        for w in l.workers.expire(Instant::now()) {
            w.close();
        }
        for ev in events.iter() {
            match ev.token() {
                MASTER => {
                    if l.child.master_event(ev) {
                        l.master_readable();
                    }
                }
                QMGR => l.qmgr_event(),
                CLEANUP => l.cleanup_event(),
                SPAWNER => l.spawner_event(),
                _ => {}
            }
        }
        l.child.end_turn(l.poll.registry());
        if l.stopping && l.qmgr.is_none() {
            l.exit();
        }
    }
}

impl Local {
    fn master_readable(&mut self) {
        loop {
            match self.child.master.recv::<FromMaster>() {
                Ok(None) => return,
                Ok(Some((FromMaster::Peer { role: Role::Qmgr, pid }, fds))) => {
                    let chan = self.child.peer_channel(Role::Qmgr, fds);
                    install_channel(&mut self.child, &self.poll, &mut self.qmgr, chan, QMGR);
                    // A batch's reports go together, when it is settled.
                    if let Some(q) = self.qmgr.as_mut() {
                        q.cork();
                    }
                    self.child.debug(&format!("channel to qmgr pid {pid}"));
                }
                Ok(Some((FromMaster::Peer { role: Role::Cleanup, pid }, fds))) => {
                    let chan = self.child.peer_channel(Role::Cleanup, fds);
                    install_channel(&mut self.child, &self.poll, &mut self.cleanup, chan, CLEANUP);
                    self.child.debug(&format!("channel to cleanup pid {pid}"));
                }
                Ok(Some((FromMaster::Stop, _))) => {
                    // The batch is settled (requests are served and
                    // settled within a turn): what qmgr sent before it
                    // heard of the stop is served as it comes, and we exit
                    // when its channel closes (see the module's text).
                    self.stopping = true;
                    for w in self.workers.drain() {
                        w.close();
                    }
                    if self.qmgr.is_none() {
                        self.exit();
                    }
                }
                Ok(Some((m, _))) => self.child.fatal(&format!("unexpected message from master: {m:?}")),
                Err(crate::ipc::Error::Closed) => std::process::exit(0),
                Err(e) => self.child.fatal(&format!("master channel: {e}")),
            }
        }
    }

    /// Exit once stopping, the workers closed (their deliveries are
    /// settled: see [`Local::settle`]).
    fn exit(&mut self) -> ! {
        for w in self.workers.drain() {
            w.close();
        }
        self.child.exit(0);
    }

    fn qmgr_event(&mut self) {
        if let Some(q) = self.qmgr.as_mut() {
            let _ = q.flush();
        }
        loop {
            let Some(q) = self.qmgr.as_mut() else { return };
            match q.recv::<QmgrToSmtp>() {
                Ok(None) => return self.settle(),
                Ok(Some((QmgrToSmtp::Deliver(d), mut fds))) => {
                    if fds.len() != 1 || d.recipients.is_empty() {
                        self.child.fatal("qmgr sent a delivery without its queue file or recipients");
                    }
                    let fd: OwnedFd = fds.remove(0);
                    if let Err(e) = sandbox::limit_received(&Grant::File { fd: fd.as_raw_fd(), write: false }) {
                        self.child.fatal(&format!("limiting a queue file: {e}"));
                    }
                    if self.batch.served.is_empty() {
                        // A batch starts: with the aliases as they are now.
                        match self.resolver.refresh_aliases() {
                            Some(DbNote::Info(i)) => self.child.info(&i),
                            Some(DbNote::Warning(w)) => self.child.warn(&w),
                            None => {}
                        }
                    }
                    let served = self.deliver(&d, File::from(fd));
                    self.batch.served.push(served);
                    if self.batch.served.len() >= MAX_BATCH {
                        self.settle();
                    }
                    let _ = self.child.master.flush();
                }
                Err(crate::ipc::Error::Closed) => {
                    drop_channel(&self.poll, &mut self.qmgr);
                    return self.settle();
                }
                Err(e) => self.child.fatal(&format!("qmgr channel: {e}")),
            }
        }
    }

    /// The command spawner's socket, between batches: it says nothing
    /// unasked, so this is its end (or a wakeup left over from the last
    /// command, with nothing to read).
    fn spawner_event(&mut self) {
        self.spawner.idle();
        self.spawner_lost();
    }

    /// A lost spawner cannot be replaced by a sandboxed process: once
    /// nothing is left to report, local exits, and master starts it
    /// again, with a new spawner.
    fn spawner_lost(&mut self) {
        let Some(why) = self.spawner.lost().map(str::to_string) else { return };
        for w in self.workers.drain() {
            w.close();
        }
        self.child.fatal(&format!("the command spawner was lost ({why}); starting again"));
    }

    /// Between forwards cleanup may say how its spool is; nothing else is
    /// expected (a verdict is read by [`Local::forward`] as it waits).
    fn cleanup_event(&mut self) {
        loop {
            let Some(c) = self.cleanup.as_mut() else { return };
            let _ = c.flush();
            match c.recv::<CleanupToSmtpd>() {
                Ok(None) => return,
                Ok(Some((CleanupToSmtpd::Space { .. } | CleanupToSmtpd::Ids { .. }, _))) => {}
                Ok(Some((CleanupToSmtpd::Committed { txn, result }, _))) => {
                    self.child.warn(&format!("cleanup's late verdict on forward {txn}: {result:?}"));
                }
                Err(crate::ipc::Error::Closed) => return drop_channel(&self.poll, &mut self.cleanup),
                Err(e) => self.child.fatal(&format!("cleanup channel: {e}")),
            }
        }
    }

    /// The batch's Maildir workers commit its deliveries into `new/`;
    /// then they are logged, and its requests reported to qmgr.
    fn settle(&mut self) {
        if self.qmgr.is_none() {
            self.abandon_slots();
        }
        let all: Vec<usize> = (0..self.batch.slots.len()).collect();
        self.finish_slots(&all);
        self.batch.slots.clear();
        self.resolver.forget_users();
        self.batch.no_forward.clear();
        let failed = std::mem::take(&mut self.batch.results);
        for h in std::mem::take(&mut self.batch.logs) {
            let o = sync_failure(&h.items, &failed).unwrap_or(h.outcome);
            self.log(&h.id, h.start, &h.to, h.orig.as_deref(), &o);
        }
        if self.qmgr.is_none() && !self.batch.served.is_empty() {
            let n = self.batch.served.len();
            self.child.warn(&format!("qmgr is gone: {n} deliveries not reported (qmgr tries them again)"));
            self.batch.served.clear();
        }
        for s in std::mem::take(&mut self.batch.served) {
            let done = match s.corrupt {
                Some(reason) => SmtpToQmgr::Corrupt { job: s.job, reason },
                None => {
                    let recipients = settled(s.recipients, &s.depends, &failed);
                    SmtpToQmgr::Done { job: s.job, site: SiteReport::Reached, recipients }
                }
            };
            if let Some(q) = self.qmgr.as_mut()
                && let Err(e) = q.send(&done, &[])
            {
                self.child.warn(&format!("reporting to qmgr: {e}"));
            }
        }
        // What does not go now goes when the channel is writable again
        // (`qmgr_event` flushes first).
        if let Some(q) = self.qmgr.as_mut()
            && let Err(e) = q.flush()
        {
            self.child.warn(&format!("reporting to qmgr: {e}"));
        }
        let _ = self.child.master.flush();
        self.spawner_lost();
    }

    /// Slot `i` finished alone (see [`Local::finish_slots`]).
    fn finish_slot(&mut self, i: usize) {
        self.finish_slots(&[i]);
    }

    /// The slots `which` finished: each worker asked to commit its
    /// deliveries into `new/` (all of them first, so that the commits of
    /// several Maildirs run side by side), then, slot by slot, the
    /// verdicts on the jobs handed to it read, its commit's recorded, and
    /// the worker put back in the pool. The deliveries of a lost worker
    /// are deferred (those of one lost before it was asked never left
    /// `tmp/`).
    fn finish_slots(&mut self, which: &[usize]) {
        let limit = self.conf.local.time_limit;
        // Ok(true): asked; Ok(false): its socket was closed first (what
        // it said before is still read).
        let mut asked: Vec<(usize, Result<bool, Outcome>)> = Vec::new();
        for &i in which {
            let slot = &mut self.batch.slots[i];
            if slot.done {
                continue;
            }
            slot.done = true;
            let request = match slot.worker.as_mut() {
                Some(w) => w.submit(&ToWorker::Sync, None).map_err(|why| Outcome::defer("4.3.0", &why)),
                None => Ok(false),
            };
            asked.push((i, request));
        }
        for (i, request) in asked {
            self.collect(i);
            let slot = &mut self.batch.slots[i];
            let (key, sync, delivered, worker) = (slot.key.clone(), slot.sync, slot.delivered, slot.worker.take());
            let o = match (request, worker) {
                (Ok(true), Some(w)) => {
                    let (back, ran) = w.answer(limit);
                    if let Some(w) = back {
                        for old in self.workers.put(key, w, Instant::now()) {
                            old.close();
                        }
                    }
                    ran.outcome(limit)
                }
                (request, worker) => {
                    if let Some(w) = worker {
                        w.close();
                    }
                    match request {
                        Err(o) => o,
                        Ok(_) if !delivered => continue,
                        Ok(true) => {
                            Outcome::defer("4.3.0", "the delivery worker was lost before its deliveries were in new/")
                        }
                        Ok(false) => Outcome::defer(
                            "4.3.0",
                            "the delivery worker ended before it moved its deliveries into new/",
                        ),
                    }
                }
            };
            if !matches!(o.status, RecipientStatus::Delivered { .. }) {
                self.batch.results[sync] = Some(o);
            }
        }
    }

    /// qmgr is gone: nothing can be reported, and it will hand these
    /// deliveries out again; committed into `new/` now, they would arrive
    /// twice. Each Maildir worker of the batch is hung up on instead, and
    /// takes what it wrote back out of `tmp/`.
    fn abandon_slots(&mut self) {
        let wait = self.conf.local.time_limit.min(HANG_UP_WAIT);
        for slot in &mut self.batch.slots {
            if slot.done {
                continue;
            }
            slot.done = true;
            slot.handed.clear();
            if let Some(w) = slot.worker.take() {
                w.hang_up(wait);
            }
            if slot.delivered {
                let why = "qmgr went away before it was told: taken back out of tmp/, to be delivered again";
                self.batch.results[slot.sync] = Some(Outcome::defer("4.3.0", why));
            }
        }
    }

    /// Read the verdicts on the jobs handed to the worker of slot `i`
    /// (a lost worker's are lost with it). One that has ended after them
    /// stays in its slot until a job or the sync finds it gone.
    fn collect(&mut self, i: usize) {
        let limit = self.conf.local.time_limit;
        for item in std::mem::take(&mut self.batch.slots[i].handed) {
            let Some(w) = self.batch.slots[i].worker.take() else {
                let why = "the delivery worker was lost before it answered";
                self.batch.results[item] = Some(Outcome::defer("4.3.0", why));
                continue;
            };
            let (back, ran) = w.answer(limit);
            let o = ran.outcome(limit);
            if !matches!(o.status, RecipientStatus::Delivered { .. }) {
                self.batch.results[item] = Some(o);
            }
            self.batch.slots[i].worker = back;
        }
    }

    /// Deliver every recipient of a request; one report each.
    fn deliver(&mut self, d: &Delivery, file: File) -> Served {
        let served =
            |recipients: Vec<RecipientReport>, depends| Served { job: d.job, recipients, depends, corrupt: None };
        let start = Instant::now();
        let all = |why: String| -> Served {
            let recipients: Vec<_> = d.recipients.iter().map(|&i| report(i, Outcome::defer("4.3.0", &why))).collect();
            let depends = vec![Vec::new(); recipients.len()];
            served(recipients, depends)
        };
        let corrupt =
            |why: String| Served { job: d.job, recipients: Vec::new(), depends: Vec::new(), corrupt: Some(why) };
        let (qe, small) = match read_checked(&file, SMALL_FILE) {
            Ok(r) => r,
            Err(crate::queue::Error::Corrupt(c)) => {
                self.child.warn(&format!("{}: the queue file is corrupt: {c}; nothing delivered", d.queue_id));
                return corrupt(c.to_string());
            }
            Err(e) => return all(format!("cannot read the queue file: {e}")),
        };
        if qe.id.as_str() != d.queue_id {
            let why = format!("the queue file holds message {}, not {}", qe.id, d.queue_id);
            self.child.warn(&format!("{}: {why}; nothing delivered", d.queue_id));
            return corrupt(why);
        }
        // Read once for every destination's loop check.
        let head = match small {
            Some(mut bytes) => {
                let range = qe.content_range();
                let start = usize::try_from(range.offset).unwrap_or(usize::MAX).min(bytes.len());
                bytes.drain(..start);
                bytes.truncate(super::deliver::HEADER_PEEK);
                bytes
            }
            None => match super::deliver::header_block(&file, qe.content_range()) {
                Ok(h) => h,
                Err(e) => return all(format!("reading the message: {e}")),
            },
        };
        // The whole content, when it was read whole: handed to Maildir
        // workers in their jobs (see `store`).
        self.whole = (head.len() as u64 == qe.content_range().len && head.len() <= crate::ipc::MAX_PAYLOAD)
            .then(|| head.clone());
        let mut out = Vec::with_capacity(d.recipients.len());
        let mut depends = Vec::with_capacity(d.recipients.len());
        for &index in &d.recipients {
            self.batch.touched.clear();
            let Some(r) = qe.recipients.get(index as usize) else {
                out.push(report(index, Outcome::defer("4.3.0", &format!("the queue file has no recipient #{index}"))));
                depends.push(Vec::new());
                continue;
            };
            let outcome = self.deliver_one(&d.queue_id, start, &qe, &file, &head, r);
            out.push(report(index, outcome));
            depends.push(std::mem::take(&mut self.batch.touched));
        }
        self.whole = None;
        served(out, depends)
    }

    /// One recipient: resolve it (the aliases, then the `.forward` files
    /// of the users it ends in), then deliver to each destination,
    /// logging each. Several destinations (an alias list) count as
    /// delivered when all are; one that fails fails alone, the others
    /// get the message, and the worst failure decides, its reason naming
    /// the destination (a deferral outranks a bounce; as in Postfix, the
    /// retry repeats the list, so a destination may get the message
    /// twice). A destination whose address the message already carries
    /// in a `Delivered-To:` line (`head`, its header block) has been
    /// reached before: a loop, which bounces. Forwarded copies carry the
    /// DSN request on as [`super::resolve::forward_dsn`] says.
    fn deliver_one(
        &mut self,
        id: &str,
        start: Instant,
        qe: &QueueEnvelope,
        file: &File,
        head: &[u8],
        rcpt: &Recipient,
    ) -> Outcome {
        let address = rcpt.address.as_str();
        let dests = match self.resolver.resolve(address).and_then(|d| self.expand_forwards(d)) {
            Ok(t) => t,
            Err(o) => {
                self.log(id, start, address, None, &o);
                return o;
            }
        };
        let mut last = Outcome::defer("4.3.0", "no destination");
        // The worst failure of the list, and for whom.
        let mut failed: Option<(Outcome, String)> = None;
        let action = done_action(&dests);
        let steps = steps(dests, &qe.envelope.sender);
        let n = steps.len();
        for (k, step) in steps.into_iter().enumerate() {
            let to = match &step {
                Step::Here(d) => &d.to,
                Step::Forward { to, .. } => to,
            };
            let touched = self.batch.touched.len();
            let o = if super::deliver::delivered_to_loop(head, to) {
                Outcome::bounce(DeliverError::Loop.dsn(), &format!("mail forwarding loop for {to}"))
            } else {
                match &step {
                    Step::Here(Dest { target: Target::Mailbox { user, .. }, to }) => {
                        // Nothing after it waits for its verdict.
                        self.mailbox(qe, file, user, to, k + 1 == n)
                    }
                    Step::Here(Dest { target: Target::Command { command, user }, to }) => {
                        self.command(qe, file, user, command, to, address)
                    }
                    Step::Here(Dest { target: Target::File { path, user }, to }) => self.file(qe, file, user, path, to),
                    Step::Here(Dest { target: Target::Failed(o), .. }) => o.clone(),
                    Step::Here(Dest { target: Target::Forward { .. }, .. }) => continue,
                    Step::Forward { sender, to, addresses, owned } => {
                        let dsn = forward_dsn(action, *owned, rcpt, &qe.envelope);
                        self.forward(qe, file, sender, addresses, to, &dsn)
                    }
                }
            };
            let orig = (to != address).then_some(address);
            let delivered = matches!(o.status, RecipientStatus::Delivered { .. });
            if delivered && self.batch.touched.len() > touched {
                // Logged once its worker has synced (or failed to).
                self.batch.logs.push(HeldLog {
                    id: id.to_string(),
                    start,
                    to: to.clone(),
                    orig: orig.map(str::to_string),
                    outcome: o.clone(),
                    items: self.batch.touched[touched..].to_vec(),
                });
            } else {
                self.log(id, start, to, orig, &o);
            }
            if !delivered {
                // The other destinations get the message all the same; a
                // deferral outranks a bounce (the retry repeats the list).
                let worse = match &failed {
                    None => true,
                    Some((f, _)) => {
                        matches!(o.status, RecipientStatus::Deferred) && !matches!(f.status, RecipientStatus::Deferred)
                    }
                };
                if worse {
                    failed = Some((o, to.clone()));
                }
                continue;
            }
            last = o;
        }
        match failed {
            Some((o, _)) if n == 1 => o,
            Some((mut o, to)) => {
                o.reason = format!("{to}: {}", o.reason);
                o
            }
            None => {
                if let RecipientStatus::Delivered { action: a, dsn_passed } = &mut last.status {
                    *a = action;
                    // One address, which took the request over (see
                    // `done_action`): its delivery reports success.
                    *dsn_passed = action == DoneAction::Relayed;
                }
                last
            }
        }
    }

    /// Each mailbox whose user has a `.forward` replaced by what it says
    /// (read as that user, [`super::forward`]); a destination reached
    /// twice is delivered once.
    fn expand_forwards(&mut self, dests: Vec<Dest>) -> Result<Vec<Dest>, Outcome> {
        let mut out: Vec<Dest> = Vec::with_capacity(dests.len());
        for d in dests {
            let Target::Mailbox { user, via_alias, forward: true } = &d.target else {
                push_new(&mut out, d);
                continue;
            };
            let (user, via_alias) = (user.clone(), *via_alias);
            let own =
                Dest { target: Target::Mailbox { user: user.clone(), via_alias, forward: false }, to: d.to.clone() };
            let Some(entries) = self.read_forward(&user, Path::new(".forward"))? else {
                push_new(&mut out, own);
                continue;
            };
            let mut reach = ForwardReach::default();
            // (A destination listed already counts: it gets the message.)
            if self.forward_entries(&user, via_alias, entries, &mut out, &mut reach, 0)? == 0 {
                push_new(&mut out, own);
            }
        }
        Ok(out)
    }

    /// The destinations of one `.forward` (or `:include:` file it names)
    /// of `user`, added to `out`; how many it names.
    fn forward_entries(
        &mut self,
        user: &User,
        via_alias: bool,
        entries: Vec<AliasTarget>,
        out: &mut Vec<Dest>,
        reach: &mut ForwardReach,
        depth: usize,
    ) -> Result<usize, Outcome> {
        let host = self.resolver.hostname().to_string();
        let to = format!("{}@{host}", user.name);
        let mut named = 0;
        for entry in entries {
            reach.entries += 1;
            if reach.entries > MAX_FORWARD_ENTRIES {
                if !std::mem::replace(&mut reach.cut, true) {
                    self.child.warn(&format!(
                        "{}'s .forward and its includes name more than {MAX_FORWARD_ENTRIES} destinations; the rest \
                         are skipped",
                        user.name
                    ));
                }
                break;
            }
            let target = match entry {
                // `\user` and `user`: the user's own mailbox.
                AliasTarget::Mailbox(n) | AliasTarget::Local(n) if n == user.name => {
                    Target::Mailbox { user: user.clone(), via_alias, forward: false }
                }
                // Another user: a new message to that user's address,
                // with `\` or without (a user's `.forward` does not
                // reach past another user's aliases and `.forward`).
                AliasTarget::Mailbox(n) | AliasTarget::Local(n) => {
                    Target::Forward { address: format!("{n}@{host}"), sender: None }
                }
                // The user's own address: the mailbox (forwarded, it
                // would come back as a loop).
                AliasTarget::Address(a) if self.resolver.is_own(&a, &user.name) => {
                    Target::Mailbox { user: user.clone(), via_alias, forward: false }
                }
                AliasTarget::Address(a) => Target::Forward { address: a, sender: None },
                AliasTarget::Command(c) => Target::Command { command: c, user: self.run_as(user)? },
                AliasTarget::File(f) => Target::File { path: f, user: self.run_as(user)? },
                AliasTarget::Include(p) => {
                    let skip = if reach.includes.contains(&p) {
                        Some(String::from("included again"))
                    } else if depth >= MAX_FORWARD_DEPTH {
                        Some(format!("nested more than {MAX_FORWARD_DEPTH} deep"))
                    } else if reach.includes.len() >= MAX_FORWARD_READS {
                        Some(format!("more than {MAX_FORWARD_READS} includes"))
                    } else {
                        None
                    };
                    if let Some(why) = skip {
                        self.child.warn(&format!("{}'s :include:{}: {why}; skipped", user.name, p.display()));
                        continue;
                    }
                    reach.includes.insert(p.clone());
                    if let Some(more) = self.read_forward(user, &p)? {
                        named += self.forward_entries(user, via_alias, more, out, reach, depth + 1)?;
                    }
                    continue;
                }
            };
            named += 1;
            push_new(out, Dest { target, to: to.clone() });
        }
        Ok(named)
    }

    /// Commands and files of root's `.forward` run as `local.default_user`.
    fn run_as(&self, user: &User) -> Result<User, Outcome> {
        if user.uid == 0 { self.resolver.default_user() } else { Ok(user.clone()) }
    }

    /// A `.forward` (or `:include:` file) of `user`, read as that user.
    /// `None`: there is none, or it is not safe to obey (logged); the
    /// mail then goes to the user's mailbox.
    fn read_forward(&mut self, user: &User, file: &Path) -> Result<Option<Vec<AliasTarget>>, Outcome> {
        let shown = if file.is_absolute() { file.to_path_buf() } else { user.home.join(file) };
        // Most users have none: no process is started to find that out.
        if !file.is_absolute() {
            if self.batch.no_forward.contains(&shown) {
                return Ok(None);
            }
            if let Err(e) = std::fs::symlink_metadata(&shown)
                && matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory)
            {
                self.batch.no_forward.insert(shown);
                return Ok(None);
            }
        }
        let (Some(home), Some(file_str)) = (user.home.to_str(), file.to_str()) else {
            self.child.warn(&format!("{}: not a UTF-8 path; ignored", shown.display()));
            return Ok(None);
        };
        let argv = ["local", "forward", home, file_str, self.confinement()];
        let creds = sandbox::Credentials { uid: user.uid, gid: user.gid, groups: vec![user.gid] };
        let limit = self.conf.local.lock_timeout.max(Duration::from_secs(10));
        let ran = run(&self.program, &argv, &creds, None, limit, super::forward::MAX_FORWARD_SIZE as usize + 1)?;
        let why = || String::from_utf8_lossy(&ran.text).trim().to_string();
        match ran.status {
            _ if ran.timed_out => {
                Err(Outcome::defer("4.3.0", &format!("{}: reading it took too long", shown.display())))
            }
            Ok(WaitStatus::Exited(_, EX_OK)) => match aliases::parse_include(&ran.text, &shown) {
                Ok(entries) => Ok(Some(entries)),
                Err(e) => {
                    self.child.warn(&format!("{e}; ignored, mail goes to {}'s mailbox", user.name));
                    Ok(None)
                }
            },
            Ok(WaitStatus::Exited(_, super::forward::EX_NOINPUT)) if !file.is_absolute() => Ok(None),
            Ok(WaitStatus::Exited(_, super::forward::EX_NOINPUT | super::forward::EX_NOPERM)) => {
                self.child.warn(&format!("{}; ignored", why()));
                Ok(None)
            }
            _ => Err(Outcome::defer("4.3.0", &format!("{}: {}", shown.display(), why()))),
        }
    }

    fn confinement(&self) -> &'static str {
        if self.child.config.allow_unconfined { "unconfined" } else { "confined" }
    }

    /// The delivery's log line, as Postfix's local writes it.
    fn log(&mut self, id: &str, start: Instant, to: &str, orig_to: Option<&str>, o: &Outcome) {
        let status = match o.status {
            RecipientStatus::Delivered { .. } => "sent",
            RecipientStatus::Deferred => "deferred",
            RecipientStatus::Bounced => "bounced",
        };
        let orig = orig_to.map(|a| format!(", orig_to=<{}>", crate::log::sanitize(a, 1024))).unwrap_or_default();
        self.child.info(&format!(
            "{id}: to=<{}>{orig}, relay=local, delay={:.2}, dsn={}, status={status} ({})",
            crate::log::sanitize(to, 1024),
            start.elapsed().as_secs_f64(),
            o.dsn,
            crate::log::sanitize(&o.reason, 2048),
        ));
    }

    /// Run a mailbox delivery child as `user` and wait for it (a
    /// Maildir delivery that is `last` is only handed to its worker).
    fn mailbox(&mut self, qe: &QueueEnvelope, file: &File, user: &User, recipient: &str, last: bool) -> Outcome {
        let lc = &self.conf.local;
        let (kind, dir, name, gid) = match lc.mailbox {
            MailboxKind::Mbox => {
                let gid = super::resolve::spool_group(&lc.mail_spool).unwrap_or(user.gid);
                (Kind::Mbox, lc.mail_spool.clone(), user.name.clone(), gid)
            }
            MailboxKind::Maildir => (Kind::Maildir, user.home.clone(), lc.maildir.clone(), user.gid),
        };
        self.store(qe, file, kind, &dir, &name, user.uid, gid, recipient, last)
    }

    /// A file or Maildir named in an alias or `.forward`, written as
    /// `user`; `/dev/null` takes the mail without a process.
    fn file(&mut self, qe: &QueueEnvelope, file: &File, user: &User, path: &Path, to: &str) -> Outcome {
        if path == Path::new("/dev/null") {
            return Outcome::sent("discarded (/dev/null)");
        }
        let text = path.to_string_lossy();
        let maildir = text.ends_with('/');
        let trimmed = Path::new(text.trim_end_matches('/'));
        let (Some(dir), Some(name)) = (trimmed.parent(), trimmed.file_name().and_then(|n| n.to_str())) else {
            return Outcome::bounce("5.3.0", &format!("{}: not a file to deliver to", path.display()));
        };
        let (kind, name) = if maildir { (Kind::Maildir, format!("{name}/")) } else { (Kind::File, name.to_string()) };
        let o = self.store(qe, file, kind, dir, &name, user.uid, user.gid, to, false);
        match o.status {
            RecipientStatus::Delivered { .. } => Outcome::sent(&format!("delivered to file: {}", path.display())),
            _ => Outcome { reason: format!("{}: {}", path.display(), o.reason), ..o },
        }
    }

    /// Deliver to NAME in DIR as uid and gid, by the worker for it
    /// (`local deliver KIND DIR NAME ...`, started when there is none),
    /// and wait; if an mbox or file delivery was killed, repair the
    /// mailbox ([`Local::repair`]). A Maildir delivery joins the batch
    /// ([`Local::maildir_job`]; handed over without waiting if `last`).
    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        qe: &QueueEnvelope,
        file: &File,
        kind: Kind,
        dir: &Path,
        name: &str,
        uid: u32,
        gid: u32,
        recipient: &str,
        last: bool,
    ) -> Outcome {
        let lc = &self.conf.local;
        let limit = lc.time_limit;
        let Some(dir_str) = dir.to_str() else {
            return Outcome::defer("4.3.0", &format!("{}: not a UTF-8 path", dir.display()));
        };
        let key = Key {
            uid,
            gid,
            groups: vec![gid],
            kind,
            dir: dir_str.to_string(),
            name: name.to_string(),
            hostname: self.child.config.hostname.clone(),
            lock_ms: u64::try_from(lc.lock_timeout.as_millis()).unwrap_or(u64::MAX),
            confinement: self.confinement(),
        };
        let range = qe.content_range();
        // A small message read whole travels in the job itself when it
        // fits in one frame: the worker then reads no queue file.
        let held = self.whole.as_ref().filter(|c| {
            kind == Kind::Maildir
                && c.len() + qe.envelope.sender.len() + recipient.len() + HELD_JOB_OVERHEAD <= crate::ipc::MAX_PAYLOAD
        });
        let job = match held {
            Some(content) => ToWorker::DeliverHeld {
                sender: qe.envelope.sender.clone(),
                recipient: recipient.to_string(),
                arrival: qe.envelope.arrival.secs,
                crc: range.crc,
                content: content.clone(),
            },
            None => ToWorker::Deliver {
                sender: qe.envelope.sender.clone(),
                recipient: recipient.to_string(),
                arrival: qe.envelope.arrival.secs,
                content: (range.offset, range.len, range.crc),
                batched: kind == Kind::Maildir,
            },
        };
        if kind == Kind::Maildir {
            let file = if held.is_some() { None } else { Some(file) };
            return self.maildir_job(key, &job, file, last);
        }
        let creds = key.credentials();
        let worker = match self.worker(&key) {
            Ok(w) => w,
            Err(o) => return o,
        };
        let (back, ran) = worker.job(&job, Some(file), limit);
        if let Some(w) = back {
            for old in self.workers.put(key, w, Instant::now()) {
                old.close();
            }
        }
        let o = ran.outcome(limit);
        if !ran.killed() {
            return o;
        }
        let env = Envelope { sender: &qe.envelope.sender, recipient, arrival: qe.envelope.arrival.secs };
        let killed = Killed {
            kind: kind.as_str(),
            dir: dir_str,
            name,
            env,
            pid: ran.pid.as_raw(),
            progress: progress(&ran.text),
        };
        let repaired = self.repair(qe.id.as_str(), &killed, &creds, file);
        killed.outcome(o, repaired)
    }

    /// The idle worker for `key`, or a new one.
    fn worker(&mut self, key: &Key) -> Result<Worker, Outcome> {
        let idle = self.workers.take(key).and_then(|mut w| {
            if w.usable() {
                return Some(w);
            }
            // Ended or gone astray while idle: replaced.
            self.child.debug(&format!("delivery worker pid {} for {}/{} is gone", w.pid(), key.dir, key.name));
            w.close();
            None
        });
        match idle {
            Some(w) => Ok(w),
            None => Worker::start(&self.program, &key.argv(), Some(&key.credentials()))
                .map_err(|e| Outcome::defer("4.3.0", &format!("cannot start the delivery: {e}"))),
        }
    }

    /// The batch's slot of the worker for `key` (one that is not lost),
    /// made with the idle worker or a new one when there is none.
    fn slot(&mut self, key: &Key) -> Result<usize, Outcome> {
        if let Some(i) = self.batch.slots.iter().position(|s| s.key == *key && s.worker.is_some()) {
            return Ok(i);
        }
        let live = self.batch.slots.iter().filter(|s| !s.done).count();
        if live >= MAX_SLOTS
            && let Some(oldest) = self.batch.slots.iter().position(|s| !s.done)
        {
            self.finish_slot(oldest);
        }
        let w = self.worker(key)?;
        let sync = self.batch.item();
        let slot = Slot { key: key.clone(), worker: Some(w), done: false, delivered: false, handed: Vec::new(), sync };
        self.batch.slots.push(slot);
        Ok(self.batch.slots.len() - 1)
    }

    /// A Maildir job by the batch's worker for `key`. With `hand`, it is
    /// only handed over: it counts as delivered if its verdict, read at
    /// the end of the batch, says so; otherwise its verdict is waited
    /// for (after those of the jobs handed before). Either way the
    /// delivery waits for the worker's sync (its move into `new/`).
    fn maildir_job(&mut self, key: Key, job: &ToWorker, file: Option<&File>, hand: bool) -> Outcome {
        let limit = self.conf.local.time_limit;
        let mut i = match self.slot(&key) {
            Ok(i) => i,
            Err(o) => return o,
        };
        if !hand || self.batch.slots[i].handed.len() >= MAX_HANDED {
            self.collect(i);
            if self.batch.slots[i].worker.is_none() {
                i = match self.slot(&key) {
                    Ok(i) => i,
                    Err(o) => return o,
                };
            }
        }
        let sync = self.batch.slots[i].sync;
        let Some(mut w) = self.batch.slots[i].worker.take() else {
            return Outcome::defer("4.3.0", "the delivery worker was lost");
        };
        if hand {
            return match w.submit(job, file) {
                Ok(true) => {
                    let item = self.batch.item();
                    let slot = &mut self.batch.slots[i];
                    slot.handed.push(item);
                    slot.worker = Some(w);
                    slot.delivered = true;
                    self.batch.touched.extend([item, sync]);
                    Outcome::sent("delivered to maildir")
                }
                // The job did not reach it: the verdicts it gave before
                // are read, then, if it closed its socket, anything it
                // said unasked (why it could not start); it is closed.
                failed => {
                    self.batch.slots[i].worker = Some(w);
                    self.collect(i);
                    let ended = Outcome::defer("4.3.0", "the delivery worker ended");
                    let w = self.batch.slots[i].worker.take();
                    match (failed, w) {
                        (Err(why), w) => {
                            w.into_iter().for_each(Worker::close);
                            Outcome::defer("4.3.0", &why)
                        }
                        (_, None) => ended,
                        (_, Some(w)) => {
                            let (back, ran) = w.answer(limit);
                            back.into_iter().for_each(Worker::close);
                            let o = ran.outcome(limit);
                            if matches!(o.status, RecipientStatus::Delivered { .. }) { ended } else { o }
                        }
                    }
                }
            };
        }
        let (back, ran) = w.job(job, file, limit);
        self.batch.slots[i].worker = back;
        let o = ran.outcome(limit);
        if matches!(o.status, RecipientStatus::Delivered { .. }) {
            self.batch.slots[i].delivered = true;
            self.batch.touched.push(sync);
        }
        o
    }

    /// Run `local repair` for a killed delivery as its user and group,
    /// and wait (the lock timeout and a margin); log what it did. None:
    /// there was nothing to repair.
    fn repair(
        &mut self,
        id: &str,
        killed: &Killed<'_>,
        creds: &sandbox::Credentials,
        file: &File,
    ) -> Option<Result<String, String>> {
        let lock_ms = self.conf.local.lock_timeout.as_millis().to_string();
        let argv = killed.argv(&lock_ms, self.confinement())?;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let limit = self.conf.local.lock_timeout + Duration::from_secs(10);
        let queue = killed.needs_content().then_some(file);
        let result = match run(&self.program, &argv, creds, queue, limit, MAX_CHILD_REPORT) {
            Ok(r) if r.timed_out => Err(format!("no end within {}s", limit.as_secs())),
            Ok(r) if matches!(r.status, Ok(WaitStatus::Exited(_, EX_OK))) => {
                Ok(split_report(&String::from_utf8_lossy(&r.text)).1)
            }
            Ok(r) => Err(r.outcome(limit).reason),
            Err(o) => Err(o.reason),
        };
        let at = crate::log::sanitize(&format!("{}/{}", killed.dir, killed.name), 1024);
        match &result {
            Ok(done) => self
                .child
                .info(&format!("{id}: repair of {at} after the killed delivery: {}", crate::log::sanitize(done, 2048))),
            Err(why) => self.child.warn(&format!(
                "{id}: repair of {at} after the killed delivery failed: {}",
                crate::log::sanitize(why, 2048)
            )),
        }
        Some(result)
    }

    /// A command named in an alias or `.forward`, run as `user` by
    /// `local pipe` ([`super::pipe`]), which the command spawner starts
    /// ([`super::spawner`]: outside local's sandbox).
    fn command(
        &mut self,
        qe: &QueueEnvelope,
        file: &File,
        user: &User,
        command: &str,
        to: &str,
        original: &str,
    ) -> Outcome {
        let limit = self.conf.local.time_limit;
        let arrival = qe.envelope.arrival.secs.to_string();
        let secs = limit.as_secs().max(1).to_string();
        let Some(home) = user.home.to_str() else {
            return Outcome::defer("4.3.0", &format!("{}: not a UTF-8 path", user.home.display()));
        };
        let delimiter = self.resolver.delimiter().to_string();
        let args = [
            command,
            qe.envelope.sender.as_str(),
            to,
            original,
            delimiter.as_str(),
            arrival.as_str(),
            user.name.as_str(),
            home,
            secs.as_str(),
        ];
        let groups = std::ffi::CString::new(user.name.as_str())
            .ok()
            .and_then(|n| nix::unistd::getgrouplist(&n, nix::unistd::Gid::from_raw(user.gid)).ok())
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|| vec![user.gid]);
        let creds = sandbox::Credentials { uid: user.uid, gid: user.gid, groups };
        // The command's own limit is enforced by `local pipe`; this one
        // stops a `local pipe` that does not.
        let o = match self.spawner.run(&args, &creds, file, limit + Duration::from_secs(10), MAX_CHILD_REPORT) {
            Ok(ran) => ran.outcome(limit),
            Err(o) => o,
        };
        let shown = crate::log::sanitize(command, 256);
        match o.status {
            RecipientStatus::Delivered { .. } => Outcome::sent(&format!("delivered to command: {shown}")),
            _ => Outcome { reason: format!("command \"{shown}\": {}", o.reason), ..o },
        }
    }

    /// Forward the message to `addresses` as a new message from `sender`
    /// through cleanup, with `Delivered-To: to` on top and the DSN
    /// parameters `dsn`; delivered only once cleanup has committed it.
    fn forward(
        &mut self,
        qe: &QueueEnvelope,
        file: &File,
        sender: &str,
        addresses: &[String],
        to: &str,
        dsn: &ForwardDsn,
    ) -> Outcome {
        if to.chars().any(|c| c.is_control()) {
            return Outcome::bounce("5.3.0", "the forwarding address cannot be written in a header");
        }
        let shown = addresses.iter().map(|a| format!("<{a}>")).collect::<Vec<_>>().join(", ");
        let deadline = Instant::now() + self.conf.local.time_limit;
        let txn = self.next_txn;
        self.next_txn += 1;
        let eight_bit = !matches!(qe.envelope.body, BodyType::SevenBit);
        let mut envelope = MessageEnvelope::internal(
            sender.to_string(),
            addresses.to_vec(),
            eight_bit,
            qe.envelope.smtputf8,
            &self.child.config.hostname,
        );
        envelope.ret = dsn.ret.map(Into::into);
        envelope.envid = dsn.envid.clone();
        for r in &mut envelope.recipients {
            r.notify = dsn.notify.map(Into::into);
            r.orcpt = dsn.orcpt.clone();
        }
        let result = self.submit(txn, envelope, qe, file, to, deadline);
        match result {
            Ok(CommitResult::Queued(id)) => Outcome::sent(&format!("forwarded as {id} to {shown}")),
            Ok(CommitResult::TempFail(why)) => Outcome::defer("4.3.0", &format!("forwarding to {shown}: {why}")),
            Ok(CommitResult::NoSpace) => Outcome::defer("4.3.1", &format!("forwarding to {shown}: the queue is full")),
            Ok(CommitResult::Refused { code, enhanced, text }) => {
                let why = format!("forwarding to {shown} refused: {code} {enhanced} {text}");
                if code >= 500 { Outcome::bounce(&enhanced, &why) } else { Outcome::defer(&enhanced, &why) }
            }
            Err(why) => Outcome::defer("4.3.0", &format!("forwarding to {shown}: {why}")),
        }
    }

    /// Hand one message to cleanup and wait for its verdict.
    fn submit(
        &mut self,
        txn: u64,
        envelope: MessageEnvelope,
        qe: &QueueEnvelope,
        file: &File,
        to: &str,
        deadline: Instant,
    ) -> Result<CommitResult, String> {
        let range = qe.content_range();
        let mut head = Some(format!("Delivered-To: {to}\r\n").into_bytes());
        self.send_cleanup(&SmtpdToCleanup::Begin { txn, id: None, envelope: Box::new(envelope) }, deadline)?;
        let mut at = 0u64;
        loop {
            let mut data = head.take().unwrap_or_default();
            let n = usize::try_from((range.len - at).min(CHUNK as u64)).unwrap_or(CHUNK);
            if n > 0 {
                let start = data.len();
                data.resize(start + n, 0);
                if let Err(e) = file.read_exact_at(&mut data[start..], range.offset + at) {
                    let _ = self.send_cleanup(&SmtpdToCleanup::Abort { txn }, deadline);
                    return Err(format!("reading the message: {e}"));
                }
                at += n as u64;
            }
            if data.is_empty() {
                break;
            }
            self.send_cleanup(&SmtpdToCleanup::Content { txn, data }, deadline)?;
        }
        self.send_cleanup(&SmtpdToCleanup::End { txn }, deadline)?;
        loop {
            let Some(c) = self.cleanup.as_mut() else { return Err(String::from("cleanup went away")) };
            match c.recv::<CleanupToSmtpd>() {
                Ok(Some((CleanupToSmtpd::Committed { txn: t, result }, _))) if t == txn => return Ok(result),
                Ok(Some(_)) => continue,
                Ok(None) => self.wait_cleanup(deadline)?,
                Err(crate::ipc::Error::Closed) => {
                    drop_channel(&self.poll, &mut self.cleanup);
                    return Err(String::from("cleanup went away"));
                }
                Err(e) => return Err(format!("cleanup channel: {e}")),
            }
        }
    }

    /// Send to cleanup, waiting (until `deadline`) while too much is queued.
    fn send_cleanup(&mut self, m: &SmtpdToCleanup, deadline: Instant) -> Result<(), String> {
        let Some(c) = self.cleanup.as_mut() else { return Err(String::from("cleanup is not running")) };
        if let Err(e) = c.send(m, &[]) {
            drop_channel(&self.poll, &mut self.cleanup);
            return Err(format!("cleanup channel: {e}"));
        }
        while self.cleanup.as_ref().is_some_and(|c| c.queued() > MAX_QUEUED_FRAMES) {
            self.wait_cleanup(deadline)?;
        }
        Ok(())
    }

    /// Wait until the cleanup channel can take more or has something to
    /// read (flushing what is queued), or fail at `deadline`.
    fn wait_cleanup(&mut self, deadline: Instant) -> Result<(), String> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let Some(c) = self.cleanup.as_mut() else { return Err(String::from("cleanup went away")) };
        if c.flush().is_err() {
            drop_channel(&self.poll, &mut self.cleanup);
            return Err(String::from("cleanup went away"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(String::from("cleanup did not answer in time"));
        }
        let flags = if c.wants_write() { PollFlags::POLLIN | PollFlags::POLLOUT } else { PollFlags::POLLIN };
        let fd = c.as_raw_fd();
        let mut fds = [PollFd::new(c.as_fd(), flags)];
        let ms = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(format!("poll on cleanup's channel (fd {fd}): {e}")),
        }
    }
}

/// What became of one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: RecipientStatus,
    pub dsn: String,
    pub reason: String,
}

impl Outcome {
    /// Delivered here (the recipient's action is settled by
    /// [`super::resolve::done_action`] once all its destinations have it).
    pub fn sent(reason: &str) -> Outcome {
        Outcome::new(RecipientStatus::Delivered { dsn_passed: false, action: DoneAction::Delivered }, "2.0.0", reason)
    }
    pub fn defer(dsn: &str, reason: &str) -> Outcome {
        Outcome::new(RecipientStatus::Deferred, dsn, reason)
    }
    pub fn bounce(dsn: &str, reason: &str) -> Outcome {
        Outcome::new(RecipientStatus::Bounced, dsn, reason)
    }
    fn new(status: RecipientStatus, dsn: &str, reason: &str) -> Outcome {
        Outcome { status, dsn: dsn.to_string(), reason: reason.to_string() }
    }
}

fn report(index: u32, o: Outcome) -> RecipientReport {
    RecipientReport { index, status: o.status, dsn: o.dsn, reason: o.reason }
}

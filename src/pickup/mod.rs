//! pickup: takes what postdrop left in maildrop/ and hands it to cleanup,
//! one file at a time, the same way smtpd hands over network mail.
//!
//! A file is taken only when it is a regular file with one link, under a
//! final name (postdrop writes under `.tmp.*` and renames when the file
//! is whole), and reads as a complete maildrop stream within the intake
//! limits; its owner is the submitting user, whatever the file says.
//! Anything else is moved to corrupt/ and logged; a message cleanup
//! refuses is moved there too, and its sender (or the postmaster) gets a
//! failure notice ([`notice`]): the file stays in maildrop/ until cleanup
//! has queued its notice ([`refused`]), so that a notice lost (mta
//! stopped while cleanup had it, cleanup gone) is sent when the file is
//! refused again, at the latest at the next start. A file that cannot be
//! read because of an I/O error is left where it is and tried again after
//! a growing pause while the others go on ([`trouble`]); after an hour of
//! that it is set aside too. An error of pickup's own (no descriptor or
//! memory to spare) pauses it, and counts against no file.
//! The file is removed only after cleanup has committed the message.
//! Stopping, pickup waits a little for cleanup's verdicts on what it
//! handed over whole (cleanup, stopping too, commits it and answers
//! before it exits): a message queued at that moment is then removed from
//! maildrop/, not queued again at the next start, and a notice queued has
//! its file set aside, not sent again; what was being sent stays in
//! maildrop/ and is taken at the next start.
//!
//! pickup learns of arrivals from the kernel ([`watch`]: inotify on Linux,
//! kqueue on FreeBSD and OpenBSD) and then lists the directory; it also
//! lists it at start and, as a fallback, every `FALLBACK_SCAN_INTERVAL`
//! (every `SCAN_INTERVAL` when the kernel would not watch the directory).
//!
//! Trusts: master; maildrop files no more than SMTP input.

use std::fs::File;
use std::io::{self, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use sandbox::Sandboxed;

mod notice;
mod refused;
mod trouble;
mod unremoved;
use refused::Refused;
use trouble::{Troubles, Verdict};
use unremoved::Unremoved;

use crate::child::Child;
use crate::ipc::Channel;
use crate::ipc::msg::{
    CleanupToSmtpd, CommitResult, FromMaster, MessageEnvelope, MessageRecipient, SetAside, SmtpdToCleanup,
};
use crate::maildrop::{self, Limits, Reader, names};
use crate::queue;
use crate::roles::Role;
use crate::smtpd::params;

pub mod watch;

use watch::{Wakeup, Watch};

const MASTER: Token = Token(0);
const CLEANUP: Token = Token(1);
const WATCH: Token = Token(2);
/// How often maildrop/ is listed while the kernel reports arrivals. The
/// timed look stays, slowly, as a safety net for what notification
/// cannot promise: events lost in a way the kernel does not report, a
/// watch that stops working without saying so, and a file an error left
/// in place, which no new event will name. (Files dropped while pickup
/// was not running are taken by the look at start, and a queue overflow
/// the kernel does report, IN_Q_OVERFLOW, brings a look at once.)
const FALLBACK_SCAN_INTERVAL: Duration = Duration::from_secs(10);
/// How often maildrop/ is listed when there is no watch (the kernel
/// refused it, or it was lost): the latency local submission had before
/// notifications.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// After a temporary failure, the file waits this long.
const RETRY_PAUSE: Duration = Duration::from_secs(5);
/// A `.tmp.*` file this old was left by a postdrop that died.
const ABANDONED: Duration = Duration::from_secs(24 * 3600);
/// Most unfinished files of an earlier boot remembered (beyond, they are
/// read again at each listing, as before).
const UNFINISHED_KEPT: usize = 10_000;
/// Content of a failure notice per message on the cleanup channel.
const NOTICE_CHUNK: usize = 32 * 1024;
/// Names taken per scan, so one scan of a flooded directory stays short.
const SCAN_BATCH: usize = 1000;
/// How long pickup, stopping, waits for cleanup's verdicts on what it
/// handed over whole (below master's `supervise.stop_timeout`, at least
/// one second, after which master kills it).
const STOP_WAIT: Duration = Duration::from_millis(2500);

/// The file being handed to cleanup.
struct InFlight {
    name: String,
    reader: Reader<BufReader<File>>,
    txn: u64,
    /// All content sent; waiting for cleanup's verdict.
    ended: bool,
    uid: u32,
    nrcpt: usize,
    /// Its `uid=` line was logged as it began (under an ID set aside).
    named: bool,
    /// What cleanup was given, for a notice should it refuse the message.
    envelope: MessageEnvelope,
    /// The file's device and inode (see [`Unremoved`]).
    identity: unremoved::Identity,
    /// The first bytes of the content (at most `bounce.size_limit` and one
    /// more) and its length so far: what a notice may return.
    kept: Vec<u8>,
    len: u64,
}

struct Pickup {
    child: Child,
    poll: Poll,
    maildrop: OwnedFd,
    corrupt: OwnedFd,
    cleanup: Option<Channel>,
    /// Queue IDs the present cleanup set aside for our next messages, to
    /// use in order: a message's `uid=` line is logged under its ID as it
    /// goes to cleanup, before any line another process logs about it.
    reserved: SetAside,
    space_ok: bool,
    todo: Vec<String>,
    current: Option<InFlight>,
    next_txn: u64,
    /// When maildrop/ is listed next (once nothing is in hand).
    next_scan: Instant,
    /// No look before this, however many arrivals are reported: cleanup
    /// failed for now and asked for a pause.
    retry_after: Instant,
    /// The kernel's notification of arrivals, while it works.
    watch: Option<Watch>,
    /// Files that failed for a reason that may pass, waiting to be tried.
    troubles: Troubles,
    /// Files queued whose removal failed: skipped by listings.
    unremoved: Unremoved,
    /// The warning that listings are not taken was given.
    said_full: bool,
    /// This boot's tag (`maildrop::names`), if the boot can be told.
    boot: Option<String>,
    /// Unfinished temporary files of an earlier boot, found so, with the
    /// inode and size they had: not read again at every listing while
    /// they wait their day (nothing writes them any more).
    unfinished: std::collections::HashMap<String, (unremoved::Identity, i64)>,
    /// Refused files whose failure notice is with cleanup.
    refused: Refused,
    /// Stopping: no notice is sent (the file waits for the next start).
    stopping: bool,
    /// Names refused messages in their notices and in the log.
    ids: queue::QueueIdGen,
    /// Most bytes of a refused message its notice returns.
    size_limit: u64,
}

/// Watch maildrop/ (the first role descriptor) for arrivals. Must run
/// before the sandbox is entered; [`serve`] takes the result, and falls
/// back to timed looks, with a warning, if it is an error.
pub fn watch_maildrop(child: &Child) -> io::Result<Watch> {
    let dir = child.fds.first().ok_or_else(|| io::Error::other("no maildrop/ descriptor"))?;
    Watch::new(dir.as_fd())
}

/// Serve until master says stop. `watch` is what [`watch_maildrop`]
/// made before the sandbox was entered.
/// `boot` is `sandbox::boot_id`, read before the sandbox as well.
pub fn serve(_token: Sandboxed, mut child: Child, watch: io::Result<Watch>, boot: Option<String>) -> ! {
    let poll = Poll::new().unwrap_or_else(|e| crate::child::die(Role::Pickup, &format!("poll: {e}")));
    let fds = std::mem::take(&mut child.fds);
    let [maildrop, corrupt] = match <[_; 2]>::try_from(fds) {
        Ok(a) => a,
        Err(_) => child.fatal("expected maildrop/ and corrupt/ from master"),
    };
    if let Err(e) = child.register_master(poll.registry(), MASTER) {
        child.fatal(&format!("registering the master channel: {e}"));
    }
    let watch = match Watch::register(watch, poll.registry(), WATCH) {
        Ok(w) => Some(w),
        Err(e) => {
            child.warn(&format!(
                "cannot watch maildrop/ for arrivals ({e}); looking every {} s instead",
                SCAN_INTERVAL.as_secs()
            ));
            None
        }
    };
    let now = Instant::now();
    let mut p = Pickup {
        child,
        poll,
        maildrop,
        corrupt,
        cleanup: None,
        reserved: SetAside::default(),
        space_ok: true,
        todo: Vec::new(),
        current: None,
        next_txn: 1,
        // At once: whatever arrived while pickup was not running.
        next_scan: now,
        retry_after: now,
        watch,
        troubles: Troubles::default(),
        unremoved: Unremoved::default(),
        said_full: false,
        boot: boot.map(|b| names::boot_tag(&b)),
        unfinished: std::collections::HashMap::new(),
        refused: Refused::default(),
        stopping: false,
        ids: queue::QueueIdGen::new(std::process::id()),
        size_limit: crate::bounce::DEFAULT_SIZE_LIMIT,
    };
    if let Some(d) = p.child.config.delivery.as_ref() {
        p.size_limit = d.bounce.size_limit;
    }
    let mut events = Events::with_capacity(16);
    loop {
        let timeout = p.timeout();
        if let Err(e) = p.poll.poll(&mut events, timeout)
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            p.child.fatal(&format!("poll: {e}"));
        }
        for ev in events.iter() {
            match ev.token() {
                MASTER => {
                    if p.child.master_event(ev) {
                        p.master_readable();
                    }
                }
                CLEANUP => p.cleanup_event(),
                WATCH => p.watch_readable(),
                _ => {}
            }
        }
        p.work();
        p.child.end_turn(p.poll.registry());
    }
}

impl Pickup {
    fn master_readable(&mut self) {
        loop {
            match self.child.master.recv::<FromMaster>() {
                Ok(None) => return,
                Ok(Some((FromMaster::Peer { role: Role::Cleanup, pid }, fds))) => {
                    let chan = self.child.peer_channel(Role::Cleanup, fds);
                    if let Some(old) = self.cleanup.take() {
                        let _ = self.poll.registry().deregister(&mut SourceFd(&old.as_raw_fd()));
                    }
                    let raw = chan.as_raw_fd();
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = self.poll.registry().register(&mut SourceFd(&raw), CLEANUP, interest) {
                        self.child.fatal(&format!("registering the cleanup channel: {e}"));
                    }
                    self.cleanup = Some(chan);
                    self.reserved.clear();
                    // A file half sent to the old cleanup starts again.
                    self.current = None;
                    self.scan_soon();
                    self.child.debug(&format!("channel to cleanup pid {pid}"));
                }
                Ok(Some((FromMaster::Stop, _))) => self.stop(),
                Ok(Some((m, _))) => self.child.fatal(&format!("unexpected message from master: {m:?}")),
                Err(crate::ipc::Error::Closed) => self.stop(),
                Err(e) => self.child.fatal(&format!("master channel: {e}")),
            }
        }
    }

    /// Stop: what is being sent is dropped (the file stays, and is taken
    /// at the next start); what cleanup has whole, a message or a notice,
    /// it commits as it stops and answers before it exits: its verdict is
    /// awaited (a while, [`STOP_WAIT`]), so that a message queued now is
    /// removed and not queued again at the next start, and a notice
    /// queued has its file set aside, not refused and noticed again.
    fn stop(&mut self) -> ! {
        self.stopping = true;
        if let Some(f) = self.current.take_if(|f| !f.ended)
            && let Some(c) = self.cleanup.as_mut()
        {
            let _ = c.send(&SmtpdToCleanup::Abort { txn: f.txn }, &[]);
        }
        let deadline = Instant::now() + STOP_WAIT;
        while self.current.is_some() || !self.refused.is_empty() {
            let Some(c) = self.cleanup.as_mut() else { break };
            if c.flush().is_err() {
                self.lose_cleanup();
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if let Some(f) = &self.current {
                    self.child.warn(&format!(
                        "maildrop file {}: no verdict from cleanup before stopping; taken again at the next start",
                        f.name
                    ));
                }
                for w in self.refused.lost() {
                    self.child.warn(&format!(
                        "maildrop file {}: no word from cleanup on its failure notice to <{}> before stopping; \
                         refused again, and its notice sent, at the next start",
                        w.name, w.to
                    ));
                }
                break;
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut pfd = [nix::poll::PollFd::new(c.as_fd(), nix::poll::PollFlags::POLLIN)];
            match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    self.child.warn(&format!("waiting for cleanup's verdicts: {e}"));
                    break;
                }
            }
            self.cleanup_event();
        }
        if let Some(c) = self.cleanup.as_mut() {
            let _ = c.flush();
        }
        self.child.exit(0);
    }

    fn lose_cleanup(&mut self) {
        if let Some(c) = self.cleanup.take() {
            let _ = self.poll.registry().deregister(&mut SourceFd(&c.as_raw_fd()));
        }
        self.reserved.clear();
        // The file stays in maildrop/; it is taken again once cleanup is back.
        self.current = None;
        for w in self.refused.lost() {
            self.child.warn(&format!(
                "maildrop file {}: the failure notice to <{}> was lost with cleanup; the file stays in maildrop/, \
                 to be refused again and its notice sent once cleanup is back",
                w.name, w.to
            ));
        }
        self.scan_soon();
    }

    /// The kernel reported something: drain its report and look soon.
    fn watch_readable(&mut self) {
        let Some(w) = self.watch.as_mut() else { return };
        match w.drain() {
            Wakeup::Nothing => {}
            Wakeup::Scan => self.scan_soon(),
            Wakeup::Lost(why) => {
                if let Some(w) = self.watch.take() {
                    let _ = self.poll.registry().deregister(&mut SourceFd(&w.as_raw_fd()));
                }
                self.child.warn(&format!(
                    "no longer notified of arrivals in maildrop/ ({why}); looking every {} s instead",
                    SCAN_INTERVAL.as_secs()
                ));
                self.scan_soon();
            }
        }
    }

    /// List maildrop/ as soon as nothing is in hand (and cleanup asked
    /// for no pause). Many calls before that come to one look.
    fn scan_soon(&mut self) {
        self.next_scan = self.next_scan.min(Instant::now().max(self.retry_after));
    }

    /// How long the loop may wait for an event. Only a look at maildrop/
    /// is timed; everything else waits for its channel, so nothing spins
    /// while cleanup is away, a file is in flight or space is short.
    fn timeout(&self) -> Option<Duration> {
        if self.cleanup.is_none() || self.current.is_some() {
            // master's Peer message, or cleanup's channel, wakes the loop.
            None
        } else if !self.todo.is_empty() {
            // The next file at once; without space, cleanup's Space wakes it.
            self.space_ok.then_some(Duration::ZERO)
        } else {
            Some(self.next_scan.saturating_duration_since(Instant::now()))
        }
    }

    /// The time between looks when nothing is reported.
    fn scan_interval(&self) -> Duration {
        if self.watch.is_some() { FALLBACK_SCAN_INTERVAL } else { SCAN_INTERVAL }
    }

    /// cleanup cannot take mail for now: no look for a while.
    fn pause(&mut self) {
        self.retry_after = Instant::now() + RETRY_PAUSE;
        self.next_scan = self.next_scan.max(self.retry_after);
        self.todo.clear();
    }

    fn cleanup_event(&mut self) {
        loop {
            let Some(c) = self.cleanup.as_mut() else { return };
            match c.recv::<CleanupToSmtpd>() {
                Ok(None) => break,
                Ok(Some((_, fds))) if !fds.is_empty() => self.child.fatal("cleanup sent descriptors"),
                Ok(Some((CleanupToSmtpd::Space { ok }, _))) => self.space_ok = ok,
                Ok(Some((CleanupToSmtpd::Ids { ids }, _))) => self.reserved.add(ids),
                Ok(Some((CleanupToSmtpd::Committed { txn, result }, _))) => self.committed(txn, result),
                Err(crate::ipc::Error::Closed) => return self.lose_cleanup(),
                Err(e) => self.child.fatal(&format!("cleanup channel: {e}")),
            }
        }
        if let Some(c) = self.cleanup.as_mut()
            && c.flush().is_err()
        {
            self.lose_cleanup();
        }
    }

    fn committed(&mut self, txn: u64, result: CommitResult) {
        if let Some((w, fate)) = self.refused.verdict(txn, &result) {
            return self.notice_answered(w, fate);
        }
        let Some(f) = self.current.take_if(|f| f.txn == txn && f.ended) else {
            self.child.fatal(&format!("a verdict for transaction {txn}, which is not in flight"));
        };
        match result {
            CommitResult::Queued(id) => {
                self.troubles.clear(&f.name);
                if !f.named {
                    self.child.info(&origin_line(&id, f.uid, &f.name, f.nrcpt));
                }
                if let Err(e) = unlinkat(&self.maildrop, f.name.as_str(), UnlinkatFlags::NoRemoveDir) {
                    // Not taken again while this process lives (it would be
                    // queued at every listing); its removal is tried again
                    // at each.
                    self.unremoved.add(&f.name, f.identity);
                    self.child.warn(&format!(
                        "maildrop file {}: queued as {id} but not removed: {e}; not taken again, and removed \
                         once it can be",
                        f.name
                    ));
                }
            }
            CommitResult::Refused { code, enhanced, text } => {
                let refusal = notice::Refusal { code, enhanced: &enhanced, text: &text };
                self.refuse(&f.name, f.identity, &f.envelope, &f.kept, f.len, &refusal, "refused by cleanup");
            }
            CommitResult::TempFail(why) => {
                self.child.warn(&format!("maildrop file {}: not queued now ({why}); trying again later", f.name));
                self.pause();
            }
            CommitResult::NoSpace => {
                self.child.warn(&format!("maildrop file {}: the spool is short of space; trying again later", f.name));
                self.pause();
            }
        }
    }

    /// A file that could not be read: an error of the process (no
    /// descriptor or memory to spare) pauses pickup, counted against no
    /// file; an I/O error leaves the file in maildrop/ to be tried again
    /// later, or set aside once it has failed for too long.
    fn trouble(&mut self, name: &str, why: &str, process_wide: bool) {
        if process_wide {
            self.child.warn(&format!("maildrop file {name}: {why}; trying again in {} s", RETRY_PAUSE.as_secs()));
            return self.pause();
        }
        match self.troubles.failed(name, Instant::now()) {
            Verdict::RetryIn(pause) => {
                self.child.warn(&format!("maildrop file {name}: {why}; trying it again in {} s", pause.as_secs()));
                // A listing finds it again once it is due.
                let at = Instant::now() + pause;
                self.next_scan = self.next_scan.min(at.max(self.retry_after));
            }
            Verdict::GiveUp => {
                let hours = trouble::GIVE_UP.as_secs() / 3600;
                let why = format!("{why}, and so for {hours} hour(s)");
                if !self.move_aside(name, &why) {
                    // Not removed: mail that may yet be read. Tried again
                    // at the longest pause.
                    self.troubles.given_up_but_kept(name, Instant::now());
                }
            }
        }
    }

    /// Move a file that cannot be taken to corrupt/ and say why; if it
    /// cannot be moved, it is removed (it would stop every file after it).
    fn set_aside(&mut self, name: &str, why: &str) {
        if !self.move_aside(name, why) {
            let _ = unlinkat(&self.maildrop, name, UnlinkatFlags::NoRemoveDir);
            self.child.warn(&format!("maildrop file {name}: removed"));
        }
    }

    /// Move a file to corrupt/ and say why; false (and said) if it could
    /// not be moved.
    fn move_aside(&mut self, name: &str, why: &str) -> bool {
        self.troubles.clear(name);
        let base = format!("maildrop.{name}");
        let moved = queue::free_name(self.corrupt.as_fd(), &base).map_err(|e| e.to_string()).and_then(|t| {
            renameat(&self.maildrop, name, &self.corrupt, t.as_str()).map(|()| t).map_err(|e| e.to_string())
        });
        match moved {
            Ok(t) => {
                self.child.warn(&format!("maildrop file {name}: {why}; moved to corrupt/{t}"));
                true
            }
            Err(e) => {
                self.child.warn(&format!("maildrop file {name}: {why}; cannot move it to corrupt/ ({e})"));
                false
            }
        }
    }

    fn work(&mut self) {
        if self.cleanup.is_none() {
            return;
        }
        if self.current.is_none() && self.todo.is_empty() && Instant::now() >= self.next_scan {
            // A full batch may have left names behind: look again once it
            // is done, as before notifications, not on the slow timer.
            let interval = if self.scan() { SCAN_INTERVAL } else { self.scan_interval() };
            self.next_scan = Instant::now() + interval;
        }
        // (Too many notices waiting for cleanup: no more files for now.)
        while self.current.is_none() && self.space_ok && !self.refused.is_full() {
            let Some(name) = self.todo.pop() else { break };
            self.start(name);
        }
        self.send_more();
    }

    /// Names in maildrop/, oldest name last (taken first). Abandoned
    /// temporary files are removed. True when the batch is full, so that
    /// more names may be waiting.
    fn scan(&mut self) -> bool {
        self.retry_unremoved();
        let mut d = match Dir::openat(
            &self.maildrop,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(d) => d,
            Err(e) => {
                self.child.warn(&format!("listing maildrop/: {e}"));
                return false;
            }
        };
        let mut names = Vec::new();
        let mut full = false;
        let mut stale = Vec::new();
        let mut troubled = std::collections::HashSet::new();
        let now = Instant::now();
        let mut listed = true;
        for e in d.iter() {
            let Ok(e) = e else {
                listed = false;
                break;
            };
            let Ok(name) = e.file_name().to_str() else { continue };
            // (A refused file whose notice is with cleanup waits for its
            // verdict.)
            if name == "." || name == ".." || self.unremoved.contains(name) || self.refused.contains(name) {
                continue;
            }
            if self.troubles.contains(name) {
                troubled.insert(name.to_string());
                if !self.troubles.due(name, now) {
                    continue;
                }
            }
            if name.starts_with('.') {
                stale.push(name.to_string());
            } else if names.len() < SCAN_BATCH {
                names.push(name.to_string());
            } else {
                full = true;
            }
        }
        drop(d);
        if listed {
            self.troubles.keep_only(&troubled);
        }
        if listed {
            let present: std::collections::HashSet<&String> = stale.iter().collect();
            self.unfinished.retain(|n, _| present.contains(n));
        }
        for name in stale {
            let st = fstatat(&self.maildrop, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok();
            let old = st.is_some_and(|st| {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                (now.as_secs() as i64).saturating_sub(st.st_mtime) > ABANDONED.as_secs() as i64
            });
            let seen = st.map(|st| (identity(&st), st.st_size));
            if !old && seen.is_some() && self.unfinished.get(&name) == seen.as_ref() {
                continue;
            }
            // Written in another boot: its postdrop is gone, and a whole
            // one is most likely mail sendmail said it took, whose rename
            // a crash undid (postdrop cannot sync maildrop/). Taken at once.
            let orphan = names::from_another_boot(&name, self.boot.as_deref());
            if !old && !orphan {
                continue;
            }
            // Complete, it may be such mail too (or its postdrop was
            // killed just before the rename): taken, as a duplicate is
            // better than a loss.
            let done = names::final_for(&name);
            let complete = if done.is_some() { self.complete_stream(&name) } else { Ok(false) };
            if let Err(e) = &complete {
                // Not judged on an error that may pass: looked at again.
                self.child.warn(&format!("maildrop file {name}: left for a day, cannot be read now ({e})"));
                continue;
            }
            if let Some(done) = done
                && complete == Ok(true)
                && renameat(&self.maildrop, name.as_str(), &self.maildrop, done).is_ok()
            {
                let when = if orphan { "by a postdrop of an earlier boot" } else { "for a day" };
                self.child.warn(&format!(
                    "maildrop file {name}: left complete under its temporary name {when}; taken as {done}"
                ));
                if names.len() < SCAN_BATCH {
                    names.push(done.to_string());
                } else {
                    full = true;
                }
                continue;
            }
            // An unfinished file of another boot waits its day as well:
            // the boot tag of a file being written now could be told wrong
            // (FreeBSD's boot time moves when the clock is set).
            if !old {
                if orphan
                    && let Some(seen) = seen
                    && self.unfinished.len() < UNFINISHED_KEPT
                    && self.unfinished.insert(name.clone(), seen).is_none()
                {
                    self.child.warn(&format!(
                        "maildrop file {name}: left unfinished by a postdrop of an earlier boot; removed when a day old"
                    ));
                }
                continue;
            }
            self.unfinished.remove(&name);
            if unlinkat(&self.maildrop, name.as_str(), UnlinkatFlags::NoRemoveDir).is_ok() {
                self.child.warn(&format!("maildrop file {name}: left unfinished for a day; removed"));
            }
        }
        if self.unremoved.is_full() {
            // Nothing more could be remembered: a file queued and not
            // removed would be queued again at every listing.
            if !std::mem::replace(&mut self.said_full, true) {
                self.child.warn(&format!(
                    "{} maildrop files were queued but cannot be removed (is maildrop/ read-only?): no more files \
                     are taken until they can be",
                    self.unremoved.len()
                ));
            }
            names.clear();
            full = false;
        }
        names.sort_unstable_by(|a, b| b.cmp(a));
        self.todo = names;
        full
    }

    /// Try again to remove the files queued and not removed.
    fn retry_unremoved(&mut self) {
        if self.unremoved.is_empty() {
            return;
        }
        let maildrop = &self.maildrop;
        let (removed, _still) = self.unremoved.retry(
            |name| fstatat(maildrop, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok().map(|st| identity(&st)),
            |name| unlinkat(maildrop, name, UnlinkatFlags::NoRemoveDir).map_err(io::Error::from),
        );
        for name in removed {
            self.child.info(&format!("maildrop file {name}: removed (its message was queued before)"));
        }
        if !self.unremoved.is_full() && std::mem::take(&mut self.said_full) {
            self.child.info("maildrop files can be removed again: taking files again");
        }
    }

    /// Whether the file `name` holds a whole maildrop stream (its end
    /// record and CRC), read to its end now; an error when it could not
    /// be opened or read for a reason that may pass.
    fn complete_stream(&self, name: &str) -> Result<bool, String> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = match openat(&self.maildrop, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if e == Errno::EIO || trouble::process_wide(e) => return Err(e.to_string()),
            Err(_) => return Ok(false),
        };
        let file = File::from(fd);
        match file.metadata() {
            Ok(m) if m.is_file() && m.nlink() == 1 => {}
            Ok(_) => return Ok(false),
            Err(e) => return Err(e.to_string()),
        }
        // Whole, whatever pickup's limits are now: one over them (lowered
        // since) is taken, and refused with a notice, not left to be
        // removed as unfinished.
        let whole = maildrop::Limits { max_content: u64::MAX, ..self.limits() };
        let mut reader = match Reader::new_counting(BufReader::with_capacity(64 << 10, file), whole) {
            Ok((reader, _, _)) => reader,
            Err(e @ maildrop::Error::Io(_)) => return Err(e.to_string()),
            Err(_) => return Ok(false),
        };
        loop {
            match reader.next_chunk() {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(true),
                Err(e @ maildrop::Error::Io(_)) => return Err(e.to_string()),
                Err(_) => return Ok(false),
            }
        }
    }

    /// Open, check and begin handing over one file.
    fn start(&mut self, name: String) {
        let st = match fstatat(&self.maildrop, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return self.troubles.clear(&name),
            Err(e) => return self.trouble(&name, &format!("cannot be looked at: {e}"), trouble::process_wide(e)),
        };
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return self.set_aside(&name, "not a regular file");
        }
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let file = match openat(&self.maildrop, name.as_str(), flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) => return self.troubles.clear(&name),
            Err(e) if e == Errno::EIO || trouble::process_wide(e) => {
                return self.trouble(&name, &format!("cannot be opened: {e}"), trouble::process_wide(e));
            }
            Err(e) => return self.set_aside(&name, &format!("cannot be opened: {e}")),
        };
        // Check the file itself, not the name: the name may have changed.
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                let wide = trouble::process_wide_io(&e);
                return self.trouble(&name, &format!("cannot be looked at: {e}"), wide);
            }
        };
        if !meta.file_type().is_file() {
            return self.set_aside(&name, "not a regular file");
        }
        if meta.nlink() != 1 {
            return self.set_aside(&name, &format!("{} links: not a file postdrop made", meta.nlink()));
        }
        let limits = self.limits();
        // (Recipients past the limit are counted, for the notice below.)
        let (reader, env, beyond) = match Reader::new_counting(BufReader::with_capacity(64 << 10, file), limits) {
            Ok(x) => x,
            Err(maildrop::Error::Io(e)) => {
                let wide = trouble::process_wide_io(&e);
                return self.trouble(&name, &maildrop::Error::Io(e).to_string(), wide);
            }
            Err(e) => return self.set_aside(&name, &e.to_string()),
        };
        let Some(envelope) = envelope(&env, meta.uid()) else {
            return self.set_aside(&name, "BINARYMIME content cannot be submitted locally");
        };
        if beyond > 0 {
            let all = (env.recipients.len() as u64).saturating_add(beyond);
            let by = format!(
                "refused by pickup ({all} recipients, over limits.recipients, {}; the notice names the first {})",
                limits.max_recipients,
                env.recipients.len()
            );
            let refusal = notice::Refusal { code: 552, enhanced: "5.5.3", text: "Error: too many recipients" };
            return self.refuse_unsent(&name, (meta.dev(), meta.ino()), reader, &envelope, &refusal, &by);
        }
        let txn = self.next_txn;
        self.next_txn += 1;
        let nrcpt = envelope.recipients.len();
        let kept_envelope = envelope.clone();
        let id = self.reserved.take();
        let begin = SmtpdToCleanup::Begin { txn, id: id.clone(), envelope: Box::new(envelope) };
        match self.cleanup.as_mut().map(|c| c.send(&begin, &[])) {
            Some(Ok(())) => {}
            // Refused before anything was queued: this file, not cleanup,
            // is the trouble (it would stop every file after it).
            Some(Err(crate::ipc::Error::TooLarge(n))) => {
                let why = format!("its envelope ({n} octets: recipients and their ORCPT) is more than cleanup takes");
                return self.set_aside(&name, &why);
            }
            _ => return self.lose_cleanup(),
        }
        if let Some(id) = &id {
            self.child.info(&origin_line(id, meta.uid(), &name, nrcpt));
        }
        self.current = Some(InFlight {
            name,
            identity: (meta.dev(), meta.ino()),
            reader,
            txn,
            ended: false,
            uid: meta.uid(),
            nrcpt,
            named: id.is_some(),
            envelope: kept_envelope,
            kept: Vec::new(),
            len: 0,
        });
    }

    fn limits(&self) -> Limits {
        let i = self.child.config.intake.as_ref();
        Limits {
            max_recipients: i.map_or(Limits::default().max_recipients, |i| i.limits.recipients as usize),
            max_content: i.map_or(Limits::default().max_content, |i| i.limits.message_size),
        }
    }

    /// Send content while the channel takes it without queueing much.
    fn send_more(&mut self) {
        loop {
            let Some(c) = self.cleanup.as_mut() else { return };
            match c.flush() {
                Ok(true) => {}
                Ok(false) => return,
                Err(_) => return self.lose_cleanup(),
            }
            let Some(f) = self.current.as_mut() else { return };
            if f.ended {
                return;
            }
            let txn = f.txn;
            match f.reader.next_chunk() {
                Ok(Some(data)) => {
                    // One byte past the limit tells the composer whether
                    // a header field ending there goes on.
                    let keep = usize::try_from(self.size_limit.saturating_add(1)).unwrap_or(usize::MAX);
                    let room = keep.saturating_sub(f.kept.len());
                    f.kept.extend_from_slice(&data[..room.min(data.len())]);
                    f.len += data.len() as u64;
                    if !self.send(SmtpdToCleanup::Content { txn, data }) {
                        return;
                    }
                }
                Ok(None) => {
                    f.ended = true;
                    // Read whole: an earlier read error has passed.
                    self.troubles.clear(&f.name);
                    self.send(SmtpdToCleanup::End { txn });
                    return;
                }
                Err(e) => {
                    let Some(f) = self.current.take() else { return };
                    self.send(SmtpdToCleanup::Abort { txn });
                    return match e {
                        maildrop::Error::Io(io) => {
                            let wide = trouble::process_wide_io(&io);
                            self.trouble(&f.name, &maildrop::Error::Io(io).to_string(), wide)
                        }
                        // Over pickup's limit (which may not be postdrop's:
                        // see `refuse_unsent`): refused as cleanup would.
                        maildrop::Error::TooBig { limit } => {
                            let by = format!("refused by pickup (larger than limits.message_size, {limit} bytes)");
                            let refusal =
                                notice::Refusal { code: 552, enhanced: "5.3.4", text: "Error: message file too big" };
                            self.refuse(&f.name, f.identity, &f.envelope, &f.kept, f.len, &refusal, &by);
                        }
                        e => self.set_aside(&f.name, &e.to_string()),
                    };
                }
            }
        }
    }

    fn send(&mut self, m: SmtpdToCleanup) -> bool {
        let ok = self.cleanup.as_mut().is_some_and(|c| c.send(&m, &[]).is_ok());
        if !ok {
            self.lose_cleanup();
        }
        ok
    }
}

/// The line that says where a message came from, as Postfix's pickup
/// logs it (`uid=`, by which pflogsumm counts local submissions).
fn origin_line(id: &str, uid: u32, file: &str, nrcpt: usize) -> String {
    format!("{id}: uid={uid}, from maildrop file {file}, nrcpt={nrcpt}")
}

/// A file's device and inode, as [`std::os::unix::fs::MetadataExt`] gives
/// them (`dev_t` is not 64 bits everywhere).
#[allow(clippy::unnecessary_cast)]
fn identity(st: &nix::sys::stat::FileStat) -> unremoved::Identity {
    (st.st_dev as u64, st.st_ino as u64)
}

/// Whether the envelope of a maildrop file fits in what pickup can hand
/// cleanup in one message (its recipients and their ORCPT parameters are
/// most of it); if not, its encoded size. sendmail asks before it writes
/// one: pickup would have to set such a file aside, unbounced.
pub fn envelope_fits(e: &maildrop::Envelope) -> Result<(), usize> {
    let Some(envelope) = envelope(e, u32::MAX) else { return Ok(()) };
    let begin =
        SmtpdToCleanup::Begin { txn: u64::MAX, id: Some("0".repeat(queue::ID_LEN)), envelope: Box::new(envelope) };
    match postcard::to_allocvec(&begin) {
        Ok(bytes) if bytes.len() > crate::ipc::DEFAULT_MAX_MESSAGE => Err(bytes.len()),
        _ => Ok(()),
    }
}

/// The envelope cleanup gets for a maildrop file submitted by `uid`.
fn envelope(e: &maildrop::Envelope, uid: u32) -> Option<MessageEnvelope> {
    let body = params::Body::try_from(e.body).ok()?;
    let recipients = e
        .recipients
        .iter()
        .map(|r| MessageRecipient {
            address: r.address.clone(),
            orcpt: r.orcpt.clone(),
            notify: r.notify.map(Into::into),
        })
        .collect();
    Some(MessageEnvelope {
        sender: e.sender.clone(),
        recipients,
        body,
        smtputf8: e.smtputf8,
        ret: e.ret.map(Into::into),
        envid: e.envid.clone(),
        helo: String::new(),
        protocol: String::from("local"),
        client_address: String::new(),
        server_address: String::new(),
        client_hostname: String::new(),
        tls: None,
        submitter: Some(uid),
    })
}

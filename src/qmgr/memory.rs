//! Messages in memory: the committed messages cleanup offers before it
//! writes any queue file ([`CleanupToQmgr::Offered`]), each as a sealed
//! memory file. Most mail is delivered within moments of its commit; such
//! a message never gets a queue file at all: qmgr reads its envelope from
//! the memory file, hands the agents a descriptor of it as it would of a
//! queue file, and when the message is done tells cleanup
//! ([`QmgrToCleanup::Done`]), whose journal then needs its record no
//! longer. That saves the creation, writing back and removal of one file
//! per message.
//!
//! Everything else needs a file, and qmgr writes it to incoming/ itself,
//! from the memory file, before it goes on ([`Qmgr::write_memory`]): a
//! status to record (a deferral, a bounce, one recipient of several
//! done), a notice, more recipients to load, a move to deferred/, an
//! operator's request; a message offered while the active queue has no
//! room for it, or while qmgr drains; one still in memory after
//! `queue.memory_time` (its delivery stalls: the journal segment is not kept
//! for it); cleanup stopping
//! ([`CleanupToQmgr::Closing`]) or gone. The files written are synced
//! together, at the end of the turn [`TAKEN_SYNC_DELAY`] after the first
//! of them (at once when cleanup closes or qmgr exits), and only then
//! reported to cleanup ([`QmgrToCleanup::Taken`]): until it hears, the
//! journal is the durable copy, and a crash meanwhile leaves at worst a
//! second copy that cleanup's recovery and [`Orphans`] deal with, as after
//! a crash within a turn. A message finished before its sync (delivered,
//! bounced, deleted) is reported done instead, with the others finished
//! ([`Qmgr::finished_file`], [`Qmgr::report_done`]): otherwise a qmgr
//! killed in those 100 ms would have cleanup write it out again, and the
//! next qmgr deliver it again or bring back what the operator deleted.
//! When deliveries stall, a file is written for almost every message as
//! it comes, and a sync in every turn (hundreds a second) would keep the
//! disk flushing what cleanup's journal already holds, delaying the
//! journal's own flushes and so every 250.
//!
//! A message in memory has no file: queue listings read it from its
//! memory file ([`Files`]), and an operator's request for it (show, hold,
//! delete...) has it written first.
//!
//! Should qmgr die, cleanup writes out every message it offered and did
//! not hear of; should cleanup die, qmgr writes out the ones it holds,
//! and the next cleanup's recovery those it reported done meanwhile
//! unheard (delivered twice, like any delivery in flight at a crash).
//!
//! Trusts: cleanup, for the memory files' contents, which are read with
//! the queue format's validating reader all the same.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use mio::Token;

use crate::ipc::msg::{CleanupToQmgr, QmgrToCleanup};
use crate::queue::QueueId;
use crate::queue::disk;

use super::Qmgr;
use super::store::Dir;

/// How long the queue files written from memory may wait for their sync
/// (and cleanup for the news that its journal need not keep them).
pub(super) const TAKEN_SYNC_DELAY: Duration = Duration::from_millis(100);
/// How long a finished message is remembered (see [`Orphans`]).
const ORPHAN_TIME: Duration = Duration::from_secs(600);
/// Most messages remembered: at 3,000 messages a second, the last half
/// minute or so (about 100 bytes each).
const MAX_REMEMBERED: usize = 100_000;

/// The messages qmgr finished (delivered, bounced or deleted, and
/// removed) lately, which a cleanup's recovery may write again although
/// they are done: after cleanup dies, its successor writes again every
/// committed message of the journal that its progress note does not
/// cover and whose queue file is gone, and the note lags behind (it
/// stops at the first message still offered in memory, for one). Their
/// queue IDs are remembered for [`ORPHAN_TIME`] (at most
/// [`MAX_REMEMBERED`]); every copy written again under one in that time
/// is removed, not delivered again. A queue ID is never given to another
/// message, so nothing but such a copy can bear it.
#[derive(Default)]
pub(super) struct Orphans {
    ids: HashMap<QueueId, Instant>,
    order: VecDeque<(Instant, QueueId)>,
}

impl Orphans {
    /// `id` is finished and removed.
    pub fn finished(&mut self, id: QueueId) {
        let now = Instant::now();
        while self.order.front().is_some_and(|(t, _)| now.duration_since(*t) > ORPHAN_TIME)
            || self.order.len() >= MAX_REMEMBERED
        {
            if let Some((t, old)) = self.order.pop_front()
                && self.ids.get(&old) == Some(&t)
            {
                self.ids.remove(&old);
            }
        }
        self.ids.insert(id, now);
        self.order.push_back((now, id));
    }

    /// Whether a copy of `id` in incoming/ is one of those. It is not
    /// forgotten when found: the cleanup whose recovery wrote the copy
    /// may die too before its note covers it, and its successor's
    /// recovery writes it once more.
    pub fn take(&self, id: &QueueId) -> bool {
        self.ids.get(id).is_some_and(|t| t.elapsed() <= ORPHAN_TIME)
    }
}

/// The messages in memory, for listings: those offered and waiting,
/// and those in the active queue without a file yet.
pub(super) struct Files<'a> {
    pub offers: &'a HashMap<QueueId, Memory>,
    pub active: &'a HashMap<QueueId, super::Active>,
}

impl crate::qmgr::scan::InMemory for Files<'_> {
    fn file(&self, id: &QueueId) -> Option<&File> {
        match self.offers.get(id) {
            Some(m) => Some(&m.fd),
            None => self.active.get(id).and_then(|a| a.memory.as_ref()).map(|m| &m.fd),
        }
    }
}

/// A message in memory: its memory file and the cleanup that offered it
/// (told when it is done).
pub(super) struct Memory {
    pub fd: File,
    pub cleanup: Token,
}

/// What to tell each cleanup: at the end of the turn, and once synced.
#[derive(Default)]
pub(super) struct Settled {
    pub done: HashMap<Token, Vec<QueueId>>,
    /// Written by qmgr, reported once synced: each with its cleanup.
    pub taken: HashMap<QueueId, Token>,
    /// When the first of `taken` was written.
    pub taken_since: Option<Instant>,
}

impl Qmgr {
    /// cleanup offers committed messages in memory files.
    pub(super) fn offered(&mut self, token: Token, ids: Vec<String>, fds: Vec<OwnedFd>) {
        if ids.len() != fds.len() || ids.is_empty() {
            let why = format!("{} memory files for {} offered messages", fds.len(), ids.len());
            return self.drop_peer(token, &why);
        }
        let room = self.sched.room();
        for (name, fd) in ids.into_iter().zip(fds) {
            let Some(id) = QueueId::parse(&name) else {
                let name = crate::log::sanitize(&name, 64);
                return self.drop_peer(token, &format!("offered `{name}`, not a queue ID"));
            };
            let fd = File::from(fd);
            // Room now, no names waiting before it, not draining, and a
            // descriptor to spare: it waits in memory for its admission
            // (this turn, as a rule). Otherwise it gets its file now.
            let keep = self.drain.is_none()
                && self.incoming.len() <= self.offers.len()
                && room.messages > self.offers.len()
                && self.kept_files < self.kept_limit;
            self.keep_offer(id, Memory { fd, cleanup: token });
            if !keep {
                // (Kept in memory after all if that fails.)
                self.write_offer(id);
            }
            self.queue_incoming(id);
        }
    }

    /// Keep an offered message in memory until its admission (or
    /// `queue.memory_time`).
    fn keep_offer(&mut self, id: QueueId, m: Memory) {
        self.kept_files += 1;
        self.memory_since.push_back((Instant::now(), id));
        self.offers.insert(id, m);
    }

    /// An offered message waiting for its admission gets its file.
    fn write_offer(&mut self, id: QueueId) {
        if let Some(m) = self.offers.remove(&id) {
            self.file_offer(id, m);
        }
    }

    /// An offered message taken out of [`Qmgr::offers`] gets its file
    /// (true); one that cannot is kept in memory and tried again after
    /// `queue.memory_time` (the journal holds it meanwhile).
    pub(super) fn file_offer(&mut self, id: QueueId, m: Memory) -> bool {
        self.kept_files -= 1;
        match self.write_memory(id, &m.fd, m.cleanup) {
            Ok(()) => true,
            Err(e) => {
                let wait = self.memory_time.as_secs_f64();
                self.child.warn(&format!("{id}: cannot write its queue file: {e}; trying again in {wait} s"));
                self.keep_offer(id, m);
                false
            }
        }
    }

    /// Write the queue file of message `id` from its memory file `fd` to
    /// incoming/ (a copy there already, by cleanup or its recovery, is
    /// the same message), to be synced and reported to cleanup `token`
    /// at the end of the turn.
    pub(super) fn write_memory(&mut self, id: QueueId, fd: &File, token: Token) -> std::io::Result<()> {
        let len = fd.metadata()?.len();
        let mut bytes = vec![0u8; usize::try_from(len).map_err(std::io::Error::other)?];
        fd.read_exact_at(&mut bytes, 0)?;
        match disk::publish(self.store.fd(Dir::Incoming).as_fd(), id.as_str(), &bytes, &mut self.unsynced) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        self.settled.taken.insert(id, token);
        self.settled.taken_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Message `id` is finished and its queue file removed (delivered,
    /// bounced, expired or deleted). Written from memory lately and not
    /// yet reported taken, it is reported done with the others instead:
    /// should qmgr die before the sync, cleanup would otherwise write it
    /// out again from its journal, and the next qmgr deliver a
    /// message that is finished (or bring back one the operator deleted).
    pub(super) fn finished_file(&mut self, id: QueueId) {
        self.orphans.finished(id);
        if let Some(token) = self.settled.taken.remove(&id) {
            self.settled.done.entry(token).or_default().push(id);
        }
    }

    /// The queue files written from memory waiting for their sync, of
    /// cleanup `token`, are no concern of it any more (it is gone).
    pub(super) fn forget_taken(&mut self, token: Token) -> bool {
        let before = self.settled.taken.len();
        self.settled.taken.retain(|_, t| *t != token);
        self.settled.taken.len() != before
    }

    /// Message `id`, offered or of the active queue, gets its queue file
    /// if it is in memory (it is needed from now on: an operator's
    /// request); the error says why it could not.
    pub(super) fn materialise(&mut self, id: QueueId) -> Result<(), String> {
        // Offered and not yet admitted (a listing shows it): its file in
        // incoming/, admitted from there like any other.
        if let Some(m) = self.offers.remove(&id) {
            if !self.file_offer(id, m) {
                return Err(String::from("cannot write its queue file"));
            }
            self.queue_incoming(id);
            return Ok(());
        }
        let Some(mem) = self.active.get_mut(&id).and_then(|m| m.memory.take()) else { return Ok(()) };
        match self.write_memory(id, &mem.fd, mem.cleanup) {
            Ok(()) => {
                self.kept_files -= 1;
                Ok(())
            }
            Err(e) => {
                if let Some(m) = self.active.get_mut(&id) {
                    m.memory = Some(mem);
                }
                Err(format!("cannot write its queue file: {e}"))
            }
        }
    }

    /// Every message in memory from cleanup `token` (all of them with
    /// `None`) gets its file.
    pub(super) fn materialise_all(&mut self, token: Option<Token>) {
        let of = |t: Token| token.is_none_or(|want| want == t);
        let offers: Vec<QueueId> = self.offers.iter().filter(|(_, m)| of(m.cleanup)).map(|(id, _)| *id).collect();
        for id in offers {
            self.write_offer(id);
        }
        let active: Vec<QueueId> = self
            .active
            .iter()
            .filter(|(_, m)| m.memory.as_ref().is_some_and(|mem| of(mem.cleanup)))
            .map(|(id, _)| *id)
            .collect();
        for id in active {
            if let Err(e) = self.materialise(id) {
                self.child.warn(&format!("{id}: {e}"));
            }
        }
    }

    /// The messages in memory longer than `queue.memory_time` get their files.
    pub(super) fn age_memory(&mut self) {
        while let Some((since, id)) = self.memory_since.front().copied() {
            if since.elapsed() < self.memory_time {
                break;
            }
            self.memory_since.pop_front();
            if self.offers.contains_key(&id) {
                self.write_offer(id);
            } else if let Err(e) = self.materialise(id) {
                // Still in memory: tried again later.
                self.child.warn(&format!("{id}: {e}; trying again in {} s", self.memory_time.as_secs_f64()));
                self.memory_since.push_back((Instant::now(), id));
            }
        }
    }

    /// The messages in memory now, for a listing to begin with.
    pub(super) fn in_memory(&self) -> Vec<QueueId> {
        let active = self.active.iter().filter(|(_, a)| a.memory.is_some()).map(|(id, _)| *id);
        self.offers.keys().copied().chain(active).collect()
    }

    /// When the oldest message in memory is due for its file.
    pub(super) fn memory_due(&self) -> Option<Duration> {
        self.memory_since.front().map(|(since, _)| self.memory_time.saturating_sub(since.elapsed()))
    }

    /// When the files written from memory are due for their sync.
    pub(super) fn taken_due(&self) -> Option<Duration> {
        self.settled.taken_since.map(|t| TAKEN_SYNC_DELAY.saturating_sub(t.elapsed()))
    }

    /// The end of a turn: the messages done are reported to their
    /// cleanups; the files written, once [`TAKEN_SYNC_DELAY`] is over,
    /// are synced, then reported.
    pub(super) fn settle_memory(&mut self) {
        self.settle(false);
    }

    /// The same, with the files written synced and reported now.
    pub(super) fn settle_memory_now(&mut self) {
        self.settle(true);
    }

    /// The messages finished so far are reported to their cleanups now,
    /// not at the end of the turn: what qmgr does next in the turn (admit
    /// a batch of new messages, start deliveries) takes a while under
    /// load, and a qmgr killed meanwhile would have them written out
    /// again from the journal and delivered twice.
    pub(super) fn report_done(&mut self) {
        let done = std::mem::take(&mut self.settled.done);
        for (token, ids) in done {
            self.tell_cleanup(token, |ids| QmgrToCleanup::Done { ids }, ids);
        }
    }

    fn settle(&mut self, now: bool) {
        self.report_done();
        if !now && self.taken_due().is_none_or(|d| !d.is_zero()) {
            return;
        }
        self.settled.taken_since = None;
        if !self.settled.taken.is_empty() {
            match self.unsynced.sync(self.store.fd(Dir::Incoming).as_fd()) {
                Ok(()) => {}
                Err(e) => {
                    // Not reported: the journal keeps them (cleanup finds
                    // the files when it writes them out itself).
                    self.child.warn(&format!("syncing queue files written from memory: {e}"));
                    self.settled.taken.clear();
                }
            }
        }
        let mut taken: HashMap<Token, Vec<QueueId>> = HashMap::new();
        for (id, token) in self.settled.taken.drain() {
            taken.entry(token).or_default().push(id);
        }
        for (token, ids) in taken {
            self.tell_cleanup(token, |ids| QmgrToCleanup::Taken { ids }, ids);
        }
    }

    /// Before qmgr exits: cleanup hears of every message done from
    /// memory (otherwise it would write them out, and the next qmgr
    /// deliver them again); the rest it writes out itself when qmgr's
    /// channel closes.
    pub(super) fn settle_before_exit(&mut self) {
        self.settle_memory_now();
        for p in self.peers.values_mut().filter(|p| p.kind == super::PeerKind::Cleanup) {
            let _ = p.chan.flush_within(Duration::from_secs(1));
        }
    }

    fn tell_cleanup(&mut self, token: Token, make: fn(Vec<String>) -> QmgrToCleanup, ids: Vec<QueueId>) {
        for part in ids.chunks(1000) {
            let m = make(part.iter().map(ToString::to_string).collect());
            if !self.peers.contains_key(&token) || !self.send_to(token, &m, &[]) {
                return;
            }
        }
    }

    /// cleanup stops: every message it offered gets its file, reported
    /// with those done, then the answer that it may close its journal.
    pub(super) fn cleanup_closing(&mut self, token: Token) {
        self.materialise_all(Some(token));
        self.settle_memory_now();
        if self.send_to(token, &QmgrToCleanup::Closed, &[]) {
            self.flush_peer(token);
        }
    }

    /// A message from cleanup.
    pub(super) fn cleanup_said(&mut self, token: Token, m: CleanupToQmgr, fds: Vec<OwnedFd>) {
        match m {
            CleanupToQmgr::Offered { ids } => self.offered(token, ids, fds),
            _ if !fds.is_empty() => self.drop_peer(token, "descriptors with a message that has none"),
            CleanupToQmgr::Queued { ids } => {
                for name in ids {
                    match QueueId::parse(&name) {
                        Some(id) => self.queue_incoming(id),
                        None => {
                            let name = crate::log::sanitize(&name, 64);
                            self.child.warn(&format!("cleanup named `{name}`, not a queue ID"));
                        }
                    }
                }
            }
            CleanupToQmgr::Closing => self.cleanup_closing(token),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> QueueId {
        QueueId::parse(s).unwrap()
    }

    #[test]
    fn a_finished_message_is_recognised_in_every_copy_written_again() {
        let mut o = Orphans::default();
        let (a, b) = (id("1NGACKF4BTY0000AKE9H"), id("1NGACKF4BTY0000AKE9J"));
        o.finished(a);
        // Every copy a recovery writes again is found, not only the first
        // (a second cleanup may die before its note covers the copy).
        assert!(o.take(&a));
        assert!(o.take(&a));
        // A message not finished is no orphan.
        assert!(!o.take(&b));
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut o = Orphans::default();
        let mut ids = crate::queue::QueueIdGen::new(1);
        let first = ids.next_id();
        o.finished(first);
        for _ in 0..MAX_REMEMBERED {
            o.finished(ids.next_id());
        }
        assert_eq!(o.order.len(), MAX_REMEMBERED);
        assert!(o.ids.len() <= MAX_REMEMBERED);
        assert!(!o.take(&first), "the oldest is forgotten first");
    }
}

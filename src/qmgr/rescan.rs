//! The scans of deferred/ that qmgr runs between the turns of its event
//! loop: one to index it ([`Kind::Index`]: at start-up, when the
//! deferred index overflowed and messages outside it may be due, when
//! the clock was set back), and the flush ([`Kind::Flush`]: `sendmail
//! -q`, `mtactl queue flush`), which makes every message it finds due
//! now and dates its file so (a restart finds it due as well).
//!
//! A scan is a [`Rescan`]: like a listing's cursor (`scan::Cursor`) it
//! holds one open directory stream at a time, deferred/'s top and then
//! its hashed subfolders, and reads a slice per turn within a
//! [`Budget`], so that however large deferred/ is, qmgr goes on
//! delivering, answering agents and serving control meanwhile. A file
//! not in its own subfolder is moved there, a second copy in the way
//! and a name that is no queue ID go to corrupt/ (see
//! [`Store::move_home`]).
//!
//! One scan runs at a time ([`Rescans`]). A request while one is under
//! way waits for its end, and requests of a kind that wait are
//! coalesced into one: however often a flush is asked for (any local
//! user may), at most one runs and one waits, each a bounded slice per
//! turn. A flush asked for while another runs waits for the next one,
//! since the one under way may have passed messages deferred since. Its
//! requests are answered when the flush that covers them ends; the flush
//! is logged once, however many requests it answers.
//!
//! Trusts: nothing in deferred/; names are checked to be queue IDs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mio::Token;
use nix::dir::OwningIter;
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::fstatat;

use crate::queue::{QueueId, Time};

use super::scan::{self, Budget};
use super::schedule::{DEFERRED_SUBDIRS, deferred_subdir};
use super::store::{self, Dir, Store};

/// Directory entries a scan reads in one turn of the event loop.
pub const TURN_NAMES: usize = 4096;
/// Queue files a scan looks at (and a flush dates) in one turn.
pub const TURN_FILES: usize = 256;
/// Time a scan spends in one turn, at most (about: one file more).
pub const TURN_TIME: Duration = Duration::from_millis(5);
/// Flush requests waiting for their answer at most; more are refused as
/// busy (control lets far fewer clients wait at once).
pub const MAX_WAITING: usize = 1024;

/// What a scan is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Index deferred/ anew: each message due at its file's mtime.
    Index,
    /// Make every message due at this time (and date its file so).
    Flush(Time),
}

/// A scan of deferred/ under way.
pub struct Rescan {
    kind: Kind,
    /// Directories still to read, the current one first: `None` for
    /// deferred/'s top, then its subfolders.
    sources: VecDeque<Option<&'static str>>,
    reader: Option<OwningIter>,
    /// Messages found.
    found: usize,
    finished: bool,
    /// What went wrong or was moved, to log.
    problems: Vec<String>,
}

impl Rescan {
    pub fn new(kind: Kind) -> Rescan {
        let mut sources = VecDeque::from([None]);
        sources.extend(DEFERRED_SUBDIRS.iter().map(|&s| Some(s)));
        Rescan { kind, sources, reader: None, found: 0, finished: false, problems: Vec::new() }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Messages found so far.
    pub fn found(&self) -> usize {
        self.found
    }

    /// What went wrong or was moved since the last call (to log).
    pub fn take_problems(&mut self) -> Vec<String> {
        std::mem::take(&mut self.problems)
    }

    /// Read on within `budget`, handing each message found to `found`
    /// with its next attempt (the flush's time, for a flush); true once
    /// the whole of deferred/ is read.
    pub fn advance(&mut self, store: &Store, budget: &mut Budget, found: &mut dyn FnMut(QueueId, Time)) -> bool {
        while !self.finished && !budget.spent() {
            self.step(store, budget, found);
        }
        self.finished
    }

    /// One directory entry (opening the next directory when one ends).
    fn step(&mut self, store: &Store, budget: &mut Budget, found: &mut dyn FnMut(QueueId, Time)) {
        let Some(&sub) = self.sources.front() else {
            self.finished = true;
            return;
        };
        let shown = |name: &str| match sub {
            Some(s) => format!("{s}/{name}"),
            None => name.to_string(),
        };
        let what = format!("deferred/{}", shown(""));
        let opened = || scan::open(store, Dir::Deferred, sub);
        let Some(name) =
            scan::next_name(&mut self.reader, &mut self.sources, &mut self.problems, budget, &what, opened)
        else {
            return;
        };
        let name = String::from_utf8_lossy(&name).into_owned();
        let Some(id) = QueueId::parse(&name) else {
            // deferred/ holds its subfolders; anything else is junk.
            if sub.is_some() || !DEFERRED_SUBDIRS.contains(&name.as_str()) {
                budget.files = budget.files.saturating_sub(1);
                self.problems.push(store.junk_to_corrupt(&shown(&name)));
            }
            return;
        };
        budget.files = budget.files.saturating_sub(1);
        // One at the top, or in another subfolder, is never found by its
        // name: moved home. From the top it is found there (the
        // subfolders come later); from another subfolder, now.
        if sub != Some(deferred_subdir(&id))
            && (!store.move_home(&id, &shown(&name), &mut self.problems) || sub.is_none())
        {
            return;
        }
        let at = store::path(Dir::Deferred, &id);
        let mtime = match fstatat(store.fd(Dir::Deferred), at.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st.st_mtime,
            // Taken, delivered or moved meanwhile.
            Err(Errno::ENOENT) => return,
            Err(e) => {
                self.problems.push(format!("deferred/{at}: {e}"));
                return;
            }
        };
        self.found += 1;
        match self.kind {
            Kind::Index => found(id, Time { secs: mtime, micros: 0 }),
            Kind::Flush(now) => {
                // Dated due now, so that a restart finds it due too (one
                // due already is left as it is).
                if mtime > now.secs
                    && let Err(p) = store.make_due(&id, now)
                    && !matches!(p, store::Problem::Gone)
                {
                    self.problems.push(format!("deferred/{at}: cannot date it due now: {p}"));
                }
                found(id, now);
            }
        }
    }
}

/// The whole of deferred/ in one go: what went wrong (what was found
/// goes to `found`).
#[cfg(test)]
pub fn scan_all(store: &Store, kind: Kind, found: &mut dyn FnMut(QueueId, Time)) -> Vec<String> {
    let mut r = Rescan::new(kind);
    let mut budget = Budget { names: usize::MAX, files: usize::MAX, until: None };
    r.advance(store, &mut budget, found);
    r.take_problems()
}

/// A flush request to answer: control's channel and its number.
pub type Waiter = (Token, u64);

/// How a scan that ended went.
#[derive(Debug, PartialEq, Eq)]
pub struct Ended {
    pub kind: Kind,
    /// Messages found.
    pub found: usize,
    /// The flush requests it answers.
    pub waiters: Vec<Waiter>,
}

/// The scan under way and those asked for meanwhile (see the module
/// documentation).
#[derive(Default)]
pub struct Rescans {
    current: Option<Rescan>,
    /// The requests for the flush under way.
    waiting: Vec<Waiter>,
    /// A scan to index deferred/ waits.
    next_index: bool,
    /// A flush waits, for these requests (perhaps none: one qmgr wants).
    next_flush: Option<Vec<Waiter>>,
}

impl Rescans {
    /// A scan is under way (the loop should not sleep).
    pub fn busy(&self) -> bool {
        self.current.is_some()
    }

    /// The kind of the scan under way.
    pub fn running(&self) -> Option<Kind> {
        self.current.as_ref().map(Rescan::kind)
    }

    /// Ask for a scan to index deferred/: started now (true: the caller
    /// forgets its index first), or after the one under way.
    pub fn index(&mut self) -> bool {
        if self.current.is_some() {
            self.next_index = true;
            return false;
        }
        self.current = Some(Rescan::new(Kind::Index));
        true
    }

    /// Ask for a flush at `now` (for `who`, answered when it ends):
    /// started now (true), or after the one under way, together with
    /// every other request made meanwhile; refused when too many wait.
    pub fn flush(&mut self, who: Option<Waiter>, now: Time) -> Result<bool, String> {
        let waiting = self.waiting.len() + self.next_flush.as_ref().map_or(0, Vec::len);
        if who.is_some() && waiting >= MAX_WAITING {
            return Err(format!("busy: {waiting} flush requests wait already; try again shortly"));
        }
        if self.current.is_some() {
            self.next_flush.get_or_insert_with(Vec::new).extend(who);
            return Ok(false);
        }
        self.current = Some(Rescan::new(Kind::Flush(now)));
        self.waiting.extend(who);
        Ok(true)
    }

    /// Forget the requests of a channel that went away.
    pub fn drop_peer(&mut self, peer: Token) {
        self.waiting.retain(|w| w.0 != peer);
        if let Some(n) = self.next_flush.as_mut() {
            n.retain(|w| w.0 != peer);
        }
    }

    /// One turn's worth of the scan under way: messages found go to
    /// `found`, what went wrong to `problems`. When it ends, how it went
    /// (and the next one waiting starts: see [`Rescans::start_next`]).
    pub fn turn(
        &mut self,
        store: &Store,
        budget: &mut Budget,
        found: &mut dyn FnMut(QueueId, Time),
        problems: &mut Vec<String>,
    ) -> Option<Ended> {
        let r = self.current.as_mut()?;
        let done = r.advance(store, budget, found);
        problems.extend(r.take_problems());
        if !done {
            return None;
        }
        let r = self.current.take()?;
        Some(Ended { kind: r.kind, found: r.found(), waiters: std::mem::take(&mut self.waiting) })
    }

    /// Start the scan waiting, if none is under way: a flush first (it
    /// finds every message too), then an index; what started.
    pub fn start_next(&mut self, now: Time) -> Option<Kind> {
        if self.current.is_some() {
            return None;
        }
        let kind = if let Some(w) = self.next_flush.take() {
            self.waiting = w;
            Kind::Flush(now)
        } else if std::mem::take(&mut self.next_index) {
            Kind::Index
        } else {
            return None;
        };
        self.current = Some(Rescan::new(kind));
        Some(kind)
    }
}

/// The budget of one turn, from now.
pub fn turn_budget() -> Budget {
    Budget { names: TURN_NAMES, files: TURN_FILES, until: Some(Instant::now() + TURN_TIME) }
}

#[cfg(test)]
#[path = "rescan_tests.rs"]
mod tests;

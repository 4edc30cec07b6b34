//! The deferred index: which deferred messages are due when, kept in
//! memory up to a bound so that qmgr need not list deferred/ to find due
//! mail.
//!
//! The shell fills it from a scan of deferred/ at start-up (the next
//! attempt time of each file, e.g. its mtime, which the shell sets when it
//! defers a message) and the scheduler adds every message it defers
//! itself. When the index is full, the entries due last are dropped and
//! the earliest time dropped is remembered as the *horizon*: every
//! deferred message due before it is in the index. Once the clock passes
//! the horizon, messages outside the index may be due, and the scheduler
//! asks the shell for a new scan, at most one per [`RESCAN_SPACING`] (a
//! scan lists all of deferred/, and while more messages are due than the
//! index holds, the horizon stays behind the clock). With the default
//! bound (500,000) that should not happen in practice; when it does,
//! memory stays bounded and nothing is lost, mail is only found by scan
//! rather than by index.
//!
//! Trusts: nothing; it holds IDs and times.

use std::collections::{BTreeSet, HashMap};

use crate::queue::QueueId;

/// The least time between two scans of deferred/ that the horizon asks
/// for, in seconds.
pub(super) const RESCAN_SPACING: i64 = 10;

pub(super) struct DeferredIndex {
    limit: usize,
    /// No scan for the horizon's sake before this.
    scan_after: i64,
    by_time: BTreeSet<(i64, QueueId)>,
    by_id: HashMap<QueueId, i64>,
    /// The earliest next attempt dropped for want of room since the last
    /// scan; None when the index holds every deferred message.
    horizon: Option<i64>,
}

impl DeferredIndex {
    pub(super) fn new(limit: usize) -> DeferredIndex {
        DeferredIndex {
            limit: limit.max(1),
            scan_after: i64::MIN,
            by_time: BTreeSet::new(),
            by_id: HashMap::new(),
            horizon: None,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn complete(&self) -> bool {
        self.horizon.is_none()
    }

    /// Forget everything: a scan of deferred/ follows, at `now`.
    pub(super) fn clear(&mut self, now: i64) {
        self.by_time.clear();
        self.by_id.clear();
        self.horizon = None;
        self.scan_after = now.saturating_add(RESCAN_SPACING);
    }

    /// Record (or move) `id`, due at `at`.
    pub(super) fn insert(&mut self, id: QueueId, at: i64) {
        self.remove(&id);
        if self.by_id.len() >= self.limit {
            let last = self.by_time.last().copied();
            match last {
                // The newcomer is due last: it is the one left out.
                Some((t, _)) if t <= at => {
                    self.lower_horizon(at);
                    return;
                }
                Some((t, old)) => {
                    self.by_time.remove(&(t, old));
                    self.by_id.remove(&old);
                    self.lower_horizon(t);
                }
                None => {}
            }
        }
        self.by_time.insert((at, id));
        self.by_id.insert(id, at);
    }

    fn lower_horizon(&mut self, at: i64) {
        self.horizon = Some(self.horizon.map_or(at, |h| h.min(at)));
    }

    pub(super) fn remove(&mut self, id: &QueueId) -> bool {
        match self.by_id.remove(id) {
            Some(at) => {
                self.by_time.remove(&(at, *id));
                true
            }
            None => false,
        }
    }

    /// The message due first, if it is due at `now`; taken out.
    pub(super) fn pop_due(&mut self, now: i64) -> Option<QueueId> {
        let &(at, id) = self.by_time.first()?;
        if at > now {
            return None;
        }
        self.by_time.remove(&(at, id));
        self.by_id.remove(&id);
        Some(id)
    }

    pub(super) fn has_due(&self, now: i64) -> bool {
        self.by_time.first().is_some_and(|&(at, _)| at <= now)
    }

    /// When the next message is due, or a scan is needed.
    pub(super) fn next_event(&self) -> Option<i64> {
        let first = self.by_time.first().map(|&(at, _)| at);
        match (first, self.horizon.map(|h| h.max(self.scan_after))) {
            (Some(a), Some(h)) => Some(a.min(h)),
            (a, h) => a.or(h),
        }
    }

    /// Whether messages outside the index may be due at `now`, and the
    /// last scan is far enough behind.
    pub(super) fn wants_scan(&self, now: i64) -> bool {
        self.horizon.is_some_and(|h| h <= now) && now >= self.scan_after
    }
}

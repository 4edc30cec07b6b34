//! One destination's queue: the recipients waiting for it, grouped by
//! message, and its concurrency window with Postfix's feedback.
//!
//! The window is how many deliveries may run to the destination at once.
//! It starts at `initial_concurrency`. Every delivery that reached the
//! site adds 1/window to a success account, and each whole unit in it
//! widens the window by one: the window grows by about one per window's
//! worth of successes (slow start, bounded by `concurrency_limit`, and
//! only while the window is less than the deliveries in flight plus
//! `initial_concurrency`, so an idle destination does not earn a window it
//! never used). Every delivery that could not reach the site (no
//! connection, no greeting) takes 1/window from a failure account; the
//! first failure after a change narrows the window by one at once, then
//! one per window's worth of failures, never below one. The same failures
//! are counted in *cohorts* (1/window each, reset by any success): when
//! `failed_cohort_limit` cohorts have failed in a row the destination is
//! dead: nothing more is sent to it until its retry time, and whatever
//! waits for it is deferred. At a window of one, a single failure is a
//! whole cohort.
//!
//! Trusts: nothing; it holds numbers and queue IDs.

use std::collections::VecDeque;

use crate::queue::QueueId;

use super::settings::TransportSettings;

/// A message's recipients waiting for this destination, by index.
pub(super) struct Entry {
    pub(super) message: QueueId,
    pub(super) recipients: VecDeque<u32>,
}

/// Why and until when a destination is not tried.
pub(super) struct Dead {
    pub(super) until: i64,
    pub(super) reason: String,
}

pub(super) struct DestinationQueue {
    /// Deliveries allowed at once; 0 while dead.
    pub(super) window: u32,
    success: f64,
    failure: f64,
    fail_cohorts: f64,
    /// Deliveries running.
    pub(super) busy: u32,
    pub(super) dead: Option<Dead>,
    /// Waiting recipients, oldest message first; no entry is empty.
    pub(super) todo: VecDeque<Entry>,
    /// Recipients in `todo`.
    pub(super) queued: usize,
    /// Whether the destination's key is in its transport's ring.
    pub(super) in_ring: bool,
}

impl DestinationQueue {
    pub(super) fn new(ts: &TransportSettings) -> DestinationQueue {
        DestinationQueue {
            window: ts.initial_concurrency.clamp(1, ts.concurrency_limit.max(1)),
            success: 0.0,
            failure: 0.0,
            fail_cohorts: 0.0,
            busy: 0,
            dead: None,
            todo: VecDeque::new(),
            queued: 0,
            in_ring: false,
        }
    }

    /// Whether a delivery could start now.
    pub(super) fn eligible(&self) -> bool {
        self.dead.is_none() && self.queued > 0 && self.busy < self.window
    }

    /// Nothing waits and nothing runs.
    pub(super) fn idle(&self) -> bool {
        self.busy == 0 && self.queued == 0
    }

    /// A delivery reached the site. Brings a dead destination back.
    pub(super) fn reached(&mut self, ts: &TransportSettings) {
        if self.dead.is_some() {
            self.revive(ts);
            return;
        }
        self.fail_cohorts = 0.0;
        let limit = ts.concurrency_limit.max(1);
        let room = self.busy.saturating_add(ts.initial_concurrency);
        if self.window < limit && self.window < room {
            let feedback = 1.0 / f64::from(self.window);
            self.success += feedback;
            // Half a step of tolerance absorbs rounding.
            while self.success + feedback / 2.0 >= 1.0 {
                self.window += 1;
                self.success -= 1.0;
                self.failure = 0.0;
            }
            self.window = self.window.min(limit);
        }
    }

    /// A delivery could not reach the site. Returns true when this failure
    /// made the destination dead (the caller records until when, and why).
    pub(super) fn unreachable(&mut self, ts: &TransportSettings) -> bool {
        if self.dead.is_some() {
            return false;
        }
        let window = f64::from(self.window.max(1));
        self.fail_cohorts += 1.0 / window;
        if ts.failed_cohort_limit > 0 && self.fail_cohorts + 1e-9 >= f64::from(ts.failed_cohort_limit) {
            self.window = 0;
            return true;
        }
        let feedback = 1.0 / window;
        self.failure -= feedback;
        while self.failure - feedback / 2.0 < 0.0 {
            self.window = self.window.saturating_sub(1);
            self.success = 0.0;
            self.failure += 1.0;
        }
        self.window = self.window.max(1);
        false
    }

    /// Out of the dead state: the window is a guess again (the deliveries
    /// still running, or the initial concurrency).
    pub(super) fn revive(&mut self, ts: &TransportSettings) {
        self.dead = None;
        let limit = ts.concurrency_limit.max(1);
        self.window = self.busy.max(ts.initial_concurrency).clamp(1, limit);
        self.success = 0.0;
        self.failure = 0.0;
        self.fail_cohorts = 0.0;
    }

    /// Queue recipients of `message`.
    pub(super) fn push(&mut self, message: QueueId, recipients: Vec<u32>) {
        if recipients.is_empty() {
            return;
        }
        self.queued += recipients.len();
        self.todo.push_back(Entry { message, recipients: recipients.into() });
    }

    /// Up to `limit` recipients of the oldest waiting message, for one
    /// delivery.
    pub(super) fn take(&mut self, limit: usize) -> Option<(QueueId, Vec<u32>)> {
        let entry = self.todo.front_mut()?;
        let n = entry.recipients.len().min(limit.max(1));
        let taken: Vec<u32> = entry.recipients.drain(..n).collect();
        let message = entry.message;
        if entry.recipients.is_empty() {
            self.todo.pop_front();
        }
        self.queued -= taken.len();
        Some((message, taken))
    }

    /// Everything waiting, taken out.
    pub(super) fn take_all(&mut self) -> Vec<Entry> {
        self.queued = 0;
        self.todo.drain(..).collect()
    }

    /// Forget the waiting recipients of `message`.
    pub(super) fn remove_message(&mut self, message: &QueueId) {
        let mut removed = 0;
        self.todo.retain(|e| {
            let keep = e.message != *message;
            if !keep {
                removed += e.recipients.len();
            }
            keep
        });
        self.queued -= removed;
    }
}

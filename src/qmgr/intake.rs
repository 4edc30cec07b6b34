//! The names of incoming/ waiting for room in the active queue, and the
//! messages whose file could not be removed or deferred ("stuck"), which
//! a listing of incoming/ must not take again: their mail was delivered
//! (or is deferred) and taking them would deliver it again at every
//! listing (the spool remounted read-only after disk errors: no file can
//! be removed, nor its recipients recorded done).
//!
//! Both are bounded. Past [`Intake::new`]'s `max_waiting` names a listing
//! finds the rest later. Past `max_stuck` a stuck message cannot be
//! remembered, so from then on no listing is taken at all, only the names
//! cleanup announces (a file it has just written), until qmgr starts
//! again and reads every file anew: a message delivered twice at most,
//! never at every listing.
//!
//! Trusts: nothing; names are queue IDs already.

use std::collections::{HashSet, VecDeque};

use crate::queue::QueueId;

pub struct Intake {
    waiting: VecDeque<QueueId>,
    /// The same names, to take each once.
    waiting_set: HashSet<QueueId>,
    max_waiting: usize,
    stuck: HashSet<QueueId>,
    max_stuck: usize,
    /// A stuck message could not be remembered: listings are not taken.
    overflowed: bool,
}

/// What became of a name offered.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// Active, stuck or waiting already.
    Skipped,
    /// No room to wait: a listing finds it later.
    Full,
}

impl Intake {
    pub fn new(max_waiting: usize, max_stuck: usize) -> Intake {
        Intake {
            waiting: VecDeque::new(),
            waiting_set: HashSet::new(),
            max_waiting,
            stuck: HashSet::new(),
            max_stuck,
            overflowed: false,
        }
    }

    /// Queue a name for admission, once (`active`: the message is in the
    /// active queue, not to be taken again).
    pub fn offer(&mut self, id: QueueId, active: bool) -> Offer {
        if active || self.stuck.contains(&id) || self.waiting_set.contains(&id) {
            return Offer::Skipped;
        }
        if self.waiting.len() >= self.max_waiting {
            return Offer::Full;
        }
        self.waiting_set.insert(id);
        self.waiting.push_back(id);
        Offer::Queued
    }

    /// Whether the names a listing of incoming/ finds may be taken: not
    /// once a stuck message could not be remembered (see the module
    /// documentation).
    pub fn takes_listings(&self) -> bool {
        !self.overflowed
    }

    /// The names a listing found, offered (nothing when listings are not
    /// taken); whether one found no room (list again later).
    pub fn listed(&mut self, ids: Vec<QueueId>, active: impl Fn(&QueueId) -> bool) -> bool {
        if !self.takes_listings() {
            return false;
        }
        let mut full = false;
        for id in ids {
            full |= self.offer(id, active(&id)) == Offer::Full;
        }
        full
    }

    /// The next name to take.
    pub fn pop(&mut self) -> Option<QueueId> {
        let id = self.waiting.pop_front()?;
        self.waiting_set.remove(&id);
        Some(id)
    }

    /// A name taken that found no room: first in line again.
    pub fn put_back(&mut self, id: QueueId) {
        if self.waiting_set.insert(id) {
            self.waiting.push_front(id);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// A message whose file could not be removed or deferred. True the
    /// first time one could not be remembered: from now on listings are
    /// not taken (say so).
    pub fn stuck(&mut self, id: QueueId) -> bool {
        if self.stuck.len() < self.max_stuck {
            self.stuck.insert(id);
            return false;
        }
        !std::mem::replace(&mut self.overflowed, true)
    }

    pub fn is_stuck(&self, id: &QueueId) -> bool {
        self.stuck.contains(id)
    }

    /// How many stuck messages are remembered.
    pub fn stuck_len(&self) -> usize {
        self.stuck.len()
    }

    /// Forget `id` (the operator moved or deleted it).
    pub fn forget(&mut self, id: &QueueId) {
        if self.waiting_set.remove(id) {
            self.waiting.retain(|x| x != id);
        }
        self.stuck.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueIdGen;

    #[test]
    fn names_wait_once_and_within_their_bound() {
        let mut ids = QueueIdGen::new(1);
        let (a, b, c) = (ids.next_id(), ids.next_id(), ids.next_id());
        let mut i = Intake::new(2, 10);
        assert_eq!(i.offer(a, false), Offer::Queued);
        assert_eq!(i.offer(a, false), Offer::Skipped);
        assert_eq!(i.offer(b, true), Offer::Skipped, "active");
        assert_eq!(i.offer(b, false), Offer::Queued);
        assert_eq!(i.offer(c, false), Offer::Full);
        assert_eq!(i.pop(), Some(a));
        i.put_back(a);
        assert_eq!((i.pop(), i.pop(), i.pop()), (Some(a), Some(b), None));
    }

    /// Four messages delivered whose files cannot be removed (a read-only
    /// spool), with room to remember two: listings of incoming/ find all
    /// four at every turn, and none may be taken again.
    #[test]
    fn past_the_stuck_bound_listings_are_not_taken() {
        let mut ids = QueueIdGen::new(1);
        let stuck: Vec<QueueId> = (0..4).map(|_| ids.next_id()).collect();
        let mut i = Intake::new(100, 2);
        assert!(!i.stuck(stuck[0]) && !i.stuck(stuck[1]));
        assert!(i.takes_listings());
        // Remembered ones are skipped by a listing; a new one is taken.
        let new = ids.next_id();
        assert!(!i.listed(vec![stuck[0], stuck[1], new], |_| false));
        assert_eq!((i.pop(), i.pop()), (Some(new), None));
        // The third cannot be remembered: said once, and from now on no
        // listing is taken (it would be delivered again at each).
        assert!(i.stuck(stuck[2]), "the first one forgotten is reported");
        assert!(!i.stuck(stuck[3]), "and only the first");
        assert!(!i.takes_listings());
        let newer = ids.next_id();
        i.listed(stuck.clone().into_iter().chain([newer]).collect(), |_| false);
        assert!(i.is_empty(), "a listing was taken");
        // A file cleanup announces is still taken.
        assert_eq!(i.offer(newer, false), Offer::Queued);
        assert_eq!(i.pop(), Some(newer));
        assert_eq!(i.stuck_len(), 2);
    }
}

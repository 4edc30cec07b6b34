//! Taking a message into the active queue, from its envelope and the
//! recipients' statuses as stored: the same function serves new mail,
//! deferred mail, a restart (where it rebuilds everything from the files)
//! and the next slice of a big message. Done recipients are skipped; each
//! other recipient is routed and queued for its destination, or deferred
//! at once when that destination is dead.
//!
//! Trusts: the envelope and statuses come from validated queue files.

use std::collections::HashMap;

use crate::queue::{Envelope, MAX_RECIPIENTS, QueueId, Recipient, Time};

use super::message::{self, Message, Origin, Take};
use super::route::{Destination, route};
use super::{Action, Error, Outcome, Scheduler};

impl Scheduler {
    /// Take message `id` into the active queue (or its next slice after
    /// [`Action::LoadMore`]): `envelope` and `recipients` as read from its
    /// queue file, `origin` where the file was. Returns what to do at once
    /// (statuses of recipients whose destination is dead, or the whole
    /// message when nothing in it needs delivery). On an error nothing
    /// changed.
    pub fn add_message(
        &mut self,
        id: QueueId,
        envelope: &Envelope,
        recipients: &[Recipient],
        origin: Origin,
        now: Time,
    ) -> Result<Vec<Action>, Error> {
        self.expire_dead(now);
        if recipients.len() > MAX_RECIPIENTS {
            return Err(Error::TooManyRecipients(id));
        }
        let (from, origin, reserved) = match self.messages.get(&id) {
            Some(m) if m.reloading => (m.next.map_or(recipients.len(), |n| n as usize), m.origin, m.reserved),
            Some(_) => return Err(Error::AlreadyActive(id)),
            None if self.messages.len() >= self.settings.active_messages => return Err(Error::NoRoom(id)),
            None => (0, origin, 0),
        };
        let available = self.settings.active_recipients.saturating_sub(self.recipients) + reserved;
        // One message never holds more than half the room, so others
        // always find some.
        let cap = available.min((self.settings.active_recipients / 2).max(1));
        let (picked, next) = message::select(recipients, from, cap, origin);
        if picked.is_empty() && next.is_some() {
            return Err(Error::NoRoom(id));
        }
        self.deferred.remove(&id);

        let m = self.messages.entry(id).or_insert_with(|| Message {
            arrival: envelope.arrival,
            null_sender: envelope.sender.is_empty(),
            origin,
            rcpts: Vec::new(),
            unsettled: 0,
            destinations: Vec::new(),
            next: None,
            reloading: false,
            reserved: 0,
            any_deferred: false,
        });
        self.recipients = self.recipients - reserved + picked.len();
        m.reloading = false;
        m.reserved = 0;
        m.next = next;
        m.destinations.clear();

        // Group the recipients to deliver by destination, in file order.
        let mut groups: Vec<(Destination, Vec<u32>)> = Vec::new();
        let mut group_of: HashMap<Destination, usize> = HashMap::new();
        for &(index, take) in &picked {
            let r = &recipients[index as usize];
            m.rcpts.push(message::rcpt(index, r, take));
            if take == Take::Deliver {
                m.unsettled += 1;
                let d = route(&r.address, &self.routing);
                let g = *group_of.entry(d.clone()).or_insert_with(|| {
                    groups.push((d, Vec::new()));
                    groups.len() - 1
                });
                groups[g].1.push(index);
            }
        }
        m.destinations = groups.iter().map(|(d, _)| d.clone()).collect();

        let mut actions = Vec::new();
        let mut suspended: Vec<(u32, String)> = Vec::new();
        for (d, indexes) in groups {
            let ts = *self.settings.transport(d.transport);
            let q = self.destinations.entry(d.clone()).or_insert_with(|| super::DestinationQueue::new(&ts));
            match &q.dead {
                Some(dead) => suspended.extend(indexes.into_iter().map(|i| (i, dead.reason.clone()))),
                None => {
                    q.push(id, indexes);
                    self.refresh(&d);
                }
            }
        }
        let settled_now = self.messages.get(&id).is_some_and(|m| m.unsettled == 0);
        for (index, reason) in suspended {
            self.settle(
                id,
                index,
                Outcome::Deferred { reason: suspended_reason(&reason) },
                super::deliver::Source::Queued,
                None,
                now,
                &mut actions,
            );
        }
        if settled_now {
            self.slice_done(id, now, &mut actions);
        }
        Ok(actions)
    }

    /// Forget message `id` wherever the scheduler holds it (its file is
    /// gone, corrupt, held or deleted): the active queue, its queued
    /// recipients, the deferred index. Deliveries running for it finish
    /// without effect on it. Returns whether it was known.
    pub fn drop_message(&mut self, id: &QueueId) -> bool {
        let indexed = self.deferred.remove(id);
        let Some(m) = self.messages.remove(id) else { return indexed };
        self.recipients -= m.rcpts.len() + m.reserved;
        for d in &m.destinations {
            if let Some(q) = self.destinations.get_mut(d) {
                q.remove_message(id);
            }
            self.forget_if_idle(d);
        }
        true
    }
}

/// The reason given to recipients of a dead destination, with a status
/// code in front as qmgr's own reasons have (4.4.1, no answer from the
/// host, as Postfix reports it), so that mailq and a delay or expiry
/// notice show one rather than 4.0.0 or 5.0.0.
pub(super) fn suspended_reason(reason: &str) -> String {
    format!("4.4.1 delivery temporarily suspended: {reason}")
}

//! A message in the active queue: the slice of its recipients held in
//! memory, where each stands in this pass, and what the sender must be
//! told when the slice is finished.
//!
//! A message's recipients are taken in slices so that the recipients in
//! memory stay within `active_recipients` whatever a message holds (up to
//! 100,000): a slice is what fits, and when it is finished the shell reads
//! the file again and hands over the next one ([`super::Action::LoadMore`]).
//! Each slice ends with its own notices, so a message that needed several
//! slices may cause several reports to the sender.
//!
//! Which recipients a pass takes from the file: pending and deferred ones
//! (to deliver), done ones never, and bounced ones only to report them
//! again when the message did not come from deferred/ (see [`Origin`]).
//!
//! Trusts: nothing; the statuses come from validated queue files.

use crate::bounce::Kind;
use crate::queue::{Notify, Recipient, State, Time};

use super::JobId;

/// Where a message was when the shell read it; it decides whether
/// recipients already bounced still owe the sender a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// incoming/: new mail, or mail whose last pass was cut short by a
    /// crash (the shell moves active/ back to incoming/ at start-up). A
    /// bounced recipient may not have been reported yet, so it is reported
    /// (again, perhaps: duplicates, never losses).
    Incoming,
    /// deferred/: the pass that bounced a recipient reported it before the
    /// message was deferred, so it is not reported again.
    Deferred,
}

/// Recipients the sender is to be told about, by index in the queue file,
/// per kind of delivery status notification. The reasons are in the
/// recipients' statuses, already written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notices {
    /// Bounced, with NOTIFY absent or including FAILURE. For mail from the
    /// null sender this is a bounce of a bounce, for the postmaster.
    pub failure: Vec<u32>,
    /// Deferred past `queue.delay_warning` for the first time, with NOTIFY
    /// absent or including DELAY (never for the null sender).
    pub delay: Vec<u32>,
    /// Delivered with NOTIFY=SUCCESS where the next hop did not take the
    /// request over (never for the null sender).
    pub success: Vec<u32>,
}

impl Notices {
    pub fn is_empty(&self) -> bool {
        self.failure.is_empty() && self.delay.is_empty() && self.success.is_empty()
    }

    /// The kinds of report needed.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut k = Vec::new();
        if !self.failure.is_empty() {
            k.push(Kind::Failure);
        }
        if !self.delay.is_empty() {
            k.push(Kind::Delay);
        }
        if !self.success.is_empty() {
            k.push(Kind::Success);
        }
        k
    }
}

/// Whether NOTIFY asks for a report of this kind (the bounce module's rule).
pub(super) use crate::bounce::notify_wants as wants;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RcptState {
    /// Waiting in its destination's queue.
    Queued,
    /// Handed to a delivery agent.
    InFlight(JobId),
    Done {
        success_notice: bool,
    },
    Deferred,
    Bounced {
        failure_notice: bool,
    },
}

pub(super) struct Rcpt {
    pub(super) index: u32,
    pub(super) address: Box<str>,
    pub(super) notify: Option<Notify>,
    /// Attempts as stored when loaded.
    pub(super) attempts: u32,
    /// Last change as stored when loaded (for the delay warning).
    pub(super) changed: i64,
    pub(super) state: RcptState,
}

pub(super) struct Message {
    pub(super) arrival: Time,
    pub(super) null_sender: bool,
    pub(super) origin: Origin,
    /// The slice in memory, by index ascending.
    pub(super) rcpts: Vec<Rcpt>,
    /// Recipients of the slice not yet done, deferred or bounced.
    pub(super) unsettled: usize,
    /// The destinations the slice's recipients were queued for.
    pub(super) destinations: Vec<super::Destination>,
    /// The first recipient not looked at yet; None when the file has no
    /// more for this pass.
    pub(super) next: Option<u32>,
    /// Waiting for the shell to hand over the next slice.
    pub(super) reloading: bool,
    /// Room kept for the next slice while `reloading`.
    pub(super) reserved: usize,
    /// Some recipient was deferred in an earlier slice of this pass.
    pub(super) any_deferred: bool,
}

impl Message {
    pub(super) fn rcpt_mut(&mut self, index: u32) -> Option<&mut Rcpt> {
        let at = self.rcpts.binary_search_by_key(&index, |r| r.index).ok()?;
        self.rcpts.get_mut(at)
    }

    /// What the sender is to be told about the finished slice. `warn_at` is
    /// when the delay warning falls due (None: off).
    pub(super) fn notices(&self, warn_at: Option<i64>, now: i64) -> Notices {
        let mut n = Notices::default();
        for r in &self.rcpts {
            match r.state {
                RcptState::Bounced { failure_notice: true } => n.failure.push(r.index),
                RcptState::Done { success_notice: true } if !self.null_sender => n.success.push(r.index),
                RcptState::Deferred if !self.null_sender && wants(r.notify, Kind::Delay) => {
                    // Warn in the pass that first ends past the warning
                    // time: the one whose previous change came before it.
                    if let Some(at) = warn_at
                        && r.changed < at
                        && at <= now
                    {
                        n.delay.push(r.index);
                    }
                }
                _ => {}
            }
        }
        n
    }
}

/// What a pass does with a stored recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Take {
    /// Deliver it.
    Deliver,
    /// Already bounced; report it.
    Report,
}

/// Whether a pass takes this recipient, and for what.
pub(super) fn take(r: &Recipient, origin: Origin) -> Option<Take> {
    match r.status.state {
        State::Pending | State::Deferred => Some(Take::Deliver),
        State::Bounced if origin == Origin::Incoming && wants(r.notify, Kind::Failure) => Some(Take::Report),
        State::Bounced | State::Done => None,
    }
}

/// The next slice: up to `cap` recipients the pass takes, from index
/// `from` on, and the index to go on from when more remain.
pub(super) fn select(
    recipients: &[Recipient],
    from: usize,
    cap: usize,
    origin: Origin,
) -> (Vec<(u32, Take)>, Option<u32>) {
    let mut picked = Vec::new();
    for (i, r) in recipients.iter().enumerate().skip(from) {
        if let Some(t) = take(r, origin) {
            if picked.len() >= cap {
                return (picked, Some(i as u32));
            }
            picked.push((i as u32, t));
        }
    }
    (picked, None)
}

/// A new recipient entry for the slice.
pub(super) fn rcpt(index: u32, r: &Recipient, take: Take) -> Rcpt {
    let state = match take {
        Take::Deliver => RcptState::Queued,
        Take::Report => RcptState::Bounced { failure_notice: true },
    };
    Rcpt {
        index,
        address: r.address.as_str().into(),
        notify: r.notify,
        attempts: r.status.attempts,
        changed: r.status.changed,
        state,
    }
}

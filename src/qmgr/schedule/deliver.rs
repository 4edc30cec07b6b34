//! Running deliveries: choosing the next one (round robin over the
//! transports and, within a transport, over the destinations that may
//! start one), taking the agent's report (feedback for the destination's
//! window, a status for each recipient), declaring a destination dead and
//! bringing it back, and finishing a message when none of its recipients
//! is left to deliver in this pass.
//!
//! Trusts: the agent's report is checked against the job before anything
//! changes.

use std::collections::HashMap;

use crate::bounce::Kind;
use crate::queue::file::stored_reason;
use crate::queue::{QueueId, State, Status, Time};

use super::destination::Dead;
use super::load::suspended_reason;
use super::message::{RcptState, wants};
use super::retry::{deferred_subdir, expired, next_attempt};
use super::route::Destination;
use super::settings::secs;
use super::{Action, Error, Fate, Job, JobId, JobRecipient, Outcome, Report, Running, Scheduler, SiteStatus};

impl Scheduler {
    /// The next delivery to start, if a transport has a free process and
    /// a destination may start one. Call until None. Destinations take
    /// turns, one delivery each, so a destination with much mail cannot
    /// starve one with little; a delivery takes up to `recipient_limit`
    /// recipients of the destination's oldest message.
    pub fn next_job(&mut self, now: Time) -> Option<Job> {
        self.expire_dead(now);
        for k in 0..self.rings.len() {
            let t = (self.next_transport + k) % self.rings.len();
            let transport = super::Transport::ALL[t];
            let ts = *self.settings.transport(transport);
            if self.busy[t] >= ts.processes {
                continue;
            }
            while let Some(d) = self.rings[t].pop_front() {
                let Some(q) = self.destinations.get_mut(&d) else { continue };
                if !q.eligible() {
                    q.in_ring = false;
                    self.forget_if_idle(&d);
                    continue;
                }
                let Some((message, indexes)) = q.take(ts.recipient_limit) else { continue };
                q.busy += 1;
                if q.eligible() {
                    self.rings[t].push_back(d.clone());
                } else {
                    q.in_ring = false;
                }
                self.busy[t] += 1;
                self.next_transport = (t + 1) % self.rings.len();
                let id = JobId(self.next_job);
                self.next_job += 1;
                let mut recipients = Vec::with_capacity(indexes.len());
                if let Some(m) = self.messages.get_mut(&message) {
                    for &i in &indexes {
                        if let Some(r) = m.rcpt_mut(i)
                            && r.state == RcptState::Queued
                        {
                            r.state = RcptState::InFlight(id);
                            recipients.push(JobRecipient { index: i, address: r.address.to_string() });
                        }
                    }
                }
                let indexes: Vec<u32> = recipients.iter().map(|r| r.index).collect();
                self.jobs.insert(id, Running { destination: d.clone(), message, recipients: indexes });
                if recipients.is_empty() {
                    // Cannot happen (a dropped message leaves no queued
                    // recipients); end the empty job rather than hand it out.
                    self.end_job(id, &SiteStatus::Unknown, &HashMap::new(), "", now);
                    continue;
                }
                return Some(Job { id, destination: d, message, recipients });
            }
        }
        None
    }

    /// A delivery agent's report on a job. Returns the statuses to write
    /// and messages finished. A report naming a recipient outside the job,
    /// or one twice, is refused with nothing changed.
    pub fn job_finished(&mut self, job: JobId, report: &Report, now: Time) -> Result<Vec<Action>, Error> {
        let running = self.jobs.get(&job).ok_or(Error::UnknownJob(job))?;
        let mut outcomes: HashMap<u32, &Outcome> = HashMap::with_capacity(report.outcomes.len());
        for (index, outcome) in &report.outcomes {
            if !running.recipients.contains(index) {
                return Err(Error::BadReport { job, why: format!("recipient #{index} is not part of it") });
            }
            if outcomes.insert(*index, outcome).is_some() {
                return Err(Error::BadReport { job, why: format!("recipient #{index} reported twice") });
            }
        }
        let fallback = match &report.site {
            SiteStatus::Unreachable { reason } => reason.clone(),
            _ => String::from("the delivery agent said nothing about this recipient"),
        };
        Ok(self.end_job(job, &report.site, &outcomes, &fallback, now))
    }

    /// A job ended without a usable report (the agent died, or its report
    /// was refused): every recipient is deferred with `reason`, and the
    /// destination gets no feedback.
    pub fn job_failed(&mut self, job: JobId, reason: &str, now: Time) -> Result<Vec<Action>, Error> {
        if !self.jobs.contains_key(&job) {
            return Err(Error::UnknownJob(job));
        }
        Ok(self.end_job(job, &SiteStatus::Unknown, &HashMap::new(), reason, now))
    }

    fn end_job(
        &mut self,
        job: JobId,
        site: &SiteStatus,
        outcomes: &HashMap<u32, &Outcome>,
        fallback: &str,
        now: Time,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(running) = self.jobs.remove(&job) else { return actions };
        self.expire_dead(now);
        let d = running.destination;
        let t = d.transport.index();
        self.busy[t] = self.busy[t].saturating_sub(1);
        let died = self.feedback(&d, site, now);

        for &index in &running.recipients {
            let (outcome, source) = match outcomes.get(&index) {
                Some(o) => ((*o).clone(), Source::Agent),
                None => (Outcome::Deferred { reason: fallback.to_string() }, Source::Unreported),
            };
            self.settle(running.message, index, outcome, source, Some(job), now, &mut actions);
        }
        if let Some(reason) = died {
            let waiting = self.destinations.get_mut(&d).map(|q| q.take_all()).unwrap_or_default();
            let reason = suspended_reason(&reason);
            for e in waiting {
                for index in e.recipients {
                    self.settle(
                        e.message,
                        index,
                        Outcome::Deferred { reason: reason.clone() },
                        Source::Queued,
                        None,
                        now,
                        &mut actions,
                    );
                }
            }
        }
        self.refresh(&d);
        self.forget_if_idle(&d);
        self.bound_dead();
        actions
    }

    /// Apply a report's feedback to the destination and count the job out
    /// of it. Returns the reason when this made it dead.
    fn feedback(&mut self, d: &Destination, site: &SiteStatus, now: Time) -> Option<String> {
        let ts = *self.settings.transport(d.transport);
        let q = self.destinations.get_mut(d)?;
        let dead_until = q.dead.as_ref().map(|x| x.until);
        let mut died = None;
        match site {
            SiteStatus::Reached => q.reached(&ts),
            SiteStatus::Unreachable { reason } => {
                if q.unreachable(&ts) {
                    let until = now.secs.saturating_add(secs(ts.dead_time));
                    q.dead = Some(Dead { until, reason: stored_reason(reason).into_owned() });
                    died = Some(reason.clone());
                }
            }
            SiteStatus::Unknown => {}
        }
        q.busy = q.busy.saturating_sub(1);
        let now_until = q.dead.as_ref().map(|x| x.until);
        if let Some(u) = dead_until
            && now_until.is_none()
        {
            self.dead.remove(&(u, d.clone()));
        }
        if let Some(u) = now_until
            && dead_until.is_none()
        {
            self.dead.insert((u, d.clone()));
        }
        died
    }

    /// Bring back dead destinations whose time has come (and forget those
    /// with nothing to do).
    pub(super) fn expire_dead(&mut self, now: Time) {
        while let Some((until, d)) = self.dead.first().cloned() {
            if until > now.secs {
                break;
            }
            self.dead.pop_first();
            self.revive_dead(until, &d);
        }
    }

    /// Destination `d`, dead until `until` (its entry taken out of the
    /// dead set), is tried again.
    fn revive_dead(&mut self, until: i64, d: &Destination) {
        let ts = *self.settings.transport(d.transport);
        if let Some(q) = self.destinations.get_mut(d)
            && q.dead.as_ref().is_some_and(|x| x.until == until)
        {
            q.revive(&ts);
        }
        self.refresh(d);
        self.forget_if_idle(d);
    }

    /// The wall clock was set back while qmgr ran (the shell tells, from
    /// its monotonic clock): a destination dead until a time further
    /// ahead than its `dead_time` from `now` would rest that much longer;
    /// it is tried again now. (The shell indexes deferred/ again for the
    /// same reason: see `qmgr::Qmgr::scan_deferred`.)
    pub fn clock_went_back(&mut self, now: Time) {
        let settings = &self.settings;
        let late: Vec<(i64, Destination)> = self
            .dead
            .iter()
            .filter(|(until, d)| *until > now.secs.saturating_add(secs(settings.transport(d.transport).dead_time)))
            .cloned()
            .collect();
        for (until, d) in late {
            self.dead.remove(&(until, d.clone()));
            self.revive_dead(until, &d);
        }
    }

    /// Keep at most `active_recipients` dead destinations with nothing
    /// running: forget those tried again soonest first (the worst that
    /// happens is one more attempt).
    fn bound_dead(&mut self) {
        let cap = self.settings.active_recipients;
        while self.dead.len() > cap {
            let idle = self.dead.iter().find(|(_, d)| self.destinations.get(d).is_none_or(|q| q.busy == 0)).cloned();
            let Some((until, d)) = idle else { break };
            self.dead.remove(&(until, d.clone()));
            // Alive again, with a window: one kept (queued in the ring)
            // with none would never be given a delivery.
            self.revive_dead(until, &d);
        }
    }

    /// Give recipient `index` of message `id` its outcome: the status to
    /// write and, when it was the last of its slice, the message's end.
    /// `job` is the delivery it was in (None: it was queued), `source`
    /// who decided the outcome. A deferral of a message past its lifetime
    /// is a bounce.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn settle(
        &mut self,
        id: QueueId,
        index: u32,
        outcome: Outcome,
        source: Source,
        job: Option<JobId>,
        now: Time,
        actions: &mut Vec<Action>,
    ) {
        let Some(m) = self.messages.get_mut(&id) else { return };
        let is_expired = expired(m.arrival, m.null_sender, now, &self.settings);
        let retry_at = next_attempt(m.arrival, now, &self.settings.backoff);
        let Some(r) = m.rcpt_mut(index) else { return };
        match (job, r.state) {
            (Some(j), RcptState::InFlight(k)) if j == k => {}
            (None, RcptState::Queued) => {}
            _ => return,
        }
        let attempts = r.attempts.saturating_add(u32::from(source != Source::Queued));
        let mut log = source != Source::Agent;
        let (state, action, next, reason) = match outcome {
            Outcome::Delivered { reason, dsn_passed, action } => {
                r.state = RcptState::Done { success_notice: !dsn_passed && wants(r.notify, Kind::Success) };
                (State::Done, Some(action), 0, reason)
            }
            Outcome::Bounced { reason } => {
                r.state = RcptState::Bounced { failure_notice: wants(r.notify, Kind::Failure) };
                (State::Bounced, None, 0, reason)
            }
            Outcome::Deferred { reason } if is_expired => {
                log = true;
                r.state = RcptState::Bounced { failure_notice: wants(r.notify, Kind::Failure) };
                (State::Bounced, None, 0, format!("message expired in the queue; last error: {reason}"))
            }
            Outcome::Deferred { reason } => {
                r.state = RcptState::Deferred;
                (State::Deferred, None, retry_at.secs, reason)
            }
        };
        let status = Status { state, action, attempts, next_attempt: next, changed: now.secs, reason };
        actions.push(Action::Write { message: id, recipient: index, status, log });
        m.unsettled = m.unsettled.saturating_sub(1);
        if m.unsettled == 0 {
            self.slice_done(id, now, actions);
        }
    }

    /// The slice in memory is finished: notices, then the next slice or
    /// the message's fate.
    pub(super) fn slice_done(&mut self, id: QueueId, now: Time, actions: &mut Vec<Action>) {
        let Some(m) = self.messages.get_mut(&id) else { return };
        let warn = secs(self.settings.delay_warning);
        let warn_at = (warn > 0).then(|| m.arrival.secs.saturating_add(warn));
        let notices = m.notices(warn_at, now.secs);
        if !notices.is_empty() {
            actions.push(Action::Notify { message: id, notices });
        }
        m.any_deferred |= m.rcpts.iter().any(|r| r.state == RcptState::Deferred);
        let held = m.rcpts.len();
        m.rcpts = Vec::new();
        if let Some(from) = m.next {
            // Keep the room for the next slice, so it cannot be starved.
            m.reloading = true;
            m.reserved = held;
            actions.push(Action::LoadMore { message: id, from });
            return;
        }
        let (arrival, any_deferred) = (m.arrival, m.any_deferred);
        self.messages.remove(&id);
        self.recipients -= held;
        let fate = if any_deferred {
            let until = next_attempt(arrival, now, &self.settings.backoff);
            self.deferred.insert(id, until.secs);
            Fate::Defer { until, subdir: deferred_subdir(&id) }
        } else {
            Fate::Remove
        };
        actions.push(Action::Finish { message: id, fate });
    }
}

/// Who decided a recipient's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// The delivery agent's report (the agent logged it).
    Agent,
    /// A delivery that ended without a word on this recipient (the agent
    /// died or its report was refused).
    Unreported,
    /// No delivery: the recipient was queued (its destination is dead).
    Queued,
}

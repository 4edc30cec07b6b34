//! The scheduler's knobs and their defaults (Postfix's, where Postfix has
//! one). Each field is named the way its configuration key should be
//! named; the comment says the key. The configuration module maps the file
//! onto this struct; [`Settings::check`] refuses values the scheduler
//! cannot work with.
//!
//! Trusts: nothing; every value is checked before a scheduler takes it.

use std::time::Duration;

use super::route::Transport;

/// How long a deferred message waits before its next attempt: its time in
/// the queue, but at least `min` and at most `max` (so the wait doubles
/// from one attempt to the next until it reaches `max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// `queue.backoff.min`: the shortest wait (Postfix's
    /// `minimal_backoff_time`, 300 s).
    pub min: Duration,
    /// `queue.backoff.max`: the longest wait (Postfix's
    /// `maximal_backoff_time`, 4000 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { min: Duration::from_secs(300), max: Duration::from_secs(4000) }
    }
}

/// Limits and feedback of one transport (`transport.smtp.*`,
/// `transport.lmtp.*`, `transport.local.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportSettings {
    /// `transport.<name>.processes`: deliveries at once over all
    /// destinations of the transport (Postfix's `default_process_limit`,
    /// 100).
    pub processes: usize,
    /// `transport.<name>.initial_concurrency`: deliveries at once to a
    /// destination not yet proven (Postfix's
    /// `initial_destination_concurrency`, 5).
    pub initial_concurrency: u32,
    /// `transport.<name>.concurrency_limit`: most deliveries at once to one
    /// destination (Postfix's `default_destination_concurrency_limit`, 20).
    pub concurrency_limit: u32,
    /// `transport.<name>.recipient_limit`: most recipients in one delivery
    /// (Postfix's `default_destination_recipient_limit`, 50).
    pub recipient_limit: usize,
    /// `transport.<name>.failed_cohort_limit`: how many windows' worth of
    /// consecutive connection failures declare a destination dead; 0 never
    /// does (Postfix's `default_destination_concurrency_failed_cohort_limit`,
    /// 1).
    pub failed_cohort_limit: u32,
    /// `transport.<name>.dead_time`: how long a dead destination rests
    /// before it is tried again (Postfix uses `minimal_backoff_time`, 300 s).
    pub dead_time: Duration,
}

impl TransportSettings {
    /// The local transport's: as the others', but its destination is a
    /// whole local domain (every user's mailbox), not one next hop, so
    /// its concurrency limit is its process limit ([`Self::default_limit`]).
    pub fn local() -> TransportSettings {
        let d = TransportSettings::default();
        TransportSettings { concurrency_limit: TransportSettings::default_limit(true, d.processes), ..d }
    }

    /// The concurrency limit of a transport that sets none: 20, and for
    /// the local transport its `processes`. (With 20, twenty deliveries at
    /// once were all the users of a local domain got, and the local
    /// agent's batches, one flush each, were cut to twenty.)
    pub fn default_limit(local: bool, processes: usize) -> u32 {
        if local {
            u32::try_from(processes).unwrap_or(u32::MAX)
        } else {
            TransportSettings::default().concurrency_limit
        }
    }
}

impl Default for TransportSettings {
    fn default() -> TransportSettings {
        TransportSettings {
            processes: 100,
            initial_concurrency: 5,
            concurrency_limit: 20,
            recipient_limit: 50,
            failed_cohort_limit: 1,
            dead_time: Duration::from_secs(300),
        }
    }
}

/// Everything the scheduler is told by the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `queue.active_messages`: messages in the active queue at once
    /// (Postfix's `qmgr_message_active_limit`, 20,000).
    pub active_messages: usize,
    /// `queue.active_recipients`: recipients held in memory at once
    /// (Postfix's `qmgr_message_recipient_limit`, 20,000). A message with
    /// more is taken in slices; one message never holds more than half.
    pub active_recipients: usize,
    /// `queue.deferred_index`: deferred messages whose next attempt time is
    /// kept in memory (about 70 bytes each); beyond it the latest are
    /// forgotten and found again by a scan of deferred/ when they may be
    /// due. 500,000.
    pub deferred_index: usize,
    /// `queue.lifetime`: after this long in the queue a temporary failure
    /// becomes a bounce (Postfix's `maximal_queue_lifetime`, 5 days).
    pub lifetime: Duration,
    /// `queue.bounce_lifetime`: the same for mail from the null sender
    /// (bounces; Postfix's `bounce_queue_lifetime`, 5 days).
    pub bounce_lifetime: Duration,
    /// `queue.delay_warning`: after this long in the queue the sender is
    /// told once that the mail is delayed; zero turns it off (Postfix's
    /// `delay_warning_time`, off).
    pub delay_warning: Duration,
    /// `queue.backoff.min`, `queue.backoff.max`.
    pub backoff: Backoff,
    /// `transport.smtp.*`.
    pub smtp: TransportSettings,
    /// `transport.lmtp.*`.
    pub lmtp: TransportSettings,
    /// `transport.local.*`.
    pub local: TransportSettings,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            active_messages: 20_000,
            active_recipients: 20_000,
            deferred_index: 500_000,
            lifetime: Duration::from_secs(5 * 86_400),
            bounce_lifetime: Duration::from_secs(5 * 86_400),
            delay_warning: Duration::ZERO,
            backoff: Backoff::default(),
            smtp: TransportSettings::default(),
            lmtp: TransportSettings::default(),
            local: TransportSettings::local(),
        }
    }
}

impl Settings {
    /// The settings of one transport.
    pub fn transport(&self, t: Transport) -> &TransportSettings {
        match t {
            Transport::Smtp => &self.smtp,
            Transport::Lmtp => &self.lmtp,
            Transport::Local => &self.local,
        }
    }

    /// Refuse values the scheduler cannot work with, naming the key.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("queue.active_messages", self.active_messages),
            ("queue.active_recipients", self.active_recipients),
            ("queue.deferred_index", self.deferred_index),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(format!("key `{key}`: must be at least 1"));
            }
        }
        if self.backoff.min.is_zero() {
            return Err(String::from("key `queue.backoff.min`: must be longer than zero"));
        }
        if self.backoff.min > self.backoff.max {
            return Err(String::from("key `queue.backoff.max`: must not be shorter than queue.backoff.min"));
        }
        for tr in Transport::ALL {
            let (name, t) = (tr.as_str(), self.transport(tr));
            let key = |k: &str| format!("key `transport.{name}.{k}`");
            if t.processes == 0 {
                return Err(format!("{}: must be at least 1", key("processes")));
            }
            if t.initial_concurrency == 0 {
                return Err(format!("{}: must be at least 1", key("initial_concurrency")));
            }
            if t.concurrency_limit < t.initial_concurrency {
                return Err(format!("{}: must not be below initial_concurrency", key("concurrency_limit")));
            }
            if t.recipient_limit == 0 {
                return Err(format!("{}: must be at least 1", key("recipient_limit")));
            }
            if t.dead_time.is_zero() {
                return Err(format!("{}: must be longer than zero", key("dead_time")));
            }
        }
        Ok(())
    }
}

/// A duration in whole seconds as a signed number, saturating.
pub(super) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

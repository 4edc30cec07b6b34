//! Time rules of deferred mail, as pure functions: when a deferred message
//! is tried again, when it has been queued too long, and in which
//! subfolder of deferred/ it waits.
//!
//! The backoff is Postfix's: a message deferred after being queued for a
//! time *t* waits *t* again, but at least `backoff.min` and at most
//! `backoff.max`. Attempts therefore come at arrival + min, + 2 min, + 4
//! min, ... (the wait doubles) until the wait reaches `backoff.max`, and
//! then every `backoff.max`. The rule needs no per-message counter: the
//! arrival time in the envelope and the clock say everything, so it holds
//! across restarts and whatever the message went through.
//!
//! Trusts: nothing; times from files may be anything, and nothing here
//! overflows or panics on them.

use std::time::Duration;

use crate::queue::{QueueId, Time};

use super::settings::{Backoff, Settings, secs};

/// The wait before the next attempt of a message queued for `queued`.
pub fn retry_delay(queued: Duration, backoff: &Backoff) -> Duration {
    let max = backoff.max.max(backoff.min);
    queued.clamp(backoff.min, max)
}

/// When a message that arrived at `arrival` and is deferred at `now` is
/// tried next. A clock that went back (arrival after now) counts as no
/// time in the queue.
pub fn next_attempt(arrival: Time, now: Time, backoff: &Backoff) -> Time {
    let queued = Duration::from_secs(u64::try_from(now.secs.saturating_sub(arrival.secs)).unwrap_or(0));
    Time { secs: now.secs.saturating_add(secs(retry_delay(queued, backoff))), micros: 0 }
}

/// Whether a message from `sender` that arrived at `arrival` has been
/// queued for its whole lifetime at `now` (mail from the null sender has
/// its own, `bounce_lifetime`). A temporary failure of such a message is
/// a bounce.
pub fn expired(arrival: Time, null_sender: bool, now: Time, settings: &Settings) -> bool {
    let lifetime = if null_sender { settings.bounce_lifetime } else { settings.lifetime };
    now.secs >= arrival.secs.saturating_add(secs(lifetime))
}

/// The subfolders of deferred/, one hexadecimal digit each.
pub const DEFERRED_SUBDIRS: [&str; 16] =
    ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "A", "B", "C", "D", "E", "F"];

/// The subfolder of deferred/ where the message `id` waits: a hash of
/// the whole ID (FNV-1a, folded to four bits), stable across versions and
/// machines, spreading messages evenly even when they arrived in the same
/// second.
pub fn deferred_subdir(id: &QueueId) -> &'static str {
    let mut h: u32 = 0x811c_9dc5;
    for &b in id.as_bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let folded = (h ^ (h >> 16) ^ (h >> 8) ^ (h >> 24)) & 0xf;
    DEFERRED_SUBDIRS[folded as usize]
}

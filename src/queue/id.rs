//! Queue IDs: the name of a message's queue file and the key of its log
//! lines.
//!
//! An ID is 20 characters of Crockford's base 32 (`0-9A-Z` without
//! `I L O U`), an alphabet in ASCII order, so IDs sort by the time they
//! were assigned (at the commit, or earlier when cleanup set them aside
//! for smtpd and pickup: see `CleanupToSmtpd::Ids`):
//!
//! | chars | bits | field |
//! |-------|------|-------|
//! | 0–6   | 35   | arrival, seconds since 1970 (until the year 3058) |
//! | 7–10  | 20   | microseconds |
//! | 11–14 | 20   | instance number (0 for every cleanup process) |
//! | 15–19 | 25   | per-process counter, starting at a random value |
//!
//! Only cleanup names queue files, and every cleanup uses instance 0: the
//! instance number does not tell processes apart. IDs are unique because
//! no two cleanups run at once (a singleton) and by the time, which the
//! generator never lets go backwards within a process (and the counter
//! changes on every ID), a later process being later; against a clock
//! stepped back across a restart there is only the counter's random start
//! (one chance in 2^25 per ID of the same microsecond). The journal
//! leaves a valid queue file of another message under a new message's
//! name alone (`journal.rs`). pickup's IDs for the messages it refuses
//! (instance: its process ID) name no queue file.
//!
//! Trusts: nothing; [`QueueId::parse`] checks every character.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};

use super::types::Time;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Length of a queue ID.
pub const LEN: usize = 20;
/// Largest instance number (20 bits).
pub const MAX_INSTANCE: u32 = (1 << 20) - 1;
const COUNTER_MASK: u32 = (1 << 25) - 1;

/// A queue ID: 20 filename-safe ASCII characters, sortable by the time
/// it was assigned.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId([u8; LEN]);

fn digit(c: u8) -> Option<u64> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u64)
}

fn put(out: &mut [u8], mut v: u64) {
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v & 31) as usize];
        v >>= 5;
    }
}

fn get(s: &[u8]) -> u64 {
    s.iter().fold(0, |acc, &c| (acc << 5) | digit(c).unwrap_or(0))
}

impl QueueId {
    /// The ID for `time`, `instance` and `counter` (each cut to its width).
    pub fn new(time: Time, instance: u32, counter: u32) -> QueueId {
        let mut b = [0u8; LEN];
        put(&mut b[0..7], time.secs.clamp(0, (1 << 35) - 1) as u64);
        put(&mut b[7..11], u64::from(time.micros.min(999_999)));
        put(&mut b[11..15], u64::from(instance & MAX_INSTANCE));
        put(&mut b[15..20], u64::from(counter & COUNTER_MASK));
        QueueId(b)
    }

    /// Parse the text form; `None` unless it is exactly 20 characters of
    /// the alphabet.
    pub fn parse(s: &str) -> Option<QueueId> {
        QueueId::from_bytes(s.as_bytes())
    }

    /// Parse the ASCII form.
    pub fn from_bytes(s: &[u8]) -> Option<QueueId> {
        let b: [u8; LEN] = s.try_into().ok()?;
        if b.iter().all(|&c| digit(c).is_some()) { Some(QueueId(b)) } else { None }
    }

    pub fn as_str(&self) -> &str {
        // The bytes are ASCII by construction.
        std::str::from_utf8(&self.0).unwrap_or("????????????????????")
    }

    pub fn as_bytes(&self) -> &[u8; LEN] {
        &self.0
    }

    /// The instance number of the process that assigned it.
    pub fn instance(&self) -> u32 {
        get(&self.0[11..15]) as u32
    }

    /// The time it was assigned.
    pub fn time(&self) -> Time {
        Time { secs: get(&self.0[0..7]) as i64, micros: get(&self.0[7..11]) as u32 }
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", self.as_str())
    }
}

/// Assigns queue IDs for one process.
#[derive(Debug)]
pub struct QueueIdGen {
    instance: u32,
    counter: u32,
    last: Time,
}

impl QueueIdGen {
    /// A generator for the process with this instance number (at most
    /// [`MAX_INSTANCE`]; larger numbers are cut to 20 bits).
    pub fn new(instance: u32) -> QueueIdGen {
        // RandomState is seeded from the system's random source.
        let mut h = RandomState::new().build_hasher();
        h.write_u32(instance);
        QueueIdGen { instance: instance & MAX_INSTANCE, counter: h.finish() as u32, last: Time { secs: 0, micros: 0 } }
    }

    /// The next ID, at the current time.
    pub fn next_id(&mut self) -> QueueId {
        self.next_at(Time::now())
    }

    /// The next ID at `now` (never earlier than the previous one).
    pub fn next_at(&mut self, now: Time) -> QueueId {
        if now > self.last {
            self.last = now;
        }
        self.counter = self.counter.wrapping_add(1);
        QueueId::new(self.last, self.instance, self.counter)
    }
}

//! The mailbox delivery workers a local process keeps between
//! deliveries ([`super::child`]: `local deliver`, confined once to one
//! directory, delivering message after message to one mailbox, file or
//! Maildir as one user).
//!
//! A worker is found again by its [`Key`]: everything its arguments and
//! credentials fix, so that a worker is only ever handed a job it would
//! have been started for. A worker at work is out of the pool: the one
//! the local process waits for, and the Maildir workers of the batch in
//! hand (with jobs still to answer or deliveries to sync; at most one
//! per batched delivery, at most 32 at once), until the batch ends. The
//! pool keeps at most `max` idle workers (`local.workers`): when a
//! worker comes back to a full pool, the one unused longest is closed
//! (with `max` 0, every worker is closed after its job). A worker unused
//! for `idle_time` (`local.worker_idle_time`) is closed.
//!
//! The pool is logic only, generic over what a worker is (the agent's
//! process handle; a number in the tests): it says which workers to
//! close, and the caller closes them.

use std::time::{Duration, Instant};

use super::child::Kind;

/// What a delivery worker is: the credentials it runs with and its
/// arguments (`local deliver KIND DIR NAME HOSTNAME LOCK_MS
/// CONFINEMENT`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub kind: Kind,
    /// The directory it is confined to: the spool, a home directory, or
    /// the directory of a file.
    pub dir: String,
    /// The mailbox, file or Maildir in it.
    pub name: String,
    pub hostname: String,
    pub lock_ms: u64,
    /// `confined` or `unconfined`.
    pub confinement: &'static str,
}

impl Key {
    /// The credentials the worker runs with.
    pub fn credentials(&self) -> sandbox::Credentials {
        sandbox::Credentials { uid: self.uid, gid: self.gid, groups: self.groups.clone() }
    }

    /// The worker's argv, `argv[0]` included.
    pub fn argv(&self) -> Vec<String> {
        [
            "local",
            "deliver",
            self.kind.as_str(),
            self.dir.as_str(),
            self.name.as_str(),
            self.hostname.as_str(),
            &self.lock_ms.to_string(),
            self.confinement,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    }
}

/// An idle worker.
struct Idle<W> {
    key: Key,
    worker: W,
    since: Instant,
}

/// The idle workers, least recently used first.
pub struct Pool<W> {
    max: usize,
    idle_time: Duration,
    idle: Vec<Idle<W>>,
}

impl<W> Pool<W> {
    /// A pool of at most `max` idle workers, each kept `idle_time`.
    pub fn new(max: usize, idle_time: Duration) -> Pool<W> {
        Pool { max, idle_time, idle: Vec::with_capacity(max) }
    }

    /// How many workers wait in the pool.
    pub fn len(&self) -> usize {
        self.idle.len()
    }

    pub fn is_empty(&self) -> bool {
        self.idle.is_empty()
    }

    /// Takes the idle worker for `key` out of the pool, if there is one.
    pub fn take(&mut self, key: &Key) -> Option<W> {
        let i = self.idle.iter().position(|e| e.key == *key)?;
        Some(self.idle.remove(i).worker)
    }

    /// Puts `worker` back after its job, as the most recently used, and
    /// returns the workers to close: the least recently used beyond
    /// `max` (the worker itself when `max` is 0), and any other worker
    /// for the same key (there is none while the caller takes before it
    /// starts one).
    pub fn put(&mut self, key: Key, worker: W, now: Instant) -> Vec<W> {
        let mut close = Vec::new();
        if self.max == 0 {
            close.push(worker);
            return close;
        }
        if let Some(old) = self.take(&key) {
            close.push(old);
        }
        while self.idle.len() >= self.max {
            close.push(self.idle.remove(0).worker);
        }
        self.idle.push(Idle { key, worker, since: now });
        close
    }

    /// Takes out and returns the workers idle for `idle_time` or more.
    pub fn expire(&mut self, now: Instant) -> Vec<W> {
        let mut close = Vec::new();
        let mut i = 0;
        while i < self.idle.len() {
            if now.saturating_duration_since(self.idle[i].since) >= self.idle_time {
                close.push(self.idle.remove(i).worker);
            } else {
                i += 1;
            }
        }
        close
    }

    /// When the next worker is due to expire, if any waits.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.idle.iter().map(|e| e.since + self.idle_time).min()
    }

    /// Takes out and returns every worker (at a stop).
    pub fn drain(&mut self) -> Vec<W> {
        self.idle.drain(..).map(|e| e.worker).collect()
    }
}

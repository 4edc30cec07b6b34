//! qmgr's stop: the drain. Asked to stop (a reload or a stop of the mail
//! system), qmgr hands out no more deliveries and takes no more mail into
//! the active queue, but it waits for the reports of the deliveries in
//! flight and writes them into the queue files as it always does (synced
//! as usual); the notices they call for are asked of bounce as usual, and
//! bounce's answers waited for too (a notice that fails waits for the
//! next qmgr). Then it exits, and master starts the next qmgr (a
//! singleton) only then. The delivery agents finish what they were given
//! and report it (see `smtp`, `local`, `bounce`), so nothing is delivered
//! twice by the next qmgr, which reads the files afresh.
//!
//! Bounded: master kills a process `supervise.stop_timeout` after asking
//! it to stop, so the drain ends sooner ([`drain_time`]). What is still in
//! flight then is left unreported and logged: those deliveries are the
//! only ones the next qmgr can make again.
//!
//! Meanwhile control's requests are served (master gives the new control
//! a channel to the draining qmgr; a listing still under way when qmgr
//! exits is cut short, and control says so, as at any end of qmgr), and
//! cleanup's names are taken but not admitted: the next qmgr lists
//! incoming/ when it starts. bounce and
//! local get the new cleanup on a reload, and at a stop cleanup is asked
//! to stop only once qmgr and bounce are gone (see `master`), so the
//! notices and forwards of the last deliveries can be queued.
//!
//! Trusts: master, for the stop; the reports are checked as always.

use std::time::{Duration, Instant};

use super::Qmgr;

/// How long qmgr waits for its deliveries in flight when master gives it
/// `stop_timeout`: a fifth of it less, and never more than two seconds
/// less, so that it exits (its last records logged) before it is killed.
pub fn drain_time(stop_timeout: Duration) -> Duration {
    stop_timeout.saturating_sub((stop_timeout / 5).min(Duration::from_secs(2)))
}

/// What is in flight: deliveries handed to agents and notices asked of
/// bounce, not yet answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    pub deliveries: usize,
    pub notices: usize,
}

impl InFlight {
    pub fn is_empty(self) -> bool {
        self.deliveries == 0 && self.notices == 0
    }
}

impl std::fmt::Display for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |n: usize| if n == 1 { "" } else { "s" };
        let (d, n) = (self.deliveries, self.notices);
        write!(f, "{d} deliver{} and {n} notice{}", if d == 1 { "y" } else { "ies" }, s(n))
    }
}

/// A drain under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drain {
    /// When qmgr gives up waiting.
    pub until: Instant,
}

/// What the drain does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing is in flight: exit.
    Done,
    /// The time is up with this in flight: log it and exit.
    GiveUp(InFlight),
    /// Wait for reports, at most this long.
    Wait(Duration),
}

impl Drain {
    /// A drain that began at `now`, master killing the process
    /// `stop_timeout` later.
    pub fn new(now: Instant, stop_timeout: Duration) -> Drain {
        Drain { until: now + drain_time(stop_timeout) }
    }

    pub fn step(&self, now: Instant, in_flight: InFlight) -> Step {
        if in_flight.is_empty() {
            Step::Done
        } else if now >= self.until {
            Step::GiveUp(in_flight)
        } else {
            Step::Wait(self.until - now)
        }
    }
}

impl Qmgr {
    /// Master asks us to stop: from now on no delivery is handed out, and
    /// we exit once what is in flight is reported.
    pub(super) fn begin_drain(&mut self) {
        if self.drain.is_some() {
            return;
        }
        let d = Drain::new(Instant::now(), self.child.config.stop_timeout);
        let in_flight = self.in_flight();
        if !in_flight.is_empty() {
            let left = d.until.saturating_duration_since(Instant::now());
            self.child.info(&format!(
                "stopping: waiting for the reports of {in_flight} in flight ({:.1}s at most); no new deliveries",
                left.as_secs_f64()
            ));
        }
        self.drain = Some(d);
    }

    /// Deliveries handed to agents and notices asked of bounce, not yet
    /// answered.
    fn in_flight(&self) -> InFlight {
        InFlight { deliveries: self.running.len(), notices: self.notices.len() }
    }

    /// A turn while draining: control's listings go on; the process exits
    /// once nothing is in flight, or when its time is up.
    pub(super) fn drain_turn(&mut self, d: Drain) {
        self.list_some();
        match d.step(Instant::now(), self.in_flight()) {
            Step::Wait(_) => {}
            Step::Done => {
                self.child.debug("stopped: nothing in flight");
                self.settle_before_exit();
                self.child.exit(0);
            }
            Step::GiveUp(left) => {
                self.child.warn(&format!(
                    "stopping with {left} left unreported: the next qmgr makes them again, so their recipients \
                     may get the message twice"
                ));
                self.settle_before_exit();
                self.child.exit(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_ends_before_master_kills_qmgr() {
        let s = Duration::from_secs;
        assert_eq!(drain_time(s(10)), s(8));
        assert_eq!(drain_time(s(5)), s(4));
        assert_eq!(drain_time(s(60)), s(58));
        assert_eq!(drain_time(Duration::from_millis(500)), Duration::from_millis(400));
        for ms in [1, 10, 999, 5_000, 3_600_000] {
            let t = Duration::from_millis(ms);
            assert!(drain_time(t) < t, "{ms} ms");
        }
    }

    #[test]
    fn nothing_in_flight_ends_the_drain_at_once() {
        let now = Instant::now();
        let d = Drain::new(now, Duration::from_secs(10));
        assert_eq!(d.step(now, InFlight::default()), Step::Done);
        // Even past its time: nothing is left unreported.
        assert_eq!(d.step(now + Duration::from_secs(60), InFlight::default()), Step::Done);
    }

    #[test]
    fn deliveries_in_flight_are_waited_for_until_the_time_is_up() {
        let now = Instant::now();
        let d = Drain::new(now, Duration::from_secs(10));
        let one = InFlight { deliveries: 1, notices: 0 };
        assert_eq!(d.step(now, one), Step::Wait(Duration::from_secs(8)));
        let notice = InFlight { deliveries: 0, notices: 2 };
        assert_eq!(d.step(now + Duration::from_secs(3), notice), Step::Wait(Duration::from_secs(5)));
        assert_eq!(d.step(now + Duration::from_secs(8), one), Step::GiveUp(one));
        assert_eq!(d.step(now + Duration::from_secs(9), notice), Step::GiveUp(notice));
    }

    #[test]
    fn what_is_in_flight_is_said_in_words() {
        assert_eq!(InFlight { deliveries: 1, notices: 0 }.to_string(), "1 delivery and 0 notices");
        assert_eq!(InFlight { deliveries: 2, notices: 1 }.to_string(), "2 deliveries and 1 notice");
    }
}

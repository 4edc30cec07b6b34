//! Connections, messages and recipients per client address and time
//! unit, as Postfix's anvil counts them for
//! `smtpd_client_connection_rate_limit`, `smtpd_client_message_rate_limit`
//! and `smtpd_client_recipient_rate_limit`: each address has a window of
//! `limits.rate_time_unit` that starts with its first event; an event
//! past its limit in the window is refused (a connection 421 4.7.0, a
//! MAIL or a RCPT 450 4.7.1) until the window ends. Every attempt counts,
//! refused ones too, so a client that keeps knocking stays out. Clients
//! in `networks` are not counted. One smtpd process counts its own
//! clients.
//!
//! Bounds: at most [`MAX_CLIENTS`] addresses are followed; windows that
//! ended are forgotten at each tick, and past the bound a new address is
//! not followed (it is not limited) until room comes.
//!
//! Trusts: nothing; it only counts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Addresses followed at most.
pub const MAX_CLIENTS: usize = 100_000;
/// How often ended windows are swept out at most (smtpd's tick comes ten
/// times a second; a window lasts a second or more).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Connection = 0,
    /// A MAIL command.
    Message = 1,
    /// A RCPT command.
    Recipient = 2,
}

/// The counts of the windows under way.
#[derive(Debug)]
pub struct Rates {
    /// Per [`Event`]; 0: no limit.
    limits: [u32; 3],
    unit: Duration,
    windows: HashMap<IpAddr, (Instant, [u32; 3])>,
    /// The last sweep of [`Rates::expire`].
    swept: Option<Instant>,
}

impl Rates {
    /// At most `limits` (connections, messages, recipients; 0: no limit)
    /// per `unit`.
    pub fn new(limits: [u32; 3], unit: Duration) -> Rates {
        Rates { limits, unit, windows: HashMap::new(), swept: None }
    }

    /// Whether `event` has a limit.
    pub fn limited(&self, event: Event) -> bool {
        self.limits[event as usize] != 0
    }

    /// `event` from `ip` at `now`: Err(count) when it is over the limit
    /// (the count of the window so far, this one included).
    pub fn count(&mut self, ip: IpAddr, event: Event, now: Instant) -> Result<(), u32> {
        let limit = self.limits[event as usize];
        if limit == 0 {
            return Ok(());
        }
        if !self.windows.contains_key(&ip) && self.windows.len() >= MAX_CLIENTS {
            return Ok(());
        }
        let w = self.windows.entry(ip).or_insert((now, [0; 3]));
        if now.duration_since(w.0) >= self.unit {
            *w = (now, [0; 3]);
        }
        let n = &mut w.1[event as usize];
        *n = n.saturating_add(1);
        if *n > limit { Err(*n) } else { Ok(()) }
    }

    /// Forget the windows that have ended (at most once a second).
    pub fn expire(&mut self, now: Instant) {
        if self.windows.is_empty() || self.swept.is_some_and(|t| now.saturating_duration_since(t) < SWEEP_EVERY) {
            return;
        }
        self.swept = Some(now);
        let unit = self.unit;
        self.windows.retain(|_, w| now.duration_since(w.0) < unit);
    }

    pub fn followed(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_past_its_rate_waits_for_the_next_window() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = Rates::new([3, 0, 2], Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c = Event::Connection;
        for i in 0..3 {
            assert_eq!(r.count(a, c, t0 + s * i), Ok(()));
        }
        assert_eq!(r.count(a, c, t0 + s * 10), Err(4));
        // Refused attempts count too; another client is not affected.
        assert_eq!(r.count(a, c, t0 + s * 20), Err(5));
        assert_eq!(r.count(b, c, t0 + s * 20), Ok(()));
        // Each event has its own count and limit (messages: none).
        for _ in 0..10 {
            assert_eq!(r.count(a, Event::Message, t0 + s * 21), Ok(()));
        }
        assert_eq!(r.count(a, Event::Recipient, t0 + s * 21), Ok(()));
        assert_eq!(r.count(a, Event::Recipient, t0 + s * 21), Ok(()));
        assert_eq!(r.count(a, Event::Recipient, t0 + s * 21), Err(3));
        // The window began with the first connection: a new one at 60 s.
        assert_eq!(r.count(a, c, t0 + s * 60), Ok(()));
        assert_eq!(r.count(a, Event::Recipient, t0 + s * 60), Ok(()));
        r.expire(t0 + s * 70);
        assert_eq!(r.followed(), 2);
        r.expire(t0 + s * 121);
        assert_eq!(r.followed(), 0);
    }

    #[test]
    fn no_limit_follows_no_one_and_the_table_is_bounded() {
        let t0 = Instant::now();
        let c = Event::Connection;
        let mut r = Rates::new([0; 3], Duration::from_secs(60));
        assert_eq!(r.count("192.0.2.1".parse().unwrap(), c, t0), Ok(()));
        assert_eq!(r.followed(), 0);
        let mut r = Rates::new([1, 0, 0], Duration::from_secs(60));
        for i in 0..MAX_CLIENTS as u32 + 10 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = r.count(ip, c, t0);
        }
        assert_eq!(r.followed(), MAX_CLIENTS);
        // An address beyond the bound is not limited.
        let late: IpAddr = "11.0.0.1".parse().unwrap();
        assert_eq!((r.count(late, c, t0), r.count(late, c, t0)), (Ok(()), Ok(())));
    }
}

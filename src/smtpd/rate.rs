//! Connections per client address and time unit, as Postfix's anvil
//! counts them for `smtpd_client_connection_rate_limit`: each address
//! has a window of `limits.rate_time_unit` that starts with its first
//! connection; a connection past `limits.connection_rate_per_client` in
//! it is refused (421 4.7.0) until the window ends. Every attempt counts,
//! refused ones too, so a client that keeps knocking stays out. Clients
//! in `networks` are not counted. One smtpd process counts its own
//! connections.
//!
//! Bounds: at most [`MAX_CLIENTS`] addresses are followed; windows that
//! ended are forgotten at each tick, and past the bound a new address is
//! not followed (its connections are not limited) until room comes.
//!
//! Trusts: nothing; it only counts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Addresses followed at most.
pub const MAX_CLIENTS: usize = 100_000;

/// The counts of the windows under way.
#[derive(Debug)]
pub struct Rates {
    limit: u32,
    unit: Duration,
    windows: HashMap<IpAddr, (Instant, u32)>,
}

impl Rates {
    /// `limit` connections per `unit` (0: no limit).
    pub fn new(limit: u32, unit: Duration) -> Rates {
        Rates { limit, unit, windows: HashMap::new() }
    }

    /// A connection from `ip` at `now`: Err(count) when it is over the
    /// limit (the count of the window so far, this one included).
    pub fn connect(&mut self, ip: IpAddr, now: Instant) -> Result<(), u32> {
        if self.limit == 0 {
            return Ok(());
        }
        if !self.windows.contains_key(&ip) && self.windows.len() >= MAX_CLIENTS {
            return Ok(());
        }
        let w = self.windows.entry(ip).or_insert((now, 0));
        if now.duration_since(w.0) >= self.unit {
            *w = (now, 0);
        }
        w.1 = w.1.saturating_add(1);
        if w.1 > self.limit { Err(w.1) } else { Ok(()) }
    }

    /// Forget the windows that have ended.
    pub fn expire(&mut self, now: Instant) {
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
        let mut r = Rates::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for i in 0..3 {
            assert_eq!(r.connect(a, t0 + s * i), Ok(()));
        }
        assert_eq!(r.connect(a, t0 + s * 10), Err(4));
        // Refused attempts count too; another client is not affected.
        assert_eq!(r.connect(a, t0 + s * 20), Err(5));
        assert_eq!(r.connect(b, t0 + s * 20), Ok(()));
        // The window began with the first connection: a new one at 60 s.
        assert_eq!(r.connect(a, t0 + s * 60), Ok(()));
        r.expire(t0 + s * 70);
        assert_eq!(r.followed(), 2);
        r.expire(t0 + s * 121);
        assert_eq!(r.followed(), 0);
    }

    #[test]
    fn no_limit_follows_no_one_and_the_table_is_bounded() {
        let t0 = Instant::now();
        let mut r = Rates::new(0, Duration::from_secs(60));
        assert_eq!(r.connect("192.0.2.1".parse().unwrap(), t0), Ok(()));
        assert_eq!(r.followed(), 0);
        let mut r = Rates::new(1, Duration::from_secs(60));
        for i in 0..MAX_CLIENTS as u32 + 10 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = r.connect(ip, t0);
        }
        assert_eq!(r.followed(), MAX_CLIENTS);
        // An address beyond the bound is not limited.
        let late: IpAddr = "11.0.0.1".parse().unwrap();
        assert_eq!((r.connect(late, t0), r.connect(late, t0)), (Ok(()), Ok(())));
    }
}

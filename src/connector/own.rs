//! Where mail comes in to this host: the listeners' addresses, a wildcard
//! listener standing for every address of the host's interfaces (which
//! master reads, at start and reload, for this check and for qmgr's and
//! smtpd's address literals: [`interfaces`]) and, for IPv4, all of
//! 127.0.0.0/8. An MX
//! host that resolves to one of them with the port we would connect to is
//! this host: RFC 5321 5.1 says to drop it and every MX host of the same
//! or a lower preference, and when none is left the mail "loops back to
//! myself" (Postfix's words), which bounces (5.4.6) rather than going
//! round through our own smtpd until the hop count stops it.
//!
//! Trusts: the interface list the kernel gives.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// This host's mail addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Own {
    /// Listened on, each with its port.
    addrs: Vec<SocketAddr>,
}

impl Own {
    /// From the listeners and the host's interface addresses.
    pub fn new(listeners: &[SocketAddr], interfaces: &[IpAddr]) -> Own {
        let mut addrs = Vec::new();
        for l in listeners {
            let port = l.port();
            match l.ip() {
                IpAddr::V4(a) if a.is_unspecified() => {
                    addrs.extend(interfaces.iter().filter(|i| i.is_ipv4()).map(|&i| SocketAddr::new(i, port)));
                    addrs.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
                }
                // Linux's default (bindv6only=0) takes IPv4 on `[::]` too.
                IpAddr::V6(a) if a.is_unspecified() => {
                    addrs.extend(interfaces.iter().map(|&i| SocketAddr::new(i, port)));
                    addrs.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port));
                }
                _ => addrs.push(*l),
            }
        }
        addrs.sort();
        addrs.dedup();
        Own { addrs }
    }

    /// Whether a connection to `ip` at `port` reaches this host's smtpd.
    pub fn is_own(&self, ip: IpAddr, port: u16) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.addrs.iter().any(|a| {
            a.port() == port
                && (a.ip() == ip
                    // Every 127/8 address reaches a wildcard or loopback listener.
                    || (a.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) && matches!(ip, IpAddr::V4(v) if v.is_loopback())))
        })
    }
}

/// The addresses of the host's interfaces (empty if they cannot be read:
/// the listeners' own addresses still count). master's to read.
pub fn interfaces() -> Vec<IpAddr> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut ips: Vec<IpAddr> = list
        .filter_map(|i| i.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn wildcard_listeners_stand_for_every_interface_and_loopback() {
        let ifs: Vec<IpAddr> = vec!["192.0.2.5".parse().unwrap(), "2001:db8::5".parse().unwrap()];
        let own = Own::new(&[sa("0.0.0.0:25"), sa("127.0.0.1:587")], &ifs);
        assert!(own.is_own("192.0.2.5".parse().unwrap(), 25));
        assert!(own.is_own("127.0.0.1".parse().unwrap(), 25));
        assert!(own.is_own("127.0.0.2".parse().unwrap(), 25), "all of 127/8");
        assert!(own.is_own("::ffff:192.0.2.5".parse().unwrap(), 25), "IPv4-mapped");
        assert!(!own.is_own("2001:db8::5".parse().unwrap(), 25), "no IPv6 listener");
        assert!(!own.is_own("192.0.2.5".parse().unwrap(), 2525), "another port is another server");
        assert!(!own.is_own("192.0.2.6".parse().unwrap(), 25));
        assert!(own.is_own("127.0.0.1".parse().unwrap(), 587));
        assert!(!own.is_own("192.0.2.5".parse().unwrap(), 587), "587 listens on loopback only");
        let own6 = Own::new(&[sa("[::]:25")], &ifs);
        assert!(own6.is_own("2001:db8::5".parse().unwrap(), 25));
        assert!(own6.is_own("192.0.2.5".parse().unwrap(), 25));
        assert!(own6.is_own("::1".parse().unwrap(), 25));
        let one = Own::new(&[sa("192.0.2.5:25")], &ifs);
        assert!(one.is_own("192.0.2.5".parse().unwrap(), 25));
        assert!(!one.is_own("127.0.0.1".parse().unwrap(), 25));
    }

    #[test]
    fn interfaces_include_loopback() {
        // Every test machine has a loopback interface.
        assert!(interfaces().iter().any(|i| i.is_loopback()), "{:?}", interfaces());
    }
}

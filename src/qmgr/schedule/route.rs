//! Where a recipient's mail goes next: a pure function from the recipient
//! address and the routing configuration to a [`Destination`], a transport
//! and a next hop. Recipients with the same destination share its
//! concurrency window and may share a delivery.
//!
//! The rules: a recipient without a domain goes to the `local` transport.
//! Any other domain is looked up in the transport table
//! ([`TransportMap`], `transport_map` in the configuration): the domain
//! itself, then each parent domain's `.domain` entry from the longest,
//! then `*`. An entry decides the transport and next hop (`smtp` without
//! a next hop means the default route of a remote domain, below). With
//! no entry, the default rules apply: a domain of ours goes to `local`
//! (the next hop is the domain), every other one by `smtp` to the relay
//! host when one is configured, else to its own domain by MX (an address
//! literal `[192.0.2.1]` to that address, without MX).
//!
//! Trusts: nothing; addresses come from validated queue files, host names
//! from the configuration, and both are checked again here.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use super::transport_map::{Route, TransportMap};

/// How mail is handed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// To another server, by the smtp client.
    Smtp,
    /// To an LMTP server (RFC 2033), by the smtp client in LMTP mode.
    Lmtp,
    /// To a mailbox on this host, by the local delivery agent.
    Local,
}

impl Transport {
    /// Every transport, in the order the scheduler serves them.
    pub const ALL: [Transport; 3] = [Transport::Smtp, Transport::Lmtp, Transport::Local];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Smtp => "smtp",
            Transport::Lmtp => "lmtp",
            Transport::Local => "local",
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            Transport::Smtp => 0,
            Transport::Lmtp => 1,
            Transport::Local => 2,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A next hop in Postfix's notation: `host` or `host:port` is looked up
/// by MX, `[host]` or `[host]:port` is connected to as it is (a name's
/// address records, or an address literal).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nexthop {
    /// Lower case; an address without brackets or `IPv6:` tag.
    pub host: String,
    /// None for the transport's default port.
    pub port: Option<u16>,
    /// Whether MX records are looked up for `host`.
    pub mx: bool,
}

/// Why a next hop was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NexthopError(pub String);

impl fmt::Display for NexthopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NexthopError {}

/// Longest host name of a next hop.
const MAX_HOST: usize = 255;

impl Nexthop {
    /// Parse `host`, `host:port`, `[host]` or `[host]:port` (an IPv6
    /// address only in brackets).
    pub fn parse(s: &str) -> Result<Nexthop, NexthopError> {
        let bad = |why: &str| NexthopError(format!("next hop `{}`: {why}", s.escape_debug()));
        let (host, rest, mx) = if let Some(inner) = s.strip_prefix('[') {
            let end = inner.find(']').ok_or_else(|| bad("missing `]`"))?;
            (&inner[..end], &inner[end + 1..], false)
        } else {
            match s.find(':') {
                Some(i) => (&s[..i], &s[i..], true),
                None => (s, "", true),
            }
        };
        let port = match rest {
            "" => None,
            r => {
                let digits = r.strip_prefix(':').ok_or_else(|| bad("unexpected text after the host"))?;
                let ok = !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit());
                match digits.parse::<u16>() {
                    Ok(p) if ok && p != 0 => Some(p),
                    _ => return Err(bad("the port must be a number from 1 to 65535")),
                }
            }
        };
        let host = host.strip_prefix("IPv6:").or_else(|| host.strip_prefix("ipv6:")).unwrap_or(host);
        let host = host.strip_suffix('.').unwrap_or(host).to_lowercase();
        if host.is_empty() || host.len() > MAX_HOST {
            return Err(bad("the host must be 1 to 255 characters"));
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control() || "[]@/\\,;<>\"".contains(c)) {
            return Err(bad("the host has a character no host name or address has"));
        }
        if host.contains(':') && mx {
            return Err(bad("write an IPv6 address in brackets"));
        }
        Ok(Nexthop { host, port, mx })
    }
}

impl fmt::Display for Nexthop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mx {
            f.write_str(&self.host)?;
        } else {
            write!(f, "[{}]", self.host)?;
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// Where a destination's deliveries go: a next hop on the network, or
/// (LMTP) a UNIX socket on this host.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hop {
    Inet(Nexthop),
    /// An absolute path (checked by [`super::transport_map`]).
    Unix(PathBuf),
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hop::Inet(n) => n.fmt(f),
            Hop::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Where a recipient's mail goes: the unit of concurrency and of grouping
/// recipients into deliveries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    pub transport: Transport,
    pub nexthop: Hop,
}

impl Destination {
    /// To the local delivery agent, for `domain` (may be empty).
    fn local(domain: String) -> Destination {
        Destination { transport: Transport::Local, nexthop: Hop::Inet(Nexthop { host: domain, port: None, mx: false }) }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.transport, &self.nexthop) {
            // A local next hop is just the domain.
            (Transport::Local, Hop::Inet(n)) => write!(f, "local:{}", n.host),
            (t, hop) => write!(f, "{t}:{hop}"),
        }
    }
}

/// The routing configuration (`relay.host`, the local domains and the
/// transport table).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    relay_host: Option<Nexthop>,
    /// Lower case, without a trailing dot.
    local_domains: HashSet<String>,
    map: TransportMap,
    /// This host's addresses: their address literals are local domains.
    own: Vec<std::net::IpAddr>,
}

impl Routing {
    /// Routing through `relay_host` (when given) for every domain not in
    /// `local_domains`. The number of local domains is the configuration's.
    pub fn new<I, S>(relay_host: Option<Nexthop>, local_domains: I) -> Routing
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let local_domains = local_domains.into_iter().map(|d| normal_domain(d.as_ref())).collect();
        Routing { relay_host, local_domains, map: TransportMap::default(), own: Vec::new() }
    }

    /// The same routing with a transport table, consulted before the
    /// default rules (for local domains too).
    pub fn with_map(self, map: TransportMap) -> Routing {
        Routing { map, ..self }
    }

    /// The same routing with this host's addresses: mail to an address
    /// literal of one of them (`user@[192.0.2.1]`) is local.
    pub fn with_own_addresses(self, own: Vec<std::net::IpAddr>) -> Routing {
        Routing { own, ..self }
    }

    pub fn relay_host(&self) -> Option<&Nexthop> {
        self.relay_host.as_ref()
    }

    /// Whether `domain` is one of ours.
    pub fn is_local(&self, domain: &str) -> bool {
        let domain = normal_domain(domain);
        self.local_domains.contains(&domain) || self.own_literal(&domain)
    }

    /// Whether `domain` is an address literal of this host.
    fn own_literal(&self, domain: &str) -> bool {
        crate::address::literal_ip(domain).is_some_and(|ip| self.own.contains(&ip))
    }
}

/// Lower case, without the trailing dot of a fully qualified name.
pub(super) fn normal_domain(d: &str) -> String {
    crate::address::domain_key(d).unwrap_or_else(|| d.strip_suffix('.').unwrap_or(d).to_lowercase())
}

/// The domain of a recipient address as stored (`local@domain`; a quoted
/// local part may hold `@`, the domain cannot): the text after the last
/// `@`, or None for an address without one (`postmaster`).
pub fn recipient_domain(address: &str) -> Option<&str> {
    address.rfind('@').map(|i| &address[i + 1..]).filter(|d| !d.is_empty())
}

/// The destination of a recipient address.
pub fn route(address: &str, routing: &Routing) -> Destination {
    match recipient_domain(address) {
        Some(d) => route_domain(d, routing),
        None => Destination::local(String::new()),
    }
}

/// The destination of a recipient domain: the transport table's entry,
/// else the default rules.
pub fn route_domain(domain: &str, routing: &Routing) -> Destination {
    let domain = normal_domain(domain);
    match routing.map.lookup(&domain) {
        Some(Route::Smtp(Some(nexthop))) => {
            Destination { transport: Transport::Smtp, nexthop: Hop::Inet(nexthop.clone()) }
        }
        Some(Route::Smtp(None)) => remote(domain, routing),
        Some(Route::Lmtp(hop)) => Destination { transport: Transport::Lmtp, nexthop: hop.clone() },
        Some(Route::Local) => Destination::local(domain),
        None if routing.local_domains.contains(&domain) || routing.own_literal(&domain) => Destination::local(domain),
        None => remote(domain, routing),
    }
}

/// The default route of a remote domain: the relay host, else the
/// domain by MX (an address literal to that address).
fn remote(domain: String, routing: &Routing) -> Destination {
    if let Some(relay) = &routing.relay_host {
        return Destination { transport: Transport::Smtp, nexthop: Hop::Inet(relay.clone()) };
    }
    let nexthop = match domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        // An address literal: that address, no MX lookup, but its own MX
        // (RFC 5321 5.1): this host's address is a loop, as Postfix has it.
        Some(literal) => {
            let host = literal.strip_prefix("ipv6:").unwrap_or(literal).to_string();
            Nexthop { host, port: None, mx: true }
        }
        None => Nexthop { host: domain, port: None, mx: true },
    };
    Destination { transport: Transport::Smtp, nexthop: Hop::Inet(nexthop) }
}

//! Where a recipient's mail goes next: a pure function from the recipient
//! address and the routing configuration to a [`Destination`], a transport
//! and a next hop. Recipients with the same destination share its
//! concurrency window and may share a delivery.
//!
//! The rules, simplest first (MX routing and transport maps come later):
//! a recipient without a domain, or in one of the local domains, goes to
//! the `local` transport (the next hop is the domain); every other one goes
//! by `smtp` to the relay host when one is configured, else to its own
//! domain (an address literal `[192.0.2.1]` to that address, without MX).
//!
//! Trusts: nothing; addresses come from validated queue files, host names
//! from the configuration, and both are checked again here.

use std::collections::HashSet;
use std::fmt;

/// How mail is handed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// To another server, by the smtp client.
    Smtp,
    /// To a mailbox on this host, by the local delivery agent.
    Local,
}

impl Transport {
    /// Every transport, in the order the scheduler serves them.
    pub const ALL: [Transport; 2] = [Transport::Smtp, Transport::Local];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Smtp => "smtp",
            Transport::Local => "local",
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            Transport::Smtp => 0,
            Transport::Local => 1,
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

/// Where a recipient's mail goes: the unit of concurrency and of grouping
/// recipients into deliveries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    pub transport: Transport,
    pub nexthop: Nexthop,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.transport {
            // A local next hop is just the domain.
            Transport::Local => write!(f, "local:{}", self.nexthop.host),
            Transport::Smtp => write!(f, "smtp:{}", self.nexthop),
        }
    }
}

/// The routing configuration (`relay.host` and the local domains).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    relay_host: Option<Nexthop>,
    /// Lower case, without a trailing dot.
    local_domains: HashSet<String>,
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
        Routing { relay_host, local_domains }
    }

    pub fn relay_host(&self) -> Option<&Nexthop> {
        self.relay_host.as_ref()
    }

    /// Whether `domain` is one of ours.
    pub fn is_local(&self, domain: &str) -> bool {
        self.local_domains.contains(&normal_domain(domain))
    }
}

/// Lower case, without the trailing dot of a fully qualified name.
fn normal_domain(d: &str) -> String {
    d.strip_suffix('.').unwrap_or(d).to_lowercase()
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
        None => {
            Destination { transport: Transport::Local, nexthop: Nexthop { host: String::new(), port: None, mx: false } }
        }
    }
}

/// The destination of a recipient domain.
pub fn route_domain(domain: &str, routing: &Routing) -> Destination {
    let domain = normal_domain(domain);
    if routing.local_domains.contains(&domain) {
        return Destination { transport: Transport::Local, nexthop: Nexthop { host: domain, port: None, mx: false } };
    }
    if let Some(relay) = &routing.relay_host {
        return Destination { transport: Transport::Smtp, nexthop: relay.clone() };
    }
    let nexthop = match domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        // An address literal: that address, no MX.
        Some(literal) => {
            let host = literal.strip_prefix("ipv6:").unwrap_or(literal).to_string();
            Nexthop { host, port: None, mx: false }
        }
        None => Nexthop { host: domain, port: None, mx: true },
    };
    Destination { transport: Transport::Smtp, nexthop }
}

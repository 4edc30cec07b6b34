//! Where a next hop is: the hosts and addresses the connector tries, in
//! order, found with hickory's resolver (RFC 5321 section 5.1); and who
//! a client is (smtpd's reverse lookups).
//!
//! An address literal is used as it is. A `[host]` next hop is its A and
//! AAAA records. A domain is its MX records, best preference first and
//! shuffled among equal preferences, each exchange's addresses in turn;
//! with no MX records (but the name exists) the domain itself is the
//! implicit MX. A null MX (RFC 7505) and a name that does not exist fail
//! permanently; a server failure or a timeout fails temporarily; an
//! exchange without addresses is skipped. At most [`Limits::hosts`] hosts
//! and [`Limits::addresses`] addresses are tried (`smtp.mx_host_limit`,
//! `smtp.mx_address_limit`). The hosts file is never read (Postfix's
//! `smtp_host_lookup = dns`), and every name is asked as a fully
//! qualified name (no search list).
//!
//! A client's name is the first of its address's PTR names (at most
//! [`MAX_PTR_NAMES`] are looked at) that is a valid host name and whose
//! A or AAAA records include the address (forward confirmation, as
//! Postfix's `reverse_client_name` checked against `client_name`).
//! Anything else leaves the client `unknown`.
//!
//! Trusts: nothing in DNS answers beyond their records' types; names
//! come from smtp (and so from a recipient's domain) and are parsed; PTR
//! names are checked before anyone sees them.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use crate::config::delivery::Dns;
use crate::ipc::msg::NexthopSpec;

/// PTR names of one address looked at (each costs a forward lookup).
pub const MAX_PTR_NAMES: usize = 4;
/// Answers the resolver keeps (it honours their TTLs).
const CACHE_SIZE: u64 = 1024;
/// Where the C library looks when there is no resolv.conf.
const FALLBACK_SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 53);

/// How many MX hosts and addresses are tried for one next hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// MX hosts whose addresses are looked up, best first.
    pub hosts: usize,
    /// Addresses in all, over every host.
    pub addresses: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { hosts: 5, addresses: 10 }
    }
}

/// Why there is nothing to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Postfix-like, e.g. `Host or domain name not found. Name service
    /// error for name=example.invalid type=MX: Host not found`.
    pub reason: String,
    /// The mail cannot be delivered there, ever (it bounces).
    pub permanent: bool,
    /// The enhanced status code the recipients get (RFC 3463): 4.4.1 no
    /// answer from a host, 4.4.3 the name service failed, 5.4.4 no such
    /// destination, 5.1.10 a null MX (RFC 7505).
    pub dsn: &'static str,
}

impl Failure {
    /// No connection, for now (4.4.1).
    pub fn temporary(reason: String) -> Failure {
        Failure { reason, permanent: false, dsn: "4.4.1" }
    }
    /// The destination does not exist (5.4.4).
    pub fn permanent(reason: String) -> Failure {
        Failure { reason, permanent: true, dsn: "5.4.4" }
    }
    /// The name service did not answer (4.4.3).
    pub fn lookup(reason: String) -> Failure {
        Failure { reason, permanent: false, dsn: "4.4.3" }
    }
    /// The best MX host left is this host (5.4.6).
    pub fn loops(reason: String) -> Failure {
        Failure { reason, permanent: true, dsn: "5.4.6" }
    }
    /// The domain accepts no mail (RFC 7505's null MX: 5.1.10).
    fn null_mx(reason: String) -> Failure {
        Failure { reason, permanent: true, dsn: "5.1.10" }
    }
}

/// The best preference among the MX hosts whose addresses could not be
/// found, and why (see [`Resolver::targets_and_unresolved`]).
pub type Unresolved = Option<(u16, String)>;

/// Most MX hosts beyond `smtp.mx_host_limit` looked up only to see
/// whether this host is one of them.
const SELF_CHECK_HOSTS: usize = 16;

/// What a next hop's lookup found.
#[derive(Debug, Default)]
pub struct Found {
    /// The addresses to try, in order, within the limits.
    pub targets: Vec<Target>,
    pub unresolved: Unresolved,
    /// Addresses the limits left out, of MX hosts no worse than the last
    /// one kept: not to be tried, but this host may be among them, and
    /// then the hosts as good as it must not be tried either.
    pub left_out: Vec<Target>,
}

/// One address to try and the host it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The MX or host name (without the final dot), or the address for a literal.
    pub host: String,
    pub ip: IpAddr,
    /// The MX host's preference; None for a host without MX (an implicit
    /// MX, preference 0 by RFC 5321 5.1) or a literal.
    pub preference: Option<u16>,
}

/// How a lookup of one name and type went.
#[derive(Debug)]
enum Answer<T> {
    Found(Vec<T>),
    /// NXDOMAIN: the name does not exist.
    NoSuchName,
    /// The name exists without records of this type.
    NoData,
    /// SERVFAIL, REFUSED, a timeout, a network error.
    Temporary,
}

impl<T> Answer<T> {
    /// Postfix's words for a failed lookup.
    fn describe(&self) -> &'static str {
        match self {
            Answer::Found(_) => "found",
            Answer::NoSuchName => "Host not found",
            Answer::NoData => "Host found but no data record of requested type",
            Answer::Temporary => "Host not found, try again",
        }
    }
}

fn name_error<T>(host: &str, rtype: &str, answer: &Answer<T>) -> String {
    format!("Host or domain name not found. Name service error for name={host} type={rtype}: {}", answer.describe())
}

/// The connector's resolver.
pub struct Resolver {
    inner: TokioResolver,
    limits: Limits,
}

impl Resolver {
    /// Build the resolver: `dns.servers` (each over UDP, and TCP for
    /// truncated answers) or, when empty, the system's resolv.conf.
    /// Reads resolv.conf, so it runs before the sandbox; call it inside
    /// the runtime's context. Returns a warning to log when resolv.conf
    /// could not be read and the local server is asked instead.
    pub fn new(dns: &Dns) -> Result<(Resolver, Option<String>), String> {
        let provider = TokioRuntimeProvider::default();
        let mut warning = None;
        let mut builder = if dns.servers.is_empty() {
            match TokioResolver::builder_tokio() {
                Ok(b) => b,
                Err(e) => {
                    warning = Some(format!("system resolver configuration: {e}; asking {FALLBACK_SERVER}"));
                    TokioResolver::builder_with_config(servers(&[FALLBACK_SERVER]), provider)
                }
            }
        } else {
            TokioResolver::builder_with_config(servers(&dns.servers), provider)
        };
        let opts = builder.options_mut();
        opts.timeout = dns.timeout;
        opts.attempts = dns.attempts.max(1) as usize;
        opts.cache_size = CACHE_SIZE;
        opts.use_hosts_file = ResolveHosts::Never;
        let inner = builder.build().map_err(|e| format!("building the resolver: {e}"))?;
        Ok((Resolver { inner, limits: Limits::default() }, warning))
    }

    /// Try at most these many MX hosts and addresses per next hop.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = Limits { hosts: limits.hosts.max(1), addresses: limits.addresses.max(1) };
    }

    /// The addresses to try for `nexthop`, in order, or why there are none.
    #[cfg(test)]
    pub async fn targets(&self, nexthop: &NexthopSpec) -> Result<Vec<Target>, Failure> {
        self.targets_and_unresolved(nexthop).await.map(|f| f.targets)
    }

    /// [`Resolver::targets`], the best preference among the MX hosts
    /// whose addresses could not be found, with why (a host that finds
    /// itself among the MX hosts must not take the lack of a better one
    /// for a loop when a better one's lookup failed), and the addresses
    /// the limits left out ([`Found`]).
    pub async fn targets_and_unresolved(&self, nexthop: &NexthopSpec) -> Result<Found, Failure> {
        let host = nexthop.host.as_str();
        if let Some(ip) = literal(host) {
            // From an address (`user@[192.0.2.1]`, routed as its own MX):
            // an address that reaches this host or nobody is refused (the
            // transport table's and the relay host's are the
            // administrator's word, loopback included).
            let ip = if nexthop.mx { ip.to_canonical() } else { ip };
            if nexthop.mx && !usable(&ip) {
                return Err(Failure::permanent(format!("{host}: not an address a mail server can have")));
            }
            let targets = vec![Target { host: ip.to_string(), ip, preference: None }];
            return Ok(Found { targets, ..Found::default() });
        }
        let name = fqdn(host)?;
        if !nexthop.mx {
            return self.host_targets(host, &name).await;
        }
        match self.query(&name, RecordType::MX).await {
            Answer::Found(records) => self.mx_targets(host, records).await,
            // No MX: the domain is its own (implicit) MX.
            Answer::NoData => self.host_targets(host, &name).await,
            other => {
                let reason = name_error(host, "MX", &other);
                Err(if matches!(other, Answer::NoSuchName) {
                    Failure::permanent(reason)
                } else {
                    Failure::lookup(reason)
                })
            }
        }
    }

    /// A single host's addresses.
    async fn host_targets(&self, host: &str, name: &Name) -> Result<Found, Failure> {
        match self.addresses(name).await {
            Answer::Found(ips) => {
                let mut all = ips.into_iter().map(|ip| Target { host: host.to_string(), ip, preference: None });
                let targets = all.by_ref().take(self.limits.addresses).collect();
                Ok(Found { targets, unresolved: None, left_out: all.collect() })
            }
            Answer::Temporary => Err(Failure::lookup(name_error(host, "A", &Answer::<()>::Temporary))),
            other => Err(Failure::permanent(name_error(host, "A", &other))),
        }
    }

    /// The MX hosts' addresses, best first.
    async fn mx_targets(&self, domain: &str, records: Vec<RData>) -> Result<Found, Failure> {
        let exchanges = order_exchanges(records);
        if exchanges.is_empty() {
            return Err(Failure::null_mx(format!("{domain}: domain does not accept mail (null MX)")));
        }
        let mut targets = Vec::new();
        // The failure to report if no exchange has an address: temporary
        // if any lookup may succeed later.
        let mut failure: Option<Failure> = None;
        let mut unresolved: Unresolved = None;
        let mut left_out = Vec::new();
        let limits = self.limits;
        let mut beyond = 0;
        for (i, (preference, exchange)) in exchanges.into_iter().enumerate() {
            let host = display(&exchange);
            let target = |ip| Target { host: host.clone(), ip, preference: Some(preference) };
            if i >= limits.hosts || targets.len() >= limits.addresses {
                // Past the limits, hosts as good as the last one kept are
                // looked up only to see whether this host is one of them.
                let worst = targets.last().and_then(|t: &Target| t.preference);
                if worst.is_none_or(|w| preference > w) || beyond >= SELF_CHECK_HOSTS {
                    break;
                }
                beyond += 1;
                if let Answer::Found(ips) = self.addresses(&exchange).await {
                    left_out.extend(ips.into_iter().map(target));
                }
                continue;
            }
            match self.addresses(&exchange).await {
                Answer::Found(ips) => {
                    let room = limits.addresses - targets.len();
                    let mut all = ips.into_iter().map(target);
                    targets.extend(all.by_ref().take(room));
                    left_out.extend(all);
                }
                other => {
                    let temporary = matches!(other, Answer::Temporary);
                    let reason = name_error(&host, "A", &other);
                    if unresolved.is_none() {
                        unresolved = Some((preference, reason.clone()));
                    }
                    if failure.as_ref().is_none_or(|f| f.permanent) {
                        failure = Some(if temporary { Failure::lookup(reason) } else { Failure::permanent(reason) });
                    }
                }
            }
        }
        if targets.is_empty() {
            let f = failure.unwrap_or_else(|| Failure::permanent(format!("{domain}: no MX host has an address")));
            return Err(f);
        }
        Ok(Found { targets, unresolved, left_out })
    }

    /// A name's AAAA and A records, asked at once, interleaved (IPv6
    /// first) so that a host with a broken family still gets the other
    /// tried early. Addresses nobody can connect to are left out.
    async fn addresses(&self, name: &Name) -> Answer<IpAddr> {
        let (v6, v4) = tokio::join!(self.query(name, RecordType::AAAA), self.query(name, RecordType::A));
        let ips = |a: &Answer<RData>| -> Vec<IpAddr> {
            match a {
                Answer::Found(v) => v
                    .iter()
                    .filter_map(|r| match r {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        // An IPv4-mapped one is the IPv4 address it maps
                        // (the kernel connects to that), checked as one.
                        RData::AAAA(a) => Some(IpAddr::V6(a.0).to_canonical()),
                        _ => None,
                    })
                    .filter(usable)
                    .collect(),
                _ => Vec::new(),
            }
        };
        let (six, four) = (ips(&v6), ips(&v4));
        if !six.is_empty() || !four.is_empty() {
            return Answer::Found(interleave(six, four));
        }
        match (v6, v4) {
            (Answer::Temporary, _) | (_, Answer::Temporary) => Answer::Temporary,
            (Answer::NoSuchName, _) | (_, Answer::NoSuchName) => Answer::NoSuchName,
            _ => Answer::NoData,
        }
    }

    /// A client's name: a PTR name of `ip` whose addresses include `ip`.
    /// `Err(Some(why))`: a name was found and did not check out (for the
    /// log, as Postfix warns); `Err(None)`: no name (none published, or
    /// the name service failed).
    pub async fn client_name(&self, ip: IpAddr) -> Result<String, Option<String>> {
        let ip = ip.to_canonical();
        let mut reverse = Name::from(ip);
        reverse.set_fqdn(true);
        let names: Vec<Name> = match self.query(&reverse, RecordType::PTR).await {
            Answer::Found(records) => records
                .into_iter()
                .filter_map(|r| match r {
                    RData::PTR(p) => Some(p.0),
                    _ => None,
                })
                .take(MAX_PTR_NAMES)
                .collect(),
            _ => return Err(None),
        };
        let mut why = None;
        for name in names {
            let shown = display(&name);
            if !valid_hostname(&shown) {
                why.get_or_insert_with(|| format!("malformed host name {shown:?} in the PTR record for {ip}"));
                continue;
            }
            match self.addresses(&name).await {
                Answer::Found(ips) if ips.iter().any(|a| a.to_canonical() == ip) => return Ok(shown),
                // Postfix's words (smtpd_peer.c), which its users grep for.
                Answer::Found(_) => {
                    why.get_or_insert_with(|| format!("hostname {shown} does not resolve to address {ip}"));
                }
                Answer::NoSuchName => {
                    why.get_or_insert_with(|| {
                        format!("hostname {shown} does not resolve to address {ip}: Name or service not known")
                    });
                }
                Answer::NoData => {
                    why.get_or_insert_with(|| {
                        format!(
                            "hostname {shown} does not resolve to address {ip}: No address associated with hostname"
                        )
                    });
                }
                Answer::Temporary => {}
            }
        }
        Err(why)
    }

    /// One lookup, classified; only records of the type asked are kept.
    async fn query(&self, name: &Name, rtype: RecordType) -> Answer<RData> {
        match self.inner.lookup(name.clone(), rtype).await {
            Ok(lookup) => {
                let found: Vec<RData> =
                    lookup.answers().iter().filter(|r| r.data.record_type() == rtype).map(|r| r.data.clone()).collect();
                if found.is_empty() { Answer::NoData } else { Answer::Found(found) }
            }
            Err(e) => classify(&e),
        }
    }
}

fn classify<T>(e: &NetError) -> Answer<T> {
    if e.is_nx_domain() {
        Answer::NoSuchName
    } else if e.is_no_records_found() {
        Answer::NoData
    } else {
        Answer::Temporary
    }
}

/// `dns.servers` as hickory's configuration: UDP, and TCP for truncated answers.
fn servers(addrs: &[SocketAddr]) -> ResolverConfig {
    let mut config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
    for a in addrs {
        let mut udp = ConnectionConfig::udp();
        udp.port = a.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = a.port();
        config.add_name_server(NameServerConfig::new(a.ip(), true, vec![udp, tcp]));
    }
    config
}

/// An address literal (`192.0.2.1`, `2001:db8::1`), with or without brackets.
fn literal(host: &str) -> Option<IpAddr> {
    let h = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let h = h.strip_prefix("IPv6:").or_else(|| h.strip_prefix("ipv6:")).unwrap_or(h);
    h.parse().ok()
}

/// A host name as a fully qualified DNS name (IDNA for non-ASCII).
fn fqdn(host: &str) -> Result<Name, Failure> {
    let bad = |why: String| Failure::permanent(format!("bad host name {:?}: {why}", host.escape_debug().to_string()));
    if host.is_empty() || host.len() > 253 {
        return Err(bad(String::from("1 to 253 characters")));
    }
    let mut name = Name::from_utf8(host).map_err(|e| bad(e.to_string()))?;
    if name.is_root() || name.num_labels() == 0 {
        return Err(bad(String::from("the root is no host")));
    }
    name.set_fqdn(true);
    Ok(name)
}

/// Whether `name` (ASCII, without the final dot) may stand for a client
/// in `Received:` and the logs: labels of letters, digits, `_` and `-`
/// (`-` not at either end of a label), at most 253 characters in all,
/// and not numeric (a name that looks like an address could pass for
/// one).
pub fn valid_hostname(name: &str) -> bool {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(label_ok)
        && !name.rsplit('.').next().is_some_and(|top| top.bytes().all(|b| b.is_ascii_digit()))
}

/// A name as logs and replies show it: ASCII, no final dot.
fn display(name: &Name) -> String {
    let s = name.to_ascii();
    s.strip_suffix('.').unwrap_or(&s).to_ascii_lowercase()
}

/// The exchanges of an MX answer in the order to try them: by
/// preference, shuffled among equals, each once. Empty for a null MX (a
/// lone exchange "."); a "." among other exchanges is ignored.
fn order_exchanges(records: Vec<RData>) -> Vec<(u16, Name)> {
    let mut mxs: Vec<(u16, Name)> = records
        .into_iter()
        .filter_map(|r| match r {
            RData::MX(mx) => Some((mx.preference, mx.exchange)),
            _ => None,
        })
        .filter(|(_, exchange)| !exchange.is_root())
        .collect();
    shuffle(&mut mxs);
    mxs.sort_by_key(|(pref, _)| *pref);
    let mut seen = std::collections::HashSet::new();
    mxs.into_iter().filter(|(_, n)| seen.insert(display(n))).collect()
}

/// Fisher-Yates with the standard library's per-instance random keys
/// (spreading load over equal MX hosts needs no stronger randomness).
fn shuffle<T>(v: &mut [T]) {
    use std::hash::BuildHasher;
    let keys = std::hash::RandomState::new();
    for i in (1..v.len()).rev() {
        let j = (keys.hash_one(i) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Whether an answer's address can be a mail server: not the
/// unspecified address or "this network" (0.0.0.0/8, which reaches this
/// host), not multicast or broadcast.
fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.octets()[0] != 0 && !a.is_multicast() && !a.is_broadcast(),
        IpAddr::V6(a) => !a.is_unspecified() && !a.is_multicast(),
    }
}

fn interleave(first: Vec<IpAddr>, second: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(first.len() + second.len());
    let (mut a, mut b) = (first.into_iter(), second.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

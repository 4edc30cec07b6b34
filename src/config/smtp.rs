//! Configuration of mail intake: listeners, TLS, the domains and networks
//! mail is accepted for and from, the bounds every session and message
//! live within, and the spool's free-space floor.
//!
//! Trusts: the file is root's; every value is still checked.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::smtpd::data::Bare;

/// How a listener does TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenTls {
    /// Plain SMTP only.
    None,
    /// STARTTLS offered when a certificate is configured.
    Starttls,
    /// TLS from the first byte (port 465 style).
    Implicit,
}

/// One listening socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listener {
    #[serde(deserialize_with = "de_socket_addr", serialize_with = "ser_display")]
    pub address: SocketAddr,
    pub tls: ListenTls,
}

impl Default for Listener {
    fn default() -> Listener {
        Listener { address: SocketAddr::from(([0, 0, 0, 0], 25)), tls: ListenTls::Starttls }
    }
}

/// The server certificate and key (PEM files, read by master).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Bounds on sessions and messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message, in bytes.
    pub message_size: u64,
    /// Recipients per message.
    pub recipients: u32,
    /// Longest command line; longer message lines are carried in pieces.
    pub line_length: u32,
    /// Largest header block of a message.
    pub header_size: u32,
    /// Sessions served at once, over all clients.
    pub sessions: u32,
    /// Sessions served at once for one client address.
    pub sessions_per_client: u32,
    /// Received: headers beyond which a message is refused as looping.
    pub hops: u32,
    /// Connections one client address may open per `rate_time_unit`
    /// (Postfix's `smtpd_client_connection_rate_limit`); 0: no limit.
    /// Clients in `networks` are not counted.
    pub connection_rate_per_client: u32,
    /// MAIL commands per client and `rate_time_unit`
    /// (`smtpd_client_message_rate_limit`); 0: no limit.
    pub message_rate_per_client: u32,
    /// RCPT commands per client and `rate_time_unit`
    /// (`smtpd_client_recipient_rate_limit`); 0: no limit.
    pub recipient_rate_per_client: u32,
    /// The window of the three rates.
    #[serde(with = "serde_ucl::time")]
    pub rate_time_unit: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            message_size: 10 << 20,
            recipients: 1000,
            line_length: 2048,
            header_size: 100 << 10,
            sessions: 10000,
            sessions_per_client: 50,
            hops: 50,
            connection_rate_per_client: 0,
            message_rate_per_client: 0,
            recipient_rate_per_client: 0,
            rate_time_unit: Duration::from_secs(60),
        }
    }
}

/// SMTP server behaviour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Smtpd {
    /// What to do with a bare CR or LF in message content.
    pub bare_line_ends: Bare,
    /// A session idle this long is closed with 421.
    #[serde(with = "serde_ucl::time")]
    pub idle_timeout: Duration,
    /// No session lasts longer than this.
    #[serde(with = "serde_ucl::time")]
    pub session_timeout: Duration,
    /// Errors after which a session is ended with 421.
    pub errors: u32,
    /// Errors answered at once; each later one waits `error_pause` longer.
    pub errors_before_pause: u32,
    #[serde(with = "serde_ucl::time")]
    pub error_pause: Duration,
    /// Ask the connector for each client's name (PTR, forward-confirmed)
    /// before the greeting; off: every client is `unknown`.
    pub reverse_lookups: bool,
    /// The greeting waits at most this long for the name; then the
    /// client is `unknown`.
    #[serde(with = "serde_ucl::time")]
    pub reverse_lookup_timeout: Duration,
}

impl Default for Smtpd {
    fn default() -> Smtpd {
        Smtpd {
            bare_line_ends: Bare::Reject,
            idle_timeout: Duration::from_secs(300),
            session_timeout: Duration::from_secs(3600),
            errors: 20,
            errors_before_pause: 3,
            error_pause: Duration::from_secs(1),
            reverse_lookups: true,
            reverse_lookup_timeout: Duration::from_secs(5),
        }
    }
}

/// The SMTP clients whose mail cleanup gives a missing Message-ID:,
/// Date: and From: (Postfix's `local_header_rewrite_clients`). Local
/// submissions get them with every value but `none`; mail this host
/// makes (notices, forwarded mail) never does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderClients {
    /// No client, and no local submission either.
    None,
    /// Clients on this host: a loopback address, or the address the
    /// client reached (the client connected to itself).
    Local,
    /// Those and the clients in `networks`.
    Networks,
    /// Every client: this host changes the mail it relays.
    All,
}

/// cleanup's behaviour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cleanup {
    /// Whose mail gets the originator fields it lacks.
    pub add_missing_headers: HeaderClients,
}

impl Default for Cleanup {
    fn default() -> Cleanup {
        Cleanup { add_missing_headers: HeaderClients::Local }
    }
}

/// The queue: the intake's free-space floor and the queue manager's
/// limits and retry times (the scheduler's `Settings`, whose comments say
/// what each does; the defaults are Postfix's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    /// Mail is refused with 452 4.3.1 while the spool has less free space.
    pub min_free_space: u64,
    pub active_messages: u32,
    pub active_recipients: u32,
    pub deferred_index: u32,
    #[serde(with = "serde_ucl::time")]
    pub lifetime: Duration,
    #[serde(with = "serde_ucl::time")]
    pub bounce_lifetime: Duration,
    #[serde(with = "serde_ucl::time")]
    pub delay_warning: Duration,
    pub backoff: super::delivery::BackoffConf,
    /// Committed messages cleanup hands qmgr in memory at once, before
    /// any queue file is written (0: every message gets its file), the
    /// largest it hands over so, and how long qmgr keeps one in memory
    /// before it writes the file itself (see `qmgr::memory`).
    pub memory_messages: u32,
    pub memory_message_size: u64,
    #[serde(with = "serde_ucl::time")]
    pub memory_time: Duration,
}

/// The most `queue.memory_messages`, `queue.memory_message_size` and
/// `queue.memory_time`.
pub const MAX_MEMORY_MESSAGES: u32 = 65536;
pub const MAX_MEMORY_MESSAGE_SIZE: u64 = 64 << 20;
pub const MAX_MEMORY_TIME: Duration = Duration::from_secs(60);

impl Default for Queue {
    fn default() -> Queue {
        let s = crate::qmgr::schedule::Settings::default();
        Queue {
            min_free_space: 100 << 20,
            active_messages: s.active_messages as u32,
            active_recipients: s.active_recipients as u32,
            deferred_index: s.deferred_index as u32,
            lifetime: s.lifetime,
            bounce_lifetime: s.bounce_lifetime,
            delay_warning: s.delay_warning,
            backoff: super::delivery::BackoffConf::default(),
            memory_messages: 1024,
            memory_message_size: 1 << 20,
            memory_time: Duration::from_secs(2),
        }
    }
}

impl Queue {
    /// The bounds of the memory hand-over's keys.
    pub fn check_memory(&self) -> Result<(), String> {
        if self.memory_messages > MAX_MEMORY_MESSAGES {
            return Err(format!("key `queue.memory_messages`: at most {MAX_MEMORY_MESSAGES}"));
        }
        if self.memory_message_size > MAX_MEMORY_MESSAGE_SIZE {
            return Err(String::from("key `queue.memory_message_size`: at most 64mb"));
        }
        if self.memory_time.is_zero() || self.memory_time > MAX_MEMORY_TIME {
            return Err(String::from("key `queue.memory_time`: must be longer than zero and at most 60s"));
        }
        Ok(())
    }
}

fn ser_display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

fn de_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse()
        .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an address:port (e.g. 127.0.0.1:25, [::1]:25)")))
}

/// A network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Network {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::*;
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map(V4).unwrap_or(V6(v6)),
            v4 => v4,
        };
        match (self.addr, ip) {
            (V4(n), V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (V6(n), V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Network, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: std::net::IpAddr = a.parse().map_err(|_| format!("`{s}` is not a network (e.g. 192.0.2.0/24)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() { max } else { p.parse().map_err(|_| format!("`{s}`: bad prefix length"))? };
        if prefix > max {
            return Err(format!("`{s}`: prefix longer than {max}"));
        }
        Ok(Network { addr, prefix })
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Network {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Network, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The default trusted networks: loopback.
pub fn default_networks() -> Vec<Network> {
    vec![
        Network { addr: [127, 0, 0, 0].into(), prefix: 8 },
        Network { addr: std::net::Ipv6Addr::LOCALHOST.into(), prefix: 128 },
    ]
}

/// The default listeners: `smtp` on port 25 of every IPv4 address.
pub fn default_listen() -> BTreeMap<String, Listener> {
    BTreeMap::from([(String::from("smtp"), Listener::default())])
}

/// Domains: names, lower-cased, checked.
pub fn de_domains<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    let mut out = Vec::with_capacity(v.len());
    for name in v {
        let key = crate::address::domain_key(&name).filter(|_| !name.starts_with('['));
        let Some(key) = key.filter(|_| crate::address::parse_domain(&name, true).is_ok()) else {
            return Err(serde::de::Error::custom(format!("`{name}` is not a domain")));
        };
        // (A non-ASCII one in its ASCII form, as mail to it is compared.)
        out.push(key);
    }
    Ok(Some(out))
}

/// `listen` as one block of named listeners, or repeated `listen NAME { }`
/// blocks (which UCL gives as a list of one-entry blocks).
struct ListenVisitor;

impl<'de> serde::de::Visitor<'de> for ListenVisitor {
    type Value = BTreeMap<String, Listener>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("listen blocks: listen NAME { address = ...; }")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        BTreeMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut all = BTreeMap::new();
        while let Some(block) = seq.next_element::<BTreeMap<String, Listener>>()? {
            for (name, l) in block {
                if all.insert(name.clone(), l).is_some() {
                    return Err(serde::de::Error::custom(format!("listener `{name}` defined twice")));
                }
            }
        }
        Ok(all)
    }
}

/// Listener names: letters, digits, `-` and `_`.
pub fn de_listen<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Listener>, D::Error> {
    let m = d.deserialize_any(ListenVisitor)?;
    for name in m.keys() {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(serde::de::Error::custom(format!("`{name}` is not a listener name")));
        }
    }
    if m.len() > 64 {
        return Err(serde::de::Error::custom("more than 64 listeners"));
    }
    Ok(m)
}

pub fn de_limits<'de, D: Deserializer<'de>>(d: D) -> Result<Limits, D::Error> {
    let l = Limits::deserialize(d)?;
    let bad = |m: &str| Err(serde::de::Error::custom(m.to_string()));
    if l.message_size < 1024 {
        return bad("message_size must be at least 1024");
    }
    if !(1..=100_000).contains(&l.recipients) {
        return bad("recipients must be 1 to 100000");
    }
    if !(512..=65536).contains(&l.line_length) {
        return bad("line_length must be 512 to 65536");
    }
    if l.header_size < 1024 {
        return bad("header_size must be at least 1024");
    }
    if l.sessions == 0 || l.sessions_per_client == 0 || l.sessions > 1_000_000 {
        return bad("sessions and sessions_per_client must be 1 to 1000000");
    }
    if !(1..=1000).contains(&l.hops) {
        return bad("hops must be 1 to 1000");
    }
    for (key, n) in [
        ("connection_rate_per_client", l.connection_rate_per_client),
        ("message_rate_per_client", l.message_rate_per_client),
        ("recipient_rate_per_client", l.recipient_rate_per_client),
    ] {
        if n > 1_000_000 {
            return bad(&format!("{key} must be 0 (no limit) to 1000000"));
        }
    }
    if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600)).contains(&l.rate_time_unit) {
        return bad("rate_time_unit must be 1s to 24h");
    }
    Ok(l)
}

/// The longest `smtpd.reverse_lookup_timeout`: a client waits that long
/// for the greeting.
pub const MAX_REVERSE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(60);

pub fn de_smtpd<'de, D: Deserializer<'de>>(d: D) -> Result<Smtpd, D::Error> {
    let s = Smtpd::deserialize(d)?;
    if s.idle_timeout.is_zero() || s.session_timeout.is_zero() {
        return Err(serde::de::Error::custom("timeouts must be positive"));
    }
    if s.errors == 0 {
        return Err(serde::de::Error::custom("errors must be at least 1"));
    }
    if s.reverse_lookup_timeout.is_zero() || s.reverse_lookup_timeout > MAX_REVERSE_LOOKUP_TIMEOUT {
        return Err(serde::de::Error::custom("reverse_lookup_timeout must be longer than zero and at most 60s"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_match() {
        let n: Network = "192.0.2.0/24".parse().unwrap();
        assert!(n.contains("192.0.2.77".parse().unwrap()));
        assert!(!n.contains("192.0.3.1".parse().unwrap()));
        assert!(n.contains("::ffff:192.0.2.1".parse().unwrap()));
        let n: Network = "2001:db8::/32".parse().unwrap();
        assert!(n.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!n.contains("2001:db9::1".parse().unwrap()));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("example/8".parse::<Network>().is_err());
    }
}

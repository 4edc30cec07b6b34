//! The transport table: routing per domain in Postfix's transport(5)
//! notation (`transport_map` in the configuration), consulted by the
//! router before its default rules, for the local domains too.
//!
//! ```text
//! transport_map {
//!     "example.org" = "lmtp:unix:/var/run/dovecot/lmtp";
//!     "partner.example" = "smtp:[mx.partner.example]:587";
//!     ".example.net" = "smtp:[gw.example.net]";
//!     "*" = "smtp";
//! }
//! ```
//!
//! Keys: a domain (that domain only), `.domain` (its subdomains, at any
//! depth, not the domain itself) or `*` (every domain). A domain is
//! looked up as itself, then as each of its parents' `.domain` entries
//! from the longest, then as `*`. Values: `smtp` (the default route of a
//! remote domain: the relay host, else MX), `smtp:NEXTHOP` (`host` or
//! `host:port` by MX, `[host]` or `[host]:port` without), `lmtp:NEXTHOP`
//! (`[host]:port`, `host:port`, `[host]` or `host`, never by MX, port
//! [`LMTP_PORT`] by default, or `unix:/absolute/path`) and `local`.
//!
//! Trusts: the configuration (root's file); every key and value is
//! checked as it is read, and an error names the entry.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::route::{Hop, Nexthop, normal_domain};

/// The LMTP port when a TCP next hop names none (IANA's `lmtp`).
pub const LMTP_PORT: u16 = 24;

/// The longest UNIX socket path: `sun_path` holds 104 bytes on FreeBSD
/// and OpenBSD (108 on Linux), the terminating NUL included.
pub const MAX_SOCKET_PATH: usize = 103;

/// What an entry of the table says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `smtp` (None: the default route of a remote domain) or
    /// `smtp:NEXTHOP`.
    Smtp(Option<Nexthop>),
    /// `lmtp:NEXTHOP`: a TCP next hop (never by MX) or a UNIX socket.
    Lmtp(Hop),
    /// `local`: the local delivery agent.
    Local,
}

impl Route {
    /// Parse a value of the table.
    pub fn parse(s: &str) -> Result<Route, String> {
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(String::from("a transport has no spaces or control characters"));
        }
        let (name, rest) = match s.split_once(':') {
            Some((n, r)) => (n, r),
            None => (s, ""),
        };
        match (name.to_ascii_lowercase().as_str(), rest) {
            ("smtp", "") => Ok(Route::Smtp(None)),
            ("smtp", r) => Nexthop::parse(r).map(|n| Route::Smtp(Some(n))).map_err(|e| e.to_string()),
            ("lmtp", "") => Err(String::from("lmtp needs a next hop: lmtp:unix:/path or lmtp:[host]:port")),
            ("lmtp", r) => lmtp_hop(r).map(Route::Lmtp),
            ("local", "") => Ok(Route::Local),
            ("local", _) => Err(String::from("local takes no next hop")),
            _ => Err(format!("unknown transport `{}` (smtp, lmtp or local)", name.escape_debug())),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Smtp(None) => f.write_str("smtp"),
            Route::Smtp(Some(n)) => write!(f, "smtp:{n}"),
            Route::Lmtp(hop) => write!(f, "lmtp:{hop}"),
            Route::Local => f.write_str("local"),
        }
    }
}

/// An LMTP next hop: `unix:/path`, or a host (`inet:` may precede it, as
/// in Postfix) whose address records are used, never its MX.
fn lmtp_hop(s: &str) -> Result<Hop, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        return socket_path(path).map(Hop::Unix);
    }
    let s = s.strip_prefix("inet:").unwrap_or(s);
    let n = Nexthop::parse(s).map_err(|e| e.to_string())?;
    Ok(Hop::Inet(Nexthop { mx: false, ..n }))
}

/// A UNIX socket's path: absolute, plain (no `.`, `..` or empty parts),
/// short enough for a socket address, in a directory other than `/` (the
/// connector may reach every socket beneath that directory).
fn socket_path(s: &str) -> Result<PathBuf, String> {
    let bad = |why: &str| Err(format!("socket `{}`: {why}", s.escape_debug()));
    if !s.starts_with('/') {
        return bad("must be an absolute path");
    }
    if s.len() > MAX_SOCKET_PATH {
        return bad(&format!("longer than {MAX_SOCKET_PATH} bytes, the most a socket address holds"));
    }
    if s.ends_with('/') || s.contains("//") {
        return bad("must name a file, without empty parts");
    }
    if s.split('/').any(|c| c == "." || c == "..") {
        return bad("must not contain `.` or `..`");
    }
    let path = PathBuf::from(s);
    if path.parent().is_none_or(|p| p == Path::new("/")) {
        return bad("put the socket in a directory of its own, not in `/`");
    }
    Ok(path)
}

/// A key of the table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    /// `*`.
    Any,
    /// `domain`.
    Domain(String),
    /// `.domain`: its subdomains.
    Subdomains(String),
}

impl Key {
    fn parse(s: &str) -> Result<Key, String> {
        if s == "*" {
            return Ok(Key::Any);
        }
        let (sub, d) = match s.strip_prefix('.') {
            Some(d) => (true, d),
            None => (false, s),
        };
        if d.contains('@') {
            return Err(String::from("the table's keys are domains, not addresses"));
        }
        let d = d.strip_suffix('.').unwrap_or(d);
        if d.starts_with('[') || crate::address::parse_domain(d, true).is_err() {
            return Err(String::from("not a domain, `.domain` or `*`"));
        }
        let d = normal_domain(d);
        Ok(if sub { Key::Subdomains(d) } else { Key::Domain(d) })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Any => f.write_str("*"),
            Key::Domain(d) => f.write_str(d),
            Key::Subdomains(d) => write!(f, ".{d}"),
        }
    }
}

/// The transport table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportMap {
    /// By lower-case domain, without a trailing dot.
    domains: HashMap<String, Route>,
    subdomains: HashMap<String, Route>,
    any: Option<Route>,
}

impl TransportMap {
    /// Add an entry from its configuration text; refused when the key is
    /// there already (keys compare without case and trailing dot).
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), String> {
        let key = Key::parse(key)?;
        let route = Route::parse(value)?;
        self.add(key, route)
    }

    fn add(&mut self, key: Key, route: Route) -> Result<(), String> {
        let twice = || format!("`{key}` is in the table twice");
        let taken = match &key {
            Key::Any => self.any.replace(route).is_some(),
            Key::Domain(d) => self.domains.insert(d.clone(), route).is_some(),
            Key::Subdomains(d) => self.subdomains.insert(d.clone(), route).is_some(),
        };
        if taken { Err(twice()) } else { Ok(()) }
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && self.subdomains.is_empty() && self.any.is_none()
    }

    /// The entry for `domain` (lower case, without a trailing dot): the
    /// domain's own, else its closest parent's `.domain`, else `*`.
    pub fn lookup(&self, domain: &str) -> Option<&Route> {
        if let Some(r) = self.domains.get(domain) {
            return Some(r);
        }
        let mut rest = domain;
        while let Some(i) = rest.find('.') {
            rest = &rest[i + 1..];
            if let Some(r) = self.subdomains.get(rest) {
                return Some(r);
            }
        }
        self.any.as_ref()
    }

    /// Every entry, in key order, as text.
    fn entries(&self) -> BTreeMap<Key, &Route> {
        let mut out = BTreeMap::new();
        out.extend(self.domains.iter().map(|(d, r)| (Key::Domain(d.clone()), r)));
        out.extend(self.subdomains.iter().map(|(d, r)| (Key::Subdomains(d.clone()), r)));
        out.extend(self.any.iter().map(|r| (Key::Any, r)));
        out
    }

    /// The UNIX sockets the table routes to, by directory (each sorted,
    /// without duplicates): what the connector may connect to.
    pub fn socket_dirs(&self) -> BTreeMap<PathBuf, Vec<OsString>> {
        let mut out: BTreeMap<PathBuf, Vec<OsString>> = BTreeMap::new();
        let routes = self.domains.values().chain(self.subdomains.values()).chain(self.any.iter());
        for r in routes {
            if let Route::Lmtp(Hop::Unix(path)) = r
                && let (Some(dir), Some(name)) = (path.parent(), path.file_name())
            {
                let names = out.entry(dir.to_path_buf()).or_default();
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_os_string());
                    names.sort();
                }
            }
        }
        out
    }
}

impl Serialize for TransportMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.entries().into_iter().map(|(k, r)| (k.to_string(), r.to_string())))
    }
}

/// A key as read: checked at once, so an error names it.
struct KeyText(Key);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<KeyText, D::Error> {
        let s = String::deserialize(d)?;
        Key::parse(&s).map(KeyText).map_err(|e| de::Error::custom(format!("`{}`: {e}", s.escape_debug())))
    }
}

/// A value as read: checked at once, so an error names its key.
struct RouteText(Route);

struct RouteVisitor;

impl Visitor<'_> for RouteVisitor {
    type Value = RouteText;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("one transport per key: smtp, smtp:NEXTHOP, lmtp:NEXTHOP or local")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<RouteText, E> {
        Route::parse(s).map(RouteText).map_err(|e| E::custom(format!("`{}`: {e}", s.escape_debug())))
    }
}

impl<'de> Deserialize<'de> for RouteText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RouteText, D::Error> {
        d.deserialize_str(RouteVisitor)
    }
}

struct MapVisitor;

impl<'de> Visitor<'de> for MapVisitor {
    type Value = TransportMap;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a block of entries: \"domain\" = \"transport:nexthop\";")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TransportMap, A::Error> {
        let mut table = TransportMap::default();
        while let Some(KeyText(key)) = map.next_key()? {
            let RouteText(route) = map.next_value()?;
            table.add(key, route).map_err(de::Error::custom)?;
        }
        Ok(table)
    }
}

impl<'de> Deserialize<'de> for TransportMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TransportMap, D::Error> {
        d.deserialize_map(MapVisitor)
    }
}

#[cfg(test)]
mod tests;

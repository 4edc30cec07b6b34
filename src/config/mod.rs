//! The configuration: one UCL file read by master (and by mtactl to find
//! the control socket), deserialised into typed structures. Unknown keys
//! and bad values are errors naming file, line and key. Relative paths
//! resolve against the configuration file's folder.
//!
//! Trusts: the file is root's (master runs as root); still, every value is
//! checked, since a typo must not start a half-configured MTA.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::qmgr::schedule;
use crate::roles::Role;

pub mod client_tls;
pub mod delivery;
mod locate;
pub mod smtp;

/// Where the configuration is when `-f` is not given.
pub const DEFAULT_PATH: &str = match option_env!("MTA_CONFIG") {
    Some(p) => p,
    None => {
        if cfg!(target_os = "freebsd") {
            "/usr/local/etc/mta/mta.conf"
        } else {
            "/etc/mta/mta.conf"
        }
    }
};

/// The compiled-in libexec directory (ports set MTA_LIBEXEC at build time).
pub const DEFAULT_LIBEXEC: &str = match option_env!("MTA_LIBEXEC") {
    Some(p) => p,
    None => "/usr/local/libexec/mta",
};

/// The aliases file when `aliases` is not given: where the system keeps it.
pub const DEFAULT_ALIASES: &str =
    if cfg!(any(target_os = "freebsd", target_os = "openbsd")) { "/etc/mail/aliases" } else { "/etc/aliases" };

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This host's name in SMTP greetings and Received: lines.
    #[serde(deserialize_with = "de_hostname")]
    pub hostname: String,
    /// The spool (queue) directory.
    pub spool: PathBuf,
    /// The unprivileged user every child but local runs as when master is root.
    #[serde(deserialize_with = "de_user")]
    pub user: String,
    /// The group postdrop runs as (set-gid) to write into maildrop/.
    #[serde(deserialize_with = "de_user")]
    pub submission_group: String,
    /// Where the child programs are.
    pub libexec_directory: PathBuf,
    /// Master's pid file, written when it runs as a daemon.
    pub pidfile: PathBuf,
    /// The aliases(5) file; `newaliases` compiles it to the same path with
    /// `.cdb` appended, whose names master adds to the local recipients.
    pub aliases: PathBuf,
    pub control: Control,
    pub log: Log,
    #[serde(deserialize_with = "de_supervise")]
    pub supervise: Supervise,
    pub sandbox: SandboxConf,
    /// Process counts per role; singleton roles accept only 1.
    #[serde(deserialize_with = "de_processes")]
    pub processes: BTreeMap<Role, u32>,
    /// Domains mail is accepted for (local recipients only); None: hostname and localhost.
    #[serde(deserialize_with = "smtp::de_domains")]
    pub domains: Option<Vec<String>>,
    /// Clients that may relay to any domain.
    pub networks: Vec<smtp::Network>,
    /// Listening sockets by name.
    #[serde(deserialize_with = "smtp::de_listen")]
    pub listen: BTreeMap<String, smtp::Listener>,
    pub tls: smtp::Tls,
    #[serde(deserialize_with = "smtp::de_limits")]
    pub limits: smtp::Limits,
    #[serde(deserialize_with = "smtp::de_smtpd")]
    pub smtpd: smtp::Smtpd,
    /// cleanup: the headers it completes.
    pub cleanup: smtp::Cleanup,
    pub queue: smtp::Queue,
    /// Concurrency and recipient limits per transport.
    pub transport: delivery::Transports,
    /// Routing per domain (Postfix's transport table), before the default
    /// rules: `"example.org" = "lmtp:unix:/var/run/dovecot/lmtp";`.
    pub transport_map: crate::qmgr::schedule::TransportMap,
    /// The relay host all non-local mail goes to.
    pub relay: delivery::Relay,
    /// The SMTP client.
    pub smtp: delivery::SmtpClient,
    /// The connector's resolver.
    pub dns: delivery::Dns,
    /// Delivery status notifications.
    pub bounce: delivery::BounceConf,
    /// The local delivery agent.
    pub local: delivery::LocalConf,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Control {
    /// The control socket mtactl and mailq connect to.
    pub socket: PathBuf,
    /// Clients served at once; more wait in the listen queue.
    #[serde(deserialize_with = "de_clients")]
    pub clients: u32,
    /// A client that sends no complete request within this time is dropped.
    #[serde(with = "serde_ucl::time")]
    pub timeout: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// syslog facility.
    #[serde(deserialize_with = "de_facility")]
    pub facility: String,
    /// Longest log line; longer lines are truncated and marked.
    #[serde(deserialize_with = "de_line_length")]
    pub line_length: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Supervise {
    /// Pause before restarting a child that died.
    #[serde(with = "serde_ucl::time")]
    pub restart_delay: Duration,
    /// The pause doubles with each failure in a row, up to this.
    #[serde(with = "serde_ucl::time")]
    pub restart_delay_max: Duration,
    /// A child that ran this long resets its failure count.
    #[serde(with = "serde_ucl::time")]
    pub stable_after: Duration,
    /// On stop, children that have not exited after this are killed.
    #[serde(with = "serde_ucl::time")]
    pub stop_timeout: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
#[derive(Default)]
pub struct SandboxConf {
    /// Run a child unconfined when its sandbox cannot be entered (logged at every start).
    pub allow_unconfined: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            hostname: system_hostname(),
            spool: PathBuf::from("/var/spool/mta"),
            user: String::from("_mta"),
            submission_group: String::from("_mtadrop"),
            libexec_directory: PathBuf::from(DEFAULT_LIBEXEC),
            pidfile: PathBuf::from("/var/run/mta.pid"),
            aliases: PathBuf::from(DEFAULT_ALIASES),
            control: Control::default(),
            log: Log::default(),
            supervise: Supervise::default(),
            sandbox: SandboxConf::default(),
            processes: BTreeMap::new(),
            domains: None,
            networks: smtp::default_networks(),
            listen: smtp::default_listen(),
            tls: smtp::Tls::default(),
            limits: smtp::Limits::default(),
            smtpd: smtp::Smtpd::default(),
            cleanup: smtp::Cleanup::default(),
            queue: smtp::Queue::default(),
            transport: delivery::Transports::default(),
            transport_map: crate::qmgr::schedule::TransportMap::default(),
            relay: delivery::Relay::default(),
            smtp: delivery::SmtpClient::default(),
            dns: delivery::Dns::default(),
            bounce: delivery::BounceConf::default(),
            local: delivery::LocalConf::default(),
        }
    }
}

impl Default for Control {
    fn default() -> Control {
        Control { socket: PathBuf::from("/var/run/mta.sock"), clients: 16, timeout: Duration::from_secs(10) }
    }
}

impl Default for Log {
    fn default() -> Log {
        Log { facility: String::from("mail"), line_length: 2048 }
    }
}

impl Default for Supervise {
    fn default() -> Supervise {
        Supervise {
            restart_delay: Duration::from_secs(1),
            restart_delay_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(10),
        }
    }
}

/// syslog facilities by name.
pub const FACILITIES: &[&str] =
    &["mail", "daemon", "user", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"];

fn de_facility<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if FACILITIES.contains(&s.as_str()) {
        Ok(s)
    } else {
        Err(serde::de::Error::custom(format!("unknown syslog facility `{s}` (one of: {})", FACILITIES.join(", "))))
    }
}

fn in_range<'de, D: Deserializer<'de>>(d: D, lo: u32, hi: u32) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    if (lo..=hi).contains(&n) {
        Ok(n)
    } else {
        Err(serde::de::Error::custom(format!("{n} is out of range ({lo} to {hi})")))
    }
}

fn de_clients<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 1, 1024)
}

fn de_line_length<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    in_range(d, 256, 65536)
}

fn de_hostname<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let h = String::deserialize(d)?;
    let label_ok = |l: &str| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-');
    if h.len() > 253 || !h.bytes().all(hostname_byte) || !h.split('.').all(label_ok) {
        return Err(serde::de::Error::custom(format!("`{h}` is not a host name")));
    }
    Ok(h)
}

fn de_user<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let u = String::deserialize(d)?;
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.';
    if u.is_empty() || u.len() > 32 || !u.bytes().all(ok) {
        return Err(serde::de::Error::custom(format!("`{u}` is not a user or group name")));
    }
    Ok(u)
}

fn de_supervise<'de, D: Deserializer<'de>>(d: D) -> Result<Supervise, D::Error> {
    let s = Supervise::deserialize(d)?;
    if s.restart_delay.is_zero() || s.restart_delay > s.restart_delay_max {
        return Err(serde::de::Error::custom("restart_delay must be positive and at most restart_delay_max"));
    }
    if s.stop_timeout.is_zero() {
        return Err(serde::de::Error::custom("stop_timeout must be positive"));
    }
    Ok(s)
}

fn de_processes<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<Role, u32>, D::Error> {
    let raw = BTreeMap::<String, u32>::deserialize(d)?;
    let mut out = BTreeMap::new();
    for (name, n) in raw {
        let Some(role) = Role::from_name(&name) else {
            return Err(serde::de::Error::custom(format!("unknown role `{name}`")));
        };
        if role.singleton() && n != 1 {
            return Err(serde::de::Error::custom(format!("`{name}` is a singleton: its count must be 1")));
        }
        if role.fixed_count() && n != 1 {
            return Err(serde::de::Error::custom(format!("`{name}` runs once at most: its count must be 1")));
        }
        if n == 0 || n > 1024 {
            return Err(serde::de::Error::custom(format!("`{name}`: process count must be 1 to 1024")));
        }
        out.insert(role, n);
    }
    Ok(out)
}

fn system_hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| String::from("localhost"))
}

/// A configuration error, naming the file and, where known, line and key.
#[derive(Debug)]
pub struct Error {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file.display(), l, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for Error {}

/// Largest configuration file read.
const MAX_CONFIG_SIZE: u64 = 1 << 20;

impl Config {
    /// Read and check the configuration at `path`.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let err = |line, message: String| Error { file: path.to_path_buf(), line, message };
        let meta = std::fs::metadata(path).map_err(|e| err(None, e.to_string()))?;
        if meta.len() > MAX_CONFIG_SIZE {
            return Err(err(None, format!("larger than {MAX_CONFIG_SIZE} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(None, e.to_string()))?;
        let mut config = Config::parse(&text).map_err(|(line, m)| err(line, m))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = if base.as_os_str().is_empty() { Path::new(".") } else { base };
        let base = std::fs::canonicalize(base).map_err(|e| err(None, format!("{}: {e}", base.display())))?;
        config.resolve_paths(&base);
        Ok(config)
    }

    /// Parse configuration text; errors carry the line where known: an
    /// error about several keys has the line of the key it names.
    pub fn parse(text: &str) -> Result<Config, (Option<usize>, String)> {
        let config: Config = serde_ucl::from_str(text).map_err(|e| describe(e, text))?;
        config.check().map_err(|m| (locate::line_of_message(text, &m), m))?;
        Ok(config)
    }

    /// Checks that involve several keys. Each message begins with the
    /// key at fault (`key \`a.b\`: ...`), whose line `parse` finds.
    fn check(&self) -> Result<(), String> {
        let has_cert = self.tls.certificate.is_some() && self.tls.key.is_some();
        if self.tls.certificate.is_some() != self.tls.key.is_some() {
            return Err(String::from("key `tls`: certificate and key must be given together"));
        }
        for (name, l) in &self.listen {
            if l.tls == smtp::ListenTls::Implicit && !has_cert {
                return Err(format!("key `listen.{name}.tls`: implicit TLS needs tls.certificate and tls.key"));
            }
        }
        if self.relay.password_file.is_some() && self.relay.host.is_none() {
            return Err(String::from("key `relay.password_file`: needs relay.host"));
        }
        if self.smtp.connect_timeout.is_zero() {
            return Err(String::from("key `smtp.connect_timeout`: must be longer than zero"));
        }
        if self.smtp.connection_reuse_limit == 0 {
            return Err(String::from("key `smtp.connection_reuse_limit`: must be at least 1"));
        }
        let t = &self.smtp.timeouts;
        let stages = [
            ("greeting", t.greeting),
            ("helo", t.helo),
            ("starttls", t.starttls),
            ("mail", t.mail),
            ("rcpt", t.rcpt),
            ("data_init", t.data_init),
            ("data_xfer", t.data_xfer),
            ("data_done", t.data_done),
            ("rset", t.rset),
            ("quit", t.quit),
        ];
        if let Some((stage, _)) = stages.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("key `smtp.timeouts.{stage}`: must be longer than zero"));
        }
        client_tls::check(&self.relay, &self.smtp)?;
        if self.relay.password_file.is_some()
            && let Some(relay) = self.relay.host.as_deref().and_then(|h| schedule::Nexthop::parse(h).ok())
            && self.relay.tls.level().unwrap_or_else(|| self.smtp.tls_level(&relay)) == delivery::ClientTls::None
        {
            return Err(String::from(
                "key `relay.password_file`: credentials go only inside TLS, and the relay host's TLS level is none \
                 (set relay.tls = require, verify, implicit or implicit-verify)",
            ));
        }
        if self.bounce.size_limit > 64 << 20 {
            return Err(String::from("key `bounce.size_limit`: at most 64 MiB (a notice is built in memory)"));
        }
        if self.dns.timeout.is_zero() || self.dns.attempts == 0 {
            return Err(String::from("key `dns`: timeout and attempts must be positive"));
        }
        if !(1..=10_000).contains(&self.dns.reverse_lookup_limit) {
            return Err(String::from("key `dns.reverse_lookup_limit`: must be 1 to 10000"));
        }
        if self.smtp.port == 0 {
            return Err(String::from("key `smtp.port`: must be 1 to 65535"));
        }
        if !(1..=100).contains(&self.smtp.mx_host_limit) {
            return Err(String::from("key `smtp.mx_host_limit`: must be 1 to 100"));
        }
        if !(1..=100).contains(&self.smtp.mx_address_limit) {
            return Err(String::from("key `smtp.mx_address_limit`: must be 1 to 100"));
        }
        if !(1..=10).contains(&self.smtp.mx_session_limit) {
            return Err(String::from("key `smtp.mx_session_limit`: must be 1 to 10"));
        }
        self.local.check()?;
        self.queue.check_memory()?;
        delivery::settings(&self.queue, &self.transport).check()?;
        Ok(())
    }

    /// What the delivery roles are told; `credentials` only for smtp.
    pub fn delivery(&self, credentials: Option<(String, String)>) -> delivery::DeliveryConf {
        delivery::DeliveryConf {
            queue: self.queue.clone(),
            transport: self.transport.clone(),
            transport_map: self.transport_map.clone(),
            relay: self.relay.clone(),
            smtp: self.smtp.clone(),
            dns: self.dns.clone(),
            bounce: self.bounce.clone(),
            domains: self.local_domains(),
            own_addresses: Vec::new(),
            listen: self.listen.values().map(|l| l.address).collect(),
            local: self.local.clone(),
            aliases: self.aliases.clone(),
            libexec: self.libexec_directory.clone(),
            credentials,
            tls_ca: Vec::new(),
        }
    }

    /// The domains mail is accepted for.
    pub fn local_domains(&self) -> Vec<String> {
        match &self.domains {
            Some(d) => d.clone(),
            None => vec![
                crate::address::domain_key(&self.hostname).unwrap_or_else(|| self.hostname.to_lowercase()),
                String::from("localhost"),
            ],
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let paths = [
            &mut self.spool,
            &mut self.libexec_directory,
            &mut self.pidfile,
            &mut self.aliases,
            &mut self.control.socket,
        ];
        for p in paths {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        let files =
            [&mut self.tls.certificate, &mut self.tls.key, &mut self.relay.password_file, &mut self.smtp.tls_ca_file];
        for p in files.into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// How many processes of `role` run.
    pub fn count(&self, role: Role) -> u32 {
        if role == Role::Lookup && !self.local.looks_up_users() {
            return 0;
        }
        self.processes.get(&role).copied().unwrap_or(1)
    }
}

fn hostname_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
}

fn describe(e: serde_ucl::UclError, text: &str) -> (Option<usize>, String) {
    let position = e.position();
    let line = position.map(|p| p.line);
    let mut message = match &e {
        serde_ucl::UclError::Deserialize(d) => {
            let mut m = d.error().to_string();
            let key = d
                .path()
                .iter()
                .map(|s| match s {
                    serde_ucl::parse::PathSegment::Key { key, .. } => key.clone(),
                    serde_ucl::parse::PathSegment::Index(i) => format!("[{i}]"),
                })
                .collect::<Vec<_>>()
                .join(".");
            if !key.is_empty() {
                m = format!("key `{key}`: {m}");
            }
            m
        }
        serde_ucl::UclError::Syntax(p) | serde_ucl::UclError::Stopped(p) => format!("syntax error: {}", p.kind()),
        other => other.to_string(),
    };
    // An error found at the end of the text (a key with no value, a
    // block or string left open) is said so, on the file's last line
    // rather than the empty one past its final newline.
    if position.is_some_and(|p| p.offset >= text.len()) {
        message.push_str(" at the end of the file (something above is unfinished: a value, a closing brace or quote)");
        return (Some(text.lines().count().max(1)), message);
    }
    (line, message)
}

#[cfg(test)]
mod tests;

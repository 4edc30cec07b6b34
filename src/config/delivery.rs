//! Configuration of delivery: the queue manager's limits and retry
//! times, the transports' concurrency, the relay host, the SMTP client,
//! the resolver and bounces. Each key mirrors a field of the scheduler's
//! `Settings` or the client's `Config`; defaults are Postfix's.
//!
//! Trusts: the file is root's; every value is still checked (the
//! scheduler checks its settings again).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

pub use super::client_tls::{ClientTls, RelayTls};
use super::smtp::Queue;
use crate::qmgr::schedule::{self, Backoff, Nexthop, Settings, TransportMap, TransportSettings};
use crate::smtp::client::Timeouts;

/// How long a deferred message waits (`queue.backoff`): see
/// [`Backoff`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConf {
    #[serde(with = "serde_ucl::time")]
    pub min: Duration,
    #[serde(with = "serde_ucl::time")]
    pub max: Duration,
}

impl Default for BackoffConf {
    fn default() -> BackoffConf {
        let b = Backoff::default();
        BackoffConf { min: b.min, max: b.max }
    }
}

/// One transport's limits (`transport.smtp`, `transport.lmtp`,
/// `transport.local`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConf {
    pub processes: u32,
    pub initial_concurrency: u32,
    /// None: the transport's default ([`TransportSettings::default_limit`]).
    pub concurrency_limit: Option<u32>,
    pub recipient_limit: u32,
    pub failed_cohort_limit: u32,
    #[serde(with = "serde_ucl::time")]
    pub dead_time: Duration,
}

impl Default for TransportConf {
    fn default() -> TransportConf {
        let t = TransportSettings::default();
        TransportConf {
            processes: t.processes as u32,
            initial_concurrency: t.initial_concurrency,
            concurrency_limit: None,
            recipient_limit: t.recipient_limit as u32,
            failed_cohort_limit: t.failed_cohort_limit,
            dead_time: t.dead_time,
        }
    }
}

impl TransportConf {
    /// The scheduler's settings (`local`: of the local transport, whose
    /// default concurrency limit differs, [`TransportSettings::default_limit`]).
    fn settings(&self, local: bool) -> TransportSettings {
        let limit = TransportSettings::default_limit(local, self.processes as usize);
        TransportSettings {
            processes: self.processes as usize,
            initial_concurrency: self.initial_concurrency,
            concurrency_limit: self.concurrency_limit.unwrap_or(limit),
            recipient_limit: self.recipient_limit as usize,
            failed_cohort_limit: self.failed_cohort_limit,
            dead_time: self.dead_time,
        }
    }
}

/// `transport { smtp { ... } lmtp { ... } local { ... } }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transports {
    pub smtp: TransportConf,
    pub lmtp: TransportConf,
    pub local: TransportConf,
}

/// `relay { host = "[smtp.example.net]:587"; tls = "require"; password_file = "..."; }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Relay {
    /// Every domain that is not local goes here (Postfix notation:
    /// `[host]:port` as it is, `host` by MX).
    #[serde(deserialize_with = "de_nexthop")]
    pub host: Option<String>,
    pub tls: RelayTls,
    /// A root-only file with one line `username:password` for AUTH PLAIN
    /// (sent inside TLS only). master reads it and hands it to smtp.
    pub password_file: Option<PathBuf>,
}

// An Option, as it is serialised: the configuration's string, or what
// master sends its children (which postcard encodes with its tag).
fn de_nexthop<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    if let Some(s) = &s {
        Nexthop::parse(s).map_err(|e| serde::de::Error::custom(e.to_string()))?;
    }
    Ok(s)
}

/// Per-stage timeouts of the SMTP client (`smtp.timeouts`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTimeouts {
    #[serde(with = "serde_ucl::time")]
    pub greeting: Duration,
    #[serde(with = "serde_ucl::time")]
    pub helo: Duration,
    #[serde(with = "serde_ucl::time")]
    pub starttls: Duration,
    #[serde(with = "serde_ucl::time")]
    pub mail: Duration,
    #[serde(with = "serde_ucl::time")]
    pub rcpt: Duration,
    #[serde(with = "serde_ucl::time")]
    pub data_init: Duration,
    #[serde(with = "serde_ucl::time")]
    pub data_xfer: Duration,
    #[serde(with = "serde_ucl::time")]
    pub data_done: Duration,
    #[serde(with = "serde_ucl::time")]
    pub rset: Duration,
    #[serde(with = "serde_ucl::time")]
    pub quit: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> ClientTimeouts {
        let t = Timeouts::default();
        ClientTimeouts {
            greeting: t.greeting,
            helo: t.helo,
            starttls: t.starttls,
            mail: t.mail,
            rcpt: t.rcpt,
            data_init: t.data_init,
            data_xfer: t.data_xfer,
            data_done: t.data_done,
            rset: t.rset,
            quit: t.quit,
        }
    }
}

impl ClientTimeouts {
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            greeting: self.greeting,
            helo: self.helo,
            starttls: self.starttls,
            mail: self.mail,
            rcpt: self.rcpt,
            data_init: self.data_init,
            data_xfer: self.data_xfer,
            data_done: self.data_done,
            rset: self.rset,
            quit: self.quit,
        }
    }
}

/// The SMTP client (`smtp { ... }`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpClient {
    /// The level for next hops without an entry in `tls_policy`.
    pub tls: ClientTls,
    /// The port of a next hop that names none (Postfix's
    /// `smtp_tcp_port`); a relay with implicit TLS uses 465.
    pub port: u16,
    /// MX hosts of one domain whose addresses are tried, best first.
    pub mx_host_limit: u32,
    /// Addresses tried for one next hop, over all its MX hosts (Postfix's
    /// `smtp_mx_address_limit`).
    pub mx_address_limit: u32,
    /// Sessions one delivery to an MX-routed next hop may use: a server
    /// that fails the session before MAIL (greeting, EHLO, STARTTLS, a
    /// lost connection) passes the mail to the next MX address (Postfix's
    /// `smtp_mx_session_limit`).
    pub mx_session_limit: u32,
    /// Levels per next hop (see `client_tls`), keyed as `Nexthop` writes them.
    #[serde(deserialize_with = "super::client_tls::de_tls_policy")]
    pub tls_policy: BTreeMap<String, ClientTls>,
    /// A PEM bundle of CA certificates trusted besides the compiled-in
    /// roots, for `verify`; master reads it (the smtp process cannot).
    pub tls_ca_file: Option<PathBuf>,
    /// The connector gives up on a connection attempt after this.
    #[serde(with = "serde_ucl::time")]
    pub connect_timeout: Duration,
    /// An idle session is kept this long for more mail to the same next
    /// hop (Postfix's `smtp_connection_cache_time_limit`); zero: QUIT at once.
    #[serde(with = "serde_ucl::time")]
    pub connection_cache_time: Duration,
    /// Messages sent over one connection before it is closed.
    pub connection_reuse_limit: u32,
    pub timeouts: ClientTimeouts,
}

impl Default for SmtpClient {
    fn default() -> SmtpClient {
        SmtpClient {
            tls: ClientTls::Opportunistic,
            port: 25,
            mx_host_limit: 5,
            mx_address_limit: 10,
            mx_session_limit: 2,
            tls_policy: BTreeMap::new(),
            tls_ca_file: None,
            connect_timeout: Duration::from_secs(30),
            connection_cache_time: Duration::from_secs(2),
            connection_reuse_limit: 100,
            timeouts: ClientTimeouts::default(),
        }
    }
}

/// The connector's resolver (`dns { servers = [ "127.0.0.1:5353" ]; }`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// Name servers to ask (UDP, then TCP for truncated answers); empty:
    /// the system's resolv.conf.
    #[serde(deserialize_with = "de_servers", serialize_with = "ser_servers")]
    pub servers: Vec<SocketAddr>,
    /// One query's timeout.
    #[serde(with = "serde_ucl::time")]
    pub timeout: Duration,
    /// Tries per query and server.
    pub attempts: u32,
    /// Reverse lookups (smtpd's clients) the connector has in progress at
    /// once; a client beyond it is `unknown` at once.
    pub reverse_lookup_limit: u32,
}

impl Default for Dns {
    fn default() -> Dns {
        Dns { servers: Vec::new(), timeout: Duration::from_secs(5), attempts: 2, reverse_lookup_limit: 200 }
    }
}

/// As strings, which `de_servers` reads (in the file and on a channel).
fn ser_servers<S: serde::Serializer>(servers: &[SocketAddr], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(servers.iter().map(|a| a.to_string()))
}

fn de_servers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an address or address:port")))
        })
        .collect()
}

/// Delivery status notifications (`bounce { ... }`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BounceConf {
    /// How much of the original message a notice returns (RET=FULL);
    /// beyond it, its headers only (Postfix's `bounce_size_limit`).
    pub size_limit: u64,
}

impl Default for BounceConf {
    fn default() -> BounceConf {
        BounceConf { size_limit: crate::bounce::DEFAULT_SIZE_LIMIT }
    }
}

/// Where local mail is stored (`local { mailbox = ...; }`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailboxKind {
    /// Appended to `mail_spool/USER`, locked as BSD mail readers expect.
    #[default]
    Mbox,
    /// A file per message in `~/maildir` (tmp/ then new/).
    Maildir,
}

/// The most delivery workers one local process may keep (each holds a
/// socket in it; the role's open-files limit is 256).
pub const MAX_LOCAL_WORKERS: u32 = 128;

/// The local delivery agent (`local { ... }`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConf {
    pub mailbox: MailboxKind,
    /// The mbox spool (`/var/mail`).
    pub mail_spool: PathBuf,
    /// The Maildir beneath each home directory.
    pub maildir: String,
    /// Characters that separate a local part from its extension
    /// (`user+ext` goes to `user`); empty: none.
    pub recipient_delimiter: String,
    /// Whether smtpd refuses, at RCPT, local names that are neither users
    /// nor aliases (550 5.1.1, from the local-recipient table). Off, any
    /// name at a local domain is taken and local bounces those it cannot
    /// deliver (as Postfix with `local_recipient_maps` empty): for a
    /// directory whose users cannot be listed (sssd without `enumerate`).
    pub recipient_check: bool,
    /// How long to wait for a mailbox's locks.
    #[serde(with = "serde_ucl::time")]
    pub lock_timeout: Duration,
    /// How long one delivery may take before it is stopped (and deferred).
    #[serde(with = "serde_ucl::time")]
    pub time_limit: Duration,
    /// Mailbox and file delivery workers each local process keeps
    /// between deliveries (0: each is closed after its delivery, a
    /// Maildir's after its batch).
    pub workers: u32,
    /// How long a delivery worker may wait unused before it is closed.
    #[serde(with = "serde_ucl::time")]
    pub worker_idle_time: Duration,
    /// The user that commands and files named in the aliases (and in
    /// root's own `.forward` or root's `:include:` files) run and are
    /// written as, rather than root.
    pub default_user: String,
    /// Whether the local-recipient table also holds the users the name
    /// service lists (getpwent(3): NIS, LDAP, sssd, systemd's user
    /// database), not only /etc/passwd's; listed every `directory_refresh`
    /// by `local users`, which may take `directory_timeout` and list
    /// `directory_user_limit` names (see `master::directory`).
    pub directory_users: bool,
    #[serde(with = "serde_ucl::time")]
    pub directory_refresh: Duration,
    #[serde(with = "serde_ucl::time")]
    pub directory_timeout: Duration,
    pub directory_user_limit: u32,
    /// Whether smtpd asks the name service (through the lookup process)
    /// about a local name the table lacks, for directories that do not
    /// list every user (sssd without `enumerate`): with the recipient
    /// check and `directory_users` on.
    pub directory_lookup: bool,
    /// How long smtpd waits for an answer (then 451 4.3.0).
    #[serde(with = "serde_ucl::time")]
    pub directory_lookup_timeout: Duration,
    /// How long smtpd reuses an answer (0: not at all).
    #[serde(with = "serde_ucl::time")]
    pub directory_lookup_cache: Duration,
    /// How many answers each smtpd process keeps at most.
    pub directory_lookup_cache_names: u32,
    /// How many questions each smtpd process leaves unanswered at most
    /// (those its clients stopped waiting for included); past it, 451
    /// without asking.
    pub directory_lookup_backlog: u32,
    /// How many names the lookup process looks up at once (its threads).
    pub directory_lookup_threads: u32,
}

/// The most `local.directory_lookup_threads`.
pub const MAX_LOOKUP_THREADS: u32 = 64;

/// The most `local.directory_user_limit`.
pub const MAX_DIRECTORY_USERS: u32 = 1_000_000;

impl Default for LocalConf {
    fn default() -> LocalConf {
        LocalConf {
            mailbox: MailboxKind::Mbox,
            mail_spool: PathBuf::from("/var/mail"),
            maildir: String::from("Maildir/"),
            recipient_delimiter: String::from("+"),
            recipient_check: true,
            lock_timeout: Duration::from_secs(30),
            time_limit: Duration::from_secs(600),
            workers: 32,
            worker_idle_time: Duration::from_secs(10),
            default_user: String::from("nobody"),
            directory_users: true,
            directory_refresh: Duration::from_secs(600),
            directory_timeout: Duration::from_secs(30),
            directory_user_limit: 100_000,
            directory_lookup: true,
            directory_lookup_timeout: Duration::from_secs(10),
            directory_lookup_cache: Duration::from_secs(60),
            directory_lookup_cache_names: 10_000,
            directory_lookup_backlog: 1024,
            directory_lookup_threads: 4,
        }
    }
}

impl LocalConf {
    /// Whether smtpd asks the lookup process about local names the
    /// local-recipient table lacks (and master runs it).
    pub fn looks_up_users(&self) -> bool {
        self.recipient_check && self.directory_users && self.directory_lookup
    }

    /// Checks the keys' values; the message names the key.
    pub fn check(&self) -> Result<(), String> {
        if self.directory_refresh < Duration::from_secs(10) || self.directory_refresh > Duration::from_secs(86400) {
            return Err(String::from("key `local.directory_refresh`: must be 10s to 1d"));
        }
        if self.directory_timeout.is_zero() || self.directory_timeout > self.directory_refresh {
            return Err(String::from(
                "key `local.directory_timeout`: must be longer than zero and no longer than local.directory_refresh",
            ));
        }
        if self.directory_lookup_timeout < Duration::from_secs(1)
            || self.directory_lookup_timeout > Duration::from_secs(300)
        {
            return Err(String::from("key `local.directory_lookup_timeout`: must be 1s to 5m"));
        }
        if self.directory_lookup_cache > Duration::from_secs(86400) {
            return Err(String::from("key `local.directory_lookup_cache`: must be at most 1d"));
        }
        if !(1..=1_000_000).contains(&self.directory_lookup_cache_names) {
            return Err(String::from("key `local.directory_lookup_cache_names`: must be 1 to 1000000"));
        }
        if !(1..=100_000).contains(&self.directory_lookup_backlog) {
            return Err(String::from("key `local.directory_lookup_backlog`: must be 1 to 100000"));
        }
        if !(1..=MAX_LOOKUP_THREADS).contains(&self.directory_lookup_threads) {
            return Err(format!("key `local.directory_lookup_threads`: must be 1 to {MAX_LOOKUP_THREADS}"));
        }
        if !(1..=MAX_DIRECTORY_USERS).contains(&self.directory_user_limit) {
            return Err(format!("key `local.directory_user_limit`: must be 1 to {MAX_DIRECTORY_USERS}"));
        }
        if !self.mail_spool.is_absolute() {
            return Err(String::from("key `local.mail_spool`: must be an absolute path"));
        }
        let md = self.maildir.trim_end_matches('/');
        if md.is_empty()
            || md.starts_with('/')
            || md.split('/').any(|c| c.is_empty() || c == "." || c == "..")
            || md.chars().any(|c| c.is_control())
        {
            return Err(String::from(
                "key `local.maildir`: a path beneath the home directory, without `.`, `..` or empty parts",
            ));
        }
        if let Some(c) =
            self.recipient_delimiter.chars().find(|c| !c.is_ascii_punctuation() || matches!(c, '@' | '"' | '\\'))
        {
            return Err(format!("key `local.recipient_delimiter`: `{c}` cannot separate an extension"));
        }
        if self.default_user.is_empty()
            || self.default_user.len() > 64
            || self.default_user.chars().any(|c| c.is_control() || c.is_whitespace() || matches!(c, ':' | '/'))
        {
            return Err(String::from("key `local.default_user`: not a user name"));
        }
        if self.lock_timeout.is_zero() || self.time_limit.is_zero() {
            return Err(String::from("key `local`: lock_timeout and time_limit must be longer than zero"));
        }
        if self.workers > MAX_LOCAL_WORKERS {
            return Err(format!("key `local.workers`: at most {MAX_LOCAL_WORKERS}"));
        }
        if self.worker_idle_time.is_zero() {
            return Err(String::from("key `local.worker_idle_time`: must be longer than zero"));
        }
        Ok(())
    }
}

/// The scheduler's settings from `queue` and `transport`.
pub fn settings(q: &Queue, t: &Transports) -> Settings {
    Settings {
        active_messages: q.active_messages as usize,
        active_recipients: q.active_recipients as usize,
        deferred_index: q.deferred_index as usize,
        lifetime: q.lifetime,
        bounce_lifetime: q.bounce_lifetime,
        delay_warning: q.delay_warning,
        backoff: Backoff { min: q.backoff.min, max: q.backoff.max },
        smtp: t.smtp.settings(false),
        lmtp: t.lmtp.settings(false),
        local: t.local.settings(true),
    }
}

/// What the delivery roles get from master (children never read the file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryConf {
    pub queue: Queue,
    pub transport: Transports,
    /// Routing per domain, before the default rules.
    pub transport_map: TransportMap,
    pub relay: Relay,
    pub smtp: SmtpClient,
    pub dns: Dns,
    pub bounce: BounceConf,
    pub domains: Vec<String>,
    /// This host's addresses, which master reads from the interfaces at
    /// start and reload (qmgr's routing: an address literal of one is a
    /// local domain; the connector's MX loop check); empty until then.
    pub own_addresses: Vec<std::net::IpAddr>,
    /// The listeners' addresses (the connector's MX loop check).
    pub listen: Vec<std::net::SocketAddr>,
    /// The local delivery agent's settings and the aliases file.
    pub local: LocalConf,
    pub aliases: PathBuf,
    /// Where the programs are (local runs its delivery children from it).
    pub libexec: PathBuf,
    /// The relay's AUTH credentials (smtp only; read by master from
    /// `relay.password_file`).
    pub credentials: Option<(String, String)>,
    /// The certificates of `smtp.tls_ca_file`, DER (smtp only; read and
    /// checked by master).
    pub tls_ca: Vec<Vec<u8>>,
}

impl DeliveryConf {
    pub fn settings(&self) -> Settings {
        settings(&self.queue, &self.transport)
    }

    pub fn routing(&self) -> schedule::Routing {
        let relay = self.relay.host.as_deref().and_then(|h| Nexthop::parse(h).ok());
        schedule::Routing::new(relay, &self.domains)
            .with_map(self.transport_map.clone())
            .with_own_addresses(self.own_addresses.clone())
    }
}

/// Largest password file read.
const MAX_PASSWORD_FILE: u64 = 4096;

/// Read `relay.password_file`: owned by root (or the user running
/// master), not readable by group or others, one line `username:password`.
pub fn read_password_file(path: &std::path::Path) -> Result<(String, String), String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let name = path.display();
    let f = std::fs::File::open(path).map_err(|e| format!("relay.password_file {name}: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("relay.password_file {name}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("relay.password_file {name}: not a regular file"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!("relay.password_file {name}: readable or writable by group or others (chmod 600 it)"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!("relay.password_file {name}: owned by uid {}, not by root", meta.uid()));
    }
    let mut text = String::new();
    f.take(MAX_PASSWORD_FILE + 1).read_to_string(&mut text).map_err(|e| format!("relay.password_file {name}: {e}"))?;
    if text.len() as u64 > MAX_PASSWORD_FILE {
        return Err(format!("relay.password_file {name}: larger than {MAX_PASSWORD_FILE} bytes"));
    }
    let line = text
        .lines()
        .map(str::trim_end)
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .ok_or_else(|| format!("relay.password_file {name}: no `username:password` line"))?;
    let (user, pass) =
        line.split_once(':').ok_or_else(|| format!("relay.password_file {name}: the line has no `:`"))?;
    if user.is_empty() || pass.is_empty() {
        return Err(format!("relay.password_file {name}: empty username or password"));
    }
    Ok((user.to_string(), pass.to_string()))
}

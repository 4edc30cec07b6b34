//! What the SMTP/LMTP client is given (a session's configuration, then
//! jobs: one message and some of its recipients) and what it gives back
//! (a verdict per recipient, with the reply and the stage it came from).
//!
//! Trusts: the configuration and jobs come from the queue manager and
//! the validated queue file; addresses are checked again before use.

use std::fmt;
use std::time::Duration;

use crate::queue::{BodyType, Envelope, Notify, Recipient, Ret};
use crate::smtp::mime7bit::MimeLimits;
use crate::smtp::reply::{Reply, ReplyLimits};

/// Whether to use STARTTLS (RFC 3207).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Never, even when offered.
    None,
    /// When offered; in plaintext otherwise (and when STARTTLS is refused).
    #[default]
    Opportunistic,
    /// Defer the job when the server does not offer or refuses STARTTLS.
    Require,
}

/// AUTH PLAIN credentials (RFC 4954, RFC 4616), sent only inside TLS.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"(hidden)").finish()
    }
}

/// How long to wait in each stage; the defaults are Postfix's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub greeting: Duration,
    /// EHLO, LHLO, HELO, and AUTH.
    pub helo: Duration,
    /// The reply to STARTTLS and the handshake.
    pub starttls: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    /// The reply to DATA.
    pub data_init: Duration,
    /// Each write of content.
    pub data_xfer: Duration,
    /// The reply (LMTP: replies) to the end of data.
    pub data_done: Duration,
    pub rset: Duration,
    pub quit: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        let s = Duration::from_secs;
        Timeouts {
            greeting: s(300),
            helo: s(300),
            starttls: s(300),
            mail: s(300),
            rcpt: s(300),
            data_init: s(120),
            data_xfer: s(180),
            data_done: s(600),
            rset: s(20),
            quit: s(300),
        }
    }
}

/// Bounds on what the client accepts from the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub reply: ReplyLimits,
    pub mime: MimeLimits,
}

/// One session's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The name announced in EHLO/LHLO/HELO: a domain or address literal.
    pub helo_name: String,
    /// Speak LMTP (RFC 2033): LHLO, no HELO fallback, one reply per
    /// recipient after the content.
    pub lmtp: bool,
    pub tls: TlsPolicy,
    /// When given, the session authenticates (TLS required) or defers.
    pub credentials: Option<Credentials>,
    pub limits: Limits,
    pub timeouts: Timeouts,
}

/// Why a configuration cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    HeloName(String),
    Credentials(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::HeloName(n) => write!(f, "invalid host name to announce: {n:?}"),
            ConfigError::Credentials(why) => write!(f, "unusable SMTP credentials: {why}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A recipient of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRecipient {
    pub address: String,
    /// `addr-type;address`, decoded (sent xtext-encoded).
    pub orcpt: Option<String>,
    pub notify: Option<Notify>,
}

impl From<&Recipient> for JobRecipient {
    fn from(r: &Recipient) -> JobRecipient {
        JobRecipient { address: r.address.clone(), orcpt: r.orcpt.clone(), notify: r.notify }
    }
}

/// One message to some of its recipients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// The reverse path; empty for the null sender.
    pub sender: String,
    pub recipients: Vec<JobRecipient>,
    pub body: BodyType,
    /// The message was received with SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// Its header block has bytes that are not ASCII (looked for only
    /// when `smtputf8`): with them, or with a UTF-8 address, SMTPUTF8 is
    /// required of the server; without, the message goes to a server
    /// that does not offer it, without the parameter.
    pub utf8_headers: bool,
    pub ret: Option<Ret>,
    /// Decoded (sent xtext-encoded).
    pub envid: Option<String>,
    /// The content's size in bytes, for SIZE (RFC 1870).
    pub size: u64,
}

impl Job {
    /// A job for `recipients` of a message with this envelope.
    pub fn new(envelope: &Envelope, recipients: Vec<JobRecipient>) -> Job {
        Job {
            sender: envelope.sender.clone(),
            recipients,
            body: envelope.body,
            smtputf8: envelope.smtputf8,
            utf8_headers: false,
            ret: envelope.dsn_ret,
            envid: envelope.dsn_envid.clone(),
            size: envelope.size,
        }
    }
}

/// Where in the conversation something happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    Greeting,
    /// EHLO, LHLO or HELO.
    Helo,
    /// STARTTLS and the TLS handshake.
    StartTls,
    Auth,
    Mail,
    Rcpt,
    /// The DATA command.
    Data,
    /// Sending the content.
    Content,
    /// The end of data ("." CR LF) and its reply or replies.
    Dot,
    Rset,
    Quit,
}

impl Stage {
    /// For "(in reply to X command)".
    pub fn command(self) -> &'static str {
        match self {
            Stage::Greeting => "initial greeting",
            Stage::Helo => "EHLO/HELO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Content | Stage::Dot => "end of DATA",
            Stage::Rset => "RSET",
            Stage::Quit => "QUIT",
        }
    }

    /// What the client waits for in this stage, for "timeout while
    /// waiting for X".
    pub fn waiting_for(self) -> &'static str {
        match self {
            Stage::Greeting => "the server greeting",
            Stage::Helo => "the reply to EHLO/HELO",
            Stage::StartTls => "the reply to STARTTLS or the TLS handshake",
            Stage::Auth => "the reply to AUTH",
            Stage::Mail => "the reply to MAIL FROM",
            Stage::Rcpt => "the reply to RCPT TO",
            Stage::Data => "the reply to DATA",
            Stage::Content => "the server to take the message content",
            Stage::Dot => "the reply to the end of data",
            Stage::Rset => "the reply to RSET",
            Stage::Quit => "the reply to QUIT",
        }
    }
}

/// What became of a recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Disposition {
    Delivered,
    /// Failed temporarily: try again later.
    Deferred,
    /// Failed permanently: bounce.
    Bounced,
}

/// The verdict on one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientResult {
    pub disposition: Disposition,
    pub stage: Stage,
    /// The server's reply, or one made up locally (see `remote`).
    pub reply: Reply,
    /// The reply came from the server (for "host H said: ...").
    pub remote: bool,
    /// The recipient was sent to a server that offered DSN (RFC 3461), so
    /// its NOTIFY and ORCPT went on. When false and the recipient was
    /// delivered, the server will not report success: a NOTIFY=SUCCESS
    /// recipient gets a "relayed" DSN from us instead.
    pub dsn_passed: bool,
}

impl RecipientResult {
    /// A reason for logs and the queue file, Postfix style: `host`
    /// names the server as the driver knows it.
    pub fn describe(&self, host: &str) -> String {
        if self.remote {
            format!("host {host} said: {} (in reply to {} command)", self.reply, self.stage.command())
        } else {
            self.reply.text.clone()
        }
    }
}

/// The outcome of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobResult {
    /// One per recipient of the job, in the job's order.
    pub recipients: Vec<RecipientResult>,
    /// The session failed before MAIL FROM (greeting, EHLO, STARTTLS,
    /// AUTH, or the connection) for now: another server may do better.
    /// Not for a permanent failure there (a 5xx to HELO or LHLO), which
    /// bounces the recipients whatever server says it.
    pub session_failure: bool,
    /// The message went inside TLS.
    pub tls: bool,
    pub authenticated: bool,
    /// The TLS handshake after STARTTLS failed or timed out (the session
    /// is gone; at the opportunistic level the driver may try the server
    /// again without TLS).
    pub tls_failed: bool,
}

/// What the driver must do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Write what is queued, then start TLS and call `tls_started` (or
    /// `tls_failed`). Asked only when nothing followed the 220 in
    /// plaintext; plaintext received before the handshake starts ends the
    /// session.
    StartTls,
    /// Read the next chunk of content (about [`super::CONTENT_CHUNK`]
    /// bytes) and call `content`, or `content_end` at its end. Write
    /// what is queued first: that is the flow control.
    NeedContent,
    /// A job is finished.
    Done(Box<JobResult>),
    /// The session is ready for a job: call `start` or `quit`.
    Idle,
    /// Write what is queued, then close the connection.
    Close,
}

/// The extensions a server announced in its EHLO/LHLO reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    pub esmtp: bool,
    pub pipelining: bool,
    /// SIZE offered: `Some(None)` without a limit, `Some(Some(n))` with one.
    pub size: Option<Option<u64>>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub chunking: bool,
    pub starttls: bool,
    pub enhanced_status_codes: bool,
    /// AUTH mechanisms, upper case.
    pub auth: Vec<String>,
}

impl Features {
    /// Parse the lines of a 2xx reply to EHLO/LHLO (the first is the
    /// server's name and greeting).
    pub fn from_ehlo(lines: &[Vec<u8>]) -> Features {
        let mut f = Features { esmtp: true, ..Features::default() };
        for line in lines.iter().skip(1).take(256) {
            let Ok(line) = std::str::from_utf8(line) else { continue };
            let mut words = line.split([' ', '=']).filter(|w| !w.is_empty());
            let Some(keyword) = words.next() else { continue };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => f.pipelining = true,
                "SIZE" => {
                    let limit = words.next().and_then(|n| n.parse::<u64>().ok()).filter(|&n| n > 0);
                    f.size = Some(limit);
                }
                "8BITMIME" => f.eightbitmime = true,
                "SMTPUTF8" => f.smtputf8 = true,
                "DSN" => f.dsn = true,
                "CHUNKING" => f.chunking = true,
                "STARTTLS" => f.starttls = true,
                "ENHANCEDSTATUSCODES" => f.enhanced_status_codes = true,
                "AUTH" => {
                    for m in words.take(32) {
                        let m = m.to_ascii_uppercase();
                        if !f.auth.contains(&m) {
                            f.auth.push(m);
                        }
                    }
                }
                _ => {}
            }
        }
        f
    }
}

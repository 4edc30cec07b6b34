//! What a queue file holds, as Rust values: the envelope, the recipients
//! with their delivery status, and the content. The byte encoding lives in
//! `file.rs`.
//!
//! Trusts: nothing; these are plain values, checked when encoded.

use std::time::{SystemTime, UNIX_EPOCH};

use super::id::QueueId;

/// A point in time: seconds and microseconds since 1970 (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time {
    pub secs: i64,
    /// Below 1,000,000.
    pub micros: u32,
}

impl Time {
    pub fn now() -> Time {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Time { secs: d.as_secs().min(i64::MAX as u64) as i64, micros: d.subsec_micros() },
            Err(_) => Time::default(),
        }
    }
}

/// The BODY= parameter of MAIL FROM (RFC 6152, RFC 3030).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// The RET= parameter of MAIL FROM (RFC 3461).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ret {
    Full,
    Headers,
}

/// How the message came in, as written in Received: headers (RFC 3848).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Submitted on this host (sendmail, forwarding, bounces).
    #[default]
    Local,
    Smtp,
    Esmtp,
    Esmtpa,
    Esmtps,
    Esmtpsa,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Local => "local",
            Protocol::Smtp => "SMTP",
            Protocol::Esmtp => "ESMTP",
            Protocol::Esmtpa => "ESMTPA",
            Protocol::Esmtps => "ESMTPS",
            Protocol::Esmtpsa => "ESMTPSA",
        }
    }
}

/// Who handed us the message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Client {
    /// The peer address as text (`192.0.2.1`, `2001:db8::1`), empty for
    /// local submission.
    pub address: String,
    /// The verified host name, or `unknown`.
    pub hostname: String,
    /// The HELO/EHLO argument.
    pub helo: String,
    pub protocol: Protocol,
    /// TLS version and cipher, when the session used TLS.
    pub tls: Option<String>,
}

/// The message envelope and its DSN parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Envelope {
    /// The reverse path; empty for the null sender `<>`.
    pub sender: String,
    pub arrival: Time,
    pub client: Client,
    pub body: BodyType,
    pub smtputf8: bool,
    pub dsn_ret: Option<Ret>,
    pub dsn_envid: Option<String>,
    /// The message size in bytes as received (the content's length).
    pub size: u64,
}

/// The NOTIFY= parameter of RCPT TO (RFC 3461).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Notify {
    Never,
    /// At least one of the three is set.
    On {
        success: bool,
        failure: bool,
        delay: bool,
    },
}

/// Where a recipient stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum State {
    /// Not tried yet.
    #[default]
    Pending,
    /// Delivered.
    Done,
    /// Failed temporarily; try again at `next_attempt`.
    Deferred,
    /// Failed permanently; a bounce was or will be sent.
    Bounced,
}

/// How a recipient in [`State::Done`] was delivered: the Action of its
/// success notice (RFC 3464 2.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DoneAction {
    /// Final delivery: a mailbox, a file or a command here, an LMTP
    /// server, a mailing list that takes the message over.
    Delivered,
    /// Handed on to an SMTP server (one without DSN sends no success
    /// notice itself; one with DSN took NOTIFY over, and no notice is
    /// owed here), or forwarded to a single address (a new message that
    /// carries NOTIFY on: no notice is owed here either).
    Relayed,
    /// An alias or `.forward` that sent the message on to several
    /// destinations, which send no success notices of their own.
    Expanded,
}

impl DoneAction {
    /// The RFC 3464 action-value.
    pub fn as_str(self) -> &'static str {
        match self {
            DoneAction::Delivered => "delivered",
            DoneAction::Relayed => "relayed",
            DoneAction::Expanded => "expanded",
        }
    }

    pub const ALL: [DoneAction; 3] = [DoneAction::Delivered, DoneAction::Relayed, DoneAction::Expanded];
}

/// A recipient's delivery status: the block that is updated in place.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Status {
    pub state: State,
    /// How it was delivered, for [`State::Done`] only: None for the other
    /// states, and for a done recipient whose file was written before
    /// the action was recorded (or that was done by being bounced).
    pub action: Option<DoneAction>,
    pub attempts: u32,
    /// Unix seconds of the next try (deferred), or 0.
    pub next_attempt: i64,
    /// Unix seconds of the last change.
    pub changed: i64,
    /// The remote reply or the reason of the last change. At most
    /// [`super::MAX_REASON`] bytes are stored: a longer one is cut at a
    /// character boundary and ends in `...`.
    pub reason: String,
}

/// One recipient.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Recipient {
    pub address: String,
    /// The ORCPT= parameter as received (`rfc822;user@example.org`).
    pub orcpt: Option<String>,
    /// None when RCPT TO had no NOTIFY= parameter.
    pub notify: Option<Notify>,
    pub status: Status,
}

/// A whole queue file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueueFile {
    pub id: QueueId,
    pub envelope: Envelope,
    /// At least one, at most [`super::MAX_RECIPIENTS`].
    pub recipients: Vec<Recipient>,
    /// The message as received: headers and body, CRLF line ends, dots
    /// unstuffed.
    pub content: Vec<u8>,
}

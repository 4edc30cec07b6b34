//! Delivery status notifications for the bounce role, composed without I/O:
//! a failure report (a bounce), a delay warning, or a success report
//! (RFC 3461), as one `multipart/report; report-type=delivery-status`
//! message (RFC 6522) with three parts: a text for people, the
//! `message/delivery-status` fields for programs (RFC 3464), and the
//! original message or its header (`message/rfc822`, `text/rfc822-headers`).
//! When the original came with SMTPUTF8 the report uses the RFC 6533 types
//! (`message/global-delivery-status`, `message/global`,
//! `message/global-headers`).
//!
//! The caller describes the report ([`Report`]) and lends the original's
//! content through [`Original`] (a `pread`-like `read_at`, as on the queue
//! file a delivery agent holds); [`Composer`] pulls the content in chunks
//! of [`Options::read_size`] and hands the report back in chunks, so memory
//! stays bounded whatever the message size. It reads the part it returns
//! twice: once to plan (what to return, within [`Options::size_limit`],
//! and a MIME boundary that occurs nowhere in it), once to copy it, checking
//! again that what it copies still fits the plan. `dsn.rs` has the composer,
//! `scan.rs` the content scan, `text.rs` the field and text rules.
//!
//! What is returned follows Postfix: the whole message for a failure when
//! RET=FULL or no RET was given, the header otherwise (RET=HDRS, delay and
//! success reports); when the whole message is larger than the limit, only
//! its header, as Postfix does, so that the MIME structure of the original
//! is never cut. A header block larger than the limit is cut after the last
//! whole header field that fits. A message whose lines cannot be carried as
//! 8bit MIME (a line over 998 octets, a bare CR or LF, a NUL, a BINARYMIME
//! body) is returned as its header only, for the same reason.
//!
//! Trusts: nothing in the content, nor in any field of the report: remote
//! replies, addresses and host names are cleaned (control characters
//! replaced, white space collapsed, non-ASCII replaced unless SMTPUTF8)
//! and folded, so that no line exceeds 998 octets and no value can start
//! a header field or a MIME part of its own.

pub mod agent;
mod dsn;
mod scan;
mod text;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;

pub use crate::queue::{BodyType, Notify, QueueId, Ret};
pub use dsn::{Composer, Plan, Returned, compose};

/// Postfix's default `bounce_size_limit`: at most this many bytes of the
/// original are returned.
pub const DEFAULT_SIZE_LIMIT: u64 = 50_000;
/// Longest line of a message, CR LF excluded (RFC 5322 2.1.1).
pub const MAX_LINE: usize = crate::header::MAX_LINE;
/// The composer's default chunk size for reading the original.
pub const DEFAULT_READ_SIZE: usize = 16 * 1024;

/// What a report tells the sender (RFC 3461 NOTIFY conditions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Delivery failed for good: a bounce.
    Failure,
    /// Delivery is late and still being retried: a warning.
    Delay,
    /// Delivered, relayed to a system without DSN, or expanded.
    Success,
}

/// The RFC 3464 Action of one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }

    /// Whether a report of `kind` may carry this action.
    pub fn belongs_to(self, kind: Kind) -> bool {
        match self {
            Action::Failed => kind == Kind::Failure,
            Action::Delayed => kind == Kind::Delay,
            Action::Delivered | Action::Relayed | Action::Expanded => kind == Kind::Success,
        }
    }
}

/// An enhanced mail system status code (RFC 3463): `class.subject.detail`,
/// valid by construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusCode {
    class: u8,
    subject: u16,
    detail: u16,
}

impl StatusCode {
    /// Class 2, 4 or 5; subject and detail at most 999.
    pub fn new(class: u8, subject: u16, detail: u16) -> Option<StatusCode> {
        (matches!(class, 2 | 4 | 5) && subject <= 999 && detail <= 999).then_some(StatusCode { class, subject, detail })
    }

    /// Parses `x.y.z` as RFC 3463 writes it: no sign, no leading zero, one
    /// to three digits for the subject and the detail.
    pub fn parse(s: &str) -> Option<StatusCode> {
        fn number(s: &str) -> Option<u16> {
            let ok = (1..=3).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s.len() == 1 || !s.starts_with('0'));
            ok.then(|| s.parse().ok()).flatten()
        }
        let mut it = s.split('.');
        let (class, subject, detail) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() || class.len() != 1 {
            return None;
        }
        StatusCode::new(u8::try_from(number(class)?).ok()?, number(subject)?, number(detail)?)
    }

    pub fn class(self) -> u8 {
        self.class
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// Why a recipient is reported as it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Diagnostic {
    /// The remote server's reply, verbatim (`550 5.1.1 <u@example.org>:
    /// no such user`): `Diagnostic-Code: smtp; ...`.
    Smtp(String),
    /// Our own reason (`mail for example.org loops back to myself`):
    /// `Diagnostic-Code: X-Mta; ...`.
    Local(String),
}

/// One recipient of the report.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RecipientReport {
    /// The address delivery was attempted to (Final-Recipient).
    pub address: String,
    /// The ORCPT parameter as the queue keeps it, `type;address` with the
    /// address decoded from xtext (`rfc822;user@example.org`), a `utf-8`
    /// one as received ([`crate::address::orcpt`]); reported as
    /// Original-Recipient with its own address type, a `utf-8` address
    /// in the form RFC 6533 asks of the report (UTF-8 in a global one,
    /// 7-bit `\x{HEX}` escapes in any other). A value without `;` is
    /// taken as an rfc822 address.
    pub orcpt: Option<String>,
    pub action: Action,
    pub status: StatusCode,
    /// The host name of the remote MTA that gave the diagnostic, if any.
    pub remote_mta: Option<String>,
    pub diagnostic: Diagnostic,
    /// Unix seconds of the last delivery attempt.
    pub last_attempt: Option<i64>,
    /// Unix seconds until which delivery is retried; written only for
    /// [`Action::Delayed`].
    pub will_retry_until: Option<i64>,
}

/// What the report says about the original message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OriginalEnvelope {
    pub queue_id: QueueId,
    /// The envelope sender; empty for the null sender `<>`.
    pub sender: String,
    /// The ENVID parameter, decoded from xtext.
    pub envid: Option<String>,
    pub ret: Option<Ret>,
    /// Unix seconds; 0 or less leaves out Arrival-Date.
    pub arrival: i64,
    /// The original came with SMTPUTF8: the report uses the RFC 6533 types.
    pub smtputf8: bool,
    pub body: BodyType,
    /// The content's length in bytes: what [`Original`] can serve.
    pub content_len: u64,
}

/// Whom a report goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Addressee {
    /// The original's envelope sender.
    Sender,
    /// [`Options::postmaster`]: for a failed message whose sender is the
    /// null sender (a bounce of a bounce).
    Postmaster,
}

/// Whom a report of `kind` about a message from `sender` goes to, or None
/// when nobody gets one. A report never goes to the null sender: a failed
/// message from `<>` is reported to the postmaster (a double bounce), and
/// its delays and successes to nobody. The postmaster's reports come from
/// `double_bounce` ([`Options::double_bounce`]): one of them that fails is
/// reported to nobody (as Postfix discards an undeliverable postmaster
/// notice), or a postmaster address that refuses mail would make notice
/// after notice.
pub fn addressee(sender: &str, kind: Kind, double_bounce: &str) -> Option<Addressee> {
    if sender.is_empty() {
        (kind == Kind::Failure).then_some(Addressee::Postmaster)
    } else if sender.eq_ignore_ascii_case(double_bounce) {
        None
    } else {
        Some(Addressee::Sender)
    }
}

/// Whether a recipient with this NOTIFY parameter is named in a report of
/// `kind`. Without NOTIFY, failures and delays are reported and successes
/// are not (RFC 3461 4.1, as Postfix does); NOTIFY=NEVER reports nothing.
pub fn notify_wants(notify: Option<Notify>, kind: Kind) -> bool {
    match notify {
        None => kind != Kind::Success,
        Some(Notify::Never) => false,
        Some(Notify::On { success, failure, delay }) => match kind {
            Kind::Failure => failure,
            Kind::Delay => delay,
            Kind::Success => success,
        },
    }
}

/// One report to compose.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Report {
    /// Our host name: Reporting-MTA, the From: domain, the Message-ID.
    pub reporting_mta: String,
    pub original: OriginalEnvelope,
    pub kind: Kind,
    pub to: Addressee,
    /// At least one; each one's action must belong to `kind`.
    pub recipients: Vec<RecipientReport>,
    /// Unix seconds: the Date: of the report.
    pub date: i64,
    /// A token unique to this report (random, or the report's own queue
    /// ID): the Message-ID and the MIME boundary are made from it. Only
    /// ASCII letters and digits are used, at most 40 of them.
    pub unique: String,
}

/// How the composer works.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Options {
    /// Most bytes of the original returned (`bounce_size_limit`); 0
    /// returns none, and the report has two parts.
    pub size_limit: u64,
    /// Where a report with [`Addressee::Postmaster`] goes.
    pub postmaster: String,
    /// The envelope sender of a report to the postmaster
    /// (`double-bounce@` our host name), never reported to.
    pub double_bounce: String,
    /// Bytes of the original asked for at a time (at least 1).
    pub read_size: usize,
}

impl Default for Options {
    /// 50,000 bytes returned, reports to `postmaster` from
    /// `double-bounce`, 16 KiB reads.
    fn default() -> Options {
        Options {
            size_limit: DEFAULT_SIZE_LIMIT,
            postmaster: String::from("postmaster"),
            double_bounce: String::from("double-bounce"),
            read_size: DEFAULT_READ_SIZE,
        }
    }
}

/// The original message's content, read at offsets (as with `pread` on a
/// queue file). Offset 0 is the first byte of the content.
pub trait Original {
    /// Reads up to `buf.len()` bytes at `offset`; 0 means the content ends
    /// there.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
}

fn read_slice(data: &[u8], offset: u64, buf: &mut [u8]) -> usize {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
    let n = buf.len().min(data.len() - start);
    buf[..n].copy_from_slice(&data[start..start + n]);
    n
}

impl Original for &[u8] {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        Ok(read_slice(self, offset, buf))
    }
}

impl Original for Vec<u8> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        Ok(read_slice(self, offset, buf))
    }
}

/// Why a report cannot be composed. After an error, the chunks already
/// handed out are not a report: discard them.
#[derive(Debug)]
pub enum Error {
    /// The report would go to the null sender; see [`addressee`].
    NullSender,
    /// [`Options::postmaster`] is empty.
    NoPostmaster,
    /// The report names no recipient.
    NoRecipients,
    /// Recipient `index` has an action that a report of `kind` cannot carry.
    ActionMismatch { index: usize, action: Action, kind: Kind },
    /// [`Report::unique`] has no ASCII letter or digit.
    NoUniqueToken,
    /// Every MIME boundary the composer tried occurs in the returned content.
    BoundaryCollision { tried: usize },
    /// Reading the original failed.
    Read { offset: u64, error: io::Error },
    /// The original ended at `offset`, before the `expected` length.
    ContentShort { offset: u64, expected: u64 },
    /// The original read differently the second time (it changed while
    /// the report was composed): the report announced what no longer holds.
    ContentChanged,
    /// The composer was used again after an error.
    Aborted,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NullSender => write!(f, "no delivery status notification is sent to the null sender"),
            Error::NoPostmaster => write!(f, "no postmaster address is configured for reports"),
            Error::NoRecipients => write!(f, "a delivery status notification needs at least one recipient"),
            Error::ActionMismatch { index, action, kind } => {
                write!(f, "recipient {index}: action {} does not belong in a {kind:?} report", action.as_str())
            }
            Error::NoUniqueToken => write!(f, "the report's unique token has no ASCII letter or digit"),
            Error::BoundaryCollision { tried } => {
                write!(f, "all {tried} MIME boundaries tried occur in the returned message")
            }
            Error::Read { offset, error } => write!(f, "reading the original message at byte {offset}: {error}"),
            Error::ContentShort { offset, expected } => {
                write!(f, "the original message ends at byte {offset}, not at {expected} as its envelope says")
            }
            Error::ContentChanged => write!(f, "the original message changed while the report was being written"),
            Error::Aborted => write!(f, "the report was abandoned after an earlier error"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

//! The maildrop format, version 1 (`doc/maildrop-format.md` has it byte by
//! byte): what `sendmail` writes to `postdrop`'s stdin, and what `postdrop`
//! copies into a file in the spool's maildrop/ directory for `pickup`. One
//! format serves both, the stream and the file.
//!
//! A header (`MTAD`, version), then records, each a tag and a length, in a
//! fixed order: `SNDR` (the sender), `OPTS` (BODY, SMTPUTF8, RET, ENVID,
//! the full name), one or more `RCPT`, the content in `DATA` records of at
//! most 64 KiB, and `END ` with the content's length and a CRC-32 of every
//! byte before it. A stream without its `END ` record is incomplete
//! ([`Error::Truncated`]): that is how pickup tells a file postdrop is
//! still writing, or one a crash cut short, from a complete one.
//!
//! [`Writer`] produces a stream from an [`Envelope`] and content given in
//! pieces; [`Reader`] reads one back, validating as it goes. Both work on
//! any `Write` and `Read`: no files, no processes. Neither buffers its
//! small records: give the reader a `BufReader` when the source is a pipe
//! or a file.
//!
//! Trusts: nothing it reads. postdrop reads a stream from an unprivileged
//! user, and pickup reads the file postdrop wrote no more trustingly.
//! Every length is checked against its record type's bound before
//! anything is read or allocated, every field is validated (the writer
//! applies the same rules to what it is given), the content and the
//! recipients are counted against [`Limits`], and nothing may follow the
//! `END ` record.

pub mod names;
mod read;
mod write;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;

pub use crate::queue::{BodyType, Notify, Ret};
pub use read::Reader;
pub use write::Writer;

/// The first four bytes of every maildrop stream.
pub const MAGIC: &[u8; 4] = b"MTAD";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// Longest envelope sender, in bytes: what a queue file holds.
pub const MAX_SENDER: usize = crate::queue::MAX_ADDRESS;
/// Longest recipient address, in bytes: what a queue file holds.
pub const MAX_ADDRESS: usize = crate::queue::MAX_ADDRESS;
/// Longest ORCPT parameter, in bytes: what a queue file holds.
pub const MAX_ORCPT: usize = crate::queue::MAX_ADDRESS;
/// Longest ENVID, in bytes (RFC 3461 allows 100 characters).
pub const MAX_ENVID: usize = 100;
/// Longest full name (`sendmail -F`), in bytes.
pub const MAX_FULL_NAME: usize = 256;
/// Largest `DATA` payload, in bytes; the writer fills every `DATA` record
/// but the last to exactly this size.
pub const MAX_DATA: usize = 64 * 1024;

// What pickup accepts must fit in a queue file.
const _: () = assert!(
    MAX_SENDER <= crate::queue::MAX_ADDRESS
        && MAX_ADDRESS <= crate::queue::MAX_ADDRESS
        && MAX_ORCPT <= crate::queue::MAX_ADDRESS
        && MAX_ENVID <= crate::queue::MAX_ENVID
);

/// Size of the stream header.
pub(crate) const HEADER: usize = 8;
/// Size of a record header: tag and payload length.
pub(crate) const REC: usize = 8;
pub(crate) const SNDR: [u8; 4] = *b"SNDR";
pub(crate) const OPTS: [u8; 4] = *b"OPTS";
pub(crate) const RCPT: [u8; 4] = *b"RCPT";
pub(crate) const DATA: [u8; 4] = *b"DATA";
pub(crate) const END: [u8; 4] = *b"END ";
/// Payload bounds of the records.
pub(crate) const MAX_SNDR_PAYLOAD: usize = 2 + MAX_SENDER;
pub(crate) const MAX_OPTS_PAYLOAD: usize = 3 + (3 + MAX_ENVID) + (3 + MAX_FULL_NAME);
pub(crate) const MAX_RCPT_PAYLOAD: usize = (2 + MAX_ADDRESS) + (3 + MAX_ORCPT) + 1;
pub(crate) const END_PAYLOAD: usize = 16;
// The bounds doc/maildrop-format.md gives.
const _: () = assert!(MAX_SNDR_PAYLOAD == 1026 && MAX_OPTS_PAYLOAD == 365 && MAX_RCPT_PAYLOAD == 2054);

/// One recipient, with its DSN parameters (RFC 3461).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Recipient {
    /// Not empty, at most [`MAX_ADDRESS`] bytes.
    pub address: String,
    /// The ORCPT parameter as given (`rfc822;user@example.org`), at most
    /// [`MAX_ORCPT`] bytes.
    pub orcpt: Option<String>,
    /// None when no NOTIFY was given. `Notify::On` needs at least one
    /// condition.
    pub notify: Option<Notify>,
}

/// What `sendmail` says about a message besides its content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Envelope {
    /// The envelope sender, at most [`MAX_SENDER`] bytes; empty for the
    /// null sender `<>`.
    pub sender: String,
    pub body: BodyType,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// At most [`MAX_ENVID`] bytes, each printable ASCII (0x21 to 0x7E);
    /// the xtext encoding is the caller's business.
    pub envid: Option<String>,
    /// The sender's full name (`sendmail -F`): at most [`MAX_FULL_NAME`]
    /// bytes, no control characters.
    pub full_name: Option<String>,
    /// At least one.
    pub recipients: Vec<Recipient>,
}

/// What a reader accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Most recipients; one more is [`Error::TooManyRecipients`].
    pub max_recipients: usize,
    /// Most content bytes; one more is [`Error::TooBig`].
    pub max_content: u64,
}

impl Default for Limits {
    /// 10,000 recipients and 50 MiB of content.
    fn default() -> Limits {
        Limits { max_recipients: 10_000, max_content: 50 * 1024 * 1024 }
    }
}

/// What went wrong writing or reading a maildrop stream.
#[derive(Debug)]
pub enum Error {
    /// The underlying reader or writer failed.
    Io(io::Error),
    /// The stream (or, for the writer, the envelope) breaks a rule of the
    /// format: `offset` is the byte offset in the stream of the field or
    /// record at fault, `what` says what is wrong.
    Invalid { offset: u64, what: String },
    /// The stream ends at byte `offset`, before its `END ` record is
    /// complete: a file still being written or one cut short.
    Truncated { offset: u64 },
    /// The content is larger than `limit` bytes.
    TooBig { limit: u64 },
    /// There are more than `limit` recipients.
    TooManyRecipients { limit: usize },
}

impl Error {
    pub(crate) fn invalid(offset: u64, what: impl Into<String>) -> Error {
        Error::Invalid { offset, what: what.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "maildrop I/O error: {e}"),
            Error::Invalid { offset, what } => write!(f, "invalid maildrop stream at byte {offset}: {what}"),
            Error::Truncated { offset } => {
                write!(f, "maildrop stream truncated: it ends at byte {offset}, before its END record")
            }
            Error::TooBig { limit } => write!(f, "message content larger than the limit of {limit} bytes"),
            Error::TooManyRecipients { limit } => write!(f, "more recipients than the limit of {limit}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

// ----- the field rules, shared by the writer and the reader -----

/// Which characters a string field may hold.
#[derive(Clone, Copy)]
pub(crate) enum Chars {
    /// Any UTF-8.
    Any,
    /// Printable ASCII without space, 0x21 to 0x7E.
    Printable,
    /// UTF-8 without control characters (C0, DEL, C1).
    NoControl,
}

/// A string field's rule: its name, its length bounds and its characters.
pub(crate) struct Rule {
    pub what: &'static str,
    pub min: usize,
    pub max: usize,
    pub chars: Chars,
}

pub(crate) const SENDER: Rule = Rule { what: "sender address", min: 0, max: MAX_SENDER, chars: Chars::Any };
pub(crate) const ENVID: Rule = Rule { what: "ENVID", min: 0, max: MAX_ENVID, chars: Chars::Printable };
pub(crate) const FULL_NAME: Rule = Rule { what: "full name", min: 0, max: MAX_FULL_NAME, chars: Chars::NoControl };
pub(crate) const ADDRESS: Rule = Rule { what: "recipient address", min: 1, max: MAX_ADDRESS, chars: Chars::Any };
pub(crate) const ORCPT: Rule = Rule { what: "ORCPT", min: 0, max: MAX_ORCPT, chars: Chars::Any };

impl Rule {
    /// Whether `s` obeys the rule; the complaint if not.
    pub(crate) fn check(&self, s: &str) -> Result<(), String> {
        let what = self.what;
        if s.len() < self.min {
            return Err(format!("{what} is empty"));
        }
        if s.len() > self.max {
            return Err(format!("{what} of {} bytes, over the limit of {}", s.len(), self.max));
        }
        let bad = match self.chars {
            Chars::Any => None,
            Chars::Printable => s.chars().find(|c| !matches!(c, '\x21'..='\x7e')),
            Chars::NoControl => s.chars().find(|c| c.is_control()),
        };
        match bad {
            None => Ok(()),
            Some(c) => Err(format!("{what} contains the character {:?}, which is not allowed", c)),
        }
    }
}

pub(crate) fn body_code(b: BodyType) -> u8 {
    match b {
        BodyType::SevenBit => 0,
        BodyType::EightBitMime => 1,
        BodyType::BinaryMime => 2,
    }
}

pub(crate) fn body_from(c: u8) -> Option<BodyType> {
    match c {
        0 => Some(BodyType::SevenBit),
        1 => Some(BodyType::EightBitMime),
        2 => Some(BodyType::BinaryMime),
        _ => None,
    }
}

pub(crate) fn ret_code(r: Option<Ret>) -> u8 {
    match r {
        None => 0,
        Some(Ret::Full) => 1,
        Some(Ret::Headers) => 2,
    }
}

pub(crate) fn ret_from(c: u8) -> Option<Option<Ret>> {
    match c {
        0 => Some(None),
        1 => Some(Some(Ret::Full)),
        2 => Some(Some(Ret::Headers)),
        _ => None,
    }
}

pub(crate) const NOTIFY_NEVER: u8 = 0x80;

/// The NOTIFY byte; `Err` for `Notify::On` with no condition.
pub(crate) fn notify_code(n: Option<Notify>) -> Result<u8, String> {
    match n {
        None => Ok(0),
        Some(Notify::Never) => Ok(NOTIFY_NEVER),
        Some(Notify::On { success, failure, delay }) => {
            let c = u8::from(success) | u8::from(failure) << 1 | u8::from(delay) << 2;
            if c == 0 { Err("NOTIFY with no condition".into()) } else { Ok(c) }
        }
    }
}

/// The NOTIFY value of a byte; `None` for a byte that is not one.
pub(crate) fn notify_from(c: u8) -> Option<Option<Notify>> {
    match c {
        0 => Some(None),
        NOTIFY_NEVER => Some(Some(Notify::Never)),
        1..=7 => Some(Some(Notify::On { success: c & 1 != 0, failure: c & 2 != 0, delay: c & 4 != 0 })),
        _ => None,
    }
}

/// A tag as text for a message: `a SNDR record`, or the bytes escaped.
pub(crate) fn describe_tag(tag: &[u8; 4]) -> String {
    match *tag {
        SNDR => "a SNDR record".to_string(),
        OPTS => "an OPTS record".to_string(),
        RCPT => "a RCPT record".to_string(),
        DATA => "a DATA record".to_string(),
        END => "an END record".to_string(),
        _ => {
            let shown: String = tag.iter().flat_map(|&b| std::ascii::escape_default(b)).map(char::from).collect();
            format!("an unknown record tag `{shown}`")
        }
    }
}

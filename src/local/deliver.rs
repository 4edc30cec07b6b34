//! What the two mailbox forms (mbox and Maildir) share: the envelope of
//! one delivery, the headers the local delivery agent puts in front of
//! the message (`Return-Path:`, `Delivered-To:`), the `Delivered-To:`
//! loop check, the conversion of queued content to LF line ends, and the
//! error both report.
//!
//! The queue holds the content as SMTP carried it, every line ended by
//! CR LF; local mailboxes use LF, as every Unix mail reader expects.
//! [`LfLines`] converts as the content streams through, holding back at
//! most a few bytes, never a line or the message, so a message of any
//! size is delivered in bounded memory.
//!
//! Trusts: nothing in the envelope or the content. An address that could
//! break the header it goes into (a control character, `<`, `>`) is
//! refused, never cleaned up; the content is re-terminated and quoted,
//! and only its header section is ever read.

use std::fmt;
use std::io::{self, Read, Write};
use std::time::Duration;

use nix::errno::Errno;

/// The envelope of one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The envelope sender (MAIL FROM); "" is the null sender of a
    /// delivery status notification.
    pub sender: &'a str,
    /// The recipient this copy is delivered for.
    pub recipient: &'a str,
    /// When the message arrived, in Unix seconds (the mbox `From ` line
    /// shows it).
    pub arrival: i64,
}

/// Why a delivery to a mailbox failed.
#[derive(Debug)]
pub enum Error {
    /// The kernel refused an operation (`what` says which, on what):
    /// temporary, "mailbox full" when the disk, the quota or the file size
    /// limit ran out.
    Io { what: String, error: io::Error },
    /// Another process held `lock` on `mailbox` for the whole `waited`:
    /// temporary, the mailbox is busy.
    Locked { mailbox: String, lock: String, waited: Duration },
    /// Refused for safety: a mailbox that is a symbolic link, has more
    /// than one link, is not a regular file or directory, or belongs to
    /// someone else; an address that would break a header. Temporary, so
    /// the mail waits in the queue while the administrator looks.
    Unsafe(String),
    /// The message already carries a `Delivered-To:` for this recipient:
    /// it went round a forwarding loop. Permanent.
    Loop,
}

impl Error {
    /// `map_err` helper: an I/O error while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        move |error| Error::Io { what: what.into(), error }
    }

    /// `map_err` helper: a failed system call while doing `what`.
    pub fn errno(what: impl Into<String>) -> impl FnOnce(Errno) -> Error {
        move |e| Error::Io { what: what.into(), error: io::Error::from(e) }
    }

    /// Whether the mailbox is full: no space on the disk (ENOSPC), the
    /// user's quota (EDQUOT) or the file size limit (EFBIG) ran out.
    pub fn mailbox_full(&self) -> bool {
        const FULL: [Errno; 3] = [Errno::ENOSPC, Errno::EDQUOT, Errno::EFBIG];
        matches!(self, Error::Io { error, .. } if error.raw_os_error().is_some_and(|c| FULL.iter().any(|e| *e as i32 == c)))
    }

    /// Whether to try again later (defer) rather than bounce. Everything
    /// but a loop is temporary: a full disk or quota frees up, a lock is
    /// let go, an unsafe mailbox gets fixed (Postfix defers on all of
    /// these too).
    pub fn temporary(&self) -> bool {
        !matches!(self, Error::Loop)
    }

    /// The enhanced status code (RFC 3463) for the delivery status:
    /// 4.2.2 mailbox full; 4.3.0 other I/O trouble (other mail system
    /// status); 4.2.0 locked or unsafe (other mailbox status: the mailbox
    /// is busy, or in a state we will not write to, as Postfix's X.2.0
    /// for a mailbox it cannot open); 5.4.6 routing loop detected.
    pub fn dsn(&self) -> &'static str {
        match self {
            Error::Io { .. } if self.mailbox_full() => "4.2.2",
            Error::Io { .. } => "4.3.0",
            Error::Locked { .. } | Error::Unsafe(_) => "4.2.0",
            Error::Loop => "5.4.6",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { what, error } if self.mailbox_full() => write!(f, "{what}: {error} (mailbox full)"),
            Error::Io { what, error } => write!(f, "{what}: {error}"),
            Error::Locked { mailbox, lock, waited } => {
                write!(f, "cannot lock {mailbox}: {lock} still held by another process after {waited:?}")
            }
            Error::Unsafe(why) => write!(f, "refused for safety: {why}"),
            Error::Loop => f.write_str("mail forwarding loop: the message already has this Delivered-To: address"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The headers put in front of the message, LF terminated:
/// `Return-Path: <sender>` and `Delivered-To: recipient`.
///
/// An address with a control character (CR, LF, NUL, anything below
/// 0x20, DEL) or an angle bracket is refused ([`Error::Unsafe`]): it
/// could end the header early and start one of its own. UTF-8 beyond
/// ASCII is fine (SMTPUTF8).
pub fn prepended_headers(env: &Envelope<'_>) -> Result<Vec<u8>, Error> {
    header_safe("sender", env.sender)?;
    header_safe("recipient", env.recipient)?;
    if env.recipient.is_empty() {
        return Err(Error::Unsafe(String::from("the recipient address is empty")));
    }
    let mut h = Vec::with_capacity(32 + env.sender.len() + env.recipient.len());
    prepended_field(&mut h, "Return-Path", &format!("<{}>", env.sender));
    prepended_field(&mut h, "Delivered-To", env.recipient);
    Ok(h)
}

/// `name: value` and a LF, folded after the colon when the line would be
/// longer than RFC 5322 allows: an address cannot be folded, and cleanup
/// takes no sender longer than fits after `Return-Path: `
/// ([`crate::header::MAX_SENDER`]); this keeps to the limit a queue file
/// from before that bound, and a recipient nearly as long.
fn prepended_field(h: &mut Vec<u8>, name: &str, value: &str) {
    h.extend_from_slice(name.as_bytes());
    h.push(b':');
    if name.len() + 2 + value.len() > crate::header::MAX_LINE {
        h.push(b'\n');
    }
    h.push(b' ');
    h.extend_from_slice(value.as_bytes());
    h.push(b'\n');
}

/// Refuses an address that could break out of the header it goes into.
fn header_safe(role: &str, address: &str) -> Result<(), Error> {
    match address.bytes().find(|&b| b < 0x20 || b == 0x7f || b == b'<' || b == b'>') {
        None => Ok(()),
        Some(b) => Err(Error::Unsafe(format!(
            "the {role} address {address:?} contains {}, which could break the header",
            if b == b'<' || b == b'>' {
                format!("{:?}", char::from(b))
            } else {
                format!("control character 0x{b:02x}")
            }
        ))),
    }
}

/// The most of the content [`header_block`] reads.
pub const HEADER_PEEK: usize = 64 * 1024;

/// The start of the content, where its header section is: at most
/// [`HEADER_PEEK`] bytes, for [`delivered_to_loop`].
pub fn header_block(file: &std::fs::File, range: crate::queue::ContentRange) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let n = usize::try_from(range.len).unwrap_or(usize::MAX).min(HEADER_PEEK);
    let mut head = vec![0u8; n];
    file.read_exact_at(&mut head, range.offset)?;
    Ok(head)
}

/// Whether the message's header section already has a `Delivered-To:`
/// whose value is `recipient` (trimmed, ASCII case ignored, angle
/// brackets allowed): the message has been here before, for the same
/// recipient, and delivering it again would go round a loop.
///
/// `header_block` is the start of the content, at least its header
/// section; only lines before the first empty line count. Lines may end
/// in CR LF or LF; folded lines (continued by a line starting with a
/// space or tab) are unfolded.
pub fn delivered_to_loop(header_block: &[u8], recipient: &str) -> bool {
    let mut value: Option<Vec<u8>> = None;
    for line in header_block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(b' ' | b'\t') = line.first() {
            if let Some(v) = value.as_mut() {
                v.extend_from_slice(line);
            }
            continue;
        }
        if value.take().is_some_and(|v| same_address(&v, recipient)) {
            return true;
        }
        if line.is_empty() {
            return false;
        }
        value = delivered_to_value(line).map(<[u8]>::to_vec);
    }
    value.is_some_and(|v| same_address(&v, recipient))
}

/// The value of a `Delivered-To:` header line, or None for another header.
fn delivered_to_value(line: &[u8]) -> Option<&[u8]> {
    const NAME: &[u8] = b"delivered-to";
    let rest = line.get(NAME.len()..).filter(|_| line[..NAME.len()].eq_ignore_ascii_case(NAME))?;
    // Obsolete syntax allows white space before the colon.
    let rest = rest.trim_ascii_start();
    rest.strip_prefix(b":")
}

fn same_address(value: &[u8], recipient: &str) -> bool {
    let v = value.trim_ascii();
    let v = v.strip_prefix(b"<").and_then(|v| v.strip_suffix(b">")).map_or(v, <[u8]>::trim_ascii);
    v.eq_ignore_ascii_case(recipient.trim().as_bytes())
}

const FROM_: &[u8; 5] = b"From ";

/// Where a line stands for `From ` quoting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// Not at the start of a line (or not quoting): bytes go straight out.
    Body,
    /// At the start of a line, after any `>` (already written out), with
    /// this many bytes of `From ` matched and held back.
    Prefix(usize),
}

/// Converts queued content to LF line ends as it streams, chunk by chunk.
///
/// The input is content as the queue stores it: lines ended by CR LF, the
/// last line perhaps not ended. CR LF becomes LF, and so does a bare LF;
/// a CR not followed by LF is kept as text, as Postfix keeps it. A CR LF
/// split between two chunks is still one line end. The output always
/// ends with a line end unless it is empty.
///
/// For mbox ([`LfLines::new`] with `quote_from`), a line matching
/// `^>*From ` gets one more `>` in front: the mboxrd format, which mail
/// readers undo by taking one `>` off such lines, so the content
/// round-trips exactly. Postfix, mutt and Python's `mailbox` read and
/// write it; a reader of the older mboxo (which quotes only `^From `)
/// still finds every message boundary.
#[derive(Debug)]
pub struct LfLines {
    quote_from: bool,
    start: Start,
    /// The previous chunk ended in a CR, not written yet: a line end if
    /// the next chunk starts with LF, text otherwise.
    after_cr: bool,
    /// Something of the current line is written or held: it needs a line
    /// end at the finish.
    line_open: bool,
}

impl LfLines {
    /// A converter; `quote_from` for mbox (mboxrd `>From ` quoting).
    pub fn new(quote_from: bool) -> LfLines {
        LfLines { quote_from, start: LfLines::line_start(quote_from), after_cr: false, line_open: false }
    }

    fn line_start(quote_from: bool) -> Start {
        if quote_from { Start::Prefix(0) } else { Start::Body }
    }

    /// Converts a chunk, appending to `out` (at most one byte more per
    /// five bytes in, from quoting, plus four held from the last chunk).
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        if self.after_cr && !data.is_empty() {
            self.after_cr = false;
            if data[0] == b'\n' {
                self.end_line(out);
                data = &data[1..];
            } else {
                self.bare_cr(out);
            }
        }
        while let Some(&b) = data.first() {
            if let Start::Prefix(matched) = self.start
                && b != b'\r'
                && b != b'\n'
            {
                if self.prefix_byte(b, matched, out) {
                    data = &data[1..];
                }
                continue;
            }
            let text = memchr::memchr2(b'\r', b'\n', data).unwrap_or(data.len());
            if text > 0 {
                out.extend_from_slice(&data[..text]);
                self.line_open = true;
                data = &data[text..];
                continue;
            }
            match (b, data.get(1)) {
                (b'\n', _) => {
                    self.end_line(out);
                    data = &data[1..];
                }
                (_, None) => {
                    self.after_cr = true;
                    data = &[];
                }
                (_, Some(b'\n')) => {
                    self.end_line(out);
                    data = &data[2..];
                }
                (_, Some(_)) => {
                    self.bare_cr(out);
                    data = &data[1..];
                }
            }
        }
    }

    /// Ends the content: writes what is held back and ends an unended
    /// last line. The converter is then ready for new content.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.after_cr {
            self.after_cr = false;
            self.bare_cr(out);
        }
        self.release_prefix(out);
        if self.line_open {
            out.push(b'\n');
        }
        self.line_open = false;
        self.start = LfLines::line_start(self.quote_from);
    }

    /// One byte (not CR or LF) at a line's start; false when it was not
    /// taken (the line is not a `From ` line: it goes out as text).
    fn prefix_byte(&mut self, b: u8, matched: usize, out: &mut Vec<u8>) -> bool {
        if matched == 0 && b == b'>' {
            out.push(b'>');
            self.line_open = true;
            return true;
        }
        if b == FROM_[matched] {
            self.line_open = true;
            if matched + 1 == FROM_.len() {
                // The `>` written so far plus this one: `>` in front of
                // the whole line.
                out.extend_from_slice(b">From ");
                self.start = Start::Body;
            } else {
                self.start = Start::Prefix(matched + 1);
            }
            return true;
        }
        self.release_prefix(out);
        false
    }

    /// The line is not a `From ` line after all: write the held bytes.
    fn release_prefix(&mut self, out: &mut Vec<u8>) {
        if let Start::Prefix(matched) = self.start {
            out.extend_from_slice(&FROM_[..matched]);
            self.start = Start::Body;
        }
    }

    fn bare_cr(&mut self, out: &mut Vec<u8>) {
        self.release_prefix(out);
        out.push(b'\r');
        self.line_open = true;
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        self.release_prefix(out);
        out.push(b'\n');
        self.line_open = false;
        self.start = LfLines::line_start(self.quote_from);
    }
}

/// How much content is read, and written, at a time.
const CHUNK: usize = 64 * 1024;

/// The buffers [`copy_message`] works in, kept by a worker from one
/// delivery to the next: fresh ones per message (64 KiB zeroed, 128 KiB
/// reserved, then given back to the system) cost more than the copy.
#[derive(Default)]
pub struct Scratch {
    input: Vec<u8>,
    output: Vec<u8>,
}

/// Writes `head`, then the content read from `content` (CR LF lines, see
/// [`LfLines`]) with LF line ends, then `tail`, to `out`, in chunks of
/// about 64 KiB. `dest` names the destination for error messages
/// ("mailbox bob"). Neither flushes nor syncs `out`.
pub fn copy_message(
    out: &mut dyn Write,
    head: &[u8],
    content: &mut dyn Read,
    quote_from: bool,
    tail: &[u8],
    dest: &str,
    scratch: &mut Scratch,
) -> Result<(), Error> {
    let mut lines = LfLines::new(quote_from);
    let Scratch { input, output } = scratch;
    if input.len() < CHUNK {
        input.resize(CHUNK, 0);
    }
    output.clear();
    output.reserve(2 * CHUNK);
    output.extend_from_slice(head);
    loop {
        let n = match content.read(input) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Io { what: String::from("read the message content"), error: e }),
        };
        lines.feed(&input[..n], output);
        if output.len() >= CHUNK {
            out.write_all(output).map_err(Error::io(format!("write to {dest}")))?;
            output.clear();
        }
    }
    lines.finish(output);
    output.extend_from_slice(tail);
    out.write_all(output).map_err(Error::io(format!("write to {dest}")))
}

/// Past the file size limit (RLIMIT_FSIZE, from an init script or
/// systemd's `LimitFSIZE=`), a write must fail with EFBIG, "mailbox
/// full", a deferral, and the mailbox be cut back, not the process be
/// killed by SIGXFSZ: the signal is blocked (it waits, never delivered).
/// For the delivery workers and repair, which run no other program.
pub fn block_file_size_signal() -> nix::Result<()> {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGXFSZ);
    set.thread_block()
}

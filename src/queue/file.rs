//! The queue file format, version 1 (`doc/queue-format.md` has it byte by
//! byte): a header (`MTAQ`, version), then records, each with a tag, its
//! length and a CRC-32 of its own, in a fixed order: `ENVL`, then per
//! recipient `RCPT` and two fixed-size `STAT` slots, then `CONT` giving the
//! length and CRC-32 of the content that follows to the end of the file.
//!
//! A recipient's status is updated in place by rewriting the older of its
//! two slots with a higher sequence number: a write torn by a crash
//! spoils at most that slot, and the reader takes the newest slot whose
//! CRC is good, so the file stays readable.
//!
//! Trusts: nothing it reads. Lengths are checked against their bound and
//! the file size before anything is read or allocated; every field is
//! validated; trailing bytes are an error.

use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;

use super::id::{LEN as ID_LEN, QueueId};
use super::types::{
    BodyType, Client, DoneAction, Envelope, Notify, Protocol, QueueFile, Recipient, Ret, State, Status, Time,
};
use super::{
    CorruptError, Error, MAX_ADDRESS, MAX_CLIENT_ADDRESS, MAX_ENVID, MAX_HOSTNAME, MAX_REASON, MAX_RECIPIENTS, MAX_TLS,
};

/// The first four bytes of every queue file.
pub const MAGIC: &[u8; 4] = b"MTAQ";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
const HEADER: usize = 8;
const REC: usize = 12;
const ENVL: &[u8; 4] = b"ENVL";
const RCPT: &[u8; 4] = b"RCPT";
const STAT: &[u8; 4] = b"STAT";
const CONT: &[u8; 4] = b"CONT";
const ENVL_FIXED: usize = ID_LEN + 28;
const MAX_ENVL: usize = ENVL_FIXED
    + (2 + MAX_ADDRESS)
    + (3 + MAX_ENVID)
    + (2 + MAX_CLIENT_ADDRESS)
    + 2 * (2 + MAX_HOSTNAME)
    + (3 + MAX_TLS);
const MAX_RCPT: usize = (2 + MAX_ADDRESS) + (3 + MAX_ADDRESS) + 1;
// The bounds doc/queue-format.md gives.
const _: () = assert!(MAX_ENVL == 4670 && MAX_RCPT == 2054);
const STAT_PAYLOAD: usize = 32 + MAX_REASON;
/// Size of one status slot, record header included.
pub const STAT_RECORD: usize = REC + STAT_PAYLOAD;
const CONT_PAYLOAD: usize = 16;
/// Fewest bytes a recipient takes (RCPT with an empty address, two slots).
const MIN_RECIPIENT: usize = REC + 4 + 2 * STAT_RECORD;
const READ_CHUNK: usize = 64 * 1024;

/// Where the content lies in a queue file, for `pread`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    pub offset: u64,
    pub len: u64,
    /// CRC-32 of the content.
    pub crc: u32,
}

/// A queue file read without its content ([`read_envelope`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueEnvelope {
    pub id: QueueId,
    pub envelope: Envelope,
    pub recipients: Vec<Recipient>,
    status_at: Vec<u64>,
    content: ContentRange,
}

impl QueueEnvelope {
    /// Where the content is (check it with [`verify_content`]).
    pub fn content_range(&self) -> ContentRange {
        self.content
    }

    /// Offset of recipient `index`'s status slots.
    pub fn status_offset(&self, index: usize) -> Option<u64> {
        self.status_at.get(index).copied()
    }

    /// Record a new status for recipient `index` in place (one `pread` of
    /// its two slots, one `pwrite` of the older one) and `fdatasync` the
    /// file. `file` must be the file this envelope was read from, opened
    /// for writing.
    pub fn update_recipient(&mut self, file: &File, index: usize, status: Status) -> Result<(), Error> {
        let at = self.status_offset(index).ok_or_else(|| Error::Invalid(format!("no recipient #{index}")))?;
        let (stored, _) = update_status_at(file, at, &status)?;
        file.sync_data()?;
        self.recipients[index].status = stored;
        Ok(())
    }
}

// ----- encoding -----

fn crc_record(rec: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&rec[..8]);
    h.update(&rec[REC..]);
    h.finalize()
}

fn begin(out: &mut Vec<u8>, tag: &[u8; 4]) -> usize {
    let at = out.len();
    out.extend_from_slice(tag);
    out.extend_from_slice(&[0; 8]);
    at
}

fn finish(out: &mut [u8], at: usize) {
    let len = (out.len() - at - REC) as u32;
    out[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
    let crc = crc_record(&out[at..]);
    out[at + 8..at + 12].copy_from_slice(&crc.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str, max: usize, what: &str) -> Result<(), Error> {
    if s.len() > max {
        return Err(Error::Invalid(format!("{what} is {} bytes long, over the limit of {max}", s.len())));
    }
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>, max: usize, what: &str) -> Result<(), Error> {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s, max, what)?;
        }
    }
    Ok(())
}

/// The reason as stored: at most MAX_REASON bytes, cut at a character
/// boundary and ending in `...` when it was longer.
pub fn stored_reason(reason: &str) -> Cow<'_, str> {
    if reason.len() <= MAX_REASON {
        return Cow::Borrowed(reason);
    }
    let mut end = MAX_REASON - 3;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}...", &reason[..end]))
}

fn state_code(s: State) -> u8 {
    match s {
        State::Pending => 0,
        State::Done => 1,
        State::Deferred => 2,
        State::Bounced => 3,
    }
}

/// What a slot's reason field holds: the reason, behind the action word
/// and `: ` for a done recipient whose action is known
/// (`relayed: 250 2.0.0 Ok`). Version 1 has no field of its own for the
/// action, and a reader that does not know of it takes the whole text
/// for the reason (doc/queue-format.md).
fn slot_text(st: &Status) -> Cow<'_, str> {
    let text = match (st.state, st.action) {
        (State::Done, Some(a)) => Cow::Owned(format!("{}: {}", a.as_str(), st.reason)),
        _ => Cow::Borrowed(st.reason.as_str()),
    };
    if text.len() <= MAX_REASON { text } else { Cow::Owned(stored_reason(&text).into_owned()) }
}

/// A slot's reason field read back: the action a done recipient's text
/// starts with, if any, and the reason. (No version that wrote no action
/// began a done recipient's reason with an action word and `: `: a
/// server's reply starts with its code, our own reasons with other
/// words.)
fn from_slot_text(state: State, text: String) -> (Option<DoneAction>, String) {
    if state == State::Done {
        for a in DoneAction::ALL {
            if let Some(rest) = text.strip_prefix(a.as_str()).and_then(|r| r.strip_prefix(": ")) {
                return (Some(a), rest.to_string());
            }
        }
    }
    (None, text)
}

/// One status slot, record header included: `seq` 0 and no status is the
/// empty slot.
fn put_slot(out: &mut Vec<u8>, seq: u32, status: Option<&Status>) {
    let at = begin(out, STAT);
    let start = out.len();
    out.resize(start + STAT_PAYLOAD, 0);
    if let Some(st) = status {
        let reason = slot_text(st);
        let p = &mut out[start..];
        p[0..4].copy_from_slice(&seq.to_le_bytes());
        p[4] = state_code(st.state);
        p[6..8].copy_from_slice(&(reason.len() as u16).to_le_bytes());
        p[8..12].copy_from_slice(&st.attempts.to_le_bytes());
        p[16..24].copy_from_slice(&st.next_attempt.to_le_bytes());
        p[24..32].copy_from_slice(&st.changed.to_le_bytes());
        p[32..32 + reason.len()].copy_from_slice(reason.as_bytes());
    }
    finish(out, at);
}

fn notify_code(n: Option<Notify>) -> Result<u8, Error> {
    match n {
        None => Ok(0),
        Some(Notify::Never) => Ok(0x80),
        Some(Notify::On { success, failure, delay }) => {
            let c = u8::from(success) | u8::from(failure) << 1 | u8::from(delay) << 2;
            if c == 0 { Err(Error::Invalid("NOTIFY with no condition".into())) } else { Ok(c) }
        }
    }
}

impl QueueFile {
    /// The file's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut out)?;
        Ok(out)
    }

    fn encoded_len_hint(&self) -> usize {
        HEADER + 512 + self.recipients.len() * (REC + 64 + 2 * STAT_RECORD) + REC + CONT_PAYLOAD + self.content.len()
    }

    /// Append the file's bytes to `out` (left as it was on error).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        out.reserve(self.encoded_len_hint());
        let r = self.encode_inner(out);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn encode_inner(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let n = self.recipients.len();
        if n == 0 || n > MAX_RECIPIENTS {
            return Err(Error::Invalid(format!("{n} recipients (1 to {MAX_RECIPIENTS} allowed)")));
        }
        let e = &self.envelope;
        if e.arrival.micros >= 1_000_000 {
            return Err(Error::Invalid("arrival microseconds over 999999".into()));
        }
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&[0, 0]);

        let at = begin(out, ENVL);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&e.arrival.secs.to_le_bytes());
        out.extend_from_slice(&e.arrival.micros.to_le_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
        out.extend_from_slice(&(n as u32).to_le_bytes());
        out.push(match e.body {
            BodyType::SevenBit => 0,
            BodyType::EightBitMime => 1,
            BodyType::BinaryMime => 2,
        });
        out.push(u8::from(e.smtputf8));
        out.push(match e.dsn_ret {
            None => 0,
            Some(Ret::Full) => 1,
            Some(Ret::Headers) => 2,
        });
        out.push(match e.client.protocol {
            Protocol::Local => 0,
            Protocol::Smtp => 1,
            Protocol::Esmtp => 2,
            Protocol::Esmtpa => 3,
            Protocol::Esmtps => 4,
            Protocol::Esmtpsa => 5,
        });
        put_str(out, &e.sender, MAX_ADDRESS, "the sender address")?;
        put_opt(out, e.dsn_envid.as_deref(), MAX_ENVID, "ENVID")?;
        put_str(out, &e.client.address, MAX_CLIENT_ADDRESS, "the client address")?;
        put_str(out, &e.client.hostname, MAX_HOSTNAME, "the client host name")?;
        put_str(out, &e.client.helo, MAX_HOSTNAME, "the HELO name")?;
        put_opt(out, e.client.tls.as_deref(), MAX_TLS, "the TLS description")?;
        finish(out, at);

        for r in &self.recipients {
            let at = begin(out, RCPT);
            put_str(out, &r.address, MAX_ADDRESS, "a recipient address")?;
            put_opt(out, r.orcpt.as_deref(), MAX_ADDRESS, "ORCPT")?;
            out.push(notify_code(r.notify)?);
            finish(out, at);
            put_slot(out, 1, Some(&r.status));
            put_slot(out, 0, None);
        }

        let at = begin(out, CONT);
        out.extend_from_slice(&(self.content.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&self.content).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        finish(out, at);
        out.extend_from_slice(&self.content);
        Ok(())
    }

    /// Decode and validate a whole queue file.
    pub fn decode(bytes: &[u8]) -> Result<QueueFile, CorruptError> {
        let p = match parse(&mut Src::Bytes(bytes)) {
            Ok(p) => p,
            Err(Error::Corrupt(c)) => return Err(c),
            Err(e) => return Err(CorruptError::new(0, e.to_string())),
        };
        let c = p.content;
        // parse checked offset + len == bytes.len().
        let content = &bytes[c.offset as usize..];
        if crc32fast::hash(content) != c.crc {
            return Err(CorruptError::new(c.offset, "content CRC mismatch"));
        }
        Ok(QueueFile { id: p.id, envelope: p.envelope, recipients: p.recipients, content: content.to_vec() })
    }
}

// ----- decoding -----

/// Where the bytes come from: memory, or a file read on demand with
/// `pread` (so that reading the envelope does not read the content).
enum Src<'a> {
    Bytes(&'a [u8]),
    File { file: &'a File, size: u64, buf: Vec<u8> },
}

impl Src<'_> {
    fn size(&self) -> u64 {
        match self {
            Src::Bytes(b) => b.len() as u64,
            Src::File { size, .. } => *size,
        }
    }

    /// `n` bytes at `off`, which must lie inside the file.
    fn get(&mut self, off: u64, n: usize) -> Result<&[u8], Error> {
        let end = off.checked_add(n as u64).filter(|&e| e <= self.size());
        let Some(end) = end else {
            return Err(CorruptError::new(off, format!("{n} bytes needed past the end of the file")).into());
        };
        match self {
            Src::Bytes(b) => Ok(&b[off as usize..end as usize]),
            Src::File { file, size, buf } => {
                let have = buf.len() as u64;
                if end > have {
                    let want = end.max(have + READ_CHUNK as u64).min(*size) as usize;
                    let old = buf.len();
                    buf.resize(want, 0);
                    if let Err(e) = file.read_exact_at(&mut buf[old..], have) {
                        buf.truncate(old);
                        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            CorruptError::new(have, "file shorter than its size").into()
                        } else {
                            e.into()
                        });
                    }
                }
                Ok(&buf[off as usize..end as usize])
            }
        }
    }
}

/// A cursor over one record's payload.
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Cur<'a> {
    fn err(&self, why: impl Into<String>) -> CorruptError {
        CorruptError::new(self.base + self.pos as u64, why)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CorruptError> {
        if self.b.len() - self.pos < n {
            return Err(self.err("record shorter than its fields"));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N], CorruptError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, CorruptError> {
        Ok(self.take(1)?[0])
    }

    fn string(&mut self, max: usize, what: &str) -> Result<String, CorruptError> {
        let len = u16::from_le_bytes(self.arr()?) as usize;
        if len > max {
            return Err(self.err(format!("{what} of {len} bytes, over the limit of {max}")));
        }
        let at = self.base + self.pos as u64;
        let raw = self.take(len)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(CorruptError::new(at, format!("{what} is not UTF-8"))),
        }
    }

    fn opt_string(&mut self, max: usize, what: &str) -> Result<Option<String>, CorruptError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.string(max, what)?)),
            _ => Err(self.err(format!("bad presence flag for {what}"))),
        }
    }

    fn done(&self) -> Result<(), CorruptError> {
        if self.pos == self.b.len() { Ok(()) } else { Err(self.err("unexpected bytes at the end of a record")) }
    }
}

/// Read the record at `pos`, which must carry `tag` and a payload of at
/// most `max` bytes; its payload goes to `payload`. Returns the position
/// after it.
fn record(src: &mut Src<'_>, pos: u64, tag: &[u8; 4], max: usize, payload: &mut Vec<u8>) -> Result<u64, Error> {
    let h: [u8; REC] = src.get(pos, REC)?.try_into().unwrap_or([0; REC]);
    if &h[0..4] != tag {
        let found = String::from_utf8_lossy(&h[0..4]).escape_debug().to_string();
        let want = String::from_utf8_lossy(tag);
        return Err(CorruptError::new(pos, format!("expected a {want} record, found `{found}`")).into());
    }
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if len > max {
        return Err(CorruptError::new(pos, format!("record of {len} bytes, over the limit of {max}")).into());
    }
    let body = src.get(pos + REC as u64, len)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h[..8]);
    hasher.update(body);
    if hasher.finalize() != u32::from_le_bytes([h[8], h[9], h[10], h[11]]) {
        return Err(CorruptError::new(pos, "record CRC mismatch").into());
    }
    payload.clear();
    payload.extend_from_slice(body);
    Ok(pos + (REC + len) as u64)
}

/// A slot's sequence number and status; `Ok(None)` for a slot whose CRC
/// fails (a torn write). A bad tag or length is corruption.
fn parse_slot(raw: &[u8], at: u64) -> Result<Option<(u32, Status)>, CorruptError> {
    if raw.len() != STAT_RECORD || &raw[0..4] != STAT || raw[4..8] != (STAT_PAYLOAD as u32).to_le_bytes() {
        return Err(CorruptError::new(at, "expected a STAT record of the fixed size"));
    }
    if crc_record(raw) != u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]) {
        return Ok(None);
    }
    let p = &raw[REC..];
    let seq = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
    let base = at + REC as u64;
    if seq == 0 {
        return if p.iter().all(|&b| b == 0) {
            Ok(None)
        } else {
            Err(CorruptError::new(base, "empty status slot with data"))
        };
    }
    let state = match p[4] {
        0 => State::Pending,
        1 => State::Done,
        2 => State::Deferred,
        3 => State::Bounced,
        s => return Err(CorruptError::new(base + 4, format!("unknown recipient state {s}"))),
    };
    let rlen = u16::from_le_bytes([p[6], p[7]]) as usize;
    if p[5] != 0 || p[12..16] != [0; 4] || rlen > MAX_REASON || p[32 + rlen..].iter().any(|&b| b != 0) {
        return Err(CorruptError::new(base, "bad status slot (reserved bytes, reason length or padding)"));
    }
    let text = std::str::from_utf8(&p[32..32 + rlen])
        .map_err(|_| CorruptError::new(base + 32, "status reason is not UTF-8"))?
        .to_string();
    let (action, reason) = from_slot_text(state, text);
    let g8 = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&p[i..i + 8]);
        i64::from_le_bytes(a)
    };
    let status = Status {
        state,
        action,
        attempts: u32::from_le_bytes([p[8], p[9], p[10], p[11]]),
        next_attempt: g8(16),
        changed: g8(24),
        reason,
    };
    Ok(Some((seq, status)))
}

/// The newest good slot of a pair.
fn newest(a: Option<(u32, Status)>, b: Option<(u32, Status)>, at: u64) -> Result<(usize, u32, Status), CorruptError> {
    match (a, b) {
        (Some((sa, a)), Some((sb, _))) if sa > sb => Ok((0, sa, a)),
        (Some((sa, _)), Some((sb, b))) if sb > sa => Ok((1, sb, b)),
        (Some(_), Some(_)) => Err(CorruptError::new(at, "two status slots with the same sequence number")),
        (Some((s, st)), None) => Ok((0, s, st)),
        (None, Some((s, st))) => Ok((1, s, st)),
        (None, None) => Err(CorruptError::new(at, "no valid status slot")),
    }
}

struct Parsed {
    id: QueueId,
    envelope: Envelope,
    recipients: Vec<Recipient>,
    status_at: Vec<u64>,
    content: ContentRange,
}

impl From<Parsed> for QueueEnvelope {
    fn from(p: Parsed) -> QueueEnvelope {
        QueueEnvelope {
            id: p.id,
            envelope: p.envelope,
            recipients: p.recipients,
            status_at: p.status_at,
            content: p.content,
        }
    }
}

fn parse(src: &mut Src<'_>) -> Result<Parsed, Error> {
    let size = src.size();
    let h = src.get(0, HEADER)?;
    if &h[0..4] != MAGIC {
        return Err(CorruptError::new(0, "not a queue file (bad magic number)").into());
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if version != VERSION {
        return Err(CorruptError::new(4, format!("queue file version {version}, this program reads {VERSION}")).into());
    }
    if h[6..8] != [0, 0] {
        return Err(CorruptError::new(6, "reserved header bytes are not zero").into());
    }
    let mut payload = Vec::with_capacity(MAX_ENVL);
    let mut pos = record(src, HEADER as u64, ENVL, MAX_ENVL, &mut payload)?;
    let mut c = Cur { b: &payload, pos: 0, base: (HEADER + REC) as u64 };
    let id_at = c.base;
    let id = QueueId::from_bytes(c.take(ID_LEN)?).ok_or_else(|| CorruptError::new(id_at, "bad queue ID"))?;
    let secs = i64::from_le_bytes(c.arr()?);
    let micros = u32::from_le_bytes(c.arr()?);
    if micros >= 1_000_000 {
        return Err(c.err("arrival microseconds over 999999").into());
    }
    let msize = u64::from_le_bytes(c.arr()?);
    let nrcpt = u32::from_le_bytes(c.arr()?) as usize;
    if nrcpt == 0 || nrcpt > MAX_RECIPIENTS {
        return Err(c.err(format!("{nrcpt} recipients (1 to {MAX_RECIPIENTS} allowed)")).into());
    }
    let body = match c.u8()? {
        0 => BodyType::SevenBit,
        1 => BodyType::EightBitMime,
        2 => BodyType::BinaryMime,
        b => return Err(c.err(format!("unknown body type {b}")).into()),
    };
    let smtputf8 = match c.u8()? {
        0 => false,
        1 => true,
        b => return Err(c.err(format!("bad SMTPUTF8 flag {b}")).into()),
    };
    let dsn_ret = match c.u8()? {
        0 => None,
        1 => Some(Ret::Full),
        2 => Some(Ret::Headers),
        b => return Err(c.err(format!("unknown RET value {b}")).into()),
    };
    let protocol = match c.u8()? {
        0 => Protocol::Local,
        1 => Protocol::Smtp,
        2 => Protocol::Esmtp,
        3 => Protocol::Esmtpa,
        4 => Protocol::Esmtps,
        5 => Protocol::Esmtpsa,
        b => return Err(c.err(format!("unknown protocol {b}")).into()),
    };
    let sender = c.string(MAX_ADDRESS, "sender address")?;
    let dsn_envid = c.opt_string(MAX_ENVID, "ENVID")?;
    let address = c.string(MAX_CLIENT_ADDRESS, "client address")?;
    let hostname = c.string(MAX_HOSTNAME, "client host name")?;
    let helo = c.string(MAX_HOSTNAME, "HELO name")?;
    let tls = c.opt_string(MAX_TLS, "TLS description")?;
    c.done()?;
    let envelope = Envelope {
        sender,
        arrival: Time { secs, micros },
        client: Client { address, hostname, helo, protocol, tls },
        body,
        smtputf8,
        dsn_ret,
        dsn_envid,
        size: msize,
    };

    // Never allocate for more recipients than the file can hold.
    let room = (size.saturating_sub(pos) / MIN_RECIPIENT as u64) as usize;
    if nrcpt > room {
        return Err(CorruptError::new(pos, format!("{nrcpt} recipients cannot fit in the file")).into());
    }
    let mut recipients = Vec::with_capacity(nrcpt);
    let mut status_at = Vec::with_capacity(nrcpt);
    for _ in 0..nrcpt {
        let rcpt_at = pos + REC as u64;
        pos = record(src, pos, RCPT, MAX_RCPT, &mut payload)?;
        let mut c = Cur { b: &payload, pos: 0, base: rcpt_at };
        let address = c.string(MAX_ADDRESS, "recipient address")?;
        let orcpt = c.opt_string(MAX_ADDRESS, "ORCPT")?;
        let notify = match c.u8()? {
            0 => None,
            0x80 => Some(Notify::Never),
            n @ 1..=7 => Some(Notify::On { success: n & 1 != 0, failure: n & 2 != 0, delay: n & 4 != 0 }),
            n => return Err(c.err(format!("bad NOTIFY bits {n:#x}")).into()),
        };
        c.done()?;
        let slots = src.get(pos, 2 * STAT_RECORD)?;
        let a = parse_slot(&slots[..STAT_RECORD], pos)?;
        let b = parse_slot(&slots[STAT_RECORD..], pos + STAT_RECORD as u64)?;
        let (_, _, status) = newest(a, b, pos)?;
        recipients.push(Recipient { address, orcpt, notify, status });
        status_at.push(pos);
        pos += 2 * STAT_RECORD as u64;
    }

    pos = record(src, pos, CONT, CONT_PAYLOAD, &mut payload)?;
    let mut c = Cur { b: &payload, pos: 0, base: pos - CONT_PAYLOAD as u64 };
    if payload.len() != CONT_PAYLOAD {
        return Err(c.err("CONT record of the wrong size").into());
    }
    let len = u64::from_le_bytes(c.arr()?);
    let crc = u32::from_le_bytes(c.arr()?);
    if c.arr::<4>()? != [0; 4] {
        return Err(c.err("reserved CONT bytes are not zero").into());
    }
    if pos.checked_add(len) != Some(size) {
        return Err(
            CorruptError::new(pos, format!("content of {len} bytes does not end at the end of the file")).into()
        );
    }
    Ok(Parsed { id, envelope, recipients, status_at, content: ContentRange { offset: pos, len, crc } })
}

/// Read and validate a queue file's envelope and recipients, not its
/// content. Corruption is [`Error::Corrupt`]; a read error is
/// [`Error::Io`] (and no reason to move the file).
pub fn read_envelope(file: &File) -> Result<QueueEnvelope, Error> {
    read_envelope_sized(file, file.metadata()?.len())
}

/// [`read_envelope`] of a file whose size the caller has from its own
/// `fstat`.
pub fn read_envelope_sized(file: &File, size: u64) -> Result<QueueEnvelope, Error> {
    let mut src = Src::File { file, size, buf: Vec::new() };
    Ok(parse(&mut src)?.into())
}

/// A queue file of at most `max` bytes, read whole with one `pread`:
/// its envelope and recipients validated, its content's CRC checked, and
/// the file's bytes (the content is `bytes[content.offset..]`). `None`
/// when the file is larger: read it with [`read_envelope`] and
/// [`verify_content`] instead.
pub fn read_small(file: &File, max: usize) -> Result<Option<(QueueEnvelope, Vec<u8>)>, Error> {
    // The file's size is where pread stops short (a short read of a
    // regular file is its end: no second read to hear so): a file that
    // fits the first read needs no fstat; a larger one is sized before
    // reading on.
    let limit = max.saturating_add(1);
    let mut bytes = vec![0u8; limit.min(16 * 1024)];
    let mut got = 0;
    loop {
        if got == bytes.len() {
            if got == limit {
                break;
            }
            // Past the first read: a file over the limit is not read on.
            if file.metadata()?.len() > max as u64 {
                return Ok(None);
            }
            bytes.resize(limit.min(got.saturating_mul(4)), 0);
        }
        match file.read_at(&mut bytes[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if got < bytes.len() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    if got > max {
        return Ok(None);
    }
    bytes.truncate(got);
    let p = parse(&mut Src::Bytes(&bytes))?;
    let start = usize::try_from(p.content.offset).map_err(|_| CorruptError::new(0, "content offset"))?;
    let content = bytes.get(start..).ok_or_else(|| CorruptError::new(p.content.offset, "content past the end"))?;
    if crc32fast::hash(content) != p.content.crc {
        return Err(CorruptError::new(p.content.offset, "content CRC mismatch").into());
    }
    Ok(Some((p.into(), bytes)))
}

/// A queue file as a delivery agent takes it: envelope and recipients
/// validated and the content's CRC checked. A file of at most `max` bytes
/// is read whole with one `pread` ([`read_small`]) and its bytes returned
/// (the content is `bytes[content.offset..]`); a larger one is read in
/// parts ([`read_envelope`], [`verify_content`]) and `None` returned: its
/// content is read from the file.
pub fn read_checked(file: &File, max: usize) -> Result<(QueueEnvelope, Option<Vec<u8>>), Error> {
    if let Some((qe, bytes)) = read_small(file, max)? {
        return Ok((qe, Some(bytes)));
    }
    let qe = read_envelope(file)?;
    verify_content(file, qe.content_range())?;
    Ok((qe, None))
}

/// Check the content's CRC, reading it in chunks.
pub fn verify_content(file: &File, range: ContentRange) -> Result<(), Error> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut off = range.offset;
    let end = range.offset.saturating_add(range.len);
    while off < end {
        let n = (end - off).min(READ_CHUNK as u64) as usize;
        match file.read_exact_at(&mut buf[..n], off) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(CorruptError::new(off, "content shorter than its length").into());
            }
            Err(e) => return Err(e.into()),
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    if h.finalize() != range.crc {
        return Err(CorruptError::new(range.offset, "content CRC mismatch").into());
    }
    Ok(())
}

/// Read the content into `buf` (its old bytes replaced; its capacity
/// kept for the next call) with one `pread`, and check its CRC.
pub fn read_content(file: &File, range: ContentRange, buf: &mut Vec<u8>) -> Result<(), Error> {
    let len = usize::try_from(range.len).map_err(|_| no_memory("the content"))?;
    buf.clear();
    buf.try_reserve(len).map_err(|_| no_memory("the content"))?;
    buf.resize(len, 0);
    match file.read_exact_at(buf, range.offset) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(CorruptError::new(range.offset, "content shorter than its length").into());
        }
        Err(e) => return Err(e.into()),
    }
    if crc32fast::hash(buf) != range.crc {
        return Err(CorruptError::new(range.offset, "content CRC mismatch").into());
    }
    Ok(())
}

/// Read and validate a whole queue file, content included.
pub fn read_queue_file(file: &File) -> Result<QueueFile, Error> {
    Ok(QueueFile::decode(&read_whole(file)?)?)
}

/// No room in memory for `what`: an error of the process (`Error::Io`,
/// of kind `OutOfMemory`), not of the file, which may well be valid (a
/// reader that took it for corruption would move a good file to
/// corrupt/, or write it again over its statuses).
fn no_memory(what: &str) -> Error {
    Error::Io(std::io::Error::new(std::io::ErrorKind::OutOfMemory, format!("no memory for {what}")))
}

/// The whole file, read with `pread` (the file position is not used).
pub(crate) fn read_whole(file: &File) -> Result<Vec<u8>, Error> {
    read_sized(file, file.metadata()?.len())
}

/// [`read_whole`] of a file of `size` bytes.
pub(crate) fn read_sized(file: &File, size: u64) -> Result<Vec<u8>, Error> {
    let size = usize::try_from(size).map_err(|_| no_memory("the whole file"))?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(size).map_err(|_| no_memory("the whole file"))?;
    bytes.resize(size, 0);
    match file.read_exact_at(&mut bytes, 0) {
        Ok(()) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(CorruptError::new(0, "file shorter than its size").into())
        }
        Err(e) => Err(e.into()),
    }
}

/// A status record as written into its slot: what to write again, byte
/// for byte and in the same place, when the sync that was to follow it
/// failed (written anew, the status would go to the other slot, over the
/// last one known to be on disk).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotWrite {
    pub at: u64,
    pub record: Vec<u8>,
}

impl SlotWrite {
    /// Writes the record again (no sync).
    pub fn redo(&self, file: &File) -> std::io::Result<()> {
        file.write_all_at(&self.record, self.at)
    }
}

/// Write `status` into the older of the two slots at `at` (one `pread`,
/// one `pwrite`; no sync). Returns the status as stored (the reason may
/// have been cut) and the write made.
pub fn update_status_at(file: &File, at: u64, status: &Status) -> Result<(Status, SlotWrite), Error> {
    let mut slots = [0u8; 2 * STAT_RECORD];
    match file.read_exact_at(&mut slots, at) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(CorruptError::new(at, "status slots past the end of the file").into());
        }
        Err(e) => return Err(e.into()),
    }
    let a = parse_slot(&slots[..STAT_RECORD], at)?;
    let b = parse_slot(&slots[STAT_RECORD..], at + STAT_RECORD as u64)?;
    let (cur, seq, _) = newest(a, b, at)?;
    let seq = seq.checked_add(1).ok_or_else(|| Error::Invalid("status sequence number exhausted".into()))?;
    let mut out = Vec::with_capacity(STAT_RECORD);
    put_slot(&mut out, seq, Some(status));
    let target = if cur == 0 { at + STAT_RECORD as u64 } else { at };
    file.write_all_at(&out, target)?;
    let (action, reason) = from_slot_text(status.state, slot_text(status).into_owned());
    let stored = Status { action, reason, ..status.clone() };
    Ok((stored, SlotWrite { at: target, record: out }))
}

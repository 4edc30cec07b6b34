//! The maildrop reader: a stream validated record by record as it is read.
//!
//! Trusts: nothing it reads. A record's length is checked against its type's
//! bound before its payload is read or room is made for it, the recipients
//! and the content are counted against the limits as they come, every
//! field is checked, and the stream must end right after its `END ` record.

use std::io::{ErrorKind, Read};

use super::{
    ADDRESS, DATA, END, END_PAYLOAD, ENVID, Envelope, Error, FULL_NAME, HEADER, Limits, MAGIC, MAX_DATA,
    MAX_OPTS_PAYLOAD, MAX_RCPT_PAYLOAD, MAX_SNDR_PAYLOAD, OPTS, ORCPT, RCPT, REC, Recipient, Rule, SENDER, SNDR,
    VERSION, body_from, describe_tag, notify_from, ret_from,
};

/// A record header as read.
#[derive(Clone, Copy)]
struct Head {
    tag: [u8; 4],
    len: u32,
    /// Offset of the record in the stream.
    at: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading `DATA` records.
    Content,
    /// A valid `END ` was read, and nothing after it.
    Done,
    /// A call returned an error; the stream is not read any further.
    Failed,
}

/// Reads and validates one maildrop stream: [`Reader::new`] everything up to
/// the content, then [`Reader::next_chunk`] the content, one `DATA` record
/// at a time, until the `END ` record. Content is handed out before the
/// `END ` record (its length and CRC) has been checked: act on a message
/// only once `next_chunk` returned `Ok(None)`.
///
/// The reader makes one `read` call per record header and payload (more
/// when the source returns less); wrap a pipe or a file in a
/// `std::io::BufReader`.
pub struct Reader<R: Read> {
    r: R,
    limits: Limits,
    /// Bytes read so far: the offset of the next byte.
    pos: u64,
    /// CRC-32 of every byte read before the `END ` record.
    crc: crc32fast::Hasher,
    /// Content bytes read so far.
    content: u64,
    /// The header of the first record after the recipients, read by `new`.
    next: Option<Head>,
    state: State,
}

/// A cursor over one record's payload; `base` is the payload's offset in
/// the stream.
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
    base: u64,
    record: &'static str,
}

impl<'a> Cur<'a> {
    fn at(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.b.len() - self.pos < n {
            return Err(Error::invalid(self.at(), format!("the {} record is shorter than its fields", self.record)));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    /// A *str* obeying `rule`; errors name the offset of its length.
    fn string(&mut self, rule: &Rule) -> Result<String, Error> {
        let at = self.at();
        let l = self.take(2)?;
        let len = u16::from_le_bytes([l[0], l[1]]) as usize;
        if len > rule.max {
            return Err(Error::invalid(at, format!("{} of {len} bytes, over the limit of {}", rule.what, rule.max)));
        }
        let raw = self.take(len)?;
        let s = std::str::from_utf8(raw).map_err(|_| Error::invalid(at, format!("{} is not UTF-8", rule.what)))?;
        rule.check(s).map_err(|what| Error::invalid(at, what))?;
        Ok(s.to_string())
    }

    /// An *opt str*: a presence byte 0 or 1, then with 1 a *str*.
    fn opt_string(&mut self, rule: &Rule) -> Result<Option<String>, Error> {
        let at = self.at();
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.string(rule)?)),
            b => Err(Error::invalid(at, format!("presence flag {b} for {} (0 or 1 allowed)", rule.what))),
        }
    }

    fn done(&self) -> Result<(), Error> {
        if self.pos == self.b.len() {
            Ok(())
        } else {
            Err(Error::invalid(self.at(), format!("unexpected bytes at the end of the {} record", self.record)))
        }
    }
}

impl<R: Read> Reader<R> {
    /// Read and validate the stream up to its first `DATA` or `END `
    /// record: the header, `SNDR`, `OPTS` and every `RCPT`.
    pub fn new(r: R, limits: Limits) -> Result<(Reader<R>, Envelope), Error> {
        let mut rd =
            Reader { r, limits, pos: 0, crc: crc32fast::Hasher::new(), content: 0, next: None, state: State::Content };
        let (envelope, _) = rd.envelope(false)?;
        Ok((rd, envelope))
    }

    /// Like [`Reader::new`], but recipients past `limits.max_recipients`
    /// are read on (checked like the others, and counted) instead of
    /// ending the stream with [`Error::TooManyRecipients`]: the envelope
    /// holds the first `max_recipients`, and the count of the others is
    /// returned, so that a reader that refuses the message (pickup) can
    /// still tell its sender, and read its content for that.
    pub fn new_counting(r: R, limits: Limits) -> Result<(Reader<R>, Envelope, u64), Error> {
        let mut rd =
            Reader { r, limits, pos: 0, crc: crc32fast::Hasher::new(), content: 0, next: None, state: State::Content };
        let (envelope, beyond) = rd.envelope(true)?;
        Ok((rd, envelope, beyond))
    }

    /// The content bytes read so far; all of it once `next_chunk` returned
    /// `Ok(None)`.
    pub fn content_len(&self) -> u64 {
        self.content
    }

    /// The next piece of content (one `DATA` payload, 1 to [`super::MAX_DATA`]
    /// bytes), or `Ok(None)` once a valid `END ` record was read and nothing
    /// follows it (one more byte is read to make sure). After an error the
    /// stream is not read any further and every call fails.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        match self.state {
            State::Done => return Ok(None),
            State::Failed => {
                return Err(Error::invalid(self.pos, "the stream already failed; it is not read any further"));
            }
            State::Content => {}
        }
        let r = self.chunk();
        match &r {
            Err(_) => self.state = State::Failed,
            Ok(None) => self.state = State::Done,
            Ok(Some(_)) => {}
        }
        r
    }

    /// Fill `buf` from the stream; the end of the stream is `Truncated`.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) => return Err(Error::Truncated { offset: self.pos }),
                Ok(n) => {
                    // A reader that claims more than it was given is not trusted.
                    let n = n.min(buf.len() - got);
                    got += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The next record header. Every record but `END ` counts in the CRC.
    fn head(&mut self) -> Result<Head, Error> {
        let at = self.pos;
        let mut h = [0u8; REC];
        self.fill(&mut h)?;
        let tag = [h[0], h[1], h[2], h[3]];
        if tag != END {
            self.crc.update(&h);
        }
        Ok(Head { tag, len: u32::from_le_bytes([h[4], h[5], h[6], h[7]]), at })
    }

    /// The payload of `h`, at most `max` bytes: checked before anything is
    /// read or allocated.
    fn payload(&mut self, h: Head, max: usize) -> Result<Vec<u8>, Error> {
        let len = h.len as usize;
        if h.len as u64 > max as u64 {
            let name = String::from_utf8_lossy(&h.tag).into_owned();
            return Err(Error::invalid(h.at + 4, format!("{name} record of {} bytes, over the limit of {max}", h.len)));
        }
        let mut p = vec![0u8; len];
        self.fill(&mut p)?;
        if h.tag != END {
            self.crc.update(&p);
        }
        Ok(p)
    }

    /// The next record, which must carry `tag`.
    fn expect(&mut self, tag: [u8; 4], max: usize) -> Result<(Head, Vec<u8>), Error> {
        let h = self.head()?;
        if h.tag != tag {
            let want = describe_tag(&tag);
            return Err(Error::invalid(h.at, format!("expected {want}, found {}", describe_tag(&h.tag))));
        }
        let p = self.payload(h, max)?;
        Ok((h, p))
    }

    /// Everything up to the content; with `count`, recipients past the
    /// limit are checked and counted (the count returned), not kept.
    fn envelope(&mut self, count: bool) -> Result<(Envelope, u64), Error> {
        let mut h = [0u8; HEADER];
        self.fill(&mut h)?;
        self.crc.update(&h);
        if &h[0..4] != MAGIC {
            return Err(Error::invalid(0, "not a maildrop stream (bad magic number)"));
        }
        let version = u16::from_le_bytes([h[4], h[5]]);
        if version != VERSION {
            return Err(Error::invalid(4, format!("maildrop format version {version}, this program reads {VERSION}")));
        }
        if h[6..8] != [0, 0] {
            return Err(Error::invalid(6, "reserved header bytes are not zero"));
        }

        let (rec, p) = self.expect(SNDR, MAX_SNDR_PAYLOAD)?;
        let mut c = Cur { b: &p, pos: 0, base: rec.at + REC as u64, record: "SNDR" };
        let sender = c.string(&SENDER)?;
        c.done()?;

        let (rec, p) = self.expect(OPTS, MAX_OPTS_PAYLOAD)?;
        let mut c = Cur { b: &p, pos: 0, base: rec.at + REC as u64, record: "OPTS" };
        let at = c.at();
        let body = body_from(c.u8()?).ok_or_else(|| Error::invalid(at, "unknown body type (0 to 2 allowed)"))?;
        let at = c.at();
        let smtputf8 = match c.u8()? {
            0 => false,
            1 => true,
            b => return Err(Error::invalid(at, format!("SMTPUTF8 flag {b} (0 or 1 allowed)"))),
        };
        let at = c.at();
        let ret = ret_from(c.u8()?).ok_or_else(|| Error::invalid(at, "unknown RET value (0 to 2 allowed)"))?;
        let envid = c.opt_string(&ENVID)?;
        let full_name = c.opt_string(&FULL_NAME)?;
        c.done()?;

        let mut recipients = Vec::new();
        let mut beyond = 0u64;
        loop {
            let h = self.head()?;
            match h.tag {
                RCPT => {
                    let over = recipients.len() >= self.limits.max_recipients;
                    if over && !count {
                        return Err(Error::TooManyRecipients { limit: self.limits.max_recipients });
                    }
                    let p = self.payload(h, MAX_RCPT_PAYLOAD)?;
                    let mut c = Cur { b: &p, pos: 0, base: h.at + REC as u64, record: "RCPT" };
                    let address = c.string(&ADDRESS)?;
                    let orcpt = c.opt_string(&ORCPT)?;
                    let at = c.at();
                    let n = c.u8()?;
                    let notify = notify_from(n).ok_or_else(|| {
                        Error::invalid(at, format!("bad NOTIFY bits {n:#04x} (0, 0x80, or a combination of 1, 2, 4)"))
                    })?;
                    c.done()?;
                    if over {
                        beyond += 1;
                    } else {
                        recipients.push(Recipient { address, orcpt, notify });
                    }
                }
                DATA | END if recipients.is_empty() => {
                    return Err(Error::invalid(h.at, format!("no recipient before {}", describe_tag(&h.tag))));
                }
                DATA | END => {
                    self.next = Some(h);
                    break;
                }
                _ => {
                    let found = describe_tag(&h.tag);
                    let want = if recipients.is_empty() { "a RCPT record" } else { "a RCPT, DATA or END record" };
                    return Err(Error::invalid(h.at, format!("expected {want}, found {found}")));
                }
            }
        }
        Ok((Envelope { sender, body, smtputf8, ret, envid, full_name, recipients }, beyond))
    }

    fn chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let h = match self.next.take() {
            Some(h) => h,
            None => self.head()?,
        };
        match h.tag {
            DATA => {
                if h.len == 0 || h.len as u64 > MAX_DATA as u64 {
                    let what = format!("DATA record of {} bytes (1 to {MAX_DATA} allowed)", h.len);
                    return Err(Error::invalid(h.at + 4, what));
                }
                match self.content.checked_add(u64::from(h.len)) {
                    Some(n) if n <= self.limits.max_content => {}
                    _ => return Err(Error::TooBig { limit: self.limits.max_content }),
                }
                let p = self.payload(h, MAX_DATA)?;
                self.content += p.len() as u64;
                Ok(Some(p))
            }
            END => {
                if h.len != END_PAYLOAD as u32 {
                    return Err(Error::invalid(h.at + 4, format!("END record of {} bytes, not {END_PAYLOAD}", h.len)));
                }
                let crc = self.crc.clone().finalize();
                let p = self.payload(h, END_PAYLOAD)?;
                let base = h.at + REC as u64;
                let total = u64::from_le_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]]);
                if total != self.content {
                    let what =
                        format!("END gives a content length of {total} bytes, the DATA records hold {}", self.content);
                    return Err(Error::invalid(base, what));
                }
                if u32::from_le_bytes([p[8], p[9], p[10], p[11]]) != crc {
                    return Err(Error::invalid(base + 8, "CRC mismatch: the stream was damaged"));
                }
                if p[12..16] != [0; 4] {
                    return Err(Error::invalid(base + 12, "reserved END bytes are not zero"));
                }
                let mut one = [0u8; 1];
                loop {
                    match self.r.read(&mut one) {
                        Ok(0) => return Ok(None),
                        Ok(_) => return Err(Error::invalid(self.pos, "bytes after the END record")),
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            _ => {
                let what = format!("expected a DATA or END record, found {}", describe_tag(&h.tag));
                Err(Error::invalid(h.at, what))
            }
        }
    }
}

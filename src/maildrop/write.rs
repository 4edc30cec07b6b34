//! The maildrop writer: an envelope, then content in pieces of any size,
//! turned into a stream of records.
//!
//! Trusts: nothing it is given; the envelope is checked by the same rules
//! the reader applies, before a byte is written.

use std::io::{self, Write};

use super::{
    ADDRESS, DATA, END, ENVID, Envelope, Error, FULL_NAME, HEADER, MAGIC, MAX_DATA, OPTS, ORCPT, RCPT, REC, Rule,
    SENDER, SNDR, VERSION, body_code, notify_code, ret_code,
};

/// Writes one maildrop stream. [`Writer::new`] writes everything up to the
/// content, [`Writer::write`] the content (in `DATA` records of exactly
/// [`MAX_DATA`] bytes as they fill), and [`Writer::finish`] the last
/// `DATA` record and `END `. A writer dropped without `finish` leaves a
/// stream without `END `, which every reader takes as truncated.
///
/// After a write to the inner writer failed, the stream is incomplete and
/// every further call fails.
pub struct Writer<W: Write> {
    w: W,
    /// CRC-32 of every byte written so far.
    crc: crc32fast::Hasher,
    /// Content bytes written in `DATA` records so far.
    content: u64,
    /// The `DATA` record being filled: a record header's room, then up to
    /// `MAX_DATA` bytes of content.
    buf: Vec<u8>,
    failed: bool,
}

/// Append `s` as a *str* (u16 length, bytes) after checking it by `rule`.
fn put_str(out: &mut Vec<u8>, s: &str, rule: &Rule) -> Result<(), Error> {
    rule.check(s).map_err(|what| Error::invalid(out.len() as u64, what))?;
    // The rules' bounds are all far below u16::MAX.
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Append `s` as an *opt str* (presence byte, then a *str*).
fn put_opt(out: &mut Vec<u8>, s: Option<&str>, rule: &Rule) -> Result<(), Error> {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s, rule)?;
        }
    }
    Ok(())
}

/// Start a record: its tag and room for its length. Returns where it starts.
fn begin(out: &mut Vec<u8>, tag: [u8; 4]) -> usize {
    let at = out.len();
    out.extend_from_slice(&tag);
    out.extend_from_slice(&[0; 4]);
    at
}

/// Fill in the length of the record started at `at`.
fn end(out: &mut [u8], at: usize) {
    let len = (out.len() - at - REC) as u32;
    out[at + 4..at + REC].copy_from_slice(&len.to_le_bytes());
}

/// The header and the `SNDR`, `OPTS` and `RCPT` records of `e`, checked.
fn encode_envelope(e: &Envelope) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(HEADER + 64 + e.recipients.len().saturating_mul(64));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);

    let at = begin(&mut out, SNDR);
    put_str(&mut out, &e.sender, &SENDER)?;
    end(&mut out, at);

    let at = begin(&mut out, OPTS);
    out.push(body_code(e.body));
    out.push(u8::from(e.smtputf8));
    out.push(ret_code(e.ret));
    put_opt(&mut out, e.envid.as_deref(), &ENVID)?;
    put_opt(&mut out, e.full_name.as_deref(), &FULL_NAME)?;
    end(&mut out, at);

    if e.recipients.is_empty() {
        return Err(Error::invalid(out.len() as u64, "no recipient"));
    }
    for r in &e.recipients {
        let at = begin(&mut out, RCPT);
        put_str(&mut out, &r.address, &ADDRESS)?;
        put_opt(&mut out, r.orcpt.as_deref(), &ORCPT)?;
        let code = notify_code(r.notify).map_err(|what| Error::invalid(out.len() as u64, what))?;
        out.push(code);
        end(&mut out, at);
    }
    Ok(out)
}

fn failed_before() -> Error {
    Error::Io(io::Error::other("an earlier write failed; the maildrop stream is incomplete"))
}

impl<W: Write> Writer<W> {
    /// Check `envelope` and write the stream's header and its `SNDR`,
    /// `OPTS` and `RCPT` records (one `write_all`). An envelope that breaks
    /// a rule is [`Error::Invalid`], with the offset the field would have
    /// had in the stream, and nothing is written.
    pub fn new(w: W, envelope: &Envelope) -> Result<Writer<W>, Error> {
        let head = encode_envelope(envelope)?;
        let mut writer = Writer {
            w,
            crc: crc32fast::Hasher::new(),
            content: 0,
            buf: Vec::with_capacity(REC + MAX_DATA),
            failed: false,
        };
        writer.put(&head)?;
        writer.buf.extend_from_slice(&[0; REC]);
        Ok(writer)
    }

    /// Write `bytes` to the stream and the CRC.
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if let Err(e) = self.w.write_all(bytes) {
            self.failed = true;
            return Err(e.into());
        }
        self.crc.update(bytes);
        Ok(())
    }

    /// Write the buffered `DATA` record, which holds some content.
    fn emit(&mut self) -> Result<(), Error> {
        let len = self.buf.len() - REC;
        self.buf[0..4].copy_from_slice(&DATA);
        self.buf[4..REC].copy_from_slice(&(len as u32).to_le_bytes());
        let buf = std::mem::take(&mut self.buf);
        let r = self.put(&buf);
        self.buf = buf;
        r?;
        self.content += len as u64;
        self.buf.truncate(REC);
        Ok(())
    }

    /// Add `content` (headers and body, as submitted) to the message. It is
    /// buffered, and every full `DATA` record is written at once.
    pub fn write(&mut self, content: &[u8]) -> Result<(), Error> {
        if self.failed {
            return Err(failed_before());
        }
        let mut rest = content;
        while !rest.is_empty() {
            let n = (REC + MAX_DATA - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.buf.len() == REC + MAX_DATA {
                self.emit()?;
            }
        }
        Ok(())
    }

    /// Write the last `DATA` record and the `END ` record, flush, and
    /// return the inner writer; making it durable (`fsync`) is the
    /// caller's business.
    pub fn finish(mut self) -> Result<W, Error> {
        if self.failed {
            return Err(failed_before());
        }
        if self.buf.len() > REC {
            self.emit()?;
        }
        let mut rec = [0u8; REC + super::END_PAYLOAD];
        rec[0..4].copy_from_slice(&END);
        rec[4..8].copy_from_slice(&(super::END_PAYLOAD as u32).to_le_bytes());
        rec[8..16].copy_from_slice(&self.content.to_le_bytes());
        rec[16..20].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        self.w.write_all(&rec)?;
        self.w.flush()?;
        Ok(self.w)
    }
}

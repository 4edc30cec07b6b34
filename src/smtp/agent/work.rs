//! A delivery in hand: the request qmgr sent, checked against the queue
//! file that came with it, and what the session needs of it (the client
//! job, the content range, the recipients' addresses for the log).
//!
//! qmgr decides which recipients and where; the file decides everything
//! else (sender, addresses, DSN parameters, content). A request that
//! breaks the channel's rules (no file, no recipient, a repeated
//! recipient) is a protocol violation; a file that does not match it or
//! is damaged defers the delivery, and qmgr deals with the file.
//!
//! Trusts: qmgr for the choice of recipients and next hop; the file is
//! validated by the queue module and its content CRC checked before a
//! byte is sent.

use std::borrow::Cow;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::Instant;

use crate::cleanup::message::HeaderScan;
use crate::ipc::msg::{Delivery, Protocol, Stamp, Target};
use crate::queue::Time;
use crate::queue::file::{self, ContentRange};
use crate::smtp::client::{self, JobRecipient};

use super::report::{Delays, Relay, Verdict};

/// Where a job goes and how: a session serves only jobs with the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Dest {
    pub protocol: Protocol,
    pub target: Target,
}

impl Dest {
    /// SMTP to a destination routed by MX: the kind of job that may try
    /// the next MX after a failed session.
    pub fn by_mx(&self) -> bool {
        self.protocol == Protocol::Smtp && matches!(&self.target, Target::Inet(n) if n.mx)
    }
}

/// A delivery being worked on.
#[derive(Debug)]
pub struct Work {
    pub job: u64,
    pub queue_id: String,
    pub dest: Dest,
    /// The queue-file index of each recipient of the job, in job order.
    pub indexes: Vec<u32>,
    pub addresses: Vec<String>,
    pub delays: Delays,
    /// When the agent started looking for a session for it.
    pub since: Instant,
    /// When it was started on a ready session.
    pub started: Option<Instant>,
    /// Given to the session when it starts.
    pub client_job: Option<client::Job>,
    /// Where the content is read from: the queue file, or the whole file
    /// read at once when it is small.
    source: Source,
    content: ContentRange,
    /// Content bytes handed to the session so far.
    sent: u64,
    /// The client job as built, to start again on another session.
    spare: Option<client::Job>,
    /// Sessions the job has had (`smtp.mx_session_limit`).
    pub sessions: u32,
    /// The addresses of those sessions, for the connector to pass over.
    pub tried: Vec<IpAddr>,
    /// The first session's failure, reported if no other server does
    /// better.
    pub first_failure: Option<(Relay, Vec<Verdict>)>,
    /// What its next session must be; `dispatch` takes it.
    pub next: Next,
    /// It was started again without TLS after a failed handshake (once).
    pub plaintext_retried: bool,
    /// It was started again on a new connection after a cached one
    /// failed before its transaction (once).
    pub fresh_retried: bool,
}

/// The session a job asks for when it starts again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Next {
    /// An idle session to its destination, or a new connection.
    #[default]
    Any,
    /// A new connection, not an idle one: a cached one has just failed.
    Fresh,
    /// A new connection to this server (`host` as it was named), without
    /// TLS: opportunistic TLS failed in the handshake.
    Plaintext { host: String, addr: SocketAddr },
}

/// A queue file no larger than this is read whole when its job opens
/// (one `pread`), and its content sent from memory.
const HOLD_MAX: usize = 64 * 1024;

/// Where a job's content comes from.
#[derive(Debug)]
enum Source {
    None,
    File(File),
    Held(Vec<u8>),
}

/// What became of a request.
#[derive(Debug)]
pub enum Opened {
    Ready(Box<Work>),
    /// It cannot be worked on, for this reason (every recipient defers).
    Refused(Box<Work>, String),
    /// Its queue file failed validation, for this reason: qmgr is told,
    /// and moves it to corrupt/.
    Corrupt(Box<Work>, String),
}

fn time(s: Stamp) -> Time {
    Time { secs: s.0, micros: s.1.min(999_999) }
}

/// Check a request and its file; `Err` is a protocol violation. The job
/// keeps a copy of its client job, to start again on another session
/// (the next MX, plaintext after a failed opportunistic TLS handshake, a
/// new connection after a cached one failed).
pub fn open(d: Delivery, mut fds: Vec<OwnedFd>) -> Result<Opened, String> {
    if fds.len() != 1 {
        return Err(format!("delivery request with {} descriptors", fds.len()));
    }
    if d.recipients.is_empty() {
        return Err(String::from("delivery request without recipients"));
    }
    let mut seen = d.recipients.clone();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != d.recipients.len() {
        return Err(String::from("delivery request names a recipient twice"));
    }
    let fd = fds.remove(0);
    if let Err(e) = sandbox::limit_received(&sandbox::Grant::File { fd: fd.as_raw_fd(), write: false }) {
        return Err(format!("limiting a queue file descriptor: {e}"));
    }
    let active_at = time(d.active_at);
    let mut work = Box::new(Work {
        job: d.job,
        queue_id: d.queue_id,
        dest: Dest { protocol: d.protocol, target: d.nexthop },
        addresses: d.recipients.iter().map(|i| format!("#{i}")).collect(),
        indexes: d.recipients,
        delays: Delays { arrival: active_at, active_at, received: Time::now(), ..Delays::default() },
        since: Instant::now(),
        started: None,
        client_job: None,
        source: Source::None,
        content: ContentRange { offset: 0, len: 0, crc: 0 },
        sent: 0,
        spare: None,
        sessions: 0,
        tried: Vec::new(),
        first_failure: None,
        next: Next::Any,
        plaintext_retried: false,
        fresh_retried: false,
    });
    let file = File::from(fd);
    let (qe, source) = match file::read_checked(&file, HOLD_MAX) {
        Ok((qe, Some(bytes))) => (qe, Source::Held(bytes)),
        Ok((qe, None)) => (qe, Source::File(file)),
        Err(crate::queue::Error::Corrupt(c)) => return Ok(Opened::Corrupt(work, c.to_string())),
        Err(e) => return Ok(Opened::Refused(work, format!("cannot read the queue file: {e}"))),
    };
    work.delays.arrival = qe.envelope.arrival;
    if qe.id.as_str() != work.queue_id {
        let reason = format!("the queue file holds message {}, not {}", qe.id, work.queue_id);
        return Ok(Opened::Corrupt(work, reason));
    }
    let mut recipients = Vec::with_capacity(work.indexes.len());
    for (n, &i) in work.indexes.iter().enumerate() {
        match qe.recipients.get(i as usize) {
            Some(r) => {
                work.addresses[n] = r.address.clone();
                recipients.push(JobRecipient::from(r));
            }
            None => {
                let reason = format!("the queue file has no recipient #{i}");
                return Ok(Opened::Refused(work, reason));
            }
        }
    }
    let range = qe.content_range();
    let mut job = client::Job::new(&qe.envelope, recipients);
    if job.smtputf8 {
        match headers_utf8(&source, &range) {
            Ok(found) => job.utf8_headers = found,
            Err(e) => return Ok(Opened::Refused(work, format!("cannot read the queue file: {e}"))),
        }
    }
    work.spare = Some(job.clone());
    work.client_job = Some(job);
    work.content = range;
    work.source = source;
    Ok(Opened::Ready(work))
}

/// Whether the message's header block has a byte that is not ASCII
/// (as cleanup delimits the block): read from the file held whole, or 16
/// KiB at a time up to the block's end (cleanup has bounded it by
/// `limits.header_size`).
fn headers_utf8(source: &Source, range: &ContentRange) -> std::io::Result<bool> {
    let mut scan = HeaderScan::new();
    match source {
        Source::Held(bytes) => {
            let content = usize::try_from(range.offset)
                .ok()
                .zip(usize::try_from(range.len).ok())
                .and_then(|(at, n)| bytes.get(at..at.checked_add(n)?))
                .ok_or_else(|| std::io::Error::other("content past the end of the queue file"))?;
            scan.feed(content);
        }
        Source::File(file) => {
            let mut buf = vec![0u8; 16 * 1024];
            let mut at = 0;
            while at < range.len && !scan.done && !scan.non_ascii {
                let n = usize::try_from(range.len - at).map_or(buf.len(), |l| l.min(buf.len()));
                file.read_exact_at(&mut buf[..n], range.offset + at)?;
                scan.feed(&buf[..n]);
                at += n as u64;
            }
        }
        Source::None => return Err(std::io::Error::other("no queue file")),
    }
    Ok(scan.non_ascii)
}

/// The next piece of content.
pub enum Chunk<'a> {
    /// Content (borrowed from a file held whole), and whether it is the
    /// last of it.
    Data(Cow<'a, [u8]>, bool),
    End,
}

impl Work {
    /// Make the job ready to start again on another session, as new
    /// (after a failure before any content was sent).
    pub fn rearm(&mut self) -> bool {
        let Some(job) = self.spare.clone() else { return false };
        self.client_job = Some(job);
        self.started = None;
        self.sent = 0;
        true
    }

    /// Whether a session with `relay` is one the job already had.
    pub fn tried(&self, relay: &Relay) -> bool {
        relay.addr.is_some_and(|a| self.tried.contains(&a.ip()))
    }

    /// The next chunk of at most `max` bytes of content (from memory, or
    /// read with pread), and whether it is the last.
    pub fn next_chunk(&mut self, max: usize) -> std::io::Result<Chunk<'_>> {
        let left = self.content.len.saturating_sub(self.sent);
        if left == 0 {
            return Ok(Chunk::End);
        }
        let n = usize::try_from(left).map_or(max, |l| l.min(max));
        let at = self.content.offset + self.sent;
        let buf = match &self.source {
            Source::Held(bytes) => Cow::Borrowed(
                usize::try_from(at)
                    .ok()
                    .and_then(|at| bytes.get(at..at + n))
                    .ok_or_else(|| std::io::Error::other("content past the end of the queue file"))?,
            ),
            Source::File(file) => {
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, at)?;
                Cow::Owned(buf)
            }
            Source::None => return Err(std::io::Error::other("no queue file")),
        };
        self.sent += n as u64;
        Ok(Chunk::Data(buf, self.sent == self.content.len))
    }
}

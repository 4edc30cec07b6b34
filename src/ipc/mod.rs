//! Channels between processes: AF_UNIX SOCK_SEQPACKET pairs that master
//! creates, carrying typed messages (one enum per channel direction, see
//! `msg`) and descriptors (SCM_RIGHTS, received with MSG_CMSG_CLOEXEC).
//!
//! Framing: every datagram is one frame of at most [`MAX_FRAME`] bytes, an
//! 8-byte header then payload. A message whose encoding does not fit one
//! frame travels in chunks tagged with a transaction number; descriptors
//! ride on the last chunk. A truncated datagram or control message, a bad
//! header, a chunk out of sequence, a message over the channel's size
//! limit or one that does not decode is an error: the receiver ends (a
//! child) or kills the sender (master).
//!
//! Coalescing: a corked channel ([`Channel::cork`]) holds what it is given
//! until [`Channel::flush`] (an event loop calls it once per turn), and
//! then packs whole messages without descriptors, in order, into as few
//! datagrams as fit (frame kind MULTI: each message a 2-byte length and
//! its bytes). A busy process then wakes its peer once per turn rather
//! than once per message.
//!
//! Trusts: nothing it receives.

pub mod msg;

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest datagram on a channel, header included.
pub const MAX_FRAME: usize = 8192;
const HEADER: usize = 8;
/// Largest payload of one frame.
pub const MAX_PAYLOAD: usize = MAX_FRAME - HEADER;
/// Most descriptors in one message.
pub const MAX_FDS: usize = 8;
/// Default bound on a reassembled message.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;
/// Frames waiting to be sent before the channel is declared stuck.
const MAX_QUEUED: usize = 4096;
/// Frames a corked channel holds before it sends anyway.
const CORK_LIMIT: usize = 64;
/// Bytes a MULTI frame spends on each message's length.
const MULTI_LEN: usize = 2;

const VERSION: u8 = 1;
const WHOLE: u8 = 0;
const CHUNK: u8 = 1;
const LAST: u8 = 2;
const MULTI: u8 = 3;

/// What went wrong on a channel.
#[derive(Debug)]
pub enum Error {
    /// The peer closed the channel.
    Closed,
    /// A datagram or its control message was truncated.
    Truncated,
    /// Bad header, chunk sequence or encoding.
    Malformed(String),
    /// A message over the channel's limit.
    TooLarge(usize),
    /// The peer does not read: too much is queued for it.
    Stuck,
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => write!(f, "channel closed by peer"),
            Error::Truncated => write!(f, "truncated datagram or control message"),
            Error::Malformed(m) => write!(f, "malformed message: {m}"),
            Error::TooLarge(n) => write!(f, "message of {n} bytes over the channel limit"),
            Error::Stuck => write!(f, "peer is not reading"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Errno> for Error {
    fn from(e: Errno) -> Error {
        Error::Io(io::Error::from(e))
    }
}

/// A received frame and the descriptors that came with it.
type Frame = (Vec<u8>, Vec<OwnedFd>);

struct Outgoing {
    frame: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// One end of a channel.
pub struct Channel {
    fd: OwnedFd,
    max_message: usize,
    next_tag: u32,
    out: VecDeque<Outgoing>,
    /// Chunks being reassembled: (tag, bytes so far).
    partial: Option<(u32, Vec<u8>)>,
    /// Hold what is sent until `flush` (see the module's Coalescing).
    corked: bool,
    /// Messages unpacked from a MULTI frame, not yet returned.
    unpacked: VecDeque<Vec<u8>>,
    /// The receive buffer, kept: a fresh 8 KiB per datagram cost more
    /// than the datagram.
    rbuf: Vec<u8>,
}

/// A connected pair, both ends non-blocking and close-on-exec.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, flags).map_err(io::Error::from)
}

impl Channel {
    /// Wrap a non-blocking SOCK_SEQPACKET socket.
    pub fn new(fd: OwnedFd) -> Channel {
        Channel {
            fd,
            max_message: DEFAULT_MAX_MESSAGE,
            next_tag: 1,
            out: VecDeque::new(),
            partial: None,
            corked: false,
            unpacked: VecDeque::new(),
            rbuf: Vec::new(),
        }
    }

    /// From now on, hold what is sent until [`Channel::flush`] (or until
    /// a few dozen frames wait), and coalesce it then. The owner's event
    /// loop must flush at the end of every turn.
    pub fn cork(&mut self) {
        self.corked = true;
    }

    pub fn with_max_message(mut self, max: usize) -> Channel {
        self.max_message = max;
        self
    }

    /// Whether frames wait to be sent (register for writability).
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// How many frames wait to be sent (for backpressure).
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Forget every frame not yet sent: after a send that failed for
    /// good, so that no later flush delivers it after all.
    pub fn discard_unsent(&mut self) {
        self.out.clear();
    }

    /// Whether sending `frames` more frames would send at once (not
    /// corked, or the cork's limit reached), not at the next flush.
    pub fn sends_at_once(&self, frames: usize) -> bool {
        !self.corked || self.out.len() + frames >= CORK_LIMIT
    }

    /// Encode and send `msg` with `fds` (duplicated; the caller keeps its
    /// copies). What cannot be sent now is queued for [`Channel::flush`].
    pub fn send<T: Serialize>(&mut self, msg: &T, fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
        if fds.len() > MAX_FDS {
            return Err(Error::Malformed(format!("{} descriptors in one message", fds.len())));
        }
        let mut owned = Vec::with_capacity(fds.len());
        for fd in fds {
            owned.push(fd.try_clone_to_owned().map_err(Error::Io)?);
        }
        self.send_owned(msg, owned)
    }

    /// [`Channel::send`], giving the descriptors away (no duplicates
    /// made): they are closed once sent, or with the channel.
    pub fn send_owned<T: Serialize>(&mut self, msg: &T, mut owned: Vec<OwnedFd>) -> Result<(), Error> {
        if owned.len() > MAX_FDS {
            return Err(Error::Malformed(format!("{} descriptors in one message", owned.len())));
        }
        let body = postcard::to_allocvec(msg).map_err(|e| Error::Malformed(e.to_string()))?;
        if body.len() > self.max_message {
            return Err(Error::TooLarge(body.len()));
        }
        let frames = split(&body, self.next_tag);
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        if self.out.len() + frames.len() > MAX_QUEUED {
            return Err(Error::Stuck);
        }
        let last = frames.len() - 1;
        for (i, frame) in frames.into_iter().enumerate() {
            let fds = if i == last { std::mem::take(&mut owned) } else { Vec::new() };
            self.out.push_back(Outgoing { frame, fds });
        }
        if self.corked && self.out.len() < CORK_LIMIT {
            return Ok(());
        }
        self.flush().map(|_| ())
    }

    /// Send queued frames, runs of small whole messages coalesced into
    /// one datagram; returns true when nothing is left queued.
    pub fn flush(&mut self) -> Result<bool, Error> {
        while let Some(o) = self.out.front() {
            let run = self.coalescible();
            let packed;
            let (frame, raw): (&[u8], Vec<RawFd>) = if run > 1 {
                packed = self.pack(run);
                (&packed, Vec::new())
            } else {
                (&o.frame, o.fds.iter().map(|f| f.as_raw_fd()).collect())
            };
            let cmsg = [ControlMessage::ScmRights(&raw)];
            let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
            let iov = [IoSlice::new(frame)];
            match sendmsg::<()>(self.fd.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
                Ok(_) => {
                    self.out.drain(..run.max(1));
                }
                Err(Errno::EAGAIN) => return Ok(false),
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE) | Err(Errno::ECONNRESET) => return Err(Error::Closed),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// [`Channel::flush`], waiting up to `timeout` for the peer to make
    /// room while frames are left: for a process about to exit, whose
    /// last records would otherwise die with it. True when all went.
    pub fn flush_within(&mut self, timeout: std::time::Duration) -> Result<bool, Error> {
        let deadline = std::time::Instant::now() + timeout;
        let mut said_ready = false;
        loop {
            if self.flush()? {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            if said_ready {
                // Room by poll's measure (the BSDs' low-water mark) but
                // not for a whole datagram: wait a little, not a spin.
                std::thread::sleep(left.min(std::time::Duration::from_millis(10)));
                said_ready = false;
                continue;
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut pfd = [nix::poll::PollFd::new(self.fd.as_fd(), nix::poll::PollFlags::POLLOUT)];
            match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms)) {
                Ok(n) => said_ready = n > 0,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// How many frames from the front of the queue go in one MULTI frame:
    /// whole messages without descriptors, as many as fit.
    fn coalescible(&self) -> usize {
        let mut size = HEADER;
        let mut n = 0;
        for o in &self.out {
            if !o.fds.is_empty() || o.frame[1] != WHOLE {
                break;
            }
            size += MULTI_LEN + o.frame.len() - HEADER;
            if size > MAX_FRAME {
                break;
            }
            n += 1;
        }
        n
    }

    /// The first `n` queued frames as one MULTI frame.
    fn pack(&self, n: usize) -> Vec<u8> {
        let mut f = header(MULTI, 0).to_vec();
        for o in self.out.iter().take(n) {
            let payload = &o.frame[HEADER..];
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            f.extend_from_slice(payload);
        }
        f
    }

    /// Receive the next whole message, or None if none is ready yet.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<(T, Vec<OwnedFd>)>, Error> {
        loop {
            if let Some(body) = self.unpacked.pop_front() {
                let msg = postcard::from_bytes(&body).map_err(|e| Error::Malformed(e.to_string()))?;
                return Ok(Some((msg, Vec::new())));
            }
            let Some((frame, fds)) = self.recv_frame()? else { return Ok(None) };
            if let Some(body) = self.reassemble(&frame, fds.is_empty())? {
                let msg = postcard::from_bytes(&body).map_err(|e| Error::Malformed(e.to_string()))?;
                return Ok(Some((msg, fds)));
            }
        }
    }

    /// Block until a whole message arrives (used before a child's event
    /// loop exists). Gives up after `timeout`.
    pub fn recv_blocking<T: DeserializeOwned>(
        &mut self,
        timeout: std::time::Duration,
    ) -> Result<(T, Vec<OwnedFd>), Error> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self.recv()? {
                return Ok(m);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Io(io::Error::from(io::ErrorKind::TimedOut)));
            }
            let ms = u16::try_from(left.as_millis().min(10_000)).unwrap_or(10_000);
            let mut pfd = [nix::poll::PollFd::new(self.fd.as_fd(), nix::poll::PollFlags::POLLIN)];
            match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn recv_frame(&mut self) -> Result<Option<Frame>, Error> {
        if self.rbuf.len() != MAX_FRAME + 1 {
            self.rbuf = vec![0u8; MAX_FRAME + 1];
        }
        let d = match sandbox::fds::recv_datagram(self.fd.as_fd(), &mut self.rbuf) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Err(Error::Closed),
            Err(e) => return Err(Error::Io(e)),
        };
        if d.truncated || d.len > MAX_FRAME {
            return Err(Error::Truncated);
        }
        if d.foreign_control {
            return Err(Error::Malformed(String::from("unexpected control message")));
        }
        if d.len == 0 {
            return Err(Error::Closed);
        }
        Ok(Some((self.rbuf[..d.len].to_vec(), d.fds)))
    }

    fn reassemble(&mut self, frame: &[u8], no_fds: bool) -> Result<Option<Vec<u8>>, Error> {
        let (kind, tag, payload) = parse_header(frame)?;
        match kind {
            WHOLE => {
                if self.partial.is_some() {
                    return Err(Error::Malformed(String::from("whole message inside a chunked one")));
                }
                Ok(Some(payload.to_vec()))
            }
            CHUNK | LAST => {
                if kind == CHUNK && !no_fds {
                    return Err(Error::Malformed(String::from("descriptors on a middle chunk")));
                }
                let (t, mut acc) = self.partial.take().unwrap_or((tag, Vec::new()));
                if t != tag {
                    return Err(Error::Malformed(format!("chunk of transaction {tag} inside {t}")));
                }
                if acc.len() + payload.len() > self.max_message {
                    return Err(Error::TooLarge(acc.len() + payload.len()));
                }
                acc.extend_from_slice(payload);
                if kind == LAST {
                    Ok(Some(acc))
                } else {
                    self.partial = Some((tag, acc));
                    Ok(None)
                }
            }
            MULTI => {
                if self.partial.is_some() {
                    return Err(Error::Malformed(String::from("coalesced messages inside a chunked one")));
                }
                if !no_fds {
                    return Err(Error::Malformed(String::from("descriptors on coalesced messages")));
                }
                self.unpacked = unpack(payload)?;
                Ok(None)
            }
            k => Err(Error::Malformed(format!("frame kind {k}"))),
        }
    }
}

/// The messages of a MULTI frame's payload: each a 2-byte length and that
/// many bytes, at least one, exactly filling it.
fn unpack(mut payload: &[u8]) -> Result<VecDeque<Vec<u8>>, Error> {
    let mut out = VecDeque::new();
    while !payload.is_empty() {
        let Some((len, rest)) = payload.split_first_chunk::<MULTI_LEN>() else {
            return Err(Error::Malformed(String::from("coalesced message length cut short")));
        };
        let len = usize::from(u16::from_be_bytes(*len));
        if len > rest.len() {
            return Err(Error::Malformed(format!("coalesced message of {len} bytes, {} left", rest.len())));
        }
        out.push_back(rest[..len].to_vec());
        payload = &rest[len..];
    }
    if out.is_empty() {
        return Err(Error::Malformed(String::from("empty coalesced frame")));
    }
    Ok(out)
}

fn header(kind: u8, tag: u32) -> [u8; HEADER] {
    let t = tag.to_be_bytes();
    [VERSION, kind, 0, 0, t[0], t[1], t[2], t[3]]
}

fn parse_header(frame: &[u8]) -> Result<(u8, u32, &[u8]), Error> {
    if frame.len() < HEADER {
        return Err(Error::Malformed(format!("frame of {} bytes", frame.len())));
    }
    if frame[0] != VERSION || frame[2] != 0 || frame[3] != 0 {
        return Err(Error::Malformed(String::from("bad frame header")));
    }
    let tag = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    Ok((frame[1], tag, &frame[HEADER..]))
}

/// Cut an encoded message into frames.
fn split(body: &[u8], tag: u32) -> Vec<Vec<u8>> {
    if body.len() <= MAX_PAYLOAD {
        let mut f = header(WHOLE, 0).to_vec();
        f.extend_from_slice(body);
        return vec![f];
    }
    let n = body.len().div_ceil(MAX_PAYLOAD);
    body.chunks(MAX_PAYLOAD)
        .enumerate()
        .map(|(i, c)| {
            let mut f = header(if i + 1 == n { LAST } else { CHUNK }, tag).to_vec();
            f.extend_from_slice(c);
            f
        })
        .collect()
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests;

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

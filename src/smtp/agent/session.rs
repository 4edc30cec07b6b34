//! One connection to a server: the socket the connector made, TLS when
//! there is some, the client state machine, the output buffer and the
//! timer. [`Session::pump`] moves bytes until nothing more can move
//! without waiting and tells the agent what happened ([`Event`]).
//!
//! Flow control: content is read from the queue file (or the copy of a
//! small file read whole) one chunk at a time, and only when everything
//! before it has been written, so a session holds at most one chunk (as
//! encoded) plus a reply's worth of input. The last chunk and the end of
//! data go out in one write. Output is written through TLS once the
//! handshake is done; the plaintext before STARTTLS is written out first.
//!
//! Trusts: nothing from the server; the socket from the connector.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection};
use rustls_pki_types::ServerName;

use crate::smtp::client::{
    self, Action, CONTENT_CHUNK, Client, Disposition, JobResult, RecipientResult, Stage, Timeouts,
};
use crate::smtp::reply::{Enhanced, Reply};

use super::conn::Conn;
use super::report::Relay;
use super::work::{Chunk, Dest, Work};

const READ_CHUNK: usize = 16 * 1024;
/// Most bytes kept from a server before the client exists (implicit TLS:
/// the greeting, sent with the handshake).
const MAX_EARLY: usize = 64 * 1024;
/// The status of a session lost before its client existed (4.4.2).
const LOST: Enhanced = Enhanced::new(4, 4, 2);
/// How long a closing session may take to write what is left.
const LINGER: Duration = Duration::from_secs(10);

/// What a session tells the agent.
#[derive(Debug)]
pub enum Event {
    /// The job is finished.
    Done(Box<Work>, Box<JobResult>),
    /// The session is ready and has no job: give it one or quit it.
    Idle,
    /// The connection is closed: forget the session.
    Closed,
    /// TLS is up, for the log: version and cipher, and whether the
    /// certificate was verified.
    TlsUp { how: String, verified: bool },
}

/// How a session does TLS, when it does.
#[derive(Clone, Debug)]
pub struct TlsSetup {
    pub config: Arc<ClientConfig>,
    /// Sent as SNI and, when verified, checked against the certificate.
    pub name: ServerName<'static>,
    /// `config` verifies the certificate.
    pub verified: bool,
}

/// TLS before the client exists (implicit TLS) or after STARTTLS.
enum Tls {
    None,
    /// STARTTLS accepted: start once the plaintext is written.
    Pending,
    Active(Box<ClientConnection>),
}

pub struct Session {
    pub dest: Dest,
    pub relay: Relay,
    stream: Conn,
    tls: Tls,
    tls_setup: TlsSetup,
    /// The handshake is in progress.
    handshaking: bool,
    /// Implicit TLS: the client's configuration until the handshake is done.
    implicit: Option<client::Config>,
    /// What the server sent inside TLS before the client existed: a
    /// greeting that came with the handshake's last flight (TLS 1.3's
    /// 0.5-RTT data), given to the client when it is made.
    early: Vec<u8>,
    client: Option<Client>,
    timeouts: Timeouts,
    out: Vec<u8>,
    need_content: bool,
    /// The job on this session, given to the client at once (it waits
    /// inside the client until the session is ready).
    work: Option<Box<Work>>,
    idle_told: bool,
    closing: bool,
    close_notified: bool,
    closed: bool,
    /// Why the session failed before its client existed, and the status
    /// the job's recipients get for it.
    failure: Option<(String, Enhanced)>,
    last_progress: Instant,
    /// When the session became idle (for the connection cache).
    pub idle_since: Option<Instant>,
    /// Jobs started on this connection.
    pub messages: u32,
    /// The job in hand was given to the connection once it was up (a
    /// cached one, or a spare one another session's job did not need),
    /// not to a connection opened for it: one the server may have
    /// dropped meanwhile.
    pub job_on_open: bool,
    /// The socket may have bytes to read: set by a readiness event, cleared
    /// when a read would block (the poll is edge-triggered, so the next
    /// bytes bring another event). Saves a read per turn that cannot
    /// succeed.
    readable: bool,
    /// A readiness event said the server's end of the stream has come, or
    /// urgent data (a read stops short at its mark): read on until the
    /// socket would block, whatever a read returns.
    peer_ended: bool,
    /// The poll watches the socket for room to write: only while output
    /// waits for it (an edge per ACK otherwise wakes the agent for
    /// nothing). The agent keeps it in step with [`Session::wants_write`].
    pub write_interest: bool,
}

impl Session {
    /// A session on a connected, non-blocking socket. With `implicit`,
    /// TLS starts at once and the client after the handshake.
    pub fn new(
        stream: Conn,
        dest: Dest,
        relay: Relay,
        config: client::Config,
        tls_setup: TlsSetup,
        implicit: bool,
    ) -> Result<Session, String> {
        let timeouts = config.timeouts;
        let mut s = Session {
            readable: true,
            peer_ended: false,
            write_interest: false,
            dest,
            relay,
            stream,
            tls: Tls::None,
            tls_setup,
            handshaking: false,
            implicit: None,
            early: Vec::new(),
            client: None,
            timeouts,
            out: Vec::new(),
            need_content: false,
            work: None,
            idle_told: false,
            closing: false,
            close_notified: false,
            closed: false,
            failure: None,
            last_progress: Instant::now(),
            idle_since: None,
            messages: 0,
            job_on_open: false,
        };
        if implicit {
            s.implicit = Some(config);
            s.start_tls()?;
        } else {
            s.client = Some(Client::new(config).map_err(|e| e.to_string())?);
        }
        Ok(s)
    }

    pub fn stream(&mut self) -> &mut Conn {
        &mut self.stream
    }

    /// Idle: ready, no job, not closing.
    pub fn is_idle(&self) -> bool {
        self.work.is_none() && !self.closing && !self.closed && self.client.as_ref().is_some_and(|c| c.is_idle())
    }

    pub fn has_work(&self) -> bool {
        self.work.is_some()
    }

    /// Give the session its job; it starts when the session is ready.
    pub fn assign(&mut self, work: Box<Work>, events: &mut Vec<Event>) {
        self.job_on_open = self.client.as_ref().is_some_and(|c| c.is_idle());
        self.work = Some(work);
        self.messages += 1;
        self.idle_told = false;
        self.idle_since = None;
        self.last_progress = Instant::now();
        self.start_job();
        self.pump(events);
    }

    /// Hand the job to the client, once there is one.
    fn start_job(&mut self) {
        let (Some(w), Some(c)) = (self.work.as_mut(), self.client.as_mut()) else { return };
        if let Some(job) = w.client_job.take()
            && let Err(job) = c.start(job)
        {
            // Cannot happen: the session never has two jobs.
            w.client_job = Some(job);
        }
    }

    /// End the session: QUIT when idle, otherwise abandon what is in hand.
    pub fn quit(&mut self, events: &mut Vec<Event>) {
        self.idle_since = None;
        match self.client.as_mut() {
            Some(c) => c.quit(),
            None => self.fail_before_client("delivery abandoned: the session was ended", LOST),
        }
        self.pump(events);
    }

    /// Drop the connection and the job with it, reporting nothing (the
    /// job is the queue manager's to run again).
    pub fn abandon(&mut self) -> Option<Box<Work>> {
        self.closed = true;
        self.work.take()
    }

    /// When the session's timer runs out, if it runs.
    pub fn deadline(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        if self.closing {
            return Some(self.last_progress + LINGER);
        }
        let limit = match &self.client {
            None => self.timeouts.starttls,
            Some(c) => c.waiting()?.1,
        };
        Some(self.last_progress + limit)
    }

    /// Act on the timer.
    pub fn check_timer(&mut self, now: Instant, events: &mut Vec<Event>) {
        if !self.deadline().is_some_and(|d| d <= now) {
            return;
        }
        if self.closing {
            self.closed = true;
        } else {
            match self.client.as_mut() {
                Some(c) => c.timeout(),
                None => self.fail_before_client("timeout while waiting for the TLS handshake", LOST),
            }
        }
        self.pump(events);
    }

    /// Move bytes until nothing moves; report what happened.
    pub fn pump(&mut self, events: &mut Vec<Event>) {
        for _ in 0..10_000 {
            if self.closed {
                break;
            }
            let mut progress = self.act(events);
            match self.write() {
                Ok(p) => progress |= p,
                Err(e) => {
                    // A server that closed while we were writing may have
                    // said why first (a refusal during the content): what
                    // it sent is read before the connection is given up.
                    self.readable = true;
                    let _ = self.read();
                    self.broken(&e, events);
                    continue;
                }
            }
            progress |= self.advance(events);
            if self.closed {
                break;
            }
            if !self.readable {
                if !progress {
                    break;
                }
                continue;
            }
            match self.read() {
                Ok(p) => progress |= p,
                Err(e) => {
                    self.broken(&e, events);
                    continue;
                }
            }
            if !progress {
                break;
            }
        }
        if self.closed {
            // A job still held was never answered by the client.
            if let Some(work) = self.work.take() {
                let (why, status) =
                    self.failure.take().unwrap_or_else(|| (String::from("lost connection with the server"), LOST));
                let result = local_failure(&work, &why, Stage::Greeting, status);
                events.push(Event::Done(work, Box::new(result)));
            }
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
            events.push(Event::Closed);
        }
    }

    /// Output waits for room in the socket's send buffer.
    pub fn wants_write(&self) -> bool {
        match &self.tls {
            Tls::Active(t) => t.wants_write() || !self.handshaking && !self.out.is_empty(),
            Tls::None | Tls::Pending => !self.out.is_empty(),
        }
    }

    /// A readiness event (`ended`: it reported the server's end of the
    /// stream, or urgent data): read again, then move bytes.
    pub fn ready(&mut self, events: &mut Vec<Event>, ended: bool) {
        self.readable = true;
        self.peer_ended |= ended;
        self.pump(events);
    }

    /// Carry out the client's actions; true if there were any.
    fn act(&mut self, events: &mut Vec<Event>) -> bool {
        let Some(client) = self.client.as_mut() else { return false };
        let actions: Vec<Action> = client.actions().collect();
        let any = !actions.is_empty();
        if any {
            // A change of state restarts the timer like I/O does.
            self.last_progress = Instant::now();
        }
        // The session is ready when the job's transaction begins (for delays=).
        if let Some(w) = self.work.as_mut()
            && w.started.is_none()
            && matches!(
                client.waiting(),
                Some((Stage::Mail | Stage::Rcpt | Stage::Data | Stage::Content | Stage::Dot, _))
            )
        {
            w.started = Some(Instant::now());
        }
        for a in actions {
            match a {
                Action::Send(bytes) => {
                    if !self.closed {
                        self.out.extend_from_slice(&bytes);
                    }
                }
                Action::StartTls => self.tls = Tls::Pending,
                Action::NeedContent => self.need_content = true,
                Action::Done(result) => {
                    self.need_content = false;
                    if let Some(work) = self.work.take() {
                        events.push(Event::Done(work, result));
                    }
                }
                // Readiness is read from the client's state (below): a
                // job refused by local checks leaves it idle without one.
                Action::Idle => {}
                Action::Close => {
                    self.closing = true;
                    // Closed before TLS started (plaintext injected after
                    // the 220 to STARTTLS): no handshake.
                    if matches!(self.tls, Tls::Pending) {
                        self.tls = Tls::None;
                    }
                }
            }
        }
        any
    }

    /// State changes that wait for the output to drain or the client to
    /// be ready; true if something changed.
    fn advance(&mut self, events: &mut Vec<Event>) -> bool {
        let drained = self.drained();
        if matches!(self.tls, Tls::Pending) && drained {
            if let Err(e) = self.start_tls() {
                self.tls = Tls::None;
                if let Some(c) = self.client.as_mut() {
                    c.tls_failed(&e);
                }
            }
            return true;
        }
        if self.handshaking
            && let Tls::Active(t) = &self.tls
            && !t.is_handshaking()
        {
            self.handshaking = false;
            let verified = self.tls_setup.verified;
            self.relay.tls = super::tls::field(t, verified);
            let how = super::tls::describe(t).unwrap_or_else(|| String::from("TLS"));
            events.push(Event::TlsUp { how, verified });
            match self.implicit.take() {
                Some(config) => match Client::new_in_tls(config) {
                    Ok(mut c) => {
                        let early = std::mem::take(&mut self.early);
                        if !early.is_empty() {
                            c.receive(&early);
                        }
                        self.client = Some(c);
                        self.start_job();
                    }
                    Err(e) => self.fail_before_client(&e.to_string(), LOST),
                },
                None => {
                    if let Some(c) = self.client.as_mut() {
                        c.tls_started();
                    }
                }
            }
            return true;
        }
        if self.closing && drained {
            if let Tls::Active(t) = &mut self.tls
                && !self.close_notified
            {
                self.close_notified = true;
                t.send_close_notify();
                return true;
            }
            self.closed = true;
            return true;
        }
        if self.need_content && drained {
            self.need_content = false;
            self.feed_content();
            return true;
        }
        // Ready without a job (a job refused by local checks leaves the
        // client idle without an Idle action, so the state is what counts).
        if self.is_idle() {
            if !self.idle_told {
                self.idle_told = true;
                self.idle_since = Some(Instant::now());
                events.push(Event::Idle);
                return true;
            }
        } else if self.work.is_some() {
            self.idle_told = false;
        }
        false
    }

    fn feed_content(&mut self) {
        let (Some(work), Some(client)) = (self.work.as_mut(), self.client.as_mut()) else { return };
        match work.next_chunk(CONTENT_CHUNK) {
            // The last chunk and the end of data leave in one write.
            Ok(Chunk::Data(d, last)) => {
                client.content(&d);
                if last {
                    client.content_end();
                }
            }
            Ok(Chunk::End) => client.content_end(),
            Err(e) => client.content_failed(&e.to_string()),
        }
    }

    fn start_tls(&mut self) -> Result<(), String> {
        if self.relay.addr.is_none() {
            return Err(String::from("no TLS over a UNIX socket"));
        }
        let setup = &self.tls_setup;
        let conn = ClientConnection::new(setup.config.clone(), setup.name.clone()).map_err(|e| e.to_string())?;
        self.tls = Tls::Active(Box::new(conn));
        self.handshaking = true;
        Ok(())
    }

    /// Nothing waits to be written.
    fn drained(&self) -> bool {
        self.out.is_empty()
            && match &self.tls {
                Tls::Active(t) => !t.wants_write(),
                _ => true,
            }
    }

    /// A failure before the client exists (implicit TLS): the job defers
    /// with `status` (4.7.5 for a refused TLS handshake, as after
    /// STARTTLS; 4.4.2 otherwise).
    fn fail_before_client(&mut self, why: &str, status: Enhanced) {
        if let Some(c) = self.client.as_mut() {
            c.tls_failed(why);
            return;
        }
        self.closing = true;
        self.closed = true;
        self.out.clear();
        self.failure = Some((why.to_string(), status));
    }

    /// The connection failed: the client decides what that means.
    fn broken(&mut self, e: &io::Error, events: &mut Vec<Event>) {
        self.out.clear();
        match self.client.as_mut() {
            Some(c) if self.handshaking => c.tls_failed(&e.to_string()),
            Some(c) => c.connection_lost(),
            None => {
                // The implicit-TLS handshake: rustls's refusals (a
                // certificate not verified, a protocol error) are
                // cryptographic failures; a reset or a close is not.
                let why = format!("TLS handshake failed: {e}");
                let status = if e.kind() == ErrorKind::InvalidData { Enhanced::new(4, 7, 5) } else { LOST };
                self.fail_before_client(&why, status);
            }
        }
        self.act(events);
        self.closed = true;
    }

    /// Write what is queued; true if anything was written.
    fn write(&mut self) -> io::Result<bool> {
        let mut progress = false;
        match &mut self.tls {
            Tls::Active(t) => {
                if !self.handshaking {
                    while !self.out.is_empty() {
                        let n = t.writer().write(&self.out)?;
                        if n == 0 {
                            break;
                        }
                        self.out.drain(..n);
                    }
                }
                while t.wants_write() {
                    match t.write_tls(&mut self.stream) {
                        Ok(0) => return Err(ErrorKind::WriteZero.into()),
                        Ok(_) => progress = true,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Tls::None | Tls::Pending => {
                while !self.out.is_empty() {
                    match self.stream.write(&self.out) {
                        Ok(0) => return Err(ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            self.out.drain(..n);
                            progress = true;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        if progress {
            self.last_progress = Instant::now();
        }
        Ok(progress)
    }

    /// Read what there is and feed it; true if anything was read. The
    /// end of the stream is an error (`UnexpectedEof`). A short read of a
    /// plain connection whose end no event has reported means the socket
    /// is empty: the next data is a new readiness event (edge-triggered),
    /// so no read is spent to hear that it would block.
    fn read(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; READ_CHUNK];
        let mut progress = false;
        loop {
            let n = match &mut self.tls {
                Tls::Active(t) => match t.read_tls(&mut self.stream) {
                    Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                    Ok(n) => {
                        if let Err(e) = t.process_new_packets() {
                            // Send the alert, then give up on the connection.
                            let _ = t.write_tls(&mut self.stream);
                            let why = super::tls::explain(&e, &self.relay.host);
                            return Err(io::Error::new(ErrorKind::InvalidData, why));
                        }
                        n
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        self.readable = false;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                },
                _ => match self.stream.read(&mut buf) {
                    Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        self.readable = false;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                },
            };
            progress |= n > 0;
            self.last_progress = Instant::now();
            let drained = matches!(self.tls, Tls::None | Tls::Pending) && n < buf.len() && !self.peer_ended;
            if let Tls::Active(t) = &mut self.tls {
                loop {
                    match t.reader().read(&mut buf) {
                        Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                        Ok(m) => match self.client.as_mut() {
                            Some(c) => c.receive(&buf[..m]),
                            None if self.early.len() + m <= MAX_EARLY => self.early.extend_from_slice(&buf[..m]),
                            None => {
                                let why = format!(
                                    "the server sent more than {MAX_EARLY} bytes before the TLS handshake was done"
                                );
                                return Err(io::Error::new(ErrorKind::InvalidData, why));
                            }
                        },
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            } else if let Some(c) = self.client.as_mut() {
                c.receive(&buf[..n]);
            }
            if self.client.as_ref().is_some_and(|c| c.is_closed()) {
                break;
            }
            if drained {
                self.readable = false;
                break;
            }
        }
        Ok(progress)
    }
}

/// A result that defers every recipient of `work` for a reason found
/// locally: a session failure (another server may do better).
pub fn local_failure(work: &Work, why: &str, stage: Stage, status: Enhanced) -> JobResult {
    let reply = Reply::local(421, status, why);
    let r = RecipientResult { disposition: Disposition::Deferred, stage, reply, remote: false, dsn_passed: false };
    JobResult {
        recipients: vec![r; work.indexes.len()],
        session_failure: true,
        tls: false,
        authenticated: false,
        tls_failed: false,
    }
}

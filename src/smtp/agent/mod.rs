//! The `smtp` role: the SMTP and LMTP client delivery agent. One process
//! runs many deliveries at once on one mio loop; the protocol is the
//! I/O-free [`crate::smtp::client::Client`], and this driver moves its
//! bytes.
//!
//! A delivery: qmgr sends `Deliver` with the queue file (read-only), the
//! protocol and the next hop; the agent checks the file against the
//! request (`work`), then starts the job on an idle cached session to the
//! same destination (next hop and protocol), or asks the connector for a
//! connection (TCP, or an LMTP server's UNIX socket: `conn`) and starts
//! it on the session built on the socket that comes back (`session`).
//! LMTP sessions never use STARTTLS or AUTH (see `client_config`). The
//! verdicts go back to qmgr as one `Done` per job and to the log as one
//! line per recipient (`report`). A session that becomes idle takes the
//! next job waiting for its destination, else stays cached for
//! `smtp.connection_cache_time` (at most [`MAX_IDLE`] sessions, at most
//! `smtp.connection_reuse_limit` messages per connection) and then QUITs.
//!
//! A session to an MX-routed SMTP next hop that fails before MAIL for
//! now (`JobResult::session_failure`; a 5xx greeting included, which
//! defers; not a 5xx to HELO, which bounces at once) passes its job on to another MX address in the same delivery, up to
//! `smtp.mx_session_limit` sessions: the job asks the connector again
//! with the addresses it had as a skip list, waiting on a key of its own
//! (`Wait`) so that neither a connection another job asked for nor an
//! idle session on an address it had serves it; when nothing better
//! comes of it, the first failure is reported. Two more ways a job
//! starts again in the same delivery, once each and not counted as
//! sessions: a cached session that dies under it at RSET or MAIL (421,
//! a timeout, a lost connection) is replaced by a new connection, and a
//! failed TLS handshake at the opportunistic level is followed by a new
//! connection to the same address (asked for as an address literal)
//! without STARTTLS, as Postfix's `may` does.
//!
//! Asked to stop (a reload or a stop), the agent takes no more work (a
//! job qmgr sent before it heard of the stop is deferred at once), QUITs
//! its idle sessions, finishes the deliveries in hand and reports them to
//! qmgr, which is draining and waits for those reports (`qmgr::drain`),
//! and exits once nothing is left. Should qmgr give up first, its
//! channel closes and the jobs still in hand are abandoned as below.
//!
//! Failures of the peers: a new qmgr channel (or a closed one) abandons
//! the jobs in hand, which the new qmgr runs again from the queue files;
//! a lost connector answers every job waiting for a connection at once.
//! A malformed message from master, qmgr or the connector ends the
//! process ([`Fatal`]); master restarts it.
//!
//! [`Agent`] runs without master and the sandbox, for tests; [`serve`]
//! wraps it.
//!
//! Trusts: master; qmgr for what to deliver where; the connector for the
//! sockets it sends. Nothing from the network; the queue file is
//! validated before use.

mod conn;
mod report;
mod session;
mod tls;
mod work;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use sandbox::{Grant, Sandboxed};

use crate::child::Child;
use crate::config::client_tls::SessionTls;
use crate::config::delivery::{ClientTls, DeliveryConf};
use crate::ipc::Channel;
use crate::ipc::msg::{
    ConnectorToSmtp, Delivery, FromMaster, Level, NexthopSpec, Protocol, QmgrToSmtp, RecipientReport, SiteReport,
    SmtpToConnector, SmtpToQmgr, Target,
};
use crate::log::ChildLog;
use crate::qmgr::schedule::{LMTP_PORT, Nexthop};
use crate::queue::Time;
use crate::roles::{self, Role};
use crate::smtp::client::{self, Credentials, Disposition, JobResult, Limits, RecipientResult, Stage};
use crate::smtp::reply::Enhanced;
use crate::stream;

pub use report::{Delays, Relay, Verdict};
pub use tls::{AnyCertificate, TlsConfigs};

use conn::Conn;
use session::{Event, Session, TlsSetup};
use work::{Dest, Next, Opened, Work};

const MASTER: Token = Token(0);
const QMGR: Token = Token(1);
const CONNECTOR: Token = Token(2);
const FIRST_SESSION: usize = 16;
/// Most idle sessions kept for reuse.
pub const MAX_IDLE: usize = 32;
/// Longest wait in one turn of the loop.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// Jobs waiting for a session: those for a destination (`job` None),
/// served by any connection to it, or one job starting again, served
/// only by the connection it asked for: moving on to another MX address
/// (passing over the addresses it had), on a new connection after a
/// cached one failed, or to the same server without TLS (`plaintext`:
/// the server's name, as the failed session had it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Wait {
    dest: Dest,
    job: Option<u64>,
    plaintext: Option<String>,
}

impl Wait {
    fn any(dest: &Dest) -> Wait {
        Wait { dest: dest.clone(), job: None, plaintext: None }
    }
}

/// What the role builds before entering the sandbox.
pub struct Prepared {
    tls: TlsConfigs,
}

/// A reason to exit so that master restarts the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal(pub String);

/// Whether the loop goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Exit,
}

/// Build the TLS configuration and check the client settings.
pub fn prepare(child: &mut Child) -> Prepared {
    let Some(delivery) = child.config.delivery.clone() else { child.fatal("no delivery settings from master") };
    let tls = match TlsConfigs::new(&delivery.tls_ca) {
        Ok(t) => t,
        Err(e) => child.fatal(&e),
    };
    let hostname = child.config.hostname.clone();
    if let Err(e) = client::Client::new(client_config(&hostname, &delivery, ClientTls::Require, true, Protocol::Smtp)) {
        child.fatal(&e.to_string());
    }
    Prepared { tls }
}

/// Serve until master says stop and the work in hand is done.
pub fn serve(_token: Sandboxed, child: Child, prepared: Prepared) -> ! {
    let Child { config, mut master, log, .. } = child;
    let Some(delivery) = config.delivery else {
        log.log(&mut master, Level::Error, "fatal: no delivery settings from master");
        exit(&mut master, 1)
    };
    let mut agent = match Agent::new(master, log, config.hostname, *delivery, prepared) {
        Ok(a) => a,
        Err(failed) => {
            let (mut master, e) = *failed;
            ChildLog::new(200, false).log(&mut master, Level::Error, &format!("fatal: poll: {e}"));
            exit(&mut master, 1)
        }
    };
    agent.debug("serving");
    // Log records go once per turn.
    agent.master.cork();
    loop {
        match agent.turn(MAX_WAIT) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Exit) => exit(&mut agent.master, 0),
            Err(Fatal(why)) => {
                agent.log(Level::Error, &format!("fatal: {why}"));
                exit(&mut agent.master, 1)
            }
        }
    }
}

fn exit(master: &mut Channel, code: i32) -> ! {
    let _ = master.flush_within(crate::child::EXIT_FLUSH);
    if code != 0 {
        // Like Child::fatal: a crash loop must not spin.
        std::thread::sleep(Duration::from_secs(1));
    }
    std::process::exit(code)
}

/// The client's configuration for a session at TLS level `tls` (`relay`:
/// to the relay host, which gets the credentials). LMTP never uses
/// STARTTLS or AUTH: its servers are on this host (a UNIX socket) or a
/// network the administrator trusts, as with Postfix's default, and a
/// server whose TLS is broken must not stop local mail.
fn client_config(
    hostname: &str,
    conf: &DeliveryConf,
    tls: ClientTls,
    relay: bool,
    protocol: Protocol,
) -> client::Config {
    let lmtp = protocol == Protocol::Lmtp;
    let tls = if lmtp { ClientTls::None.policy() } else { tls.policy() };
    let credentials = match (&conf.credentials, relay && !lmtp) {
        (Some((username, password)), true) => {
            Some(Credentials { username: username.clone(), password: password.clone() })
        }
        _ => None,
    };
    client::Config {
        helo_name: hostname.to_string(),
        lmtp,
        tls,
        credentials,
        limits: Limits::default(),
        timeouts: conf.smtp.timeouts.timeouts(),
    }
}

/// The event loop and everything in hand.
pub struct Agent {
    poll: Poll,
    events: Events,
    master: Channel,
    log: ChildLog,
    hostname: String,
    conf: DeliveryConf,
    relay: Option<Nexthop>,
    tls: TlsConfigs,
    qmgr: Option<Channel>,
    connector: Option<Channel>,
    /// Jobs waiting for a session, per destination; each has a connection
    /// request outstanding (a job may start on another session first).
    waiting: HashMap<Wait, VecDeque<Box<Work>>>,
    /// Connection requests not yet answered.
    requests: HashMap<u64, Wait>,
    next_req: u64,
    sessions: HashMap<Token, Session>,
    next_token: usize,
    /// Job numbers in hand (waiting or on a session).
    jobs: HashSet<u64>,
    stopping: bool,
    qmgr_broken: bool,
    connector_broken: bool,
}

impl Agent {
    /// An agent listening to master on `master`.
    pub fn new(
        master: Channel,
        log: ChildLog,
        hostname: String,
        conf: DeliveryConf,
        prepared: Prepared,
    ) -> Result<Agent, Box<(Channel, std::io::Error)>> {
        let poll = match Poll::new() {
            Ok(p) => p,
            Err(e) => return Err(Box::new((master, e))),
        };
        let raw = master.as_raw_fd();
        if let Err(e) = poll.registry().register(&mut SourceFd(&raw), MASTER, Interest::READABLE | Interest::WRITABLE) {
            return Err(Box::new((master, e)));
        }
        let relay = conf.relay.host.as_deref().and_then(|h| Nexthop::parse(h).ok());
        Ok(Agent {
            poll,
            events: Events::with_capacity(256),
            master,
            log,
            hostname,
            conf,
            relay,
            tls: prepared.tls,
            qmgr: None,
            connector: None,
            waiting: HashMap::new(),
            requests: HashMap::new(),
            next_req: 1,
            sessions: HashMap::new(),
            next_token: FIRST_SESSION,
            jobs: HashSet::new(),
            stopping: false,
            qmgr_broken: false,
            connector_broken: false,
        })
    }

    /// What `prepare` builds, without a child (tests); `ca` as
    /// `DeliveryConf::tls_ca`.
    pub fn prepared(ca: &[Vec<u8>]) -> Result<Prepared, String> {
        Ok(Prepared { tls: TlsConfigs::new(ca)? })
    }

    fn log(&mut self, level: Level, text: &str) {
        self.log.log(&mut self.master, level, text);
    }

    fn debug(&mut self, text: &str) {
        self.log(Level::Debug, text);
    }

    fn warn(&mut self, text: &str) {
        self.log(Level::Warning, text);
    }

    /// Wait at most `wait` for something to happen, and handle it.
    pub fn turn(&mut self, wait: Duration) -> Result<Flow, Fatal> {
        let now = Instant::now();
        let wait = match self.next_timer() {
            Some(t) => wait.min(t.saturating_duration_since(now)),
            None => wait,
        };
        if let Err(e) = self.poll.poll(&mut self.events, Some(wait))
            && e.kind() != ErrorKind::Interrupted
        {
            return Err(Fatal(format!("poll: {e}")));
        }
        let ready: Vec<(Token, bool, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                let read_on = stream::read_on(e);
                (e.token(), e.is_readable() || read_on, e.is_writable(), read_on)
            })
            .collect();
        for (token, readable, writable, ended) in ready {
            match token {
                MASTER => {
                    if writable {
                        let _ = self.master.flush();
                    }
                    if readable && self.master_readable()? == Flow::Exit {
                        return Ok(Flow::Exit);
                    }
                }
                QMGR => self.qmgr_event(readable, writable)?,
                CONNECTOR => self.connector_event(readable, writable)?,
                t => self.session_io(t, ended),
            }
            self.repair();
        }
        self.timers();
        self.flush_channels();
        self.repair();
        if self.stopping && self.sessions.is_empty() && self.waiting.values().all(VecDeque::is_empty) {
            // The last reports reach qmgr, which waits for them (it is
            // draining: see `qmgr::drain`), before we go.
            if let Some(ch) = self.qmgr.as_mut() {
                let _ = ch.flush_within(crate::child::EXIT_FLUSH);
            }
            let _ = self.master.flush();
            return Ok(Flow::Exit);
        }
        Ok(Flow::Continue)
    }

    /// Handle channels that failed while sending.
    fn repair(&mut self) {
        if std::mem::take(&mut self.qmgr_broken) {
            self.qmgr_lost("the channel failed");
        }
        if std::mem::take(&mut self.connector_broken) {
            self.connector_lost();
        }
    }

    // ----- master -----

    fn master_readable(&mut self) -> Result<Flow, Fatal> {
        loop {
            match self.master.recv::<FromMaster>() {
                Ok(None) => return Ok(Flow::Continue),
                Ok(Some((FromMaster::Peer { role, pid }, fds))) => {
                    let chan = self.peer_channel(role, fds)?;
                    match role {
                        Role::Qmgr => self.set_qmgr(chan)?,
                        Role::Connector => self.set_connector(chan)?,
                        r => return Err(Fatal(format!("master sent a channel to {}", r.name()))),
                    }
                    self.debug(&format!("channel to {} pid {pid}", role.name()));
                }
                Ok(Some((FromMaster::Stop, fds))) if fds.is_empty() => self.stop(),
                Ok(Some((m, _))) => return Err(Fatal(format!("unexpected message from master: {m:?}"))),
                Err(crate::ipc::Error::Closed) => return Ok(Flow::Exit),
                Err(e) => return Err(Fatal(format!("master channel: {e}"))),
            }
        }
    }

    fn peer_channel(&mut self, role: Role, mut fds: Vec<OwnedFd>) -> Result<Channel, Fatal> {
        if fds.len() != 1 {
            return Err(Fatal(format!("peer message for {} with {} descriptors", role.name(), fds.len())));
        }
        if !roles::channel_allowed(Role::Smtp, role) {
            return Err(Fatal(format!("master sent a channel to {}, which smtp may not talk to", role.name())));
        }
        let fd = fds.remove(0);
        if let Err(e) = sandbox::limit_received(&Grant::Channel { fd: fd.as_raw_fd() }) {
            return Err(Fatal(format!("limiting the {} channel: {e}", role.name())));
        }
        Ok(Channel::new(fd))
    }

    /// Send this turn's reports to qmgr and log records to master.
    fn flush_channels(&mut self) {
        let _ = self.master.flush();
        if let Some(ch) = self.qmgr.as_mut()
            && ch.flush().is_err()
        {
            self.qmgr_broken = true;
        }
    }

    fn register_channel(&mut self, chan: &Channel, token: Token) -> Result<(), Fatal> {
        let raw = chan.as_raw_fd();
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll.registry().register(&mut SourceFd(&raw), token, interest).map_err(|e| Fatal(format!("poll: {e}")))
    }

    fn deregister_channel(&mut self, chan: &Channel) {
        let raw = chan.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
    }

    fn set_qmgr(&mut self, mut chan: Channel) -> Result<(), Fatal> {
        if self.qmgr.is_some() {
            self.qmgr_lost("replaced");
        }
        self.register_channel(&chan, QMGR)?;
        // Reports go once per turn.
        chan.cork();
        self.qmgr = Some(chan);
        // Messages may have arrived before registration.
        self.qmgr_event(true, true)
    }

    fn set_connector(&mut self, chan: Channel) -> Result<(), Fatal> {
        if self.connector.is_some() {
            self.connector_lost();
        }
        self.register_channel(&chan, CONNECTOR)?;
        self.connector = Some(chan);
        self.connector_event(true, true)
    }

    /// Take no more work; QUIT idle sessions; finish the rest.
    fn stop(&mut self) {
        self.stopping = true;
        let idle: Vec<Token> = self.sessions.iter().filter(|(_, s)| s.is_idle()).map(|(t, _)| *t).collect();
        for t in idle {
            self.with_session(t, Session::quit);
        }
    }

    // ----- qmgr -----

    fn qmgr_event(&mut self, readable: bool, writable: bool) -> Result<(), Fatal> {
        if writable
            && let Some(ch) = self.qmgr.as_mut()
            && ch.flush().is_err()
        {
            self.qmgr_lost("the channel failed");
            return Ok(());
        }
        if !readable {
            return Ok(());
        }
        loop {
            let Some(ch) = self.qmgr.as_mut() else { return Ok(()) };
            match ch.recv::<QmgrToSmtp>() {
                Ok(None) => return Ok(()),
                Ok(Some((QmgrToSmtp::Deliver(d), fds))) => self.deliver(*d, fds)?,
                Err(crate::ipc::Error::Closed) => {
                    self.qmgr_lost("closed");
                    return Ok(());
                }
                Err(e) => return Err(Fatal(format!("qmgr channel: {e}"))),
            }
            if self.qmgr_broken {
                return Ok(());
            }
        }
    }

    /// qmgr is gone: its jobs are abandoned (a new qmgr runs them again
    /// from the queue files); sessions with a job are dropped.
    fn qmgr_lost(&mut self, why: &str) {
        if let Some(ch) = self.qmgr.take() {
            self.deregister_channel(&ch);
        }
        let mut abandoned: usize = self.waiting.drain().map(|(_, q)| q.len()).sum();
        let busy: Vec<Token> = self.sessions.iter().filter(|(_, s)| s.has_work()).map(|(t, _)| *t).collect();
        for t in busy {
            if let Some(mut s) = self.sessions.remove(&t) {
                abandoned += usize::from(s.abandon().is_some());
                let _ = self.poll.registry().deregister(s.stream());
            }
        }
        self.jobs.clear();
        if why != "closed" || abandoned > 0 {
            self.warn(&format!("qmgr channel {why}: {abandoned} deliveries abandoned"));
        }
    }

    fn deliver(&mut self, d: Delivery, fds: Vec<OwnedFd>) -> Result<(), Fatal> {
        if self.jobs.contains(&d.job) {
            return Err(Fatal(format!("qmgr sent job {} twice", d.job)));
        }
        let work = match work::open(d, fds) {
            Ok(Opened::Ready(w)) => w,
            Ok(Opened::Refused(work, reason)) => {
                self.warn(&format!("{}: {reason}", work.queue_id));
                let v = Verdict::deferred("4.3.0", &reason);
                self.finish_all(&work, None, SiteReport::Unknown, &v);
                return Ok(());
            }
            Ok(Opened::Corrupt(work, reason)) => {
                self.warn(&format!("{}: the queue file is corrupt: {reason}; nothing delivered", work.queue_id));
                let msg = SmtpToQmgr::Corrupt { job: work.job, reason };
                if let Some(ch) = self.qmgr.as_mut()
                    && ch.send(&msg, &[]).is_err()
                {
                    self.qmgr_broken = true;
                }
                return Ok(());
            }
            Err(violation) => return Err(Fatal(format!("qmgr: {violation}"))),
        };
        self.jobs.insert(work.job);
        if self.stopping {
            let v = Verdict::deferred("4.3.2", "the delivery agent is stopping");
            self.finish_all(&work, None, SiteReport::Unknown, &v);
            return Ok(());
        }
        self.dispatch(work);
        Ok(())
    }

    /// Start a job on an idle session to its destination (not one on an
    /// address it had), or ask for a connection: a new one only when a
    /// cached one has just failed it (`Next::Fresh`), and one to the same
    /// server without TLS after a failed opportunistic handshake
    /// (`Next::Plaintext`).
    fn dispatch(&mut self, mut work: Box<Work>) {
        let next = std::mem::take(&mut work.next);
        let idle = self
            .sessions
            .iter()
            .find(|(_, s)| s.is_idle() && s.dest == work.dest && !work.tried(&s.relay))
            .map(|(t, _)| *t);
        if let Some(t) = idle
            && next == Next::Any
        {
            self.with_session(t, |s, evs| s.assign(work, evs));
            return;
        }
        let tls = self.session_tls(&work.dest);
        if tls.level == ClientTls::Verify
            && let Target::Inet(n) = &work.dest.target
            && !n.mx
            && let Err(why) = tls::verify_name(&n.host)
        {
            // Nothing to check the certificate against: not worth a connection.
            self.finish_all(&work, None, SiteReport::Unknown, &Verdict::deferred("4.7.5", &why));
            return;
        }
        let default_port = match work.dest.protocol {
            Protocol::Lmtp => LMTP_PORT,
            Protocol::Smtp if tls.implicit => 465,
            Protocol::Smtp => self.conf.smtp.port,
        };
        let Some(ch) = self.connector.as_mut() else {
            let v = Verdict::deferred("4.3.0", "connector unavailable");
            self.finish_all(&work, None, SiteReport::Unknown, &v);
            return;
        };
        let req = self.next_req;
        self.next_req += 1;
        let own = next != Next::Any;
        let (nexthop, skip, plaintext) = match next {
            // The address as a literal: the connector connects to it alone.
            Next::Plaintext { host, addr } => {
                let n = NexthopSpec { host: addr.ip().to_string(), port: Some(addr.port()), mx: false };
                (Target::Inet(n), Vec::new(), Some(host))
            }
            Next::Any | Next::Fresh => (work.dest.target.clone(), work.tried.clone(), None),
        };
        let own = own || !skip.is_empty();
        let wait = Wait { dest: work.dest.clone(), job: own.then_some(work.job), plaintext };
        let msg = SmtpToConnector::Connect { req, nexthop, default_port, skip };
        if ch.send(&msg, &[]).is_err() {
            // Answered with every other waiting job when the channel is repaired.
            self.connector_broken = true;
        }
        self.requests.insert(req, wait.clone());
        self.waiting.entry(wait).or_default().push_back(work);
    }

    /// Whether a job whose session failed before MAIL may try another
    /// server: MX-routed SMTP only, within `smtp.mx_session_limit`.
    fn may_move_on(&self, work: &Work, relay: &Relay) -> bool {
        work.dest.by_mx()
            && relay.addr.is_some()
            && work.sessions < self.conf.smtp.mx_session_limit
            && self.may_start_again()
    }

    /// Whether a job may ask for another connection in this delivery.
    fn may_start_again(&self) -> bool {
        !self.stopping && self.connector.is_some()
    }

    /// Whether a job whose TLS handshake failed may try the same server
    /// again without TLS: SMTP at the opportunistic level only (Postfix's
    /// `may`), once per delivery. `require` and `verify` never send
    /// mail in plaintext; LMTP and implicit TLS never get here. Nor does
    /// a session that would authenticate: credentials never go in
    /// plaintext, so such a session could not send the mail.
    fn may_retry_plaintext(&self, work: &Work, result: &JobResult) -> bool {
        result.tls_failed
            && !work.plaintext_retried
            && work.dest.protocol == Protocol::Smtp
            && self.session_tls(&work.dest) == SessionTls { level: ClientTls::Opportunistic, implicit: false }
            && !(self.is_relay(&work.dest) && self.conf.credentials.is_some())
            && self.may_start_again()
    }

    /// Whether `dest` is the relay host (SMTP only).
    fn is_relay(&self, dest: &Dest) -> bool {
        let Target::Inet(n) = &dest.target else { return false };
        dest.protocol == Protocol::Smtp
            && self.relay.as_ref().is_some_and(|r| r.host == n.host && r.port == n.port && r.mx == n.mx)
    }

    /// The TLS of sessions to `dest`: none for LMTP and UNIX sockets.
    fn session_tls(&self, dest: &Dest) -> SessionTls {
        match &dest.target {
            Target::Inet(n) if dest.protocol == Protocol::Smtp => {
                let n = Nexthop { host: n.host.clone(), port: n.port, mx: n.mx };
                self.conf.session_tls(&n, self.is_relay(dest))
            }
            _ => SessionTls { level: ClientTls::None, implicit: false },
        }
    }

    // ----- connector -----

    fn connector_event(&mut self, readable: bool, writable: bool) -> Result<(), Fatal> {
        if writable
            && let Some(ch) = self.connector.as_mut()
            && ch.flush().is_err()
        {
            self.connector_lost();
            return Ok(());
        }
        if !readable {
            return Ok(());
        }
        loop {
            let Some(ch) = self.connector.as_mut() else { return Ok(()) };
            match ch.recv::<ConnectorToSmtp>() {
                Ok(None) => return Ok(()),
                Ok(Some((ConnectorToSmtp::Connected { req, host, addr }, mut fds))) => {
                    let wait = self.answered(req)?;
                    if matches!(wait.dest.target, Target::Unix(_)) != addr.is_none() {
                        return Err(Fatal(format!("connector: answer to request {req} of the wrong kind")));
                    }
                    if fds.len() != 1 {
                        return Err(Fatal(format!("connector: a connection with {} descriptors", fds.len())));
                    }
                    let fd = fds.remove(0);
                    if let Err(e) = sandbox::limit_received(&Grant::Channel { fd: fd.as_raw_fd() }) {
                        return Err(Fatal(format!("limiting a connection's descriptor: {e}")));
                    }
                    self.connected(&wait, Relay { host, addr, tls: None }, fd);
                }
                Ok(Some((ConnectorToSmtp::Failed { req, reason, permanent, dsn }, fds))) => {
                    let wait = self.answered(req)?;
                    if !fds.is_empty() {
                        return Err(Fatal(String::from("connector: descriptors with a failure")));
                    }
                    self.connect_failed(&wait, &reason, permanent, &dsn);
                }
                Err(crate::ipc::Error::Closed) => {
                    self.connector_lost();
                    return Ok(());
                }
                Err(e) => return Err(Fatal(format!("connector channel: {e}"))),
            }
        }
    }

    fn answered(&mut self, req: u64) -> Result<Wait, Fatal> {
        self.requests.remove(&req).ok_or_else(|| Fatal(format!("connector: answer to unknown request {req}")))
    }

    /// The connector is gone: every job waiting for a connection defers.
    fn connector_lost(&mut self) {
        if let Some(ch) = self.connector.take() {
            self.deregister_channel(&ch);
        }
        self.requests.clear();
        let works: Vec<Box<Work>> = self.waiting.drain().flat_map(|(_, q)| q).collect();
        if !works.is_empty() {
            self.warn(&format!("connector channel lost: {} deliveries deferred", works.len()));
        }
        let v = Verdict::deferred("4.3.0", "connector unavailable");
        for w in works {
            self.finish_all(&w, None, SiteReport::Unknown, &v);
        }
    }

    fn take_waiting(&mut self, wait: &Wait) -> Option<Box<Work>> {
        let q = self.waiting.get_mut(wait)?;
        let w = q.pop_front();
        if q.is_empty() {
            self.waiting.remove(wait);
        }
        w
    }

    /// No connection: the connector's status code when it is one of the
    /// right class (5.x.x for a permanent failure, 4.x.x otherwise), else
    /// 5.4.4 or 4.4.1.
    /// A job moving on to another MX address reports its first failure
    /// instead (see `finish_all`).
    fn connect_failed(&mut self, wait: &Wait, reason: &str, permanent: bool, dsn: &str) {
        let Some(work) = self.take_waiting(wait) else { return };
        let reason = crate::smtp::reply::sanitize(reason.as_bytes(), 400);
        let class = if permanent { 5 } else { 4 };
        let dsn = match Enhanced::parse_prefix(dsn.as_bytes()) {
            Some((e, n)) if n == dsn.len() && e.class == class => e.to_string(),
            _ => String::from(if permanent { "5.4.4" } else { "4.4.1" }),
        };
        if permanent && self.is_relay(&wait.dest) {
            // The relay host that cannot be found is the configuration's
            // fault (a typo, a resolver's passing NXDOMAIN), not the
            // recipients': every outbound message would bounce. It waits,
            // as Postfix's relayhost does.
            let why = format!("relay host configuration problem: {reason}");
            self.warn(&why);
            let site = SiteReport::Unreachable(why.clone());
            self.finish_all(&work, None, site, &Verdict::deferred("4.3.5", &why));
        } else if permanent {
            // Unknown: a name that does not exist says nothing about
            // whether the destination is up.
            self.finish_all(&work, None, SiteReport::Unknown, &Verdict::bounced(&dsn, &reason));
        } else {
            let site = SiteReport::Unreachable(reason.clone());
            self.finish_all(&work, None, site, &Verdict::deferred(&dsn, &reason));
        }
    }

    /// A connection arrived: a session on it, with a waiting job if any;
    /// without TLS, named as before, when a job asked for it so.
    fn connected(&mut self, wait: &Wait, mut relay: Relay, fd: OwnedFd) {
        let dest = wait.dest.clone();
        if let Some(host) = &wait.plaintext {
            relay.host.clone_from(host);
        }
        let stream = match dest.target {
            Target::Inet(_) => Conn::tcp(fd),
            Target::Unix(_) => Conn::unix(fd),
        };
        let stream = match stream {
            Ok(s) => s,
            Err(e) => return self.session_failed(wait, &relay, &format!("cannot use the connection: {e}")),
        };
        let tls = match wait.plaintext {
            Some(_) => SessionTls { level: ClientTls::None, implicit: false },
            None => self.session_tls(&dest),
        };
        let config = client_config(&self.hostname, &self.conf, tls.level, self.is_relay(&dest), dest.protocol);
        let setup = match (tls.level, relay.addr) {
            (ClientTls::Verify, Some(_)) => {
                // The name connected to: the MX host, or the [host] itself.
                match tls::verify_name(&relay.host) {
                    Ok(name) => TlsSetup { config: self.tls.verified.clone(), name, verified: true },
                    Err(why) => {
                        // The connection closes unused as `stream` goes.
                        if let Some(work) = self.take_waiting(wait) {
                            self.finish_all(
                                &work,
                                Some(&relay),
                                SiteReport::Unknown,
                                &Verdict::deferred("4.7.5", &why),
                            );
                        }
                        return;
                    }
                }
            }
            (_, addr) => {
                let ip = addr.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |a| a.ip());
                let name = tls::server_name(&relay.host, ip);
                TlsSetup { config: self.tls.unverified.clone(), name, verified: false }
            }
        };
        let mut session = match Session::new(stream, dest.clone(), relay.clone(), config, setup, tls.implicit) {
            Ok(s) => s,
            Err(e) => return self.session_failed(wait, &relay, &e),
        };
        let token = Token(self.next_token);
        self.next_token += 1;
        // Room to write is asked for only when output waits for it.
        if let Err(e) = self.poll.registry().register(session.stream(), token, stream::read_interest()) {
            return self.session_failed(wait, &relay, &format!("poll: {e}"));
        }
        self.sessions.insert(token, session);
        match self.take_waiting(wait) {
            Some(w) => self.with_session(token, |s, evs| s.assign(w, evs)),
            None => self.with_session(token, Session::pump),
        }
    }

    fn session_failed(&mut self, wait: &Wait, relay: &Relay, why: &str) {
        self.warn(&format!("{relay}: {why}"));
        if let Some(work) = self.take_waiting(wait) {
            let v = Verdict::deferred("4.3.0", why);
            self.finish_all(&work, Some(relay), SiteReport::Unknown, &v);
        }
    }

    // ----- sessions -----

    fn session_io(&mut self, token: Token, ended: bool) {
        self.with_session(token, |s, events| s.ready(events, ended));
    }

    /// Run `f` on a session and handle what it reports.
    fn with_session(&mut self, token: Token, f: impl FnOnce(&mut Session, &mut Vec<Event>)) {
        let Some(s) = self.sessions.get_mut(&token) else { return };
        let mut events = Vec::new();
        f(s, &mut events);
        let mut queue: VecDeque<Event> = events.into();
        while let Some(ev) = queue.pop_front() {
            let mut more = Vec::new();
            match ev {
                Event::Done(work, result) => self.job_done(token, work, &result),
                Event::Idle => self.session_idle(token, &mut more),
                Event::TlsUp { how, verified } => {
                    if let Some(s) = self.sessions.get(&token) {
                        let trust = if verified { "Verified" } else { "Untrusted" };
                        let line = format!("{trust} TLS connection established to {}: {how}", s.relay);
                        self.log(Level::Info, &line);
                    }
                }
                Event::Closed => {
                    if let Some(mut s) = self.sessions.remove(&token) {
                        let _ = self.poll.registry().deregister(s.stream());
                    }
                }
            }
            queue.extend(more);
        }
        self.write_interest(token);
    }

    /// Watch a session's socket for room to write while, and only while,
    /// output waits for it.
    fn write_interest(&mut self, token: Token) {
        let Some(s) = self.sessions.get_mut(&token) else { return };
        let want = s.wants_write();
        if want == s.write_interest {
            return;
        }
        let interest = if want { stream::read_interest() | Interest::WRITABLE } else { stream::read_interest() };
        match self.poll.registry().reregister(s.stream(), token, interest) {
            Ok(()) => s.write_interest = want,
            // Left as it was: a session that stalls meets its timer.
            Err(e) => {
                let line = format!("{}: poll: {e}", s.relay);
                self.warn(&line);
            }
        }
    }

    /// A ready session without a job: the next job for its destination,
    /// the cache, or QUIT.
    fn session_idle(&mut self, token: Token, events: &mut Vec<Event>) {
        let Some(dest) = self.sessions.get(&token).map(|s| s.dest.clone()) else { return };
        let limit = self.conf.smtp.connection_reuse_limit;
        let idle = self.sessions.values().filter(|s| s.is_idle()).count();
        let next = self.take_waiting(&Wait::any(&dest));
        let Some(s) = self.sessions.get_mut(&token) else { return };
        match next {
            Some(w) if s.messages < limit => s.assign(w, events),
            Some(w) => {
                // Put it back: its own connection is on the way.
                self.waiting.entry(Wait::any(&dest)).or_default().push_front(w);
                s.quit(events);
            }
            None if self.stopping || self.conf.smtp.connection_cache_time.is_zero() => s.quit(events),
            None if s.messages >= limit || idle > MAX_IDLE => s.quit(events),
            None => {}
        }
    }

    /// A job's end on a session. A cached session that failed it at RSET
    /// or MAIL (`cached_session_died`) starts it again on a new
    /// connection, once; a failed opportunistic TLS handshake
    /// (`may_retry_plaintext`) starts it again on a new connection to the
    /// same server without TLS, once. A session that failed before MAIL
    /// (`session_failure`) passes an MX-routed job on to the next MX
    /// address (`may_move_on`); when none does better, the first
    /// failure is reported.
    fn job_done(&mut self, token: Token, mut work: Box<Work>, result: &JobResult) {
        let Some((mut relay, reused)) = self.sessions.get(&token).map(|s| (s.relay.clone(), s.job_on_open)) else {
            return;
        };
        if !result.tls {
            relay.tls = None;
        }
        let mut verdicts: Vec<Verdict> =
            result.recipients.iter().map(|r| Verdict::from_result(r, &relay, work.dest.protocol)).collect();
        // The client answers every recipient; never report fewer.
        while verdicts.len() < work.indexes.len() {
            verdicts.push(Verdict::deferred("4.3.0", "no verdict (internal error)"));
        }
        let why = verdicts.first().map_or("session failed", |v| v.reason.as_str()).to_string();
        if reused && !work.fresh_retried && cached_session_died(result) && self.may_start_again() && work.rearm() {
            // Not the destination's fault: no session counted, no address
            // passed over.
            let line = format!("{}: {why} (a cached connection to {relay}; trying again on a new one)", work.queue_id);
            self.log(Level::Info, &line);
            work.fresh_retried = true;
            work.next = Next::Fresh;
            self.dispatch(work);
            return;
        }
        if let Some(addr) = relay.addr
            && self.may_retry_plaintext(&work, result)
            && work.rearm()
        {
            // The same server, not counted against smtp.mx_session_limit;
            // its TLS failure is reported if nothing does better.
            self.log(Level::Info, &format!("{}: {why} (trying {relay} again without TLS)", work.queue_id));
            work.plaintext_retried = true;
            work.next = Next::Plaintext { host: relay.host.clone(), addr };
            if work.first_failure.is_none() {
                work.first_failure = Some((relay, verdicts));
            }
            self.dispatch(work);
            return;
        }
        work.sessions += 1;
        if result.session_failure {
            if let Some(a) = relay.addr {
                work.tried.push(a.ip());
            }
            if self.may_move_on(&work, &relay) && work.rearm() {
                self.log(Level::Info, &format!("{}: {why} (trying the next MX address)", work.queue_id));
                if work.first_failure.is_none() {
                    work.first_failure = Some((relay, verdicts));
                }
                self.dispatch(work);
                return;
            }
            if let Some((first, v)) = work.first_failure.take() {
                relay = first;
                verdicts = v;
            }
        }
        let site = match (result.session_failure, verdicts.first()) {
            (true, Some(v)) => SiteReport::Unreachable(v.reason.clone()),
            (true, None) => SiteReport::Unreachable(String::from("session failed")),
            (false, _) => SiteReport::Reached,
        };
        self.finish(&work, Some(&relay), site, &verdicts);
    }

    /// QUIT idle sessions past the cache time; run session timers.
    fn timers(&mut self) {
        let now = Instant::now();
        let cache = self.conf.smtp.connection_cache_time;
        let mut due = Vec::new();
        for (t, s) in &self.sessions {
            let idle_expired = s.is_idle() && s.idle_since.is_some_and(|i| i + cache <= now);
            if idle_expired || s.deadline().is_some_and(|d| d <= now) {
                due.push((*t, idle_expired));
            }
        }
        for (t, idle_expired) in due {
            if idle_expired {
                self.with_session(t, Session::quit);
            } else {
                self.with_session(t, |s, evs| s.check_timer(now, evs));
            }
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        let cache = self.conf.smtp.connection_cache_time;
        self.sessions
            .values()
            .flat_map(|s| {
                let idle = if s.is_idle() { s.idle_since.map(|i| i + cache) } else { None };
                [s.deadline(), idle]
            })
            .flatten()
            .min()
    }

    // ----- reports -----

    /// The same verdict for every recipient; for a job that had a
    /// session fail and was moving on to another MX address, that
    /// session's failure instead.
    fn finish_all(&mut self, work: &Work, relay: Option<&Relay>, site: SiteReport, v: &Verdict) {
        if let Some((first, verdicts)) = work.first_failure.clone() {
            let why = verdicts.first().map_or_else(|| String::from("session failed"), |v| v.reason.clone());
            return self.finish(work, Some(&first), SiteReport::Unreachable(why), &verdicts);
        }
        let verdicts = vec![v.clone(); work.indexes.len()];
        self.finish(work, relay, site, &verdicts);
    }

    /// Log each recipient and tell qmgr.
    fn finish(&mut self, work: &Work, relay: Option<&Relay>, site: SiteReport, verdicts: &[Verdict]) {
        let now_instant = Instant::now();
        let mut delays = work.delays;
        if let Some(started) = work.started {
            delays.setup = started.saturating_duration_since(work.since);
            delays.transmission = now_instant.saturating_duration_since(started);
        } else {
            delays.setup = now_instant.saturating_duration_since(work.since);
        }
        let now = Time::now();
        let mut recipients = Vec::with_capacity(work.indexes.len());
        for ((index, address), v) in work.indexes.iter().zip(&work.addresses).zip(verdicts) {
            let line = report::log_line(&work.queue_id, address, relay, now, &delays, v);
            self.log(Level::Info, &line);
            recipients.push(RecipientReport {
                index: *index,
                status: v.status.clone(),
                dsn: v.dsn.clone(),
                reason: v.queue_reason().to_string(),
            });
        }
        self.jobs.remove(&work.job);
        let msg = SmtpToQmgr::Done { job: work.job, site, recipients };
        if let Some(ch) = self.qmgr.as_mut()
            && ch.send(&msg, &[]).is_err()
        {
            self.qmgr_broken = true;
        }
    }
}

/// Whether a job failed only because its session died before the
/// transaction took: a 421 at RSET or MAIL (the server's, or a lost
/// connection or a timeout, which the client reports as 421), every
/// other recipient failed by local checks. On a cached connection that
/// is the connection's age, not the destination's fault (Postfix starts
/// such a delivery again on a new connection too).
fn cached_session_died(result: &JobResult) -> bool {
    let died = |r: &RecipientResult| {
        r.disposition == Disposition::Deferred && matches!(r.stage, Stage::Rset | Stage::Mail) && r.reply.code == 421
    };
    result.recipients.iter().any(died) && result.recipients.iter().all(|r| died(r) || !r.remote)
}

#[cfg(test)]
pub(crate) mod tests;

//! smtpd's event loop: one mio loop serving many SMTP sessions on the
//! listeners master handed over, in plain text, STARTTLS or implicit TLS.
//! The protocol lives in `session`; this file moves bytes, streams each
//! message to cleanup and carries its verdict back, and enforces the
//! per-process bounds: sessions in total and per client, idle and total
//! time, error pauses. Each session's greeting waits for its client's
//! name from the connector (`names`), within a bound; an RCPT to a local
//! name the local-recipient table lacks may wait for the lookup process
//! (`users`), within a bound too. It opens no file and makes no
//! connection.
//!
//! Trusts: master and cleanup; the connector's names are checked
//! (`names`); the lookup process's answers are matched to questions
//! (`users`); nothing from the network.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use sandbox::Sandboxed;

use crate::child::Child;
use crate::config::smtp::ListenTls;
use crate::ipc::Channel;
use crate::ipc::msg::{
    CleanupToSmtpd, CommitResult, FromMaster, Intake, MessageEnvelope, MessageRecipient, SetAside, SmtpdToCleanup,
    UserFound,
};
use crate::roles::Role;
use crate::smtpd::checks::Acceptance;
use crate::smtpd::names::{Named, Names, UNKNOWN};
use crate::smtpd::rate::Event;
use crate::smtpd::session::{Action, Commit, Envelope, Limits, Peer, Session, Settings};
use crate::smtpd::users::{Answer, Users};
use crate::stream;

const MASTER: Token = Token(0);
const CLEANUP: Token = Token(1);
const CONNECTOR: Token = Token(2);
const LOOKUP: Token = Token(3);
const FIRST_LISTENER: usize = 4;
const FIRST_SESSION: usize = 1 << 20;
/// How often timers are checked.
const TICK: Duration = Duration::from_millis(100);
/// Frames queued to cleanup above which sessions stop being read.
const CLEANUP_HIGH_WATER: usize = 512;
const READ_CHUNK: usize = 16 * 1024;
/// How long a session that timed out may take to read its 421 (and what
/// was queued before it) before it is hung up on.
const CLOSE_LINGER: Duration = Duration::from_secs(10);

/// How long a session told 421 at a full stop has to read it.
const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);
/// Replies waiting for the client to read them, past which its commands
/// are not read (so a client that pipelines and never reads cannot grow
/// our memory): the reading resumes as they drain.
const OUT_HIGH_WATER: usize = 64 * 1024;

struct Conn {
    stream: TcpStream,
    ip: IpAddr,
    /// The address the client connected to (None if the system would
    /// not say).
    local_ip: Option<IpAddr>,
    /// The client's name (`unknown` until and unless the connector says).
    name: String,
    /// The name is being looked up (request number): nothing is read or
    /// written until it is known or the wait is over.
    lookup: Option<u64>,
    /// An RCPT waits for the lookup process (request number).
    user_lookup: Option<u64>,
    tls: Option<rustls::ServerConnection>,
    /// STARTTLS answered: switch once the 220 is written.
    tls_pending: bool,
    session: Session,
    out: Vec<u8>,
    /// The poll watches the socket for room to write: only while output
    /// waits for it (otherwise every ACK's edge wakes us for nothing).
    write_interest: bool,
    /// Reading stopped because replies backed up (see [`OUT_HIGH_WATER`]).
    reads_held: bool,
    /// Reading last stopped before the socket was drained: the poll,
    /// edge-triggered, will not say so again.
    unread: bool,
    /// Actions held back by an error pause.
    held: VecDeque<Action>,
    pause_until: Option<Instant>,
    txn: Option<u64>,
    /// The transaction's envelope, held until its first content (or its
    /// end) so that a small message reaches cleanup in one datagram.
    begin: Option<Box<MessageEnvelope>>,
    /// The transaction's message could not be handed to cleanup.
    txn_lost: bool,
    /// The transaction began with a queue ID, its `client=` line logged.
    named: bool,
    /// ... because its envelope is larger than a message to cleanup may
    /// be (many recipients with long DSN parameters): refused for good.
    envelope_too_large: bool,
    closing: bool,
    idle_deadline: Instant,
    deadline: Instant,
}

struct Server {
    child: Child,
    poll: Poll,
    /// Each with its mode, and its address when it is bound to one (not
    /// to every address: then each session asks its socket).
    listeners: Vec<(TcpListener, ListenTls, Option<IpAddr>)>,
    /// Per listener: whether its connections come with TCP_NODELAY set
    /// (master sets it on the listener; Linux and the BSDs pass it on to
    /// the sockets accepted), learnt from its first connection; None
    /// before. Where they do not, each connection gets it set.
    nodelay_inherited: Vec<Option<bool>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    checks: Acceptance,
    settings: Settings,
    intake: Intake,
    conns: HashMap<Token, Conn>,
    per_client: HashMap<IpAddr, u32>,
    cleanup: Option<Channel>,
    /// Queue IDs the present cleanup set aside for our next messages, to
    /// use in order (see [`Server::send_begin`]).
    ids: SetAside,
    names: Names,
    users: Users,
    txns: HashMap<u64, Token>,
    next_txn: u64,
    next_token: usize,
    /// Resumptions after backpressure so far (where the next one starts).
    resumes: usize,
    stopping: bool,
    /// A full stop: until when a session in the middle of a command (its
    /// message's content, a commit, a lookup) may finish it. Every other
    /// session hears 421 and is closed (see [`Server::shut_sessions`]).
    shutdown: Option<Instant>,
    /// Reads were held back because cleanup's queue was full.
    throttled: bool,
    /// An accept failed for want of resources: the tick tries again.
    accept_again: bool,
    /// The listeners are polled: not before the first channel to cleanup
    /// arrives (a client accepted meanwhile could only be told 451 at
    /// the end of its data, as at start-up or right after a reload).
    listening: bool,
}

/// Serve until master says stop and the sessions have ended.
pub fn serve(_token: Sandboxed, mut child: Child, listeners: Vec<std::net::TcpListener>, checks: Acceptance) -> ! {
    let Some(intake) = child.config.intake.clone() else { child.fatal("no intake settings from master") };
    let tls = match (&intake.tls_certificate, &intake.tls_key) {
        (Some(c), Some(k)) => match crate::smtpd::tls::server_config(c, k) {
            Ok(t) => Some(t),
            Err(e) => child.fatal(&format!("tls: {e}")),
        },
        _ => None,
    };
    let poll = Poll::new().unwrap_or_else(|e| crate::child::die(Role::Smtpd, &format!("poll: {e}")));
    let settings = Settings {
        hostname: child.config.hostname.clone(),
        limits: Limits::from_config(&intake.limits, &intake.smtpd),
        bare: intake.smtpd.bare_line_ends,
        starttls: tls.is_some(),
        local_client: false,
    };
    let mut mio_listeners = Vec::new();
    for (l, (_, mode)) in listeners.into_iter().zip(intake.listeners.iter()) {
        let bound = l.local_addr().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified());
        mio_listeners.push((TcpListener::from_std(l), *mode, bound));
    }
    let names = Names::new(intake.smtpd.reverse_lookups, intake.smtpd.reverse_lookup_timeout);
    let users = Users::new(intake.directory_lookup.clone());
    let mut s = Server {
        child,
        poll,
        nodelay_inherited: vec![None; mio_listeners.len()],
        listeners: mio_listeners,
        tls,
        checks,
        settings,
        intake,
        conns: HashMap::new(),
        per_client: HashMap::new(),
        cleanup: None,
        ids: SetAside::default(),
        names,
        users,
        txns: HashMap::new(),
        next_txn: 1,
        next_token: FIRST_SESSION,
        resumes: 0,
        stopping: false,
        shutdown: None,
        throttled: false,
        accept_again: false,
        listening: false,
    };
    s.register();
    // Log records and messages to cleanup go once per round of events.
    s.child.master.cork();
    let mut events = Events::with_capacity(1024);
    let mut last_tick = Instant::now();
    loop {
        if let Err(e) = s.poll.poll(&mut events, Some(TICK))
            && e.kind() != ErrorKind::Interrupted
        {
            s.child.fatal(&format!("poll: {e}"));
        }
        for ev in events.iter() {
            match ev.token() {
                MASTER => {
                    if s.child.master_event(ev) {
                        s.master_readable();
                    }
                }
                CLEANUP => s.cleanup_event(ev.is_readable(), ev.is_writable()),
                CONNECTOR => s.connector_event(ev.is_readable(), ev.is_writable()),
                LOOKUP => s.lookup_event(ev.is_readable(), ev.is_writable()),
                Token(t) if (FIRST_LISTENER..FIRST_SESSION).contains(&t) => s.accept(t - FIRST_LISTENER),
                t => {
                    let read_on = stream::read_on(ev);
                    s.conn_event(t, ev.is_readable() || read_on, ev.is_writable(), read_on)
                }
            }
        }
        s.flush_channels();
        s.resume_reads();
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            s.tick();
        }
        // What resuming and the tick queued (mail of sessions read again,
        // aborts of closed ones, log records) goes now, not after the
        // next poll. Nothing to send costs nothing.
        s.flush_channels();
        if s.stopping && s.conns.is_empty() {
            s.child.exit(0);
        }
    }
}

impl Server {
    fn register(&mut self) {
        if let Err(e) = self.child.register_master(self.poll.registry(), MASTER) {
            self.child.fatal(&format!("registering the master channel: {e}"));
        }
    }

    /// Send what this round of events gave master and cleanup.
    fn flush_channels(&mut self) {
        self.child.end_turn(self.poll.registry());
        self.flush_cleanup();
    }

    /// Send what waits for cleanup; false if the channel broke (dropped).
    /// What waits for master goes first: a message's `client=` line
    /// before its end (see `send_begin`).
    fn flush_cleanup(&mut self) -> bool {
        if self.child.master.queued() > 0 {
            let _ = self.child.master.flush();
        }
        if let Some(ch) = self.cleanup.as_mut()
            && let Err(e) = ch.flush()
        {
            self.child.warn(&format!("cleanup channel: {e}"));
            self.drop_cleanup();
            return false;
        }
        true
    }

    /// Poll the listeners, once: when cleanup can take mail.
    fn listen(&mut self) {
        if self.listening || self.stopping {
            return;
        }
        self.listening = true;
        for (i, (l, _, _)) in self.listeners.iter_mut().enumerate() {
            if let Err(e) = self.poll.registry().register(l, Token(FIRST_LISTENER + i), Interest::READABLE) {
                self.child.fatal(&format!("registering listener: {e}"));
            }
        }
    }

    fn master_readable(&mut self) {
        loop {
            match self.child.master.recv::<FromMaster>() {
                Ok(None) => return,
                Ok(Some((FromMaster::Peer { role: Role::Cleanup, pid }, fds))) => {
                    let chan = self.child.peer_channel(Role::Cleanup, fds);
                    self.set_cleanup(chan);
                    self.child.debug(&format!("channel to cleanup pid {pid}"));
                }
                Ok(Some((FromMaster::Peer { role: Role::Connector, pid }, fds))) => {
                    let chan = self.child.peer_channel(Role::Connector, fds);
                    self.set_connector(chan);
                    self.child.debug(&format!("channel to connector pid {pid}"));
                }
                Ok(Some((FromMaster::Peer { role: Role::Lookup, pid }, fds))) => {
                    let chan = self.child.peer_channel(Role::Lookup, fds);
                    self.set_lookup(chan);
                    self.child.debug(&format!("channel to lookup pid {pid}"));
                }
                Ok(Some((FromMaster::Stop, _))) => self.stop(),
                Ok(Some((FromMaster::Shutdown, _))) => {
                    self.stop();
                    // Half the time master gives before it kills: the
                    // other half is for the sessions' last lines.
                    let now = Instant::now();
                    self.shutdown.get_or_insert(now + self.child.config.stop_timeout / 2);
                    self.shut_sessions(now);
                }
                Ok(Some((FromMaster::RecipientTable { incomplete }, fds))) => {
                    self.new_table(fds, incomplete);
                }
                Ok(Some((m, _))) => self.child.fatal(&format!("unexpected message from master: {m:?}")),
                Err(crate::ipc::Error::Closed) => std::process::exit(0),
                Err(e) => self.child.fatal(&format!("master channel: {e}")),
            }
        }
    }

    /// Take the local-recipient table master built again (its one
    /// descriptor in `fds`), for every session from the next RCPT on. One
    /// that cannot be read leaves the table in hand.
    fn new_table(&mut self, mut fds: Vec<std::os::fd::OwnedFd>, incomplete: bool) {
        if fds.len() != 1 {
            self.child.fatal(&format!("a local-recipient table with {} descriptors", fds.len()));
        }
        let fd = fds.remove(0);
        if let Err(e) = sandbox::limit_received(&sandbox::Grant::File { fd: fd.as_raw_fd(), write: false }) {
            self.child.fatal(&format!("limiting the local-recipient table: {e}"));
        }
        match crate::table::cdb::Table::read(&std::fs::File::from(fd), crate::smtpd::checks::MAX_TABLE) {
            Ok(t) => {
                self.checks.recipients = t;
                self.checks.incomplete = incomplete;
                self.child.info("local-recipient table replaced");
            }
            Err(e) => self.child.warn(&format!("new local-recipient table: {e}; the one in hand is kept")),
        }
    }

    /// Stop accepting; finish the sessions in hand.
    fn stop(&mut self) {
        self.stopping = true;
        if self.listening {
            for (l, _, _) in &mut self.listeners {
                let _ = self.poll.registry().deregister(l);
            }
        }
    }

    fn set_cleanup(&mut self, mut chan: Channel) {
        let old = self.cleanup.take();
        if let Some(old) = &old {
            let raw = old.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
        }
        // Transactions from here on are the new one's.
        let first_new = self.next_txn;
        let raw = chan.as_raw_fd();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut SourceFd(&raw), CLEANUP, interest) {
            self.child.fatal(&format!("registering the cleanup channel: {e}"));
        }
        chan.cork();
        let _ = chan.flush();
        self.cleanup = Some(chan);
        // IDs the old one set aside are not the new one's.
        self.ids.clear();
        // The verdicts the old one sent count; its other messages fail;
        // sessions it held back read on, to the new one (set first, or
        // they would hear 451 for no cleanup).
        if let Some(mut old) = old {
            self.read_last(&mut old);
            self.cleanup_lost(first_new);
        }
        self.listen();
    }

    /// Stop polling the peer channel `old` (replaced or gone) and poll
    /// `new`, if any, under `token`.
    fn switch_fd(&mut self, old: Option<std::os::fd::RawFd>, new: Option<&Channel>, token: Token, peer: &str) {
        if let Some(raw) = old {
            let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
        }
        if let Some(new) = new {
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = self.poll.registry().register(&mut SourceFd(&new.as_raw_fd()), token, interest) {
                self.child.fatal(&format!("registering the {peer} channel: {e}"));
            }
        }
    }

    fn set_connector(&mut self, chan: Channel) {
        let old = self.names.channel().map(Channel::as_raw_fd);
        self.switch_fd(old, Some(&chan), CONNECTOR, "connector");
        let lost = self.names.set_channel(chan);
        self.named(lost);
    }

    fn drop_connector(&mut self) {
        let old = self.names.channel().map(Channel::as_raw_fd);
        self.switch_fd(old, None, CONNECTOR, "connector");
        let lost = self.names.drop_channel();
        self.named(lost);
    }

    fn connector_event(&mut self, readable: bool, writable: bool) {
        if writable && let Err(e) = self.names.flush() {
            self.child.warn(&format!("connector channel: {e}"));
            return self.drop_connector();
        }
        if !readable {
            return;
        }
        let closed_before = self.names.channel().is_none();
        match self.names.receive() {
            Ok(named) => {
                if !closed_before && self.names.channel().is_none() {
                    self.child.debug("channel to connector closed");
                }
                self.named(named);
            }
            Err(e) => self.child.fatal(&format!("connector channel: {e}")),
        }
    }

    fn set_lookup(&mut self, chan: Channel) {
        let old = self.users.channel().map(Channel::as_raw_fd);
        self.switch_fd(old, Some(&chan), LOOKUP, "lookup");
        let lost = self.users.set_channel(chan, Instant::now());
        self.answered(lost);
    }

    fn drop_lookup(&mut self) {
        let old = self.users.channel().map(Channel::as_raw_fd);
        self.switch_fd(old, None, LOOKUP, "lookup");
        let lost = self.users.drop_channel();
        self.answered(lost);
    }

    fn lookup_event(&mut self, readable: bool, writable: bool) {
        if writable && let Err(e) = self.users.flush() {
            self.child.warn(&format!("lookup channel: {e}"));
            return self.drop_lookup();
        }
        if !readable {
            return;
        }
        let closed_before = self.users.channel().is_none();
        match self.users.receive(Instant::now()) {
            Ok(answers) => {
                if !closed_before && self.users.channel().is_none() {
                    self.child.debug("channel to lookup closed");
                }
                self.answered(answers);
            }
            Err(e) => self.child.fatal(&format!("lookup channel: {e}")),
        }
    }

    /// Sessions whose RCPT has its answer: the session goes on.
    fn answered(&mut self, answers: Vec<Answer>) {
        for Answer { token, found } in answers {
            let Some(c) = self.conns.get_mut(&token) else { continue };
            c.user_lookup = None;
            c.session.looked_up(found, &self.checks);
            self.drive(token);
            self.read_conn(token);
        }
    }

    /// Sessions whose client name is settled: the greeting goes out.
    fn named(&mut self, named: Vec<Named>) {
        let now = Instant::now();
        for Named { token, name, warning } in named {
            if let Some(w) = warning {
                self.child.warn(&w);
            }
            let Some(c) = self.conns.get_mut(&token) else { continue };
            c.lookup = None;
            c.session.set_client_name(name.clone());
            c.name = name;
            self.child.info(&format!("connect from {}", c.session.client()));
            // The idle time counts from the greeting.
            c.idle_deadline = now + self.intake.smtpd.idle_timeout;
            self.drive(token);
            self.read_conn(token);
        }
    }

    /// cleanup went away: every message in flight to it (a transaction
    /// before `first_new`) gets a temporary failure. The sessions let go
    /// of those transactions first: a verdict lets a session go on, to
    /// a transaction with the next cleanup, which must stay.
    fn cleanup_lost(&mut self, first_new: u64) {
        for c in self.conns.values_mut() {
            if c.txn.is_some_and(|t| t < first_new) {
                c.begin = None;
                c.txn = None;
                c.txn_lost = true;
            }
        }
        let mut lost: Vec<(u64, Token)> =
            self.txns.iter().filter(|(t, _)| **t < first_new).map(|(t, k)| (*t, *k)).collect();
        lost.sort_unstable();
        for (txn, token) in lost {
            self.txns.remove(&txn);
            self.verdict(token, Commit::TempFail(String::from("cleanup restarted")));
        }
        // Sessions held back for cleanup's sake go on (to a 451 at the
        // end of a message) rather than wait for a new cleanup.
        if self.throttled {
            self.read_held();
        }
    }

    fn cleanup_event(&mut self, readable: bool, writable: bool) {
        if writable && !self.flush_cleanup() {
            return;
        }
        // Read what cleanup said; then, whichever way the event came (a
        // drained queue is a writable event only), let sessions held back
        // for backpressure read again.
        if readable {
            loop {
                let Some(ch) = self.cleanup.as_mut() else { return };
                match ch.recv::<CleanupToSmtpd>() {
                    Ok(None) => break,
                    Ok(Some((_, fds))) if !fds.is_empty() => self.child.fatal("cleanup sent descriptors"),
                    Ok(Some((CleanupToSmtpd::Space { ok }, _))) => self.checks.space_ok.set(ok),
                    Ok(Some((CleanupToSmtpd::Ids { ids }, _))) => self.ids.add(ids),
                    Ok(Some((CleanupToSmtpd::Committed { txn, result }, _))) => self.committed(txn, result),
                    Err(crate::ipc::Error::Closed) => {
                        self.drop_cleanup();
                        return;
                    }
                    Err(e) => self.child.fatal(&format!("cleanup channel: {e}")),
                }
            }
        }
        self.resume_reads();
    }

    /// Sessions held back for backpressure read again once cleanup's queue
    /// is down to half (not before: retrying every session on every event
    /// would cost a read each). Called after each round of events too, as
    /// the queue may drain by a flush that no event follows.
    fn resume_reads(&mut self) {
        if self.throttled && self.cleanup.as_ref().is_some_and(|c| c.queued() < CLEANUP_HIGH_WATER / 2) {
            self.read_held();
        }
    }

    /// Every session reads again, no longer held back: each time from
    /// another session on (the first ones read may fill cleanup's queue
    /// again, and the same ones must not always win).
    fn read_held(&mut self) {
        self.throttled = false;
        let mut tokens: Vec<Token> = self.conns.keys().copied().collect();
        tokens.sort_unstable();
        self.resumes = self.resumes.wrapping_add(1);
        if !tokens.is_empty() {
            let at = self.resumes % tokens.len();
            tokens.rotate_left(at);
        }
        for t in tokens {
            self.read_conn(t);
        }
    }

    /// cleanup's verdict on transaction `txn`.
    fn committed(&mut self, txn: u64, result: CommitResult) {
        let Some(token) = self.txns.remove(&txn) else { return };
        if let Some(c) = self.conns.get_mut(&token) {
            c.txn = None;
        }
        let commit = match result {
            CommitResult::Queued(id) => Commit::Queued(id),
            CommitResult::TempFail(why) => Commit::TempFail(why),
            CommitResult::NoSpace => Commit::NoSpace,
            CommitResult::Refused { code, enhanced, text } => Commit::Refused(code, enhanced, text),
        };
        self.verdict(token, commit);
    }

    /// The verdicts a cleanup that is let go sent before (a datagram
    /// socket keeps them readable after its peer closed, and a write that
    /// failed says nothing of them): a message it queued is not told 451
    /// (and sent again by its client). Ends at the first message not
    /// there, or the end.
    fn read_last(&mut self, old: &mut Channel) {
        while let Ok(Some((m, fds))) = old.recv::<CleanupToSmtpd>() {
            if let (CleanupToSmtpd::Committed { txn, result }, true) = (m, fds.is_empty()) {
                self.committed(txn, result);
            }
        }
    }

    fn drop_cleanup(&mut self) {
        self.ids.clear();
        if let Some(mut old) = self.cleanup.take() {
            let raw = old.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
            self.read_last(&mut old);
        }
        self.cleanup_lost(u64::MAX);
    }

    fn verdict(&mut self, token: Token, commit: Commit) {
        let Some(c) = self.conns.get_mut(&token) else { return };
        if let Commit::Queued(id) = &commit
            && !c.named
        {
            // Postfix's line for a message taken (log summarisers such as
            // pflogsumm count received mail by it), here when cleanup had
            // no ID set aside for it (see `send_begin`).
            self.child.info(&format!("{id}: client={}", c.session.client()));
        }
        c.session.committed(commit, &self.checks);
        self.drive(token);
        // What came after the content is read now if reading stopped
        // short of it; otherwise the poll says when more comes (a read
        // per message saved).
        if self.conns.get(&token).is_some_and(|c| c.unread || c.tls.is_some()) {
            self.read_conn(token);
        }
    }

    fn accept(&mut self, index: usize) {
        loop {
            let Some((listener, mode, bound)) = self.listeners.get(index) else { return };
            let (mode, bound) = (*mode, *bound);
            let (mut stream, addr) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // A client gone before it was accepted (the BSDs say so):
                // the next one is there.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
                    ) || e.raw_os_error() == Some(nix::libc::EPROTO) =>
                {
                    continue;
                }
                Err(e) => {
                    // Out of descriptors or memory: the poll, edge-triggered,
                    // would not say again that clients wait; the tick tries.
                    self.child.warn(&format!("accept: {e}"));
                    self.accept_again = true;
                    return;
                }
            };
            let ip = addr.ip();
            // Postfix's anvil: a client opening connections too fast is
            // refused until its window ends (the trusted networks are not
            // counted).
            if let Err(n) = self.checks.count_ip(ip, Event::Connection) {
                let text = format!("Error: too many connections from {ip}");
                let _ = stream.write(format!("421 4.7.0 {} {text}\r\n", self.settings.hostname).as_bytes());
                let unit = self.intake.limits.rate_time_unit.as_secs();
                self.child.warn(&format!(
                    "Connection rate limit exceeded: {n} from unknown[{ip}] for service smtp (per {unit}s)"
                ));
                continue;
            }
            let limits = &self.intake.limits;
            let from_client = self.per_client.get(&ip).copied().unwrap_or(0);
            if self.conns.len() >= limits.sessions as usize || from_client >= limits.sessions_per_client {
                let (code, text) = if from_client >= limits.sessions_per_client {
                    ("421 4.7.0", "Error: too many connections from your address")
                } else {
                    ("421 4.3.2", "Error: too many sessions; try again later")
                };
                let _ = stream.write(format!("{code} {} {text}\r\n", self.settings.hostname).as_bytes());
                self.child.info(&format!("refused connection from {ip}: {text}"));
                continue;
            }
            // Replies go out at once (no Nagle delay on a pipelined
            // reply); a system call per connection saved where the
            // listener's setting is inherited.
            if let Some(known) = self.nodelay_inherited.get_mut(index)
                && *known != Some(true)
            {
                let inherited = known.is_none() && stream.nodelay().unwrap_or(false);
                if !inherited {
                    let _ = stream.set_nodelay(true);
                }
                *known = Some(inherited);
            }
            let tls = match (mode, &self.tls) {
                (ListenTls::Implicit, Some(cfg)) => match rustls::ServerConnection::new(cfg.clone()) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        self.child.warn(&format!("tls: {e}"));
                        continue;
                    }
                },
                (ListenTls::Implicit, None) => continue,
                _ => None,
            };
            let mut settings = self.settings.clone();
            settings.starttls = self.tls.is_some() && mode == ListenTls::Starttls;
            let known = self.names.known(ip);
            let name = known.unwrap_or(UNKNOWN).to_string();
            let peer = Peer { address: ip.to_string(), hostname: name.clone() };
            let implicit = tls.is_some();
            let token = Token(self.next_token);
            self.next_token += 1;
            // Room to write is asked for only when output waits for it.
            if self.poll.registry().register(&mut stream, token, stream::read_interest()).is_err() {
                continue;
            }
            let now = Instant::now();
            let lookup = if known.is_some() { None } else { self.names.ask(token, ip, now) };
            let local_ip = bound.or_else(|| stream.local_addr().ok().map(|a| a.ip()));
            let conn = Conn {
                stream,
                ip,
                local_ip,
                name,
                lookup,
                user_lookup: None,
                tls,
                tls_pending: false,
                session: Session::new(settings, peer, implicit),
                out: Vec::new(),
                write_interest: false,
                reads_held: false,
                unread: false,
                held: VecDeque::new(),
                pause_until: None,
                txn: None,
                begin: None,
                txn_lost: false,
                named: false,
                envelope_too_large: false,
                closing: false,
                idle_deadline: now + self.intake.smtpd.idle_timeout,
                deadline: now + self.intake.smtpd.session_timeout,
            };
            *self.per_client.entry(ip).or_insert(0) += 1;
            if conn.lookup.is_none() {
                self.child.info(&format!("connect from {}", conn.session.client()));
            }
            self.conns.insert(token, conn);
            self.drive(token);
        }
    }

    /// `read_on`: read until the socket would block ([`stream::read_on`]).
    fn conn_event(&mut self, token: Token, readable: bool, writable: bool, read_on: bool) {
        if writable {
            self.write_conn(token);
        }
        if readable {
            self.read_until(token, !read_on);
        }
    }

    /// Read what the session can take, feed it, act on what it says.
    fn read_conn(&mut self, token: Token) {
        self.read_until(token, false);
    }

    /// [`Server::read_conn`]; with `short_drains`, a short read of a plain
    /// connection ends the turn ([`crate::stream`]). Otherwise it reads
    /// until the socket would block.
    fn read_until(&mut self, token: Token, short_drains: bool) {
        let mut buf = [0u8; READ_CHUNK];
        loop {
            // Looked at before every read: one fast client could otherwise
            // queue a whole large message to cleanup in one turn.
            if self.cleanup.as_ref().is_some_and(|c| c.queued() > CLEANUP_HIGH_WATER) {
                self.throttled = true;
                if let Some(c) = self.conns.get_mut(&token) {
                    c.unread = true;
                }
                return;
            }
            let Some(c) = self.conns.get_mut(&token) else { return };
            // Until the socket is drained below.
            c.unread = true;
            if c.closing || c.pause_until.is_some() || c.tls_pending || c.lookup.is_some() {
                return;
            }
            if backed_up(c) {
                c.reads_held = true;
                return;
            }
            let space = c.session.space().min(READ_CHUNK);
            if space == 0 {
                return;
            }
            let n = match read_plain(c, &mut buf[..space]) {
                // The client has closed its side. If its message waits for
                // cleanup's verdict, the reply is still owed (a client may
                // send QUIT after the dot and shut down its side at once,
                // then read): the session ends once it is written.
                Ok(0) if c.session.awaiting_commit() => {
                    c.closing = true;
                    c.unread = false;
                    return;
                }
                Ok(0) => {
                    return self.close(token);
                }
                Ok(n) => n,
                // A TLS handshake's answer may wait for room.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    c.unread = false;
                    return self.write_interest(token);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.close(token),
            };
            c.idle_deadline = Instant::now() + self.intake.smtpd.idle_timeout;
            let drained = short_drains && n < space && c.tls.is_none();
            c.unread = !drained;
            c.session.receive(&buf[..n], &self.checks);
            self.drive(token);
            if drained {
                return;
            }
        }
    }

    /// Carry out the session's actions in order, up to an error pause.
    fn drive(&mut self, token: Token) {
        let Some(c) = self.conns.get_mut(&token) else { return };
        if c.lookup.is_some() {
            // The greeting waits for the client's name.
            return;
        }
        let fresh: Vec<Action> = c.session.actions().collect();
        c.held.extend(fresh);
        while let Some(a) =
            self.conns.get_mut(&token).and_then(|c| if c.pause_until.is_some() { None } else { c.held.pop_front() })
        {
            self.act(token, a);
        }
        self.write_conn(token);
    }

    fn act(&mut self, token: Token, action: Action) {
        let Some(c) = self.conns.get_mut(&token) else { return };
        match action {
            Action::Reply(r) => c.out.extend_from_slice(&r),
            Action::Pause(d) => c.pause_until = Some(Instant::now() + d),
            Action::StartTls => c.tls_pending = true,
            Action::Close => c.closing = true,
            Action::Begin(env) => {
                let txn = self.next_txn;
                self.next_txn += 1;
                let envelope = Box::new(message_envelope(&env, c));
                c.txn = Some(txn);
                c.txn_lost = false;
                c.named = false;
                c.envelope_too_large = false;
                c.begin = Some(envelope);
            }
            Action::Content(data) => {
                self.send_begin(token);
                // Nothing more goes to cleanup for a transaction it lost
                // part of: content without its envelope, or with a hole,
                // is not a message (the end answers the client).
                if let Some(c) = self.conns.get(&token)
                    && let Some(txn) = c.txn
                    && !c.txn_lost
                {
                    self.send_cleanup(token, SmtpdToCleanup::Content { txn, data });
                }
            }
            Action::End => {
                self.send_begin(token);
                self.end(token);
            }
            Action::Log(line) => self.child.info(&line),
            Action::LookupUser(name) => {
                let now = Instant::now();
                let asked = match self.users.cached(&name, now) {
                    Some(found) => Err(found),
                    None => self.users.ask(token, &name, now).ok_or(UserFound::Unavailable),
                };
                let Some(c) = self.conns.get_mut(&token) else { return };
                match asked {
                    Ok(req) => c.user_lookup = Some(req),
                    Err(found) => {
                        // Answered at once (remembered, or no one to ask):
                        // the session goes on, and what it says next
                        // follows (it said nothing after this action).
                        c.session.looked_up(found, &self.checks);
                        let fresh: Vec<Action> = c.session.actions().collect();
                        c.held.extend(fresh);
                    }
                }
            }
            Action::Abort => {
                // cleanup never heard of a transaction whose envelope is
                // still here.
                if let Some(txn) = c.txn.take()
                    && c.begin.take().is_none()
                {
                    self.send_cleanup(token, SmtpdToCleanup::Abort { txn });
                }
            }
        }
    }

    /// The transaction's envelope goes to cleanup, with what follows it,
    /// under the next queue ID cleanup set aside for us, if any. The
    /// message's `ID: client=` line is logged now, as Postfix's smtpd
    /// logs it when a transaction begins: it reaches master before the
    /// message's end reaches cleanup (see `end`), so before any line
    /// cleanup, qmgr or a delivery agent logs about it.
    fn send_begin(&mut self, token: Token) {
        let Some(c) = self.conns.get_mut(&token) else { return };
        let (Some(txn), Some(envelope)) = (c.txn, c.begin.take()) else { return };
        let id = self.ids.take();
        let named = id.clone();
        self.send_cleanup(token, SmtpdToCleanup::Begin { txn, id, envelope });
        let Some(c) = self.conns.get_mut(&token) else { return };
        match named {
            Some(id) if !c.txn_lost => {
                self.child.info(&format!("{id}: client={}", c.session.client()));
                c.session.named(&id);
                c.named = true;
            }
            // Not sent: cleanup skips it when the next one comes.
            _ => {}
        }
    }

    /// The content is complete: cleanup commits it, or it cannot.
    fn end(&mut self, token: Token) {
        let Some(c) = self.conns.get_mut(&token) else { return };
        if let Some(txn) = c.txn
            && !c.txn_lost
        {
            // The `client=` line goes first, should the end go at once.
            if c.named && self.cleanup.as_ref().is_some_and(|ch| ch.sends_at_once(1)) {
                let _ = self.child.master.flush();
            }
            // Queued, even if not sent yet, the end reaches cleanup and its
            // verdict comes (or, if cleanup goes, the loss of it does).
            let queued = match self.cleanup.as_mut() {
                Some(ch) => match ch.send(&SmtpdToCleanup::End { txn }, &[]) {
                    Ok(()) => true,
                    Err(
                        crate::ipc::Error::Stuck | crate::ipc::Error::TooLarge(_) | crate::ipc::Error::Malformed(_),
                    ) => false,
                    Err(_) => true,
                },
                None => false,
            };
            if queued {
                self.txns.insert(txn, token);
                return;
            }
        }
        // The message cannot be committed: the client hears why.
        let Some(c) = self.conns.get_mut(&token) else { return };
        let lost = c.txn.take();
        let verdict = if c.envelope_too_large {
            Commit::Refused(552, String::from("5.3.4"), String::from("Error: too much envelope data"))
        } else {
            Commit::TempFail(String::from("cleanup unavailable"))
        };
        c.session.committed(verdict, &self.checks);
        let more: Vec<Action> = c.session.actions().collect();
        c.held.extend(more);
        // What cleanup holds of it, if anything, is let go (it ignores a
        // transaction it does not know).
        if let Some(txn) = lost
            && let Some(ch) = self.cleanup.as_mut()
        {
            let _ = ch.send(&SmtpdToCleanup::Abort { txn }, &[]);
        }
    }

    fn send_cleanup(&mut self, token: Token, msg: SmtpdToCleanup) {
        let sent = match self.cleanup.as_mut() {
            Some(ch) => ch.send(&msg, &[]),
            None => Err(crate::ipc::Error::Closed),
        };
        if let Err(e) = sent
            && let Some(c) = self.conns.get_mut(&token)
        {
            c.txn_lost = true;
            c.envelope_too_large |= matches!(e, crate::ipc::Error::TooLarge(_));
        }
    }

    fn write_conn(&mut self, token: Token) {
        let Some(c) = self.conns.get_mut(&token) else { return };
        let result = write_out(c);
        if result.is_err() {
            return self.close(token);
        }
        let c = match self.conns.get_mut(&token) {
            Some(c) => c,
            None => return,
        };
        let drained = !output_waits(c);
        // A session that ended (a timeout) while its STARTTLS was answered
        // closes once its last words are out, without starting TLS.
        if c.tls_pending && drained && c.closing {
            return self.close(token);
        }
        if c.tls_pending && drained {
            // The 220 is out in plain text: from here on, TLS.
            match self.tls.as_ref().map(|cfg| rustls::ServerConnection::new(cfg.clone())) {
                Some(Ok(t)) => {
                    c.tls = Some(t);
                    c.tls_pending = false;
                    c.session.tls_started();
                }
                _ => return self.close(token),
            }
            self.read_conn(token);
            return;
        }
        // (A client that shut down its side still hears the verdict on a
        // message it had sent in full.)
        if c.closing && drained && !c.session.awaiting_commit() {
            return self.close(token);
        }
        if c.reads_held && !backed_up(c) {
            c.reads_held = false;
            self.read_conn(token);
        }
        self.write_interest(token);
    }

    /// Watch a connection for room to write while, and only while, output
    /// waits for it.
    fn write_interest(&mut self, token: Token) {
        let Some(c) = self.conns.get_mut(&token) else { return };
        let want = output_waits(c);
        if want == c.write_interest {
            return;
        }
        let interest = if want { stream::read_interest() | Interest::WRITABLE } else { stream::read_interest() };
        if self.poll.registry().reregister(&mut c.stream, token, interest).is_ok() {
            c.write_interest = want;
        } else {
            self.close(token);
        }
    }

    fn close(&mut self, token: Token) {
        // Closing the socket (dropping `c`) takes it out of the poll set:
        // epoll and kqueue forget a descriptor at its last close, and
        // nothing duplicates a session's socket. A deregister would be a
        // system call per connection for nothing.
        let Some(mut c) = self.conns.remove(&token) else { return };
        // Postfix's lines: what a log watcher looks for.
        let client = c.session.client();
        if c.lookup.is_some() {
            // Gone before its greeting.
            self.child.info(&format!("connect from {client}"));
        }
        if !c.session.is_closed() {
            self.child.info(&format!("lost connection after {} from {client}", c.session.stage()));
        }
        self.child.info(&format!("disconnect from {client} {}", c.session.summary()));
        if let Some(req) = c.lookup {
            self.names.cancel(req);
        }
        if let Some(req) = c.user_lookup {
            self.users.cancel(req);
        }
        if let Some(txn) = c.txn.take() {
            self.txns.remove(&txn);
            if c.begin.is_none()
                && let Some(ch) = self.cleanup.as_mut()
            {
                let _ = ch.send(&SmtpdToCleanup::Abort { txn }, &[]);
            }
        }
        if let Some(n) = self.per_client.get_mut(&c.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&c.ip);
            }
        }
    }

    /// Timers: client-name lookups, error pauses, idle and total session time.
    fn tick(&mut self) {
        let now = Instant::now();
        if std::mem::take(&mut self.accept_again) && self.listening && !self.stopping {
            for i in 0..self.listeners.len() {
                self.accept(i);
            }
        }
        self.checks.rates.borrow_mut().expire(now);
        let late = self.names.expired(now);
        self.named(late);
        let late = self.users.expired(now);
        self.answered(late);
        let mut resume = Vec::new();
        let mut expire = Vec::new();
        let mut gone = Vec::new();
        for (t, c) in &mut self.conns {
            if c.pause_until.is_some_and(|p| p <= now) {
                c.pause_until = None;
                resume.push(*t);
            }
            let waiting_for_cleanup = c.txn.is_some_and(|x| self.txns.contains_key(&x));
            let waiting = waiting_for_cleanup || c.lookup.is_some() || c.user_lookup.is_some();
            if c.closing && c.idle_deadline <= now {
                // Its last words were never read: hang up.
                gone.push(*t);
            } else if !c.closing && !waiting && (c.idle_deadline <= now || c.deadline <= now) {
                expire.push(*t);
            }
        }
        for t in gone {
            self.close(t);
        }
        for t in resume {
            self.drive(t);
            self.read_conn(t);
        }
        for t in expire {
            self.cut(t, "timeout", "4.4.2", "Error: timeout exceeded", now + CLOSE_LINGER);
        }
        self.shut_sessions(now);
    }

    /// At a full stop (master's `Shutdown`), as RFC 5321 asks of a server
    /// that shuts down: a 421 to every session between commands, and to
    /// a session in the middle of one or of a message's content (between
    /// BDAT chunks) once it is done (the content taken and its verdict
    /// given, a lookup answered) or the grace is over. A message waiting
    /// for cleanup's verdict is never cut: the client would send again
    /// what may be queued.
    fn shut_sessions(&mut self, now: Instant) {
        let Some(until) = self.shutdown else { return };
        let late = now >= until;
        let cut: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                let committing = c.txn.is_some_and(|x| self.txns.contains_key(&x));
                let busy = c.session.mid_message() || c.lookup.is_some();
                !c.closing && !committing && (late || !busy)
            })
            .map(|(t, _)| *t)
            .collect();
        for t in cut {
            if self.conns.get(&t).is_some_and(|c| c.lookup.is_some()) {
                // Not greeted yet: nothing to say it in.
                self.close(t);
                continue;
            }
            let text = "Service shutting down, closing transmission channel";
            self.cut(t, "shutdown", "4.3.2", text, now + SHUTDOWN_LINGER);
        }
    }

    /// End a session with a 421 (`why` for the log: `timeout after DATA
    /// from ...`), closed once it is out or at `linger`.
    fn cut(&mut self, t: Token, why: &str, enhanced: &str, text: &str, linger: Instant) {
        let Some(c) = self.conns.get_mut(&t) else { return };
        self.child.info(&format!("{why} after {} from {}", c.session.stage(), c.session.client()));
        c.session.abort();
        let host = &self.settings.hostname;
        c.out.extend_from_slice(format!("421 {enhanced} {host} {text}\r\n").as_bytes());
        c.closing = true;
        c.idle_deadline = linger;
        c.held.clear();
        c.pause_until = None;
        self.drive(t);
    }
}

fn message_envelope(e: &Envelope, c: &Conn) -> MessageEnvelope {
    MessageEnvelope {
        sender: e.sender.as_ref().map(|m| m.to_string()).unwrap_or_default(),
        recipients: e
            .recipients
            .iter()
            .map(|r| MessageRecipient {
                address: r.mailbox.as_ref().map_or_else(|| String::from("postmaster"), |m| m.to_string()),
                notify: r.notify,
                orcpt: r.orcpt.clone(),
            })
            .collect(),
        body: e.body,
        smtputf8: e.smtputf8,
        ret: e.ret,
        envid: e.envid.clone(),
        helo: e.helo.clone(),
        protocol: e.protocol.to_string(),
        client_address: c.ip.to_string(),
        server_address: c.local_ip.map(|a| a.to_string()).unwrap_or_default(),
        client_hostname: c.name.clone(),
        tls: c.tls.as_ref().and_then(|t| crate::smtpd::tls::describe(t)),
        submitter: None,
    }
}

/// Read plain text: from the socket, or decrypted from TLS.
fn read_plain(c: &mut Conn, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let Some(tls) = c.tls.as_mut() else { return c.stream.read(buf) };
        match tls.reader().read(buf) {
            // Ok(0): the peer closed TLS cleanly.
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        // No plain text buffered: take more records from the network.
        match tls.read_tls(&mut c.stream) {
            Ok(0) => return Ok(0),
            Ok(_) => {
                if let Err(e) = tls.process_new_packets() {
                    // Send the alert, then give up on the connection.
                    let _ = tls.write_tls(&mut c.stream);
                    return Err(std::io::Error::new(ErrorKind::InvalidData, e));
                }
            }
            Err(e) => return Err(e),
        }
        // The handshake may have something to say.
        write_out(c)?;
    }
}

/// Output not yet taken by the socket: plain text, or TLS records.
fn output_waits(c: &Conn) -> bool {
    !c.out.is_empty() || c.tls.as_ref().is_some_and(|t| t.wants_write())
}

/// Replies wait for the client past what we hold for it: plain text
/// past [`OUT_HIGH_WATER`], or TLS records the socket would not take.
fn backed_up(c: &Conn) -> bool {
    c.out.len() >= OUT_HIGH_WATER || c.tls.as_ref().is_some_and(|t| t.wants_write())
}

/// Write pending output: plain, or through TLS.
fn write_out(c: &mut Conn) -> std::io::Result<()> {
    match c.tls.as_mut() {
        None => {
            while !c.out.is_empty() {
                match c.stream.write(&c.out) {
                    Ok(0) => return Err(ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        c.out.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
        // rustls takes plain text up to a bound of its own (64 KiB): the
        // rest waits in `out` while its records go out, and reading waits
        // too (`backed_up`).
        Some(tls) => loop {
            if !c.out.is_empty() {
                let n = tls.writer().write(&c.out)?;
                c.out.drain(..n);
            }
            if !tls.wants_write() {
                // (Nothing taken and nothing to send cannot be.)
                return if c.out.is_empty() { Ok(()) } else { Err(ErrorKind::WriteZero.into()) };
            }
            while tls.wants_write() {
                match tls.write_tls(&mut c.stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        },
    }
}

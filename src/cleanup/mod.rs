//! cleanup: takes messages streamed by smtpd, checks their header block
//! (size, hop count), prepends Received:, appends the Message-ID:, Date:
//! and From: a header lacks for the clients `cleanup.add_missing_headers`
//! names ([`message::completes_header`]), and commits them to the intake
//! journal with group commit: everything that arrived while the previous
//! flush ran is written with one write and one fdatasync, and only then
//! does each client's smtpd hear the verdict that becomes 250. Committed
//! messages are then written out as queue files in incoming/, off the
//! acknowledgement path. Each committed message is logged twice, as
//! Postfix does: where it came from (`client=`, `uid=` or `origin=`,
//! with sender, size and recipient count), then `message-id=<...>`, its
//! Message-ID (the one cleanup gave it, or `<>` when it has none;
//! [`message::logged_message_id`]).
//!
//! It takes local submissions from pickup on the same protocol; only
//! pickup may hand over a local envelope with a submitter's uid, and
//! bounce and pickup one without (delivery status notifications). In a local
//! submission's header, bare local names in the address fields get this
//! host's domain ([`qualify`]).
//!
//! Trusts: master; smtpd's, pickup's and bounce's envelopes (addresses
//! included) and content are checked again.

pub mod message;
pub mod qualify;

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use sandbox::Sandboxed;

use crate::child::Child;
use crate::config::smtp::HeaderClients;
use crate::ipc::Channel;
use crate::ipc::msg::{
    CleanupToQmgr, CleanupToSmtpd, CommitResult, FromMaster, MessageEnvelope, QmgrToCleanup, RESERVED_IDS,
    SmtpdToCleanup,
};
use crate::queue::{self, Journal, QueueFile, QueueId, QueueIdGen, Time};
use crate::roles::Role;
use message::HeaderScan;

const MASTER: Token = Token(0);
const FIRST_PEER: usize = 16;
/// Content and envelopes held for open transactions, over all of them;
/// beyond it a new transaction, or new content, fails its transaction
/// with a temporary error.
const MAX_IN_FLIGHT: usize = 512 << 20;
/// Open transactions one peer may have beyond `limits.sessions` (an smtpd
/// has one per session at most, pickup, bounce and local one or two):
/// more is a peer that does not follow the protocol.
const SPARE_TRANSACTIONS: usize = 64;
/// How often free space is checked.
const SPACE_CHECK: Duration = Duration::from_secs(1);
/// Queue files written per turn of the loop while smtpd has more for us,
/// and while not: taking mail goes first, the journal holds the rest.
const BUSY_SLICE: usize = 2;
const IDLE_SLICE: usize = 128;
/// A backlog above this is written out before more mail is read, so that
/// the journal's hard bound (which refuses mail) is not reached by load.
const HIGH_WATER: usize = 64 << 20;
/// Queue IDs of files written while no qmgr listens, kept to announce
/// when one does; past this, its listing of incoming/ finds the rest.
const MAX_UNANNOUNCED: usize = 100_000;
/// Queue IDs per announcement.
const ANNOUNCE_PART: usize = 1_000;
/// How long a stopping cleanup waits for qmgr to account for the messages
/// it offered before it writes them out itself.
const CLOSING_WAIT: Duration = Duration::from_secs(2);

/// A message being received.
struct Pending {
    envelope: Box<MessageEnvelope>,
    /// What the envelope holds, counted in `in_flight` with the content.
    envelope_bytes: usize,
    content: Vec<u8>,
    scan: HeaderScan,
    /// Too big or out of memory: refused at End with this result.
    failed: Option<CommitResult>,
    /// The ID the peer gave it from those set aside for it.
    id: Option<QueueId>,
}

impl Pending {
    /// Bytes it holds, as counted in `in_flight`.
    fn held(&self) -> usize {
        self.envelope_bytes + self.content.len()
    }
}

/// About what an envelope holds in memory: its strings and a little for
/// each recipient.
fn envelope_bytes(e: &MessageEnvelope) -> usize {
    let strings = [&e.sender, &e.helo, &e.protocol, &e.client_address, &e.server_address, &e.client_hostname];
    let fixed = strings.iter().map(|s| s.len()).sum::<usize>()
        + e.envid.as_ref().map_or(0, String::len)
        + e.tls.as_ref().map_or(0, String::len);
    let per_recipient = std::mem::size_of::<crate::ipc::msg::MessageRecipient>();
    let recipients = e
        .recipients
        .iter()
        .map(|r| per_recipient + r.address.len() + r.orcpt.as_ref().map_or(0, String::len))
        .sum::<usize>();
    std::mem::size_of::<MessageEnvelope>() + fixed + recipients
}

/// The queue IDs set aside for one smtpd or pickup, in the order sent
/// ([`CleanupToSmtpd::Ids`]).
#[derive(Default)]
struct Reserved(VecDeque<QueueId>);

impl Reserved {
    /// The peer named a message `id`: whether it was set aside for it.
    /// Those before it the peer skipped (a message it could not send):
    /// they are let go.
    fn take(&mut self, id: QueueId) -> bool {
        if !self.0.contains(&id) {
            return false;
        }
        while self.0.pop_front().is_some_and(|r| r != id) {}
        true
    }

    /// How many to set aside now: none while more than half are left,
    /// then up to [`RESERVED_IDS`] again.
    fn wanted(&self) -> usize {
        if self.0.len() > RESERVED_IDS / 2 { 0 } else { RESERVED_IDS - self.0.len() }
    }

    fn add(&mut self, ids: Vec<QueueId>) {
        self.0.extend(ids);
    }
}

struct Peer {
    /// smtpd (network mail), pickup (local submission), bounce (its
    /// notices) or local (forwarded mail).
    role: Role,
    chan: Channel,
    txns: HashMap<u64, Pending>,
    /// Queue IDs set aside for it (smtpd and pickup).
    reserved: Reserved,
}

struct Cleanup {
    child: Child,
    poll: Poll,
    /// None only while stopping.
    journal: Option<Journal>,
    /// For free-space checks.
    journal_dir: OwnedFd,
    ids: QueueIdGen,
    peers: HashMap<Token, Peer>,
    next_token: usize,
    /// Appended, awaiting the next commit: (peer, txn, ticket, log lines:
    /// the message's arrival and its Message-ID).
    batch: Vec<(Token, u64, queue::Ticket, [String; 2])>,
    in_flight: usize,
    space_ok: bool,
    last_space_check: Instant,
    /// The channel on which qmgr hears of each queue file written (it
    /// sends nothing; its token tells its close).
    qmgr: Option<(Token, Channel)>,
    /// Queue files written while qmgr was not listening.
    unannounced: Vec<QueueId>,
}

/// Serve until master says stop.
pub fn serve(
    _token: Sandboxed,
    mut child: Child,
    journal: Journal,
    journal_dir: OwnedFd,
    recovered: Vec<QueueId>,
) -> ! {
    let poll = Poll::new().unwrap_or_else(|e| crate::child::die(Role::Cleanup, &format!("poll: {e}")));
    if let Err(e) = child.register_master(poll.registry(), MASTER) {
        child.fatal(&format!("registering the master channel: {e}"));
    }
    let mut c = Cleanup {
        child,
        poll,
        journal: Some(journal),
        journal_dir,
        ids: QueueIdGen::new(0),
        peers: HashMap::new(),
        next_token: FIRST_PEER,
        batch: Vec::new(),
        in_flight: 0,
        space_ok: true,
        last_space_check: Instant::now() - SPACE_CHECK,
        qmgr: None,
        unannounced: recovered,
    };
    let mut events = Events::with_capacity(256);
    // Log records and verdicts go once per turn.
    c.child.master.cork();
    loop {
        c.check_space();
        // Queue files still to write: look for mail and go on writing; a
        // segment to retire, or files to try again: wake when it is due;
        // otherwise the free-space check.
        let timeout = match c.journal.as_ref() {
            Some(j) => j.work_due().map_or(SPACE_CHECK, |d| d.min(SPACE_CHECK)),
            None => SPACE_CHECK,
        };
        if let Err(e) = c.poll.poll(&mut events, Some(timeout))
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            c.child.fatal(&format!("poll: {e}"));
        }
        for ev in events.iter() {
            match ev.token() {
                MASTER => {
                    if c.child.master_event(ev) {
                        c.master_readable();
                    }
                }
                t if c.qmgr.as_ref().is_some_and(|(q, _)| *q == t) => c.qmgr_event(t, ev.is_readable()),
                t => c.peer_event(t, ev.is_readable()),
            }
        }
        let busy = !events.is_empty();
        c.commit();
        c.flush_peers();
        c.materialize(busy);
        if !c.unannounced.is_empty() && c.qmgr.is_some() {
            c.announce(Vec::new());
        }
        c.child.end_turn(c.poll.registry());
    }
}

impl Cleanup {
    fn master_readable(&mut self) {
        loop {
            match self.child.master.recv::<FromMaster>() {
                Ok(None) => return,
                Ok(Some((
                    FromMaster::Peer { role: role @ (Role::Smtpd | Role::Pickup | Role::Bounce | Role::Local), pid },
                    fds,
                ))) => {
                    let (token, mut chan) = self.new_channel(role, pid, fds);
                    chan.cork();
                    let _ = chan.send(&CleanupToSmtpd::Space { ok: self.space_ok }, &[]);
                    self.peers.insert(token, Peer { role, chan, txns: HashMap::new(), reserved: Reserved::default() });
                    self.reserve(token);
                }
                Ok(Some((FromMaster::Peer { role: Role::Qmgr, pid }, fds))) => {
                    if let Some(old) = self.qmgr.as_ref().map(|(t, _)| *t) {
                        self.drop_qmgr(old);
                    }
                    self.qmgr = Some(self.new_channel(Role::Qmgr, pid, fds));
                    // What was written while no qmgr listened.
                    self.announce(Vec::new());
                }
                Ok(Some((FromMaster::Stop, _))) => self.stop(),
                Ok(Some((m, _))) => self.child.fatal(&format!("unexpected message from master: {m:?}")),
                Err(crate::ipc::Error::Closed) => self.stop(),
                Err(e) => self.child.fatal(&format!("master channel: {e}")),
            }
        }
    }

    /// Commit what is appended, write everything out, and exit. The
    /// verdicts go as soon as the commit is durable, before the queue files
    /// are written out (which may take a while): pickup, stopping too,
    /// waits for them, to remove what was queued from maildrop/.
    fn stop(&mut self) -> ! {
        self.commit();
        for p in self.peers.values_mut() {
            let _ = p.chan.flush();
        }
        self.qmgr_closing();
        if let Some(journal) = self.journal.take() {
            match journal.close() {
                Ok(ids) => {
                    self.child.debug(&format!("stopped; {} queue files written at close", ids.len()));
                    self.announce(ids);
                }
                Err(e) => self.child.warn(&format!("closing the journal: {e}; it will be recovered at start")),
            }
        }
        for p in self.peers.values_mut() {
            let _ = p.chan.flush();
        }
        self.child.exit(0);
    }

    /// A peer's event: what it sent is read; what waits for it (a
    /// writable event) is sent by the end of the turn's flush_peers.
    fn peer_event(&mut self, token: Token, readable: bool) {
        if !readable {
            return;
        }
        loop {
            let Some(p) = self.peers.get_mut(&token) else { return };
            match p.chan.recv::<SmtpdToCleanup>() {
                Ok(None) => return,
                Ok(Some((_, fds))) if !fds.is_empty() => self.child.fatal("a peer sent descriptors"),
                Ok(Some((m, _))) => self.message(token, m),
                Err(crate::ipc::Error::Closed) => return self.drop_peer(token),
                Err(e) => self.child.fatal(&format!("smtpd channel: {e}")),
            }
        }
    }

    /// Send this turn's verdicts (log records go at the end of the turn).
    fn flush_peers(&mut self) {
        let failed: Vec<Token> =
            self.peers.iter_mut().filter_map(|(t, p)| p.chan.flush().is_err().then_some(*t)).collect();
        for t in failed {
            self.drop_peer(t);
        }
    }

    /// A peer's channel from master, in the poll under a new token.
    fn new_channel(&mut self, role: Role, pid: u32, fds: Vec<OwnedFd>) -> (Token, Channel) {
        let chan = self.child.peer_channel(role, fds);
        let token = Token(self.next_token);
        self.next_token += 1;
        let raw = chan.as_raw_fd();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut SourceFd(&raw), token, interest) {
            self.child.fatal(&format!("registering a {} channel: {e}", role.name()));
        }
        self.child.debug(&format!("channel to {} pid {pid}", role.name()));
        (token, chan)
    }

    /// Tell qmgr of queue files now in incoming/ (and of those kept for
    /// it before). What cannot go now (no qmgr, or one that does not
    /// read) is kept, up to a bound, for the next try; past the bound its
    /// listings of incoming/ find them.
    fn announce(&mut self, ids: Vec<QueueId>) {
        self.unannounced.extend(ids);
        if self.unannounced.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.unannounced);
        let mut sent = 0;
        if let Some((token, chan)) = self.qmgr.as_mut() {
            let token = *token;
            let mut closed = false;
            for part in pending.chunks(ANNOUNCE_PART) {
                let m = CleanupToQmgr::Queued { ids: part.iter().map(ToString::to_string).collect() };
                match chan.send(&m, &[]) {
                    Ok(()) => sent += part.len(),
                    Err(crate::ipc::Error::Closed) => {
                        closed = true;
                        break;
                    }
                    // Not reading now (or a passing fault): later.
                    Err(_) => break,
                }
            }
            if closed || matches!(chan.flush(), Err(crate::ipc::Error::Closed)) {
                self.drop_qmgr(token);
            }
        }
        let mut rest = pending;
        rest.drain(..sent);
        rest.truncate(MAX_UNANNOUNCED);
        self.unannounced = rest;
    }

    fn drop_qmgr(&mut self, token: Token) {
        if let Some((t, mut chan)) = self.qmgr.take() {
            if t != token {
                self.qmgr = Some((t, chan));
                return;
            }
            let raw = chan.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
            // What it said before it went is read first (a failed send
            // finds it gone with its last reports unread): every message
            // it reported done is one not written out and delivered again.
            while let Ok(Some((m, fds))) = chan.recv::<QmgrToCleanup>() {
                if self.qmgr_said(m, fds).is_err() {
                    break;
                }
            }
        }
        // What it was offered and did not account for is written out, to
        // be named to the next qmgr.
        if let Some(journal) = self.journal.as_mut()
            && journal.offered() > 0
        {
            let mut ids = Vec::new();
            journal.write_offered(&mut ids);
            self.unannounced.extend(ids);
        }
    }

    /// qmgr's channel: what became of the messages offered to it;
    /// closed (or a protocol fault: dropped as well); writable: what
    /// waits may go.
    fn qmgr_event(&mut self, token: Token, readable: bool) {
        if readable && self.qmgr_read().is_err() {
            return self.drop_qmgr(token);
        }
        let Some((_, chan)) = self.qmgr.as_mut() else { return };
        if matches!(chan.flush(), Err(crate::ipc::Error::Closed)) {
            self.drop_qmgr(token);
        }
    }

    /// Read what qmgr says, up to what is there now.
    fn qmgr_read(&mut self) -> Result<(), ()> {
        loop {
            let Some((_, chan)) = self.qmgr.as_mut() else { return Err(()) };
            match chan.recv::<QmgrToCleanup>() {
                Ok(None) => return Ok(()),
                Ok(Some((m, fds))) => {
                    self.qmgr_said(m, fds)?;
                }
                Err(_) => return Err(()),
            }
        }
    }

    /// One message from qmgr: the offered messages it settled; Ok(true)
    /// for [`QmgrToCleanup::Closed`].
    fn qmgr_said(&mut self, m: QmgrToCleanup, fds: Vec<OwnedFd>) -> Result<bool, ()> {
        if !fds.is_empty() {
            return Err(());
        }
        let ids = match m {
            QmgrToCleanup::Done { ids } | QmgrToCleanup::Taken { ids } => ids,
            QmgrToCleanup::Closed => return Ok(true),
        };
        let ids: Vec<QueueId> = ids.iter().filter_map(|s| QueueId::parse(s)).collect();
        if let Some(journal) = self.journal.as_mut() {
            journal.settle_offered(&ids);
        }
        Ok(false)
    }

    /// Before the journal closes: qmgr writes out the messages it was
    /// offered and says which it delivered, within [`CLOSING_WAIT`] (what
    /// it did not account for by then is written out here, and may be
    /// delivered twice).
    fn qmgr_closing(&mut self) {
        let Some((token, chan)) = self.qmgr.as_mut() else { return };
        let token = *token;
        if self.journal.as_ref().is_none_or(|j| j.offered() == 0) {
            return;
        }
        if chan.send(&CleanupToQmgr::Closing, &[]).is_err() || chan.flush_within(CLOSING_WAIT).is_err() {
            return self.drop_qmgr(token);
        }
        let deadline = Instant::now() + CLOSING_WAIT;
        loop {
            let Some((_, chan)) = self.qmgr.as_mut() else { return };
            let said = match chan.recv_blocking::<QmgrToCleanup>(deadline.saturating_duration_since(Instant::now())) {
                Ok((m, fds)) => self.qmgr_said(m, fds),
                Err(crate::ipc::Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    self.child.warn("qmgr did not account for the messages offered to it in time: writing them out");
                    Err(())
                }
                Err(_) => Err(()),
            };
            match said {
                Ok(true) => return,
                Ok(false) => {}
                Err(()) => return self.drop_qmgr(token),
            }
        }
    }

    /// Set queue IDs aside for smtpd or pickup `token` (up to
    /// [`RESERVED_IDS`], once half are used): it names its messages with
    /// them in order.
    fn reserve(&mut self, token: Token) {
        let Some(p) = self.peers.get_mut(&token) else { return };
        if !matches!(p.role, Role::Smtpd | Role::Pickup) || p.reserved.wanted() == 0 {
            return;
        }
        let fresh: Vec<QueueId> = (0..p.reserved.wanted()).map(|_| self.ids.next_id()).collect();
        let ids = fresh.iter().map(ToString::to_string).collect();
        if p.chan.send(&CleanupToSmtpd::Ids { ids }, &[]).is_ok() {
            p.reserved.add(fresh);
        }
    }

    fn drop_peer(&mut self, token: Token) {
        if let Some(p) = self.peers.remove(&token) {
            let raw = p.chan.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
            self.in_flight -= p.txns.values().map(Pending::held).sum::<usize>();
        }
    }

    fn message(&mut self, token: Token, m: SmtpdToCleanup) {
        let intake = self.child.config.intake.as_ref();
        let max_size = intake.map_or(u64::MAX, |i| i.limits.message_size);
        let sessions = intake.map_or(crate::config::smtp::Limits::default().sessions, |i| i.limits.sessions);
        let max_open = sessions as usize + SPARE_TRANSACTIONS;
        let Some(p) = self.peers.get_mut(&token) else { return };
        match m {
            SmtpdToCleanup::Begin { txn, id, envelope } => {
                if p.txns.contains_key(&txn) {
                    self.child.fatal(&format!("{} began transaction {txn} twice", p.role.name()));
                }
                // The ID is one set aside for this peer; those before it
                // were not used (a Begin it could not send).
                let id = match id {
                    None => None,
                    Some(s) => match QueueId::parse(&s).filter(|q| p.reserved.take(*q)) {
                        Some(q) => Some(q),
                        None => {
                            let who = p.role.name();
                            self.child.fatal(&format!("{who} named a message with an ID not set aside for it"))
                        }
                    },
                };
                // Only pickup speaks for local users; its failure notices,
                // bounce's notices and local's forwarded mail are local
                // mail of no user.
                let claims_local = (envelope.protocol == "local", envelope.submitter.is_some());
                let expected = match p.role {
                    Role::Pickup => (true, claims_local.1),
                    Role::Bounce | Role::Local => (true, false),
                    _ => (false, false),
                };
                if claims_local != expected {
                    let who = p.role.name();
                    self.child.fatal(&format!("{who} sent an envelope of the wrong origin ({})", envelope.protocol));
                }
                if p.txns.len() >= max_open {
                    let who = p.role.name();
                    self.child.fatal(&format!("{who} opened more than {max_open} transactions at once"));
                }
                let mut failed = bad_address(&envelope).map(|why| refused(553, "5.1.3", &why));
                let mut envelope = envelope;
                let mut envelope_bytes = envelope_bytes(&envelope);
                if failed.is_none() && self.in_flight + envelope_bytes > MAX_IN_FLIGHT {
                    failed = Some(CommitResult::TempFail(String::from("too much mail in flight")));
                }
                if failed.is_some() {
                    // Refused at its end whatever comes: nothing of it kept.
                    envelope.recipients = Vec::new();
                    envelope_bytes = 0;
                }
                self.in_flight += envelope_bytes;
                let scan = HeaderScan::new();
                p.txns.insert(txn, Pending { envelope, envelope_bytes, content: Vec::new(), scan, failed, id });
                if id.is_some() {
                    self.reserve(token);
                }
            }
            SmtpdToCleanup::Content { txn, data } => {
                let Some(t) = p.txns.get_mut(&txn) else {
                    self.child.fatal(&format!("content for unknown transaction {txn}"));
                };
                if t.failed.is_some() {
                    return;
                }
                t.scan.feed(&data);
                if t.content.len() + data.len() > max_size as usize + 1024 {
                    t.failed = Some(refused(552, "5.3.4", "Error: message file too big"));
                } else if self.in_flight + data.len() > MAX_IN_FLIGHT {
                    t.failed = Some(CommitResult::TempFail(String::from("too much mail in flight")));
                } else {
                    self.in_flight += data.len();
                    t.content.extend_from_slice(&data);
                    return;
                }
                self.in_flight -= t.content.len();
                t.content = Vec::new();
            }
            SmtpdToCleanup::Abort { txn } => {
                if let Some(t) = p.txns.remove(&txn) {
                    self.in_flight -= t.held();
                }
            }
            SmtpdToCleanup::End { txn } => {
                let Some(t) = p.txns.remove(&txn) else {
                    self.child.fatal(&format!("end of unknown transaction {txn}"));
                };
                self.in_flight -= t.held();
                self.end(token, txn, t);
            }
        }
    }

    /// A message is complete: refuse it, or append it for the next commit.
    fn end(&mut self, token: Token, txn: u64, t: Pending) {
        let intake = self.child.config.intake.as_ref();
        let (hops, header_size) = intake.map_or((50, 100 << 10), |i| (i.limits.hops, i.limits.header_size));
        let verdict = if let Some(f) = t.failed {
            Some(f)
        } else if let Some((code, enhanced, why)) = message::header_refusal(&t.scan, hops, header_size) {
            Some(refused(code, enhanced, &format!("Error: {why}")))
        } else if !self.space_ok {
            Some(CommitResult::NoSpace)
        } else {
            None
        };
        if let Some(v) = verdict {
            return self.reply(token, txn, v);
        }
        let id = t.id.unwrap_or_else(|| self.ids.next_id());
        let arrival = Time::now();
        let received = message::received(&t.envelope, &self.child.config.hostname, id.as_str(), arrival.secs as u64);
        // A local user's bare `root` in From:, To: and the like gets the
        // domain sendmail gave the envelope; network mail keeps its own.
        let qualified = match t.envelope.submitter {
            Some(_) => qualify::qualify_header(&t.content, &self.child.config.hostname),
            None => None,
        };
        let body = qualified.as_deref().unwrap_or(&t.content);
        // A missing Message-ID:, Date: and From: for a local user's mail
        // and the clients `cleanup.add_missing_headers` names, at the end
        // of the header block (a qualified header is scanned anew: its
        // lines have other lengths).
        let intake = self.child.config.intake.as_ref();
        let clients = intake.map_or(HeaderClients::Local, |i| i.cleanup.add_missing_headers);
        let completes = message::completes_header(clients, &t.envelope, intake.map_or(&[], |i| &i.networks));
        let rescanned = (completes && qualified.is_some()).then(|| HeaderScan::scan(body));
        let scan = rescanned.as_ref().unwrap_or(&t.scan);
        let (fields, added_id) = match completes {
            true => message::missing_fields(&scan.seen, &t.envelope, &self.child.config.hostname, arrival.secs as u64),
            false => (Vec::new(), None),
        };
        let message_id = message::logged_message_id(scan.message_id.as_deref(), added_id.as_deref());
        let mut content = Vec::with_capacity(received.len() + body.len() + fields.len() + 2);
        content.extend_from_slice(received.as_bytes());
        message::append_with_fields(&mut content, body, scan, &fields);
        let file = queue_file(id, arrival, &t.envelope, content);
        let role = self.peers.get(&token).map_or("?", |p| p.role.name());
        let origin = match t.envelope.submitter {
            Some(uid) => format!("uid={uid}"),
            None if t.envelope.protocol == "local" => format!("origin={role}"),
            None => format!("client={}[{}]", t.envelope.client_hostname, t.envelope.client_address),
        };
        let log = [
            format!(
                "{}: {origin}, from=<{}>, size={}, nrcpt={}, proto={}{}",
                id.as_str(),
                t.envelope.sender,
                file.content.len(),
                file.recipients.len(),
                t.envelope.protocol,
                t.envelope.tls.as_ref().map_or_else(String::new, |s| format!(", tls={s}")),
            ),
            format!("{}: message-id={message_id}", id.as_str()),
        ];
        let Some(journal) = self.journal.as_mut() else { return };
        match journal.append(&file) {
            Ok(ticket) => self.batch.push((token, txn, ticket, log)),
            Err(e) => {
                self.child.warn(&format!("cannot queue a message: {e}"));
                self.reply(token, txn, append_failed(&e));
            }
        }
    }

    /// One write and one fdatasync for everything appended; then the verdicts.
    fn commit(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let Some(journal) = self.journal.as_mut() else { return };
        match journal.commit() {
            Ok(_) => {
                for (token, txn, ticket, log) in batch {
                    log.iter().for_each(|line| self.child.info(line));
                    self.reply(token, txn, CommitResult::Queued(ticket.id.as_str().to_string()));
                }
            }
            Err(e) => {
                self.child.warn(&e.to_string());
                // ENOSPC and EIO alike: 451 4.3.0, and the client tries again.
                let why = if e.error.is_disk_full() { String::from("spool full") } else { e.error.to_string() };
                for (token, txn, _, _) in batch {
                    self.reply(token, txn, CommitResult::TempFail(why.clone()));
                }
            }
        }
    }

    /// Write committed messages out as queue files: a few while mail is
    /// coming in, more when it is not, and down to the high-water mark
    /// whatever happens.
    fn materialize(&mut self, busy: bool) {
        self.offer();
        let Some(journal) = self.journal.as_mut() else { return };
        if journal.work_due() != Some(Duration::ZERO) {
            return;
        }
        let mut ids = Vec::new();
        let mut r = journal.materialize_some(&mut ids, if busy { BUSY_SLICE } else { IDLE_SLICE });
        while r.is_ok() && journal.backlog() > HIGH_WATER {
            r = journal.materialize_some(&mut ids, IDLE_SLICE);
        }
        if let Err(e) = r {
            self.child.warn(&format!("writing queue files: {e} (they are safe in the journal)"));
        }
        self.announce(ids);
    }

    /// Offer qmgr the messages committed since, in memory files, up to
    /// `queue.memory_messages` at once and of at most
    /// `queue.memory_message_size` each: most are delivered before a
    /// queue file would be written, and get none (see `qmgr::memory`); the
    /// others are written out as queue files. A send that fails drops
    /// qmgr, and what it was offered is written out.
    fn offer(&mut self) {
        let (max, max_size) = self.child.config.intake.as_ref().map_or((0, 0), |i| {
            (i.memory_messages as usize, usize::try_from(i.memory_message_size).unwrap_or(usize::MAX))
        });
        let (Some(journal), Some((token, chan))) = (self.journal.as_mut(), self.qmgr.as_mut()) else { return };
        let mut offers = Vec::new();
        journal.offer_some(&mut offers, max, max_size);
        let token = *token;
        let mut failed = false;
        while !offers.is_empty() && !failed {
            let part: Vec<(QueueId, OwnedFd)> = offers.drain(..offers.len().min(crate::ipc::MAX_FDS)).collect();
            let ids = part.iter().map(|(id, _)| id.to_string()).collect();
            let fds = part.into_iter().map(|(_, fd)| fd).collect();
            failed = chan.send_owned(&CleanupToQmgr::Offered { ids }, fds).is_err();
        }
        if failed {
            self.drop_qmgr(token);
        }
    }

    fn reply(&mut self, token: Token, txn: u64, result: CommitResult) {
        if let Some(p) = self.peers.get_mut(&token)
            && p.chan.send(&CleanupToSmtpd::Committed { txn, result }, &[]).is_err()
        {
            self.drop_peer(token);
        }
    }

    fn check_space(&mut self) {
        if self.last_space_check.elapsed() < SPACE_CHECK {
            return;
        }
        self.last_space_check = Instant::now();
        let min = self.child.config.intake.as_ref().map_or(0, |i| i.min_free_space);
        let ok = match queue::free_space(self.journal_dir.as_fd()) {
            Ok(free) => free >= min,
            Err(e) => {
                self.child.warn(&format!("checking free space: {e}"));
                true
            }
        };
        if ok != self.space_ok {
            self.space_ok = ok;
            if ok {
                self.child.info("spool free space is back above queue.min_free_space: accepting mail");
            } else {
                self.child.warn("spool free space below queue.min_free_space: refusing mail with 452 4.3.1");
            }
            let tokens: Vec<Token> = self.peers.keys().copied().collect();
            for t in tokens {
                if let Some(p) = self.peers.get_mut(&t) {
                    let _ = p.chan.send(&CleanupToSmtpd::Space { ok }, &[]);
                }
            }
        }
    }
}

/// Why the envelope's addresses cannot be queued, if they cannot: smtpd
/// has parsed them already, but pickup's come from a file a local user
/// wrote, and nothing that is not an RFC 5321 mailbox (no CR, LF or other
/// control) goes into a queue file that a delivery agent will write into
/// MAIL FROM and RCPT TO, nor a sender longer than a header line can hold
/// ([`crate::header::MAX_SENDER`]: local's Return-Path:, an added From:).
fn bad_address(e: &MessageEnvelope) -> Option<String> {
    let utf8 = true;
    if e.sender.len() > crate::header::MAX_SENDER {
        // No header line could hold it (Return-Path:, an added From:).
        let max = crate::header::MAX_SENDER;
        return Some(format!("Error: sender <{}...>: longer than {max} octets", message::header_safe(&e.sender, 64)));
    }
    if !e.sender.is_empty()
        && let Err(err) = crate::address::parse_mailbox_lenient(&e.sender, utf8)
    {
        return Some(format!("Error: sender <{}>: {err}", message::header_safe(&e.sender, 256)));
    }
    e.recipients.iter().find_map(|r| match crate::address::parse_mailbox_lenient(&r.address, utf8) {
        Err(_) if r.address.eq_ignore_ascii_case("postmaster") => None,
        Err(err) => Some(format!("Error: recipient <{}>: {err}", message::header_safe(&r.address, 256))),
        Ok(_) => None,
    })
}

/// The verdict on a message the journal would not take: for now when
/// the disk or the backlog of queue files not yet written out is the
/// cause (incoming/ or its disk failing), for good when the message
/// itself cannot be stored.
fn append_failed(e: &queue::Error) -> CommitResult {
    match e {
        queue::Error::Io(_) if e.is_disk_full() => CommitResult::TempFail(String::from("spool full")),
        queue::Error::Io(_) => CommitResult::TempFail(e.to_string()),
        queue::Error::Corrupt(_) | queue::Error::Invalid(_) => {
            refused(554, "5.6.0", "Error: message could not be stored as given")
        }
    }
}

fn refused(code: u16, enhanced: &str, text: &str) -> CommitResult {
    CommitResult::Refused { code, enhanced: enhanced.to_string(), text: text.to_string() }
}

/// The queue file for a message smtpd or pickup handed over.
fn queue_file(id: queue::QueueId, arrival: Time, e: &MessageEnvelope, content: Vec<u8>) -> QueueFile {
    // RFC 6531's words are RFC 3848's with SMTPUTF8, which the envelope
    // records on its own.
    let protocol = match e.protocol.as_str() {
        "local" => queue::Protocol::Local,
        "SMTP" => queue::Protocol::Smtp,
        "ESMTPS" | "UTF8SMTPS" => queue::Protocol::Esmtps,
        "ESMTPA" | "UTF8SMTPA" => queue::Protocol::Esmtpa,
        "ESMTPSA" | "UTF8SMTPSA" => queue::Protocol::Esmtpsa,
        _ => queue::Protocol::Esmtp,
    };
    let envelope = queue::Envelope {
        sender: e.sender.clone(),
        arrival,
        client: queue::Client {
            address: e.client_address.clone(),
            hostname: e.client_hostname.clone(),
            helo: e.helo.clone(),
            protocol,
            tls: e.tls.clone(),
        },
        body: e.body.into(),
        smtputf8: e.smtputf8,
        dsn_ret: e.ret.map(Into::into),
        dsn_envid: e.envid.clone(),
        size: content.len() as u64,
    };
    let recipients = e
        .recipients
        .iter()
        .map(|r| queue::Recipient {
            address: r.address.clone(),
            orcpt: r.orcpt.clone(),
            notify: r.notify.map(Into::into),
            status: queue::Status::default(),
        })
        .collect();
    QueueFile { id, envelope, recipients, content }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_set_aside_are_taken_in_order_and_refilled_at_half() {
        let mut ids_gen = QueueIdGen::new(0);
        let mut r = Reserved::default();
        assert_eq!(r.wanted(), RESERVED_IDS);
        let ids: Vec<QueueId> = (0..r.wanted()).map(|_| ids_gen.next_id()).collect();
        r.add(ids.clone());
        assert_eq!(r.wanted(), 0);
        assert!(r.take(ids[0]));
        // Taken once only; and one never set aside is not taken.
        assert!(!r.take(ids[0]));
        assert!(!r.take(ids_gen.next_id()));
        // One skipped (a Begin the peer could not send) is let go.
        assert!(r.take(ids[2]));
        assert!(!r.take(ids[1]));
        for id in &ids[3..RESERVED_IDS / 2 - 1] {
            assert!(r.take(*id));
        }
        assert_eq!(r.wanted(), 0, "more than half are left");
        assert!(r.take(ids[RESERVED_IDS / 2 - 1]));
        assert_eq!(r.wanted(), RESERVED_IDS / 2);
    }

    #[test]
    fn a_journal_that_cannot_take_mail_now_gives_a_temporary_failure() {
        // The backlog bound (incoming/ failing) is the journal's Io error:
        // before, a client heard 554 and pickup set local mail aside.
        let backlog = queue::Error::Io(std::io::Error::other("67108864 bytes wait to be written as queue files"));
        assert!(matches!(append_failed(&backlog), CommitResult::TempFail(w) if w.contains("wait to be written")));
        let full = queue::Error::Io(std::io::Error::from_raw_os_error(28));
        assert!(matches!(append_failed(&full), CommitResult::TempFail(w) if w == "spool full"));
        let invalid = queue::Error::Invalid(String::from("no recipient"));
        assert!(matches!(append_failed(&invalid), CommitResult::Refused { code: 554, .. }));
    }

    #[test]
    fn a_sender_no_header_line_can_hold_is_refused() {
        let mut env = MessageEnvelope::internal(String::new(), vec![String::from("r@x.example")], false, false, "h");
        let longest = format!("{}@x.example", "l".repeat(crate::header::MAX_SENDER - "@x.example".len()));
        for (sender, ok) in [(longest.clone(), true), (format!("l{longest}"), false), (String::new(), true)] {
            env.sender = sender;
            let why = bad_address(&env);
            assert_eq!(why.is_none(), ok, "{why:?}");
            assert!(why.as_ref().is_none_or(|w| w.ends_with("longer than 983 octets")), "{why:?}");
        }
    }
}

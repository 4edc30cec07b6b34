//! control: serves the control socket that master bound and handed over.
//! A client (mtactl) sends one request line; peer credentials decide what
//! it may do (root, and the invoking user of a master not run as root:
//! everything; anyone: the queue listing and a flush; see [`authorized`]).
//! control asks master for the process table, reload or stop, and qmgr
//! for queue counts and the queue's messages, and answers with one line
//! of JSON; a queue listing is streamed, a line per message as qmgr's
//! parts arrive and then the answer line, and so is a message shown, its
//! recipients a line each (see [`forward`]).
//!
//! Trusts: master. Distrusts clients: requests are bounded in size, time
//! and number, listings in number per user and in all.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener as StdListener;
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use sandbox::Sandboxed;
use serde_json::{Value, json};

use crate::child::Child;
use crate::ipc::Channel;
use crate::ipc::msg::{
    AdminOp, ControlToQmgr, FromMaster, MasterStatus, MessageDetail, QmgrToControl, QueueEntry, RecipientDetail,
    ToMaster,
};
use crate::queue::QueueId;
use crate::roles::Role;

pub mod batch;
pub mod client;
pub mod forward;
pub mod settings;
pub mod shape;

const MASTER: Token = Token(0);
const LISTENER: Token = Token(1);
const QMGR: Token = Token(2);
const FIRST_CLIENT: usize = 16;
/// Longest request line.
const MAX_REQUEST: usize = 1024;
/// How long a status waits for qmgr's counts before answering without them.
const QMGR_WAIT: Duration = Duration::from_secs(2);
/// How long an answer may take once the request is read (master's or
/// qmgr's, and writing it out to the client).
const ANSWER_WAIT: Duration = Duration::from_secs(60);
/// A listing goes on as long as it moves within this: a part from qmgr,
/// or bytes the client takes.
const LIST_IDLE: Duration = Duration::from_secs(30);

/// A request a client may make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Status,
    Reload,
    Stop,
    /// The queue listing (mailq); any local user may ask.
    Queue,
    /// One message in full (`show ID`).
    Show(QueueId),
    /// `hold ID`, `release ID`, `requeue ID`, `delete ID`.
    Admin(AdminOp, QueueId),
    /// Try deferred mail now (`sendmail -q`); any local user may ask, as
    /// Postfix allows by default.
    Flush,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Reload => "reload",
            Command::Stop => "stop",
            Command::Queue => "queue",
            Command::Show(_) => "show",
            Command::Admin(op, _) => op.name(),
            Command::Flush => "flush",
        }
    }

    pub fn parse(line: &str) -> Option<Command> {
        let line = line.trim_end_matches(['\r', '\n']);
        let (word, arg) = match line.split_once(' ') {
            Some((w, a)) => (w, Some(QueueId::parse(a)?)),
            None => (line, None),
        };
        let op = |op| arg.map(|id| Command::Admin(op, id));
        match (word, arg) {
            ("status", None) => Some(Command::Status),
            ("reload", None) => Some(Command::Reload),
            ("stop", None) => Some(Command::Stop),
            ("queue", None) => Some(Command::Queue),
            ("flush", None) => Some(Command::Flush),
            ("show", Some(id)) => Some(Command::Show(id)),
            ("hold", _) => op(AdminOp::Hold),
            ("release", _) => op(AdminOp::Release),
            ("requeue", _) => op(AdminOp::Requeue),
            ("delete", _) => op(AdminOp::Delete),
            _ => None,
        }
    }
}

/// Who may do what: root everything, and so may `operator`, the user who
/// started a master not run as root (whose processes all run as that
/// user); anyone may list the queue, as mailq has always allowed, and ask
/// for a flush, as Postfix allows. The mail user of a master run as root
/// is anyone here: its processes (the connector, which reads DNS answers
/// from the network, among them) must not stop the mail system or take
/// mail out of the queue.
pub fn authorized(command: Command, peer_uid: u32, operator: Option<u32>) -> bool {
    matches!(command, Command::Queue | Command::Flush) || peer_uid == 0 || Some(peer_uid) == operator
}

enum Phase {
    Reading,
    /// Passing a queue listing, or a message shown, from qmgr on to the
    /// client.
    Listing(forward::Forward),
    /// Waiting for qmgr's answer to an operator action or flush.
    Queue,
    /// Waiting for master (and for status, qmgr).
    Waiting {
        command: Command,
        master: Option<Value>,
        queue: Option<Value>,
        asked_qmgr: Option<Instant>,
    },
    Writing {
        out: Vec<u8>,
        sent: usize,
    },
}

struct Client {
    stream: UnixStream,
    /// The peer's uid from the kernel; None if it could not be had.
    uid: Option<u32>,
    buf: Vec<u8>,
    /// Reading the request: `control.timeout` from the connection; then
    /// the bound on its answer ([`ANSWER_WAIT`], [`LIST_IDLE`]).
    deadline: Instant,
    phase: Phase,
}

struct Control {
    child: Child,
    poll: Poll,
    listener: UnixListener,
    qmgr: Option<Channel>,
    clients: HashMap<Token, Client>,
    next: usize,
    /// Who besides root may use every command (see [`authorized`]).
    operator: Option<u32>,
}

/// Serve until master says stop.
pub fn serve(_token: Sandboxed, mut child: Child) -> ! {
    let Some(fd) = child.fds.pop() else { child.fatal("no control listener") };
    let std_listener = StdListener::from(fd);
    if let Err(e) = std_listener.set_nonblocking(true) {
        child.fatal(&format!("control listener: {e}"));
    }
    let poll = Poll::new().unwrap_or_else(|e| crate::child::die(Role::Control, &format!("poll: {e}")));
    let listener = UnixListener::from_std(std_listener);
    let operator = child.config.operator;
    let mut c = Control { child, poll, listener, qmgr: None, clients: HashMap::new(), next: FIRST_CLIENT, operator };
    let reg = c.poll.registry();
    if let Err(e) =
        c.child.register_master(reg, MASTER).and_then(|()| reg.register(&mut c.listener, LISTENER, Interest::READABLE))
    {
        c.child.fatal(&format!("registering: {e}"));
    }
    let mut events = Events::with_capacity(64);
    loop {
        let timeout = c.next_deadline().map(|d| d.saturating_duration_since(Instant::now()));
        if let Err(e) = c.poll.poll(&mut events, timeout)
            && e.kind() != ErrorKind::Interrupted
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
                LISTENER => c.accept(),
                QMGR => c.qmgr_readable(),
                t => c.client_event(t),
            }
        }
        c.expire();
        c.child.end_turn(c.poll.registry());
    }
}

impl Control {
    fn next_deadline(&self) -> Option<Instant> {
        let mut d = self.clients.values().map(|c| c.deadline).min();
        for c in self.clients.values() {
            if let Phase::Waiting { asked_qmgr: Some(t), .. } = c.phase {
                d = Some(d.map_or(t + QMGR_WAIT, |x| x.min(t + QMGR_WAIT)));
            }
        }
        d
    }

    fn accept(&mut self) {
        while self.clients.len() < self.child.config.control.clients as usize {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let uid = peer_uid(&stream);
                    let token = Token(self.next);
                    self.next += 1;
                    if self.poll.registry().register(&mut stream, token, Interest::READABLE).is_err() {
                        continue;
                    }
                    let deadline = Instant::now() + self.child.config.control.timeout;
                    self.clients
                        .insert(token, Client { stream, uid, buf: Vec::new(), deadline, phase: Phase::Reading });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.child.warn(&format!("accept: {e}"));
                    return;
                }
            }
        }
    }

    fn client_event(&mut self, token: Token) {
        let Some(c) = self.clients.get_mut(&token) else { return };
        match &mut c.phase {
            Phase::Reading => {
                let mut chunk = [0u8; 512];
                loop {
                    match c.stream.read(&mut chunk) {
                        Ok(0) => return self.close(token),
                        Ok(n) => {
                            c.buf.extend_from_slice(&chunk[..n]);
                            if c.buf.len() > MAX_REQUEST {
                                return self.answer(token, json!({"ok": false, "error": "request too long"}));
                            }
                            if let Some(end) = c.buf.iter().position(|&b| b == b'\n') {
                                let line = String::from_utf8_lossy(&c.buf[..=end]).into_owned();
                                return self.request(token, &line);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => return self.close(token),
                    }
                }
            }
            Phase::Writing { .. } => self.write_out(token),
            Phase::Listing(_) => self.pump(token),
            Phase::Waiting { .. } | Phase::Queue => {}
        }
    }

    fn request(&mut self, token: Token, line: &str) {
        let Some(command) = Command::parse(line) else {
            let known = "status, reload, stop, queue, show ID, hold ID, release ID, requeue ID, delete ID, flush";
            return self.answer(token, json!({"ok": false, "error": format!("unknown command ({known})")}));
        };
        let uid = self.clients.get(&token).and_then(|c| c.uid);
        if !uid.is_some_and(|u| authorized(command, u, self.operator)) {
            let who = uid.map_or_else(|| String::from("unknown"), |u| u.to_string());
            self.child.info(&format!("control request {} refused for uid {who}", command.name()));
            return self.answer(token, json!({"ok": false, "error": "permission denied"}));
        }
        let id = token.0 as u64;
        // The request is read: from now on the answer's bound applies.
        if let Some(c) = self.clients.get_mut(&token) {
            let streamed = matches!(command, Command::Queue | Command::Show(_));
            c.deadline = Instant::now() + if streamed { LIST_IDLE } else { ANSWER_WAIT };
        }
        let streamed = match command {
            Command::Queue => Some((ControlToQmgr::List { id }, forward::Forward::default())),
            Command::Show(q) => Some((ControlToQmgr::Show { id, queue_id: q.to_string() }, forward::Forward::show())),
            _ => None,
        };
        if let Some((m, f)) = streamed {
            // (Only the administrator may show a message: it is limited by
            // qmgr alone.)
            if f.kind() == forward::Kind::Queue {
                let running: Vec<u32> = self
                    .clients
                    .values()
                    .filter(|c| matches!(&c.phase, Phase::Listing(f) if f.kind() == forward::Kind::Queue))
                    .map(|c| c.uid.unwrap_or(u32::MAX))
                    .collect();
                if let Err(e) = forward::may_list(&running, uid.unwrap_or(u32::MAX), self.operator) {
                    return self.answer(token, json!({"ok": false, "error": e}));
                }
            }
            let sent = self.qmgr.as_mut().is_some_and(|q| q.send(&m, &[]).is_ok());
            if !sent {
                return self.answer(token, json!({"ok": false, "error": "the queue manager is not running"}));
            }
            if let Some(c) = self.clients.get_mut(&token) {
                c.phase = Phase::Listing(f);
                // Only written to from now on (a client that goes away
                // shows as an error on the socket).
                let _ = self.poll.registry().reregister(&mut c.stream, token, Interest::WRITABLE);
            }
            return;
        }
        let to_qmgr = match command {
            Command::Admin(op, q) => Some(ControlToQmgr::Admin { id, op, queue_id: q.to_string() }),
            Command::Flush => Some(ControlToQmgr::Flush { id }),
            _ => None,
        };
        if let Some(m) = to_qmgr {
            if !self.qmgr.as_mut().is_some_and(|q| q.send(&m, &[]).is_ok()) {
                return self.answer(token, json!({"ok": false, "error": "the queue manager is not running"}));
            }
            if let Some(c) = self.clients.get_mut(&token) {
                c.phase = Phase::Queue;
            }
            return;
        }
        let to_master = match command {
            Command::Status => ToMaster::Status { id },
            Command::Reload => ToMaster::Reload { id },
            Command::Stop => ToMaster::Stop { id },
            _ => return,
        };
        if let Err(e) = self.child.master.send(&to_master, &[]) {
            self.child.fatal(&format!("master channel: {e}"));
        }
        let mut asked_qmgr = None;
        if command == Command::Status
            && let Some(q) = self.qmgr.as_mut()
            && q.send(&ControlToQmgr::QueueCounts { id }, &[]).is_ok()
        {
            asked_qmgr = Some(Instant::now());
        }
        if let Some(c) = self.clients.get_mut(&token) {
            c.phase = Phase::Waiting { command, master: None, queue: None, asked_qmgr };
        }
    }

    fn master_readable(&mut self) {
        loop {
            match self.child.master.recv::<FromMaster>() {
                Ok(None) => return,
                Ok(Some((FromMaster::Peer { role: Role::Qmgr, pid }, fds))) => {
                    let mut chan = self.child.peer_channel(Role::Qmgr, fds);
                    let raw = chan.as_raw_fd();
                    if let Some(old) = self.qmgr.take() {
                        let old_raw = old.as_raw_fd();
                        let _ = self.poll.registry().deregister(&mut SourceFd(&old_raw));
                        self.qmgr_gone();
                    }
                    if let Err(e) = self.poll.registry().register(&mut SourceFd(&raw), QMGR, Interest::READABLE) {
                        self.child.fatal(&format!("registering the qmgr channel: {e}"));
                    }
                    let _ = chan.flush();
                    self.qmgr = Some(chan);
                    self.child.debug(&format!("channel to qmgr pid {pid}"));
                }
                Ok(Some((FromMaster::Stop, _))) => {
                    self.child.exit(0);
                }
                Ok(Some((FromMaster::Status { id, status }, _))) => self.master_reply(id, status_json(&status)),
                Ok(Some((FromMaster::Reloaded { id, result }, _))) => {
                    let v = match result {
                        Ok(g) => json!({"ok": true, "generation": g}),
                        Err(e) => json!({"ok": false, "error": e}),
                    };
                    self.master_reply(id, v)
                }
                Ok(Some((FromMaster::Stopping { id }, _))) => self.master_reply(id, json!({"ok": true})),
                Ok(Some((m, _))) => self.child.fatal(&format!("unexpected message from master: {m:?}")),
                Err(crate::ipc::Error::Closed) => std::process::exit(0),
                Err(e) => self.child.fatal(&format!("master channel: {e}")),
            }
        }
    }

    fn master_reply(&mut self, id: u64, v: Value) {
        let token = Token(id as usize);
        let Some(c) = self.clients.get_mut(&token) else { return };
        if let Phase::Waiting { master, .. } = &mut c.phase {
            *master = Some(v);
        }
        self.maybe_finish(token);
    }

    fn qmgr_readable(&mut self) {
        loop {
            let Some(q) = self.qmgr.as_mut() else { return };
            match q.recv::<QmgrToControl>() {
                Ok(None) => return,
                Ok(Some((QmgrToControl::QueueCounts { id, counts }, fds))) => {
                    if !fds.is_empty() {
                        self.child.fatal("qmgr sent descriptors with queue counts");
                    }
                    let token = Token(id as usize);
                    if let Some(c) = self.clients.get_mut(&token)
                        && let Phase::Waiting { queue, .. } = &mut c.phase
                    {
                        let map: serde_json::Map<String, Value> =
                            counts.into_iter().map(|(k, n)| (k, Value::from(n))).collect();
                        *queue = Some(Value::Object(map));
                    }
                    self.maybe_finish(token);
                }
                Ok(Some((QmgrToControl::List { id, entries, last }, fds))) => {
                    if !fds.is_empty() {
                        self.child.fatal("qmgr sent descriptors with a listing");
                    }
                    let token = Token(id as usize);
                    match self.clients.get_mut(&token) {
                        Some(c) if matches!(c.phase, Phase::Listing(_)) => {
                            if let Phase::Listing(f) = &mut c.phase {
                                f.part(&entries, last);
                            }
                            c.deadline = Instant::now() + LIST_IDLE;
                            self.pump(token);
                        }
                        // The client went away (and its cancel is on its
                        // way to qmgr).
                        _ => {}
                    }
                }
                Ok(Some((QmgrToControl::Shown { id, message, recipients, last }, fds))) => {
                    if !fds.is_empty() {
                        self.child.fatal("qmgr sent descriptors with a message");
                    }
                    let token = Token(id as usize);
                    // (A client gone: its cancel is on its way to qmgr.)
                    if let Some(c) = self.clients.get_mut(&token)
                        && let Phase::Listing(f) = &mut c.phase
                    {
                        f.shown(message.as_deref(), &recipients, last);
                        c.deadline = Instant::now() + LIST_IDLE;
                        self.pump(token);
                    }
                }
                Ok(Some((QmgrToControl::Done { id, result }, fds))) => {
                    if !fds.is_empty() {
                        self.child.fatal("qmgr sent descriptors with an answer");
                    }
                    let token = Token(id as usize);
                    if let Some(c) = self.clients.get_mut(&token)
                        && let Phase::Listing(f) = &mut c.phase
                    {
                        // A listing (or show) qmgr would not start.
                        f.fail(result.as_ref().err().map_or("the queue listing failed", String::as_str));
                        self.pump(token);
                        continue;
                    }
                    let v = match result {
                        Ok(text) => json!({"ok": true, "result": text}),
                        Err(e) => json!({"ok": false, "error": e}),
                    };
                    self.queue_reply(Token(id as usize), v);
                }
                Err(crate::ipc::Error::Closed) => {
                    if let Some(old) = self.qmgr.take() {
                        let raw = old.as_raw_fd();
                        let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
                    }
                    self.qmgr_gone();
                    return;
                }
                Err(e) => self.child.fatal(&format!("qmgr channel: {e}")),
            }
        }
    }

    /// The qmgr channel closed or was replaced: what was asked of it will
    /// not be answered.
    fn qmgr_gone(&mut self) {
        let tokens: Vec<Token> = self.clients.keys().copied().collect();
        for t in tokens {
            let Some(c) = self.clients.get_mut(&t) else { continue };
            match &mut c.phase {
                Phase::Listing(f) if !f.ended() => {
                    f.fail("the queue manager went away; try again");
                    self.pump(t);
                }
                Phase::Queue => {
                    self.answer(t, json!({"ok": false, "error": "the queue manager went away; try again"}));
                }
                _ => {}
            }
        }
    }

    /// Write what a listing has for its client, and ask qmgr for more as
    /// it drains; close the client at the end, or when it went away.
    fn pump(&mut self, token: Token) {
        let Some(c) = self.clients.get_mut(&token) else { return };
        let Phase::Listing(f) = &mut c.phase else { return };
        let mut gone = false;
        let mut moved = false;
        while !f.pending().is_empty() {
            match c.stream.write(f.pending()) {
                Ok(0) => {
                    gone = true;
                    break;
                }
                Ok(n) => {
                    f.wrote(n);
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        if gone || f.done() {
            return self.close(token);
        }
        if moved {
            c.deadline = Instant::now() + LIST_IDLE;
        }
        let credit = f.credit();
        let id = token.0 as u64;
        for _ in 0..credit {
            let sent = self.qmgr.as_mut().is_some_and(|q| q.send(&ControlToQmgr::ListMore { id }, &[]).is_ok());
            if !sent {
                if let Some(c) = self.clients.get_mut(&token)
                    && let Phase::Listing(f) = &mut c.phase
                {
                    f.fail("the queue manager is not running");
                }
                return self.pump(token);
            }
        }
    }

    fn queue_reply(&mut self, token: Token, v: Value) {
        if self.clients.get(&token).is_some_and(|c| matches!(c.phase, Phase::Queue)) {
            self.answer(token, v);
        }
    }

    /// Answer a waiting client once everything it needs is in (or qmgr
    /// took too long: then without queue counts).
    fn maybe_finish(&mut self, token: Token) {
        let Some(c) = self.clients.get_mut(&token) else { return };
        let Phase::Waiting { command, master, queue, asked_qmgr } = &mut c.phase else { return };
        let Some(m) = master.take() else { return };
        let qmgr_late = asked_qmgr.is_some_and(|t| t.elapsed() >= QMGR_WAIT);
        if *command == Command::Status && asked_qmgr.is_some() && queue.is_none() && !qmgr_late {
            *master = Some(m);
            return;
        }
        let mut v = m;
        if *command == Command::Status {
            v["queue"] = queue.take().unwrap_or(Value::Null);
        }
        self.answer(token, v);
    }

    fn answer(&mut self, token: Token, v: Value) {
        let Some(c) = self.clients.get_mut(&token) else { return };
        let mut out = v.to_string().into_bytes();
        out.push(b'\n');
        c.phase = Phase::Writing { out, sent: 0 };
        c.deadline = Instant::now() + ANSWER_WAIT;
        let _ = self.poll.registry().reregister(&mut c.stream, token, Interest::WRITABLE);
        self.write_out(token);
    }

    fn write_out(&mut self, token: Token) {
        let Some(c) = self.clients.get_mut(&token) else { return };
        let Phase::Writing { out, sent } = &mut c.phase else { return };
        while *sent < out.len() {
            match c.stream.write(&out[*sent..]) {
                Ok(0) => break,
                Ok(n) => *sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.close(token);
    }

    fn close(&mut self, token: Token) {
        if let Some(mut c) = self.clients.remove(&token) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            // A listing cut short: qmgr stops it.
            if let Phase::Listing(f) = &c.phase
                && !f.ended()
                && let Some(q) = self.qmgr.as_mut()
            {
                let _ = q.send(&ControlToQmgr::ListCancel { id: token.0 as u64 }, &[]);
            }
        }
        // A slot is free: take any connection waiting in the backlog.
        self.accept();
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let tokens: Vec<Token> = self.clients.keys().copied().collect();
        for t in tokens {
            let late_qmgr = matches!(self.clients.get(&t).map(|c| &c.phase),
                Some(Phase::Waiting { asked_qmgr: Some(a), .. }) if a.elapsed() >= QMGR_WAIT);
            if late_qmgr {
                self.maybe_finish(t);
            }
            if self.clients.get(&t).is_some_and(|c| c.deadline <= now) {
                self.close(t);
            }
        }
    }
}

/// One listed message in the shape `mtactl -j queue` and mailq use
/// (`omitted`: recipients left out of a very large entry, only when
/// there are some).
pub fn entry_json(e: &QueueEntry) -> Value {
    let rcpts: Vec<Value> =
        e.recipients.iter().map(|(a, st, why)| json!({"address": a, "state": st, "reason": why})).collect();
    let mut v = json!({
        "id": e.id, "queue": e.queue, "size": e.size, "arrival": e.arrival, "sender": e.sender, "recipients": rcpts,
    });
    if e.omitted > 0 {
        v["omitted"] = Value::from(e.omitted);
    }
    v
}

/// A message shown, but for its recipients (which follow it a line
/// each, [`recipient_json`]): the first line of `show`'s answer.
pub fn message_json(d: &MessageDetail) -> Value {
    let pairs = |v: &[(String, String)]| -> serde_json::Map<String, Value> {
        v.iter().map(|(k, x)| (k.clone(), Value::from(x.clone()))).collect()
    };
    json!({
        "id": d.entry.id, "queue": d.entry.queue, "size": d.entry.size, "arrival": d.entry.arrival,
        "sender": d.entry.sender, "client": pairs(&d.client), "parameters": pairs(&d.parameters),
        "headers": String::from_utf8_lossy(&d.headers),
    })
}

/// One recipient of a message shown.
pub fn recipient_json(r: &RecipientDetail) -> Value {
    json!({
        "address": r.address, "orcpt": r.orcpt, "notify": r.notify, "state": r.state,
        "attempts": r.attempts, "next_attempt": r.next_attempt, "reason": r.reason,
    })
}

fn status_json(s: &MasterStatus) -> Value {
    let children: Vec<Value> = s
        .children
        .iter()
        .map(|c| {
            json!({
                "role": c.role.name(), "pid": c.pid, "generation": c.generation,
                "uptime_secs": c.uptime_secs, "restarts": c.restarts, "state": c.state.name(),
            })
        })
        .collect();
    json!({
        "ok": true,
        "master": {"version": s.version, "pid": s.pid, "generation": s.generation, "uptime_secs": s.uptime_secs},
        "children": children,
    })
}

/// The uid of the process at the other end of a UNIX stream.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials).ok().map(|c| c.uid())
}

/// The uid of the process at the other end of a UNIX stream.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    nix::unistd::getpeereid(stream).ok().map(|(u, _)| u.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_do_what() {
        let id = QueueId::parse("1NG5APFQRKP00009BDCR").unwrap();
        let admin = [
            Command::Status,
            Command::Reload,
            Command::Stop,
            Command::Show(id),
            Command::Admin(AdminOp::Hold, id),
            Command::Admin(AdminOp::Delete, id),
        ];
        let anyone = [Command::Queue, Command::Flush];
        // Master run as root, its mail user uid 999: root alone
        // administers; the mail user is anyone.
        for c in admin {
            assert!(authorized(c, 0, None), "{c:?}");
            assert!(!authorized(c, 999, None), "the mail user may {c:?}");
            assert!(!authorized(c, 1000, None), "{c:?}");
        }
        // Master run by uid 1000: that user and root.
        for c in admin {
            assert!(authorized(c, 1000, Some(1000)), "{c:?}");
            assert!(authorized(c, 0, Some(1000)), "{c:?}");
            assert!(!authorized(c, 1001, Some(1000)), "{c:?}");
        }
        for c in anyone {
            for (peer, operator) in [(0, None), (999, None), (1001, Some(1000))] {
                assert!(authorized(c, peer, operator), "{c:?}");
            }
        }
    }
}

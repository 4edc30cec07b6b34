//! The bounce role: qmgr asks for the notices a message owes its sender
//! (failures, delays, successes, each naming its recipients) and lends a
//! read-only descriptor of the queue file; bounce reads the envelope and
//! the recipients' stored reasons from it, composes each report with the
//! composer of this module, and submits it to cleanup as a new message
//! from the null sender, the way pickup submits local mail. qmgr hears
//! "done" only once cleanup has committed every report, so a crash
//! anywhere repeats a notice, never loses one. Before a report quotes
//! the content, its CRC is checked, as the delivery agents check it: a
//! damaged file (or one holding another message) is reported to qmgr as
//! corrupt, and qmgr moves it to corrupt/; no notice goes out for it.
//!
//! A report is composed in memory: what it returns of the original is
//! bounded by `bounce.size_limit`, and requests are served one at a time.
//!
//! Asked to stop, bounce goes on serving its qmgr, which is draining
//! (`qmgr::drain`: it asks for the notices of the deliveries it still
//! hears of), and exits once that qmgr's channel closes (at once when it
//! has none). On a reload master gives it the new cleanup, since the old
//! one is gone; at a stop cleanup stays until qmgr and bounce are.
//!
//! Trusts: master and qmgr for the request (the indexes are checked
//! against the file); nothing in the queue file, which the queue reader
//! validates and the composer cleans before quoting.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use mio::{Events, Poll, Token};
use sandbox::{Grant, Sandboxed};

use super::{
    Action, Addressee, Diagnostic, Kind, Options, Original, OriginalEnvelope, RecipientReport, Report, StatusCode,
    addressee,
};
use crate::child::{Child, drop_channel, install_channel};
use crate::ipc::Channel;
use crate::ipc::msg::{
    BounceToQmgr, CleanupToSmtpd, CommitResult, FromMaster, MessageEnvelope, NoticeRequest, QmgrToBounce,
    SmtpdToCleanup,
};
use crate::queue::file::verify_content;
use crate::queue::{ContentRange, DoneAction, QueueEnvelope, QueueId, State, Time, read_envelope};
use crate::roles::Role;

const MASTER: Token = Token(0);
const QMGR: Token = Token(1);
const CLEANUP: Token = Token(2);
/// Requests waiting; more is a qmgr out of step (it waits for answers).
const MAX_WAITING: usize = crate::ipc::msg::MAX_NOTICES_OUTSTANDING;
/// Content sent to cleanup per message on the channel.
const CHUNK: usize = 32 * 1024;

/// The original's content in a queue file, for the composer.
struct QueueContent<'a> {
    file: &'a File,
    range: ContentRange,
}

impl Original for QueueContent<'_> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        if offset >= self.range.len {
            return Ok(0);
        }
        let n = buf.len().min((self.range.len - offset) as usize);
        self.file.read_at(&mut buf[..n], self.range.offset + offset)
    }
}

/// A request being served: reports handed to cleanup, awaiting commits.
struct Current {
    req: u64,
    queue_id: String,
    waiting: HashSet<u64>,
    queued: Vec<String>,
    error: Option<String>,
}

struct Bounce {
    child: Child,
    poll: Poll,
    qmgr: Option<Channel>,
    cleanup: Option<Channel>,
    waiting: VecDeque<(NoticeRequest, File)>,
    current: Option<Current>,
    next_txn: u64,
    options: Options,
    lifetime: Duration,
    /// Master asked us to stop: we exit once qmgr's channel is gone.
    stopping: bool,
}

/// Serve until master says stop.
pub fn serve(_token: Sandboxed, mut child: Child) -> ! {
    let poll = Poll::new().unwrap_or_else(|e| crate::child::die(Role::Bounce, &format!("poll: {e}")));
    let Some(delivery) = child.config.delivery.clone() else { child.fatal("no delivery settings from master") };
    if let Err(e) = child.register_master(poll.registry(), MASTER) {
        child.fatal(&format!("registering the master channel: {e}"));
    }
    let options = Options {
        size_limit: delivery.bounce.size_limit,
        postmaster: format!("postmaster@{}", child.config.hostname),
        double_bounce: format!("double-bounce@{}", child.config.hostname),
        ..Options::default()
    };
    let mut b = Bounce {
        child,
        poll,
        qmgr: None,
        cleanup: None,
        waiting: VecDeque::new(),
        current: None,
        next_txn: 1,
        options,
        lifetime: delivery.queue.lifetime,
        stopping: false,
    };
    let mut events = Events::with_capacity(16);
    loop {
        if let Err(e) = b.poll.poll(&mut events, None)
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            b.child.fatal(&format!("poll: {e}"));
        }
        for ev in events.iter() {
            match ev.token() {
                MASTER => {
                    if b.child.master_event(ev) {
                        b.master_readable();
                    }
                }
                QMGR => b.qmgr_event(),
                CLEANUP => b.cleanup_event(),
                _ => {}
            }
        }
        b.next();
        b.child.end_turn(b.poll.registry());
        if b.stopping && b.qmgr.is_none() {
            b.child.exit(0);
        }
    }
}

impl Bounce {
    fn master_readable(&mut self) {
        loop {
            match self.child.master.recv::<FromMaster>() {
                Ok(None) => return,
                Ok(Some((FromMaster::Peer { role: role @ (Role::Qmgr | Role::Cleanup), pid }, fds))) => {
                    let chan = self.child.peer_channel(role, fds);
                    let (token, slot) =
                        if role == Role::Qmgr { (QMGR, &mut self.qmgr) } else { (CLEANUP, &mut self.cleanup) };
                    install_channel(&mut self.child, &self.poll, slot, chan, token);
                    self.child.debug(&format!("channel to {} pid {pid}", role.name()));
                    if role == Role::Qmgr {
                        // A new qmgr asks again for whatever it still needs.
                        self.waiting.clear();
                        self.current = None;
                    } else {
                        self.fail_current("cleanup restarted");
                    }
                }
                Ok(Some((FromMaster::Stop, _))) => {
                    self.stopping = true;
                    if self.qmgr.is_none() {
                        self.child.exit(0);
                    }
                }
                Ok(Some((m, _))) => self.child.fatal(&format!("unexpected message from master: {m:?}")),
                Err(crate::ipc::Error::Closed) => std::process::exit(0),
                Err(e) => self.child.fatal(&format!("master channel: {e}")),
            }
        }
    }

    fn qmgr_event(&mut self) {
        if let Some(q) = self.qmgr.as_mut() {
            let _ = q.flush();
        }
        loop {
            let Some(q) = self.qmgr.as_mut() else { return };
            match q.recv::<QmgrToBounce>() {
                Ok(None) => return,
                Ok(Some((QmgrToBounce::Notify(r), mut fds))) => {
                    if fds.len() != 1 {
                        self.child.fatal(&format!("qmgr sent a notice request with {} descriptors", fds.len()));
                    }
                    let fd: OwnedFd = fds.remove(0);
                    if let Err(e) = sandbox::limit_received(&Grant::File { fd: fd.as_raw_fd(), write: false }) {
                        self.child.fatal(&format!("limiting a queue file: {e}"));
                    }
                    if self.waiting.len() >= MAX_WAITING {
                        self.child.fatal("qmgr sent more notice requests than it may have outstanding");
                    }
                    self.waiting.push_back((*r, File::from(fd)));
                }
                Err(crate::ipc::Error::Closed) => {
                    drop_channel(&self.poll, &mut self.qmgr);
                    self.waiting.clear();
                    self.current = None;
                    return;
                }
                Err(e) => self.child.fatal(&format!("qmgr channel: {e}")),
            }
        }
    }

    fn cleanup_event(&mut self) {
        if let Some(c) = self.cleanup.as_mut() {
            let _ = c.flush();
        }
        loop {
            let Some(c) = self.cleanup.as_mut() else { return };
            match c.recv::<CleanupToSmtpd>() {
                Ok(None) => return,
                Ok(Some((CleanupToSmtpd::Committed { txn, result }, _))) => self.committed(txn, result),
                Ok(Some((CleanupToSmtpd::Space { .. } | CleanupToSmtpd::Ids { .. }, _))) => {}
                Err(crate::ipc::Error::Closed) => {
                    drop_channel(&self.poll, &mut self.cleanup);
                    self.fail_current("cleanup went away");
                    return;
                }
                Err(e) => self.child.fatal(&format!("cleanup channel: {e}")),
            }
        }
    }

    fn committed(&mut self, txn: u64, result: CommitResult) {
        let Some(cur) = self.current.as_mut() else { return };
        if !cur.waiting.remove(&txn) {
            return;
        }
        match result {
            CommitResult::Queued(id) => cur.queued.push(id),
            CommitResult::TempFail(why) => cur.error = Some(why),
            CommitResult::NoSpace => cur.error = Some(String::from("the spool is short of space")),
            // A report cleanup will never take (say, a sender address it
            // refuses) is dropped with a warning rather than retried for
            // ever.
            CommitResult::Refused { code, enhanced, text } => {
                let id = cur.queue_id.clone();
                self.child.warn(&format!("{id}: notice refused by cleanup: {code} {enhanced} {text}"));
            }
        }
        self.finish_if_done();
    }

    fn fail_current(&mut self, why: &str) {
        if let Some(cur) = self.current.as_mut() {
            cur.waiting.clear();
            cur.error = Some(why.to_string());
        }
        self.finish_if_done();
    }

    fn finish_if_done(&mut self) {
        if self.current.as_ref().is_none_or(|c| !c.waiting.is_empty()) {
            return;
        }
        let Some(cur) = self.current.take() else { return };
        let result = match cur.error {
            Some(e) => Err(e),
            None => Ok(cur.queued),
        };
        self.answer(cur.req, result);
    }

    fn answer(&mut self, req: u64, result: Result<Vec<String>, String>) {
        if let Some(q) = self.qmgr.as_mut()
            && let Err(e) = q.send(&BounceToQmgr::Done { req, result }, &[])
        {
            self.child.warn(&format!("answering qmgr: {e}"));
        }
    }

    /// Start the next request when the last one is answered.
    fn next(&mut self) {
        while self.current.is_none() {
            let Some((r, file)) = self.waiting.pop_front() else { return };
            if self.cleanup.is_none() {
                self.answer(r.req, Err(String::from("cleanup is not running")));
                continue;
            }
            match self.reports(&r, &file) {
                Ok(reports) if reports.is_empty() => self.answer(r.req, Ok(Vec::new())),
                Ok(reports) => self.submit(&r, reports),
                Err(Fault::Failed(e)) => {
                    self.child.warn(&format!("{}: {e}", r.queue_id));
                    self.answer(r.req, Err(e));
                }
                Err(Fault::Corrupt(reason)) => {
                    self.child.warn(&format!("{}: the queue file is corrupt: {reason}; no notice", r.queue_id));
                    if let Some(q) = self.qmgr.as_mut()
                        && let Err(e) = q.send(&BounceToQmgr::Corrupt { req: r.req, reason }, &[])
                    {
                        self.child.warn(&format!("answering qmgr: {e}"));
                    }
                }
            }
        }
    }

    /// Hand each report to cleanup as a message from `<>` (the
    /// postmaster's from [`Options::double_bounce`]).
    fn submit(&mut self, r: &NoticeRequest, reports: Vec<Notice>) {
        let mut cur = Current {
            req: r.req,
            queue_id: r.queue_id.clone(),
            waiting: HashSet::new(),
            queued: Vec::new(),
            error: None,
        };
        for Notice { from, to, composed: c } in reports {
            let txn = self.next_txn;
            self.next_txn += 1;
            let envelope =
                MessageEnvelope::internal(from, vec![to], c.eight_bit, c.smtputf8, &self.child.config.hostname);
            let Some(chan) = self.cleanup.as_mut() else { break };
            let mut ok = chan.send(&SmtpdToCleanup::Begin { txn, id: None, envelope: Box::new(envelope) }, &[]).is_ok();
            for piece in c.bytes.chunks(CHUNK) {
                ok = ok && chan.send(&SmtpdToCleanup::Content { txn, data: piece.to_vec() }, &[]).is_ok();
            }
            ok = ok && chan.send(&SmtpdToCleanup::End { txn }, &[]).is_ok();
            if !ok {
                cur.error = Some(String::from("cannot hand the notice to cleanup"));
                break;
            }
            cur.waiting.insert(txn);
        }
        self.current = Some(cur);
        self.finish_if_done();
    }

    /// Compose the reports a request asks for. The content is checked
    /// before the first report quotes it.
    fn reports(&mut self, r: &NoticeRequest, file: &File) -> Result<Vec<Notice>, Fault> {
        let q = read_original(file, &r.queue_id)?;
        let mut checked = false;
        let now = Time::now();
        let mut out = Vec::new();
        for (kind, indexes) in [(Kind::Failure, &r.failure), (Kind::Delay, &r.delay), (Kind::Success, &r.success)] {
            if indexes.is_empty() {
                continue;
            }
            let Some(to) = addressee(&q.envelope.sender, kind, &self.options.double_bounce) else {
                if kind == Kind::Failure && !q.envelope.sender.is_empty() {
                    self.child.warn(&format!(
                        "{}: from=<{}>: discarding an undeliverable postmaster notice",
                        q.id, q.envelope.sender
                    ));
                }
                continue;
            };
            let recipients = indexes
                .iter()
                .map(|&i| recipient(&q, i, kind, self.lifetime))
                .collect::<Result<Vec<_>, String>>()
                .map_err(Fault::Failed)?;
            if !checked {
                check_content(file, &q)?;
                checked = true;
            }
            let report = Report {
                reporting_mta: self.child.config.hostname.clone(),
                original: OriginalEnvelope {
                    queue_id: q.id,
                    sender: q.envelope.sender.clone(),
                    envid: q.envelope.dsn_envid.clone(),
                    ret: q.envelope.dsn_ret,
                    arrival: q.envelope.arrival.secs,
                    smtputf8: q.envelope.smtputf8,
                    body: q.envelope.body,
                    content_len: q.content_range().len,
                },
                kind,
                to,
                recipients,
                date: now.secs,
                unique: unique(&q.id, kind, now),
            };
            let (from, address) = match to {
                Addressee::Sender => (String::new(), q.envelope.sender.clone()),
                Addressee::Postmaster => (self.options.double_bounce.clone(), self.options.postmaster.clone()),
            };
            let composed = compose(report, self.options.clone(), file, q.content_range()).map_err(Fault::Failed)?;
            out.push(Notice { from, to: address, composed });
        }
        Ok(out)
    }
}

/// Why a request's notices were not composed.
#[derive(Debug, PartialEq, Eq)]
enum Fault {
    /// For now (a read error, a report that cannot be composed): qmgr
    /// asks again later.
    Failed(String),
    /// The queue file fails validation: qmgr moves it to corrupt/.
    Corrupt(String),
}

/// The queue file of a request, its envelope and recipients validated
/// (an unreadable one is a [`Fault::Failed`]; one that fails validation,
/// or holds another message than `queue_id`, [`Fault::Corrupt`]).
fn read_original(file: &File, queue_id: &str) -> Result<QueueEnvelope, Fault> {
    let q = read_envelope(file).map_err(fault)?;
    if q.id.as_str() != queue_id {
        return Err(Fault::Corrupt(format!("the queue file holds message {}, not {queue_id}", q.id)));
    }
    Ok(q)
}

/// Check the content's CRC before a report quotes it (the header or the
/// whole message), as the delivery agents do before they send it: a
/// damaged file is reported, not quoted.
fn check_content(file: &File, q: &QueueEnvelope) -> Result<(), Fault> {
    verify_content(file, q.content_range()).map_err(fault)
}

fn fault(e: crate::queue::Error) -> Fault {
    match e {
        crate::queue::Error::Corrupt(c) => Fault::Corrupt(c.to_string()),
        e => Fault::Failed(e.to_string()),
    }
}

/// A report to submit: its envelope sender (`<>`, or
/// [`Options::double_bounce`] for the postmaster's) and recipient.
struct Notice {
    from: String,
    to: String,
    composed: Composed,
}

/// A composed report and what its submission must declare.
struct Composed {
    bytes: Vec<u8>,
    eight_bit: bool,
    smtputf8: bool,
}

fn compose(report: Report, options: Options, file: &File, range: ContentRange) -> Result<Composed, String> {
    let mut original = QueueContent { file, range };
    let mut c = super::Composer::new(report, options).map_err(|e| e.to_string())?;
    let plan = c.plan(&mut original).map_err(|e| e.to_string())?.clone();
    let mut bytes = Vec::new();
    while let Some(chunk) = c.next_chunk(&mut original).map_err(|e| e.to_string())? {
        bytes.extend_from_slice(chunk);
    }
    Ok(Composed { bytes, eight_bit: plan.body != crate::queue::BodyType::SevenBit, smtputf8: plan.smtputf8 })
}

/// A token unique to one report: the queue ID, the kind and the time.
fn unique(id: &QueueId, kind: Kind, now: Time) -> String {
    let k = match kind {
        Kind::Failure => "F",
        Kind::Delay => "D",
        Kind::Success => "S",
    };
    format!("{}{k}{}{}", id.as_str(), now.secs, now.micros)
}

/// One recipient's lines in a report, from its stored status.
fn recipient(q: &QueueEnvelope, index: u32, kind: Kind, lifetime: Duration) -> Result<RecipientReport, String> {
    let r = q.recipients.get(index as usize).ok_or_else(|| format!("no recipient #{index} in the queue file"))?;
    let action = match kind {
        Kind::Failure => Action::Failed,
        Kind::Delay => Action::Delayed,
        // qmgr asks for success notices only where the next hop did not
        // take the request over; the status says how it was delivered.
        Kind::Success => success_action(r.status.action),
    };
    let expected = match kind {
        Kind::Failure => State::Bounced,
        Kind::Delay => State::Deferred,
        Kind::Success => State::Done,
    };
    if r.status.state != expected {
        return Err(format!("recipient #{index} is {:?}, not {expected:?}", r.status.state));
    }
    let class = match kind {
        Kind::Failure => 5,
        Kind::Delay => 4,
        Kind::Success => 2,
    };
    let (status, remote_mta, diagnostic) = diagnose(&r.status.reason, class);
    let status = if kind == Kind::Delay { temporary(status) } else { status };
    // A done reason recorded before the server was named with it (an
    // older version's: `relayed: 250 2.0.0 Ok`) is still the server's
    // reply: only the Remote-MTA is unknown.
    let diagnostic = match diagnostic {
        Diagnostic::Local(reply) if kind == Kind::Success && smtp_reply(&reply) => Diagnostic::Smtp(reply),
        d => d,
    };
    let retry_until = q.envelope.arrival.secs.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX));
    Ok(RecipientReport {
        address: r.address.clone(),
        orcpt: r.orcpt.clone(),
        action,
        status,
        remote_mta,
        diagnostic,
        last_attempt: (r.status.changed > 0).then_some(r.status.changed),
        will_retry_until: (kind == Kind::Delay).then_some(retry_until),
    })
}

/// The Action (RFC 3464 2.3.3) of a success notice for a done recipient
/// delivered as `done`: a file written before that was recorded is
/// reported "relayed", as it always was.
fn success_action(done: Option<DoneAction>) -> Action {
    match done {
        Some(DoneAction::Delivered) => Action::Delivered,
        Some(DoneAction::Expanded) => Action::Expanded,
        Some(DoneAction::Relayed) | None => Action::Relayed,
    }
}

/// The status code, the remote host and the diagnostic in a stored
/// reason: `host NAME[ADDR] said: REPLY (in reply to X command)` is the
/// remote server's reply; anything else is our own text.
///
/// (A delay notice's status goes through [`temporary`].)
pub fn diagnose(reason: &str, class: u8) -> (StatusCode, Option<String>, Diagnostic) {
    let fallback = StatusCode::new(class, 0, 0).unwrap_or_else(|| StatusCode::new(5, 0, 0).expect("5.0.0 is valid"));
    // A server's reply, at the start or after our own words ("message
    // expired in the queue; last error: host ...").
    let remote = match reason.find("host ") {
        Some(0) => Some(&reason[5..]),
        Some(i) if reason[..i].ends_with(": ") => Some(&reason[i + 5..]),
        _ => None,
    };
    if let Some((host, reply)) = remote.and_then(|r| r.split_once(" said: ")) {
        let reply = match reply.rfind(" (in reply to ") {
            Some(i) if reply.ends_with(')') => &reply[..i],
            _ => reply,
        };
        let mut words = reply.split_whitespace();
        let basic = words.next().and_then(|w| w.get(..1)).and_then(|d| d.parse::<u8>().ok());
        let status = words
            .next()
            .and_then(StatusCode::parse)
            .filter(|s| Some(s.class()) == basic)
            .or_else(|| basic.and_then(|c| StatusCode::new(c, 0, 0)))
            .unwrap_or(fallback);
        let name = host.split('[').next().unwrap_or(host).to_string();
        return (status, Some(name), Diagnostic::Smtp(reply.to_string()));
    }
    // Our own reasons may carry a code of their own (`4.4.1 ...`); an
    // expired message keeps its last temporary one, as Postfix reports.
    let status = reason.split_whitespace().find_map(StatusCode::parse).unwrap_or(fallback);
    (status, None, Diagnostic::Local(reason.to_string()))
}

/// Whether `reason` is an SMTP server's positive reply as the smtp agent
/// gives it (`250 2.0.0 Ok`): a 2xx code, then a space or nothing.
fn smtp_reply(reason: &str) -> bool {
    let b = reason.as_bytes();
    b.len() >= 3 && b[0] == b'2' && b[1..3].iter().all(u8::is_ascii_digit) && matches!(b.get(3), None | Some(b' '))
}

/// A delay is a temporary failure whatever the server said (a 5xx
/// deferred by policy, an AUTH refusal): 4.y.z, as Postfix reports it.
pub fn temporary(status: StatusCode) -> StatusCode {
    StatusCode::new(4, status.subject, status.detail).unwrap_or(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_reply_is_split_from_host_and_command() {
        let (s, host, d) = diagnose(
            "host mx.example.org[192.0.2.1] said: 550 5.1.1 <u@example.org>: no such user (in reply to RCPT TO command)",
            5,
        );
        assert_eq!(s.to_string(), "5.1.1");
        assert_eq!(host.as_deref(), Some("mx.example.org"));
        assert_eq!(d, Diagnostic::Smtp(String::from("550 5.1.1 <u@example.org>: no such user")));
    }

    #[test]
    fn reply_without_enhanced_code_gets_its_class() {
        let (s, _, _) = diagnose("host h[192.0.2.1] said: 452 mailbox full (in reply to end of DATA command)", 5);
        assert_eq!(s.to_string(), "4.0.0");
        // An enhanced code of another class than the reply is not believed.
        let (s, _, _) = diagnose("host h[192.0.2.1] said: 550 4.2.2 odd (in reply to RCPT TO command)", 5);
        assert_eq!(s.to_string(), "5.0.0");
    }

    #[test]
    fn expired_keeps_the_last_reply() {
        let (s, host, d) = diagnose(
            "message expired in the queue; last error: host h[192.0.2.1] said: 450 4.2.1 busy (in reply to RCPT TO command)",
            5,
        );
        assert_eq!(s.to_string(), "4.2.1");
        assert_eq!(host.as_deref(), Some("h"));
        assert_eq!(d, Diagnostic::Smtp(String::from("450 4.2.1 busy")));
    }

    #[test]
    fn a_delay_notice_reports_a_temporary_status_whatever_the_server_said() {
        let (s, _, _) = diagnose("host h[192.0.2.1] said: 535 5.7.8 bad credentials (in reply to AUTH command)", 4);
        assert_eq!(temporary(s).to_string(), "4.7.8");
        let (s, _, _) = diagnose("host h[192.0.2.1] said: 451 4.3.0 later (in reply to RCPT TO command)", 4);
        assert_eq!(temporary(s).to_string(), "4.3.0");
    }

    #[test]
    fn local_reason() {
        let (s, host, d) = diagnose("connect to mx.example.org[192.0.2.1]:25: Connection refused", 4);
        assert_eq!(s.to_string(), "4.0.0");
        assert_eq!(host, None);
        assert_eq!(d, Diagnostic::Local(String::from("connect to mx.example.org[192.0.2.1]:25: Connection refused")));
        let (s, _, _) = diagnose("4.4.1 no route", 4);
        assert_eq!(s.to_string(), "4.4.1");
    }

    #[test]
    fn a_success_notice_says_how_each_recipient_was_delivered() {
        use crate::queue::{QueueIdGen, Status};
        let mut q = crate::queue::tests::sample(&mut QueueIdGen::new(1), 5, 10);
        let how = [Some(DoneAction::Delivered), Some(DoneAction::Relayed), Some(DoneAction::Expanded), None];
        let said = "host mx.example.net[192.0.2.1] said: 250 2.0.0 Ok: queued as X (in reply to end of DATA command)";
        let reasons = ["delivered to file: /x", said, "250 2.0.0 Ok", "250 2.0.0 Ok"];
        for ((r, action), reason) in q.recipients.iter_mut().zip(how).zip(reasons) {
            r.status = Status { state: State::Done, action, reason: reason.into(), ..Status::default() };
        }
        q.recipients[4].status = Status { state: State::Deferred, reason: "451 later".into(), ..Status::default() };
        let path = std::env::temp_dir().join(format!("mta-bounce-action-{}", std::process::id()));
        std::fs::write(&path, q.encode().unwrap()).unwrap();
        let f = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let qe = read_envelope(&f).unwrap();
        let lifetime = Duration::from_secs(5 * 86400);
        let got: Vec<Action> = (0..4).map(|i| recipient(&qe, i, Kind::Success, lifetime).unwrap().action).collect();
        // (A file from a version that recorded no action: "relayed", as then.)
        assert_eq!(got, [Action::Delivered, Action::Relayed, Action::Expanded, Action::Relayed]);
        // Our own words; a server's reply, with the server that gave it
        // (RFC 3464 2.3.5: Remote-MTA), or as recorded before it was.
        let r = |i| recipient(&qe, i, Kind::Success, lifetime).unwrap();
        assert_eq!((r(0).remote_mta, r(0).diagnostic), (None, Diagnostic::Local("delivered to file: /x".into())));
        assert_eq!(r(1).remote_mta.as_deref(), Some("mx.example.net"));
        assert_eq!(r(1).diagnostic, Diagnostic::Smtp("250 2.0.0 Ok: queued as X".into()));
        for i in 2..4 {
            assert_eq!((r(i).remote_mta, r(i).diagnostic), (None, Diagnostic::Smtp("250 2.0.0 Ok".into())));
        }
        assert!(!smtp_reply("2500 x") && !smtp_reply("delivered") && smtp_reply("250") && !smtp_reply("450 x"));
        assert!(recipient(&qe, 4, Kind::Success, lifetime).is_err(), "not done");
        assert_eq!(recipient(&qe, 4, Kind::Delay, lifetime).unwrap().action, Action::Delayed);
    }

    #[test]
    fn a_damaged_content_is_found_before_it_is_quoted() {
        use crate::queue::QueueIdGen;
        let q = crate::queue::tests::sample(&mut QueueIdGen::new(1), 2, 100);
        let mut bytes = q.encode().unwrap();
        let path = std::env::temp_dir().join(format!("mta-bounce-crc-{}", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let f = File::open(&path).unwrap();
        let qe = read_original(&f, q.id.as_str()).unwrap();
        assert_eq!(check_content(&f, &qe), Ok(()));
        // Another message's file: corrupt, as for the delivery agents.
        let other = crate::queue::tests::sample(&mut QueueIdGen::new(2), 1, 10).id;
        assert!(matches!(read_original(&f, other.as_str()), Err(Fault::Corrupt(why)) if why.contains("holds message")));
        // One byte of the content changed: the envelope still reads, the
        // content is corrupt.
        let last = bytes.len() - 1;
        bytes[last] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let f = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let qe = read_original(&f, q.id.as_str()).unwrap();
        assert!(
            matches!(check_content(&f, &qe), Err(Fault::Corrupt(why)) if why.contains("CRC")),
            "{:?}",
            check_content(&f, &qe)
        );
    }

    #[test]
    fn content_reads_stop_at_the_range() {
        let dir = std::env::temp_dir().join(format!("mta-bounce-agent-{}", std::process::id()));
        std::fs::write(&dir, b"HEADERhello world").unwrap();
        let f = File::open(&dir).unwrap();
        let mut c = QueueContent { file: &f, range: ContentRange { offset: 6, len: 5, crc: 0 } };
        let mut buf = [0u8; 64];
        assert_eq!(c.read_at(0, &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(c.read_at(3, &mut buf).unwrap(), 2);
        assert_eq!(c.read_at(5, &mut buf).unwrap(), 0);
        std::fs::remove_file(&dir).unwrap();
    }
}

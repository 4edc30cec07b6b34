//! The operator's requests, relayed by control: show a message in full,
//! hold, release, requeue or delete one, flush the deferred queue (a scan
//! of deferred/ a slice per turn, coalesced with the requests that come
//! while one runs: see [`super::rescan`]). Each is carried out by qmgr
//! itself, so it is safe while mail flows: a
//! message being delivered is first taken out of the scheduler (the
//! delivery in flight finishes without effect on it, so a held message
//! may be delivered twice to the recipients of that one delivery), and
//! each action is logged.
//!
//! Trusts: control checked who asked; the queue ID is checked here.

use std::os::unix::fs::FileExt;

use mio::Token;

use crate::ipc::msg::{AdminOp, ControlToQmgr, MessageDetail, QmgrToControl, RecipientDetail};
use crate::queue::{BodyType, Notify, QueueEnvelope, QueueId, Ret, Time};

use super::Qmgr;
use super::listing::Showing;
use super::scan;
use super::store::{Dir, Problem};

/// Most header bytes `show` returns.
const MAX_HEADERS: usize = 64 << 10;
/// The modification time of a message in hold/ whose last pass may have
/// been cut short by the hold (see [`AdminOp::Hold`]).
pub(super) const HELD_UNSETTLED: i64 = 0;

impl Qmgr {
    pub(super) fn admin(&mut self, token: Token, m: ControlToQmgr) {
        let (id, reply) = match m {
            ControlToQmgr::Show { id, queue_id } => {
                // Read now, sent a part at a time as control takes them
                // (see `listing`): a message with very many recipients
                // does not fit the channel in one answer.
                let started = self.show(&queue_id).and_then(|s| self.listings.start_show(token, id, s));
                if let Err(e) = started {
                    self.send_to(token, &QmgrToControl::Done { id, result: Err(e) }, &[]);
                }
                return;
            }
            ControlToQmgr::Admin { id, op, queue_id } => (id, self.operate(op, &queue_id)),
            ControlToQmgr::Flush { id } => {
                // Answered when the flush that covers it ends (see
                // `rescan`); refused only when too many wait.
                if let Err(e) = self.rescans.flush(Some((token, id)), Time::now()) {
                    self.send_to(token, &QmgrToControl::Done { id, result: Err(e) }, &[]);
                }
                return;
            }
            ControlToQmgr::QueueCounts { .. }
            | ControlToQmgr::List { .. }
            | ControlToQmgr::ListMore { .. }
            | ControlToQmgr::ListCancel { .. } => return,
        };
        self.send_to(token, &QmgrToControl::Done { id, result: reply }, &[]);
    }

    /// The message, the queue it is in (active while the scheduler has
    /// it, wherever its file is), and the directory of its file.
    fn find(&mut self, queue_id: &str) -> Result<(QueueId, Dir, Dir), String> {
        let id = QueueId::parse(queue_id).ok_or_else(|| format!("`{queue_id}` is not a queue ID"))?;
        // A message in memory gets its file first (see `memory`).
        self.materialise(id).map_err(|e| format!("{id}: {e}"))?;
        let dir = self.store.find(&id).ok_or_else(|| format!("{id}: no such message in the queue"))?;
        let queue = if self.active.contains_key(&id) { Dir::Active } else { dir };
        Ok((id, queue, dir))
    }

    fn show(&mut self, queue_id: &str) -> Result<Showing, String> {
        let (id, queue, dir) = self.find(queue_id)?;
        let file = self.store.open(dir, &id, false).map_err(|p| format!("{id}: {p}"))?;
        let q = super::store::read(&file, &id).map_err(|p| format!("{id}: {p}"))?;
        let range = q.content_range();
        let want = range.len.min(MAX_HEADERS as u64) as usize;
        let mut buf = vec![0u8; want];
        file.read_exact_at(&mut buf, range.offset).map_err(|e| format!("{id}: reading the headers: {e}"))?;
        let headers = match memchr::memmem::find(&buf, b"\r\n\r\n") {
            Some(end) => buf[..end + 2].to_vec(),
            // No end of the header within the bound: up to the last line end.
            None => buf[..memchr::memmem::rfind(&buf, b"\r\n").map_or(0, |i| i + 2)].to_vec(),
        };
        Ok(showing(queue, q, headers))
    }

    fn operate(&mut self, op: AdminOp, queue_id: &str) -> Result<String, String> {
        let (id, queue, from) = self.find(queue_id)?;
        let now = Time::now();
        let moved = |r: Result<(), Problem>| r.map_err(|p| format!("{id}: {p}"));
        let text = match (op, queue) {
            (AdminOp::Hold, Dir::Hold) => return Err(format!("{id}: already on hold")),
            (AdminOp::Hold, _) => {
                // Held from anywhere but deferred/, a pass may have been
                // cut short with a recipient bounced and its notice not
                // yet sent: dated 0, so that its release takes it like new
                // mail, which reports bounced recipients (again, perhaps:
                // a duplicate, never a loss). Dated first: if that fails,
                // nothing has changed.
                if from != Dir::Deferred {
                    moved(self.store.date(from, &id, HELD_UNSETTLED))?;
                }
                self.release_from(&id);
                if let Err(p) = self.store.rename(&id, from, Dir::Hold) {
                    self.put_back(id, from);
                    return Err(format!("{id}: {p}"));
                }
                format!("{id}: put on hold")
            }
            (AdminOp::Release, Dir::Hold) if self.store.dated(Dir::Hold, &id).is_ok_and(|t| t == HELD_UNSETTLED) => {
                moved(self.store.rename(&id, Dir::Hold, Dir::Incoming))?;
                self.queue_incoming(id);
                format!("{id}: released from hold")
            }
            (AdminOp::Release, Dir::Hold) => {
                moved(self.store.rename(&id, Dir::Hold, Dir::Deferred))?;
                // Due now for this qmgr whatever its file's date says (an
                // older one is due too, at the next start).
                if let Err(p) = self.store.make_due(&id, now) {
                    self.child.warn(&format!("{id}: released, but its file's date was not set: {p}"));
                }
                self.sched.deferred_found(id, now);
                format!("{id}: released from hold")
            }
            (AdminOp::Release, _) => return Err(format!("{id}: not on hold")),
            (AdminOp::Requeue, Dir::Active) => return Err(format!("{id}: being delivered now")),
            (AdminOp::Requeue, Dir::Incoming) if !self.incoming.is_stuck(&id) => {
                return Err(format!("{id}: already waiting for delivery"));
            }
            (AdminOp::Requeue, _) => {
                self.release_from(&id);
                if from != Dir::Incoming
                    && let Err(p) = self.store.rename(&id, from, Dir::Incoming)
                {
                    self.put_back(id, from);
                    return Err(format!("{id}: {p}"));
                }
                self.queue_incoming(id);
                format!("{id}: requeued")
            }
            (AdminOp::Delete, _) => {
                self.release_from(&id);
                if let Err(e) = self.store.remove(from, &id) {
                    self.put_back(id, from);
                    return Err(format!("{id}: {e}"));
                }
                self.finished_file(id);
                format!("{id}: deleted")
            }
        };
        self.child.info(&format!("{text} by the operator"));
        Ok(text)
    }

    /// An operation that took `id` out of the scheduler failed with its
    /// file still in `dir`: it is taken up again from there, as a start
    /// would take it (from active/, through incoming/: what was in flight
    /// may be delivered again, as after a crash of qmgr's).
    fn put_back(&mut self, id: QueueId, dir: Dir) {
        match dir {
            Dir::Incoming => self.queue_incoming(id),
            Dir::Deferred => {
                let now = Time::now();
                let secs = self.store.dated(Dir::Deferred, &id).unwrap_or(now.secs);
                self.sched.deferred_found(id, Time { secs, micros: 0 });
            }
            Dir::Active => match self.store.rename(&id, Dir::Active, Dir::Incoming) {
                Ok(()) => self.queue_incoming(id),
                Err(p) => self.child.warn(&format!("{id}: left in active/ ({p}); taken up at the next start")),
            },
            _ => {}
        }
    }

    /// Take `id` out of the scheduler and the shell's tables before it
    /// leaves its directory.
    fn release_from(&mut self, id: &QueueId) {
        self.sched.drop_message(id);
        self.incoming.forget(id);
        // A notice request bounce has stays counted until it answers (the
        // answer then finds no message and is dropped).
        self.remove_active(id);
    }
}

fn notify_text(n: Option<Notify>) -> Option<String> {
    match n? {
        Notify::Never => Some(String::from("NEVER")),
        Notify::On { success, failure, delay } => {
            let mut v = Vec::new();
            if success {
                v.push("SUCCESS");
            }
            if failure {
                v.push("FAILURE");
            }
            if delay {
                v.push("DELAY");
            }
            Some(v.join(","))
        }
    }
}

/// A message to show: what `show` prints of it, its recipients to follow.
pub(super) fn showing(dir: Dir, q: QueueEnvelope, headers: Vec<u8>) -> Showing {
    let e = &q.envelope;
    let mut client = vec![
        (String::from("address"), e.client.address.clone()),
        (String::from("hostname"), e.client.hostname.clone()),
        (String::from("helo"), e.client.helo.clone()),
        (String::from("protocol"), e.client.protocol.as_str().to_string()),
    ];
    if let Some(t) = &e.client.tls {
        client.push((String::from("tls"), t.clone()));
    }
    let body = match e.body {
        BodyType::SevenBit => "7BIT",
        BodyType::EightBitMime => "8BITMIME",
        BodyType::BinaryMime => "BINARYMIME",
    };
    let mut parameters = vec![(String::from("body"), body.to_string())];
    if e.smtputf8 {
        parameters.push((String::from("smtputf8"), String::from("yes")));
    }
    if let Some(r) = e.dsn_ret {
        parameters.push((String::from("ret"), String::from(if r == Ret::Full { "FULL" } else { "HDRS" })));
    }
    if let Some(env) = &e.dsn_envid {
        parameters.push((String::from("envid"), env.clone()));
    }
    let entry = scan::heading(dir, &q);
    let count = u32::try_from(q.recipients.len()).unwrap_or(u32::MAX);
    let recipients = q
        .recipients
        .into_iter()
        .map(|r| RecipientDetail {
            notify: notify_text(r.notify),
            state: scan::state_name(r.status.state).to_string(),
            attempts: r.status.attempts,
            next_attempt: r.status.next_attempt,
            address: r.address,
            orcpt: r.orcpt,
            reason: r.status.reason,
        })
        .collect();
    let message = MessageDetail { entry, recipients: count, client, parameters, headers };
    Showing::new(message, recipients)
}

//! A queue listing, or a message shown, on its way from qmgr to a
//! client, without I/O: each part qmgr sends becomes JSON lines for the
//! client (a listing: one per message, then the answer line
//! `{"ok":true,"count":N}`; a message shown: the message without its
//! recipients, one line per recipient, then `{"ok":true,"recipients":N}`;
//! either way `{"ok":false,"error":...}` when it fails), and control asks
//! qmgr for the next part only once the client has taken nearly all of
//! what waits for it. A client that does not read thus holds at most
//! [`LIST_WINDOW`](crate::ipc::msg::LIST_WINDOW) parts in control, and
//! qmgr stops reading the queue for it meanwhile; a message with any
//! number of recipients is shown without ever being whole in control.
//!
//! Who may start a listing is [`may_list`]: one per user at a time, at
//! most [`MAX_LISTINGS`] in all, of which users other than root and the
//! mail user hold at most [`USER_LISTINGS`], so that they cannot keep
//! the administrator from listing the queue.
//!
//! Trusts: qmgr, for the entries (they are only turned into JSON).

use serde_json::json;

use crate::ipc::msg::{MAX_LISTINGS, MessageDetail, QueueEntry, RecipientDetail};

/// What waits for the client below which control asks qmgr for more.
pub const LOW_WATER: usize = 64 * 1024;
/// Most listings of users other than root (and the operator of a master
/// not run as root) at once.
pub const USER_LISTINGS: usize = 2;

/// Whether `uid` may start a listing while listings for `running` (their
/// users) are under way; `operator` is the user who may do everything
/// besides root (that of a master not run as root; see `authorized`).
pub fn may_list(running: &[u32], uid: u32, operator: Option<u32>) -> Result<(), String> {
    if running.contains(&uid) {
        return Err(String::from("busy: a queue listing of yours is under way; try again when it ends"));
    }
    let busy = || format!("busy: {} queue listings are under way; try again shortly", running.len());
    if running.len() >= MAX_LISTINGS {
        return Err(busy());
    }
    let admin = |u: u32| u == 0 || Some(u) == operator;
    if !admin(uid) && running.iter().filter(|u| !admin(**u)).count() >= USER_LISTINGS {
        return Err(busy());
    }
    Ok(())
}

/// What is being forwarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// The queue listing.
    #[default]
    Queue,
    /// One message in full (`show ID`).
    Show,
}

/// One listing (or message shown) being forwarded.
#[derive(Debug, Default)]
pub struct Forward {
    kind: Kind,
    /// Lines for the client; `out[sent..]` not written yet.
    out: Vec<u8>,
    sent: usize,
    /// Parts received whose credit is not returned to qmgr yet.
    owed: u32,
    /// Messages (a message shown: recipients) passed on.
    count: u64,
    /// A message shown: its first part, with the message, came.
    headed: bool,
    /// The answer line is in `out`: nothing more comes.
    ended: bool,
}

impl Forward {
    /// A message to be shown (a listing is [`Forward::default`]).
    pub fn show() -> Forward {
        Forward { kind: Kind::Show, ..Forward::default() }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// A part of a listing from qmgr; the last adds the answer line.
    pub fn part(&mut self, entries: &[QueueEntry], last: bool) {
        if self.ended {
            return;
        }
        if self.kind != Kind::Queue {
            return self.fail("the queue manager answered out of turn");
        }
        for e in entries {
            self.line(&super::entry_json(e));
            self.count += 1;
        }
        self.part_end(last);
    }

    /// A part of a message shown from qmgr: the message (in the first
    /// part), some recipients; the last adds the answer line.
    pub fn shown(&mut self, message: Option<&MessageDetail>, recipients: &[RecipientDetail], last: bool) {
        if self.ended {
            return;
        }
        // The message comes with the first part, and only then.
        if self.kind != Kind::Show || message.is_some() == self.headed {
            return self.fail("the queue manager answered out of turn");
        }
        if let Some(m) = message {
            self.line(&super::message_json(m));
            self.headed = true;
        }
        for r in recipients {
            self.line(&super::recipient_json(r));
            self.count += 1;
        }
        self.part_end(last);
    }

    fn part_end(&mut self, last: bool) {
        if last {
            let key = if self.kind == Kind::Show { "recipients" } else { "count" };
            self.line(&json!({"ok": true, key: self.count}));
            self.ended = true;
        } else {
            self.owed += 1;
        }
    }

    /// The listing failed: the error is its answer line.
    pub fn fail(&mut self, error: &str) {
        if self.ended {
            return;
        }
        self.line(&json!({"ok": false, "error": error}));
        self.ended = true;
    }

    fn line(&mut self, v: &serde_json::Value) {
        // (Writing JSON into a Vec does not fail.)
        let _ = serde_json::to_writer(&mut self.out, v);
        self.out.push(b'\n');
    }

    /// What waits for the client.
    pub fn pending(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// The client took `n` bytes of [`Forward::pending`].
    pub fn wrote(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.out.len());
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        } else if self.sent >= LOW_WATER && self.sent * 2 >= self.out.len() {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// How many more parts to ask qmgr for now: those owed, once less than
    /// [`LOW_WATER`] waits for the client; none after the end.
    pub fn credit(&mut self) -> u32 {
        if self.ended || self.pending().len() >= LOW_WATER {
            return 0;
        }
        std::mem::take(&mut self.owed)
    }

    /// Nothing more comes from qmgr (its last part or an error arrived).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Ended and all written: the client can be closed.
    pub fn done(&self) -> bool {
        self.ended && self.pending().is_empty()
    }

    /// Messages passed on so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn entry(i: usize) -> QueueEntry {
        QueueEntry {
            id: format!("1NG585DGN9V0000GJ{i:03}"),
            queue: String::from("deferred"),
            size: 100 + i as u64,
            arrival: 1_700_000_000,
            sender: String::from("s@example.org"),
            recipients: vec![(String::from("r@example.org"), String::from("deferred"), "x".repeat(200))],
            omitted: 0,
        }
    }

    fn lines(b: &[u8]) -> Vec<Value> {
        b.split(|&c| c == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
    }

    #[test]
    fn parts_become_lines_then_the_answer_with_the_count() {
        let mut f = Forward::default();
        f.part(&[entry(1), entry(2)], false);
        f.part(&[entry(3)], true);
        let v = lines(f.pending());
        assert_eq!(v.len(), 4);
        assert_eq!(v[0]["id"], "1NG585DGN9V0000GJ001");
        assert_eq!(v[2]["recipients"][0]["state"], "deferred");
        assert!(v[..3].iter().all(|e| e.get("ok").is_none()), "an entry is no answer");
        assert_eq!(v[3], json!({"ok": true, "count": 3}));
        assert!(f.ended() && !f.done());
        let n = f.pending().len();
        f.wrote(n);
        assert!(f.done());
        // Nothing after the end, not even a failure.
        f.part(&[entry(4)], true);
        f.fail("late");
        assert!(f.pending().is_empty() && f.count() == 3);
    }

    #[test]
    fn credit_goes_back_only_as_the_client_drains() {
        let mut f = Forward::default();
        // A part far above the low-water mark.
        let big: Vec<QueueEntry> = (0..500).map(entry).collect();
        f.part(&big, false);
        f.part(&big, false);
        assert!(f.pending().len() > 2 * LOW_WATER);
        assert_eq!(f.credit(), 0, "the client has not read: qmgr is asked for nothing");
        // The client reads a little at a time, at arbitrary sizes.
        let mut asked = 0;
        while !f.pending().is_empty() {
            let before = f.pending().len();
            f.wrote(1000.min(before));
            let c = f.credit();
            if c > 0 {
                assert!(f.pending().len() < LOW_WATER, "asked with {} waiting", f.pending().len());
            }
            asked += c;
        }
        assert_eq!(asked, 2, "one part asked for each part passed on");
        assert_eq!(f.credit(), 0);
        // What was written is exactly the lines, in order.
        let mut g = Forward::default();
        g.part(&big, false);
        let all = g.pending().to_vec();
        let mut got = Vec::new();
        let mut h = Forward::default();
        h.part(&big, false);
        while !h.pending().is_empty() {
            let n = 777.min(h.pending().len());
            got.extend_from_slice(&h.pending()[..n]);
            h.wrote(n);
        }
        assert_eq!(got, all);
        assert_eq!(lines(&got).len(), 500);
    }

    fn message() -> MessageDetail {
        let mut e = entry(1);
        e.recipients.clear();
        MessageDetail {
            entry: e,
            recipients: 3,
            client: vec![(String::from("address"), String::from("192.0.2.1"))],
            parameters: vec![(String::from("body"), String::from("8BITMIME"))],
            headers: b"Subject: x\r\n".to_vec(),
        }
    }

    fn recipient(i: usize) -> RecipientDetail {
        RecipientDetail {
            address: format!("r{i}@example.org"),
            orcpt: None,
            notify: Some(String::from("FAILURE")),
            state: String::from("deferred"),
            attempts: 2,
            next_attempt: 1_700_000_600,
            reason: String::from("451 later"),
        }
    }

    #[test]
    fn a_message_shown_is_its_envelope_then_a_line_per_recipient_then_the_count() {
        let mut f = Forward::show();
        assert_eq!(f.kind(), Kind::Show);
        f.shown(Some(&message()), &[recipient(0)], false);
        // A part may carry no recipient (a large header fills the first).
        f.shown(None, &[], false);
        f.shown(None, &[recipient(1), recipient(2)], true);
        let v = lines(f.pending());
        assert_eq!(v.len(), 5);
        assert_eq!(v[0]["id"], "1NG585DGN9V0000GJ001");
        assert_eq!(v[0]["client"]["address"], "192.0.2.1");
        assert_eq!(v[0]["headers"], "Subject: x\r\n");
        assert!(v[0].get("recipients").is_none() && v[0].get("ok").is_none());
        assert_eq!(v[1]["address"], "r0@example.org");
        assert_eq!(v[3]["notify"], "FAILURE");
        assert_eq!(v[4], json!({"ok": true, "recipients": 3}));
        assert!(f.ended());
        // One owed per part but the last, as for a listing.
        let n = f.pending().len();
        f.wrote(n);
        assert_eq!(f.credit(), 0, "nothing owed after the end");
    }

    #[test]
    fn a_part_out_of_turn_fails_the_answer() {
        // Recipients before the message.
        let mut f = Forward::show();
        f.shown(None, &[recipient(0)], true);
        assert_eq!(lines(f.pending()), vec![json!({"ok": false, "error": "the queue manager answered out of turn"})]);
        // The message twice.
        let mut f = Forward::show();
        f.shown(Some(&message()), &[], false);
        f.shown(Some(&message()), &[], true);
        assert_eq!(lines(f.pending())[1]["ok"], false);
        // A listing's part for a message shown, and the other way round.
        let mut f = Forward::show();
        f.part(&[entry(1)], true);
        assert_eq!(lines(f.pending())[0]["ok"], false);
        let mut f = Forward::default();
        f.shown(Some(&message()), &[], true);
        assert_eq!(lines(f.pending())[0]["ok"], false);
    }

    #[test]
    fn a_failure_ends_the_listing_and_owes_nothing() {
        let mut f = Forward::default();
        f.part(&[entry(1)], false);
        f.fail("the queue manager went away");
        let v = lines(f.pending());
        assert_eq!(v[1], json!({"ok": false, "error": "the queue manager went away"}));
        assert_eq!(f.credit(), 0);
        assert!(f.ended());
    }

    #[test]
    fn one_listing_per_user_and_room_kept_for_the_administrator() {
        let own = 500;
        // The operator: the user of a master not run as root.
        let op = Some(own);
        assert!(may_list(&[], 1001, op).is_ok());
        let e = may_list(&[1001], 1001, op).unwrap_err();
        assert!(e.starts_with("busy") && e.contains("yours"), "{e}");
        assert!(may_list(&[0], 0, op).is_err(), "root too, one at a time");
        // Two ordinary users hold all they may; a third waits, root and
        // the operator do not.
        assert!(may_list(&[1001, 1002], 1003, op).unwrap_err().starts_with("busy"));
        assert!(may_list(&[1001, 1002], 0, op).is_ok());
        assert!(may_list(&[1001, 1002, 0], own, op).is_ok());
        // The cap holds for everyone.
        assert!(may_list(&[1001, 1002, 0, own], 7, op).is_err());
        assert!(may_list(&[0, own, 1001, 1002], 1003, op).is_err());
        assert!(may_list(&[0, own, 1001], 1002, op).is_ok());
        assert_eq!(MAX_LISTINGS, 4);
        // Under a master run as root, the mail user is an ordinary user.
        assert!(may_list(&[1001, 1002], own, None).unwrap_err().starts_with("busy"));
    }
}

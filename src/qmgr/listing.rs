//! The queue listings under way in qmgr, and the messages being shown:
//! each a source of parts (a [`Cursor`] over the queue, or a [`Showing`],
//! a message's envelope and then its recipients a part at a time) and
//! the parts control may still take (its credit: [`LIST_WINDOW`] at the
//! start, one more for each part it passed on). In each turn of the
//! event loop the listings with credit share one [`Budget`], taken in
//! turn from a different one each time, so that listings go on at a pace
//! that leaves deliveries theirs and one listing cannot hold back
//! another; a listing whose client does not read stops at its credit
//! and costs nothing until it is asked for more. A message shown was
//! read when it was asked for, and goes at most its credit of bounded
//! parts a turn: one with more recipients than the channel takes in one
//! message (100,000 of them may be queued) is shown whole all the same.
//! At most [`MAX_LISTINGS`] listings and [`MAX_SHOWS`] messages shown run
//! at once: further requests are refused as busy (control keeps to a
//! lower limit of listings of its own, per user).
//!
//! Trusts: control, for its request numbers (checked for shape only).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mio::Token;

use crate::ipc::msg::{LIST_WINDOW, MAX_LISTINGS, MAX_SHOWS, MessageDetail, RecipientDetail};

use super::scan::{Budget, Cursor, InMemory, PART_BYTES, PART_ENTRIES, Part};
use super::store::Store;
use crate::queue::QueueId;

/// Queue files read for listings in one turn of the event loop.
pub const TURN_FILES: usize = 256;
/// Directory entries read for listings in one turn.
pub const TURN_NAMES: usize = 4096;
/// Time spent on listings in one turn, at most (about: one file more).
pub const TURN_TIME: Duration = Duration::from_millis(5);

/// A message being shown: what is still to send.
pub struct Showing {
    /// The message, sent with the first part.
    message: Option<Box<MessageDetail>>,
    recipients: VecDeque<RecipientDetail>,
    finished: bool,
}

/// A part of a message shown.
#[derive(Debug)]
pub struct ShowPart {
    /// The message, in the first part only.
    pub message: Option<Box<MessageDetail>>,
    pub recipients: Vec<RecipientDetail>,
    /// The message is shown whole with this part.
    pub last: bool,
}

impl Showing {
    pub fn new(message: MessageDetail, recipients: Vec<RecipientDetail>) -> Showing {
        Showing { message: Some(Box::new(message)), recipients: recipients.into(), finished: false }
    }

    /// The next part: the message first (its header is bounded), and
    /// recipients up to [`PART_ENTRIES`] or about [`PART_BYTES`], far
    /// below the channel's bound on a message.
    fn next_part(&mut self) -> ShowPart {
        let message = self.message.take();
        let mut bytes = message.as_ref().map_or(0, |m| m.headers.len() + 1024);
        let mut recipients = Vec::new();
        while recipients.len() < PART_ENTRIES && bytes < PART_BYTES {
            let Some(r) = self.recipients.pop_front() else { break };
            bytes += recipient_bytes(&r);
            recipients.push(r);
        }
        self.finished = self.recipients.is_empty();
        ShowPart { message, recipients, last: self.finished }
    }
}

/// The encoding of a recipient's detail, about (each string a length and
/// its bytes, the numbers).
fn recipient_bytes(r: &RecipientDetail) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(1, |s| s.len() + 3);
    r.address.len() + opt(&r.orcpt) + opt(&r.notify) + r.state.len() + r.reason.len() + 32
}

enum Source {
    Queue(Cursor),
    Message(Showing),
}

impl Source {
    fn finished(&self) -> bool {
        match self {
            Source::Queue(c) => c.finished(),
            Source::Message(s) => s.finished,
        }
    }
}

struct Listing {
    /// control's channel.
    peer: Token,
    /// control's number for it.
    id: u64,
    source: Source,
    /// Parts control will take now.
    credit: u32,
}

/// What goes to control: a part of a listing or of a message shown.
pub enum Piece {
    List(Part),
    Show(ShowPart),
}

/// A part to send: to `peer`, for listing (or show) `id`.
pub struct Out {
    pub peer: Token,
    pub id: u64,
    pub piece: Piece,
}

#[derive(Default)]
pub struct Listings {
    list: Vec<Listing>,
    /// Where the next turn begins.
    next: usize,
}

impl Listings {
    /// How many are under way.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Start listing `id` for `peer`, the messages in `memory` first, or
    /// say why not.
    pub fn start(&mut self, peer: Token, id: u64, memory: Vec<QueueId>) -> Result<(), String> {
        self.check(peer, id)?;
        let n = self.list.iter().filter(|l| matches!(l.source, Source::Queue(_))).count();
        if n >= MAX_LISTINGS {
            return Err(format!("busy: {n} queue listings are under way; try again shortly"));
        }
        self.list.push(Listing {
            peer,
            id,
            source: Source::Queue(Cursor::new(true).with_memory(memory)),
            credit: LIST_WINDOW,
        });
        Ok(())
    }

    /// Start showing a message, as `id` for `peer`, or say why not.
    pub fn start_show(&mut self, peer: Token, id: u64, showing: Showing) -> Result<(), String> {
        self.check(peer, id)?;
        let n = self.list.iter().filter(|l| matches!(l.source, Source::Message(_))).count();
        if n >= MAX_SHOWS {
            return Err(format!("busy: {n} messages are being shown; try again shortly"));
        }
        self.list.push(Listing { peer, id, source: Source::Message(showing), credit: LIST_WINDOW });
        Ok(())
    }

    fn check(&self, peer: Token, id: u64) -> Result<(), String> {
        if self.list.iter().any(|l| l.peer == peer && l.id == id) {
            return Err(format!("listing {id} is already under way"));
        }
        Ok(())
    }

    /// Control passed a part on: one more may go (never more than the
    /// window ahead).
    pub fn more(&mut self, peer: Token, id: u64) {
        if let Some(l) = self.list.iter_mut().find(|l| l.peer == peer && l.id == id) {
            l.credit = (l.credit + 1).min(LIST_WINDOW);
        }
    }

    /// Stop listing `id`; whether it was under way.
    pub fn cancel(&mut self, peer: Token, id: u64) -> bool {
        let before = self.list.len();
        self.list.retain(|l| !(l.peer == peer && l.id == id));
        before != self.list.len()
    }

    /// Forget the listings of a channel that went away.
    pub fn drop_peer(&mut self, peer: Token) {
        self.list.retain(|l| l.peer != peer);
    }

    /// Whether a listing can go on now (the loop should not sleep).
    pub fn ready(&self) -> bool {
        self.list.iter().any(|l| l.credit > 0)
    }

    /// One turn's worth of listing: the parts to send, and what went wrong
    /// on the way (to log). A listing whose last part is among them is
    /// over. (A message shown takes nothing of the budget: it was read
    /// when asked for, and its parts are bounded.)
    pub fn turn(&mut self, store: &Store, budget: &mut Budget, memory: &dyn InMemory) -> (Vec<Out>, Vec<String>) {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        let n = self.list.len();
        if n == 0 {
            return (out, problems);
        }
        let first = self.next % n;
        self.next = first + 1;
        for k in 0..n {
            let l = &mut self.list[(first + k) % n];
            while l.credit > 0 && !l.source.finished() {
                let piece = match &mut l.source {
                    Source::Queue(cursor) => {
                        let part = cursor.advance_with(store, budget, memory);
                        problems.extend(cursor.take_problems());
                        let Some(part) = part else { break };
                        Piece::List(part)
                    }
                    Source::Message(showing) => Piece::Show(showing.next_part()),
                };
                l.credit -= 1;
                out.push(Out { peer: l.peer, id: l.id, piece });
            }
        }
        self.list.retain(|l| !l.source.finished());
        (out, problems)
    }
}

/// The budget of one turn, from now.
pub fn turn_budget() -> Budget {
    Budget { names: TURN_NAMES, files: TURN_FILES, until: Some(Instant::now() + TURN_TIME) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmgr::scan::NoMemory;
    use crate::qmgr::scan::tests::{fill, spool};
    use crate::qmgr::store::Dir;
    use crate::queue::QueueIdGen;

    fn unlimited() -> Budget {
        Budget { names: usize::MAX, files: usize::MAX, until: None }
    }

    fn part(o: &Out) -> &Part {
        match &o.piece {
            Piece::List(p) => p,
            Piece::Show(_) => panic!("a show's part in a listing"),
        }
    }

    #[test]
    fn a_listing_sends_what_control_asked_for_and_no_more() {
        let (d, s) = spool("credit");
        fill(&d, &mut QueueIdGen::new(11), Dir::Deferred, 1700);
        let mut l = Listings::default();
        let control = Token(20);
        l.start(control, 7, Vec::new()).unwrap();
        assert!(l.ready());
        // However much budget: the window, then nothing.
        let (out, problems) = l.turn(&s, &mut unlimited(), &NoMemory);
        assert!(problems.is_empty());
        assert_eq!(out.len(), LIST_WINDOW as usize);
        assert!(out.iter().all(|o| o.peer == control && o.id == 7 && !part(o).last));
        assert!(!l.ready());
        assert!(l.turn(&s, &mut unlimited(), &NoMemory).0.is_empty(), "a part nobody asked for");
        // One more asked for (twice, and for an unknown listing: no more
        // than the window ahead).
        l.more(control, 7);
        l.more(control, 8);
        l.more(Token(21), 7);
        let (out, _) = l.turn(&s, &mut unlimited(), &NoMemory);
        assert_eq!(out.len(), 1);
        for _ in 0..5 {
            l.more(control, 7);
        }
        let (out, _) = l.turn(&s, &mut unlimited(), &NoMemory);
        assert_eq!(out.len(), 1, "the last part: 1700 = 3 x 500 + 200");
        assert!(part(&out[0]).last && part(&out[0]).entries.len() == 200);
        assert!(l.is_empty(), "an ended listing is forgotten");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_cancelled_listing_stops_at_once_and_its_channel_takes_the_rest_with_it() {
        let (d, s) = spool("cancel");
        fill(&d, &mut QueueIdGen::new(12), Dir::Hold, 300);
        let mut l = Listings::default();
        l.start(Token(20), 1, Vec::new()).unwrap();
        l.start(Token(20), 2, Vec::new()).unwrap();
        l.start(Token(30), 1, Vec::new()).unwrap();
        assert!(l.start(Token(20), 2, Vec::new()).is_err(), "the same listing twice");
        // Under way: a slice read, no part yet.
        let (out, _) = l.turn(&s, &mut Budget { names: 1000, files: 50, until: None }, &NoMemory);
        assert!(out.is_empty());
        assert!(l.cancel(Token(20), 1));
        assert!(!l.cancel(Token(20), 1));
        assert_eq!(l.len(), 2);
        l.drop_peer(Token(30));
        assert_eq!(l.len(), 1);
        let (out, _) = l.turn(&s, &mut unlimited(), &NoMemory);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].peer, out[0].id, part(&out[0]).entries.len()), (Token(20), 2, 300));
        assert!(l.is_empty() && !l.ready());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn listings_beyond_the_cap_are_refused_as_busy_and_share_one_budget() {
        let (d, s) = spool("cap");
        fill(&d, &mut QueueIdGen::new(13), Dir::Incoming, 40);
        let mut l = Listings::default();
        for id in 0..MAX_LISTINGS as u64 {
            l.start(Token(20), id, Vec::new()).unwrap();
        }
        let e = l.start(Token(20), 99, Vec::new()).unwrap_err();
        assert!(e.starts_with("busy"), "{e}");
        // One budget for all, taken in turn from a different listing:
        // 30 files a turn for four listings of 40 files.
        let mut turns = 0;
        let mut ended = Vec::new();
        while !l.is_empty() {
            turns += 1;
            assert!(turns < 100);
            let (out, _) = l.turn(&s, &mut Budget { names: usize::MAX, files: 30, until: None }, &NoMemory);
            ended.extend(out.iter().map(|o| (o.id, part(o).entries.len())));
        }
        assert!(turns >= 160 / 30, "{turns} turns");
        ended.sort();
        assert_eq!(ended, (0..MAX_LISTINGS as u64).map(|i| (i, 40)).collect::<Vec<_>>());
        l.start(Token(20), 99, Vec::new()).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_message_with_more_recipients_than_the_channel_takes_at_once_is_shown_whole_in_parts() {
        use crate::ipc::msg::QmgrToControl;
        use crate::qmgr::scan::tests::write;
        let (d, s) = spool("show");
        let id = QueueIdGen::new(14).next_id();
        let rcpts: Vec<(String, String)> =
            (0..3000).map(|i| (format!("{i}{}@example.org", "r".repeat(900)), "y".repeat(512))).collect();
        write(&d, Dir::Hold, id, &rcpts);
        let q = crate::qmgr::scan::read(&s, Dir::Hold, &id).unwrap();
        let showing = crate::qmgr::admin::showing(Dir::Hold, q, b"Subject: x\r\n".to_vec());
        // Whole, its recipients are far more than the channel takes in
        // one message (what `show` used to send).
        let whole: Vec<&RecipientDetail> = showing.recipients.iter().collect();
        assert!(postcard::to_allocvec(&whole).unwrap().len() > 4 * crate::ipc::DEFAULT_MAX_MESSAGE);
        let mut l = Listings::default();
        let control = Token(20);
        l.start_show(control, 5, showing).unwrap();
        let mut got = Vec::new();
        let mut parts = 0;
        while !l.is_empty() {
            let (out, problems) = l.turn(&s, &mut Budget { names: 0, files: 0, until: None }, &NoMemory);
            assert!(problems.is_empty());
            assert!(out.len() <= LIST_WINDOW as usize, "more parts than the credit");
            for o in out {
                let Piece::Show(p) = o.piece else { panic!("a listing's part for a show") };
                assert_eq!((o.peer, o.id), (control, 5));
                assert_eq!(p.message.is_some(), parts == 0, "the message comes first, once");
                if let Some(m) = &p.message {
                    assert_eq!((m.entry.id.as_str(), m.recipients, m.entry.recipients.len()), (id.as_str(), 3000, 0));
                }
                let m = QmgrToControl::Shown { id: 5, message: p.message, recipients: p.recipients, last: p.last };
                let size = postcard::to_allocvec(&m).unwrap().len();
                assert!(size <= 2 * PART_BYTES, "a part of {size} bytes");
                let QmgrToControl::Shown { recipients, last, .. } = m else { unreachable!() };
                got.extend(recipients.into_iter().map(|r| r.address));
                parts += 1;
                assert_eq!(last, got.len() == 3000);
                l.more(control, 5);
            }
        }
        assert!(parts > 60, "{parts} parts");
        assert_eq!(got, rcpts.into_iter().map(|(a, _)| a).collect::<Vec<_>>(), "every recipient, in order");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn shows_beyond_their_cap_are_refused_as_busy_and_leave_listings_alone() {
        use crate::qmgr::scan::tests::write;
        let (d, s) = spool("showcap");
        let id = QueueIdGen::new(15).next_id();
        write(&d, Dir::Hold, id, &[(String::from("r@example.org"), String::new())]);
        let show =
            || crate::qmgr::admin::showing(Dir::Hold, crate::qmgr::scan::read(&s, Dir::Hold, &id).unwrap(), vec![]);
        let mut l = Listings::default();
        for n in 0..MAX_SHOWS as u64 {
            l.start_show(Token(20), n, show()).unwrap();
        }
        assert!(l.start_show(Token(20), 99, show()).unwrap_err().starts_with("busy"));
        assert!(l.start_show(Token(20), 0, show()).is_err(), "the same one twice");
        l.start(Token(20), 99, Vec::new()).unwrap();
        // Each a message of one recipient: one part, the last.
        let (out, _) = l.turn(&s, &mut unlimited(), &NoMemory);
        assert_eq!(out.iter().filter(|o| matches!(&o.piece, Piece::Show(p) if p.last)).count(), MAX_SHOWS);
        std::fs::remove_dir_all(&d).unwrap();
    }
}

//! The queue listings under way in qmgr: each a [`Cursor`] and the parts
//! control may still take (its credit: [`LIST_WINDOW`] at the start, one
//! more for each part it passed on). In each turn of the event loop the
//! listings with credit share one [`Budget`], taken in turn from a
//! different one each time, so that listings go on at a pace that leaves
//! deliveries theirs and one listing cannot hold back another; a listing
//! whose client does not read stops at its credit and costs nothing until
//! it is asked for more. At most [`MAX_LISTINGS`] run at once: further
//! requests are refused as busy (control keeps to a lower limit of its
//! own, per user).
//!
//! Trusts: control, for its request numbers (checked for shape only).

use std::time::{Duration, Instant};

use mio::Token;

use crate::ipc::msg::{LIST_WINDOW, MAX_LISTINGS};

use super::scan::{Budget, Cursor, Part};
use super::store::Store;

/// Queue files read for listings in one turn of the event loop.
pub const TURN_FILES: usize = 256;
/// Directory entries read for listings in one turn.
pub const TURN_NAMES: usize = 4096;
/// Time spent on listings in one turn, at most (about: one file more).
pub const TURN_TIME: Duration = Duration::from_millis(5);

struct Listing {
    /// control's channel.
    peer: Token,
    /// control's number for it.
    id: u64,
    cursor: Cursor,
    /// Parts control will take now.
    credit: u32,
}

/// A part to send: to `peer`, for listing `id`.
pub struct Out {
    pub peer: Token,
    pub id: u64,
    pub part: Part,
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

    /// Start listing `id` for `peer`, or say why not.
    pub fn start(&mut self, peer: Token, id: u64) -> Result<(), String> {
        if self.list.iter().any(|l| l.peer == peer && l.id == id) {
            return Err(format!("listing {id} is already under way"));
        }
        if self.list.len() >= MAX_LISTINGS {
            return Err(format!("busy: {} queue listings are under way; try again shortly", self.list.len()));
        }
        self.list.push(Listing { peer, id, cursor: Cursor::new(true), credit: LIST_WINDOW });
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
    /// over.
    pub fn turn(&mut self, store: &Store, budget: &mut Budget) -> (Vec<Out>, Vec<String>) {
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
            while l.credit > 0 && !l.cursor.finished() {
                let part = l.cursor.advance(store, budget);
                problems.extend(l.cursor.take_problems());
                let Some(part) = part else { break };
                l.credit -= 1;
                out.push(Out { peer: l.peer, id: l.id, part });
            }
        }
        self.list.retain(|l| !l.cursor.finished());
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
    use crate::qmgr::scan::tests::{fill, spool};
    use crate::qmgr::store::Dir;
    use crate::queue::QueueIdGen;

    fn unlimited() -> Budget {
        Budget { names: usize::MAX, files: usize::MAX, until: None }
    }

    #[test]
    fn a_listing_sends_what_control_asked_for_and_no_more() {
        let (d, s) = spool("credit");
        fill(&d, &mut QueueIdGen::new(11), Dir::Deferred, 1700);
        let mut l = Listings::default();
        let control = Token(20);
        l.start(control, 7).unwrap();
        assert!(l.ready());
        // However much budget: the window, then nothing.
        let (out, problems) = l.turn(&s, &mut unlimited());
        assert!(problems.is_empty());
        assert_eq!(out.len(), LIST_WINDOW as usize);
        assert!(out.iter().all(|o| o.peer == control && o.id == 7 && !o.part.last));
        assert!(!l.ready());
        assert!(l.turn(&s, &mut unlimited()).0.is_empty(), "a part nobody asked for");
        // One more asked for (twice, and for an unknown listing: no more
        // than the window ahead).
        l.more(control, 7);
        l.more(control, 8);
        l.more(Token(21), 7);
        let (out, _) = l.turn(&s, &mut unlimited());
        assert_eq!(out.len(), 1);
        for _ in 0..5 {
            l.more(control, 7);
        }
        let (out, _) = l.turn(&s, &mut unlimited());
        assert_eq!(out.len(), 1, "the last part: 1700 = 3 x 500 + 200");
        assert!(out[0].part.last && out[0].part.entries.len() == 200);
        assert!(l.is_empty(), "an ended listing is forgotten");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_cancelled_listing_stops_at_once_and_its_channel_takes_the_rest_with_it() {
        let (d, s) = spool("cancel");
        fill(&d, &mut QueueIdGen::new(12), Dir::Hold, 300);
        let mut l = Listings::default();
        l.start(Token(20), 1).unwrap();
        l.start(Token(20), 2).unwrap();
        l.start(Token(30), 1).unwrap();
        assert!(l.start(Token(20), 2).is_err(), "the same listing twice");
        // Under way: a slice read, no part yet.
        let (out, _) = l.turn(&s, &mut Budget { names: 1000, files: 50, until: None });
        assert!(out.is_empty());
        assert!(l.cancel(Token(20), 1));
        assert!(!l.cancel(Token(20), 1));
        assert_eq!(l.len(), 2);
        l.drop_peer(Token(30));
        assert_eq!(l.len(), 1);
        let (out, _) = l.turn(&s, &mut unlimited());
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].peer, out[0].id, out[0].part.entries.len()), (Token(20), 2, 300));
        assert!(l.is_empty() && !l.ready());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn listings_beyond_the_cap_are_refused_as_busy_and_share_one_budget() {
        let (d, s) = spool("cap");
        fill(&d, &mut QueueIdGen::new(13), Dir::Incoming, 40);
        let mut l = Listings::default();
        for id in 0..MAX_LISTINGS as u64 {
            l.start(Token(20), id).unwrap();
        }
        let e = l.start(Token(20), 99).unwrap_err();
        assert!(e.starts_with("busy"), "{e}");
        // One budget for all, taken in turn from a different listing:
        // 30 files a turn for four listings of 40 files.
        let mut turns = 0;
        let mut ended = Vec::new();
        while !l.is_empty() {
            turns += 1;
            assert!(turns < 100);
            let (out, _) = l.turn(&s, &mut Budget { names: usize::MAX, files: 30, until: None });
            ended.extend(out.iter().map(|o| (o.id, o.part.entries.len())));
        }
        assert!(turns >= 160 / 30, "{turns} turns");
        ended.sort();
        assert_eq!(ended, (0..MAX_LISTINGS as u64).map(|i| (i, 40)).collect::<Vec<_>>());
        l.start(Token(20), 99).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }
}

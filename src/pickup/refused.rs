//! Maildrop files refused for good whose failure notice ([`super::notice`])
//! cleanup has not queued yet. Such a file stays in maildrop/ until its
//! notice is queued (or refused for good), and only then goes to
//! corrupt/: a notice lost on the way (mta stopped while cleanup had it,
//! cleanup gone, a temporary failure) leaves the file in maildrop/, to be
//! refused again and its notice sent again at the next look, at the
//! latest at the next start. Nothing submitted goes without its notice.
//! Meanwhile listings skip the file, so that it is refused once at a
//! time; and pickup, stopping, waits for the verdicts on the notices it
//! handed over (cleanup answers them before it exits), so that a notice
//! queued then is not sent again at the next start.
//!
//! The memory is bounded: while [`MAX_WAITING`] notices wait, no new
//! file is taken.
//!
//! Trusts: nothing; names come from listings of maildrop/.

use std::collections::HashMap;

use crate::ipc::msg::CommitResult;

use super::unremoved::Identity;

/// Most notices waiting for cleanup's verdict; at this many, no file is
/// taken until some are answered.
pub const MAX_WAITING: usize = 1000;

/// A refused file whose notice is with cleanup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// The file's name in maildrop/, and identity.
    pub name: String,
    pub identity: Identity,
    /// Whom the notice goes to.
    pub to: String,
    /// Why the file was refused, for the log line that sets it aside.
    pub why: String,
}

/// What becomes of a refused file once cleanup answered for its notice.
#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    /// To corrupt/: its notice is queued (its ID), or was refused for
    /// good (why) and would be every time.
    SetAside { notice: Result<String, String> },
    /// It stays in maildrop/, and is refused again (and noticed) later:
    /// the notice was not queued for now (why).
    Stays(String),
}

#[derive(Default)]
pub struct Refused {
    /// By the notice's transaction with cleanup.
    waiting: HashMap<u64, Waiting>,
}

impl Refused {
    /// The notice for a refused file went to cleanup as transaction `txn`.
    pub fn add(&mut self, txn: u64, w: Waiting) {
        self.waiting.insert(txn, w);
    }

    /// Whether a listing must skip `name`: its notice is with cleanup.
    pub fn contains(&self, name: &str) -> bool {
        self.waiting.values().any(|w| w.name == name)
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Whether no file may be taken now (too many notices wait).
    pub fn is_full(&self) -> bool {
        self.waiting.len() >= MAX_WAITING
    }

    /// cleanup's verdict on transaction `txn`: if it was a notice, its
    /// file and what becomes of it.
    pub fn verdict(&mut self, txn: u64, result: &CommitResult) -> Option<(Waiting, Fate)> {
        let w = self.waiting.remove(&txn)?;
        let fate = match result {
            CommitResult::Queued(id) => Fate::SetAside { notice: Ok(id.clone()) },
            CommitResult::Refused { code, enhanced, text } => {
                Fate::SetAside { notice: Err(format!("{code} {enhanced} {text}")) }
            }
            CommitResult::TempFail(why) => Fate::Stays(why.clone()),
            CommitResult::NoSpace => Fate::Stays(String::from("the spool is short of space")),
        };
        Some((w, fate))
    }

    /// cleanup went away with the notices: their files stay in
    /// maildrop/, to be refused again once it is back.
    pub fn lost(&mut self) -> Vec<Waiting> {
        let mut v: Vec<(u64, Waiting)> = self.waiting.drain().collect();
        v.sort_by_key(|(txn, _)| *txn);
        v.into_iter().map(|(_, w)| w).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(name: &str) -> Waiting {
        Waiting {
            name: name.to_string(),
            identity: (1, 2),
            to: String::from("jo@host.example"),
            why: String::from("refused by cleanup: 552 5.3.4 too big"),
        }
    }

    #[test]
    fn a_refused_file_goes_to_corrupt_only_once_its_notice_is_queued() {
        let mut r = Refused::default();
        r.add(7, waiting("a"));
        r.add(8, waiting("b"));
        assert!(r.contains("a") && r.contains("b") && !r.contains("c"), "listings skip them meanwhile");
        // Another transaction (a message, not a notice): not ours.
        assert_eq!(r.verdict(9, &CommitResult::Queued(String::from("X"))), None);
        let (w, fate) = r.verdict(7, &CommitResult::Queued(String::from("1NG5"))).unwrap();
        assert_eq!((w.name.as_str(), fate), ("a", Fate::SetAside { notice: Ok(String::from("1NG5")) }));
        assert!(!r.contains("a"));
        // Refused for good: it would be every time.
        let refusal = CommitResult::Refused { code: 550, enhanced: String::from("5.7.1"), text: String::from("no") };
        let (_, fate) = r.verdict(8, &refusal).unwrap();
        assert_eq!(fate, Fate::SetAside { notice: Err(String::from("550 5.7.1 no")) });
        assert!(r.is_empty());
    }

    #[test]
    fn a_notice_not_queued_or_lost_leaves_its_file_to_be_refused_again() {
        let mut r = Refused::default();
        r.add(1, waiting("a"));
        r.add(2, waiting("b"));
        r.add(3, waiting("c"));
        assert_eq!(
            r.verdict(1, &CommitResult::NoSpace).unwrap().1,
            Fate::Stays(String::from("the spool is short of space"))
        );
        assert_eq!(
            r.verdict(2, &CommitResult::TempFail(String::from("later"))).unwrap().1,
            Fate::Stays(String::from("later"))
        );
        // mta stopped, or cleanup died, with the notice: the file stays.
        r.add(4, waiting("d"));
        let lost: Vec<String> = r.lost().into_iter().map(|w| w.name).collect();
        assert_eq!(lost, ["c", "d"]);
        assert!(r.is_empty() && !r.contains("c"), "taken again by the next listing");
    }

    #[test]
    fn no_file_is_taken_while_too_many_notices_wait() {
        let mut r = Refused::default();
        for txn in 0..MAX_WAITING as u64 {
            assert!(!r.is_full());
            r.add(txn, waiting(&txn.to_string()));
        }
        assert!(r.is_full());
        r.verdict(0, &CommitResult::Queued(String::new()));
        assert!(!r.is_full());
    }
}

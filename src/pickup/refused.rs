//! Maildrop files refused for good: the refusal, and the failure notice
//! ([`super::notice`]) pickup hands cleanup for it; and the files whose
//! notice cleanup has not queued yet ([`Refused`]). Such a file stays in maildrop/ until its
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
use std::fs::File;
use std::io::BufReader;

use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::ipc::msg::{CommitResult, MessageEnvelope, SmtpdToCleanup};
use crate::maildrop::{self, Reader};
use crate::queue;

use super::unremoved::{self, Identity};
use super::{NOTICE_CHUNK, Pickup, notice, trouble};

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

impl Pickup {
    /// A message refused for good (`by` says who, and why, for the log),
    /// which sendmail already told its caller was sent: the file goes to
    /// corrupt/, and the sender (or the postmaster) hears that the message
    /// went nowhere, in a failure notice naming each recipient with the
    /// refusal; the file goes only once cleanup has queued the notice (see
    /// [`refused`]). `kept` is the first bytes of the content, `len` its
    /// length as far as it was read; `identity` is the file's.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn refuse(
        &mut self,
        name: &str,
        identity: unremoved::Identity,
        envelope: &MessageEnvelope,
        kept: &[u8],
        len: u64,
        refusal: &notice::Refusal<'_>,
        by: &str,
    ) {
        let id = self.ids.next_id();
        let (code, enhanced, text) = (refusal.code, refusal.enhanced, refusal.text);
        let why = format!("{by}: {code} {enhanced} {text} (named {id} in the failure notice)");
        if self.stopping {
            // No notice now: cleanup is stopping too.
            return self.child.warn(&format!(
                "maildrop file {name}: {why}; left in maildrop/, to be refused again, and its notice sent, at the \
                 next start"
            ));
        }
        let kept = notice::Kept { data: kept, len };
        let hostname = self.child.config.hostname.clone();
        match notice::notice(envelope, refusal, &kept, id, &hostname, self.size_limit, queue::Time::now()) {
            Ok(Some(n)) => self.send_notice(Waiting { name: name.to_string(), identity, to: n.to.clone(), why }, n),
            Ok(None) => {
                self.set_aside(name, &why);
                self.child.info(&format!("maildrop file {name}: no failure notice wanted"));
            }
            Err(e) => {
                self.set_aside(name, &why);
                self.child.warn(&format!("maildrop file {name}: no failure notice: {e}"));
            }
        }
    }

    /// cleanup answered for the notice of refused file `w`.
    pub(super) fn notice_answered(&mut self, w: Waiting, fate: Fate) {
        let (name, to) = (&w.name, &w.to);
        match fate {
            Fate::SetAside { notice: Ok(id) } => {
                self.child.info(&format!("maildrop file {name}: failure notice to <{to}> queued as {id}"));
            }
            Fate::SetAside { notice: Err(why) } => {
                self.child.warn(&format!("maildrop file {name}: the failure notice to <{to}> was refused ({why})"));
            }
            Fate::Stays(why) => {
                self.child.warn(&format!(
                    "maildrop file {name}: the failure notice to <{to}> was not queued ({why}); the file stays in \
                     maildrop/, to be refused again and its notice sent later"
                ));
                return self.pause();
            }
        }
        if self.move_aside(name, &w.why) {
            return;
        }
        if unlinkat(&self.maildrop, name.as_str(), UnlinkatFlags::NoRemoveDir).is_ok() {
            return self.child.warn(&format!("maildrop file {name}: removed"));
        }
        // Taken again, it would be noticed again at every listing.
        self.unremoved.add(name, w.identity);
        self.child.warn(&format!("maildrop file {name}: cannot be removed either; not taken again"));
    }

    /// A file over pickup's own limits, found before anything went to
    /// cleanup (more recipients than `limits.recipients`): its content is
    /// read for the notice (the first bytes kept), then it is refused as
    /// cleanup would. postdrop read the configuration file when it took
    /// the message, pickup has master's copy: an edit not yet reloaded
    /// makes them differ.
    pub(super) fn refuse_unsent(
        &mut self,
        name: &str,
        identity: unremoved::Identity,
        mut reader: Reader<BufReader<File>>,
        envelope: &MessageEnvelope,
        refusal: &notice::Refusal<'_>,
        by: &str,
    ) {
        let keep = usize::try_from(self.size_limit.saturating_add(1)).unwrap_or(usize::MAX);
        let mut kept = Vec::new();
        let mut len = 0u64;
        loop {
            match reader.next_chunk() {
                Ok(Some(data)) => {
                    let room = keep.saturating_sub(kept.len());
                    kept.extend_from_slice(&data[..room.min(data.len())]);
                    len += data.len() as u64;
                }
                Ok(None) => break,
                // Too big as well: the notice returns its header at most.
                Err(maildrop::Error::TooBig { .. }) => break,
                Err(maildrop::Error::Io(io)) => {
                    let wide = trouble::process_wide_io(&io);
                    return self.trouble(name, &maildrop::Error::Io(io).to_string(), wide);
                }
                Err(e) => return self.set_aside(name, &e.to_string()),
            }
        }
        self.refuse(name, identity, envelope, &kept, len, refusal, by);
    }

    /// Hand the failure notice of refused file `w` to cleanup as a
    /// message of its own; the file waits in maildrop/ for its verdict.
    fn send_notice(&mut self, w: Waiting, n: notice::Notice) {
        let txn = self.next_txn;
        self.next_txn += 1;
        let mut ok = self.send(SmtpdToCleanup::Begin { txn, id: None, envelope: Box::new(n.envelope) });
        for piece in n.content.chunks(NOTICE_CHUNK) {
            ok = ok && self.send(SmtpdToCleanup::Content { txn, data: piece.to_vec() });
        }
        ok = ok && self.send(SmtpdToCleanup::End { txn });
        if ok {
            self.child.info(&format!(
                "maildrop file {}: {}; its failure notice to <{}> goes to cleanup (the file stays until it is queued)",
                w.name, w.why, w.to
            ));
            self.refused.add(txn, w);
        } else {
            self.child.warn(&format!(
                "maildrop file {}: {}; the failure notice to <{}> could not be handed to cleanup; the file stays in \
                 maildrop/, to be refused again once cleanup is back",
                w.name, w.why, w.to
            ));
        }
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

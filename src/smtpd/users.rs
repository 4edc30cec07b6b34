//! Local names the local-recipient table lacks, asked of the lookup
//! process (`crate::lookup`) at RCPT when `local.directory_lookup` is on:
//! the session's RCPT waits for the answer, at most
//! `local.directory_lookup_timeout`, and gets 451 4.3.0 when none comes
//! or the lookup process is not there (not started yet, restarting).
//! A question in flight when the lookup process goes away (it crashed,
//! or a reload replaced it) is asked again of the next one, once, within
//! the same deadline: so a name that makes the lookup process crash
//! gets 451 after one more try rather than crashing every process after
//! it. Answers are remembered for
//! `local.directory_lookup_cache` (at most
//! `local.directory_lookup_cache_names` names), so
//! that a client repeating a name, or a dictionary attack, asks the
//! name service once per name. smtpd's loop never blocks on a lookup, as
//! for client names (`names`).
//!
//! Trusts: master. The lookup process's answers are matched to the
//! questions asked; one to a question smtpd no longer waits for is
//! dropped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mio::Token;

use crate::ipc::msg::{DirectoryLookup, LookupToSmtpd, SmtpdToLookup, UserFound};
use crate::ipc::{self, Channel};

/// An answer for a waiting session.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub token: Token,
    pub found: UserFound,
}

/// A question in flight.
struct Pending {
    /// The session waiting for the answer; None once it stopped waiting
    /// (the answer is still remembered when it comes).
    token: Option<Token>,
    name: String,
    deadline: Instant,
    /// Asked again of a new lookup process already.
    retried: bool,
}

/// The questions in flight, the answers remembered and the channel.
pub struct Users {
    chan: Option<Channel>,
    settings: Option<DirectoryLookup>,
    pending: HashMap<u64, Pending>,
    cache: HashMap<String, (UserFound, Instant)>,
    next: u64,
}

impl Users {
    /// `settings`: None, lookups are off.
    pub fn new(settings: Option<DirectoryLookup>) -> Users {
        Users { chan: None, settings, pending: HashMap::new(), cache: HashMap::new(), next: 1 }
    }

    pub fn enabled(&self) -> bool {
        self.settings.is_some()
    }

    pub fn channel(&self) -> Option<&Channel> {
        self.chan.as_ref()
    }

    /// A new channel to the lookup process (it started, restarted, or a
    /// reload replaced it). The answers already on the old channel are
    /// taken; the questions whose sessions still wait are asked again on
    /// the new one (those asked again before get 451), and the rest are
    /// forgotten.
    pub fn set_channel(&mut self, mut chan: Channel, now: Instant) -> Vec<Answer> {
        let mut answers = match self.chan.take() {
            Some(mut old) => self.drain(&mut old, now),
            None => Vec::new(),
        };
        let _ = chan.flush();
        let mut again: Vec<(u64, Pending)> = self.pending.drain().filter(|(_, p)| p.token.is_some()).collect();
        again.sort_unstable_by_key(|(req, _)| *req);
        for (req, mut p) in again {
            let token = p.token.expect("kept only with a session");
            if p.retried || chan.send(&SmtpdToLookup::User { req, name: p.name.clone() }, &[]).is_err() {
                answers.push(Answer { token, found: UserFound::Unavailable });
                continue;
            }
            p.retried = true;
            self.pending.insert(req, p);
        }
        self.chan = Some(chan);
        answers
    }

    /// The channel broke or closed. The questions whose sessions wait
    /// stay, to be asked again of the next lookup process within their
    /// deadline, unless they were asked again already: those get 451.
    pub fn drop_channel(&mut self) -> Vec<Answer> {
        self.chan = None;
        let mut answers = Vec::new();
        self.pending.retain(|_, p| match p.token {
            None => false,
            Some(token) if p.retried => {
                answers.push(Answer { token, found: UserFound::Unavailable });
                false
            }
            Some(_) => true,
        });
        answers
    }

    /// The answers waiting on `old`, a channel being replaced.
    fn drain(&mut self, old: &mut Channel, now: Instant) -> Vec<Answer> {
        let mut answers = Vec::new();
        while let Ok(Some((LookupToSmtpd::User { req, found }, fds))) = old.recv::<LookupToSmtpd>() {
            if !fds.is_empty() {
                break;
            }
            answers.extend(self.settle(req, found, now));
        }
        answers
    }

    /// The answer to question `req`: remembered, and for the session
    /// that waits for it, if any.
    fn settle(&mut self, req: u64, found: UserFound, now: Instant) -> Option<Answer> {
        let p = self.pending.remove(&req)?;
        self.remember(p.name, found, now);
        p.token.map(|token| Answer { token, found })
    }

    /// The remembered answer for `name`, if it is still fresh at `now`.
    pub fn cached(&mut self, name: &str, now: Instant) -> Option<UserFound> {
        let &(found, until) = self.cache.get(name)?;
        if until > now {
            return Some(found);
        }
        self.cache.remove(name);
        None
    }

    /// Ask about `name` for session `token`. Some(req): the session
    /// waits for the answer; None: no one can answer now (lookups off,
    /// no lookup process, `local.directory_lookup_backlog` questions
    /// unanswered): the session gets 451 at once.
    ///
    /// The backlog counts the questions whose sessions stopped waiting
    /// (timed out, closed) until their answers come: a name service that
    /// hangs then holds that many questions, not one per RCPT for as long
    /// as it hangs, in smtpd's channel and in the lookup process.
    pub fn ask(&mut self, token: Token, name: &str, now: Instant) -> Option<u64> {
        let settings = self.settings.as_ref()?;
        let timeout = settings.timeout;
        if self.pending.len() >= settings.backlog as usize {
            return None;
        }
        let chan = self.chan.as_mut()?;
        let req = self.next;
        self.next += 1;
        if chan.send(&SmtpdToLookup::User { req, name: name.to_string() }, &[]).is_err() {
            return None;
        }
        self.pending.insert(
            req,
            Pending { token: Some(token), name: name.to_string(), deadline: now + timeout, retried: false },
        );
        Some(req)
    }

    /// The session closed before its answer came. (Without a channel,
    /// the question is not in any lookup process's hands: forgotten.)
    pub fn cancel(&mut self, req: u64) {
        if self.chan.is_none() {
            self.pending.remove(&req);
        } else if let Some(p) = self.pending.get_mut(&req) {
            p.token = None;
        }
    }

    /// Send what the channel could not take at once. Err: it broke.
    pub fn flush(&mut self) -> Result<(), ipc::Error> {
        match self.chan.as_mut() {
            Some(c) => c.flush().map(drop),
            None => Ok(()),
        }
    }

    fn remember(&mut self, name: String, found: UserFound, now: Instant) {
        let (ttl, max) = self.settings.as_ref().map_or((Duration::ZERO, 0), |s| (s.cache, s.cache_names as usize));
        if ttl.is_zero() || found == UserFound::Unavailable {
            return;
        }
        if self.cache.len() >= max && !self.cache.contains_key(&name) {
            self.cache.retain(|_, (_, until)| *until > now);
            if self.cache.len() >= max {
                // All fresh: the ones closest to expiring go.
                let mut ends: Vec<Instant> = self.cache.values().map(|(_, u)| *u).collect();
                ends.sort_unstable();
                let cut = ends[ends.len() / 4];
                self.cache.retain(|_, (_, until)| *until > cut);
            }
        }
        self.cache.insert(name, (found, now + ttl));
    }

    /// The answers that arrived. Err: the lookup process broke the
    /// protocol (the caller ends smtpd, as for any peer that does). A
    /// channel that closed is dropped, and its waiting sessions get 451.
    pub fn receive(&mut self, now: Instant) -> Result<Vec<Answer>, String> {
        let mut answers = Vec::new();
        loop {
            let Some(chan) = self.chan.as_mut() else { return Ok(answers) };
            match chan.recv::<LookupToSmtpd>() {
                Ok(None) => return Ok(answers),
                Ok(Some((_, fds))) if !fds.is_empty() => {
                    return Err(String::from("the lookup process sent descriptors"));
                }
                Ok(Some((LookupToSmtpd::User { req, found }, _))) => answers.extend(self.settle(req, found, now)),
                Err(ipc::Error::Closed) => {
                    answers.extend(self.drop_channel());
                    return Ok(answers);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// The sessions whose wait is over at `now`: 451. (Their questions
    /// stay outstanding while a lookup process has them; without a
    /// channel, they are forgotten.)
    pub fn expired(&mut self, now: Instant) -> Vec<Answer> {
        let answers = self
            .pending
            .values_mut()
            .filter(|p| p.deadline <= now)
            .filter_map(|p| p.token.take())
            .map(|token| Answer { token, found: UserFound::Unavailable })
            .collect();
        if self.chan.is_none() {
            self.pending.retain(|_, p| p.token.is_some());
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_CACHED: usize = 100;
    const MAX_OUTSTANDING: usize = 16;

    fn settings(cache: u64) -> Option<DirectoryLookup> {
        Some(DirectoryLookup {
            timeout: Duration::from_secs(5),
            cache: Duration::from_secs(cache),
            cache_names: MAX_CACHED as u32,
            backlog: MAX_OUTSTANDING as u32,
        })
    }

    fn users(cache: u64) -> (Users, Channel) {
        let (ours, theirs) = ipc::pair().expect("pair");
        let mut u = Users::new(settings(cache));
        assert!(u.set_channel(Channel::new(ours), Instant::now()).is_empty());
        (u, Channel::new(theirs))
    }

    fn question(lookup: &mut Channel) -> (u64, String) {
        match lookup.recv::<SmtpdToLookup>().expect("recv") {
            Some((SmtpdToLookup::User { req, name }, _)) => (req, name),
            None => panic!("no question"),
        }
    }

    fn answer(lookup: &mut Channel, req: u64, found: UserFound) {
        lookup.send(&LookupToSmtpd::User { req, found }, &[]).expect("send");
    }

    #[test]
    fn answers_go_to_the_sessions_that_asked_and_are_remembered() {
        let (mut u, mut lookup) = users(60);
        let now = Instant::now();
        let r1 = u.ask(Token(10), "alice", now).expect("asked");
        let r2 = u.ask(Token(11), "bob", now).expect("asked");
        assert_eq!(question(&mut lookup), (r1, String::from("alice")));
        assert_eq!(question(&mut lookup), (r2, String::from("bob")));
        answer(&mut lookup, r2, UserFound::No);
        answer(&mut lookup, r1, UserFound::Yes);
        // An answer nobody waits for is dropped.
        answer(&mut lookup, 999, UserFound::Yes);
        let got = u.receive(now).expect("receive");
        assert_eq!(
            got,
            [Answer { token: Token(11), found: UserFound::No }, Answer { token: Token(10), found: UserFound::Yes }]
        );
        assert_eq!(u.cached("alice", now + Duration::from_secs(59)), Some(UserFound::Yes));
        assert_eq!(u.cached("bob", now + Duration::from_secs(59)), Some(UserFound::No));
        assert_eq!(u.cached("alice", now + Duration::from_secs(60)), None);
        assert_eq!(u.cached("carol", now), None);
    }

    #[test]
    fn failures_and_a_zero_cache_are_not_remembered() {
        let (mut u, mut lookup) = users(60);
        let now = Instant::now();
        let r = u.ask(Token(1), "alice", now).expect("asked");
        answer(&mut lookup, r, UserFound::Unavailable);
        assert_eq!(u.receive(now).expect("receive"), [Answer { token: Token(1), found: UserFound::Unavailable }]);
        assert_eq!(u.cached("alice", now), None);
        let (mut u, mut lookup) = users(0);
        let r = u.ask(Token(1), "alice", now).expect("asked");
        answer(&mut lookup, r, UserFound::Yes);
        assert_eq!(u.receive(now).expect("receive").len(), 1);
        assert_eq!(u.cached("alice", now), None);
    }

    #[test]
    fn the_cache_is_bounded() {
        let (mut u, _lookup) = users(60);
        let now = Instant::now();
        for i in 0..MAX_CACHED + 100 {
            u.remember(format!("u{i}"), UserFound::No, now + Duration::from_millis(i as u64));
            assert!(u.cache.len() <= MAX_CACHED);
        }
        // The newest are kept.
        assert_eq!(u.cached(&format!("u{}", MAX_CACHED + 99), now), Some(UserFound::No));
    }

    #[test]
    fn no_question_when_off_or_without_a_lookup_process() {
        let (ours, theirs) = ipc::pair().expect("pair");
        let mut u = Users::new(None);
        u.set_channel(Channel::new(ours), Instant::now());
        assert!(!u.enabled());
        assert_eq!(u.ask(Token(1), "alice", Instant::now()), None);
        assert!(Channel::new(theirs).recv::<SmtpdToLookup>().expect("recv").is_none());
        let mut u = Users::new(settings(60));
        assert_eq!(u.ask(Token(1), "alice", Instant::now()), None);
    }

    #[test]
    fn the_wait_is_bounded() {
        let (mut u, _lookup) = users(60);
        let now = Instant::now();
        u.ask(Token(1), "alice", now).expect("asked");
        u.ask(Token(2), "bob", now + Duration::from_secs(3)).expect("asked");
        assert!(u.expired(now + Duration::from_secs(4)).is_empty());
        assert_eq!(
            u.expired(now + Duration::from_secs(5)),
            [Answer { token: Token(1), found: UserFound::Unavailable }]
        );
        assert_eq!(
            u.expired(now + Duration::from_secs(9)),
            [Answer { token: Token(2), found: UserFound::Unavailable }]
        );
    }

    #[test]
    fn a_name_service_that_hangs_holds_a_bounded_number_of_questions() {
        let (mut u, mut lookup) = users(60);
        let now = Instant::now();
        let first = u.ask(Token(0), "u0", now).expect("asked");
        for i in 1..MAX_OUTSTANDING {
            u.ask(Token(i), &format!("u{i}"), now).expect("asked");
        }
        // Every session stops waiting; the questions stay outstanding.
        assert_eq!(u.expired(now + Duration::from_secs(5)).len(), MAX_OUTSTANDING);
        assert!(u.expired(now + Duration::from_secs(6)).is_empty());
        assert_eq!(u.ask(Token(9999), "more", now), None);
        // A late answer frees a place, and is remembered for the next asker.
        answer(&mut lookup, first, UserFound::Yes);
        assert!(u.receive(now).expect("receive").is_empty());
        assert_eq!(u.cached("u0", now), Some(UserFound::Yes));
        assert!(u.ask(Token(9999), "more", now).is_some());
        assert_eq!(u.ask(Token(10000), "again", now), None);
    }

    #[test]
    fn a_cancelled_question_gets_no_answer() {
        let (mut u, mut lookup) = users(60);
        let r = u.ask(Token(1), "alice", Instant::now()).expect("asked");
        u.cancel(r);
        answer(&mut lookup, r, UserFound::Yes);
        assert!(u.receive(Instant::now()).expect("receive").is_empty());
    }

    #[test]
    fn a_question_is_asked_again_once_of_the_next_lookup_process() {
        let (mut u, lookup) = users(60);
        let now = Instant::now();
        let r = u.ask(Token(1), "alice", now).expect("asked");
        let gone = u.ask(Token(2), "gone", now).expect("asked");
        u.cancel(gone);
        drop(lookup);
        // The session goes on waiting, for the next process.
        assert!(u.receive(now).expect("receive").is_empty());
        assert!(u.channel().is_none());
        assert_eq!(u.ask(Token(3), "bob", now), None);
        let (ours, theirs) = ipc::pair().expect("pair");
        let mut lookup = Channel::new(theirs);
        assert!(u.set_channel(Channel::new(ours), now).is_empty());
        // Asked again, the question no session waits for is not.
        assert_eq!(question(&mut lookup), (r, String::from("alice")));
        assert!(lookup.recv::<SmtpdToLookup>().expect("recv").is_none());
        answer(&mut lookup, r, UserFound::Yes);
        assert_eq!(u.receive(now).expect("receive"), [Answer { token: Token(1), found: UserFound::Yes }]);

        // Asked again once only: a name that makes each process crash.
        let r = u.ask(Token(4), "crash", now).expect("asked");
        drop(lookup);
        assert!(u.receive(now).expect("receive").is_empty());
        let (ours, theirs) = ipc::pair().expect("pair");
        let mut lookup = Channel::new(theirs);
        assert!(u.set_channel(Channel::new(ours), now).is_empty());
        assert_eq!(question(&mut lookup), (r, String::from("crash")));
        drop(lookup);
        assert_eq!(u.receive(now).expect("receive"), [Answer { token: Token(4), found: UserFound::Unavailable }]);
        assert!(u.pending.is_empty());
    }

    #[test]
    fn a_replaced_lookup_process_gives_its_answers_and_the_next_gets_the_rest() {
        let (mut u, mut old) = users(60);
        let now = Instant::now();
        let r1 = u.ask(Token(1), "alice", now).expect("asked");
        let r2 = u.ask(Token(2), "bob", now).expect("asked");
        assert_eq!(question(&mut old), (r1, String::from("alice")));
        answer(&mut old, r1, UserFound::No);
        let (ours, theirs) = ipc::pair().expect("pair");
        let mut new = Channel::new(theirs);
        assert_eq!(u.set_channel(Channel::new(ours), now), [Answer { token: Token(1), found: UserFound::No }]);
        assert_eq!(u.cached("alice", now), Some(UserFound::No));
        assert_eq!(question(&mut new), (r2, String::from("bob")));
        assert!(new.recv::<SmtpdToLookup>().expect("recv").is_none());
        // A second replacement: asked again already, so 451.
        let (ours, _third) = ipc::pair().expect("pair");
        assert_eq!(u.set_channel(Channel::new(ours), now), [Answer { token: Token(2), found: UserFound::Unavailable }]);
    }

    #[test]
    fn without_a_lookup_process_the_wait_is_bounded_too() {
        let (mut u, lookup) = users(60);
        let now = Instant::now();
        u.ask(Token(1), "alice", now).expect("asked");
        drop(lookup);
        assert!(u.receive(now).expect("receive").is_empty());
        assert!(u.expired(now + Duration::from_secs(4)).is_empty());
        assert_eq!(
            u.expired(now + Duration::from_secs(5)),
            [Answer { token: Token(1), found: UserFound::Unavailable }]
        );
        // Forgotten: the next process is not asked.
        assert!(u.pending.is_empty());
        let r = u.ask(Token(2), "gone", now);
        assert_eq!(r, None);
    }

    #[test]
    fn a_lookup_process_that_breaks_the_protocol_is_an_error() {
        let (mut u, mut lookup) = users(60);
        lookup.send(&crate::ipc::msg::FromMaster::Stop, &[]).expect("send");
        assert!(u.receive(Instant::now()).is_err());
    }
}

//! The lookup role: answers smtpd's question whether a local name is a
//! user the system's name service knows (getpwnam(3): /etc/passwd, and
//! NIS, LDAP, sssd or systemd's user database as nsswitch.conf says), for
//! the names the local-recipient table lacks. The table holds the users
//! the name service lists (`local users`), but a directory need not list
//! them: sssd does not without `enumerate`, its default. Postfix asks
//! such a directory at RCPT through proxymap; mta asks it here, in a
//! process of its own, so that neither smtpd (which has no file system)
//! nor local's root parent (which waits on deliveries) makes the call.
//!
//! It runs as the mail user, in a sandbox that reads the file system (the
//! C library reads nsswitch.conf and loads the name-service modules) and
//! reaches the name services' AF_UNIX sockets, but writes, makes and
//! changes nothing by path and starts no process (`roles::policy`).
//! `local.directory_lookup_threads` threads look names up at once (a few
//! dozen questions each at most are taken from the channels; the rest
//! wait there), so one name the name service is slow on holds up no
//! other while threads are free; smtpd answers its clients 451 after
//! `local.directory_lookup_timeout` and remembers the answers for
//! `local.directory_lookup_cache`.
//!
//! master starts it only when smtpd asks it anything
//! ([`crate::config::LocalConf::looks_up_users`]) and hands it a channel
//! to each smtpd process. Asked to stop (a reload or a stop), it goes on
//! answering until no smtpd holds its channel: at a reload master hands
//! the new lookup process to the old smtpd processes too, which then
//! close theirs to this one.
//!
//! Trusts: master. smtpd's questions are checked: a name that is no
//! plausible user name ([`plausible_user`]) is answered "no" without a
//! lookup; a channel that carries anything else is closed (and logged),
//! and that smtpd's questions are answered 451 until master restarts it.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, mpsc};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use sandbox::Sandboxed;

use crate::child::Child;
use crate::ipc::msg::{FromMaster, LookupToSmtpd, SmtpdToLookup, UserFound};
use crate::ipc::{self, Channel};
use crate::roles::Role;

const MASTER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_PEER: usize = 2;
/// Channels at once: smtpd processes, and those of the last generation
/// finishing their sessions.
const MAX_PEERS: usize = 1024 + 64;
/// Questions read from one channel per turn, so that one smtpd cannot
/// keep the others waiting.
const PER_TURN: usize = 64;
/// Questions taken from the channels and not yet answered, per thread:
/// past that, the rest wait in the channels (and smtpd's backlog bounds
/// those).
const QUEUED_PER_THREAD: usize = 16;
/// The longest user name asked (the longest local part is 64 octets).
pub const MAX_NAME: usize = 64;

/// Whether `name` could be a user name: what smtpd asks and lookup
/// answers. 1 to [`MAX_NAME`] octets of letters, digits, `.`, `_`, `-`
/// (POSIX's portable user names) and `$` (Samba's machine accounts), not
/// starting with `-` (an option to some tools) or `.`; lower case (the
/// local part is folded, as local folds it before it looks the user up).
pub fn plausible_user(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with(['-', '.'])
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'$'))
}

/// Ask the name service about `name` (see [`plausible_user`]); the answer
/// and, for a failed lookup, why.
pub fn look_up(name: &str) -> (UserFound, Option<String>) {
    if !plausible_user(name) {
        return (UserFound::No, None);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(_)) => (UserFound::Yes, None),
        Ok(None) => (UserFound::No, None),
        Err(e) => (UserFound::Unavailable, Some(format!("looking up user {name:?}: {e}"))),
    }
}

/// A question for a thread, and its answer.
struct Question {
    token: Token,
    req: u64,
    name: String,
}
struct Answered {
    token: Token,
    req: u64,
    found: UserFound,
    why: Option<String>,
}

/// The threads that look names up: getpwnam(3) blocks (on a directory
/// server, for as long as the name service lets it), so each runs on a
/// thread of its own while the loop goes on reading questions and
/// writing answers. With no thread (none could start), names are looked
/// up in the loop, one at a time.
struct Threads {
    questions: Option<mpsc::Sender<Question>>,
    answers: mpsc::Receiver<Answered>,
    count: usize,
    /// Questions handed to the threads and not answered yet.
    out: usize,
}

impl Threads {
    fn start(n: usize, waker: Waker) -> (Threads, Option<String>) {
        let (qtx, qrx) = mpsc::channel::<Question>();
        let (atx, arx) = mpsc::channel::<Answered>();
        let qrx = Arc::new(Mutex::new(qrx));
        let waker = Arc::new(waker);
        let mut count = 0;
        let mut error = None;
        for i in 0..n {
            let (qrx, atx, waker) = (Arc::clone(&qrx), atx.clone(), Arc::clone(&waker));
            let spawned = std::thread::Builder::new().name(format!("lookup-{i}")).spawn(move || {
                loop {
                    let q = match qrx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(Question { token, req, name }) = q else { return };
                    let (found, why) = look_up(&name);
                    if atx.send(Answered { token, req, found, why }).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            });
            match spawned {
                Ok(_) => count += 1,
                Err(e) => {
                    error = Some(format!("starting a lookup thread: {e}"));
                    break;
                }
            }
        }
        let t = Threads { questions: (count > 0).then_some(qtx), answers: arx, count, out: 0 };
        (t, error)
    }

    /// Room for another question.
    fn room(&self) -> bool {
        self.count == 0 || self.out < self.count * QUEUED_PER_THREAD
    }
}

struct Peer {
    chan: Channel,
    pid: u32,
}

struct Lookup {
    child: Child,
    poll: Poll,
    peers: HashMap<Token, Peer>,
    /// Channels that may hold questions not read yet: read when the
    /// threads have room.
    unread: VecDeque<Token>,
    threads: Threads,
    next: usize,
    stopping: bool,
}

/// Serve until master says stop and the smtpd channels have closed.
pub fn serve(_token: Sandboxed, mut child: Child) -> ! {
    let poll = Poll::new().unwrap_or_else(|e| crate::child::die(Role::Lookup, &format!("poll: {e}")));
    if let Err(e) = child.register_master(poll.registry(), MASTER) {
        child.fatal(&format!("registering the master channel: {e}"));
    }
    let waker = Waker::new(poll.registry(), WAKER).unwrap_or_else(|e| child.fatal(&format!("waker: {e}")));
    let wanted = child.config.lookup_threads.max(1) as usize;
    let (threads, error) = Threads::start(wanted, waker);
    if let Some(e) = error {
        child.warn(&format!("{e}; {} of {wanted} threads look names up", threads.count));
    }
    let mut l = Lookup {
        child,
        poll,
        peers: HashMap::new(),
        unread: VecDeque::new(),
        threads,
        next: FIRST_PEER,
        stopping: false,
    };
    let mut events = Events::with_capacity(64);
    loop {
        if let Err(e) = l.poll.poll(&mut events, None)
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            l.child.fatal(&format!("poll: {e}"));
        }
        for ev in events.iter() {
            match ev.token() {
                MASTER => {
                    if l.child.master_event(ev) {
                        l.master_readable();
                    }
                }
                WAKER => l.answer(),
                t => {
                    if ev.is_writable() {
                        l.flush(t);
                    }
                    // Readable, or closed: read to find out.
                    if !l.unread.contains(&t) {
                        l.unread.push_back(t);
                    }
                }
            }
        }
        l.answer();
        l.read_questions();
        l.child.end_turn(l.poll.registry());
        if l.stopping && l.peers.is_empty() {
            l.child.exit(0);
        }
    }
}

impl Lookup {
    fn master_readable(&mut self) {
        loop {
            match self.child.master.recv::<FromMaster>() {
                Ok(None) => return,
                Ok(Some((FromMaster::Peer { role: Role::Smtpd, pid }, fds))) => {
                    let chan = self.child.peer_channel(Role::Smtpd, fds);
                    self.add_peer(chan, pid);
                }
                Ok(Some((FromMaster::Stop, _))) => {
                    self.stopping = true;
                    if self.peers.is_empty() {
                        self.child.exit(0);
                    }
                }
                Ok(Some((m, _))) => self.child.fatal(&format!("unexpected message from master: {m:?}")),
                Err(ipc::Error::Closed) => std::process::exit(0),
                Err(e) => self.child.fatal(&format!("master channel: {e}")),
            }
        }
    }

    fn add_peer(&mut self, chan: Channel, pid: u32) {
        if self.peers.len() >= MAX_PEERS {
            self.child.warn(&format!("more than {MAX_PEERS} smtpd channels: the one to pid {pid} is refused"));
            return;
        }
        let token = Token(self.next);
        self.next += 1;
        let raw = chan.as_raw_fd();
        if let Err(e) =
            self.poll.registry().register(&mut SourceFd(&raw), token, Interest::READABLE | Interest::WRITABLE)
        {
            self.child.fatal(&format!("registering a channel: {e}"));
        }
        self.child.debug(&format!("channel to smtpd pid {pid}"));
        // Questions waiting already are reported by the poll as readable.
        self.peers.insert(token, Peer { chan, pid });
    }

    fn drop_peer(&mut self, token: Token, why: Option<String>) {
        if let Some(p) = self.peers.remove(&token) {
            let _ = self.poll.registry().deregister(&mut SourceFd(&p.chan.as_raw_fd()));
            match why {
                Some(w) => self.child.warn(&format!("smtpd pid {}: {w}; its channel is closed", p.pid)),
                None => self.child.debug(&format!("channel to smtpd pid {} closed", p.pid)),
            }
        }
    }

    fn flush(&mut self, token: Token) {
        let Some(p) = self.peers.get_mut(&token) else { return };
        if let Err(e) = p.chan.flush() {
            self.drop_peer(token, Some(e.to_string()));
        }
    }

    /// Read questions, PER_TURN from each channel in turn, while the
    /// threads have room; a channel with more waits its next turn.
    fn read_questions(&mut self) {
        while self.threads.room()
            && let Some(token) = self.unread.pop_front()
        {
            if self.serve_peer(token) {
                self.unread.push_back(token);
            }
        }
    }

    /// Take up to PER_TURN questions from `token`'s smtpd (while the
    /// threads have room); true if it may have more.
    fn serve_peer(&mut self, token: Token) -> bool {
        for _ in 0..PER_TURN {
            if !self.threads.room() {
                return true;
            }
            let Some(p) = self.peers.get_mut(&token) else { return false };
            let (req, name) = match p.chan.recv::<SmtpdToLookup>() {
                Ok(None) => return false,
                Ok(Some((_, fds))) if !fds.is_empty() => {
                    self.drop_peer(token, Some(String::from("it sent descriptors")));
                    return false;
                }
                Ok(Some((SmtpdToLookup::User { req, name }, _))) => (req, name),
                Err(ipc::Error::Closed) => {
                    self.drop_peer(token, None);
                    return false;
                }
                Err(e) => {
                    self.drop_peer(token, Some(e.to_string()));
                    return false;
                }
            };
            // A name no user could have is answered here; the others by a
            // thread (or here, without threads).
            let name = match &self.threads.questions {
                Some(q) if plausible_user(&name) => match q.send(Question { token, req, name }) {
                    Ok(()) => {
                        self.threads.out += 1;
                        continue;
                    }
                    Err(mpsc::SendError(q)) => q.name,
                },
                _ => name,
            };
            if !self.reply(token, req, look_up(&name)) {
                return false;
            }
        }
        true
    }

    /// Send the threads' answers to the smtpd processes that asked.
    fn answer(&mut self) {
        while let Ok(Answered { token, req, found, why }) = self.threads.answers.try_recv() {
            self.threads.out -= 1;
            self.reply(token, req, (found, why));
        }
    }

    /// Send one answer; false if the channel is gone.
    fn reply(&mut self, token: Token, req: u64, (found, why): (UserFound, Option<String>)) -> bool {
        if let Some(w) = why {
            self.child.warn(&w);
        }
        // An smtpd that went meanwhile.
        let Some(p) = self.peers.get_mut(&token) else { return false };
        match p.chan.send(&LookupToSmtpd::User { req, found }, &[]) {
            Ok(()) => true,
            // That smtpd went, or took the next lookup process.
            Err(ipc::Error::Closed) => {
                self.drop_peer(token, None);
                false
            }
            Err(e) => {
                self.drop_peer(token, Some(format!("answering: {e}")));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_user_names() {
        for ok in ["root", "john.doe", "a_b-c", "machine$", "u1", &"x".repeat(MAX_NAME)] {
            assert!(plausible_user(ok), "{ok}");
        }
        for bad in ["", "-rf", ".hidden", "John", "a b", "a/b", "a@b", "ä", "a\n", &"x".repeat(MAX_NAME + 1)] {
            assert!(!plausible_user(bad), "{bad:?}");
        }
    }

    #[test]
    fn look_up_answers_from_the_name_service() {
        assert_eq!(look_up("root"), (UserFound::Yes, None));
        assert_eq!(look_up("no-such-user-mta-test").0, UserFound::No);
        // Not asked at all.
        assert_eq!(look_up("../etc"), (UserFound::No, None));
    }
}

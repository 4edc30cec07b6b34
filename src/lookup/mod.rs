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
//! changes nothing by path and starts no process (`roles::policy`). One
//! question at a time, in the order they come: a name service that hangs
//! holds up the questions behind it, and smtpd answers its clients 451
//! after `local.directory_lookup_timeout` meanwhile; smtpd remembers the
//! answers for `local.directory_lookup_cache`.
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

use std::collections::HashMap;
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use sandbox::Sandboxed;

use crate::child::Child;
use crate::ipc::msg::{FromMaster, LookupToSmtpd, SmtpdToLookup, UserFound};
use crate::ipc::{self, Channel};
use crate::roles::Role;

const MASTER: Token = Token(0);
const FIRST_PEER: usize = 1;
/// Channels at once: smtpd processes, and those of the last generation
/// finishing their sessions.
const MAX_PEERS: usize = 1024 + 64;
/// Questions read from one channel per turn, so that one smtpd cannot
/// keep the others waiting.
const PER_TURN: usize = 64;
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

struct Peer {
    chan: Channel,
    pid: u32,
}

struct Lookup {
    child: Child,
    poll: Poll,
    peers: HashMap<Token, Peer>,
    next: usize,
    stopping: bool,
}

/// Serve until master says stop and the smtpd channels have closed.
pub fn serve(_token: Sandboxed, mut child: Child) -> ! {
    let poll = Poll::new().unwrap_or_else(|e| crate::child::die(Role::Lookup, &format!("poll: {e}")));
    if let Err(e) = child.register_master(poll.registry(), MASTER) {
        child.fatal(&format!("registering the master channel: {e}"));
    }
    let mut l = Lookup { child, poll, peers: HashMap::new(), next: FIRST_PEER, stopping: false };
    let mut events = Events::with_capacity(64);
    loop {
        if let Err(e) = l.poll.poll(&mut events, None)
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            l.child.fatal(&format!("poll: {e}"));
        }
        let mut pending: Vec<Token> = Vec::new();
        for ev in events.iter() {
            match ev.token() {
                MASTER => {
                    if l.child.master_event(ev) {
                        l.master_readable();
                    }
                }
                t => {
                    if ev.is_writable() {
                        l.flush(t);
                    }
                    pending.push(t);
                }
            }
        }
        // Round robin, PER_TURN questions each, until all are answered.
        while !pending.is_empty() {
            pending.retain(|t| l.serve_peer(*t));
        }
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

    /// Answer up to PER_TURN questions from `token`'s smtpd; true if it
    /// may have more.
    fn serve_peer(&mut self, token: Token) -> bool {
        for _ in 0..PER_TURN {
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
            let (found, why) = look_up(&name);
            if let Some(w) = why {
                self.child.warn(&w);
            }
            let Some(p) = self.peers.get_mut(&token) else { return false };
            match p.chan.send(&LookupToSmtpd::User { req, found }, &[]) {
                Ok(()) => {}
                // That smtpd went, or took the next lookup process.
                Err(ipc::Error::Closed) => {
                    self.drop_peer(token, None);
                    return false;
                }
                Err(e) => {
                    self.drop_peer(token, Some(format!("answering: {e}")));
                    return false;
                }
            }
        }
        true
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

//! qmgr: the queue manager. It holds the queue directories (incoming,
//! active, deferred, hold, corrupt) as descriptors and nothing else. For
//! now it answers control's queue-count requests; scheduling and delivery
//! grow here.
//!
//! Trusts: master; control's requests are checked for shape only (control
//! already checked who asked).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use sandbox::Sandboxed;

use crate::child::Child;
use crate::ipc::Channel;
use crate::ipc::msg::{ControlToQmgr, FromMaster, QmgrToControl};
use crate::roles::{QUEUE_DIRS, Role};

pub mod scan;
pub mod schedule;

const MASTER: Token = Token(0);
/// Messages in one listing message to control.
const LIST_PART: usize = 500;
/// Most messages listed at once.
const MAX_LISTED: usize = 1_000_000;

/// Count the queue files of a directory held by descriptor.
pub fn count_entries(dir: &OwnedFd) -> std::io::Result<u64> {
    let mut d = Dir::openat(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    let mut n = 0;
    for e in d.iter() {
        let e = e?;
        let name = e.file_name().to_bytes();
        // Names starting with a dot are cleanup's files being written.
        if !name.starts_with(b".") {
            n += 1;
        }
    }
    Ok(n)
}

struct Qmgr {
    child: Child,
    poll: Poll,
    peers: HashMap<Token, Channel>,
    next_token: usize,
}

/// Serve until master says stop.
pub fn serve(_token: Sandboxed, child: Child) -> ! {
    let poll = Poll::new().unwrap_or_else(|e| crate::child::die(Role::Qmgr, &format!("poll: {e}")));
    let mut q = Qmgr { child, poll, peers: HashMap::new(), next_token: 1 };
    let raw = q.child.master.as_raw_fd();
    if let Err(e) = q.poll.registry().register(&mut SourceFd(&raw), MASTER, Interest::READABLE) {
        q.child.fatal(&format!("registering the master channel: {e}"));
    }
    q.child.debug("serving");
    let mut events = Events::with_capacity(64);
    loop {
        if let Err(e) = q.poll.poll(&mut events, Some(Duration::from_secs(60)))
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            q.child.fatal(&format!("poll: {e}"));
        }
        for ev in events.iter() {
            match ev.token() {
                MASTER => q.master_readable(),
                t => q.peer_readable(t),
            }
        }
    }
}

impl Qmgr {
    fn master_readable(&mut self) {
        loop {
            match self.child.master.recv::<FromMaster>() {
                Ok(None) => break,
                Ok(Some((FromMaster::Peer { role: Role::Control, pid }, fds))) => {
                    let chan = self.child.peer_channel(Role::Control, fds);
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    let raw = chan.as_raw_fd();
                    if let Err(e) = self.poll.registry().register(&mut SourceFd(&raw), token, Interest::READABLE) {
                        self.child.fatal(&format!("registering a control channel: {e}"));
                    }
                    self.peers.insert(token, chan);
                    self.child.debug(&format!("channel to control pid {pid}"));
                }
                Ok(Some((FromMaster::Stop, _))) => {
                    let _ = self.child.master.flush();
                    std::process::exit(0);
                }
                Ok(Some((m, _))) => self.child.fatal(&format!("unexpected message from master: {m:?}")),
                Err(crate::ipc::Error::Closed) => std::process::exit(0),
                Err(e) => self.child.fatal(&format!("master channel: {e}")),
            }
        }
    }

    fn peer_readable(&mut self, token: Token) {
        loop {
            let Some(chan) = self.peers.get_mut(&token) else { return };
            match chan.recv::<ControlToQmgr>() {
                Ok(None) => break,
                Ok(Some((ControlToQmgr::QueueCounts { id }, fds))) => {
                    if !fds.is_empty() {
                        self.child.fatal("control sent descriptors with a queue-count request");
                    }
                    let mut counts = Vec::with_capacity(QUEUE_DIRS.len());
                    let mut errors = Vec::new();
                    for (name, fd) in QUEUE_DIRS.iter().zip(&self.child.fds) {
                        match count_entries(fd) {
                            Ok(n) => counts.push((name.to_string(), n)),
                            Err(e) => errors.push(format!("counting {name}: {e}")),
                        }
                    }
                    for e in errors {
                        self.child.warn(&e);
                    }
                    let reply = QmgrToControl::QueueCounts { id, counts };
                    if let Some(chan) = self.peers.get_mut(&token)
                        && let Err(e) = chan.send(&reply, &[])
                    {
                        self.drop_peer(token, &e.to_string());
                        return;
                    }
                }
                Ok(Some((ControlToQmgr::List { id }, fds))) => {
                    if !fds.is_empty() {
                        self.child.fatal("control sent descriptors with a list request");
                    }
                    if !self.list(token, id) {
                        return;
                    }
                }
                Err(crate::ipc::Error::Closed) => {
                    self.drop_peer(token, "closed");
                    return;
                }
                // A malformed or unexpected message ends the receiver;
                // master restarts it.
                Err(e) => self.child.fatal(&format!("control channel: {e}")),
            }
        }
    }

    /// Send the whole queue to control, in parts; false if the channel failed.
    fn list(&mut self, token: Token, id: u64) -> bool {
        let corrupt_index = QUEUE_DIRS.iter().position(|d| *d == "corrupt").unwrap_or(QUEUE_DIRS.len() - 1);
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for (i, name) in QUEUE_DIRS.iter().enumerate() {
            if i == corrupt_index {
                continue;
            }
            let s = scan::scan(name, &self.child.fds[i], &self.child.fds[corrupt_index], MAX_LISTED - entries.len());
            entries.extend(s.entries);
            problems.extend(s.moved_to_corrupt);
            problems.extend(s.errors);
        }
        for p in problems {
            self.child.warn(&p);
        }
        let mut parts: Vec<Vec<_>> = entries.chunks(LIST_PART).map(<[_]>::to_vec).collect();
        if parts.is_empty() {
            parts.push(Vec::new());
        }
        let n = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let msg = QmgrToControl::List { id, entries: part, last: i + 1 == n };
            if let Some(chan) = self.peers.get_mut(&token)
                && let Err(e) = chan.send(&msg, &[])
            {
                self.drop_peer(token, &e.to_string());
                return false;
            }
        }
        true
    }

    fn drop_peer(&mut self, token: Token, why: &str) {
        if let Some(chan) = self.peers.remove(&token) {
            let raw = chan.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
            if why != "closed" {
                self.child.warn(&format!("dropping control channel: {why}"));
            }
        }
    }
}

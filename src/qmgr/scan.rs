//! Reading the queue as it is on disk: every queue file is opened by
//! descriptor (no path), checked as a regular file with one link, and
//! validated by the queue format's reader. A file that fails validation
//! is moved to corrupt/ and logged; it never stops the scan.
//!
//! Trusts: nothing in the files.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstat};

use crate::ipc::msg::QueueEntry;
use crate::queue;

/// One queue directory's entries, and what went wrong on the way.
pub struct Scan {
    pub entries: Vec<QueueEntry>,
    pub moved_to_corrupt: Vec<String>,
    pub errors: Vec<String>,
}

/// List and validate the queue files of `dir` (named `name` in listings).
pub fn scan(name: &str, dir: &OwnedFd, corrupt: &OwnedFd, limit: usize) -> Scan {
    let mut out = Scan { entries: Vec::new(), moved_to_corrupt: Vec::new(), errors: Vec::new() };
    let names = match queue_names(dir) {
        Ok(n) => n,
        Err(e) => {
            out.errors.push(format!("listing {name}: {e}"));
            return out;
        }
    };
    for file in names {
        if out.entries.len() >= limit {
            break;
        }
        match read_entry(name, dir, &file) {
            Ok(Some(e)) => out.entries.push(e),
            Ok(None) => {}
            Err(why) => match queue::move_to_corrupt(dir.as_fd(), &file, corrupt.as_fd()) {
                Ok(to) => out.moved_to_corrupt.push(format!("{name}/{file}: {why}; moved to corrupt/{to}")),
                Err(e) => out.errors.push(format!("{name}/{file}: {why}; cannot move it to corrupt/: {e}")),
            },
        }
    }
    out
}

/// The names of queue files (not cleanup's temporary dot-files).
fn queue_names(dir: &OwnedFd) -> std::io::Result<Vec<String>> {
    let mut d =
        nix::dir::Dir::openat(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if !n.starts_with(b".")
            && let Ok(s) = std::str::from_utf8(n)
        {
            names.push(s.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Read one file's envelope. Ok(None): it vanished meanwhile (delivered).
fn read_entry(dir_name: &str, dir: &OwnedFd, name: &str) -> Result<Option<QueueEntry>, String> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(format!("cannot open: {e}")),
    };
    let st = fstat(&fd).map_err(|e| format!("fstat: {e}"))?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG || st.st_nlink != 1 {
        return Err(String::from("not a regular file with one link"));
    }
    let file = File::from(fd);
    let q = queue::read_envelope(&file).map_err(|e| e.to_string())?;
    if q.id.as_str() != name {
        return Err(format!("holds queue ID {}", q.id.as_str()));
    }
    Ok(Some(QueueEntry {
        id: name.to_string(),
        queue: dir_name.to_string(),
        size: q.envelope.size,
        arrival: q.envelope.arrival.secs,
        sender: q.envelope.sender.clone(),
        recipients: q
            .recipients
            .iter()
            .map(|r| {
                let state = match r.status.state {
                    queue::State::Pending => "pending",
                    queue::State::Done => "done",
                    queue::State::Deferred => "deferred",
                    queue::State::Bounced => "bounced",
                };
                (r.address.clone(), state.to_string(), r.status.reason.clone())
            })
            .collect(),
    }))
}

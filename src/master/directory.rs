//! Directory users: the users the system's name service lists beside
//! /etc/passwd (NIS, LDAP through nslcd or nss_ldap, sssd with
//! enumeration on, systemd's user database), for the local-recipient
//! table (with `local.directory_users`, the default). master has
//! `local users` list them (see `local::users`) at start, after a reload
//! and every `local.directory_refresh`, as the mail user, in a process
//! of its own that writes to an unlinked file of master's. master never
//! waits for it: each time it looks at the table's sources (every two
//! seconds) it asks whether the listing has exited (reaped with the
//! other children, [`Directory::reaped`]) and reads the file then; a
//! listing still running after `local.directory_timeout` is killed. A
//! listing that fails leaves the table with the last good list.
//!
//! Trusts: nothing in the list: each name is checked as /etc/passwd's
//! are ([`crate::table::system_users`]), and the file is read with a
//! bound.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::local::users::EXIT_TRUNCATED;

/// The longest a listed name may be, with its line end, for the bound on
/// the file read.
const LINE_MAX: u64 = 66;

/// The listing of directory users and the last good list.
#[derive(Debug)]
pub struct Directory {
    /// The names of the last good listing, lower case: empty until one
    /// ends (and with `local.directory_users` off).
    pub names: BTreeSet<String>,
    running: Option<Running>,
    /// When the next listing starts.
    next: Instant,
}

/// A listing in progress.
#[derive(Debug)]
struct Running {
    pid: u32,
    out: File,
    limit: u32,
    deadline: Instant,
    /// Killed at its deadline (and reported then).
    killed: bool,
    /// How it ended, once reaped.
    exit: Option<WaitStatus>,
}

/// What a finished listing found (see [`Directory::poll`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The names (lower case), and whether the list was cut at
    /// `local.directory_user_limit`.
    Listed { names: BTreeSet<String>, truncated: bool },
    /// No list (why, for the log): the last good list stays.
    Failed(String),
}

/// How to start a listing.
pub struct Start<'a> {
    /// The `local` program.
    pub program: &'a Path,
    /// The directory for the listing's file (the spool).
    pub dir: &'a Path,
    /// The mail user, when master runs as root.
    pub credentials: Option<&'a sandbox::Credentials>,
    pub limit: u32,
    pub timeout: Duration,
    /// master's stderr for the listing's (in the foreground).
    pub stderr: bool,
    /// `sandbox.allow_unconfined`: the listing runs without its sandbox
    /// where it cannot be entered.
    pub unconfined: bool,
}

impl Directory {
    /// No list yet; the first listing is due at once.
    pub fn new(now: Instant) -> Directory {
        Directory { names: BTreeSet::new(), running: None, next: now }
    }

    /// Whether a listing should start now: none runs and it is time.
    pub fn due(&self, now: Instant) -> bool {
        self.running.is_none() && now >= self.next
    }

    /// The next listing starts at the next look (after a reload).
    pub fn refresh_soon(&mut self, now: Instant) {
        self.next = now;
    }

    /// Start a listing; the next one is due `refresh` after this one.
    pub fn start(&mut self, s: &Start<'_>, refresh: Duration, now: Instant) -> Result<(), String> {
        self.next = now + refresh;
        let out = listing_file(s.dir)?;
        let program = s.program;
        let limit = s.limit.to_string();
        let spec = sandbox::Spawn {
            program,
            argv: &["local", "users", &limit, if s.unconfined { "unconfined" } else { "confined" }],
            env: &[],
            fds: &[out.as_raw_fd()],
            stderr: s.stderr.then_some(2),
            credentials: s.credentials,
            limits: &[sandbox::Limit { resource: sandbox::Resource::CoreSize, soft: 0, hard: 0 }],
            // Its own process group, which a listing past its time is
            // killed with (a name service module may start helpers).
            new_session: true,
        };
        let pid = sandbox::spawn(&spec).map_err(|e| format!("{}: {e}", program.display()))?;
        let pid = u32::try_from(pid).map_err(|_| String::from("spawn returned a negative pid"))?;
        self.running = Some(Running { pid, out, limit: s.limit, deadline: now + s.timeout, killed: false, exit: None });
        Ok(())
    }

    /// Whether `status` (from master's reaping) is the listing's end; if
    /// so, it is kept for [`Directory::poll`].
    pub fn reaped(&mut self, status: WaitStatus) -> bool {
        let Some(r) = self.running.as_mut() else { return false };
        match status.pid() {
            Some(pid) if pid.as_raw() as u32 == r.pid => {
                r.exit = Some(status);
                true
            }
            _ => false,
        }
    }

    /// The outcome of a listing that has ended (and was reaped), read
    /// from its file; a listing past its time is killed (and reported
    /// failed once reaped). None: nothing new.
    pub fn poll(&mut self, now: Instant) -> Option<Outcome> {
        let r = self.running.as_mut()?;
        let Some(exit) = r.exit else {
            if now < r.deadline || r.killed {
                return None;
            }
            // Reaped by master's next look for exited children.
            let _ = killpg(Pid::from_raw(r.pid as i32), Signal::SIGKILL);
            r.killed = true;
            return Some(Outcome::Failed(String::from("it ran past local.directory_timeout and was killed")));
        };
        let r = self.running.take()?;
        if r.killed {
            return None;
        }
        let outcome = match exit {
            WaitStatus::Exited(_, 0) => read_names(r.out, r.limit, false),
            WaitStatus::Exited(_, c) if c == EXIT_TRUNCATED => read_names(r.out, r.limit, true),
            WaitStatus::Exited(_, c) => Outcome::Failed(format!("local users exited with status {c}")),
            WaitStatus::Signaled(_, sig, _) => Outcome::Failed(format!("local users was killed by {sig}")),
            other => Outcome::Failed(format!("local users ended oddly: {other:?}")),
        };
        Some(outcome)
    }

    /// Wait for the listing in progress to end, until its deadline (the
    /// first listing, before any child runs, so that smtpd starts with
    /// the directory users), then [`Directory::poll`] as at a look.
    pub fn wait(&mut self) -> Option<Outcome> {
        let r = self.running.as_mut()?;
        while r.exit.is_none() && Instant::now() < r.deadline {
            match nix::sys::wait::waitpid(Pid::from_raw(r.pid as i32), Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
                Ok(status) => r.exit = Some(status),
                Err(_) => break,
            }
        }
        self.poll(Instant::now())
    }

    /// Kill a listing that still runs (master stops).
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take()
            && r.exit.is_none()
        {
            let _ = killpg(Pid::from_raw(r.pid as i32), Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(Pid::from_raw(r.pid as i32), None);
        }
    }
}

/// A new file for a listing's output in `dir`, removed from the
/// directory at once (master and the listing alone hold it).
fn listing_file(dir: &Path) -> Result<File, String> {
    let path = dir.join(format!(".directory-users.{}", std::process::id()));
    // One left by a master that died while it listed.
    let _ = std::fs::remove_file(&path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(file)
}

/// The names a listing wrote (at most `limit` lines of at most
/// [`LINE_MAX`] bytes are read).
fn read_names(mut out: File, limit: u32, truncated: bool) -> Outcome {
    let mut text = Vec::new();
    let bound = u64::from(limit) * LINE_MAX;
    if let Err(e) = out.rewind().and_then(|()| out.take(bound).read_to_end(&mut text)) {
        return Outcome::Failed(format!("reading the list: {e}"));
    }
    let text = String::from_utf8_lossy(&text);
    let names = crate::table::system_users(&text).into_iter().take(limit as usize).collect();
    Outcome::Listed { names, truncated }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(text: &str) -> File {
        let mut f = tempfile_in_tmp();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn tempfile_in_tmp() -> File {
        let dir = std::env::temp_dir().join(format!(
            "mta-directory-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let f = listing_file(&dir).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        f
    }

    #[test]
    fn names_are_checked_as_passwd_names() {
        let out = file_with("alice\nBob\nbad name\n\n#comment\nzoe\n");
        let Outcome::Listed { names, truncated } = read_names(out, 10, false) else { panic!() };
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["alice", "bob", "zoe"]);
        assert!(!truncated);
        // At most the limit, however much was written.
        let out = file_with("a\nb\nc\nd\n");
        let Outcome::Listed { names, .. } = read_names(out, 2, true) else { panic!() };
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn the_listing_file_is_gone_from_its_directory() {
        let dir = std::env::temp_dir().join(format!("mta-directory-gone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A stale one (a master that died while listing) is replaced.
        std::fs::write(dir.join(format!(".directory-users.{}", std::process::id())), "x").unwrap();
        let _f = listing_file(&dir).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_listing_is_due_at_start_and_after_a_refresh_request() {
        let now = Instant::now();
        let mut d = Directory::new(now);
        assert!(d.due(now));
        d.next = now + Duration::from_secs(600);
        assert!(!d.due(now));
        d.refresh_soon(now);
        assert!(d.due(now));
        // Nothing runs: nothing to report, and no status is ours.
        assert_eq!(d.poll(now), None);
        assert!(!d.reaped(WaitStatus::Exited(Pid::from_raw(1), 0)));
    }
}

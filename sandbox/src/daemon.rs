//! Becoming a daemon without losing how the start-up went.
//!
//! daemon(3) lets the process started from the shell exit 0 at once, so
//! an error the daemon meets afterwards (its pid file cannot be written,
//! say) reaches nobody: the rc script reports success and nothing runs.
//! [`daemonize`] keeps that foreground process waiting on a pipe until
//! the daemon says it is up ([`Detached::ready`]: exit status 0) or that
//! it failed ([`Detached::fail`]: the message on the foreground's
//! standard error, exit status 1, once the daemon has exited). A daemon
//! that ends without a word is reported with how it ended.
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use crate::spawn::{cloexec_pipe, dup_to, open_devnull, wait};

/// The daemon's first word on the pipe: it is up.
const UP: u8 = b'+';
/// The daemon's first word on the pipe: it failed; the message follows.
const FAILED: u8 = b'-';
/// The longest message the foreground process prints.
const MAX_MESSAGE: u64 = 64 << 10;

/// The daemon's end of the pipe to the foreground process.
pub struct Detached {
    report: Option<OwnedFd>,
}

/// Fork. The foreground process waits until the daemon is up or failed,
/// then exits (naming itself `name` in what it says of a daemon that
/// ended without a word); this returns in the daemon only, which is in a
/// session of its own, in `/`, with standard input on `/dev/null` and
/// standard output and error still those of the foreground process (see
/// [`Detached::ready`]). Refuses when the caller has more than one
/// thread.
pub fn daemonize(name: &str) -> io::Result<Detached> {
    crate::threads::require_single().map_err(io::Error::other)?;
    let (r, w) = cloexec_pipe()?;
    // Nothing buffered may be written twice, by both processes.
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: the process has a single thread (checked above), so the
    // child is an exact copy in which every lock is free and any code,
    // allocation included, may run.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        drop(w);
        let code = foreground(name, pid, r);
        let _ = io::stderr().flush();
        // SAFETY: _exit ends the foreground process without running
        // destructors or atexit handlers: what it holds (locks, sockets,
        // files it would remove) is the daemon's now.
        unsafe { libc::_exit(code) };
    }
    drop(r);
    // SAFETY: setsid takes no arguments; it fails only for a process
    // group leader, which a child just forked is not.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    std::env::set_current_dir("/")?;
    let null = open_devnull()?;
    dup_to(null.as_raw_fd(), 0).map_err(io::Error::from_raw_os_error)?;
    Ok(Detached { report: Some(w) })
}

/// What the foreground process does: wait for the daemon's word and
/// return the exit status to end with.
fn foreground(name: &str, pid: libc::pid_t, r: OwnedFd) -> i32 {
    let mut said = Vec::new();
    // read_to_end retries EINTR and stops at end of file: the daemon
    // closes its end after its word, or by ending.
    let _ = File::from(r).take(MAX_MESSAGE).read_to_end(&mut said);
    match said.split_first() {
        Some((&UP, _)) => 0,
        Some((&FAILED, text)) => {
            let _ = writeln!(io::stderr(), "{}", String::from_utf8_lossy(text));
            // Gone (and its locks free) by the time the shell hears.
            let _ = wait(pid);
            1
        }
        _ => {
            let how = match wait(pid) {
                Ok(c) if c > 128 => format!("killed by signal {}", c - 128),
                Ok(c) => format!("exited with status {c}"),
                Err(e) => format!("cannot be waited for: {e}"),
            };
            let _ = writeln!(io::stderr(), "{name}: the daemon (pid {pid}) ended before it was up: {how}");
            1
        }
    }
}

impl Detached {
    /// The daemon is up: its standard output and error go to `/dev/null`,
    /// and the foreground process exits 0.
    pub fn ready(mut self) -> io::Result<()> {
        let null = match open_devnull() {
            Ok(n) => n,
            Err(e) => {
                self.say(format!("{}/dev/null: {e}", FAILED as char).as_bytes());
                return Err(e);
            }
        };
        for fd in [1, 2] {
            if let Err(e) = dup_to(null.as_raw_fd(), fd).map_err(io::Error::from_raw_os_error) {
                self.say(format!("{}/dev/null: {e}", FAILED as char).as_bytes());
                return Err(e);
            }
        }
        self.say(&[UP]);
        Ok(())
    }

    /// Start-up failed: the foreground process writes `message` (a whole
    /// line, without its newline) to its standard error and exits 1 when
    /// the daemon has exited, which it is to do now.
    pub fn fail(mut self, message: &str) {
        let mut word = vec![FAILED];
        word.extend_from_slice(message.as_bytes());
        self.say(&word);
    }

    fn say(&mut self, word: &[u8]) {
        if let Some(fd) = self.report.take() {
            // A foreground process that is gone hears nothing; the
            // daemon goes on all the same.
            let _ = File::from(fd).write_all(word);
        }
    }
}

//! A command delivery, as the user it runs as: the program `local` run,
//! at its root parent's request, by its command spawner (outside local's
//! sandbox, [`super::spawner`]) with that user's ids and groups as
//!
//! ```text
//! local pipe COMMAND SENDER RECIPIENT ORIGINAL DELIMITER ARRIVAL USER HOME LIMIT_S
//! ```
//!
//! with the read-only queue file at descriptor 3 and a pipe to the root
//! parent as standard error. It runs `/bin/sh -c COMMAND` (the text from an
//! alias or a `.forward`, never from the envelope) in the user's home
//! directory (`/` when that cannot be entered), with a fixed environment,
//! and writes to its standard input the message as a mailbox would hold
//! it: a `From ` line, `Return-Path:` and `Delivered-To:`, then the
//! message with LF line ends. Standard output and standard error are
//! captured (the first [`MAX_OUTPUT`] bytes) for the log and the bounce.
//!
//! The command runs in `local pipe`'s own process group: the spawner
//! starts it in a session of its own (it makes one itself when it was
//! started otherwise), so that the group holds the delivery and nothing
//! else, and whoever gives up on the delivery kills the command with it
//! by killing that group (the spawner, [`super::spawner`]: at local's
//! time limit, when `local pipe` died without a verdict, when local is
//! gone), even when `local pipe` itself is stopped or killed. `local
//! pipe` gives up too, and kills its group, itself included, and before
//! that every process below it, those that left the group for a session
//! of their own too (it is their reaper, see [`sandbox::reaper`]; not on
//! OpenBSD, which has no reaper): after
//! `LIMIT_S` seconds (once it has reported, so the report still holds
//! the verdict), and as soon as its report's reader is gone (local gave
//! up on it, or ended), when nobody is left to hear a verdict. A command
//! that ends by itself leaves behind what it started in the background:
//! it is not waited for, and not killed.
//!
//! The environment: `SENDER`, `RECIPIENT`, `ORIGINAL_RECIPIENT`, `LOCAL`
//! and `DOMAIN` (of the original recipient), `EXTENSION` (its
//! `recipient_delimiter` extension), `USER`, `LOGNAME`, `HOME`, `SHELL`
//! (`/bin/sh`) and `PATH` (`/usr/bin:/bin`). Every value taken from the
//! envelope has each character outside [`SAFE`] replaced by `_`, so no
//! shell that expands a variable unquoted meets a quote, `$`, backtick or
//! semicolon from a stranger.
//!
//! It reports one line, `D.D.D reason`, and exits as the parent's
//! delivery children do: 0 delivered; 75 try again later (the command
//! exited with a temporary sysexits(3) code, was killed by a signal or
//! ran out of time); 67 bounce (any other non-zero status, as Postfix
//! has it).
//!
//! Trusts: its parent for the arguments; the command's output only as
//! text for the report, bounded and stripped of control characters.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};

use super::agent::{EX_NOUSER, EX_OK, EX_SOFTWARE, EX_TEMPFAIL};
use super::child::{Content, finish, queue_content, report};
use super::deliver::{self, Envelope};

/// The most of the command's output kept for the report.
pub const MAX_OUTPUT: usize = 2048;
/// Characters an envelope value keeps in the command's environment
/// (Postfix's `command_expansion_filter`); others become `_`.
pub const SAFE: &str = "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// `value` with every character outside [`SAFE`] replaced by `_`.
pub fn filter(value: &str) -> String {
    value.chars().map(|c| if SAFE.contains(c) { c } else { '_' }).collect()
}

/// The command's environment.
pub fn environment(
    sender: &str,
    recipient: &str,
    original: &str,
    delimiter: &str,
    user: &str,
    home: &str,
) -> Vec<(&'static str, String)> {
    let (local, domain) = original.rsplit_once('@').unwrap_or((original, ""));
    let base = crate::address::without_extension(local, delimiter);
    let extension = local.get(base.len() + 1..).filter(|_| base.len() < local.len()).unwrap_or("");
    vec![
        ("SENDER", filter(sender)),
        ("RECIPIENT", filter(recipient)),
        ("ORIGINAL_RECIPIENT", filter(original)),
        ("LOCAL", filter(local)),
        ("DOMAIN", filter(domain)),
        ("EXTENSION", filter(extension)),
        ("USER", user.to_string()),
        ("LOGNAME", user.to_string()),
        ("HOME", home.to_string()),
        ("SHELL", String::from("/bin/sh")),
        ("PATH", String::from("/usr/bin:/bin")),
    ]
}

/// What became of a command, as the report and exit code say.
pub fn verdict(
    status: Option<std::process::ExitStatus>,
    timed_out: bool,
    limit: Duration,
    output: &str,
) -> (i32, String, String) {
    let output = if output.is_empty() { String::new() } else { format!(": {output}") };
    if timed_out {
        return (EX_TEMPFAIL, "4.3.0".into(), format!("command stopped after {}s{output}", limit.as_secs()));
    }
    let Some(status) = status else {
        return (EX_TEMPFAIL, "4.3.0".into(), format!("command could not be waited for{output}"));
    };
    if let Some(sig) = status.signal() {
        return (EX_TEMPFAIL, "4.3.0".into(), format!("command killed by signal {sig}{output}"));
    }
    match status.code() {
        Some(0) => (EX_OK, "2.0.0".into(), String::from("delivered to command")),
        // sysexits(3): EX_OSERR, EX_OSFILE, EX_CANTCREAT, EX_IOERR,
        // EX_TEMPFAIL are worth another try.
        Some(code @ 71..=75) => (EX_TEMPFAIL, "4.3.0".into(), format!("command exited with status {code}{output}")),
        Some(code) => (EX_NOUSER, "5.3.0".into(), format!("command exited with status {code}{output}")),
        None => (EX_TEMPFAIL, "4.3.0".into(), format!("command ended oddly{output}")),
    }
}

/// The output as one line of text: control characters become spaces,
/// runs of white space one space, at most [`MAX_OUTPUT`] characters.
pub fn one_line(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let mut out = String::new();
    for word in text.split(|c: char| c.is_control() || c.is_whitespace()).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.chars().take(MAX_OUTPUT).collect()
}

/// `local pipe ...`: never returns.
pub fn main(args: &[String]) -> ! {
    let [command, sender, recipient, original, delimiter, arrival, user, home, limit] = args else {
        finish(EX_SOFTWARE, "4.3.0", "local pipe: wrong arguments");
    };
    let arrival: i64 = arrival.parse().unwrap_or(0);
    let limit = Duration::from_secs(limit.parse().unwrap_or(600));
    // The queue file names every recipient (blind copies too): the
    // command, the user's, must not read it from us (`/proc/PPID/fd`).
    if let Err(e) = sandbox::no_trace() {
        finish(EX_TEMPFAIL, "4.3.0", &format!("cannot shut out tracing: {e}"));
    }
    let (queue, range) = queue_content();
    let env = Envelope { sender, recipient, arrival };
    let mut head = super::mbox::from_line(&env).into_bytes();
    match deliver::prepended_headers(&env) {
        Ok(h) => head.extend_from_slice(&h),
        Err(e) => finish(EX_NOUSER, e.dsn(), &e.to_string()),
    }
    let cwd =
        if nix::unistd::access(home.as_str(), nix::unistd::AccessFlags::X_OK).is_ok() { home.as_str() } else { "/" };
    let env = environment(sender, recipient, original, delimiter, user, home);
    let input = Input::new(Content { file: &queue, range, at: 0 }, head);
    if let Err(e) = lead_own_group() {
        finish(EX_TEMPFAIL, "4.3.0", &e);
    }
    // What the command starts and leaves orphaned comes to us, not to
    // init, so that giving up kills it too, even what left our group for
    // a session of its own (`setsid`). Where the system cannot (OpenBSD,
    // or an error), the group alone is killed.
    let _ = sandbox::reaper::acquire();
    let stderr = std::io::stderr();
    let ran = match run(command, &env, Path::new(cwd), input, limit, Group::Ours { report: stderr.as_fd() }) {
        Ok(r) => r,
        Err(e) => finish(EX_TEMPFAIL, "4.3.0", &e),
    };
    if ran.abandoned {
        kill_our_group();
    }
    let (code, dsn, reason) = verdict(ran.status, ran.timed_out, limit, &one_line(&ran.output));
    if ran.timed_out {
        report(&dsn, &reason);
        kill_our_group();
    }
    finish(code, &dsn, &reason)
}

/// Make sure we lead our process group, a session of our own unless we
/// lead one already (the spawner starts us so); the command joins it.
fn lead_own_group() -> Result<(), String> {
    if nix::unistd::getpgrp() == nix::unistd::getpid() {
        return Ok(());
    }
    nix::unistd::setsid().map(|_| ()).map_err(|e| format!("local pipe: cannot start a session of its own: {e}"))
}

/// Kill the command's processes, those that left our process group
/// included (we are their reaper: see `main`), then our group, ourselves
/// with it; never returns.
fn kill_our_group() -> ! {
    let _ = sandbox::reaper::kill_descendants();
    let _ = killpg(nix::unistd::getpgrp(), Signal::SIGKILL);
    // Not reached: the signal is ours too.
    std::process::exit(EX_TEMPFAIL)
}

/// What a command did.
pub(super) struct Ran {
    /// The first [`MAX_OUTPUT`] bytes of its standard output and error.
    pub(super) output: Vec<u8>,
    pub(super) status: Option<std::process::ExitStatus>,
    pub(super) timed_out: bool,
    /// The report's reader went away first ([`Group::Ours`]): the
    /// delivery was given up.
    pub(super) abandoned: bool,
}

/// The process group a command runs in, and who kills it.
#[derive(Clone, Copy)]
pub(super) enum Group<'a> {
    /// A group of its own, which [`run`] kills when time runs out (the
    /// tests, which must not kill their own group).
    #[cfg(test)]
    Own,
    /// Ours, which we lead (`local pipe`): [`run`] kills nothing, and
    /// returns when time runs out (`timed_out`, the command still
    /// running) or when `report`'s reader is gone (`abandoned`); the
    /// caller then kills the group, itself included.
    Ours { report: BorrowedFd<'a> },
}

/// Run `/bin/sh -c command` in `group` with `env` only, in `cwd`, `input`
/// on its standard input, for at most `limit`.
pub(super) fn run(
    command: &str,
    env: &[(&str, String)],
    cwd: &Path,
    input: Input<'_>,
    limit: Duration,
    group: Group<'_>,
) -> Result<Ran, String> {
    let (out_r, out_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let w2 = out_w.try_clone().map_err(|e| format!("dup: {e}"))?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(w2));
    let watch = match group {
        #[cfg(test)]
        Group::Own => {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            None
        }
        Group::Ours { report } => Some(report),
    };
    let mut child = cmd.spawn().map_err(|e| format!("cannot run /bin/sh: {e}"))?;
    // Our copies of the output pipe's write end go with the command.
    drop(cmd);
    let (output, status, end) = exchange(&mut child, input, out_r, watch, Instant::now() + limit);
    let timed_out = end == End::TimedOut;
    #[cfg(test)]
    let status = if timed_out && matches!(group, Group::Own) {
        let _ = killpg(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        child.wait().ok()
    } else {
        status
    };
    Ok(Ran { output, status, timed_out, abandoned: end == End::Abandoned })
}

/// The message as the command reads it, made a chunk at a time.
pub(super) struct Input<'a> {
    content: Content<'a>,
    lines: deliver::LfLines,
    /// Content read, before it becomes `pending`.
    buf: Vec<u8>,
    /// Made, not yet written.
    pending: Vec<u8>,
    /// All of the content is in `pending` or written.
    done: bool,
}

impl<'a> Input<'a> {
    /// `head`, then the content with LF line ends.
    pub(super) fn new(content: Content<'a>, head: Vec<u8>) -> Input<'a> {
        Input { content, lines: deliver::LfLines::new(false), buf: vec![0; 64 * 1024], pending: head, done: false }
    }

    /// Refill `pending` when it is empty; false at the end of the message.
    fn refill(&mut self) -> std::io::Result<bool> {
        while self.pending.is_empty() && !self.done {
            let n = self.content.read(&mut self.buf)?;
            if n == 0 {
                self.lines.finish(&mut self.pending);
                self.done = true;
            } else {
                self.lines.feed(&self.buf[..n], &mut self.pending);
            }
        }
        Ok(!self.pending.is_empty())
    }
}

/// How [`exchange`] ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    /// The command exited (and its output is drained, or was left to
    /// what it left behind).
    Exited,
    /// The deadline passed first.
    TimedOut,
    /// The watched report's reader went away first.
    Abandoned,
}

/// Write the message to the command and read its output, both without
/// blocking (a command may write before it has read everything), until
/// it exits and its output is drained, the deadline passes, or `watch`
/// (the write end of our report) reports that its reader is gone.
/// Returns the first [`MAX_OUTPUT`] bytes of output, the exit status and
/// how it ended. A command that exits without reading all of its input
/// (EPIPE) is judged by its exit status.
fn exchange(
    child: &mut std::process::Child,
    mut input: Input<'_>,
    out: OwnedFd,
    watch: Option<BorrowedFd<'_>>,
    deadline: Instant,
) -> (Vec<u8>, Option<std::process::ExitStatus>, End) {
    let mut stdin: Option<OwnedFd> = child.stdin.take().map(OwnedFd::from);
    if let Some(fd) = &stdin
        && set_nonblocking(fd).is_err()
    {
        stdin = None;
    }
    let mut out = File::from(out);
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    let mut open = true;
    let mut status = None;
    loop {
        if status.is_none() {
            status = child.try_wait().ok().flatten();
        }
        if status.is_some() {
            // Input nobody will read is dropped.
            stdin = None;
            if !open {
                return (kept, status, End::Exited);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (kept, status, if status.is_none() { End::TimedOut } else { End::Exited });
        }
        if watch.is_some_and(reader_gone) {
            return (kept, status, End::Abandoned);
        }
        if stdin.is_some() && !matches!(input.refill(), Ok(true)) {
            // The end of the message (or the queue file failed us: the
            // command sees end of file early and its status decides).
            stdin = None;
        }
        // A command that left a process behind holding the output open
        // must not keep us past its own exit: once it has exited, read
        // what is there and stop.
        let wait = if status.is_some() { 0 } else { left.as_millis().min(100) as u16 };
        let mut fds = Vec::with_capacity(2);
        if open {
            fds.push(PollFd::new(out.as_fd(), PollFlags::POLLIN));
        }
        if let Some(fd) = &stdin {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
        }
        // The report's hang-up (the reader closed) wakes us at once.
        if let Some(w) = watch {
            fds.push(PollFd::new(w, PollFlags::empty()));
        }
        let (readable, writable) = match poll(&mut fds, PollTimeout::from(wait)) {
            Ok(0) if status.is_some() => return (kept, status, End::Exited),
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {
                let ready = |i: usize| fds.get(i).and_then(|f| f.revents()).is_some_and(|r| !r.is_empty());
                let writing = usize::from(stdin.is_some());
                if open { (ready(0), writing == 1 && ready(1)) } else { (false, writing == 1 && ready(0)) }
            }
            Err(_) => return (kept, status, End::Exited),
        };
        drop(fds);
        if writable && let Some(fd) = &stdin {
            match nix::unistd::write(fd, &input.pending) {
                Ok(n) => {
                    input.pending.drain(..n);
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                // EPIPE and the like: the command stopped reading.
                Err(_) => stdin = None,
            }
        }
        if readable {
            match out.read(&mut buf) {
                Ok(0) => open = false,
                Ok(n) => {
                    let room = MAX_OUTPUT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => open = false,
            }
        }
    }
}

/// Whether the pipe whose write end is `fd` has lost its reader: poll
/// says POLLERR (Linux) or POLLHUP (the BSDs) for it.
fn reader_gone(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0].revents().is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL))
}

fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(|_| ())
}

//! The command spawner: a small process the local root parent starts
//! before it enters its sandbox (its own program, as `local spawner
//! PROGRAM ROOT`, its socket pair to the parent at descriptor 3), which
//! stays outside it (root, no seccomp filter, no pledge) and whose only
//! job is to start `local pipe` ([`super::pipe`]) as a user when local
//! asks, and to say how it ended.
//!
//! Why: a sandbox is inherited across fork and exec and never removed.
//! Started by local itself, a user's command would run inside local's
//! seccomp filter on Linux, where socket(2), connect(2) and new threads
//! fail: `|dovecot-lda`, `|spamc`, `logger`, NSS through sssd, every Go
//! program and any Python or Java code that starts a thread would fail
//! for good. Started by the spawner, a command runs as it would from the
//! user's shell (as Postfix's local(8) runs it): as the user, with the
//! fixed environment and time limit of `local pipe`, and nothing more.
//! Mailbox and file deliveries, the reading of a `.forward` and the
//! repair of a mailbox are still started by local itself (they confine
//! themselves further anyway).
//!
//! The protocol ([`ToSpawner`], [`FromSpawner`]) runs on a socket pair
//! of its own, one command at a time: `Run` (the arguments of `local
//! pipe`, the user's ids and groups, the report pipe and the queue file
//! by SCM_RIGHTS) → `Started { pid }` or `Refused`; then, once local has
//! read the command's report to its end or its time ran out, `Reap {
//! kill }` → `Ended`. `local pipe` is started in a session of its own
//! and the command joins its process group ([`super::pipe`]): `kill`
//! (local's time ran out, or `local pipe` ended without a verdict) kills
//! that group, so that the command goes with `local pipe` even when that
//! one is stopped or was killed; so is the group of a `local pipe` that
//! does not end within [`REAP_GRACE`] of its report's end. The spawner
//! reads nothing but these requests: no queue file, no aliases, no
//! `.forward`, no user data; it does not look users up. It refuses
//! ([`check`]) a request of another version, with other than the nine
//! arguments of `local pipe` or arguments over their bounds, too many groups, the ids -1, uid 0 unless commands may run as
//! root (`local.default_user` is root: local decides as whom a command
//! runs, the spawner only checks what it can), descriptors that are not
//! a pipe's write end and a read-only regular file; and it ends at
//! anything out of order. The program it starts is fixed when it is
//! started (`PROGRAM`: local's own, from `libexec_directory`), and so are
//! the environment and limits (those of the children local starts
//! itself). Started by exec(2) rather than forked, it holds nothing of
//! local's memory (configuration, aliases), and shows in ps(1) as
//! `local spawner`.
//!
//! Its life: it ends when local's end of the socket pair closes, which
//! only local holds (close-on-exec, and every child local starts has
//! only the descriptors it is given): when local exits, whether asked to
//! by master, because master's channel closed (master died), or killed.
//! A command still running then is killed with its group (its delivery
//! will not be reported, and is tried again). If the spawner ends or
//! misbehaves, local defers the command (a `local pipe` still running
//! sees its report's reader gone and kills its group itself), and then
//! exits once its batch is reported, so that master starts it again,
//! with a new spawner (a sandboxed local cannot start an unconfined
//! process).
//!
//! Trusts: local, only for a request that passes [`check`]; it runs as
//! root and unconfined, so it parses nothing else.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::{SFlag, fstat};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use sandbox::Grant;

use super::agent::{EX_TEMPFAIL, Outcome};
use super::spawn::{ENV, LIMITS, Ran, kill_group, read_report, reap, reap_group, split_report};
use crate::ipc::Channel;
use crate::ipc::msg::{CommandExit, FromSpawner, RunCommand, ToSpawner};

/// The version of the request format ([`RunCommand::version`]).
pub const VERSION: u32 = 1;
/// The arguments of `local pipe` after `pipe`: COMMAND SENDER RECIPIENT
/// ORIGINAL DELIMITER ARRIVAL USER HOME LIMIT_S.
pub const PIPE_ARGS: usize = 9;
/// The longest argument: a command named in an alias or `.forward` is
/// at most [`crate::aliases::MAX_TARGET`] bytes, an address at most
/// [`crate::queue::MAX_ADDRESS`], a home directory a path.
pub const MAX_ARG: usize = 4096;
/// The most bytes of all the arguments together.
pub const MAX_ARGS_TOTAL: usize = 16 * 1024;
/// The most supplementary groups.
pub const MAX_GROUPS: usize = 4096;
/// The largest request: the arguments, each with its length, the groups
/// at five bytes each at most (postcard's varints), ids and tags.
const MAX_REQUEST: usize = MAX_ARGS_TOTAL + PIPE_ARGS * 3 + MAX_GROUPS * 5 + 64;
/// The longest reason in a refusal.
const MAX_REASON: usize = 512;
/// The largest reply.
const MAX_REPLY: usize = MAX_REASON * 4 + 64;
/// How long local waits for the spawner's answer to a request.
const REPLY_LIMIT: Duration = Duration::from_secs(30);
/// How long the spawner waits for a command whose report has closed
/// before it kills it (it is ending: its report closes as it exits).
const REAP_GRACE: Duration = Duration::from_secs(10);

/// A request the spawner accepted: what it starts.
#[derive(Debug)]
pub struct Job {
    /// `local pipe` and its arguments.
    pub argv: Vec<String>,
    pub credentials: sandbox::Credentials,
    /// The write end of the report pipe: the command's standard error.
    pub report: OwnedFd,
    /// The queue file, read-only: the command's descriptor 3.
    pub queue: OwnedFd,
}

/// Check a [`ToSpawner::Run`] request and the descriptors that came with
/// it; `root`: whether commands may run as root. Err: why it is refused.
pub fn check(req: RunCommand, fds: Vec<OwnedFd>, root: bool) -> Result<Job, String> {
    if req.version != VERSION {
        return Err(format!("request version {}, not {VERSION}", req.version));
    }
    if req.args.len() != PIPE_ARGS {
        return Err(format!("{} arguments, not {PIPE_ARGS}", req.args.len()));
    }
    let mut total = 0;
    for (i, a) in req.args.iter().enumerate() {
        if a.len() > MAX_ARG {
            return Err(format!("argument {} is {} bytes long, over {MAX_ARG}", i + 1, a.len()));
        }
        if a.contains('\0') {
            return Err(format!("argument {} holds a NUL byte", i + 1));
        }
        total += a.len();
    }
    if total > MAX_ARGS_TOTAL {
        return Err(format!("the arguments are {total} bytes long, over {MAX_ARGS_TOTAL}"));
    }
    if req.groups.len() > MAX_GROUPS {
        return Err(format!("{} groups, over {MAX_GROUPS}", req.groups.len()));
    }
    // -1 is no id: to the set*id calls it can mean "leave it as it is".
    if req.uid == u32::MAX || req.gid == u32::MAX || req.groups.contains(&u32::MAX) {
        return Err(String::from("an id of -1"));
    }
    if req.uid == 0 && !root {
        return Err(String::from("a command as root (local.default_user is not root)"));
    }
    let [report, queue]: [OwnedFd; 2] =
        fds.try_into().map_err(|fds: Vec<OwnedFd>| format!("{} descriptors, not 2", fds.len()))?;
    is_kind(&report, SFlag::S_IFIFO, OFlag::O_WRONLY).map_err(|e| format!("the report descriptor: {e}"))?;
    is_kind(&queue, SFlag::S_IFREG, OFlag::O_RDONLY)
        .or_else(|e| if sealed(&queue) { Ok(()) } else { Err(e) })
        .map_err(|e| format!("the queue file descriptor: {e}"))?;
    let mut argv = Vec::with_capacity(PIPE_ARGS + 2);
    argv.extend([String::from("local"), String::from("pipe")]);
    argv.extend(req.args);
    let credentials = sandbox::Credentials { uid: req.uid, gid: req.gid, groups: req.groups };
    Ok(Job { argv, credentials, report, queue })
}

/// Whether `fd` is a memory file sealed against writing: a message qmgr
/// holds in memory (see `qmgr::memory`), as safe to hand a command as a
/// read-only descriptor of its queue file.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn sealed(fd: &OwnedFd) -> bool {
    use nix::fcntl::SealFlag;
    let want = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL;
    fcntl(fd, FcntlArg::F_GET_SEALS).is_ok_and(|s| SealFlag::from_bits_truncate(s).contains(want))
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn sealed(_fd: &OwnedFd) -> bool {
    false
}

/// Whether `fd` is a file of type `kind` open for `access` only.
fn is_kind(fd: &OwnedFd, kind: SFlag, access: OFlag) -> Result<(), String> {
    let st = fstat(fd).map_err(|e| format!("fstat: {e}"))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != kind {
        return Err(String::from(if kind == SFlag::S_IFIFO { "not a pipe" } else { "not a regular file" }));
    }
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL).map_err(|e| format!("fcntl: {e}"))?);
    if flags & OFlag::O_ACCMODE != access {
        return Err(String::from(if access == OFlag::O_WRONLY {
            "not open for writing only"
        } else {
            "not read-only"
        }));
    }
    Ok(())
}

/// The words of `ROOT` in `local spawner PROGRAM ROOT`.
const ROOT: &str = "root";
const NOT_ROOT: &str = "not-root";

/// `local spawner PROGRAM ROOT`, started by local before its sandbox with
/// its socket at descriptor 3: [`serve`] until local's end closes. Never
/// returns.
pub fn main(args: &[String]) -> ! {
    let code = match args {
        [program, root] if Path::new(program).is_absolute() && [ROOT, NOT_ROOT].contains(&root.as_str()) => {
            match sandbox::fds::take_inherited(3) {
                Ok(sock) => serve(sock, Path::new(program), root == ROOT),
                Err(e) => {
                    eprintln!("local spawner: its socket (descriptor 3): {e}");
                    1
                }
            }
        }
        _ => {
            eprintln!("local spawner: wrong arguments (it is started by local, never by hand)");
            64
        }
    };
    std::process::exit(code)
}

/// The spawner's life: serve local's requests on `sock` until local's
/// end closes (0) or local sends what it may not (1). `program` is
/// local's own; `root`: whether commands may run as root.
pub fn serve(sock: OwnedFd, program: &Path, root: bool) -> i32 {
    let mut chan = Channel::new(sock).with_max_message(MAX_REQUEST);
    // The command started last, until it is reaped.
    let mut running: Option<Pid> = None;
    let code = requests(&mut chan, program, root, &mut running);
    // Local is gone, or broke the protocol, with a command running: its
    // delivery is deferred and nobody will hear the verdict, so the
    // command must not run on (and deliver again at the retry).
    if let Some(pid) = running {
        kill_group(pid);
        let _ = reap(pid, Instant::now() + REAP_GRACE);
    }
    code
}

/// Serve requests until local's end closes (0) or local sends what it
/// may not (1); `running`: the command started and not yet reaped.
fn requests(chan: &mut Channel, program: &Path, root: bool, running: &mut Option<Pid>) -> i32 {
    loop {
        let (msg, fds) = match next(chan) {
            Ok(m) => m,
            Err(crate::ipc::Error::Closed) => return 0,
            Err(_) => return 1,
        };
        let reply = match (msg, *running) {
            (ToSpawner::Run(req), None) => match check(req, fds, root) {
                Ok(job) => match start(program, &job) {
                    // The spawner's copies of the descriptors go with
                    // `job`: the report ends when the command's does.
                    Ok(pid) => {
                        *running = Some(pid);
                        FromSpawner::Started { pid: pid.as_raw() }
                    }
                    Err(e) => refused(&format!("cannot start {}: {e}", program.display())),
                },
                Err(why) => refused(&format!("refused: {why}")),
            },
            (ToSpawner::Reap { kill: k }, Some(pid)) if fds.is_empty() => {
                *running = None;
                // `local pipe` leads the command's process group: the
                // command goes with it.
                if k {
                    kill_group(pid);
                }
                FromSpawner::Ended(ended(reap_group(pid, Instant::now() + REAP_GRACE).0))
            }
            // Out of order, or a Reap with descriptors: not local's way.
            _ => return 1,
        };
        match chan.send(&reply, &[]).and_then(|_| chan.flush_within(REPLY_LIMIT)) {
            Ok(true) => {}
            Ok(false) | Err(crate::ipc::Error::Closed) => return 0,
            Err(_) => return 1,
        }
    }
}

fn refused(why: &str) -> FromSpawner {
    FromSpawner::Refused { reason: why.chars().take(MAX_REASON).collect() }
}

/// The next request, waiting as long as it takes.
fn next(chan: &mut Channel) -> Result<(ToSpawner, Vec<OwnedFd>), crate::ipc::Error> {
    loop {
        if let Some(m) = chan.recv::<ToSpawner>()? {
            return Ok(m);
        }
        let mut fds = [PollFd::new(chan.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Start `local pipe` for `job`.
fn start(program: &Path, job: &Job) -> io::Result<Pid> {
    let argv: Vec<&str> = job.argv.iter().map(String::as_str).collect();
    let spec = sandbox::Spawn {
        program,
        argv: &argv,
        env: &ENV,
        fds: &[job.queue.as_raw_fd()],
        stderr: Some(job.report.as_raw_fd()),
        credentials: Some(&job.credentials),
        limits: &LIMITS,
        // A session, and so a process group, of its own, which the
        // command joins: killing the group kills both, and nothing else
        // (only `local pipe`'s descendants can join it).
        new_session: true,
    };
    sandbox::spawn(&spec).map(Pid::from_raw)
}

/// A waitpid result as the spawner reports it.
fn ended(status: nix::Result<WaitStatus>) -> CommandExit {
    match status {
        Ok(WaitStatus::Exited(_, code)) => CommandExit::Code(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => CommandExit::Signal(sig as i32),
        Ok(_) => CommandExit::Error(Errno::ECHILD as i32),
        Err(e) => CommandExit::Error(e as i32),
    }
}

/// local's side: the spawner process and its socket.
pub struct Spawner {
    pid: Pid,
    chan: Option<Channel>,
    /// Why it was lost, once it is.
    lost: Option<String>,
}

impl Spawner {
    /// Start the spawner, `program` (local's own) as `local spawner`,
    /// before the sandbox is entered: it gets none. `root`: whether
    /// commands may run as root (`local.default_user` is root).
    pub fn start(program: &Path, root: bool) -> io::Result<Spawner> {
        let Some(path) = program.to_str() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the program's path is not UTF-8"));
        };
        let (ours, theirs) = crate::ipc::pair()?;
        let argv = ["local", "spawner", path, if root { ROOT } else { NOT_ROOT }];
        // Its socket at descriptor 3 and nothing else but standard error
        // (ours: where a word from it can be read), not `ours`, not
        // master's channel; as we are (root).
        let spec = sandbox::Spawn {
            program,
            argv: &argv,
            env: &ENV,
            fds: &[theirs.as_raw_fd()],
            stderr: Some(io::stderr().as_raw_fd()),
            credentials: None,
            limits: &LIMITS,
            // In local's session: a signal to local's group reaches it.
            new_session: false,
        };
        let pid = sandbox::spawn(&spec)?;
        drop(theirs);
        let chan = Channel::new(ours).with_max_message(MAX_REPLY);
        Ok(Spawner { pid: Pid::from_raw(pid), chan: Some(chan), lost: None })
    }

    /// The spawner's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Limit local's end of the socket to a channel's rights, once local
    /// is in its sandbox (FreeBSD; nothing elsewhere).
    pub fn limit(&self) -> Result<(), sandbox::Error> {
        match &self.chan {
            Some(c) => sandbox::limit_received(&Grant::Channel { fd: c.as_raw_fd() }),
            None => Ok(()),
        }
    }

    /// Local's end of the socket, to be polled between commands (see
    /// [`Spawner::idle`]); None once the spawner is lost.
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.chan.as_ref().map(|c| c.as_raw_fd())
    }

    /// The socket is readable between commands: the spawner ended (it
    /// says nothing unasked), and is lost; unless nothing is there (a
    /// wakeup left over from the last command's answers).
    pub fn idle(&mut self) {
        let Some(chan) = self.chan.as_mut() else { return };
        let why = match chan.recv::<FromSpawner>() {
            Ok(None) => return,
            Ok(Some((m, _))) => format!("it said {m:?} unasked"),
            Err(crate::ipc::Error::Closed) => String::from("it ended"),
            Err(e) => e.to_string(),
        };
        self.broken(&why);
    }

    /// Why the spawner was lost (it ended, or misbehaved and was
    /// killed), if it was: no command can run until local starts again.
    pub fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    /// Run `local pipe ARGS` (the [`PIPE_ARGS`] arguments after `pipe`)
    /// as `creds`, the queue file at its descriptor 3, its standard error
    /// a pipe to us, and wait for it, at most `limit` (then it is
    /// killed); keep at most `max` bytes of its report. As
    /// [`super::spawn::run`] does for the children local starts itself.
    pub fn run(
        &mut self,
        args: &[&str],
        creds: &sandbox::Credentials,
        queue: &File,
        limit: Duration,
        max: usize,
    ) -> Result<Ran, Outcome> {
        if let Some(why) = &self.lost {
            return Err(Outcome::defer("4.3.0", &format!("the command spawner is gone ({why})")));
        }
        let (rd, wr) = nix::unistd::pipe().map_err(|e| Outcome::defer("4.3.0", &format!("pipe: {e}")))?;
        let req = ToSpawner::Run(RunCommand {
            version: VERSION,
            args: args.iter().map(|a| a.to_string()).collect(),
            uid: creds.uid,
            gid: creds.gid,
            groups: creds.groups.clone(),
        });
        let pid = match self.ask(&req, &[wr.as_fd(), queue.as_fd()])? {
            FromSpawner::Started { pid } => Pid::from_raw(pid),
            FromSpawner::Refused { reason } => {
                let reason = crate::log::sanitize(&reason, MAX_REASON);
                return Err(Outcome::defer("4.3.0", &format!("cannot start the delivery: {reason}")));
            }
            other => return Err(self.broken(&format!("it answered {other:?} to a command"))),
        };
        // Ours closed, the report ends when the command's copy does.
        drop(wr);
        // Past its time, or once it is read to its end, the report's
        // read end closes: a `local pipe` still running then kills its
        // command and itself.
        let (text, timed_out) = read_report(rd, limit, max);
        // `local pipe` says its verdict before it ends; one that ended
        // without one was killed (by its command, say) and its command
        // may run on: the group is killed, as at the time limit.
        let said = split_report(&String::from_utf8_lossy(&text)).0;
        let kill = timed_out || said.is_none();
        let status = match self.ask(&ToSpawner::Reap { kill }, &[])? {
            FromSpawner::Ended(CommandExit::Code(code)) => Ok(WaitStatus::Exited(pid, code)),
            // Out of time, `local pipe` says so, then kills its group,
            // itself included: it ended as its verdict says.
            FromSpawner::Ended(CommandExit::Signal(9)) if !kill && said.is_some_and(|d| d.starts_with('4')) => {
                Ok(WaitStatus::Exited(pid, EX_TEMPFAIL))
            }
            FromSpawner::Ended(CommandExit::Signal(sig)) => {
                Signal::try_from(sig).map(|s| WaitStatus::Signaled(pid, s, false))
            }
            FromSpawner::Ended(CommandExit::Error(errno)) => Err(Errno::from_raw(errno)),
            other => return Err(self.broken(&format!("it answered {other:?} to a reap"))),
        };
        Ok(Ran { pid, status, text, timed_out, lost: None })
    }

    /// Send `req` with `fds` and wait for the answer (at most
    /// [`REPLY_LIMIT`]); a spawner that fails us is lost.
    fn ask(&mut self, req: &ToSpawner, fds: &[std::os::fd::BorrowedFd<'_>]) -> Result<FromSpawner, Outcome> {
        let Some(chan) = self.chan.as_mut() else {
            return Err(Outcome::defer("4.3.0", "the command spawner is gone"));
        };
        let sent = chan.send(req, fds).and_then(|_| chan.flush_within(REPLY_LIMIT));
        let answer = match sent {
            Ok(true) => chan.recv_blocking::<FromSpawner>(REPLY_LIMIT),
            Ok(false) => return Err(self.broken("it took no request")),
            Err(e) => Err(e),
        };
        match answer {
            Ok((m, fds)) if fds.is_empty() => Ok(m),
            Ok(_) => Err(self.broken("it sent descriptors")),
            Err(e) => Err(self.broken(&e.to_string())),
        }
    }

    /// The spawner failed us (`why`): it is killed and waited for, and
    /// lost; the command is deferred.
    fn broken(&mut self, why: &str) -> Outcome {
        let why = crate::log::sanitize(why, MAX_REASON);
        self.chan = None;
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = reap(self.pid, Instant::now());
        let o = Outcome::defer("4.3.0", &format!("the command spawner failed: {why}"));
        self.lost = Some(why);
        o
    }

    /// Close local's end and wait (at most `grace`) for the spawner to
    /// end, as it does when that end closes; killed after. Its status,
    /// and whether it had to be killed.
    pub fn close(mut self, grace: Duration) -> (nix::Result<WaitStatus>, bool) {
        self.chan = None;
        reap(self.pid, Instant::now() + grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    fn args() -> Vec<String> {
        ["true", "sender@example.org", "bob@example.org", "bob@example.org", "+", "0", "bob", "/home/bob", "600"]
            .map(String::from)
            .to_vec()
    }

    fn request() -> RunCommand {
        RunCommand { version: VERSION, args: args(), uid: 1000, gid: 1000, groups: vec![1000, 100] }
    }

    /// A report pipe's write end and a read-only queue file, as local
    /// sends them (the pipe's read end kept open).
    fn sent_fds() -> (Vec<OwnedFd>, OwnedFd) {
        let (rd, wr) = nix::unistd::pipe().unwrap();
        let mut f = tempfile();
        f.write_all(b"queue file").unwrap();
        let path = f.path.clone();
        let queue = File::open(&path).unwrap();
        (vec![wr, OwnedFd::from(queue)], rd)
    }

    struct Temp {
        path: PathBuf,
        file: File,
    }
    impl Write for Temp {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.file.write(b)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.file.flush()
        }
    }
    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
    fn tempfile() -> Temp {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "mta-spawner-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::create(&path).unwrap();
        Temp { path, file }
    }

    fn refused(req: RunCommand, fds: Vec<OwnedFd>, root: bool) -> String {
        match check(req, fds, root) {
            Ok(job) => panic!("accepted: {job:?}"),
            Err(why) => why,
        }
    }

    #[test]
    fn a_request_as_local_sends_it_is_accepted() {
        let (fds, _rd) = sent_fds();
        let job = check(request(), fds, false).expect("accepted");
        assert_eq!(job.argv[..2], ["local", "pipe"]);
        assert_eq!(job.argv[2..], args()[..]);
        assert_eq!(job.credentials, sandbox::Credentials { uid: 1000, gid: 1000, groups: vec![1000, 100] });
        // The longest arguments and the most groups still pass.
        let (fds, _rd) = sent_fds();
        let mut req = request();
        req.args[0] = "x".repeat(MAX_ARG);
        req.args[7] = "/".repeat(MAX_ARG);
        req.groups = (1..=MAX_GROUPS as u32).collect();
        check(req.clone(), fds, false).expect("at the bounds");
        // A whole request at its bounds fits the channel's limit.
        req.args = vec!["x".repeat(MAX_ARGS_TOTAL / PIPE_ARGS); PIPE_ARGS];
        req.groups = vec![u32::MAX - 1; MAX_GROUPS];
        let encoded = postcard::to_allocvec(&ToSpawner::Run(req)).unwrap();
        assert!(encoded.len() <= MAX_REQUEST, "{} > {MAX_REQUEST}", encoded.len());
    }

    #[test]
    fn root_only_when_allowed() {
        let (fds, _rd) = sent_fds();
        let why = refused(RunCommand { uid: 0, ..request() }, fds, false);
        assert!(why.contains("as root"), "{why}");
        let (fds, _rd) = sent_fds();
        let job = check(RunCommand { uid: 0, gid: 0, groups: vec![0], ..request() }, fds, true).expect("root allowed");
        assert_eq!(job.credentials.uid, 0);
        // Group 0 alone is no reason to refuse (wheel on the BSDs).
        let (fds, _rd) = sent_fds();
        check(RunCommand { gid: 0, groups: vec![0], ..request() }, fds, false).expect("group 0");
    }

    #[test]
    fn bounds_and_versions_are_refused() {
        let cases: Vec<(RunCommand, &str)> = vec![
            (RunCommand { version: VERSION + 1, ..request() }, "version"),
            (RunCommand { version: 0, ..request() }, "version"),
            (RunCommand { args: args()[..8].to_vec(), ..request() }, "8 arguments"),
            (RunCommand { args: [args(), vec![String::from("extra")]].concat(), ..request() }, "10 arguments"),
            (RunCommand { args: Vec::new(), ..request() }, "0 arguments"),
            (
                RunCommand {
                    args: {
                        let mut a = args();
                        a[0] = "x".repeat(MAX_ARG + 1);
                        a
                    },
                    ..request()
                },
                "argument 1 is 4097 bytes",
            ),
            (
                RunCommand {
                    args: {
                        let mut a = args();
                        a[6] = String::from("bob\0root");
                        a
                    },
                    ..request()
                },
                "argument 7 holds a NUL",
            ),
            (RunCommand { args: vec!["x".repeat(MAX_ARG); PIPE_ARGS], ..request() }, "over 16384"),
            (RunCommand { groups: vec![100; MAX_GROUPS + 1], ..request() }, "4097 groups"),
            (RunCommand { uid: u32::MAX, ..request() }, "-1"),
            (RunCommand { gid: u32::MAX, ..request() }, "-1"),
            (RunCommand { groups: vec![100, u32::MAX], ..request() }, "-1"),
        ];
        for (req, want) in cases {
            let (fds, _rd) = sent_fds();
            let why = refused(req.clone(), fds, true);
            assert!(why.contains(want), "{req:?}: {why}");
        }
    }

    #[test]
    fn descriptors_must_be_the_report_pipe_and_a_read_only_file() {
        let why = refused(request(), Vec::new(), false);
        assert!(why.contains("0 descriptors"), "{why}");
        let (mut fds, _rd) = sent_fds();
        fds.pop();
        assert!(refused(request(), fds, false).contains("1 descriptors"));
        let (mut fds, _rd) = sent_fds();
        let extra = fds[1].try_clone().unwrap();
        fds.push(extra);
        assert!(refused(request(), fds, false).contains("3 descriptors"));
        // In the wrong order.
        let (mut fds, _rd) = sent_fds();
        fds.swap(0, 1);
        let why = refused(request(), fds, false);
        assert!(why.contains("the report descriptor: not a pipe"), "{why}");
        // The pipe's read end.
        let (fds, rd) = sent_fds();
        let why = refused(request(), vec![rd, fds.into_iter().nth(1).unwrap()], false);
        assert!(why.contains("the report descriptor: not open for writing only"), "{why}");
        // A queue file open for writing.
        let (mut fds, _rd) = sent_fds();
        let t = tempfile();
        fds[1] = OwnedFd::from(std::fs::OpenOptions::new().read(true).write(true).open(&t.path).unwrap());
        let why = refused(request(), fds, false);
        assert!(why.contains("the queue file descriptor: not read-only"), "{why}");
        // A memory file open for writing is refused too, unless it is
        // sealed against writing (a message qmgr holds in memory).
        #[cfg(any(target_os = "linux", target_os = "freebsd"))]
        {
            use nix::sys::memfd::{MFdFlags, memfd_create};
            let (mut fds, _rd) = sent_fds();
            fds[1] = memfd_create("test", MFdFlags::MFD_ALLOW_SEALING).unwrap();
            let why = refused(request(), fds, false);
            assert!(why.contains("the queue file descriptor: not read-only"), "{why}");
            let (mut fds, _rd) = sent_fds();
            fds[1] = crate::queue::disk::memory_file(b"a queue file").unwrap();
            assert!(check(request(), fds, false).is_ok());
        }
        // A directory, or a pipe, for the queue file.
        let (mut fds, _rd) = sent_fds();
        fds[1] = OwnedFd::from(File::open(std::env::temp_dir()).unwrap());
        assert!(refused(request(), fds, false).contains("the queue file descriptor: not a regular file"));
        let (mut fds, _rd) = sent_fds();
        let (other_rd, _other_wr) = nix::unistd::pipe().unwrap();
        fds[1] = other_rd;
        assert!(refused(request(), fds, false).contains("the queue file descriptor: not a regular file"));
    }

    /// A spawner's loop on a thread (nothing here makes it fork), and
    /// local's end of its socket.
    fn spawner() -> (Channel, std::thread::JoinHandle<i32>) {
        let (ours, theirs) = crate::ipc::pair().unwrap();
        let h = std::thread::spawn(move || serve(theirs, Path::new("/nonexistent/local"), false));
        (Channel::new(ours), h)
    }

    fn ask(chan: &mut Channel, req: &ToSpawner, fds: &[OwnedFd]) -> FromSpawner {
        let fds: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        chan.send(req, &fds).unwrap();
        assert!(chan.flush_within(Duration::from_secs(5)).unwrap());
        let (m, fds) = chan.recv_blocking::<FromSpawner>(Duration::from_secs(10)).unwrap();
        assert!(fds.is_empty());
        m
    }

    #[test]
    fn the_spawner_answers_refusals_and_ends_at_a_request_out_of_order() {
        let (mut chan, h) = spawner();
        let (fds, _rd) = sent_fds();
        match ask(&mut chan, &ToSpawner::Run(RunCommand { uid: 0, ..request() }), &fds) {
            FromSpawner::Refused { reason } => assert!(reason.contains("refused: a command as root"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // It goes on: a program that cannot be started is refused too.
        let (fds, _rd) = sent_fds();
        match ask(&mut chan, &ToSpawner::Run(request()), &fds) {
            FromSpawner::Refused { reason } => {
                assert!(reason.starts_with("cannot start /nonexistent/local: "), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // Nothing runs: a reap is out of order, and ends it.
        chan.send(&ToSpawner::Reap { kill: true }, &[]).unwrap();
        assert_eq!(h.join().unwrap(), 1);
        assert!(matches!(chan.recv_blocking::<FromSpawner>(Duration::from_secs(5)), Err(crate::ipc::Error::Closed)));
    }

    #[test]
    fn the_spawner_ends_when_local_closes_its_end() {
        let (chan, h) = spawner();
        drop(chan);
        assert_eq!(h.join().unwrap(), 0);
        // Something that is no request ends it as well.
        let (mut chan, h) = spawner();
        chan.send(&FromSpawner::Started { pid: 1 }, &[]).unwrap();
        assert_eq!(h.join().unwrap(), 1);
    }

    #[test]
    fn exits_are_reported_as_waitpid_saw_them() {
        let pid = Pid::from_raw(1);
        assert_eq!(ended(Ok(WaitStatus::Exited(pid, 75))), CommandExit::Code(75));
        assert_eq!(ended(Ok(WaitStatus::Signaled(pid, Signal::SIGKILL, false))), CommandExit::Signal(9));
        assert_eq!(ended(Err(Errno::ECHILD)), CommandExit::Error(Errno::ECHILD as i32));
    }
}

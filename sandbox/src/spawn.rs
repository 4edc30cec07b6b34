//! The fenced fork/exec helper.
//!
//! [`spawn`] prepares everything it needs (C strings, pointer arrays, the
//! /dev/null descriptor, the error pipe, the group list) before fork(2),
//! so the child, which may be the child of a multi-threaded process, only
//! makes async-signal-safe system calls and never allocates or takes a
//! lock. The child reports a failure before or at execve(2) as an errno
//! through a close-on-exec pipe; end of file on that pipe means the exec
//! succeeded.
//!
//! [`fork_wait`] and [`fork_wait_with`] run a closure in a forked child
//! and wait for it; they exist for tests (and refuse multi-threaded
//! callers, whose children could deadlock on a lock another thread held).
use std::ffi::{CString, c_char, c_int};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

/// A resource limit to set in the child before exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    OpenFiles,
    CoreSize,
}

/// A limit the system will not raise that far (above the caller's hard
/// limit without privilege, or above the system's own bound, such as
/// Linux's `fs.nr_open`: EPERM or EINVAL) is set as high as the hard
/// limit the child has allows instead; the program finds what it got
/// with getrlimit(2). The BSDs cut an open-files limit to their bound
/// themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub resource: Resource,
    pub soft: u64,
    pub hard: u64,
}

/// Who the child becomes: setgroups, then setgid, then setuid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// One program to start.
pub struct Spawn<'a> {
    /// Absolute path of the program.
    pub program: &'a Path,
    /// argv, argv[0] included.
    pub argv: &'a [&'a str],
    /// The whole environment (nothing is inherited).
    pub env: &'a [(&'a str, &'a str)],
    /// Descriptors placed at 3, 4, 5, ... in the child, CLOEXEC cleared.
    pub fds: &'a [RawFd],
    /// Descriptor for the child's stderr; /dev/null when None. stdin and
    /// stdout are /dev/null.
    pub stderr: Option<RawFd>,
    pub credentials: Option<&'a Credentials>,
    pub limits: &'a [Limit],
    /// The child starts a session (and process group) of its own
    /// (setsid), so that signals for the caller's process group, such as
    /// ^C at its terminal or a supervisor's, do not reach it.
    pub new_session: bool,
}

/// One past the highest signal number.
#[cfg(target_os = "linux")]
const NSIG: c_int = 65;
#[cfg(target_os = "freebsd")]
const NSIG: c_int = 129;
#[cfg(target_os = "openbsd")]
const NSIG: c_int = 33;
#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd")))]
const NSIG: c_int = 32;

/// Exit status of a child whose exec (or preparation for it) failed.
const EXEC_FAILED: c_int = 127;

/// Everything the child of [`spawn`] uses, prepared before fork.
struct Prepared<'a> {
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    fds: &'a [RawFd],
    stderr: Option<RawFd>,
    devnull: RawFd,
    report: RawFd,
    /// The lowest number the child duplicates descriptors to before
    /// placing them, above every source and every target.
    base: c_int,
    /// Close fallback: descriptors below this may be open.
    fd_limit: c_int,
    limits: &'a [Limit],
    new_session: bool,
    credentials: Option<(libc::uid_t, libc::gid_t, &'a [libc::gid_t])>,
    default_action: libc::sigaction,
    empty_mask: libc::sigset_t,
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| invalid("spawn: NUL byte in an argument or environment entry"))
}

/// Checks that `fd` is open (so the child's failure to find it cannot be
/// confused with an exec error).
fn check_open(fd: RawFd) -> io::Result<()> {
    if fd < 0 {
        return Err(invalid("spawn: negative descriptor"));
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; any int is a
    // valid argument and a closed one yields EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pipe whose both ends are close-on-exec from the start.
pub(crate) fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut p = [-1 as c_int; 2];
    // SAFETY: p is a writable array of two ints, as pipe2 requires.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors owned by
    // nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

pub(crate) fn open_devnull() -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    Ok(OwnedFd::from(f))
}

/// The soft open-files limit, bounding the close loop used where
/// close_range(2) is missing.
fn fd_limit() -> c_int {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: rl is a valid, writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    if rc != 0 || rl.rlim_cur == libc::RLIM_INFINITY {
        return 1 << 20;
    }
    c_int::try_from(rl.rlim_cur).unwrap_or(1 << 20).min(1 << 20)
}

/// A sigaction that restores the default disposition, and an empty mask.
fn default_signals() -> (libc::sigaction, libc::sigset_t) {
    // SAFETY: sigaction and sigset_t are plain C structures for which all
    // zero bytes is a valid value; sigemptyset then initialises the sets
    // properly.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = libc::SIG_DFL;
    // SAFETY: both pointers point to valid, writable sigset_t values.
    unsafe {
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigemptyset(&mut empty);
    }
    (sa, empty)
}

/// Blocks every signal in the calling thread and returns the old mask,
/// so that no handler of the parent runs in a child before the child has
/// reset the dispositions.
fn block_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: zeroed sigset_t values are valid and then initialised by
    // sigfillset; pthread_sigmask gets valid pointers to both.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(old)
    }
}

fn restore_signals(old: &libc::sigset_t) {
    // SAFETY: old is a mask returned by pthread_sigmask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, old, ptr::null_mut());
    }
}

/// Fork and exec; returns the child's pid. Exec failures in the child are
/// reported back through a CLOEXEC pipe and returned here as the error.
///
/// Safe to call from a multi-threaded process: the child only makes
/// async-signal-safe calls between fork and exec. The child starts with
/// every signal at its default disposition and none blocked, stdin and
/// stdout on /dev/null, `fds` at 3, 4, ... and no other descriptor, and
/// in a session of its own when `new_session` says so.
pub fn spawn(s: &Spawn<'_>) -> io::Result<i32> {
    if !s.program.is_absolute() {
        return Err(invalid("spawn: the program path must be absolute"));
    }
    if s.argv.is_empty() {
        return Err(invalid("spawn: argv must hold argv[0]"));
    }
    let program = cstring(s.program.as_os_str().as_bytes())?;
    let args = s.argv.iter().map(|a| cstring(a.as_bytes())).collect::<io::Result<Vec<_>>>()?;
    let mut env = Vec::with_capacity(s.env.len());
    for (k, v) in s.env {
        if k.is_empty() || k.contains('=') {
            return Err(invalid("spawn: bad environment variable name"));
        }
        env.push(cstring(format!("{k}={v}").as_bytes())?);
    }
    let argv: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).chain([ptr::null()]).collect();
    let envp: Vec<*const c_char> = env.iter().map(|a| a.as_ptr()).chain([ptr::null()]).collect();
    for &fd in s.fds.iter().chain(s.stderr.iter()) {
        check_open(fd)?;
    }
    let groups: Option<Vec<libc::gid_t>> = s.credentials.map(|c| c.groups.clone());
    let devnull = open_devnull()?;
    let (report_r, report_w) = cloexec_pipe()?;

    let n = c_int::try_from(s.fds.len()).map_err(|_| invalid("spawn: too many descriptors"))?;
    // Targets are 0 ..= 3 + n (3 + n holds the error pipe until exec).
    let highest_source = s
        .fds
        .iter()
        .chain(s.stderr.iter())
        .copied()
        .chain([devnull.as_raw_fd(), report_w.as_raw_fd()])
        .max()
        .unwrap_or(0);
    let base = highest_source.max(3 + n).checked_add(1).ok_or_else(|| invalid("spawn: descriptor out of range"))?;
    let (default_action, empty_mask) = default_signals();
    let prepared = Prepared {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        fds: s.fds,
        stderr: s.stderr,
        devnull: devnull.as_raw_fd(),
        report: report_w.as_raw_fd(),
        base,
        fd_limit: fd_limit(),
        limits: s.limits,
        new_session: s.new_session,
        credentials: s.credentials.zip(groups.as_deref()).map(|(c, g)| (c.uid, c.gid, g)),
        default_action,
        empty_mask,
    };
    // Room for the child's high copies, allocated before fork.
    let mut high = vec![-1 as c_int; s.fds.len()];

    let old_mask = block_signals()?;
    // SAFETY: fork has no memory-safety preconditions of its own; the
    // child branch below runs only exec_child, which makes only
    // async-signal-safe calls on data prepared above and never returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        exec_child(&prepared, &mut high);
    }
    let fork_error = io::Error::last_os_error();
    restore_signals(&old_mask);
    if pid < 0 {
        return Err(fork_error);
    }
    drop(report_w);
    drop(devnull);

    let mut report = Vec::with_capacity(4);
    // read_to_end retries EINTR and stops at end of file: the child's
    // copy of the write end closes at a successful exec or at _exit.
    let read = std::fs::File::from(report_r).read_to_end(&mut report);
    match (read, report.len()) {
        (Ok(_), 0) => Ok(pid),
        (Ok(_), 4) => {
            let errno = i32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
            let _ = wait(pid);
            Err(io::Error::from_raw_os_error(errno))
        }
        (Ok(_), _) => {
            let _ = wait(pid);
            Err(io::Error::other("spawn: malformed exec error report"))
        }
        (Err(e), _) => {
            let _ = wait(pid);
            Err(e)
        }
    }
}

/// Writes errno to the report pipe and exits. Async-signal-safe.
fn child_fail(report: c_int, errno: c_int) -> ! {
    let bytes = errno.to_ne_bytes();
    // SAFETY: bytes is a valid 4-byte buffer; write and _exit are
    // async-signal-safe. A failed write leaves the parent with end of
    // file, and it then sees exit status 127.
    unsafe {
        libc::write(report, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(EXEC_FAILED)
    }
}

fn errno() -> c_int {
    // Reads errno; builds no heap value.
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// Duplicates `fd` to the lowest free number >= `base`, close-on-exec.
fn dup_high(fd: c_int, base: c_int) -> Result<c_int, c_int> {
    // SAFETY: fcntl F_DUPFD_CLOEXEC with integer arguments has no memory
    // effects; a bad descriptor yields EBADF.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, base) };
    if r < 0 { Err(errno()) } else { Ok(r) }
}

pub(crate) fn dup_to(fd: c_int, target: c_int) -> Result<(), c_int> {
    loop {
        // SAFETY: dup2 with integer arguments has no memory effects; it
        // replaces `target`, which the caller means to reuse.
        let r = unsafe { libc::dup2(fd, target) };
        if r >= 0 {
            return Ok(());
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// Places `srcs[i]` at `3 + i` with close-on-exec cleared. Every source
/// is first copied above `base` (which exceeds every source and target),
/// so sources that are also targets of other entries are not clobbered.
/// `high` must have `srcs.len()` slots. Async-signal-safe; no allocation.
fn place_fds(srcs: &[RawFd], high: &mut [c_int], base: c_int) -> Result<(), c_int> {
    for (slot, &fd) in high.iter_mut().zip(srcs) {
        *slot = dup_high(fd, base)?;
    }
    for (target, &h) in (3..).zip(high.iter()) {
        dup_to(h, target)?;
    }
    Ok(())
}

/// Closes every descriptor from `first` up. Async-signal-safe.
#[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
fn close_from(first: c_int, fd_limit: c_int) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: close_range takes integers only; it closes descriptors
        // this child owns and no Rust object in the child refers to.
        let r = unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, !0 as libc::c_uint, 0) };
        if r != 0 {
            // Kernels before 5.9: close one by one up to the limit.
            for fd in first..fd_limit.max(first) {
                // SAFETY: as above, for one descriptor; EBADF is fine.
                unsafe { libc::close(fd) };
            }
        }
    }
    #[cfg(target_os = "freebsd")]
    {
        // SAFETY: closefrom takes an integer only and closes descriptors
        // this child owns and no Rust object in the child refers to.
        unsafe { libc::closefrom(first) };
    }
    #[cfg(target_os = "openbsd")]
    {
        // SAFETY: as for FreeBSD.
        unsafe { libc::closefrom(first) };
    }
    #[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd")))]
    {
        for fd in first..fd_limit.max(first) {
            // SAFETY: as above, for one descriptor; EBADF is fine.
            unsafe { libc::close(fd) };
        }
    }
}

/// Restores the default disposition of SIGCHLD, which a parent may have
/// set to ignored before exec (swaks does): children are then reaped by
/// the kernel and their exit status is lost. For programs such as
/// sendmail that wait for a child they start.
pub fn default_sigchld() -> io::Result<()> {
    let (sa, _) = default_signals();
    // SAFETY: sa is a valid sigaction (SIG_DFL, empty mask) that installs
    // no handler; the old action is not asked for.
    let r = unsafe { libc::sigaction(libc::SIGCHLD, &sa, ptr::null_mut()) };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Resets every signal to its default disposition, then unblocks all.
/// Async-signal-safe.
fn reset_signals(default_action: &libc::sigaction, empty_mask: &libc::sigset_t) {
    for sig in 1..NSIG {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: default_action is a valid sigaction (SIG_DFL, empty
        // mask); EINVAL for numbers the C library reserves is ignored.
        unsafe { libc::sigaction(sig, default_action, ptr::null_mut()) };
    }
    // SAFETY: empty_mask is an initialised, empty sigset_t.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, empty_mask, ptr::null_mut()) };
}

/// The child of [`spawn`]: only async-signal-safe calls, no allocation.
fn exec_child(p: &Prepared<'_>, high: &mut [c_int]) -> ! {
    reset_signals(&p.default_action, &p.empty_mask);
    // SAFETY: setsid takes no arguments and is async-signal-safe; it
    // fails only for a process group leader, which a child just forked
    // is not.
    if p.new_session && unsafe { libc::setsid() } == -1 {
        child_fail(p.report, errno());
    }

    // Copy every descriptor that is kept to a number above all targets
    // first: any of them may sit at 0 ..= 3 + n.
    let report = match dup_high(p.report, p.base) {
        Ok(fd) => fd,
        Err(e) => child_fail(p.report, e),
    };
    let devnull = dup_high(p.devnull, p.base).unwrap_or_else(|e| child_fail(report, e));
    let stderr = match p.stderr {
        Some(fd) => dup_high(fd, p.base).unwrap_or_else(|e| child_fail(report, e)),
        None => devnull,
    };
    if let Err(e) = place_fds(p.fds, high, p.base) {
        child_fail(report, e);
    }
    for (fd, target) in [(devnull, 0), (devnull, 1), (stderr, 2)] {
        if let Err(e) = dup_to(fd, target) {
            child_fail(report, e);
        }
    }
    // The error pipe goes right after the placed descriptors (still
    // close-on-exec), and everything above it is closed.
    let report_at = 3 + p.fds.len() as c_int;
    if let Err(e) = dup_to(report, report_at) {
        child_fail(report, e);
    }
    let report = report_at;
    // SAFETY: F_SETFD with an integer flag has no memory effects.
    if unsafe { libc::fcntl(report, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        child_fail(report, errno());
    }
    close_from(report + 1, p.fd_limit);

    for limit in p.limits {
        let resource = match limit.resource {
            Resource::OpenFiles => libc::RLIMIT_NOFILE,
            Resource::CoreSize => libc::RLIMIT_CORE,
        };
        let mut rl = libc::rlimit { rlim_cur: limit.soft as libc::rlim_t, rlim_max: limit.hard as libc::rlim_t };
        // SAFETY: rl is a valid rlimit for the duration of the call.
        if unsafe { libc::setrlimit(resource, &rl) } == 0 {
            continue;
        }
        let e = errno();
        if e != libc::EPERM && e != libc::EINVAL {
            child_fail(report, e);
        }
        // As high as the hard limit allows.
        let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: now is a valid, writable rlimit for the duration of the
        // call; getrlimit only reads the process's limit into it.
        if unsafe { libc::getrlimit(resource, &mut now) } != 0 {
            child_fail(report, errno());
        }
        rl.rlim_max = rl.rlim_max.min(now.rlim_max);
        rl.rlim_cur = rl.rlim_cur.min(rl.rlim_max);
        // SAFETY: as above.
        if unsafe { libc::setrlimit(resource, &rl) } != 0 {
            child_fail(report, errno());
        }
    }

    if let Some((uid, gid, groups)) = p.credentials {
        // SAFETY: groups points to groups.len() gid_t values prepared
        // before fork; setgroups, setgid and setuid take no other memory.
        unsafe {
            if libc::setgroups(groups.len() as _, groups.as_ptr()) != 0 {
                child_fail(report, errno());
            }
            if libc::setgid(gid) != 0 {
                child_fail(report, errno());
            }
            if libc::setuid(uid) != 0 {
                child_fail(report, errno());
            }
            // Dropping root must be irreversible.
            if uid != 0 && libc::setuid(0) == 0 {
                child_fail(report, libc::EPERM);
            }
        }
    }

    // SAFETY: program, argv and envp are NUL-terminated strings and
    // null-terminated pointer arrays prepared before fork and alive in
    // this copy of the address space.
    unsafe { libc::execve(p.program, p.argv, p.envp) };
    child_fail(report, errno())
}

/// Waits for `pid`, retrying EINTR; returns the exit code, or 128 + the
/// signal number if it was killed.
pub(crate) fn wait(pid: libc::pid_t) -> io::Result<i32> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: status is a valid, writable int.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if r == -1 && e.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return Err(e);
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Ok(128 + libc::WTERMSIG(status))
    } else {
        Err(io::Error::other(format!("child {pid}: unexpected wait status {status:#x}")))
    }
}

/// Run `f` in a forked child and wait for it. Returns the child's exit
/// code, or 128 + signal number if it was killed. Refuses when the
/// caller has more than one thread.
///
/// The child exits with `f`'s value clamped to 0 ..= 255, or 101 if `f`
/// panics; it never returns into the caller's code.
pub fn fork_wait(f: impl FnOnce() -> i32) -> io::Result<i32> {
    fork_run(None, |_| f())
}

/// Like [`fork_wait`], but the child first gets `fds[i]` at descriptor
/// `3 + i` (close-on-exec cleared) and every other descriptor from 3 up
/// closed, as [`spawn`] arranges for a program; `f` receives the placed
/// descriptors, in order. For tests that run a role's code in-process.
pub fn fork_wait_with(fds: &[BorrowedFd<'_>], f: impl FnOnce(Vec<OwnedFd>) -> i32) -> io::Result<i32> {
    fork_run(Some(fds), f)
}

fn fork_run(fds: Option<&[BorrowedFd<'_>]>, f: impl FnOnce(Vec<OwnedFd>) -> i32) -> io::Result<i32> {
    crate::threads::require_single().map_err(io::Error::other)?;
    let raw: Vec<RawFd> = fds.unwrap_or(&[]).iter().map(|fd| fd.as_raw_fd()).collect();
    let n = c_int::try_from(raw.len()).map_err(|_| invalid("fork_wait: too many descriptors"))?;
    let base = raw.iter().copied().max().unwrap_or(0).max(2 + n) + 1;
    let mut high = vec![-1 as c_int; raw.len()];
    let fd_limit = fd_limit();
    // Nothing buffered may be written twice, by parent and child.
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: the process has a single thread (checked above), so the
    // child is an exact copy in which every lock is free and any code,
    // allocation included, may run. The child leaves only by _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut owned = Vec::new();
            if fds.is_some() {
                if let Err(e) = place_fds(&raw, &mut high, base) {
                    eprintln!("fork_wait_with: placing descriptors: {}", io::Error::from_raw_os_error(e));
                    return EXEC_FAILED;
                }
                close_from(3 + n, fd_limit);
                // SAFETY: place_fds put a fresh duplicate at each of 3 ..
                // 3 + n and close_from closed the copies above, so this
                // child owns each of them exactly once.
                owned = (3..3 + n).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect();
            }
            f(owned)
        }))
        .unwrap_or(101);
        let _ = io::stdout().flush();
        let _ = io::stderr().flush();
        // SAFETY: _exit ends the child without running the parent's
        // atexit handlers or destructors twice.
        unsafe { libc::_exit(code.clamp(0, 255)) };
    }
    wait(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_arrive_at_three_and_others_are_closed() {
        let (r, w) = cloexec_pipe().unwrap();
        let (status_r, status_w) = cloexec_pipe().unwrap();
        // An extra descriptor without close-on-exec: only spawn's closing
        // keeps it from the child.
        let devnull = open_devnull().unwrap();
        // SAFETY: dup of an open descriptor; the result is owned below.
        let stray = unsafe { OwnedFd::from_raw_fd(libc::dup(devnull.as_raw_fd())) };
        assert!(stray.as_raw_fd() >= 0);
        let script = format!(
            "test -e /proc/self/fd/3 && test -e /proc/self/fd/4 && ! test -e /proc/self/fd/5 \
             && ! test -e /proc/self/fd/{stray} && echo hello >&3 && echo ok >&4",
            stray = stray.as_raw_fd()
        );
        // Order the sources so that one of them is the other's target.
        let pid = spawn(&Spawn {
            program: Path::new("/bin/sh"),
            argv: &["sh", "-c", &script],
            env: &[("PATH", "/bin:/usr/bin")],
            fds: &[w.as_raw_fd(), status_w.as_raw_fd()],
            stderr: None,
            credentials: None,
            limits: &[Limit { resource: Resource::CoreSize, soft: 0, hard: 0 }],
            new_session: false,
        })
        .expect("spawn /bin/sh");
        drop(w);
        drop(status_w);
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        let mut status = String::new();
        std::fs::File::from(status_r).read_to_string(&mut status).unwrap();
        assert_eq!(wait(pid).unwrap(), 0);
        assert_eq!(out, "hello\n");
        assert_eq!(status, "ok\n");
        drop(stray);
    }

    #[test]
    fn overlapping_sources_and_targets() {
        // Six pipes whose write ends, passed in reverse order, are likely
        // to sit at numbers that are also targets (3 ..= 8).
        let pipes: Vec<(OwnedFd, OwnedFd)> = (0..6).map(|_| cloexec_pipe().unwrap()).collect();
        let fds: Vec<RawFd> = pipes.iter().rev().map(|(_, w)| w.as_raw_fd()).collect();
        let pid = spawn(&Spawn {
            program: Path::new("/bin/sh"),
            argv: &["sh", "-c", "for i in 0 1 2 3 4 5; do echo $i >&$((3 + i)); done"],
            env: &[],
            fds: &fds,
            stderr: None,
            credentials: None,
            limits: &[],
            new_session: false,
        })
        .unwrap();
        let readers: Vec<OwnedFd> = pipes.into_iter().rev().map(|(r, _)| r).collect();
        assert_eq!(wait(pid).unwrap(), 0);
        for (i, r) in readers.into_iter().enumerate() {
            let mut s = String::new();
            std::fs::File::from(r).read_to_string(&mut s).unwrap();
            assert_eq!(s, format!("{i}\n"));
        }
    }

    #[test]
    fn environment_is_exactly_what_was_given() {
        let (r, w) = cloexec_pipe().unwrap();
        let pid = spawn(&Spawn {
            program: Path::new("/usr/bin/env"),
            argv: &["env"],
            env: &[("A", "1"), ("B", "two words")],
            fds: &[],
            stderr: Some(w.as_raw_fd()),
            credentials: None,
            limits: &[],
            new_session: false,
        })
        .unwrap();
        drop(w);
        assert_eq!(wait(pid).unwrap(), 0);
        // env writes to stdout, which is /dev/null: nothing arrives.
        let mut s = String::new();
        std::fs::File::from(r).read_to_string(&mut s).unwrap();
        assert_eq!(s, "");

        let (r, w) = cloexec_pipe().unwrap();
        let pid = spawn(&Spawn {
            program: Path::new("/bin/sh"),
            argv: &["sh", "-c", "env >&3"],
            env: &[("A", "1"), ("B", "two words")],
            fds: &[w.as_raw_fd()],
            stderr: None,
            credentials: None,
            limits: &[],
            new_session: false,
        })
        .unwrap();
        drop(w);
        assert_eq!(wait(pid).unwrap(), 0);
        let mut s = String::new();
        std::fs::File::from(r).read_to_string(&mut s).unwrap();
        let mut vars: Vec<&str> = s.lines().filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=")).collect();
        vars.retain(|l| *l != "_=/usr/bin/env");
        assert_eq!(vars, ["A=1", "B=two words"]);
    }

    #[test]
    fn exec_failure_is_reported() {
        let e = spawn(&Spawn {
            program: Path::new("/nonexistent/program"),
            argv: &["program"],
            env: &[],
            fds: &[],
            stderr: None,
            credentials: None,
            limits: &[],
            new_session: false,
        })
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    }

    #[test]
    fn bad_descriptor_is_refused() {
        let e = spawn(&Spawn {
            program: Path::new("/bin/true"),
            argv: &["true"],
            env: &[],
            fds: &[1_000_000],
            stderr: None,
            credentials: None,
            limits: &[],
            new_session: false,
        })
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
        assert!(spawn(&Spawn { argv: &[], ..spawn_true() }).is_err());
        assert!(spawn(&Spawn { program: Path::new("true"), ..spawn_true() }).is_err());
        assert!(spawn(&Spawn { env: &[("A=B", "c")], ..spawn_true() }).is_err());
    }

    #[test]
    fn a_new_session_when_asked() {
        for new_session in [true, false] {
            // The child waits on the pipe until the write end closes.
            let (r, w) = cloexec_pipe().unwrap();
            let pid = spawn(&Spawn {
                program: Path::new("/bin/sh"),
                argv: &["sh", "-c", "read x <&3 || :"],
                fds: &[r.as_raw_fd()],
                new_session,
                ..spawn_true()
            })
            .unwrap();
            drop(r);
            // SAFETY: getsid and getpgid take integers only.
            let (sid, pgid, own_sid) = unsafe { (libc::getsid(pid), libc::getpgid(pid), libc::getsid(0)) };
            drop(w);
            assert_eq!(wait(pid).unwrap(), 0);
            if new_session {
                assert_eq!((sid, pgid), (pid, pid));
            } else {
                assert_eq!(sid, own_sid);
                assert_ne!(pgid, pid);
            }
        }
    }

    #[test]
    fn a_limit_too_high_is_the_hard_limit() {
        let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: now is a valid, writable rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        // Above every system's bound on open files (Linux's fs.nr_open is
        // at most 2^30), and above any caller's hard limit.
        let huge = 1 << 40;
        let (r, w) = cloexec_pipe().unwrap();
        let pid = spawn(&Spawn {
            program: Path::new("/bin/sh"),
            argv: &["sh", "-c", "echo $(ulimit -Sn) $(ulimit -Hn) >&3"],
            fds: &[w.as_raw_fd()],
            limits: &[Limit { resource: Resource::OpenFiles, soft: huge, hard: huge }],
            ..spawn_true()
        })
        .unwrap();
        drop(w);
        assert_eq!(wait(pid).unwrap(), 0);
        let mut s = String::new();
        std::fs::File::from(r).read_to_string(&mut s).unwrap();
        let got: Vec<u64> = s.split_whitespace().map(|n| n.parse().unwrap()).collect();
        assert_eq!(got.len(), 2, "{s}");
        assert_eq!(got[0], got[1], "{s}");
        // rlim_t is unsigned on Linux and OpenBSD, signed on FreeBSD.
        #[allow(clippy::useless_conversion)]
        let hard = u64::try_from(now.rlim_max).unwrap();
        // The hard limit the child had (the BSDs may give root their
        // bound instead, which is not lower).
        assert!(got[1] >= hard && got[1] < huge, "{s}");
        #[cfg(target_os = "linux")]
        assert_eq!(got[1], hard, "{s}");
    }

    fn spawn_true() -> Spawn<'static> {
        Spawn {
            program: Path::new("/bin/true"),
            argv: &["true"],
            env: &[],
            fds: &[],
            stderr: None,
            credentials: None,
            limits: &[],
            new_session: false,
        }
    }

    #[test]
    fn credentials_and_limits_apply() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let (r, w) = cloexec_pipe().unwrap();
        let creds = Credentials { uid: 65534, gid: 65534, groups: vec![65534] };
        let pid = spawn(&Spawn {
            program: Path::new("/bin/sh"),
            argv: &["sh", "-c", "echo $(id -u) $(id -g) $(id -G) $(ulimit -n) >&3"],
            env: &[("PATH", "/bin:/usr/bin")],
            fds: &[w.as_raw_fd()],
            stderr: None,
            credentials: Some(&creds),
            limits: &[Limit { resource: Resource::OpenFiles, soft: 64, hard: 64 }],
            new_session: false,
        })
        .unwrap();
        drop(w);
        assert_eq!(wait(pid).unwrap(), 0);
        let mut s = String::new();
        std::fs::File::from(r).read_to_string(&mut s).unwrap();
        assert_eq!(s, "65534 65534 65534 64\n");
    }
}

//! A process that can kill everything it started, even what left its
//! process group or its session (`setsid`, a double fork): it becomes the
//! reaper of its descendants, so that an orphan among them is given to it
//! rather than to init, and [`kill_descendants`] then finds and kills
//! them all.
//!
//! - Linux: `prctl(PR_SET_CHILD_SUBREAPER)`; the descendants are found by
//!   their parents in `/proc`, and killed round after round (one may fork
//!   while the last round ran; its orphans are ours) until a round finds
//!   none.
//! - FreeBSD: `procctl(2)` `PROC_REAP_ACQUIRE` and `PROC_REAP_KILL`, which
//!   signals every descendant in one call.
//! - OpenBSD has no reaper: [`acquire`] says so, and the caller's kill of
//!   its process group is all there is.
//!
//! Trusts: nothing; what `/proc` says of other processes is only used to
//! choose what to signal, and only processes whose parent chain leads to
//! us are signalled.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Rounds [`kill_descendants`] makes at most on Linux.
#[cfg(target_os = "linux")]
const ROUNDS: usize = 64;

/// Whether [`acquire`] made this process a reaper.
static ACQUIRED: AtomicBool = AtomicBool::new(false);

/// Become the reaper of this process's descendants. Ok(false) where the
/// system has no such thing (OpenBSD).
pub fn acquire() -> io::Result<bool> {
    let r = imp::acquire();
    if matches!(r, Ok(true)) {
        ACQUIRED.store(true, Ordering::Relaxed);
    }
    r
}

/// Send SIGKILL to every descendant of this process (a reaper, see
/// [`acquire`]), those that left its process group or session included,
/// and collect those that were its children; how many were signalled.
/// Refused unless [`acquire`] succeeded: FreeBSD's `PROC_REAP_KILL` on a
/// process that is no reaper acts for its reaper (init), on every process
/// the caller may signal.
pub fn kill_descendants() -> io::Result<usize> {
    if !ACQUIRED.load(Ordering::Relaxed) {
        return Err(io::Error::other("not a reaper"));
    }
    imp::kill_descendants()
}

/// Collect every child that has ended, without waiting.
fn reap_ended() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::collections::HashMap;
    use std::io;

    pub fn acquire() -> io::Result<bool> {
        nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
        Ok(true)
    }

    pub fn kill_descendants() -> io::Result<usize> {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let me = std::process::id() as i32;
        let mut killed = 0;
        for _ in 0..super::ROUNDS {
            super::reap_ended();
            let found = descendants(me, &processes()?);
            if found.is_empty() {
                return Ok(killed);
            }
            for pid in found {
                if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                    killed += 1;
                }
            }
            // Let the signals land before looking again.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        super::reap_ended();
        Ok(killed)
    }

    /// Every process that has not ended: (pid, parent's pid).
    fn processes() -> io::Result<Vec<(i32, i32)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc")? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            // Gone meanwhile, or not ours to read: skipped.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            if let Some((state, ppid)) = parse_stat(&stat)
                && state != 'Z'
                && state != 'X'
            {
                out.push((pid, ppid));
            }
        }
        Ok(out)
    }

    /// The state and parent's pid in a `/proc/PID/stat` line: `PID (COMM)
    /// STATE PPID ...`, where COMM may hold anything, parentheses too.
    pub(super) fn parse_stat(stat: &str) -> Option<(char, i32)> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_ascii_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = fields.next()?.parse().ok()?;
        Some((state, ppid))
    }

    /// The pids below `root` in the tree of `procs`.
    pub(super) fn descendants(root: i32, procs: &[(i32, i32)]) -> Vec<i32> {
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for &(pid, ppid) in procs {
            if pid != root {
                children.entry(ppid).or_default().push(pid);
            }
        }
        let mut out = Vec::new();
        let mut todo = vec![root];
        while let Some(p) = todo.pop() {
            for &c in children.get(&p).map_or(&[][..], Vec::as_slice) {
                // A pid seen twice (a tree read while it changed) once.
                if !out.contains(&c) {
                    out.push(c);
                    todo.push(c);
                }
            }
        }
        out
    }
}

#[cfg(target_os = "freebsd")]
mod imp {
    use std::io;

    /// `struct procctl_reaper_kill` of <sys/procctl.h>.
    #[repr(C)]
    struct ReaperKill {
        rk_sig: libc::c_int,
        rk_flags: libc::c_uint,
        rk_subtree: libc::pid_t,
        rk_killed: libc::c_uint,
        rk_fpid: libc::pid_t,
        rk_pad0: [libc::c_uint; 15],
    }

    pub fn acquire() -> io::Result<bool> {
        // SAFETY: PROC_REAP_ACQUIRE takes no data (a null pointer) and
        // acts on this process, named by its own pid.
        let r = unsafe {
            libc::procctl(libc::P_PID, libc::id_t::from(libc::getpid()), libc::PROC_REAP_ACQUIRE, std::ptr::null_mut())
        };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        // Already a reaper.
        if e.raw_os_error() == Some(libc::EBUSY) { Ok(true) } else { Err(e) }
    }

    pub fn kill_descendants() -> io::Result<usize> {
        let mut rk = ReaperKill {
            rk_sig: libc::SIGKILL,
            rk_flags: 0,
            rk_subtree: 0,
            rk_killed: 0,
            rk_fpid: -1,
            rk_pad0: [0; 15],
        };
        // SAFETY: PROC_REAP_KILL reads and writes a struct
        // procctl_reaper_kill, which `rk` is (same layout, `repr(C)`),
        // alive and exclusively borrowed for the call.
        let r = unsafe {
            libc::procctl(
                libc::P_PID,
                libc::id_t::from(libc::getpid()),
                libc::PROC_REAP_KILL,
                (&raw mut rk).cast::<libc::c_void>(),
            )
        };
        let killed = rk.rk_killed as usize;
        super::reap_ended();
        if r == 0 {
            return Ok(killed);
        }
        let e = io::Error::last_os_error();
        // No descendant left.
        if e.raw_os_error() == Some(libc::ESRCH) { Ok(killed) } else { Err(e) }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
mod imp {
    use std::io;

    pub fn acquire() -> io::Result<bool> {
        Ok(false)
    }

    pub fn kill_descendants() -> io::Result<usize> {
        super::reap_ended();
        Ok(0)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::imp::{descendants, parse_stat};

    #[test]
    fn stat_lines_with_odd_command_names() {
        assert_eq!(parse_stat("42 (sh) S 7 42 42 0"), Some(('S', 7)));
        assert_eq!(parse_stat("43 (a) b (c)) R 42 1 1"), Some(('R', 42)));
        assert_eq!(parse_stat("44 (x"), None);
    }

    #[test]
    fn descendants_are_every_level_below_and_nothing_else() {
        // 10 is us; 11 and 12 ours, 13 11's, 14 13's; 20 and 21 not ours.
        let procs = [(10, 1), (11, 10), (12, 10), (13, 11), (14, 13), (20, 1), (21, 20)];
        let mut d = descendants(10, &procs);
        d.sort_unstable();
        assert_eq!(d, [11, 12, 13, 14]);
        assert!(descendants(14, &procs).is_empty());
    }
}

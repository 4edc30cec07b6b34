//! Command deliveries given up on: the `local` program built beside
//! these tests (skipped when it is not there, or when not run as root:
//! the spawner starts `local pipe` with credentials) runs commands that
//! outlive their supervisor, through its command spawner as local runs
//! them. Whichever way the delivery is given up (local's own limit,
//! `local pipe` stopped or killed, local gone, the report's reader gone,
//! `local pipe`'s own limit), no process of the command may remain, and
//! nothing it does may happen afterwards.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::TempDir;
use super::worker::{program, queue};
use crate::ipc::Channel;
use crate::ipc::msg::{CommandExit, FromSpawner, RecipientStatus, RunCommand, ToSpawner};
use crate::local::agent::Outcome;
use crate::local::spawn::ENV;
use crate::local::spawner::{Spawner, VERSION};

/// The program, when it is built and we are root.
fn setup() -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: not root");
        return None;
    }
    program()
}

/// A command that writes its shell's pid and its background loop's pid
/// to `pid` and `pid2` in its home, then does `then`, then runs on,
/// both loops appending to `marker` every tenth of a second, deaf to
/// SIGTERM and SIGHUP.
fn stubborn(then: &str) -> String {
    format!(
        "trap '' TERM HUP; echo $$ > pid.tmp && mv pid.tmp pid; \
         (while :; do echo bg >> marker; sleep 0.1; done) & echo $! > pid2.tmp && mv pid2.tmp pid2; \
         {then}; while :; do echo fg >> marker; sleep 0.1; done"
    )
}

/// The arguments of `local pipe` for `command`, home `dir`, its own
/// limit `limit_s`.
fn pipe_args(command: &str, dir: &Path, limit_s: u32) -> Vec<String> {
    let home = dir.to_str().unwrap();
    ["", "sender@example.org", "root@localhost", "root@localhost", "+", "0", "root", home, ""]
        .iter()
        .enumerate()
        .map(|(i, a)| match i {
            0 => command.to_string(),
            8 => limit_s.to_string(),
            _ => a.to_string(),
        })
        .collect()
}

fn root() -> sandbox::Credentials {
    sandbox::Credentials { uid: 0, gid: 0, groups: vec![0] }
}

/// Whether `pid` is gone (or a zombie nobody has reaped yet: it does
/// nothing more).
fn gone(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return true;
    }
    let out = std::process::Command::new("ps").args(["-o", "stat=", "-p", &pid.to_string()]).output();
    matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).trim_start().starts_with('Z'))
}

fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && let Ok(p) = s.trim().parse()
        {
            return p;
        }
        assert!(Instant::now() < deadline, "no {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The command in `dir` was given up on: its shell and its background
/// loop are gone within a few seconds, and the marker stops growing.
fn assert_command_gone(dir: &Path) {
    let pids = [read_pid(&dir.join("pid")), read_pid(&dir.join("pid2"))];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids.iter().all(|&p| gone(p)) {
        if Instant::now() > deadline {
            // Clean up after the failure, then fail.
            for p in pids {
                let _ = kill(Pid::from_raw(-p), nix::sys::signal::Signal::SIGKILL);
                let _ = kill(Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
            }
            panic!("the command's processes {pids:?} outlived the delivery");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let size = || std::fs::metadata(dir.join("marker")).map(|m| m.len()).unwrap_or(0);
    let before = size();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(size(), before, "the command went on writing after the delivery was given up");
}

/// Run `command` through a spawner as local does, with local's limit
/// `limit` and `local pipe`'s own `limit_s`; the outcome.
fn through_spawner(program: &Path, dir: &TempDir, command: &str, limit: Duration, limit_s: u32) -> Outcome {
    let mut spawner = Spawner::start(program, true).expect("start the spawner");
    let q = queue(dir, "body");
    let args = pipe_args(command, &dir.path, limit_s);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ran = spawner.run(&args, &root(), &q, limit, 4096).unwrap_or_else(|o| panic!("{o:?}"));
    let o = ran.outcome(limit);
    let _ = spawner.close(Duration::from_secs(5));
    o
}

fn deferred_for(o: &Outcome) -> String {
    assert_eq!(o.status, RecipientStatus::Deferred, "{o:?}");
    o.reason.clone()
}

#[test]
fn local_s_own_limit_kills_a_stopped_local_pipe_s_command() {
    let Some(program) = setup() else { return };
    let dir = TempDir::new("spawner-stopped");
    // `local pipe` stopped cannot supervise: local's limit must end the
    // command all the same.
    let status = through_spawner(&program, &dir, &stubborn("kill -STOP $PPID"), Duration::from_secs(2), 600);
    let reason = deferred_for(&status);
    assert!(reason.contains("delivery stopped after 2s"), "{reason}");
    assert_command_gone(&dir.path);
}

#[test]
fn a_killed_local_pipe_takes_its_command_with_it() {
    let Some(program) = setup() else { return };
    let dir = TempDir::new("spawner-killed");
    let status = through_spawner(&program, &dir, &stubborn("kill -KILL $PPID"), Duration::from_secs(30), 600);
    let reason = deferred_for(&status);
    assert!(reason.contains("killed by SIGKILL"), "{reason}");
    assert_command_gone(&dir.path);
}

#[test]
fn local_pipe_s_own_limit_kills_the_command_and_says_so() {
    let Some(program) = setup() else { return };
    let dir = TempDir::new("spawner-own-limit");
    let start = Instant::now();
    let status = through_spawner(&program, &dir, &stubborn("echo started"), Duration::from_secs(30), 1);
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    let reason = deferred_for(&status);
    assert!(reason.contains("command stopped after 1s: started"), "{reason}");
    assert_command_gone(&dir.path);
}

#[test]
fn a_finished_command_s_leftovers_are_left_alone() {
    let Some(program) = setup() else { return };
    let dir = TempDir::new("spawner-leftover");
    let command = "(sleep 1; echo late > late) >/dev/null 2>&1 </dev/null & echo ok";
    let status = through_spawner(&program, &dir, command, Duration::from_secs(30), 600);
    assert!(matches!(status.status, RecipientStatus::Delivered { .. }), "{status:?}");
    let late = dir.path.join("late");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !late.exists() {
        assert!(Instant::now() < deadline, "the finished command's background process was killed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A spawner of `program` started as local starts it, and local's end
/// of its socket.
fn raw_spawner(program: &Path) -> (Channel, Pid) {
    let (ours, theirs) = crate::ipc::pair().unwrap();
    let path = program.to_str().unwrap();
    let argv = ["local", "spawner", path, "root"];
    let spec = sandbox::Spawn {
        program,
        argv: &argv,
        env: &ENV,
        fds: &[theirs.as_raw_fd()],
        stderr: None,
        credentials: None,
        limits: &[],
        new_session: false,
    };
    let pid = Pid::from_raw(sandbox::spawn(&spec).expect("start the spawner"));
    (Channel::new(ours), pid)
}

/// Ask the spawner to run `command` with `local pipe`'s own limit of
/// ten minutes; the report pipe's read end, once it has started.
fn start_command(chan: &mut Channel, dir: &TempDir, command: &str) -> (OwnedFd, File) {
    let q = queue(dir, "body");
    let (rd, wr) = nix::unistd::pipe().unwrap();
    let req = ToSpawner::Run(RunCommand {
        version: VERSION,
        args: pipe_args(command, &dir.path, 600),
        uid: 0,
        gid: 0,
        groups: vec![0],
    });
    chan.send(&req, &[wr.as_fd(), q.as_fd()]).unwrap();
    assert!(chan.flush_within(Duration::from_secs(5)).unwrap());
    match chan.recv_blocking::<FromSpawner>(Duration::from_secs(10)).unwrap().0 {
        FromSpawner::Started { .. } => {}
        other => panic!("{other:?}"),
    }
    (rd, q)
}

/// Wait for `pid` (the spawner), at most ten seconds.
fn wait_spawner(pid: Pid) {
    let (status, killed) = crate::local::spawn::reap(pid, Instant::now() + Duration::from_secs(10));
    assert!(!killed, "the spawner did not end: {status:?}");
}

#[test]
fn local_gone_kills_the_running_command() {
    let Some(program) = setup() else { return };
    let dir = TempDir::new("spawner-local-gone");
    let (mut chan, pid) = raw_spawner(&program);
    // The report stays open: only the spawner sees local go.
    let (_rd, _q) = start_command(&mut chan, &dir, &stubborn("kill -STOP $PPID"));
    read_pid(&dir.path.join("pid2"));
    drop(chan);
    wait_spawner(pid);
    assert_command_gone(&dir.path);
}

#[test]
fn the_report_s_reader_gone_stops_the_command() {
    let Some(program) = setup() else { return };
    let dir = TempDir::new("spawner-reader-gone");
    let (mut chan, pid) = raw_spawner(&program);
    let (rd, _q) = start_command(&mut chan, &dir, &stubborn("echo started"));
    read_pid(&dir.path.join("pid2"));
    // Local gave up on the report (its spawner failed it, say): `local
    // pipe` itself ends the command, the spawner asked nothing.
    drop(rd);
    assert_command_gone(&dir.path);
    chan.send(&ToSpawner::Reap { kill: false }, &[]).unwrap();
    assert!(chan.flush_within(Duration::from_secs(5)).unwrap());
    match chan.recv_blocking::<FromSpawner>(Duration::from_secs(15)).unwrap().0 {
        FromSpawner::Ended(CommandExit::Signal(9)) => {}
        other => panic!("{other:?}"),
    }
    drop(chan);
    wait_spawner(pid);
}

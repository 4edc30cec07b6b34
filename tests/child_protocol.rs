//! A child trusts nothing on its channels: a malformed or unexpected
//! message from master ends it (exit 1, logged), and master restarts it.
//! Here the test plays master for a real `qmgr` process.

mod common;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use mta::ipc::msg::{FromMaster, ToMaster};
use mta::ipc::{self, Channel};
use mta::roles::Role;
use nix::sys::socket::{MsgFlags, send};

struct Qmgr {
    started: common::Started,
    master: Channel,
}

fn start(name: &str) -> (Qmgr, OwnedFd) {
    let dir = std::env::temp_dir().join(format!("mta-child-protocol-{}-{name}", std::process::id()));
    let dirs = common::queue_spool(&dir);
    let (mine, theirs) = ipc::pair().unwrap();
    let mut fds = vec![theirs.as_raw_fd()];
    fds.extend(dirs.iter().map(|d| d.as_raw_fd()));
    let pid = common::spawn(Path::new(env!("CARGO_BIN_EXE_qmgr")), "qmgr", &fds);
    let raw = mine.try_clone().unwrap();
    (Qmgr { started: common::Started { pid, dir }, master: Channel::new(mine) }, raw)
}

fn config(dir: &Path) -> FromMaster {
    common::init(Role::Qmgr, dir, None, Vec::new(), Duration::from_secs(10))
}

/// Wait for the child's exit status (10 s at most).
fn exit_code(q: &Qmgr) -> i32 {
    // (Killed by the guard if it does not exit.)
    q.started.exit_code(Duration::from_secs(10))
}

/// Read messages until Ready (or a fatal log) arrives.
fn until_ready(q: &mut Qmgr) -> Vec<ToMaster> {
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        match q.master.recv::<ToMaster>() {
            Ok(Some((m, _))) => {
                let done = matches!(m, ToMaster::Ready { .. });
                got.push(m);
                if done {
                    break;
                }
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break,
        }
    }
    got
}

fn fatal_logged(q: &mut Qmgr, what: &str) -> bool {
    common::fatal_record(&mut q.master).is_some_and(|text| text.contains(what))
}

#[test]
fn garbage_instead_of_configuration_ends_the_child() {
    let (q, raw) = start("garbage");
    send(raw.as_raw_fd(), b"\x01\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff", MsgFlags::empty()).unwrap();
    assert_eq!(exit_code(&q), 1);
}

#[test]
fn wrong_role_configuration_ends_the_child() {
    let (mut q, _raw) = start("wrongrole");
    let FromMaster::Init(mut c) = config(&q.started.dir) else { unreachable!() };
    c.role = Role::Control;
    q.master.send(&FromMaster::Init(c), &[]).unwrap();
    assert_eq!(exit_code(&q), 1);
}

#[test]
fn malformed_frame_after_start_ends_the_child() {
    let (mut q, raw) = start("malformed");
    let init = config(&q.started.dir);
    q.master.send(&init, &[]).unwrap();
    let got = until_ready(&mut q);
    assert!(matches!(got.last(), Some(ToMaster::Ready { confined: true })), "{got:?}");
    send(raw.as_raw_fd(), &[1, 7, 0, 0, 0, 0, 0, 0], MsgFlags::empty()).unwrap();
    assert!(fatal_logged(&mut q, "malformed"));
    assert_eq!(exit_code(&q), 1);
}

#[test]
fn unexpected_message_ends_the_child() {
    let (mut q, _raw) = start("unexpected");
    let init = config(&q.started.dir);
    q.master.send(&init, &[]).unwrap();
    until_ready(&mut q);
    q.master.send(&FromMaster::Stopping { id: 1 }, &[]).unwrap();
    assert!(fatal_logged(&mut q, "unexpected message"));
    assert_eq!(exit_code(&q), 1);
}

#[test]
fn peer_channel_to_a_forbidden_role_ends_the_child() {
    let (mut q, _raw) = start("forbidden-peer");
    let init = config(&q.started.dir);
    q.master.send(&init, &[]).unwrap();
    until_ready(&mut q);
    let (a, _b) = ipc::pair().unwrap();
    q.master.send(&FromMaster::Peer { role: Role::Qmgr, pid: 1 }, &[a.as_fd()]).unwrap();
    assert_eq!(exit_code(&q), 1);
}

#[test]
fn stop_ends_the_child_cleanly() {
    let (mut q, _raw) = start("stop");
    let init = config(&q.started.dir);
    q.master.send(&init, &[]).unwrap();
    until_ready(&mut q);
    q.master.send(&FromMaster::Stop, &[]).unwrap();
    assert_eq!(exit_code(&q), 0);
}

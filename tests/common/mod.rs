//! What the process tests share: starting a child program as master
//! does (its channel and role descriptors at their numbers) and the
//! configuration master sends it first. Each test file that plays
//! master includes it (`mod common;`).

#![allow(dead_code)]

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mta::config::delivery::DeliveryConf;
use mta::ipc::msg::{ChildConfig, FromMaster};
use mta::roles::Role;
use nix::unistd::Pid;

/// Start `program` (argv[0] `name`) with `fds` at master's descriptor
/// numbers (the channel first), unconfined by the test itself.
pub fn spawn(program: &Path, name: &str, fds: &[RawFd]) -> Pid {
    let spec = sandbox::Spawn {
        program,
        argv: &[name],
        env: &[],
        fds,
        stderr: None,
        credentials: None,
        limits: &[],
        new_session: false,
    };
    Pid::from_raw(sandbox::spawn(&spec).expect("spawn"))
}

/// The Init message master sends a child of `role` whose spool is `spool`
/// (verbose, hostname test.example, no intake material), with `delivery`
/// (the defaults when None) and `socket_dirs`, and a stop_timeout of
/// `stop_timeout`.
pub fn init(
    role: Role,
    spool: &Path,
    delivery: Option<DeliveryConf>,
    socket_dirs: Vec<PathBuf>,
    stop_timeout: Duration,
) -> FromMaster {
    FromMaster::Init(Box::new(ChildConfig {
        role,
        generation: 1,
        session: 0,
        hostname: String::from("test.example"),
        spool: spool.to_path_buf(),
        verbose: true,
        open_files: 0,
        allow_unconfined: false,
        log_line_length: 2048,
        control: mta::config::Control::default(),
        operator: None,
        intake: None,
        delivery: Some(Box::new(delivery.unwrap_or_else(|| mta::config::Config::default().delivery(None)))),
        socket_dirs,
        stop_timeout,
    }))
}

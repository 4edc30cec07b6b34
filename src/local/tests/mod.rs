//! Tests of the mailbox writers and of the repair after a killed
//! delivery, in temporary directories; where /usr/bin/python3 exists,
//! Python's `mailbox` module reads what they wrote, as a mail reader
//! written by others.

mod batch;
mod deliver;
mod forward;
mod maildir;
mod mbox;
mod pipe;
mod pool;
mod repair;
mod resolve;
mod spawner;
mod worker;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

pub use crate::queue::tests::TempDir;

pub const PYTHON: &str = "/usr/bin/python3";

/// Runs `script` with `args` under /usr/bin/python3 and returns its
/// standard output, or None (and says so) when there is no python3.
pub fn python(script: &str, args: &[&OsStr]) -> Option<String> {
    if !Path::new(PYTHON).exists() {
        eprintln!("skipped: no {PYTHON}");
        return None;
    }
    let out = Command::new(PYTHON).arg("-c").arg(script).args(args).output().expect("run python3");
    assert!(out.status.success(), "python3 failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8(out.stdout).expect("python3 output is UTF-8"))
}

/// Content as the queue holds it: lines ended by CR LF.
pub fn crlf(lines: &[&str]) -> Vec<u8> {
    lines.iter().flat_map(|l| l.bytes().chain(*b"\r\n")).collect()
}

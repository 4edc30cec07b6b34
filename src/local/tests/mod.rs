//! Tests of the mailbox writers, in temporary directories; where
//! /usr/bin/python3 exists, Python's `mailbox` module reads what they
//! wrote, as a mail reader written by others.

mod deliver;
mod maildir;
mod mbox;

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("mta-local-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temporary directory");
        TempDir { path }
    }

    pub fn fd(&self) -> OwnedFd {
        open(&self.path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .expect("open directory")
    }

    /// The names in the subdirectory `sub`, sorted.
    pub fn names(&self, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path.join(sub))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

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

//! The fenced fork/exec helper (API fixed; implementation by the sandbox work).
use std::io;
use std::os::fd::RawFd;
use std::path::Path;

/// A resource limit to set in the child before exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    OpenFiles,
    CoreSize,
}

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
}

/// Fork and exec; returns the child's pid. Exec failures in the child are
/// reported back through a CLOEXEC pipe and returned here as the error.
pub fn spawn(_s: &Spawn<'_>) -> io::Result<i32> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Run `f` in a forked child and wait for it. Returns the child's exit
/// code, or 128 + signal number if it was killed. Refuses when the
/// caller has more than one thread.
pub fn fork_wait(_f: impl FnOnce() -> i32) -> io::Result<i32> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

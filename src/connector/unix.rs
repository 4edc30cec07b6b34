//! Connecting to the LMTP servers' UNIX sockets of the transport table.
//! master opens each socket's directory and passes it (as a descriptor
//! the sandbox limits to reaching those sockets: see
//! `sandbox::Grant::SocketDir`); a directory that did not exist then is
//! missing here, and connections to its sockets fail temporarily until
//! master restarts the connector (it does when the directory appears).
//! Only sockets named in the table are reached, whatever smtp asks.
//!
//! The reason for a failure names the socket as Postfix does:
//! `connect to /var/run/dovecot/lmtp: No such file or directory`.
//!
//! Trusts: master for the directories; smtp's requests are checked
//! against the table.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::connect::describe;
use super::resolve::Failure;

/// One socket directory of the table.
#[derive(Debug)]
struct SocketDir {
    path: PathBuf,
    /// None: master could not open it.
    fd: Option<OwnedFd>,
    names: Vec<OsString>,
}

/// The sockets the connector may reach.
#[derive(Debug, Default)]
pub struct UnixSockets {
    dirs: Vec<SocketDir>,
}

impl UnixSockets {
    /// The table's sockets by directory, and the directories master
    /// opened (paths and descriptors, in the same order).
    pub fn new(table: BTreeMap<PathBuf, Vec<OsString>>, opened: Vec<(PathBuf, OwnedFd)>) -> UnixSockets {
        let mut opened: BTreeMap<PathBuf, OwnedFd> = opened.into_iter().collect();
        let dirs = table.into_iter().map(|(path, names)| SocketDir { fd: opened.remove(&path), path, names }).collect();
        UnixSockets { dirs }
    }

    /// Whether `path` is a socket of the table.
    pub fn knows(&self, path: &Path) -> bool {
        self.find(path).is_some()
    }

    fn find(&self, path: &Path) -> Option<(&SocketDir, &OsString)> {
        let (dir, name) = (path.parent()?, path.file_name()?);
        let d = self.dirs.iter().find(|d| d.path == dir)?;
        d.names.iter().find(|n| *n == name).map(|n| (d, n))
    }

    /// A connected stream socket to the table's socket `path`.
    pub fn connect(&self, path: &Path) -> Result<OwnedFd, Failure> {
        let fail = |why: &str| Failure::temporary(format!("connect to {}: {why}", path.display()));
        let Some((dir, name)) = self.find(path) else {
            return Err(fail("not a socket of the transport table"));
        };
        let Some(fd) = &dir.fd else {
            return Err(fail(&format!(
                "its directory {} did not exist when the connector started (it is restarted when it appears)",
                dir.path.display()
            )));
        };
        sandbox::connect_unix(fd.as_fd(), &dir.path, name).map_err(|e| fail(&describe(&e)))
    }
}

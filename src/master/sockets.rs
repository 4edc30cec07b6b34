//! The directories of the transport table's UNIX sockets (LMTP), which
//! master opens for the connector: its sandbox reaches a socket through
//! its directory (Capsicum's connectat(2) on the descriptor, Landlock
//! beneath it, unveil by name within it), so it must exist when the
//! connector starts and must stay the same directory. A directory that
//! is missing then (the LMTP server starts after mta, say) or made again
//! later would leave its sockets unreachable; master looks at the paths
//! every [`CHECK_EVERY`] and restarts the connector when one appears or
//! is replaced.
//!
//! Trusts: the configuration (root's file).

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::qmgr::schedule::TransportMap;

/// How often the directories are looked at while a connector runs.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// What a directory was when the connector started.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    path: PathBuf,
    /// Device and inode (of the descriptor passed, or of the directory
    /// that could not be opened); None when there was no directory.
    id: Option<(u64, u64)>,
}

/// The directories as the running connector has them.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    seen: Vec<Seen>,
}

/// The directories opened for a new connector.
pub struct Opened {
    /// Paths and descriptors, in the order they are passed.
    pub dirs: Vec<(PathBuf, OwnedFd)>,
    /// Those that could not be opened, and why.
    pub missing: Vec<(PathBuf, String)>,
    pub watch: Watch,
}

/// How a directory is opened: for lookups only (O_PATH on Linux, so the
/// connector cannot even list it; elsewhere read-only, and Capsicum
/// limits it to lookup and connectat on FreeBSD).
fn flags() -> OFlag {
    #[cfg(target_os = "linux")]
    let base = OFlag::O_PATH;
    #[cfg(not(target_os = "linux"))]
    let base = OFlag::O_RDONLY;
    base | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// The identity of the directory at `path` now, if there is one.
fn current(path: &std::path::Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().filter(|m| m.is_dir()).map(|m| identity(&m))
}

/// Open the socket directories of `map`.
pub fn open(map: &TransportMap) -> Opened {
    let mut opened = Opened { dirs: Vec::new(), missing: Vec::new(), watch: Watch::default() };
    for dir in map.socket_dirs().into_keys() {
        let result = nix::fcntl::open(dir.as_path(), flags(), Mode::empty()).and_then(|fd| {
            let st = nix::sys::stat::fstat(&fd)?;
            #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
            let id = (st.st_dev as u64, st.st_ino as u64);
            Ok((fd, id))
        });
        let result = result.map_err(|e| e.desc().to_string());
        match result {
            Ok((fd, id)) => {
                opened.watch.seen.push(Seen { path: dir.clone(), id: Some(id) });
                opened.dirs.push((dir, fd));
            }
            Err(why) => {
                // A directory that is there but cannot be opened (its
                // permissions) is not looked for again until it changes.
                opened.watch.seen.push(Seen { path: dir.clone(), id: current(&dir) });
                opened.missing.push((dir, why));
            }
        }
    }
    opened
}

impl Watch {
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// The first directory that is not what the connector has (it
    /// appeared, or was made again), with what happened.
    pub fn changed(&self) -> Option<String> {
        for s in &self.seen {
            match (s.id, current(&s.path)) {
                (None, Some(_)) => return Some(format!("{} now exists", s.path.display())),
                (Some(a), Some(b)) if a != b => return Some(format!("{} was made again", s.path.display())),
                // Gone: nothing to do until it is back.
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(dir: &std::path::Path) -> TransportMap {
        let mut m = TransportMap::default();
        m.insert("example.org", &format!("lmtp:unix:{}/lmtp", dir.display())).expect("entry");
        m
    }

    #[test]
    fn a_directory_that_appears_or_is_made_again_is_a_change() {
        let root = std::env::temp_dir().join(format!("mta-master-sockets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("root");
        let dir = root.join("run");

        // Missing at start: no descriptor, then a change when it appears.
        let opened = open(&map(&dir));
        assert!(opened.dirs.is_empty());
        assert_eq!(opened.missing.len(), 1, "{:?}", opened.missing);
        assert_eq!(opened.watch.changed(), None);
        std::fs::create_dir(&dir).expect("mkdir");
        assert_eq!(opened.watch.changed(), Some(format!("{} now exists", dir.display())));

        // There at start: passed; gone is no change, made again is one.
        let opened = open(&map(&dir));
        assert_eq!(opened.dirs.len(), 1);
        assert_eq!(opened.dirs[0].0, dir);
        assert!(opened.missing.is_empty());
        assert_eq!(opened.watch.changed(), None);
        // Moved away (it keeps its inode): gone, which is no change.
        std::fs::rename(&dir, root.join("old")).expect("rename");
        assert_eq!(opened.watch.changed(), None);
        // A file there is no directory either.
        std::fs::write(&dir, b"not a directory").expect("file");
        assert_eq!(opened.watch.changed(), None);
        std::fs::remove_file(&dir).expect("rm");
        std::fs::create_dir(&dir).expect("mkdir again");
        assert_eq!(opened.watch.changed(), Some(format!("{} was made again", dir.display())));

        assert!(open(&TransportMap::default()).watch.is_empty());
        std::fs::remove_dir_all(&root).expect("clean up");
    }
}

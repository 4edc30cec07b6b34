//! Tests of the queue file format and the intake journal, in temporary
//! directories.

mod file;
mod journal;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use super::{BodyType, Client, Envelope, Notify, Protocol, QueueFile, QueueIdGen, Recipient, Ret, Status, Time};

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("mta-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temporary directory");
        TempDir { path }
    }

    /// Create (if needed) and open the subdirectory `name`.
    pub fn sub(&self, name: &str) -> OwnedFd {
        let p = self.path.join(name);
        std::fs::create_dir_all(&p).expect("create subdirectory");
        open_dir(&p)
    }

    /// The directory itself, opened.
    pub fn fd(&self) -> OwnedFd {
        open_dir(&self.path)
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

pub fn open_dir(p: &Path) -> OwnedFd {
    open(p, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).expect("open directory")
}

/// A message with `nrcpt` recipients and `content` bytes of content.
pub fn sample(ids: &mut QueueIdGen, nrcpt: usize, content: usize) -> QueueFile {
    QueueFile {
        id: ids.next_id(),
        envelope: Envelope {
            sender: "alice@example.org".into(),
            arrival: Time::now(),
            client: Client {
                address: "192.0.2.1".into(),
                hostname: "mail.example.org".into(),
                helo: "mail.example.org".into(),
                protocol: Protocol::Esmtps,
                tls: Some("TLSv1.3 TLS_AES_256_GCM_SHA384".into()),
            },
            body: BodyType::EightBitMime,
            smtputf8: false,
            dsn_ret: Some(Ret::Headers),
            dsn_envid: Some("QQ314159".into()),
            size: content as u64,
        },
        recipients: (0..nrcpt)
            .map(|i| Recipient {
                address: format!("r{i}@example.net"),
                orcpt: Some(format!("rfc822;r{i}@example.net")),
                notify: Some(Notify::On { success: false, failure: true, delay: true }),
                status: Status::default(),
            })
            .collect(),
        content: (0..content).map(|i| b"abcdefghij\r\n"[i % 12]).collect(),
    }
}

//! Lookup tables compiled to cdb: master writes them (with cdb2) before
//! any child starts; sandboxed roles read them from a descriptor with the
//! small bounded reader in `cdb`, since they can open no path.
//!
//! Trusts: master's tables are master's; the reader still checks every
//! offset against the data it holds.

pub mod cdb;

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::Path;

/// The system's users, from the passwd file (`name:pw:uid:...` lines).
pub fn system_users(passwd: &str) -> Vec<String> {
    passwd
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('+') && !l.starts_with('-'))
        .filter_map(|l| l.split(':').next())
        .filter(|n| !n.is_empty() && n.len() <= 64 && !n.contains(char::is_whitespace))
        .map(str::to_lowercase)
        .collect()
}

/// Write the local-recipient table at `path` (atomically: written beside
/// it and renamed) with `names` (the system's users and the alias
/// names), and return it opened read-only.
pub fn write_local_recipients(path: &Path, names: &BTreeSet<String>) -> io::Result<File> {
    let mut w = cdb2::CDBWriter::create(path)?;
    for name in names {
        w.add(name.as_bytes(), b"")?;
    }
    w.finish()?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    File::open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_from_passwd() {
        let p = "root:x:0:0:root:/root:/bin/sh\n# comment\nDaemon:*:1:1::/:/sbin/nologin\n+nis\n\nbad user:x:3:3\n";
        assert_eq!(system_users(p), ["root", "daemon"]);
    }

    #[test]
    fn build_and_read_back() {
        let dir = std::env::temp_dir().join(format!("mta-table-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let passwd = "root:x:0:0::/:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        let more = [String::from("postmaster"), String::from("staff"), String::from("root")];
        let names = system_users(passwd).into_iter().chain(more).collect();
        let f = write_local_recipients(&dir.join("local.cdb"), &names).unwrap();
        let t = cdb::Table::read(&f, 1 << 20).unwrap();
        assert!(t.contains(b"alice"));
        assert!(t.contains(b"root"));
        assert!(t.contains(b"staff"));
        assert!(t.contains(b"postmaster"));
        assert!(!t.contains(b"bob"));
        // A user who is also an alias is one record.
        assert_eq!(t.records().filter(|r| r.as_ref().is_ok_and(|(k, _)| *k == b"root")).count(), 1);
        assert_eq!(t.records().count(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

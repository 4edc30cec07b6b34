//! What master prepares for mail intake: the SMTP listening sockets
//! (bound as root, so privileged ports work), the local-recipient table
//! (the system's users and the names of the compiled aliases), the TLS
//! certificate and key, the relay's password (root-only files) and the
//! SMTP client's CA file, all before any child starts, and again (but for
//! the sockets) on reload. The local-recipient table is also built again
//! when what it is made from changes ([`Material::look`]): `newaliases`
//! and `useradd` need no reload.
//!
//! Trusts: the configuration; the files it names are read with bounds, and
//! the aliases database is checked whole before its names are used.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Master;
use crate::aliases::{self, Stamp};
use crate::config::Config;
use crate::config::smtp::ListenTls;
use crate::ipc::msg::{DirectoryLookup, Intake};
use crate::roles::Role;
use crate::table::cdb::Table;

/// Largest certificate or key file read.
const MAX_PEM: u64 = 1 << 20;

/// The password file the system's users are read from, and the one
/// watched for new users: the V7 form (`name:*:uid:...`), which every
/// system mta runs on keeps up to date as it adds users.
/// - Linux: shadow-utils' `useradd` (and Debian's `adduser` through it)
///   and `vipw` write a new `/etc/passwd` and rename it into place.
/// - FreeBSD and OpenBSD: `pw useradd`, `adduser`, `useradd`, `vipw` and
///   `chpass` edit `/etc/master.passwd` and run `pwd_mkdb -p`, which
///   writes `/etc/passwd` afresh (every entry, also with `-u user`) and
///   renames it into place after `pwd.db` and `spwd.db` and before
///   `master.passwd`; a password change alone (`passwd`, OpenBSD's
///   `pwd_mkdb -s`) leaves it, and the names, as they were. `pwd.db`
///   (what getpwnam(3) reads) may hold a user a moment before this file
///   does, never after; a look at `/etc/passwd` therefore sees every
///   user that `adduser` made.
///
/// Master reads it as root, the one password file that holds no
/// passwords on any of them.
pub const PASSWD: &str = "/etc/passwd";

/// How long a change to what the table is made from may keep changing
/// before the table is built all the same (see [`Material::look`]).
pub const SETTLE_MAX: Duration = Duration::from_secs(10);

/// Files master read for the intake roles.
pub struct Material {
    /// The compiled local-recipient table, open read-only.
    pub recipients: File,
    pub certificate: Option<Vec<u8>>,
    pub key: Option<Vec<u8>>,
    /// The relay's AUTH credentials from `relay.password_file` (smtp's).
    pub credentials: Option<(String, String)>,
    /// The certificates of `smtp.tls_ca_file`, DER (smtp's).
    pub tls_ca: Vec<Vec<u8>>,
    /// This host's addresses, its interfaces' as they were at the load
    /// (address literals of them are local domains: smtpd's and qmgr's).
    pub own_addresses: Vec<std::net::IpAddr>,
    /// For the log: what was odd but did not stop the load (an aliases
    /// database missing or older than its source).
    pub warnings: Vec<String>,
    /// What the table holds: smtpd is replaced only when this changes.
    pub local: Recipients,
    /// What the table was built from, as it was before it was read (see
    /// [`Material::look`]).
    sources: Sources,
    /// A change seen at the last look but not acted on yet: what the
    /// files were then, and when the change was first seen.
    pending: Option<(Sources, Instant)>,
    /// The names of the directory users last listed (see
    /// `master::directory`), part of every build of the table; None
    /// before the first listing ends (the table is then incomplete).
    directory: Option<BTreeSet<String>>,
    /// The password file ([`PASSWD`]; another in tests).
    passwd: PathBuf,
}

/// What the local-recipient table says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipients {
    /// The system's users and the alias names, lower case.
    pub names: BTreeSet<String>,
    /// The names may lack some: the aliases file exists but has no
    /// database, or the directory users were never listed yet (see
    /// `master::directory`); smtpd answers 451 4.3.0 for the others.
    pub incomplete: bool,
}

/// What the local-recipient table is made from, as one stat(2) of each
/// file shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sources {
    /// The compiled aliases.
    aliases_db: Stamp,
    /// Whether the aliases file is there, looked at only while its
    /// database is not (then it decides [`Recipients::incomplete`]).
    aliases_file: bool,
    /// The password file.
    passwd: Stamp,
}

impl Sources {
    fn now(aliases: &Path, passwd: &Path) -> Sources {
        let aliases_db = Stamp::of(&aliases::db_path(aliases));
        let aliases_file = aliases_db == Stamp::Missing && aliases::source_present(aliases);
        Sources { aliases_db, aliases_file, passwd: Stamp::of(passwd) }
    }

    /// What changed from `before`, for the log: `aliases database
    /// /etc/aliases.cdb`, `password file /etc/passwd`, or both.
    fn changed(&self, before: &Sources, aliases: &Path, passwd: &Path) -> String {
        let mut what = Vec::new();
        if self.aliases_db != before.aliases_db {
            what.push(format!("aliases database {}", aliases::db_path(aliases).display()));
        } else if self.aliases_file != before.aliases_file {
            what.push(format!("aliases file {}", aliases.display()));
        }
        if self.passwd != before.passwd {
            what.push(format!("password file {}", passwd.display()));
        }
        what.join(" and ")
    }
}

/// What a look at the table's sources found (see [`Material::look`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Look {
    /// The table was written again and holds other names: smtpd must be
    /// replaced. With what changed, for the log.
    Rebuilt(String),
    /// Something changed (named), but the names are the same: the table
    /// and smtpd stay.
    Same(String),
    /// The table could not be built (a damaged aliases database, an
    /// unreadable password file): it is kept as it was, and the files are
    /// not read again until they change once more.
    Failed(String),
}

fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut data = Vec::new();
    f.take(MAX_PEM + 1).read_to_end(&mut data).map_err(|e| format!("{}: {e}", path.display()))?;
    if data.len() as u64 > MAX_PEM {
        return Err(format!("{}: larger than {MAX_PEM} bytes", path.display()));
    }
    Ok(data)
}

/// The files of [`Material`] but the local-recipient table.
struct Files {
    certificate: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    credentials: Option<(String, String)>,
    tls_ca: Vec<Vec<u8>>,
}

/// Read and check the TLS certificate and key (and that they go
/// together), the relay's password file and the SMTP client's CA file.
fn read_files(config: &Config) -> Result<Files, String> {
    let pem = |key: &str, path: &Path| read_pem(path).map_err(|e| format!("key `{key}`: {e}"));
    let certificate = config.tls.certificate.as_deref().map(|p| pem("tls.certificate", p)).transpose()?;
    let key = config.tls.key.as_deref().map(|p| pem("tls.key", p)).transpose()?;
    if let (Some(c), Some(k)) = (&certificate, &key) {
        crate::smtpd::tls::server_config(c, k).map_err(|e| format!("key `tls`: {e}"))?;
    }
    let credentials =
        config.relay.password_file.as_deref().map(crate::config::delivery::read_password_file).transpose()?;
    let tls_ca = match &config.smtp.tls_ca_file {
        Some(p) => crate::config::client_tls::read_ca_file(p).map_err(|e| format!("key `smtp.tls_ca_file`: {e}"))?,
        None => Vec::new(),
    };
    Ok(Files { certificate, key, credentials, tls_ca })
}

/// What [`Material::load`] checks, writing nothing (the local-recipient
/// table is not made): for `mta -n`. Returns the warnings loading would
/// log.
pub fn check(config: &Config) -> Result<Vec<String>, String> {
    let aliases = alias_names(&config.aliases)?;
    read_files(config)?;
    Ok(aliases.warnings)
}

impl Material {
    /// Read everything; the table holds the system's users, the
    /// `directory` users (as last listed; None: not listed yet, and the
    /// table is incomplete; none at all with `local.directory_users`
    /// off) and the alias names.
    pub fn load(config: &Config, directory: Option<&BTreeSet<String>>) -> Result<Material, String> {
        Material::load_with(config, Path::new(PASSWD), directory)
    }

    /// [`Material::load`] with the system's users from `passwd`.
    pub fn load_with(config: &Config, passwd: &Path, directory: Option<&BTreeSet<String>>) -> Result<Material, String> {
        let none = BTreeSet::new();
        let directory = if config.local.directory_users { directory } else { Some(&none) };
        let read = read_recipients(config, passwd, directory)?;
        let recipients = write_table(config, &read.local)?;
        let Files { certificate, key, credentials, tls_ca } = read_files(config)?;
        Ok(Material {
            recipients,
            certificate,
            key,
            credentials,
            tls_ca,
            own_addresses: crate::connector::own::interfaces(),
            warnings: read.warnings,
            local: read.local,
            sources: read.sources,
            pending: None,
            directory: directory.cloned(),
            passwd: passwd.to_path_buf(),
        })
    }

    /// The directory users as a new listing found them (or none, with
    /// `local.directory_users` off): the table is built again with them
    /// (the files as they are now), and is no longer incomplete for
    /// want of them.
    pub fn set_directory(&mut self, config: &Config, names: BTreeSet<String>) -> Look {
        let what = String::from("the directory users");
        let read = match read_recipients(config, &self.passwd, Some(&names)) {
            Ok(r) => r,
            Err(e) => return Look::Failed(e),
        };
        self.directory = Some(names);
        self.pending = None;
        self.take_found(config, read, what)
    }

    /// Take what [`read_recipients`] found: the table is written again
    /// when the names (or the flag) differ from those it holds.
    fn take_found(&mut self, config: &Config, read: Found, what: String) -> Look {
        self.warnings.extend(read.warnings);
        self.sources = read.sources;
        if read.local == self.local {
            return Look::Same(what);
        }
        match write_table(config, &read.local) {
            Ok(file) => {
                self.recipients = file;
                self.local = read.local;
                Look::Rebuilt(what)
            }
            Err(e) => Look::Failed(e),
        }
    }

    /// The directory users the table holds; None before the first
    /// listing.
    pub fn directory(&self) -> Option<&BTreeSet<String>> {
        self.directory.as_ref()
    }

    /// Look at what the local-recipient table is made from (the
    /// compiled aliases, the aliases file while it has no database, the
    /// password file: a stat of each), as master does every two seconds,
    /// and build the table again when it changed (`newaliases`,
    /// `useradd`) for the smtpd processes started from now on.
    ///
    /// A change is acted on once a look finds the files as the look
    /// before did, so that a burst of changes (a script adding users,
    /// `adduser` writing the file twice) builds the table once, after
    /// it; one that keeps changing is acted on [`SETTLE_MAX`] after it
    /// was first seen all the same. None: nothing to do (yet).
    pub fn look(&mut self, config: &Config, now: Instant) -> Option<Look> {
        let current = Sources::now(&config.aliases, &self.passwd);
        if current == self.sources {
            self.pending = None;
            return None;
        }
        match self.pending {
            Some((seen, since)) if seen != current && now < since + SETTLE_MAX => {
                self.pending = Some((current, since));
                return None;
            }
            Some(_) => {}
            None => {
                self.pending = Some((current, now));
                return None;
            }
        }
        self.pending = None;
        let what = current.changed(&self.sources, &config.aliases, &self.passwd);
        let read = match read_recipients(config, &self.passwd, self.directory.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                self.sources = current;
                return Some(Look::Failed(e));
            }
        };
        Some(self.take_found(config, read, what))
    }
}

/// What [`read_recipients`] found.
struct Found {
    local: Recipients,
    /// What the files were before they were read: one replaced while it
    /// is read is a change the next look sees.
    sources: Sources,
    warnings: Vec<String>,
}

/// The local recipients: the system's users (from `passwd`), the
/// directory users last listed (None: not listed yet), and the names of
/// the compiled aliases.
fn read_recipients(config: &Config, passwd: &Path, directory: Option<&BTreeSet<String>>) -> Result<Found, String> {
    let sources = Sources::now(&config.aliases, passwd);
    let aliases = alias_names(&config.aliases)?;
    let text = std::fs::read_to_string(passwd).map_err(|e| format!("{}: {e}", passwd.display()))?;
    let names = crate::table::system_users(&text)
        .into_iter()
        .chain(directory.into_iter().flatten().cloned())
        .chain(aliases.names)
        .collect();
    let local = Recipients { names, incomplete: aliases.uncompiled || directory.is_none() };
    Ok(Found { local, sources, warnings: aliases.warnings })
}

/// Write the local-recipient table `SPOOL/local-recipients.cdb` afresh
/// and open it.
fn write_table(config: &Config, local: &Recipients) -> Result<File, String> {
    let table = config.spool.join("local-recipients.cdb");
    crate::table::write_local_recipients(&table, &local.names).map_err(|e| format!("building {}: {e}", table.display()))
}

/// The alias names of an aliases file, from its database.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AliasNames {
    /// Local recipients.
    pub names: Vec<String>,
    /// The file exists but the database does not: the names are unknown.
    pub uncompiled: bool,
    /// For the log: the database is missing while the file exists, or is
    /// older than the file (it is used all the same).
    pub warnings: Vec<String>,
}

/// The names of the compiled aliases of `source` (its `.cdb`), which are
/// local recipients. A damaged database is an error: smtpd would refuse
/// mail for its names for good.
pub fn alias_names(source: &Path) -> Result<AliasNames, String> {
    let db = aliases::db_path(source);
    let file = match File::open(&db) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !aliases::source_present(source) {
                return Ok(AliasNames::default());
            }
            let warning = format!(
                "aliases database {} does not exist: run newaliases to compile {}; until then local defers all \
                 mail and smtpd answers 451 4.3.0 for local names that are no user",
                db.display(),
                source.display()
            );
            return Ok(AliasNames { names: Vec::new(), uncompiled: true, warnings: vec![warning] });
        }
        Err(e) => return Err(format!("{}: {e}", db.display())),
    };
    let table = Table::read(&file, aliases::MAX_DB_SIZE).map_err(|e| format!("{}: {e}", db.display()))?;
    let names = aliases::names(&table).map_err(|e| format!("{}: {e}", db.display()))?;
    let mut warnings = Vec::new();
    if aliases::stale(source, &db) {
        warnings.push(format!("aliases database is older than {}: run newaliases", source.display()));
    }
    Ok(AliasNames { names, uncompiled: false, warnings })
}

/// Bind every configured listener.
pub fn bind(config: &Config) -> Result<Vec<(String, ListenTls, TcpListener)>, String> {
    let mut out = Vec::new();
    for (name, l) in &config.listen {
        let sock = listen_tcp(l.address).map_err(|e| format!("listen {name}: {}: {e}", l.address))?;
        sock.set_nonblocking(true).map_err(|e| format!("listen {name}: {e}"))?;
        out.push((name.clone(), l.tls, sock));
    }
    Ok(out)
}

/// A listening TCP socket with the kernel's largest backlog, so a burst of
/// connections waits in the queue instead of being dropped, and
/// TCP_NODELAY, which the connections accepted inherit.
fn listen_tcp(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket, sockopt,
    };
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    // Passed on to every connection accepted (smtpd checks the first).
    setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::MAXCONN)?;
    Ok(TcpListener::from(fd))
}

impl Master {
    /// The intake settings for `role`; only smtpd gets the TLS key.
    pub(super) fn intake_for(&self, role: Role) -> Intake {
        let c = &self.config;
        let smtpd = role == Role::Smtpd;
        Intake {
            listeners: self.smtp_listeners.iter().map(|(n, t, _)| (n.clone(), *t)).collect(),
            tls_certificate: if smtpd { self.intake.certificate.clone() } else { None },
            tls_key: if smtpd { self.intake.key.clone() } else { None },
            domains: c.local_domains(),
            networks: c.networks.clone(),
            limits: c.limits.clone(),
            smtpd: c.smtpd.clone(),
            cleanup: c.cleanup.clone(),
            min_free_space: c.queue.min_free_space,
            memory_messages: c.queue.memory_messages,
            memory_message_size: c.queue.memory_message_size,
            recipient_delimiter: c.local.recipient_delimiter.clone(),
            recipient_check: c.local.recipient_check,
            directory_lookup: (smtpd && c.local.looks_up_users()).then_some(DirectoryLookup {
                timeout: c.local.directory_lookup_timeout,
                cache: c.local.directory_lookup_cache,
                cache_names: c.local.directory_lookup_cache_names,
                backlog: c.local.directory_lookup_backlog,
            }),
            incomplete: smtpd && self.intake.local.incomplete,
            own_addresses: self.intake.own_addresses.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mta-intake-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A spool, an aliases file path and a password file in `d`.
    fn setup(d: &Path) -> (Config, PathBuf) {
        let config = Config { spool: d.to_path_buf(), aliases: d.join("aliases"), ..Default::default() };
        let passwd = d.join("passwd");
        replace(&passwd, "root:x:0:0::/root:/bin/sh\n");
        (config, passwd)
    }

    /// Write `path` anew and rename it into place, as useradd, pwd_mkdb
    /// and newaliases do.
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn newaliases(config: &Config, text: &str) {
        std::fs::write(&config.aliases, text).unwrap();
        aliases::compile(&config.aliases, &aliases::db_path(&config.aliases)).unwrap();
    }

    /// Which of `of` the table master wrote holds.
    fn holds(m: &Material, of: &[&str]) -> Vec<String> {
        let t = Table::read(&m.recipients, 1 << 24).unwrap();
        of.iter().filter(|n| t.contains(n.as_bytes())).map(|n| n.to_string()).collect()
    }

    /// Two looks, a check interval apart: the first sees a change, the
    /// second acts on it.
    fn settle(m: &mut Material, config: &Config, now: &mut Instant) -> Option<Look> {
        assert_eq!(m.look(config, *now), None, "a change is acted on once it has settled");
        *now += Duration::from_secs(2);
        m.look(config, *now)
    }

    #[test]
    fn no_aliases_file_no_names_no_warning() {
        let d = dir("none");
        assert_eq!(alias_names(&d.join("aliases")).unwrap(), AliasNames::default());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn check_refuses_what_load_refuses_and_writes_nothing() {
        use crate::smtp::agent::tests::certs;
        use std::os::unix::fs::PermissionsExt;
        let d = dir("check");
        let mut config = Config { spool: d.join("spool"), aliases: d.join("aliases"), ..Default::default() };
        std::fs::create_dir(&config.spool).unwrap();
        let table = config.spool.join("local-recipients.cdb");
        assert_eq!(check(&config).unwrap(), Vec::<String>::new());
        // A certificate with another's key.
        std::fs::write(d.join("cert.pem"), certs::GOOD).unwrap();
        std::fs::write(d.join("key.pem"), certs::WRONG_KEY).unwrap();
        config.tls.certificate = Some(d.join("cert.pem"));
        config.tls.key = Some(d.join("missing.pem"));
        let e = check(&config).unwrap_err();
        assert!(e.starts_with("key `tls.key`: ") && e.contains("missing.pem"), "{e}");
        config.tls.key = Some(d.join("key.pem"));
        let e = check(&config).unwrap_err();
        assert!(e.starts_with("key `tls`: "), "{e}");
        assert!(!table.exists(), "check wrote the local-recipient table");
        assert_eq!(check(&config).unwrap_err(), Material::load(&config, Some(&BTreeSet::new())).err().unwrap());
        // load writes the table before it reads the files.
        std::fs::remove_file(&table).unwrap();
        std::fs::write(d.join("key.pem"), certs::GOOD_KEY).unwrap();
        check(&config).unwrap();
        // A password file others may read.
        let secret = d.join("secret");
        std::fs::write(&secret, "user:pass\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        config.relay.password_file = Some(secret.clone());
        let e = check(&config).unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        check(&config).unwrap();
        // A damaged aliases database; a stale one is a warning.
        std::fs::write(aliases::db_path(&config.aliases), b"not a cdb").unwrap();
        assert!(check(&config).unwrap_err().contains("aliases.cdb"));
        std::fs::write(&config.aliases, "staff: root\n").unwrap();
        let w = check(&config).unwrap_err();
        assert!(w.contains("aliases.cdb"), "{w}");
        std::fs::remove_file(aliases::db_path(&config.aliases)).unwrap();
        let w = check(&config).unwrap();
        assert!(w.len() == 1 && w[0].contains("run newaliases"), "{w:?}");
        // The CA file.
        config.smtp.tls_ca_file = Some(d.join("nosuch-ca.pem"));
        assert!(check(&config).unwrap_err().starts_with("key `smtp.tls_ca_file`: "));
        assert!(!table.exists(), "check wrote the local-recipient table");
        config.smtp.tls_ca_file = None;
        Material::load(&config, Some(&BTreeSet::new())).unwrap();
        assert!(table.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn aliases_never_compiled_are_unknown_with_a_warning() {
        let d = dir("uncompiled");
        let source = d.join("aliases");
        std::fs::write(&source, "staff: alice\n").unwrap();
        let found = alias_names(&source).unwrap();
        assert!(found.names.is_empty());
        assert!(found.uncompiled);
        assert_eq!(
            found.warnings,
            [format!(
                "aliases database {}.cdb does not exist: run newaliases to compile {}; until then local defers all \
                 mail and smtpd answers 451 4.3.0 for local names that are no user",
                source.display(),
                source.display()
            )]
        );
        // smtpd is told.
        let (config, passwd) = setup(&d);
        let m = Material::load_with(&config, &passwd, Some(&BTreeSet::new())).unwrap();
        assert!(m.local.incomplete);
        assert_eq!(holds(&m, &["root", "staff"]), ["root"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn compiled_aliases_are_local_recipients() {
        let d = dir("compiled");
        let source = d.join("aliases");
        std::fs::write(&source, "Staff: alice, bob\npostmaster: root\n").unwrap();
        aliases::compile(&source, &aliases::db_path(&source)).unwrap();
        let found = alias_names(&source).unwrap();
        assert_eq!(found, AliasNames { names: vec!["postmaster".into(), "staff".into()], ..Default::default() });
        // The database alone is enough: the source may be gone.
        std::fs::remove_file(&source).unwrap();
        assert_eq!(alias_names(&source).unwrap(), found);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_database_is_used_with_a_warning() {
        let d = dir("stale");
        let source = d.join("aliases");
        std::fs::write(&source, "staff: alice\n").unwrap();
        aliases::compile(&source, &aliases::db_path(&source)).unwrap();
        std::fs::write(&source, "staff: alice\nnewlist: bob\n").unwrap();
        let later = SystemTime::now() + Duration::from_secs(60);
        std::fs::File::options().write(true).open(&source).unwrap().set_modified(later).unwrap();
        let found = alias_names(&source).unwrap();
        assert_eq!(found.names, ["staff"]);
        assert!(!found.uncompiled);
        assert_eq!(found.warnings, [format!("aliases database is older than {}: run newaliases", source.display())]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn newaliases_is_noticed_and_the_table_built_again() {
        let d = dir("rebuild");
        let (config, passwd) = setup(&d);
        let db = aliases::db_path(&config.aliases);
        let changed = format!("aliases database {}", db.display());
        let of = ["staff", "helpdesk", "root"];
        newaliases(&config, "staff: root\n");
        let mut m = Material::load_with(&config, &passwd, Some(&BTreeSet::new())).unwrap();
        let mut now = Instant::now();
        assert_eq!(m.look(&config, now), None, "nothing changed");
        assert_eq!(holds(&m, &of), ["staff", "root"]);
        newaliases(&config, "staff: root\nhelpdesk: root\n");
        assert_eq!(settle(&mut m, &config, &mut now), Some(Look::Rebuilt(changed.clone())));
        assert_eq!(holds(&m, &of), ["staff", "helpdesk", "root"]);
        now += Duration::from_secs(2);
        assert_eq!(m.look(&config, now), None, "acted on once");
        // Other targets, the same names: smtpd need not be replaced.
        newaliases(&config, "staff: root, bob\nhelpdesk: root\n");
        assert_eq!(settle(&mut m, &config, &mut now), Some(Look::Same(changed.clone())));
        // Damaged: an error naming the file, the table kept, and no
        // second error until it changes again.
        std::fs::write(&db, b"not a cdb").unwrap();
        let Some(Look::Failed(e)) = settle(&mut m, &config, &mut now) else { panic!("not refused") };
        assert!(e.contains(&db.display().to_string()), "{e}");
        now += Duration::from_secs(2);
        assert_eq!(m.look(&config, now), None);
        assert_eq!(holds(&m, &of), ["staff", "helpdesk", "root"]);
        // Removed, the aliases file still there: no aliases, and smtpd
        // told that they are unknown rather than absent.
        std::fs::remove_file(&db).unwrap();
        assert_eq!(settle(&mut m, &config, &mut now), Some(Look::Rebuilt(changed.clone())));
        assert_eq!(holds(&m, &of), ["root"]);
        assert!(m.local.incomplete);
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
        assert!(m.warnings[0].contains("run newaliases"), "{:?}", m.warnings);
        // The aliases file removed as well: no aliases at all.
        std::fs::remove_file(&config.aliases).unwrap();
        let file = format!("aliases file {}", config.aliases.display());
        assert_eq!(settle(&mut m, &config, &mut now), Some(Look::Rebuilt(file)));
        assert!(!m.local.incomplete);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_new_user_is_noticed_without_a_reload() {
        let d = dir("useradd");
        let (config, passwd) = setup(&d);
        let changed = format!("password file {}", passwd.display());
        let mut m = Material::load_with(&config, &passwd, Some(&BTreeSet::new())).unwrap();
        let mut now = Instant::now();
        assert_eq!(holds(&m, &["root", "alice"]), ["root"]);
        replace(&passwd, "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n");
        assert_eq!(settle(&mut m, &config, &mut now), Some(Look::Rebuilt(changed.clone())));
        assert_eq!(holds(&m, &["root", "alice"]), ["root", "alice"]);
        // chfn, chsh: the same names.
        replace(&passwd, "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/zsh\n");
        assert_eq!(settle(&mut m, &config, &mut now), Some(Look::Same(changed.clone())));
        // Both files at once.
        newaliases(&config, "staff: alice\n");
        replace(&passwd, "root:x:0:0::/root:/bin/sh\n");
        let both = format!("aliases database {} and {changed}", aliases::db_path(&config.aliases).display());
        assert_eq!(settle(&mut m, &config, &mut now), Some(Look::Rebuilt(both)));
        assert_eq!(holds(&m, &["root", "alice", "staff"]), ["root", "staff"]);
        // An unreadable password file: the table is kept.
        std::fs::remove_file(&passwd).unwrap();
        let Some(Look::Failed(e)) = settle(&mut m, &config, &mut now) else { panic!("not refused") };
        assert!(e.starts_with(&passwd.display().to_string()), "{e}");
        assert_eq!(holds(&m, &["root", "staff"]), ["root", "staff"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn directory_users_join_the_table_and_stay_across_file_changes() {
        let d = dir("directory");
        let (config, passwd) = setup(&d);
        // Not listed yet: the table is incomplete (smtpd answers 451).
        let mut m = Material::load_with(&config, &passwd, None).unwrap();
        assert!(holds(&m, &["ldapuser"]).is_empty());
        assert!(m.local.incomplete);
        let listed: BTreeSet<String> = ["ldapuser", "root"].iter().map(|s| s.to_string()).collect();
        assert_eq!(m.set_directory(&config, listed.clone()), Look::Rebuilt(String::from("the directory users")));
        assert_eq!(holds(&m, &["ldapuser", "root"]), ["ldapuser", "root"]);
        assert!(!m.local.incomplete);
        assert_eq!(m.directory(), Some(&listed));
        // The same list again: nothing to send.
        assert_eq!(m.set_directory(&config, listed.clone()), Look::Same(String::from("the directory users")));
        // A change to /etc/passwd builds the table with them still.
        let mut now = Instant::now();
        replace(&passwd, "root:x:0:0::/root:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\n");
        let Some(Look::Rebuilt(_)) = settle(&mut m, &config, &mut now) else { panic!("not built") };
        assert_eq!(holds(&m, &["ldapuser", "bob"]), ["ldapuser", "bob"]);
        // A load (a reload) with the last list keeps them; without, not.
        let again = Material::load_with(&config, &passwd, Some(&listed)).unwrap();
        assert_eq!(holds(&again, &["ldapuser"]), ["ldapuser"]);
        let fresh = Material::load_with(&config, &passwd, Some(&BTreeSet::new())).unwrap();
        assert!(holds(&fresh, &["ldapuser"]).is_empty());
        // A user who left the directory leaves the table.
        assert_eq!(m.set_directory(&config, BTreeSet::new()), Look::Rebuilt(String::from("the directory users")));
        assert!(holds(&m, &["ldapuser"]).is_empty());
        // With local.directory_users off, no listing is awaited: the
        // table is complete without one, and holds no names given.
        let mut off = config.clone();
        off.local.directory_users = false;
        let m = Material::load_with(&off, &passwd, None).unwrap();
        assert!(!m.local.incomplete);
        let m = Material::load_with(&off, &passwd, Some(&listed)).unwrap();
        assert!(holds(&m, &["ldapuser"]).is_empty());
        assert!(!m.local.incomplete);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_burst_of_changes_builds_the_table_once_after_it() {
        let d = dir("burst");
        let (config, passwd) = setup(&d);
        let mut m = Material::load_with(&config, &passwd, Some(&BTreeSet::new())).unwrap();
        let start = Instant::now();
        let mut text = String::from("root:x:0:0::/root:/bin/sh\n");
        // A script adds a user between every two looks: nothing is built
        // while it runs...
        for (i, user) in ["u1", "u2", "u3"].into_iter().enumerate() {
            text.push_str(&format!("{user}:x:{}:100::/:/bin/sh\n", 1001 + i));
            replace(&passwd, &text);
            assert_eq!(m.look(&config, start + Duration::from_secs(2 * i as u64)), None, "{user}");
        }
        // ...and once, with all of them, when it is done.
        let Some(Look::Rebuilt(_)) = m.look(&config, start + Duration::from_secs(6)) else { panic!("not built") };
        assert_eq!(holds(&m, &["u1", "u2", "u3"]), ["u1", "u2", "u3"]);
        assert_eq!(m.look(&config, start + Duration::from_secs(8)), None);
        // One that never stops is acted on after SETTLE_MAX all the same.
        let since = start + Duration::from_secs(10);
        let mut at = since;
        let mut built = None;
        for i in 0..10u64 {
            text.push_str(&format!("v{i}:x:{}:100::/:/bin/sh\n", 2000 + i));
            replace(&passwd, &text);
            if let Some(look) = m.look(&config, at) {
                built = Some((look, at));
                break;
            }
            at += Duration::from_secs(2);
        }
        let Some((Look::Rebuilt(_), when)) = built else { panic!("never built: {built:?}") };
        assert_eq!(when, since + SETTLE_MAX);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damaged_database_refused() {
        let d = dir("damaged");
        let source = d.join("aliases");
        std::fs::write(aliases::db_path(&source), b"not a cdb").unwrap();
        let e = alias_names(&source).unwrap_err();
        assert!(e.contains("aliases.cdb"), "{e}");
        // A cdb whose value is not a target list.
        let mut w = cdb2::CDBWriter::create(aliases::db_path(&source)).unwrap();
        w.add(b"staff", b"x").unwrap();
        w.finish().unwrap();
        let e = alias_names(&source).unwrap_err();
        assert!(e.contains("staff") && e.contains("newaliases"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

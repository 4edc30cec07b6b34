//! What master prepares for mail intake: the SMTP listening sockets
//! (bound as root, so privileged ports work), the local-recipient table
//! (the system's users and the names of the compiled aliases), the TLS
//! certificate and key, the relay's password (root-only files) and the
//! SMTP client's CA file, all before any child starts, and again (but for
//! the sockets) on reload. The local-recipient table is also built again
//! when the compiled aliases change ([`Material::aliases_changed`]), so
//! that `newaliases` needs no reload.
//!
//! Trusts: the configuration; the files it names are read with bounds, and
//! the aliases database is checked whole before its names are used.

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;

use super::Master;
use crate::aliases;
use crate::config::Config;
use crate::config::smtp::ListenTls;
use crate::ipc::msg::Intake;
use crate::roles::Role;
use crate::table::cdb::Table;

/// Largest certificate or key file read.
const MAX_PEM: u64 = 1 << 20;
/// Where the passwd file is.
const PASSWD: &str = "/etc/passwd";

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
    /// For the log: what was odd but did not stop the load (an aliases
    /// database missing or older than its source).
    pub warnings: Vec<String>,
    /// The compiled aliases file the table was built from, as it was
    /// before it was read (see [`Material::aliases_changed`]).
    pub aliases_stamp: aliases::Stamp,
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
    let (_, warnings) = alias_names(&config.aliases)?;
    read_files(config)?;
    Ok(warnings)
}

impl Material {
    pub fn load(config: &Config) -> Result<Material, String> {
        let (recipients, aliases_stamp, warnings) = recipient_table(config)?;
        let Files { certificate, key, credentials, tls_ca } = read_files(config)?;
        Ok(Material { recipients, certificate, key, credentials, tls_ca, warnings, aliases_stamp })
    }

    /// Whether the compiled aliases file is not the one the table was
    /// built from: `newaliases` ran since (or it was removed, or made).
    pub fn aliases_changed(&self, config: &Config) -> bool {
        aliases::Stamp::of(&aliases::db_path(&config.aliases)) != self.aliases_stamp
    }

    /// Build the local-recipient table again, from the compiled aliases
    /// as they are now (for smtpd processes started from now on). When
    /// the database cannot be used, the table is kept as it was and the
    /// error returned; either way the database is not looked at again
    /// until it changes once more.
    pub fn rebuild_recipients(&mut self, config: &Config) -> Result<(), String> {
        match recipient_table(config) {
            Ok((recipients, stamp, warnings)) => {
                self.recipients = recipients;
                self.aliases_stamp = stamp;
                self.warnings.extend(warnings);
                Ok(())
            }
            Err(e) => {
                self.aliases_stamp = aliases::Stamp::of(&aliases::db_path(&config.aliases));
                Err(e)
            }
        }
    }
}

/// The local-recipient table `SPOOL/local-recipients.cdb`, written afresh
/// from the system's users and the compiled aliases and opened; what the
/// aliases database was before it was read; warnings for the log.
fn recipient_table(config: &Config) -> Result<(File, aliases::Stamp, Vec<String>), String> {
    // Taken first: a database replaced while it is read is a change
    // the next look sees.
    let stamp = aliases::Stamp::of(&aliases::db_path(&config.aliases));
    let (aliases, warnings) = alias_names(&config.aliases)?;
    let table = config.spool.join("local-recipients.cdb");
    let recipients = crate::table::build_local_recipients(&table, Path::new(PASSWD), &aliases)
        .map_err(|e| format!("building {}: {e}", table.display()))?;
    Ok((recipients, stamp, warnings))
}

/// The names of the compiled aliases of `source` (its `.cdb`), which are
/// local recipients, and warnings for the log: the database is missing
/// while the source exists, or is older than the source (it is used all
/// the same). A damaged database is an error: smtpd would refuse mail for
/// its names for good.
pub fn alias_names(source: &Path) -> Result<(Vec<String>, Vec<String>), String> {
    let db = aliases::db_path(source);
    let file = match File::open(&db) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut warnings = Vec::new();
            if source.exists() {
                warnings.push(format!(
                    "aliases database {} does not exist: run newaliases to use {}",
                    db.display(),
                    source.display()
                ));
            }
            return Ok((Vec::new(), warnings));
        }
        Err(e) => return Err(format!("{}: {e}", db.display())),
    };
    let table = Table::read(&file, aliases::MAX_DB_SIZE).map_err(|e| format!("{}: {e}", db.display()))?;
    let names = aliases::names(&table).map_err(|e| format!("{}: {e}", db.display()))?;
    let mut warnings = Vec::new();
    if aliases::stale(source, &db) {
        warnings.push(format!("aliases database is older than {}: run newaliases", source.display()));
    }
    Ok((names, warnings))
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
/// connections waits in the queue instead of being dropped.
fn listen_tcp(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket, sockopt,
    };
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
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
            min_free_space: c.queue.min_free_space,
            recipient_delimiter: c.local.recipient_delimiter.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mta-intake-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn no_aliases_file_no_names_no_warning() {
        let d = dir("none");
        assert_eq!(alias_names(&d.join("aliases")).unwrap(), (Vec::<String>::new(), Vec::<String>::new()));
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
        assert_eq!(check(&config).unwrap_err(), Material::load(&config).err().unwrap());
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
        Material::load(&config).unwrap();
        assert!(table.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn aliases_never_compiled_warn_and_add_nothing() {
        let d = dir("uncompiled");
        let source = d.join("aliases");
        std::fs::write(&source, "staff: alice\n").unwrap();
        let (names, warnings) = alias_names(&source).unwrap();
        assert!(names.is_empty());
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("does not exist") && warnings[0].contains("newaliases"), "{warnings:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn compiled_aliases_are_local_recipients() {
        let d = dir("compiled");
        let source = d.join("aliases");
        std::fs::write(&source, "Staff: alice, bob\npostmaster: root\n").unwrap();
        aliases::compile(&source, &aliases::db_path(&source)).unwrap();
        let (names, warnings) = alias_names(&source).unwrap();
        assert_eq!(names, ["postmaster", "staff"]);
        assert!(warnings.is_empty(), "{warnings:?}");
        // The database alone is enough: the source may be gone.
        std::fs::remove_file(&source).unwrap();
        assert_eq!(alias_names(&source).unwrap(), (vec![String::from("postmaster"), String::from("staff")], vec![]));
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
        let (names, warnings) = alias_names(&source).unwrap();
        assert_eq!(names, ["staff"]);
        assert_eq!(warnings, [format!("aliases database is older than {}: run newaliases", source.display())]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn newaliases_is_noticed_and_the_table_built_again() {
        let d = dir("rebuild");
        let config = Config { spool: d.clone(), aliases: d.join("aliases"), ..Default::default() };
        let db = aliases::db_path(&config.aliases);
        let newaliases = |text: &str| {
            std::fs::write(&config.aliases, text).unwrap();
            aliases::compile(&config.aliases, &db).unwrap();
        };
        let names = |m: &Material| -> Vec<String> {
            let t = Table::read(&m.recipients, 1 << 24).unwrap();
            ["staff", "helpdesk", "root"].into_iter().filter(|n| t.contains(n.as_bytes())).map(String::from).collect()
        };
        newaliases("staff: root\n");
        let mut m = Material::load(&config).unwrap();
        assert!(!m.aliases_changed(&config));
        assert_eq!(names(&m), ["staff", "root"]);
        newaliases("staff: root\nhelpdesk: root\n");
        assert!(m.aliases_changed(&config));
        m.rebuild_recipients(&config).unwrap();
        assert!(!m.aliases_changed(&config));
        assert_eq!(names(&m), ["staff", "helpdesk", "root"]);
        // Damaged: an error naming the file, the table kept, and no
        // second error until it changes again.
        std::fs::write(&db, b"not a cdb").unwrap();
        assert!(m.aliases_changed(&config));
        let e = m.rebuild_recipients(&config).unwrap_err();
        assert!(e.contains(&db.display().to_string()), "{e}");
        assert!(!m.aliases_changed(&config));
        assert_eq!(names(&m), ["staff", "helpdesk", "root"]);
        // Removed: no aliases, the users still there.
        std::fs::remove_file(&db).unwrap();
        assert!(m.aliases_changed(&config));
        m.rebuild_recipients(&config).unwrap();
        assert_eq!(names(&m), ["root"]);
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
        assert!(m.warnings[0].contains("run newaliases"), "{:?}", m.warnings);
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

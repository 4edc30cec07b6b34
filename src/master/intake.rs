//! What master prepares for mail intake: the SMTP listening sockets
//! (bound as root, so privileged ports work), the local-recipient table
//! and the TLS certificate and key (root-only files), all before any
//! child starts, and again (but for the sockets) on reload.
//!
//! Trusts: the configuration; the files it names are read with bounds.

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;

use super::Master;
use crate::config::Config;
use crate::config::smtp::ListenTls;
use crate::ipc::msg::Intake;
use crate::roles::Role;

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

impl Material {
    pub fn load(config: &Config) -> Result<Material, String> {
        let table = config.spool.join("local-recipients.cdb");
        let recipients = crate::table::build_local_recipients(&table, Path::new(PASSWD))
            .map_err(|e| format!("building {}: {e}", table.display()))?;
        let certificate = config.tls.certificate.as_deref().map(read_pem).transpose()?;
        let key = config.tls.key.as_deref().map(read_pem).transpose()?;
        if let (Some(c), Some(k)) = (&certificate, &key) {
            crate::smtpd::tls::server_config(c, k).map_err(|e| format!("tls: {e}"))?;
        }
        Ok(Material { recipients, certificate, key })
    }
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
        }
    }
}

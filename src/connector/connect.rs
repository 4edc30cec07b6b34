//! Opening a TCP connection: each address the resolver found, in turn
//! (but those the request says to skip: already tried by the delivery),
//! each attempt bounded by `smtp.connect_timeout`; the first that answers
//! is handed back as a blocking `std::net::TcpStream` (its receiver sets
//! it non-blocking). When none does, the reason names the last attempt
//! as Postfix does: `connect to mx.example.com[192.0.2.1]:25: Connection
//! refused`.
//!
//! A next hop looked up by MX whose best host left is this one (see
//! `own`) fails at once: "mail for example.org loops back to myself"
//! (5.4.6).
//!
//! Trusts: nothing; addresses come from DNS answers (see `resolve`).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use super::own::Own;
use super::resolve::{Failure, Resolver};
use super::unix::UnixSockets;
use crate::ipc::msg::NexthopSpec;

/// A connected socket and whom it reaches.
#[derive(Debug)]
pub struct Connection {
    /// The MX or host name, or the address for a literal.
    pub host: String,
    pub addr: SocketAddr,
    pub stream: TcpStream,
}

/// Resolution and connection, without the IPC around them.
pub struct Connector {
    resolver: Resolver,
    timeout: Duration,
    unix: UnixSockets,
    own: Own,
}

impl Connector {
    pub fn new(resolver: Resolver, timeout: Duration) -> Connector {
        Connector { resolver, timeout, unix: UnixSockets::default(), own: Own::default() }
    }

    /// The same connector, knowing where this host takes mail in (for
    /// the MX loop check).
    pub fn with_own(self, own: Own) -> Connector {
        Connector { own, ..self }
    }

    /// The same connector, reaching the transport table's UNIX sockets.
    pub fn with_sockets(self, unix: UnixSockets) -> Connector {
        Connector { unix, ..self }
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    pub fn sockets(&self) -> &UnixSockets {
        &self.unix
    }

    /// Connect to `nexthop` (its port, or `default_port`), passing over
    /// the addresses in `skip` (the smtp agent's earlier sessions of the
    /// same delivery; they still count toward `smtp.mx_address_limit`).
    pub async fn connect(
        &self,
        nexthop: &NexthopSpec,
        default_port: u16,
        skip: &[IpAddr],
    ) -> Result<Connection, Failure> {
        let port = nexthop.port.unwrap_or(default_port);
        let found = self.resolver.targets_and_unresolved(nexthop).await?;
        let (mut targets, unresolved) = (found.targets, found.unresolved);
        // RFC 5321 5.1: this host among the MX hosts takes itself and
        // every MX host no better than it off the list, also when the
        // limits left its own addresses out of the list.
        let ours = targets
            .iter()
            .chain(&found.left_out)
            .filter(|t| self.own.is_own(t.ip, port))
            .map(|t| t.preference.unwrap_or(0))
            .min();
        if let Some(ours) = ours.filter(|_| nexthop.mx) {
            targets.retain(|t| t.preference.unwrap_or(0) < ours);
            if targets.is_empty() {
                // A better MX host whose address is not known now is no
                // loop: the mail waits for it (Postfix's "unable to find
                // primary relay"), this backup host must not bounce it.
                if let Some((_, why)) = unresolved.filter(|(p, _)| *p < ours) {
                    let host = &nexthop.host;
                    return Err(Failure::lookup(format!("unable to find the primary relay for {host}: {why}")));
                }
                return Err(Failure::loops(format!("mail for {} loops back to myself", nexthop.host)));
            }
        }
        let mut last = None;
        for t in targets.into_iter().filter(|t| !skip.contains(&t.ip)) {
            match self.attempt(t.ip, port).await {
                Ok(stream) => return Ok(Connection { host: t.host, addr: SocketAddr::new(t.ip, port), stream }),
                Err(why) => last = Some(format!("connect to {}[{}]:{port}: {why}", t.host, t.ip)),
            }
        }
        let host = &nexthop.host;
        let none = if skip.is_empty() { "no address to connect to" } else { "no other address to connect to" };
        Err(Failure::temporary(last.unwrap_or_else(|| format!("connect to {host}: {none}"))))
    }

    /// One connection attempt; the error as Postfix words it.
    async fn attempt(&self, ip: IpAddr, port: u16) -> Result<TcpStream, String> {
        let addr = SocketAddr::new(ip, port);
        let stream = match tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(describe(&e)),
            Err(_) => return Err(String::from("Connection timed out")),
        };
        let stream = stream.into_std().map_err(|e| describe(&e))?;
        stream.set_nonblocking(false).map_err(|e| describe(&e))?;
        // The client writes commands and content as they come: without
        // this, the end of data can wait on the peer's delayed ACK.
        stream.set_nodelay(true).map_err(|e| describe(&e))?;
        Ok(stream)
    }
}

/// The system's words for an error, without Rust's "(os error N)".
pub fn describe(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

//! The connector: the one process that resolves names and opens
//! outbound connections. smtp processes ask it over their channels
//! (`SmtpToConnector::Connect`) and get back a connected socket
//! (`ConnectorToSmtp::Connected`, the descriptor alongside) or the reason
//! there is none (`Failed`, permanent or not), so that no process that
//! talks to remote mail servers resolves or connects itself. smtpd
//! processes ask it who their clients are (`SmtpdToConnector::ClientName`,
//! a forward-confirmed PTR name or none), so smtpd needs no network
//! access beyond its listeners.
//!
//! - `resolve`: next hop → hosts and addresses (MX, null MX, implicit
//!   MX); address → client name;
//! - `connect`: addresses → a connected socket, each attempt bounded;
//! - `unix`: the transport table's UNIX sockets (LMTP), in the
//!   directories master opened for it, and no other.
//!
//! The resolver (hickory, which caches answers for their TTLs) runs in a
//! tokio current-thread runtime, built before the sandbox because it
//! reads resolv.conf; the event loop is the same runtime: one task per
//! channel, one per request in progress (at most [`MAX_IN_FLIGHT`]
//! connection requests, beyond which they fail temporarily, and at most
//! `dns.reverse_lookup_limit` client names, beyond which a client is
//! `unknown` at once).
//!
//! Trusts: master. smtp's and smtpd's requests are checked for shape: a
//! malformed or unexpected message ends the connector (master restarts
//! it). DNS answers: see `resolve`.

pub mod connect;
pub mod own;
pub mod resolve;
pub mod unix;

#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell, RefMut};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use sandbox::Sandboxed;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::runtime::Runtime;
use tokio::task::{JoinHandle, LocalSet};

use crate::child::Child;
use crate::ipc::msg::{
    ConnectorToSmtp, ConnectorToSmtpd, FromMaster, Level, SmtpToConnector, SmtpdToConnector, Target,
};
use crate::ipc::{self, Channel};
use crate::roles::Role;
pub use connect::{Connection, Connector};
pub use resolve::{Failure, Limits, Resolver};
pub use unix::UnixSockets;

/// Connection requests in progress at once, over all smtp channels.
pub const MAX_IN_FLIGHT: usize = 1000;
/// Largest message an smtp channel may carry (a request is far smaller).
const MAX_REQUEST: usize = ipc::MAX_PAYLOAD;
/// How long a stopping connector waits for the requests in progress.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a stopping connector looks whether it is done.
const STOP_POLL: Duration = Duration::from_millis(50);

/// What `prepare` sets up before the sandbox: the runtime and the
/// resolver (which has read resolv.conf).
pub struct Prepared {
    runtime: Runtime,
    connector: Connector,
    /// `dns.reverse_lookup_limit`.
    max_reverse: usize,
}

/// Before the sandbox: build the runtime (current thread, no worker
/// threads) and the resolver from `delivery.dns`, and take the socket
/// directories master passed.
pub fn prepare(child: &mut Child) -> Prepared {
    let Some(delivery) = child.config.delivery.clone() else {
        child.fatal("master sent no delivery configuration");
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build() {
        Ok(r) => r,
        Err(e) => child.fatal(&format!("building the event loop: {e}")),
    };
    let built = {
        let _context = runtime.enter();
        Resolver::new(&delivery.dns)
    };
    let mut resolver = match built {
        Ok((r, warning)) => {
            if let Some(w) = warning {
                child.warn(&w);
            }
            r
        }
        Err(e) => child.fatal(&e),
    };
    let smtp = &delivery.smtp;
    resolver.set_limits(Limits { hosts: smtp.mx_host_limit as usize, addresses: smtp.mx_address_limit as usize });
    let passed = child.config.socket_dirs.clone();
    let fds = std::mem::take(&mut child.fds);
    if fds.len() != passed.len() {
        child.fatal(&format!("{} socket directories named, {} passed", passed.len(), fds.len()));
    }
    // A directory master could not open was logged by master.
    let sockets = UnixSockets::new(delivery.transport_map.socket_dirs(), passed.into_iter().zip(fds).collect());
    Prepared {
        runtime,
        connector: Connector::new(resolver, smtp.connect_timeout)
            .with_sockets(sockets)
            .with_own(own::Own::new(&delivery.listen, &delivery.own_addresses)),
        max_reverse: delivery.dns.reverse_lookup_limit as usize,
    }
}

/// Serve smtp's requests until master says stop or goes away.
pub fn serve(_token: Sandboxed, child: Child, prepared: Prepared) -> ! {
    let Prepared { runtime, connector, max_reverse } = prepared;
    let child = Rc::new(RefCell::new(child));
    let local = LocalSet::new();
    let code = runtime.block_on(local.run_until(run(Rc::clone(&child), connector, max_reverse)));
    child.borrow_mut().exit(code)
}

/// Who holds a link's channel.
enum Holder {
    Own(RefCell<Channel>),
    /// The master channel lives in the child (its log goes there).
    Master(Rc<RefCell<Child>>),
}

/// A channel registered with the event loop. The loop watches a
/// duplicate of the channel's descriptor (a tokio `UnixStream`, which
/// needs no unsafe registration); both refer to one socket, so readiness
/// is the channel's, and `try_io` clears it when the channel would block.
pub(crate) struct Link {
    io: UnixStream,
    holder: Holder,
    flushing: Cell<bool>,
}

impl Link {
    fn new(holder: Holder) -> std::io::Result<Rc<Link>> {
        let dup = match &holder {
            Holder::Own(c) => c.borrow().as_fd().try_clone_to_owned()?,
            Holder::Master(c) => c.borrow().master.as_fd().try_clone_to_owned()?,
        };
        let std = std::os::unix::net::UnixStream::from(dup);
        std.set_nonblocking(true)?;
        let io = UnixStream::from_std(std)?;
        Ok(Rc::new(Link { io, holder, flushing: Cell::new(false) }))
    }

    /// A link owning `chan` (an smtp channel).
    pub(crate) fn own(chan: Channel) -> std::io::Result<Rc<Link>> {
        Link::new(Holder::Own(RefCell::new(chan)))
    }

    /// The channel, borrowed for one synchronous step (never across an await).
    fn chan(&self) -> RefMut<'_, Channel> {
        match &self.holder {
            Holder::Own(c) => c.borrow_mut(),
            Holder::Master(c) => RefMut::map(c.borrow_mut(), |c| &mut c.master),
        }
    }

    /// The next whole message.
    async fn recv<T: DeserializeOwned>(&self) -> Result<(T, Vec<OwnedFd>), ipc::Error> {
        loop {
            self.io.readable().await.map_err(ipc::Error::Io)?;
            let mut failed = None;
            let got = self.io.try_io(Interest::READABLE, || match self.chan().recv::<T>() {
                Ok(Some(m)) => Ok(m),
                Ok(None) => Err(ErrorKind::WouldBlock.into()),
                Err(e) => {
                    failed = Some(e);
                    Err(ErrorKind::Other.into())
                }
            });
            match (got, failed) {
                (Ok(m), _) => return Ok(m),
                (Err(_), Some(e)) => return Err(e),
                (Err(e), None) if e.kind() == ErrorKind::WouldBlock => continue,
                (Err(e), None) => return Err(ipc::Error::Io(e)),
            }
        }
    }

    fn send<T: Serialize>(self: &Rc<Self>, msg: &T, fds: &[BorrowedFd<'_>]) -> Result<(), ipc::Error> {
        let sent = self.chan().send(msg, fds);
        self.kick();
        sent
    }

    /// Start a task that sends what the channel could not send at once.
    fn kick(self: &Rc<Self>) {
        if self.flushing.get() || !self.chan().wants_write() {
            return;
        }
        self.flushing.set(true);
        let link = Rc::clone(self);
        tokio::task::spawn_local(async move {
            while link.io.writable().await.is_ok() {
                let flushed = link.io.try_io(Interest::WRITABLE, || match link.chan().flush() {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(ErrorKind::WouldBlock.into()),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                });
                match flushed {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                    // An error shows again on the next send or receive.
                    _ => break,
                }
            }
            link.flushing.set(false);
        });
    }

    fn idle(&self) -> bool {
        !self.flushing.get()
    }
}

/// The master channel and the child's log.
struct Master {
    link: Rc<Link>,
    child: Rc<RefCell<Child>>,
}

impl Master {
    fn log(&self, level: Level, text: &str) {
        {
            let mut c = self.child.borrow_mut();
            let Child { log, master, .. } = &mut *c;
            log.log(master, level, text);
        }
        self.link.kick();
    }

    fn fatal(&self, text: &str) -> ! {
        self.child.borrow_mut().fatal(text)
    }
}

/// What every channel shares: the connector and the bounds on requests
/// in progress.
pub(crate) struct Service {
    connector: Rc<Connector>,
    in_flight: Cell<usize>,
    max_in_flight: usize,
    /// smtpd's client-name lookups in progress, and their bound.
    reverse: Cell<usize>,
    max_reverse: usize,
    stopping: Cell<bool>,
    warn: Box<dyn Fn(&str)>,
}

impl Service {
    pub(crate) fn new(
        connector: Rc<Connector>,
        max_in_flight: usize,
        max_reverse: usize,
        warn: Box<dyn Fn(&str)>,
    ) -> Rc<Service> {
        Rc::new(Service {
            connector,
            in_flight: Cell::new(0),
            max_in_flight,
            reverse: Cell::new(0),
            max_reverse,
            stopping: Cell::new(false),
            warn,
        })
    }

    /// Requests still to be answered.
    fn busy(&self) -> usize {
        self.in_flight.get() + self.reverse.get()
    }
}

/// Serve one smtp channel until it closes: each request becomes a task
/// of its own, answered on this channel. Err: the peer broke the protocol.
pub(crate) async fn serve_smtp(service: Rc<Service>, link: Rc<Link>) -> Result<(), String> {
    loop {
        let (msg, fds) = match link.recv::<SmtpToConnector>().await {
            Ok(m) => m,
            Err(ipc::Error::Closed) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let SmtpToConnector::Connect { req, nexthop, default_port, skip } = msg;
        if !fds.is_empty() {
            return Err(format!("{} descriptors with connect request {req}", fds.len()));
        }
        if let Target::Unix(path) = &nexthop
            && !service.connector.sockets().knows(path)
        {
            // Only a compromised or mismatched smtp asks this.
            (service.warn)(&format!(
                "connect request {req} for {}, not a socket of the transport table",
                path.display()
            ));
        }
        let refused = if service.stopping.get() {
            Some("the connector is stopping")
        } else if service.in_flight.get() >= service.max_in_flight {
            Some("too many connection requests in progress")
        } else {
            None
        };
        if let Some(why) = refused {
            answer(&service, &link, req, Err(Failure::temporary(why.to_string())));
            continue;
        }
        service.in_flight.set(service.in_flight.get() + 1);
        let (service, link) = (Rc::clone(&service), Rc::clone(&link));
        tokio::task::spawn_local(async move {
            let result = match &nexthop {
                Target::Inet(n) => service.connector.connect(n, default_port, &skip).await.map(Reached::from),
                Target::Unix(path) => service.connector.sockets().connect(path).map(|fd| Reached {
                    host: path.display().to_string(),
                    addr: None,
                    fd,
                }),
            };
            answer(&service, &link, req, result);
            service.in_flight.set(service.in_flight.get() - 1);
        });
    }
}

/// A connected socket, as smtp is told of it.
struct Reached {
    /// The host name (or address), or the UNIX socket's path.
    host: String,
    addr: Option<SocketAddr>,
    fd: OwnedFd,
}

impl From<Connection> for Reached {
    fn from(c: Connection) -> Reached {
        Reached { host: c.host, addr: Some(c.addr), fd: OwnedFd::from(c.stream) }
    }
}

/// Send a request's answer (the socket travels with `Connected`). A
/// channel that closed meanwhile needs no answer; one whose peer does not
/// read is warned about (smtp notices the silence).
fn answer(service: &Service, link: &Rc<Link>, req: u64, result: Result<Reached, Failure>) {
    let sent = match result {
        Ok(c) => link.send(&ConnectorToSmtp::Connected { req, host: c.host, addr: c.addr }, &[c.fd.as_fd()]),
        Err(f) => link.send(
            &ConnectorToSmtp::Failed { req, reason: f.reason, permanent: f.permanent, dsn: f.dsn.to_string() },
            &[],
        ),
    };
    match sent {
        Ok(()) | Err(ipc::Error::Closed) => {}
        Err(e) => (service.warn)(&format!("answering connect request {req}: {e}")),
    }
}

/// Serve one smtpd channel until it closes: each client-name request
/// becomes a task of its own (at most `max_reverse` over all smtpd
/// channels; beyond that, and while stopping, the answer is "no name" at
/// once: smtpd must not wait for a lookup that will not be made).
/// Err: the peer broke the protocol.
pub(crate) async fn serve_smtpd(service: Rc<Service>, link: Rc<Link>) -> Result<(), String> {
    loop {
        let (msg, fds) = match link.recv::<SmtpdToConnector>().await {
            Ok(m) => m,
            Err(ipc::Error::Closed) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let SmtpdToConnector::ClientName { req, addr } = msg;
        if !fds.is_empty() {
            return Err(format!("{} descriptors with client name request {req}", fds.len()));
        }
        if service.stopping.get() || service.reverse.get() >= service.max_reverse {
            answer_name(&service, &link, req, None);
            continue;
        }
        service.reverse.set(service.reverse.get() + 1);
        let (service, link) = (Rc::clone(&service), Rc::clone(&link));
        tokio::task::spawn_local(async move {
            let name = match service.connector.resolver().client_name(addr).await {
                Ok(name) => Some(name),
                Err(why) => {
                    if let Some(why) = why {
                        (service.warn)(&why);
                    }
                    None
                }
            };
            answer_name(&service, &link, req, name);
            service.reverse.set(service.reverse.get() - 1);
        });
    }
}

fn answer_name(service: &Service, link: &Rc<Link>, req: u64, name: Option<String>) {
    match link.send(&ConnectorToSmtpd::ClientName { req, name }, &[]) {
        Ok(()) | Err(ipc::Error::Closed) => {}
        Err(e) => (service.warn)(&format!("answering client name request {req}: {e}")),
    }
}

/// A peer's channel (smtp or smtpd) and the task that serves it.
type Peers = Rc<RefCell<HashMap<u32, (Rc<Link>, JoinHandle<()>)>>>;

async fn run(child: Rc<RefCell<Child>>, connector: Connector, max_reverse: usize) -> i32 {
    let link = match Link::new(Holder::Master(Rc::clone(&child))) {
        Ok(l) => l,
        Err(e) => child.borrow_mut().fatal(&format!("registering the master channel: {e}")),
    };
    let master = Rc::new(Master { link, child });
    let warn = {
        let master = Rc::clone(&master);
        Box::new(move |text: &str| master.log(Level::Warning, text))
    };
    let service = Service::new(Rc::new(connector), MAX_IN_FLIGHT, max_reverse, warn);
    let peers: Peers = Rc::new(RefCell::new(HashMap::new()));
    master.log(Level::Debug, "serving");
    loop {
        let got = master.link.recv::<FromMaster>().await;
        match got {
            Ok((FromMaster::Peer { role: role @ (Role::Smtp | Role::Smtpd), pid }, fds)) => {
                add_peer(&master, &service, &peers, role, pid, fds)
            }
            Ok((FromMaster::Stop, fds)) if fds.is_empty() => break,
            Ok((m, _)) => master.fatal(&format!("unexpected message from master: {m:?}")),
            Err(ipc::Error::Closed) => return 0,
            Err(e) => master.fatal(&format!("master channel: {e}")),
        }
    }
    // Stop: new requests are refused; those in progress are answered
    // (within a grace period) and their answers sent.
    service.stopping.set(true);
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    let busy = || service.busy() > 0 || peers.borrow().values().any(|(l, _)| !l.idle());
    while busy() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(STOP_POLL).await;
    }
    if service.busy() > 0 {
        master.log(Level::Warning, &format!("stopping with {} requests unanswered", service.busy()));
    }
    0
}

/// A channel to an smtp or smtpd process (replacing any earlier one to
/// that pid).
fn add_peer(master: &Rc<Master>, service: &Rc<Service>, peers: &Peers, role: Role, pid: u32, fds: Vec<OwnedFd>) {
    let name = role.name();
    let chan = master.child.borrow_mut().peer_channel(role, fds).with_max_message(MAX_REQUEST);
    let link = match Link::own(chan) {
        Ok(l) => l,
        Err(e) => master.fatal(&format!("registering the channel to {name} pid {pid}: {e}")),
    };
    let task = {
        let (master, service, peers, link) =
            (Rc::clone(master), Rc::clone(service), Rc::clone(peers), Rc::clone(&link));
        tokio::task::spawn_local(async move {
            let served = match role {
                Role::Smtpd => serve_smtpd(service, Rc::clone(&link)).await,
                _ => serve_smtp(service, Rc::clone(&link)).await,
            };
            if let Err(e) = served {
                master.fatal(&format!("channel to {name} pid {pid}: {e}"));
            }
            let mut p = peers.borrow_mut();
            if p.get(&pid).is_some_and(|(l, _)| Rc::ptr_eq(l, &link)) {
                p.remove(&pid);
            }
            drop(p);
            master.log(Level::Debug, &format!("channel to {name} pid {pid} closed"));
        })
    };
    if let Some((_, old)) = peers.borrow_mut().insert(pid, (link, task)) {
        old.abort();
    }
    master.log(Level::Debug, &format!("channel to {name} pid {pid}"));
}

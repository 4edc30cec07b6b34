//! The real `connector` program, with the test playing master, an smtp
//! process and an smtpd process: it enters its sandbox, takes an smtp
//! channel from master, answers a connect request with a socket connected
//! to a loopback listener, takes an smtpd channel and answers a client
//! name request, exits when told to stop, and exits with a fatal log when
//! smtp sends it something it does not expect. Given a socket directory
//! as master passes it for the transport table, it connects to the
//! table's UNIX socket there from inside its sandbox, and refuses (a
//! temporary failure, and a warning) a socket the table does not name.
//! Its resolver is pointed at a loopback port, so nothing asks the
//! system's.

mod common;

use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mta::config::delivery::{BounceConf, DeliveryConf, Dns, Relay, SmtpClient, Transports};
use mta::ipc::msg::{
    ConnectorToSmtp, ConnectorToSmtpd, FromMaster, NexthopSpec, SmtpToConnector, SmtpdToConnector, Target, ToMaster,
};
use mta::ipc::{self, Channel};
use mta::qmgr::schedule::TransportMap;
use mta::roles::Role;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

struct Connector {
    pid: Pid,
    master: Channel,
    /// Keeps the resolver's configured port taken (nothing answers there).
    _dns: UdpSocket,
}

/// A connector; with `lmtp`, the transport table routes a domain to
/// `lmtp:unix:DIR/lmtp.sock` and DIR is passed as master passes it.
fn start(lmtp: Option<&Path>) -> Connector {
    let (mine, theirs) = ipc::pair().expect("pair");
    let dir_fd = lmtp.map(|d| {
        let flags = nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC;
        nix::fcntl::open(d, flags, nix::sys::stat::Mode::empty()).expect("open the socket directory")
    });
    let mut fds = vec![theirs.as_raw_fd()];
    fds.extend(dir_fd.as_ref().map(|f| f.as_raw_fd()));
    let pid = common::spawn(Path::new(env!("CARGO_BIN_EXE_connector")), "connector", &fds);
    let dns = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("dns port");
    let mut c = Connector { pid, master: Channel::new(mine), _dns: dns };
    let mut transport_map = TransportMap::default();
    if let Some(d) = lmtp {
        transport_map.insert("lmtp.test", &format!("lmtp:unix:{}/lmtp.sock", d.display())).expect("table");
    }
    let delivery = DeliveryConf {
        queue: Default::default(),
        transport: Transports::default(),
        transport_map,
        relay: Relay::default(),
        smtp: SmtpClient::default(),
        dns: Dns { servers: vec![c._dns.local_addr().expect("address")], ..Dns::default() },
        bounce: BounceConf::default(),
        domains: Vec::new(),
        own_addresses: Vec::new(),
        listen: Vec::new(),
        local: Default::default(),
        aliases: std::path::PathBuf::from("/nonexistent/aliases"),
        libexec: std::path::PathBuf::from(env!("CARGO_BIN_EXE_connector")).parent().expect("dir").to_path_buf(),
        credentials: None,
        tls_ca: Vec::new(),
    };
    let init = common::init(
        Role::Connector,
        &std::env::temp_dir(),
        Some(delivery),
        lmtp.map(Path::to_path_buf).into_iter().collect(),
        Duration::from_secs(10),
    );
    c.master.send(&init, &[]).expect("init");
    let got = wait_for(&mut c.master, |m: &ToMaster| matches!(m, ToMaster::Ready { .. }));
    assert!(matches!(got, Some((ToMaster::Ready { confined: true }, _))), "{got:?}");
    c
}

/// Receive until `want` matches (10 s at most).
fn wait_for<T: serde::de::DeserializeOwned>(
    chan: &mut Channel,
    want: impl Fn(&T) -> bool,
) -> Option<(T, Vec<OwnedFd>)> {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        match chan.recv::<T>() {
            Ok(Some((m, fds))) if want(&m) => return Some((m, fds)),
            Ok(Some(_)) => {}
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return None,
        }
    }
    None
}

fn exit_code(c: &Connector) -> i32 {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        match waitpid(c.pid, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
            WaitStatus::Exited(_, code) => return code,
            WaitStatus::Signaled(_, s, _) => panic!("connector killed by {s}"),
            _ if Instant::now() > end => {
                let _ = nix::sys::signal::kill(c.pid, nix::sys::signal::Signal::SIGKILL);
                panic!("connector did not exit");
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// An smtp channel, given to the connector through master.
fn smtp_channel(c: &mut Connector) -> Channel {
    peer_channel(c, Role::Smtp, 4242)
}

fn peer_channel(c: &mut Connector, role: Role, pid: u32) -> Channel {
    let (mine, theirs) = ipc::pair().expect("pair");
    c.master.send(&FromMaster::Peer { role, pid }, &[theirs.as_fd()]).expect("peer");
    Channel::new(mine)
}

#[test]
fn names_smtpd_clients_inside_its_sandbox() {
    let mut c = start(None);
    let mut smtpd = peer_channel(&mut c, Role::Smtpd, 4343);
    // Loopback is named by the resolver itself (RFC 6761), so the
    // silent DNS port is not asked.
    let addr = std::net::IpAddr::V4(Ipv4Addr::LOCALHOST);
    smtpd.send(&SmtpdToConnector::ClientName { req: 9, addr }, &[]).expect("ask");
    let got = wait_for(&mut smtpd, |_: &ConnectorToSmtpd| true);
    let Some((msg, fds)) = got else { panic!("no answer") };
    assert!(fds.is_empty());
    assert_eq!(msg, ConnectorToSmtpd::ClientName { req: 9, name: Some(String::from("localhost")) });
    c.master.send(&FromMaster::Stop, &[]).expect("stop");
    assert_eq!(exit_code(&c), 0);
}

#[test]
fn connects_for_smtp_inside_its_sandbox_and_stops() {
    let mut c = start(None);
    let mut smtp = smtp_channel(&mut c);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
    let addr = listener.local_addr().expect("address");
    let nexthop = Target::Inet(NexthopSpec { host: String::from("127.0.0.1"), port: Some(addr.port()), mx: false });
    smtp.send(&SmtpToConnector::Connect { req: 3, nexthop, default_port: 25, skip: Vec::new() }, &[]).expect("connect");
    let got = wait_for(&mut smtp, |_: &ConnectorToSmtp| true);
    let Some((msg, mut fds)) = got else { panic!("no answer") };
    assert_eq!(msg, ConnectorToSmtp::Connected { req: 3, host: String::from("127.0.0.1"), addr: Some(addr) });
    assert_eq!(fds.len(), 1);
    let stream = TcpStream::from(fds.remove(0));
    let (_, from) = listener.accept().expect("accept");
    assert_eq!(from, stream.local_addr().expect("local address"));
    assert_eq!(addr, stream.peer_addr().expect("peer address"));

    c.master.send(&FromMaster::Stop, &[]).expect("stop");
    assert_eq!(exit_code(&c), 0);
}

/// A folder of the test's own, removed at the end.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn connects_to_the_tables_unix_socket_and_no_other() {
    let dir = TempDir(std::env::temp_dir().join(format!("mta-connector-lmtp-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).expect("mkdir");
    let socket = dir.0.join("lmtp.sock");
    let listener = UnixListener::bind(&socket).expect("listen");
    let _other = UnixListener::bind(dir.0.join("other.sock")).expect("listen");
    let mut c = start(Some(&dir.0));
    let mut smtp = smtp_channel(&mut c);
    smtp.send(
        &SmtpToConnector::Connect { req: 5, nexthop: Target::Unix(socket.clone()), default_port: 24, skip: Vec::new() },
        &[],
    )
    .expect("connect");
    let Some((msg, mut fds)) = wait_for(&mut smtp, |_: &ConnectorToSmtp| true) else { panic!("no answer") };
    assert_eq!(msg, ConnectorToSmtp::Connected { req: 5, host: socket.display().to_string(), addr: None });
    assert_eq!(fds.len(), 1);
    let mut stream = UnixStream::from(fds.remove(0));
    let (mut accepted, _) = listener.accept().expect("accept");
    use std::io::{Read, Write};
    stream.write_all(b"LHLO x\r\n").expect("write");
    let mut buf = [0u8; 8];
    accepted.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"LHLO x\r\n");

    // A socket the table does not name, beside the one it does.
    let other = dir.0.join("other.sock");
    smtp.send(
        &SmtpToConnector::Connect { req: 6, nexthop: Target::Unix(other.clone()), default_port: 24, skip: Vec::new() },
        &[],
    )
    .expect("connect");
    let Some((msg, fds)) = wait_for(&mut smtp, |_: &ConnectorToSmtp| true) else { panic!("no answer") };
    let reason = format!("connect to {}: not a socket of the transport table", other.display());
    assert_eq!(msg, ConnectorToSmtp::Failed { req: 6, reason, permanent: false, dsn: String::from("4.4.1") });
    assert!(fds.is_empty());
    let warned = wait_for(
        &mut c.master,
        |m: &ToMaster| matches!(m, ToMaster::Log { text, .. } if text.contains("not a socket of the transport table")),
    );
    assert!(warned.is_some(), "no warning about the request");

    // Nothing listens: the system's reason, temporary.
    drop(listener);
    std::fs::remove_file(&socket).expect("remove the socket");
    smtp.send(
        &SmtpToConnector::Connect { req: 7, nexthop: Target::Unix(socket.clone()), default_port: 24, skip: Vec::new() },
        &[],
    )
    .expect("connect");
    let Some((msg, _)) = wait_for(&mut smtp, |_: &ConnectorToSmtp| true) else { panic!("no answer") };
    let reason = format!("connect to {}: No such file or directory", socket.display());
    assert_eq!(msg, ConnectorToSmtp::Failed { req: 7, reason, permanent: false, dsn: String::from("4.4.1") });

    c.master.send(&FromMaster::Stop, &[]).expect("stop");
    assert_eq!(exit_code(&c), 0);
}

#[test]
fn an_unexpected_message_from_smtp_ends_it() {
    let mut c = start(None);
    let mut smtp = smtp_channel(&mut c);
    // A master message where a connect request belongs does not decode.
    smtp.send(&FromMaster::Stop, &[]).expect("send");
    let fatal =
        wait_for(&mut c.master, |m: &ToMaster| matches!(m, ToMaster::Log { text, .. } if text.contains("fatal")));
    assert!(matches!(&fatal, Some((ToMaster::Log { text, .. }, _)) if text.contains("smtp pid 4242")), "{fatal:?}");
    assert_eq!(exit_code(&c), 1);
}

//! The connector against a DNS server of its own on loopback (a test
//! zone under `example.`), and against TCP listeners on loopback. No
//! test asks the system's resolver anything.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::task::LocalSet;

use super::resolve::{MAX_ADDRESSES, MAX_HOSTS, Target};
use super::*;
use crate::config::delivery::Dns;
use crate::ipc::msg::{self as msg, NexthopSpec};

/// What the test server answers for a name and type.
#[derive(Clone)]
enum Answer {
    Records(Vec<RData>),
    Code(ResponseCode),
}

/// A DNS server on a loopback UDP port. A name it knows without records
/// of the type asked gets an empty NOERROR answer (no data); a name it
/// does not know, NXDOMAIN.
struct DnsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

type Zone = Vec<(String, RecordType, Answer)>;

impl DnsServer {
    fn start(zone: Zone) -> DnsServer {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the DNS server");
        sock.set_read_timeout(Some(Duration::from_millis(20))).expect("read timeout");
        let addr = sock.local_addr().expect("address");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf)
                    && let Some(reply) = respond(&zone, &buf[..n])
                {
                    let _ = sock.send_to(&reply, peer);
                }
            }
        });
        DnsServer { addr, stop, thread: Some(thread) }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(zone: &Zone, query: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    let q = req.queries.first()?.clone();
    let name = q.name().to_ascii().to_ascii_lowercase();
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_query(q.clone());
    match zone.iter().find(|(n, t, _)| *n == name && *t == q.query_type()) {
        Some((_, _, Answer::Records(rdata))) => {
            for rd in rdata {
                resp.add_answer(Record::from_rdata(q.name().clone(), 60, rd.clone()));
            }
        }
        Some((_, _, Answer::Code(code))) => resp.metadata.response_code = *code,
        None if zone.iter().any(|(n, _, _)| *n == name) => {}
        None => resp.metadata.response_code = ResponseCode::NXDomain,
    }
    resp.to_vec().ok()
}

fn mx(pref: u16, exchange: &str) -> RData {
    RData::MX(MX::new(pref, Name::from_ascii(exchange).expect("exchange name")))
}

fn a(ip: Ipv4Addr) -> RData {
    RData::A(A(ip))
}

fn aaaa(ip: Ipv6Addr) -> RData {
    RData::AAAA(AAAA(ip))
}

fn rec(name: &str, t: RecordType, rdata: Vec<RData>) -> (String, RecordType, Answer) {
    (name.to_string(), t, Answer::Records(rdata))
}

fn v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, last)
}

/// The test zone. Addresses in 192.0.2.0/24 are only listed, never
/// connected to; `alive` and `implicit` are 127.0.0.1, `dead` is ::1
/// only (nothing listens there on the tests' ports).
fn zone() -> Zone {
    vec![
        rec("example.", RecordType::MX, vec![mx(20, "mx2.example."), mx(10, "mx1.example.")]),
        rec("mx1.example.", RecordType::A, vec![a(v4(1))]),
        rec("mx2.example.", RecordType::A, vec![a(v4(2))]),
        rec("mx2.example.", RecordType::AAAA, vec![aaaa("2001:db8::2".parse().expect("v6"))]),
        rec("equal.example.", RecordType::MX, vec![mx(10, "mx1.example."), mx(10, "mx2.example.")]),
        rec("implicit.example.", RecordType::A, vec![a(Ipv4Addr::LOCALHOST)]),
        rec("nullmx.example.", RecordType::MX, vec![mx(0, ".")]),
        ("broken.example.".to_string(), RecordType::MX, Answer::Code(ResponseCode::ServFail)),
        ("broken.example.".to_string(), RecordType::A, Answer::Code(ResponseCode::ServFail)),
        ("broken.example.".to_string(), RecordType::AAAA, Answer::Code(ResponseCode::ServFail)),
        rec("fallback.example.", RecordType::MX, vec![mx(10, "dead.example."), mx(20, "alive.example.")]),
        rec("dead.example.", RecordType::AAAA, vec![aaaa(Ipv6Addr::LOCALHOST)]),
        rec("alive.example.", RecordType::A, vec![a(Ipv4Addr::LOCALHOST)]),
        rec("ghostmx.example.", RecordType::MX, vec![mx(5, "ghost.example."), mx(10, "mx1.example.")]),
        rec("allghosts.example.", RecordType::MX, vec![mx(5, "ghost.example."), mx(10, "ghost2.example.")]),
        rec("noaddress.example.", RecordType::TXT, Vec::new()),
        rec("many.example.", RecordType::MX, (1..=8).map(|i| mx(i, &format!("h{i}.example."))).collect()),
        rec("h1.example.", RecordType::A, vec![a(v4(11)), a(v4(12)), a(v4(13))]),
        rec("h2.example.", RecordType::A, vec![a(v4(21)), a(v4(22)), a(v4(23))]),
        rec("h3.example.", RecordType::A, vec![a(v4(31)), a(v4(32)), a(v4(33))]),
        rec("h4.example.", RecordType::A, vec![a(v4(41)), a(v4(42)), a(v4(43))]),
        rec("h5.example.", RecordType::A, vec![a(v4(51))]),
        rec("h6.example.", RecordType::A, vec![a(v4(61))]),
        rec("h7.example.", RecordType::A, vec![a(v4(71))]),
        rec("h8.example.", RecordType::A, vec![a(v4(81))]),
    ]
}

/// A runtime, the test zone's server and a connector that asks it.
struct Fixture {
    rt: tokio::runtime::Runtime,
    _server: DnsServer,
    connector: Rc<Connector>,
}

impl Fixture {
    fn new(connect_timeout: Duration) -> Fixture {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().expect("runtime");
        let server = DnsServer::start(zone());
        let dns = Dns { servers: vec![server.addr], timeout: Duration::from_secs(2), attempts: 1 };
        let (resolver, warning) = {
            let _context = rt.enter();
            Resolver::new(&dns).expect("resolver")
        };
        assert_eq!(warning, None);
        Fixture { rt, _server: server, connector: Rc::new(Connector::new(resolver, connect_timeout)) }
    }

    fn targets(&self, host: &str, mx: bool) -> Result<Vec<Target>, Failure> {
        let nexthop = NexthopSpec { host: host.to_string(), port: None, mx };
        self.rt.block_on(self.connector.resolver().targets(&nexthop))
    }

    fn connect(&self, host: &str, port: u16, mx: bool) -> Result<Connection, Failure> {
        let nexthop = NexthopSpec { host: host.to_string(), port: Some(port), mx };
        self.rt.block_on(self.connector.connect(&nexthop, 25))
    }
}

fn hosts(targets: &[Target]) -> Vec<&str> {
    targets.iter().map(|t| t.host.as_str()).collect()
}

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
    let port = l.local_addr().expect("address").port();
    (l, port)
}

/// A loopback port nothing listens on (one that was just released).
fn closed_port() -> u16 {
    listener().1
}

/// The connection really reaches `l`: bytes written arrive.
fn assert_reaches(conn: &Connection, l: &TcpListener) {
    let (mut accepted, from) = l.accept().expect("accept");
    assert_eq!(from, conn.stream.local_addr().expect("local address"));
    let mut s = conn.stream.try_clone().expect("clone");
    s.write_all(b"EHLO\r\n").expect("write");
    let mut buf = [0u8; 6];
    accepted.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"EHLO\r\n");
}

#[test]
fn mx_hosts_in_preference_order() {
    let f = Fixture::new(Duration::from_secs(1));
    let t = f.targets("example", true).expect("targets");
    assert_eq!(hosts(&t), ["mx1.example", "mx2.example", "mx2.example"]);
    assert_eq!(t[0].ip, IpAddr::V4(v4(1)));
    // Both families of mx2, IPv6 first.
    assert_eq!(t[1].ip, "2001:db8::2".parse::<IpAddr>().expect("v6"));
    assert_eq!(t[2].ip, IpAddr::V4(v4(2)));
}

#[test]
fn equal_preferences_are_shuffled() {
    let f = Fixture::new(Duration::from_secs(1));
    let mut first = HashSet::new();
    for _ in 0..40 {
        let t = f.targets("equal.example", true).expect("targets");
        let mut h: Vec<&str> = hosts(&t);
        first.insert(h[0].to_string());
        h.sort_unstable();
        h.dedup();
        assert_eq!(h, ["mx1.example", "mx2.example"]);
    }
    assert_eq!(first.len(), 2, "one host was always first: {first:?}");
}

#[test]
fn no_mx_means_the_domain_is_its_own_mx() {
    let f = Fixture::new(Duration::from_secs(1));
    let (l, port) = listener();
    let conn = f.connect("implicit.example", port, true).expect("connected");
    assert_eq!(conn.host, "implicit.example");
    assert_eq!(conn.addr, SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    assert_reaches(&conn, &l);
}

#[test]
fn null_mx_fails_permanently() {
    let f = Fixture::new(Duration::from_secs(1));
    let e = f.targets("nullmx.example", true).expect_err("null MX");
    assert!(e.permanent);
    assert!(e.reason.contains("does not accept mail (null MX)"), "{}", e.reason);
}

#[test]
fn nxdomain_fails_permanently() {
    let f = Fixture::new(Duration::from_secs(1));
    let e = f.targets("nowhere.example", true).expect_err("no such domain");
    assert!(e.permanent);
    assert_eq!(
        e.reason,
        "Host or domain name not found. Name service error for name=nowhere.example type=MX: Host not found"
    );
    let e = f.targets("nowhere.example", false).expect_err("no such host");
    assert!(e.permanent, "{e:?}");
}

#[test]
fn a_name_without_addresses_fails_permanently() {
    let f = Fixture::new(Duration::from_secs(1));
    let e = f.targets("noaddress.example", true).expect_err("no address");
    assert!(e.permanent, "{e:?}");
    assert!(e.reason.contains("no data record"), "{}", e.reason);
}

#[test]
fn servfail_fails_temporarily() {
    let f = Fixture::new(Duration::from_secs(1));
    let e = f.targets("broken.example", true).expect_err("server failure");
    assert!(!e.permanent);
    assert!(e.reason.contains("type=MX: Host not found, try again"), "{}", e.reason);
    let e = f.targets("broken.example", false).expect_err("server failure");
    assert!(!e.permanent, "{e:?}");
}

#[test]
fn an_mx_without_address_is_skipped() {
    let f = Fixture::new(Duration::from_secs(1));
    let t = f.targets("ghostmx.example", true).expect("targets");
    assert_eq!(hosts(&t), ["mx1.example"]);
    let e = f.targets("allghosts.example", true).expect_err("no MX resolves");
    assert!(e.permanent, "{e:?}");
    assert!(e.reason.contains("name=ghost"), "{}", e.reason);
}

#[test]
fn hosts_and_addresses_are_bounded() {
    let f = Fixture::new(Duration::from_secs(1));
    let t = f.targets("many.example", true).expect("targets");
    assert_eq!(t.len(), MAX_ADDRESSES);
    let distinct: HashSet<&str> = hosts(&t).into_iter().collect();
    assert!(distinct.len() <= MAX_HOSTS);
    assert_eq!(hosts(&t)[..4], ["h1.example", "h1.example", "h1.example", "h2.example"]);
}

#[test]
fn a_dead_first_mx_is_skipped_for_the_second() {
    let f = Fixture::new(Duration::from_secs(2));
    let (l, port) = listener();
    let conn = f.connect("fallback.example", port, true).expect("connected");
    assert_eq!(conn.host, "alive.example");
    assert_reaches(&conn, &l);
}

#[test]
fn an_address_literal_is_connected_as_it_is() {
    let f = Fixture::new(Duration::from_secs(1));
    let (l, port) = listener();
    let conn = f.connect("127.0.0.1", port, false).expect("connected");
    assert_eq!(conn.host, "127.0.0.1");
    assert_eq!(conn.addr, SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    assert_reaches(&conn, &l);
    // An MX next hop that is an address is a literal too (no lookup).
    let t = f.targets("[192.0.2.7]", true).expect("literal");
    assert_eq!(t, [Target { host: String::from("192.0.2.7"), ip: IpAddr::V4(v4(7)) }]);
}

#[test]
fn a_refused_connection_says_where_and_why() {
    let f = Fixture::new(Duration::from_secs(1));
    let port = closed_port();
    let e = f.connect("127.0.0.1", port, false).expect_err("refused");
    assert!(!e.permanent);
    assert_eq!(e.reason, format!("connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused"));
    let e = f.connect("implicit.example", port, true).expect_err("refused");
    assert_eq!(e.reason, format!("connect to implicit.example[127.0.0.1]:{port}: Connection refused"));
}

/// A listener whose accept queue is full drops new SYNs (Linux), so a
/// connection attempt hangs until the connector's timeout.
#[cfg(target_os = "linux")]
#[test]
fn a_silent_address_times_out_within_the_bound() {
    use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, socket};
    use std::time::Instant;
    let sock = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).expect("socket");
    bind(std::os::fd::AsRawFd::as_raw_fd(&sock), &SockaddrIn::new(127, 0, 0, 1, 0)).expect("bind");
    listen(&sock, Backlog::new(0).expect("backlog")).expect("listen");
    let l = TcpListener::from(sock);
    let port = l.local_addr().expect("address").port();
    // Fill the queue (its first connection completes; later SYNs are dropped).
    let mut fillers = Vec::new();
    for _ in 0..2 {
        let s = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_NONBLOCK, None).expect("socket");
        let _ = nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&s), &SockaddrIn::new(127, 0, 0, 1, port));
        fillers.push(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    let f = Fixture::new(Duration::from_millis(300));
    let started = Instant::now();
    let e = f.connect("127.0.0.1", port, false).expect_err("timed out");
    let took = started.elapsed();
    assert_eq!(e.reason, format!("connect to 127.0.0.1[127.0.0.1]:{port}: Connection timed out"));
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "took {took:?}");
    drop((l, fillers));
}

#[test]
fn bad_host_names_fail_permanently() {
    let f = Fixture::new(Duration::from_secs(1));
    for bad in ["a..b", "", &"x".repeat(300)] {
        let e = f.targets(bad, true).expect_err("bad name");
        assert!(e.permanent, "{bad}: {e:?}");
    }
}

/// Runs `serve_smtp` on one end of a channel pair and gives the other.
fn serve_pair(
    f: &Fixture,
    local: &LocalSet,
    max_in_flight: usize,
) -> (Rc<Link>, tokio::task::JoinHandle<Result<(), String>>) {
    let (ours, theirs) = crate::ipc::pair().expect("pair");
    let _context = f.rt.enter();
    let client = Link::own(Channel::new(ours)).expect("client link");
    let server = Link::own(Channel::new(theirs)).expect("server link");
    let connector = Rc::clone(&f.connector);
    let service = Service::new(connector, max_in_flight, Box::new(|w| panic!("warning: {w}")));
    let task = local.spawn_local(serve_smtp(service, server));
    (client, task)
}

#[test]
fn connect_over_the_channel_returns_a_connected_socket() {
    let f = Fixture::new(Duration::from_secs(2));
    let local = LocalSet::new();
    let (client, task) = serve_pair(&f, &local, MAX_IN_FLIGHT);
    let (l, port) = listener();
    let refused = closed_port();
    let (ok, failed) = f.rt.block_on(local.run_until(async {
        let nexthop = msg::Target::Inet(NexthopSpec { host: "fallback.example".into(), port: Some(port), mx: true });
        client.send(&SmtpToConnector::Connect { req: 7, nexthop, default_port: 25 }, &[]).expect("send");
        let ok = client.recv::<ConnectorToSmtp>().await.expect("answer");
        let nexthop = msg::Target::Inet(NexthopSpec { host: "127.0.0.1".into(), port: None, mx: false });
        client.send(&SmtpToConnector::Connect { req: 8, nexthop, default_port: refused }, &[]).expect("send");
        let failed = client.recv::<ConnectorToSmtp>().await.expect("answer");
        (ok, failed)
    }));
    let (msg, mut fds) = ok;
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    assert_eq!(msg, ConnectorToSmtp::Connected { req: 7, host: "alive.example".into(), addr: Some(addr) });
    assert_eq!(fds.len(), 1);
    let stream = TcpStream::from(fds.remove(0));
    assert_eq!(stream.peer_addr().expect("peer"), addr);
    let conn = Connection { host: String::new(), addr, stream };
    assert_reaches(&conn, &l);
    let (msg, fds) = failed;
    assert!(fds.is_empty());
    let reason = format!("connect to 127.0.0.1[127.0.0.1]:{refused}: Connection refused");
    assert_eq!(msg, ConnectorToSmtp::Failed { req: 8, reason, permanent: false });
    // Closing the channel ends its service without error.
    drop(client);
    assert_eq!(f.rt.block_on(local.run_until(task)).expect("joined"), Ok(()));
}

#[test]
fn requests_beyond_the_bound_fail_temporarily() {
    let f = Fixture::new(Duration::from_secs(1));
    let local = LocalSet::new();
    let (client, _task) = serve_pair(&f, &local, 0);
    let (msg, _) = f.rt.block_on(local.run_until(async {
        let nexthop = msg::Target::Inet(NexthopSpec { host: "127.0.0.1".into(), port: Some(closed_port()), mx: false });
        client.send(&SmtpToConnector::Connect { req: 1, nexthop, default_port: 25 }, &[]).expect("send");
        client.recv::<ConnectorToSmtp>().await.expect("answer")
    }));
    match msg {
        ConnectorToSmtp::Failed { req: 1, permanent: false, reason } => {
            assert!(reason.contains("too many"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unexpected_message_ends_the_service() {
    let f = Fixture::new(Duration::from_secs(1));
    let local = LocalSet::new();
    let (client, task) = serve_pair(&f, &local, MAX_IN_FLIGHT);
    let end = f.rt.block_on(local.run_until(async {
        // Not an SmtpToConnector: does not decode.
        client.send(&FromMaster::Stop, &[]).expect("send");
        task.await.expect("joined")
    }));
    assert!(end.is_err(), "{end:?}");
}

#[test]
fn unix_sockets_of_the_table_only_and_a_missing_directory_says_so() {
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    let root = std::env::temp_dir().join(format!("mta-connector-unix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (here, missing) = (root.join("here"), root.join("missing"));
    std::fs::create_dir_all(&here).expect("mkdir");
    let listener = UnixListener::bind(here.join("lmtp")).expect("listen");
    let mut map = crate::qmgr::schedule::TransportMap::default();
    map.insert("a.example", &format!("lmtp:unix:{}/lmtp", here.display())).expect("entry");
    map.insert("b.example", &format!("lmtp:unix:{}/lmtp", missing.display())).expect("entry");
    let fd = OwnedFd::from(std::fs::File::open(&here).expect("open the directory"));
    let sockets = UnixSockets::new(map.socket_dirs(), vec![(here.clone(), fd)]);
    assert_eq!(sockets.missing(), vec![missing.as_path()]);
    assert!(sockets.knows(&here.join("lmtp")) && !sockets.knows(&here.join("other")));

    let conn = sockets.connect(&here.join("lmtp")).expect("connected");
    let (_accepted, _) = listener.accept().expect("accept");
    let peer = std::os::unix::net::UnixStream::from(conn).peer_addr().expect("peer");
    assert_eq!(peer.as_pathname(), Some(here.join("lmtp").as_path()));

    let reason = |p: PathBuf| sockets.connect(&p).expect_err("refused").reason;
    assert_eq!(
        reason(here.join("other")),
        format!("connect to {}/other: not a socket of the transport table", here.display())
    );
    assert!(
        reason(missing.join("lmtp")).contains(&format!("its directory {} did not exist", missing.display())),
        "{}",
        reason(missing.join("lmtp"))
    );
    drop(listener);
    std::fs::remove_file(here.join("lmtp")).expect("remove the socket");
    assert_eq!(reason(here.join("lmtp")), format!("connect to {}/lmtp: No such file or directory", here.display()));
    std::fs::remove_dir_all(&root).expect("clean up");
}

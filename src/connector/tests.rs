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
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, PTR};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::task::LocalSet;

use super::resolve::{MAX_PTR_NAMES, Target, valid_hostname};
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

fn ptr(name: &str) -> RData {
    RData::PTR(PTR(Name::from_ascii(name).expect("PTR name")))
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
        rec("selfmx.example.", RecordType::MX, vec![mx(10, "mx1.example."), mx(5, "alive.example.")]),
        // We are the backup (20) of a primary whose address cannot be
        // found now.
        rec("backup.example.", RecordType::MX, vec![mx(10, "broken.example."), mx(20, "alive.example.")]),
        // This host (alive) as good as h1, whose three addresses fill a
        // limit of three.
        rec("peers.example.", RecordType::MX, vec![mx(10, "h1.example."), mx(10, "alive.example.")]),
        rec("ghostmx.example.", RecordType::MX, vec![mx(5, "ghost.example."), mx(10, "mx1.example.")]),
        rec("allghosts.example.", RecordType::MX, vec![mx(5, "ghost.example."), mx(10, "ghost2.example.")]),
        rec("noaddress.example.", RecordType::TXT, Vec::new()),
        // Addresses no mail server has, one of them IPv4-mapped.
        rec("mapped.example.", RecordType::AAAA, vec![aaaa("::ffff:0.0.0.0".parse().expect("v6"))]),
        rec("mapped.example.", RecordType::A, vec![a(Ipv4Addr::new(0, 1, 2, 3)), a(Ipv4Addr::new(224, 0, 0, 1))]),
        rec("mapped2.example.", RecordType::AAAA, vec![aaaa("::ffff:192.0.2.1".parse().expect("v6"))]),
        rec("many.example.", RecordType::MX, (1..=8).map(|i| mx(i, &format!("h{i}.example."))).collect()),
        rec("h1.example.", RecordType::A, vec![a(v4(11)), a(v4(12)), a(v4(13))]),
        rec("h2.example.", RecordType::A, vec![a(v4(21)), a(v4(22)), a(v4(23))]),
        rec("h3.example.", RecordType::A, vec![a(v4(31)), a(v4(32)), a(v4(33))]),
        rec("h4.example.", RecordType::A, vec![a(v4(41)), a(v4(42)), a(v4(43))]),
        rec("h5.example.", RecordType::A, vec![a(v4(51))]),
        rec("h6.example.", RecordType::A, vec![a(v4(61))]),
        rec("h7.example.", RecordType::A, vec![a(v4(71))]),
        rec("h8.example.", RecordType::A, vec![a(v4(81))]),
        // Reverse: 192.0.2.1 is mx1 (confirmed); .2 claims to be mx1
        // (not confirmed); .3 has a numeric name, then a good one; .4 names
        // a host that does not exist; .5 has no PTR; .6's reverse zone
        // fails; 2001:db8::2 is mx2 (confirmed over AAAA).
        rec("1.2.0.192.in-addr.arpa.", RecordType::PTR, vec![ptr("MX1.example.")]),
        rec("2.2.0.192.in-addr.arpa.", RecordType::PTR, vec![ptr("mx1.example.")]),
        rec("3.2.0.192.in-addr.arpa.", RecordType::PTR, vec![ptr("1.2.3.4."), ptr("three.example.")]),
        rec("three.example.", RecordType::A, vec![a(v4(3))]),
        rec("13.2.0.192.in-addr.arpa.", RecordType::PTR, vec![ptr("h1.example.")]),
        rec("4.2.0.192.in-addr.arpa.", RecordType::PTR, vec![ptr("ghost.example.")]),
        ("6.2.0.192.in-addr.arpa.".to_string(), RecordType::PTR, Answer::Code(ResponseCode::ServFail)),
        rec(
            "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
            RecordType::PTR,
            vec![ptr("mx2.example.")],
        ),
        // 192.0.2.7: four names that are not its, then its own, one too many.
        rec(
            "7.2.0.192.in-addr.arpa.",
            RecordType::PTR,
            ["h1", "h2", "h3", "h4", "seven"].iter().map(|h| ptr(&format!("{h}.example."))).collect(),
        ),
        rec("seven.example.", RecordType::A, vec![a(v4(7))]),
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
        Fixture::with_limits(connect_timeout, Limits::default())
    }

    /// A fixture whose resolver tries at most these many hosts and addresses.
    fn with_limits(connect_timeout: Duration, limits: Limits) -> Fixture {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().expect("runtime");
        let server = DnsServer::start(zone());
        let dns = Dns { servers: vec![server.addr], timeout: Duration::from_secs(2), attempts: 1, ..Dns::default() };
        let (mut resolver, warning) = {
            let _context = rt.enter();
            Resolver::new(&dns).expect("resolver")
        };
        assert_eq!(warning, None);
        resolver.set_limits(limits);
        Fixture { rt, _server: server, connector: Rc::new(Connector::new(resolver, connect_timeout)) }
    }

    /// The same fixture, its connector knowing this host's listeners.
    fn listening_on(mut self, listeners: &[SocketAddr]) -> Fixture {
        let c = Rc::try_unwrap(self.connector).ok().expect("the fixture's only connector");
        self.connector = Rc::new(c.with_own(own::Own::new(listeners, &[])));
        self
    }

    fn targets(&self, host: &str, mx: bool) -> Result<Vec<Target>, Failure> {
        let nexthop = NexthopSpec { host: host.to_string(), port: None, mx };
        self.rt.block_on(self.connector.resolver().targets(&nexthop))
    }

    fn connect(&self, host: &str, port: u16, mx: bool) -> Result<Connection, Failure> {
        self.connect_skipping(host, port, mx, &[])
    }

    fn connect_skipping(&self, host: &str, port: u16, mx: bool, skip: &[IpAddr]) -> Result<Connection, Failure> {
        let nexthop = NexthopSpec { host: host.to_string(), port: Some(port), mx };
        self.rt.block_on(self.connector.connect(&nexthop, 25, skip))
    }

    fn client_name(&self, ip: &str) -> Result<String, Option<String>> {
        self.rt.block_on(self.connector.resolver().client_name(ip.parse().expect("address")))
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
    assert_eq!(e.dsn, "5.1.10");
    assert!(e.reason.contains("does not accept mail (null MX)"), "{}", e.reason);
}

#[test]
fn nxdomain_fails_permanently() {
    let f = Fixture::new(Duration::from_secs(1));
    let e = f.targets("nowhere.example", true).expect_err("no such domain");
    assert!(e.permanent);
    assert_eq!(e.dsn, "5.4.4");
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
    assert_eq!(e.dsn, "4.4.3");
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

/// An address that reaches this host or nobody (::ffff:0.0.0.0, which
/// Linux connects to 127.0.0.1; 0.0.0.0/8; multicast) is no mail
/// server's; an IPv4-mapped one is its IPv4 address.
#[test]
fn addresses_no_mail_server_has_are_left_out() {
    let f = Fixture::new(Duration::from_secs(1));
    assert!(f.targets("mapped.example", false).is_err(), "{:?}", f.targets("mapped.example", false));
    let t = f.targets("mapped2.example", false).expect("targets");
    assert_eq!(t.iter().map(|t| t.ip).collect::<Vec<_>>(), [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))]);
}

#[test]
fn hosts_and_addresses_are_bounded() {
    let f = Fixture::new(Duration::from_secs(1));
    let t = f.targets("many.example", true).expect("targets");
    let limits = Limits::default();
    assert_eq!(t.len(), limits.addresses);
    let distinct: HashSet<&str> = hosts(&t).into_iter().collect();
    assert!(distinct.len() <= limits.hosts);
    assert_eq!(hosts(&t)[..4], ["h1.example", "h1.example", "h1.example", "h2.example"]);
}

#[test]
fn the_bounds_are_configurable() {
    // Two hosts: h1's three addresses, then h2's three; never h3.
    let f = Fixture::with_limits(Duration::from_secs(1), Limits { hosts: 2, addresses: 100 });
    let t = f.targets("many.example", true).expect("targets");
    assert_eq!(hosts(&t), ["h1.example", "h1.example", "h1.example", "h2.example", "h2.example", "h2.example"]);
    // Four addresses: all of h1's and the first of h2's.
    let f = Fixture::with_limits(Duration::from_secs(1), Limits { hosts: 100, addresses: 4 });
    let t = f.targets("many.example", true).expect("targets");
    let ips: Vec<IpAddr> = t.iter().map(|t| t.ip).collect();
    assert_eq!(ips, [v4(11), v4(12), v4(13), v4(21)].map(IpAddr::V4));
    // One host: all eight listed, only the best is looked at.
    let f = Fixture::with_limits(Duration::from_secs(1), Limits { hosts: 1, addresses: 100 });
    assert_eq!(hosts(&f.targets("many.example", true).expect("targets")), ["h1.example"; 3]);
    // A host that is not an MX is bounded by the addresses too.
    let f = Fixture::with_limits(Duration::from_secs(1), Limits { hosts: 1, addresses: 2 });
    assert_eq!(f.targets("h1.example", false).expect("targets").len(), 2);
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
fn mail_whose_best_mx_host_is_this_one_loops_back_to_myself() {
    let (l, port) = listener();
    let f = Fixture::new(Duration::from_secs(2)).listening_on(&[SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)]);
    // We are the backup MX (20): only the better host (10) is tried.
    let e = f.connect("fallback.example", port, true).expect_err("only the dead one");
    assert_eq!((e.permanent, e.reason), (false, format!("connect to dead.example[::1]:{port}: Connection refused")));
    // We are the best MX (5): the worse one (10) is no use either.
    let e = f.connect("selfmx.example", port, true).expect_err("a loop");
    assert_eq!(
        (e.permanent, e.dsn, e.reason.as_str()),
        (true, "5.4.6", "mail for selfmx.example loops back to myself")
    );
    // We are the backup MX and the primary's address lookup failed: no
    // loop, the mail waits for the primary.
    let e = f.connect("backup.example", port, true).expect_err("no primary now");
    assert!(!e.permanent, "{e:?}");
    assert!(e.reason.starts_with("unable to find the primary relay for backup.example: "), "{}", e.reason);
    // An implicit MX counts as preference 0.
    let e = f.connect("implicit.example", port, true).expect_err("a loop");
    assert_eq!((e.permanent, e.dsn), (true, "5.4.6"));
    // An address literal from a mail address is its own MX: this host's
    // address is a loop; one no mail server has is refused.
    let e = f.connect("127.0.0.1", port, true).expect_err("a loop");
    assert_eq!((e.permanent, e.dsn), (true, "5.4.6"), "{e:?}");
    let e = f.connect("::ffff:127.0.0.1", port, true).expect_err("a loop");
    assert_eq!((e.permanent, e.dsn), (true, "5.4.6"), "{e:?}");
    let e = f.connect("0.0.0.0", port, true).expect_err("nobody's");
    assert!(e.permanent && e.reason.contains("not an address a mail server can have"), "{e:?}");
    // A host named without MX lookup is the administrator's word.
    let conn = f.connect("alive.example", port, false).expect("connected");
    assert_reaches(&conn, &l);
    let conn = f.connect("127.0.0.1", port, false).expect("a literal next hop, loopback or not");
    assert_reaches(&conn, &l);
    // Another port on this host is another server.
    let (other, other_port) = listener();
    let conn = f.connect("selfmx.example", other_port, true).expect("connected");
    assert_eq!(conn.host, "alive.example");
    assert_reaches(&conn, &other);
}

#[test]
fn this_host_left_out_by_the_limits_still_keeps_its_peers_off_the_list() {
    // h1 and this host are both MX 10: delivering to h1 could come back
    // here. Whichever comes first (they are shuffled), the limits leave
    // the other out; the mail must still loop back, h1 never tried.
    let (_l, port) = listener();
    let own = [SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)];
    for limits in [Limits { hosts: 100, addresses: 3 }, Limits { hosts: 1, addresses: 100 }] {
        let f = Fixture::with_limits(Duration::from_secs(1), limits).listening_on(&own);
        for _ in 0..8 {
            let e = f.connect("peers.example", port, true).expect_err("a loop");
            assert_eq!(
                (e.permanent, e.dsn, e.reason.as_str()),
                (true, "5.4.6", "mail for peers.example loops back to myself"),
                "{limits:?}"
            );
        }
    }
}

#[test]
fn addresses_the_delivery_tried_are_passed_over() {
    let f = Fixture::new(Duration::from_secs(2));
    let (l, port) = listener();
    let (dead, alive) = (IpAddr::V6(Ipv6Addr::LOCALHOST), IpAddr::V4(Ipv4Addr::LOCALHOST));
    // Skipping the dead first MX: straight to the second.
    let conn = f.connect_skipping("fallback.example", port, true, &[dead]).expect("connected");
    assert_eq!((conn.host.as_str(), conn.addr.ip()), ("alive.example", alive));
    assert_reaches(&conn, &l);
    // Skipping the live one: only the dead one is tried, though the live
    // one listens.
    let e = f.connect_skipping("fallback.example", port, true, &[alive]).expect_err("dead");
    assert!(!e.permanent);
    assert_eq!(e.reason, format!("connect to dead.example[::1]:{port}: Connection refused"));
    // Nothing left.
    let e = f.connect_skipping("fallback.example", port, true, &[alive, dead]).expect_err("none left");
    assert!(!e.permanent);
    assert_eq!(e.reason, "connect to fallback.example: no other address to connect to");
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
    assert_eq!(t, [Target { host: String::from("192.0.2.7"), ip: IpAddr::V4(v4(7)), preference: None }]);
}

#[test]
fn a_refused_connection_says_where_and_why() {
    let f = Fixture::new(Duration::from_secs(1));
    let port = closed_port();
    let e = f.connect("127.0.0.1", port, false).expect_err("refused");
    assert!(!e.permanent);
    assert_eq!(e.dsn, "4.4.1");
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
    let service = Service::new(connector, max_in_flight, 1, Box::new(|w| panic!("warning: {w}")));
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
        client
            .send(&SmtpToConnector::Connect { req: 7, nexthop, default_port: 25, skip: Vec::new() }, &[])
            .expect("send");
        let ok = client.recv::<ConnectorToSmtp>().await.expect("answer");
        let nexthop = msg::Target::Inet(NexthopSpec { host: "127.0.0.1".into(), port: None, mx: false });
        client
            .send(&SmtpToConnector::Connect { req: 8, nexthop, default_port: refused, skip: Vec::new() }, &[])
            .expect("send");
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
    assert_eq!(msg, ConnectorToSmtp::Failed { req: 8, reason, permanent: false, dsn: "4.4.1".into() });
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
        client
            .send(&SmtpToConnector::Connect { req: 1, nexthop, default_port: 25, skip: Vec::new() }, &[])
            .expect("send");
        client.recv::<ConnectorToSmtp>().await.expect("answer")
    }));
    match msg {
        ConnectorToSmtp::Failed { req: 1, permanent: false, reason, .. } => {
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
fn a_client_name_is_its_forward_confirmed_ptr_name() {
    let f = Fixture::new(Duration::from_secs(1));
    // Confirmed over A, lower-cased, without the final dot; and over AAAA.
    assert_eq!(f.client_name("192.0.2.1"), Ok(String::from("mx1.example")));
    assert_eq!(f.client_name("2001:db8::2"), Ok(String::from("mx2.example")));
    // An IPv4 client on an IPv6 socket is its IPv4 address.
    assert_eq!(f.client_name("::ffff:192.0.2.1"), Ok(String::from("mx1.example")));
    // A name among several addresses.
    assert_eq!(f.client_name("192.0.2.13"), Ok(String::from("h1.example")));
    // A numeric name is skipped for the next.
    assert_eq!(f.client_name("192.0.2.3"), Ok(String::from("three.example")));
}

#[test]
fn a_client_name_that_does_not_check_out_is_none() {
    let f = Fixture::new(Duration::from_secs(1));
    // mx1.example is 192.0.2.1, not .2.
    assert_eq!(
        f.client_name("192.0.2.2"),
        Err(Some(String::from("hostname mx1.example does not resolve to address 192.0.2.2")))
    );
    assert_eq!(
        f.client_name("192.0.2.4"),
        Err(Some(String::from(
            "hostname ghost.example does not resolve to address 192.0.2.4: Name or service not known"
        )))
    );
    // No PTR, and a reverse zone that fails: no name, nothing to warn about.
    assert_eq!(f.client_name("192.0.2.5"), Err(None));
    assert_eq!(f.client_name("192.0.2.6"), Err(None));
    // Five PTR names, only the fifth this address's: it is beyond the
    // names looked at.
    const { assert!(MAX_PTR_NAMES == 4) };
    assert_eq!(
        f.client_name("192.0.2.7"),
        Err(Some(String::from("hostname h1.example does not resolve to address 192.0.2.7")))
    );
}

#[test]
fn host_names_for_clients_are_checked() {
    for good in ["mx1.example", "a", "a-b.c_d.example", "xn--bcher-kva.example", "x.y2"] {
        assert!(valid_hostname(good), "{good}");
    }
    let long = format!("{}.example", "a".repeat(64));
    let longer = ["a"; 130].join(".");
    for bad in
        ["", "1.2.3.4", "a.123", "-a.example", "a-.example", "a..b", "a b.example", "[127.0.0.1]", &long, &longer]
    {
        assert!(!valid_hostname(bad), "{bad}");
    }
}

/// The warnings a service logged.
type Warnings = Rc<std::cell::RefCell<Vec<String>>>;

/// Runs `serve_smtpd` on one end of a channel pair, with at most
/// `max_reverse` lookups at once, warnings collected.
fn serve_smtpd_pair(
    f: &Fixture,
    local: &LocalSet,
    max_reverse: usize,
) -> (Rc<Link>, tokio::task::JoinHandle<Result<(), String>>, Warnings) {
    let (ours, theirs) = crate::ipc::pair().expect("pair");
    let _context = f.rt.enter();
    let client = Link::own(Channel::new(ours)).expect("client link");
    let server = Link::own(Channel::new(theirs)).expect("server link");
    let warnings = Rc::new(std::cell::RefCell::new(Vec::new()));
    let w = Rc::clone(&warnings);
    let warn = Box::new(move |text: &str| w.borrow_mut().push(text.to_string()));
    let service = Service::new(Rc::clone(&f.connector), MAX_IN_FLIGHT, max_reverse, warn);
    let task = local.spawn_local(serve_smtpd(service, server));
    (client, task, warnings)
}

fn ask_name(client: &Rc<Link>, req: u64, addr: &str) {
    let msg = SmtpdToConnector::ClientName { req, addr: addr.parse().expect("address") };
    client.send(&msg, &[]).expect("send");
}

#[test]
fn client_names_over_the_channel() {
    let f = Fixture::new(Duration::from_secs(1));
    let local = LocalSet::new();
    let (client, task, warnings) = serve_smtpd_pair(&f, &local, 10);
    let answers = f.rt.block_on(local.run_until(async {
        ask_name(&client, 1, "192.0.2.1");
        ask_name(&client, 2, "192.0.2.2");
        ask_name(&client, 3, "192.0.2.5");
        let mut got = Vec::new();
        for _ in 0..3 {
            let (msg, fds) = client.recv::<ConnectorToSmtpd>().await.expect("answer");
            assert!(fds.is_empty());
            got.push(msg);
        }
        got
    }));
    for (req, want) in [(1, Some(String::from("mx1.example"))), (2, None), (3, None)] {
        let answer = ConnectorToSmtpd::ClientName { req, name: want };
        assert!(answers.contains(&answer), "{answer:?} not in {answers:?}");
    }
    // The name that did not check out is logged, as Postfix does.
    assert_eq!(*warnings.borrow(), ["hostname mx1.example does not resolve to address 192.0.2.2"]);
    // A message that is not a request ends the service.
    f.rt.block_on(local.run_until(async { client.send(&FromMaster::Stop, &[]).expect("send") }));
    assert!(f.rt.block_on(local.run_until(task)).expect("joined").is_err());
}

#[test]
fn client_names_beyond_the_bound_are_none_at_once() {
    let f = Fixture::new(Duration::from_secs(1));
    let local = LocalSet::new();
    let (client, _task, _) = serve_smtpd_pair(&f, &local, 1);
    let answers = f.rt.block_on(local.run_until(async {
        // The first takes the one slot; the second is answered before it.
        ask_name(&client, 1, "192.0.2.1");
        ask_name(&client, 2, "192.0.2.1");
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(client.recv::<ConnectorToSmtpd>().await.expect("answer").0);
        }
        got
    }));
    assert_eq!(
        answers,
        [
            ConnectorToSmtpd::ClientName { req: 2, name: None },
            ConnectorToSmtpd::ClientName { req: 1, name: Some(String::from("mx1.example")) }
        ]
    );
}

/// RFC 6761: the resolver answers for loopback itself, never asking a
/// server (so the regress cases, whose clients are on loopback, see
/// `localhost` without a DNS server).
#[test]
fn loopback_clients_are_localhost_without_asking() {
    let f = Fixture::new(Duration::from_secs(1));
    assert_eq!(f.client_name("127.0.0.1"), Ok(String::from("localhost")));
    assert_eq!(f.client_name("::1"), Ok(String::from("localhost")));
    assert_eq!(
        f.client_name("127.0.0.2"),
        Err(Some(String::from("hostname localhost does not resolve to address 127.0.0.2")))
    );
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
    let e = sockets.connect(&missing.join("lmtp")).expect_err("a socket in a directory master could not open");
    assert!(e.reason.contains("did not exist when the connector started"), "{}", e.reason);
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

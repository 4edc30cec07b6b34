//! TLS policies against the scripted server: verification (a trusted
//! chain, an unknown authority, an expired certificate, another name, an
//! address literal), the per-next-hop table, verified implicit TLS to the
//! relay host, what the log says, and plaintext injected after the 220 to
//! STARTTLS.

use super::certs::{CA, EXPIRED, EXPIRED_KEY, GOOD, GOOD_KEY, WRONG, WRONG_KEY};
use super::*;
use crate::config::client_tls::parse_ca_pem;
use crate::config::delivery::{ClientTls, RelayTls};

/// A server that offers STARTTLS with this certificate.
fn starttls_server(connections: usize, cert: &'static str, key: &'static str) -> Server {
    let script: Script = Arc::new(|cmd: &str| match cmd {
        "EHLO client.test" => say("250-mx.test\r\n250-STARTTLS\r\n250 8BITMIME"),
        "STARTTLS" => Answer::StartTls(String::from("220 2.0.0 Ready to start TLS\r\n")),
        c => mta(&[])(c),
    });
    Server::start_with(connections, script, cert, key)
}

fn verifying(ca: bool) -> DeliveryConf {
    let mut c = conf();
    c.smtp.tls = ClientTls::Verify;
    if ca {
        c.tls_ca = parse_ca_pem(CA.as_bytes()).expect("CA");
    }
    c
}

/// The one recipient's report of job 1, delivered to `server` with `conf`.
fn one(conf: DeliveryConf, server: &Server) -> (Harness, SiteReport, RecipientReport) {
    let mut h = Harness::new(conf, Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    let (site, mut rs) = h.report(1);
    (h, site, rs.remove(0))
}

/// Deferred for a certificate failure, no transaction started.
fn refused(cert: &'static str, key: &'static str, ca: bool, why: &str) {
    let server = starttls_server(1, cert, key);
    let (mut h, site, r) = one(verifying(ca), &server);
    assert_eq!((&r.status, r.dsn.as_str()), (&RecipientStatus::Deferred, "4.7.5"), "{r:?}");
    assert!(r.reason.starts_with("TLS handshake failed: the certificate of mx.test "), "{}", r.reason);
    assert!(r.reason.contains(why), "{}", r.reason);
    assert!(matches!(site, SiteReport::Unreachable(_)), "{site:?}");
    assert!(!h.logs.iter().any(|l| l.contains("TLS connection established")), "{:#?}", h.logs);
    assert!(h.logs.iter().any(|l| l.contains("status=deferred (TLS handshake failed: the certificate of mx.test")));
    h.run_until(|h| h.agent.sessions.is_empty());
    let t = server.transcripts();
    assert!(!t[0].commands.iter().any(|c| c.starts_with("MAIL")), "{:?}", t[0].commands);
    assert_eq!(t[0].commands.iter().filter(|c| c.starts_with("EHLO")).count(), 1, "{:?}", t[0].commands);
}

#[test]
fn verify_delivers_over_a_chain_to_a_configured_authority() {
    let server = starttls_server(1, GOOD, GOOD_KEY);
    let (mut h, _, r) = one(verifying(true), &server);
    assert!(delivered(&r), "{r:?}");
    let port = server.addr.port();
    let est = format!("Verified TLS connection established to mx.test[127.0.0.1]:{port}: TLSv1.3 with cipher TLS13_");
    assert!(h.logs.iter().any(|l| l.starts_with(&est)), "{:#?}", h.logs);
    let line = h.logs.iter().find(|l| l.contains("to=<a@example.net>")).expect("delivery line");
    let field = format!("relay=mx.test[127.0.0.1]:{port}, tls=TLSv1.3:TLS13_");
    assert!(line.contains(&field) && line.contains(":verified, delay="), "{line}");
    h.close_sessions();
    assert!(server.transcripts()[0].tls);
}

#[test]
fn verify_refuses_an_unknown_authority() {
    refused(GOOD, GOOD_KEY, false, "is not issued by a trusted certificate authority");
}

#[test]
fn verify_refuses_an_expired_certificate() {
    refused(EXPIRED, EXPIRED_KEY, true, "has expired (not valid after ");
}

#[test]
fn verify_refuses_a_certificate_for_another_name() {
    refused(WRONG, WRONG_KEY, true, "does not name mx.test (it names wrong.mx.test)");
}

#[test]
fn opportunistic_takes_any_certificate_and_says_untrusted() {
    let server = starttls_server(1, EXPIRED, EXPIRED_KEY);
    let mut c = conf();
    c.smtp.tls = ClientTls::Opportunistic;
    let (mut h, _, r) = one(c, &server);
    assert!(delivered(&r), "{r:?}");
    assert!(h.logs.iter().any(|l| l.starts_with("Untrusted TLS connection established to mx.test[127.0.0.1]")));
    let line = h.logs.iter().find(|l| l.contains("to=<a@example.net>")).expect("delivery line");
    assert!(line.contains(", tls=TLSv1.3:TLS13_") && line.contains(":untrusted, delay="), "{line}");
    h.close_sessions();
}

#[test]
fn plaintext_delivery_line_has_no_tls_field() {
    let server = Server::start(1, mta(&[]));
    let (mut h, _, r) = one(conf(), &server);
    assert!(delivered(&r), "{r:?}");
    let line = h.logs.iter().find(|l| l.contains("to=<a@example.net>")).expect("delivery line");
    assert!(!line.contains("tls="), "{line}");
    h.close_sessions();
}

#[test]
fn the_table_sets_the_level_of_its_next_hop_only() {
    // example.net verifies (and has no trusted authority: deferred);
    // other.example is opportunistic by smtp.tls (delivered).
    let server = starttls_server(2, GOOD, GOOD_KEY);
    let mut c = conf();
    c.smtp.tls = ClientTls::Opportunistic;
    c.smtp.tls_policy.insert(String::from("example.net"), ClientTls::Verify);
    let mut h = Harness::new(c, Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    let (_, rs) = h.report(1);
    assert_eq!(rs[0].status, RecipientStatus::Deferred);
    assert!(rs[0].reason.contains("not issued by a trusted certificate authority"), "{}", rs[0].reason);
    let (id, fd) = h.queue_file(&["b@other.example"], BODY);
    let other = NexthopSpec { host: "other.example".into(), port: None, mx: true };
    h.send_deliver_to(2, &id, Target::Inet(other), vec![0], Some(fd));
    let (_, rs) = h.report(2);
    assert!(delivered(&rs[0]), "{rs:?}");
    h.close_sessions();
    let t = server.transcripts();
    assert_eq!(t.len(), 2);
}

#[test]
fn verify_to_an_address_literal_defers_without_connecting() {
    let mut h = Harness::new(verifying(true), Connect::Hold);
    let (id, fd) = h.queue_file(&["a@[192.0.2.1]"], BODY);
    let literal = NexthopSpec { host: "192.0.2.1".into(), port: None, mx: false };
    h.send_deliver_to(1, &id, Target::Inet(literal), vec![0], Some(fd));
    let (site, rs) = h.report(1);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Deferred, "4.7.5"));
    assert!(rs[0].reason.contains("192.0.2.1 is an address literal"), "{}", rs[0].reason);
    assert_eq!(site, SiteReport::Unknown);
    assert!(h.requests.is_empty());
}

fn implicit_server(cert: &'static str, key: &'static str) -> Server {
    let script: Script = Arc::new(|cmd: &str| match cmd {
        "CONNECT" => Answer::Implicit,
        c => mta(&[])(c),
    });
    Server::start_with(1, script, cert, key)
}

fn implicit_verify(server: &Server) -> (Harness, Vec<RecipientReport>) {
    let mut c = verifying(true);
    c.smtp.tls = ClientTls::None;
    c.relay.host = Some(format!("[mx.test]:{}", server.addr.port()));
    c.relay.tls = RelayTls::ImplicitVerify;
    let mut h = Harness::new(c, Connect::To(server.addr));
    let (id, fd) = h.queue_file(&["a@example.net"], BODY);
    let relay = NexthopSpec { host: "mx.test".into(), port: Some(server.addr.port()), mx: false };
    h.send_deliver_to(1, &id, Target::Inet(relay), vec![0], Some(fd));
    let (_, rs) = h.report(1);
    (h, rs)
}

#[test]
fn implicit_tls_to_the_relay_host_verified() {
    // The fake connector says it connected to mx.test, the relay's host:
    // that is the name checked.
    let server = implicit_server(GOOD, GOOD_KEY);
    let (mut h, rs) = implicit_verify(&server);
    assert!(delivered(&rs[0]), "{rs:?}");
    assert!(h.logs.iter().any(|l| l.starts_with("Verified TLS connection established to mx.test")));
    h.close_sessions();
    assert!(server.transcripts()[0].tls);
    let server = implicit_server(WRONG, WRONG_KEY);
    let (mut h, rs) = implicit_verify(&server);
    // A cryptographic failure, as when verification fails after STARTTLS.
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Deferred, "4.7.5"), "{rs:?}");
    assert!(rs[0].reason.contains("TLS handshake failed: the certificate of mx.test does not name mx.test"), "{rs:?}");
    h.run_until(|h| h.agent.sessions.is_empty());
    assert!(server.transcripts()[0].commands.is_empty());
}

#[test]
fn plaintext_after_the_220_to_starttls_abandons_the_session() {
    let script: Script = Arc::new(|cmd: &str| match cmd {
        "EHLO client.test" => say("250-mx.test\r\n250-STARTTLS\r\n250 8BITMIME"),
        "STARTTLS" => Answer::StartTls(String::from("220 ready\r\n250 injected\r\n")),
        c => mta(&[])(c),
    });
    let server = Server::start(1, script);
    let mut c = conf();
    c.smtp.tls = ClientTls::Opportunistic;
    let (mut h, site, r) = one(c, &server);
    assert_eq!((&r.status, r.dsn.as_str()), (&RecipientStatus::Deferred, "4.5.0"), "{r:?}");
    assert!(r.reason.contains("14 bytes in plaintext after its 220 reply to STARTTLS"), "{}", r.reason);
    assert!(matches!(site, SiteReport::Unreachable(_)), "{site:?}");
    assert!(!h.logs.iter().any(|l| l.contains("TLS connection established")), "{:#?}", h.logs);
    h.run_until(|h| h.agent.sessions.is_empty());
    let t = server.transcripts();
    assert_eq!(t[0].commands, vec![String::from("EHLO client.test"), String::from("STARTTLS")]);
}

/// A server that offers STARTTLS and fails every handshake; in plain
/// text it takes mail.
fn broken_tls_server(connections: usize) -> Server {
    let script: Script = Arc::new(|cmd: &str| match cmd {
        "EHLO client.test" => say("250-mx.test\r\n250-STARTTLS\r\n250 8BITMIME"),
        "STARTTLS" => Answer::BreakTls(String::from("220 2.0.0 Ready to start TLS\r\n")),
        c => mta(&[])(c),
    });
    Server::start(connections, script)
}

#[test]
fn opportunistic_tls_failing_in_the_handshake_goes_on_in_plaintext() {
    // Postfix's `may`: the same server again, on a new connection,
    // without STARTTLS, in the same delivery.
    let server = broken_tls_server(2);
    let mut c = conf();
    c.smtp.tls = ClientTls::Opportunistic;
    c.smtp.connection_cache_time = Duration::from_secs(10);
    let mut h = Harness::new(c, Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    let (site, rs) = h.report(1);
    assert!(delivered(&rs[0]), "{rs:?}");
    assert_eq!(site, SiteReport::Reached);
    let port = server.addr.port();
    let retry = format!("(trying mx.test[127.0.0.1]:{port} again without TLS)");
    assert!(h.logs.iter().any(|l| l.contains("TLS handshake failed") && l.contains(&retry)), "{:#?}", h.logs);
    // Named as before, no tls= field.
    let line = h.logs.iter().find(|l| l.contains("to=<a@example.net>")).expect("delivery line");
    assert!(line.contains(&format!("relay=mx.test[127.0.0.1]:{port}, delay=")), "{line}");
    assert!(line.contains("status=sent"), "{line}");
    // The second connection went to the same address, as a literal
    // (nothing to resolve, nothing to skip).
    let literal = Target::Inet(NexthopSpec { host: "127.0.0.1".into(), port: Some(port), mx: false });
    assert_eq!(h.requests, vec![(nexthop(), 25), (literal, 25)]);
    // The plaintext session is cached for the next job of the next hop.
    h.deliver(2, &["b@example.net"], BODY);
    assert!(delivered(&h.report(2).1[0]));
    assert_eq!(h.requests.len(), 2);
    h.close_sessions();
    let t = server.transcripts();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].commands, vec!["EHLO client.test", "STARTTLS"]);
    assert!(!t[1].commands.iter().any(|c| c == "STARTTLS"), "{:?}", t[1].commands);
    assert_eq!(t[1].data.len(), 2);
}

#[test]
fn tls_failing_in_the_handshake_is_never_retried_in_plaintext_where_required() {
    for level in [ClientTls::Require, ClientTls::Verify] {
        let server = broken_tls_server(2);
        let mut c = conf();
        c.smtp.tls = level;
        let mut h = Harness::new(c, Connect::To(server.addr));
        h.deliver(1, &["a@example.net"], BODY);
        let (_, rs) = h.report(1);
        assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Deferred, "4.7.5"), "{level:?}");
        assert!(rs[0].reason.starts_with("TLS handshake failed"), "{level:?}: {}", rs[0].reason);
        assert!(!h.logs.iter().any(|l| l.contains("without TLS")), "{level:?}: {:#?}", h.logs);
        h.run_until(|h| h.agent.sessions.is_empty());
        // Only the MX move-on asked again, passing over the address.
        assert_eq!(h.skips, vec![vec![], vec![server.addr.ip()]], "{level:?}");
        assert_eq!(server.transcripts().len(), 1, "{level:?}");
    }
}

#[test]
fn no_plaintext_retry_to_a_relay_host_that_gets_credentials() {
    // Credentials never go in plaintext: a session without TLS could not
    // send the mail, so the handshake's failure defers it at once.
    let server = broken_tls_server(2);
    let mut c = conf();
    c.smtp.tls = ClientTls::Opportunistic;
    c.relay.host = Some(format!("[127.0.0.1]:{}", server.addr.port()));
    c.credentials = Some((String::from("user"), String::from("secret")));
    let mut h = Harness::new(c, Connect::To(server.addr));
    let (id, fd) = h.queue_file(&["a@example.net"], BODY);
    let relay = Target::Inet(NexthopSpec { host: "127.0.0.1".into(), port: Some(server.addr.port()), mx: false });
    h.send_deliver_to(1, &id, relay, vec![0], Some(fd));
    let (_, rs) = h.report(1);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Deferred, "4.7.5"));
    assert_eq!(h.requests.len(), 1);
    h.run_until(|h| h.agent.sessions.is_empty());
    assert_eq!(server.transcripts().len(), 1);
}

#[test]
fn a_plaintext_retry_that_fails_too_reports_the_tls_failure() {
    // The server's handshake fails, and then its plaintext session is
    // refused at the greeting: once each, then deferred for the TLS
    // failure (the first).
    let n = Arc::new(AtomicU32::new(0));
    let count = n.clone();
    let script: Script = Arc::new(move |cmd: &str| match cmd {
        "CONNECT" if count.fetch_add(1, Ordering::SeqCst) > 0 => say("421 4.3.2 busy"),
        "EHLO client.test" => say("250-mx.test\r\n250-STARTTLS\r\n250 8BITMIME"),
        "STARTTLS" => Answer::BreakTls(String::from("220 2.0.0 Ready to start TLS\r\n")),
        c => mta(&[])(c),
    });
    let server = Server::start(3, script);
    let mut c = conf();
    c.smtp.tls = ClientTls::Opportunistic;
    let mut h = Harness::new(c, Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    let (site, rs) = h.report(1);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Deferred, "4.7.5"));
    assert!(rs[0].reason.starts_with("TLS handshake failed"), "{}", rs[0].reason);
    assert!(matches!(site, SiteReport::Unreachable(_)), "{site:?}");
    h.run_until(|h| h.agent.sessions.is_empty());
    // TLS, plaintext, then the move-on finds no other address.
    assert_eq!(h.requests.len(), 3);
    assert_eq!(server.transcripts().len(), 2);
}

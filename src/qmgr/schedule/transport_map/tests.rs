//! The transport table: values and keys as the configuration writes
//! them (each refusal with its reason), lookup order, routing with the
//! table before the default rules (local domains included), the socket
//! directories the connector is given, and LMTP's own process limit in
//! the scheduler.

use std::path::PathBuf;

use super::super::{Destination, Hop, Job, Nexthop, Origin, Routing, Scheduler, Settings, Transport, route};
use super::*;
use crate::queue::{Envelope, Recipient, Time};

fn inet(host: &str, port: Option<u16>, mx: bool) -> Nexthop {
    Nexthop { host: host.into(), port, mx }
}

#[test]
fn values_in_postfix_notation() {
    let cases: Vec<(&str, Route)> = vec![
        ("smtp", Route::Smtp(None)),
        ("smtp:", Route::Smtp(None)),
        ("SMTP:[MX.Partner.Example]:587", Route::Smtp(Some(inet("mx.partner.example", Some(587), false)))),
        ("smtp:mx.example", Route::Smtp(Some(inet("mx.example", None, true)))),
        ("smtp:[gw.example.net]", Route::Smtp(Some(inet("gw.example.net", None, false)))),
        ("lmtp:unix:/var/run/dovecot/lmtp", Route::Lmtp(Hop::Unix(PathBuf::from("/var/run/dovecot/lmtp")))),
        ("lmtp:[127.0.0.1]:24", Route::Lmtp(Hop::Inet(inet("127.0.0.1", Some(24), false)))),
        // LMTP never looks up MX records, bracketed or not.
        ("lmtp:mail.example:2424", Route::Lmtp(Hop::Inet(inet("mail.example", Some(2424), false)))),
        ("lmtp:inet:mail.example:24", Route::Lmtp(Hop::Inet(inet("mail.example", Some(24), false)))),
        ("lmtp:[::1]", Route::Lmtp(Hop::Inet(inet("::1", None, false)))),
        ("local", Route::Local),
    ];
    for (text, want) in cases {
        let got = Route::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(got, want, "{text}");
        // What it prints reads back the same.
        assert_eq!(Route::parse(&got.to_string()), Ok(got.clone()), "{got}");
    }
    assert_eq!(Route::parse("lmtp:mail.example:2424").unwrap().to_string(), "lmtp:[mail.example]:2424");
}

#[test]
fn bad_values_say_why() {
    let long = format!("lmtp:unix:/run/{}", "s".repeat(MAX_SOCKET_PATH));
    let cases = [
        ("", "unknown transport"),
        ("lmtp", "lmtp needs a next hop"),
        ("lmtp:", "lmtp needs a next hop"),
        ("local:host", "local takes no next hop"),
        ("pipe:cmd", "unknown transport `pipe`"),
        ("smtp:a b", "no spaces"),
        (" smtp", "no spaces"),
        ("smtp:[x", "missing `]`"),
        ("smtp:host:0", "the port must be"),
        ("lmtp:unix:relative/sock", "must be an absolute path"),
        ("lmtp:unix:/", "must name a file"),
        ("lmtp:unix:/sock", "not in `/`"),
        ("lmtp:unix:/run/../sock", "`.` or `..`"),
        ("lmtp:unix:/run/./sock", "`.` or `..`"),
        ("lmtp:unix:/run//sock", "must name a file"),
        ("lmtp:unix:/run/dir/", "must name a file"),
        ("lmtp:unix:/run/a\u{7}b", "control characters"),
        (long.as_str(), "longer than 103 bytes"),
        ("lmtp:2001:db8::1", "next hop `2001:db8::1`"),
    ];
    for (text, why) in cases {
        match Route::parse(text) {
            Ok(r) => panic!("{text:?} accepted as {r:?}"),
            Err(e) => assert!(e.contains(why), "{text:?}: {e}"),
        }
    }
}

#[test]
fn keys_are_domains_subdomains_or_everything() {
    let mut m = TransportMap::default();
    for key in ["*", "Example.ORG.", ".example.net", "xn--bcher-kva.example"] {
        m.insert(key, "smtp").unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    let shown = serde_json::to_value(&m).expect("serialises");
    let keys: Vec<&String> = shown.as_object().expect("a map").keys().collect();
    assert_eq!(keys, ["*", "example.org", "xn--bcher-kva.example", ".example.net"]);
    for (key, why) in [
        ("user@example.org", "domains, not addresses"),
        ("[192.0.2.1]", "not a domain"),
        ("bad domain", "not a domain"),
        ("", "not a domain"),
        (".", "not a domain"),
        ("*.example.org", "not a domain"),
        ("a..b", "not a domain"),
    ] {
        match TransportMap::default().insert(key, "smtp") {
            Ok(()) => panic!("{key:?} accepted"),
            Err(e) => assert!(e.contains(why), "{key:?}: {e}"),
        }
    }
    // The same key twice, whatever its case and final dot.
    let e = m.insert("EXAMPLE.org", "local").expect_err("a second example.org");
    assert!(e.contains("`example.org` is in the table twice"), "{e}");
    assert!(m.insert("*", "local").is_err());
    // A domain and its subdomains are two keys.
    m.insert("example.net", "local").expect("example.net is not .example.net");
}

#[test]
fn lookup_domain_then_closest_parent_then_star() {
    let mut m = TransportMap::default();
    m.insert("example.net", "local").unwrap();
    m.insert(".example.net", "smtp:[gw.example.net]").unwrap();
    m.insert(".b.example.net", "lmtp:unix:/run/b/lmtp").unwrap();
    let gw = Route::Smtp(Some(inet("gw.example.net", None, false)));
    assert_eq!(m.lookup("example.net"), Some(&Route::Local));
    assert_eq!(m.lookup("a.example.net"), Some(&gw));
    assert_eq!(m.lookup("x.a.example.net"), Some(&gw));
    assert_eq!(m.lookup("b.example.net"), Some(&gw), ".b.example.net is for b's subdomains only");
    assert_eq!(m.lookup("x.b.example.net"), Some(&Route::Lmtp(Hop::Unix("/run/b/lmtp".into()))));
    assert_eq!(m.lookup("example.org"), None);
    assert_eq!(m.lookup("notexample.net"), None);
    m.insert("*", "smtp").unwrap();
    assert_eq!(m.lookup("example.org"), Some(&Route::Smtp(None)));
    assert_eq!(m.lookup("example.net"), Some(&Route::Local));
}

#[test]
fn the_table_routes_before_the_default_rules_local_domains_too() {
    let mut m = TransportMap::default();
    m.insert("example.org", "lmtp:unix:/var/run/dovecot/lmtp").unwrap();
    m.insert("tcp.example.org", "lmtp:[127.0.0.1]").unwrap();
    m.insert("partner.example", "smtp:[mx.partner.example]:587").unwrap();
    m.insert("default.example", "smtp").unwrap();
    m.insert("here.example", "local").unwrap();
    let relay = inet("relay.example.net", Some(25), false);
    let r = Routing::new(Some(relay.clone()), ["example.org", "localhost"]).with_map(m.clone());
    let d = route("u@Example.ORG", &r);
    assert_eq!(d, Destination { transport: Transport::Lmtp, nexthop: Hop::Unix("/var/run/dovecot/lmtp".into()) });
    assert_eq!(d.to_string(), "lmtp:unix:/var/run/dovecot/lmtp");
    assert_eq!(route("u@tcp.example.org", &r).to_string(), "lmtp:[127.0.0.1]");
    assert_eq!(route("u@partner.example", &r).to_string(), "smtp:[mx.partner.example]:587");
    // `smtp` alone: the default route of a remote domain (the relay).
    assert_eq!(route("u@default.example", &r).nexthop, Hop::Inet(relay.clone()));
    assert_eq!(route("u@here.example", &r).to_string(), "local:here.example");
    // No entry: the default rules.
    assert_eq!(route("u@localhost", &r).transport, Transport::Local);
    assert_eq!(route("u@elsewhere.example", &r).nexthop, Hop::Inet(relay));
    // `*` catches the local domains too; an address without a domain
    // stays local.
    m.insert("*", "smtp").unwrap();
    let r = Routing::new(None, ["example.org", "localhost"]).with_map(m);
    assert_eq!(route("u@localhost", &r).to_string(), "smtp:localhost");
    assert_eq!(route("postmaster", &r).transport, Transport::Local);
    assert_eq!(route("u@example.org", &r).transport, Transport::Lmtp);
}

#[test]
fn socket_directories_group_the_sockets() {
    let mut m = TransportMap::default();
    m.insert("a.example", "lmtp:unix:/run/dovecot/lmtp").unwrap();
    m.insert(".a.example", "lmtp:unix:/run/dovecot/lmtp").unwrap();
    m.insert("b.example", "lmtp:unix:/run/dovecot/b-lmtp").unwrap();
    m.insert("c.example", "lmtp:unix:/var/spool/lmtp/socket").unwrap();
    m.insert("d.example", "lmtp:[127.0.0.1]:24").unwrap();
    let dirs = m.socket_dirs();
    let got: Vec<(String, Vec<String>)> = dirs
        .iter()
        .map(|(d, n)| (d.display().to_string(), n.iter().map(|x| x.to_string_lossy().into_owned()).collect()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("/run/dovecot".to_string(), vec!["b-lmtp".to_string(), "lmtp".to_string()]),
            ("/var/spool/lmtp".to_string(), vec!["socket".to_string()]),
        ]
    );
    assert!(TransportMap::default().socket_dirs().is_empty());
}

fn message(s: &mut Scheduler, n: u32, addresses: &[&str]) {
    let id = crate::queue::QueueId::new(Time { secs: 1_700_000_000, micros: n }, 7, n);
    let recipients: Vec<Recipient> = addresses
        .iter()
        .map(|a| Recipient { address: a.to_string(), orcpt: None, notify: None, status: Default::default() })
        .collect();
    let env = Envelope {
        sender: "s@example.net".into(),
        arrival: Time { secs: 1_700_000_000, micros: 0 },
        ..Default::default()
    };
    s.add_message(id, &env, &recipients, Origin::Incoming, Time { secs: 1_700_000_000, micros: 0 }).expect("room");
}

#[test]
fn lmtp_has_its_own_process_limit_and_groups_recipients() {
    let mut settings = Settings::default();
    settings.lmtp.processes = 1;
    let mut m = TransportMap::default();
    m.insert("a.example", "lmtp:unix:/run/a/lmtp").unwrap();
    m.insert("b.example", "lmtp:unix:/run/b/lmtp").unwrap();
    let mut s = Scheduler::new(settings, Routing::new(None, ["example.org"]).with_map(m)).expect("settings");
    message(&mut s, 1, &["x@a.example", "y@a.example", "z@b.example", "r@remote.example", "me@example.org"]);
    let mut started: Vec<Job> = Vec::new();
    while let Some(j) = s.next_job(Time { secs: 1_700_000_000, micros: 0 }) {
        started.push(j);
    }
    let lmtp: Vec<&Job> = started.iter().filter(|j| j.destination.transport == Transport::Lmtp).collect();
    assert_eq!(lmtp.len(), 1, "one LMTP delivery at once: {started:?}");
    let first = lmtp[0];
    assert_eq!(first.destination.nexthop, Hop::Unix("/run/a/lmtp".into()));
    assert_eq!(first.recipients.len(), 2, "one delivery for both recipients of a.example");
    // SMTP and local run beside it, each in its own transport.
    assert!(started.iter().any(|j| j.destination.transport == Transport::Smtp));
    assert!(started.iter().any(|j| j.destination.transport == Transport::Local));
}

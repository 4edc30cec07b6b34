//! `smtp.mx_session_limit`: a server that fails the session before MAIL
//! for now passes an MX-routed job on to the next MX address in the same
//! delivery; nothing else moves on (not a 5xx to HELO, which bounces).

use std::net::IpAddr;

use super::server::{CERT, KEY};
use super::*;

fn at(ip: &str, connections: usize, script: Script) -> Server {
    Server::start_at(ip, connections, script, CERT, KEY)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn a_first_mx_refusing_at_the_greeting_passes_the_mail_to_the_second() {
    let first = at("127.0.0.1", 1, mta(&[("CONNECT", "421 4.3.2 first is busy")]));
    let second = at("127.0.0.2", 1, mta(&[]));
    let mut h = Harness::new(conf(), Connect::Mx(vec![first.addr, second.addr]));
    h.deliver(1, &["a@example.net", "b@example.net"], BODY);
    let (site, rs) = h.report(1);
    assert_eq!(site, SiteReport::Reached);
    assert!(rs.iter().all(delivered), "{rs:?}");
    // One Connect as usual, then one passing over the first address.
    assert_eq!(h.skips, vec![vec![], vec![ip("127.0.0.1")]]);
    assert_eq!(h.requests, vec![(nexthop(), 25), (nexthop(), 25)]);
    // The log says what the first server said.
    assert!(
        h.logs.iter().any(|l| l.contains("421 4.3.2 first is busy") && l.contains("trying the next MX address")),
        "{:#?}",
        h.logs
    );
    let line = h.logs.iter().find(|l| l.contains("to=<a@example.net>")).expect("log line");
    assert!(line.contains("[127.0.0.2]") && line.contains("status=sent"), "{line}");
    h.close_sessions();
    assert!(first.transcripts()[0].data.is_empty());
    assert_eq!(second.transcripts()[0].data.len(), 1);
}

#[test]
fn a_first_mx_greeting_with_5xx_passes_the_mail_to_the_second() {
    let first = at("127.0.0.1", 1, mta(&[("CONNECT", "554 5.7.1 first says go away")]));
    let second = at("127.0.0.2", 1, mta(&[]));
    let mut h = Harness::new(conf(), Connect::Mx(vec![first.addr, second.addr]));
    h.deliver(1, &["a@example.net"], BODY);
    let (site, rs) = h.report(1);
    assert_eq!(site, SiteReport::Reached);
    assert!(delivered(&rs[0]), "{rs:?}");
    assert_eq!(h.skips, vec![vec![], vec![ip("127.0.0.1")]]);
    assert!(h.logs.iter().any(|l| l.contains("554 5.7.1 first says go away") && l.contains("trying the next MX")));
    h.close_sessions();
    assert!(first.transcripts()[0].data.is_empty());
    assert_eq!(second.transcripts()[0].data.len(), 1);

    // Both greet with 5xx: deferred with the first one's words, class 4.
    let first = at("127.0.0.1", 1, mta(&[("CONNECT", "554 5.7.1 first says go away")]));
    let second = at("127.0.0.2", 1, mta(&[("CONNECT", "550 5.0.0 second too")]));
    let mut h = Harness::new(conf(), Connect::Mx(vec![first.addr, second.addr]));
    h.deliver(2, &["a@example.net"], BODY);
    let (_, rs) = h.report(2);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Deferred, "4.7.1"));
    assert!(rs[0].reason.contains("[127.0.0.1] said: 554 5.7.1 first says go away"), "{}", rs[0].reason);
    h.run_until(|h| h.agent.sessions.is_empty());
    first.transcripts();
    second.transcripts();
}

#[test]
fn a_5xx_to_helo_on_a_first_mx_bounces_without_trying_the_second() {
    // As in Postfix: only the greeting's 5xx is the server's trouble; a
    // 5xx to HELO is the mail's, whatever server says it.
    let first = at("127.0.0.1", 1, mta(&[("EHLO", "502 5.5.2 no EHLO"), ("HELO", "550 5.7.1 not from you")]));
    let second = at("127.0.0.2", 1, mta(&[]));
    let mut h = Harness::new(conf(), Connect::Mx(vec![first.addr, second.addr]));
    h.deliver(1, &["a@example.net", "b@example.net"], BODY);
    let (site, rs) = h.report(1);
    // The server answered: no site failure counted against the destination.
    assert_eq!(site, SiteReport::Reached);
    for r in &rs {
        assert_eq!((&r.status, r.dsn.as_str()), (&RecipientStatus::Bounced, "5.7.1"));
        assert_eq!(
            r.reason, "host mx.test[127.0.0.1] said: 550 5.7.1 not from you (in reply to EHLO/HELO command)",
            "{rs:?}"
        );
    }
    assert_eq!(h.skips, vec![Vec::<IpAddr>::new()], "the second MX is never asked for");
    assert!(!h.logs.iter().any(|l| l.contains("trying the next MX")), "{:#?}", h.logs);
    h.run_until(|h| h.agent.sessions.is_empty());
    assert_eq!(first.transcripts().len(), 1);
    assert!(second.transcripts().is_empty());

    // After a first MX that deferred at its greeting, a 5xx to HELO on
    // the second bounces with the second's words.
    let first = at("127.0.0.1", 1, mta(&[("CONNECT", "421 4.3.2 first is busy")]));
    let second = at("127.0.0.2", 1, mta(&[("EHLO", "502 5.5.2 no EHLO"), ("HELO", "550 5.7.1 not from you")]));
    let mut h = Harness::new(conf(), Connect::Mx(vec![first.addr, second.addr]));
    h.deliver(2, &["a@example.net"], BODY);
    let (site, rs) = h.report(2);
    assert_eq!(site, SiteReport::Reached);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Bounced, "5.7.1"));
    assert!(rs[0].reason.contains("[127.0.0.2] said: 550 5.7.1 not from you"), "{}", rs[0].reason);
    h.run_until(|h| h.agent.sessions.is_empty());
    first.transcripts();
    second.transcripts();
}

#[test]
fn every_mx_refusing_defers_with_the_first_reason_after_the_session_limit() {
    let first = at("127.0.0.1", 1, mta(&[("CONNECT", "421 4.3.2 first is busy")]));
    let second = at("127.0.0.2", 1, mta(&[("CONNECT", "421 4.3.2 second is busy")]));
    let third = at("127.0.0.3", 1, mta(&[]));
    let mut h = Harness::new(conf(), Connect::Mx(vec![first.addr, second.addr, third.addr]));
    h.deliver(1, &["a@example.net"], BODY);
    let (site, rs) = h.report(1);
    assert!(matches!(site, SiteReport::Unreachable(ref why) if why.contains("first is busy")), "{site:?}");
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Deferred, "4.3.2"));
    assert!(rs[0].reason.contains("[127.0.0.1] said: 421 4.3.2 first is busy"), "{}", rs[0].reason);
    // Exactly mx_session_limit (2) sessions: the third is never asked for.
    assert_eq!(h.skips, vec![vec![], vec![ip("127.0.0.1")]]);
    h.run_until(|h| h.agent.sessions.is_empty());
    assert_eq!(first.transcripts().len(), 1);
    assert_eq!(second.transcripts().len(), 1);
    assert!(third.transcripts().is_empty());

    // A higher limit tries the third, which takes the mail; when the
    // connector has nothing left, the first failure is reported too.
    let first = at("127.0.0.1", 1, mta(&[("CONNECT", "421 4.3.2 first is busy")]));
    let second = at("127.0.0.2", 1, mta(&[("EHLO", "HANGUP")]));
    let mut c = conf();
    c.smtp.mx_session_limit = 3;
    let mut h = Harness::new(c, Connect::Mx(vec![first.addr, second.addr]));
    h.deliver(2, &["a@example.net"], BODY);
    let (_, rs) = h.report(2);
    assert_eq!(rs[0].status, RecipientStatus::Deferred);
    assert!(rs[0].reason.contains("first is busy"), "{}", rs[0].reason);
    assert_eq!(h.skips, vec![vec![], vec![ip("127.0.0.1")], vec![ip("127.0.0.1"), ip("127.0.0.2")]]);
    h.run_until(|h| h.agent.sessions.is_empty());
    first.transcripts();
    second.transcripts();
}

#[test]
fn a_failure_once_mail_is_accepted_does_not_move_on() {
    let first = at("127.0.0.1", 1, mta(&[("RCPT", "HANGUP")]));
    let second = at("127.0.0.2", 1, mta(&[]));
    let mut h = Harness::new(conf(), Connect::Mx(vec![first.addr, second.addr]));
    h.deliver(1, &["a@example.net"], BODY);
    let (_, rs) = h.report(1);
    assert_eq!(rs[0].status, RecipientStatus::Deferred);
    assert!(rs[0].reason.contains("lost connection"), "{}", rs[0].reason);
    assert_eq!(h.skips, vec![Vec::<IpAddr>::new()]);
    h.run_until(|h| h.agent.sessions.is_empty());
    first.transcripts();
    assert!(second.transcripts().is_empty());
}

#[test]
fn lmtp_and_bracketed_next_hops_never_move_on() {
    let first = at("127.0.0.1", 2, mta(&[("CONNECT", "421 4.3.2 first is busy")]));
    let second = at("127.0.0.2", 2, mta(&[]));
    let mut h = Harness::new(conf(), Connect::Mx(vec![first.addr, second.addr]));
    let (id, fd) = h.queue_file(&["a@example.net"], BODY);
    h.send_delivery(1, &id, Protocol::Lmtp, nexthop(), vec![0], Some(fd));
    let (_, rs) = h.report(1);
    assert_eq!(rs[0].status, RecipientStatus::Deferred);
    assert!(rs[0].reason.contains("first is busy"), "{}", rs[0].reason);
    let bracketed = Target::Inet(NexthopSpec { host: "mx.example.net".into(), port: None, mx: false });
    let (id, fd) = h.queue_file(&["a@example.net"], BODY);
    h.send_delivery(2, &id, Protocol::Smtp, bracketed, vec![0], Some(fd));
    let (_, rs) = h.report(2);
    assert_eq!(rs[0].status, RecipientStatus::Deferred);
    assert!(rs[0].reason.contains("first is busy"), "{}", rs[0].reason);
    assert_eq!(h.skips, vec![Vec::<IpAddr>::new(), Vec::new()]);
    h.run_until(|h| h.agent.sessions.is_empty());
    assert_eq!(first.transcripts().len(), 2);
    assert!(second.transcripts().is_empty());
}

#[test]
fn a_job_moving_on_skips_idle_sessions_it_had_and_lends_no_skip_list() {
    // Jobs 1 and 2 together: job 1 is delivered on one connection to
    // 127.0.0.1, whose session is then idle and cached; job 2's
    // connection, to another port of 127.0.0.1, is refused slowly at the
    // greeting. Job 2 must not take the idle session on the address it
    // had, but ask for another.
    let good = at("127.0.0.1", 1, mta(&[]));
    let slow: Script = Arc::new(|cmd: &str| {
        if cmd == "CONNECT" {
            std::thread::sleep(Duration::from_millis(300));
        }
        mta(&[("CONNECT", "421 4.3.2 slow and busy")])(cmd)
    });
    let refusing = at("127.0.0.1", 1, slow);
    let second = at("127.0.0.2", 1, mta(&[]));
    let mut c = conf();
    c.smtp.connection_cache_time = Duration::from_secs(10);
    let mut h = Harness::new(c, Connect::Seq(vec![good.addr, refusing.addr, second.addr]));
    h.deliver(1, &["a@example.net"], BODY);
    h.deliver(2, &["b@example.net"], BODY);
    let (_, rs1) = h.report(1);
    let (_, rs2) = h.report(2);
    assert!(delivered(&rs1[0]), "{rs1:?}");
    assert!(delivered(&rs2[0]), "{rs2:?}");
    let line = |who: &str| h.logs.iter().find(|l| l.contains(who)).expect("log line").clone();
    assert!(line("to=<a@example.net>").contains(&format!("[127.0.0.1]:{}", good.addr.port())));
    assert!(line("to=<b@example.net>").contains("[127.0.0.2]"), "{}", line("to=<b@example.net>"));
    // Only job 2's second request carries a skip list.
    assert_eq!(h.skips, vec![vec![], vec![], vec![ip("127.0.0.1")]]);
    h.close_sessions();
    assert_eq!(good.transcripts()[0].data.len(), 1);
    refusing.transcripts();
    assert_eq!(second.transcripts()[0].data.len(), 1);
}

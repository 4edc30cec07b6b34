//! The agent in LMTP mode: over a UNIX socket and over TCP (port 24 by
//! default), a reply per recipient after the content reported one by one,
//! a server that answers for fewer recipients than it accepted (the rest
//! deferred, never delivered), no STARTTLS even when offered, and no
//! session shared between SMTP and LMTP jobs to the same next hop.

use super::*;

/// An LMTP server: `dot` answers the end of data; `rcpt` answers RCPT by
/// recipient (250 for any other).
fn lmtp(rcpt: &'static [(&'static str, &'static str)], dot: Answer) -> Script {
    Arc::new(move |cmd: &str| {
        let upper = cmd.to_ascii_uppercase();
        match upper.split(' ').next().unwrap_or("") {
            "CONNECT" => say("220 lmtp.test LMTP ready"),
            "LHLO" => say("250-lmtp.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES"),
            "EHLO" => say("250-mx.test\r\n250 8BITMIME"),
            "RCPT" => {
                let answer = rcpt.iter().find(|(who, _)| cmd.contains(who)).map_or("250 2.1.5 Ok", |(_, a)| a);
                say(answer)
            }
            "." => dot.clone(),
            other => mta(&[])(other),
        }
    })
}

fn unix_target(h: &Harness) -> (PathBuf, Target) {
    let path = h.dir.join("lmtp.sock");
    (path.clone(), Target::Unix(path))
}

fn status(r: &RecipientReport) -> (&'static str, &str) {
    let s = match r.status {
        RecipientStatus::Delivered { .. } => "sent",
        RecipientStatus::Deferred => "deferred",
        RecipientStatus::Bounced => "bounced",
    };
    (s, r.dsn.as_str())
}

#[test]
fn over_a_unix_socket_each_recipient_gets_its_own_reply() {
    let mut conf = conf();
    // Offered STARTTLS, with a policy that would take it for SMTP.
    conf.smtp.tls = crate::config::delivery::ClientTls::Opportunistic;
    let mut h = Harness::new(conf, Connect::Unix);
    let (path, target) = unix_target(&h);
    let dot = say(
        "250 2.0.0 <a@lmtp.test> Saved\r\n552 5.2.2 <b@lmtp.test> Quota exceeded\r\n452 4.2.2 <d@lmtp.test> Try later",
    );
    let server =
        Server::start_unix(path.clone(), 1, lmtp(&[("<c@", "550 5.1.1 <c@lmtp.test> User doesn't exist")], dot));
    let rcpts = ["a@lmtp.test", "b@lmtp.test", "c@lmtp.test", "d@lmtp.test"];
    let (id, fd) = h.queue_file(&rcpts, BODY);
    h.send_delivery(1, &id, Protocol::Lmtp, target.clone(), vec![0, 1, 2, 3], Some(fd));
    let (site, rs) = h.report(1);
    assert_eq!(site, SiteReport::Reached);
    assert_eq!(h.requests, vec![(target, 24)]);
    let got: Vec<(u32, (&str, &str))> = rs.iter().map(|r| (r.index, status(r))).collect();
    assert_eq!(
        got,
        vec![(0, ("sent", "2.0.0")), (1, ("bounced", "5.2.2")), (2, ("bounced", "5.1.1")), (3, ("deferred", "4.2.2")),]
    );
    // An LMTP server delivers (it has no queue to relay from).
    let delivered = RecipientStatus::Delivered { dsn_passed: false, action: crate::queue::DoneAction::Delivered };
    assert_eq!(rs[0].status, delivered);
    let p = path.display();
    assert_eq!(
        rs[1].reason,
        format!("host {p} said: 552 5.2.2 <b@lmtp.test> Quota exceeded (in reply to end of DATA command)")
    );
    assert_eq!(
        rs[2].reason,
        format!("host {p} said: 550 5.1.1 <c@lmtp.test> User doesn't exist (in reply to RCPT TO command)")
    );
    let line = h.logs.iter().find(|l| l.contains("to=<a@lmtp.test>")).expect("log line").clone();
    assert!(line.contains(&format!(", relay={p}, delay=")), "{line}");
    assert!(line.ends_with("status=sent (250 2.0.0 <a@lmtp.test> Saved)"), "{line}");
    h.close_sessions();
    let t = server.transcripts();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].commands[0], "LHLO client.test");
    assert!(!t[0].commands.iter().any(|c| c.eq_ignore_ascii_case("STARTTLS")), "{:?}", t[0].commands);
    assert_eq!(t[0].data, vec![b"Subject: test\r\n\r\nHello\r\n.\r\n".to_vec()]);
}

#[test]
fn a_server_that_answers_for_fewer_recipients_defers_the_rest() {
    let mut h = Harness::new(conf(), Connect::Unix);
    let (path, target) = unix_target(&h);
    // Two recipients accepted, one reply after the content, then gone.
    let server =
        Server::start_unix(path, 1, lmtp(&[], Answer::Last(String::from("250 2.0.0 <a@lmtp.test> Saved\r\n"))));
    let (id, fd) = h.queue_file(&["a@lmtp.test", "b@lmtp.test"], BODY);
    h.send_delivery(1, &id, Protocol::Lmtp, target, vec![0, 1], Some(fd));
    let (_, rs) = h.report(1);
    assert_eq!(status(&rs[0]), ("sent", "2.0.0"));
    assert_eq!(rs[1].status, RecipientStatus::Deferred, "{rs:?}");
    assert!(rs[1].reason.contains("lost connection"), "{}", rs[1].reason);
    assert!(rs[1].reason.ends_with("-- message may be sent more than once"), "{}", rs[1].reason);
    let t = server.transcripts();
    assert_eq!(t[0].data.len(), 1);
}

#[test]
fn over_tcp_the_default_port_is_24() {
    let dot = say("250 2.0.0 <a@lmtp.test> Saved");
    let server = Server::start(1, lmtp(&[], dot));
    let mut h = Harness::new(conf(), Connect::To(server.addr));
    let target = Target::Inet(NexthopSpec { host: "127.0.0.1".into(), port: None, mx: false });
    let (id, fd) = h.queue_file(&["a@lmtp.test"], BODY);
    h.send_delivery(1, &id, Protocol::Lmtp, target.clone(), vec![0], Some(fd));
    let (_, rs) = h.report(1);
    assert!(delivered(&rs[0]), "{rs:?}");
    assert_eq!(h.requests, vec![(target, 24)]);
    h.close_sessions();
    assert_eq!(server.transcripts()[0].commands[0], "LHLO client.test");
}

#[test]
fn smtp_and_lmtp_jobs_to_one_next_hop_never_share_a_session() {
    let server = Server::start(2, lmtp(&[], say("250 2.0.0 Saved")));
    let mut conf = conf();
    conf.smtp.connection_cache_time = Duration::from_secs(10);
    let mut h = Harness::new(conf, Connect::To(server.addr));
    let target = Target::Inet(NexthopSpec { host: "127.0.0.1".into(), port: Some(server.addr.port()), mx: false });
    let (id, fd) = h.queue_file(&["a@lmtp.test"], BODY);
    h.send_delivery(1, &id, Protocol::Smtp, target.clone(), vec![0], Some(fd));
    assert!(delivered(&h.report(1).1[0]));
    let (id, fd) = h.queue_file(&["b@lmtp.test"], BODY);
    h.send_delivery(2, &id, Protocol::Lmtp, target, vec![0], Some(fd));
    assert!(delivered(&h.report(2).1[0]));
    assert_eq!(h.requests.len(), 2, "the cached SMTP session was used for LMTP");
    h.close_sessions();
    let t = server.transcripts();
    let hellos: Vec<&str> = t.iter().map(|c| c.commands[0].as_str()).collect();
    assert_eq!(hellos, ["EHLO client.test", "LHLO client.test"]);
}

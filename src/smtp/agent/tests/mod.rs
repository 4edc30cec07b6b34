//! The agent's loop against real sockets: a fake qmgr and connector on
//! channel pairs, a scripted SMTP server on loopback in a thread, real
//! queue files in a temporary directory. Every wait is bounded.
//!
//! Trusts: nothing; loopback only.

pub(crate) mod certs;
mod lmtp;
mod mx;
mod server;
mod tls;

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::ipc::msg::{NexthopSpec, RecipientStatus, Stamp, ToMaster};
use crate::queue::{BodyType, Client as Origin, Envelope, QueueFile, QueueIdGen, Recipient, Status};

use server::{Answer, Script, Server, mta, say};

/// Longest any test waits for anything.
const LIMIT: Duration = Duration::from_secs(20);

// ----- the fake peers -----

/// How the fake connector answers.
#[derive(Clone, Debug)]
enum Connect {
    To(SocketAddr),
    Fail {
        reason: &'static str,
        permanent: bool,
        dsn: &'static str,
    },
    /// Never answer.
    Hold,
    /// Connect the first request, hold the others.
    First(SocketAddr),
    /// Connect to the UNIX socket asked for.
    Unix,
    /// The next hop's MX addresses, best first: connect the first the
    /// request does not skip.
    Mx(Vec<SocketAddr>),
    /// Request n (from 0) to the nth address, unless it skips it.
    Seq(Vec<SocketAddr>),
}

struct Harness {
    agent: Agent,
    master: Channel,
    qmgr: Channel,
    connector: Channel,
    connect: Connect,
    dir: PathBuf,
    ids: QueueIdGen,
    /// Connect requests seen.
    requests: Vec<(Target, u16)>,
    /// Their skip lists.
    skips: Vec<Vec<std::net::IpAddr>>,
    reports: Vec<SmtpToQmgr>,
    logs: Vec<String>,
}

fn conf() -> DeliveryConf {
    let mut c = crate::config::Config::default().delivery(None);
    c.smtp.tls = crate::config::delivery::ClientTls::None;
    c
}

impl Harness {
    fn new(conf: DeliveryConf, connect: Connect) -> Harness {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mta-smtp-agent-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let (agent_master, master) = crate::ipc::pair().expect("pair");
        let prepared = Agent::prepared(&conf.tls_ca).expect("tls");
        let agent =
            Agent::new(Channel::new(agent_master), ChildLog::new(4000, true), "client.test".into(), conf, prepared)
                .map_err(|b| b.1)
                .expect("agent");
        let mut master = Channel::new(master);
        let (agent_qmgr, qmgr) = crate::ipc::pair().expect("pair");
        let (agent_connector, connector) = crate::ipc::pair().expect("pair");
        master.send(&FromMaster::Peer { role: Role::Qmgr, pid: 1 }, &[agent_qmgr.as_fd()]).expect("send");
        master.send(&FromMaster::Peer { role: Role::Connector, pid: 2 }, &[agent_connector.as_fd()]).expect("send");
        let mut h = Harness {
            agent,
            master,
            qmgr: Channel::new(qmgr),
            connector: Channel::new(connector),
            connect,
            dir,
            ids: QueueIdGen::new(1),
            requests: Vec::new(),
            skips: Vec::new(),
            reports: Vec::new(),
            logs: Vec::new(),
        };
        h.run_until(|h| h.agent.qmgr.is_some() && h.agent.connector.is_some());
        h
    }

    /// Write a queue file and return its ID and an open read-only descriptor.
    fn queue_file(&mut self, recipients: &[&str], content: &[u8]) -> (String, OwnedFd) {
        self.queue_file_with(recipients, content, false)
    }

    /// The same, received with SMTPUTF8 or not.
    fn queue_file_with(&mut self, recipients: &[&str], content: &[u8], smtputf8: bool) -> (String, OwnedFd) {
        let id = self.ids.next_id();
        let qf = QueueFile {
            id,
            envelope: Envelope {
                sender: "sender@example.org".into(),
                arrival: Time::now(),
                client: Origin::default(),
                body: BodyType::SevenBit,
                smtputf8,
                dsn_ret: None,
                dsn_envid: None,
                size: content.len() as u64,
            },
            recipients: recipients
                .iter()
                .map(|r| Recipient { address: r.to_string(), orcpt: None, notify: None, status: Status::default() })
                .collect(),
            content: content.to_vec(),
        };
        let path = self.dir.join(id.as_str());
        std::fs::write(&path, qf.encode().expect("encode")).expect("write queue file");
        let f = std::fs::File::open(&path).expect("open queue file");
        (id.to_string(), OwnedFd::from(f))
    }

    fn deliver(&mut self, job: u64, recipients: &[&str], content: &[u8]) {
        let (id, fd) = self.queue_file(recipients, content);
        let indexes: Vec<u32> = (0..recipients.len() as u32).collect();
        self.send_deliver(job, &id, indexes, Some(fd));
    }

    fn send_deliver(&mut self, job: u64, queue_id: &str, recipients: Vec<u32>, fd: Option<OwnedFd>) {
        self.send_deliver_to(job, queue_id, nexthop(), recipients, fd);
    }

    fn send_deliver_to(&mut self, job: u64, id: &str, to: Target, recipients: Vec<u32>, fd: Option<OwnedFd>) {
        self.send_delivery(job, id, Protocol::Smtp, to, recipients, fd);
    }

    fn send_delivery(
        &mut self,
        job: u64,
        id: &str,
        protocol: Protocol,
        to: Target,
        recipients: Vec<u32>,
        fd: Option<OwnedFd>,
    ) {
        let now = Time::now();
        let d = Delivery {
            job,
            queue_id: id.to_string(),
            protocol,
            nexthop: to,
            recipients,
            active_at: (now.secs, now.micros) as Stamp,
        };
        let fds: Vec<_> = fd.iter().map(|f| f.as_fd()).collect();
        self.qmgr.send(&QmgrToSmtp::Deliver(Box::new(d)), &fds).expect("send deliver");
    }

    /// One turn of the agent and of the fake peers.
    fn step(&mut self) -> Result<Flow, Fatal> {
        let flow = self.agent.turn(Duration::from_millis(10))?;
        while let Ok(Some((msg, _))) = self.connector.recv::<SmtpToConnector>() {
            let SmtpToConnector::Connect { req, nexthop, default_port, skip } = msg;
            self.requests.push((nexthop.clone(), default_port));
            let none = Connect::Fail { reason: "no other address to connect to", permanent: false, dsn: "4.4.1" };
            let mode = match self.connect.clone() {
                Connect::First(addr) if self.requests.len() == 1 => Connect::To(addr),
                Connect::First(_) => Connect::Hold,
                Connect::To(addr) if skip.contains(&addr.ip()) => none,
                Connect::Mx(addrs) => addrs.iter().find(|a| !skip.contains(&a.ip())).map_or(none, |a| Connect::To(*a)),
                Connect::Seq(addrs) => addrs
                    .get(self.requests.len() - 1)
                    .filter(|a| !skip.contains(&a.ip()))
                    .map_or(none, |a| Connect::To(*a)),
                m => m,
            };
            self.skips.push(skip);
            match mode {
                Connect::To(addr) => {
                    let s = TcpStream::connect(addr).expect("connect");
                    let fd = OwnedFd::from(s);
                    let reply = ConnectorToSmtp::Connected { req, host: "mx.test".into(), addr: Some(addr) };
                    let _ = self.connector.send(&reply, &[fd.as_fd()]);
                }
                Connect::Unix => {
                    let Target::Unix(path) = nexthop else { panic!("a UNIX socket expected, not {nexthop:?}") };
                    let fd = OwnedFd::from(std::os::unix::net::UnixStream::connect(&path).expect("connect"));
                    let reply = ConnectorToSmtp::Connected { req, host: path.display().to_string(), addr: None };
                    let _ = self.connector.send(&reply, &[fd.as_fd()]);
                }
                Connect::Fail { reason, permanent, dsn } => {
                    let reply = ConnectorToSmtp::Failed { req, reason: reason.into(), permanent, dsn: dsn.into() };
                    let _ = self.connector.send(&reply, &[]);
                }
                Connect::Hold | Connect::First(_) | Connect::Mx(_) | Connect::Seq(_) => {}
            }
        }
        while let Some((msg, _)) = self.qmgr.recv::<SmtpToQmgr>().expect("qmgr recv") {
            self.reports.push(msg);
        }
        while let Ok(Some((msg, _))) = self.master.recv::<ToMaster>() {
            if let ToMaster::Log { text, .. } = msg {
                self.logs.push(text);
            }
        }
        Ok(flow)
    }

    fn run_until(&mut self, mut done: impl FnMut(&Harness) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(start.elapsed() < LIMIT, "timed out; reports {:?}; logs {:#?}", self.reports, self.logs);
            assert_eq!(self.step().expect("agent failed"), Flow::Continue);
        }
    }

    /// Run until job `job` is reported; return its site and recipients.
    fn report(&mut self, job: u64) -> (SiteReport, Vec<RecipientReport>) {
        self.run_until(|h| h.reports.iter().any(|r| matches!(r, SmtpToQmgr::Done { job: j, .. } if *j == job)));
        let i = self
            .reports
            .iter()
            .position(|r| matches!(r, SmtpToQmgr::Done { job: j, .. } if *j == job))
            .expect("report");
        let SmtpToQmgr::Done { site, recipients, .. } = self.reports.remove(i) else { unreachable!("matched above") };
        (site, recipients)
    }

    /// Let the cached session go: QUIT and close.
    fn close_sessions(&mut self) {
        self.master.send(&FromMaster::Stop, &[]).expect("stop");
        let start = Instant::now();
        loop {
            assert!(start.elapsed() < LIMIT, "agent did not exit");
            if self.step().expect("agent failed") == Flow::Exit {
                return;
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nexthop() -> Target {
    Target::Inet(NexthopSpec { host: "example.net".into(), port: None, mx: true })
}

const BODY: &[u8] = b"Subject: test\r\n\r\nHello\r\n";

fn delivered(r: &RecipientReport) -> bool {
    matches!(r.status, RecipientStatus::Delivered { .. })
}

// ----- the tests -----

#[test]
fn delivers_and_reports_the_server_reply() {
    let server = Server::start(1, mta(&[]));
    let mut h = Harness::new(conf(), Connect::To(server.addr));
    h.deliver(7, &["rcpt@example.net"], BODY);
    let (site, rs) = h.report(7);
    assert_eq!(site, SiteReport::Reached);
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].index, 0);
    // Relayed to a server without DSN: a success notice is ours to send.
    let relayed = RecipientStatus::Delivered { dsn_passed: false, action: crate::queue::DoneAction::Relayed };
    assert_eq!(rs[0].status, relayed);
    assert_eq!(rs[0].dsn, "2.0.0");
    // The queue file names the server that said it, for the notice's
    // Remote-MTA; the log line keeps Postfix's form.
    assert_eq!(
        rs[0].reason,
        "host mx.test[127.0.0.1] said: 250 2.0.0 Ok: queued as X (in reply to end of DATA command)"
    );
    assert_eq!(h.requests, vec![(nexthop(), 25)]);
    let port = server.addr.port();
    let line = h.logs.iter().find(|l| l.contains("to=<rcpt@example.net>")).expect("log line").clone();
    assert!(line.contains(&format!("relay=mx.test[127.0.0.1]:{port}, delay=")), "{line}");
    assert!(line.ends_with("dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)"), "{line}");
    h.close_sessions();
    let t = server.transcripts();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].commands[0], "EHLO client.test");
    assert_eq!(t[0].commands[1], "MAIL FROM:<sender@example.org> SIZE=24");
    assert_eq!(t[0].commands[2], "RCPT TO:<rcpt@example.net>");
    assert_eq!(t[0].commands.last().map(String::as_str), Some("QUIT"));
    assert_eq!(t[0].data, vec![b"Subject: test\r\n\r\nHello\r\n.\r\n".to_vec()]);
}

#[test]
fn rcpt_replies_decide_each_recipient() {
    let script: Script = Arc::new(|cmd: &str| match cmd {
        "RCPT TO:<busy@example.net>" => say("450 4.2.0 Mailbox busy"),
        "RCPT TO:<gone@example.net>" => say("550 5.1.1 No such user"),
        c => mta(&[])(c),
    });
    let server = Server::start(1, script);
    let mut h = Harness::new(conf(), Connect::To(server.addr));
    h.deliver(1, &["ok@example.net", "busy@example.net", "gone@example.net"], BODY);
    let (site, rs) = h.report(1);
    assert_eq!(site, SiteReport::Reached);
    assert!(delivered(&rs[0]));
    assert_eq!((rs[1].index, &rs[1].status, rs[1].dsn.as_str()), (1, &RecipientStatus::Deferred, "4.2.0"));
    assert_eq!(rs[1].reason, "host mx.test[127.0.0.1] said: 450 4.2.0 Mailbox busy (in reply to RCPT TO command)");
    assert_eq!((rs[2].index, &rs[2].status, rs[2].dsn.as_str()), (2, &RecipientStatus::Bounced, "5.1.1"));
    assert!(h.logs.iter().any(|l| l.contains("to=<gone@example.net>") && l.contains("status=bounced (host mx.test")));
    assert!(h.logs.iter().any(|l| l.contains("to=<busy@example.net>") && l.contains("dsn=4.2.0, status=deferred")));
    h.close_sessions();
    server.transcripts();
}

#[test]
fn every_rcpt_deferred_and_basic_codes_give_the_dsn() {
    let server = Server::start(1, mta(&[("RCPT", "451 try later")]));
    let mut h = Harness::new(conf(), Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    let (site, rs) = h.report(1);
    assert_eq!(site, SiteReport::Reached);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Deferred, "4.0.0"));
    h.close_sessions();
    let t = server.transcripts();
    assert!(!t[0].commands.iter().any(|c| c == "DATA"), "DATA without recipients: {:?}", t[0].commands);
}

#[test]
fn mail_refused_bounces_every_recipient() {
    let server = Server::start(1, mta(&[("MAIL", "553 5.7.1 Sender rejected")]));
    let mut h = Harness::new(conf(), Connect::To(server.addr));
    h.deliver(1, &["a@example.net", "b@example.net"], BODY);
    let (_, rs) = h.report(1);
    assert_eq!(rs.len(), 2);
    for r in &rs {
        assert_eq!((&r.status, r.dsn.as_str()), (&RecipientStatus::Bounced, "5.7.1"));
        assert!(r.reason.ends_with("(in reply to MAIL FROM command)"), "{}", r.reason);
    }
    h.close_sessions();
    server.transcripts();
}

#[test]
fn temporary_failure_after_the_dot_defers() {
    let server = Server::start(1, mta(&[(".", "452 4.3.1 Insufficient system storage")]));
    let mut h = Harness::new(conf(), Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    let (site, rs) = h.report(1);
    assert_eq!(site, SiteReport::Reached);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Deferred, "4.3.1"));
    assert!(rs[0].reason.ends_with("(in reply to end of DATA command)"), "{}", rs[0].reason);
    h.close_sessions();
    server.transcripts();
}

#[test]
fn server_hanging_up_mid_transaction_defers() {
    let server = Server::start(1, mta(&[("DATA", "HANGUP")]));
    let mut h = Harness::new(conf(), Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    let (_, rs) = h.report(1);
    assert_eq!(rs[0].status, RecipientStatus::Deferred);
    assert!(rs[0].reason.contains("lost connection"), "{}", rs[0].reason);
    // The session is gone: nothing is left to stop.
    h.run_until(|h| h.agent.sessions.is_empty());
    server.transcripts();
}

#[test]
fn greeting_refused_is_a_site_failure() {
    // A 5xx greeting defers (Postfix's smtp_skip_5xx_greeting), with a
    // status of class 4; the only MX host tried, nothing is left.
    let server = Server::start(1, mta(&[("CONNECT", "554 5.7.1 go away")]));
    let mut h = Harness::new(conf(), Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    let (site, rs) = h.report(1);
    assert!(matches!(site, SiteReport::Unreachable(ref why) if why.contains("554 5.7.1 go away")), "{site:?}");
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Deferred, "4.7.1"));
    assert_eq!(rs[0].reason, "host mx.test[127.0.0.1] said: 554 5.7.1 go away (in reply to initial greeting command)");
    assert!(h.logs.iter().any(|l| l.contains("to=<a@example.net>") && l.contains("dsn=4.7.1, status=deferred")));
    // A bracketed next hop defers the same way, without moving on.
    let server2 = Server::start(1, mta(&[("CONNECT", "550 no service")]));
    h.connect = Connect::To(server2.addr);
    let (id, fd) = h.queue_file(&["a@example.net"], BODY);
    let host = Target::Inet(NexthopSpec { host: "mx.example.net".into(), port: None, mx: false });
    h.send_deliver_to(2, &id, host, vec![0], Some(fd));
    let (_, rs) = h.report(2);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Deferred, "4.0.0"));
    h.run_until(|h| h.agent.sessions.is_empty());
    server.transcripts();
    server2.transcripts();
}

#[test]
fn smtputf8_mail_in_ascii_goes_to_a_server_without_smtputf8() {
    // mta() offers no SMTPUTF8. A message received with SMTPUTF8 whose
    // envelope and headers are ASCII is delivered, without the
    // parameter; one with UTF-8 in a header bounces (5.6.7), and so does
    // one to a UTF-8 address; UTF-8 in the body alone requires nothing.
    let server = Server::start(1, mta(&[]));
    let mut c = conf();
    c.smtp.connection_cache_time = Duration::from_secs(10);
    let mut h = Harness::new(c, Connect::To(server.addr));
    let ascii = b"Subject: plain\r\nFrom: <sender@example.org>\r\n\r\nBody \xc3\xa9t\xc3\xa9\r\n";
    let (id, fd) = h.queue_file_with(&["a@example.net"], ascii, true);
    h.send_deliver(1, &id, vec![0], Some(fd));
    let (_, rs) = h.report(1);
    assert!(delivered(&rs[0]), "{rs:?}");
    let utf8 = "Subject: \u{e9}t\u{e9}\r\n\r\nBody\r\n".as_bytes();
    let (id, fd) = h.queue_file_with(&["b@example.net"], utf8, true);
    h.send_deliver(2, &id, vec![0], Some(fd));
    let (_, rs) = h.report(2);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Bounced, "5.6.7"));
    assert_eq!(rs[0].reason, "SMTPUTF8 is required, but was not offered by the server");
    let (id, fd) = h.queue_file_with(&["\u{fc}ser@example.net"], ascii, true);
    h.send_deliver(3, &id, vec![0], Some(fd));
    let (_, rs) = h.report(3);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Bounced, "5.6.7"));
    // A large message (read from the file, not held): its header block
    // is read up to the empty line.
    let mut big = b"Subject: big\r\n".to_vec();
    for i in 0..2000 {
        big.extend_from_slice(format!("X-Filler-{i}: {:060}\r\n", i).as_bytes());
    }
    big.extend_from_slice("X-Last: \u{e9}\r\n\r\n".as_bytes());
    let (id, fd) = h.queue_file_with(&["c@example.net"], &big, true);
    h.send_deliver(4, &id, vec![0], Some(fd));
    let (_, rs) = h.report(4);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Bounced, "5.6.7"));
    h.close_sessions();
    let t = server.transcripts();
    assert_eq!(t.len(), 1);
    let mails: Vec<&String> = t[0].commands.iter().filter(|c| c.starts_with("MAIL")).collect();
    let want = format!("MAIL FROM:<sender@example.org> SIZE={}", ascii.len());
    assert_eq!(mails, vec![&want], "{:?}", t[0].commands);
    assert_eq!(t[0].data.len(), 1);
}

#[test]
fn a_cached_connection_failing_at_mail_is_replaced_once() {
    // The server takes one message per connection and then says 421 to
    // MAIL (or hangs up, or says 421 to RSET): the job starts again on a
    // new connection instead of being deferred.
    for (name, second) in [("421", "421 4.7.0 one message per connection"), ("hangup", "HANGUP")] {
        let mails = Arc::new(AtomicU32::new(0));
        let counter = mails.clone();
        let script: Script = Arc::new(move |cmd: &str| {
            if cmd.starts_with("MAIL") && counter.fetch_add(1, Ordering::SeqCst) == 1 {
                return if second == "HANGUP" { Answer::Hangup } else { Answer::Last(format!("{second}\r\n")) };
            }
            mta(&[])(cmd)
        });
        let server = Server::start(2, script);
        let mut c = conf();
        c.smtp.connection_cache_time = Duration::from_secs(10);
        let mut h = Harness::new(c, Connect::To(server.addr));
        h.deliver(1, &["a@example.net"], BODY);
        assert!(delivered(&h.report(1).1[0]), "{name}");
        h.deliver(2, &["b@example.net"], BODY);
        let (site, rs) = h.report(2);
        assert!(delivered(&rs[0]), "{name}: {rs:?}");
        assert_eq!(site, SiteReport::Reached);
        assert_eq!(h.requests.len(), 2, "{name}");
        assert!(
            h.logs
                .iter()
                .any(|l| l.contains("a cached connection to mx.test[127.0.0.1]")
                    && l.contains("trying again on a new one")),
            "{name}: {:#?}",
            h.logs
        );
        h.close_sessions();
        let t = server.transcripts();
        assert_eq!(t.len(), 2, "{name}");
        assert_eq!((t[0].data.len(), t[1].data.len()), (1, 1), "{name}");
    }
}

#[test]
fn a_cached_connection_failing_at_rset_is_replaced() {
    // Every RCPT of job 1 refused: the transaction stays open, so job 2
    // begins with RSET, which the server answers with 421.
    let script: Script = Arc::new(|cmd: &str| match cmd {
        "RCPT TO:<gone@example.net>" => say("550 5.1.1 No such user"),
        c => mta(&[("RSET", "421 4.4.2 idle too long")])(c),
    });
    let server = Server::start(2, script);
    let mut c = conf();
    c.smtp.connection_cache_time = Duration::from_secs(10);
    let mut h = Harness::new(c, Connect::To(server.addr));
    h.deliver(1, &["gone@example.net"], BODY);
    assert_eq!(h.report(1).1[0].status, RecipientStatus::Bounced);
    h.deliver(2, &["b@example.net"], BODY);
    let (_, rs) = h.report(2);
    assert!(delivered(&rs[0]), "{rs:?}");
    // A new connection, asked for as usual (no address passed over).
    assert_eq!(h.skips, vec![Vec::<std::net::IpAddr>::new(); 2]);
    h.close_sessions();
    let t = server.transcripts();
    assert_eq!(t.len(), 2);
    assert!(t[0].commands.iter().any(|c| c == "RSET"), "{:?}", t[0].commands);
    assert_eq!(t[1].data.len(), 1);
}

#[test]
fn a_cached_connection_is_replaced_once_only_and_not_for_other_failures() {
    // The new connection fails the same way: deferred, with no third.
    let mails = Arc::new(AtomicU32::new(0));
    let counter = mails.clone();
    let script: Script = Arc::new(move |cmd: &str| {
        if cmd.starts_with("MAIL") && counter.fetch_add(1, Ordering::SeqCst) >= 1 {
            return Answer::Last(String::from("421 4.3.2 closing\r\n"));
        }
        mta(&[])(cmd)
    });
    let server = Server::start(3, script);
    let mut c = conf();
    c.smtp.connection_cache_time = Duration::from_secs(10);
    let mut h = Harness::new(c, Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    assert!(delivered(&h.report(1).1[0]));
    h.deliver(2, &["b@example.net"], BODY);
    let (_, rs) = h.report(2);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Deferred, "4.3.2"));
    assert!(rs[0].reason.contains("421 4.3.2 closing (in reply to MAIL FROM command)"), "{}", rs[0].reason);
    assert_eq!(h.requests.len(), 2);
    h.run_until(|h| h.agent.sessions.is_empty());
    assert_eq!(server.transcripts().len(), 2);

    // A 4xx other than 421 at MAIL on a cached connection is the
    // server's answer: deferred, no new connection.
    let mails = Arc::new(AtomicU32::new(0));
    let counter = mails.clone();
    let script: Script = Arc::new(move |cmd: &str| {
        if cmd.starts_with("MAIL") && counter.fetch_add(1, Ordering::SeqCst) == 1 {
            return say("451 4.3.0 try later");
        }
        mta(&[])(cmd)
    });
    let server = Server::start(2, script);
    let mut c = conf();
    c.smtp.connection_cache_time = Duration::from_secs(10);
    let mut h = Harness::new(c, Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    assert!(delivered(&h.report(1).1[0]));
    h.deliver(2, &["b@example.net"], BODY);
    let (_, rs) = h.report(2);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Deferred, "4.3.0"));
    assert_eq!(h.requests.len(), 1);
    h.close_sessions();
    assert_eq!(server.transcripts().len(), 1);
}

#[test]
fn connector_failures_defer_or_bounce() {
    let mut h = Harness::new(conf(), Connect::Fail { reason: "connection refused", permanent: false, dsn: "4.4.1" });
    h.deliver(1, &["a@example.net", "b@example.net"], BODY);
    let (site, rs) = h.report(1);
    assert_eq!(site, SiteReport::Unreachable("connection refused".into()));
    assert!(rs.iter().all(|r| r.status == RecipientStatus::Deferred && r.reason == "connection refused"));
    assert!(h.logs.iter().any(|l| l.contains("to=<a@example.net>, relay=none,") && l.contains("status=deferred")));

    h.connect = Connect::Fail { reason: "Host not found", permanent: true, dsn: "5.4.4" };
    h.deliver(2, &["a@example.net"], BODY);
    let (site, rs) = h.report(2);
    assert_eq!(site, SiteReport::Unknown);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Bounced, "5.4.4"));

    // The connector's status code is the recipients' (a null MX)...
    h.connect =
        Connect::Fail { reason: "example.net: domain does not accept mail (null MX)", permanent: true, dsn: "5.1.10" };
    h.deliver(3, &["a@example.net"], BODY);
    let (_, rs) = h.report(3);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Bounced, "5.1.10"));
    h.connect = Connect::Fail { reason: "Host not found, try again", permanent: false, dsn: "4.4.3" };
    h.deliver(4, &["a@example.net"], BODY);
    let (_, rs) = h.report(4);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Deferred, "4.4.3"));
    // ...unless its class contradicts the verdict or it is no code.
    for (n, (permanent, dsn, want)) in
        [(true, "4.4.3", "5.4.4"), (false, "5.1.10", "4.4.1"), (true, "5.1.10 x", "5.4.4"), (false, "", "4.4.1")]
            .into_iter()
            .enumerate()
    {
        h.connect = Connect::Fail { reason: "no", permanent, dsn };
        let job = 5 + n as u64;
        h.deliver(job, &["a@example.net"], BODY);
        let (_, rs) = h.report(job);
        assert_eq!(rs[0].dsn, want, "{dsn:?}");
    }
}

#[test]
fn two_jobs_to_one_next_hop_share_a_connection() {
    let server = Server::start(2, mta(&[]));
    let mut conf = conf();
    conf.smtp.connection_cache_time = Duration::from_secs(10);
    let mut h = Harness::new(conf, Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    assert!(delivered(&h.report(1).1[0]));
    h.deliver(2, &["b@example.net"], BODY);
    assert!(delivered(&h.report(2).1[0]));
    assert_eq!(h.requests.len(), 1, "a second connection was requested");
    h.close_sessions();
    let t = server.transcripts();
    assert_eq!(t.len(), 1);
    let mails = t[0].commands.iter().filter(|c| c.starts_with("MAIL FROM:")).count();
    assert_eq!(mails, 2, "{:?}", t[0].commands);
    assert_eq!(t[0].data.len(), 2);
}

#[test]
fn reuse_limit_closes_the_connection() {
    let server = Server::start(2, mta(&[]));
    let mut conf = conf();
    conf.smtp.connection_cache_time = Duration::from_secs(10);
    conf.smtp.connection_reuse_limit = 1;
    let mut h = Harness::new(conf, Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    assert!(delivered(&h.report(1).1[0]));
    h.deliver(2, &["b@example.net"], BODY);
    assert!(delivered(&h.report(2).1[0]));
    assert_eq!(h.requests.len(), 2);
    h.close_sessions();
    assert_eq!(server.transcripts().len(), 2);
}

#[test]
fn smuggling_bare_line_ends_and_dots_are_normalised_and_stuffed() {
    let server = Server::start(1, mta(&[]));
    let mut h = Harness::new(conf(), Connect::To(server.addr));
    let body = b"Subject: dots\r\n\r\n.hidden\nbare lf\rbare cr\r\n.\r\n..\r\n\n.\nno final newline";
    h.deliver(1, &["a@example.net"], body);
    assert!(delivered(&h.report(1).1[0]));
    h.close_sessions();
    let t = server.transcripts();
    let expected: &[u8] =
        b"Subject: dots\r\n\r\n..hidden\r\nbare lf\r\nbare cr\r\n..\r\n...\r\n\r\n..\r\nno final newline\r\n.\r\n";
    assert_eq!(String::from_utf8_lossy(&t[0].data[0]), String::from_utf8_lossy(expected));
}

/// `body` delivered through `server`, which received it byte for byte
/// (dot included).
fn arrives_whole(server: Server, mut body: Vec<u8>) {
    let mut h = Harness::new(conf(), Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], &body);
    assert!(delivered(&h.report(1).1[0]));
    h.close_sessions();
    let t = server.transcripts();
    body.extend_from_slice(b".\r\n");
    assert!(t[0].data[0] == body, "content differs ({} bytes sent, {} received)", body.len(), t[0].data[0].len());
}

#[test]
fn large_message_streams_in_chunks() {
    let server = Server::start(1, mta(&[]));
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    while body.len() < 5 * crate::smtp::client::CONTENT_CHUNK {
        body.extend_from_slice(format!("line {} of a big message\r\n", body.len()).as_bytes());
    }
    arrives_whole(server, body);
}

#[test]
fn output_that_backs_up_goes_on_when_the_server_reads_again() {
    // More content than the loopback's socket buffers hold, to a server
    // that reads none of it for a while: the client must be woken when
    // there is room again (it asks for that only while output waits).
    let script: Script = Arc::new(|cmd: &str| match cmd {
        "EHLO client.test" => say("250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME"),
        "DATA" => Answer::SlowData(String::from("354 go ahead\r\n"), Duration::from_millis(500)),
        c => mta(&[])(c),
    });
    let server = Server::start(1, script);
    let mut body = b"Subject: backed up\r\n\r\n".to_vec();
    while body.len() < 24 << 20 {
        body.extend_from_slice(format!("{:076}\r\n", body.len()).as_bytes());
    }
    arrives_whole(server, body);
}

#[test]
fn a_server_that_refuses_during_the_content_and_closes_is_heard() {
    // It answers and closes while the client is still writing (more than
    // the socket buffers hold): its words are the verdict, not "lost
    // connection" (which would have the message tried again for days).
    let script: Script = Arc::new(|cmd: &str| match cmd {
        "EHLO client.test" => say("250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME"),
        "DATA" => Answer::RefuseData(
            String::from("354 go ahead\r\n"),
            String::from("554 5.3.4 Message too big for system\r\n"),
        ),
        c => mta(&[])(c),
    });
    let server = Server::start(1, script);
    let mut body = b"Subject: refused\r\n\r\n".to_vec();
    while body.len() < 16 << 20 {
        body.extend_from_slice(format!("{:076}\r\n", body.len()).as_bytes());
    }
    let mut h = Harness::new(conf(), Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], &body);
    let (_, rs) = h.report(1);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Bounced, "5.3.4"), "{rs:?}");
    assert!(rs[0].reason.contains("554 5.3.4 Message too big for system"), "{}", rs[0].reason);
    h.run_until(|h| h.agent.sessions.is_empty());
    server.transcripts();
}

#[test]
fn silent_server_times_out_and_defers() {
    let server = Server::start(1, mta(&[("EHLO", "SILENCE")]));
    let mut conf = conf();
    conf.smtp.timeouts.helo = Duration::from_millis(300);
    let mut h = Harness::new(conf, Connect::To(server.addr));
    let start = Instant::now();
    h.deliver(1, &["a@example.net"], BODY);
    let (site, rs) = h.report(1);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(rs[0].status, RecipientStatus::Deferred);
    assert!(rs[0].reason.contains("timeout while waiting for the reply to EHLO/HELO"), "{}", rs[0].reason);
    assert!(matches!(site, SiteReport::Unreachable(_)), "{site:?}");
    h.run_until(|h| h.agent.sessions.is_empty());
    server.transcripts();
}

#[test]
fn starttls_is_used_when_offered() {
    let script: Script = Arc::new(|cmd: &str| match cmd {
        "EHLO client.test" => say("250-mx.test\r\n250-STARTTLS\r\n250 8BITMIME"),
        "STARTTLS" => Answer::StartTls(String::from("220 2.0.0 Ready to start TLS\r\n")),
        c => mta(&[])(c),
    });
    let server = Server::start(1, script);
    let mut conf = conf();
    conf.smtp.tls = crate::config::delivery::ClientTls::Opportunistic;
    let mut h = Harness::new(conf, Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    let (_, rs) = h.report(1);
    assert!(delivered(&rs[0]), "{rs:?}");
    assert!(h.logs.iter().any(|l| l.starts_with("Untrusted TLS connection established to mx.test[127.0.0.1]")));
    h.close_sessions();
    let t = server.transcripts();
    assert!(t[0].tls);
    let ehlos = t[0].commands.iter().filter(|c| c.starts_with("EHLO")).count();
    assert_eq!(ehlos, 2, "{:?}", t[0].commands);
    assert_eq!(t[0].data.len(), 1);
}

#[test]
fn required_tls_not_offered_defers() {
    let server = Server::start(1, mta(&[]));
    let mut conf = conf();
    conf.smtp.tls = crate::config::delivery::ClientTls::Require;
    let mut h = Harness::new(conf, Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    let (_, rs) = h.report(1);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Deferred, "4.7.4"));
    h.run_until(|h| h.agent.sessions.is_empty());
    let t = server.transcripts();
    assert!(!t[0].commands.iter().any(|c| c.starts_with("MAIL")));
}

/// The content's CRC, which qmgr's read of the envelope does not check:
/// the agent reports the file corrupt (qmgr moves it to corrupt/), asks
/// for no connection and delivers nothing.
#[test]
fn a_queue_file_with_damaged_content_is_reported_corrupt() {
    let mut h = Harness::new(conf(), Connect::Hold);
    for (job, size) in [(7, 100), (8, 200_000)] {
        let (id, fd) = h.queue_file(&["a@example.net"], &vec![b'x'; size]);
        let path = h.dir.join(&id);
        let mut bytes = std::fs::read(&path).expect("read");
        let n = bytes.len();
        bytes[n - 3] = b'y';
        std::fs::write(&path, &bytes).expect("damage");
        h.send_deliver(job, &id, vec![0], Some(fd));
        h.run_until(|h| h.reports.iter().any(|r| matches!(r, SmtpToQmgr::Corrupt { job: j, .. } if *j == job)));
        let Some(SmtpToQmgr::Corrupt { reason, .. }) = h.reports.pop() else { panic!("{:?}", h.reports) };
        assert!(reason.contains("content CRC mismatch"), "{reason}");
    }
    assert!(h.requests.is_empty(), "a connection was asked for: {:?}", h.requests);
    assert!(h.reports.is_empty(), "{:?}", h.reports);
    assert!(h.logs.iter().any(|l| l.contains("the queue file is corrupt")), "{:#?}", h.logs);
}

/// A file holding another message is corrupt too (qmgr names each file
/// after the ID it read in it); a recipient the file lacks defers.
#[test]
fn request_not_matching_the_file_is_corrupt_or_defers() {
    let mut h = Harness::new(conf(), Connect::Hold);
    let (_, fd) = h.queue_file(&["a@example.net"], BODY);
    h.send_deliver(1, "AAAAAAAAAAAAAAAA", vec![0], Some(fd));
    h.run_until(|h| !h.reports.is_empty());
    let Some(SmtpToQmgr::Corrupt { job: 1, reason }) = h.reports.pop() else { panic!("{:?}", h.reports) };
    assert!(reason.contains("not AAAAAAAAAAAAAAAA"), "{reason}");
    let (id, fd) = h.queue_file(&["a@example.net"], BODY);
    h.send_deliver(2, &id, vec![3], Some(fd));
    let (_, rs) = h.report(2);
    assert_eq!((rs[0].index, &rs[0].status), (3, &RecipientStatus::Deferred));
    assert!(h.requests.is_empty());
}

#[test]
fn delivery_without_a_file_is_fatal() {
    let mut h = Harness::new(conf(), Connect::Hold);
    h.send_deliver(1, "AAAAAAAAAAAAAAAA", vec![0], None);
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < LIMIT);
        if let Err(Fatal(why)) = h.step() {
            assert!(why.contains("0 descriptors"), "{why}");
            break;
        }
    }
}

#[test]
fn lost_connector_answers_waiting_jobs_at_once() {
    let mut h = Harness::new(conf(), Connect::Hold);
    h.deliver(1, &["a@example.net"], BODY);
    h.run_until(|h| !h.requests.is_empty());
    let (_, dead) = crate::ipc::pair().expect("pair");
    h.connector = Channel::new(dead);
    let (_, rs) = h.report(1);
    assert_eq!(rs[0].status, RecipientStatus::Deferred);
    assert_eq!(rs[0].reason, "connector unavailable");
    // With no connector, new work is answered at once too.
    h.deliver(2, &["a@example.net"], BODY);
    assert_eq!(h.report(2).1[0].reason, "connector unavailable");
}

#[test]
fn stop_quits_idle_sessions_and_exits() {
    let server = Server::start(1, mta(&[]));
    let mut conf = conf();
    conf.smtp.connection_cache_time = Duration::from_secs(60);
    let mut h = Harness::new(conf, Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    h.report(1);
    assert_eq!(h.agent.sessions.len(), 1);
    h.close_sessions();
    let t = server.transcripts();
    assert_eq!(t[0].commands.last().map(String::as_str), Some("QUIT"));
}

#[test]
fn stop_finishes_the_delivery_in_hand_and_reports_it_before_exiting() {
    // A reload: qmgr drains and waits for this report (qmgr::drain); were
    // it lost, the next qmgr would deliver the message again.
    let server = Server::start(1, mta(&[]));
    let mut h = Harness::new(conf(), Connect::Hold);
    h.deliver(1, &["a@example.net"], BODY);
    h.run_until(|h| !h.requests.is_empty());
    h.master.send(&FromMaster::Stop, &[]).expect("stop");
    for _ in 0..5 {
        assert_eq!(h.step().expect("agent failed"), Flow::Continue, "exited with a job in hand");
    }
    // A job qmgr sent before it heard of the stop: deferred at once.
    h.deliver(2, &["b@example.net"], BODY);
    let (_, rs) = h.report(2);
    assert_eq!(rs[0].status, RecipientStatus::Deferred);
    assert_eq!(rs[0].reason, "the delivery agent is stopping");
    // The connection the first job waits for comes: it is delivered and
    // reported, and then the agent exits.
    let fd = OwnedFd::from(TcpStream::connect(server.addr).expect("connect"));
    let reply = ConnectorToSmtp::Connected { req: 1, host: "mx.test".into(), addr: Some(server.addr) };
    h.connector.send(&reply, &[fd.as_fd()]).expect("send");
    let start = Instant::now();
    while h.step().expect("agent failed") == Flow::Continue {
        assert!(start.elapsed() < LIMIT, "agent did not exit; reports {:?}", h.reports);
    }
    let [SmtpToQmgr::Done { job: 1, recipients, .. }] = h.reports.as_slice() else {
        panic!("not one report for job 1: {:?}", h.reports)
    };
    assert!(delivered(&recipients[0]), "{recipients:?}");
    let t = server.transcripts();
    assert_eq!(t[0].data.len(), 1);
    assert_eq!(t[0].commands.last().map(String::as_str), Some("QUIT"));
}

#[test]
fn idle_session_quits_after_the_cache_time() {
    let server = Server::start(1, mta(&[]));
    let mut conf = conf();
    conf.smtp.connection_cache_time = Duration::from_millis(200);
    let mut h = Harness::new(conf, Connect::To(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    h.report(1);
    h.run_until(|h| h.agent.sessions.is_empty());
    let t = server.transcripts();
    assert_eq!(t[0].commands.last().map(String::as_str), Some("QUIT"));
}

#[test]
fn implicit_tls_relay_host_defaults_to_port_465() {
    let mut conf = conf();
    conf.relay.host = Some(String::from("[example.net]"));
    conf.relay.tls = crate::config::delivery::RelayTls::Implicit;
    conf.credentials = Some((String::from("user"), String::from("secret")));
    let mut h = Harness::new(conf, Connect::Fail { reason: "refused", permanent: false, dsn: "4.4.1" });
    let (id, fd) = h.queue_file(&["a@example.net"], BODY);
    let relay = Target::Inet(NexthopSpec { host: "example.net".into(), port: None, mx: false });
    h.send_deliver_to(1, &id, relay.clone(), vec![0], Some(fd));
    h.report(1);
    h.deliver(2, &["a@example.net"], BODY);
    h.report(2);
    assert_eq!(h.requests, vec![(relay, 465), (nexthop(), 25)]);
}

#[test]
fn a_relay_host_that_cannot_be_found_defers_every_message() {
    let mut conf = conf();
    conf.relay.host = Some(String::from("[smtp.example.net]"));
    let nxdomain = "Host or domain name not found. Name service error for name=smtp.example.net type=A: Host not found";
    let mut h = Harness::new(conf, Connect::Fail { reason: nxdomain, permanent: true, dsn: "5.4.4" });
    let (id, fd) = h.queue_file(&["a@example.net"], BODY);
    let relay = Target::Inet(NexthopSpec { host: "smtp.example.net".into(), port: None, mx: false });
    h.send_deliver_to(1, &id, relay, vec![0], Some(fd));
    let (site, rs) = h.report(1);
    assert!(matches!(site, SiteReport::Unreachable(ref why) if why.contains("relay host configuration problem")));
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Deferred, "4.3.5"));
    assert!(rs[0].reason.contains(nxdomain), "{}", rs[0].reason);
    // Another next hop that does not exist still bounces.
    h.deliver(2, &["a@example.net"], BODY);
    let (_, rs) = h.report(2);
    assert_eq!((&rs[0].status, rs[0].dsn.as_str()), (&RecipientStatus::Bounced, "5.4.4"));
}

#[test]
fn a_next_hop_without_a_port_gets_smtp_port() {
    let mut conf = conf();
    conf.smtp.port = 2525;
    let mut h = Harness::new(conf, Connect::Fail { reason: "refused", permanent: false, dsn: "4.4.1" });
    h.deliver(1, &["a@example.net"], BODY);
    h.report(1);
    assert_eq!(h.requests, vec![(nexthop(), 2525)]);
}

#[test]
fn implicit_tls_to_the_relay_host() {
    implicit_tls(Answer::Implicit);
}

/// A server whose TLS 1.3 stack sends the greeting with its handshake
/// flight (0.5-RTT data): it comes before the client's session exists,
/// and must not be lost (the client would wait for it until its timeout).
#[test]
fn implicit_tls_greeting_sent_with_the_handshake_is_read() {
    implicit_tls(Answer::ImplicitEarly);
}

fn implicit_tls(connect: Answer) {
    let server = Server::start(
        1,
        Arc::new(move |cmd: &str| match cmd {
            "CONNECT" => connect.clone(),
            "EHLO client.test" => say("250-mx.test\r\n250-AUTH PLAIN\r\n250 8BITMIME"),
            c if c.starts_with("AUTH PLAIN ") => say("235 2.7.0 Authentication successful"),
            c => mta(&[])(c),
        }),
    );
    let mut conf = conf();
    conf.relay.host = Some(format!("[127.0.0.1]:{}", server.addr.port()));
    conf.relay.tls = crate::config::delivery::RelayTls::Implicit;
    conf.credentials = Some((String::from("user"), String::from("secret")));
    let mut h = Harness::new(conf, Connect::To(server.addr));
    let (id, fd) = h.queue_file(&["a@example.net"], BODY);
    let relay = Target::Inet(NexthopSpec { host: "127.0.0.1".into(), port: Some(server.addr.port()), mx: false });
    h.send_deliver_to(1, &id, relay, vec![0], Some(fd));
    let (_, rs) = h.report(1);
    assert!(delivered(&rs[0]), "{rs:?}");
    h.close_sessions();
    let t = server.transcripts();
    assert!(t[0].tls);
    assert!(t[0].commands.iter().any(|c| c.starts_with("AUTH PLAIN ")), "{:?}", t[0].commands);
}

#[test]
fn waiting_job_is_taken_by_the_first_session_to_become_idle() {
    // The connector answers the first request only: job 2, waiting for
    // its connection, goes over the first one when job 1 is done.
    let server = Server::start(2, mta(&[]));
    let mut conf = conf();
    conf.smtp.connection_cache_time = Duration::from_secs(10);
    let mut h = Harness::new(conf, Connect::First(server.addr));
    h.deliver(1, &["a@example.net"], BODY);
    h.deliver(2, &["b@example.net"], BODY);
    assert!(delivered(&h.report(1).1[0]));
    assert!(delivered(&h.report(2).1[0]));
    assert_eq!(h.requests.len(), 2);
    h.close_sessions();
    let t = server.transcripts();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].commands.iter().filter(|c| c.starts_with("MAIL")).count(), 2);
}

#[test]
fn lost_qmgr_abandons_its_jobs_and_a_new_one_is_served() {
    let mut h = Harness::new(conf(), Connect::Hold);
    h.deliver(1, &["a@example.net"], BODY);
    h.run_until(|h| !h.requests.is_empty());
    let (agent_qmgr, qmgr) = crate::ipc::pair().expect("pair");
    h.qmgr = Channel::new(qmgr);
    h.run_until(|h| h.agent.qmgr.is_none());
    assert!(h.agent.jobs.is_empty() && h.agent.waiting.is_empty());
    h.master.send(&FromMaster::Peer { role: Role::Qmgr, pid: 3 }, &[agent_qmgr.as_fd()]).expect("send");
    h.run_until(|h| h.agent.qmgr.is_some());
    h.connect = Connect::Fail { reason: "refused", permanent: false, dsn: "4.4.1" };
    // The same job number again: the old job is forgotten.
    h.deliver(1, &["a@example.net"], BODY);
    assert_eq!(h.report(1).1[0].reason, "refused");
    assert!(h.reports.is_empty(), "the abandoned job was reported: {:?}", h.reports);
}

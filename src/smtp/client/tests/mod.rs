//! Scripted server dialogues: the harness plays the driver (collects what
//! the client sends, serves content, starts TLS) and each test plays the
//! server, checking every byte the client writes.

use super::*;
use crate::queue::{Notify, Ret};
use crate::smtp::reply::ReplyLimits;

mod content;
mod lmtp;
mod session;
mod transaction;

pub(super) const EHLO_ALL: &str = "250-mx.example.net Hello\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n\
                                   250-SMTPUTF8\r\n250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n";
pub(super) const EHLO_NONE: &str = "250 mx.example.net\r\n";
pub(super) const GREETING: &str = "220 mx.example.net ESMTP\r\n";

pub(super) fn config() -> Config {
    Config {
        helo_name: "client.example.org".into(),
        lmtp: false,
        tls: TlsPolicy::None,
        credentials: None,
        limits: Limits::default(),
        timeouts: Timeouts::default(),
    }
}

pub(super) fn rcpt(address: &str) -> JobRecipient {
    JobRecipient { address: address.into(), orcpt: None, notify: None }
}

pub(super) fn job(recipients: &[&str]) -> Job {
    Job {
        sender: "sender@example.org".into(),
        recipients: recipients.iter().map(|r| rcpt(r)).collect(),
        body: BodyType::SevenBit,
        smtputf8: false,
        utf8_headers: false,
        ret: None,
        envid: None,
        size: 100,
    }
}

/// The driver's side, with the server's side in the test.
pub(super) struct Harness {
    pub client: Client,
    sent: Vec<u8>,
    pub done: Vec<JobResult>,
    pub starttls: usize,
    pub idle: usize,
    pub closed: bool,
    pub content: Vec<u8>,
    pub chunk: usize,
    content_pos: usize,
    pub content_requests: usize,
    /// Answer `Action::StartTls` with `tls_started` at once.
    pub auto_tls: bool,
    /// Leave `Action::NeedContent` unanswered (a driver still writing).
    pub hold_content: bool,
}

impl Harness {
    pub fn new(config: Config) -> Harness {
        Harness {
            client: Client::new(config).unwrap(),
            sent: Vec::new(),
            done: Vec::new(),
            starttls: 0,
            idle: 0,
            closed: false,
            content: b"Subject: test\r\n\r\nHello\r\n".to_vec(),
            chunk: 64 * 1024,
            content_pos: 0,
            content_requests: 0,
            auto_tls: true,
            hold_content: false,
        }
    }

    /// A harness whose client has a job and has been greeted.
    pub fn greeted(config: Config, j: Job) -> Harness {
        let mut h = Harness::new(config);
        h.client.start(j).unwrap();
        h.server(GREETING);
        h
    }

    /// Carry out the client's actions until there are none.
    pub fn pump(&mut self) {
        loop {
            let actions: Vec<Action> = self.client.actions().collect();
            if actions.is_empty() {
                return;
            }
            for a in actions {
                match a {
                    Action::Send(b) => {
                        assert!(!self.closed, "sent after Close");
                        self.sent.extend_from_slice(&b);
                    }
                    Action::StartTls => {
                        self.starttls += 1;
                        if self.auto_tls {
                            self.client.tls_started();
                        }
                    }
                    Action::NeedContent => {
                        self.content_requests += 1;
                        if self.hold_content {
                            continue;
                        }
                        if self.content_pos < self.content.len() {
                            let end = (self.content_pos + self.chunk).min(self.content.len());
                            let chunk = self.content[self.content_pos..end].to_vec();
                            self.content_pos = end;
                            self.client.content(&chunk);
                        } else {
                            self.content_pos = 0;
                            self.client.content_end();
                        }
                    }
                    Action::Done(r) => self.done.push(*r),
                    Action::Idle => self.idle += 1,
                    Action::Close => self.closed = true,
                }
            }
        }
    }

    /// The server writes `reply`.
    pub fn server(&mut self, reply: &str) {
        self.server_bytes(reply.as_bytes());
    }

    pub fn server_bytes(&mut self, reply: &[u8]) {
        self.client.receive(reply);
        self.pump();
    }

    /// What the client wrote since the last call.
    pub fn sent(&mut self) -> String {
        String::from_utf8(std::mem::take(&mut self.sent)).unwrap()
    }

    /// Check what the client wrote, then answer.
    pub fn step(&mut self, expect_sent: &str, reply: &str) {
        assert_eq!(self.sent(), expect_sent);
        self.server(reply);
    }

    /// The result of the one job done.
    pub fn result(&self) -> &JobResult {
        assert_eq!(self.done.len(), 1, "{:?}", self.done);
        &self.done[0]
    }
}

/// Disposition, stage and reply (as text) of each recipient.
pub(super) fn summary(r: &JobResult) -> Vec<(Disposition, Stage, String)> {
    r.recipients.iter().map(|x| (x.disposition, x.stage, x.reply.to_string())).collect()
}

#[test]
fn bad_configuration_is_refused() {
    let bad = Config { helo_name: "bad name\r\nMAIL".into(), ..config() };
    assert!(matches!(Client::new(bad), Err(ConfigError::HeloName(_))));
    let creds = Some(Credentials { username: "a\0b".into(), password: "x".into() });
    assert!(matches!(Client::new(Config { credentials: creds, ..config() }), Err(ConfigError::Credentials(_))));
    assert!(Client::new(Config { helo_name: "[192.0.2.1]".into(), ..config() }).is_ok());
    let shown = format!("{:?}", Credentials { username: "u".into(), password: "secret".into() });
    assert!(!shown.contains("secret"));
}

#[test]
fn describe_names_the_host_for_remote_replies_only() {
    let mut h = Harness::greeted(config(), job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_ALL);
    h.step(
        "MAIL FROM:<sender@example.org> SIZE=100\r\nRCPT TO:<a@example.net>\r\nDATA\r\n",
        "250 2.1.0 Ok\r\n550 5.1.1 <a@example.net>: no such user\r\n554 5.5.1 no valid recipients\r\n",
    );
    let r = &h.result().recipients[0];
    assert_eq!(
        r.describe("mx.example.net[192.0.2.1]"),
        "host mx.example.net[192.0.2.1] said: 550 5.1.1 <a@example.net>: no such user (in reply to RCPT TO command)"
    );
}

/// A whole dialogue, the server's replies cut into pieces by `cut`.
fn dialogue(cut: &dyn Fn(&str) -> Vec<String>) -> (String, Vec<JobResult>) {
    let mut h = Harness::new(config());
    let mut transcript = String::new();
    h.client.start(job(&["a@example.net", "b@example.net", "c@example.net"])).unwrap();
    let replies = [
        GREETING,
        EHLO_ALL,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n450-4.2.0 mailbox\r\n450 4.2.0 busy\r\n250 2.1.5 Ok\r\n354 go ahead\r\n",
        "250 2.0.0 Ok: queued as X\r\n",
        "221 2.0.0 Bye\r\n",
    ];
    for (i, reply) in replies.iter().enumerate() {
        for piece in cut(reply) {
            h.server(&piece);
        }
        if i == 3 {
            h.client.quit();
            h.pump();
        }
        transcript.push_str(&h.sent());
        transcript.push('|');
    }
    assert!(h.closed);
    (transcript, h.done)
}

#[test]
fn replies_split_at_every_byte_give_the_same_outcome() {
    let whole = dialogue(&|r| vec![r.to_string()]);
    let expected = "EHLO client.example.org\r\n|MAIL FROM:<sender@example.org> SIZE=100\r\n\
                    RCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n|\
                    Subject: test\r\n\r\nHello\r\n.\r\n|QUIT\r\n||";
    assert_eq!(whole.0, expected);
    let bytes = dialogue(&|r| r.chars().map(String::from).collect());
    assert_eq!(bytes, whole);
    for at in 0..80 {
        let split = dialogue(&|r| {
            let at = at.min(r.len());
            vec![r[..at].to_string(), r[at..].to_string()]
        });
        assert_eq!(split, whole, "split at {at}");
    }
    let r = &whole.1[0];
    assert_eq!(
        summary(r),
        vec![
            (Disposition::Delivered, Stage::Dot, "250 2.0.0 Ok: queued as X".into()),
            (Disposition::Deferred, Stage::Rcpt, "450 4.2.0 mailbox busy".into()),
            (Disposition::Delivered, Stage::Dot, "250 2.0.0 Ok: queued as X".into()),
        ]
    );
}

#[test]
fn timeouts_follow_the_stage_and_are_configurable() {
    let timeouts = Timeouts { rcpt: Duration::from_secs(7), ..Timeouts::default() };
    let mut h = Harness::new(Config { timeouts, ..config() });
    assert_eq!(h.client.waiting(), Some((Stage::Greeting, Duration::from_secs(300))));
    h.client.start(job(&["a@example.net"])).unwrap();
    h.server(GREETING);
    assert_eq!(h.client.waiting(), Some((Stage::Helo, Duration::from_secs(300))));
    h.server(EHLO_NONE);
    assert_eq!(h.client.waiting(), Some((Stage::Mail, Duration::from_secs(300))));
    h.server("250 Ok\r\n");
    assert_eq!(h.client.waiting(), Some((Stage::Rcpt, Duration::from_secs(7))));
    h.server("250 Ok\r\n");
    assert_eq!(h.client.waiting(), Some((Stage::Data, Duration::from_secs(120))));
    h.server("354 go\r\n");
    assert_eq!(h.client.waiting(), Some((Stage::Dot, Duration::from_secs(600))));
    h.server("250 Ok\r\n");
    assert_eq!(h.client.waiting(), None);
    h.client.quit();
    assert_eq!(h.client.waiting(), Some((Stage::Quit, Duration::from_secs(300))));
    h.client.timeout();
    h.pump();
    assert!(h.closed);
    assert_eq!(h.done.len(), 1);
}

#[test]
fn timeout_defers_what_is_unfinished_and_closes_without_quit() {
    let mut h = Harness::greeted(config(), job(&["a@example.net", "b@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_NONE);
    h.step("MAIL FROM:<sender@example.org>\r\n", "250 Ok\r\n");
    h.step("RCPT TO:<a@example.net>\r\n", "550 5.1.1 unknown\r\n");
    assert_eq!(h.client.waiting().map(|w| w.0), Some(Stage::Rcpt));
    h.client.timeout();
    h.pump();
    assert_eq!(h.sent(), "RCPT TO:<b@example.net>\r\n");
    assert!(h.closed);
    let r = h.result();
    assert_eq!(r.recipients[0].disposition, Disposition::Bounced);
    assert_eq!(
        (r.recipients[1].disposition, r.recipients[1].stage, r.recipients[1].remote),
        (Disposition::Deferred, Stage::Rcpt, false)
    );
    assert_eq!(r.recipients[1].reply.to_string(), "421 4.4.2 timeout while waiting for the reply to RCPT TO");
    // A later job on the dead session is deferred at once.
    h.client.start(job(&["c@example.net"])).unwrap();
    h.pump();
    assert_eq!(h.done[1].recipients[0].disposition, Disposition::Deferred);
    assert!(h.done[1].session_failure);
}

#[test]
fn garbage_reply_is_a_protocol_error_that_defers_everything() {
    let mut h = Harness::greeted(config(), job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_ALL);
    assert!(h.sent().starts_with("MAIL FROM:"));
    h.server("hello, I am not SMTP\r\n250 Ok\r\n");
    assert!(h.closed);
    assert_eq!(h.sent(), "", "no QUIT after a protocol error");
    let r = &h.result().recipients[0];
    assert_eq!((r.disposition, r.stage), (Disposition::Deferred, Stage::Mail));
    assert!(r.reply.text.starts_with("protocol error: malformed reply: hello, I am not SMTP"), "{}", r.reply.text);
    assert_eq!(r.reply.status(), Enhanced::new(4, 5, 0));
}

#[test]
fn oversized_reply_is_refused_before_it_ends() {
    let mut h = Harness::greeted(config(), job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_ALL);
    h.sent();
    h.server(&format!("250-{}", "x".repeat(4000)));
    assert!(h.closed);
    assert!(h.result().recipients[0].reply.text.contains("reply line too long"));

    let limits = Limits { reply: ReplyLimits { lines: 10, ..ReplyLimits::default() }, ..Limits::default() };
    let mut h = Harness::new(Config { limits, ..config() });
    h.client.start(job(&["a@example.net"])).unwrap();
    h.server(&"220-banner\r\n".repeat(50));
    assert!(h.closed);
    let r = &h.result().recipients[0];
    assert_eq!((r.disposition, r.stage), (Disposition::Deferred, Stage::Greeting));
    assert!(r.reply.text.contains("too many lines"));
    assert!(h.result().session_failure);
}

#[test]
fn reply_text_is_sanitised() {
    let mut h = Harness::greeted(config(), job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_NONE);
    assert_eq!(h.sent(), "MAIL FROM:<sender@example.org>\r\n");
    h.server_bytes(b"550 5.7.1 bad\x07sender\x1b[0m \xff\r\n");
    assert_eq!(h.result().recipients[0].reply.text, "bad?sender?[0m ?");
}

#[test]
fn client_never_panics_on_random_server_bytes() {
    use proptest::prelude::*;
    let mut runner = proptest::test_runner::TestRunner::default();
    let reply = prop_oneof![
        Just("250 Ok\r\n".to_string()),
        Just("354 go\r\n".to_string()),
        Just("220 hi\r\n".to_string()),
        Just("550 no\r\n".to_string()),
        Just("421 bye\r\n".to_string()),
        Just(EHLO_ALL.to_string()),
        "[ -~\r\n]{0,40}",
    ];
    runner
        .run(&(proptest::collection::vec(reply, 0..20), any::<bool>()), |(replies, lmtp)| {
            let mut h = Harness::new(Config { lmtp, tls: TlsPolicy::Opportunistic, ..config() });
            h.client.start(job(&["a@example.net", "b@example.net"])).unwrap();
            for r in &replies {
                h.server(r);
                if h.client.is_idle() {
                    let _ = h.client.start(job(&["c@example.net"]));
                    h.pump();
                }
            }
            h.client.connection_lost();
            h.pump();
            prop_assert!(h.closed);
            prop_assert!(!h.done.is_empty());
            for d in &h.done {
                prop_assert!(d.recipients.len() == 2 || d.recipients.len() == 1);
            }
            Ok(())
        })
        .unwrap();
}

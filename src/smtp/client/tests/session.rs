//! Session set-up: greeting, EHLO/HELO/LHLO, STARTTLS, AUTH.

use super::*;

const EHLO_TLS: &str = "250-mx.example.net\r\n250-PIPELINING\r\n250 STARTTLS\r\n";
const EHLO_AUTH: &str = "250-mx.example.net\r\n250-PIPELINING\r\n250-AUTH LOGIN PLAIN\r\n250 8BITMIME\r\n";

fn creds() -> Option<Credentials> {
    Some(Credentials { username: "user".into(), password: "pass".into() })
}

#[test]
fn greeting_5xx_defers_as_a_site_failure_and_quits() {
    // Postfix's smtp_skip_5xx_greeting: another MX may take the mail, or
    // a later attempt; a 5xx greeting never bounces it.
    let mut h = Harness::new(config());
    h.client.start(job(&["a@example.net", "b@example.net"])).unwrap();
    h.server("554 5.7.1 go away\r\n");
    assert_eq!(h.sent(), "QUIT\r\n");
    let r = h.result();
    assert!(r.session_failure);
    assert_eq!(summary(r), vec![(Disposition::Deferred, Stage::Greeting, "554 5.7.1 go away".into()); 2]);
    assert!(r.recipients[0].remote);
    h.server("221 bye\r\n");
    assert!(h.closed);
}

#[test]
fn helo_refused_with_5xx_after_ehlo_bounces_without_trying_another_server() {
    let mut h = Harness::greeted(config(), job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", "502 5.5.2 no EHLO\r\n");
    h.step("HELO client.example.org\r\n", "550 5.7.1 not you\r\n");
    assert_eq!(h.sent(), "QUIT\r\n");
    let r = h.result();
    // Permanent, as Postfix takes it: not a session failure that another
    // MX host might do better with (only a 5xx greeting is).
    assert!(!r.session_failure);
    assert_eq!(summary(r), vec![(Disposition::Bounced, Stage::Helo, "550 5.7.1 not you".into())]);
    // A 4xx to HELO is one.
    let mut h = Harness::greeted(config(), job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", "502 5.5.2 no EHLO\r\n");
    h.step("HELO client.example.org\r\n", "450 4.7.1 not now\r\n");
    assert!(h.result().session_failure);
    assert_eq!(summary(h.result()), vec![(Disposition::Deferred, Stage::Helo, "450 4.7.1 not now".into())]);
}

#[test]
fn greeting_421_defers_and_closes_without_quit() {
    let mut h = Harness::new(config());
    h.client.start(job(&["a@example.net"])).unwrap();
    h.server("421 4.3.2 too busy\r\n");
    assert_eq!(h.sent(), "");
    assert!(h.closed);
    assert_eq!(summary(h.result()), vec![(Disposition::Deferred, Stage::Greeting, "421 4.3.2 too busy".into())]);
}

/// A server that says more than it is asked (a greeting twice, as some
/// proxies do): the second reply came before the EHLO it would be taken
/// for, and every reply after would answer the wrong command (a refused
/// recipient taken for another). The session ends; the mail is deferred.
#[test]
fn a_reply_before_its_command_ends_the_session() {
    let mut h = Harness::new(config());
    h.client.start(job(&["a@example.net", "b@example.net"])).unwrap();
    h.server("220 proxy.example.net ESMTP\r\n220 mx.example.net ESMTP\r\n");
    assert_eq!(h.sent(), "EHLO client.example.org\r\n");
    assert!(h.closed);
    let r = h.result();
    assert!(r.recipients.iter().all(|x| x.disposition == Disposition::Deferred), "{:?}", summary(r));
    assert!(r.recipients[0].reply.text.contains("before it was sent"), "{}", r.recipients[0].reply.text);
}

#[test]
fn greeting_without_a_job_asks_for_one() {
    let mut h = Harness::new(config());
    h.server(GREETING);
    h.step("EHLO client.example.org\r\n", EHLO_ALL);
    assert_eq!(h.idle, 1);
    assert!(h.client.is_idle());
    assert!(h.client.features().pipelining && h.client.features().dsn);
    assert_eq!(h.client.features().size, Some(Some(10000)));
    h.client.start(job(&["a@example.net"])).unwrap();
    h.pump();
    assert!(h.sent().starts_with("MAIL FROM:<sender@example.org> SIZE=100\r\nRCPT TO:<a@example.net>\r\n"));
    assert_eq!(h.client.start(job(&["b@example.net"])), Err(job(&["b@example.net"])), "one job at a time");
}

#[test]
fn ehlo_refused_with_5xx_falls_back_to_helo_without_extensions() {
    let mut h = Harness::greeted(config(), job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", "502 5.5.2 command not recognised\r\n");
    h.step("HELO client.example.org\r\n", "250 mx.example.net\r\n");
    // No ESMTP: no parameters, one command at a time.
    h.step("MAIL FROM:<sender@example.org>\r\n", "250 Ok\r\n");
    h.step("RCPT TO:<a@example.net>\r\n", "250 Ok\r\n");
    h.step("DATA\r\n", "354 go\r\n");
    h.step("Subject: test\r\n\r\nHello\r\n.\r\n", "250 Ok\r\n");
    assert_eq!(h.result().recipients[0].disposition, Disposition::Delivered);
    assert!(!h.result().recipients[0].dsn_passed);
}

#[test]
fn ehlo_4xx_and_helo_refusal_fail_the_session() {
    let mut h = Harness::greeted(config(), job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", "451 4.3.0 try later\r\n");
    assert_eq!(h.sent(), "QUIT\r\n");
    assert_eq!(summary(h.result()), vec![(Disposition::Deferred, Stage::Helo, "451 4.3.0 try later".into())]);

    let mut h = Harness::greeted(config(), job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", "500 no\r\n");
    h.step("HELO client.example.org\r\n", "550 5.7.1 not you\r\n");
    assert_eq!(h.sent(), "QUIT\r\n");
    assert_eq!(summary(h.result()), vec![(Disposition::Bounced, Stage::Helo, "550 5.7.1 not you".into())]);
}

#[test]
fn lmtp_says_lhlo_and_never_falls_back_to_helo() {
    let mut h = Harness::greeted(Config { lmtp: true, ..config() }, job(&["a@example.net"]));
    h.step("LHLO client.example.org\r\n", "500 5.5.1 what\r\n");
    assert_eq!(h.sent(), "QUIT\r\n");
    assert_eq!(summary(h.result()), vec![(Disposition::Bounced, Stage::Helo, "500 5.5.1 what".into())]);
    assert!(!h.result().session_failure);
}

#[test]
fn starttls_when_offered_then_ehlo_again() {
    let config = Config { tls: TlsPolicy::Opportunistic, ..config() };
    let mut h = Harness::greeted(config, job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_TLS);
    h.step("STARTTLS\r\n", "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(h.starttls, 1);
    assert!(h.client.tls_active());
    h.step("EHLO client.example.org\r\n", EHLO_ALL);
    assert!(h.sent().starts_with("MAIL FROM:<sender@example.org> SIZE=100\r\n"));
    h.server("250 Ok\r\n250 Ok\r\n354 go\r\n");
    h.step("Subject: test\r\n\r\nHello\r\n.\r\n", "250 Ok\r\n");
    assert!(h.result().tls);
    assert_eq!(h.result().recipients[0].disposition, Disposition::Delivered);
}

#[test]
fn starttls_injection_in_the_same_read_abandons_the_session() {
    let config = Config { tls: TlsPolicy::Opportunistic, credentials: creds(), ..config() };
    let mut h = Harness::greeted(config, job(&["a@example.net"]));
    h.auto_tls = false;
    h.step("EHLO client.example.org\r\n", EHLO_TLS);
    // A man in the middle appends a forged EHLO reply (AUTH PLAIN,
    // PIPELINING) and a 235 to the plaintext 220.
    let injected = "250-evil\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n235 ok\r\n";
    h.step("STARTTLS\r\n", &format!("220 go ahead\r\n{injected}"));
    // No handshake, nothing sent, the connection closed, the mail deferred.
    assert_eq!(h.starttls, 0);
    assert_eq!(h.sent(), "");
    assert!(h.closed);
    assert!(!h.client.tls_active());
    let r = &h.result().recipients[0];
    assert_eq!((r.disposition, r.stage, r.remote), (Disposition::Deferred, Stage::StartTls, false));
    assert_eq!(r.reply.status().to_string(), "4.5.0");
    let want = format!("the server sent {} bytes in plaintext after its 220 reply to STARTTLS", injected.len());
    assert!(r.reply.text.contains(&want), "{}", r.reply.text);
    assert!(r.reply.text.contains("session abandoned"), "{}", r.reply.text);
    assert!(h.result().session_failure);
    // Whatever comes next is not read.
    h.client.tls_started();
    h.server("250 more\r\n");
    assert_eq!(h.sent(), "");
    assert_eq!(h.done.len(), 1);
}

#[test]
fn starttls_injection_in_a_later_read_abandons_the_session() {
    let config = Config { tls: TlsPolicy::Require, ..config() };
    let mut h = Harness::greeted(config, job(&["a@example.net"]));
    h.auto_tls = false;
    h.step("EHLO client.example.org\r\n", EHLO_TLS);
    // The 220 alone, in pieces: the handshake is asked for.
    h.server("220 go");
    assert_eq!(h.starttls, 0);
    h.step("STARTTLS\r\n", " ahead\r\n");
    assert_eq!(h.starttls, 1);
    assert!(!h.closed);
    // Plaintext in a later read, before the driver started TLS.
    h.server("250 injected\r\n");
    assert!(h.closed);
    assert_eq!(h.sent(), "");
    let r = &h.result().recipients[0];
    assert_eq!((r.disposition, r.stage), (Disposition::Deferred, Stage::StartTls));
    assert!(r.reply.text.contains("14 bytes in plaintext after its 220 reply to STARTTLS"), "{}", r.reply.text);
    // The handshake finishing late changes nothing.
    h.client.tls_started();
    h.pump();
    assert_eq!(h.sent(), "");
    assert!(!h.client.tls_active());
}

#[test]
fn nothing_after_the_220_to_starttls_starts_the_handshake() {
    let config = Config { tls: TlsPolicy::Opportunistic, credentials: creds(), ..config() };
    let mut h = Harness::greeted(config, job(&["a@example.net"]));
    h.auto_tls = false;
    h.step("EHLO client.example.org\r\n", EHLO_TLS);
    h.step("STARTTLS\r\n", "220 go ahead\r\n");
    assert_eq!((h.starttls, h.closed), (1, false));
    h.client.tls_started();
    h.pump();
    assert_eq!(h.sent(), "EHLO client.example.org\r\n");
    assert_eq!(h.client.waiting().map(|w| w.0), Some(Stage::Helo));
    assert_eq!(h.client.features(), &Features::default());
    // The reply inside TLS offers no AUTH: the credentials stay unsent.
    h.server("250-mx.example.net\r\n250 8BITMIME\r\n");
    assert_eq!(h.sent(), "QUIT\r\n");
    let r = &h.result().recipients[0];
    assert_eq!((r.disposition, r.stage), (Disposition::Deferred, Stage::Auth));
    assert!(r.reply.text.contains("does not offer AUTH PLAIN"));
}

#[test]
fn required_tls_not_offered_defers_with_a_clear_reason() {
    let mut h = Harness::greeted(Config { tls: TlsPolicy::Require, ..config() }, job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_ALL);
    assert_eq!(h.sent(), "QUIT\r\n");
    let r = h.result();
    assert!(r.session_failure);
    assert_eq!(
        summary(r),
        vec![(
            Disposition::Deferred,
            Stage::StartTls,
            "454 4.7.4 TLS is required, but was not offered by the server".into()
        )]
    );
}

#[test]
fn refused_starttls_defers_when_required_and_goes_on_in_plaintext_otherwise() {
    let mut h = Harness::greeted(Config { tls: TlsPolicy::Require, ..config() }, job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_TLS);
    h.step("STARTTLS\r\n", "454 4.7.0 TLS not available\r\n");
    assert_eq!(h.sent(), "QUIT\r\n");
    assert_eq!(
        summary(h.result()),
        vec![(Disposition::Deferred, Stage::StartTls, "454 4.7.0 TLS not available".into())]
    );

    let mut h = Harness::greeted(Config { tls: TlsPolicy::Opportunistic, ..config() }, job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_TLS);
    h.step("STARTTLS\r\n", "454 4.7.0 TLS not available\r\n");
    assert!(h.sent().starts_with("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.net>\r\nDATA\r\n"));
    assert!(!h.client.tls_active());
}

#[test]
fn tls_policy_none_never_starts_tls() {
    let mut h = Harness::greeted(config(), job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_TLS);
    assert!(h.sent().starts_with("MAIL FROM:"));
    assert_eq!(h.starttls, 0);
}

#[test]
fn tls_handshake_failure_defers_and_closes() {
    let mut h = Harness::greeted(Config { tls: TlsPolicy::Opportunistic, ..config() }, job(&["a@example.net"]));
    h.auto_tls = false;
    h.step("EHLO client.example.org\r\n", EHLO_TLS);
    h.step("STARTTLS\r\n", "220 go\r\n");
    assert_eq!(h.client.waiting(), Some((Stage::StartTls, Duration::from_secs(300))));
    h.client.tls_failed("certificate\nexpired");
    h.pump();
    assert!(h.closed);
    assert_eq!(
        summary(h.result()),
        vec![(Disposition::Deferred, Stage::StartTls, "454 4.7.5 TLS handshake failed: certificate?expired".into())]
    );
    // The driver hears that the handshake failed (it may try again
    // without TLS).
    assert!(h.result().tls_failed && h.result().session_failure);
}

#[test]
fn only_a_failed_or_timed_out_handshake_is_a_tls_failure() {
    let opportunistic = || Config { tls: TlsPolicy::Opportunistic, ..config() };
    // Timed out in the handshake.
    let mut h = Harness::greeted(opportunistic(), job(&["a@example.net"]));
    h.auto_tls = false;
    h.step("EHLO client.example.org\r\n", EHLO_TLS);
    h.step("STARTTLS\r\n", "220 go\r\n");
    h.client.timeout();
    h.pump();
    assert!(h.result().tls_failed, "{:?}", h.result());
    // No reply to STARTTLS: a timeout, not a TLS failure.
    let mut h = Harness::greeted(opportunistic(), job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_TLS);
    assert_eq!(h.sent(), "STARTTLS\r\n");
    h.client.timeout();
    h.pump();
    assert!(!h.result().tls_failed);
    // Plaintext injected after the 220: an attack, not a TLS failure.
    let mut h = Harness::greeted(opportunistic(), job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_TLS);
    h.step("STARTTLS\r\n", "220 go\r\n250 injected\r\n");
    assert!(h.closed);
    assert!(!h.result().tls_failed);
    // A TLS session that works, then a lost connection.
    let mut h = Harness::greeted(opportunistic(), job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_TLS);
    h.step("STARTTLS\r\n", "220 go\r\n");
    h.step("EHLO client.example.org\r\n", EHLO_ALL);
    h.client.connection_lost();
    h.pump();
    assert!(!h.result().tls_failed);
}

#[test]
fn auth_plain_inside_tls() {
    let config = Config { tls: TlsPolicy::Require, credentials: creds(), ..config() };
    let mut h = Harness::greeted(config, job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_TLS);
    h.step("STARTTLS\r\n", "220 go\r\n");
    h.step("EHLO client.example.org\r\n", EHLO_AUTH);
    h.step("AUTH PLAIN AHVzZXIAcGFzcw==\r\n", "235 2.7.0 Authentication successful\r\n");
    h.step("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.net>\r\nDATA\r\n", "250 Ok\r\n250 Ok\r\n354 go\r\n");
    h.step("Subject: test\r\n\r\nHello\r\n.\r\n", "250 Ok\r\n");
    assert!(h.result().authenticated && h.result().tls);
}

#[test]
fn credentials_are_never_sent_in_plaintext() {
    let config = Config { tls: TlsPolicy::Opportunistic, credentials: creds(), ..config() };
    let mut h = Harness::greeted(config, job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_AUTH);
    assert_eq!(h.sent(), "QUIT\r\n");
    let r = h.result();
    assert!(r.session_failure);
    assert_eq!(
        summary(r),
        vec![(
            Disposition::Deferred,
            Stage::Auth,
            "454 4.7.0 refusing to send credentials in plaintext: TLS is not active".into()
        )]
    );
}

#[test]
fn auth_failure_defers_even_with_5xx() {
    let config = Config { tls: TlsPolicy::Require, credentials: creds(), ..config() };
    let mut h = Harness::greeted(config, job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_TLS);
    h.step("STARTTLS\r\n", "220 go\r\n");
    h.step("EHLO client.example.org\r\n", EHLO_AUTH);
    h.step("AUTH PLAIN AHVzZXIAcGFzcw==\r\n", "535 5.7.8 Authentication credentials invalid\r\n");
    assert_eq!(h.sent(), "QUIT\r\n");
    let r = &h.result().recipients[0];
    assert_eq!((r.disposition, r.stage, r.remote), (Disposition::Deferred, Stage::Auth, true));
    assert_eq!(r.reply.to_string(), "535 5.7.8 Authentication credentials invalid");
}

#[test]
fn reply_421_at_any_time_defers_and_closes() {
    let mut h = Harness::greeted(config(), job(&["a@example.net", "b@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_NONE);
    h.step("MAIL FROM:<sender@example.org>\r\n", "250 Ok\r\n");
    h.step("RCPT TO:<a@example.net>\r\n", "250 Ok\r\n");
    h.step("RCPT TO:<b@example.net>\r\n", "421 4.4.2 idle too long\r\n");
    assert_eq!(h.sent(), "");
    assert!(h.closed);
    let s = summary(h.result());
    assert_eq!(s[0], (Disposition::Deferred, Stage::Rcpt, "421 4.4.2 idle too long".into()));
    assert_eq!(s[1], s[0]);
}

#[test]
fn unexpected_reply_while_idle_closes_the_session() {
    let mut h = Harness::new(config());
    h.server(GREETING);
    h.step("EHLO client.example.org\r\n", EHLO_ALL);
    h.server("250 surprise\r\n");
    assert!(h.closed);
    h.client.start(job(&["a@example.net"])).unwrap();
    h.pump();
    let r = &h.result().recipients[0];
    assert_eq!(r.disposition, Disposition::Deferred);
    assert!(r.reply.text.contains("unexpected reply: 250 surprise"), "{}", r.reply.text);
}

#[test]
fn connection_lost_during_setup_defers_the_waiting_job() {
    let mut h = Harness::greeted(config(), job(&["a@example.net"]));
    h.client.connection_lost();
    h.pump();
    assert!(h.closed);
    let r = h.result();
    assert!(r.session_failure);
    assert_eq!(r.recipients[0].reply.text, "lost connection with the server while waiting for the reply to EHLO/HELO");
}

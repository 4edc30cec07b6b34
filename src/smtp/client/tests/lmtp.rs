//! LMTP (RFC 2033): after the content, one reply per accepted recipient
//! in RCPT order, each recipient judged by its own; a server that gives
//! fewer replies (it closes, times out or says 421) leaves the rest
//! deferred, never delivered; DATA accepted without a recipient ends the
//! session.

use super::*;

const LHLO: &str = "LHLO client.example.org\r\n";
const LHLO_REPLY: &str = "250-lmtp.example.net\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n";
const CONTENT: &str = "Subject: test\r\n\r\nHello\r\n.\r\n";

fn lmtp() -> Config {
    Config { lmtp: true, ..config() }
}

/// A session through DATA with every recipient accepted; the content
/// sent, the replies to the end of data still to come.
fn after_content(recipients: &[&str]) -> Harness {
    let mut h = Harness::greeted(lmtp(), job(recipients));
    h.step(LHLO, LHLO_REPLY);
    let mut want = String::from("MAIL FROM:<sender@example.org>\r\n");
    let mut replies = String::from("250 2.1.0 Ok\r\n");
    for r in recipients {
        want.push_str(&format!("RCPT TO:<{r}>\r\n"));
        replies.push_str("250 2.1.5 Ok\r\n");
    }
    want.push_str("DATA\r\n");
    replies.push_str("354 go\r\n");
    h.step(&want, &replies);
    assert_eq!(h.sent(), CONTENT);
    h
}

fn dispositions(h: &Harness) -> Vec<Disposition> {
    h.result().recipients.iter().map(|r| r.disposition).collect()
}

#[test]
fn one_full_mailbox_bounces_that_recipient_only() {
    let mut h = after_content(&["a@example.net", "b@example.net", "c@example.net"]);
    h.server("250 2.0.0 <a@example.net> Saved\r\n");
    h.server("552-5.2.2 <b@example.net> Mailbox is full\r\n552 5.2.2 (quota exceeded)\r\n");
    assert!(h.done.is_empty(), "c's reply is still due");
    h.server("250 2.0.0 <c@example.net> Saved\r\n");
    assert_eq!(
        summary(h.result()),
        vec![
            (Disposition::Delivered, Stage::Dot, "250 2.0.0 <a@example.net> Saved".into()),
            (Disposition::Bounced, Stage::Dot, "552 5.2.2 <b@example.net> Mailbox is full (quota exceeded)".into()),
            (Disposition::Delivered, Stage::Dot, "250 2.0.0 <c@example.net> Saved".into()),
        ]
    );
    assert!(h.result().recipients.iter().all(|r| r.remote));
    // The session goes on: the next job starts with MAIL, no RSET.
    h.client.start(job(&["d@example.net"])).unwrap();
    h.pump();
    assert!(h.sent().starts_with("MAIL FROM:<sender@example.org>\r\nRCPT TO:<d@example.net>\r\n"));
}

#[test]
fn a_temporary_failure_for_one_recipient_defers_it() {
    let mut h = after_content(&["a@example.net", "b@example.net"]);
    h.server("452 4.2.2 <a@example.net> Quota exceeded, try later\r\n250 2.0.0 <b@example.net> Saved\r\n");
    assert_eq!(dispositions(&h), [Disposition::Deferred, Disposition::Delivered]);
    assert_eq!(h.result().recipients[0].reply.status(), Enhanced::new(4, 2, 2));
}

#[test]
fn fewer_replies_then_a_closed_connection_defer_the_rest() {
    let mut h = after_content(&["a@example.net", "b@example.net", "c@example.net"]);
    h.server("250 2.0.0 <a@example.net> Saved\r\n");
    h.client.connection_lost();
    h.pump();
    assert!(h.closed);
    assert_eq!(dispositions(&h), [Disposition::Delivered, Disposition::Deferred, Disposition::Deferred]);
    for r in &h.result().recipients[1..] {
        assert_eq!((r.stage, r.remote), (Stage::Dot, false));
        assert!(r.reply.text.ends_with("-- message may be sent more than once"), "{}", r.reply.text);
    }
}

#[test]
fn a_421_among_the_replies_defers_the_rest() {
    let mut h = after_content(&["a@example.net", "b@example.net", "c@example.net"]);
    h.server("250 2.0.0 <a@example.net> Saved\r\n421 4.3.2 Shutting down\r\n");
    assert!(h.closed);
    assert_eq!(dispositions(&h), [Disposition::Delivered, Disposition::Deferred, Disposition::Deferred]);
    assert_eq!(h.result().recipients[1].reply.to_string(), "421 4.3.2 Shutting down");
}

#[test]
fn a_timeout_between_replies_defers_the_rest() {
    let mut h = after_content(&["a@example.net", "b@example.net"]);
    h.server("250 2.0.0 <a@example.net> Saved\r\n");
    assert_eq!(h.client.waiting().map(|w| w.0), Some(Stage::Dot));
    h.client.timeout();
    h.pump();
    assert!(h.closed);
    assert_eq!(dispositions(&h), [Disposition::Delivered, Disposition::Deferred]);
    assert_eq!(
        h.result().recipients[1].reply.to_string(),
        "421 4.4.2 timeout while waiting for the reply to the end of data -- message may be sent more than once"
    );
}

#[test]
fn without_pipelining_replies_follow_the_accepted_recipients() {
    let mut h = Harness::greeted(lmtp(), job(&["a@example.net", "b@example.net", "c@example.net"]));
    h.step(LHLO, "250 lmtp.example.net\r\n");
    h.step("MAIL FROM:<sender@example.org>\r\n", "250 Ok\r\n");
    h.step("RCPT TO:<a@example.net>\r\n", "550 5.1.1 unknown\r\n");
    h.step("RCPT TO:<b@example.net>\r\n", "250 Ok\r\n");
    h.step("RCPT TO:<c@example.net>\r\n", "250 Ok\r\n");
    h.step("DATA\r\n", "354 go\r\n");
    h.step(CONTENT, "452 4.2.2 b over quota\r\n250 2.0.0 c saved\r\n");
    assert_eq!(dispositions(&h), [Disposition::Bounced, Disposition::Deferred, Disposition::Delivered]);
    assert_eq!(h.result().recipients[0].stage, Stage::Rcpt);
}

#[test]
fn data_accepted_without_a_recipient_ends_the_session() {
    let mut h = Harness::greeted(lmtp(), job(&["a@example.net", "b@example.net"]));
    h.step(LHLO, LHLO_REPLY);
    h.sent();
    h.server("250 Ok\r\n550 5.1.1 unknown\r\n550 5.1.1 unknown\r\n354 go\r\n");
    assert!(h.closed);
    assert_eq!(h.sent(), "", "no end of data, no QUIT");
    assert_eq!(dispositions(&h), [Disposition::Bounced, Disposition::Bounced]);
    assert_eq!(h.result().recipients[0].reply.to_string(), "550 5.1.1 unknown");
}

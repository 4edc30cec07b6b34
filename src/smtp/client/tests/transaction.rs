//! Transactions: MAIL, RCPT, DATA with and without pipelining, local
//! checks (SIZE, SMTPUTF8, addresses), DSN, LMTP, several jobs.

use super::*;

const MAIL_A_B: &str =
    "MAIL FROM:<sender@example.org> SIZE=100\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n";
const CONTENT: &str = "Subject: test\r\n\r\nHello\r\n.\r\n";

/// A session set up with `ehlo`, the job's first write taken.
fn ready(config: Config, j: Job, ehlo: &str) -> Harness {
    let mut h = Harness::greeted(config, j);
    h.step(if h.client.config.lmtp { "LHLO client.example.org\r\n" } else { "EHLO client.example.org\r\n" }, ehlo);
    h
}

#[test]
fn pipelining_sends_mail_rcpts_and_data_in_one_write() {
    let mut h = ready(config(), job(&["a@example.net", "b@example.net"]), EHLO_ALL);
    h.step(MAIL_A_B, "250 2.1.0 Ok\r\n550 5.1.1 no such user\r\n250 2.1.5 Ok\r\n354 End data\r\n");
    h.step(CONTENT, "250 2.0.0 Ok: queued as ABC\r\n");
    assert_eq!(
        summary(h.result()),
        vec![
            (Disposition::Bounced, Stage::Rcpt, "550 5.1.1 no such user".into()),
            (Disposition::Delivered, Stage::Dot, "250 2.0.0 Ok: queued as ABC".into()),
        ]
    );
    assert_eq!(h.idle, 1);
    h.client.quit();
    h.pump();
    h.step("QUIT\r\n", "221 2.0.0 Bye\r\n");
    assert!(h.closed);
}

#[test]
fn without_pipelining_each_command_waits_for_its_reply() {
    let mut h = ready(config(), job(&["a@example.net", "b@example.net"]), EHLO_NONE);
    assert_eq!(h.sent(), "MAIL FROM:<sender@example.org>\r\n");
    h.server("250 Ok\r\n");
    h.step("RCPT TO:<a@example.net>\r\n", "451 4.3.0 later\r\n");
    h.step("RCPT TO:<b@example.net>\r\n", "250 Ok\r\n");
    h.step("DATA\r\n", "354 go\r\n");
    h.step(CONTENT, "250 Ok\r\n");
    let s = summary(h.result());
    assert_eq!(s[0], (Disposition::Deferred, Stage::Rcpt, "451 4.3.0 later".into()));
    assert_eq!(s[1].0, Disposition::Delivered);
}

#[test]
fn refused_mail_fails_every_recipient_and_pipelined_replies_are_absorbed() {
    let mut h = ready(config(), job(&["a@example.net", "b@example.net"]), EHLO_ALL);
    h.step(MAIL_A_B, "452 4.3.1 insufficient storage\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n");
    assert!(h.done.is_empty(), "the DATA reply is still due");
    h.server("503 5.5.1 need MAIL\r\n");
    assert_eq!(h.sent(), "", "no content, no RSET");
    let s = summary(h.result());
    assert_eq!(s, vec![(Disposition::Deferred, Stage::Mail, "452 4.3.1 insufficient storage".into()); 2]);
    // No transaction was left open: the next job starts with MAIL.
    h.client.start(job(&["c@example.net"])).unwrap();
    h.pump();
    assert!(h.sent().starts_with("MAIL FROM:"));
}

#[test]
fn no_recipient_accepted_sends_no_content_and_rset_precedes_the_next_job() {
    let mut h = ready(config(), job(&["a@example.net", "b@example.net"]), EHLO_ALL);
    h.step(MAIL_A_B, "250 Ok\r\n550 5.1.1 no\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n");
    assert_eq!(h.content_requests, 0);
    assert_eq!(h.sent(), "");
    assert!(h.result().recipients.iter().all(|r| r.disposition == Disposition::Bounced));
    h.client.start(job(&["c@example.net"])).unwrap();
    h.pump();
    h.step("RSET\r\n", "250 2.0.0 Ok\r\n");
    assert_eq!(h.sent(), "MAIL FROM:<sender@example.org> SIZE=100\r\nRCPT TO:<c@example.net>\r\nDATA\r\n");
}

#[test]
fn no_recipient_accepted_without_pipelining_skips_data() {
    let refused = || {
        let mut h = ready(config(), job(&["a@example.net"]), EHLO_NONE);
        h.step("MAIL FROM:<sender@example.org>\r\n", "250 Ok\r\n");
        h.step("RCPT TO:<a@example.net>\r\n", "550 no\r\n");
        assert_eq!(h.sent(), "", "no DATA");
        assert_eq!(h.result().recipients[0].reply.status(), Enhanced::new(5, 0, 0));
        h
    };
    // The server's transaction is still open: RSET before more mail...
    let mut h = refused();
    h.client.start(job(&["b@example.net"])).unwrap();
    h.pump();
    h.step("RSET\r\n", "250 Ok\r\n");
    assert_eq!(h.sent(), "MAIL FROM:<sender@example.org>\r\n");
    // ...but not before QUIT.
    let mut h = refused();
    h.client.quit();
    h.pump();
    assert_eq!(h.sent(), "QUIT\r\n");
}

#[test]
fn data_accepted_without_recipients_gets_an_empty_message() {
    // RFC 2920 3.1: a server that takes DATA with no recipient gets "."
    // alone, never the message.
    let mut h = ready(config(), job(&["a@example.net"]), EHLO_ALL);
    h.step(
        "MAIL FROM:<sender@example.org> SIZE=100\r\nRCPT TO:<a@example.net>\r\nDATA\r\n",
        "250 Ok\r\n550 no\r\n354 go\r\n",
    );
    h.step(".\r\n", "250 Ok (nothing)\r\n");
    assert_eq!(h.content_requests, 0);
    assert_eq!(h.result().recipients[0].disposition, Disposition::Bounced);
    h.client.start(job(&["c@example.net"])).unwrap();
    h.pump();
    assert!(h.sent().starts_with("MAIL FROM:"), "transaction closed by the dot: no RSET");
}

#[test]
fn data_refused_fails_the_accepted_recipients() {
    let mut h = ready(config(), job(&["a@example.net", "b@example.net"]), EHLO_ALL);
    h.step(MAIL_A_B, "250 Ok\r\n250 Ok\r\n550 5.1.1 no\r\n451 4.3.0 local problem\r\n");
    let s = summary(h.result());
    assert_eq!(s[0], (Disposition::Deferred, Stage::Data, "451 4.3.0 local problem".into()));
    assert_eq!(s[1], (Disposition::Bounced, Stage::Rcpt, "550 5.1.1 no".into()));
}

#[test]
fn final_reply_decides_for_every_accepted_recipient() {
    let mut h = ready(config(), job(&["a@example.net", "b@example.net"]), EHLO_ALL);
    h.step(MAIL_A_B, "250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n");
    h.step(CONTENT, "554 5.7.1 spam\r\n");
    assert_eq!(summary(h.result()), vec![(Disposition::Bounced, Stage::Dot, "554 5.7.1 spam".into()); 2]);
}

#[test]
fn two_messages_on_one_connection() {
    let mut h = ready(config(), job(&["a@example.net"]), EHLO_ALL);
    h.sent();
    h.server("250 Ok\r\n250 Ok\r\n354 go\r\n");
    h.step(CONTENT, "250 Ok: queued as 1\r\n");
    let mut second = job(&["b@example.net"]);
    second.sender = String::new();
    h.client.start(second).unwrap();
    h.pump();
    h.step("MAIL FROM:<> SIZE=100\r\nRCPT TO:<b@example.net>\r\nDATA\r\n", "250 Ok\r\n250 Ok\r\n354 go\r\n");
    h.step(CONTENT, "250 Ok: queued as 2\r\n");
    assert_eq!(h.done.len(), 2);
    assert_eq!(h.done[1].recipients[0].reply.text, "Ok: queued as 2");
    assert_eq!(h.idle, 2);
}

#[test]
fn failed_rset_ends_the_session_and_defers_the_job() {
    let mut h = ready(config(), job(&["a@example.net"]), EHLO_ALL);
    h.sent();
    h.server("250 Ok\r\n250 Ok\r\n452 4.3.1 full\r\n");
    h.client.start(job(&["b@example.net"])).unwrap();
    h.pump();
    h.step("RSET\r\n", "500 what\r\n");
    assert_eq!(h.sent(), "QUIT\r\n");
    let r = &h.done[1];
    assert!(r.session_failure);
    assert_eq!(summary(r), vec![(Disposition::Deferred, Stage::Rset, "500 what".into())]);
}

#[test]
fn size_above_the_server_limit_fails_every_recipient_without_mail() {
    let mut j = job(&["a@example.net", "b@example.net"]);
    j.size = 10_001;
    let mut h = ready(config(), j, EHLO_ALL);
    assert_eq!(h.sent(), "");
    let expected = "552 5.3.4 message size 10001 exceeds size limit 10000 of the server";
    assert_eq!(summary(h.result()), vec![(Disposition::Bounced, Stage::Mail, expected.into()); 2]);
    assert!(!h.result().recipients[0].remote);
    assert!(h.client.is_idle(), "the session is still good for other mail");
    // SIZE without a number is no limit, but SIZE= is still sent.
    let mut j = job(&["a@example.net"]);
    j.size = 1 << 40;
    let mut h = ready(config(), j, "250-mx\r\n250 SIZE\r\n");
    assert_eq!(h.sent(), "MAIL FROM:<sender@example.org> SIZE=1099511627776\r\n");
}

#[test]
fn smtputf8_needed_but_not_offered_bounces_every_recipient() {
    let no_utf8 = "250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
    let mut utf8_headers = job(&["a@example.net"]);
    utf8_headers.smtputf8 = true;
    utf8_headers.utf8_headers = true;
    let utf8_rcpt = job(&["a@example.net", "üser@example.net"]);
    let mut utf8_sender = job(&["a@example.net"]);
    utf8_sender.sender = "sénder@example.org".into();
    utf8_sender.smtputf8 = true;
    for j in [utf8_headers, utf8_rcpt, utf8_sender] {
        let n = j.recipients.len();
        let mut h = ready(config(), j, no_utf8);
        assert_eq!(h.sent(), "");
        let expected = "554 5.6.7 SMTPUTF8 is required, but was not offered by the server";
        assert_eq!(summary(h.result()), vec![(Disposition::Bounced, Stage::Mail, expected.into()); n]);
    }
}

#[test]
fn smtputf8_message_that_is_ascii_throughout_goes_without_it() {
    // Received with SMTPUTF8, but the envelope and the header block are
    // ASCII: Postfix sends such mail to a server without SMTPUTF8.
    let mut j = job(&["a@example.net"]);
    j.smtputf8 = true;
    let mut h = ready(config(), j.clone(), "250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
    assert_eq!(h.sent(), "MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.net>\r\nDATA\r\n");
    // To a server that offers it, the parameter goes on.
    let mut h = ready(config(), j, EHLO_ALL);
    assert_eq!(h.sent(), "MAIL FROM:<sender@example.org> SIZE=100 SMTPUTF8\r\nRCPT TO:<a@example.net>\r\nDATA\r\n");
    // UTF-8 headers in a message received without SMTPUTF8 require
    // nothing (the server decides what 8-bit headers mean).
    let mut j = job(&["a@example.net"]);
    j.utf8_headers = true;
    let mut h = ready(config(), j, "250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
    assert_eq!(h.sent(), "MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.net>\r\nDATA\r\n");
}

#[test]
fn smtputf8_is_sent_when_needed_and_offered() {
    let mut j = job(&["üser@example.net"]);
    j.sender = "sénder@example.org".into();
    let mut h = ready(config(), j, EHLO_ALL);
    assert_eq!(h.sent(), "MAIL FROM:<sénder@example.org> SIZE=100 SMTPUTF8\r\nRCPT TO:<üser@example.net>\r\nDATA\r\n");
}

#[test]
fn dsn_parameters_are_passed_on_when_offered() {
    let mut j = job(&["a@example.net", "b@example.net"]);
    j.ret = Some(Ret::Headers);
    j.envid = Some("id+1=2 x".into());
    j.recipients[0].notify = Some(Notify::On { success: true, failure: true, delay: false });
    j.recipients[0].orcpt = Some("rfc822;a+b@example.net".into());
    j.recipients[1].notify = Some(Notify::Never);
    let mut h = ready(config(), j, EHLO_ALL);
    h.step(
        "MAIL FROM:<sender@example.org> SIZE=100 RET=HDRS ENVID=id+2B1+3D2+20x\r\n\
         RCPT TO:<a@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@example.net\r\n\
         RCPT TO:<b@example.net> NOTIFY=NEVER\r\nDATA\r\n",
        "250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n",
    );
    h.step(CONTENT, "250 Ok\r\n");
    assert!(h.result().recipients.iter().all(|r| r.dsn_passed));
}

#[test]
fn a_utf8_orcpt_is_sent_in_the_form_the_transaction_allows() {
    // DSN without SMTPUTF8: the 7-bit utf-8-addr-xtext form (RFC 6533 3);
    // an ASCII one as rfc822. Without pipelining, RCPT by RCPT.
    let mut j = job(&["a@example.net", "b@example.net"]);
    j.recipients[0].orcpt = Some("utf-8;josé@example.net".into());
    j.recipients[1].orcpt = Some("utf-8;b@example.net".into());
    let mut h = ready(config(), j, "250-mx.example.net\r\n250 DSN\r\n");
    h.step("MAIL FROM:<sender@example.org>\r\n", "250 Ok\r\n");
    h.step("RCPT TO:<a@example.net> ORCPT=utf-8;jos\\x{E9}@example.net\r\n", "250 Ok\r\n");
    h.step("RCPT TO:<b@example.net> ORCPT=rfc822;b@example.net\r\n", "250 Ok\r\n");
    h.step("DATA\r\n", "354 go\r\n");
    h.step(CONTENT, "250 Ok\r\n");
    assert!(h.result().recipients.iter().all(|r| r.dsn_passed));

    // An SMTPUTF8 transaction (a UTF-8 recipient): UTF-8 as it is.
    let mut j = job(&["josé@example.net"]);
    j.recipients[0].orcpt = Some("utf-8;jos\\x{E9}@example.net".into());
    let mut h = ready(config(), j, EHLO_ALL);
    h.step(
        "MAIL FROM:<sender@example.org> SIZE=100 SMTPUTF8\r\n\
         RCPT TO:<josé@example.net> ORCPT=utf-8;josé@example.net\r\nDATA\r\n",
        "250 Ok\r\n250 Ok\r\n354 go\r\n",
    );
    // The server offers SMTPUTF8, but this mail does not need it: 7 bit.
    let mut j = job(&["a@example.net"]);
    j.recipients[0].orcpt = Some("utf-8;josé@example.net".into());
    let mut h = ready(config(), j, EHLO_ALL);
    h.step(
        "MAIL FROM:<sender@example.org> SIZE=100\r\n\
         RCPT TO:<a@example.net> ORCPT=utf-8;jos\\x{E9}@example.net\r\nDATA\r\n",
        "250 Ok\r\n250 Ok\r\n354 go\r\n",
    );
}

#[test]
fn dsn_not_offered_is_reported_per_recipient() {
    let mut j = job(&["a@example.net"]);
    j.ret = Some(Ret::Full);
    j.recipients[0].notify = Some(Notify::On { success: true, failure: false, delay: false });
    let mut h = ready(config(), j, "250-mx\r\n250 PIPELINING\r\n");
    h.step("MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.net>\r\nDATA\r\n", "250 Ok\r\n250 Ok\r\n354 go\r\n");
    h.step(CONTENT, "250 Ok\r\n");
    let r = &h.result().recipients[0];
    assert_eq!(r.disposition, Disposition::Delivered);
    assert!(!r.dsn_passed, "the queue manager owes a 'relayed' DSN");
}

#[test]
fn lmtp_gives_one_reply_per_accepted_recipient() {
    let lmtp = Config { lmtp: true, ..config() };
    let mut h =
        ready(lmtp, job(&["a@example.net", "b@example.net", "c@example.net"]), "250-lmtp\r\n250 PIPELINING\r\n");
    h.step(
        "MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\n\
         RCPT TO:<c@example.net>\r\nDATA\r\n",
        "250 Ok\r\n250 Ok\r\n550 5.1.1 unknown\r\n250 Ok\r\n354 go\r\n",
    );
    h.step(CONTENT, "250 2.0.0 a delivered\r\n");
    assert!(h.done.is_empty(), "one reply is still due");
    assert_eq!(h.client.waiting().map(|w| w.0), Some(Stage::Dot));
    h.server("452 4.2.2 c over quota\r\n");
    assert_eq!(
        summary(h.result()),
        vec![
            (Disposition::Delivered, Stage::Dot, "250 2.0.0 a delivered".into()),
            (Disposition::Bounced, Stage::Rcpt, "550 5.1.1 unknown".into()),
            (Disposition::Deferred, Stage::Dot, "452 4.2.2 c over quota".into()),
        ]
    );
}

#[test]
fn lost_connection_after_the_dot_defers_with_a_duplicate_warning() {
    let mut h = ready(config(), job(&["a@example.net"]), EHLO_ALL);
    h.sent();
    h.server("250 Ok\r\n250 Ok\r\n354 go\r\n");
    assert_eq!(h.sent(), CONTENT);
    h.client.connection_lost();
    h.pump();
    let r = &h.result().recipients[0];
    assert_eq!((r.disposition, r.stage), (Disposition::Deferred, Stage::Dot));
    assert!(r.reply.text.ends_with("-- message may be sent more than once"), "{}", r.reply.text);
}

/// A server that refuses the message while it is being sent, and
/// closes: its reply is the verdict (a 5xx bounces, as at the dot), not a
/// lost connection.
#[test]
fn a_reply_before_the_connection_is_lost_during_the_content_is_the_verdict() {
    for (reply, disposition) in
        [("554 5.3.4 Message too big for system", Disposition::Bounced), ("451 4.3.0 try later", Disposition::Deferred)]
    {
        let mut h = ready(config(), job(&["a@example.net", "b@example.net"]), EHLO_ALL);
        h.hold_content = true;
        h.sent();
        h.server("250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n");
        assert_eq!(h.client.waiting().map(|w| w.0), Some(Stage::Content));
        h.server(&format!("{reply}\r\n"));
        assert!(h.done.is_empty(), "no verdict while the content is still being sent");
        h.client.connection_lost();
        h.pump();
        let want = (disposition, Stage::Content, reply.to_string());
        assert_eq!(summary(h.result()), vec![want.clone(), want]);
        assert!(h.closed);
    }
    // Without a reply, it is a lost connection, deferred.
    let mut h = ready(config(), job(&["a@example.net"]), EHLO_ALL);
    h.hold_content = true;
    h.sent();
    h.server("250 Ok\r\n250 Ok\r\n354 go\r\n");
    h.server("554 5.3.4 cut sh");
    h.client.connection_lost();
    h.pump();
    let r = &h.result().recipients[0];
    assert_eq!((r.disposition, r.stage), (Disposition::Deferred, Stage::Content));
    assert!(r.reply.text.starts_with("lost connection with the server"), "{}", r.reply.text);
}

#[test]
fn bad_addresses_never_reach_the_wire() {
    let j = job(&["a@example.net>\r\nRSET", "b@example.net"]);
    let mut h = ready(config(), j, EHLO_ALL);
    assert_eq!(h.sent(), "MAIL FROM:<sender@example.org> SIZE=100\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    h.server("250 Ok\r\n250 Ok\r\n354 go\r\n");
    h.step(CONTENT, "250 Ok\r\n");
    let r = h.result();
    assert_eq!((r.recipients[0].disposition, r.recipients[0].stage), (Disposition::Bounced, Stage::Rcpt));
    assert_eq!(r.recipients[0].reply.status(), Enhanced::new(5, 1, 3));
    assert_eq!(r.recipients[1].disposition, Disposition::Delivered);

    let mut j = job(&["a@example.net"]);
    j.sender = "evil> SIZE=1".into();
    let mut h = ready(config(), j, EHLO_ALL);
    assert_eq!(h.sent(), "");
    assert_eq!(h.result().recipients[0].reply.status(), Enhanced::new(5, 1, 7));
}

#[test]
fn binary_content_cannot_be_sent_with_data() {
    let mut j = job(&["a@example.net"]);
    j.body = BodyType::BinaryMime;
    let mut h = ready(config(), j, EHLO_ALL);
    assert_eq!(h.sent(), "");
    assert_eq!(h.result().recipients[0].reply.status(), Enhanced::new(5, 6, 3));
}

#[test]
fn quit_during_a_transaction_defers_and_closes() {
    let mut h = ready(config(), job(&["a@example.net"]), EHLO_ALL);
    h.sent();
    h.client.quit();
    h.pump();
    assert!(h.closed);
    assert_eq!(h.sent(), "");
    assert_eq!(h.result().recipients[0].disposition, Disposition::Deferred);
}

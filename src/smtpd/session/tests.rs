use super::*;
use proptest::prelude::*;

struct TestChecks;

impl Checks for TestChecks {
    fn recipient(&self, _peer: &Peer, rcpt: &Path) -> RcptVerdict {
        match rcpt {
            Path::Postmaster => RcptVerdict::Accept,
            Path::Mailbox(m) if m.domain.eq_ignore_ascii_case("example.org") && m.local != "unknown" => {
                RcptVerdict::Accept
            }
            Path::Mailbox(m) if m.domain == "example.org" => {
                RcptVerdict::Reject { code: 550, enhanced: "5.1.1", text: String::from("User unknown") }
            }
            _ => RcptVerdict::Reject { code: 554, enhanced: "5.7.1", text: String::from("Relay access denied") },
        }
    }
}

fn settings() -> Settings {
    Settings {
        hostname: String::from("mx.example.org"),
        limits: Limits { message_size: 1000, recipients: 3, ..Limits::default() },
        bare: Bare::Reject,
        starttls: true,
        local_client: false,
    }
}

/// A session whose greeting has been taken.
fn session() -> Session {
    let mut s =
        Session::new(settings(), Peer { address: "192.0.2.1".into(), hostname: "client.example".into() }, false);
    s.actions().for_each(drop);
    s
}

/// Everything the session did, as text: replies verbatim, other actions as tags.
#[derive(Default, Debug)]
struct Log {
    replies: String,
    content: Vec<u8>,
    begins: Vec<Envelope>,
    ends: usize,
    aborts: usize,
    closed: bool,
    starttls: bool,
    pauses: Vec<Duration>,
    lookups: Vec<String>,
    logs: Vec<String>,
}

fn drain(s: &mut Session, log: &mut Log) {
    for a in s.actions() {
        match a {
            Action::Reply(r) => log.replies.push_str(&String::from_utf8(r).unwrap()),
            Action::Content(c) => log.content.extend(c),
            Action::Begin(e) => log.begins.push(*e),
            Action::End => log.ends += 1,
            Action::Abort => log.aborts += 1,
            Action::Close => log.closed = true,
            Action::StartTls => log.starttls = true,
            Action::Pause(d) => log.pauses.push(d),
            Action::LookupUser(n) => log.lookups.push(n),
            Action::Log(l) => log.logs.push(l),
        }
    }
}

/// Feed `input` in one push (as one read), committing any message.
fn talk(s: &mut Session, input: &[u8]) -> Log {
    let mut log = Log::default();
    let mut rest = input;
    loop {
        let n = rest.len().min(s.space());
        s.receive(&rest[..n], &TestChecks);
        rest = &rest[n..];
        drain(s, &mut log);
        if log.ends > 0 && matches!(s.phase, Phase::Commit) {
            s.committed(Commit::Queued(format!("Q{}", log.ends)), &TestChecks);
            drain(s, &mut log);
        }
        if rest.is_empty() || s.space() == 0 {
            break;
        }
    }
    log
}

fn codes(replies: &str) -> Vec<&str> {
    replies.lines().filter(|l| l.len() >= 4 && &l[3..4] == " ").map(|l| &l[..3]).collect()
}

#[test]
fn a_plain_transaction() {
    let mut s = Session::new(settings(), Peer { address: "192.0.2.1".into(), hostname: "c.example".into() }, false);
    let mut log = Log::default();
    drain(&mut s, &mut log);
    assert_eq!(log.replies, "220 mx.example.org ESMTP mta\r\n");
    for line in
        ["EHLO client.example\r\n", "MAIL FROM:<a@remote.example>\r\n", "RCPT TO:<b@example.org>\r\n", "DATA\r\n"]
    {
        let l = talk(&mut s, line.as_bytes());
        log.replies.push_str(&l.replies);
    }
    assert!(log.replies.contains("250-PIPELINING\r\n250-SIZE 1000\r\n"));
    assert!(log.replies.contains("250-STARTTLS\r\n") || log.replies.contains("250 STARTTLS\r\n"));
    let l = talk(&mut s, b"Subject: hi\r\n\r\n..dot\r\n.\r\n");
    assert_eq!(l.content, b"Subject: hi\r\n\r\n.dot\r\n");
    assert_eq!(l.replies, "250 2.0.0 Ok: queued as Q1\r\n");
    let l = talk(&mut s, b"QUIT\r\n");
    assert_eq!(l.replies, "221 2.0.0 mx.example.org closing connection\r\n");
    assert!(l.closed);
}

#[test]
fn pipelined_transaction_replies_in_order() {
    let mut s = session();
    talk(&mut s, b"EHLO c.example\r\n");
    let l = talk(
        &mut s,
        b"MAIL FROM:<a@r.example> SIZE=10\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<unknown@example.org>\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\n",
    );
    assert_eq!(codes(&l.replies), ["250", "250", "550", "554", "354"]);
    assert!(l.replies.contains("550 5.1.1 User unknown"));
    assert!(l.replies.contains("554 5.7.1 Relay access denied"));
    let l = talk(&mut s, b"x\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nRSET\r\nQUIT\r\n");
    assert_eq!(codes(&l.replies), ["250", "250", "250", "250", "221"]);
    assert_eq!(l.begins.len(), 0);
}

#[test]
fn envelope_carries_parameters() {
    let mut s = session();
    let l = talk(
        &mut s,
        b"EHLO c.example\r\nMAIL FROM:<a@r.example> BODY=8BITMIME RET=HDRS ENVID=x1\r\nRCPT TO:<b@example.org> NOTIFY=FAILURE ORCPT=rfc822;b@example.org\r\n",
    );
    assert_eq!(codes(&l.replies), ["250", "250", "250"]);
    let l = talk(&mut s, b"DATA\r\n");
    let e = &l.begins[0];
    assert_eq!(e.body, Body::EightBitMime);
    assert_eq!(e.ret, Some(Ret::Headers));
    assert_eq!(e.envid.as_deref(), Some("x1"));
    assert_eq!(e.recipients[0].orcpt.as_deref(), Some("rfc822;b@example.org"));
    assert_eq!(e.protocol, "ESMTP");
    assert_eq!(e.helo, "c.example");
}

#[test]
fn order_of_commands_enforced() {
    let mut s = session();
    let l = talk(&mut s, b"MAIL FROM:<a@r.example>\r\n");
    assert!(l.replies.starts_with("503 5.5.1"));
    let l = talk(&mut s, b"HELO c.example\r\n");
    assert!(l.replies.starts_with("250 2.0.0"));
    assert_eq!(codes(&talk(&mut s, b"RCPT TO:<b@example.org>\r\n").replies), ["503"]);
    assert_eq!(codes(&talk(&mut s, b"DATA\r\n").replies), ["503"]);
    assert_eq!(codes(&talk(&mut s, b"MAIL FROM:<a@r.example>\r\n").replies), ["250"]);
    assert_eq!(codes(&talk(&mut s, b"MAIL FROM:<a@r.example>\r\n").replies), ["503"]);
    assert_eq!(codes(&talk(&mut s, b"DATA\r\n").replies), ["554"]);
}

#[test]
fn recipient_limit() {
    let mut s = session();
    let mut input = b"EHLO c.example\r\nMAIL FROM:<a@r.example>\r\n".to_vec();
    for i in 0..5 {
        input.extend_from_slice(format!("RCPT TO:<u{i}@example.org>\r\n").as_bytes());
    }
    let l = talk(&mut s, &input);
    assert_eq!(codes(&l.replies), ["250", "250", "250", "250", "250", "452", "452"]);
    assert!(l.replies.contains("452 4.5.3"));
}

#[test]
fn size_limits() {
    let mut s = session();
    let l = talk(&mut s, b"EHLO c.example\r\nMAIL FROM:<a@r.example> SIZE=1001\r\n");
    assert!(l.replies.contains("552 5.3.4"));
    talk(&mut s, b"MAIL FROM:<a@r.example>\r\nRCPT TO:<b@example.org>\r\n");
    talk(&mut s, b"DATA\r\n");
    let mut body = vec![b'x'; 5000];
    body.extend_from_slice(b"\r\n.\r\n");
    let l = talk(&mut s, &body);
    assert!(l.replies.contains("552 5.3.4"), "{}", l.replies);
    assert_eq!(l.aborts, 1);
    assert_eq!(l.ends, 0);
}

#[test]
fn command_lines_at_and_over_the_limit() {
    let mut st = settings();
    st.limits.command_line = 512;
    let mut s = Session::new(st, Peer { address: "x".into(), hostname: "y".into() }, false);
    s.actions().for_each(drop);
    talk(&mut s, b"EHLO c.example\r\n");
    // 512 octets with CR LF: fine (NOOP with an argument is accepted).
    let mut ok = b"NOOP ".to_vec();
    ok.resize(510, b'a');
    ok.extend_from_slice(b"\r\n");
    assert_eq!(codes(&talk(&mut s, &ok).replies), ["250"]);
    // 513: too long; its tail must not run as a command.
    let mut long = b"NOOP ".to_vec();
    long.resize(600, b'a');
    long.extend_from_slice(b"QUIT\r\nMAIL\r\n");
    let l = talk(&mut s, &long);
    assert_eq!(codes(&l.replies)[0], "500");
    assert!(!l.closed, "the tail of a long line was executed: {}", l.replies);
}

#[test]
fn a_megabyte_without_crlf_is_skipped_not_executed() {
    let mut s = session();
    talk(&mut s, b"EHLO c.example\r\n");
    let mut junk = Vec::new();
    while junk.len() < (1 << 20) {
        junk.extend_from_slice(b"QUIT RSET ");
    }
    let l = talk(&mut s, &junk);
    assert!(l.replies.starts_with("500 5.5.2 Error: line too long"), "{}", l.replies);
    assert!(!l.closed);
    // The end of that line, then a real command.
    let l = talk(&mut s, b"QUIT QUIT\r\nNOOP\r\n");
    assert_eq!(codes(&l.replies), ["250"]);
    assert!(s.input.capacity() < 200_000, "buffer grew to {}", s.input.capacity());
}

#[test]
fn ehlo_with_cr_or_nul_refused() {
    let mut s = session();
    assert!(talk(&mut s, b"EHLO a\rb\r\n").replies.starts_with("501 5.5.2"));
    assert!(talk(&mut s, b"EHLO a\0b\r\n").replies.starts_with("501 5.5.2"));
    assert!(talk(&mut s, b"EHLO bad_host!\r\n").replies.starts_with("501"));
    // Not quite host names, but names: taken (RFC 5321 4.1.4).
    assert!(talk(&mut s, b"EHLO nas_01.lan\r\n").replies.starts_with("250-"));
    assert!(talk(&mut s, b"HELO host.example.\r\n").replies.starts_with("250 "));
}

#[test]
fn content_before_354_is_refused_and_closes() {
    let mut s = session();
    talk(&mut s, b"EHLO c.example\r\nMAIL FROM:<a@r.example>\r\nRCPT TO:<b@example.org>\r\n");
    let l = talk(&mut s, b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nMAIL FROM:<evil@r.example>\r\n");
    assert!(l.replies.contains("554 5.5.0"), "{}", l.replies);
    assert!(l.closed);
    assert!(l.begins.is_empty());
}

#[test]
fn pipelining_without_ehlo_is_refused() {
    let mut s = session();
    talk(&mut s, b"HELO c.example\r\n");
    let l = talk(&mut s, b"MAIL FROM:<a@r.example>\r\nRCPT TO:<b@example.org>\r\n");
    assert!(l.replies.contains("554 5.5.0"), "{}", l.replies);
    assert!(l.closed);
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    let mut s = session();
    talk(&mut s, b"EHLO c.example\r\n");
    let l = talk(&mut s, b"STARTTLS\r\nMAIL FROM:<injected@r.example>\r\n");
    assert_eq!(l.replies, "220 2.0.0 Ready to start TLS\r\n");
    assert!(l.starttls);
    assert_eq!(s.space(), 0);
    s.tls_started();
    let l = talk(&mut s, b"RCPT TO:<b@example.org>\r\n");
    assert!(l.replies.starts_with("503"), "injected MAIL was executed: {}", l.replies);
    let l = talk(&mut s, b"EHLO c.example\r\n");
    assert!(!l.replies.contains("STARTTLS"));
    talk(&mut s, b"MAIL FROM:<a@r.example>\r\nRCPT TO:<b@example.org>\r\n");
    let l = talk(&mut s, b"DATA\r\n");
    assert_eq!(l.begins[0].protocol, "ESMTPS");
}

#[test]
fn with_words_for_each_kind_of_session() {
    // (greeting, TLS from the start, MAIL parameters, BDAT or DATA):
    // the `with` word RFC 3848 and RFC 6531 give it.
    let cases: [(&str, bool, &str, bool, &str); 8] = [
        ("HELO", false, "", false, "SMTP"),
        ("HELO", true, "", false, "SMTP"),
        ("EHLO", false, "", false, "ESMTP"),
        ("EHLO", true, "", true, "ESMTPS"),
        ("EHLO", false, " SMTPUTF8", false, "UTF8SMTP"),
        ("EHLO", false, " SMTPUTF8 BODY=8BITMIME", true, "UTF8SMTP"),
        ("EHLO", true, " SMTPUTF8", false, "UTF8SMTPS"),
        ("EHLO", true, " SMTPUTF8", true, "UTF8SMTPS"),
    ];
    for (greeting, tls, params, bdat, word) in cases {
        let peer = Peer { address: "192.0.2.1".into(), hostname: "c.example".into() };
        let mut s = Session::new(settings(), peer, tls);
        s.actions().for_each(drop);
        let mail = format!("MAIL FROM:<a@r.example>{params}\r\n");
        for line in [&format!("{greeting} c.example\r\n"), &mail, "RCPT TO:<b@example.org>\r\n"] {
            let l = talk(&mut s, line.as_bytes());
            assert!(l.replies.starts_with("250"), "{greeting} {params}: {}", l.replies);
        }
        let l = talk(&mut s, if bdat { b"BDAT 3 LAST\r\nx\r\n" } else { b"DATA\r\n" });
        assert_eq!(l.begins.len(), 1, "{greeting} {params}");
        assert_eq!(l.begins[0].protocol, word, "{greeting} tls={tls} {params}");
    }
    // After STARTTLS, and the next transaction without SMTPUTF8 goes back.
    let mut s = session();
    talk(&mut s, b"EHLO c.example\r\nSTARTTLS\r\n");
    s.tls_started();
    talk(&mut s, b"EHLO c.example\r\nMAIL FROM:<\xc3\xa9@r.example> SMTPUTF8\r\nRCPT TO:<b@example.org>\r\n");
    let l = talk(&mut s, b"DATA\r\n");
    assert_eq!(l.begins[0].protocol, "UTF8SMTPS");
    talk(&mut s, b"x\r\n.\r\n");
    let l = talk(&mut s, b"MAIL FROM:<a@r.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
    assert_eq!(l.begins[0].protocol, "ESMTPS");
}

#[test]
fn bare_lf_in_data_refused_and_closed() {
    let mut s = session();
    talk(&mut s, b"EHLO c.example\r\nMAIL FROM:<a@r.example>\r\nRCPT TO:<b@example.org>\r\n");
    talk(&mut s, b"DATA\r\n");
    let l = talk(&mut s, b"hi\n.\nMAIL FROM:<evil@r.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
    assert!(l.replies.starts_with("554 5.5.2"), "{}", l.replies);
    assert!(l.closed);
    assert_eq!((l.ends, l.aborts), (0, 1));
}

#[test]
fn nul_in_data_refused() {
    let mut s = session();
    talk(&mut s, b"EHLO c.example\r\nMAIL FROM:<a@r.example>\r\nRCPT TO:<b@example.org>\r\n");
    talk(&mut s, b"DATA\r\n");
    let l = talk(&mut s, b"a\0b\r\n.\r\nNOOP\r\n");
    assert_eq!(codes(&l.replies), ["554", "250"]);
    assert!(l.replies.contains("5.6.0"));
}

#[test]
fn bdat_chunks() {
    let mut s = session();
    talk(&mut s, b"EHLO c.example\r\nMAIL FROM:<a@r.example>\r\nRCPT TO:<b@example.org>\r\n");
    let l = talk(&mut s, b"BDAT 7\r\nSubject");
    assert_eq!(l.replies, "250 2.0.0 7 octets received\r\n");
    assert_eq!(l.begins.len(), 1);
    let l = talk(&mut s, b"BDAT 13 LAST\r\n: x\r\n\r\nbody\r\nQUIT\r\n");
    assert_eq!(l.content, b"Subject: x\r\n\r\nbody\r\n");
    assert_eq!(codes(&l.replies), ["250", "221"]);
    assert!(l.replies.contains("queued as"));
}

#[test]
fn bdat_without_transaction_skips_its_bytes() {
    let mut s = session();
    talk(&mut s, b"EHLO c.example\r\n");
    let l = talk(&mut s, b"BDAT 10 LAST\r\nQUIT\r\nQUITNOOP\r\n");
    assert_eq!(codes(&l.replies), ["503", "250"]);
    assert!(!l.closed);
}

#[test]
fn bdat_bare_lf_refused() {
    let mut s = session();
    talk(&mut s, b"EHLO c.example\r\nMAIL FROM:<a@r.example>\r\nRCPT TO:<b@example.org>\r\n");
    let l = talk(&mut s, b"BDAT 5 LAST\r\na\nb\r\nNOOP\r\n");
    assert_eq!(codes(&l.replies), ["554", "250"]);
    assert_eq!(l.aborts, 1);
}

#[test]
fn bad_bdat_size_closes() {
    for bad in [&b"BDAT -1\r\n"[..], b"BDAT\r\n", b"BDAT 99999999999999999999\r\n", b"BDAT 1 FIRST\r\n"] {
        let mut s = session();
        talk(&mut s, b"EHLO c.example\r\n");
        let l = talk(&mut s, bad);
        assert!(l.replies.starts_with("501 5.5.4"), "{:?}: {}", bad, l.replies);
        assert!(l.closed);
    }
}

#[test]
fn errors_pause_then_disconnect() {
    let mut s = session();
    let mut all = Log::default();
    for _ in 0..25 {
        let l = talk(&mut s, b"BOGUS\r\n");
        all.replies.push_str(&l.replies);
        all.pauses.extend(l.pauses);
        all.closed |= l.closed;
        if l.closed {
            break;
        }
    }
    assert!(all.closed);
    assert!(all.replies.ends_with("421 4.7.0 mx.example.org Error: too many errors\r\n"));
    assert_eq!(codes(&all.replies).iter().filter(|c| **c == "500").count(), 20);
    assert_eq!(all.pauses.first(), Some(&Duration::from_secs(1)));
    assert!(all.pauses.windows(2).all(|w| w[1] > w[0]));
}

#[test]
fn many_pipelined_rcpts_stay_bounded() {
    let mut st = settings();
    st.limits.recipients = 1000;
    let mut s = Session::new(st, Peer { address: "x".into(), hostname: "y".into() }, false);
    talk(&mut s, b"EHLO c.example\r\nMAIL FROM:<a@r.example>\r\n");
    let mut input = Vec::new();
    for i in 0..200_000 {
        input.extend_from_slice(format!("RCPT TO:<u{i}@example.org>\r\n").as_bytes());
    }
    let mut accepted = 0;
    let mut refused = 0;
    for chunk in input.chunks(16384) {
        let l = talk(&mut s, chunk);
        accepted += l.replies.matches("250 2.1.5").count();
        refused += l.replies.matches("452 4.5.3").count();
        if s.is_closed() {
            break;
        }
    }
    assert_eq!(accepted, 1000);
    // As many again are refused without counting as errors (the client
    // sends them in its next transaction); then the error limit ends the
    // session, long before 200,000 replies.
    assert!(s.is_closed());
    assert!((1000..1100).contains(&refused), "{refused}");
}

#[test]
fn recipients_over_the_limit_do_not_end_the_session() {
    let mut st = settings();
    st.limits.recipients = 3;
    let mut s = Session::new(st, Peer { address: "x".into(), hostname: "y".into() }, false);
    talk(&mut s, b"EHLO c.example\r\nMAIL FROM:<a@r.example>\r\n");
    let mut input = Vec::new();
    for i in 0..6 {
        input.extend_from_slice(format!("RCPT TO:<u{i}@example.org>\r\n").as_bytes());
    }
    let l = talk(&mut s, &input);
    assert_eq!(codes(&l.replies), ["250", "250", "250", "452", "452", "452"]);
    assert!(!l.replies.contains("421"), "{}", l.replies);
    let l = talk(&mut s, b"DATA\r\n");
    assert_eq!(codes(&l.replies), ["354"]);
}

#[test]
fn a_recipient_named_twice_is_taken_once() {
    let mut s = session();
    let l = talk(
        &mut s,
        b"EHLO c.example\r\nMAIL FROM:<a@r.example>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<b@EXAMPLE.org>\r\n\
          RCPT TO:<b@example.org> NOTIFY=NEVER\r\nDATA\r\n",
    );
    assert_eq!(codes(&l.replies), ["250", "250", "250", "250", "250", "354"], "{}", l.replies);
    let env = &l.begins[0];
    // The second differs in its DSN parameters: kept, as Postfix does.
    assert_eq!(env.recipients.len(), 2, "{:?}", env.recipients);
    assert!(env.recipients[1].notify.is_some_and(|n| n.never));
}

#[test]
fn senders_in_use_that_the_rfc_does_not_allow_are_taken() {
    let mut s = session();
    let long = format!("SRS0=HHH=TT={}=user@forwarder.example", "a".repeat(60));
    let l = talk(&mut s, format!("EHLO c.example\r\nMAIL FROM:<{long}>\r\nRSET\r\n").as_bytes());
    assert_eq!(codes(&l.replies), ["250", "250", "250"], "{}", l.replies);
    let l = talk(&mut s, b"MAIL FROM:<taro..yamada@docomo.ne.jp>\r\nRCPT TO:<b..c@example.org>\r\n");
    // The recipient as leniently as the sender, as Postfix takes them (a
    // local name that is no user is the recipient checks' to refuse).
    assert_eq!(codes(&l.replies), ["250", "250"], "{}", l.replies);
    let l = talk(&mut s, b"RCPT TO:<a b@example.org>\r\nRCPT TO:<a\x01b@example.org>\r\n");
    assert_eq!(codes(&l.replies), ["501", "501"], "still no space or control: {}", l.replies);
}

#[test]
fn non_ascii_addresses_without_smtputf8_get_553_5_6_7() {
    let mut s = session();
    let l = talk(&mut s, "EHLO c.example\r\nMAIL FROM:<jöran@r.example>\r\n".as_bytes());
    assert!(l.replies.contains("553 5.6.7"), "{}", l.replies);
    let l = talk(&mut s, "MAIL FROM:<a@r.example>\r\nRCPT TO:<jöran@example.org>\r\n".as_bytes());
    assert!(l.replies.contains("553 5.6.7"), "{}", l.replies);
    // The word inside a quoted local part is not the parameter.
    let mut s = session();
    let l = talk(&mut s, "EHLO c.example\r\nMAIL FROM:<\"x SMTPUTF8 é\"@r.example>\r\n".as_bytes());
    assert_eq!(codes(&l.replies), ["250", "553"], "{}", l.replies);
    assert!(l.replies.contains("553 5.6.7"), "{}", l.replies);
    let l = talk(&mut s, "MAIL FROM:<\"x SMTPUTF8 é\"@r.example> SMTPUTF8\r\n".as_bytes());
    assert_eq!(codes(&l.replies), ["250"], "{}", l.replies);
}

#[test]
fn a_utf8_orcpt_is_taken_raw_only_in_an_smtputf8_transaction() {
    let mut s = session();
    let l = talk(
        &mut s,
        "EHLO c.example\r\nMAIL FROM:<a@r.example> SMTPUTF8\r\nRCPT TO:<b@example.org> ORCPT=utf-8;josé@r.example\r\n\
         DATA\r\n"
            .as_bytes(),
    );
    assert_eq!(codes(&l.replies), ["250", "250", "250", "354"], "{}", l.replies);
    assert_eq!(l.begins[0].recipients[0].orcpt.as_deref(), Some("utf-8;josé@r.example"));
    let mut s = session();
    let l = talk(
        &mut s,
        "EHLO c.example\r\nMAIL FROM:<a@r.example>\r\nRCPT TO:<b@example.org> ORCPT=utf-8;josé@r.example\r\n\
         RCPT TO:<c@example.org> ORCPT=utf-8;jos\\x{E9}@r.example\r\n"
            .as_bytes(),
    );
    assert_eq!(codes(&l.replies), ["250", "250", "501", "250"], "{}", l.replies);
    assert!(l.replies.contains("501 5.5.4 malformed ORCPT: UTF-8 needs SMTPUTF8"), "{}", l.replies);
}

#[test]
fn vrfy_help_noop_quit() {
    let mut s = session();
    let l = talk(&mut s, b"VRFY root\r\nHELP\r\nNOOP\r\nEXPN x\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(codes(&l.replies), ["252", "214", "250", "502", "221"]);
}

proptest! {
    /// smtp_session_no_panic: any byte stream, in any split, leaves the
    /// session sane: replies are well-formed and the buffer bounded.
    #[test]
    fn smtp_session_no_panic(chunks in proptest::collection::vec(proptest::collection::vec(
        prop_oneof![
            Just(b"EHLO a.example\r\n".to_vec()), Just(b"MAIL FROM:<a@b.example>\r\n".to_vec()),
            Just(b"RCPT TO:<c@example.org>\r\n".to_vec()), Just(b"DATA\r\n".to_vec()),
            Just(b"BDAT 3\r\n".to_vec()), Just(b".\r\n".to_vec()), Just(b"\n".to_vec()), Just(b"\r".to_vec()),
            Just(b"STARTTLS\r\n".to_vec()), Just(b"RSET\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ], 0..20).prop_map(|v| v.concat()), 0..10)) {
        let mut s = session();
        for c in chunks {
            let l = talk(&mut s, &c);
            for line in l.replies.split_terminator("\r\n") {
                prop_assert!(line.len() >= 4 && line.as_bytes()[..3].iter().all(u8::is_ascii_digit), "{line:?}");
            }
            prop_assert!(s.input.len() <= s.settings.limits.command_line + CONTENT_CHUNK);
            if s.space() == 0 && !s.is_closed() { s.tls_started(); }
        }
    }
}

/// Names starting with `dir` are not in the tables: the name service is asked.
struct DirectoryChecks;

impl Checks for DirectoryChecks {
    fn recipient(&self, peer: &Peer, rcpt: &Path) -> RcptVerdict {
        match rcpt {
            Path::Mailbox(m) if m.local.starts_with("dir") => RcptVerdict::Lookup(m.local.clone()),
            _ => TestChecks.recipient(peer, rcpt),
        }
    }
}

fn feed(s: &mut Session, input: &[u8], checks: &dyn Checks) -> Log {
    let mut log = Log::default();
    s.receive(input, checks);
    drain(s, &mut log);
    log
}

#[test]
fn an_rcpt_waits_for_the_name_service_and_pipelined_commands_wait_behind_it() {
    let mut s = session();
    feed(&mut s, b"EHLO c.example\r\n", &DirectoryChecks);
    let l = feed(
        &mut s,
        b"MAIL FROM:<a@r.example>\r\nRCPT TO:<dirjoe@example.org> NOTIFY=NEVER\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
        &DirectoryChecks,
    );
    // MAIL answered; the RCPT asks; nothing after it is read yet.
    assert_eq!(codes(&l.replies), ["250"]);
    assert_eq!(l.lookups, ["dirjoe"]);
    assert!(s.space() > 0, "input is still taken while the RCPT waits");
    // A commit verdict or a second answer meanwhile changes nothing.
    s.committed(Commit::Queued(String::from("Q")), &DirectoryChecks);
    s.looked_up(UserFound::Yes, &DirectoryChecks);
    let mut l = Log::default();
    drain(&mut s, &mut l);
    // The answer: 250 for it, then the commands behind it, in order.
    assert_eq!(codes(&l.replies), ["250", "250", "354"]);
    assert_eq!(l.begins.len(), 1);
    let r = &l.begins[0].recipients;
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].mailbox.as_ref().map(|m| m.local.as_str()), Some("dirjoe"));
    assert!(r[0].notify.is_some_and(|n| n.never));
    // A second answer now is not for anything.
    s.looked_up(UserFound::No, &DirectoryChecks);
    let mut l = Log::default();
    drain(&mut s, &mut l);
    assert!(l.replies.is_empty());
}

#[test]
fn the_name_service_refusing_or_failing_refuses_the_recipient() {
    let mut s = session();
    feed(&mut s, b"EHLO c.example\r\nMAIL FROM:<a@r.example>\r\n", &DirectoryChecks);
    let l = feed(&mut s, b"RCPT TO:<dirnobody@example.org>\r\n", &DirectoryChecks);
    assert_eq!(l.lookups, ["dirnobody"]);
    s.looked_up(UserFound::No, &DirectoryChecks);
    let mut l = Log::default();
    drain(&mut s, &mut l);
    assert_eq!(l.replies, "550 5.1.1 User unknown\r\n");
    feed(&mut s, b"RCPT TO:<dirsoon@example.org>\r\n", &DirectoryChecks);
    s.looked_up(UserFound::Unavailable, &DirectoryChecks);
    let mut l = Log::default();
    drain(&mut s, &mut l);
    assert_eq!(l.replies, "451 4.3.0 Temporary lookup failure\r\n");
    // Neither was taken: DATA has no recipient.
    let l = feed(&mut s, b"DATA\r\n", &DirectoryChecks);
    assert_eq!(codes(&l.replies), ["554"]);
}

#[test]
fn a_session_closed_while_its_rcpt_waits_begins_nothing() {
    let mut s = session();
    feed(
        &mut s,
        b"EHLO c.example\r\nMAIL FROM:<a@r.example>\r\nRCPT TO:<dirjoe@example.org>\r\nDATA\r\n",
        &DirectoryChecks,
    );
    s.abort();
    s.looked_up(UserFound::Yes, &DirectoryChecks);
    let mut l = Log::default();
    drain(&mut s, &mut l);
    assert!(l.replies.is_empty() && l.begins.is_empty() && l.aborts == 0, "{l:?}");
}

#[test]
fn refusals_by_the_checks_are_logged_as_postfix_logs_them_and_syntax_errors_are_not() {
    let mut s = session();
    let l = talk(
        &mut s,
        b"EHLO c.example\r\nMAIL FROM:<a@r.example>\r\nRCPT TO:<unknown@example.org>\r\nRCPT TO:<x@elsewhere.example>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:bad\r\n",
    );
    assert_eq!(codes(&l.replies), ["250", "250", "550", "554", "250", "501"]);
    assert_eq!(
        l.logs,
        [
            "NOQUEUE: reject: RCPT from client.example[192.0.2.1]: 550 5.1.1 User unknown; \
             from=<a@r.example> to=<unknown@example.org> proto=ESMTP helo=<c.example>",
            "NOQUEUE: reject: RCPT from client.example[192.0.2.1]: 554 5.7.1 Relay access denied; \
             from=<a@r.example> to=<x@elsewhere.example> proto=ESMTP helo=<c.example>",
        ]
    );
    // A refusal after the name service's answer, with the null sender.
    let mut s = session();
    feed(&mut s, b"HELO c.example\r\nMAIL FROM:<>\r\n", &DirectoryChecks);
    feed(&mut s, b"RCPT TO:<dirnobody@example.org>\r\n", &DirectoryChecks);
    s.looked_up(UserFound::No, &DirectoryChecks);
    let mut l = Log::default();
    drain(&mut s, &mut l);
    assert_eq!(
        l.logs,
        ["NOQUEUE: reject: RCPT from client.example[192.0.2.1]: 550 5.1.1 User unknown; \
          from=<> to=<dirnobody@example.org> proto=SMTP helo=<c.example>"]
    );
}

/// Refuses every transaction (a full spool).
struct NoSpace;

impl Checks for NoSpace {
    fn recipient(&self, peer: &Peer, rcpt: &Path) -> RcptVerdict {
        TestChecks.recipient(peer, rcpt)
    }
    fn mail(&self, _peer: &Peer) -> RcptVerdict {
        RcptVerdict::Reject { code: 452, enhanced: "4.3.1", text: String::from("Insufficient system storage") }
    }
}

#[test]
fn a_refused_mail_command_is_logged() {
    let mut s = session();
    let l = feed(&mut s, b"EHLO c.example\r\nMAIL FROM:<a@r.example> SIZE=10\r\n", &NoSpace);
    assert_eq!(codes(&l.replies), ["250", "452"]);
    assert_eq!(
        l.logs,
        ["NOQUEUE: reject: MAIL from client.example[192.0.2.1]: 452 4.3.1 Insufficient system storage; \
          from=<a@r.example> proto=ESMTP helo=<c.example>"]
    );
}

#[test]
fn the_session_tallies_its_commands_for_the_disconnect_line() {
    let mut s = session();
    assert_eq!((s.stage(), s.summary().as_str()), ("CONNECT", "commands=0/0"));
    talk(&mut s, b"EHLO c.example\r\nMAIL FROM:<a@r.example>\r\nRCPT TO:<unknown@example.org>\r\n");
    assert_eq!(s.stage(), "RCPT");
    talk(&mut s, b"RCPT TO:<b@example.org>\r\nDATA\r\n");
    // Content under way: DATA has not succeeded yet.
    talk(&mut s, b"Subject: x\r\n\r\nhi\r\n");
    assert_eq!((s.stage(), s.summary().as_str()), ("DATA", "ehlo=1 mail=1 rcpt=1/2 data=0/1 commands=3/5"));
    talk(&mut s, b".\r\n");
    assert_eq!(s.stage(), "END-OF-MESSAGE");
    talk(&mut s, b"\r\nnoop\r\nXYZZY\r\nQUIT\r\n");
    assert_eq!(s.summary(), "ehlo=1 mail=1 rcpt=1/2 data=1 noop=1 quit=1 unknown=0/2 commands=6/9");
    assert_eq!(s.stage(), "QUIT");

    // A message refused at its end, and a session given up in DATA.
    let mut s = session();
    talk(&mut s, b"EHLO c.example\r\nMAIL FROM:<a@r.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
    s.receive(b"x\r\n.\r\n", &TestChecks);
    s.committed(Commit::NoSpace, &TestChecks);
    talk(&mut s, b"MAIL FROM:<a@r.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nhalf");
    s.abort();
    assert_eq!(s.summary(), "ehlo=1 mail=2 rcpt=2 data=0/2 commands=5/7");
}

#[test]
fn too_many_errors_and_improper_pipelining_are_logged() {
    let mut s = session();
    let mut logs = Vec::new();
    for _ in 0..25 {
        let l = talk(&mut s, b"RCPT TO:<b@example.org>\r\n");
        logs.extend(l.logs);
        if l.closed {
            break;
        }
    }
    assert_eq!(logs, ["too many errors after RCPT from client.example[192.0.2.1]"]);
    let mut s = session();
    talk(&mut s, b"HELO c.example\r\n");
    let l = talk(&mut s, b"MAIL FROM:<a@r.example>\r\nRCPT TO:<b@example.org>\r\n");
    assert_eq!(l.logs, ["improper command pipelining after HELO from client.example[192.0.2.1]"]);
    assert_eq!(s.summary(), "helo=1 commands=1");
    let mut s = session();
    talk(&mut s, b"EHLO c.example\r\nMAIL FROM:<a@r.example>\r\nRCPT TO:<b@example.org>\r\n");
    let l = talk(&mut s, b"DATA\r\nSubject: x\r\n");
    assert_eq!(l.logs, ["improper command pipelining after DATA from client.example[192.0.2.1]"]);
    assert_eq!(s.summary(), "ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4");
}

#[test]
fn a_message_refused_at_its_end_is_logged_as_postfix_does() {
    // Without an ID: NOQUEUE, with the one recipient.
    let mut s = session();
    talk(&mut s, b"EHLO c.example\r\nMAIL FROM:<a@r.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
    s.receive(b"x\r\n.\r\n", &TestChecks);
    s.actions().for_each(drop);
    s.committed(Commit::Refused(554, "5.4.6".into(), "Error: too many hops".into()), &TestChecks);
    let mut log = Log::default();
    drain(&mut s, &mut log);
    assert_eq!(log.replies, "554 5.4.6 Error: too many hops\r\n");
    assert_eq!(
        log.logs,
        ["NOQUEUE: reject: END-OF-MESSAGE from client.example[192.0.2.1]: 554 5.4.6 Error: too many hops; \
          from=<a@r.example> to=<b@example.org> proto=ESMTP helo=<c.example>"]
    );
    // Named as it began: under its ID; two recipients, none named.
    talk(&mut s, b"MAIL FROM:<>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n");
    s.named("1NGCH6T9N7100006TZNA");
    s.receive(b"x\r\n.\r\n", &TestChecks);
    s.actions().for_each(drop);
    s.committed(Commit::NoSpace, &TestChecks);
    let mut log = Log::default();
    drain(&mut s, &mut log);
    assert_eq!(
        log.logs,
        ["1NGCH6T9N7100006TZNA: reject: END-OF-MESSAGE from client.example[192.0.2.1]: 452 4.3.1 Insufficient \
          system storage; from=<> proto=ESMTP helo=<c.example>"]
    );
    // A message queued logs nothing here (the driver logs client=).
    talk(&mut s, b"MAIL FROM:<>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
    let l = talk(&mut s, b"x\r\n.\r\n");
    assert!(l.logs.is_empty(), "{:?}", l.logs);
    assert_eq!(l.replies, "250 2.0.0 Ok: queued as Q1\r\n");
}

/// `sendmail -bs`: a program on a pipe, taken as Postfix's stand-alone
/// smtpd and Sendmail take it.
#[test]
fn a_local_client_needs_no_helo_nor_domains_nor_crlf() {
    // (This host is example.org here, whose names the test's checks take.)
    let local = Settings { local_client: true, hostname: String::from("example.org"), ..settings() };
    let mut s = Session::new(local, Peer { address: "local".into(), hostname: "localhost".into() }, false);
    s.actions().for_each(drop);
    let l = talk(&mut s, b"MAIL FROM:<alice>\nRCPT TO:<root>\nRCPT TO:<postmaster>\nRCPT TO:<b@example.org>\nDATA\n");
    assert_eq!(codes(&l.replies), ["250", "250", "250", "250", "354"], "{}", l.replies);
    let e = &l.begins[0];
    assert_eq!(e.sender.as_ref().map(ToString::to_string).as_deref(), Some("alice@example.org"));
    let rcpts: Vec<String> =
        e.recipients.iter().map(|r| r.mailbox.as_ref().map_or("postmaster".into(), ToString::to_string)).collect();
    assert_eq!(rcpts, ["root@example.org", "postmaster", "b@example.org"]);
    // A script writes everything at once, content and all.
    let local = Settings { local_client: true, hostname: String::from("example.org"), ..settings() };
    let mut s = Session::new(local, Peer { address: "local".into(), hostname: "localhost".into() }, false);
    s.actions().for_each(drop);
    let l = talk(&mut s, b"MAIL FROM:<alice>\nRCPT TO:<root>\nDATA\nSubject: x\n\nhello\n.\nQUIT\n");
    assert_eq!(codes(&l.replies), ["250", "250", "354", "250", "221"], "{}", l.replies);
    // Not from the network: the same input is refused there.
    let mut s = session();
    let l = talk(&mut s, b"MAIL FROM:<alice>\n");
    assert_eq!(codes(&l.replies), ["500"], "{}", l.replies);
    let l = talk(&mut s, b"MAIL FROM:<alice>\r\n");
    assert_eq!(codes(&l.replies), ["503"], "{}", l.replies);
    let l = talk(&mut s, b"HELO c.example\r\nMAIL FROM:<alice>\r\n");
    assert_eq!(codes(&l.replies), ["250", "501"], "{}", l.replies);
}

//! Tests of the report composer: each kind of report read back with a
//! strict MIME reader (`tests/mime.rs`), what is returned of the original
//! and when, ORCPT, the RFC 6533 types, injection through every quoted
//! value, line lengths, boundary collisions and the null sender;
//! `tests/streaming.rs` has the reading and chunking tests.

mod mime;
mod streaming;

use super::{
    Action, Addressee, BodyType, Composer, Diagnostic, Error, Kind, Notify, Options, Original, OriginalEnvelope, Plan,
    QueueId, RecipientReport, Report, Ret, Returned, StatusCode, addressee, compose, notify_wants,
};
use crate::queue::Time;
use mime::{Entity, check_lines, dsn_groups, entity, field, multipart};

// ----- helpers -----

const DATE: i64 = 1_795_000_000;
const ORIGINAL: &[u8] =
    b"Received: from c.example (c.example [192.0.2.1])\r\n\tby mx.example.org (mta) with ESMTP id Q\r\n\
From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: lunch\r\n  on Friday\r\n\
Message-ID: <m1@example.org>\r\n\r\nHello Bob,\r\n\r\nsee you there.\r\n";
/// The header block of [`ORIGINAL`], without the empty line.
const ORIGINAL_HEADERS: usize = 205;

fn queue_id() -> QueueId {
    QueueId::new(Time { secs: DATE - 3600, micros: 5 }, 3, 77)
}

fn rcpt(address: &str, action: Action, status: &str, diagnostic: Diagnostic) -> RecipientReport {
    RecipientReport {
        address: address.into(),
        orcpt: None,
        action,
        status: StatusCode::parse(status).unwrap(),
        remote_mta: None,
        diagnostic,
        last_attempt: Some(DATE - 60),
        will_retry_until: None,
    }
}

fn failed() -> RecipientReport {
    RecipientReport {
        remote_mta: Some("mx.example.net".into()),
        ..rcpt(
            "bob@example.net",
            Action::Failed,
            "5.1.1",
            Diagnostic::Smtp("550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown".into()),
        )
    }
}

fn report(kind: Kind, ret: Option<Ret>, recipients: Vec<RecipientReport>, content: &[u8]) -> Report {
    Report {
        reporting_mta: "mx.example.org".into(),
        original: OriginalEnvelope {
            queue_id: queue_id(),
            sender: "alice@example.org".into(),
            envid: None,
            ret,
            arrival: DATE - 3600,
            smtputf8: false,
            body: BodyType::SevenBit,
            content_len: content.len() as u64,
        },
        kind,
        to: Addressee::Sender,
        recipients,
        date: DATE,
        unique: "7f3a9c".into(),
    }
}

/// A report composed and read back, its structure checked.
struct Parsed {
    raw: Vec<u8>,
    plan: Plan,
}

impl Parsed {
    fn top(&self) -> Entity<'_> {
        entity(&self.raw).unwrap()
    }

    fn parts(&self) -> Vec<Entity<'_>> {
        let top = entity(&self.raw).unwrap();
        multipart(top.body, &self.plan.boundary).unwrap().into_iter().map(|p| entity(p).unwrap()).collect()
    }

    fn groups(&self) -> Vec<Vec<(String, String)>> {
        dsn_groups(self.parts()[1].body).unwrap()
    }

    fn text(&self) -> String {
        self.parts()[0].text().to_string()
    }

    fn lines(&self) -> impl Iterator<Item = &str> {
        std::str::from_utf8(&self.raw).unwrap().split("\r\n")
    }
}

fn build_with(report: Report, options: Options, content: &[u8]) -> Parsed {
    let mut content = content.to_vec();
    let mut composer = Composer::new(report, options).unwrap();
    let plan = composer.plan(&mut content).unwrap().clone();
    let mut raw = Vec::new();
    while let Some(chunk) = composer.next_chunk(&mut content).unwrap() {
        raw.extend_from_slice(chunk);
    }
    let parsed = Parsed { raw, plan };
    check(&parsed);
    parsed
}

fn build(report: Report, content: &[u8]) -> Parsed {
    build_with(report, Options::default(), content)
}

/// What every report must be.
fn check(p: &Parsed) {
    if let Err(e) = check_lines(&p.raw) {
        panic!("{e}\n{}", String::from_utf8_lossy(&p.raw));
    }
    if p.plan.body == BodyType::SevenBit {
        assert!(p.raw.is_ascii());
    }
    let top = p.top();
    for name in ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Auto-Submitted", "Content-Type"] {
        assert_eq!(top.count(name), 1, "{name}");
    }
    let (mime, _) = top.content_type();
    assert_eq!(mime, "multipart/report");
    assert_eq!(top.param("boundary").as_deref(), Some(p.plan.boundary.as_str()));
    assert!(p.plan.boundary.len() <= 70);
    let global = top.param("report-type").unwrap() == "global-delivery-status";
    let parts = p.parts();
    assert_eq!(parts.len(), if p.plan.returned == Returned::Nothing { 2 } else { 3 });
    assert_eq!(parts[0].content_type().0, "text/plain");
    let status = if global { "message/global-delivery-status" } else { "message/delivery-status" };
    assert_eq!(parts[1].content_type().0, status);
    let groups = dsn_groups(parts[1].body).unwrap();
    assert!(field(&groups[0], "Reporting-MTA").unwrap().starts_with("dns; "));
    for g in &groups[1..] {
        for name in ["Final-Recipient", "Action", "Status"] {
            assert!(field(g, name).is_some(), "{name} in {g:?}");
        }
    }
    if let Some(original) = parts.get(2) {
        let expected = match (global, p.plan.returned) {
            (false, Returned::Message(_)) => "message/rfc822",
            (false, _) => "text/rfc822-headers",
            (true, Returned::Message(_)) => "message/global",
            (true, _) => "message/global-headers",
        };
        assert_eq!(original.content_type().0, expected);
        assert_eq!(original.body.len() as u64, p.plan.returned.bytes());
    }
}

// ----- failure reports -----

#[test]
fn failure_ret_full_returns_the_message() {
    let p = build(report(Kind::Failure, Some(Ret::Full), vec![failed()], ORIGINAL), ORIGINAL);
    assert_eq!(p.plan.returned, Returned::Message(ORIGINAL.len() as u64));
    assert_eq!(p.plan.body, BodyType::SevenBit);
    assert!(!p.plan.smtputf8);
    let top = p.top();
    assert_eq!(top.get("From"), Some("Mail Delivery System <MAILER-DAEMON@mx.example.org>"));
    assert_eq!(top.get("To"), Some("<alice@example.org>"));
    assert_eq!(top.get("Subject"), Some("Undelivered Mail Returned to Sender"));
    assert_eq!(top.get("Date"), Some("Wed, 18 Nov 2026 11:06:40 +0000"));
    assert_eq!(top.get("Message-ID"), Some(format!("<{}.7f3a9c@mx.example.org>", queue_id()).as_str()));
    assert_eq!(top.get("Auto-Submitted"), Some("auto-replied"));
    assert_eq!(top.get("MIME-Version"), Some("1.0"));
    assert_eq!(top.param("report-type").as_deref(), Some("delivery-status"));
    assert_eq!(top.get("Content-Transfer-Encoding"), None);
    let parts = p.parts();
    assert_eq!(parts[2].body, ORIGINAL);
    assert_eq!(parts[2].get("Content-Description"), Some("Undelivered Message"));
    let text = p.text();
    assert!(text.starts_with("This is the mail system at host mx.example.org.\r\n"), "{text}");
    assert!(text.contains("<bob@example.net>: host mx.example.net said: 550 5.1.1"), "{text}");
    assert!(text.contains("A copy of the message is attached."));
    let groups = p.groups();
    assert_eq!(groups.len(), 2);
    assert_eq!(field(&groups[0], "Reporting-MTA"), Some("dns; mx.example.org"));
    assert_eq!(field(&groups[0], "X-Mta-Queue-ID"), Some(queue_id().as_str()));
    assert_eq!(field(&groups[0], "X-Mta-Sender"), Some("rfc822; alice@example.org"));
    assert_eq!(field(&groups[0], "Arrival-Date"), Some("Wed, 18 Nov 2026 10:06:40 +0000"));
    assert_eq!(field(&groups[0], "Original-Envelope-Id"), None);
    let r = &groups[1];
    assert_eq!(field(r, "Final-Recipient"), Some("rfc822; bob@example.net"));
    assert_eq!(field(r, "Original-Recipient"), None);
    assert_eq!(field(r, "Action"), Some("failed"));
    assert_eq!(field(r, "Status"), Some("5.1.1"));
    assert_eq!(field(r, "Remote-MTA"), Some("dns; mx.example.net"));
    assert_eq!(
        field(r, "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown")
    );
    assert_eq!(field(r, "Last-Attempt-Date"), Some("Wed, 18 Nov 2026 11:05:40 +0000"));
    assert_eq!(field(r, "Will-Retry-Until"), None);
}

#[test]
fn failure_without_ret_returns_the_message_as_postfix_does() {
    let p = build(report(Kind::Failure, None, vec![failed()], ORIGINAL), ORIGINAL);
    assert_eq!(p.plan.returned, Returned::Message(ORIGINAL.len() as u64));
    assert_eq!(p.parts()[2].body, ORIGINAL);
}

#[test]
fn failure_ret_hdrs_returns_the_header_block() {
    let mut r = report(Kind::Failure, Some(Ret::Headers), vec![failed()], ORIGINAL);
    r.original.envid = Some("QQ314159".into());
    let p = build(r, ORIGINAL);
    assert_eq!(p.plan.returned, Returned::Headers(ORIGINAL_HEADERS as u64));
    let parts = p.parts();
    assert_eq!(parts[2].body, &ORIGINAL[..ORIGINAL_HEADERS]);
    assert!(parts[2].body.ends_with(b"Message-ID: <m1@example.org>\r\n"));
    assert_eq!(parts[2].get("Content-Description"), Some("Undelivered Message Headers"));
    assert_eq!(field(&p.groups()[0], "Original-Envelope-Id"), Some("QQ314159"));
    assert!(p.text().contains("The header of the message is attached."));
}

#[test]
fn several_recipients_each_listed_once() {
    let mut second = rcpt("carol@example.net", Action::Failed, "5.2.2", Diagnostic::Local("mailbox full".into()));
    second.last_attempt = None;
    let p = build(report(Kind::Failure, None, vec![failed(), second], ORIGINAL), ORIGINAL);
    let groups = p.groups();
    assert_eq!(groups.len(), 3);
    assert_eq!(field(&groups[2], "Final-Recipient"), Some("rfc822; carol@example.net"));
    assert_eq!(field(&groups[2], "Diagnostic-Code"), Some("X-Mta; mailbox full"));
    assert_eq!(field(&groups[2], "Remote-MTA"), None);
    assert_eq!(field(&groups[2], "Last-Attempt-Date"), None);
    let text = p.text();
    assert_eq!(text.matches("\r\n<bob@example.net>: host").count(), 1);
    assert!(text.contains("\r\n\r\n<carol@example.net>: mailbox full\r\n"), "{text}");
}

// ----- what is returned, and the size limit -----

fn big_message(body_bytes: usize) -> Vec<u8> {
    let mut m = ORIGINAL[..ORIGINAL_HEADERS + 2].to_vec();
    while m.len() < ORIGINAL_HEADERS + 2 + body_bytes {
        m.extend_from_slice(b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n");
    }
    m
}

#[test]
fn message_over_the_size_limit_returns_its_header_only() {
    let m = big_message(60_000);
    let p = build(report(Kind::Failure, Some(Ret::Full), vec![failed()], &m), &m);
    assert_eq!(p.plan.returned, Returned::Headers(ORIGINAL_HEADERS as u64));
    assert_eq!(p.parts()[2].body, &m[..ORIGINAL_HEADERS]);
    assert_eq!(p.parts()[2].content_type().0, "text/rfc822-headers");
}

#[test]
fn size_limit_is_inclusive() {
    for (limit, whole) in [(ORIGINAL.len() as u64, true), (ORIGINAL.len() as u64 - 1, false)] {
        let options = Options { size_limit: limit, ..Options::default() };
        let p = build_with(report(Kind::Failure, None, vec![failed()], ORIGINAL), options, ORIGINAL);
        assert_eq!(matches!(p.plan.returned, Returned::Message(_)), whole, "{limit}");
    }
}

#[test]
fn header_block_over_the_limit_is_cut_after_a_whole_field() {
    let mut m = Vec::new();
    for i in 0..40 {
        m.extend_from_slice(format!("X-Field-{i:02}: a value of some length\r\n").as_bytes());
        if i == 20 {
            m.extend_from_slice(b"X-Folded: first line\r\n second line\r\n\tthird line\r\n");
        }
    }
    m.extend_from_slice(b"\r\nbody\r\n");
    let folded_start = m.windows(8).position(|w| w == b"X-Folded").unwrap();
    let folded_end = folded_start + 49;
    for limit in [folded_start as u64, folded_start as u64 + 10, folded_end as u64 - 1] {
        let options = Options { size_limit: limit, ..Options::default() };
        let p = build_with(report(Kind::Failure, Some(Ret::Headers), vec![failed()], &m), options, &m);
        assert_eq!(p.plan.returned, Returned::Headers(folded_start as u64), "{limit}");
        assert!(p.parts()[2].body.ends_with(b"X-Field-20: a value of some length\r\n"));
    }
    let options = Options { size_limit: folded_end as u64, ..Options::default() };
    let p = build_with(report(Kind::Failure, Some(Ret::Headers), vec![failed()], &m), options, &m);
    assert_eq!(p.plan.returned, Returned::Headers(folded_end as u64));
    assert!(p.parts()[2].body.ends_with(b"\tthird line\r\n"));
}

#[test]
fn size_limit_zero_returns_nothing() {
    let options = Options { size_limit: 0, ..Options::default() };
    let p = build_with(report(Kind::Failure, None, vec![failed()], ORIGINAL), options, ORIGINAL);
    assert_eq!(p.plan.returned, Returned::Nothing);
    assert_eq!(p.parts().len(), 2);
    assert!(!p.text().contains("attached"));
}

#[test]
fn unfit_lines_return_the_header_only() {
    let long = [&ORIGINAL[..ORIGINAL_HEADERS + 2], "x".repeat(999).as_bytes(), b"\r\n"].concat();
    let bare_lf = [&ORIGINAL[..ORIGINAL_HEADERS + 2], b"one\ntwo\r\n"].concat();
    let bare_cr = [&ORIGINAL[..ORIGINAL_HEADERS + 2], b"one\rtwo\r\n"].concat();
    let nul = [&ORIGINAL[..ORIGINAL_HEADERS + 2], b"one\0two\r\n"].concat();
    for m in [long, bare_lf, bare_cr, nul] {
        let p = build(report(Kind::Failure, None, vec![failed()], &m), &m);
        assert_eq!(p.plan.returned, Returned::Headers(ORIGINAL_HEADERS as u64));
    }
    let mut r = report(Kind::Failure, None, vec![failed()], ORIGINAL);
    r.original.body = BodyType::BinaryMime;
    assert_eq!(build(r, ORIGINAL).plan.returned, Returned::Headers(ORIGINAL_HEADERS as u64));
    let exact = [&ORIGINAL[..ORIGINAL_HEADERS + 2], "x".repeat(998).as_bytes()].concat();
    let p = build(report(Kind::Failure, None, vec![failed()], &exact), &exact);
    assert_eq!(p.plan.returned, Returned::Message(exact.len() as u64));
    assert_eq!(p.parts()[2].body, exact.as_slice());
}

#[test]
fn eight_bit_content_is_declared() {
    let m = [&ORIGINAL[..ORIGINAL_HEADERS + 2], "Grüße, café\r\n".as_bytes()].concat();
    let mut r = report(Kind::Failure, None, vec![failed()], &m);
    r.original.body = BodyType::EightBitMime;
    let p = build(r, &m);
    assert_eq!(p.plan.body, BodyType::EightBitMime);
    assert_eq!(p.top().get("Content-Transfer-Encoding"), Some("8bit"));
    let parts = p.parts();
    assert_eq!(parts[0].get("Content-Type"), Some("text/plain; charset=us-ascii"));
    assert_eq!(parts[0].get("Content-Transfer-Encoding"), None);
    assert_eq!(parts[2].get("Content-Transfer-Encoding"), Some("8bit"));
    assert_eq!(parts[2].body, m.as_slice());
    // Only the header returned: it is 7bit, and so is the report.
    let p = build(report(Kind::Delay, None, vec![delayed()], &m), &m);
    assert_eq!(p.plan.body, BodyType::SevenBit);
}

// ----- delay and success reports -----

fn delayed() -> RecipientReport {
    RecipientReport {
        remote_mta: Some("mx.example.net".into()),
        will_retry_until: Some(DATE + 4 * 86400),
        ..rcpt(
            "bob@example.net",
            Action::Delayed,
            "4.4.1",
            Diagnostic::Local("connect to mx.example.net: timed out".into()),
        )
    }
}

#[test]
fn delay_report_returns_headers_and_retry_time() {
    let p = build(report(Kind::Delay, Some(Ret::Full), vec![delayed()], ORIGINAL), ORIGINAL);
    assert_eq!(p.top().get("Subject"), Some("Delayed Mail (still being retried)"));
    assert_eq!(p.plan.returned, Returned::Headers(ORIGINAL_HEADERS as u64));
    assert_eq!(p.parts()[2].get("Content-Description"), Some("Undelivered Message Headers"));
    let text = p.text();
    assert!(text.contains("warning only"), "{text}");
    assert!(text.contains("<bob@example.net>: connect to mx.example.net: timed out"), "{text}");
    let r = &p.groups()[1];
    assert_eq!(field(r, "Action"), Some("delayed"));
    assert_eq!(field(r, "Status"), Some("4.4.1"));
    assert_eq!(field(r, "Will-Retry-Until"), Some("Sun, 22 Nov 2026 11:06:40 +0000"));
    assert_eq!(field(r, "Diagnostic-Code"), Some("X-Mta; connect to mx.example.net: timed out"));
}

#[test]
fn will_retry_until_only_for_delays() {
    let mut f = failed();
    f.will_retry_until = Some(DATE + 86400);
    let p = build(report(Kind::Failure, None, vec![f], ORIGINAL), ORIGINAL);
    assert_eq!(field(&p.groups()[1], "Will-Retry-Until"), None);
}

#[test]
fn success_report_for_delivered_relayed_expanded() {
    let recipients = vec![
        rcpt("bob@example.net", Action::Delivered, "2.0.0", Diagnostic::Local("delivered to mailbox".into())),
        RecipientReport {
            remote_mta: Some("mx.example.com".into()),
            ..rcpt("carol@example.com", Action::Relayed, "2.0.0", Diagnostic::Smtp("250 2.0.0 Ok: queued".into()))
        },
        rcpt("list@example.net", Action::Expanded, "2.0.0", Diagnostic::Local("alias expanded".into())),
    ];
    let p = build(report(Kind::Success, Some(Ret::Full), recipients, ORIGINAL), ORIGINAL);
    assert_eq!(p.top().get("Subject"), Some("Successful Mail Delivery Report"));
    assert_eq!(p.plan.returned, Returned::Headers(ORIGINAL_HEADERS as u64));
    assert_eq!(p.parts()[2].get("Content-Description"), Some("Message Headers"));
    let groups = p.groups();
    let actions: Vec<_> = groups[1..].iter().map(|g| field(g, "Action").unwrap()).collect();
    assert_eq!(actions, ["delivered", "relayed", "expanded"]);
    assert_eq!(field(&groups[2], "Diagnostic-Code"), Some("smtp; 250 2.0.0 Ok: queued"));
    let text = p.text();
    assert!(text.contains("<carol@example.com>: host mx.example.com said: 250 2.0.0 Ok: queued"), "{text}");
    assert!(!text.contains("contact your postmaster"));
}

// ----- ORCPT -----

#[test]
fn original_recipient_keeps_the_orcpt_address_type() {
    let with = |orcpt: Option<&str>| RecipientReport { orcpt: orcpt.map(String::from), ..failed() };
    let recipients = vec![
        with(Some("rfc822;Bob.Original@example.net")),
        with(Some("x-foo;opaque+value")),
        with(None),
        with(Some("rfc822;BOB@example.net")),
        with(Some("bare@example.net")),
        with(Some("rfc822;")),
    ];
    let p = build(report(Kind::Failure, None, recipients, ORIGINAL), ORIGINAL);
    let groups = p.groups();
    let orig: Vec<_> = groups[1..].iter().map(|g| field(g, "Original-Recipient")).collect();
    assert_eq!(
        orig,
        [
            Some("rfc822; Bob.Original@example.net"),
            Some("x-foo; opaque+value"),
            None,
            Some("rfc822; BOB@example.net"),
            Some("rfc822; bare@example.net"),
            None
        ]
    );
    let text = p.text();
    assert!(text.contains("<bob@example.net> (originally <Bob.Original@example.net>): host"), "{text}");
    assert_eq!(text.matches("(originally").count(), 3, "{text}");
}

// ----- SMTPUTF8 -----

fn utf8_report(ret: Option<Ret>, content: &[u8]) -> Report {
    let mut r = report(
        Kind::Failure,
        ret,
        vec![RecipientReport {
            orcpt: Some("utf-8;用户@example.net".into()),
            ..rcpt("用户@example.net", Action::Failed, "5.1.1", Diagnostic::Smtp("550 5.1.1 用户不存在".into()))
        }],
        content,
    );
    r.original.smtputf8 = true;
    r.original.body = BodyType::EightBitMime;
    r.original.sender = "jürgen@example.org".into();
    r
}

#[test]
fn smtputf8_original_gets_the_global_types() {
    let m = "From: jürgen@example.org\r\nSubject: Grüße\r\n\r\nHallo\r\n".as_bytes();
    let p = build(utf8_report(None, m), m);
    assert_eq!(p.plan.body, BodyType::EightBitMime);
    assert!(p.plan.smtputf8);
    let top = p.top();
    assert_eq!(top.param("report-type").as_deref(), Some("global-delivery-status"));
    assert_eq!(top.get("To"), Some("<jürgen@example.org>"));
    assert_eq!(top.get("Content-Transfer-Encoding"), Some("8bit"));
    let parts = p.parts();
    assert_eq!(parts[0].get("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(parts[0].get("Content-Transfer-Encoding"), Some("8bit"));
    assert!(p.text().contains("<用户@example.net>: the remote server said: 550 5.1.1 用户不存在"));
    assert_eq!(parts[1].get("Content-Type"), Some("message/global-delivery-status"));
    let groups = p.groups();
    assert_eq!(field(&groups[0], "X-Mta-Sender"), Some("utf-8; jürgen@example.org"));
    assert_eq!(field(&groups[1], "Final-Recipient"), Some("utf-8; 用户@example.net"));
    assert_eq!(field(&groups[1], "Original-Recipient"), Some("utf-8; 用户@example.net"));
    assert_eq!(field(&groups[1], "Diagnostic-Code"), Some("smtp; 550 5.1.1 用户不存在"));
    assert_eq!(parts[2].get("Content-Type"), Some("message/global"));
    assert_eq!(parts[2].body, m);
    let p = build(utf8_report(Some(Ret::Headers), m), m);
    assert_eq!(p.parts()[2].get("Content-Type"), Some("message/global-headers"));
}

#[test]
fn a_utf8_orcpt_is_reported_as_rfc6533_asks() {
    // Kept as received: escaped (7 bit) or raw (an SMTPUTF8 client's).
    for stored in [r"utf-8;jos\x{E9}@example.net", "utf-8;josé@example.net"] {
        let orcpt = |r: RecipientReport| RecipientReport { orcpt: Some(stored.into()), ..r };
        let m = "From: jürgen@example.org\r\n\r\nHallo\r\n".as_bytes();
        // A global report: the address itself (utf-8-address).
        let mut r = utf8_report(None, m);
        r.recipients = r.recipients.into_iter().map(orcpt).collect();
        let p = build(r, m);
        assert_eq!(field(&p.groups()[1], "Original-Recipient"), Some("utf-8; josé@example.net"), "{stored}");
        assert!(p.text().contains("(originally <josé@example.net>)"), "{}", p.text());
        // Any other: its 7-bit form (utf-8-addr-xtext), never a `?`.
        let r = report(Kind::Failure, None, vec![orcpt(failed())], ORIGINAL);
        let p = build(r, ORIGINAL);
        assert_eq!(field(&p.groups()[1], "Original-Recipient"), Some(r"utf-8; jos\x{E9}@example.net"), "{stored}");
        assert!(p.raw.is_ascii());
    }
    // One that is ASCII after all is an rfc822 address.
    let r = RecipientReport { orcpt: Some(r"utf-8;a\x{2B}b@example.net".into()), ..failed() };
    let p = build(report(Kind::Failure, None, vec![r], ORIGINAL), ORIGINAL);
    assert_eq!(field(&p.groups()[1], "Original-Recipient"), Some("rfc822; a+b@example.net"));
}

#[test]
fn smtputf8_with_ascii_addressee_needs_no_smtputf8() {
    let mut r = utf8_report(None, ORIGINAL);
    r.original.sender = "alice@example.org".into();
    let p = build(r, ORIGINAL);
    assert!(!p.plan.smtputf8);
    assert_eq!(p.plan.body, BodyType::EightBitMime);
}

#[test]
fn utf8_without_smtputf8_is_replaced() {
    let r = rcpt("bob@example.net", Action::Failed, "5.1.1", Diagnostic::Smtp("550 5.1.1 用户不存在".into()));
    let p = build(report(Kind::Failure, None, vec![r], ORIGINAL), ORIGINAL);
    assert_eq!(field(&p.groups()[1], "Diagnostic-Code"), Some("smtp; 550 5.1.1 ?????"));
    assert!(p.raw.is_ascii());
}

// ----- injection and line lengths -----

#[test]
fn header_injection_through_every_quoted_value() {
    let evil = "x\r\nX-Injected: yes\r\n\r\n--fake\r\nContent-Type: text/html\r\n\r\n<b>hi</b>";
    let r = RecipientReport {
        address: format!("bob@example.net{evil}"),
        orcpt: Some(format!("rfc822\r\nX-Injected: 1;a{evil}")),
        remote_mta: Some(format!("mx.example.net{evil}")),
        ..rcpt("", Action::Failed, "5.1.1", Diagnostic::Smtp(format!("550 5.1.1 no{evil}\u{0}\u{1b}[31m\u{85}")))
    };
    let mut rep = report(Kind::Failure, None, vec![r], ORIGINAL);
    rep.reporting_mta = format!("mx.example.org{evil}");
    rep.original.sender = format!("alice@example.org{evil}");
    rep.original.envid = Some(format!("id{evil}"));
    let p = build(rep, ORIGINAL);
    for line in p.lines() {
        for bad in ["X-Injected", "--fake", "Content-Type: text/html", "<b>"] {
            assert!(!line.starts_with(bad), "{line:?}");
        }
    }
    let groups = p.groups();
    assert_eq!(groups.len(), 2);
    let names: Vec<_> = groups[1].iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Final-Recipient",
            "Original-Recipient",
            "Action",
            "Status",
            "Remote-MTA",
            "Diagnostic-Code",
            "Last-Attempt-Date"
        ]
    );
    let flat = "x X-Injected: yes --fake Content-Type: text/html <b>hi</b>";
    let diagnostic = field(&groups[1], "Diagnostic-Code").unwrap().replace("\r\n", "");
    assert_eq!(diagnostic, format!("smtp; 550 5.1.1 no{flat}??[31m?"));
    assert_eq!(
        field(&groups[1], "Original-Recipient").unwrap().replace("\r\n", ""),
        format!("rfc822X-Injected1; a{flat}")
    );
    assert_eq!(p.parts().len(), 3);
    assert_eq!(p.top().count("X-Injected"), 0);
}

#[test]
fn long_diagnostics_are_folded() {
    let words = "word ".repeat(1000);
    let r = rcpt("bob@example.net", Action::Failed, "5.0.0", Diagnostic::Smtp(format!("550 {words}")));
    let p = build(report(Kind::Failure, None, vec![r], ORIGINAL), ORIGINAL);
    let parts = p.parts();
    let dsn = std::str::from_utf8(parts[1].body).unwrap();
    assert!(dsn.split("\r\n").all(|l| l.len() <= 78), "{dsn}");
    let text = p.text();
    assert!(text.split("\r\n").all(|l| l.len() <= 79), "{text}");
    let diagnostic = field(&p.groups()[1], "Diagnostic-Code").unwrap().to_string();
    assert!(diagnostic.len() <= 2048 + 6);
    assert!(format!("smtp; 550 {words}").starts_with(&diagnostic));
    // One word longer than a line: nothing is added to it. The text part
    // is quoted-printable, and holds it whole once its soft breaks are
    // removed; the Diagnostic-Code holds it as encoded-words.
    let r = rcpt("bob@example.net", Action::Failed, "5.0.0", Diagnostic::Local("z".repeat(3000)));
    let p = build(report(Kind::Failure, None, vec![r], ORIGINAL), ORIGINAL);
    let run = "z".repeat(2048);
    assert_eq!(p.parts()[0].get("Content-Transfer-Encoding"), Some("quoted-printable"));
    assert!(p.text().replace("=\r\n", "").contains(&format!("\r\n    {run}\r\n")), "{}", p.text());
    let d = field(&p.groups()[1], "Diagnostic-Code").unwrap().replace("\r\n", "");
    let (kind, words) = d.split_once("; ").unwrap();
    assert_eq!(kind, "X-Mta");
    let joined: String =
        words.split(' ').map(|w| w.strip_prefix("=?us-ascii?Q?").and_then(|w| w.strip_suffix("?=")).unwrap()).collect();
    assert_eq!(joined, run);
    let address = format!("{}@example.net", "l".repeat(1012));
    let mut r = report(
        Kind::Failure,
        None,
        vec![rcpt(&address, Action::Failed, "5.1.1", Diagnostic::Local("x".into()))],
        ORIGINAL,
    );
    r.original.sender = address;
    build(r, ORIGINAL);
}

// ----- boundaries -----

fn candidate(attempt: usize) -> String {
    format!("{}.7f3a9c.{attempt}", queue_id())
}

#[test]
fn boundary_in_the_content_is_avoided() {
    let m = [ORIGINAL, format!("--{}\r\nquoted\r\n", candidate(0)).as_bytes()].concat();
    let p = build(report(Kind::Failure, None, vec![failed()], &m), &m);
    assert_eq!(p.plan.boundary, candidate(1));
    assert_eq!(p.parts()[2].body, m.as_slice());
    // Beyond what is returned, a candidate does not matter.
    let p = build(report(Kind::Failure, Some(Ret::Headers), vec![failed()], &m), &m);
    assert_eq!(p.plan.boundary, candidate(0));
}

#[test]
fn boundary_in_a_quoted_value_is_avoided() {
    let r = rcpt("bob@example.net", Action::Failed, "5.0.0", Diagnostic::Smtp(format!("550 {}", candidate(0))));
    let p = build(report(Kind::Failure, None, vec![r], ORIGINAL), ORIGINAL);
    assert_eq!(p.plan.boundary, candidate(1));
}

#[test]
fn every_boundary_colliding_is_an_error() {
    let m: Vec<u8> = [ORIGINAL, (0..8).map(candidate).collect::<Vec<_>>().join("\r\n").as_bytes()].concat();
    let r = report(Kind::Failure, None, vec![failed()], &m);
    let err = compose(r, Options::default(), &mut m.clone()).unwrap_err();
    assert!(matches!(err, Error::BoundaryCollision { tried: 8 }), "{err}");
    let m: Vec<u8> = [ORIGINAL, (0..7).map(candidate).collect::<Vec<_>>().join("\r\n").as_bytes()].concat();
    let p = build(report(Kind::Failure, None, vec![failed()], &m), &m);
    assert_eq!(p.plan.boundary, candidate(7));
}

// ----- whom a report goes to, and refusals -----

#[test]
fn never_to_the_null_sender() {
    let mut r = report(Kind::Failure, None, vec![failed()], ORIGINAL);
    r.original.sender = String::new();
    assert!(matches!(Composer::new(r.clone(), Options::default()), Err(Error::NullSender)));
    r.original.sender = "\r\n".into();
    assert!(matches!(Composer::new(r, Options::default()), Err(Error::NullSender)));
    const DB: &str = "double-bounce@mx.example.org";
    assert_eq!(addressee("", Kind::Failure, DB), Some(Addressee::Postmaster));
    assert_eq!(addressee("", Kind::Delay, DB), None);
    assert_eq!(addressee("", Kind::Success, DB), None);
    assert_eq!(addressee("a@example.org", Kind::Delay, DB), Some(Addressee::Sender));
    assert_eq!(addressee("a@example.org", Kind::Failure, DB), Some(Addressee::Sender));
    // A postmaster notice that fails is reported to nobody: no loop.
    for kind in [Kind::Failure, Kind::Delay, Kind::Success] {
        assert_eq!(addressee(DB, kind, DB), None);
        assert_eq!(addressee("Double-Bounce@MX.example.org", kind, DB), None);
    }
}

#[test]
fn double_bounce_goes_to_the_postmaster() {
    let mut r = report(Kind::Failure, None, vec![failed()], ORIGINAL);
    r.original.sender = String::new();
    r.to = addressee("", Kind::Failure, "double-bounce@example.org").unwrap();
    let options = Options { postmaster: "postmaster@example.org".into(), ..Options::default() };
    let p = build_with(r.clone(), options, ORIGINAL);
    let top = p.top();
    assert_eq!(top.get("To"), Some("<postmaster@example.org>"));
    assert_eq!(top.get("Auto-Submitted"), Some("auto-generated"));
    assert_eq!(top.get("Subject"), Some("Postmaster Notice: Undelivered Mail"));
    assert_eq!(field(&p.groups()[0], "X-Mta-Sender"), None);
    assert!(p.text().contains("null sender"));
    let options = Options { postmaster: String::new(), ..Options::default() };
    assert!(matches!(Composer::new(r, options), Err(Error::NoPostmaster)));
}

#[test]
fn refusals() {
    let r = report(Kind::Failure, None, vec![], ORIGINAL);
    assert!(matches!(Composer::new(r, Options::default()), Err(Error::NoRecipients)));
    let r = report(Kind::Delay, None, vec![delayed(), failed()], ORIGINAL);
    let err = Composer::new(r, Options::default()).unwrap_err();
    assert!(matches!(err, Error::ActionMismatch { index: 1, action: Action::Failed, kind: Kind::Delay }));
    assert_eq!(err.to_string(), "recipient 1: action failed does not belong in a Delay report");
    let mut r = report(Kind::Failure, None, vec![failed()], ORIGINAL);
    r.unique = "-_/ \r\n".into();
    assert!(matches!(Composer::new(r, Options::default()), Err(Error::NoUniqueToken)));
}

// ----- small rules -----

#[test]
fn status_codes() {
    for ok in ["2.0.0", "4.4.1", "5.1.1", "5.999.999", "5.10.0"] {
        assert_eq!(StatusCode::parse(ok).unwrap().to_string(), ok);
    }
    for bad in ["", "5.1", "5.1.1.1", "3.1.1", "5.01.1", "5.1.01", "5.1000.1", " 5.1.1", "5.1.1 ", "05.1.1", "+5.1.1"] {
        assert_eq!(StatusCode::parse(bad), None, "{bad:?}");
    }
    assert_eq!(StatusCode::new(5, 7, 1).map(StatusCode::class), Some(5));
    assert_eq!(StatusCode::new(1, 0, 0), None);
}

#[test]
fn notify_conditions() {
    assert!(notify_wants(None, Kind::Failure) && notify_wants(None, Kind::Delay) && !notify_wants(None, Kind::Success));
    assert!(!notify_wants(Some(Notify::Never), Kind::Failure));
    let only_success = Some(Notify::On { success: true, failure: false, delay: false });
    assert!(notify_wants(only_success, Kind::Success) && !notify_wants(only_success, Kind::Failure));
}

#[test]
fn an_lmtp_socket_is_named_in_the_text_but_is_no_remote_mta() {
    let quota = RecipientReport {
        remote_mta: Some("/var/run/dovecot/lmtp".into()),
        ..rcpt(
            "bob@example.org",
            Action::Failed,
            "5.2.2",
            Diagnostic::Smtp("552 5.2.2 <bob@example.org> Quota exceeded (mailbox for user is full)".into()),
        )
    };
    let p = build(report(Kind::Failure, None, vec![quota], ORIGINAL), ORIGINAL);
    let groups = p.groups();
    assert_eq!(field(&groups[1], "Remote-MTA"), None);
    assert_eq!(field(&groups[1], "Status"), Some("5.2.2"));
    assert_eq!(
        field(&groups[1], "Diagnostic-Code"),
        Some("smtp; 552 5.2.2 <bob@example.org> Quota exceeded (mailbox for user is full)")
    );
    assert!(p.text().contains("<bob@example.org>: host /var/run/dovecot/lmtp said: 552 5.2.2"), "{}", p.text());
}

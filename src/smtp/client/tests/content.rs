//! Content: pulled in chunks, normalised, dot-stuffed, converted to 7 bit
//! for a server without 8BITMIME.

use super::*;

const EHLO_7BIT: &str = "250-mx.example.net\r\n250 PIPELINING\r\n";

/// Run a one-recipient job to the point where the content was sent.
fn send(j: Job, ehlo: &str, content: &[u8], chunk: usize) -> (Harness, String) {
    let mut h = Harness::greeted(config(), j);
    h.content = content.to_vec();
    h.chunk = chunk;
    h.step("EHLO client.example.org\r\n", ehlo);
    let mail = h.sent();
    h.server("250 Ok\r\n250 Ok\r\n354 go\r\n");
    (h, mail)
}

#[test]
fn content_is_dot_stuffed_normalised_and_ended() {
    let content = b"Subject: dots\r\n\r\n.hidden\nbare lf\rbare cr\r\n.\r\n..\r\nno final newline";
    let (mut h, _) = send(job(&["a@example.net"]), EHLO_7BIT, content, 5);
    assert_eq!(
        h.sent(),
        "Subject: dots\r\n\r\n..hidden\r\nbare lf\r\nbare cr\r\n..\r\n...\r\nno final newline\r\n.\r\n"
    );
    h.server("250 Ok\r\n");
    assert_eq!(h.result().recipients[0].disposition, Disposition::Delivered);
}

#[test]
fn smuggling_end_of_data_variants_in_content_are_neutralised() {
    // Each of these ends the data for some servers; none may here.
    let content = b"a\r\n.\nb\n.\r\nc\r.\rd\r\n.\r\r\ne";
    let (mut h, _) = send(job(&["a@example.net"]), EHLO_7BIT, content, 1);
    let sent = h.sent();
    assert_eq!(sent.matches("\r\n.\r\n").count(), 1, "{sent:?}");
    assert!(sent.ends_with("e\r\n.\r\n"));
    assert!(!sent.replace("\r\n", "").contains(['\r', '\n']));
}

#[test]
fn content_is_pulled_chunk_by_chunk() {
    let content = vec![b'x'; 10_000];
    let mut h = Harness::greeted(config(), job(&["a@example.net"]));
    h.content = content;
    h.chunk = 1000;
    h.step("EHLO client.example.org\r\n", EHLO_7BIT);
    h.sent();
    h.client.receive(b"250 Ok\r\n250 Ok\r\n354 go\r\n");
    // The client asks, the driver answers: one chunk per request.
    let mut sends = 0;
    let mut requests = 0;
    let mut chunks = h.content.chunks(1000).map(<[u8]>::to_vec).collect::<Vec<_>>().into_iter();
    loop {
        let actions: Vec<Action> = h.client.actions().collect();
        if actions.is_empty() {
            break;
        }
        for a in actions {
            match a {
                Action::Send(b) => {
                    assert!(b.len() <= 1002, "no more than a chunk at a time");
                    sends += 1;
                }
                Action::NeedContent => {
                    requests += 1;
                    match chunks.next() {
                        Some(c) => h.client.content(&c),
                        None => h.client.content_end(),
                    }
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!((requests, sends), (11, 11));
    assert_eq!(h.client.waiting().map(|w| w.0), Some(Stage::Dot));
}

#[test]
fn eight_bit_content_goes_as_is_with_body_8bitmime() {
    let mut j = job(&["a@example.net"]);
    j.body = BodyType::EightBitMime;
    let content = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n";
    let (mut h, mail) = send(j, EHLO_ALL, content.as_bytes(), 4);
    assert!(mail.starts_with("MAIL FROM:<sender@example.org> SIZE=100 BODY=8BITMIME\r\n"));
    assert_eq!(h.sent(), format!("{content}.\r\n"));
}

#[test]
fn eight_bit_content_is_converted_for_a_server_without_8bitmime() {
    let mut j = job(&["a@example.net"]);
    j.body = BodyType::EightBitMime;
    let content = "Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
                   Content-Transfer-Encoding: 8bit\r\n\r\n.Grüße = \r\nzweite Zeile\r\n";
    let (mut h, mail) = send(j, EHLO_7BIT, content.as_bytes(), 3);
    assert_eq!(mail, "MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.net>\r\nDATA\r\n");
    let sent = h.sent();
    assert!(sent.is_ascii());
    assert_eq!(
        sent,
        "Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\n..Gr=C3=BC=C3=9Fe =3D=20\r\nzweite Zeile\r\n.\r\n"
    );
    h.server("250 Ok\r\n");
    assert_eq!(h.result().recipients[0].disposition, Disposition::Delivered);
}

#[test]
fn seven_bit_message_is_never_converted() {
    // Labelled 8bit inside but sent as 7BIT: left alone, as Postfix does.
    let content = "Content-Transfer-Encoding: 8bit\r\n\r\nplain\r\n";
    let (mut h, _) = send(job(&["a@example.net"]), EHLO_7BIT, content.as_bytes(), 100);
    assert_eq!(h.sent(), format!("{content}.\r\n"));
}

#[test]
fn unconvertible_nesting_bounces_and_drops_the_connection() {
    let mut j = job(&["a@example.net"]);
    j.body = BodyType::EightBitMime;
    let mut content = String::new();
    for i in 0..30 {
        content.push_str(&format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"));
    }
    let (mut h, _) = send(j, EHLO_7BIT, content.as_bytes(), 64);
    assert!(h.closed);
    assert!(!h.sent().ends_with("\r\n.\r\n"), "the message must not be completed");
    let r = &h.result().recipients[0];
    assert_eq!((r.disposition, r.stage), (Disposition::Bounced, Stage::Content));
    assert_eq!(r.reply.status(), Enhanced::new(5, 6, 0));
}

#[test]
fn server_chatter_during_content_is_bounded_then_read_after_the_dot() {
    let mut h = Harness::greeted(config(), job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_7BIT);
    h.sent();
    h.content = Vec::new();
    h.client.receive(b"250 Ok\r\n250 Ok\r\n354 go\r\n");
    // Take the content request without answering it yet.
    let actions: Vec<Action> = h.client.actions().collect();
    assert_eq!(actions, vec![Action::NeedContent]);
    // An early reply is held, not taken for the end-of-data reply...
    h.client.receive(b"250 early\r\n");
    assert!(h.client.actions().next().is_none());
    h.client.content_end();
    h.pump();
    let r = &h.result().recipients[0];
    assert_eq!(r.reply.text, "early");
    // ...but a flood is a protocol error.
    let mut h = Harness::greeted(config(), job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_7BIT);
    h.client.receive(b"250 Ok\r\n250 Ok\r\n354 go\r\n");
    let _: Vec<Action> = h.client.actions().collect();
    h.client.receive(&vec![b'x'; 40 * 1024]);
    h.pump();
    assert!(h.closed);
    assert_eq!(h.result().recipients[0].disposition, Disposition::Deferred);
}

#[test]
fn last_chunk_and_end_of_data_go_out_together() {
    let mut h = Harness::greeted(config(), job(&["a@example.net"]));
    h.step("EHLO client.example.org\r\n", EHLO_7BIT);
    h.sent();
    h.client.receive(b"250 Ok\r\n250 Ok\r\n354 go\r\n");
    let actions: Vec<Action> = h.client.actions().collect();
    assert_eq!(actions, vec![Action::NeedContent]);
    // The driver knows this chunk is the last: it ends the data at once,
    // and the chunk's own request for more content is withdrawn.
    h.client.content(b"Subject: x\r\n\r\nbody\r\n");
    h.client.content_end();
    let actions: Vec<Action> = h.client.actions().collect();
    assert_eq!(actions, vec![Action::Send(b"Subject: x\r\n\r\nbody\r\n".to_vec()), Action::Send(b".\r\n".to_vec())]);
    h.client.receive(b"250 2.0.0 queued\r\n");
    h.pump();
    assert_eq!(h.result().recipients[0].disposition, Disposition::Delivered);
}

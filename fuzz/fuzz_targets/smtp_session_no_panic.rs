//! Any byte stream, cut anywhere, leaves the SMTP session sane: no panic;
//! every reply is whole lines of a three-digit code; a message's content
//! comes only between its Begin and its End or Abort, with CR LF line
//! ends only (no bare CR or LF is ever passed on to cleanup).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta::address::Path;
use mta::ipc::msg::UserFound;
use mta::smtpd::data::Bare;
use mta::smtpd::session::{Action, Checks, Commit, Limits, Peer, RcptVerdict, Session, Settings};

/// Accepts every recipient, but asks the name service about local parts
/// of a length divisible by three (answered by the name's length).
struct AcceptAll;
impl Checks for AcceptAll {
    fn recipient(&self, _: &Peer, rcpt: &Path) -> RcptVerdict {
        match rcpt {
            Path::Mailbox(m) if m.local.len() % 3 == 0 => RcptVerdict::Lookup(m.local.clone()),
            _ => RcptVerdict::Accept,
        }
    }
}

fn answer(name: &str) -> UserFound {
    [UserFound::Yes, UserFound::No, UserFound::Unavailable][name.len() / 3 % 3]
}

fn check_reply(r: &[u8]) {
    assert!(r.ends_with(b"\r\n"), "reply not ended by CR LF: {r:?}");
    for line in r[..r.len() - 2].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(
            line.len() >= 3 && line[..3].iter().all(u8::is_ascii_digit) && matches!(line[0], b'2'..=b'5'),
            "reply line without a code: {line:?}"
        );
        assert!(line.len() == 3 || matches!(line[3], b' ' | b'-'), "reply line {line:?}");
        assert!(!line.contains(&b'\r'), "bare CR in a reply: {line:?}");
    }
}

/// A message begun: whether the last byte of its content so far was CR.
struct Message {
    cr: bool,
}

fuzz_target!(|data: &[u8]| {
    let settings = Settings {
        hostname: "fuzz.example".into(),
        limits: Limits { message_size: 4096, ..Limits::default() },
        bare: if data.first().is_some_and(|b| b & 1 == 1) { Bare::Normalize } else { Bare::Reject },
        starttls: true,
        local_client: data.first().is_some_and(|b| b & 2 == 2),
    };
    let mut s = Session::new(settings, Peer { address: "192.0.2.1".into(), hostname: "unknown".into() }, false);
    let mut open: Option<Message> = None;
    let (mut begun, mut ended) = (0usize, 0usize);
    for chunk in data.chunks(97) {
        s.receive(chunk, &AcceptAll);
        for a in s.actions().collect::<Vec<_>>() {
            match a {
                Action::Reply(r) => check_reply(&r),
                Action::Begin(_) => {
                    assert!(open.is_none(), "a message begun inside another");
                    open = Some(Message { cr: false });
                    if begun % 2 == 1 {
                        s.named("1NGCH6T9N7100006TZNA");
                    }
                    begun += 1;
                }
                Action::Content(c) => {
                    let m = open.as_mut().expect("content outside a message");
                    let mut cr = m.cr;
                    for &b in &c {
                        assert!(b != b'\n' || cr, "bare LF in content");
                        assert!(!cr || b == b'\n', "bare CR in content");
                        cr = b == b'\r';
                    }
                    m.cr = cr;
                }
                Action::End => {
                    let m = open.take().expect("end outside a message");
                    assert!(!m.cr, "content ends in a bare CR");
                    // Every verdict cleanup may give, in turn.
                    let verdict = match ended % 4 {
                        0 => Commit::Queued("Q".into()),
                        1 => Commit::Refused(554, "5.4.6".into(), "Error: too many hops".into()),
                        2 => Commit::TempFail("disk".into()),
                        _ => Commit::NoSpace,
                    };
                    ended += 1;
                    s.committed(verdict, &AcceptAll);
                }
                Action::Abort => {
                    open.take().expect("abort outside a message");
                }
                Action::LookupUser(name) => s.looked_up(answer(&name), &AcceptAll),
                Action::Log(l) => assert!(
                    [
                        "NOQUEUE: reject: ",
                        "1NGCH6T9N7100006TZNA: reject: END-OF-MESSAGE from ",
                        "too many errors after ",
                        "improper command pipelining after "
                    ]
                    .iter()
                    .any(|p| l.starts_with(p)),
                    "{l:?}"
                ),
                Action::Pause(_) | Action::StartTls | Action::Close => {}
            }
        }
        if s.space() == 0 {
            s.tls_started();
        }
    }
    // The disconnect line's counts: each `name=given` or
    // `name=succeeded/given`, never more succeeded than given, and the
    // total last.
    let summary = s.summary();
    let stage = s.stage();
    assert!(stage.bytes().all(|b| b.is_ascii_uppercase() || b == b'-'), "{stage:?}");
    let (mut ok, mut all) = (0u32, 0u32);
    for word in summary.split(' ') {
        let (name, n) = word.split_once('=').expect("name=count");
        let (good, given) = match n.split_once('/') {
            Some((g, t)) => (g.parse::<u32>().expect("count"), t.parse::<u32>().expect("count")),
            None => (n.parse().expect("count"), n.parse().expect("count")),
        };
        assert!(good <= given, "{summary}");
        if name == "commands" {
            assert_eq!((good, given), (ok, all), "{summary}");
        } else {
            assert!(name.bytes().all(|b| b.is_ascii_lowercase()) && given > 0, "{summary}");
            ok += good;
            all += given;
        }
    }
    assert!(summary.contains("commands="), "{summary}");
});

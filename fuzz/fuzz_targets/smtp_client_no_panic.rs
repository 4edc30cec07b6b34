//! Any server byte stream, cut anywhere, leaves the SMTP client sane: no
//! panic, every job answered, nothing sent after Close.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta::queue::BodyType;
use mta::smtp::client::{Action, Client, Config, Job, JobRecipient, Limits, Timeouts, TlsPolicy};

fuzz_target!(|data: &[u8]| {
    let flags = data.first().copied().unwrap_or(0);
    let config = Config {
        helo_name: "fuzz.example".into(),
        lmtp: flags & 1 == 1,
        tls: if flags & 2 == 2 { TlsPolicy::Opportunistic } else { TlsPolicy::None },
        credentials: None,
        limits: Limits::default(),
        timeouts: Timeouts::default(),
    };
    let job = || Job {
        sender: "a@example.org".into(),
        recipients: vec![JobRecipient { address: "b@example.net".into(), orcpt: None, notify: None }; 2],
        body: if flags & 4 == 4 { BodyType::EightBitMime } else { BodyType::SevenBit },
        smtputf8: false,
        utf8_headers: false,
        ret: None,
        envid: None,
        size: 10,
    };
    let mut c = Client::new(config).unwrap();
    let (mut closed, mut jobs, mut done) = (false, 1, 0);
    // Jobs the client took: each gets exactly one Done.
    let mut started = usize::from(c.start(job()).is_ok());
    // Content handed over so far: a message's content has an end (the
    // queue file's), so the client gets at most a few pieces of it.
    let mut pieces = 0;
    let content = data.get(1..).unwrap_or_default();
    for chunk in content.chunks(61) {
        c.receive(chunk);
        loop {
            let actions: Vec<Action> = c.actions().collect();
            if actions.is_empty() {
                break;
            }
            for a in actions {
                match a {
                    Action::Send(_) => assert!(!closed),
                    Action::StartTls => c.tls_started(),
                    Action::NeedContent if chunk.len() % 2 == 0 && pieces < 4 => {
                        pieces += 1;
                        c.content(chunk);
                    }
                    Action::NeedContent => {
                        pieces = 0;
                        c.content_end();
                    }
                    Action::Done(_) => done += 1,
                    Action::Idle if jobs < 3 => {
                        jobs += 1;
                        started += usize::from(c.start(job()).is_ok());
                    }
                    Action::Idle => c.quit(),
                    Action::Close => closed = true,
                }
            }
        }
    }
    c.connection_lost();
    for a in c.actions() {
        match a {
            Action::Done(_) => done += 1,
            Action::Send(_) | Action::NeedContent | Action::StartTls => panic!("{a:?} after the connection was lost"),
            Action::Idle | Action::Close => {}
        }
    }
    assert_eq!(done, started, "jobs answered, of those started");
});

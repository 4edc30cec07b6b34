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
    let _ = c.start(job());
    let (mut closed, mut jobs, mut done) = (false, 1, 0);
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
                    Action::NeedContent if chunk.len() % 2 == 0 => c.content(chunk),
                    Action::NeedContent => c.content_end(),
                    Action::Done(_) => done += 1,
                    Action::Idle if jobs < 3 => {
                        jobs += 1;
                        let _ = c.start(job());
                    }
                    Action::Idle => c.quit(),
                    Action::Close => closed = true,
                }
            }
        }
    }
    c.connection_lost();
    let _ = c.actions().count();
    let _ = done;
});

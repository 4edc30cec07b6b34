//! Any byte stream, cut anywhere, leaves the SMTP session sane.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta::address::Path;
use mta::smtpd::data::Bare;
use mta::smtpd::session::{Checks, Commit, Limits, Peer, RcptVerdict, Session, Settings};

struct AcceptAll;
impl Checks for AcceptAll {
    fn recipient(&self, _: &Peer, _: &Path) -> RcptVerdict {
        RcptVerdict::Accept
    }
}

fuzz_target!(|data: &[u8]| {
    let settings = Settings {
        hostname: "fuzz.example".into(),
        limits: Limits { message_size: 4096, ..Limits::default() },
        bare: if data.first().is_some_and(|b| b & 1 == 1) { Bare::Normalize } else { Bare::Reject },
        starttls: true,
    };
    let mut s = Session::new(settings, Peer { address: "192.0.2.1".into(), hostname: "unknown".into() }, false);
    for chunk in data.chunks(97) {
        s.receive(chunk, &AcceptAll);
        for a in s.actions().collect::<Vec<_>>() {
            if a == mta::smtpd::session::Action::End {
                s.committed(Commit::Queued("Q".into()), &AcceptAll);
            }
        }
        if s.space() == 0 {
            s.tls_started();
        }
    }
});

//! The DATA decoder never panics and never emits a bare CR or LF.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta::smtpd::data::{Bare, DotDecoder};

fuzz_target!(|data: &[u8]| {
    for bare in [Bare::Reject, Bare::Normalize] {
        let mut d = DotDecoder::new(bare);
        let mut out = Vec::new();
        let _ = d.feed(data, &mut out);
        for (i, &b) in out.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && out[i - 1] == b'\r');
            }
        }
    }
});

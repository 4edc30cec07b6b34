//! The aliases parser, which also reads users' `.forward` and `:include:`
//! files for local's root parent, never panics, and what it accepts stays
//! within its documented bounds, whatever the bytes.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mta::aliases::{MAX_TARGET, MAX_TARGETS, Target, parse, parse_include};

fn bounded(t: &Target) -> bool {
    let text = match t {
        Target::Local(s) | Target::Mailbox(s) => s.len(),
        _ => format!("{t:?}").len(),
    };
    text <= MAX_TARGET + 64
}

fuzz_target!(|data: &[u8]| {
    let file = Path::new("/fuzz/aliases");
    if let Ok(targets) = parse_include(data, file) {
        assert!(targets.len() <= MAX_TARGETS);
        assert!(targets.iter().all(bounded));
    }
    let _ = parse(data, file);
});

//! Any configuration text is either a configuration or an error with a
//! message (and a line within the text when one is given), never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err((line, message)) = mta::config::Config::parse(text) {
        assert!(!message.is_empty());
        if let Some(n) = line {
            assert!(n >= 1 && n <= text.lines().count().max(1), "line {n} of a {}-line text", text.lines().count());
        }
    }
});

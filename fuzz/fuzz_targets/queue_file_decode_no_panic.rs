//! The queue file reader never panics and never allocates from an
//! unchecked length, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mta::queue::QueueFile::decode(data);
});

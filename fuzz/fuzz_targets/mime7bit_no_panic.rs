//! Any content, cut anywhere, converts to 7 bit without a panic, and the
//! output has CR LF line ends only and one end-of-data line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta::smtp::content::DataEncoder;
use mta::smtp::mime7bit::MimeLimits;

fuzz_target!(|data: &[u8]| {
    let limits = MimeLimits { header: 256, depth: 4, boundary: 16 };
    let mut enc = DataEncoder::new(Some(limits));
    let mut out = Vec::new();
    for chunk in data.chunks(13) {
        enc.feed(chunk, &mut out);
    }
    enc.finish(&mut out);
    assert!(out.ends_with(b".\r\n"));
    let body = &out[..out.len() - 3];
    assert!(body.is_empty() || body.ends_with(b"\r\n"));
    assert!(!body.windows(5).any(|w| w == b"\r\n.\r\n") && !body.starts_with(b".\r\n"));
});

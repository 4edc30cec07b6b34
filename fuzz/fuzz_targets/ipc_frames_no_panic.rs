//! A channel fed any datagrams by its peer (a compromised child) never
//! panics and never holds more than its bound: each frame's header,
//! chunk reassembly, coalesced frames and the message decoding are all
//! checked. The input is a series of frames, each a 2-byte length and
//! that many bytes; its first byte picks the message type decoded.
#![no_main]
use std::os::unix::net::UnixDatagram;

use libfuzzer_sys::fuzz_target;
use mta::ipc::{Channel, msg, pair};
use serde::de::DeserializeOwned;

fn feed<T: DeserializeOwned>(frames: &[&[u8]]) {
    let (ours, theirs) = pair().expect("socketpair");
    let peer = UnixDatagram::from(theirs);
    let mut ch = Channel::new(ours).with_max_message(1 << 16);
    for f in frames {
        // Empty datagrams read as the peer's close: not sent.
        if f.is_empty() || peer.send(f).is_err() {
            continue;
        }
        // Each frame is read before the next is sent (the socket's
        // buffer never fills); a broken channel ends the run.
        for _ in 0..=f.len() {
            match ch.recv::<T>() {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else { return };
    let mut frames = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len()).min(mta::ipc::MAX_FRAME);
        frames.push(&tail[..len]);
        rest = &tail[len..];
        if frames.len() >= 64 {
            break;
        }
    }
    match pick % 9 {
        0 => feed::<msg::ToMaster>(&frames),
        1 => feed::<msg::SmtpdToCleanup>(&frames),
        2 => feed::<msg::CleanupToQmgr>(&frames),
        3 => feed::<msg::SmtpToQmgr>(&frames),
        4 => feed::<msg::FromWorker>(&frames),
        5 => feed::<msg::SmtpdToLookup>(&frames),
        6 => feed::<msg::LookupToSmtpd>(&frames),
        7 => feed::<msg::CleanupToSmtpd>(&frames),
        _ => feed::<msg::BounceToQmgr>(&frames),
    }
});

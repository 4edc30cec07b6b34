use super::msg::{FromMaster, Level, ToMaster};
use super::*;
use nix::sys::socket::{MsgFlags, send};
use proptest::prelude::*;
use std::io::Read;
use std::os::fd::AsRawFd;

fn channels() -> (Channel, Channel) {
    let (a, b) = pair().unwrap();
    (Channel::new(a), Channel::new(b))
}

#[test]
fn small_message_round_trip() {
    let (mut a, mut b) = channels();
    a.send(&ToMaster::Log { level: Level::Info, text: String::from("hello") }, &[]).unwrap();
    let (m, fds): (ToMaster, _) = b.recv().unwrap().unwrap();
    assert_eq!(m, ToMaster::Log { level: Level::Info, text: String::from("hello") });
    assert!(fds.is_empty());
    assert!(b.recv::<ToMaster>().unwrap().is_none());
}

#[test]
fn large_message_travels_in_chunks_with_fds_on_last() {
    let (mut a, mut b) = channels();
    let text = "x".repeat(50_000);
    let (r, mut w) = std::os::unix::net::UnixStream::pair().unwrap();
    a.send(&ToMaster::Log { level: Level::Debug, text: text.clone() }, &[r.as_fd()]).unwrap();
    drop(r);
    let mut got = None;
    for _ in 0..100 {
        if let Some(m) = b.recv::<ToMaster>().unwrap() {
            got = Some(m);
            break;
        }
    }
    let (m, fds) = got.unwrap();
    assert_eq!(m, ToMaster::Log { level: Level::Debug, text });
    assert_eq!(fds.len(), 1);
    use std::io::Write;
    w.write_all(b"ping").unwrap();
    let mut s = std::os::unix::net::UnixStream::from(fds.into_iter().next().unwrap());
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
}

#[test]
fn received_fds_are_cloexec() {
    let (mut a, mut b) = channels();
    let (r, _w) = std::os::unix::net::UnixStream::pair().unwrap();
    a.send(&FromMaster::Stop, &[r.as_fd()]).unwrap();
    let (_, fds) = b.recv::<FromMaster>().unwrap().unwrap();
    let flags = nix::fcntl::fcntl(&fds[0], nix::fcntl::FcntlArg::F_GETFD).unwrap();
    assert_ne!(flags & libc::FD_CLOEXEC, 0);
}

#[test]
fn over_limit_message_refused_by_receiver() {
    let (mut a, b) = channels();
    let mut b = b.with_max_message(10_000);
    a.send(&ToMaster::Log { level: Level::Info, text: "y".repeat(30_000) }, &[]).unwrap();
    let mut err = None;
    for _ in 0..10 {
        if let Err(e) = b.recv::<ToMaster>() {
            err = Some(e);
            break;
        }
    }
    assert!(matches!(err, Some(Error::TooLarge(_))), "{err:?}");
}

#[test]
fn oversized_datagram_is_truncation() {
    let (a, b) = pair().unwrap();
    let mut b = Channel::new(b);
    send(a.as_raw_fd(), &vec![0u8; MAX_FRAME + 100], MsgFlags::empty()).unwrap();
    assert!(matches!(b.recv::<ToMaster>(), Err(Error::Truncated)));
}

#[test]
fn closed_peer_is_reported() {
    let (a, mut b) = channels();
    drop(a);
    assert!(matches!(b.recv::<ToMaster>(), Err(Error::Closed)));
}

#[test]
fn bad_header_is_malformed() {
    let (a, b) = pair().unwrap();
    let mut b = Channel::new(b);
    send(a.as_raw_fd(), &[9, 0, 0, 0, 0, 0, 0, 0, 1], MsgFlags::empty()).unwrap();
    assert!(matches!(b.recv::<ToMaster>(), Err(Error::Malformed(_))));
}

#[test]
fn unexpected_variant_is_malformed() {
    let (a, b) = pair().unwrap();
    let mut b = Channel::new(b);
    let mut f = header(WHOLE, 0).to_vec();
    f.extend_from_slice(&[200, 1, 2]);
    send(a.as_raw_fd(), &f, MsgFlags::empty()).unwrap();
    assert!(matches!(b.recv::<ToMaster>(), Err(Error::Malformed(_))));
}

#[test]
fn interleaved_chunks_are_malformed() {
    let (a, b) = pair().unwrap();
    let mut b = Channel::new(b);
    let mut f1 = header(CHUNK, 7).to_vec();
    f1.extend_from_slice(&[0; 10]);
    let mut f2 = header(LAST, 8).to_vec();
    f2.extend_from_slice(&[0; 10]);
    send(a.as_raw_fd(), &f1, MsgFlags::empty()).unwrap();
    send(a.as_raw_fd(), &f2, MsgFlags::empty()).unwrap();
    assert!(matches!(b.recv::<ToMaster>(), Err(Error::Malformed(_))));
}

#[test]
fn split_reassembles() {
    let body: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
    let frames = split(&body, 5);
    assert!(frames.iter().all(|f| f.len() <= MAX_FRAME));
    let mut c = Channel::new(pair().unwrap().0);
    let mut out = None;
    for (i, f) in frames.iter().enumerate() {
        let r = c.reassemble(f, true).unwrap();
        if i + 1 < frames.len() {
            assert!(r.is_none());
        } else {
            out = r;
        }
    }
    assert_eq!(out.unwrap(), body);
}

proptest! {
    // ipc_frame_no_panic: any sequence of frames either decodes or is an
    // error; never a panic, never more than the limit held.
    #[test]
    fn ipc_frame_no_panic(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8)) {
        let mut c = Channel::new(pair().unwrap().0).with_max_message(256);
        for f in &frames {
            match c.reassemble(f, true) {
                Ok(Some(body)) => { let _ = postcard::from_bytes::<ToMaster>(&body); }
                Ok(None) => {}
                Err(_) => break,
            }
            if let Some((_, acc)) = &c.partial { prop_assert!(acc.len() <= 256); }
        }
    }

    #[test]
    fn any_log_text_round_trips(text in ".{0,20000}") {
        let (mut a, mut b) = channels();
        let m = ToMaster::Log { level: Level::Warning, text };
        a.send(&m, &[]).unwrap();
        let mut got = None;
        for _ in 0..10 { if let Some((x, _)) = b.recv::<ToMaster>().unwrap() { got = Some(x); break; } }
        prop_assert_eq!(got.unwrap(), m);
    }
}

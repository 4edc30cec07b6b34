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
    a.send(&ToMaster::Log { at: 0, level: Level::Info, text: String::from("hello") }, &[]).unwrap();
    let (m, fds): (ToMaster, _) = b.recv().unwrap().unwrap();
    assert_eq!(m, ToMaster::Log { at: 0, level: Level::Info, text: String::from("hello") });
    assert!(fds.is_empty());
    assert!(b.recv::<ToMaster>().unwrap().is_none());
}

#[test]
fn large_message_travels_in_chunks_with_fds_on_last() {
    let (mut a, mut b) = channels();
    let text = "x".repeat(50_000);
    let (r, mut w) = std::os::unix::net::UnixStream::pair().unwrap();
    a.send(&ToMaster::Log { at: 0, level: Level::Debug, text: text.clone() }, &[r.as_fd()]).unwrap();
    drop(r);
    let mut got = None;
    for _ in 0..100 {
        if let Some(m) = b.recv::<ToMaster>().unwrap() {
            got = Some(m);
            break;
        }
    }
    let (m, fds) = got.unwrap();
    assert_eq!(m, ToMaster::Log { at: 0, level: Level::Debug, text });
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

/// A descriptor given away goes over the channel without a copy left
/// behind: once the message is sent, the receiver's is the only one (the
/// peer sees the end of the stream when the receiver closes it).
#[test]
fn owned_fds_are_given_away() {
    let (mut a, mut b) = channels();
    let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
    a.send_owned(&FromMaster::Stop, vec![OwnedFd::from(r)]).unwrap();
    let (_, fds) = b.recv::<FromMaster>().unwrap().unwrap();
    assert_eq!(fds.len(), 1);
    use std::io::Write;
    let mut w = w;
    w.write_all(b"ping").unwrap();
    let mut got = std::os::unix::net::UnixStream::from(fds.into_iter().next().unwrap());
    let mut buf = [0u8; 4];
    got.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    drop(got);
    w.set_nonblocking(true).unwrap();
    let mut rest = Vec::new();
    // With a copy kept by the sender this would block (WouldBlock), not end.
    assert_eq!(std::io::Read::read_to_end(&mut w, &mut rest).unwrap(), 0, "no other copy of the descriptor");
}

#[test]
fn over_limit_message_refused_by_receiver() {
    let (mut a, b) = channels();
    let mut b = b.with_max_message(10_000);
    a.send(&ToMaster::Log { at: 0, level: Level::Info, text: "y".repeat(30_000) }, &[]).unwrap();
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

/// Datagrams waiting on `fd`'s peer (each `recv` on a raw socket takes one).
fn datagrams(c: &Channel) -> usize {
    let mut n = 0;
    let mut buf = vec![0u8; MAX_FRAME + 1];
    while nix::sys::socket::recv(c.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).is_ok() {
        n += 1;
    }
    n
}

#[test]
fn corked_messages_coalesce_in_order_and_fds_travel_alone() {
    let (mut a, mut b) = channels();
    a.cork();
    let log = |i: usize| ToMaster::Log { at: 0, level: Level::Info, text: format!("line {i}") };
    for i in 0..10 {
        a.send(&log(i), &[]).unwrap();
    }
    let (r, _w) = std::os::unix::net::UnixStream::pair().unwrap();
    a.send(&log(10), &[r.as_fd()]).unwrap();
    a.send(&log(11), &[]).unwrap();
    a.send(&ToMaster::Log { at: 0, level: Level::Info, text: "y".repeat(30_000) }, &[]).unwrap();
    a.send(&log(12), &[]).unwrap();
    // Nothing goes before the flush.
    assert!(b.recv::<ToMaster>().unwrap().is_none());
    assert!(a.flush().unwrap());
    for i in 0..13 {
        let (m, fds) = b.recv::<ToMaster>().unwrap().unwrap();
        assert_eq!(m, log(i));
        assert_eq!(fds.len(), usize::from(i == 10));
        if i == 11 {
            let (m, _) = b.recv::<ToMaster>().unwrap().unwrap();
            assert_eq!(m, ToMaster::Log { at: 0, level: Level::Info, text: "y".repeat(30_000) });
        }
    }
    assert!(b.recv::<ToMaster>().unwrap().is_none());
}

#[test]
fn corked_messages_take_few_datagrams() {
    let (a, b) = pair().unwrap();
    let mut a = Channel::new(a);
    let b = Channel::new(b);
    a.cork();
    for i in 0..20 {
        a.send(&ToMaster::Log { at: 0, level: Level::Info, text: format!("{i:0>100}") }, &[]).unwrap();
    }
    a.flush().unwrap();
    assert_eq!(datagrams(&b), 1);
    // Uncorked, each message is its own datagram.
    let (a, b) = pair().unwrap();
    let mut a = Channel::new(a);
    let b = Channel::new(b);
    for _ in 0..3 {
        a.send(&FromMaster::Stop, &[]).unwrap();
    }
    assert_eq!(datagrams(&b), 3);
}

#[test]
fn a_cork_holds_a_bounded_number_of_frames() {
    let (mut a, mut b) = channels();
    a.cork();
    for i in 0..CORK_LIMIT {
        a.send(&ToMaster::Log { at: 0, level: Level::Info, text: format!("{i}") }, &[]).unwrap();
    }
    // The limit was reached: sent without a flush.
    assert!(b.recv::<ToMaster>().unwrap().is_some());
}

#[test]
fn bad_coalesced_frames_are_malformed() {
    let whole = postcard::to_allocvec(&FromMaster::Stop).unwrap();
    let multi = |body: &[u8]| {
        let mut f = header(MULTI, 0).to_vec();
        f.extend_from_slice(body);
        f
    };
    let with_len = |n: u16, body: &[u8]| {
        let mut v = n.to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    };
    let mut good = with_len(whole.len() as u16, &whole);
    good.extend(with_len(whole.len() as u16, &whole));
    let cases: Vec<Vec<u8>> =
        vec![multi(&[]), multi(&[0]), multi(&with_len(5, &whole[..1])), multi(&[good.clone(), vec![0]].concat())];
    for f in cases {
        let mut c = Channel::new(pair().unwrap().0);
        assert!(matches!(c.reassemble(&f, true), Err(Error::Malformed(_))), "{f:?}");
    }
    // Descriptors on it, or inside a chunked message: malformed too.
    let mut c = Channel::new(pair().unwrap().0);
    assert!(matches!(c.reassemble(&multi(&good), false), Err(Error::Malformed(_))));
    let mut c = Channel::new(pair().unwrap().0);
    let mut chunk = header(CHUNK, 3).to_vec();
    chunk.extend_from_slice(&[1, 2]);
    assert!(c.reassemble(&chunk, true).unwrap().is_none());
    assert!(matches!(c.reassemble(&multi(&good), true), Err(Error::Malformed(_))));
    // The good one yields both.
    let (a, b) = pair().unwrap();
    let mut b = Channel::new(b);
    send(a.as_raw_fd(), &multi(&good), MsgFlags::empty()).unwrap();
    assert_eq!(b.recv::<FromMaster>().unwrap().unwrap().0, FromMaster::Stop);
    assert_eq!(b.recv::<FromMaster>().unwrap().unwrap().0, FromMaster::Stop);
    assert!(b.recv::<FromMaster>().unwrap().is_none());
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
        let m = ToMaster::Log { at: 0, level: Level::Warning, text };
        a.send(&m, &[]).unwrap();
        let mut got = None;
        for _ in 0..10 { if let Some((x, _)) = b.recv::<ToMaster>().unwrap() { got = Some(x); break; } }
        prop_assert_eq!(got.unwrap(), m);
    }
}

#[test]
fn discarded_frames_are_never_sent() {
    let (mut a, mut b) = channels();
    a.cork();
    a.send(&ToMaster::Log { at: 0, level: Level::Info, text: "dropped".into() }, &[]).unwrap();
    a.discard_unsent();
    assert!(!a.wants_write());
    a.send(&ToMaster::Log { at: 0, level: Level::Info, text: "kept".into() }, &[]).unwrap();
    a.flush().unwrap();
    let (m, _) = b.recv::<ToMaster>().unwrap().expect("a message");
    assert_eq!(m, ToMaster::Log { at: 0, level: Level::Info, text: "kept".into() });
    assert!(b.recv::<ToMaster>().unwrap().is_none(), "nothing else arrived");
}

/// Sends records until the peer's buffer is full and some wait queued.
fn fill(a: &mut Channel) -> usize {
    let mut n = 0;
    while !a.wants_write() {
        a.send(&ToMaster::Log { at: 0, level: Level::Info, text: format!("{n:0>2000}") }, &[]).unwrap();
        n += 1;
        assert!(n < 100_000, "the socket never filled");
    }
    // Some more, queued behind.
    for _ in 0..10 {
        a.send(&ToMaster::Log { at: 0, level: Level::Info, text: format!("{n:0>2000}") }, &[]).unwrap();
        n += 1;
    }
    n
}

#[test]
fn flush_within_waits_for_a_reader_and_delivers_everything() {
    let (mut a, mut b) = channels();
    let sent = fill(&mut a);
    assert!(!a.flush().unwrap(), "a plain flush leaves records queued");
    let reader = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut got = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got < sent && std::time::Instant::now() < deadline {
            match b.recv::<ToMaster>().unwrap() {
                Some((ToMaster::Log { text, .. }, _)) => {
                    assert_eq!(text, format!("{got:0>2000}"), "in order");
                    got += 1;
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        got
    });
    assert!(a.flush_within(std::time::Duration::from_secs(10)).unwrap());
    assert!(!a.wants_write());
    assert_eq!(reader.join().unwrap(), sent);
}

#[test]
fn flush_within_gives_up_at_its_timeout() {
    let (mut a, _b) = channels();
    fill(&mut a);
    let t = std::time::Instant::now();
    assert!(!a.flush_within(std::time::Duration::from_millis(300)).unwrap());
    let waited = t.elapsed();
    assert!(waited >= std::time::Duration::from_millis(290), "{waited:?}");
    assert!(waited < std::time::Duration::from_secs(5), "{waited:?}");
    assert!(a.wants_write());
}

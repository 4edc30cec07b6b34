//! TCP sessions under mio's edge-triggered poll (smtpd's, and the smtp
//! client's): what their sockets are polled for, and when a short read
//! shows a socket empty.
//!
//! A session's read turn may end at a short read of a plain connection,
//! instead of spending one more read to hear that the socket would block:
//! later data is a new readiness event. Not when the event reported the
//! peer's end (read on to it), nor urgent data: a TCP read stops short at
//! the urgent mark with more queued. Linux's poll reports urgent data
//! ([`read_interest`]); kqueue cannot, so on the BSDs a read turn always
//! goes on until the socket would block ([`SHORT_READ_DRAINS`]).

use mio::Interest;

/// Whether a short read, on an event that reported neither the peer's end
/// nor urgent data, shows the socket empty.
pub const SHORT_READ_DRAINS: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// What a session's socket is polled for, besides writing: its data, and
/// on Linux its urgent data too.
pub fn read_interest() -> Interest {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return Interest::READABLE | Interest::PRIORITY;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return Interest::READABLE;
}

/// Whether a readiness event asks a session to read until the socket
/// would block: it reported the peer's end or urgent data (or a short read
/// never shows a socket empty here).
pub fn read_on(event: &mio::event::Event) -> bool {
    event.is_read_closed() || event.is_priority() || !SHORT_READ_DRAINS
}

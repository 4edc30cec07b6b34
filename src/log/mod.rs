//! Logging. Children send bounded records to master over their channel;
//! master writes them to syslog (facility from the configuration, program
//! name `mta/<role>`, reconnecting when syslogd restarts) or, in the
//! foreground, to stderr. [`sanitize`] is the one place every diagnostic
//! is made printable and bounded.
//!
//! Trusts: nothing; record text may come from a compromised child.

use std::io::Write;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::ipc::Channel;
use crate::ipc::msg::{Level, ToMaster};

/// Make `text` safe for a log line: control characters, backslashes and
/// bytes outside printable ASCII are escaped, and the result is cut to at
/// most `max` bytes (marked with `...` when cut).
pub fn sanitize(text: &str, max: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len().min(max));
    let limit = max.saturating_sub(3);
    // Each character's form, built here without an allocation of its own.
    let mut piece = String::with_capacity(16);
    for c in text.chars() {
        piece.clear();
        match c {
            '\\' => piece.push_str("\\\\"),
            ' '..='~' => piece.push(c),
            '\t' => piece.push_str("\\t"),
            '\n' => piece.push_str("\\n"),
            '\r' => piece.push_str("\\r"),
            c if (c as u32) < 0x80 => {
                let _ = write!(piece, "\\x{:02x}", c as u32);
            }
            c => {
                let mut b = [0u8; 4];
                for x in c.encode_utf8(&mut b).bytes() {
                    let _ = write!(piece, "\\x{x:02x}");
                }
            }
        }
        if out.len() + piece.len() > limit {
            out.push_str("...");
            return out;
        }
        out.push_str(&piece);
    }
    out
}

/// The system's monotonic clock in nanoseconds: the same clock in every
/// process, so master can put records from several in the order they
/// were made (0 if it cannot be read).
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec() as u64),
        Err(_) => 0,
    }
}

/// Where master writes log lines.
pub enum Sink {
    Stderr,
    Syslog(Syslog),
}

/// A syslog connection that reconnects after syslogd restarts, and never
/// blocks master: the socket does not wait for syslogd, and records it
/// has no room for are held (at most [`MAX_HELD`]) and sent, in order,
/// when it takes them again ([`Sink::send_held`]); beyond that they are
/// counted, and the count logged once syslogd catches up.
pub struct Syslog {
    facility: syslog::Facility,
    /// A socket other than the system's (tests).
    path: Option<std::path::PathBuf>,
    logger: Option<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>,
    last_attempt: Option<Instant>,
    held: std::collections::VecDeque<Held>,
    dropped: u64,
}

/// A record syslogd had no room for yet.
struct Held {
    program: String,
    pid: u32,
    level: Level,
    line: String,
}

/// What became of a record handed to syslogd.
#[derive(PartialEq, Eq)]
enum Sent {
    Taken,
    /// Its socket is full: syslogd is behind.
    Busy,
    /// No syslogd (not running, or it failed): the record is lost.
    Lost,
}

const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// Records held at most while syslogd takes none.
pub const MAX_HELD: usize = 10_000;
/// A stream socket to syslogd waits this long at most for room.
const STREAM_WAIT: Duration = Duration::from_millis(200);

impl Syslog {
    pub fn new(facility: &str) -> Syslog {
        Syslog::connected(facility, None)
    }

    /// A logger to the syslog socket at `path` (tests).
    pub fn at(facility: &str, path: &std::path::Path) -> Syslog {
        Syslog::connected(facility, Some(path.to_path_buf()))
    }

    fn connected(facility: &str, path: Option<std::path::PathBuf>) -> Syslog {
        let facility = syslog::Facility::from_str(facility).unwrap_or(syslog::Facility::LOG_MAIL);
        let mut s = Syslog { facility, path, logger: None, last_attempt: None, held: Default::default(), dropped: 0 };
        s.connect();
        s
    }

    /// Log under another facility from now on (records held are kept).
    pub fn set_facility(&mut self, facility: &str) {
        self.facility = syslog::Facility::from_str(facility).unwrap_or(syslog::Facility::LOG_MAIL);
        self.connect();
    }

    fn connect(&mut self) {
        self.last_attempt = Some(Instant::now());
        let f = syslog::Formatter3164 { facility: self.facility, hostname: None, process: String::from("mta"), pid: 0 };
        let logger = match &self.path {
            Some(p) => syslog::unix_custom(f, p),
            None => syslog::unix(f),
        };
        self.logger = logger.ok();
        let set = match self.logger.as_ref().map(|l| &l.backend) {
            Some(syslog::LoggerBackend::Unix(s)) => s.set_nonblocking(true),
            Some(syslog::LoggerBackend::UnixStream(s)) => s.get_ref().set_write_timeout(Some(STREAM_WAIT)),
            _ => Ok(()),
        };
        if set.is_err() {
            self.logger = None;
        }
    }

    fn write(&mut self, program: &str, pid: u32, level: Level, line: &str) {
        if !self.held.is_empty() {
            self.send_held();
        }
        if self.held.is_empty() && self.send(program, pid, level, line) != Sent::Busy {
            return;
        }
        if self.held.len() >= MAX_HELD {
            self.dropped += 1;
            return;
        }
        self.held.push_back(Held { program: program.to_string(), pid, level, line: line.to_string() });
    }

    /// Send what is held, in order, while syslogd takes it; then say how
    /// many records were dropped meanwhile, if any were.
    fn send_held(&mut self) {
        while let Some(h) = self.held.pop_front() {
            if self.send(&h.program, h.pid, h.level, &h.line) == Sent::Busy {
                self.held.push_front(h);
                return;
            }
        }
        if self.dropped > 0 {
            let text = format!(
                "{} log records were dropped: syslogd took none for a while, and {MAX_HELD} were held",
                self.dropped
            );
            if self.send("mta/master", std::process::id(), Level::Warning, &text) != Sent::Busy {
                self.dropped = 0;
            }
        }
    }

    fn send(&mut self, program: &str, pid: u32, level: Level, line: &str) -> Sent {
        for attempt in 0..2 {
            if self.logger.is_none() {
                let waited = self.last_attempt.is_none_or(|t| t.elapsed() >= RECONNECT_PAUSE);
                if attempt == 0 && !waited {
                    return Sent::Lost;
                }
                self.connect();
            }
            let Some(l) = self.logger.as_mut() else { return Sent::Lost };
            l.formatter.process = program.to_string();
            l.formatter.pid = pid;
            // The tag in the text too, as Postfix writes it: log readers
            // (pflogsumm's warnings, logwatch) match on it, not on the
            // priority.
            let r = match level {
                Level::Error => l.err(format!("{}{line}", tag(level))),
                Level::Warning => l.warning(format!("{}{line}", tag(level))),
                Level::Info => l.info(line),
                Level::Debug => l.debug(line),
            };
            // (A stream socket's record may be half written: it starts
            // again on a new connection.)
            let datagram = matches!(l.backend, syslog::LoggerBackend::Unix(_));
            match r {
                Ok(()) => return Sent::Taken,
                Err(syslog::Error::Write(e) | syslog::Error::Io(e))
                    if datagram && e.kind() == std::io::ErrorKind::WouldBlock =>
                {
                    return Sent::Busy;
                }
                Err(_) => self.logger = None,
            }
        }
        Sent::Lost
    }
}

/// What a record's text begins with for its level, as Postfix's do.
fn tag(level: Level) -> &'static str {
    match level {
        Level::Error => "error: ",
        Level::Warning => "warning: ",
        Level::Info | Level::Debug => "",
    }
}

impl Sink {
    /// Write one record from `role`'s process `pid`.
    pub fn write(&mut self, role: &str, pid: u32, level: Level, text: &str, max: usize) {
        let line = sanitize(text, max);
        let program = format!("mta/{role}");
        match self {
            Sink::Stderr => {
                let _ = writeln!(std::io::stderr(), "{program}[{pid}]: {}{line}", tag(level));
            }
            Sink::Syslog(s) => s.write(&program, pid, level, &line),
        }
    }

    /// Records wait for syslogd ([`Syslog`]).
    pub fn holding(&self) -> bool {
        matches!(self, Sink::Syslog(s) if !s.held.is_empty() || s.dropped > 0)
    }

    /// Send what waits for syslogd, as far as it takes it now.
    pub fn send_held(&mut self) {
        if let Sink::Syslog(s) = self {
            s.send_held();
        }
    }

    /// Before master exits: give syslogd up to `wait` to take what is held.
    pub fn drain_held(&mut self, wait: Duration) {
        let end = Instant::now() + wait;
        while self.holding() && Instant::now() < end {
            self.send_held();
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A child's logger: records go to master over the master channel.
pub struct ChildLog {
    max: usize,
    verbose: bool,
}

impl ChildLog {
    pub fn new(max: usize, verbose: bool) -> ChildLog {
        ChildLog { max, verbose }
    }

    pub fn log(&self, chan: &mut Channel, level: Level, text: &str) {
        if level == Level::Debug && !self.verbose {
            return;
        }
        let text = sanitize(text, self.max);
        if chan.send(&ToMaster::Log { at: monotonic_ns(), level, text: text.clone() }, &[]).is_err() {
            let _ = writeln!(std::io::stderr(), "{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A syslogd that reads nothing for a while: master's writes must not
    /// wait for it; what it has no room for is held and sent in order
    /// once it reads again, and what was beyond the hold is counted.
    #[test]
    fn a_stalled_syslogd_never_blocks_and_loses_only_what_is_counted() {
        let path = std::env::temp_dir().join(format!("mta-log-stalled-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let syslogd = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        let mut sink = Sink::Syslog(Syslog::at("mail", &path));
        let n = MAX_HELD * 2;
        let (done, finished) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            for i in 0..n {
                sink.write("smtpd", 7, Level::Info, &format!("record {i}"), 200);
            }
            done.send(()).expect("send");
            sink
        });
        finished.recv_timeout(Duration::from_secs(20)).expect("the writes waited for syslogd");
        let mut sink = writer.join().expect("writer");
        assert!(sink.holding());
        syslogd.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            sink.send_held();
            match syslogd.recv(&mut buf) {
                Ok(k) => got.push(String::from_utf8_lossy(&buf[..k]).to_string()),
                Err(_) if !sink.holding() => break,
                Err(_) => {}
            }
        }
        let _ = std::fs::remove_file(&path);
        assert!(!sink.holding(), "records still held after 30 s");
        let notice = got.pop().expect("records");
        let numbers: Vec<usize> =
            got.iter().map(|l| l.rsplit_once("record ").expect("a record").1.parse().expect("its number")).collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "out of order");
        // The socket's queue, then the hold: every record up to there.
        assert!(numbers.len() > MAX_HELD, "{} records", numbers.len());
        assert_eq!(numbers, (0..numbers.len()).collect::<Vec<_>>(), "a record lost before the hold was full");
        let dropped = n - numbers.len();
        assert!(
            notice
                .contains(&format!("mta/master[{}]: warning: {dropped} log records were dropped", std::process::id())),
            "{notice}"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(sanitize("a\r\nb\0c\x1b", 100), "a\\r\\nb\\x00c\\x1b");
        assert_eq!(sanitize("back\\slash", 100), "back\\\\slash");
    }

    #[test]
    fn non_ascii_is_escaped_bytewise() {
        assert_eq!(sanitize("é", 100), "\\xc3\\xa9");
    }

    #[test]
    fn long_lines_are_truncated_and_marked() {
        let s = sanitize(&"x".repeat(5000), 100);
        assert_eq!(s.len(), 100);
        assert!(s.ends_with("..."));
        let s = sanitize(&"\n".repeat(5000), 100);
        assert!(s.len() <= 100);
    }

    #[test]
    fn short_lines_untouched() {
        assert_eq!(sanitize("queue 4Xyz: from=<a@b>", 100), "queue 4Xyz: from=<a@b>");
    }
}

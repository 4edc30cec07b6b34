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

/// A syslog connection that reconnects after syslogd restarts.
pub struct Syslog {
    facility: syslog::Facility,
    logger: Option<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>,
    last_attempt: Option<Instant>,
}

const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

impl Syslog {
    pub fn new(facility: &str) -> Syslog {
        let facility = syslog::Facility::from_str(facility).unwrap_or(syslog::Facility::LOG_MAIL);
        let mut s = Syslog { facility, logger: None, last_attempt: None };
        s.connect();
        s
    }

    fn connect(&mut self) {
        self.last_attempt = Some(Instant::now());
        let f = syslog::Formatter3164 { facility: self.facility, hostname: None, process: String::from("mta"), pid: 0 };
        self.logger = syslog::unix(f).ok();
    }

    fn write(&mut self, program: &str, pid: u32, level: Level, line: &str) {
        for attempt in 0..2 {
            if self.logger.is_none() {
                let waited = self.last_attempt.is_none_or(|t| t.elapsed() >= RECONNECT_PAUSE);
                if attempt == 0 && !waited {
                    return;
                }
                self.connect();
            }
            let Some(l) = self.logger.as_mut() else { return };
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
            if r.is_ok() {
                return;
            }
            self.logger = None;
        }
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
    use super::sanitize;

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

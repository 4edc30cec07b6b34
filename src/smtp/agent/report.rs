//! What the agent tells the queue manager and the log about a delivery:
//! a verdict per recipient (status, DSN code, reason) and one log line
//! per recipient in Postfix's form,
//! `ID: to=<a@b>, relay=h[192.0.2.1]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (250 2.0.0 Ok)`,
//! with `tls=VERSION:CIPHER:verified` (or `:untrusted`) after `relay=`
//! when the message went inside TLS.
//!
//! Trusts: reply texts were made printable by the reply parser; the
//! whole line is sanitised again by the logger.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::ipc::msg::{Protocol, RecipientStatus};
use crate::queue::{DoneAction, Time};
use crate::smtp::client::{Disposition, RecipientResult};

/// The server a session talks to, as logs name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relay {
    /// The host name, or a UNIX socket's path.
    pub host: String,
    /// None for a UNIX socket.
    pub addr: Option<SocketAddr>,
    /// Once TLS is up: `TLSv1.3:TLS13_AES_256_GCM_SHA384:verified`.
    pub tls: Option<String>,
}

impl Relay {
    /// `host[address]` (a UNIX socket's path), for "host H said: ...".
    pub fn name(&self) -> String {
        match self.addr {
            Some(a) => format!("{}[{}]", self.host, a.ip()),
            None => self.host.clone(),
        }
    }
}

impl fmt::Display for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(a) => write!(f, "{}[{}]:{}", self.host, a.ip(), a.port()),
            None => f.write_str(&self.host),
        }
    }
}

/// The result for one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub status: RecipientStatus,
    /// `x.y.z`.
    pub dsn: String,
    /// As the log line gives it.
    pub reason: String,
    /// As qmgr records it in the queue file, when that differs from
    /// `reason`: a delivered recipient's with the server that took it,
    /// `host H[A] said: 250 ... (in reply to end of DATA command)`, as a
    /// failure's, so that a success notice names the Remote-MTA and its
    /// reply (RFC 3464 2.3.5, 2.3.6) as a failure notice does.
    pub recorded: Option<String>,
}

impl Verdict {
    /// From the client's result; `relay` names the server, `protocol`
    /// says what it is: an LMTP server delivers (RFC 2033: it has no
    /// queue; Postfix's `lmtp_assume_final = yes`), an SMTP server
    /// relays (RFC 3461 5.2.2).
    pub fn from_result(r: &RecipientResult, relay: &Relay, protocol: Protocol) -> Verdict {
        let action = match protocol {
            Protocol::Lmtp => DoneAction::Delivered,
            Protocol::Smtp => DoneAction::Relayed,
        };
        let status = match r.disposition {
            Disposition::Delivered => RecipientStatus::Delivered { dsn_passed: r.dsn_passed, action },
            Disposition::Deferred => RecipientStatus::Deferred,
            Disposition::Bounced => RecipientStatus::Bounced,
        };
        // Delivered: the server's own words (and in the queue file who
        // said them, when); failed: who said what, when.
        let (reason, recorded) = match r.disposition {
            Disposition::Delivered => (r.reply.to_string(), r.remote.then(|| r.describe(&relay.name()))),
            _ => (r.describe(&relay.name()), None),
        };
        // The class follows the outcome: a reply deferred by policy (a
        // 535 to AUTH, a 5xx under a TLS requirement, a 3xx where none
        // belongs) is 4.y.z, as Postfix logs it.
        let mut dsn = r.reply.status();
        dsn.class = match r.disposition {
            Disposition::Delivered => 2,
            Disposition::Deferred => 4,
            Disposition::Bounced => 5,
        };
        Verdict { status, dsn: dsn.to_string(), reason, recorded }
    }

    /// A temporary failure found locally (no server involved).
    pub fn deferred(dsn: &str, reason: &str) -> Verdict {
        Verdict { status: RecipientStatus::Deferred, dsn: dsn.to_string(), reason: reason.to_string(), recorded: None }
    }

    pub fn bounced(dsn: &str, reason: &str) -> Verdict {
        Verdict { status: RecipientStatus::Bounced, dsn: dsn.to_string(), reason: reason.to_string(), recorded: None }
    }

    /// The reason qmgr records in the queue file.
    pub fn queue_reason(&self) -> &str {
        self.recorded.as_deref().unwrap_or(&self.reason)
    }

    fn status_word(&self) -> &'static str {
        match self.status {
            RecipientStatus::Delivered { .. } => "sent",
            RecipientStatus::Deferred => "deferred",
            RecipientStatus::Bounced => "bounced",
        }
    }
}

/// The times of a delivery, for `delay=` and `delays=a/b/c/d`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delays {
    pub arrival: Time,
    /// When qmgr took the message into its active queue.
    pub active_at: Time,
    /// When this agent received the delivery request.
    pub received: Time,
    /// Connection setup: from the request to the session being ready.
    pub setup: Duration,
    /// Transmission: from the job's start on the session to its end.
    pub transmission: Duration,
}

fn since(later: Time, earlier: Time) -> f64 {
    let l = later.secs as f64 + f64::from(later.micros) / 1e6;
    let e = earlier.secs as f64 + f64::from(earlier.micros) / 1e6;
    (l - e).max(0.0)
}

/// Seconds as Postfix logs them: `0` below 10 ms, two decimals below one
/// second, one below ten, whole seconds above; no trailing zeros.
pub fn seconds(s: f64) -> String {
    if !s.is_finite() || s < 0.01 {
        return String::from("0");
    }
    let text = if s < 1.0 {
        format!("{s:.2}")
    } else if s < 10.0 {
        format!("{s:.1}")
    } else {
        return format!("{s:.0}");
    };
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// One recipient's log line.
pub fn log_line(queue_id: &str, rcpt: &str, relay: Option<&Relay>, now: Time, d: &Delays, v: &Verdict) -> String {
    let tls = relay.and_then(|r| r.tls.as_deref()).map(|t| format!(", tls={t}")).unwrap_or_default();
    let relay = relay.map_or_else(|| String::from("none"), Relay::to_string);
    format!(
        "{queue_id}: to=<{rcpt}>, relay={relay}{tls}, delay={}, delays={}/{}/{}/{}, dsn={}, status={} ({})",
        seconds(since(now, d.arrival)),
        seconds(since(d.active_at, d.arrival)),
        seconds(since(d.received, d.active_at)),
        seconds(d.setup.as_secs_f64()),
        seconds(d.transmission.as_secs_f64()),
        v.dsn,
        v.status_word(),
        v.reason,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_class_follows_the_outcome() {
        use crate::smtp::client::Stage;
        use crate::smtp::reply::{Enhanced, Reply};
        let relay = Relay { host: "mx.example.net".into(), addr: Some("192.0.2.1:25".parse().unwrap()), tls: None };
        let result = |disposition, code, e: Option<Enhanced>| RecipientResult {
            disposition,
            stage: Stage::Auth,
            reply: match e {
                Some(e) => Reply::local(code, e, "no"),
                None => Reply::local(code, Enhanced::new(5, 7, 8), "no"),
            },
            remote: true,
            dsn_passed: false,
        };
        // AUTH refused: deferred by policy, so 4.7.8, not 5.7.8.
        let v = Verdict::from_result(
            &result(Disposition::Deferred, 535, Some(Enhanced::new(5, 7, 8))),
            &relay,
            Protocol::Smtp,
        );
        assert_eq!(v.dsn, "4.7.8");
        let v = Verdict::from_result(
            &result(Disposition::Bounced, 550, Some(Enhanced::new(5, 1, 1))),
            &relay,
            Protocol::Smtp,
        );
        assert_eq!(v.dsn, "5.1.1");
        let v = Verdict::from_result(
            &result(Disposition::Deferred, 451, Some(Enhanced::new(4, 3, 0))),
            &relay,
            Protocol::Smtp,
        );
        assert_eq!(v.dsn, "4.3.0");
    }

    #[test]
    fn a_delivery_is_recorded_with_the_server_that_took_it() {
        use crate::smtp::client::Stage;
        use crate::smtp::reply::{Enhanced, Reply};
        let relay = Relay { host: "mx.example.net".into(), addr: Some("192.0.2.1:25".parse().unwrap()), tls: None };
        let r = RecipientResult {
            disposition: Disposition::Delivered,
            stage: Stage::Dot,
            reply: Reply::local(250, Enhanced::new(2, 0, 0), "Ok: queued as X"),
            remote: true,
            dsn_passed: false,
        };
        let v = Verdict::from_result(&r, &relay, Protocol::Smtp);
        // The log keeps Postfix's form; the queue file (and so the success
        // notice: Remote-MTA, Diagnostic-Code: smtp) who said it.
        assert_eq!(v.reason, "250 2.0.0 Ok: queued as X");
        assert_eq!(
            v.queue_reason(),
            "host mx.example.net[192.0.2.1] said: 250 2.0.0 Ok: queued as X (in reply to end of DATA command)"
        );
        let (status, host, diagnostic) = crate::bounce::agent::diagnose(v.queue_reason(), 2);
        assert_eq!((status.to_string(), host.as_deref()), (String::from("2.0.0"), Some("mx.example.net")));
        assert_eq!(diagnostic, crate::bounce::Diagnostic::Smtp(String::from("250 2.0.0 Ok: queued as X")));
        // A failure's reason is the same in both.
        let v = Verdict::deferred("4.3.0", "no route");
        assert_eq!(v.queue_reason(), "no route");
    }

    #[test]
    fn seconds_like_postfix() {
        assert_eq!(seconds(0.0), "0");
        assert_eq!(seconds(0.004), "0");
        assert_eq!(seconds(0.01), "0.01");
        assert_eq!(seconds(0.49), "0.49");
        assert_eq!(seconds(0.5), "0.5");
        assert_eq!(seconds(1.23), "1.2");
        assert_eq!(seconds(3.0), "3");
        assert_eq!(seconds(54.4), "54");
        assert_eq!(seconds(-1.0), "0");
    }

    #[test]
    fn line_format() {
        let mut relay = Relay { host: "mx.example.net".into(), addr: Some("192.0.2.1:25".parse().unwrap()), tls: None };
        let d = Delays {
            arrival: Time { secs: 100, micros: 0 },
            active_at: Time { secs: 100, micros: 100_000 },
            received: Time { secs: 100, micros: 110_000 },
            setup: Duration::from_millis(200),
            transmission: Duration::from_millis(1500),
        };
        let v = Verdict {
            status: RecipientStatus::Delivered { dsn_passed: false, action: DoneAction::Relayed },
            dsn: "2.0.0".into(),
            reason: "250 2.0.0 Ok: queued as X".into(),
            recorded: None,
        };
        let line = log_line("ID1", "a@b.example", Some(&relay), Time { secs: 102, micros: 0 }, &d, &v);
        assert_eq!(
            line,
            "ID1: to=<a@b.example>, relay=mx.example.net[192.0.2.1]:25, delay=2, delays=0.1/0.01/0.2/1.5, \
             dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)"
        );
        relay.tls = Some(String::from("TLSv1.3:TLS13_AES_256_GCM_SHA384:verified"));
        let line = log_line("ID1", "a@b.example", Some(&relay), Time { secs: 102, micros: 0 }, &d, &v);
        assert!(
            line.contains(
                "relay=mx.example.net[192.0.2.1]:25, tls=TLSv1.3:TLS13_AES_256_GCM_SHA384:verified, delay=2, "
            ),
            "{line}"
        );
    }
}

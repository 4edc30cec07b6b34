//! Client names for smtpd: each new session asks the connector (the one
//! process that resolves) for its client's forward-confirmed PTR name,
//! and its greeting waits for the answer, at most
//! `smtpd.reverse_lookup_timeout`; then the client is `unknown`, as it is
//! when `smtpd.reverse_lookups` is off, the connector is not there (not
//! started yet, restarting) or its channel breaks. smtpd's loop never
//! blocks on a lookup: the question goes out, the session sleeps, and the
//! answer, the timeout or the loss of the channel wakes it.
//!
//! Trusts: master. The connector's answers are checked: a name that is
//! not a valid host name is not used (and logged); an answer to a
//! question smtpd did not ask, or no longer waits for, is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mio::Token;

use crate::connector::resolve::valid_hostname;
use crate::ipc::msg::{ConnectorToSmtpd, SmtpdToConnector};
use crate::ipc::{self, Channel};

/// What a client without a name is called.
pub const UNKNOWN: &str = "unknown";

/// A lookup's outcome for one session.
#[derive(Debug, PartialEq, Eq)]
pub struct Named {
    pub token: Token,
    /// The name, or `unknown`.
    pub name: String,
    /// Something to log (a name the connector should not have sent).
    pub warning: Option<String>,
}

impl Named {
    fn unknown(token: Token) -> Named {
        Named { token, name: String::from(UNKNOWN), warning: None }
    }
}

/// The questions in flight and the channel they go on.
pub struct Names {
    chan: Option<Channel>,
    enabled: bool,
    timeout: Duration,
    /// Request number → the session waiting and its deadline.
    pending: HashMap<u64, (Token, Instant)>,
    next: u64,
}

impl Names {
    pub fn new(enabled: bool, timeout: Duration) -> Names {
        Names { chan: None, enabled, timeout, pending: HashMap::new(), next: 1 }
    }

    pub fn channel(&self) -> Option<&Channel> {
        self.chan.as_ref()
    }

    /// A new channel to the connector (it started or restarted); the
    /// questions asked on an earlier one will not be answered: their
    /// sessions go on as `unknown`.
    pub fn set_channel(&mut self, mut chan: Channel) -> Vec<Named> {
        let lost = self.drop_channel();
        let _ = chan.flush();
        self.chan = Some(chan);
        lost
    }

    /// The channel broke or closed: every waiting session is `unknown`.
    pub fn drop_channel(&mut self) -> Vec<Named> {
        self.chan = None;
        self.pending.drain().map(|(_, (token, _))| Named::unknown(token)).collect()
    }

    /// The name of a client known without asking: with lookups on, the
    /// loopback addresses 127.0.0.1 and ::1 are `localhost`, which is what
    /// the connector's resolver answers for them without a query (RFC
    /// 6761); a round trip to the connector per local connection would
    /// only delay the greeting.
    pub fn known(&self, ip: IpAddr) -> Option<&'static str> {
        let loopback = match ip {
            IpAddr::V4(a) => a == std::net::Ipv4Addr::LOCALHOST,
            IpAddr::V6(a) => a == std::net::Ipv6Addr::LOCALHOST,
        };
        (self.enabled && loopback).then_some("localhost")
    }

    /// Ask for the name of the client at `ip` for session `token`.
    /// Some(req): the session waits for it; None: it is `unknown` at once
    /// (lookups off, no connector).
    pub fn ask(&mut self, token: Token, ip: IpAddr, now: Instant) -> Option<u64> {
        if !self.enabled {
            return None;
        }
        let chan = self.chan.as_mut()?;
        let req = self.next;
        self.next += 1;
        if chan.send(&SmtpdToConnector::ClientName { req, addr: ip }, &[]).is_err() {
            // Its waiting sessions learn it from the next receive.
            return None;
        }
        self.pending.insert(req, (token, now + self.timeout));
        Some(req)
    }

    /// The session closed before its answer came.
    pub fn cancel(&mut self, req: u64) {
        self.pending.remove(&req);
    }

    /// Send what the channel could not take at once. Err: it broke.
    pub fn flush(&mut self) -> Result<(), ipc::Error> {
        match self.chan.as_mut() {
            Some(c) => c.flush().map(drop),
            None => Ok(()),
        }
    }

    /// The answers that arrived. Err: the connector broke the protocol
    /// (the caller ends smtpd, as for any peer that does). A channel that
    /// closed is dropped, and its waiting sessions are `unknown`.
    pub fn receive(&mut self) -> Result<Vec<Named>, String> {
        let mut named = Vec::new();
        loop {
            let Some(chan) = self.chan.as_mut() else { return Ok(named) };
            match chan.recv::<ConnectorToSmtpd>() {
                Ok(None) => return Ok(named),
                Ok(Some((_, fds))) if !fds.is_empty() => return Err(String::from("the connector sent descriptors")),
                Ok(Some((ConnectorToSmtpd::ClientName { req, name }, _))) => {
                    let Some((token, _)) = self.pending.remove(&req) else { continue };
                    named.push(match name {
                        Some(n) if valid_hostname(&n) => Named { token, name: n, warning: None },
                        Some(n) => Named {
                            token,
                            name: String::from(UNKNOWN),
                            warning: Some(format!(
                                "the connector sent a bad client name {:?}",
                                n.escape_debug().to_string()
                            )),
                        },
                        None => Named::unknown(token),
                    });
                }
                Err(ipc::Error::Closed) => {
                    named.extend(self.drop_channel());
                    return Ok(named);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// The sessions whose wait is over at `now`: `unknown`.
    pub fn expired(&mut self, now: Instant) -> Vec<Named> {
        let late: Vec<u64> = self.pending.iter().filter(|(_, (_, d))| *d <= now).map(|(r, _)| *r).collect();
        late.into_iter().filter_map(|r| self.pending.remove(&r)).map(|(token, _)| Named::unknown(token)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(enabled: bool) -> (Names, Channel) {
        let (ours, theirs) = ipc::pair().expect("pair");
        let mut n = Names::new(enabled, Duration::from_secs(5));
        assert!(n.set_channel(Channel::new(ours)).is_empty());
        (n, Channel::new(theirs))
    }

    fn question(connector: &mut Channel) -> (u64, IpAddr) {
        match connector.recv::<SmtpdToConnector>().expect("recv") {
            Some((SmtpdToConnector::ClientName { req, addr }, _)) => (req, addr),
            None => panic!("no question"),
        }
    }

    fn answer(connector: &mut Channel, req: u64, name: Option<&str>) {
        let msg = ConnectorToSmtpd::ClientName { req, name: name.map(String::from) };
        connector.send(&msg, &[]).expect("send");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn answers_go_to_the_sessions_that_asked() {
        let (mut n, mut connector) = names(true);
        let now = Instant::now();
        let r1 = n.ask(Token(10), ip("192.0.2.1"), now).expect("asked");
        let r2 = n.ask(Token(11), ip("2001:db8::1"), now).expect("asked");
        assert_eq!(question(&mut connector), (r1, ip("192.0.2.1")));
        assert_eq!(question(&mut connector), (r2, ip("2001:db8::1")));
        answer(&mut connector, r2, None);
        answer(&mut connector, r1, Some("mx.example"));
        // An answer nobody waits for (never asked) is dropped.
        answer(&mut connector, 999, Some("stray.example"));
        let got = n.receive().expect("receive");
        assert_eq!(
            got,
            [
                Named { token: Token(11), name: String::from("unknown"), warning: None },
                Named { token: Token(10), name: String::from("mx.example"), warning: None },
            ]
        );
        assert!(n.receive().expect("receive").is_empty());
    }

    #[test]
    fn a_bad_name_is_unknown_and_logged() {
        let (mut n, mut connector) = names(true);
        let r = n.ask(Token(1), ip("192.0.2.1"), Instant::now()).expect("asked");
        answer(&mut connector, r, Some("evil\r\nX-Injected: 1"));
        let got = n.receive().expect("receive");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "unknown");
        assert!(got[0].warning.as_deref().is_some_and(|w| w.contains("bad client name")), "{got:?}");
    }

    #[test]
    fn no_question_when_off_or_without_a_connector() {
        let (mut n, mut connector) = names(false);
        assert_eq!(n.ask(Token(1), ip("192.0.2.1"), Instant::now()), None);
        assert!(connector.recv::<SmtpdToConnector>().expect("recv").is_none());
        let mut n = Names::new(true, Duration::from_secs(5));
        assert_eq!(n.ask(Token(1), ip("192.0.2.1"), Instant::now()), None);
    }

    #[test]
    fn loopback_is_localhost_without_a_question() {
        let (n, mut connector) = names(true);
        assert_eq!(n.known(ip("127.0.0.1")), Some("localhost"));
        assert_eq!(n.known(ip("::1")), Some("localhost"));
        // Other loopback addresses are confirmed like anyone else.
        assert_eq!(n.known(ip("127.0.0.2")), None);
        assert_eq!(n.known(ip("192.0.2.1")), None);
        assert!(connector.recv::<SmtpdToConnector>().unwrap().is_none());
        let (off, _c) = names(false);
        assert_eq!(off.known(ip("127.0.0.1")), None);
    }

    #[test]
    fn the_wait_is_bounded() {
        let (mut n, _connector) = names(true);
        let now = Instant::now();
        n.ask(Token(1), ip("192.0.2.1"), now).expect("asked");
        n.ask(Token(2), ip("192.0.2.2"), now + Duration::from_secs(3)).expect("asked");
        assert!(n.expired(now + Duration::from_secs(4)).is_empty());
        assert_eq!(n.expired(now + Duration::from_secs(5)), [Named::unknown(Token(1))]);
        assert_eq!(n.expired(now + Duration::from_secs(9)), [Named::unknown(Token(2))]);
        assert!(n.expired(now + Duration::from_secs(99)).is_empty());
    }

    #[test]
    fn a_cancelled_question_gets_no_answer() {
        let (mut n, mut connector) = names(true);
        let r = n.ask(Token(1), ip("192.0.2.1"), Instant::now()).expect("asked");
        n.cancel(r);
        answer(&mut connector, r, Some("mx.example"));
        assert!(n.receive().expect("receive").is_empty());
    }

    #[test]
    fn a_lost_or_replaced_connector_leaves_no_session_waiting() {
        let (mut n, connector) = names(true);
        n.ask(Token(1), ip("192.0.2.1"), Instant::now()).expect("asked");
        drop(connector);
        assert_eq!(n.receive().expect("receive"), [Named::unknown(Token(1))]);
        assert!(n.channel().is_none());
        assert_eq!(n.ask(Token(2), ip("192.0.2.1"), Instant::now()), None);

        let (mut n, _old) = names(true);
        n.ask(Token(3), ip("192.0.2.1"), Instant::now()).expect("asked");
        let (ours, _new) = ipc::pair().expect("pair");
        assert_eq!(n.set_channel(Channel::new(ours)), [Named::unknown(Token(3))]);
    }

    #[test]
    fn a_connector_that_breaks_the_protocol_is_an_error() {
        let (mut n, mut connector) = names(true);
        // Not a ConnectorToSmtpd: does not decode.
        connector.send(&crate::ipc::msg::FromMaster::Stop, &[]).expect("send");
        assert!(n.receive().is_err());
    }
}

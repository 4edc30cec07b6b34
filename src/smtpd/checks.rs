//! Who may send what: mail for the local domains is accepted from anyone
//! but only for recipients that exist (the local-recipient table) and for
//! postmaster; mail for other domains only from the trusted networks.
//! While the aliases file has no compiled database, the table lacks the
//! alias names, and until master's first listing of the directory users
//! ends, those users: a local name it does not hold then gets a
//! temporary refusal (451 4.3.0, as Postfix's failed table lookup) rather
//! than 550, and the client tries again later.
//! With `local.directory_lookup` on, a local name the table lacks is
//! asked of the name service (through the lookup process: `users`), for
//! the directory users a listing cannot hold: a user it knows is taken,
//! one it does not is refused as above, and when it cannot say, 451.
//! With `local.recipient_check` off, every local name is taken, and local
//! bounces those that are no one's.
//! New transactions are refused while cleanup reports the spool short of
//! space.
//!
//! Trusts: master's table and configuration.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::time::Instant;

use crate::address::Path;
use crate::config::smtp::Network;
use crate::ipc::msg::UserFound;
use crate::smtpd::rate::{Event, Rates};
use crate::smtpd::session::{Checks, Peer, RcptVerdict};
use crate::table::cdb::Table;

/// Largest local-recipient table held in memory.
pub const MAX_TABLE: u64 = 256 << 20;

pub struct Acceptance {
    pub domains: Vec<String>,
    /// This host's addresses: an address literal of one is a local domain.
    pub own_addresses: Vec<std::net::IpAddr>,
    pub networks: Vec<Network>,
    pub recipients: Table,
    /// `local.recipient_delimiter`: `user+ext` is known when `user` is.
    pub delimiter: String,
    /// `local.recipient_check`: off, every local name is taken (local
    /// bounces those that are no one's).
    pub check_local: bool,
    /// The table may lack names (the aliases were never compiled, the
    /// directory users never listed): unknown local names get 451.
    pub incomplete: bool,
    /// `local.directory_lookup`: a local name the table lacks is asked
    /// of the name service.
    pub lookup: bool,
    /// Cleanup's last word on free space.
    pub space_ok: Cell<bool>,
    /// Connections, messages and recipients per client and time unit.
    pub rates: RefCell<Rates>,
}

impl Acceptance {
    /// A local name that is no user or alias, as far as is known: while
    /// the table may lack names, try again later.
    fn unknown_local(&self, m: &crate::address::Mailbox) -> RcptVerdict {
        if self.incomplete {
            return temporary_failure(m);
        }
        RcptVerdict::Reject {
            code: 550,
            enhanced: "5.1.1",
            text: format!("<{m}>: Recipient address rejected: User unknown in local recipient table"),
        }
    }

    fn trusted(&self, peer: &Peer) -> bool {
        peer.address.parse::<IpAddr>().is_ok_and(|ip| self.trusted_ip(ip))
    }

    /// The address is in `networks`.
    pub fn trusted_ip(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// Count `event` from `peer` (not from `networks`): Err(count) past
    /// its rate limit.
    fn count(&self, peer: &Peer, event: Event) -> Result<(), u32> {
        match peer.address.parse::<IpAddr>() {
            Ok(ip) => self.count_ip(ip, event),
            Err(_) => Ok(()),
        }
    }

    /// [`Acceptance::count`] by address (a connection, before its session).
    pub fn count_ip(&self, ip: IpAddr, event: Event) -> Result<(), u32> {
        if !self.rates.borrow().limited(event) || self.trusted_ip(ip) {
            return Ok(());
        }
        self.rates.borrow_mut().count(ip, event, Instant::now())
    }
}

impl Checks for Acceptance {
    fn recipient(&self, peer: &Peer, rcpt: &Path) -> RcptVerdict {
        if self.count(peer, Event::Recipient).is_err() {
            let text = format!("Error: too many recipients from {}", peer.address);
            return RcptVerdict::Reject { code: 450, enhanced: "4.7.1", text };
        }
        let m = match rcpt {
            Path::Postmaster => return RcptVerdict::Accept,
            Path::Null => {
                return RcptVerdict::Reject {
                    code: 553,
                    enhanced: "5.1.3",
                    text: String::from("Error: null recipient"),
                };
            }
            Path::Mailbox(m) => m,
        };
        let domain = m.domain_lower();
        let own = || crate::address::literal_ip(&domain).is_some_and(|ip| self.own_addresses.contains(&ip));
        if self.domains.contains(&domain) || own() {
            // (`"joe smith"` is the alias `joe smith`.)
            let local = crate::address::local_text(&m.local).to_lowercase();
            let base = crate::address::without_extension(&local, &self.delimiter);
            if local != "postmaster" && !crate::address::deliverable_local(base) {
                // Local delivery would bounce it: refused now instead.
                return RcptVerdict::Reject {
                    code: 550,
                    enhanced: "5.1.3",
                    text: format!("<{m}>: Recipient address rejected: not a deliverable local address"),
                };
            }
            if local == "postmaster"
                || !self.check_local
                || self.recipients.contains(local.as_bytes())
                || self.recipients.contains(base.as_bytes())
            {
                return RcptVerdict::Accept;
            }
            if self.lookup && crate::lookup::plausible_user(base) {
                return RcptVerdict::Lookup(base.to_string());
            }
            return self.unknown_local(m);
        }
        if self.trusted(peer) {
            return RcptVerdict::Accept;
        }
        RcptVerdict::Reject { code: 554, enhanced: "5.7.1", text: format!("<{m}>: Relay access denied") }
    }

    fn looked_up(&self, rcpt: &Path, found: UserFound) -> RcptVerdict {
        let Path::Mailbox(m) = rcpt else { return RcptVerdict::Accept };
        match found {
            UserFound::Yes => RcptVerdict::Accept,
            UserFound::No => self.unknown_local(m),
            UserFound::Unavailable => temporary_failure(m),
        }
    }

    fn mail(&self, peer: &Peer) -> RcptVerdict {
        if !self.space_ok.get() {
            return RcptVerdict::Reject {
                code: 452,
                enhanced: "4.3.1",
                text: String::from("Insufficient system storage"),
            };
        }
        if self.count(peer, Event::Message).is_err() {
            let text = format!("Error: too much mail from {}", peer.address);
            return RcptVerdict::Reject { code: 450, enhanced: "4.7.1", text };
        }
        RcptVerdict::Accept
    }
}

fn temporary_failure(m: &crate::address::Mailbox) -> RcptVerdict {
    RcptVerdict::Reject {
        code: 451,
        enhanced: "4.3.0",
        text: format!("<{m}>: Recipient address rejected: Temporary lookup failure"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Mailbox;
    use std::time::Duration;

    fn acceptance() -> Acceptance {
        // One file per call: the tests run in parallel threads.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("mta-checks-{}-{n}", std::process::id()));
        let mut w = cdb2::CDBWriter::create(&path).unwrap();
        w.add(b"alice", b"").unwrap();
        w.add(b"joe smith", b"").unwrap();
        w.finish().unwrap();
        let recipients = Table::from_bytes(std::fs::read(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        Acceptance {
            domains: vec![String::from("example.org")],
            own_addresses: vec!["192.0.2.10".parse().unwrap(), "2001:db8::10".parse().unwrap()],
            networks: vec!["127.0.0.0/8".parse().unwrap()],
            recipients,
            delimiter: String::from("+"),
            check_local: true,
            incomplete: false,
            lookup: false,
            space_ok: Cell::new(true),
            rates: RefCell::new(Rates::new([0; 3], Duration::from_secs(60))),
        }
    }

    fn to(local: &str, domain: &str) -> Path {
        Path::Mailbox(Mailbox { local: local.into(), domain: domain.into() })
    }

    #[test]
    fn local_relay_and_postmaster() {
        let a = acceptance();
        let outside = Peer { address: "203.0.113.5".into(), hostname: "unknown".into() };
        let inside = Peer { address: "127.0.0.1".into(), hostname: "localhost".into() };
        assert_eq!(a.recipient(&outside, &to("Alice", "Example.ORG")), RcptVerdict::Accept);
        assert_eq!(a.recipient(&outside, &to("postmaster", "example.org")), RcptVerdict::Accept);
        assert_eq!(a.recipient(&outside, &Path::Postmaster), RcptVerdict::Accept);
        assert!(matches!(a.recipient(&outside, &to("bob", "example.org")), RcptVerdict::Reject { code: 550, .. }));
        assert!(matches!(a.recipient(&outside, &to("x", "elsewhere.example")), RcptVerdict::Reject { code: 554, .. }));
        assert_eq!(a.recipient(&inside, &to("x", "elsewhere.example")), RcptVerdict::Accept);
        // Trusted clients still may not invent local users.
        assert!(matches!(a.recipient(&inside, &to("bob", "example.org")), RcptVerdict::Reject { code: 550, .. }));
        a.space_ok.set(false);
        assert!(matches!(a.mail(&outside), RcptVerdict::Reject { code: 452, .. }));
    }

    #[test]
    fn a_domain_is_local_however_it_is_written() {
        // An SMTPUTF8 client's U-label, or the A-label, in any case.
        let mut a = acceptance();
        a.domains.push(String::from("xn--bcher-kva.example"));
        let outside = Peer { address: "203.0.113.5".into(), hostname: "unknown".into() };
        for domain in ["bücher.example", "BÜCHER.Example", "XN--BCHER-KVA.example", "example.org."] {
            assert_eq!(a.recipient(&outside, &to("alice", domain)), RcptVerdict::Accept, "{domain}");
        }
    }

    #[test]
    fn an_address_literal_of_this_host_is_a_local_domain() {
        // RFC 1123 5.2.17: from anyone, for the local recipients.
        let a = acceptance();
        let outside = Peer { address: "203.0.113.5".into(), hostname: "unknown".into() };
        for domain in ["[192.0.2.10]", "[IPv6:2001:DB8:0::10]", "[ipv6:::ffff:192.0.2.10]"] {
            assert_eq!(a.recipient(&outside, &to("postmaster", domain)), RcptVerdict::Accept, "{domain}");
            assert_eq!(a.recipient(&outside, &to("alice", domain)), RcptVerdict::Accept, "{domain}");
            let v = a.recipient(&outside, &to("bob", domain));
            assert!(matches!(v, RcptVerdict::Reject { code: 550, enhanced: "5.1.1", .. }), "{domain}: {v:?}");
        }
        // Another address is another host's: relaying.
        let v = a.recipient(&outside, &to("alice", "[192.0.2.11]"));
        assert!(matches!(v, RcptVerdict::Reject { code: 554, .. }), "{v:?}");
    }

    #[test]
    fn message_and_recipient_rates_spare_the_trusted_networks() {
        let a = acceptance();
        *a.rates.borrow_mut() = Rates::new([0, 2, 3], Duration::from_secs(60));
        let outside = Peer { address: "203.0.113.5".into(), hostname: "unknown".into() };
        let inside = Peer { address: "127.0.0.1".into(), hostname: "localhost".into() };
        assert_eq!((a.mail(&outside), a.mail(&outside)), (RcptVerdict::Accept, RcptVerdict::Accept));
        assert_eq!(
            a.mail(&outside),
            RcptVerdict::Reject {
                code: 450,
                enhanced: "4.7.1",
                text: String::from("Error: too much mail from 203.0.113.5")
            }
        );
        for _ in 0..3 {
            assert_eq!(a.recipient(&outside, &to("alice", "example.org")), RcptVerdict::Accept);
        }
        assert!(matches!(
            a.recipient(&outside, &to("alice", "example.org")),
            RcptVerdict::Reject { code: 450, enhanced: "4.7.1", text } if text == "Error: too many recipients from 203.0.113.5"
        ));
        for _ in 0..10 {
            assert_eq!(a.mail(&inside), RcptVerdict::Accept);
            assert_eq!(a.recipient(&inside, &to("alice", "example.org")), RcptVerdict::Accept);
        }
    }

    #[test]
    fn extensions_of_known_users() {
        let a = acceptance();
        let outside = Peer { address: "203.0.113.5".into(), hostname: "unknown".into() };
        assert_eq!(a.recipient(&outside, &to("alice+lists", "example.org")), RcptVerdict::Accept);
        assert!(matches!(
            a.recipient(&outside, &to("bob+lists", "example.org")),
            RcptVerdict::Reject { code: 550, .. }
        ));
        // The delimiter must follow a name.
        assert!(matches!(a.recipient(&outside, &to("+alice", "example.org")), RcptVerdict::Reject { code: 550, .. }));
        // What local delivery would bounce is refused here: in the name
        // (5.1.3), not in the extension (local sets such an extension
        // aside and delivers to the user).
        for bad in ["alice$", "alice/x", "\"a/b\"", "\"a\\\"b\"", "-alice", "a|b+x"] {
            let v = a.recipient(&outside, &to(bad, "example.org"));
            assert!(matches!(v, RcptVerdict::Reject { code: 550, enhanced: "5.1.3", .. }), "{bad}: {v:?}");
        }
        for good in ["alice+x/y", "alice+a|b", "alice+$x", "alice+`x`"] {
            assert_eq!(a.recipient(&outside, &to(good, "example.org")), RcptVerdict::Accept, "{good}");
        }
        // A quoted local part is looked up by what it says: the alias
        // `joe smith` of aliases(5).
        assert_eq!(a.recipient(&outside, &to("\"Joe Smith\"", "example.org")), RcptVerdict::Accept);
        assert!(matches!(
            a.recipient(&outside, &to("\"Joe Smyth\"", "example.org")),
            RcptVerdict::Reject { code: 550, .. }
        ));
        let mut none = acceptance();
        none.delimiter.clear();
        assert!(matches!(
            none.recipient(&outside, &to("alice+x", "example.org")),
            RcptVerdict::Reject { code: 550, .. }
        ));
    }

    #[test]
    fn unknown_names_wait_while_the_aliases_are_not_compiled() {
        let mut a = acceptance();
        a.incomplete = true;
        let outside = Peer { address: "203.0.113.5".into(), hostname: "unknown".into() };
        let inside = Peer { address: "127.0.0.1".into(), hostname: "localhost".into() };
        // Users and postmaster as ever.
        assert_eq!(a.recipient(&outside, &to("alice", "example.org")), RcptVerdict::Accept);
        assert_eq!(a.recipient(&outside, &to("alice+x", "example.org")), RcptVerdict::Accept);
        assert_eq!(a.recipient(&outside, &to("postmaster", "example.org")), RcptVerdict::Accept);
        // Any other local name may be an alias: try again later.
        for peer in [&outside, &inside] {
            assert_eq!(
                a.recipient(peer, &to("staff", "example.org")),
                RcptVerdict::Reject {
                    code: 451,
                    enhanced: "4.3.0",
                    text: String::from("<staff@example.org>: Recipient address rejected: Temporary lookup failure"),
                }
            );
        }
        // Other domains are not the aliases' business.
        assert!(matches!(a.recipient(&outside, &to("x", "elsewhere.example")), RcptVerdict::Reject { code: 554, .. }));
        assert_eq!(a.recipient(&inside, &to("x", "elsewhere.example")), RcptVerdict::Accept);
    }

    #[test]
    fn without_the_recipient_check_every_local_name_is_taken_and_nothing_else_changes() {
        let mut a = acceptance();
        a.check_local = false;
        let outside = Peer { address: "203.0.113.5".into(), hostname: "unknown".into() };
        for local in ["alice", "bob", "bob+lists", "Nobody.At-All"] {
            assert_eq!(a.recipient(&outside, &to(local, "Example.ORG")), RcptVerdict::Accept, "{local}");
        }
        // Even while the table is incomplete: nothing is looked up.
        a.incomplete = true;
        assert_eq!(a.recipient(&outside, &to("staff", "example.org")), RcptVerdict::Accept);
        // Relaying, the null recipient and the spool check are as before.
        assert!(matches!(a.recipient(&outside, &to("x", "elsewhere.example")), RcptVerdict::Reject { code: 554, .. }));
        assert!(matches!(a.recipient(&outside, &Path::Null), RcptVerdict::Reject { code: 553, .. }));
        a.space_ok.set(false);
        assert!(matches!(a.mail(&outside), RcptVerdict::Reject { code: 452, .. }));
    }

    #[test]
    fn with_lookups_a_name_the_table_lacks_is_asked_and_the_answer_decides() {
        let mut a = acceptance();
        a.lookup = true;
        let outside = Peer { address: "203.0.113.5".into(), hostname: "unknown".into() };
        // In the table: no question.
        assert_eq!(a.recipient(&outside, &to("alice", "example.org")), RcptVerdict::Accept);
        // Not in it: the user name (folded, without its extension) is asked.
        assert_eq!(a.recipient(&outside, &to("Dave+lists", "example.org")), RcptVerdict::Lookup("dave".into()));
        // A name no user can have is refused without a question.
        assert!(matches!(a.recipient(&outside, &to("a.b/c", "example.org")), RcptVerdict::Reject { code: 550, .. }));
        // Other domains are not asked about.
        assert!(matches!(a.recipient(&outside, &to("x", "elsewhere.example")), RcptVerdict::Reject { code: 554, .. }));
        let dave = to("dave", "example.org");
        assert_eq!(a.looked_up(&dave, UserFound::Yes), RcptVerdict::Accept);
        assert_eq!(
            a.looked_up(&dave, UserFound::No),
            RcptVerdict::Reject {
                code: 550,
                enhanced: "5.1.1",
                text: String::from(
                    "<dave@example.org>: Recipient address rejected: User unknown in local recipient table"
                ),
            }
        );
        assert!(matches!(a.looked_up(&dave, UserFound::Unavailable), RcptVerdict::Reject { code: 451, .. }));
        // While the table lacks the aliases, "no such user" may still be
        // an alias: try again later.
        a.incomplete = true;
        assert!(matches!(a.looked_up(&dave, UserFound::No), RcptVerdict::Reject { code: 451, .. }));
        assert_eq!(a.looked_up(&dave, UserFound::Yes), RcptVerdict::Accept);
    }
}

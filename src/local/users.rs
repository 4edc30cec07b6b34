//! `local users LIMIT CONFINEMENT`: the names of the users the system's name service
//! lists ([`sandbox::user_names`]: /etc/passwd, and NIS, LDAP, sssd or
//! systemd's user database where nsswitch.conf names them and they can
//! list their users), one a line, written to descriptor 3, for master's
//! local-recipient table (see `master::directory`). master runs it as
//! the mail user, with that descriptor (an unlinked file of its own), no
//! other, and reads the file once it has exited: 0, the whole list is
//! written; 3, it had more than LIMIT names and the first LIMIT are
//! written; anything else, no list (the reason on stderr, which goes to
//! master's log in the foreground only).
//!
//! It lists inside a sandbox ([`policy`]): no program executed, no
//! process started, no id changed, no socket but the AF_UNIX stream
//! sockets of the name services, descriptor 3 for writing only. The file
//! system stays open to it for reading only (the C library reads
//! nsswitch.conf, /etc/passwd and loads the name service modules):
//! nothing is written, made, removed or changed by path. CONFINEMENT is
//! `confined`, or `unconfined` when the configuration lets a child run
//! without its sandbox where it cannot be entered.
//!
//! Trusts: master for the arguments; nothing in the names, which master
//! checks as it checks /etc/passwd's.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};

use sandbox::{Grant, Policy};

use super::child::CHANNEL_FD;

/// The exit status of a list cut at LIMIT names.
pub const EXIT_TRUNCATED: i32 = 3;

/// `local users LIMIT`: never returns.
pub fn main(args: &[String]) -> ! {
    let fail = |why: &str| -> ! {
        eprintln!("local users: {why}");
        std::process::exit(1)
    };
    let [limit, confinement] = args else { fail("usage: local users LIMIT confined|unconfined") };
    let Ok(limit) = limit.parse::<usize>() else { fail("LIMIT is not a number") };
    let out = match sandbox::fds::take_inherited(CHANNEL_FD) {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => fail(&format!("no descriptor 3: {e}")),
    };
    // (Before the sandbox: see `sandbox::OneThread`.)
    let single = match sandbox::one_thread() {
        Ok(s) => s,
        Err(e) => fail(&format!("listing the users: {e}")),
    };
    if let Err(e) = sandbox::enter(&policy(out.as_raw_fd()), super::child::unconfined(confinement)) {
        fail(&format!("cannot enter its sandbox: {e}"));
    }
    let (names, more) = match sandbox::user_names(&single, limit) {
        Ok(x) => x,
        Err(e) => fail(&format!("listing the users: {e}")),
    };
    let mut w = std::io::BufWriter::with_capacity(64 << 10, out);
    for n in &names {
        if let Err(e) = writeln!(w, "{n}") {
            fail(&format!("writing the list: {e}"));
        }
    }
    if let Err(e) = w.flush() {
        fail(&format!("writing the list: {e}"));
    }
    std::process::exit(if more { EXIT_TRUNCATED } else { 0 })
}

/// The listing's sandbox: `out` written, the name services asked.
pub fn policy(out: RawFd) -> Policy {
    let mut p = Policy::new("local users");
    p.grants = vec![Grant::File { fd: out, write: true }];
    p.name_service = true;
    // The name service modules' files, wherever they are; nothing
    // written but the listing (see sandbox::Policy).
    p.read_fs = true;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_may_ask_the_name_services_and_nothing_more() {
        let p = policy(3);
        assert!(p.name_service && p.read_fs && !p.whole_fs);
        assert!(!p.exec && !p.fork && !p.change_uid && !p.socketpairs && !p.locks);
        assert_eq!(p.net, sandbox::Net::None);
        assert_eq!(p.grants, [Grant::File { fd: 3, write: true }]);
        assert!(p.open_paths.is_empty());
    }
}

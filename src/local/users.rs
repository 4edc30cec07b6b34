//! `local users LIMIT`: the names of the users the system's name service
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
//! Trusts: master for the argument; nothing in the names, which master
//! checks as it checks /etc/passwd's.

use std::io::Write;

use super::child::CHANNEL_FD;

/// The exit status of a list cut at LIMIT names.
pub const EXIT_TRUNCATED: i32 = 3;

/// `local users LIMIT`: never returns.
pub fn main(args: &[String]) -> ! {
    let fail = |why: &str| -> ! {
        eprintln!("local users: {why}");
        std::process::exit(1)
    };
    let [limit] = args else { fail("usage: local users LIMIT") };
    let Ok(limit) = limit.parse::<usize>() else { fail("LIMIT is not a number") };
    let out = match sandbox::fds::take_inherited(CHANNEL_FD) {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => fail(&format!("no descriptor 3: {e}")),
    };
    let (names, more) = match sandbox::user_names(limit) {
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

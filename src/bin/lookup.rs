//! The lookup role: answers smtpd whether a local name is a user the
//! system's name service knows.
#![forbid(unsafe_code)]

use mta::roles::Role;

fn main() {
    let mut child = mta::child::start(Role::Lookup);
    let token = child.enter();
    mta::lookup::serve(token, child)
}

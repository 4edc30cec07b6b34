//! The smtp role: the SMTP client delivery agent.
#![forbid(unsafe_code)]

use mta::roles::Role;

fn main() {
    let mut child = mta::child::start(Role::Smtp);
    // rustls' client configuration is built before the sandbox.
    let agent = mta::smtp::agent::prepare(&mut child);
    let token = child.enter();
    mta::smtp::agent::serve(token, child, agent)
}

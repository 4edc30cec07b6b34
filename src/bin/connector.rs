//! The connector role: resolves next hops and opens outbound connections.
#![forbid(unsafe_code)]

use mta::roles::Role;

fn main() {
    let mut child = mta::child::start(Role::Connector);
    // The resolver reads resolv.conf and its runtime is built before the
    // sandbox.
    let resolver = mta::connector::prepare(&mut child);
    let token = child.enter();
    mta::connector::serve(token, child, resolver)
}

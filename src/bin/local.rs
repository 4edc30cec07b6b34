//! The local role: the local delivery agent (root parent), and, run as
//! `local deliver ...` by that parent as a recipient, one mailbox
//! delivery (see mta::local::child).
#![forbid(unsafe_code)]

use mta::roles::Role;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("deliver") {
        mta::local::child::main(&args[2..]);
    }
    let mut child = mta::child::start(Role::Local);
    let prepared = mta::local::agent::prepare(&mut child);
    let token = child.enter();
    mta::local::agent::serve(token, child, prepared)
}

//! The pickup role: takes locally submitted mail from maildrop/ to cleanup.
#![forbid(unsafe_code)]

use mta::roles::Role;

fn main() {
    let mut child = mta::child::start(Role::Pickup);
    // Before the sandbox: on Linux the watch is added by path, which the
    // sandbox no longer allows.
    let watch = mta::pickup::watch_maildrop(&child);
    let token = child.enter();
    mta::pickup::serve(token, child, watch)
}

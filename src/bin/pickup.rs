//! The pickup role: takes locally submitted mail from maildrop/ to cleanup.
#![forbid(unsafe_code)]

use mta::roles::Role;

fn main() {
    let mut child = mta::child::start(Role::Pickup);
    let token = child.enter();
    mta::pickup::serve(token, child)
}

//! The bounce role: writes delivery status notifications.
#![forbid(unsafe_code)]

use mta::roles::Role;

fn main() {
    let mut child = mta::child::start(Role::Bounce);
    let token = child.enter();
    mta::bounce::agent::serve(token, child)
}

//! The control role: serves the control socket for mtactl.
#![forbid(unsafe_code)]

use mta::roles::Role;

fn main() {
    let mut child = mta::child::start(Role::Control);
    let token = child.enter();
    mta::control::serve(token, child)
}

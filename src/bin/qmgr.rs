//! The qmgr role: the queue manager.
#![forbid(unsafe_code)]

use mta::roles::Role;

fn main() {
    let mut child = mta::child::start(Role::Qmgr);
    let token = child.enter();
    mta::qmgr::serve(token, child)
}

//! The qmgr role: the queue manager.
#![forbid(unsafe_code)]

use mta::roles::Role;

fn main() {
    let mut child = mta::child::start(Role::Qmgr);
    // Before the sandbox: on Linux the watch on incoming/ is added by
    // path, which the sandbox no longer allows.
    let watch = mta::qmgr::watch_incoming(&child);
    let token = child.enter();
    mta::qmgr::serve(token, child, watch)
}

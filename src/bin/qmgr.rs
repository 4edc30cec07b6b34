//! The qmgr role: the queue manager.
#![forbid(unsafe_code)]

use mta::roles::Role;

fn main() {
    let mut child = mta::child::start(Role::Qmgr);
    // Before the sandbox: on Linux the watch on incoming/ is added by
    // path, which the sandbox no longer allows.
    let watch = mta::qmgr::watch_incoming(&child);
    // Before the sandbox too: Linux's filter has no getrlimit.
    let kept = mta::qmgr::kept_files_limit();
    let token = child.enter();
    mta::qmgr::serve(token, child, watch, kept)
}

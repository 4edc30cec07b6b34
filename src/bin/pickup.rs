//! The pickup role: takes locally submitted mail from maildrop/ to cleanup.
#![forbid(unsafe_code)]

use mta::roles::Role;

fn main() {
    let mut child = mta::child::start(Role::Pickup);
    // Before the sandbox: on Linux the watch is added by path, which the
    // sandbox no longer allows.
    let watch = mta::pickup::watch_maildrop(&child);
    // A file under postdrop's temporary name from another boot has no
    // writer left (a file under /proc on Linux, a sysctl on the BSDs).
    let boot = sandbox::boot_id();
    if boot.is_none() {
        child.warn("cannot tell this boot from others: a maildrop file whose completion a crash undid waits a day");
    }
    let token = child.enter();
    mta::pickup::serve(token, child, watch, boot)
}

//! The cleanup role: checks messages and commits them to the queue.
#![forbid(unsafe_code)]

use std::os::fd::AsFd;

use mta::queue::{BootId, Journal, JournalDirs, JournalOptions};
use mta::roles::Role;

fn main() {
    let mut child = mta::child::start(Role::Cleanup);
    // Read before the sandbox (a file under /proc on Linux, a sysctl on
    // the BSDs).
    let boot = sandbox::boot_id().as_deref().and_then(BootId::new);
    if boot.is_none() {
        child.warn("cannot tell this boot from others: journal recovery writes again every message it does not find");
    }
    let token = child.enter();
    // The journal is read (and recovered) only inside the sandbox.
    let fds = std::mem::take(&mut child.fds);
    let [journal_dir, incoming, active, deferred, hold] = match <[_; 5]>::try_from(fds) {
        Ok(a) => a,
        Err(_) => child.fatal("expected five directories from master"),
    };
    let elsewhere = [("active", active.as_fd()), ("deferred", deferred.as_fd()), ("hold", hold.as_fd())];
    let dirs = JournalDirs { journal: journal_dir.as_fd(), incoming: incoming.as_fd(), elsewhere: &elsewhere };
    let (journal, recovery) = match Journal::open(
        &dirs,
        0,
        JournalOptions { boot, session: child.config.session, ..JournalOptions::default() },
    ) {
        Ok(j) => j,
        Err(e) => child.fatal(&format!("opening the intake journal: {e}")),
    };
    if !recovery.is_empty() {
        child.info(&format!(
            "journal recovery: {} segments, {} records, {} queue files written again, {} already queued, {} gone since they were written, {} torn tails dropped, {} damaged",
            recovery.segments,
            recovery.records,
            recovery.materialised.len(),
            recovery.present,
            recovery.settled,
            recovery.torn.len(),
            recovery.corrupt.len()
        ));
    }
    // Copies qmgr is to move to corrupt/, and messages not written yet
    // (their journal segments stay; they are tried again).
    for l in recovery.left.iter().chain(&recovery.unwritten) {
        child.warn(&format!("journal recovery: {l}"));
    }
    for d in &recovery.corrupt {
        child.warn(&format!("journal recovery: corrupt: {d}"));
    }
    if !recovery.kept_unsynced.is_empty() {
        child.warn(&format!(
            "journal segments {} kept until the next boot: a sync of their queue files failed, and until then a file \
             can read back whole without being on the disk",
            recovery.kept_unsynced.join(", ")
        ));
    }
    mta::cleanup::serve(token, child, journal, journal_dir, recovery.materialised)
}

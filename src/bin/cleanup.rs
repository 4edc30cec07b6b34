//! The cleanup role: checks messages and commits them to the queue.
#![forbid(unsafe_code)]

use std::os::fd::AsFd;

use mta::queue::{Journal, JournalDirs, JournalOptions};
use mta::roles::Role;

fn main() {
    let mut child = mta::child::start(Role::Cleanup);
    let token = child.enter();
    // The journal is read (and recovered) only inside the sandbox.
    let fds = std::mem::take(&mut child.fds);
    let [journal_dir, incoming, active, deferred, hold] = match <[_; 5]>::try_from(fds) {
        Ok(a) => a,
        Err(_) => child.fatal("expected five directories from master"),
    };
    let elsewhere = [active.as_fd(), deferred.as_fd(), hold.as_fd()];
    let dirs = JournalDirs { journal: journal_dir.as_fd(), incoming: incoming.as_fd(), elsewhere: &elsewhere };
    let (journal, recovery) = match Journal::open(&dirs, 0, JournalOptions::default()) {
        Ok(j) => j,
        Err(e) => child.fatal(&format!("opening the intake journal: {e}")),
    };
    if !recovery.is_empty() {
        child.info(&format!(
            "journal recovery: {} segments, {} records, {} queue files written again, {} already queued, {} torn tails dropped, {} damaged",
            recovery.segments,
            recovery.records,
            recovery.materialised.len(),
            recovery.present,
            recovery.torn.len(),
            recovery.corrupt.len()
        ));
    }
    mta::cleanup::serve(token, child, journal, journal_dir, recovery.materialised)
}

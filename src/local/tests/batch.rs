//! The reports of a batch once its Maildir workers have synced: a
//! recipient is reported delivered only when every sync its delivery
//! waited for succeeded.

use crate::ipc::msg::{RecipientReport, RecipientStatus};
use crate::local::agent::{Outcome, settled};

fn delivered(index: u32) -> RecipientReport {
    let o = Outcome::sent("delivered to maildir");
    RecipientReport { index, status: o.status, dsn: o.dsn, reason: o.reason }
}

#[test]
fn a_failed_sync_defers_the_deliveries_that_waited_for_it_and_no_others() {
    let bounced = RecipientReport {
        index: 3,
        status: RecipientStatus::Bounced,
        dsn: String::from("5.4.6"),
        reason: String::from("mail forwarding loop"),
    };
    let recipients = vec![delivered(0), delivered(1), delivered(2), bounced.clone(), delivered(4)];
    // Worker 0 synced, worker 1 did not; recipient 2 went through both
    // (an alias of two users), 3 bounced for one destination of its
    // list after worker 1 took another (deferred now: the retry gives
    // that one the message), 4 needed no sync (an mbox).
    let depends = vec![vec![0], vec![1], vec![0, 1], vec![1], vec![]];
    let failed = vec![None, Some(Outcome::defer("4.3.0", "fsync new/ in the maildir: EIO"))];
    let out = settled(recipients, &depends, &failed);
    let status: Vec<_> = out.iter().map(|r| (r.index, r.status.clone())).collect();
    let sent = RecipientStatus::Delivered { dsn_passed: false, action: crate::queue::DoneAction::Delivered };
    assert_eq!(
        status,
        vec![
            (0, sent.clone()),
            (1, RecipientStatus::Deferred),
            (2, RecipientStatus::Deferred),
            (3, RecipientStatus::Deferred),
            (4, sent),
        ]
    );
    assert_eq!((out[1].dsn.as_str(), out[1].reason.as_str()), ("4.3.0", "fsync new/ in the maildir: EIO"));
    assert_eq!((out[3].dsn.as_str(), out[3].reason.as_str()), ("4.3.0", "fsync new/ in the maildir: EIO"));
    assert_ne!(out[3], bounced);
    assert_eq!(out[0].reason, "delivered to maildir");
}

#[test]
fn a_batch_whose_syncs_all_succeed_is_reported_as_delivered() {
    let out = settled(vec![delivered(0), delivered(1)], &[vec![0], vec![0, 1]], &[None, None]);
    assert!(out.iter().all(|r| matches!(r.status, RecipientStatus::Delivered { .. })));
}

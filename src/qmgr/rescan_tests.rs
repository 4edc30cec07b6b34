use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::qmgr::scan::tests::{fill, spool};
use crate::queue::QueueIdGen;

fn at(secs: i64) -> Time {
    Time { secs, micros: 0 }
}

/// Date the file of `id` in deferred/ at `secs`.
fn date(d: &Path, id: &QueueId, secs: i64) {
    let p = d.join("deferred").join(store::path(Dir::Deferred, id));
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)).unwrap();
}

fn mtime(d: &Path, id: &QueueId) -> i64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(d.join("deferred").join(store::path(Dir::Deferred, id))).unwrap().mtime()
}

fn files(n: usize) -> Budget {
    Budget { names: usize::MAX, files: n, until: None }
}

/// Turns of `budget` until the scan under way ends: how many, what each
/// found, and how it ended.
fn run(r: &mut Rescans, s: &Store, budget: Budget) -> (usize, Vec<Vec<(QueueId, i64)>>, Ended) {
    let mut per_turn = Vec::new();
    for turns in 1..10_000 {
        let mut found = Vec::new();
        let mut problems = Vec::new();
        let mut b = budget;
        let ended = r.turn(s, &mut b, &mut |id, t| found.push((id, t.secs)), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        per_turn.push(found);
        if let Some(e) = ended {
            return (turns, per_turn, e);
        }
    }
    panic!("the scan never ended");
}

#[test]
fn a_flush_over_many_deferred_files_goes_a_bounded_slice_per_turn_and_makes_each_due() {
    let (d, s) = spool("flushslices");
    let ids = fill(&d, &mut QueueIdGen::new(21), Dir::Deferred, 1500);
    // Most wait for a day; some are due already.
    let now = at(1_900_000_000);
    for (i, id) in ids.iter().enumerate() {
        date(&d, id, if i % 10 == 0 { now.secs - 60 } else { now.secs + 86_400 });
    }
    let mut r = Rescans::default();
    assert_eq!(r.flush(Some((Token(3), 1)), now), Ok(true));
    assert!(r.busy() && r.running() == Some(Kind::Flush(now)));
    // However large deferred/, a turn looks at no more files than its
    // budget: the event loop goes on between the slices.
    let (turns, per_turn, ended) = run(&mut r, &s, files(100));
    assert!(per_turn.iter().all(|t| t.len() <= 100), "a turn over its budget");
    assert!(turns >= 15, "{turns} turns for 1500 files at 100 a turn");
    let found: Vec<(QueueId, i64)> = per_turn.into_iter().flatten().collect();
    assert!(found.iter().all(|&(_, t)| t == now.secs), "every message due now");
    let got: BTreeSet<QueueId> = found.iter().map(|&(id, _)| id).collect();
    assert_eq!(got, ids.iter().copied().collect::<BTreeSet<_>>());
    assert_eq!(ended, Ended { kind: Kind::Flush(now), found: 1500, waiters: vec![(Token(3), 1)] });
    // Dated due now on disk (a restart finds them due); those due before
    // keep their time.
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(mtime(&d, id), if i % 10 == 0 { now.secs - 60 } else { now.secs }, "{i}");
    }
    assert!(!r.busy() && r.start_next(now).is_none(), "nothing waits");
    // The time bound holds too: a turn out of time reads nothing more.
    assert_eq!(r.flush(None, now), Ok(true));
    let mut spent = Budget { names: usize::MAX, files: usize::MAX, until: Some(Instant::now()) };
    assert!(r.turn(&s, &mut spent, &mut |_, _| panic!("read out of time"), &mut Vec::new()).is_none());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn flushes_asked_for_while_one_runs_are_coalesced_into_one_that_follows() {
    let (d, s) = spool("coalesce");
    fill(&d, &mut QueueIdGen::new(22), Dir::Deferred, 300);
    let now = at(1_900_000_000);
    let mut r = Rescans::default();
    assert_eq!(r.flush(Some((Token(3), 1)), now), Ok(true));
    // Under way: a slice read.
    assert!(r.turn(&s, &mut files(50), &mut |_, _| {}, &mut Vec::new()).is_none());
    // `sendmail -q` in a loop: each waits, none starts a scan of its own.
    for id in 2..=40 {
        assert_eq!(r.flush(Some((Token(3), id)), at(now.secs + id as i64)), Ok(false));
    }
    // An index asked for meanwhile waits as well.
    assert!(!r.index());
    let (_, _, first) = run(&mut r, &s, files(50));
    assert_eq!(first.waiters, vec![(Token(3), 1)], "the first answers its own request alone");
    // One flush follows for all of them (it may find messages deferred
    // after the first passed them), then the index.
    let later = at(now.secs + 100);
    assert_eq!(r.start_next(later), Some(Kind::Flush(later)));
    assert_eq!(r.start_next(later), None, "one at a time");
    let (_, _, second) = run(&mut r, &s, files(usize::MAX));
    assert_eq!(second.kind, Kind::Flush(later));
    assert_eq!(second.found, 300);
    assert_eq!(second.waiters, (2..=40).map(|id| (Token(3), id)).collect::<Vec<_>>());
    assert_eq!(r.start_next(later), Some(Kind::Index));
    let (_, _, third) = run(&mut r, &s, files(usize::MAX));
    assert_eq!((third.kind, third.found, third.waiters.len()), (Kind::Index, 300, 0));
    assert_eq!(r.start_next(later), None, "two flushes and an index for 40 requests and one index");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn requests_of_a_channel_gone_are_forgotten_and_too_many_are_refused() {
    let (d, s) = spool("waiters");
    let now = at(1_900_000_000);
    let mut r = Rescans::default();
    assert_eq!(r.flush(Some((Token(3), 1)), now), Ok(true));
    assert_eq!(r.flush(Some((Token(4), 1)), now), Ok(false));
    assert_eq!(r.flush(Some((Token(3), 2)), now), Ok(false));
    r.drop_peer(Token(3));
    let (_, _, e) = run(&mut r, &s, files(usize::MAX));
    assert!(e.waiters.is_empty());
    r.start_next(now);
    let (_, _, e) = run(&mut r, &s, files(usize::MAX));
    assert_eq!(e.waiters, vec![(Token(4), 1)]);
    // The waiting requests are bounded (control lets far fewer wait).
    assert_eq!(r.flush(Some((Token(4), 0)), now), Ok(true));
    for id in 1..MAX_WAITING as u64 {
        assert!(r.flush(Some((Token(4), id)), now).is_ok());
    }
    let e = r.flush(Some((Token(4), 99_999)), now).unwrap_err();
    assert!(e.starts_with("busy"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_index_finds_each_message_at_its_time_and_one_out_of_place_moved_home() {
    let (d, s) = spool("index");
    let ids = fill(&d, &mut QueueIdGen::new(23), Dir::Deferred, 40);
    for (i, id) in ids.iter().enumerate() {
        date(&d, id, 1_900_000_000 + i as i64);
    }
    // One at deferred/'s top, where it is never found by its name.
    let top = ids[0];
    std::fs::rename(d.join("deferred").join(store::path(Dir::Deferred, &top)), d.join("deferred").join(top.as_str()))
        .unwrap();
    let mut r = Rescans::default();
    assert!(r.index());
    let mut found = Vec::new();
    let mut problems = Vec::new();
    while r.turn(&s, &mut files(7), &mut |id, t| found.push((id, t.secs)), &mut problems).is_none() {}
    found.sort();
    let mut want: Vec<(QueueId, i64)> = ids.iter().enumerate().map(|(i, id)| (*id, 1_900_000_000 + i as i64)).collect();
    want.sort();
    assert_eq!(found, want);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("not in its subfolder"), "{problems:?}");
    assert!(s.open(Dir::Deferred, &top, false).is_ok());
    std::fs::remove_dir_all(&d).unwrap();
}

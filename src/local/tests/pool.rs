//! The pool of delivery workers: which worker a delivery gets, which are
//! closed, and when.

use std::time::{Duration, Instant};

use crate::local::child::Kind;
use crate::local::pool::{Key, Pool};

fn key(uid: u32, name: &str) -> Key {
    Key {
        uid,
        gid: 8,
        groups: vec![8],
        kind: Kind::Mbox,
        dir: String::from("/var/mail"),
        name: name.to_string(),
        hostname: String::from("mx.example.org"),
        lock_ms: 30_000,
        confinement: "confined",
    }
}

const IDLE: Duration = Duration::from_secs(10);

#[test]
fn a_worker_is_found_by_its_whole_key() {
    let mut p: Pool<u32> = Pool::new(8, IDLE);
    let now = Instant::now();
    let k = key(1001, "bob");
    assert!(p.put(k.clone(), 1, now).is_empty());
    // Anything that fixes the worker's identity or confinement differs:
    // no worker for it.
    let others = [
        Key { uid: 1002, ..k.clone() },
        Key { gid: 1001, groups: vec![1001], ..k.clone() },
        Key { groups: vec![8, 9], ..k.clone() },
        Key { kind: Kind::File, ..k.clone() },
        Key { kind: Kind::Maildir, ..k.clone() },
        Key { dir: String::from("/var/spool/mail"), ..k.clone() },
        Key { name: String::from("alice"), ..k.clone() },
        Key { hostname: String::from("other.example.org"), ..k.clone() },
        Key { lock_ms: 5_000, ..k.clone() },
        Key { confinement: "unconfined", ..k.clone() },
    ];
    for o in &others {
        assert_eq!(p.take(o), None, "{o:?}");
    }
    assert_eq!(p.len(), 1);
    assert_eq!(p.take(&k), Some(1));
    // Taken: out of the pool while it works.
    assert_eq!(p.take(&k), None);
    assert!(p.is_empty());
}

#[test]
fn the_arguments_are_the_key() {
    let k = key(1001, "bob");
    assert_eq!(k.argv(), ["local", "deliver", "mbox", "/var/mail", "bob", "mx.example.org", "30000", "confined"]);
    let m = Key { kind: Kind::Maildir, dir: String::from("/home/bob"), name: String::from("Maildir/"), ..k };
    assert_eq!(m.argv()[2..5], ["maildir", "/home/bob", "Maildir/"]);
}

#[test]
fn a_full_pool_closes_the_least_recently_used() {
    let mut p: Pool<u32> = Pool::new(3, IDLE);
    let t = Instant::now();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        assert!(p.put(key(1, name), i as u32, t + Duration::from_millis(i as u64)).is_empty());
    }
    // "a" is used again: now "b" is the least recently used.
    let a = p.take(&key(1, "a")).unwrap();
    assert!(p.put(key(1, "a"), a, t + Duration::from_millis(10)).is_empty());
    assert_eq!(p.put(key(1, "d"), 3, t + Duration::from_millis(11)), vec![1]);
    assert_eq!(p.len(), 3);
    assert_eq!(p.take(&key(1, "b")), None);
    assert_eq!(p.put(key(1, "e"), 4, t + Duration::from_millis(12)), vec![2]);
    let mut left = p.drain();
    left.sort();
    assert_eq!(left, vec![0, 3, 4]);
    assert!(p.is_empty());
}

#[test]
fn no_more_than_the_limit_ever_waits() {
    let mut p: Pool<u32> = Pool::new(4, IDLE);
    let t = Instant::now();
    let mut closed = 0;
    for i in 0..100u32 {
        closed += p.put(key(i % 7, "box"), i, t + Duration::from_millis(u64::from(i))).len();
        assert!(p.len() <= 4);
    }
    assert_eq!(closed + p.len(), 100);
}

#[test]
fn a_second_worker_for_a_key_replaces_the_first() {
    let mut p: Pool<u32> = Pool::new(4, IDLE);
    let t = Instant::now();
    assert!(p.put(key(1, "bob"), 1, t).is_empty());
    assert_eq!(p.put(key(1, "bob"), 2, t), vec![1]);
    assert_eq!(p.take(&key(1, "bob")), Some(2));
}

#[test]
fn with_no_room_every_worker_is_closed_after_its_job() {
    let mut p: Pool<u32> = Pool::new(0, IDLE);
    let t = Instant::now();
    assert_eq!(p.put(key(1, "bob"), 7, t), vec![7]);
    assert!(p.is_empty());
    assert_eq!(p.next_expiry(), None);
    assert_eq!(p.take(&key(1, "bob")), None);
}

#[test]
fn idle_workers_expire() {
    let mut p: Pool<u32> = Pool::new(8, IDLE);
    let t = Instant::now();
    assert_eq!(p.next_expiry(), None);
    assert!(p.put(key(1, "a"), 1, t).is_empty());
    assert!(p.put(key(1, "b"), 2, t + Duration::from_secs(4)).is_empty());
    assert_eq!(p.next_expiry(), Some(t + IDLE));
    assert!(p.expire(t + Duration::from_secs(9)).is_empty());
    assert_eq!(p.expire(t + IDLE), vec![1]);
    assert_eq!(p.next_expiry(), Some(t + Duration::from_secs(14)));
    // Used again, it starts its idle time afresh.
    let b = p.take(&key(1, "b")).unwrap();
    assert!(p.put(key(1, "b"), b, t + Duration::from_secs(12)).is_empty());
    assert!(p.expire(t + Duration::from_secs(21)).is_empty());
    assert_eq!(p.expire(t + Duration::from_secs(22)), vec![2]);
    assert!(p.is_empty());
    assert_eq!(p.next_expiry(), None);
}

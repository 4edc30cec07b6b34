use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::*;
use crate::queue::{Envelope, QueueFile, QueueIdGen, Recipient, State, Status};

/// A spool of the five queue directories (deferred/ with its subfolders)
/// and its store.
pub fn spool(tag: &str) -> (PathBuf, Store) {
    let d = std::env::temp_dir().join(format!("mta-qmgr-scan-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let mut fds = Vec::new();
    for sub in crate::roles::QUEUE_DIRS {
        std::fs::create_dir_all(d.join(sub)).unwrap();
        fds.push(OwnedFd::from(File::open(d.join(sub)).unwrap()));
    }
    let s = Store::new(fds).unwrap();
    s.prepare().unwrap();
    (d, s)
}

/// A queue file with `recipients` (address, reason) in `dir` (its
/// hashed subfolder for deferred/).
pub fn write(spool: &Path, dir: Dir, id: QueueId, recipients: &[(String, String)]) {
    let q = QueueFile {
        id,
        envelope: Envelope { sender: String::from("a@example.org"), size: 21, ..Envelope::default() },
        recipients: recipients
            .iter()
            .map(|(a, why)| Recipient {
                address: a.clone(),
                status: Status { state: State::Deferred, reason: why.clone(), ..Status::default() },
                ..Recipient::default()
            })
            .collect(),
        content: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
    };
    let path = spool.join(dir.name()).join(store::path(dir, &id));
    std::fs::write(path, q.encode().unwrap()).unwrap();
}

/// `n` one-recipient messages in `dir`.
pub fn fill(spool: &Path, ids_gen: &mut QueueIdGen, dir: Dir, n: usize) -> Vec<QueueId> {
    let rcpt = [(String::from("b@example.org"), String::from("451 try later"))];
    (0..n)
        .map(|_| {
            let id = ids_gen.next_id();
            write(spool, dir, id, &rcpt);
            id
        })
        .collect()
}

fn unlimited() -> Budget {
    Budget { names: usize::MAX, files: usize::MAX, until: None }
}

/// Everything a listing gives, read in one go.
fn list_all(store: &Store, fix: bool) -> (Vec<QueueEntry>, Vec<String>) {
    let mut c = Cursor::new(fix);
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    loop {
        let p = c.advance(store, &mut unlimited()).unwrap();
        problems.extend(c.take_problems());
        entries.extend(p.entries);
        if p.last {
            assert!(c.finished() && c.advance(store, &mut unlimited()).is_none());
            return (entries, problems);
        }
    }
}

#[test]
fn a_listing_goes_a_slice_at_a_time_in_bounded_parts_and_misses_nothing() {
    let (d, s) = spool("slices");
    let mut ids_gen = QueueIdGen::new(3);
    let mut made: BTreeMap<String, &str> = BTreeMap::new();
    for (dir, n) in [(Dir::Incoming, 600), (Dir::Active, 34), (Dir::Deferred, 400), (Dir::Hold, 200)] {
        for id in fill(&d, &mut ids_gen, dir, n) {
            made.insert(id.to_string(), dir.name());
        }
    }
    let mut c = Cursor::new(true);
    let mut parts = Vec::new();
    let mut short = 0;
    let mut calls = 0;
    while !c.finished() {
        calls += 1;
        assert!(calls < 10_000, "the listing does not end");
        let mut b = Budget { names: 10_000, files: 50, until: None };
        match c.advance(&s, &mut b) {
            Some(p) => parts.push(p),
            None => {
                assert_eq!(b.files, 0, "it stopped before its budget ran out");
                short += 1;
            }
        }
    }
    assert!(c.take_problems().is_empty());
    // 1,234 files at 50 a call: 25 calls at least, most of them running
    // out of budget before a part is full.
    assert!(calls >= 25 && short >= 20, "{calls} calls, {short} short");
    let sizes: Vec<usize> = parts.iter().map(|p| p.entries.len()).collect();
    assert_eq!(sizes, [500, 500, 234], "full parts, then the rest with the end");
    assert!(parts.iter().rev().skip(1).all(|p| !p.last) && parts.last().unwrap().last);
    let entries: Vec<QueueEntry> = parts.into_iter().flat_map(|p| p.entries).collect();
    let got: BTreeMap<String, &str> = entries
        .iter()
        .map(|e| (e.id.clone(), *made.get(e.id.as_str()).filter(|q| **q == e.queue).expect("listed where it is")))
        .collect();
    assert_eq!(got.len(), entries.len(), "a message listed twice");
    assert_eq!(got, made);
    // The directories in order: incoming, active, deferred, hold.
    let rank = |q: &str| ["incoming", "active", "deferred", "hold"].iter().position(|x| *x == q).unwrap();
    assert!(entries.windows(2).all(|w| rank(&w[0].queue) <= rank(&w[1].queue)));
    assert_eq!(
        entries[0].recipients,
        [(String::from("b@example.org"), String::from("deferred"), "451 try later".into())]
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_part_is_cut_by_size_too() {
    let (d, s) = spool("bytes");
    let mut ids_gen = QueueIdGen::new(4);
    // About 5 KB an entry: a part holds a dozen or so, not 500.
    let rcpts: Vec<(String, String)> =
        (0..10).map(|i| (format!("{}{i}@example.org", "r".repeat(40)), "x".repeat(450))).collect();
    for _ in 0..40 {
        write(&d, Dir::Hold, ids_gen.next_id(), &rcpts);
    }
    let mut c = Cursor::new(true);
    let mut n = 0;
    loop {
        let p = c.advance(&s, &mut unlimited()).unwrap();
        n += p.entries.len();
        let bytes: usize = p.entries.iter().map(|e| postcard::to_allocvec(e).unwrap().len()).sum();
        assert!(bytes < PART_BYTES + MAX_ENTRY_BYTES, "{bytes}");
        if !p.last {
            assert!(p.entries.len() < 20, "a part of {} large entries", p.entries.len());
        }
        if p.last {
            break;
        }
    }
    assert_eq!(n, 40);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_file_gone_between_its_name_and_its_reading_is_skipped_without_a_word() {
    let (d, s) = spool("vanish");
    let mut ids_gen = QueueIdGen::new(5);
    let ids = fill(&d, &mut ids_gen, Dir::Hold, 100);
    let mut c = Cursor::new(true);
    // The directory is open and 10 files are read.
    assert!(c.advance(&s, &mut Budget { names: 1000, files: 10, until: None }).is_none());
    // Then half of the messages go (delivered, deleted).
    let removed: BTreeSet<String> = ids.iter().step_by(2).map(ToString::to_string).collect();
    for id in &removed {
        std::fs::remove_file(d.join("hold").join(id)).unwrap();
    }
    let p = c.advance(&s, &mut unlimited()).unwrap();
    assert!(p.last);
    assert!(c.take_problems().is_empty(), "a vanished file is no problem");
    let listed: BTreeSet<String> = p.entries.iter().map(|e| e.id.clone()).collect();
    let kept: BTreeSet<String> = ids.iter().map(ToString::to_string).filter(|i| !removed.contains(i)).collect();
    assert!(listed.is_superset(&kept), "a message still there is missing");
    // Of those removed, only ones read before they went.
    assert!(listed.difference(&kept).count() <= 10, "{} of the removed listed", listed.difference(&kept).count());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn what_is_no_queue_file_is_moved_to_corrupt_or_only_reported() {
    use std::os::unix::fs::PermissionsExt;
    for fix in [true, false] {
        let (d, s) = spool(if fix { "fix" } else { "report" });
        let mut ids_gen = QueueIdGen::new(6);
        let good = fill(&d, &mut ids_gen, Dir::Incoming, 3);
        let bad = ids_gen.next_id();
        std::fs::write(d.join("incoming").join(bad.as_str()), b"MTAQ no queue file").unwrap();
        std::fs::write(d.join("hold").join("junk"), b"x").unwrap();
        // Being written by cleanup (mode 0200): left alone, unlisted.
        let writing = fill(&d, &mut ids_gen, Dir::Incoming, 1)[0];
        let w = d.join("incoming").join(writing.as_str());
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o200)).unwrap();
        // Cleanup's temporary files and deferred/'s subfolders are no junk.
        std::fs::write(d.join("incoming").join(".tmp.1"), b"x").unwrap();
        let (entries, problems) = list_all(&s, fix);
        let ids: BTreeSet<String> = entries.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids, good.iter().map(ToString::to_string).collect());
        assert_eq!(problems.len(), 2, "{problems:?}");
        let bad_line = problems.iter().find(|p| p.contains(bad.as_str())).unwrap();
        let junk_line = problems.iter().find(|p| p.starts_with("hold/junk: not a queue file name")).unwrap();
        let in_corrupt = std::fs::read_dir(d.join("corrupt")).unwrap().count();
        if fix {
            assert!(bad_line.contains("moved to corrupt/") && junk_line.contains("moved to corrupt/"), "{problems:?}");
            assert_eq!(in_corrupt, 2);
            assert!(!d.join("hold").join("junk").exists());
        } else {
            assert!(!bad_line.contains("moved") && !junk_line.contains("moved"), "{problems:?}");
            assert_eq!(in_corrupt, 0);
            assert!(d.join("hold").join("junk").exists() && d.join("incoming").join(bad.as_str()).exists());
        }
        assert!(w.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn read_directly_streams_every_entry_and_stops_when_asked() {
    let (d, s) = spool("direct");
    let mut ids_gen = QueueIdGen::new(7);
    fill(&d, &mut ids_gen, Dir::Deferred, 700);
    fill(&d, &mut ids_gen, Dir::Hold, 5);
    std::fs::write(d.join("deferred").join("junk"), b"x").unwrap();
    let mut n = 0;
    let mut problems = Vec::new();
    read_directly(
        &s,
        &mut |_| {
            n += 1;
            true
        },
        &mut |p| problems.push(p.to_string()),
    );
    assert_eq!(n, 705);
    assert_eq!(problems, ["deferred/junk: not a queue file name"]);
    assert!(d.join("deferred").join("junk").exists(), "reading directly moves nothing");
    let mut m = 0;
    read_directly(
        &s,
        &mut |_| {
            m += 1;
            m < 10
        },
        &mut |_| {},
    );
    assert_eq!(m, 10);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_entry_with_very_many_recipients_is_bounded_and_says_how_many_it_left_out() {
    let (d, s) = spool("bounded");
    let id = QueueIdGen::new(8).next_id();
    let rcpts: Vec<(String, String)> =
        (0..2000).map(|i| (format!("{}{i}@example.org", "r".repeat(900)), "y".repeat(512))).collect();
    write(&d, Dir::Hold, id, &rcpts);
    let q = read(&s, Dir::Hold, &id).unwrap();
    let (e, estimate) = bounded_entry(Dir::Hold, &q);
    assert!(e.omitted > 0 && e.recipients.len() + e.omitted as usize == 2000, "{} {}", e.recipients.len(), e.omitted);
    let encoded = postcard::to_allocvec(&e).unwrap().len();
    assert!(encoded <= estimate && estimate <= MAX_ENTRY_BYTES, "{encoded} {estimate}");
    // The recipients kept are the first ones, in order.
    assert_eq!(e.recipients[0].0, rcpts[0].0);
    assert_eq!(e.recipients.last().unwrap().0, rcpts[e.recipients.len() - 1].0);
    // A small one is whole, and its estimate is no less than its encoding.
    let small = QueueIdGen::new(9).next_id();
    write(&d, Dir::Hold, small, &rcpts[..3]);
    let (e, estimate) = bounded_entry(Dir::Hold, &read(&s, Dir::Hold, &small).unwrap());
    assert_eq!((e.recipients.len(), e.omitted), (3, 0));
    assert!(postcard::to_allocvec(&e).unwrap().len() <= estimate);
    let q = read(&s, Dir::Hold, &small).unwrap();
    let mut whole = heading(Dir::Hold, &q);
    whole.recipients = q
        .recipients
        .iter()
        .map(|r| (r.address.clone(), state_name(r.status.state).to_string(), r.status.reason.clone()))
        .collect();
    assert_eq!(e, whole);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Memory files by queue ID, as qmgr holds them.
struct Held(std::collections::HashMap<QueueId, File>);

impl InMemory for Held {
    fn file(&self, id: &QueueId) -> Option<&File> {
        self.0.get(id)
    }
}

#[test]
fn a_listing_begins_with_the_messages_in_memory_and_lists_each_once() {
    let (d, s) = spool("memory");
    let mut ids_gen = QueueIdGen::new(5);
    let on_disk = fill(&d, &mut ids_gen, Dir::Deferred, 3);
    // Three messages in memory: one also has its file in incoming/ by
    // now, and one is gone (delivered) before the cursor reaches it.
    let (kept, also_file, gone) = (ids_gen.next_id(), ids_gen.next_id(), ids_gen.next_id());
    let mut held = std::collections::HashMap::new();
    for id in [kept, also_file] {
        let q = QueueFile {
            id,
            envelope: Envelope { sender: String::from("m@example.org"), size: 21, ..Envelope::default() },
            recipients: vec![Recipient { address: String::from("r@example.net"), ..Recipient::default() }],
            content: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
        };
        let bytes = q.encode().unwrap();
        let file = if crate::queue::disk::HAS_MEMORY_FILES {
            File::from(crate::queue::disk::memory_file(&bytes).unwrap())
        } else {
            let p = d.join(format!("memory-{id}"));
            std::fs::write(&p, &bytes).unwrap();
            File::open(p).unwrap()
        };
        held.insert(id, file);
    }
    write(&d, Dir::Incoming, also_file, &[(String::from("r@example.net"), String::new())]);
    let held = Held(held);
    let mut c = Cursor::new(true).with_memory(vec![kept, gone, also_file]);
    let mut entries = Vec::new();
    loop {
        let p = c.advance_with(&s, &mut unlimited(), &held).unwrap();
        assert!(c.take_problems().is_empty());
        entries.extend(p.entries);
        if p.last {
            break;
        }
    }
    let listed: Vec<(String, &str, &str)> =
        entries.iter().map(|e| (e.id.clone(), e.queue.as_str(), e.sender.as_str())).collect();
    // The two in memory first, from their memory files; the copy in
    // incoming/ is not listed again; the one gone is not listed at all.
    assert_eq!(
        listed[..2],
        [(kept.to_string(), "incoming", "m@example.org"), (also_file.to_string(), "incoming", "m@example.org")]
    );
    assert_eq!(entries[0].recipients, [(String::from("r@example.net"), String::from("pending"), String::new())]);
    let rest: BTreeSet<String> = listed[2..]
        .iter()
        .map(|(id, q, _)| {
            assert_eq!(*q, "deferred");
            id.clone()
        })
        .collect();
    assert_eq!(rest, on_disk.iter().map(ToString::to_string).collect());
    assert_eq!(entries.len(), 5);
    let _ = std::fs::remove_dir_all(&d);
}

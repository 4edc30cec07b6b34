//! The intake journal: group commit, materialisation, retirement, crash
//! recovery, a full disk.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use proptest::prelude::*;

use super::super::journal::{RECORD_HEADER, RECORD_HEADER_V1, SEGMENT_HEADER, record_crc, segment_header};
use super::super::recover::scan;
use super::super::{
    BootId, Journal, JournalDirs, JournalOptions, QueueFile, QueueId, QueueIdGen, Recovery, Ticket, ZeroAhead,
    free_space, read_queue_file,
};
use super::{TempDir, sample};

const INSTANCE: u32 = 5;

/// A spool: journal/, incoming/, active/.
struct Spool {
    dir: TempDir,
    journal: OwnedFd,
    incoming: OwnedFd,
    active: OwnedFd,
}

impl Spool {
    fn new(tag: &str) -> Spool {
        let dir = TempDir::new(tag);
        Spool { journal: dir.sub("journal"), incoming: dir.sub("incoming"), active: dir.sub("active"), dir }
    }

    fn open_with(&self, options: JournalOptions) -> (Journal, Recovery) {
        let elsewhere = [("active", self.active.as_fd())];
        let dirs =
            JournalDirs { journal: self.journal.as_fd(), incoming: self.incoming.as_fd(), elsewhere: &elsewhere };
        Journal::open(&dirs, INSTANCE, options).expect("open journal")
    }

    fn open(&self) -> (Journal, Recovery) {
        self.open_with(JournalOptions::default())
    }

    fn segments(&self) -> Vec<String> {
        self.dir.names("journal")
    }

    fn read(&self, sub: &str, id: &QueueId) -> QueueFile {
        let f = std::fs::File::open(self.dir.path.join(sub).join(id.as_str())).expect("open queue file");
        read_queue_file(&f).expect("valid queue file")
    }
}

fn ids(v: &[QueueFile]) -> Vec<QueueId> {
    v.iter().map(|q| q.id).collect()
}

#[test]
fn group_commit_then_materialise() {
    let s = Spool::new("commit");
    let (mut j, rec) = s.open();
    assert!(rec.is_empty(), "{rec}");
    let mut idg = QueueIdGen::new(INSTANCE);
    let msgs: Vec<QueueFile> = (0..100).map(|i| sample(&mut idg, 1 + i % 3, 5120)).collect();
    for q in &msgs {
        j.append(q).expect("append");
    }
    assert_eq!(j.uncommitted(), 100);
    let tickets = j.commit().expect("commit");
    assert_eq!(tickets.iter().map(|t| t.id).collect::<Vec<_>>(), ids(&msgs));
    assert!(j.commit().expect("empty commit").is_empty());
    assert_eq!(j.unmaterialised(), 100);
    let mut out = Vec::new();
    j.materialize(&mut out).expect("materialise");
    assert_eq!(out, ids(&msgs));
    for q in &msgs {
        assert_eq!(&s.read("incoming", &q.id), q);
    }
    assert_eq!(s.dir.names("incoming").len(), 100, "no temporary file left");
    let closed = j.close().expect("close");
    assert!(closed.is_empty());
    assert!(s.segments().is_empty(), "a clean close leaves no segment");
    let (_j, rec) = s.open();
    assert_eq!(rec.segments, 0);
}

#[test]
fn crash_after_commit_recovers_exactly_the_committed() {
    let s = Spool::new("crash");
    let (mut j, _) = s.open();
    let mut idg = QueueIdGen::new(INSTANCE);
    let committed: Vec<QueueFile> = (0..5).map(|_| sample(&mut idg, 2, 3000)).collect();
    for q in &committed {
        j.append(q).expect("append");
    }
    j.commit().expect("commit");
    let lost = sample(&mut idg, 1, 100);
    j.append(&lost).expect("append"); // never committed, never acknowledged
    drop(j); // the crash: nothing materialised
    assert!(s.dir.names("incoming").is_empty());

    let (j, rec) = s.open();
    assert_eq!(rec.segments, 1);
    assert_eq!(rec.records, 5);
    assert_eq!(rec.materialised, ids(&committed));
    assert!(rec.corrupt.is_empty() && rec.torn.is_empty(), "{rec}");
    for q in &committed {
        assert_eq!(&s.read("incoming", &q.id), q);
    }
    assert_eq!(s.dir.names("incoming").len(), 5);
    assert_eq!(s.segments().len(), 1, "old segment retired, a new one started");
    drop(j);
    // Recovering again finds nothing new to do.
    let (_j, rec) = s.open();
    assert_eq!((rec.records, rec.materialised.len()), (0, 0));
}

#[test]
fn recovery_skips_files_already_queued_and_replaces_invalid_ones() {
    let s = Spool::new("present");
    let (mut j, _) = s.open();
    let mut idg = QueueIdGen::new(INSTANCE);
    let msgs: Vec<QueueFile> = (0..4).map(|_| sample(&mut idg, 1, 2000)).collect();
    for q in &msgs {
        j.append(q).expect("append");
    }
    j.commit().expect("commit");
    let mut out = Vec::new();
    j.materialize(&mut out).expect("materialise");
    drop(j); // crash before the segment was retired
    let p = |sub: &str, q: &QueueFile| s.dir.path.join(sub).join(q.id.as_str());
    // qmgr had moved #1 to active/; #2 never reached the disk whole; #3
    // was delivered and removed (it will be queued again: a duplicate,
    // never a loss).
    std::fs::rename(p("incoming", &msgs[1]), p("active", &msgs[1])).expect("move");
    OpenOptions::new().write(true).open(p("incoming", &msgs[2])).expect("open").set_len(100).expect("truncate");
    std::fs::remove_file(p("incoming", &msgs[3])).expect("remove");
    std::fs::write(s.dir.path.join("incoming").join(format!(".tmp.{}", msgs[0].id)), b"half").expect("temp");
    let other = QueueId::new(msgs[0].id.time(), INSTANCE + 1, 1);
    std::fs::write(s.dir.path.join("incoming").join(format!(".tmp.{other}")), b"other's").expect("temp");

    let (_j, rec) = s.open();
    assert_eq!(rec.records, 4);
    assert_eq!(rec.present, 2);
    assert_eq!(rec.replaced, vec![msgs[2].id]);
    assert_eq!(rec.materialised, vec![msgs[2].id, msgs[3].id]);
    assert_eq!(rec.temps_removed, 1, "only this instance's temporary files");
    assert_eq!(&s.read("incoming", &msgs[2].id), &msgs[2]);
    assert_eq!(&s.read("active", &msgs[1].id), &msgs[1]);
    assert!(!s.dir.path.join("incoming").join(msgs[1].id.as_str()).exists());
}

#[test]
fn a_file_being_written_is_ours_of_mode_0200_and_nothing_else() {
    use std::os::unix::fs::PermissionsExt;
    let d = TempDir::new("writing");
    let fd = OwnedFd::from(std::fs::File::open(&d.path).expect("open dir"));
    let mode = |name: &str, m: u32| {
        std::fs::write(d.path.join(name), b"x").expect("write");
        std::fs::set_permissions(d.path.join(name), std::fs::Permissions::from_mode(m)).expect("chmod");
    };
    mode("writing", 0o200);
    mode("done", 0o600);
    mode("odd", 0o000);
    mode("theirs", 0o200);
    nix::unistd::chown(&d.path.join("theirs"), Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
    assert!(crate::queue::file_being_written(fd.as_fd(), "writing"));
    for name in ["done", "odd", "theirs", "absent"] {
        assert!(!crate::queue::file_being_written(fd.as_fd(), name), "{name}");
    }
}

#[test]
fn queue_files_are_readable_only_once_complete_and_recovery_replaces_unfinished_ones() {
    use std::os::unix::fs::PermissionsExt;
    let s = Spool::new("unfinished");
    let (mut j, _) = s.open();
    let mut idg = QueueIdGen::new(INSTANCE);
    let msgs: Vec<QueueFile> = (0..2).map(|_| sample(&mut idg, 1, 3000)).collect();
    for q in &msgs {
        j.append(q).expect("append");
    }
    j.commit().expect("commit");
    let mut out = Vec::new();
    j.materialize(&mut out).expect("materialise");
    drop(j); // a crash before the segment was retired
    let p = |q: &QueueFile| s.dir.path.join("incoming").join(q.id.as_str());
    let mode = |q: &QueueFile| std::fs::metadata(p(q)).expect("stat").permissions().mode() & 0o777;
    for q in &msgs {
        assert_eq!(mode(q), 0o600, "a complete file is readable by its owner");
    }
    // The crash came while #0 was being written (whole, but not yet
    // marked complete) and #1 (half of it): neither counts as queued.
    std::fs::set_permissions(p(&msgs[0]), std::fs::Permissions::from_mode(0o200)).expect("chmod");
    OpenOptions::new().write(true).open(p(&msgs[1])).expect("open").set_len(100).expect("truncate");
    std::fs::set_permissions(p(&msgs[1]), std::fs::Permissions::from_mode(0o200)).expect("chmod");
    let (_j, rec) = s.open();
    assert_eq!(rec.present, 0);
    assert_eq!(rec.replaced, ids(&msgs));
    assert_eq!(rec.materialised, ids(&msgs));
    for q in &msgs {
        assert_eq!(&s.read("incoming", &q.id), q);
        assert_eq!(mode(q), 0o600);
    }
}

#[test]
fn segments_rotate_and_retire() {
    let s = Spool::new("rotate");
    let options = JournalOptions { segment_size: 20_000, retire_after: Duration::ZERO, ..JournalOptions::default() };
    let (mut j, _) = s.open_with(options);
    let mut idg = QueueIdGen::new(INSTANCE);
    let mut all = Vec::new();
    for _ in 0..10 {
        for _ in 0..3 {
            let q = sample(&mut idg, 1, 4000);
            j.append(&q).expect("append");
            all.push(q.id);
        }
        j.commit().expect("commit");
    }
    assert!(s.segments().len() > 1, "rotated: {:?}", s.segments());
    let mut out = Vec::new();
    j.materialize(&mut out).expect("materialise");
    assert_eq!(out, all);
    assert_eq!(s.segments().len(), 1, "all retired but the fresh one: {:?}", s.segments());
    assert_eq!(j.retire_due(), None);
    drop(j);
    let (_j, rec) = s.open();
    assert_eq!(rec.records, 0, "retired segments are not recovered");
}

/// A segment with three records, built by a journal that then "crashed".
fn three_records(s: &Spool) -> (Vec<QueueFile>, String, Vec<u8>) {
    three_records_with(s, ZeroAhead::Never)
}

/// Three messages committed one by one; the segment's name and bytes.
fn three_records_with(s: &Spool, zero_ahead: ZeroAhead) -> (Vec<QueueFile>, String, Vec<u8>) {
    let (mut j, _) = s.open_with(JournalOptions { zero_ahead, ..JournalOptions::default() });
    let mut idg = QueueIdGen::new(INSTANCE);
    let msgs: Vec<QueueFile> = (0..3).map(|_| sample(&mut idg, 1, 200)).collect();
    for q in &msgs {
        j.append(q).expect("append");
        j.commit().expect("commit");
    }
    drop(j);
    let name = s.segments().pop().expect("a segment");
    let bytes = std::fs::read(s.dir.path.join("journal").join(&name)).expect("read segment");
    (msgs, name, bytes)
}

#[test]
fn torn_tail_at_every_offset() {
    let s = Spool::new("torn");
    let (msgs, name, bytes) = three_records(&s);
    let last = bytes.len() - (RECORD_HEADER + msgs[2].encode().expect("encode").len());
    for cut in last..bytes.len() {
        let sc = scan(&bytes[..cut], INSTANCE, true);
        assert_eq!(sc.records.iter().map(|r| r.id).collect::<Vec<_>>(), ids(&msgs[..2]), "cut at {cut}");
        assert!(sc.corrupt.is_empty(), "cut at {cut}");
        assert_eq!(!sc.torn.is_empty(), cut > last, "cut at {cut}");
    }
    // The whole path, at a few offsets.
    let path = s.dir.path.join("journal").join(&name);
    for cut in [last + 1, last + 31, last + 32, last + 500, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).expect("write torn segment");
        let (j, rec) = s.open();
        drop(j);
        assert_eq!(rec.records, 2, "cut at {cut}: {rec}");
        assert_eq!(rec.torn.len(), 1);
        assert!(rec.corrupt.is_empty() && rec.kept.is_empty());
        assert!(!s.dir.path.join("incoming").join(msgs[2].id.as_str()).exists());
        for sub in s.segments() {
            std::fs::remove_file(s.dir.path.join("journal").join(sub)).expect("clean");
        }
    }
}

/// Segments with zeros written ahead: each commit after the first of an
/// extension overwrites zeros without growing the file, the extensions
/// grow from 64 KiB to 1 MiB, a crash is recovered with no damage
/// reported, and a record torn inside the zeros is a torn tail.
#[test]
fn zeros_ahead_are_overwritten_in_place_and_end_a_segment_cleanly() {
    let s = Spool::new("zeros");
    let (mut j, _) = s.open_with(JournalOptions { zero_ahead: ZeroAhead::Always, ..JournalOptions::default() });
    let mut idg = QueueIdGen::new(INSTANCE);
    let path = |s: &Spool| s.dir.path.join("journal").join(s.segments().pop().expect("a segment"));
    let mut sizes = Vec::new();
    let mut msgs = Vec::new();
    for _ in 0..600 {
        let q = sample(&mut idg, 1, 5000);
        j.append(&q).expect("append");
        j.commit().expect("commit");
        msgs.push(q);
        sizes.push(std::fs::metadata(path(&s)).expect("stat").len());
    }
    let end =
        (SEGMENT_HEADER + msgs.iter().map(|q| RECORD_HEADER + q.encode().expect("encode").len()).sum::<usize>()) as u64;
    let mut grown: Vec<u64> = sizes.windows(2).filter(|w| w[1] != w[0]).map(|w| w[1] - w[0]).collect();
    grown.insert(0, sizes[0] - SEGMENT_HEADER as u64);
    assert!(grown.len() < 12, "the file grew at {} of 600 commits", grown.len());
    assert!(grown[0] >= 64 << 10 && grown[0] < 80 << 10, "first extension {}", grown[0]);
    assert!(grown.iter().all(|&g| g <= (1 << 20) + 8192), "{grown:?}");
    assert!(grown.windows(2).any(|w| w[1] > w[0]), "extensions grow: {grown:?}");
    let bytes = std::fs::read(path(&s)).expect("read segment");
    assert!(bytes.len() as u64 > end);
    assert!(bytes[end as usize..].iter().all(|&b| b == 0), "zeros after the records");
    let sc = scan(&bytes, INSTANCE, true);
    assert_eq!(sc.records.len(), 600);
    assert!(sc.torn.is_empty() && sc.corrupt.is_empty());
    drop(j); // a crash
    let (j, rec) = s.open();
    assert_eq!((rec.records, rec.materialised.len()), (600, 600), "{rec}");
    assert!(rec.torn.is_empty() && rec.corrupt.is_empty() && rec.kept.is_empty(), "{rec}");
    assert_eq!(&s.read("incoming", &msgs[599].id), &msgs[599]);
    drop(j);

    // A commit torn by a crash, the zeros after it intact.
    let s = Spool::new("zeros-torn");
    let (msgs, name, mut bytes) = three_records_with(&s, ZeroAhead::Always);
    let last_len = RECORD_HEADER + msgs[2].encode().expect("encode").len();
    let end = SEGMENT_HEADER + msgs.iter().map(|q| RECORD_HEADER + q.encode().expect("encode").len()).sum::<usize>();
    assert!(bytes.len() > end + 4096 && bytes[end..].iter().all(|&b| b == 0));
    let last = end - last_len;
    for cut in [last + 1, last + 4, last + 31, last + 200, end - 1] {
        let mut torn = bytes.clone();
        torn[cut..].fill(0);
        let sc = scan(&torn, INSTANCE, true);
        assert_eq!(sc.records.iter().map(|r| r.id).collect::<Vec<_>>(), ids(&msgs[..2]), "cut at {cut}");
        assert!(!sc.torn.is_empty() && sc.corrupt.is_empty(), "cut at {cut}");
    }
    // A hole in records 1 and 2, each its own commit, before record 3's
    // commit: those commits were acknowledged, so it is corruption (the
    // records after it are recovered). See also
    // holes_inside_the_last_commit_are_torn_and_before_a_later_commit_corrupt.
    let mut holed = bytes.clone();
    let page = (SEGMENT_HEADER + RECORD_HEADER + 100) / 4096 * 4096;
    let hole = page.max(SEGMENT_HEADER)..(page + 4096).min(last);
    assert!(!hole.is_empty() && hole.end <= last, "{hole:?} inside records 1 and 2");
    holed[hole.clone()].fill(0);
    let sc = scan(&holed, INSTANCE, true);
    assert_eq!(sc.records.last().map(|r| r.id), Some(msgs[2].id));
    assert_eq!(sc.corrupt.len(), 1, "{hole:?}");
    // A bit flipped in the zeros is damage, not a clean end.
    bytes[end + 100] = 1;
    std::fs::write(s.dir.path.join("journal").join(&name), &bytes).expect("write");
    let (_j, rec) = s.open();
    assert_eq!(rec.records, 3, "{rec}");
    assert_eq!(rec.torn.len(), 1, "{rec}");
}

/// Messages committed in the batches `sizes` (each of 4,000 bytes of
/// content, so that a page can be lost inside a batch); the segment's
/// name and bytes, and where each record starts.
fn batches(s: &Spool, sizes: &[usize]) -> (Vec<QueueFile>, String, Vec<u8>, Vec<usize>) {
    let (mut j, _) = s.open_with(JournalOptions { zero_ahead: ZeroAhead::Always, ..JournalOptions::default() });
    let mut idg = QueueIdGen::new(INSTANCE);
    let mut msgs = Vec::new();
    for &n in sizes {
        for _ in 0..n {
            let q = sample(&mut idg, 1, 4000);
            j.append(&q).expect("append");
            msgs.push(q);
        }
        j.commit().expect("commit");
    }
    drop(j); // a crash
    let name = s.segments().pop().expect("a segment");
    let bytes = std::fs::read(s.dir.path.join("journal").join(&name)).expect("read segment");
    let mut starts = vec![SEGMENT_HEADER];
    for q in &msgs {
        starts.push(starts.last().copied().unwrap_or(0) + RECORD_HEADER + q.encode().expect("encode").len());
    }
    (msgs, name, bytes, starts)
}

/// A crash during a commit over zeros written ahead may leave any of its
/// pages unwritten (zero) between records that were written. Inside the
/// segment's last commit (never acknowledged) that is a torn commit: its
/// good records are queued and nothing is reported as corrupt. Where a
/// later commit follows, the hole was acknowledged data: corruption.
#[test]
fn holes_inside_the_last_commit_are_torn_and_before_a_later_commit_corrupt() {
    // One acknowledged commit of one message, then a commit of four, cut
    // by a crash that lost a page inside the second and third records.
    let s = Spool::new("hole-last");
    let (msgs, name, bytes, starts) = batches(&s, &[1, 4]);
    let page = (starts[2] + 100).div_ceil(4096) * 4096;
    assert!(page > starts[2] && page + 4096 < starts[3] + 4000, "a page inside records 3 and 4");
    let mut holed = bytes.clone();
    holed[page..page + 4096].fill(0);
    let sc = scan(&holed, INSTANCE, true);
    assert!(sc.corrupt.is_empty(), "{:?}", sc.corrupt);
    assert_eq!(sc.torn.len(), 1, "{:?}", sc.torn);
    let found: Vec<QueueId> = sc.records.iter().map(|r| r.id).collect();
    assert_eq!(found.first(), Some(&msgs[0].id));
    assert_eq!(found.last(), Some(&msgs[4].id), "the last commit's good records after the hole");
    std::fs::write(s.dir.path.join("journal").join(&name), &holed).expect("write");
    let (j, rec) = s.open();
    assert!(rec.corrupt.is_empty() && rec.kept.is_empty(), "{rec}");
    assert_eq!(rec.torn.len(), 1, "{rec}");
    assert!(rec.materialised.contains(&msgs[0].id) && rec.materialised.contains(&msgs[4].id), "{rec}");
    assert!(!s.segments().iter().any(|n| n.ends_with(".corrupt")));
    drop(j);

    // The first record of the last commit lost: still inside it.
    let mut holed = bytes.clone();
    holed[starts[1]..starts[1] + 200].fill(0);
    let sc = scan(&holed, INSTANCE, true);
    assert!(sc.corrupt.is_empty() && sc.torn.len() == 1, "{:?} {:?}", sc.corrupt, sc.torn);
    assert_eq!(sc.records.len(), 4);

    // The hole reaches back into the first commit, which must have been
    // durable before the second was written: corruption.
    let mut holed = bytes.clone();
    holed[starts[1] - 100..starts[1] + 200].fill(0);
    let sc = scan(&holed, INSTANCE, true);
    assert_eq!(sc.corrupt.len(), 1, "{:?}", sc.torn);
    assert!(sc.torn.is_empty());

    // The commit numbers and marks the journal wrote.
    let marks: Vec<(u32, bool)> = scan(&bytes, INSTANCE, true).records.iter().map(|r| (r.commit, r.last)).collect();
    assert_eq!(marks, vec![(1, true), (2, false), (2, false), (2, false), (2, true)]);

    // A hole inside a commit that a later one follows: corruption, and
    // the segment is kept.
    let s = Spool::new("hole-earlier");
    let (msgs, name, bytes, starts) = batches(&s, &[4, 1]);
    let mut holed = bytes.clone();
    holed[starts[1] + 50..starts[1] + 150].fill(0);
    let sc = scan(&holed, INSTANCE, true);
    assert_eq!(sc.corrupt.len(), 1);
    assert!(sc.torn.is_empty());
    assert_eq!(
        sc.records.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![msgs[0].id, msgs[2].id, msgs[3].id, msgs[4].id]
    );
    std::fs::write(s.dir.path.join("journal").join(&name), &holed).expect("write");
    let (_j, rec) = s.open();
    assert_eq!(rec.corrupt.len(), 1, "{rec}");
    assert_eq!(rec.kept, vec![format!("{name}.corrupt")]);
}

/// Two segments left by a crash: four messages committed to the first
/// (its last commit), one to the second. Returns the messages, the older
/// segment's name and its bytes.
fn two_segments(s: &Spool, zero_ahead: ZeroAhead) -> (Vec<QueueFile>, String, Vec<u8>) {
    let options = JournalOptions { zero_ahead, segment_size: 20_000, ..JournalOptions::default() };
    let (mut j, _) = s.open_with(options);
    let mut idg = QueueIdGen::new(INSTANCE);
    let msgs: Vec<QueueFile> = (0..5).map(|_| sample(&mut idg, 1, 4000)).collect();
    for q in &msgs[..4] {
        j.append(q).expect("append");
    }
    j.commit().expect("commit to the first segment");
    j.append(&msgs[4]).expect("append");
    j.commit().expect("commit to the second segment");
    drop(j); // a crash
    let names = s.segments();
    assert_eq!(names.len(), 2, "{names:?}");
    let bytes = std::fs::read(s.dir.path.join("journal").join(&names[0])).expect("read");
    (msgs, names[0].clone(), bytes)
}

/// `bytes`, damaged, as the older of two segments: one stretch of
/// corruption and three good records in the scan; at recovery the
/// corruption reported, no torn tail, the segment kept, all four
/// messages found.
fn damage_is_corruption_in_an_older_segment(s: &Spool, name: &str, bytes: &[u8]) {
    let sc = scan(bytes, INSTANCE, false);
    assert_eq!((sc.corrupt.len(), sc.torn.len(), sc.records.len()), (1, 0, 3));
    std::fs::write(s.dir.path.join("journal").join(name), bytes).expect("write");
    let (_j, rec) = s.open();
    assert_eq!(rec.corrupt.len(), 1, "{rec}");
    assert!(rec.torn.is_empty(), "{rec}");
    assert_eq!(rec.kept, vec![format!("{name}.corrupt")]);
    assert_eq!(rec.records, 4, "{rec}");
}

/// A new segment is started only once the commits before it are durable:
/// a hole inside the last commit of an older segment was acknowledged
/// data, so it is corruption there.
#[test]
fn a_hole_in_the_last_commit_of_an_older_segment_is_corruption() {
    let s = Spool::new("hole-older");
    let (msgs, name, mut bytes) = two_segments(&s, ZeroAhead::Always);
    let second = SEGMENT_HEADER + RECORD_HEADER + msgs[0].encode().expect("encode").len();
    bytes[second + 100..second + 200].fill(0);
    assert_eq!(scan(&bytes, INSTANCE, true).corrupt.len(), 0, "as the newest segment it would be torn");
    damage_is_corruption_in_an_older_segment(&s, &name, &bytes);
}

/// The same for damage that reaches the end of an older segment: its
/// last commit was durable before the next segment was started, so the
/// damage is corruption (reported, the segment kept), not a torn tail.
#[test]
fn damage_at_the_end_of_an_older_segment_is_corruption() {
    let s = Spool::new("tail-older");
    let (msgs, name, mut bytes) = two_segments(&s, ZeroAhead::Never);
    // The last record's header damaged: nothing good follows it.
    let last = bytes.len() - (RECORD_HEADER + msgs[3].encode().expect("encode").len());
    bytes[last + 10] ^= 0xff;
    let newest = scan(&bytes, INSTANCE, true);
    assert_eq!((newest.corrupt.len(), newest.torn.len()), (0, 1), "as the newest segment it would be torn");
    damage_is_corruption_in_an_older_segment(&s, &name, &bytes);
}

/// Commit numbers are never shared: a segment whose numbers are used up
/// takes no more commits, and when no new segment can be started either
/// the batch fails (451) and nothing of it is written.
#[test]
fn a_segment_out_of_commit_numbers_takes_no_more() {
    let s = Spool::new("numbers");
    let (mut j, _) = s.open();
    let mut idg = QueueIdGen::new(INSTANCE);
    let (a, b, c) = (sample(&mut idg, 1, 100), sample(&mut idg, 1, 100), sample(&mut idg, 1, 100));
    j.append(&a).expect("append");
    j.commit().expect("commit");
    j.set_commits(u32::MAX);
    // The next segment's name is taken: it cannot be started.
    let active = s.segments().pop().expect("a segment");
    let seq = u64::from_str_radix(&active[9..25], 16).expect("sequence number");
    let blocker = s.dir.path.join("journal").join(format!("{INSTANCE:08x}-{:016x}.jnl", seq + 1));
    std::fs::create_dir(&blocker).expect("block the next segment");
    let size = std::fs::metadata(s.dir.path.join("journal").join(&active)).expect("stat").len();
    j.append(&b).expect("append");
    let e = j.commit().expect_err("no commit number left");
    assert_eq!(e.failed, vec![Ticket { id: b.id }]);
    assert_eq!(std::fs::metadata(s.dir.path.join("journal").join(&active)).expect("stat").len(), size);
    std::fs::remove_dir(&blocker).expect("unblock");
    j.append(&c).expect("append");
    j.commit().expect("commit to a new segment");
    assert_eq!(s.segments().len(), 2);
    drop(j); // a crash
    let (_j, rec) = s.open();
    assert_eq!(rec.materialised, vec![a.id, c.id], "{rec}");
    assert!(rec.corrupt.is_empty() && rec.torn.is_empty(), "{rec}");
}

/// A search for good records that gives up leaves the rest of the segment
/// unknown: a hole before it cannot be shown to be inside the last
/// commit, so it is corruption.
#[test]
fn holes_before_a_search_that_gave_up_are_corruption() {
    let s = Spool::new("hole-gave-up");
    let (_, _, bytes, starts) = batches(&s, &[4]);
    let mut holed = bytes[..starts[4]].to_vec();
    holed[starts[1] + 100..starts[1] + 200].fill(0);
    assert_eq!((scan(&holed, INSTANCE, true).torn.len(), scan(&holed, INSTANCE, true).corrupt.len()), (1, 0));
    holed.push(0);
    for _ in 0..20_000 {
        holed.extend_from_slice(b"MTAJ\xff\xff\xff\x00");
    }
    let sc = scan(&holed, INSTANCE, true);
    assert!(sc.torn.is_empty(), "{:?}", sc.torn);
    assert_eq!(sc.corrupt.len(), 2, "{:?}", sc.corrupt);
}

/// Segments of format version 1 (no commit numbers), as an older cleanup
/// left them, are recovered: their records queued, a hole followed by a
/// good record reported as corruption.
#[test]
fn version_1_segments_are_recovered() {
    let salt = 0x5eed_u64;
    let mut seg = segment_header(INSTANCE, salt).to_vec();
    seg[4..6].copy_from_slice(&1u16.to_le_bytes());
    let crc = crc32fast::hash(&seg[..20]);
    seg[20..24].copy_from_slice(&crc.to_le_bytes());
    let mut idg = QueueIdGen::new(INSTANCE);
    let msgs: Vec<QueueFile> = (0..3).map(|_| sample(&mut idg, 2, 300)).collect();
    let mut starts = Vec::new();
    for q in &msgs {
        let payload = q.encode().expect("encode");
        let mut h = vec![0u8; RECORD_HEADER_V1];
        h[0..4].copy_from_slice(b"MTAJ");
        h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        h[8..28].copy_from_slice(q.id.as_bytes());
        let crc = record_crc(salt, &h, &payload);
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        starts.push(seg.len());
        seg.extend_from_slice(&h);
        seg.extend_from_slice(&payload);
    }
    let sc = scan(&seg, INSTANCE, true);
    assert_eq!(sc.records.iter().map(|r| r.id).collect::<Vec<_>>(), ids(&msgs));
    assert!(sc.torn.is_empty() && sc.corrupt.is_empty());
    let mut holed = seg.clone();
    holed[starts[1] + 40] ^= 1;
    let sc = scan(&holed, INSTANCE, true);
    assert_eq!((sc.records.len(), sc.corrupt.len(), sc.torn.len()), (2, 1, 0));
    // A torn tail, and zeros after the records (a clean end).
    let sc = scan(&seg[..seg.len() - 10], INSTANCE, true);
    assert_eq!((sc.records.len(), sc.corrupt.len(), sc.torn.len()), (2, 0, 1));
    let mut zeros = seg.clone();
    zeros.resize(seg.len() + 8192, 0);
    let sc = scan(&zeros, INSTANCE, true);
    assert_eq!((sc.records.len(), sc.corrupt.len(), sc.torn.len()), (3, 0, 0));

    let s = Spool::new("v1");
    let name = format!("{INSTANCE:08x}-{:016x}.jnl", 7);
    std::fs::write(s.dir.path.join("journal").join(&name), &seg).expect("write");
    let (_j, rec) = s.open();
    assert_eq!((rec.records, rec.materialised.len()), (3, 3), "{rec}");
    assert!(rec.corrupt.is_empty() && rec.torn.is_empty() && rec.kept.is_empty(), "{rec}");
    assert_eq!(&s.read("incoming", &msgs[2].id), &msgs[2]);
    assert!(!s.segments().contains(&name), "retired");
}

#[test]
fn corrupt_middle_record_is_reported_and_the_rest_recovered() {
    let s = Spool::new("middle");
    let (msgs, name, mut bytes) = three_records(&s);
    let first = RECORD_HEADER + msgs[0].encode().expect("encode").len();
    bytes[SEGMENT_HEADER + first + 100] ^= 0x40; // inside record 2
    std::fs::write(s.dir.path.join("journal").join(&name), &bytes).expect("write");
    let (_j, rec) = s.open();
    assert_eq!(rec.records, 2, "{rec}");
    assert_eq!(rec.materialised, vec![msgs[0].id, msgs[2].id]);
    assert_eq!(rec.corrupt.len(), 1);
    assert_eq!(rec.corrupt[0].offset, (SEGMENT_HEADER + first) as u64);
    assert_eq!(rec.kept, vec![format!("{name}.corrupt")]);
    assert!(s.segments().contains(&format!("{name}.corrupt")));
    assert!(rec.to_string().contains("corrupt"));
}

#[test]
fn bad_segment_header_is_kept_not_trusted() {
    let s = Spool::new("header");
    let (_, name, mut bytes) = three_records(&s);
    bytes[13] ^= 1; // the salt
    std::fs::write(s.dir.path.join("journal").join(&name), &bytes).expect("write");
    let (_j, rec) = s.open();
    assert_eq!(rec.records, 0);
    assert_eq!(rec.corrupt.len(), 1);
    assert_eq!(rec.kept.len(), 1);
}

#[test]
fn content_imitating_a_record_is_not_trusted() {
    // A message whose content is a journal record (without the salt).
    let mut idg = QueueIdGen::new(INSTANCE);
    let inner = sample(&mut idg, 1, 10).encode().expect("encode");
    let mut forged = vec![0u8; RECORD_HEADER];
    forged[0..4].copy_from_slice(b"MTAJ");
    forged[4..8].copy_from_slice(&(inner.len() as u32).to_le_bytes());
    forged[8..28].copy_from_slice(idg.next_id().as_bytes());
    forged[28..32].copy_from_slice(&1u32.to_le_bytes());
    forged[32..36].copy_from_slice(&1u32.to_le_bytes());
    let crc = record_crc(0, &forged, &inner);
    forged[36..40].copy_from_slice(&crc.to_le_bytes());
    forged.extend_from_slice(&inner);
    let mut seg = segment_header(INSTANCE, 0xdead_beef).to_vec();
    seg.extend_from_slice(&[0xee; 40]); // damage, then the forged record
    seg.extend_from_slice(&forged);
    let sc = scan(&seg, INSTANCE, true);
    assert!(sc.records.is_empty());
    assert!(!sc.torn.is_empty());
}

#[test]
fn idle_journal_retires_when_due() {
    let s = Spool::new("idle");
    let options = JournalOptions { retire_after: Duration::from_millis(200), ..JournalOptions::default() };
    let (mut j, _) = s.open_with(options);
    assert_eq!(j.retire_due(), None, "nothing committed");
    let mut idg = QueueIdGen::new(INSTANCE);
    j.append(&sample(&mut idg, 1, 100)).expect("append");
    j.commit().expect("commit");
    assert_eq!(j.retire_due(), None, "not materialised yet");
    let mut out = Vec::new();
    j.materialize(&mut out).expect("materialise");
    let due = j.retire_due().expect("retirement pending");
    assert!(due > Duration::ZERO && due <= Duration::from_millis(200));
    std::thread::sleep(due);
    assert_eq!(j.retire_due(), Some(Duration::ZERO));
    j.materialize(&mut out).expect("retire");
    assert_eq!(out.len(), 1);
    assert_eq!(j.retire_due(), None);
    assert_eq!(s.segments().len(), 1, "the old segment is gone");
    drop(j);
    let (_j, rec) = s.open();
    assert_eq!(rec.records, 0);
}

#[test]
fn backlog_is_bounded() {
    let s = Spool::new("backlog");
    let (mut j, _) = s.open_with(JournalOptions { max_backlog: 30_000, ..JournalOptions::default() });
    let mut idg = QueueIdGen::new(INSTANCE);
    let mut n = 0;
    while j.append(&sample(&mut idg, 1, 5000)).is_ok() {
        n += 1;
        if n % 2 == 0 {
            j.commit().expect("commit");
        }
    }
    assert!((4..=6).contains(&n), "{n} appended");
    j.commit().expect("commit");
    let mut out = Vec::new();
    j.materialize(&mut out).expect("materialise");
    assert_eq!(out.len(), n);
    j.append(&sample(&mut idg, 1, 5000)).expect("room again");
}

#[test]
fn endless_fake_records_end_the_search_as_corruption() {
    let mut seg = segment_header(INSTANCE, 7).to_vec();
    seg.push(0);
    for _ in 0..20_000 {
        seg.extend_from_slice(b"MTAJ\xff\xff\xff\x00");
    }
    let t = std::time::Instant::now();
    let sc = scan(&seg, INSTANCE, true);
    assert!(t.elapsed() < Duration::from_secs(10), "bounded work");
    assert!(sc.records.is_empty() && sc.torn.is_empty());
    assert_eq!(sc.corrupt.len(), 1, "kept for inspection, not dropped as a torn tail");
}

#[test]
fn free_space_is_reported() {
    let s = Spool::new("free");
    assert!(free_space(s.incoming.as_fd()).expect("statvfs") > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn journal_scan_no_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..2048),
        magic in any::<bool>(),
        v1 in any::<bool>(),
    ) {
        let mut seg = segment_header(INSTANCE, 1).to_vec();
        if v1 {
            seg[4..6].copy_from_slice(&1u16.to_le_bytes());
            let crc = crc32fast::hash(&seg[..20]);
            seg[20..24].copy_from_slice(&crc.to_le_bytes());
        }
        if magic {
            seg.extend_from_slice(b"MTAJ");
        }
        seg.extend_from_slice(&tail);
        let sc = scan(&seg, INSTANCE, true);
        prop_assert!(sc.records.is_empty());
        let _ = scan(&tail, INSTANCE, true);
    }
}

/// A tiny tmpfs, mounted for the test and unmounted on drop (root only).
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        let dir = TempDir::new("tmpfs");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir.path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir.path).status();
    }
}

#[test]
fn full_disk_fails_the_batch_and_recovers() {
    let Some(fs) = Tmpfs::mount("2m") else {
        eprintln!("full_disk_fails_the_batch_and_recovers: skipped (needs root and tmpfs)");
        return;
    };
    let s = Spool {
        journal: fs.dir.sub("journal"),
        incoming: fs.dir.sub("incoming"),
        active: fs.dir.sub("active"),
        dir: TempDir { path: fs.dir.path.clone() },
    };
    // Zeros ahead of the records: an extension that runs into the full
    // disk must not keep the records from being written, nor be left
    // behind when they are not.
    let (mut j, _) = s.open_with(JournalOptions { zero_ahead: ZeroAhead::Always, ..JournalOptions::default() });
    // Leave about 300 KiB free.
    let free = free_space(s.journal.as_fd()).expect("statvfs");
    let filler = fs.dir.path.join("filler");
    std::fs::write(&filler, vec![0u8; (free - 300 * 1024) as usize]).expect("filler");
    let mut idg = QueueIdGen::new(INSTANCE);
    let a = sample(&mut idg, 1, 100 * 1024);
    j.append(&a).expect("append");
    j.commit().expect("room for a");
    let seg = s.dir.path.join("journal").join(s.segments().pop().expect("segment"));
    let len_a = std::fs::metadata(&seg).expect("stat").len();
    let end_a = (SEGMENT_HEADER + RECORD_HEADER + a.encode().expect("encode").len()) as u64;
    assert!(len_a > end_a, "zeros written ahead of a");
    let b = sample(&mut idg, 1, 400 * 1024);
    let c_small = sample(&mut idg, 1, 1000);
    j.append(&b).expect("append");
    j.append(&c_small).expect("append");
    let err = j.commit().expect_err("disk full");
    assert!(err.error.is_disk_full(), "{err}");
    assert_eq!(err.failed.iter().map(|t| t.id).collect::<Vec<_>>(), vec![b.id, c_small.id]);
    assert_eq!(std::fs::metadata(&seg).expect("stat").len(), end_a, "rolled back, zeros ahead with it");
    let sc = scan(&std::fs::read(&seg).expect("read"), INSTANCE, true);
    assert_eq!(sc.records.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a.id]);
    assert!(sc.torn.is_empty() && sc.corrupt.is_empty());
    assert_eq!(j.uncommitted(), 0);
    // A message that fits where the zeros ahead of it do not: committed,
    // and the zeros that found room are given back.
    let d = sample(&mut idg, 1, 150 * 1024);
    j.append(&d).expect("append");
    j.commit().expect("room for d, not for zeros after it");
    let end_d = end_a + (RECORD_HEADER + d.encode().expect("encode").len()) as u64;
    assert_eq!(std::fs::metadata(&seg).expect("stat").len(), end_d, "no zeros kept past d");
    // Space comes back; the journal works again.
    std::fs::remove_file(&filler).expect("remove filler");
    let c = sample(&mut idg, 1, 400 * 1024);
    j.append(&c).expect("append");
    assert_eq!(j.commit().expect("commit after space returned").len(), 1);
    // Materialising into a full disk fails and is retried later.
    let free = free_space(s.journal.as_fd()).expect("statvfs");
    std::fs::write(&filler, vec![0u8; (free - 64 * 1024) as usize]).expect("filler");
    let mut out = Vec::new();
    let e = j.materialize(&mut out).expect_err("no room to materialise");
    assert!(e.is_disk_full(), "{e}");
    assert!(s.dir.names("incoming").iter().all(|n| !n.starts_with(".tmp.")), "temporary file removed");
    drop(j); // crash with a and c committed, unmaterialised
    std::fs::remove_file(&filler).expect("remove filler");
    let (_j, rec) = s.open();
    let mut got = rec.materialised.clone();
    got.extend(out);
    got.sort();
    let mut want = vec![a.id, c.id, d.id];
    want.sort();
    assert_eq!(got, want, "{rec}");
    assert_eq!(&s.read("incoming", &c.id), &c);
    drop(s);
}

/// Written out a few at a time while more is committed (cleanup under
/// load): every message ends up as its file, in order, the buffer of
/// committed bytes is compacted rather than growing with the total, and a
/// crash half-way loses nothing.
#[test]
fn materialise_in_slices_while_committing() {
    let s = Spool::new("slices");
    let (mut j, _) = s.open();
    let mut idg = QueueIdGen::new(INSTANCE);
    let mut all = Vec::new();
    let mut out = Vec::new();
    let mut peak = 0;
    for round in 0..55 {
        let batch: Vec<QueueFile> = (0..30).map(|_| sample(&mut idg, 1, 5120)).collect();
        for q in &batch {
            j.append(q).expect("append");
        }
        j.commit().expect("commit");
        all.extend(batch);
        // Slower than mail comes in for a while, then faster.
        j.materialize_some(&mut out, if round < 40 { 20 } else { 50 }).expect("slice");
        peak = peak.max(j.buffered());
        assert_eq!(out.len() + j.unmaterialised(), all.len());
    }
    assert_eq!(out, ids(&all[..out.len()]), "written in commit order");
    assert!(j.unmaterialised() > 0, "the test must leave some unwritten");
    // At most 400 messages of 5 KiB wait; compaction keeps the buffer
    // from holding all 1,650 committed ones.
    assert!(peak < 7 << 20, "buffer peaked at {peak} bytes");
    // A crash now: recovery writes out the rest from the journal.
    drop(j);
    let (j2, rec) = s.open();
    assert!(rec.corrupt.is_empty(), "{rec}");
    for q in &all {
        assert_eq!(&s.read("incoming", &q.id), q);
    }
    j2.close().expect("close");
}

#[test]
fn recovery_finds_a_message_qmgr_deferred_into_its_hashed_subfolder() {
    let s = Spool::new("hashed");
    let (mut j, _) = s.open();
    let mut idg = QueueIdGen::new(INSTANCE);
    let q = sample(&mut idg, 1, 1000);
    j.append(&q).expect("append");
    j.commit().expect("commit");
    let mut out = Vec::new();
    j.materialize(&mut out).expect("materialise");
    drop(j); // crash before the segment was retired
    // qmgr deferred it: deferred/<hash>/ID (here the spool's active/ plays
    // deferred/, the directory recovery is told to look in).
    let sub = crate::qmgr::schedule::deferred_subdir(&q.id);
    let to = s.dir.path.join("active").join(sub);
    std::fs::create_dir(&to).expect("subfolder");
    std::fs::rename(s.dir.path.join("incoming").join(q.id.as_str()), to.join(q.id.as_str())).expect("move");
    let (_j, rec) = s.open();
    assert_eq!(rec.records, 1);
    assert_eq!(rec.present, 1, "the deferred copy was not found: {rec}");
    assert!(rec.materialised.is_empty(), "queued twice");
    assert!(!s.dir.path.join("incoming").join(q.id.as_str()).exists());
}

fn booted(boot: &str) -> JournalOptions {
    JournalOptions { boot: BootId::new(boot), ..JournalOptions::default() }
}

/// Six messages committed with a note for `boot`, the first four written
/// out, then a crash; meanwhile qmgr delivered #0, moved #1 to active/,
/// and #2 never reached the disk whole.
fn crash_after_four_of_six(s: &Spool, boot: &str) -> Vec<QueueFile> {
    let (mut j, _) = s.open_with(booted(boot));
    let mut idg = QueueIdGen::new(INSTANCE);
    let msgs: Vec<QueueFile> = (0..6).map(|_| sample(&mut idg, 1, 2000)).collect();
    for q in &msgs {
        j.append(q).expect("append");
    }
    j.commit().expect("commit");
    let mut out = Vec::new();
    j.materialize_some(&mut out, 4).expect("materialise");
    assert_eq!(out, ids(&msgs[..4]));
    drop(j);
    let p = |sub: &str, q: &QueueFile| s.dir.path.join(sub).join(q.id.as_str());
    std::fs::remove_file(p("incoming", &msgs[0])).expect("remove");
    std::fs::rename(p("incoming", &msgs[1]), p("active", &msgs[1])).expect("move");
    OpenOptions::new().write(true).open(p("incoming", &msgs[2])).expect("open").set_len(100).expect("truncate");
    msgs
}

#[test]
fn in_the_same_boot_a_message_written_out_and_gone_is_not_written_again() {
    let s = Spool::new("sameboot");
    let msgs = crash_after_four_of_six(&s, "boot-a");
    let (_j, rec) = s.open_with(booted("boot-a"));
    assert_eq!(rec.records, 6);
    assert_eq!(rec.settled, 1, "{rec}");
    assert_eq!(rec.present, 2, "{rec}");
    assert_eq!(rec.replaced, vec![msgs[2].id]);
    // The invalid copy and the two never written out, and not #0.
    assert_eq!(rec.materialised, vec![msgs[2].id, msgs[4].id, msgs[5].id]);
    assert!(!s.dir.path.join("incoming").join(msgs[0].id.as_str()).exists(), "delivered twice");
    for q in [&msgs[2], &msgs[4], &msgs[5]] {
        assert_eq!(&s.read("incoming", &q.id), q);
    }
    assert_eq!(&s.read("active", &msgs[1].id), &msgs[1]);
}

#[test]
fn files_written_before_a_failure_in_a_slice_are_in_the_note() {
    let s = Spool::new("slicefail");
    let (mut j, _) = s.open_with(booted("boot-a"));
    let mut idg = QueueIdGen::new(INSTANCE);
    let msgs: Vec<QueueFile> = (0..6).map(|_| sample(&mut idg, 1, 2000)).collect();
    for q in &msgs {
        j.append(q).expect("append");
    }
    j.commit().expect("commit");
    // Something in the way of the fourth file that cannot be removed (a
    // directory with a file in it): it cannot be written.
    let p = |q: &QueueFile| s.dir.path.join("incoming").join(q.id.as_str());
    std::fs::create_dir(p(&msgs[3])).expect("mkdir");
    std::fs::write(p(&msgs[3]).join("x"), b"in the way").expect("write");
    let mut out = Vec::new();
    let e = j.materialize_some(&mut out, 6).expect_err("the fourth cannot be written");
    assert!(e.to_string().contains(msgs[3].id.as_str()), "{e}");
    // The others are written all the same.
    assert_eq!(out, [&msgs[..3], &msgs[4..]].concat().iter().map(|q| q.id).collect::<Vec<_>>());
    assert_eq!((j.unmaterialised(), j.unwritten()), (0, 1));
    drop(j);
    // The first three were announced, delivered and removed; so was the
    // sixth, written after the one that failed (which the note must not
    // pass).
    for q in [&msgs[0], &msgs[1], &msgs[2], &msgs[5]] {
        std::fs::remove_file(p(q)).expect("remove");
    }
    std::fs::remove_dir_all(p(&msgs[3])).expect("out of the way");
    let (_j, rec) = s.open_with(booted("boot-a"));
    assert_eq!(rec.settled, 3, "{rec}");
    for q in &msgs[..3] {
        assert!(!p(q).exists(), "delivered twice");
    }
    // The fourth was never written: not taken for delivered (the sixth is
    // written again: a duplicate, never a loss).
    assert_eq!(rec.materialised, vec![msgs[3].id, msgs[5].id], "{rec}");
    for q in &msgs[3..] {
        assert_eq!(&s.read("incoming", &q.id), q);
    }
}

#[test]
fn a_leftover_in_the_way_is_replaced_a_copy_kept_and_another_message_left_alone() {
    use std::os::unix::fs::PermissionsExt;
    let s = Spool::new("leftover");
    let (mut j, _) = s.open();
    let mut idg = QueueIdGen::new(INSTANCE);
    let msgs: Vec<QueueFile> = (0..3).map(|_| sample(&mut idg, 1, 2000)).collect();
    for q in &msgs {
        j.append(q).expect("append");
    }
    j.commit().expect("commit");
    let p = |q: &QueueFile| s.dir.path.join("incoming").join(q.id.as_str());
    // #0: a write that failed half-way and whose removal failed too
    // (mode 0200: ours, being written). #1: a copy of the very message,
    // with a status qmgr wrote since: kept as it is.
    std::fs::write(p(&msgs[0]), b"half").expect("write");
    std::fs::set_permissions(p(&msgs[0]), std::fs::Permissions::from_mode(0o200)).expect("chmod");
    let mut taken = msgs[1].clone();
    taken.recipients[0].status.state = crate::queue::State::Deferred;
    std::fs::write(p(&msgs[1]), taken.encode().expect("encode")).expect("write");
    // #2: another message that happens to have its queue ID: neither
    // taken for it nor removed.
    let mut other = sample(&mut idg, 1, 100);
    other.id = msgs[2].id;
    std::fs::write(p(&msgs[2]), other.encode().expect("encode")).expect("write");
    let mut out = Vec::new();
    let e = j.materialize(&mut out).expect_err("#2 cannot be written");
    assert!(e.to_string().contains("another message with the same queue ID"), "{e}");
    assert_eq!(out, ids(&msgs[..2]));
    assert_eq!(&s.read("incoming", &msgs[0].id), &msgs[0]);
    assert_eq!(&s.read("incoming", &msgs[1].id), &taken, "a valid copy is not overwritten");
    assert_eq!(&s.read("incoming", &msgs[2].id), &other, "another message's file is left alone");
    assert_eq!(j.unwritten(), 1);
}

#[test]
fn a_file_that_cannot_be_written_holds_back_no_other() {
    let s = Spool::new("unwritable");
    let options = JournalOptions { retire_after: Duration::ZERO, ..booted("boot-a") };
    let (mut j, _) = s.open_with(options);
    let mut idg = QueueIdGen::new(INSTANCE);
    let stuck = sample(&mut idg, 1, 2000);
    let p = |q: &QueueFile| s.dir.path.join("incoming").join(q.id.as_str());
    std::fs::create_dir(p(&stuck)).expect("mkdir");
    std::fs::write(p(&stuck).join("x"), b"in the way").expect("write");
    j.append(&stuck).expect("append");
    j.commit().expect("commit");
    let first = s.segments();
    let mut out = Vec::new();
    assert!(j.materialize(&mut out).is_err());
    assert!(out.is_empty());
    assert_eq!(j.unwritten(), 1);
    let due = j.work_due().expect("a retry is due");
    assert!(due > Duration::ZERO && due <= Duration::from_secs(5), "{due:?}");
    // Mail goes on: taken, written out, and its segment retired while
    // the one with the stuck message waits.
    for _ in 0..3 {
        let q = sample(&mut idg, 1, 2000);
        j.append(&q).expect("append: no backlog refuses it");
        j.commit().expect("commit");
        let mut out = Vec::new();
        j.materialize(&mut out).expect("written");
        assert_eq!(out, vec![q.id]);
        assert_eq!(&s.read("incoming", &q.id), &q);
    }
    let segments = s.segments();
    assert!(segments.contains(&first[0]), "the segment of the stuck message stays: {segments:?}");
    assert!(segments.len() <= 3, "later segments retire: {segments:?}");
    // Out of the way now: the next try writes it, and its segment goes.
    std::fs::remove_dir_all(p(&stuck)).expect("out of the way");
    j.retry_unwritten_now();
    let mut out = Vec::new();
    j.materialize(&mut out).expect("written");
    assert_eq!(out, vec![stuck.id]);
    assert_eq!(&s.read("incoming", &stuck.id), &stuck);
    assert_eq!(j.unwritten(), 0);
    assert!(!s.segments().contains(&first[0]), "retired: {:?}", s.segments());
    j.close().expect("close");
    assert!(s.segments().iter().all(|n| n.ends_with(".progress")), "{:?}", s.segments());
}

#[test]
fn a_copy_that_is_not_valid_where_cleanup_may_not_write_is_left_for_qmgr() {
    let s = Spool::new("leftforqmgr");
    let (mut j, _) = s.open();
    let mut idg = QueueIdGen::new(INSTANCE);
    let msgs: Vec<QueueFile> = (0..2).map(|_| sample(&mut idg, 1, 2000)).collect();
    for q in &msgs {
        j.append(q).expect("append");
    }
    j.commit().expect("commit");
    let mut out = Vec::new();
    j.materialize(&mut out).expect("materialise");
    drop(j); // crash before the segment was retired
    // qmgr had moved both to active/ (deferred/ or hold/ alike): #0 is
    // damaged there, #1 cannot be read (a directory stands for an I/O
    // error: whether it is good cannot be told).
    let p = |sub: &str, q: &QueueFile| s.dir.path.join(sub).join(q.id.as_str());
    std::fs::rename(p("incoming", &msgs[0]), p("active", &msgs[0])).expect("move");
    OpenOptions::new().write(true).open(p("active", &msgs[0])).expect("open").set_len(100).expect("truncate");
    std::fs::remove_file(p("incoming", &msgs[1])).expect("remove");
    std::fs::create_dir(p("active", &msgs[1])).expect("mkdir");
    let (_j, rec) = s.open();
    // Neither is removed from active/ (cleanup may only read there, and
    // a failed removal stopped recovery, and cleanup, for good): the
    // journal's copies go to incoming/, and the log says so.
    assert!(p("active", &msgs[0]).is_file() && p("active", &msgs[1]).is_dir());
    assert_eq!(rec.replaced, ids(&msgs), "{rec}");
    assert_eq!(rec.materialised, ids(&msgs), "{rec}");
    assert_eq!(rec.left.len(), 2, "{rec}");
    assert!(rec.left[0].contains(&format!("active/{}", msgs[0].id)), "{rec}");
    assert!(rec.left[1].contains("cannot be read"), "{rec}");
    for q in &msgs {
        assert_eq!(&s.read("incoming", &q.id), q);
    }
    assert_eq!(s.segments().len(), 1, "the old segment retired: {:?}", s.segments());
}

/// A message put on hold whose file in hold/ was damaged before its
/// segment was retired: recovery writes the journal's copy to incoming/
/// (it may not touch hold/), and says that qmgr keeps the message held
/// (qmgr::store::Store::resolve_held: the copy is never delivered).
#[test]
fn a_damaged_copy_of_a_message_on_hold_is_replaced_for_qmgr_to_keep_held() {
    let s = Spool::new("heldcopy");
    let hold = s.dir.sub("hold");
    let (mut j, _) = s.open();
    let mut idg = QueueIdGen::new(INSTANCE);
    let q = sample(&mut idg, 1, 2000);
    j.append(&q).expect("append");
    j.commit().expect("commit");
    let mut out = Vec::new();
    j.materialize(&mut out).expect("materialise");
    drop(j); // cleanup dies before the segment was retired
    // qmgr put it on hold; then its content was damaged there.
    let p = |sub: &str| s.dir.path.join(sub).join(q.id.as_str());
    std::fs::rename(p("incoming"), p("hold")).expect("hold");
    let mut bytes = std::fs::read(p("hold")).expect("read");
    let n = bytes.len();
    bytes[n - 2] ^= 0x20;
    std::fs::write(p("hold"), bytes).expect("damage");
    let elsewhere = [("active", s.active.as_fd()), ("hold", hold.as_fd())];
    let dirs = JournalDirs { journal: s.journal.as_fd(), incoming: s.incoming.as_fd(), elsewhere: &elsewhere };
    let (_j, rec) = Journal::open(&dirs, INSTANCE, JournalOptions::default()).expect("open journal");
    assert_eq!(rec.materialised, vec![q.id], "{rec}");
    assert_eq!(&s.read("incoming", &q.id), &q, "the journal's copy is in incoming/");
    assert!(p("hold").is_file(), "the damaged copy is left where cleanup may not remove it");
    assert_eq!(rec.left.len(), 1, "{rec}");
    assert!(rec.left[0].contains(&format!("hold/{}: queue file corrupt", q.id)), "{rec}");
    assert!(rec.left[0].contains("content CRC mismatch"), "{rec}");
    assert!(rec.left[0].ends_with("qmgr holds it in this one's place"), "{rec}");
}

/// `n` messages committed, then a crash before anything was written out.
fn committed_then_crashed(name: &str, n: usize) -> (Spool, QueueIdGen, Vec<QueueFile>) {
    let s = Spool::new(name);
    let (mut j, _) = s.open();
    let mut idg = QueueIdGen::new(INSTANCE);
    let msgs: Vec<QueueFile> = (0..n).map(|_| sample(&mut idg, 1, 2000)).collect();
    for q in &msgs {
        j.append(q).expect("append");
    }
    j.commit().expect("commit");
    drop(j);
    (s, idg, msgs)
}

/// Recovery takes a valid file under a message's queue ID for that
/// message only if it is that message: another one that happens to have
/// its ID (a clock stepped back) is left alone, and the journal's message
/// stays in the journal, as when it is written out in service.
#[test]
fn recovery_leaves_another_message_under_the_same_id_and_keeps_its_own() {
    let (s, mut idg, msgs) = committed_then_crashed("recollide", 2);
    let mut other = sample(&mut idg, 1, 100);
    other.id = msgs[0].id;
    std::fs::write(s.dir.path.join("incoming").join(other.id.as_str()), other.encode().expect("encode"))
        .expect("write");
    let old = s.segments();
    let (j, rec) = s.open();
    assert_eq!(rec.materialised, vec![msgs[1].id], "{rec}");
    assert_eq!(rec.present, 0, "{rec}");
    assert_eq!(rec.unwritten.len(), 1, "{rec}");
    assert!(rec.unwritten[0].contains("another message with the same queue ID"), "{rec}");
    assert_eq!(j.unwritten(), 1);
    assert_eq!(&s.read("incoming", &other.id), &other, "the other message's file is left alone");
    assert!(s.segments().contains(&old[0]), "its segment stays: {:?}", s.segments());
}

#[test]
fn a_copy_in_incoming_that_cannot_be_replaced_stops_no_recovery() {
    let (s, _, msgs) = committed_then_crashed("blocked", 2);
    let p = |q: &QueueFile| s.dir.path.join("incoming").join(q.id.as_str());
    std::fs::create_dir(p(&msgs[0])).expect("mkdir");
    std::fs::write(p(&msgs[0]).join("x"), b"in the way").expect("write");
    let old = s.segments();
    let (mut j, rec) = s.open();
    assert_eq!(rec.materialised, vec![msgs[1].id], "{rec}");
    assert_eq!(rec.unwritten.len(), 1, "{rec}");
    assert!(rec.unwritten[0].contains(msgs[0].id.as_str()), "{rec}");
    assert_eq!(j.unwritten(), 1);
    assert!(s.segments().contains(&old[0]), "its segment stays: {:?}", s.segments());
    std::fs::remove_dir_all(p(&msgs[0])).expect("out of the way");
    let mut out = Vec::new();
    j.materialize(&mut out).expect("tried again at once, then written");
    assert_eq!(out, vec![msgs[0].id]);
    assert_eq!(&s.read("incoming", &msgs[0].id), &msgs[0]);
    assert!(!s.segments().contains(&old[0]), "retired: {:?}", s.segments());
}

#[test]
fn after_a_reboot_or_a_new_master_or_without_a_good_note_every_missing_message_is_written_again() {
    for tag in ["otherboot", "othermaster", "badnote"] {
        let s = Spool::new(tag);
        let msgs = crash_after_four_of_six(&s, "boot-a");
        let note = s.dir.path.join("journal").join(format!("{INSTANCE:08x}.progress"));
        let options = match tag {
            "otherboot" => booted("boot-b"),
            // mta stopped and started again: the spool may have been
            // unmounted (dropping unwritten pages) or restored meanwhile.
            "othermaster" => JournalOptions { session: 7, ..booted("boot-a") },
            _ => {
                let mut b = std::fs::read(&note).expect("a note");
                b[10] ^= 1;
                std::fs::write(&note, b).expect("damage");
                booted("boot-a")
            }
        };
        let (_j, rec) = s.open_with(options);
        assert_eq!(rec.settled, 0, "{tag}: {rec}");
        assert_eq!(rec.materialised, vec![msgs[0].id, msgs[2].id, msgs[4].id, msgs[5].id], "{tag}");
        assert_eq!(&s.read("incoming", &msgs[0].id), &msgs[0]);
    }
}

#[test]
fn after_a_failed_sync_segments_are_kept_until_the_next_boot() {
    let s = Spool::new("failedsync");
    let options = JournalOptions { retire_after: Duration::ZERO, ..booted("boot-a") };
    let (mut j, _) = s.open_with(options);
    let mut idg = QueueIdGen::new(INSTANCE);
    let msgs: Vec<QueueFile> = (0..3).map(|_| sample(&mut idg, 1, 2000)).collect();
    for q in &msgs {
        j.append(q).expect("append");
    }
    j.commit().expect("commit");
    j.fail_syncs();
    let mut out = Vec::new();
    assert!(j.materialize(&mut out).is_err(), "the segment cannot retire");
    assert_eq!(out.len(), 3);
    drop(j);
    let old = s.segments();
    assert_eq!(old.iter().filter(|n| n.ends_with(".jnl")).count(), 2, "sealed and new: {old:?}");
    // qmgr delivered #0 meanwhile.
    std::fs::remove_file(s.dir.path.join("incoming").join(msgs[0].id.as_str())).expect("remove");
    let jnl = |s: &Spool| s.segments().into_iter().filter(|n| n.ends_with(".jnl")).collect::<Vec<_>>();
    let before = jnl(&s);
    for round in 0..2 {
        // Restarts in the same boot: #1 and #2 read back whole from the
        // page cache, which proves nothing; their segments stay.
        let (j, rec) = s.open_with(options);
        assert_eq!(rec.kept_unsynced, before, "round {round}: {rec}");
        assert_eq!((rec.settled, rec.present), (1, 2), "round {round}: {rec}");
        assert!(rec.materialised.is_empty(), "round {round}: {rec}");
        drop(j);
        assert!(before.iter().all(|n| jnl(&s).contains(n)), "round {round}: kept segments gone");
    }
    // A new master in the same boot keeps them too (and, trusting no
    // note of what was written out, writes #0 again: a duplicate, never
    // a loss).
    let (j, rec) = s.open_with(JournalOptions { session: 3, ..options });
    assert_eq!(rec.kept_unsynced, before, "{rec}");
    assert_eq!(rec.materialised, vec![msgs[0].id]);
    drop(j);
    // The next boot: the disk is what it is, and the segments go.
    let (_j, rec) = s.open_with(booted("boot-b"));
    assert!(rec.kept_unsynced.is_empty(), "{rec}");
    assert_eq!(rec.present, 3, "{rec}");
    assert!(before.iter().all(|n| !jnl(&s).contains(n)), "old segments retired");
}

#[test]
fn a_sync_that_fails_at_a_clean_stop_keeps_the_segments_until_the_next_boot() {
    let s = Spool::new("failedclose");
    let (mut j, _) = s.open_with(booted("boot-a"));
    let mut idg = QueueIdGen::new(INSTANCE);
    let q = sample(&mut idg, 1, 2000);
    j.append(&q).expect("append");
    j.commit().expect("commit");
    j.fail_syncs();
    assert!(j.close().is_err(), "the sync failed");
    let before: Vec<String> = s.segments().into_iter().filter(|n| n.ends_with(".jnl")).collect();
    assert!(!before.is_empty());
    let (_j, rec) = s.open_with(booted("boot-a"));
    assert_eq!(rec.kept_unsynced, before, "{rec}");
}

#[test]
fn a_kept_segments_torn_tail_is_cut_off_so_no_later_recovery_calls_it_damage() {
    let s = Spool::new("keptorn");
    let (mut j, _) = s.open_with(booted("boot-a"));
    let mut idg = QueueIdGen::new(INSTANCE);
    let q = sample(&mut idg, 1, 2000);
    j.append(&q).expect("append");
    j.commit().expect("commit");
    j.fail_syncs();
    assert!(j.close().is_err(), "the sync failed");
    let kept: Vec<String> = s.segments().into_iter().filter(|n| n.ends_with(".jnl")).collect();
    // A commit the crash cut short, at the end of the newest segment.
    let newest = s.dir.path.join("journal").join(kept.last().expect("a segment"));
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes.extend_from_slice(&[0xab; 100]);
    std::fs::write(&newest, &bytes).expect("tear");
    let (j, rec) = s.open_with(booted("boot-a"));
    assert_eq!((rec.torn.len(), rec.corrupt.len()), (1, 0), "{rec}");
    assert_eq!(rec.kept_unsynced, kept, "{rec}");
    drop(j);
    // Restarted again, the kept segment is no longer the newest.
    let (j, rec) = s.open_with(booted("boot-a"));
    assert!(rec.torn.is_empty() && rec.corrupt.is_empty(), "{rec}");
    assert_eq!(rec.kept_unsynced, kept, "{rec}");
    drop(j);
    let (_j, rec) = s.open_with(booted("boot-b"));
    assert!(rec.corrupt.is_empty() && rec.kept.is_empty() && rec.kept_unsynced.is_empty(), "{rec}");
    assert_eq!(rec.present, 1, "{rec}");
}

#[test]
fn segment_numbers_never_go_below_the_note() {
    let s = Spool::new("monotonic");
    let (mut j, _) = s.open_with(booted("boot-a"));
    let mut idg = QueueIdGen::new(INSTANCE);
    for _ in 0..3 {
        let q = sample(&mut idg, 1, 2000);
        j.append(&q).expect("append");
        j.commit().expect("commit");
        let mut out = Vec::new();
        j.materialize(&mut out).expect("materialise");
    }
    j.close().expect("close");
    // A clean stop removed every segment and left the note.
    assert!(s.segments().iter().all(|n| !n.ends_with(".jnl")), "{:?}", s.segments());
    let (j, _) = s.open_with(booted("boot-a"));
    drop(j);
    let seg: Vec<String> = s.segments().into_iter().filter(|n| n.ends_with(".jnl")).collect();
    assert_eq!(seg, [format!("{INSTANCE:08x}-{:016x}.jnl", 2)], "the first segment was 1: the next is above it");
}

/// How many journal segments there are.
fn jnl(s: &Spool) -> usize {
    s.segments().iter().filter(|n| n.ends_with(".jnl")).count()
}

/// The queue file in memory file `fd`.
fn in_memory(fd: &OwnedFd) -> QueueFile {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::from(fd.try_clone().expect("dup"));
    let mut bytes = vec![0u8; f.metadata().expect("fstat").len() as usize];
    f.read_exact_at(&mut bytes, 0).expect("read");
    // Sealed: nothing can change it.
    assert!(f.write_at(b"x", 0).is_err(), "a memory file can be written");
    assert!(f.set_len(1).is_err(), "a memory file can be cut");
    QueueFile::decode(&bytes).expect("a valid queue file")
}

/// Committed messages offered in memory: no queue file is written for
/// them; those qmgr reports delivered are, for recovery in the same boot,
/// delivered (not queued again); the others are written again; a message
/// too large for an offer is written out in its turn.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
#[test]
fn offered_messages_get_no_file_and_recovery_knows_the_delivered_ones() {
    let s = Spool::new("offered");
    let (mut j, _) = s.open_with(booted("boot-a"));
    let mut idg = QueueIdGen::new(INSTANCE);
    let mut msgs: Vec<QueueFile> = (0..6).map(|_| sample(&mut idg, 1, 2000)).collect();
    msgs.push(sample(&mut idg, 1, 50_000));
    msgs.push(sample(&mut idg, 1, 2000));
    for q in &msgs {
        j.append(q).expect("append");
    }
    j.commit().expect("commit");
    let mut offers = Vec::new();
    j.offer_some(&mut offers, 4, 10_000);
    assert_eq!(offers.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids(&msgs[..4]), "at most 4 at once");
    for ((_, fd), q) in offers.iter().zip(&msgs) {
        assert_eq!(&in_memory(fd), q);
    }
    assert_eq!((j.offered(), j.unmaterialised()), (4, 4));
    j.offer_some(&mut offers, 6, 10_000);
    assert_eq!(offers.len(), 6, "the large one stops the offers");
    assert!(s.dir.names("incoming").is_empty(), "a file was written");
    // qmgr delivered #0, #1 and #3; #2 and #4 are still being delivered.
    assert_eq!(j.settle_offered(&[msgs[0].id, msgs[1].id, msgs[3].id, msgs[7].id]), 3, "#7 was not offered");
    let mut out = Vec::new();
    j.materialize(&mut out).expect("materialise");
    assert_eq!(out, ids(&msgs[6..]), "the rest written out");
    assert_eq!(jnl(&s), 1, "retired with messages unsettled");
    drop(j);
    let (_j, rec) = s.open_with(booted("boot-a"));
    assert_eq!(rec.records, 8);
    // #0 and #1 are before the first one unsettled: delivered. #3 comes
    // after #2: written again (a duplicate, never a loss).
    assert_eq!(rec.settled, 2, "{rec}");
    assert_eq!(rec.materialised, vec![msgs[2].id, msgs[3].id, msgs[4].id, msgs[5].id], "{rec}");
    for q in &msgs[..2] {
        assert!(!s.dir.path.join("incoming").join(q.id.as_str()).exists(), "delivered twice");
    }
    for q in &msgs[2..] {
        assert_eq!(&s.read("incoming", &q.id), q);
    }
}

/// qmgr goes away (or cleanup stops) with messages offered and not
/// settled: they are written out from the segment, one qmgr wrote itself
/// is taken as written, and the segment retires once all are settled.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
/// Six messages in two commits, the second in a new segment (the first
/// is full), offered after each commit with at most `max_offered` out.
fn two_segments_offered(name: &str, max_offered: usize) -> (Spool, Journal, Vec<QueueFile>, Vec<(QueueId, OwnedFd)>) {
    let s = Spool::new(name);
    let options = JournalOptions { retire_after: Duration::ZERO, segment_size: 8192, ..booted("boot-a") };
    let (mut j, _) = s.open_with(options);
    let mut idg = QueueIdGen::new(INSTANCE);
    let msgs: Vec<QueueFile> = (0..6).map(|_| sample(&mut idg, 1, 2000)).collect();
    let mut offers = Vec::new();
    for part in msgs.chunks(3) {
        for q in part {
            j.append(q).expect("append");
        }
        j.commit().expect("commit");
        j.offer_some(&mut offers, max_offered, 1 << 20);
    }
    (s, j, msgs, offers)
}

/// Messages committed in a segment and offered only after it was sealed
/// (qmgr had its fill of offers then) are read back from that segment
/// when qmgr goes away: the segment stays open for them. Before, it was
/// closed when sealed with nothing of it offered, the read back failed,
/// and a file of zeros was written in the message's place, after which
/// the segment retired: the message was lost.
#[test]
fn messages_offered_after_their_segment_was_sealed_are_written_out_whole() {
    // At most one offered at a time: the rest of the first segment is
    // still waiting when the second commit seals it.
    let (s, mut j, msgs, mut offers) = two_segments_offered("offeredlate", 1);
    assert_eq!(offers.len(), 1);
    assert_eq!(jnl(&s), 2, "{:?}", s.segments());
    // qmgr delivers the first; then more are offered, from the sealed
    // segment; then qmgr goes away.
    j.settle_offered(&[msgs[0].id]);
    j.offer_some(&mut offers, 4, 1 << 20);
    assert_eq!(offers.len(), 5);
    let mut out = Vec::new();
    j.write_offered(&mut out);
    assert_eq!(out, ids(&msgs[1..5]));
    assert_eq!(j.unwritten(), 0);
    for q in &msgs[1..5] {
        assert_eq!(&s.read("incoming", &q.id), q);
    }
    let mut more = Vec::new();
    j.materialize(&mut more).expect("materialize");
    assert_eq!(more, ids(&msgs[5..]));
    assert_eq!(&s.read("incoming", &msgs[5].id), &msgs[5]);
    assert!(j.close().expect("close").is_empty());
    assert_eq!(jnl(&s), 0);
}

/// An unwritten message that still cannot be written does not keep the
/// ones after it from being tried.
#[test]
fn unwritten_messages_are_each_tried_again() {
    let s = Spool::new("unwrittenall");
    let (mut j, _) = s.open();
    let mut idg = QueueIdGen::new(INSTANCE);
    let msgs: Vec<QueueFile> = (0..3).map(|_| sample(&mut idg, 1, 2000)).collect();
    let p = |q: &QueueFile| s.dir.path.join("incoming").join(q.id.as_str());
    for q in &msgs[..2] {
        std::fs::create_dir(p(q)).expect("mkdir");
        std::fs::write(p(q).join("x"), b"in the way").expect("write");
    }
    for q in &msgs {
        j.append(q).expect("append");
    }
    j.commit().expect("commit");
    let mut out = Vec::new();
    assert!(j.materialize(&mut out).is_err());
    assert_eq!((out, j.unwritten()), (ids(&msgs[2..]), 2));
    // The second is out of the way, the first is not.
    std::fs::remove_dir_all(p(&msgs[1])).expect("out of the way");
    j.retry_unwritten_now();
    let mut out = Vec::new();
    let e = j.materialize(&mut out).expect_err("the first still fails");
    assert!(e.to_string().contains("1 message(s) stay"), "{e}");
    assert_eq!(out, ids(&msgs[1..2]));
    assert_eq!(&s.read("incoming", &msgs[1].id), &msgs[1]);
    assert_eq!(j.unwritten(), 1);
}

#[test]
fn offered_messages_are_written_out_when_qmgr_goes() {
    let (s, mut j, msgs, offers) = two_segments_offered("offeredgone", 100);
    assert_eq!(offers.len(), 6);
    assert_eq!(jnl(&s), 2, "{:?}", s.segments());
    // qmgr delivered #0, and wrote #1 itself.
    std::fs::write(s.dir.path.join("incoming").join(msgs[1].id.as_str()), msgs[1].encode().expect("encode"))
        .expect("write");
    j.settle_offered(&[msgs[0].id]);
    let mut out = Vec::new();
    j.write_offered(&mut out);
    assert_eq!(out, ids(&msgs[1..]));
    assert_eq!(j.offered(), 0);
    assert!(!s.dir.path.join("incoming").join(msgs[0].id.as_str()).exists());
    for q in &msgs[1..] {
        assert_eq!(&s.read("incoming", &q.id), q);
    }
    let mut more = Vec::new();
    j.materialize(&mut more).expect("retire");
    assert!(more.is_empty());
    assert_eq!(jnl(&s), 1, "the sealed segment retired: {:?}", s.segments());
    assert!(j.close().expect("close").is_empty());
    assert_eq!(jnl(&s), 0);
}

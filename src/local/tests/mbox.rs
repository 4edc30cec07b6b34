//! Appending to an mbox: the bytes written, the locks, the refusals;
//! repairing one after a delivery was killed mid-append.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, symlink};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use super::{PYTHON, TempDir, crlf, python};
use crate::local::deliver::{Envelope, Error, Scratch};
use crate::local::mbox::{
    LockConf, Mark, Repair, append, asctime, from_line, lock, open_existing_mailbox, open_locked, open_mailbox,
    remove_dead_dotlock, repair,
};

/// Sun Nov 22 12:06:37 2026 UTC.
const ARRIVAL: i64 = 1_795_349_197;

fn quick() -> LockConf {
    LockConf { timeout: Duration::from_millis(300), ..LockConf::default() }
}

/// Delivers `content` to mailbox `name` in `spool`: open, lock, append, release.
fn deliver(spool: &TempDir, name: &str, env: &Envelope<'_>, content: &[u8]) -> Result<(), Error> {
    let fd = spool.fd();
    let mailbox = open_mailbox(&fd, name, 0o600)?;
    let held = lock(&fd, name, &mailbox, &quick())?;
    append(&mailbox, env, &mut &content[..], &held, &mut Scratch::default())?;
    held.release()
}

#[test]
fn asctime_in_utc() {
    assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
    assert_eq!(asctime(ARRIVAL), "Sun Nov 22 12:06:37 2026");
    assert_eq!(asctime(951_782_400), "Tue Feb 29 00:00:00 2000");
    assert_eq!(asctime(-1), "Wed Dec 31 23:59:59 1969");
    let env = Envelope { sender: "", recipient: "bob@x", arrival: ARRIVAL };
    assert_eq!(from_line(&env), "From MAILER-DAEMON Sun Nov 22 12:06:37 2026\n");
}

#[test]
fn asctime_agrees_with_python() {
    let times: Vec<i64> = (0..200i64).map(|i| i * 86_400 * 211 + i * 3_607 - 2_000_000_000).collect();
    let args: Vec<String> = times.iter().map(i64::to_string).collect();
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let script = "import sys, time\nfor t in sys.argv[1:]: print(time.asctime(time.gmtime(int(t))))";
    let Some(out) = python(script, &args) else { return };
    let ours: Vec<String> = times.iter().map(|&t| asctime(t)).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), ours);
}

#[test]
fn two_appends_make_two_messages() {
    let spool = TempDir::new("mbox-two");
    let first = Envelope { sender: "alice@example.org", recipient: "bob@example.com", arrival: ARRIVAL };
    deliver(&spool, "bob", &first, &crlf(&["Subject: one", "", "From here", "bye"])).unwrap();
    let second = Envelope { sender: "", recipient: "bob@example.com", arrival: ARRIVAL + 1 };
    // The last line unended.
    deliver(&spool, "bob", &second, b"Subject: two\r\n\r\nlast").unwrap();
    let got = fs::read_to_string(spool.path.join("bob")).unwrap();
    let want = "\
From alice@example.org Sun Nov 22 12:06:37 2026
Return-Path: <alice@example.org>
Delivered-To: bob@example.com
Subject: one

>From here
bye

From MAILER-DAEMON Sun Nov 22 12:06:38 2026
Return-Path: <>
Delivered-To: bob@example.com
Subject: two

last

";
    assert_eq!(got, want);
    assert!(!spool.path.join("bob.lock").exists(), "dot-lock left behind");
    let mode = fs::metadata(spool.path.join("bob")).unwrap().mode();
    assert_eq!(mode & 0o077, 0, "mailbox mode {mode:o}");
}

#[test]
fn python_mailbox_reads_what_we_appended() {
    let spool = TempDir::new("mbox-python");
    let env = Envelope { sender: "alice@example.org", recipient: "bob@example.com", arrival: ARRIVAL };
    deliver(&spool, "bob", &env, &crlf(&["Subject: one", "", "From here", "bye"])).unwrap();
    let env = Envelope { sender: "", recipient: "bob@example.com", arrival: ARRIVAL };
    deliver(&spool, "bob", &env, &crlf(&["Subject: two", "", ">From there"])).unwrap();
    let script = "\
import mailbox, sys
m = mailbox.mbox(sys.argv[1], create=False)
print(len(m))
for msg in m:
    print(repr((msg.get_from(), msg['Return-Path'], msg['Delivered-To'], msg['Subject'], msg.get_payload())))
";
    let Some(out) = python(script, &[spool.path.join("bob").as_os_str()]) else { return };
    let want = "\
2
('alice@example.org Sun Nov 22 12:06:37 2026', '<alice@example.org>', 'bob@example.com', 'one', '>From here\\nbye\\n')
('MAILER-DAEMON Sun Nov 22 12:06:37 2026', '<>', 'bob@example.com', 'two', '>>From there\\n')
";
    assert_eq!(out, want);
}

#[test]
fn mailbox_without_final_empty_line_gets_a_separator() {
    for (before, sep) in [("From a x\n\nno empty line\n", "\n"), ("From a x\n\nno line end", "\n\n"), ("x\n\n", "")] {
        let spool = TempDir::new("mbox-sep");
        fs::write(spool.path.join("bob"), before).unwrap();
        let env = Envelope { sender: "a@x", recipient: "bob@x", arrival: ARRIVAL };
        deliver(&spool, "bob", &env, b"Subject: s\r\n\r\nb\r\n").unwrap();
        let got = fs::read_to_string(spool.path.join("bob")).unwrap();
        let want = format!(
            "{before}{sep}From a@x Sun Nov 22 12:06:37 2026\n\
             Return-Path: <a@x>\nDelivered-To: bob@x\nSubject: s\n\nb\n\n"
        );
        assert_eq!(got, want);
    }
}

/// A reader that gives some content, then fails like a bad disk.
struct Failing {
    given: usize,
}

impl io::Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.given >= 200_000 {
            return Err(io::Error::from_raw_os_error(5));
        }
        let n = buf.len().min(4096);
        buf[..n].fill(b'x');
        buf[n - 2..n].copy_from_slice(b"\r\n");
        self.given += n;
        Ok(n)
    }
}

#[test]
fn failed_append_truncates_back() {
    let spool = TempDir::new("mbox-truncate");
    let env = Envelope { sender: "a@x", recipient: "bob@x", arrival: ARRIVAL };
    deliver(&spool, "bob", &env, b"Subject: kept\r\n\r\nbody\r\n").unwrap();
    let before = fs::read(spool.path.join("bob")).unwrap();

    let fd = spool.fd();
    let mailbox = open_mailbox(&fd, "bob", 0o600).unwrap();
    let held = lock(&fd, "bob", &mailbox, &quick()).unwrap();
    let e = append(&mailbox, &env, &mut Failing { given: 0 }, &held, &mut Scratch::default()).unwrap_err();
    assert!(matches!(&e, Error::Io { what, .. } if what == "read the message content"), "{e:?}");
    assert!(e.temporary());
    held.release().unwrap();
    assert_eq!(fs::read(spool.path.join("bob")).unwrap(), before);

    // An unsafe envelope is refused before anything is written.
    let bad = Envelope { sender: "a\r\nX: y@x", recipient: "bob@x", arrival: ARRIVAL };
    assert!(matches!(deliver(&spool, "bob", &bad, b"x\r\n"), Err(Error::Unsafe(_))));
    assert_eq!(fs::read(spool.path.join("bob")).unwrap(), before);
}

#[test]
fn append_refuses_a_lock_for_another_mailbox() {
    let spool = TempDir::new("mbox-other-lock");
    let fd = spool.fd();
    let bob = open_mailbox(&fd, "bob", 0o600).unwrap();
    let carol = open_mailbox(&fd, "carol", 0o600).unwrap();
    let held = lock(&fd, "carol", &carol, &quick()).unwrap();
    let env = Envelope { sender: "a@x", recipient: "bob@x", arrival: ARRIVAL };
    assert!(matches!(append(&bob, &env, &mut &b"x\r\n"[..], &held, &mut Scratch::default()), Err(Error::Unsafe(_))));
    assert_eq!(fs::metadata(spool.path.join("bob")).unwrap().len(), 0);
}

/// A mail reader holding the locks removes the mailbox (emptied) or
/// renames it away, then lets go: the delivery waiting for the locks
/// must not append to the file the name no longer holds (the message
/// would be lost with it), but to the mailbox the name holds then.
#[test]
fn a_mailbox_removed_or_renamed_while_its_locks_are_awaited_is_opened_again() {
    for (case, gone) in [("removed", None), ("renamed", Some("bob.old"))] {
        let spool = TempDir::new("mbox-replaced");
        let env = Envelope { sender: "a@x", recipient: "bob@x", arrival: ARRIVAL };
        deliver(&spool, "bob", &env, b"Subject: read\r\n\r\nold\r\n").unwrap();
        let fd = spool.fd();
        let reader = open_mailbox(&fd, "bob", 0o600).unwrap();
        let held = lock(&fd, "bob", &reader, &quick()).unwrap();
        let path = spool.path.clone();
        let waiting = std::thread::spawn(move || {
            let fd = nix::fcntl::open(&path, nix::fcntl::OFlag::O_DIRECTORY, nix::sys::stat::Mode::empty()).unwrap();
            let conf = LockConf { timeout: Duration::from_secs(5), ..quick() };
            let (file, lock) = open_locked(&fd, "bob", 0o600, &conf).expect("locked");
            append(&file, &env, &mut &b"Subject: new\r\n\r\nnew\r\n"[..], &lock, &mut Scratch::default()).unwrap();
            lock.release().unwrap();
        });
        std::thread::sleep(Duration::from_millis(300));
        match gone {
            None => fs::remove_file(spool.path.join("bob")).unwrap(),
            Some(to) => fs::rename(spool.path.join("bob"), spool.path.join(to)).unwrap(),
        }
        held.release().unwrap();
        waiting.join().unwrap();
        let now = fs::read_to_string(spool.path.join("bob")).unwrap();
        assert!(now.contains("Subject: new") && !now.contains("Subject: read"), "{case}: {now}");
        if let Some(to) = gone {
            let old = fs::read_to_string(spool.path.join(to)).unwrap();
            assert!(!old.contains("Subject: new"), "{case}: appended to the file renamed away");
        }
    }
}

#[test]
fn second_lock_times_out_while_the_first_is_held() {
    let spool = TempDir::new("mbox-lock");
    let fd = spool.fd();
    let mailbox = open_mailbox(&fd, "bob", 0o600).unwrap();
    let held = lock(&fd, "bob", &mailbox, &quick()).unwrap();
    assert!(spool.path.join("bob.lock").exists());

    // Another delivery, with its own descriptor of the mailbox.
    let other = open_mailbox(&fd, "bob", 0o600).unwrap();
    let t0 = Instant::now();
    let e = lock(&fd, "bob", &other, &quick()).unwrap_err();
    let waited = t0.elapsed();
    assert!(matches!(&e, Error::Locked { lock, .. } if lock.contains("dot-lock")), "{e:?}");
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "{waited:?}");
    assert!(e.temporary());
    assert_eq!(e.to_string(), "cannot lock bob: its dot-lock bob.lock still held by another process after 300ms");
    // The kernel locks alone keep it out too.
    let no_dot = LockConf { dotlock: false, ..quick() };
    let e = lock(&fd, "bob", &other, &no_dot).unwrap_err();
    assert!(matches!(&e, Error::Locked { lock, .. } if lock.contains("flock")), "{e:?}");

    drop(held);
    assert!(!spool.path.join("bob.lock").exists(), "dot-lock left behind");
    let again = lock(&fd, "bob", &other, &quick()).unwrap();
    again.release().unwrap();
    assert!(!spool.path.join("bob.lock").exists(), "dot-lock left behind");
}

#[test]
fn stale_dot_lock_broken_fresh_one_kept() {
    let spool = TempDir::new("mbox-stale");
    let fd = spool.fd();
    let mailbox = open_mailbox(&fd, "bob", 0o600).unwrap();
    let dot = spool.path.join("bob.lock");

    File::create(&dot).unwrap();
    let e = lock(&fd, "bob", &mailbox, &quick()).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e:?}");
    assert!(dot.exists(), "a fresh dot-lock was removed");

    let f = File::options().write(true).open(&dot).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3600)).unwrap();
    drop(f);
    let t0 = Instant::now();
    let held = lock(&fd, "bob", &mailbox, &quick()).unwrap();
    assert!(t0.elapsed() < Duration::from_millis(300));
    let age = SystemTime::now().duration_since(fs::metadata(&dot).unwrap().modified().unwrap()).unwrap();
    assert!(age < Duration::from_secs(60), "the stale lock is still there");
    held.release().unwrap();
    assert!(!dot.exists(), "dot-lock left behind");
}

/// Another process, holding a lock of `kind` (flock or lockf) on `path`
/// until its standard input closes.
fn python_holding(path: &std::path::Path, kind: &str) -> Option<std::process::Child> {
    if !std::path::Path::new(PYTHON).exists() {
        eprintln!("skipped: no {PYTHON}");
        return None;
    }
    let script = "\
import fcntl, sys
f = open(sys.argv[1], 'r+')
(fcntl.flock if sys.argv[2] == 'flock' else fcntl.lockf)(f, fcntl.LOCK_EX)
print('locked', flush=True)
sys.stdin.read()
";
    let mut child = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .arg(path)
        .arg(kind)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "locked\n");
    Some(child)
}

#[test]
fn readers_locking_with_flock_or_fcntl_keep_us_out() {
    let spool = TempDir::new("mbox-readers");
    let fd = spool.fd();
    let mailbox = open_mailbox(&fd, "bob", 0o600).unwrap();
    let no_dot = LockConf { dotlock: false, ..quick() };
    for kind in ["flock", "lockf"] {
        let Some(mut reader) = python_holding(&spool.path.join("bob"), kind) else { return };
        let e = lock(&fd, "bob", &mailbox, &no_dot).unwrap_err();
        assert!(matches!(e, Error::Locked { .. }), "{kind}: {e:?}");
        drop(reader.stdin.take());
        assert!(reader.wait().unwrap().success());
        lock(&fd, "bob", &mailbox, &no_dot).unwrap().release().unwrap();
    }
}

#[test]
fn our_lock_keeps_readers_out_whichever_kernel_lock_they_use() {
    let spool = TempDir::new("mbox-we-hold");
    let fd = spool.fd();
    let mailbox = open_mailbox(&fd, "bob", 0o600).unwrap();
    let held = lock(&fd, "bob", &mailbox, &quick()).unwrap();
    let script = "\
import fcntl, sys
f = open(sys.argv[1], 'r+')
for name, take in (('flock', fcntl.flock), ('lockf', fcntl.lockf)):
    try:
        take(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print(name, 'taken')
    except OSError:
        print(name, 'blocked')
";
    let Some(out) = python(script, &[spool.path.join("bob").as_os_str()]) else { return };
    assert_eq!(out, "flock blocked\nlockf blocked\n");
    held.release().unwrap();
    let out = python(script, &[spool.path.join("bob").as_os_str()]).unwrap();
    assert_eq!(out, "flock taken\nlockf taken\n");
}

#[test]
fn open_mailbox_refuses_symlink_hard_link_directory() {
    let spool = TempDir::new("mbox-refuse");
    let fd = spool.fd();
    fs::write(spool.path.join("target"), "").unwrap();
    symlink(spool.path.join("target"), spool.path.join("link")).unwrap();
    symlink(spool.path.join("nowhere"), spool.path.join("dangling")).unwrap();
    fs::write(spool.path.join("twice"), "").unwrap();
    fs::hard_link(spool.path.join("twice"), spool.path.join("twice2")).unwrap();
    fs::create_dir(spool.path.join("dir")).unwrap();
    fs::write(spool.path.join("hook"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(spool.path.join("hook"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    for (name, why) in [
        ("hook", "is executable"),
        ("link", "symbolic link"),
        ("dangling", "symbolic link"),
        ("twice", "2 hard links"),
        ("dir", "directory"),
        ("", "not a mailbox name"),
        (".", "not a mailbox name"),
        ("..", "not a mailbox name"),
        ("a/b", "not a mailbox name"),
    ] {
        match open_mailbox(&fd, name, 0o600) {
            Err(Error::Unsafe(m)) => assert!(m.contains(why), "{name}: {m}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(!spool.path.join("nowhere").exists(), "created through a dangling link");
    assert_eq!(fs::read(spool.path.join("target")).unwrap(), b"");
    assert_eq!(fs::read(spool.path.join("hook")).unwrap(), b"#!/bin/sh\n");
}

#[test]
fn open_mailbox_refuses_someone_elses_file() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to give a file away");
        return;
    }
    let spool = TempDir::new("mbox-owner");
    fs::write(spool.path.join("bob"), "").unwrap();
    std::os::unix::fs::chown(spool.path.join("bob"), Some(65_534), None).unwrap();
    match open_mailbox(&spool.fd(), "bob", 0o600) {
        Err(Error::Unsafe(m)) => assert!(m.contains("belongs to uid 65534"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dot_lock_holds_the_pid_of_its_taker() {
    let spool = TempDir::new("mbox-dot-pid");
    let fd = spool.fd();
    let mailbox = open_mailbox(&fd, "bob", 0o600).unwrap();
    let held = lock(&fd, "bob", &mailbox, &quick()).unwrap();
    assert_eq!(fs::read_to_string(spool.path.join("bob.lock")).unwrap(), format!("{}\n", std::process::id()));
    held.release().unwrap();
}

/// The pid of a process that has ended (and been reaped).
fn dead_pid() -> i32 {
    let mut child = Command::new("/bin/true").spawn().expect("run /bin/true");
    child.wait().unwrap();
    i32::try_from(child.id()).unwrap()
}

/// A dot-lock `name.lock` in `spool` holding `text`, as another process
/// would have left it.
fn dot_lock(spool: &TempDir, name: &str, text: &str) {
    fs::write(spool.path.join(format!("{name}.lock")), text).unwrap();
}

const BIG: Envelope<'static> = Envelope { sender: "a@x", recipient: "bob@x", arrival: ARRIVAL };

/// A message long enough to be written in several pieces, with `From `
/// lines to quote.
fn big_content() -> Vec<u8> {
    let lines: Vec<String> = (0..20_000).map(|i| format!("From line {i} of the big message")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut content = crlf(&["Subject: big", ""]);
    content.extend(crlf(&lines));
    content
}

/// A mailbox `bob` holding one message, as `before`; then the mark a
/// delivery of the big message takes, and the bytes that delivery
/// writes after it when it runs to the end.
fn killed_delivery(spool: &TempDir) -> (Vec<u8>, Mark, Vec<u8>) {
    deliver(spool, "bob", &BIG, b"Subject: kept\r\n\r\nbody without a last line end").unwrap();
    let before = fs::read(spool.path.join("bob")).unwrap();
    let fd = spool.fd();
    let mailbox = open_mailbox(&fd, "bob", 0o600).unwrap();
    let held = lock(&fd, "bob", &mailbox, &quick()).unwrap();
    let mark = Mark::of(&mailbox, &held).unwrap();
    assert_eq!(mark.size, before.len() as u64);
    append(&mailbox, &BIG, &mut &big_content()[..], &held, &mut Scratch::default()).unwrap();
    held.release().unwrap();
    let written = fs::read(spool.path.join("bob")).unwrap()[before.len()..].to_vec();
    (before, mark, written)
}

#[test]
fn repair_cuts_a_killed_append_back_wherever_it_was_killed() {
    let spool = TempDir::new("mbox-repair");
    let (before, mark, written) = killed_delivery(&spool);
    let fd = spool.fd();
    let path = spool.path.join("bob");
    // Killed after 1 byte, mid-head, mid-content, after the whole.
    for cut in [1, 40, written.len() / 2, written.len()] {
        let mut partial = before.clone();
        partial.extend_from_slice(&written[..cut]);
        fs::write(&path, &partial).unwrap();
        let dead = dead_pid();
        dot_lock(&spool, "bob", &format!("{dead}\n"));
        let done = repair(&fd, "bob", &mark, dead, &BIG, &mut &big_content()[..], &quick())
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let from = before.len() as u64 + cut as u64;
        assert_eq!(done, Repair::CutBack { from, to: mark.size }, "cut at {cut}");
        assert_eq!(fs::read(&path).unwrap(), before, "cut at {cut}");
        assert!(!spool.path.join("bob.lock").exists(), "cut at {cut}: dot-lock left behind");
    }
    let script = "import mailbox, sys\nprint([m['Subject'] for m in mailbox.mbox(sys.argv[1], create=False)])";
    let Some(out) = python(script, &[path.as_os_str()]) else { return };
    assert_eq!(out, "['kept']\n");
}

#[test]
fn repair_with_nothing_written_changes_nothing_but_the_dead_lock() {
    let spool = TempDir::new("mbox-repair-intact");
    let (before, mark, _) = killed_delivery(&spool);
    fs::write(spool.path.join("bob"), &before).unwrap();
    let dead = dead_pid();
    dot_lock(&spool, "bob", &format!("{dead}\n"));
    let done = repair(&spool.fd(), "bob", &mark, dead, &BIG, &mut &big_content()[..], &quick()).unwrap();
    assert_eq!(done, Repair::Intact { size: mark.size });
    assert_eq!(fs::read(spool.path.join("bob")).unwrap(), before);
    assert!(!spool.path.join("bob.lock").exists(), "dot-lock left behind");
}

#[test]
fn repair_refuses_a_mailbox_that_is_not_the_killed_deliverys() {
    let spool = TempDir::new("mbox-repair-refuse");
    let (before, mark, written) = killed_delivery(&spool);
    let path = spool.path.join("bob");
    let fd = spool.fd();
    // Each time the mailbox is rewritten in place (fs::write keeps the
    // inode), and the repair must leave it as it is.
    let refused = |bytes: &[u8], why: &str| {
        fs::write(&path, bytes).unwrap();
        match repair(&fd, "bob", &mark, dead_pid(), &BIG, &mut &big_content()[..], &quick()) {
            Err(Error::Unsafe(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("{why}: {other:?}"),
        }
        assert_eq!(fs::read(&path).unwrap(), bytes, "{why}");
    };

    // Shorter than the mark: rewritten by a reader.
    refused(&before[..before.len() - 5], "shorter than the");
    // A byte past the mark that the delivery did not write.
    let mut changed = before.clone();
    changed.extend_from_slice(&written[..100]);
    let at = before.len() + 60;
    changed[at] ^= 0x20;
    refused(&changed, &format!("differs from the killed delivery's message at byte {at}"));
    // The whole message, then another writer's.
    let mut more = before.clone();
    more.extend_from_slice(&written);
    more.extend_from_slice(b"From other Sun Nov 22 12:06:37 2026\nSubject: theirs\n\nx\n\n");
    refused(&more, "holds more than the killed delivery's message");

    // Another file in its place (the same bytes, another inode).
    let mut partial = before.clone();
    partial.extend_from_slice(&written[..100]);
    fs::write(spool.path.join("new"), &partial).unwrap();
    fs::rename(spool.path.join("new"), &path).unwrap();
    let before_ino = fs::metadata(&path).unwrap().ino();
    refused(&partial, "not the file the killed delivery wrote to");
    assert_eq!(fs::metadata(&path).unwrap().ino(), before_ino);
}

#[test]
fn repair_waits_for_a_live_processs_dot_lock() {
    let spool = TempDir::new("mbox-repair-live");
    let (before, mark, written) = killed_delivery(&spool);
    let mut partial = before.clone();
    partial.extend_from_slice(&written[..100]);
    fs::write(spool.path.join("bob"), &partial).unwrap();
    // Another delivery, alive (this process), holds the dot-lock.
    let live = format!("{}\n", std::process::id());
    dot_lock(&spool, "bob", &live);
    let e = repair(&spool.fd(), "bob", &mark, dead_pid(), &BIG, &mut &big_content()[..], &quick()).unwrap_err();
    assert!(matches!(&e, Error::Locked { lock, .. } if lock.contains("dot-lock")), "{e:?}");
    assert_eq!(fs::read(spool.path.join("bob")).unwrap(), partial);
    assert_eq!(fs::read_to_string(spool.path.join("bob.lock")).unwrap(), live);
}

#[test]
fn remove_dead_dotlock_removes_only_the_dead_processs() {
    let spool = TempDir::new("mbox-dead-lock");
    let fd = spool.fd();
    let dead = dead_pid();
    let path = spool.path.join("bob.lock");
    assert!(!remove_dead_dotlock(&fd, "bob", dead).unwrap(), "no lock at all");
    for other in [String::new(), format!("{}\n", dead + 1), format!("{dead}x\n"), String::from("garbage")] {
        dot_lock(&spool, "bob", &other);
        assert!(!remove_dead_dotlock(&fd, "bob", dead).unwrap(), "{other:?}");
        assert_eq!(fs::read_to_string(&path).unwrap(), other);
    }
    fs::remove_file(&path).unwrap();
    fs::write(spool.path.join("elsewhere"), format!("{dead}\n")).unwrap();
    symlink(spool.path.join("elsewhere"), &path).unwrap();
    assert!(!remove_dead_dotlock(&fd, "bob", dead).unwrap(), "a symbolic link");
    assert!(fs::symlink_metadata(&path).is_ok());
    fs::remove_file(&path).unwrap();
    for own in [format!("{dead}\n"), format!("{dead}")] {
        dot_lock(&spool, "bob", &own);
        assert!(remove_dead_dotlock(&fd, "bob", dead).unwrap(), "{own:?}");
        assert!(!path.exists(), "{own:?}");
    }
}

#[test]
fn repair_never_creates_a_mailbox() {
    let spool = TempDir::new("mbox-repair-missing");
    let fd = spool.fd();
    let mark = Mark { size: 0, dev: 1, ino: 2 };
    let e = repair(&fd, "bob", &mark, dead_pid(), &BIG, &mut &b""[..], &quick()).unwrap_err();
    assert!(matches!(&e, Error::Io { error, .. } if error.kind() == io::ErrorKind::NotFound), "{e:?}");
    assert!(!spool.path.join("bob").exists(), "the repair created the mailbox");
    assert!(matches!(open_existing_mailbox(&fd, "bob"), Err(Error::Io { .. })));
    symlink(spool.path.join("elsewhere"), spool.path.join("bob")).unwrap();
    assert!(matches!(open_existing_mailbox(&fd, "bob"), Err(Error::Unsafe(_))));
    assert!(!spool.path.join("elsewhere").exists(), "created through a dangling link");
}

#[test]
fn repair_of_a_file_takes_no_dot_lock() {
    // A file named in an alias or .forward is locked by the kernel only:
    // its directory need not be writable, and a NAME.lock there is not
    // the delivery's.
    let spool = TempDir::new("mbox-repair-file");
    let (before, mark, written) = killed_delivery(&spool);
    let mut partial = before.clone();
    partial.extend_from_slice(&written[..written.len() / 3]);
    fs::write(spool.path.join("bob"), &partial).unwrap();
    let dead = dead_pid();
    dot_lock(&spool, "bob", &format!("{dead}\n"));
    let kernel_only = LockConf { dotlock: false, ..quick() };
    let done = repair(&spool.fd(), "bob", &mark, dead, &BIG, &mut &big_content()[..], &kernel_only).unwrap();
    assert_eq!(done, Repair::CutBack { from: partial.len() as u64, to: mark.size });
    assert_eq!(fs::read(spool.path.join("bob")).unwrap(), before);
    assert_eq!(fs::read_to_string(spool.path.join("bob.lock")).unwrap(), format!("{dead}\n"));
}

//! Appending to an mbox: the bytes written, the locks, the refusals.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, symlink};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use super::{PYTHON, TempDir, crlf, python};
use crate::local::deliver::{Envelope, Error};
use crate::local::mbox::{LockConf, append, asctime, from_line, lock, open_mailbox};

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
    append(&mailbox, env, &mut &content[..], &held)?;
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
    let e = append(&mailbox, &env, &mut Failing { given: 0 }, &held).unwrap_err();
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
    assert!(matches!(append(&bob, &env, &mut &b"x\r\n"[..], &held), Err(Error::Unsafe(_))));
    assert_eq!(fs::metadata(spool.path.join("bob")).unwrap().len(), 0);
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
    for (name, why) in [
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

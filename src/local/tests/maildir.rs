//! Delivering into a Maildir: the directories, the names, the refusals.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};

use super::{TempDir, crlf, python};
use crate::local::deliver::{Envelope, Error, Scratch};
use crate::local::maildir::{Pending, deliver, open_maildir};

const ENV: Envelope<'static> = Envelope { sender: "alice@example.org", recipient: "bob@example.com", arrival: 0 };

#[test]
fn delivery_lands_in_new_with_tmp_left_empty() {
    let home = TempDir::new("maildir-new");
    let dir = open_maildir(&home.fd(), "Maildir").unwrap();
    for sub in ["tmp", "new", "cur"] {
        let meta = fs::symlink_metadata(home.path.join("Maildir").join(sub)).unwrap();
        assert!(meta.is_dir(), "{sub}");
        assert_eq!(meta.mode() & 0o077, 0, "{sub} mode {:o}", meta.mode());
    }
    let content = crlf(&["Subject: hi", "", "From here", "bye"]);
    let name = deliver(&dir, "mx.example.com", &ENV, &mut &content[..], &mut Scratch::default()).unwrap();
    assert_eq!(home.names("Maildir/new"), std::slice::from_ref(&name));
    assert!(home.names("Maildir/tmp").is_empty());
    assert!(home.names("Maildir/cur").is_empty());
    let path = home.path.join("Maildir/new").join(&name);
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "Return-Path: <alice@example.org>\nDelivered-To: bob@example.com\nSubject: hi\n\nFrom here\nbye\n"
    );
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    assert!(name.ends_with(".mx.example.com"), "{name}");
    let (secs, rest) = name.split_once(".M").unwrap();
    assert!(secs.parse::<u64>().is_ok(), "{name}");
    assert!(rest.contains(&format!("P{}Q", std::process::id())), "{name}");
}

#[test]
fn a_batch_written_to_tmp_is_in_new_only_once_committed() {
    // 70 files: more than a batch keeps open for one syncfs (64), so
    // where syncfs is used (Linux, ext4 and the like) both ways of
    // syncing are taken.
    let home = TempDir::new("maildir-batch");
    let mut batch = Pending::new(open_maildir(&home.fd(), "Maildir").unwrap());
    let bodies: Vec<String> = (0..70).map(|i| format!("body {i}")).collect();
    for b in &bodies {
        let content = crlf(&["Subject: batch", "", b]);
        batch.write("h", &ENV, &mut &content[..], &mut Scratch::default()).unwrap();
    }
    let names: Vec<String> = batch.names().map(String::from).collect();
    let mut in_tmp = home.names("Maildir/tmp");
    in_tmp.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(in_tmp, want);
    assert!(home.names("Maildir/new").is_empty(), "nothing in new/ before the commit");
    batch.commit().unwrap();
    assert!(home.names("Maildir/tmp").is_empty());
    for (name, body) in names.iter().zip(&bodies) {
        let text = fs::read_to_string(home.path.join("Maildir/new").join(name)).unwrap();
        assert!(text.ends_with(&format!("\n\n{body}\n")), "{text}");
    }
    // An empty batch commits nothing, and fails nothing.
    Pending::new(open_maildir(&home.fd(), "Maildir").unwrap()).commit().unwrap();
    assert_eq!(home.names("Maildir/new").len(), 70);
}

#[test]
fn a_failed_commit_takes_the_whole_batch_back_out() {
    let home = TempDir::new("maildir-batch-fail");
    let mut batch = Pending::new(open_maildir(&home.fd(), "Maildir").unwrap());
    for b in ["one", "two", "three"] {
        let content = crlf(&["", b]);
        batch.write("h", &ENV, &mut &content[..], &mut Scratch::default()).unwrap();
    }
    let names: Vec<String> = batch.names().map(String::from).collect();
    // The second cannot be renamed over a directory of its name.
    fs::create_dir(home.path.join("Maildir/new").join(&names[1])).unwrap();
    let e = batch.commit().unwrap_err();
    assert!(e.to_string().contains(&format!("rename tmp/{} to new/", names[1])), "{e}");
    assert!(home.names("Maildir/tmp").is_empty(), "{:?}", home.names("Maildir/tmp"));
    assert_eq!(home.names("Maildir/new"), vec![names[1].clone()], "only the directory is left");
}

#[test]
fn an_abandoned_batch_leaves_nothing() {
    let home = TempDir::new("maildir-batch-abandon");
    let mut batch = Pending::new(open_maildir(&home.fd(), "Maildir").unwrap());
    for b in ["one", "two"] {
        let content = crlf(&["", b]);
        batch.write("h", &ENV, &mut &content[..], &mut Scratch::default()).unwrap();
    }
    assert_eq!(home.names("Maildir/tmp").len(), 2);
    batch.abandon();
    assert!(home.names("Maildir/tmp").is_empty());
    assert!(home.names("Maildir/new").is_empty());
}

#[test]
fn names_unique_over_a_thousand_deliveries() {
    let home = TempDir::new("maildir-many");
    let dir = open_maildir(&home.fd(), "Maildir/").unwrap();
    let mut names = HashSet::new();
    for i in 0..1000 {
        let content = format!("Subject: {i}\r\n\r\nbody\r\n");
        let name = deliver(&dir, "host/with:odd", &ENV, &mut content.as_bytes(), &mut Scratch::default()).unwrap();
        assert!(name.ends_with(".host\\057with\\072odd"), "{name}");
        assert!(names.insert(name), "a name came twice");
    }
    assert_eq!(home.names("Maildir/new").len(), 1000);
    assert!(home.names("Maildir/tmp").is_empty());
}

#[test]
fn python_mailbox_reads_the_maildir() {
    let home = TempDir::new("maildir-python");
    let dir = open_maildir(&home.fd(), "Mail/inbox/").unwrap();
    for i in 0..3 {
        let content = crlf(&[&format!("Subject: m{i}"), "", "From the body"]);
        deliver(&dir, "mx.example.com", &ENV, &mut &content[..], &mut Scratch::default()).unwrap();
    }
    let script = "\
import mailbox, sys
m = mailbox.Maildir(sys.argv[1], factory=None, create=False)
print(len(m))
for subject, ret, to, body in sorted((msg['Subject'], msg['Return-Path'], msg['Delivered-To'], msg.get_payload()) for msg in m):
    print(repr((subject, ret, to, body)))
";
    let Some(out) = python(script, &[home.path.join("Mail/inbox").as_os_str()]) else { return };
    let mut want = String::from("3\n");
    for i in 0..3 {
        want.push_str(&format!("('m{i}', '<alice@example.org>', 'bob@example.com', 'From the body\\n')\n"));
    }
    assert_eq!(out, want);
}

#[test]
fn existing_maildir_reused_and_missing_subdirectories_made() {
    let home = TempDir::new("maildir-existing");
    fs::create_dir_all(home.path.join("Maildir/cur")).unwrap();
    fs::write(home.path.join("Maildir/cur/old:2,S"), "old").unwrap();
    let dir = open_maildir(&home.fd(), "./Maildir").unwrap();
    deliver(&dir, "h", &ENV, &mut &b"x\r\n"[..], &mut Scratch::default()).unwrap();
    assert_eq!(home.names("Maildir/cur"), ["old:2,S"]);
    assert_eq!(home.names("Maildir/new").len(), 1);
}

#[test]
fn open_maildir_refuses_links_dotdot_and_absolute_paths() {
    let home = TempDir::new("maildir-refuse");
    fs::create_dir(home.path.join("real")).unwrap();
    symlink(home.path.join("real"), home.path.join("Maildir")).unwrap();
    fs::create_dir_all(home.path.join("Mail/box")).unwrap();
    symlink(home.path.join("real"), home.path.join("Mail/box/new")).unwrap();
    fs::write(home.path.join("file"), "").unwrap();
    for (path, why) in [
        ("Maildir", "symbolic link"),
        ("Maildir/sub", "symbolic link"),
        ("Mail/box", "symbolic link"),
        ("file", "not a directory"),
        ("..", "\"..\""),
        ("Mail/../..", "\"..\""),
        ("/tmp/Maildir", "absolute"),
        ("", "names no directory"),
        ("./", "names no directory"),
    ] {
        match open_maildir(&home.fd(), path) {
            Err(Error::Unsafe(m)) => assert!(m.contains(why), "{path}: {m}"),
            other => panic!("{path}: {other:?}"),
        }
    }
    assert!(home.names("real").is_empty(), "created beneath a link");
}

#[test]
fn open_maildir_refuses_someone_elses_directory() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to give a directory away");
        return;
    }
    let home = TempDir::new("maildir-owner");
    fs::create_dir_all(home.path.join("Maildir/new")).unwrap();
    std::os::unix::fs::chown(home.path.join("Maildir/new"), Some(65_534), None).unwrap();
    match open_maildir(&home.fd(), "Maildir") {
        Err(Error::Unsafe(m)) => assert!(m.contains("new in maildir Maildir belongs to uid 65534"), "{m}"),
        other => panic!("{other:?}"),
    }
}

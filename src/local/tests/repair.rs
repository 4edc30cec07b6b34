//! What a killed delivery child's report tells its parent, the
//! arguments of `local repair`, and the recipient's outcome after it.

use std::time::Duration;

use sandbox::Unconfined;

use crate::ipc::msg::RecipientStatus;
use crate::local::agent::Outcome;
use crate::local::deliver::Envelope;
use crate::local::mbox::Mark;
use crate::local::repair::{Killed, Progress, Request, at_line, parse, progress};
use crate::local::spawn::split_report;

const MARK: Mark = Mark { size: 1234, dev: 2049, ino: 987_654 };

fn killed(kind: &'static str, progress: Progress) -> Killed<'static> {
    let env = Envelope { sender: "a@x", recipient: "bob@x", arrival: 1_795_349_197 };
    Killed { kind, dir: "/var/mail", name: "bob", env, pid: 4321, progress }
}

#[test]
fn progress_lines_in_a_report() {
    assert_eq!(at_line(&MARK), "at 1234 2049 987654");
    let cases: [(&str, Progress); 8] = [
        ("", Progress::NotWriting),
        ("4.2.0 cannot lock bob\n", Progress::NotWriting),
        ("at 1234 2049 987654\n", Progress::Writing(MARK)),
        ("at 1234 2049 987654\n4.3.0 write to mailbox bob: EIO\n", Progress::Writing(MARK)),
        ("at 1234 2049 987654\nappended\n", Progress::Appended),
        ("at 1234 2049 987654\nappended\n2.0.0 delivered to mailbox\n", Progress::Appended),
        // `appended` means nothing without `at` before it.
        ("appended\n", Progress::NotWriting),
        ("at 1234 2049\nat x 1 2\nat 1 2 3 4\n at 1 2 3\n", Progress::NotWriting),
    ];
    for (report, want) in cases {
        assert_eq!(progress(report.as_bytes()), want, "{report:?}");
    }
}

#[test]
fn the_final_line_is_the_report_past_progress_lines() {
    let (dsn, reason) = split_report("at 1234 2049 987654\nappended\n2.0.0 delivered to mailbox\n");
    assert_eq!((dsn, reason.as_str()), (Some("2.0.0"), "delivered to mailbox"));
    let (dsn, reason) = split_report("at 0 1 2\n4.2.2 write to mailbox bob: No space left on device (mailbox full)\n");
    assert_eq!(dsn, Some("4.2.2"));
    assert_eq!(reason, "write to mailbox bob: No space left on device (mailbox full)");
}

#[test]
fn repair_arguments_read_back() {
    let k = killed("mbox", Progress::Writing(MARK));
    let argv = k.argv("20000", "confined").unwrap();
    assert_eq!(
        argv,
        [
            "local",
            "repair",
            "mbox",
            "/var/mail",
            "bob",
            "a@x",
            "bob@x",
            "1795349197",
            "4321",
            "20000",
            "confined",
            "1234",
            "2049",
            "987654"
        ]
    );
    assert!(k.needs_content());
    let want = Request {
        kind: "mbox",
        dir: "/var/mail",
        name: "bob",
        env: k.env,
        dead: 4321,
        lock_timeout: Duration::from_secs(20),
        unconfined: Unconfined::Refused,
        mark: Some(MARK),
    };
    assert_eq!(parse(&argv[2..]), Ok(want));

    // Killed before it wrote, or after the whole message: the dead
    // child's dot-lock only, and for a file (no dot-lock) nothing.
    for p in [Progress::NotWriting, Progress::Appended] {
        let k = killed("mbox", p);
        assert!(!k.needs_content());
        let argv = k.argv("20000", "unconfined").unwrap();
        assert_eq!(argv.len(), 11, "{argv:?}");
        let r = parse(&argv[2..]).unwrap();
        assert_eq!((r.mark, r.dead, r.unconfined), (None, 4321, Unconfined::Allowed));
        assert_eq!(killed("file", p).argv("20000", "confined"), None);
    }
    let file = killed("file", Progress::Writing(MARK)).argv("20000", "confined").unwrap();
    assert_eq!(parse(&file[2..]).unwrap().kind, "file");
}

#[test]
fn repair_refuses_bad_arguments() {
    let good = killed("mbox", Progress::Writing(MARK)).argv("20000", "confined").unwrap();
    let with = |i: usize, v: &str| {
        let mut a = good[2..].to_vec();
        a[i] = v.to_string();
        a
    };
    for (args, why) in [
        (with(0, "maildir"), "no repair for mailbox kind maildir"),
        (with(6, "0"), "is not a pid"),
        (with(6, "-1"), "is not a pid"),
        (with(6, "x"), "is not a pid"),
        (with(5, "yesterday"), "is not a number"),
        (with(11, "1x"), "a malformed mark"),
        (good[2..12].to_vec(), "wrong arguments"),
        (good[3..].to_vec(), "wrong arguments"),
    ] {
        match parse(&args) {
            Err(e) => assert!(e.contains(why), "{args:?}: {e}"),
            Ok(r) => panic!("{args:?}: {r:?}"),
        }
    }
}

#[test]
fn outcome_after_a_killed_delivery() {
    let signal = || Outcome::defer("4.3.0", "delivery killed by SIGKILL");
    let cut = String::from("mailbox bob cut back from 5000 to 1234 bytes");

    let o = killed("mbox", Progress::Writing(MARK)).outcome(signal(), Some(Ok(cut.clone())));
    assert_eq!(o.status, RecipientStatus::Deferred);
    assert_eq!(o.dsn, "4.3.0");
    assert_eq!(o.reason, "delivery killed by SIGKILL; mailbox bob cut back from 5000 to 1234 bytes");

    let o = killed("file", Progress::Writing(MARK)).outcome(signal(), Some(Err(String::from("no such file"))));
    assert_eq!(o.status, RecipientStatus::Deferred);
    assert_eq!(o.reason, "delivery killed by SIGKILL; the file was not repaired: no such file");

    let o = killed("mbox", Progress::NotWriting).outcome(signal(), Some(Ok(String::from("dot-lock removed"))));
    assert_eq!((o.status, o.reason.as_str()), (RecipientStatus::Deferred, "delivery killed by SIGKILL"));

    // The whole message was in the mailbox: delivered, not again.
    let o = killed("mbox", Progress::Appended).outcome(signal(), Some(Ok(cut)));
    assert!(matches!(o.status, RecipientStatus::Delivered { .. }), "{o:?}");
    assert_eq!(o.reason, "delivered to mailbox (then delivery killed by SIGKILL)");
}

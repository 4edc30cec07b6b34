//! Fills a spool's deferred/ with many waiting messages, for measuring
//! what qmgr holds in memory for them (bench/deferred.sh).
//!
//! cargo run --release --example fill_deferred -- SPOOL COUNT [SIZE] [WAIT_SECONDS]
//!
//! Each message has one recipient at a remote domain, deferred once with
//! a reason, and SIZE bytes of content (default 5120); its file goes to
//! `deferred/<hash>/ID` dated WAIT_SECONDS (default 86400) ahead, which is
//! when qmgr tries it next. The spool's directories must exist (start
//! and stop mta once). Files are written as qmgr would leave them: no
//! fsync (this is a benchmark set-up, not mail).

use std::fs::{File, FileTimes};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use mta::qmgr::schedule::deferred_subdir;
use mta::queue::{Client, Envelope, Protocol, QueueFile, QueueIdGen, Recipient, State, Status, Time};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: fill_deferred SPOOL COUNT [SIZE] [WAIT_SECONDS]";
    let (Some(spool), Some(count)) = (args.first(), args.get(1).and_then(|c| c.parse::<usize>().ok())) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5120);
    let wait: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(86_400);
    let deferred = Path::new(spool).join("deferred");
    if !deferred.is_dir() {
        eprintln!("fill_deferred: {} is not a directory (start and stop mta once first)", deferred.display());
        std::process::exit(1);
    }
    let now = Time::now();
    let next = SystemTime::now() + Duration::from_secs(wait);
    let mut content = b"Subject: waiting\r\nFrom: <bench@bench.test>\r\n\r\n".to_vec();
    while content.len() < size {
        content.extend_from_slice(b"0123456789012345678901234567890123456789012345678901234567890123456789012345\r\n");
    }
    // An instance number qmgr's own generator does not use.
    let mut ids = QueueIdGen::new(7);
    for i in 0..count {
        let q = QueueFile {
            id: ids.next_id(),
            envelope: Envelope {
                sender: format!("bench{i}@bench.test"),
                arrival: now,
                client: Client {
                    address: "127.0.0.1".into(),
                    hostname: "localhost".into(),
                    helo: "localhost".into(),
                    protocol: Protocol::Esmtp,
                    tls: None,
                },
                size: content.len() as u64,
                ..Envelope::default()
            },
            recipients: vec![Recipient {
                address: format!("rcpt{i}@remote.bench.test"),
                status: Status {
                    state: State::Deferred,
                    attempts: 1,
                    next_attempt: now.secs + wait as i64,
                    changed: now.secs,
                    reason: String::from("4.4.1 connect to remote.bench.test: Connection refused"),
                    ..Status::default()
                },
                ..Recipient::default()
            }],
            content: content.clone(),
        };
        let dir = deferred.join(deferred_subdir(&q.id));
        let path = dir.join(q.id.as_str());
        let bytes = q.encode().unwrap_or_else(|e| panic!("encode: {e}"));
        let mut f = File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        f.write_all(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        f.set_times(FileTimes::new().set_modified(next)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    println!("{count} messages in {}", deferred.display());
}

//! How fast can a message be made durable? Compares, on a real disk:
//! (a) one queue file per message: write, fsync, rename;
//! (b) the intake journal: append a batch, one write and one fdatasync
//!     per batch (group commit), then materialise the queue files and
//!     retire the segments.
//!
//! cargo run --release --example queue_commit_bench -- \
//!     [--messages N] [--size 5120] [--batch B] [--dir /var/tmp/x] [--journal-only]
//!
//! Prints messages per second (wall clock) and CPU time (user + system,
//! from getrusage) per message.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mta::queue::{
    BodyType, Client, Envelope, Journal, JournalDirs, JournalOptions, Notify, Protocol, QueueFile, QueueIdGen,
    Recipient, Status, Time,
};
use nix::fcntl::{OFlag, open, openat, renameat};
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::stat::Mode;

struct Args {
    messages: usize,
    size: usize,
    batches: Vec<usize>,
    dir: PathBuf,
    per_message: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        messages: 5000,
        size: 5120,
        batches: vec![1, 20, 100],
        dir: PathBuf::from("/var/tmp/mta-queue-bench"),
        per_message: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--journal-only" {
            a.per_message = false;
            continue;
        }
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        let num = || v.parse::<usize>().map_err(|e| format!("{k} {v}: {e}"));
        match k.as_str() {
            "--messages" => a.messages = num()?.max(1),
            "--size" => a.size = num()?,
            "--batch" => a.batches = vec![num()?.max(1)],
            "--dir" => a.dir = PathBuf::from(&v),
            _ => {
                return Err(format!(
                    "unknown option {k}; use --messages N --size BYTES --batch B --dir PATH --journal-only"
                ));
            }
        }
    }
    Ok(a)
}

fn cpu() -> Duration {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// Wall clock and CPU time of a stretch of work.
#[derive(Default, Clone, Copy)]
struct Cost {
    wall: Duration,
    cpu: Duration,
}

impl Cost {
    fn measure<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let (w, c) = (Instant::now(), cpu());
        let r = f();
        self.wall += w.elapsed();
        self.cpu += cpu().saturating_sub(c);
        r
    }

    fn report(&self, what: &str, n: usize) {
        println!(
            "{what:<44} {:>9.0} msg/s  {:>7.1} µs CPU/msg  ({n} messages in {:.2} s)",
            n as f64 / self.wall.as_secs_f64(),
            self.cpu.as_secs_f64() * 1e6 / n as f64,
            self.wall.as_secs_f64()
        );
    }
}

fn template(ids: &mut QueueIdGen, size: usize) -> QueueFile {
    let mut content = Vec::with_capacity(size);
    let line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n";
    while content.len() < size {
        content.extend_from_slice(&line[..line.len().min(size - content.len())]);
    }
    QueueFile {
        id: ids.next_id(),
        envelope: Envelope {
            sender: "sender@example.org".into(),
            arrival: Time::now(),
            client: Client {
                address: "192.0.2.25".into(),
                hostname: "mail.example.org".into(),
                helo: "mail.example.org".into(),
                protocol: Protocol::Esmtps,
                tls: Some("TLSv1.3 TLS_AES_128_GCM_SHA256".into()),
            },
            body: BodyType::EightBitMime,
            smtputf8: false,
            dsn_ret: None,
            dsn_envid: None,
            size: size as u64,
        },
        recipients: vec![Recipient {
            address: "rcpt@example.net".into(),
            orcpt: None,
            notify: Some(Notify::On { success: false, failure: true, delay: true }),
            status: Status::default(),
        }],
        content,
    }
}

fn fresh_dir(p: &Path) -> Result<OwnedFd, String> {
    let _ = std::fs::remove_dir_all(p);
    std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
    open(p, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// (a) One file per message, made durable before the next (with
/// `dir_sync`, the rename too).
fn per_message(a: &Args, dir_sync: bool) -> Result<(), String> {
    let dir = fresh_dir(&a.dir.join("files"))?;
    let mut ids = QueueIdGen::new(1);
    let mut q = template(&mut ids, a.size);
    let mut cost = Cost::default();
    let mut buf = Vec::new();
    cost.measure(|| -> Result<(), String> {
        for _ in 0..a.messages {
            q.id = ids.next_id();
            buf.clear();
            q.encode_into(&mut buf).map_err(|e| e.to_string())?;
            let tmp = format!(".tmp.{}", q.id);
            let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = openat(dir.as_fd(), tmp.as_str(), flags, Mode::from_bits_truncate(0o600))
                .map_err(|e| format!("create: {e}"))?;
            let mut f = File::from(fd);
            f.write_all(&buf).and_then(|()| f.sync_data()).map_err(|e| format!("write: {e}"))?;
            renameat(dir.as_fd(), tmp.as_str(), dir.as_fd(), q.id.as_str()).map_err(|e| format!("rename: {e}"))?;
            if dir_sync {
                nix::unistd::fsync(dir.as_fd()).map_err(|e| format!("fsync dir: {e}"))?;
            }
        }
        Ok(())
    })?;
    let what =
        if dir_sync { "(a) per message: write+fsync+rename+fsync(dir)" } else { "(a) per message: write+fsync+rename" };
    cost.report(what, a.messages);
    Ok(())
}

/// (b) The journal with batches of `batch`.
fn journal(a: &Args, batch: usize) -> Result<(), String> {
    let base = a.dir.join(format!("journal-{batch}"));
    let jdir = fresh_dir(&base.join("journal"))?;
    let incoming = fresh_dir(&base.join("incoming"))?;
    let dirs = JournalDirs { journal: jdir.as_fd(), incoming: incoming.as_fd(), elsewhere: &[] };
    let (mut j, _) = Journal::open(&dirs, 1, JournalOptions::default()).map_err(|e| e.to_string())?;
    let mut ids = QueueIdGen::new(1);
    let mut q = template(&mut ids, a.size);
    let (mut commit, mut mat) = (Cost::default(), Cost::default());
    let mut out = Vec::with_capacity(batch);
    let mut left = a.messages;
    while left > 0 {
        let n = batch.min(left);
        left -= n;
        commit.measure(|| -> Result<(), String> {
            for _ in 0..n {
                q.id = ids.next_id();
                j.append(&q).map_err(|e| e.to_string())?;
            }
            j.commit().map(drop).map_err(|e| e.to_string())
        })?;
        out.clear();
        mat.measure(|| j.materialize(&mut out)).map_err(|e| e.to_string())?;
    }
    mat.measure(|| j.close()).map_err(|e| e.to_string())?;
    commit.report(&format!("(b) journal, batch {batch}: append+commit"), a.messages);
    mat.report(&format!("    batch {batch}: materialise+retire"), a.messages);
    let total = Cost { wall: commit.wall + mat.wall, cpu: commit.cpu + mat.cpu };
    total.report(&format!("    batch {batch}: end to end"), a.messages);
    Ok(())
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("queue_commit_bench: {e}");
            std::process::exit(2);
        }
    };
    println!("{} messages of {} bytes in {}", a.messages, a.size, a.dir.display());
    let r = if a.per_message { per_message(&a, false).and_then(|()| per_message(&a, true)) } else { Ok(()) };
    let r = r.and_then(|()| a.batches.iter().try_for_each(|&b| journal(&a, b)));
    let _ = std::fs::remove_dir_all(&a.dir);
    if let Err(e) = r {
        eprintln!("queue_commit_bench: {e}");
        std::process::exit(1);
    }
}

//! Durability that a missing flush would fail: clients send mail under
//! load while cleanup, smtpd and finally master are killed with SIGKILL at
//! several points; after a restart every message that got a 250 must be in
//! the queue, valid, with its content. Loopback only, bounded in time.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mta")).with_file_name(name)
}

struct Instance {
    dir: PathBuf,
    port: u16,
}

impl Instance {
    fn new() -> Instance {
        let dir = std::env::temp_dir().join(format!("mta-durability-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Below Linux's ephemeral ports (32768 and up): the source port of
        // a connection still in TIME_WAIT there, from an earlier run's
        // thousands of clients, makes master's bind fail.
        let port = 20000 + (std::process::id() % 12000) as u16;
        let libexec = bin("mta").parent().unwrap().to_path_buf();
        std::fs::write(
            dir.join("mta.conf"),
            format!(
                "hostname = \"mx.example.org\";\nspool = \"spool\";\nlibexec_directory = \"{}\";\npidfile = \"mta.pid\";\n\
                 control {{ socket = \"mta.sock\"; }}\nlisten {{ smtp {{ address = \"127.0.0.1:{port}\"; tls = none; }} }}\n\
                 supervise {{ restart_delay = 1s; }}\n",
                libexec.display()
            ),
        )
        .unwrap();
        Instance { dir, port }
    }

    fn start(&self) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("mta.log")).unwrap();
        let mut child = Command::new(bin("mta"))
            .args(["-d", "-f"])
            .arg(self.dir.join("mta.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if self.running("smtpd").is_some() && self.running("cleanup").is_some() {
                return child;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("mta did not start: {}", std::fs::read_to_string(self.dir.join("mta.log")).unwrap_or_default());
    }

    /// The pid of the running process of `role`.
    fn running(&self, role: &str) -> Option<i32> {
        let out = Command::new(bin("mtactl"))
            .arg("-j")
            .arg("-s")
            .arg(self.dir.join("mta.sock"))
            .arg("status")
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["children"]
            .as_array()?
            .iter()
            .find(|c| c["role"] == role && c["state"] == "running")
            .and_then(|c| c["pid"].as_i64())
            .map(|p| p as i32)
    }

    /// The pid of `role` once it runs with a pid other than `not` (30 s
    /// at most: a loaded machine restarts slowly, and mtactl may time out
    /// meanwhile).
    fn wait_running(&self, role: &str, not: Option<i32>) -> Option<i32> {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            match self.running(role) {
                Some(p) if Some(p) != not => return Some(p),
                _ if Instant::now() >= end => return None,
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn kill9(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
}

/// One message; returns the queue ID if the server said 250.
fn send_one(port: u16, token: &str) -> Option<String> {
    let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut w = s.try_clone().ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut expect = |r: &mut BufReader<TcpStream>, code: &str| -> Option<String> {
        loop {
            line.clear();
            if r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.starts_with(code).then(|| line.clone());
            }
        }
    };
    expect(&mut r, "220")?;
    w.write_all(b"EHLO load.example\r\n").ok()?;
    expect(&mut r, "250")?;
    w.write_all(b"MAIL FROM:<load@remote.example>\r\nRCPT TO:<root@localhost>\r\nDATA\r\n").ok()?;
    expect(&mut r, "250")?;
    expect(&mut r, "250")?;
    expect(&mut r, "354")?;
    let body = format!("Subject: {token}\r\n\r\n{}\r\n{token}\r\n.\r\n", "x".repeat(2000));
    w.write_all(body.as_bytes()).ok()?;
    let reply = expect(&mut r, "250")?;
    let _ = w.write_all(b"QUIT\r\n");
    reply.trim_end().rsplit(' ').next().map(str::to_string)
}

/// The queue file of `id` wherever qmgr has put it (deferred/ hashes into
/// a subfolder).
fn find_queue_file(spool: &Path, id: &str) -> Option<PathBuf> {
    let hashed = mta::queue::QueueId::parse(id).map(|q| mta::qmgr::schedule::deferred_subdir(&q));
    ["incoming", "active", "deferred", "hold"]
        .iter()
        .map(|d| spool.join(d).join(id))
        .chain(hashed.map(|h| spool.join("deferred").join(h).join(id)))
        .find(|p| p.exists())
}

#[test]
fn acknowledged_mail_survives_sigkill_of_cleanup_smtpd_and_master() {
    let inst = Instance::new();
    let mut master = inst.start();
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..6 {
        let (acked, stop, port) = (acked.clone(), stop.clone(), inst.port);
        clients.push(std::thread::spawn(move || {
            for i in 0..5000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let token = format!("token-{c}-{i}");
                match send_one(port, &token) {
                    Some(id) => {
                        acked.lock().unwrap().insert(id, token);
                    }
                    None => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }));
    }
    let pause = Duration::from_millis(700);
    for role in ["cleanup", "smtpd", "cleanup"] {
        std::thread::sleep(pause);
        let pid = inst.wait_running(role, None).expect("role running");
        kill9(pid);
        // Let master restart it and the load resume.
        inst.wait_running(role, Some(pid)).expect("role restarted");
    }
    std::thread::sleep(pause);
    // master last, under load: its children are killed with it.
    let pids: Vec<i32> = ["cleanup", "smtpd", "qmgr", "control"].iter().filter_map(|r| inst.running(r)).collect();
    kill9(master.id() as i32);
    for p in pids {
        kill9(p);
    }
    let _ = master.wait();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "too little mail got through to prove anything: {}", acked.len());

    // Restart: cleanup recovers its journal; then stop cleanly.
    std::thread::sleep(Duration::from_millis(300));
    let mut master = inst.start();
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(master.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = master.wait();

    let spool = inst.dir.join("spool");
    let mut missing = Vec::new();
    for (id, token) in &acked {
        let Some(path) = find_queue_file(&spool, id) else {
            missing.push(format!("{id} ({token}): not in the queue"));
            continue;
        };
        let file = std::fs::File::open(&path).unwrap();
        match mta::queue::read_queue_file(&file) {
            Ok(q) if String::from_utf8_lossy(&q.content).contains(token.as_str()) => {}
            Ok(_) => missing.push(format!("{id}: content lacks {token}")),
            Err(e) => missing.push(format!("{id}: invalid: {e}")),
        }
    }
    let log = std::fs::read_to_string(inst.dir.join("mta.log")).unwrap_or_default();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost:\n{}\n--- log:\n{log}",
        missing.len(),
        acked.len(),
        missing.join("\n")
    );
    // No half-written file is visible under a queue ID.
    for d in ["incoming", "active"] {
        for e in std::fs::read_dir(spool.join(d)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if name.starts_with('.') {
                continue;
            }
            let f = std::fs::File::open(e.path()).unwrap();
            assert!(mta::queue::read_queue_file(&f).is_ok(), "{d}/{name} is not a valid queue file");
        }
    }
    eprintln!("{} acknowledged messages all present after SIGKILLs", acked.len());
}

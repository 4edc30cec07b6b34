//! A scripted SMTP or LMTP server for the agent's tests: one thread on a
//! loopback listener (or a UNIX socket), serving connections one after
//! the other, answering each command as the test's script says, with
//! STARTTLS and implicit TLS over TCP (a self-signed certificate for
//! `mx.test`), and recording what it received.
//!
//! Trusts: nothing; loopback only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::LIMIT;

pub const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBjzCCATWgAwIBAgIUUk7p7OwfliCsqJM/ZvhNykW8JrwwCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHbXgudGVzdDAgFw0yNjExMjIxMDQzNTFaGA8yMTI2MTAyOTEw
NDM1MVowEjEQMA4GA1UEAwwHbXgudGVzdDBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABHu8/Gswks68ArkXr2Wo/0HjB9sxwQue9ZsOX47ktJnxBKji39cP7jyyVT2Y
AbDQlgp19WGTh41eMigfyBIYeI6jZzBlMB0GA1UdDgQWBBTIAi30kFGIWJFFRvae
PxIHhNUZ0DAfBgNVHSMEGDAWgBTIAi30kFGIWJFFRvaePxIHhNUZ0DAPBgNVHRMB
Af8EBTADAQH/MBIGA1UdEQQLMAmCB214LnRlc3QwCgYIKoZIzj0EAwIDSAAwRQIh
ALqSyp3bmwY9KrMAk3cl+fMnWmTWpVVZlKYr65t4A3vFAiBC0PCIRyZwLPfyyQ04
7TP3zrpODXrNPVl1rmQ17uewmQ==
-----END CERTIFICATE-----
";
pub const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgWZ6Jwu7toM51n4jf
oDGH4gqfXLDxTNzzDo9XLdrNK3mhRANCAAR7vPxrMJLOvAK5F69lqP9B4wfbMcEL
nvWbDl+O5LSZ8QSo4t/XD+48slU9mAGw0JYKdfVhk4eNXjIoH8gSGHiO
-----END PRIVATE KEY-----
";

/// What the server does with a command.
#[derive(Clone, Debug)]
pub enum Answer {
    Say(String),
    /// Close the connection without a word.
    Hangup,
    /// Say nothing; wait for the client to give up.
    Silence,
    /// Reply, then switch to TLS (STARTTLS).
    StartTls(String),
    /// Switch to TLS, then greet (implicit TLS).
    Implicit,
    /// Implicit TLS whose greeting goes with the server's first flight
    /// of TLS 1.3 (0.5-RTT data), before the client's Finished.
    ImplicitEarly,
    /// Reply (220 to STARTTLS), then answer the client's hello with a
    /// fatal handshake_failure alert and close: a TLS stack that shares
    /// nothing with the client's.
    BreakTls(String),
    /// Say this, then close the connection.
    Last(String),
    /// The answer to DATA (354...), then a pause before the content is
    /// read, so that the client's output backs up.
    SlowData(String, Duration),
    /// The answer to DATA (354...); then, after the first line of
    /// content, this refusal, and the connection closed while the client
    /// is still sending.
    RefuseData(String, String),
}

pub fn say(s: &str) -> Answer {
    Answer::Say(format!("{s}\r\n"))
}

/// Called with "CONNECT", each command line (without CR LF) and "." for
/// the end of data.
pub type Script = Arc<dyn Fn(&str) -> Answer + Send + Sync>;

enum Stream {
    Plain(TcpStream),
    Unix(UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// What one connection saw.
#[derive(Clone, Debug, Default)]
pub struct Transcript {
    /// Command lines, in order.
    pub commands: Vec<String>,
    /// The raw bytes after each 354, up to and including the final dot.
    pub data: Vec<Vec<u8>>,
    pub tls: bool,
}

struct Conn {
    stream: Stream,
    buf: Vec<u8>,
}

impl Conn {
    /// One line with its CR LF; None at the end of the stream.
    fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Some(self.buf.drain(..=i).collect());
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn send(&mut self, text: &str) {
        let _ = self.stream.write_all(text.as_bytes());
        let _ = self.stream.flush();
    }
}

pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Transcript>>,
}

impl Server {
    /// Serve up to `connections` connections, one after the other.
    pub fn start(connections: usize, script: Script) -> Server {
        Server::start_with(connections, script, CERT, KEY)
    }

    /// The same, with this certificate chain and key (PEM) for TLS.
    pub fn start_with(connections: usize, script: Script, cert: &'static str, key: &'static str) -> Server {
        Server::start_at("127.0.0.1", connections, script, cert, key)
    }

    /// The same on another loopback address (`127.0.0.2`: Linux answers
    /// on all of 127/8).
    pub fn start_at(ip: &str, connections: usize, script: Script, cert: &'static str, key: &'static str) -> Server {
        let listener = TcpListener::bind((ip, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let handle = accept_loop(connections, &stop, move || {
            let (s, _) = listener.accept().ok()?;
            Some(converse(s, &script, (cert, key)))
        });
        Server { addr, stop, handle }
    }

    /// The same on a UNIX socket at `path` (`addr` is unused then).
    pub fn start_unix(path: PathBuf, connections: usize, script: Script) -> Server {
        let listener = UnixListener::bind(&path).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let handle = accept_loop(connections, &stop, move || {
            let (s, _) = listener.accept().ok()?;
            s.set_nonblocking(false).expect("blocking");
            s.set_read_timeout(Some(LIMIT)).expect("timeout");
            Some(serve(Stream::Unix(s), &script, (CERT, KEY)))
        });
        Server { addr: SocketAddr::from(([127, 0, 0, 1], 0)), stop, handle }
    }

    /// Stop accepting; what each connection saw.
    pub fn transcripts(self) -> Vec<Transcript> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("server thread")
    }
}

/// On a thread: serve the clients `accept` hands over (None: nobody
/// waiting) until `connections` were served, LIMIT passed or `stop` is set.
fn accept_loop(
    connections: usize,
    stop: &Arc<AtomicBool>,
    mut accept: impl FnMut() -> Option<Transcript> + Send + 'static,
) -> JoinHandle<Vec<Transcript>> {
    let stopped = stop.clone();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let deadline = Instant::now() + LIMIT;
        while out.len() < connections && Instant::now() < deadline && !stopped.load(Ordering::Relaxed) {
            match accept() {
                Some(t) => out.push(t),
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        out
    })
}

fn converse(s: TcpStream, script: &Script, (cert, key): (&str, &str)) -> Transcript {
    s.set_nonblocking(false).expect("blocking");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    serve(Stream::Plain(s), script, (cert, key))
}

fn serve(stream: Stream, script: &Script, (cert, key): (&str, &str)) -> Transcript {
    let mut t = Transcript::default();
    let mut c = Conn { stream, buf: Vec::new() };
    let mut next = script("CONNECT");
    loop {
        match next {
            Answer::Say(text) | Answer::SlowData(text, _) | Answer::RefuseData(text, _) => c.send(&text),
            Answer::Hangup => return t,
            Answer::Last(text) => {
                c.send(&text);
                return t;
            }
            Answer::Silence => {
                while c.line().is_some() {}
                return t;
            }
            Answer::StartTls(text) => {
                c.send(&text);
                assert!(c.buf.is_empty(), "client pipelined after STARTTLS");
                let Stream::Plain(tcp) = c.stream else { return t };
                let config = crate::smtpd::tls::server_config(cert.as_bytes(), key.as_bytes()).expect("config");
                let conn = rustls::ServerConnection::new(config).expect("tls");
                c.stream = Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
                t.tls = true;
            }
            Answer::BreakTls(text) => {
                c.send(&text);
                let mut hello = [0u8; 4096];
                let _ = c.stream.read(&mut hello);
                // Alert (21), TLS 1.2, length 2: fatal (2), handshake_failure (40).
                let _ = c.stream.write_all(&[21, 3, 3, 0, 2, 2, 40]);
                return t;
            }
            Answer::ImplicitEarly => {
                let Stream::Plain(mut tcp) = c.stream else { return t };
                let config = crate::smtpd::tls::server_config(cert.as_bytes(), key.as_bytes()).expect("config");
                let mut config = (*config).clone();
                config.send_half_rtt_data = true;
                let mut conn = rustls::ServerConnection::new(Arc::new(config)).expect("tls");
                conn.writer().write_all(b"220 mx.test ESMTP\r\n").expect("greeting queued");
                // The client's hello in, the server's flight out: with
                // the greeting in it.
                while !conn.wants_write() {
                    if conn.read_tls(&mut tcp).map_or(true, |n| n == 0) {
                        return t;
                    }
                    conn.process_new_packets().expect("client hello");
                }
                while conn.wants_write() {
                    conn.write_tls(&mut tcp).expect("server flight");
                }
                c.stream = Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
                t.tls = true;
                next = Answer::Say(String::new());
                continue;
            }
            Answer::Implicit => {
                let Stream::Plain(tcp) = c.stream else { return t };
                let config = crate::smtpd::tls::server_config(cert.as_bytes(), key.as_bytes()).expect("config");
                let conn = rustls::ServerConnection::new(config).expect("tls");
                c.stream = Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
                t.tls = true;
                next = say("220 mx.test ESMTP");
                continue;
            }
        }
        let Some(line) = c.line() else { return t };
        let cmd = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
        t.commands.push(cmd.clone());
        next = script(&cmd);
        if cmd.eq_ignore_ascii_case("DATA")
            && let Answer::RefuseData(go, refusal) = &next
        {
            c.send(go);
            let _ = c.line();
            c.send(refusal);
            return t;
        }
        if cmd.eq_ignore_ascii_case("DATA")
            && let Answer::Say(text) | Answer::SlowData(text, _) = &next
            && text.starts_with("354")
        {
            c.send(text);
            if let Answer::SlowData(_, pause) = &next {
                std::thread::sleep(*pause);
            }
            let mut data = Vec::new();
            loop {
                let Some(l) = c.line() else { return t };
                data.extend_from_slice(&l);
                if l == b".\r\n" {
                    break;
                }
            }
            t.data.push(data);
            next = script(".");
        }
        if cmd.eq_ignore_ascii_case("QUIT") {
            if let Answer::Say(text) = &next {
                c.send(text);
            }
            return t;
        }
    }
}

/// A well-behaved server; `special` overrides answers by command prefix.
pub fn mta(special: &'static [(&'static str, &'static str)]) -> Script {
    Arc::new(move |cmd: &str| {
        for (prefix, answer) in special {
            if cmd.to_ascii_uppercase().starts_with(prefix) {
                return match *answer {
                    "HANGUP" => Answer::Hangup,
                    "SILENCE" => Answer::Silence,
                    a => say(a),
                };
            }
        }
        let upper = cmd.to_ascii_uppercase();
        match upper.split(' ').next().unwrap_or("") {
            "CONNECT" => say("220 mx.test ESMTP"),
            "EHLO" => say("250-mx.test\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES"),
            "MAIL" | "RCPT" | "RSET" => say("250 2.1.0 Ok"),
            "DATA" => say("354 End data with <CR><LF>.<CR><LF>"),
            "." => say("250 2.0.0 Ok: queued as X"),
            "QUIT" => say("221 2.0.0 Bye"),
            _ => say("502 5.5.2 Error: command not recognized"),
        }
    })
}

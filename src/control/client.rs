//! mtactl(8): talks to the control socket. Sends one request line, reads
//! one JSON answer, prints it for a person (or as JSON with -j).
//!
//! Trusts: the answer only as far as printing it; it is bounded in size.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::config::Config;

pub const USAGE: &str = "usage: mtactl [-j | --json] [-f file | -s socket] status | reload | stop |
       queue [list] | queue show|hold|release|requeue|delete ID | queue flush";
/// Largest answer read.
const MAX_ANSWER: u64 = 4 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Default, PartialEq)]
pub struct Options {
    pub json: bool,
    pub socket: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub command: String,
}

pub fn parse_args(args: &[String]) -> Result<Options, String> {
    // `--json` (anywhere) is the long form of -j.
    let mut o = Options { json: args.iter().any(|a| a == "--json"), ..Default::default() };
    let args: Vec<String> = args.iter().filter(|a| *a != "--json").cloned().collect();
    let args = args.as_slice();
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') && args[i].len() > 1 {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        let flags = &a[1..];
        for (j, c) in flags.char_indices() {
            match c {
                'j' => o.json = true,
                's' | 'f' => {
                    let rest = &flags[j + 1..];
                    let v = if rest.is_empty() {
                        i += 1;
                        args.get(i).cloned().ok_or_else(|| format!("option -{c} needs an argument"))?
                    } else {
                        rest.to_string()
                    };
                    if c == 's' {
                        o.socket = Some(PathBuf::from(v));
                    } else {
                        o.config = Some(PathBuf::from(v));
                    }
                    break;
                }
                c => return Err(format!("unknown option -{c}")),
            }
        }
        i += 1;
    }
    if o.socket.is_some() && o.config.is_some() {
        return Err(String::from("-f and -s exclude each other"));
    }
    match &args[i..] {
        [c] if matches!(c.as_str(), "status" | "reload" | "stop" | "queue") => o.command = c.clone(),
        [q, l] if q == "queue" && l == "list" => o.command = q.clone(),
        [q, f] if q == "queue" && f == "flush" => o.command = f.clone(),
        [q, op, id] if q == "queue" && matches!(op.as_str(), "show" | "hold" | "release" | "requeue" | "delete") => {
            if crate::queue::QueueId::parse(id).is_none() {
                return Err(format!("`{id}` is not a queue ID"));
            }
            o.command = format!("{op} {id}");
        }
        [q, op, ..] if q == "queue" => return Err(format!("unknown queue command `{op}` or missing queue ID")),
        [c] => return Err(format!("unknown command `{c}`")),
        [] => return Err(String::from("no command given")),
        [_, extra, ..] => return Err(format!("unexpected argument `{extra}`")),
    }
    Ok(o)
}

/// Run mtactl; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let o = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mtactl: {e}\n{USAGE}");
            return 1;
        }
    };
    let socket = match &o.socket {
        Some(s) => s.clone(),
        None => {
            let path = o.config.clone().unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_PATH));
            match Config::load(&path) {
                Ok(c) => c.control.socket,
                Err(e) => {
                    eprintln!("mtactl: {e}");
                    return 1;
                }
            }
        }
    };
    match request(&socket, &o.command) {
        Ok(v) => print(&o, &v),
        Err(e) => {
            eprintln!("mtactl: {}: {e}", socket.display());
            1
        }
    }
}

/// Why a request to the control socket failed.
#[derive(Debug)]
pub struct RequestError {
    /// Nothing listens on the socket: mta is not running (as opposed to
    /// a control process that answered badly).
    pub nobody_listens: bool,
    pub message: String,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<std::io::Error> for RequestError {
    fn from(e: std::io::Error) -> RequestError {
        RequestError { nobody_listens: false, message: e.to_string() }
    }
}

/// Send `command` to the control socket and read its JSON answer.
pub fn request(socket: &std::path::Path, command: &str) -> Result<Value, RequestError> {
    let mut s = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            RequestError { nobody_listens: true, message: format!("{e} (is mta running?)") }
        }
        _ => RequestError::from(e),
    })?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    s.write_all(format!("{command}\n").as_bytes())?;
    let mut out = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut out)?;
    let bad = |message: String| RequestError { nobody_listens: false, message };
    if out.is_empty() {
        return Err(bad(String::from("no answer (the control process may be restarting; try again)")));
    }
    serde_json::from_slice(&out).map_err(|e| bad(format!("bad answer: {e}")))
}

fn print(o: &Options, v: &Value) -> i32 {
    let ok = v["ok"].as_bool() == Some(true);
    if o.json {
        println!("{v}");
    } else if !ok {
        eprintln!("mtactl: {}", v["error"].as_str().unwrap_or("failed"));
    } else {
        match o.command.split(' ').next().unwrap_or("") {
            "status" => print!("{}", format_status(v)),
            "queue" => print!("{}", format_queue(v)),
            "show" => print!("{}", format_show(&v["message"])),
            "reload" => println!("reloaded: generation {}", v["generation"]),
            "stop" => println!("stopping"),
            _ => println!("{}", v["result"].as_str().unwrap_or("done")),
        }
    }
    if ok { 0 } else { 1 }
}

/// The status answer as a table.
pub fn format_status(v: &Value) -> String {
    let m = &v["master"];
    let mut s = format!(
        "mta {} master pid {} generation {} up {}\n",
        m["version"].as_str().unwrap_or("?"),
        m["pid"],
        m["generation"],
        duration(m["uptime_secs"].as_u64().unwrap_or(0))
    );
    s += &format!("{:<10} {:>8} {:>10} {:>8} {:>8}  {}\n", "ROLE", "PID", "GENERATION", "UPTIME", "RESTARTS", "STATE");
    for c in v["children"].as_array().into_iter().flatten() {
        s += &format!(
            "{:<10} {:>8} {:>10} {:>8} {:>8}  {}\n",
            c["role"].as_str().unwrap_or("?"),
            c["pid"].to_string(),
            c["generation"].to_string(),
            duration(c["uptime_secs"].as_u64().unwrap_or(0)),
            c["restarts"].to_string(),
            c["state"].as_str().unwrap_or("?")
        );
    }
    match v["queue"].as_object() {
        Some(q) => {
            let parts: Vec<String> = q.iter().map(|(k, n)| format!("{k} {n}")).collect();
            s += &format!("queue: {}\n", parts.join(", "));
        }
        None => s += "queue: unknown (qmgr not answering)\n",
    }
    s
}

/// One message as `mtactl queue show` prints it: envelope, recipients
/// with their state, then the header block.
pub fn format_show(m: &Value) -> String {
    let str_of = |v: &Value| v.as_str().unwrap_or("").to_string();
    let when = crate::cleanup::message::rfc5322_date(m["arrival"].as_i64().unwrap_or(0).max(0) as u64);
    let sender = m["sender"].as_str().filter(|x| !x.is_empty()).unwrap_or("<>");
    let mut s = format!(
        "queue ID: {}\nqueue: {}\nsize: {}\narrival: {when}\nsender: {sender}\n",
        str_of(&m["id"]),
        str_of(&m["queue"]),
        m["size"]
    );
    for (label, key) in [("client", "client"), ("parameter", "parameters")] {
        for (k, v) in m[key].as_object().into_iter().flatten() {
            if v.as_str().is_some_and(|x| !x.is_empty()) {
                s += &format!("{label} {k}: {}\n", str_of(v));
            }
        }
    }
    for r in m["recipients"].as_array().into_iter().flatten() {
        s += &format!("recipient: {} ({}", str_of(&r["address"]), str_of(&r["state"]));
        if r["attempts"].as_u64().unwrap_or(0) > 0 {
            s += &format!(", {} attempt(s)", r["attempts"]);
        }
        if let Some(t) = r["next_attempt"].as_i64().filter(|t| *t > 0 && r["state"] == "deferred") {
            s += &format!(", next {}", crate::cleanup::message::rfc5322_date(t as u64));
        }
        s += ")\n";
        for (k, label) in [("orcpt", "ORCPT"), ("notify", "NOTIFY")] {
            if let Some(x) = r[k].as_str() {
                s += &format!("  {label}={x}\n");
            }
        }
        if let Some(why) = r["reason"].as_str().filter(|x| !x.is_empty()) {
            s += &format!("  reason: {why}\n");
        }
    }
    s += "\n";
    s += &str_of(&m["headers"]).replace("\r\n", "\n");
    s
}

/// The queue listing as mailq shows it.
pub fn format_queue(v: &Value) -> String {
    let list = v["queue"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return String::from("Mail queue is empty\n");
    }
    let mut s = format!(
        "{:<21}{:>8}  {:<31} {}\n",
        "-Queue ID-", "--Size--", "----Arrival Time (UTC)----", "-Sender/Recipient-------"
    );
    let mut bytes = 0u64;
    for e in &list {
        let size = e["size"].as_u64().unwrap_or(0);
        bytes += size;
        let mark = match e["queue"].as_str() {
            Some("active") => "*",
            Some("hold") => "!",
            _ => " ",
        };
        let when = crate::cleanup::message::rfc5322_date(e["arrival"].as_i64().unwrap_or(0).max(0) as u64);
        let sender = e["sender"].as_str().filter(|x| !x.is_empty()).unwrap_or("MAILER-DAEMON");
        s += &format!(
            "{:<21}{:>8}  {:<31} {}\n",
            format!("{}{mark}", e["id"].as_str().unwrap_or("?")),
            size,
            when,
            sender
        );
        for r in e["recipients"].as_array().into_iter().flatten() {
            if r["state"] == "done" {
                continue;
            }
            if let Some(why) = r["reason"].as_str().filter(|x| !x.is_empty()) {
                s += &format!("{:63}({why})\n", "");
            }
            s += &format!("{:63}{}\n", "", r["address"].as_str().unwrap_or("?"));
        }
        s.push('\n');
    }
    let n = list.len();
    s += &format!("-- {} Kbytes in {n} Request{}.\n", bytes.div_ceil(1024), if n == 1 { "" } else { "s" });
    s
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn queue_commands() {
        let o = parse_args(&a(&["queue", "hold", "4XyzAbCdEf01-00000001"])).unwrap_err();
        assert!(o.contains("not a queue ID"), "{o}");
        assert_eq!(parse_args(&a(&["queue", "flush"])).unwrap().command, "flush");
        let e = parse_args(&a(&["queue", "frobnicate", "x"])).unwrap_err();
        assert!(e.contains("frobnicate"), "{e}");
        assert!(parse_args(&a(&["queue", "show"])).is_err());
    }

    #[test]
    fn long_json() {
        let o = parse_args(&a(&["queue", "list", "--json"])).unwrap();
        assert!(o.json);
        assert_eq!(o.command, "queue");
        assert!(!parse_args(&a(&["queue"])).unwrap().json);
    }

    #[test]
    fn options() {
        let o = parse_args(&a(&["-j", "-s", "/run/x.sock", "status"])).unwrap();
        assert!(o.json);
        assert_eq!(o.socket, Some(PathBuf::from("/run/x.sock")));
        assert_eq!(o.command, "status");
        assert!(parse_args(&a(&["frobnicate"])).unwrap_err().contains("frobnicate"));
        assert!(parse_args(&a(&["-x", "status"])).unwrap_err().contains("-x"));
        assert!(parse_args(&a(&[])).is_err());
        assert!(parse_args(&a(&["-s", "a", "-f", "b", "stop"])).is_err());
        assert_eq!(parse_args(&a(&["queue", "list"])).unwrap().command, "queue");
        assert!(parse_args(&a(&["queue", "list", "extra"])).is_err());
    }

    #[test]
    fn status_table() {
        let v: Value = serde_json::from_str(
            r#"{"ok":true,"master":{"version":"0.1.0","pid":10,"generation":2,"uptime_secs":65},
            "children":[{"role":"qmgr","pid":12,"generation":2,"uptime_secs":3,"restarts":1,"state":"running"}],
            "queue":{"incoming":0,"deferred":4}}"#,
        )
        .unwrap();
        let t = format_status(&v);
        assert!(t.contains("master pid 10 generation 2 up 1m05s"), "{t}");
        assert!(
            t.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["qmgr", "12", "2", "3s", "1", "running"])
        );
        assert!(t.contains("queue: incoming 0, deferred 4"), "{t}");
        assert!(t.contains("      12 "), "{t}");
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    #[test]
    fn mailq_format() {
        let v: Value = serde_json::from_str(
            r#"{"ok":true,"queue":[{"id":"1NG585DGN9V0000GJ8TR","queue":"incoming","size":1500,"arrival":0,
            "sender":"","recipients":[{"address":"root@localhost","state":"deferred","reason":"451 try later"},
            {"address":"x@y.example","state":"done","reason":""}]}]}"#,
        )
        .unwrap();
        let t = format_queue(&v);
        assert!(t.contains("1NG585DGN9V0000GJ8TR "), "{t}");
        assert!(t.contains("MAILER-DAEMON"), "{t}");
        assert!(t.contains("(451 try later)"), "{t}");
        assert!(!t.contains("x@y.example"), "{t}");
        assert!(t.ends_with("-- 2 Kbytes in 1 Request.\n"), "{t}");
        assert_eq!(format_queue(&serde_json::json!({"ok": true, "queue": []})), "Mail queue is empty\n");
    }
}

//! mtactl(8): talks to the control socket. Sends one request line, reads
//! the answer, a line of JSON, and prints it for a person (or as JSON
//! with -j). A queue listing comes as a line of JSON per message before
//! the answer line ([`Reader`]), and each is printed as it arrives
//! ([`Mailq`], [`JsonQueue`]); so does a message shown, the message and
//! then a line per recipient ([`Shown`]), however many it has.
//!
//! Trusts: the answer only as far as printing it; each line is bounded
//! in size ([`MAX_LINE`]), and so is the wait for the next bytes.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::config::Config;

pub const USAGE: &str = "usage: mtactl [-j | --json] [-f file | -s socket] status | reload | stop |
       config [-n] [NAME ...] |
       queue [list] | queue show ID | queue flush |
       queue shape [senders] [incoming|active|deferred|hold ...] |
       queue hold|release|requeue|delete ID ... | - | ALL [incoming|active|deferred|hold]";
/// Longest line of an answer: the answer itself, or one message of a
/// listing.
pub const MAX_LINE: usize = 4 << 20;
/// How long mtactl waits for the next bytes of an answer (a listing goes
/// on as long as they keep coming).
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Default, PartialEq)]
pub struct Options {
    pub json: bool,
    pub socket: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub command: String,
    /// hold, release, requeue or delete of more than one ID, IDs from
    /// standard input, or ALL.
    pub batch: Option<super::batch::Batch>,
    /// `queue shape`.
    pub shape: Option<super::shape::Shape>,
    /// `config`.
    pub settings: Option<super::settings::Query>,
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
        [c, rest @ ..] if c == "config" => {
            o.command = c.clone();
            o.settings = Some(super::settings::Query::parse(rest)?);
        }
        [q, f] if q == "queue" && f == "flush" => o.command = f.clone(),
        [q, s, rest @ ..] if q == "queue" && s == "shape" => {
            o.command = s.clone();
            o.shape = Some(super::shape::Shape::parse(rest)?);
        }
        [q, op, id]
            if q == "queue"
                && matches!(op.as_str(), "show" | "hold" | "release" | "requeue" | "delete")
                && crate::queue::QueueId::parse(id).is_some() =>
        {
            o.command = format!("{op} {id}");
        }
        [q, op, id] if q == "queue" && op == "show" => return Err(format!("`{id}` is not a queue ID")),
        [q, op, rest @ ..]
            if q == "queue" && !rest.is_empty() && matches!(op.as_str(), "hold" | "release" | "requeue" | "delete") =>
        {
            o.command = op.clone();
            o.batch = Some(super::batch::Batch::parse(op, rest)?);
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
    let path = o.config.clone().unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_PATH));
    if let Some(q) = &o.settings {
        // The file, not the daemon.
        return super::settings::run(&path, q, o.json);
    }
    let socket = match &o.socket {
        Some(s) => s.clone(),
        None => match Config::load(&path) {
            Ok(c) => c.control.socket,
            Err(e) => {
                eprintln!("mtactl: {e}");
                return 1;
            }
        },
    };
    if let Some(b) = &o.batch {
        return super::batch::run(&socket, b, &o);
    }
    if let Some(s) = &o.shape {
        return super::shape::run(&socket, s, o.json);
    }
    if o.command == "queue" {
        return print_streamed(&o, &socket, |out| list_queue(&socket, o.json, out));
    }
    if o.command.starts_with("show ") {
        return print_streamed(&o, &socket, |out| show_message(&socket, &o.command, o.json, out));
    }
    match request(&socket, &o.command) {
        Ok(v) => print(&o, &v),
        Err(e) => {
            eprintln!("mtactl: {}: {e}", socket.display());
            1
        }
    }
}

/// `mtactl queue` and `mtactl queue show ID`: the answer `stream`
/// writes to standard output as it comes; the exit status.
fn print_streamed(
    o: &Options,
    socket: &std::path::Path,
    stream: impl FnOnce(&mut dyn Write) -> Result<Listed, RequestError>,
) -> i32 {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let r = stream(&mut out);
    let flushed = out.flush();
    match r {
        Ok(l) if l.answer["ok"].as_bool() == Some(true) => match flushed {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("mtactl: standard output: {e}");
                1
            }
        },
        Ok(l) => {
            if o.json && l.printed == 0 {
                println!("{}", l.answer);
            } else {
                eprintln!("mtactl: {}", l.answer["error"].as_str().unwrap_or("failed"));
            }
            1
        }
        Err(e) => {
            eprintln!("mtactl: {}: {e}", socket.display());
            1
        }
    }
}

/// Ask for one message (`command` is `show ID`) and write it to `out`
/// as it comes: the envelope, each recipient, and at the end the header
/// (or, `json`, one document `{"ok":true,"message":{...,"recipients":
/// [...]}}`). An answer whose number of recipients differs from the
/// lines that came is an error.
pub fn show_message(
    socket: &std::path::Path,
    command: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<Listed, RequestError> {
    let mut shown = Shown::default();
    let mut printed = 0;
    let mut answer = request_with(socket, command, &mut |v| {
        let text = shown.line(&v, json)?;
        printed += 1;
        out.write_all(text.as_bytes()).map_err(|e| format!("writing the message: {e}"))
    })?;
    if answer["ok"].as_bool() == Some(true) {
        match shown.end(&answer, json) {
            Ok(end) => out.write_all(end.as_bytes())?,
            Err(e) => answer = serde_json::json!({"ok": false, "error": e}),
        }
    }
    Ok(Listed { answer, printed })
}

/// A message shown, a line at a time: the message (its envelope printed
/// at once, its header kept for the end), then each recipient.
#[derive(Debug, Default)]
pub struct Shown {
    /// The message's header, once the message came.
    headers: Option<String>,
    recipients: u64,
}

impl Shown {
    /// What to print for a line of the answer.
    pub fn line(&mut self, v: &Value, json: bool) -> Result<String, String> {
        if self.headers.is_none() {
            self.headers = Some(v["headers"].as_str().unwrap_or("").to_string());
            if !json {
                return Ok(format_message(v));
            }
            // The message's fields, its recipients to come in the array.
            let m = v.to_string();
            let open = m.strip_suffix('}').ok_or("bad answer: the message is no JSON object")?;
            let sep = if open.len() > 1 { "," } else { "" };
            return Ok(format!("{{\"ok\":true,\"message\":{open}{sep}\"recipients\":["));
        }
        self.recipients += 1;
        if json {
            let sep = if self.recipients > 1 { "," } else { "" };
            return Ok(format!("{sep}{v}"));
        }
        Ok(format_recipient(v))
    }

    /// What ends it, once the answer line `answer` came; an error when
    /// it does not add up.
    pub fn end(&self, answer: &Value, json: bool) -> Result<String, String> {
        let Some(headers) = &self.headers else { return Err(String::from("bad answer: no message")) };
        let announced = answer["recipients"].as_u64();
        if announced != Some(self.recipients) {
            return Err(format!(
                "bad answer: {} recipient(s) announced, {} came",
                announced.map_or_else(|| String::from("no number of"), |n| n.to_string()),
                self.recipients
            ));
        }
        Ok(if json { String::from("]}}\n") } else { format!("\n{}", headers.replace("\r\n", "\n")) })
    }
}

/// A listing's end.
#[derive(Debug)]
pub struct Listed {
    /// The answer line: `{"ok":true,"count":N}`, or the error.
    pub answer: Value,
    /// Messages printed.
    pub printed: u64,
}

/// Ask for the queue listing and write it to `out` as it comes, in
/// mailq's layout or (`json`) as one JSON document, `{"ok":true,
/// "queue":[...]}`; the end (the summary line, or the document's close)
/// only when the listing ended well. A listing that fails after messages
/// were printed leaves them printed (and the document open).
pub fn list_queue(socket: &std::path::Path, json: bool, out: &mut dyn Write) -> Result<Listed, RequestError> {
    let mut mailq = Mailq::default();
    let mut doc = JsonQueue::default();
    let mut printed = 0;
    let answer = request_with(socket, "queue", &mut |e| {
        let text = if json { doc.entry(&e) } else { mailq.entry(&e) };
        printed += 1;
        out.write_all(text.as_bytes()).map_err(|e| format!("writing the listing: {e}"))
    })?;
    if answer["ok"].as_bool() == Some(true) {
        let end = if json { doc.end() } else { mailq.end() };
        out.write_all(end.as_bytes())?;
    }
    Ok(Listed { answer, printed })
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

/// Each message of the queue listing, as JSON, to `each`; false when the
/// listing failed (said on standard error).
pub(super) fn each_listed(socket: &std::path::Path, each: &mut dyn FnMut(&Value)) -> bool {
    match request_with(socket, "queue", &mut |e: Value| {
        each(&e);
        Ok(())
    }) {
        Ok(v) if v["ok"].as_bool() == Some(true) => true,
        Ok(v) => {
            eprintln!("mtactl: listing the queue: {}", v["error"].as_str().unwrap_or("failed"));
            false
        }
        Err(e) => {
            eprintln!("mtactl: {}: {e}", socket.display());
            false
        }
    }
}

/// Send `command` to the control socket and read its JSON answer.
pub fn request(socket: &std::path::Path, command: &str) -> Result<Value, RequestError> {
    request_with(socket, command, &mut |_| Err(String::from("bad answer: a listing where one answer was expected")))
}

/// Send `command` to the control socket, hand each message of a listing
/// to `entry` as it arrives, and return the answer line.
pub fn request_with(
    socket: &std::path::Path,
    command: &str,
    entry: &mut dyn FnMut(Value) -> Result<(), String>,
) -> Result<Value, RequestError> {
    let mut s = UnixStream::connect(socket).map_err(|e| match e.kind() {
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
            RequestError { nobody_listens: true, message: format!("{e} (is mta running?)") }
        }
        _ => RequestError::from(e),
    })?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    s.write_all(format!("{command}\n").as_bytes())?;
    let bad = |message: String| RequestError { nobody_listens: false, message };
    let mut reader = Reader::new(MAX_LINE);
    let mut chunk = vec![0u8; 64 * 1024];
    while !reader.answered() {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => reader.feed(&chunk[..n], entry).map_err(bad)?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(bad(format!("nothing more came for {} s; {}", TIMEOUT.as_secs(), reader.so_far())));
            }
            Err(e) => return Err(e.into()),
        }
    }
    reader.finish().map_err(bad)
}

/// The control socket's answer, read as it comes: lines of JSON, each a
/// message of a listing, up to the answer line (the one with `ok`),
/// which ends it. A line is bounded; an answer cut short is an error,
/// never a shorter listing.
#[derive(Debug)]
pub struct Reader {
    buf: Vec<u8>,
    /// `buf[..scanned]` holds no line end.
    scanned: usize,
    max_line: usize,
    entries: u64,
    answer: Option<Value>,
}

impl Reader {
    pub fn new(max_line: usize) -> Reader {
        Reader { buf: Vec::new(), scanned: 0, max_line, entries: 0, answer: None }
    }

    /// The answer line has come.
    pub fn answered(&self) -> bool {
        self.answer.is_some()
    }

    /// Take the next bytes; each message line, once whole, goes to
    /// `entry`.
    pub fn feed(&mut self, data: &[u8], entry: &mut dyn FnMut(Value) -> Result<(), String>) -> Result<(), String> {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(end) = self.buf[self.scanned..].iter().position(|&b| b == b'\n').map(|p| self.scanned + p) {
            let line = &self.buf[start..end];
            start = end + 1;
            self.scanned = start;
            if self.answer.is_some() {
                return Err(String::from("bad answer: more after the answer line"));
            }
            if line.len() > self.max_line {
                return Err(format!("bad answer: a line longer than {} bytes", self.max_line));
            }
            let v: Value = serde_json::from_slice(line).map_err(|e| format!("bad answer: {e}"))?;
            if !v.is_object() {
                return Err(String::from("bad answer: a line that is no JSON object"));
            }
            if v.get("ok").is_some() {
                if let Some(n) = v.get("count").and_then(Value::as_u64)
                    && n != self.entries
                {
                    return Err(format!("bad answer: {n} message(s) announced, {} came", self.entries));
                }
                self.answer = Some(v);
            } else {
                self.entries += 1;
                entry(v)?;
            }
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() > self.max_line {
            return Err(format!("bad answer: a line longer than {} bytes", self.max_line));
        }
        Ok(())
    }

    /// What came so far, for an error.
    fn so_far(&self) -> String {
        match self.entries {
            0 => String::from("no answer"),
            n => format!("the listing was cut short after {n} message(s)"),
        }
    }

    /// The end of the stream: the answer, or why there is none.
    pub fn finish(self) -> Result<Value, String> {
        match self.answer {
            Some(v) if self.buf.is_empty() => Ok(v),
            Some(_) => Err(String::from("bad answer: more after the answer line")),
            None if self.entries > 0 || !self.buf.is_empty() => {
                Err(format!("{} (the answer ended early)", self.so_far()))
            }
            None => Err(String::from("no answer (the control process may be restarting; try again)")),
        }
    }
}

pub(super) fn print(o: &Options, v: &Value) -> i32 {
    let ok = v["ok"].as_bool() == Some(true);
    if o.json {
        println!("{v}");
    } else if !ok {
        eprintln!("mtactl: {}", v["error"].as_str().unwrap_or("failed"));
    } else {
        match o.command.split(' ').next().unwrap_or("") {
            "status" => print!("{}", format_status(v)),
            "queue" => print!("{}", format_queue(v)),
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

/// What `mtactl queue show` prints of a message before its recipients:
/// queue ID, queue, size, arrival, sender, client and parameters.
pub fn format_message(m: &Value) -> String {
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
    s
}

/// One recipient as `mtactl queue show` prints it: address and state,
/// attempts, next attempt, ORCPT, NOTIFY, reason.
pub fn format_recipient(r: &Value) -> String {
    let str_of = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut s = format!("recipient: {} ({}", str_of(&r["address"]), str_of(&r["state"]));
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
    s
}

/// The queue listing as mailq shows it.
pub fn format_queue(v: &Value) -> String {
    let mut m = Mailq::default();
    let mut s = String::new();
    for e in v["queue"].as_array().into_iter().flatten() {
        s += &m.entry(e);
    }
    s + &m.end()
}

/// mailq's layout, a message at a time: the heading before the first,
/// then each message, its recipients not yet delivered and a blank line;
/// at the end the total (`-- 2 Kbytes in 1 Request.`), or `Mail queue is
/// empty`.
#[derive(Debug, Default)]
pub struct Mailq {
    messages: u64,
    bytes: u64,
}

impl Mailq {
    pub fn entry(&mut self, e: &Value) -> String {
        let mut s = String::new();
        if self.messages == 0 {
            s += &format!(
                "{:<21}{:>8}  {:<31} {}\n",
                "-Queue ID-", "--Size--", "----Arrival Time (UTC)----", "-Sender/Recipient-------"
            );
        }
        self.messages += 1;
        let size = e["size"].as_u64().unwrap_or(0);
        self.bytes = self.bytes.saturating_add(size);
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
        if let Some(n) = e["omitted"].as_u64().filter(|n| *n > 0) {
            s += &format!("{:63}(and {n} more recipient(s), not listed)\n", "");
        }
        s.push('\n');
        s
    }

    pub fn end(&self) -> String {
        match self.messages {
            0 => String::from("Mail queue is empty\n"),
            n => format!("-- {} Kbytes in {n} Request{}.\n", self.bytes.div_ceil(1024), if n == 1 { "" } else { "s" }),
        }
    }
}

/// The listing as one JSON document, `{"ok":true,"queue":[...]}`, a
/// message at a time.
#[derive(Debug, Default)]
pub struct JsonQueue {
    messages: u64,
}

impl JsonQueue {
    pub fn entry(&mut self, e: &Value) -> String {
        let open = if self.messages == 0 { r#"{"ok":true,"queue":["# } else { "," };
        self.messages += 1;
        format!("{open}{e}")
    }

    pub fn end(&self) -> String {
        if self.messages == 0 { String::from("{\"ok\":true,\"queue\":[]}\n") } else { String::from("]}\n") }
    }
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
        let o = parse_args(&a(&["-j", "queue", "shape", "senders", "deferred"])).unwrap();
        assert_eq!((o.json, o.command.as_str(), o.shape.map(|s| s.senders)), (true, "shape", Some(true)));
        assert!(parse_args(&a(&["queue", "shape", "bogus"])).is_err());
        let e = parse_args(&a(&["queue", "frobnicate", "x"])).unwrap_err();
        assert!(e.contains("frobnicate"), "{e}");
        assert!(parse_args(&a(&["queue", "show"])).is_err());
        // One ID: a request of its own; several, `-` or ALL: a batch.
        let id = "1NG585DGN9V0000GJ001";
        let o = parse_args(&a(&["queue", "delete", id])).unwrap();
        assert_eq!((o.command.as_str(), o.batch.is_none()), ("delete 1NG585DGN9V0000GJ001", true));
        let o = parse_args(&a(&["queue", "hold", id, id])).unwrap();
        assert_eq!(o.batch.map(|b| b.ids.len()), Some(2));
        let o = parse_args(&a(&["queue", "release", "-"])).unwrap();
        assert!(o.batch.is_some_and(|b| b.stdin));
        let o = parse_args(&a(&["-j", "queue", "delete", "ALL", "deferred"])).unwrap();
        assert!(o.json && o.batch.is_some_and(|b| b.all == Some(Some(String::from("deferred")))));
        assert!(parse_args(&a(&["queue", "show", id, id])).is_err());
        assert!(parse_args(&a(&["queue", "show", "ALL"])).is_err());
        assert!(parse_args(&a(&["queue", "delete", id, "bogus"])).unwrap_err().contains("bogus"));
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

#[cfg(test)]
mod stream_tests {
    use super::*;
    use serde_json::json;

    /// A listing of `n` messages as control sends it.
    fn stream(n: usize) -> Vec<u8> {
        let mut s = Vec::new();
        for i in 0..n {
            let e = json!({"id": format!("1NG585DGN9V0000GJ{i:03}"), "queue": "deferred", "size": 10 + i,
                "arrival": 0, "sender": "s@example.org",
                "recipients": [{"address": "r@example.org", "state": "deferred", "reason": "451 \u{e9}t\u{e9}"}]});
            s.extend_from_slice(e.to_string().as_bytes());
            s.push(b'\n');
        }
        s.extend_from_slice(json!({"ok": true, "count": n}).to_string().as_bytes());
        s.push(b'\n');
        s
    }

    /// Feed `data` in pieces cut at `cuts`; the ids seen and the result.
    fn read(data: &[u8], cuts: &[usize], max_line: usize) -> (Vec<String>, Result<Value, String>) {
        let mut r = Reader::new(max_line);
        let mut ids = Vec::new();
        let mut at = 0;
        for &c in cuts.iter().chain(std::iter::once(&data.len())) {
            let piece = &data[at..c.max(at)];
            at = c.max(at);
            if let Err(e) = r.feed(piece, &mut |v| {
                ids.push(v["id"].as_str().unwrap_or("").to_string());
                Ok(())
            }) {
                return (ids, Err(e));
            }
        }
        (ids, r.finish())
    }

    #[test]
    fn a_part_may_end_anywhere() {
        let data = stream(3);
        let (whole, answer) = read(&data, &[], MAX_LINE);
        assert_eq!(whole.len(), 3);
        assert_eq!(answer.unwrap(), json!({"ok": true, "count": 3}));
        // Every cut in two, inside a line, a UTF-8 character, or just
        // before or after a line end.
        for cut in 0..=data.len() {
            let (ids, answer) = read(&data, &[cut], MAX_LINE);
            assert_eq!(ids, whole, "cut at {cut}");
            assert!(answer.is_ok(), "cut at {cut}: {answer:?}");
        }
        // A byte at a time.
        let every: Vec<usize> = (1..data.len()).collect();
        assert_eq!(read(&data, &every, MAX_LINE).0, whole);
    }

    #[test]
    fn a_stream_cut_short_is_an_error_never_a_shorter_listing() {
        let data = stream(3);
        for end in 0..data.len() {
            let (ids, answer) = read(&data[..end], &[], MAX_LINE);
            let e = answer.expect_err(&format!("cut at {end} taken for an answer"));
            if ids.is_empty() && end == 0 {
                assert!(e.starts_with("no answer"), "{e}");
            } else {
                assert!(e.contains("cut short") || e.contains("ended early"), "at {end}: {e}");
            }
        }
        let e = read(&data[..data.len() - 5], &[], MAX_LINE).1.unwrap_err();
        assert!(e.contains("cut short after 3 message(s)"), "{e}");
    }

    #[test]
    fn an_answer_that_does_not_add_up_is_refused() {
        // A message missing between the lines and the count.
        let mut data = stream(2);
        let first = data.iter().position(|&b| b == b'\n').unwrap();
        data.drain(..=first);
        let e = read(&data, &[], MAX_LINE).1.unwrap_err();
        assert!(e.contains("2 message(s) announced, 1 came"), "{e}");
        // Anything after the answer line.
        let mut data = stream(1);
        data.extend_from_slice(b"{\"id\":\"x\"}\n");
        assert!(read(&data, &[], MAX_LINE).1.unwrap_err().contains("after the answer"));
        // A line that is no object, or no JSON.
        assert!(read(b"[1,2]\n", &[], MAX_LINE).1.unwrap_err().contains("no JSON object"));
        assert!(read(b"{\"ok\":tru\n", &[], MAX_LINE).1.unwrap_err().starts_with("bad answer"));
        // An ordinary answer: one line, no count.
        let (ids, v) = read(b"{\"ok\":false,\"error\":\"busy\"}\n", &[3], MAX_LINE);
        assert!(ids.is_empty() && v.unwrap()["error"] == "busy");
    }

    #[test]
    fn a_line_is_bounded_not_the_answer() {
        // 200 lines of about 180 bytes: far beyond a bound of 1000 for
        // the whole, each line within it.
        let data = stream(200);
        assert!(data.len() > 20 * 1000);
        let (ids, answer) = read(&data, &[500, 4000, 9000], 1000);
        assert_eq!(ids.len(), 200);
        assert!(answer.is_ok());
        // A line over the bound, whole or not yet ended.
        let e = read(&data, &[], 100).1.unwrap_err();
        assert!(e.contains("longer than 100 bytes"), "{e}");
        let long = vec![b'x'; 5000];
        let mut r = Reader::new(1000);
        let e = r.feed(&long, &mut |_| Ok(())).unwrap_err();
        assert!(e.contains("longer than 1000 bytes"), "{e}");
    }

    #[test]
    fn an_error_from_the_printer_stops_the_reading() {
        let data = stream(5);
        let mut r = Reader::new(MAX_LINE);
        let mut n = 0;
        let e = r
            .feed(&data, &mut |_| {
                n += 1;
                if n == 2 { Err(String::from("writing the listing: Broken pipe")) } else { Ok(()) }
            })
            .unwrap_err();
        assert_eq!((n, e.as_str()), (2, "writing the listing: Broken pipe"));
    }

    #[test]
    fn printed_a_message_at_a_time_as_mailq_and_json_did_whole() {
        let data = stream(3);
        let mut m = Mailq::default();
        let mut j = JsonQueue::default();
        let mut text = String::new();
        let mut doc = String::new();
        let mut all = Vec::new();
        let mut r = Reader::new(MAX_LINE);
        r.feed(&data, &mut |v| {
            text += &m.entry(&v);
            doc += &j.entry(&v);
            all.push(v);
            Ok(())
        })
        .unwrap();
        text += &m.end();
        doc += &j.end();
        let whole = json!({"ok": true, "queue": all});
        assert_eq!(text, format_queue(&whole));
        assert_eq!(doc, format!("{whole}\n"));
        assert!(text.ends_with("-- 1 Kbytes in 3 Requests.\n"), "{text}");
        assert_eq!(Mailq::default().end(), "Mail queue is empty\n");
        assert_eq!(JsonQueue::default().end(), "{\"ok\":true,\"queue\":[]}\n");
        // Recipients left out of a large entry are said so.
        let mut big = all[0].clone();
        big["omitted"] = json!(1234);
        assert!(Mailq::default().entry(&big).contains("(and 1234 more recipient(s), not listed)"));
    }

    /// A message shown as control sends it: the message, `n` recipients,
    /// the answer line (announcing `announced`).
    fn shown_stream(n: usize, announced: usize) -> Vec<u8> {
        let mut s = Vec::new();
        let m = json!({"id": "1NG585DGN9V0000GJ001", "queue": "hold", "size": 21, "arrival": 1_700_000_000,
            "sender": "", "client": {"address": "192.0.2.1", "tls": ""}, "parameters": {"body": "7BIT"},
            "headers": "Subject: x\r\nTo: y\r\n"});
        s.extend_from_slice(format!("{m}\n").as_bytes());
        for i in 0..n {
            let r = json!({"address": format!("r{i}@example.org"), "orcpt": null, "notify": "NEVER",
                "state": "deferred", "attempts": 3, "next_attempt": 1_700_000_600, "reason": "451 later"});
            s.extend_from_slice(format!("{r}\n").as_bytes());
        }
        s.extend_from_slice(format!("{}\n", json!({"ok": true, "recipients": announced})).as_bytes());
        s
    }

    /// What `show_message` prints of `data`, or its error.
    fn print_shown(data: &[u8], json: bool) -> Result<String, String> {
        let mut shown = Shown::default();
        let mut out = String::new();
        let mut r = Reader::new(MAX_LINE);
        r.feed(data, &mut |v| {
            out += &shown.line(&v, json)?;
            Ok(())
        })?;
        let answer = r.finish()?;
        out += &shown.end(&answer, json)?;
        Ok(out)
    }

    #[test]
    fn a_message_shown_is_printed_a_recipient_at_a_time() {
        let text = print_shown(&shown_stream(2, 2), false).unwrap();
        let want = "queue ID: 1NG585DGN9V0000GJ001\nqueue: hold\nsize: 21\narrival: Tue, 14 Nov 2023 22:13:20 +0000\n\
            sender: <>\nclient address: 192.0.2.1\nparameter body: 7BIT\n\
            recipient: r0@example.org (deferred, 3 attempt(s), next Tue, 14 Nov 2023 22:23:20 +0000)\n  NOTIFY=NEVER\n  \
            reason: 451 later\n\
            recipient: r1@example.org (deferred, 3 attempt(s), next Tue, 14 Nov 2023 22:23:20 +0000)\n  NOTIFY=NEVER\n  \
            reason: 451 later\n\nSubject: x\nTo: y\n";
        assert_eq!(text, want);
        // As JSON: one document, the recipients an array in the message.
        let doc = print_shown(&shown_stream(2, 2), true).unwrap();
        let v: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(v["message"]["id"], "1NG585DGN9V0000GJ001");
        assert_eq!(v["message"]["headers"], "Subject: x\r\nTo: y\r\n");
        assert_eq!(v["message"]["recipients"].as_array().unwrap().len(), 2);
        assert_eq!(v["message"]["recipients"][1]["address"], "r1@example.org");
        assert!(doc.ends_with("]}}\n"));
        // Many recipients, each a line of its own.
        let many = print_shown(&shown_stream(20_000, 20_000), false).unwrap();
        assert_eq!(many.matches("\nrecipient: ").count(), 20_000);
    }

    #[test]
    fn a_message_shown_that_does_not_add_up_is_refused() {
        for json in [false, true] {
            let e = print_shown(&shown_stream(2, 3), json).unwrap_err();
            assert_eq!(e, "bad answer: 3 recipient(s) announced, 2 came");
            let e = print_shown(b"{\"ok\":true,\"recipients\":0}\n", json).unwrap_err();
            assert_eq!(e, "bad answer: no message");
        }
        // An answer line without the number.
        let mut data = shown_stream(1, 1);
        let cut = data.len() - "{\"ok\":true,\"recipients\":1}\n".len();
        data.truncate(cut);
        data.extend_from_slice(b"{\"ok\":true}\n");
        assert!(print_shown(&data, false).unwrap_err().contains("no number of"));
    }
}

//! One SMTP server session as a state machine with no I/O: the driver
//! pushes the bytes it read, the session consumes what it can and queues
//! actions (replies to write, content to pass to cleanup, TLS to start, the
//! connection to close). Every reply carries an enhanced status code.
//!
//! Bounds: the input buffer never grows past `Limits::command_line` plus
//! one read; a command line longer than the limit is answered and skipped
//! to its end (its tail is never read as a command); content streams
//! through in chunks. Pipelining: replies keep the order of commands; a
//! client that sends content before the 354 reply to DATA, or pipelines
//! without having been offered PIPELINING, is refused and disconnected;
//! input pipelined after STARTTLS is discarded before TLS starts.
//!
//! Trusts: nothing; input comes from the network.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use crate::address::{self, Mailbox, Path};
use crate::ipc::msg::UserFound;
use crate::smtpd::data::{Bare, ChunkChecker, DotDecoder, Status};
use crate::smtpd::params::{self, Body, MailParams, Notify, RcptParams, Ret};

mod tally;
use tally::Tally;

/// The session's bounds.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest command line, CR LF included.
    pub command_line: usize,
    pub message_size: u64,
    pub recipients: usize,
    /// Errors before the session is ended with 421.
    pub errors: u32,
    /// Errors answered without a pause; each one beyond waits longer.
    pub errors_before_pause: u32,
    /// The pause per error beyond `errors_before_pause`.
    pub error_pause: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            command_line: 2048,
            message_size: 10 << 20,
            recipients: 1000,
            errors: 20,
            errors_before_pause: 3,
            error_pause: Duration::from_secs(1),
        }
    }
}

impl Limits {
    /// The bounds the configuration sets (`limits` and `smtpd`).
    pub fn from_config(limits: &crate::config::smtp::Limits, smtpd: &crate::config::smtp::Smtpd) -> Limits {
        Limits {
            command_line: limits.line_length as usize,
            message_size: limits.message_size,
            recipients: limits.recipients as usize,
            errors: smtpd.errors,
            errors_before_pause: smtpd.errors_before_pause,
            error_pause: smtpd.error_pause,
        }
    }
}

/// What the session needs from its configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub hostname: String,
    pub limits: Limits,
    pub bare: Bare,
    /// STARTTLS can be offered (certificate loaded, not implicit TLS).
    pub starttls: bool,
    /// A local program on a pipe (`sendmail -bs`), as Postfix's stand-alone
    /// smtpd and Sendmail take one: HELO is not required, commands may be
    /// written all at once (content too), a bare LF is read as CR LF
    /// (commands and content), and an address without a domain is this
    /// host's (`<root>` is `root@hostname`). Never for the network.
    pub local_client: bool,
}

/// Who is connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub address: String,
    pub hostname: String,
}

/// The verdict of the recipient checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcptVerdict {
    Accept,
    Reject {
        code: u16,
        enhanced: &'static str,
        text: String,
    },
    /// Ask the name service whether this user exists
    /// ([`Action::LookupUser`]); [`Checks::looked_up`] then decides.
    Lookup(String),
}

/// Recipient and sender policy, answered from tables in memory, or for
/// a local name the tables lack, by the name service.
pub trait Checks {
    fn recipient(&self, peer: &Peer, rcpt: &Path) -> RcptVerdict;
    /// The verdict on `rcpt` once the name service answered (never
    /// `Lookup` again).
    fn looked_up(&self, _rcpt: &Path, found: UserFound) -> RcptVerdict {
        match found {
            UserFound::Yes => RcptVerdict::Accept,
            UserFound::No => RcptVerdict::Reject { code: 550, enhanced: "5.1.1", text: String::from("User unknown") },
            UserFound::Unavailable => {
                RcptVerdict::Reject { code: 451, enhanced: "4.3.0", text: String::from("Temporary lookup failure") }
            }
        }
    }
    /// Whether a new transaction may start (e.g. the spool has room).
    fn mail(&self, _peer: &Peer) -> RcptVerdict {
        RcptVerdict::Accept
    }
}

/// A recipient as accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// None for `<Postmaster>` without a domain.
    pub mailbox: Option<Mailbox>,
    pub notify: Option<Notify>,
    pub orcpt: Option<String>,
}

/// The envelope of a message being received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// None for the null sender `<>`.
    pub sender: Option<Mailbox>,
    pub recipients: Vec<Recipient>,
    pub body: Body,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
    pub helo: String,
    /// The Received: header's `with` word ([`protocol_word`]).
    pub protocol: &'static str,
}

/// What the driver must do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes (one or more complete replies).
    Reply(Vec<u8>),
    /// Wait this long before writing what follows (error pause).
    Pause(Duration),
    /// Write what is queued, then start TLS; discard unread plaintext.
    StartTls,
    /// A message begins.
    Begin(Box<Envelope>),
    /// Content of the message begun (CR LF line ends, dots unstuffed).
    Content(Vec<u8>),
    /// The content is complete: commit it and call `committed`.
    End,
    /// The message begun will not be committed.
    Abort,
    /// Ask whether this user exists and call `looked_up` with the answer;
    /// the session reads no further command until then.
    LookupUser(String),
    /// Log this line (a refusal by the checks, in Postfix's
    /// `NOQUEUE: reject:` form).
    Log(String),
    /// Write what is queued, then close the connection.
    Close,
}

/// The result of committing a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Commit {
    Queued(String),
    /// A temporary failure (I/O error): 451 4.3.0.
    TempFail(String),
    /// The spool is short of space: 452 4.3.1.
    NoSpace,
    /// Refused for good by cleanup (e.g. hop count): code, enhanced, text.
    Refused(u16, String, String),
}

#[derive(Debug)]
enum Phase {
    Command,
    /// Skipping the rest of an over-long command line.
    SkipLine,
    Data(DotDecoder),
    /// Reading a BDAT chunk of `left` bytes; `last` if it ends the message.
    /// With `refuse`, the chunk is read and dropped, then refused thus.
    Bdat {
        left: u64,
        last: bool,
        refuse: Option<(u16, &'static str, &'static str)>,
    },
    /// Waiting for the commit verdict.
    Commit,
    /// Waiting for the name service's word on a recipient.
    Lookup(Box<(Path, RcptParams)>),
    /// STARTTLS answered; no input until the driver reports TLS is up.
    Handshake,
    Closed,
}

#[derive(Debug)]
struct Transaction {
    sender: Option<Mailbox>,
    params: MailParams,
    recipients: Vec<Recipient>,
    /// Content delivered so far.
    size: u64,
    oversize: bool,
    /// BDAT used (DATA is then refused) and its checker.
    chunks: Option<ChunkChecker>,
    /// The transaction failed during BDAT; later chunks are discarded.
    failed: bool,
    begun: bool,
    /// Recipients refused for being over the limit (not counted as
    /// errors up to the limit again, as Postfix's
    /// `smtpd_recipient_overshoot_limit`).
    overshoot: usize,
    /// The recipients taken, as compared for duplicates.
    seen: HashSet<String>,
    /// The queue ID the message was given as it began, if any (see
    /// [`Session::named`]).
    queue_id: Option<String>,
}

/// How much content is gathered before it is passed on.
const CONTENT_CHUNK: usize = 64 * 1024;

/// One session.
pub struct Session {
    settings: Settings,
    peer: Peer,
    phase: Phase,
    helo: Option<String>,
    /// A local client's last byte in: a bare LF after it is made CR LF.
    last_in: u8,
    esmtp: bool,
    tls: bool,
    tx: Option<Transaction>,
    errors: u32,
    input: Vec<u8>,
    content: Vec<u8>,
    out: VecDeque<Action>,
    tally: Tally,
}

fn reply(code: u16, enhanced: &str, text: &str) -> Vec<u8> {
    format!("{code} {enhanced} {text}\r\n").into_bytes()
}

impl Session {
    /// A new session; queues the greeting. `tls`: the connection is
    /// already TLS (implicit TLS listener).
    pub fn new(settings: Settings, peer: Peer, tls: bool) -> Session {
        let mut s = Session {
            settings,
            peer,
            phase: Phase::Command,
            helo: None,
            last_in: 0,
            esmtp: false,
            tls,
            tx: None,
            errors: 0,
            input: Vec::new(),
            content: Vec::new(),
            out: VecDeque::new(),
            tally: Tally::new(),
        };
        let greeting = format!("220 {} ESMTP mta\r\n", s.settings.hostname);
        s.out.push_back(Action::Reply(greeting.into_bytes()));
        s
    }

    /// The client's name, learnt before the greeting goes out.
    pub fn set_client_name(&mut self, name: String) {
        self.peer.hostname = name;
    }

    /// How many more bytes the session will take now (0 while it waits
    /// for a commit verdict with its buffer full, or once closed).
    pub fn space(&self) -> usize {
        match self.phase {
            Phase::Closed | Phase::Handshake => 0,
            _ => (self.settings.limits.command_line + CONTENT_CHUNK).saturating_sub(self.input.len()),
        }
    }

    /// The message is complete and waits for cleanup's verdict.
    pub fn awaiting_commit(&self) -> bool {
        matches!(self.phase, Phase::Commit)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Take the queued actions.
    pub fn actions(&mut self) -> impl Iterator<Item = Action> + '_ {
        self.out.drain(..)
    }

    /// The connection is now TLS (after `Action::StartTls`): the session
    /// starts over without HELO, as RFC 3207 requires.
    pub fn tls_started(&mut self) {
        if !matches!(self.phase, Phase::Handshake) {
            return;
        }
        self.phase = Phase::Command;
        self.tls = true;
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.input.clear();
    }

    /// Push bytes the driver read (at most `space()`) and process them.
    pub fn receive(&mut self, data: &[u8], checks: &dyn Checks) {
        if self.is_closed() {
            return;
        }
        let take = data.len().min(self.space());
        if self.settings.local_client {
            // A local program's lines may end in LF alone: read as CR LF,
            // commands and content alike (sendmail without -bs does so too).
            for &b in &data[..take] {
                if b == b'\n' && self.last_in != b'\r' {
                    self.input.push(b'\r');
                }
                self.input.push(b);
                self.last_in = b;
            }
        } else {
            self.input.extend_from_slice(&data[..take]);
        }
        self.process(checks);
    }

    /// The message of the transaction under way was given queue ID `id`
    /// as it began (the driver logged it): a refusal at its end is
    /// logged under it.
    pub fn named(&mut self, id: &str) {
        if let Some(t) = self.tx.as_mut() {
            t.queue_id = Some(id.to_string());
        }
    }

    /// The driver's verdict on the message it was given. A message not
    /// queued is logged as Postfix logs a refusal (`ID: reject:
    /// END-OF-MESSAGE from ...`, or `NOQUEUE:` when it had no ID yet):
    /// pflogsumm counts it, and the administrator sees why.
    pub fn committed(&mut self, result: Commit, checks: &dyn Checks) {
        if !matches!(self.phase, Phase::Commit) {
            return;
        }
        self.phase = Phase::Command;
        let tx = self.tx.take();
        let (code, enhanced, text) = match result {
            Commit::Queued(id) => {
                self.ok(250, "2.0.0", &format!("Ok: queued as {id}"));
                return self.process(checks);
            }
            Commit::TempFail(why) => (451, String::from("4.3.0"), format!("Error: queue file write error ({why})")),
            Commit::NoSpace => (452, String::from("4.3.1"), String::from("Insufficient system storage")),
            Commit::Refused(code, enh, text) => (code, enh, text),
        };
        if let Some(t) = tx {
            let from = t.sender.as_ref().map(ToString::to_string).unwrap_or_default();
            let to = match t.recipients.as_slice() {
                [one] => Some(one.mailbox.as_ref().map_or_else(|| String::from("Postmaster"), ToString::to_string)),
                _ => None,
            };
            let id = t.queue_id.as_deref().unwrap_or("NOQUEUE");
            let line = self.reject_line(id, "END-OF-MESSAGE", (code, &enhanced, &text), &from, to.as_deref());
            self.out.push_back(Action::Log(line));
        }
        self.error(code, &enhanced, &text);
        self.process(checks);
    }

    /// The name service's answer on the recipient the session waits for
    /// (after `Action::LookupUser`).
    pub fn looked_up(&mut self, found: UserFound, checks: &dyn Checks) {
        let (path, params) = match std::mem::replace(&mut self.phase, Phase::Command) {
            Phase::Lookup(pending) => *pending,
            // Not waiting: the phase is left as it was.
            other => {
                self.phase = other;
                return;
            }
        };
        match checks.looked_up(&path, found) {
            RcptVerdict::Accept => self.take_recipient(path, params),
            RcptVerdict::Reject { code, enhanced, text } => self.refuse_rcpt(&path, (code, enhanced, &text)),
            RcptVerdict::Lookup(_) => self.error(451, "4.3.0", "Temporary lookup failure"),
        }
        self.process(checks);
    }

    /// Where the session is, for a log line about its end (`lost
    /// connection after RCPT`): the command it was at, `CONNECT` before
    /// any, `END-OF-MESSAGE` once a message's content ended.
    pub fn stage(&self) -> &'static str {
        self.tally.stage()
    }

    /// The commands the session gave, for the log line at its end:
    /// `ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4` (succeeded/given where
    /// they differ; a command still waiting for its final reply did not
    /// succeed).
    pub fn summary(&self) -> String {
        self.tally.summary(self.mid_command())
    }

    /// In a message: a command waits for its final reply, or a message's
    /// content has begun (between BDAT chunks).
    pub fn mid_message(&self) -> bool {
        self.mid_command() || self.tx.as_ref().is_some_and(|t| t.begun)
    }

    /// A command has begun and not had its final reply.
    fn mid_command(&self) -> bool {
        matches!(self.phase, Phase::Data(_) | Phase::Bdat { .. } | Phase::Commit | Phase::Lookup(_))
    }

    /// The client went away or the driver gave up: abandon any message.
    pub fn abort(&mut self) {
        if self.mid_command() {
            self.tally.abandon();
        }
        if self.tx.as_ref().is_some_and(|t| t.begun) && !matches!(self.phase, Phase::Commit) {
            self.out.push_back(Action::Abort);
        }
        self.tx = None;
        self.phase = Phase::Closed;
    }

    fn ok(&mut self, code: u16, enhanced: &str, text: &str) {
        self.tally.replied(code);
        self.out.push_back(Action::Reply(reply(code, enhanced, text)));
    }

    /// An error reply, after a pause that grows with the error count; too
    /// many errors end the session.
    fn error(&mut self, code: u16, enhanced: &str, text: &str) {
        self.tally.replied(code);
        self.errors += 1;
        let l = &self.settings.limits;
        if self.errors > l.errors_before_pause {
            let n = self.errors - l.errors_before_pause;
            self.out.push_back(Action::Pause(l.error_pause.saturating_mul(n)));
        }
        self.out.push_back(Action::Reply(reply(code, enhanced, text)));
        if self.errors >= self.settings.limits.errors && !self.is_closed() {
            let line = format!("too many errors after {} from {}", self.stage(), self.client());
            self.out.push_back(Action::Log(line));
            self.close_with(421, "4.7.0", "Error: too many errors");
        }
    }

    /// `name[address]`, as log lines give the client.
    pub fn client(&self) -> String {
        format!("{}[{}]", self.peer.hostname, self.peer.address)
    }

    fn close_with(&mut self, code: u16, enhanced: &str, text: &str) {
        self.tally.replied(code);
        if self.tx.as_ref().is_some_and(|t| t.begun) {
            self.out.push_back(Action::Abort);
        }
        self.tx = None;
        let host = self.settings.hostname.clone();
        self.out.push_back(Action::Reply(reply(code, enhanced, &format!("{host} {text}"))));
        self.out.push_back(Action::Close);
        self.phase = Phase::Closed;
        self.input.clear();
    }

    fn process(&mut self, checks: &dyn Checks) {
        loop {
            let progressed = match self.phase {
                Phase::Command => self.command_step(checks),
                Phase::SkipLine => self.skip_step(),
                Phase::Data(_) => self.data_step(),
                Phase::Bdat { .. } => self.bdat_step(),
                Phase::Commit | Phase::Lookup(_) | Phase::Closed | Phase::Handshake => false,
            };
            if !progressed {
                break;
            }
        }
    }

    fn skip_step(&mut self) -> bool {
        match self.input.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.input.drain(..=i);
                self.phase = Phase::Command;
                true
            }
            None => {
                self.input.clear();
                false
            }
        }
    }

    fn command_step(&mut self, checks: &dyn Checks) -> bool {
        let max = self.settings.limits.command_line;
        // A line that is no command counts as an unknown one.
        let Some(end) = self.input.iter().position(|&b| b == b'\n') else {
            if self.input.len() >= max {
                self.input.clear();
                self.phase = Phase::SkipLine;
                self.tally.begin("");
                self.error(500, "5.5.2", "Error: line too long");
            }
            return false;
        };
        if end + 1 > max {
            self.input.drain(..=end);
            self.tally.begin("");
            self.error(500, "5.5.2", "Error: line too long");
            return true;
        }
        let line: Vec<u8> = self.input.drain(..=end).collect();
        let pipelined = !self.input.is_empty();
        let Some(text) = line.strip_suffix(b"\r\n") else {
            self.tally.begin("");
            self.error(500, "5.5.2", "Error: bare <LF> received; lines end with <CR><LF>");
            return true;
        };
        if text.iter().any(|&b| b == b'\r' || b == 0) {
            self.tally.begin("");
            self.error(501, "5.5.2", "Error: command contains CR or NUL");
            return true;
        }
        let Ok(text) = std::str::from_utf8(text) else {
            self.tally.begin("");
            self.error(500, "5.5.2", "Error: command is not valid UTF-8");
            return true;
        };
        // (A local client's script writes everything at once.)
        if pipelined && !self.esmtp && self.helo.is_some() && !self.settings.local_client {
            self.tally.done();
            let line = format!("improper command pipelining after {} from {}", self.stage(), self.client());
            self.out.push_back(Action::Log(line));
            self.close_with(554, "5.5.0", "Error: improper command pipelining (PIPELINING was not offered)");
            return false;
        }
        self.command(text, pipelined, checks);
        true
    }

    fn command(&mut self, line: &str, pipelined: bool, checks: &dyn Checks) {
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v, a),
            None => (line, ""),
        };
        self.tally.begin(verb);
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => self.helo_cmd(arg, true),
            "HELO" => self.helo_cmd(arg, false),
            "MAIL" => self.mail(arg, checks),
            "RCPT" => self.rcpt(arg, checks),
            "DATA" => self.data_cmd(arg, pipelined),
            "BDAT" => self.bdat_cmd(arg),
            "RSET" => {
                if !arg.is_empty() {
                    return self.error(501, "5.5.4", "Syntax: RSET");
                }
                self.reset_tx();
                self.ok(250, "2.0.0", "Ok");
            }
            "NOOP" => self.ok(250, "2.0.0", "Ok"),
            "QUIT" => {
                let host = self.settings.hostname.clone();
                self.ok(221, "2.0.0", &format!("{host} closing connection"));
                self.out.push_back(Action::Close);
                self.phase = Phase::Closed;
                self.input.clear();
            }
            "VRFY" => self.ok(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"),
            "EXPN" => self.error(502, "5.5.1", "Error: EXPN not available"),
            "HELP" => {
                self.ok(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS")
            }
            "STARTTLS" => self.starttls(arg),
            _ => self.error(500, "5.5.2", "Error: command not recognized"),
        }
    }

    fn starttls(&mut self, arg: &str) {
        if !arg.is_empty() {
            return self.error(501, "5.5.4", "Syntax: STARTTLS");
        }
        if self.tls {
            return self.error(503, "5.5.1", "Error: TLS already active");
        }
        if !self.settings.starttls {
            return self.error(454, "4.7.0", "Error: TLS not available");
        }
        if !self.esmtp {
            return self.error(503, "5.5.1", "Error: send EHLO first");
        }
        self.reset_tx();
        // Plaintext pipelined after STARTTLS is discarded: it must never be
        // executed as if it had come inside TLS.
        self.input.clear();
        self.ok(220, "2.0.0", "Ready to start TLS");
        self.out.push_back(Action::StartTls);
        self.phase = Phase::Handshake;
    }

    fn reset_tx(&mut self) {
        if self.tx.as_ref().is_some_and(|t| t.begun) {
            self.out.push_back(Action::Abort);
        }
        self.tx = None;
    }

    fn helo_cmd(&mut self, arg: &str, esmtp: bool) {
        let name = arg.trim_end();
        if name.is_empty() || name.contains(' ') {
            let verb = if esmtp { "EHLO" } else { "HELO" };
            return self.error(501, "5.5.4", &format!("Syntax: {verb} hostname"));
        }
        // Names that are not quite host names are common (`nas_01.lan`,
        // `host.example.`) and RFC 5321 4.1.4 forbids refusing mail for
        // them: underscores and a final dot pass; what could not be a
        // name at all (controls, `!`, ...) does not.
        let lenient = name.strip_suffix('.').unwrap_or(name).replace('_', "-");
        if address::parse_domain(&lenient, true).is_err() {
            return self.error(501, "5.5.2", "Error: invalid host name");
        }
        self.reset_tx();
        self.helo = Some(name.to_string());
        self.esmtp = esmtp;
        let host = self.settings.hostname.clone();
        if !esmtp {
            return self.ok(250, "2.0.0", &host);
        }
        let mut lines = vec![host, String::from("PIPELINING")];
        lines.push(format!("SIZE {}", self.settings.limits.message_size));
        lines.extend(["8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES", "CHUNKING"].map(String::from));
        if self.settings.starttls && !self.tls {
            lines.push(String::from("STARTTLS"));
        }
        let mut text = String::new();
        for (i, l) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            text.push_str(&format!("250{sep}{l}\r\n"));
        }
        self.out.push_back(Action::Reply(text.into_bytes()));
    }

    fn mail(&mut self, arg: &str, checks: &dyn Checks) {
        if self.helo.is_none() && self.settings.local_client {
            self.helo = Some(String::from("localhost"));
        }
        if self.helo.is_none() {
            return self.error(503, "5.5.1", "Error: send HELO/EHLO first");
        }
        if self.tx.is_some() {
            return self.error(503, "5.5.1", "Error: nested MAIL command");
        }
        let Some(rest) = strip_keyword(arg, "FROM:") else {
            return self.error(501, "5.5.4", "Syntax: MAIL FROM:<address>");
        };
        let utf8 = self.esmtp && rest.to_ascii_uppercase().contains(" SMTPUTF8");
        let rest = self.qualified(rest.trim_start(), false);
        let rest = rest.as_ref();
        let (path, params_text) = match address::parse_reverse_path(rest, utf8) {
            Ok(p) => p,
            Err(address::Error::Utf8NotAllowed) => {
                return self.error(553, "5.6.7", "Error: non-ASCII sender address without SMTPUTF8");
            }
            Err(e) => return self.error(501, "5.1.7", &format!("Bad sender address syntax: {e}")),
        };
        if !self.esmtp && !params_text.trim().is_empty() {
            return self.error(555, "5.5.4", "Error: parameters need EHLO");
        }
        let params = match params::mail(params_text, self.settings.limits.message_size) {
            Ok(p) => p,
            Err(e) => return self.error(e.code, e.enhanced, &e.text),
        };
        // The word was found in the address (a quoted local part), not
        // among the parameters: the address is judged without it.
        if utf8
            && !params.smtputf8
            && let Err(address::Error::Utf8NotAllowed) = address::parse_reverse_path(rest, false)
        {
            return self.error(553, "5.6.7", "Error: non-ASCII sender address without SMTPUTF8");
        }
        if let RcptVerdict::Reject { code, enhanced, text } = checks.mail(&self.peer) {
            let from = path_text(&path);
            return self.refuse("MAIL", (code, enhanced, &text), &from, None);
        }
        let sender = match path {
            Path::Null => None,
            Path::Mailbox(m) => Some(m),
            Path::Postmaster => return self.error(553, "5.1.7", "Bad sender address syntax: domain required"),
        };
        self.tx = Some(Transaction {
            sender,
            params,
            recipients: Vec::new(),
            size: 0,
            oversize: false,
            chunks: None,
            failed: false,
            begun: false,
            overshoot: 0,
            seen: HashSet::new(),
            queue_id: None,
        });
        self.ok(250, "2.1.0", "Ok");
    }

    /// A local client's `<name>` (no domain) as `<name@hostname>`, as
    /// Postfix and Sendmail qualify it; `<postmaster>` stays the
    /// postmaster where `postmaster` may (a recipient). Anyone else's path
    /// as it is.
    fn qualified<'a>(&self, path: &'a str, postmaster: bool) -> std::borrow::Cow<'a, str> {
        let bare = |inner: &str| {
            !inner.is_empty()
                && !inner.contains(['@', ':', '"', '<'])
                && !(postmaster && inner.eq_ignore_ascii_case("postmaster"))
        };
        match path.strip_prefix('<').and_then(|p| p.split_once('>')) {
            Some((inner, rest)) if self.settings.local_client && bare(inner) => {
                std::borrow::Cow::Owned(format!("<{inner}@{}>{rest}", self.settings.hostname))
            }
            _ => std::borrow::Cow::Borrowed(path),
        }
    }

    fn rcpt(&mut self, arg: &str, checks: &dyn Checks) {
        let Some(tx) = self.tx.as_ref() else {
            return self.error(503, "5.5.1", "Error: need MAIL command");
        };
        if tx.chunks.is_some() {
            return self.error(503, "5.5.1", "Error: RCPT after BDAT");
        }
        let limit = self.settings.limits.recipients;
        if tx.recipients.len() >= limit {
            // The client sends these again in a later transaction (RFC
            // 5321 4.5.3.1.10): no error, lest the error limit end the
            // session and lose the transaction; beyond as many again,
            // they count.
            if let Some(tx) = self.tx.as_mut()
                && tx.overshoot < limit
            {
                tx.overshoot += 1;
                return self.ok(452, "4.5.3", "Error: too many recipients");
            }
            return self.error(452, "4.5.3", "Error: too many recipients");
        }
        let utf8 = tx.params.smtputf8;
        let Some(rest) = strip_keyword(arg, "TO:") else {
            return self.error(501, "5.5.4", "Syntax: RCPT TO:<address>");
        };
        let rest = self.qualified(rest.trim_start(), true);
        let (path, params_text) = match address::parse_forward_path(&rest, utf8) {
            Ok(p) => p,
            Err(address::Error::Utf8NotAllowed) => {
                return self.error(553, "5.6.7", "Error: non-ASCII recipient address without SMTPUTF8");
            }
            Err(e) => return self.error(501, "5.1.3", &format!("Bad recipient address syntax: {e}")),
        };
        if path == Path::Null {
            return self.error(553, "5.1.3", "Error: null recipient");
        }
        if !self.esmtp && !params_text.trim().is_empty() {
            return self.error(555, "5.5.4", "Error: parameters need EHLO");
        }
        let params = match params::rcpt(params_text, utf8) {
            Ok(p) => p,
            Err(e) => return self.error(e.code, e.enhanced, &e.text),
        };
        match checks.recipient(&self.peer, &path) {
            RcptVerdict::Accept => self.take_recipient(path, params),
            RcptVerdict::Reject { code, enhanced, text } => self.refuse_rcpt(&path, (code, enhanced, &text)),
            RcptVerdict::Lookup(name) => {
                self.phase = Phase::Lookup(Box::new((path, params)));
                self.out.push_back(Action::LookupUser(name));
            }
        }
    }

    /// A recipient the checks refused: logged, then answered.
    fn refuse_rcpt(&mut self, rcpt: &Path, reply: (u16, &str, &str)) {
        let from = match self.tx.as_ref().and_then(|t| t.sender.as_ref()) {
            Some(m) => m.to_string(),
            None => String::new(),
        };
        self.refuse("RCPT", reply, &from, Some(&path_text(rcpt)));
    }

    /// A refusal by the checks (not a syntax or sequence error): logged
    /// as Postfix logs it, so that log watchers (fail2ban) and
    /// administrators find it, then answered as any error.
    fn refuse(&mut self, stage: &str, reply: (u16, &str, &str), from: &str, to: Option<&str>) {
        let line = self.reject_line("NOQUEUE", stage, reply, from, to);
        self.out.push_back(Action::Log(line));
        self.error(reply.0, reply.1, reply.2);
    }

    /// Postfix's line for a refusal: `ID: reject: STAGE from CLIENT: CODE
    /// X.Y.Z text; from=<...> to=<...> proto=ESMTP helo=<...>`.
    fn reject_line(
        &self,
        id: &str,
        stage: &str,
        (code, enhanced, text): (u16, &str, &str),
        from: &str,
        to: Option<&str>,
    ) -> String {
        let to = to.map(|t| format!(" to=<{t}>")).unwrap_or_default();
        let proto = if self.esmtp { "ESMTP" } else { "SMTP" };
        format!(
            "{id}: reject: {stage} from {}: {code} {enhanced} {text}; from=<{from}>{to} proto={proto} helo=<{}>",
            self.client(),
            self.helo.as_deref().unwrap_or("")
        )
    }

    /// Add an accepted recipient to the transaction and say so.
    fn take_recipient(&mut self, path: Path, params: RcptParams) {
        let mailbox = match path {
            Path::Mailbox(m) => Some(m),
            _ => None,
        };
        if let Some(tx) = self.tx.as_mut() {
            // The same recipient again (with the same DSN parameters) is
            // taken once, as Postfix's cleanup does: one copy delivered.
            let key = match &mailbox {
                Some(m) => {
                    format!("{:?}\n{:?}\n{}@{}", params.notify, params.orcpt, m.local, m.domain.to_ascii_lowercase())
                }
                None => format!("{:?}\n{:?}\npostmaster", params.notify, params.orcpt),
            };
            if tx.seen.insert(key) {
                tx.recipients.push(Recipient { mailbox, notify: params.notify, orcpt: params.orcpt });
            }
        }
        self.ok(250, "2.1.5", "Ok");
    }

    /// Check that a transaction can take content; Err is the reply.
    fn ready_for_content(&self) -> Result<(), (u16, &'static str, &'static str)> {
        match &self.tx {
            None => Err((503, "5.5.1", "Error: need MAIL command")),
            Some(t) if t.recipients.is_empty() => Err((554, "5.5.1", "Error: no valid recipients")),
            Some(_) => Ok(()),
        }
    }

    fn envelope(&self) -> Option<Box<Envelope>> {
        let tx = self.tx.as_ref()?;
        let protocol = protocol_word(self.esmtp, self.tls, tx.params.smtputf8);
        Some(Box::new(Envelope {
            sender: tx.sender.clone(),
            recipients: tx.recipients.clone(),
            body: tx.params.body,
            smtputf8: tx.params.smtputf8,
            ret: tx.params.ret,
            envid: tx.params.envid.clone(),
            helo: self.helo.clone().unwrap_or_default(),
            protocol,
        }))
    }

    fn data_cmd(&mut self, arg: &str, pipelined: bool) {
        if !arg.is_empty() {
            return self.error(501, "5.5.4", "Syntax: DATA");
        }
        if self.tx.as_ref().is_some_and(|t| t.chunks.is_some()) {
            return self.error(503, "5.5.1", "Error: DATA after BDAT");
        }
        if let Err((c, e, t)) = self.ready_for_content() {
            return self.error(c, e, t);
        }
        if pipelined && !self.settings.local_client {
            // Content sent before the 354: the client did not wait, and what
            // it sent must not be taken as commands or as a message (from
            // the network; a local script writes everything at once).
            let line = format!("improper command pipelining after DATA from {}", self.client());
            self.out.push_back(Action::Log(line));
            return self.close_with(554, "5.5.0", "Error: improper command pipelining after DATA");
        }
        if let Some(env) = self.envelope() {
            self.out.push_back(Action::Begin(env));
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.begun = true;
        }
        self.ok(354, "2.0.0", "End data with <CR><LF>.<CR><LF>");
        self.phase = Phase::Data(DotDecoder::new(self.settings.bare));
    }

    fn flush_content(&mut self, force: bool) {
        if self.content.len() >= CONTENT_CHUNK || (force && !self.content.is_empty()) {
            let chunk = std::mem::take(&mut self.content);
            self.out.push_back(Action::Content(chunk));
        }
    }

    /// Account for decoded content; drop it once the size limit is passed.
    fn account(&mut self, before: usize) {
        let added = (self.content.len() - before) as u64;
        let max = self.settings.limits.message_size;
        if let Some(tx) = self.tx.as_mut() {
            tx.size += added;
            if tx.size > max {
                tx.oversize = true;
            }
            if tx.oversize {
                self.content.truncate(before);
            }
        }
    }

    fn data_step(&mut self) -> bool {
        let Phase::Data(dec) = &mut self.phase else { return false };
        if self.input.is_empty() {
            return false;
        }
        let before = self.content.len();
        let (n, status) = dec.feed(&self.input, &mut self.content);
        let saw_nul = dec.saw_nul;
        self.input.drain(..n);
        self.account(before);
        match status {
            Status::More => {
                self.flush_content(false);
                false
            }
            Status::BareLine => {
                self.content.clear();
                self.close_with(554, "5.5.2", "Error: bare <CR> or <LF> in message content (RFC 5321 2.3.8)");
                false
            }
            Status::End => {
                self.finish_content(saw_nul);
                true
            }
        }
    }

    /// The content is complete: refuse it or hand it on for commit.
    fn finish_content(&mut self, saw_nul: bool) {
        self.tally.stage_is(tally::END_OF_MESSAGE);
        let oversize = self.tx.as_ref().is_some_and(|t| t.oversize);
        if oversize || saw_nul {
            self.content.clear();
            self.out.push_back(Action::Abort);
            self.tx = None;
            self.phase = Phase::Command;
            if oversize {
                self.error(552, "5.3.4", "Error: message file too big");
            } else {
                self.error(554, "5.6.0", "Error: message contains NUL characters");
            }
            return;
        }
        self.flush_content(true);
        self.out.push_back(Action::End);
        self.phase = Phase::Commit;
    }

    fn bdat_cmd(&mut self, arg: &str) {
        let mut words = arg.split(' ');
        let size = words.next().unwrap_or("");
        let last = match words.next() {
            None => false,
            Some(w) if w.eq_ignore_ascii_case("LAST") => true,
            Some(_) => return self.close_with(501, "5.5.4", "Error: syntax: BDAT size [LAST]"),
        };
        if words.next().is_some() || size.is_empty() || size.len() > 19 || !size.bytes().all(|b| b.is_ascii_digit()) {
            // Without a valid size the chunk cannot be skipped: the rest of
            // the stream cannot be told from commands.
            return self.close_with(501, "5.5.4", "Error: syntax: BDAT size [LAST]");
        }
        let left: u64 = size.parse().unwrap_or(u64::MAX);
        let mut refuse = self.ready_for_content().err();
        if self.tx.as_ref().is_some_and(|t| t.failed) {
            refuse = Some((554, "5.5.0", "Error: transaction failed; send RSET"));
        }
        if refuse.is_none() {
            let begin = self.tx.as_ref().is_some_and(|t| !t.begun);
            if begin && let Some(env) = self.envelope() {
                self.out.push_back(Action::Begin(env));
            }
            if let Some(tx) = self.tx.as_mut() {
                tx.begun = true;
                if tx.chunks.is_none() {
                    tx.chunks = Some(ChunkChecker::new(self.settings.bare));
                }
            }
        }
        self.phase = Phase::Bdat { left, last, refuse };
    }

    fn bdat_step(&mut self) -> bool {
        let Phase::Bdat { left, last, refuse } = self.phase else { return false };
        let n = (self.input.len() as u64).min(left) as usize;
        if n == 0 && left > 0 {
            return false;
        }
        let before = self.content.len();
        if refuse.is_none() {
            if let Some(checker) = self.tx.as_mut().and_then(|t| t.chunks.as_mut()) {
                checker.feed(&self.input[..n], &mut self.content);
            }
            self.account(before);
        }
        self.input.drain(..n);
        let left = left - n as u64;
        if left > 0 {
            self.phase = Phase::Bdat { left, last, refuse };
            self.flush_content(false);
            return false;
        }
        self.phase = Phase::Command;
        if let Some((code, enh, text)) = refuse {
            if last {
                self.reset_tx();
            }
            self.error(code, enh, text);
            return true;
        }
        let (violated, nul) = match self.tx.as_mut().and_then(|t| t.chunks.as_mut()) {
            Some(c) => {
                if last {
                    c.finish(&mut self.content);
                }
                (c.violated, c.saw_nul)
            }
            None => (false, false),
        };
        if violated {
            self.content.clear();
            self.out.push_back(Action::Abort);
            if let Some(tx) = self.tx.as_mut() {
                tx.failed = true;
                tx.begun = false;
            }
            if last {
                self.tx = None;
            }
            self.error(554, "5.5.2", "Error: bare <CR> or <LF> in message content (RFC 5321 2.3.8)");
            return true;
        }
        if last {
            self.finish_content(nul);
        } else {
            self.flush_content(false);
            self.ok(250, "2.0.0", &format!("{} octets received", self.tx.as_ref().map_or(0, |t| t.size)));
        }
        true
    }
}

/// The protocol as a Received: header's `with` names it: RFC 3848's
/// SMTP, ESMTP and ESMTPS (TLS; HELO has no such word), and RFC 6531's
/// UTF8SMTP and UTF8SMTPS for a transaction with SMTPUTF8 (which needs
/// EHLO). The server offers no AUTH, so no word ends in A.
/// A path as the log shows it between angle brackets.
fn path_text(p: &Path) -> String {
    match p {
        Path::Null => String::new(),
        Path::Postmaster => String::from("postmaster"),
        Path::Mailbox(m) => m.to_string(),
    }
}

fn protocol_word(esmtp: bool, tls: bool, smtputf8: bool) -> &'static str {
    match (esmtp, tls, smtputf8) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, true, false) => "ESMTPS",
        (true, false, true) => "UTF8SMTP",
        (true, true, true) => "UTF8SMTPS",
    }
}

fn strip_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword).then(|| &arg[keyword.len()..])
}

#[cfg(test)]
mod tests;

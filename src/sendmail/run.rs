//! The sendmail program itself: the plumbing around [`super::args`],
//! [`super::input`] and [`super::headers`]. It runs as its caller, with no
//! privilege of its own; a message is handed to the set-gid `postdrop` as a
//! maildrop stream on a pipe, and `postdrop` checks it all again.
//!
//! - Sending (the default, `-bm`): the header is read (at most
//!   `limits.header_size` bytes) and prepared, the envelope settled, then
//!   postdrop is started and the body streams through: memory stays
//!   bounded whatever the message's size. The exit status is postdrop's
//!   (sysexits(3)); its complaint is printed as it gave it.
//! - `-bs`: an SMTP session on standard input and output, the same state
//!   machine smtpd runs, with each message handed to postdrop; the final
//!   reply to DATA is postdrop's verdict.
//! - `-bp` and `mailq`: the queue listing from the control socket.
//! - `-bi` and `newaliases`: the aliases file compiled to its database
//!   (`src/aliases/`), atomically.
//!
//! Trusts: nothing from its caller, who can only hurt themselves here.

use std::ffi::OsString;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::{Child as Process, ChildStdin, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::address::{self, Path};
use crate::cleanup::message::{HeaderScan, header_refusal, rfc5322_date};
use crate::config::{self, Config};
use crate::control::client;
use crate::ipc::msg::UserFound;
use crate::maildrop::{self, Envelope, Writer};
use crate::postdrop::{EX_CONFIG, EX_DATAERR, EX_NOPERM, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE};
use crate::smtpd::session::{self, Action, Checks, Commit, Peer, RcptVerdict, Session, Settings};

use super::{FlushTarget, HeaderOptions, Input, Invocation, Mode, parse, prepare, qualify, split_header, usage};

/// sysexits(3) codes postdrop does not use.
pub const EX_NOINPUT: i32 = 66;
pub const EX_NOUSER: i32 = 67;
pub const EX_OSERR: i32 = 71;
pub const EX_CANTCREAT: i32 = 73;
pub const EX_IOERR: i32 = 74;

/// Bytes read from standard input at a time.
const READ_SIZE: usize = 64 * 1024;
/// Most of postdrop's output kept (a file name, or one complaint).
const MAX_POSTDROP_OUTPUT: u64 = 4096;

/// Run sendmail (or mailq, or newaliases, by `argv0`); returns the exit
/// status.
pub fn main(argv0: &str, args: &[OsString]) -> i32 {
    let prog = argv0.rsplit('/').next().filter(|p| !p.is_empty()).unwrap_or("sendmail").to_string();
    let inv = match parse(argv0, args) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("{prog}: {e}\n{}", usage(&prog));
            return EX_USAGE;
        }
    };
    for w in &inv.warnings {
        eprintln!("{prog}: {w}");
    }
    // postdrop's exit status is its verdict: it must not be reaped away.
    if let Err(e) = sandbox::default_sigchld() {
        eprintln!("{prog}: cannot restore SIGCHLD: {e}");
        return EX_OSERR;
    }
    let root = nix::unistd::getuid().is_root();
    // postdrop takes another configuration from root only; sendmail asks
    // no more than postdrop would grant.
    if inv.config.is_some() && !root {
        eprintln!("{prog}: -C: only root may choose another configuration");
        return EX_NOPERM;
    }
    let path = inv.config.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{prog}: {e}");
            return EX_CONFIG;
        }
    };
    let ctx = Context { prog, config, config_path: inv.config.clone() };
    match &inv.mode {
        Mode::Deliver => ctx.deliver(&inv),
        Mode::Smtp => ctx.smtp(),
        Mode::ListQueue => ctx.list_queue(),
        Mode::Aliases => ctx.newaliases(),
        Mode::Flush(target) => ctx.flush(target),
    }
}

struct Context {
    prog: String,
    config: Config,
    /// `-C`, passed on to postdrop (root only).
    config_path: Option<PathBuf>,
}

/// Why a message was not submitted: the exit status and what to say.
#[derive(Debug)]
struct Failure {
    code: i32,
    message: String,
}

fn failure(code: i32, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into() }
}

/// A message handed to postdrop.
#[derive(Debug)]
struct Sent {
    /// The maildrop file's name.
    name: String,
}

/// The user running sendmail, from the password database.
struct Submitter {
    login: String,
    /// The GECOS name (up to its first comma), if any.
    name: Option<String>,
}

fn submitter() -> Result<Submitter, Failure> {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => {
            let name = gecos_name(&u.gecos.to_string_lossy(), &u.name);
            Ok(Submitter { login: u.name, name: (!name.is_empty()).then_some(name) })
        }
        Ok(None) => Err(failure(EX_NOUSER, format!("uid {uid} has no entry in the password database"))),
        Err(e) => Err(failure(EX_OSERR, format!("looking up uid {uid}: {e}"))),
    }
}

/// The full name in a GECOS field, as Postfix and Sendmail read it: up to
/// its first `,`, `;` or `%`, each `&` the login with its first letter
/// in capitals (BSD's root is `Charlie &`), control characters left out.
pub(crate) fn gecos_name(gecos: &str, login: &str) -> String {
    let field = gecos.split([',', ';', '%']).next().unwrap_or("");
    let mut cap = login.chars();
    let login = cap.next().map(|c| c.to_uppercase().chain(cap).collect::<String>()).unwrap_or_default();
    field.replace('&', &login).chars().filter(|c| !c.is_control()).collect::<String>().trim().to_string()
}

/// A word for the administrator when the aliases just compiled give root
/// no destination: local delivers nothing to root's own mailbox, so the
/// system's mail (cron's, the daily reports) would wait unseen.
pub(crate) fn without_root(summary: &crate::aliases::Summary) -> Option<&'static str> {
    (!summary.root).then_some(
        "no alias for root: mail for root (cron's, the system's reports) waits in the queue until one is added \
         (root: someone) and compiled",
    )
}

/// The sender for a login: `login@hostname`; a login that is an address
/// already (`jo@ad.example`, from SSSD or winbind) as it is; one that is
/// not a dot-atom, quoted.
pub(crate) fn login_sender(login: &str, hostname: &str) -> String {
    if login.contains('@') && address::parse_mailbox(login, true).is_ok() {
        return login.to_string();
    }
    let plain = format!("{login}@{hostname}");
    if address::parse_mailbox(&plain, true).is_ok() {
        return plain;
    }
    format!("\"{}\"@{hostname}", login.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An envelope address as cleanup will check it: an RFC 5321 mailbox
/// (international forms allowed; cleanup decides what SMTPUTF8 needs),
/// its local part leniently (as smtpd and cleanup take it: Postfix queues
/// `taro..yamada@docomo.ne.jp`), and the sender at most
/// [`crate::header::MAX_SENDER`] octets.
fn check_address(what: &str, address: &str) -> Result<(), Failure> {
    let max = crate::header::MAX_SENDER;
    if what == "sender" && address.len() > max {
        let why = format!("the sender address is longer than {max} octets, more than a header line can hold");
        return Err(failure(EX_DATAERR, why));
    }
    address::parse_mailbox_lenient(address, true)
        .map(drop)
        .map_err(|e| failure(EX_DATAERR, format!("bad {what} address {address:?}: {e}")))
}

/// A message on its way into postdrop.
struct Submission {
    process: Process,
    /// None once a write failed (postdrop went away).
    writer: Option<Writer<BufWriter<ChildStdin>>>,
}

impl Context {
    fn postdrop(&self) -> PathBuf {
        self.config.libexec_directory.join("postdrop")
    }

    /// Start postdrop and write the envelope. An envelope the maildrop
    /// format refuses is refused before anything runs.
    fn submit(&self, envelope: &Envelope) -> Result<Submission, Failure> {
        if let Err(e) = Writer::new(io::sink(), envelope) {
            return Err(failure(EX_DATAERR, format!("cannot submit this envelope: {e}")));
        }
        if let Err(n) = crate::pickup::envelope_fits(envelope) {
            let why = format!(
                "the envelope ({n} octets: {} recipients and their ORCPT) is more than one message may carry; send it in parts",
                envelope.recipients.len()
            );
            return Err(failure(EX_DATAERR, why));
        }
        let path = self.postdrop();
        let mut cmd = Command::new(&path);
        // postdrop reads no environment; give it none.
        cmd.env_clear().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(p) = &self.config_path {
            cmd.arg("-C").arg(p);
        }
        let mut process =
            cmd.spawn().map_err(|e| failure(EX_UNAVAILABLE, format!("cannot run {}: {e}", path.display())))?;
        let Some(stdin) = process.stdin.take() else {
            return Err(failure(EX_OSERR, "postdrop has no standard input"));
        };
        let mut sub = Submission { process, writer: None };
        match Writer::new(BufWriter::with_capacity(READ_SIZE, stdin), envelope) {
            Ok(w) => sub.writer = Some(w),
            // postdrop went away at once; its own words say why.
            Err(_) => return Err(sub.finish().err().unwrap_or_else(|| failure(EX_SOFTWARE, "postdrop vanished"))),
        }
        Ok(sub)
    }
}

impl Submission {
    /// Pass on content; a failure is reported by `finish`.
    fn write(&mut self, content: &[u8]) {
        if let Some(w) = self.writer.as_mut()
            && w.write(content).is_err()
        {
            self.writer = None;
        }
    }

    /// Complete the stream and wait for postdrop's verdict: the maildrop
    /// file's name, or why there is none.
    fn finish(mut self) -> Result<String, Failure> {
        let written = match self.writer.take() {
            Some(w) => match w.finish() {
                Ok(buffered) => buffered.into_inner().map(drop).map_err(|e| e.into_error()),
                Err(e) => Err(io::Error::other(e.to_string())),
            },
            None => Err(io::Error::other("postdrop stopped reading")),
        };
        let (status, out, err) = self.wait();
        match status {
            Some(0) if written.is_ok() => {
                let name = out.lines().next().unwrap_or("").trim().to_string();
                Ok(if name.is_empty() { String::from("(unnamed)") } else { name })
            }
            Some(0) => Err(failure(
                EX_IOERR,
                format!("writing to postdrop: {}", written.err().map_or_else(String::new, |e| e.to_string())),
            )),
            Some(code) => Err(failure(code, one_line(&err, "postdrop failed without saying why"))),
            None => Err(failure(EX_SOFTWARE, one_line(&err, "postdrop was killed by a signal"))),
        }
    }

    /// Abandon the message: postdrop sees a stream without its end and
    /// removes its file.
    fn abort(mut self) {
        self.writer = None;
        let _ = self.wait();
    }

    /// Close postdrop's input and collect its exit status and output.
    fn wait(&mut self) -> (Option<i32>, String, String) {
        drop(self.writer.take());
        drop(self.process.stdin.take());
        let mut out = String::new();
        let mut err = String::new();
        if let Some(o) = self.process.stdout.take() {
            let _ = o.take(MAX_POSTDROP_OUTPUT).read_to_string(&mut out);
        }
        if let Some(e) = self.process.stderr.take() {
            let _ = e.take(MAX_POSTDROP_OUTPUT).read_to_string(&mut err);
        }
        let status = self.process.wait().ok().and_then(|s| s.code());
        (status, out, err)
    }
}

/// The first line of `text`, printable, or `default`.
fn one_line(text: &str, default: &str) -> String {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or(default);
    line.chars().map(|c| if c.is_control() { '?' } else { c }).take(400).collect()
}

impl Context {
    /// `-bm`: read the message, prepare its header, hand it to postdrop.
    fn deliver(&self, inv: &Invocation) -> i32 {
        self.deliver_with(inv, &mut io::stdin().lock())
    }

    /// [`Self::deliver`] of the message `stdin` holds: 0 when it was
    /// handed to postdrop for every recipient, and then only.
    fn deliver_with(&self, inv: &Invocation, stdin: &mut dyn Read) -> i32 {
        match self.send(inv, stdin) {
            Ok(sent) => {
                if inv.verbose {
                    eprintln!("{}: submitted as maildrop file {}", self.prog, sent.name);
                }
                0
            }
            Err(f) => {
                eprintln!("{}: {}", self.prog, f.message);
                f.code
            }
        }
    }

    fn send(&self, inv: &Invocation, stdin: &mut dyn Read) -> Result<Sent, Failure> {
        let hostname = self.config.hostname.as_str();
        // The password entry gives the sender and the full name; with -f
        // (a container's uid without one, say) it is not needed.
        let (sender, user) = match (&inv.sender, submitter()) {
            (Some(s), user) => (qualify(s, hostname), user.ok()),
            (None, Ok(u)) => (login_sender(&u.login, hostname), Some(u)),
            (None, Err(f)) => return Err(f),
        };
        if !sender.is_empty() {
            check_address("sender", &sender)?;
        }
        // The header: read until it ends, within its bound.
        let limit = self.config.limits.header_size as usize;
        let mut input = Input::new(inv.ignore_dots);
        let mut text = Vec::new();
        let mut raw = vec![0u8; READ_SIZE];
        let mut done = false;
        let split = loop {
            if let Some(at) = split_header(&text) {
                break at;
            }
            if done || text.len() > limit {
                break text.len();
            }
            done = read_more(stdin, &mut raw, &mut input, &mut text)?;
        };
        if split > limit {
            return Err(failure(EX_DATAERR, format!("the message header is larger than {limit} bytes")));
        }
        let message_id = crate::header::message_id(hostname);
        let date = rfc5322_date(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
        let full_name = inv.full_name.as_deref().or(user.as_ref().and_then(|u| u.name.as_deref()));
        let opts = HeaderOptions {
            extract: inv.extract,
            hostname,
            from: &sender,
            full_name,
            date: &date,
            message_id: &message_id,
        };
        let prepared = prepare(&text[..split], &opts).map_err(|e| failure(EX_DATAERR, e.to_string()))?;
        // What cleanup would refuse, refused here, where the submitter
        // hears it: after queueing it could only be set aside unread.
        let mut scan = HeaderScan::new();
        scan.feed(&prepared.header);
        if let Some((_, _, why)) = self.header_refusal(&scan) {
            return Err(failure(EX_DATAERR, why));
        }
        // Every recipient must be good, the command line's and the
        // header's alike: one that is not stops the message before
        // anything is queued, so that the exit status says what happened
        // to it (as dma and OpenSMTPD's sendmail do). Queued for the
        // others with a failing status, it would be sent again by a
        // caller that tries again on failure.
        let mut recipients: Vec<String> = Vec::new();
        for r in inv.recipients.iter().map(|r| qualify(r, hostname)) {
            check_address("recipient", &r)?;
            if !recipients.iter().any(|x| same_address(x, &r)) {
                recipients.push(r);
            }
        }
        let mut unreadable: Vec<String> = prepared.unreadable.iter().map(ToString::to_string).collect();
        for r in prepared.recipients {
            if let Err(f) = check_address("recipient", &r) {
                unreadable.push(f.message);
            } else if !recipients.iter().any(|x| same_address(x, &r)) {
                recipients.push(r);
            }
        }
        if !unreadable.is_empty() {
            return Err(failure(EX_DATAERR, format!("{}; nothing was sent", unreadable.join("; "))));
        }
        if recipients.is_empty() {
            return Err(failure(EX_USAGE, "no recipient addresses found in the message header"));
        }
        let envelope = Envelope {
            sender,
            body: inv.body.unwrap_or_default(),
            smtputf8: inv.smtputf8,
            ret: inv.ret,
            envid: inv.envid.clone(),
            full_name: inv.full_name.clone(),
            recipients: recipients
                .into_iter()
                .map(|address| maildrop::Recipient { address, orcpt: None, notify: inv.notify })
                .collect(),
        };
        let mut sub = self.submit(&envelope)?;
        sub.write(&prepared.header);
        sub.write(&text[split..]);
        // The body streams through, a read at a time.
        let mut chunk = Vec::with_capacity(READ_SIZE + 16);
        while !done && sub.writer.is_some() {
            chunk.clear();
            done = match read_more(stdin, &mut raw, &mut input, &mut chunk) {
                Ok(d) => d,
                Err(f) => {
                    sub.abort();
                    return Err(f);
                }
            };
            sub.write(&chunk);
        }
        let name = sub.finish()?;
        Ok(Sent { name })
    }
}

/// Read once from `stdin` and convert into `out`; true at the end of the
/// message (end of input, or the `.` line).
fn read_more(stdin: &mut dyn Read, raw: &mut [u8], input: &mut Input, out: &mut Vec<u8>) -> Result<bool, Failure> {
    loop {
        match stdin.read(raw) {
            Ok(0) => {
                input.finish(out);
                return Ok(true);
            }
            Ok(n) => return Ok(input.feed(&raw[..n], out)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(failure(EX_IOERR, format!("reading the message: {e}"))),
        }
    }
}

/// `-bs` accepts every recipient: the caller may send to anyone, as
/// without `-bs`; cleanup checks each address.
struct Anyone;

impl Checks for Anyone {
    fn recipient(&self, _peer: &Peer, _rcpt: &Path) -> RcptVerdict {
        RcptVerdict::Accept
    }
}

/// A message begun in `-bs`: being handed to postdrop (its header block
/// scanned on the way), or refused before.
enum Pending {
    Sending(Submission, HeaderScan),
    Refused(Failure),
}

impl Context {
    /// The reply cleanup would give a message whose header block scanned
    /// as `scan`, if it would refuse it ([`header_refusal`]).
    fn header_refusal(&self, scan: &HeaderScan) -> Option<(u16, &'static str, String)> {
        header_refusal(scan, self.config.limits.hops, self.config.limits.header_size)
    }

    fn session_settings(&self) -> Settings {
        let c = &self.config;
        Settings {
            hostname: c.hostname.clone(),
            limits: session::Limits::from_config(&c.limits, &c.smtpd),
            // Line ends as sendmail without -bs takes them (a bare CR too).
            bare: crate::smtpd::data::Bare::Normalize,
            starttls: false,
            // A program on a pipe, as Postfix's stand-alone smtpd takes it.
            local_client: true,
        }
    }

    /// `-bs`: SMTP on standard input and output.
    fn smtp(&self) -> i32 {
        let stdin = io::stdin();
        let stdout = io::stdout();
        match self.smtp_session(&mut stdin.lock(), &mut stdout.lock()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{}: {e}", self.prog);
                EX_IOERR
            }
        }
    }

    fn smtp_session(&self, input: &mut dyn Read, output: &mut dyn Write) -> io::Result<()> {
        let peer = Peer { address: String::from("local"), hostname: String::from("localhost") };
        let mut session = Session::new(self.session_settings(), peer, false);
        let mut pending: Option<Pending> = None;
        let mut buf = vec![0u8; READ_SIZE];
        loop {
            loop {
                let actions: Vec<Action> = session.actions().collect();
                if actions.is_empty() {
                    break;
                }
                for action in actions {
                    match action {
                        Action::Reply(bytes) => output.write_all(&bytes)?,
                        Action::Pause(d) => {
                            output.flush()?;
                            std::thread::sleep(d);
                        }
                        Action::Begin(envelope) => {
                            pending = Some(match self.submit(&maildrop_envelope(&envelope)) {
                                Ok(sub) => Pending::Sending(sub, HeaderScan::new()),
                                Err(f) => Pending::Refused(f),
                            });
                        }
                        Action::Content(bytes) => {
                            if let Some(Pending::Sending(sub, scan)) = pending.as_mut() {
                                scan.feed(&bytes);
                                sub.write(&bytes);
                            }
                        }
                        Action::End => {
                            let verdict = match pending.take() {
                                Some(Pending::Sending(sub, scan)) => match self.header_refusal(&scan) {
                                    Some((code, enhanced, why)) => {
                                        sub.abort();
                                        session.committed(Commit::Refused(code, enhanced.into(), why), &Anyone);
                                        continue;
                                    }
                                    None => sub.finish(),
                                },
                                Some(Pending::Refused(f)) => Err(f),
                                None => Err(failure(EX_SOFTWARE, "no message was begun")),
                            };
                            session.committed(commit(verdict), &Anyone);
                        }
                        Action::Abort => {
                            if let Some(Pending::Sending(sub, _)) = pending.take() {
                                sub.abort();
                            }
                        }
                        // Anyone asks no name service (local mail takes
                        // every recipient; local bounces the unknown).
                        Action::LookupUser(_) => session.looked_up(UserFound::Yes, &Anyone),
                        // Anyone refuses nothing by policy.
                        Action::Log(_) => {}
                        // Never offered: STARTTLS makes no sense on a pipe.
                        Action::StartTls | Action::Close => {
                            output.flush()?;
                            return Ok(());
                        }
                    }
                }
            }
            output.flush()?;
            let space = session.space().min(buf.len());
            if session.is_closed() || space == 0 {
                return Ok(());
            }
            let n = match input.read(&mut buf[..space]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                session.abort();
                if let Some(Pending::Sending(sub, _)) = pending.take() {
                    sub.abort();
                }
                return Ok(());
            }
            session.receive(&buf[..n], &Anyone);
        }
    }
}

/// The reply to DATA for postdrop's verdict.
fn commit(verdict: Result<String, Failure>) -> Commit {
    match verdict {
        Ok(name) => Commit::Queued(format!("maildrop file {name}")),
        Err(f) if f.code == EX_DATAERR => Commit::Refused(554, String::from("5.6.0"), f.message),
        Err(f) if f.code == EX_NOPERM => Commit::Refused(554, String::from("5.7.1"), f.message),
        Err(f) => Commit::TempFail(f.message),
    }
}

/// The maildrop envelope of a message an SMTP session received.
fn maildrop_envelope(e: &session::Envelope) -> Envelope {
    Envelope {
        sender: e.sender.as_ref().map(ToString::to_string).unwrap_or_default(),
        body: e.body.into(),
        smtputf8: e.smtputf8,
        ret: e.ret.map(Into::into),
        envid: e.envid.clone(),
        full_name: None,
        recipients: e
            .recipients
            .iter()
            .map(|r| maildrop::Recipient {
                address: r.mailbox.as_ref().map_or_else(|| String::from("postmaster"), ToString::to_string),
                orcpt: r.orcpt.clone(),
                notify: r.notify.map(Into::into),
            })
            .collect(),
    }
}

impl Context {
    /// `-bp`, `mailq`: the listing control gives any local user, printed
    /// as it comes.
    fn list_queue(&self) -> i32 {
        let stdout = io::stdout();
        let mut out = BufWriter::new(stdout.lock());
        let r = client::list_queue(&self.config.control.socket, false, &mut out);
        let _ = out.flush();
        match r {
            Ok(l) if l.answer["ok"].as_bool() == Some(true) => 0,
            Ok(l) => {
                eprintln!("{}: {}", self.prog, l.answer["error"].as_str().unwrap_or("the queue listing failed"));
                EX_UNAVAILABLE
            }
            Err(e) => {
                let socket = self.config.control.socket.display();
                if !e.nobody_listens {
                    eprintln!("{}: queue listing unavailable: {socket}: {e}", self.prog);
                    return EX_UNAVAILABLE;
                }
                // Like Postfix's "mail system is down -- accessing queue
                // directly": whoever may read the spool (root, the mail
                // user) still gets the listing.
                let spool = &self.config.spool;
                let store = match crate::qmgr::scan::open_spool(spool) {
                    Ok(s) => s,
                    Err(why) => {
                        eprintln!(
                            "{}: queue listing unavailable: {socket}: {e}; reading the queue directly: {why}",
                            self.prog
                        );
                        return EX_UNAVAILABLE;
                    }
                };
                eprintln!("{}: warning: mta is not running: the queue as read from {}", self.prog, spool.display());
                let mut mailq = client::Mailq::default();
                let mut failed = None;
                crate::qmgr::scan::read_directly(
                    &store,
                    &mut |entry| {
                        let text = mailq.entry(&crate::control::entry_json(entry));
                        match out.write_all(text.as_bytes()) {
                            Ok(()) => true,
                            Err(e) => {
                                failed = Some(e);
                                false
                            }
                        }
                    },
                    &mut |p| eprintln!("{}: warning: {p}", self.prog),
                );
                let end = match failed {
                    None => out.write_all(mailq.end().as_bytes()).and_then(|()| out.flush()),
                    Some(e) => Err(e),
                };
                match end {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("{}: standard output: {e}", self.prog);
                        EX_UNAVAILABLE
                    }
                }
            }
        }
    }

    /// `-bi`, `newaliases`: compile the aliases file beside itself.
    fn newaliases(&self) -> i32 {
        let source = &self.config.aliases;
        match crate::aliases::newaliases(&self.config) {
            Ok(summary) => {
                for w in &summary.warnings {
                    eprintln!("{}: warning: {w}", self.prog);
                }
                if let Some(w) = without_root(&summary) {
                    eprintln!("{}: warning: {w}", self.prog);
                }
                println!("{}: {}: {summary}", self.prog, crate::aliases::db_path(source).display());
                0
            }
            Err(e) => {
                eprintln!("{}: {e}", self.prog);
                match e {
                    crate::aliases::Error::Syntax { .. } | crate::aliases::Error::TooLarge { .. } => EX_DATAERR,
                    crate::aliases::Error::Io { path, error }
                        if &path == source && error.kind() == io::ErrorKind::NotFound =>
                    {
                        EX_NOINPUT
                    }
                    crate::aliases::Error::Io { .. } => EX_CANTCREAT,
                    crate::aliases::Error::Corrupt { .. } | crate::aliases::Error::Newer { .. } => EX_SOFTWARE,
                }
            }
        }
    }

    /// `-q`: ask qmgr (through control) to try deferred mail now; `-qI`
    /// one message (as `mtactl queue requeue`, for root and the mail
    /// user); `-qR` has no per-site flush here and flushes everything.
    fn flush(&self, target: &FlushTarget) -> i32 {
        let command = match target {
            FlushTarget::All => String::from("flush"),
            FlushTarget::Site(site) => {
                eprintln!("{}: -qR{site}: mta has no per-site flush; flushing the whole queue", self.prog);
                String::from("flush")
            }
            FlushTarget::QueueId(id) => match crate::queue::QueueId::parse(id) {
                Some(q) => format!("requeue {q}"),
                None => {
                    eprintln!("{}: -qI{id}: not a queue ID", self.prog);
                    return EX_USAGE;
                }
            },
        };
        match client::request(&self.config.control.socket, &command) {
            Ok(v) if v["ok"].as_bool() == Some(true) => {
                if let Some(r) = v["result"].as_str() {
                    println!("{}: {r}", self.prog);
                }
                0
            }
            Ok(v) => {
                eprintln!("{}: -q: {}", self.prog, v["error"].as_str().unwrap_or("the flush failed"));
                EX_UNAVAILABLE
            }
            Err(e) => {
                eprintln!("{}: -q: {}: {e}", self.prog, self.config.control.socket.display());
                EX_UNAVAILABLE
            }
        }
    }
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;

/// The same recipient: local parts equal as written (RFC 5321 2.4: they
/// may be case-sensitive), domains whatever their case.
fn same_address(a: &str, b: &str) -> bool {
    match (a.rsplit_once('@'), b.rsplit_once('@')) {
        (Some((la, da)), Some((lb, db))) => la == lb && da.eq_ignore_ascii_case(db),
        _ => a == b,
    }
}

#[cfg(test)]
mod same_address_tests {
    use super::same_address;

    #[test]
    fn local_parts_keep_their_case_and_domains_do_not() {
        assert!(same_address("bob@Example.ORG", "bob@example.org"));
        assert!(!same_address("Bob@example.org", "bob@example.org"));
        assert!(same_address("postmaster", "postmaster"));
        assert!(!same_address("a@x", "a"));
    }
}

//! One outbound SMTP or LMTP session as a state machine with no I/O. The
//! driver owns the socket, the TLS object, the timers and the queue file:
//! it feeds the bytes it reads to [`Client::receive`], answers requests
//! for content, and carries out the [`Action`]s it drains, in order. The
//! client decides every byte sent and what every reply means.
//!
//! A session: greeting; EHLO (LHLO for LMTP; HELO when EHLO is refused
//! with 5xx, SMTP only); STARTTLS when offered and the policy allows, then
//! EHLO again; AUTH PLAIN when credentials are configured, only inside
//! TLS. Then jobs, one after the other ([`Client::start`]), each: local
//! checks (SIZE, SMTPUTF8, address syntax) that fail recipients without
//! sending anything; MAIL, RCPT per recipient and DATA, in one write when
//! the server offers PIPELINING and one at a time otherwise, replies
//! matched in order; content pulled chunk by chunk, converted to 7 bit
//! for a server without 8BITMIME, dot-stuffed; then the end of data and
//! its reply (LMTP: one reply per accepted recipient). RSET goes before a
//! job when the previous one left a transaction open; QUIT ends it all.
//!
//! Failures: 4xx defers, 5xx bounces, per recipient (a 5xx greeting
//! defers: a site failure, as with Postfix's `smtp_skip_5xx_greeting`;
//! a 5xx to HELO, after EHLO was refused, or to LHLO bounces and is no
//! session failure, so no other server is tried, as in Postfix);
//! a 421, a malformed reply, a timeout or a lost connection defers
//! everything not finished. SMTPUTF8 is required of the server only when
//! the job's envelope or header block has UTF-8 in it.
//! Bytes read after the 220 to STARTTLS, before TLS starts, end the
//! session (its mail deferred): a reply injected in plaintext is never
//! taken for one inside TLS, and the session is not trusted with the mail.
//!
//! Bounds: replies within [`crate::smtp::reply::ReplyLimits`]; the input
//! buffer holds at most one reply's worth while content is being sent;
//! content streams through [`DataEncoder`] without being buffered.
//!
//! Trusts: nothing from the server; the configuration and jobs come from
//! the queue manager.

mod command;
pub mod job;

use std::collections::VecDeque;
use std::time::Duration;

pub use job::{
    Action, Config, ConfigError, Credentials, Disposition, Features, Job, JobRecipient, JobResult, Limits,
    RecipientResult, Stage, Timeouts, TlsPolicy,
};

use crate::address;
use crate::queue::BodyType;
use crate::smtp::content::DataEncoder;
use crate::smtp::reply::{self, Enhanced, RawReply, Reply, ReplyReader};

/// The reply the client waits for, in the order the commands were sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Auth,
    Rset,
    Mail,
    Rcpt(usize),
    Data,
    /// SMTP: the one reply to the end of data.
    Dot,
    /// LMTP: the reply for this recipient.
    LmtpDot(usize),
    /// The end of an empty message sent because DATA was accepted with
    /// no recipient (RFC 2920 3.1); its reply means nothing.
    DotIgnored,
    Quit,
}

impl Expect {
    fn stage(self) -> Stage {
        match self {
            Expect::Greeting => Stage::Greeting,
            Expect::Ehlo | Expect::Helo => Stage::Helo,
            Expect::StartTls => Stage::StartTls,
            Expect::Auth => Stage::Auth,
            Expect::Rset => Stage::Rset,
            Expect::Mail => Stage::Mail,
            Expect::Rcpt(_) => Stage::Rcpt,
            Expect::Data => Stage::Data,
            Expect::Dot | Expect::LmtpDot(_) | Expect::DotIgnored => Stage::Dot,
            Expect::Quit => Stage::Quit,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Commands sent, replies awaited (`expects`).
    Talk,
    /// STARTTLS accepted; waiting for the driver's handshake.
    Handshake,
    /// Ready for a job.
    Idle,
    /// Sending content: waiting for the driver's chunks.
    Content,
    Closed,
}

/// A verdict for every recipient not yet decided.
#[derive(Clone, Debug)]
struct Failure {
    disposition: Disposition,
    stage: Stage,
    reply: Reply,
    remote: bool,
}

impl Failure {
    fn local(disposition: Disposition, stage: Stage, code: u16, status: Enhanced, text: String) -> Failure {
        Failure { disposition, stage, reply: Reply::local(code, status, text), remote: false }
    }

    fn remote(stage: Stage, reply: Reply) -> Failure {
        Failure { disposition: failed(&reply), stage, reply, remote: true }
    }
}

/// 5xx bounces; anything else that is a failure defers.
fn failed(reply: &Reply) -> Disposition {
    if reply.class() == 5 { Disposition::Bounced } else { Disposition::Deferred }
}

#[derive(Debug)]
struct Transaction {
    job: Job,
    results: Vec<Option<RecipientResult>>,
    /// Recipients whose RCPT is still to be sent (without pipelining).
    queue: VecDeque<usize>,
    accepted: Vec<usize>,
    pipelined: bool,
    dsn: bool,
    /// MAIL carries SMTPUTF8.
    smtputf8: bool,
    mail_failed: bool,
    encoder: Option<DataEncoder>,
}

impl Transaction {
    fn set(&mut self, i: usize, f: &Failure, disposition: Disposition) {
        if let Some(slot @ None) = self.results.get_mut(i) {
            *slot = Some(RecipientResult {
                disposition,
                stage: f.stage,
                reply: f.reply.clone(),
                remote: f.remote,
                dsn_passed: f.remote && self.dsn,
            });
        }
    }

    fn fail_all(&mut self, f: &Failure) {
        for i in 0..self.results.len() {
            self.set(i, f, f.disposition);
        }
    }
}

/// One session.
pub struct Client {
    config: Config,
    auth_line: Option<String>,
    phase: Phase,
    expects: VecDeque<Expect>,
    reader: ReplyReader,
    input: Vec<u8>,
    out: VecDeque<Action>,
    features: Features,
    tls: bool,
    tls_tried: bool,
    authenticated: bool,
    /// The server has a transaction open: RSET before the next MAIL.
    server_tx: bool,
    pending: Option<Job>,
    tx: Option<Transaction>,
    /// Why the session can take no more jobs.
    failure: Option<Failure>,
    /// The TLS handshake after STARTTLS failed or timed out.
    handshake_failed: bool,
}

const S_4_4_2: Enhanced = Enhanced::new(4, 4, 2);

/// The content chunk a driver should read for [`Action::NeedContent`]:
/// each chunk becomes one [`Action::Send`] of at most about three times
/// its size (quoted-printable), so memory stays bounded.
pub const CONTENT_CHUNK: usize = 64 * 1024;

impl Client {
    /// A session on a freshly connected socket: waits for the greeting.
    pub fn new(config: Config) -> Result<Client, ConfigError> {
        let name = &config.helo_name;
        if address::parse_domain(name, false).is_err() {
            return Err(ConfigError::HeloName(name.clone()));
        }
        let auth_line = match &config.credentials {
            Some(c) => Some(command::auth_plain(c).map_err(ConfigError::Credentials)?),
            None => None,
        };
        Ok(Client {
            reader: ReplyReader::new(config.limits.reply),
            config,
            auth_line,
            phase: Phase::Talk,
            expects: VecDeque::from([Expect::Greeting]),
            input: Vec::new(),
            out: VecDeque::new(),
            features: Features::default(),
            tls: false,
            tls_tried: false,
            authenticated: false,
            server_tx: false,
            pending: None,
            tx: None,
            failure: None,
            handshake_failed: false,
        })
    }

    /// A session on a connection that is already inside TLS (implicit
    /// TLS, RFC 8314): no STARTTLS, and credentials may be sent.
    pub fn new_in_tls(config: Config) -> Result<Client, ConfigError> {
        let mut c = Client::new(config)?;
        c.tls = true;
        c.tls_tried = true;
        Ok(c)
    }

    /// Take the queued actions.
    pub fn actions(&mut self) -> impl Iterator<Item = Action> + '_ {
        self.out.drain(..)
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// What the server announced (after EHLO; empty after HELO).
    pub fn features(&self) -> &Features {
        &self.features
    }

    pub fn tls_active(&self) -> bool {
        self.tls
    }

    /// What the client waits for and for how long; `None` when idle or
    /// closed. The driver restarts its timer on every read and write and
    /// calls [`Client::timeout`] when it runs out.
    pub fn waiting(&self) -> Option<(Stage, Duration)> {
        let stage = match self.phase {
            Phase::Idle | Phase::Closed => return None,
            Phase::Handshake => Stage::StartTls,
            Phase::Content => Stage::Content,
            Phase::Talk => self.expects.front()?.stage(),
        };
        let t = &self.config.timeouts;
        let limit = match stage {
            Stage::Greeting => t.greeting,
            Stage::Helo | Stage::Auth => t.helo,
            Stage::StartTls => t.starttls,
            Stage::Mail => t.mail,
            Stage::Rcpt => t.rcpt,
            Stage::Data => t.data_init,
            Stage::Content => t.data_xfer,
            Stage::Dot => t.data_done,
            Stage::Rset => t.rset,
            Stage::Quit => t.quit,
        };
        Some((stage, limit))
    }

    /// Give the session a job. Before the session is ready it waits; on a
    /// closed session it is answered at once. `Err` gives the job back
    /// when another one is in progress.
    pub fn start(&mut self, job: Job) -> Result<(), Job> {
        if self.tx.is_some() || self.pending.is_some() {
            return Err(job);
        }
        match self.phase {
            Phase::Idle if self.server_tx => {
                self.pending = Some(job);
                self.send("RSET\r\n".into(), Expect::Rset);
                self.phase = Phase::Talk;
            }
            Phase::Idle => self.begin(job),
            Phase::Talk if self.expects.contains(&Expect::Quit) => self.refuse_job(job),
            Phase::Closed => self.refuse_job(job),
            _ => self.pending = Some(job),
        }
        Ok(())
    }

    /// Bytes read from the server.
    pub fn receive(&mut self, data: &[u8]) {
        if self.phase == Phase::Handshake && !data.is_empty() {
            return self.injected(data.len());
        }
        if matches!(self.phase, Phase::Closed | Phase::Handshake) {
            return;
        }
        self.input.extend_from_slice(data);
        self.process();
    }

    /// Read the replies in the input buffer, as far as the phase allows.
    fn process(&mut self) {
        let mut pos = 0;
        // Replies in this input answer the commands sent before it came;
        // one more, while a command sent since waits, came before that
        // command: the server said more than it was asked (a greeting
        // sent twice), and every reply after would be taken for the
        // wrong command (a recipient's refusal for another's).
        let answerable = self.expects.len();
        let mut answered = 0;
        while self.phase == Phase::Talk || self.phase == Phase::Idle {
            match self.reader.read(&self.input, &mut pos) {
                Ok(Some(_)) if answered >= answerable && !self.expects.is_empty() => {
                    return self.protocol_error("the server replied to a command before it was sent");
                }
                Ok(Some(raw)) => {
                    answered += 1;
                    self.on_reply(raw);
                }
                Ok(None) => break,
                Err(e) => return self.protocol_error(&e.to_string()),
            }
        }
        if matches!(self.phase, Phase::Closed | Phase::Handshake) {
            // After the 220 to STARTTLS the server must wait for the
            // handshake: anything more in plaintext was injected.
            let extra = self.input.len().saturating_sub(pos);
            self.input.clear();
            self.reader.reset();
            match self.phase {
                Phase::Handshake if extra > 0 => self.injected(extra),
                Phase::Handshake => self.out.push_back(Action::StartTls),
                _ => {}
            }
            return;
        }
        self.input.drain(..pos);
        if self.phase == Phase::Content && self.input.len() > self.config.limits.reply.bytes {
            self.protocol_error("the server sent too much while taking the message content");
        }
    }

    /// TLS is up after [`Action::StartTls`]: the session starts over.
    pub fn tls_started(&mut self) {
        if self.phase != Phase::Handshake {
            return;
        }
        self.tls = true;
        self.features = Features::default();
        self.input.clear();
        self.reader.reset();
        self.phase = Phase::Talk;
        self.hello();
    }

    /// Plaintext after the 220 to STARTTLS: the session is abandoned.
    fn injected(&mut self, bytes: usize) {
        let text = format!(
            "the server sent {bytes} bytes in plaintext after its 220 reply to STARTTLS, before the TLS handshake \
             (a command injection attempt?): session abandoned"
        );
        let f = Failure::local(Disposition::Deferred, Stage::StartTls, 451, Enhanced::new(4, 5, 0), text);
        self.abort(f, false);
    }

    /// The TLS handshake failed: the session is over.
    pub fn tls_failed(&mut self, why: &str) {
        if self.phase != Phase::Handshake {
            return;
        }
        let text = format!("TLS handshake failed: {}", reply::sanitize(why.as_bytes(), 200));
        let f = Failure::local(Disposition::Deferred, Stage::StartTls, 454, Enhanced::new(4, 7, 5), text);
        self.handshake_failed = true;
        self.abort(f, false);
    }

    /// The next chunk of content, after [`Action::NeedContent`].
    pub fn content(&mut self, chunk: &[u8]) {
        if self.phase != Phase::Content {
            return;
        }
        let Some(enc) = self.tx.as_mut().and_then(|t| t.encoder.as_mut()) else { return };
        let mut buf = Vec::with_capacity(chunk.len() + chunk.len() / 8 + 16);
        enc.feed(chunk, &mut buf);
        let error = enc.error();
        if !buf.is_empty() {
            self.out.push_back(Action::Send(buf));
        }
        match error {
            None => self.out.push_back(Action::NeedContent),
            Some(e) => {
                // DATA cannot be cancelled: only closing the connection
                // stops the server from taking what was sent (Postfix too).
                let text = format!("{e}: the message cannot be converted to 7 bit for a server without 8BITMIME");
                let f = Failure::local(Disposition::Bounced, Stage::Content, 554, Enhanced::new(5, 6, 0), text);
                self.abort(f, false);
            }
        }
    }

    /// The driver could not read the next chunk of content: what was sent
    /// cannot be taken back, so the connection is closed and the job
    /// deferred.
    pub fn content_failed(&mut self, why: &str) {
        if self.phase != Phase::Content {
            return;
        }
        let text = format!("error reading the message content: {}", reply::sanitize(why.as_bytes(), 200));
        let f = Failure::local(Disposition::Deferred, Stage::Content, 451, Enhanced::new(4, 3, 0), text);
        self.abort(f, false);
    }

    /// The content is complete (also right after the last chunk, without
    /// waiting for the [`Action::NeedContent`] that chunk asked for).
    pub fn content_end(&mut self) {
        if self.phase != Phase::Content {
            return;
        }
        // The request for more content that the last chunk left is moot.
        if matches!(self.out.back(), Some(Action::NeedContent)) {
            self.out.pop_back();
        }
        let Some(tx) = self.tx.as_mut() else { return };
        let mut buf = Vec::with_capacity(16);
        if let Some(enc) = tx.encoder.as_mut() {
            enc.finish(&mut buf);
        }
        tx.encoder = None;
        self.out.push_back(Action::Send(buf));
        self.phase = Phase::Talk;
        if self.config.lmtp {
            self.expects.extend(tx.accepted.iter().map(|&i| Expect::LmtpDot(i)));
        } else {
            self.expects.push_back(Expect::Dot);
        }
        // A reply that came early waited in the buffer.
        self.process();
    }

    /// End the session: QUIT when idle; otherwise whatever is unfinished
    /// is deferred and the connection closed.
    pub fn quit(&mut self) {
        match self.phase {
            Phase::Closed => {}
            Phase::Idle => {
                self.phase = Phase::Talk;
                self.send("QUIT\r\n".into(), Expect::Quit);
            }
            _ if self.expects.contains(&Expect::Quit) => {}
            _ => {
                let text = String::from("delivery abandoned: the session was ended");
                self.abort(
                    Failure::local(Disposition::Deferred, self.stage(), 451, Enhanced::new(4, 3, 0), text),
                    false,
                );
            }
        }
    }

    /// The driver's timer for [`Client::waiting`] ran out.
    pub fn timeout(&mut self) {
        let Some((stage, _)) = self.waiting() else { return };
        if stage == Stage::Quit {
            return self.close();
        }
        let mut text = format!("timeout while waiting for {}", stage.waiting_for());
        if stage == Stage::Dot {
            // The server may have taken it (as Postfix says too).
            text.push_str(" -- message may be sent more than once");
        }
        self.handshake_failed |= self.phase == Phase::Handshake;
        self.abort(Failure::local(Disposition::Deferred, stage, 421, S_4_4_2, text), false);
    }

    /// The connection broke or the server closed it.
    pub fn connection_lost(&mut self) {
        if self.phase == Phase::Closed {
            return;
        }
        let stage = self.stage();
        if stage == Stage::Quit && self.expects.front() == Some(&Expect::Quit) {
            return self.close();
        }
        if self.phase == Phase::Content {
            // A server that refused the message while it was being sent,
            // and closed: its reply is the verdict, as it would be at
            // the dot had the server waited for it.
            let mut pos = 0;
            if let Ok(Some(raw)) = self.reader.read(&self.input, &mut pos) {
                let reply = raw.to_reply(self.config.limits.reply.text);
                if matches!(reply.class(), 4 | 5) {
                    return self.abort(Failure::remote(Stage::Content, reply), false);
                }
            }
        }
        let mut text = format!("lost connection with the server while waiting for {}", stage.waiting_for());
        if stage == Stage::Dot {
            text.push_str(" -- message may be sent more than once");
        }
        self.abort(Failure::local(Disposition::Deferred, stage, 421, S_4_4_2, text), false);
    }

    /// The stage the session is in, for failures.
    fn stage(&self) -> Stage {
        match self.phase {
            Phase::Handshake => Stage::StartTls,
            Phase::Content => Stage::Content,
            _ => self.expects.front().map_or(Stage::Mail, |e| e.stage()),
        }
    }

    fn send(&mut self, line: String, expect: Expect) {
        self.out.push_back(Action::Send(line.into_bytes()));
        self.expects.push_back(expect);
    }

    fn close(&mut self) {
        self.expects.clear();
        self.input.clear();
        self.reader.reset();
        self.phase = Phase::Closed;
        self.out.push_back(Action::Close);
    }

    /// Every unfinished recipient fails thus; the session ends, with QUIT
    /// when the server is still in step with us.
    fn abort(&mut self, f: Failure, quit: bool) {
        if self.failure.is_none() {
            self.failure = Some(f.clone());
        }
        if let Some(mut tx) = self.tx.take() {
            tx.fail_all(&f);
            self.complete(tx, false);
        }
        if let Some(job) = self.pending.take() {
            self.fail_job(job, &f);
        }
        self.expects.clear();
        if quit {
            self.phase = Phase::Talk;
            self.send("QUIT\r\n".into(), Expect::Quit);
        } else {
            self.close();
        }
    }

    /// Answer a job the session cannot take.
    fn refuse_job(&mut self, job: Job) {
        let f = self.failure.clone().unwrap_or_else(|| {
            let text = String::from("the session with the server is closed");
            Failure::local(Disposition::Deferred, Stage::Mail, 421, S_4_4_2, text)
        });
        self.fail_job(job, &f);
    }

    /// A job failed before its MAIL: a session failure, which another
    /// server may do better with, unless the failure is permanent (a 5xx
    /// to HELO or LHLO): the recipients bounce and no other server is
    /// tried, as in Postfix (only a 5xx greeting is taken as the
    /// server's trouble rather than the mail's: it defers).
    fn fail_job(&mut self, job: Job, f: &Failure) {
        let mut tx = self.transaction(job);
        tx.fail_all(f);
        self.complete(tx, f.disposition != Disposition::Bounced);
    }

    fn transaction(&self, job: Job) -> Transaction {
        let n = job.recipients.len();
        Transaction {
            job,
            results: vec![None; n],
            queue: VecDeque::new(),
            accepted: Vec::new(),
            pipelined: self.features.pipelining,
            dsn: self.features.dsn,
            smtputf8: false,
            mail_failed: false,
            encoder: None,
        }
    }

    /// Report a finished job.
    fn complete(&mut self, tx: Transaction, session_failure: bool) {
        let recipients = tx
            .results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| RecipientResult {
                    disposition: Disposition::Deferred,
                    stage: Stage::Mail,
                    reply: Reply::local(451, Enhanced::new(4, 3, 0), "no verdict (internal error)"),
                    remote: false,
                    dsn_passed: false,
                })
            })
            .collect();
        let result = JobResult {
            recipients,
            session_failure,
            tls: self.tls,
            authenticated: self.authenticated,
            tls_failed: self.handshake_failed,
        };
        self.out.push_back(Action::Done(Box::new(result)));
    }

    /// The session is ready: start the waiting job or ask for one.
    fn ready(&mut self) {
        self.phase = Phase::Idle;
        match self.pending.take() {
            Some(job) => self.begin(job),
            None => self.out.push_back(Action::Idle),
        }
    }

    fn hello(&mut self) {
        let verb = if self.config.lmtp { "LHLO" } else { "EHLO" };
        let line = format!("{verb} {}\r\n", self.config.helo_name);
        self.send(line, Expect::Ehlo);
    }

    fn protocol_error(&mut self, what: &str) {
        let text = format!("protocol error: {what}");
        self.abort(Failure::local(Disposition::Deferred, self.stage(), 451, Enhanced::new(4, 5, 0), text), false);
    }

    fn on_reply(&mut self, raw: RawReply) {
        let reply = raw.to_reply(self.config.limits.reply.text);
        let Some(expect) = self.expects.pop_front() else {
            // Nothing was asked. A 421 while idle is a server timing us out.
            let f = Failure::remote(self.stage(), reply.clone());
            if reply.code == 421 {
                return self.abort(f, false);
            }
            return self.protocol_error(&format!("unexpected reply: {reply}"));
        };
        if reply.code == 421 && expect != Expect::Quit {
            // The server is closing the connection (RFC 5321 3.8).
            return self.abort(Failure::remote(expect.stage(), reply), false);
        }
        match expect {
            Expect::Greeting if reply.code == 220 => self.hello(),
            Expect::Helo if reply.class() == 2 => {
                self.features = Features::default();
                self.after_hello();
            }
            Expect::Greeting | Expect::Helo => self.session_refused(expect, reply),
            Expect::Ehlo if reply.class() == 2 => {
                self.features = Features::from_ehlo(&raw.lines);
                self.after_hello();
            }
            Expect::Ehlo if reply.class() == 5 && !self.config.lmtp => {
                let line = format!("HELO {}\r\n", self.config.helo_name);
                self.send(line, Expect::Helo);
            }
            Expect::Ehlo => self.session_refused(expect, reply),
            Expect::StartTls => self.on_starttls(reply),
            Expect::Auth if reply.class() == 2 => {
                self.authenticated = true;
                self.ready();
            }
            Expect::Auth => {
                // A 334 wants more than PLAIN's one message: the exchange
                // is out of step, so no QUIT. Postfix defers on AUTH failure.
                let quit = reply.class() != 3;
                let f = Failure { disposition: Disposition::Deferred, ..Failure::remote(Stage::Auth, reply) };
                self.abort(f, quit);
            }
            Expect::Rset if reply.class() == 2 => {
                self.server_tx = false;
                self.ready();
            }
            Expect::Rset => {
                let f = Failure { disposition: Disposition::Deferred, ..Failure::remote(Stage::Rset, reply) };
                self.abort(f, true);
            }
            Expect::Mail => self.on_mail(reply),
            Expect::Rcpt(i) => self.on_rcpt(i, reply),
            Expect::Data => self.on_data(reply),
            Expect::Dot | Expect::LmtpDot(_) => self.on_dot(expect, reply),
            Expect::DotIgnored => self.end_transaction(false),
            Expect::Quit => self.close(),
        }
    }

    /// The greeting, HELO or EHLO was refused: by code class, but a 5xx
    /// greeting defers (Postfix's `smtp_skip_5xx_greeting`): it is a
    /// site failure like a 4xx one, so another MX host may take the mail,
    /// and when none does it waits for a later attempt.
    fn session_refused(&mut self, expect: Expect, reply: Reply) {
        let mut f = Failure::remote(expect.stage(), reply);
        if expect == Expect::Greeting {
            f.disposition = Disposition::Deferred;
        }
        self.abort(f, true);
    }

    /// After EHLO or HELO: STARTTLS, AUTH, or ready.
    fn after_hello(&mut self) {
        let policy = self.config.tls;
        if !self.tls && !self.tls_tried && self.features.starttls && policy != TlsPolicy::None {
            self.tls_tried = true;
            return self.send("STARTTLS\r\n".into(), Expect::StartTls);
        }
        if !self.tls && policy == TlsPolicy::Require {
            let text = String::from("TLS is required, but was not offered by the server");
            let f = Failure::local(Disposition::Deferred, Stage::StartTls, 454, Enhanced::new(4, 7, 4), text);
            return self.abort(f, true);
        }
        if let Some(line) = self.auth_line.clone() {
            let refuse = if !self.tls {
                Some("refusing to send credentials in plaintext: TLS is not active")
            } else if !self.features.auth.iter().any(|m| m == "PLAIN") {
                Some("authentication is configured, but the server does not offer AUTH PLAIN")
            } else {
                None
            };
            if let Some(why) = refuse {
                let f = Failure::local(Disposition::Deferred, Stage::Auth, 454, Enhanced::new(4, 7, 0), why.into());
                return self.abort(f, true);
            }
            return self.send(line, Expect::Auth);
        }
        self.ready();
    }

    fn on_starttls(&mut self, reply: Reply) {
        if reply.code == 220 {
            // `process` asks for the handshake once it knows that nothing
            // followed the 220.
            self.phase = Phase::Handshake;
            return;
        }
        if self.config.tls == TlsPolicy::Require {
            let f = Failure { disposition: Disposition::Deferred, ..Failure::remote(Stage::StartTls, reply) };
            return self.abort(f, true);
        }
        // Opportunistic: go on in plaintext.
        self.after_hello();
    }

    /// Local checks, then MAIL (with RCPTs and DATA when pipelining).
    fn begin(&mut self, job: Job) {
        let mut tx = self.transaction(job);
        let local = |code, status, text: String| Failure::local(Disposition::Bounced, Stage::Mail, code, status, text);
        if tx.job.body == BodyType::BinaryMime {
            let text = String::from("binary content (BODY=BINARYMIME) cannot be sent with DATA");
            tx.fail_all(&local(554, Enhanced::new(5, 6, 3), text));
            return self.complete(tx, false);
        }
        let sender_utf8 = match tx.job.sender.as_str() {
            "" => Ok(false),
            s => command::check_address(s, false),
        };
        let Ok(mut utf8) = sender_utf8 else {
            let text = format!("invalid sender address syntax: <{}>", reply::sanitize(tx.job.sender.as_bytes(), 300));
            tx.fail_all(&local(553, Enhanced::new(5, 1, 7), text));
            return self.complete(tx, false);
        };
        for i in 0..tx.job.recipients.len() {
            let addr = &tx.job.recipients[i].address;
            match command::check_address(addr, true) {
                Ok(u) => {
                    utf8 |= u;
                    tx.queue.push_back(i);
                }
                Err(e) => {
                    let text = format!("invalid recipient address <{}>: {e}", reply::sanitize(addr.as_bytes(), 300));
                    let f = Failure { stage: Stage::Rcpt, ..local(553, Enhanced::new(5, 1, 3), text) };
                    tx.set(i, &f, Disposition::Bounced);
                }
            }
        }
        // SMTPUTF8 is required when the envelope or the header block has
        // UTF-8 in it; a message received with SMTPUTF8 that is ASCII
        // throughout goes to a server without it as it is, without the
        // parameter (as Postfix does).
        let required = utf8 || tx.job.smtputf8 && tx.job.utf8_headers;
        if required && !self.features.smtputf8 {
            let text = String::from("SMTPUTF8 is required, but was not offered by the server");
            tx.fail_all(&local(554, Enhanced::new(5, 6, 7), text));
            tx.queue.clear();
        }
        if let Some(Some(max)) = self.features.size
            && tx.job.size > max
        {
            let text = format!("message size {} exceeds size limit {max} of the server", tx.job.size);
            tx.fail_all(&local(552, Enhanced::new(5, 3, 4), text));
            tx.queue.clear();
        }
        if tx.queue.is_empty() {
            return self.complete(tx, false);
        }
        let smtputf8 = self.features.smtputf8 && (required || tx.job.smtputf8);
        tx.smtputf8 = smtputf8;
        let mut batch = command::mail(&tx.job, &self.features, smtputf8);
        self.expects.push_back(Expect::Mail);
        if tx.pipelined {
            while let Some(i) = tx.queue.pop_front() {
                batch.push_str(&command::rcpt(&tx.job.recipients[i], tx.dsn, tx.smtputf8));
                self.expects.push_back(Expect::Rcpt(i));
            }
            batch.push_str("DATA\r\n");
            self.expects.push_back(Expect::Data);
        }
        self.out.push_back(Action::Send(batch.into_bytes()));
        self.tx = Some(tx);
        self.phase = Phase::Talk;
    }

    /// Without pipelining: the next RCPT, or DATA, or the end.
    fn next_command(&mut self) {
        let Some(tx) = self.tx.as_mut() else { return };
        if let Some(i) = tx.queue.pop_front() {
            let line = command::rcpt(&tx.job.recipients[i], tx.dsn, tx.smtputf8);
            self.send(line, Expect::Rcpt(i));
        } else if tx.accepted.is_empty() {
            // No recipient: no DATA; the transaction stays open (MAIL was
            // accepted unless it failed) until RSET or QUIT.
            let open = self.server_tx && !tx.mail_failed;
            self.end_transaction(open);
        } else {
            self.send("DATA\r\n".into(), Expect::Data);
        }
    }

    fn on_mail(&mut self, reply: Reply) {
        let Some(tx) = self.tx.as_mut() else { return };
        if reply.class() == 2 {
            self.server_tx = true;
        } else {
            tx.mail_failed = true;
            tx.queue.clear();
            tx.fail_all(&Failure::remote(Stage::Mail, reply));
        }
        let pipelined = tx.pipelined;
        if !pipelined {
            self.next_command();
        }
    }

    fn on_rcpt(&mut self, i: usize, reply: Reply) {
        let Some(tx) = self.tx.as_mut() else { return };
        if tx.mail_failed {
            // Pipelined after a refused MAIL: already decided.
            return;
        }
        if reply.class() == 2 {
            tx.accepted.push(i);
        } else {
            let f = Failure::remote(Stage::Rcpt, reply);
            tx.set(i, &f, f.disposition);
        }
        let pipelined = tx.pipelined;
        if !pipelined {
            self.next_command();
        }
    }

    fn on_data(&mut self, reply: Reply) {
        let Some(tx) = self.tx.as_mut() else { return };
        if tx.mail_failed || tx.accepted.is_empty() {
            if reply.class() == 3 && self.config.lmtp {
                // RFC 2033 says 503 here; a server that says 354 would
                // answer the end of data with no reply at all, or with
                // one nobody can place. Every recipient has its verdict.
                return self.protocol_error("the LMTP server accepted DATA without a recipient");
            }
            if reply.class() == 3 {
                // DATA taken with no recipient: send an empty message.
                return self.send(".\r\n".into(), Expect::DotIgnored);
            }
            return self.end_transaction(self.server_tx);
        }
        if reply.class() != 3 {
            tx.fail_all(&Failure::remote(Stage::Data, reply));
            return self.end_transaction(true);
        }
        let downgrade = tx.job.body != BodyType::SevenBit && !self.features.eightbitmime;
        tx.encoder = Some(DataEncoder::new(downgrade.then_some(self.config.limits.mime)));
        self.phase = Phase::Content;
        self.out.push_back(Action::NeedContent);
    }

    fn on_dot(&mut self, expect: Expect, reply: Reply) {
        let Some(tx) = self.tx.as_mut() else { return };
        let f = Failure::remote(Stage::Dot, reply);
        let disposition = if f.reply.class() == 2 { Disposition::Delivered } else { f.disposition };
        match expect {
            Expect::LmtpDot(i) => tx.set(i, &f, disposition),
            _ => {
                for i in tx.accepted.clone() {
                    tx.set(i, &f, disposition);
                }
            }
        }
        if !self.expects.iter().any(|e| matches!(e, Expect::LmtpDot(_))) {
            self.end_transaction(false);
        }
    }

    /// The transaction is over; `open`: the server still has it open.
    fn end_transaction(&mut self, open: bool) {
        self.server_tx = open;
        if let Some(tx) = self.tx.take() {
            self.complete(tx, false);
        }
        self.ready();
    }
}

#[cfg(test)]
mod tests;

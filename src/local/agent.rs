//! The local role's root parent: qmgr sends it deliveries to local
//! recipients (the smtp agent's protocol: a request and a read-only queue
//! file); for each recipient it follows the aliases to the users whose
//! mailboxes the mail ends in ([`super::resolve`]), and runs each mailbox
//! delivery as a child of its own program, started as the recipient
//! (`local deliver ...`, [`super::child`]), which opens the mailbox,
//! confines itself to it and writes. The parent never opens a mailbox
//! and never writes as root; it reports one result per recipient.
//!
//! Deliveries are served one at a time (the child's time is bounded by
//! `local.time_limit`); more processes (`processes.local`) deliver in
//! parallel.
//!
//! Trusts: master and qmgr for the request; the queue file is read by
//! the queue module; the aliases database is read by the bounded reader;
//! a child's report is bounded and only informs the reason text.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use sandbox::{Grant, Sandboxed};

use super::resolve::{Resolver, Target};
use crate::child::{Child, drop_channel, install_channel};
use crate::config::delivery::{DeliveryConf, MailboxKind};
use crate::ipc::Channel;
use crate::ipc::msg::{Delivery, FromMaster, QmgrToSmtp, RecipientReport, RecipientStatus, SiteReport, SmtpToQmgr};
use crate::queue::{QueueEnvelope, read_envelope, verify_content};
use crate::roles::Role;

const MASTER: Token = Token(0);
const QMGR: Token = Token(1);
/// Largest report read from a delivery child.
const MAX_CHILD_REPORT: usize = 4096;

/// sysexits(3) codes the delivery child exits with.
pub const EX_OK: i32 = 0;
pub const EX_DATAERR: i32 = 65;
pub const EX_NOUSER: i32 = 67;
pub const EX_SOFTWARE: i32 = 70;
pub const EX_TEMPFAIL: i32 = 75;

/// What the parent prepares before the sandbox.
pub struct Prepared {
    resolver: Resolver,
}

/// Open the aliases database (its absence is logged: no aliases then).
pub fn prepare(child: &mut Child) -> Prepared {
    let Some(d) = child.config.delivery.clone() else { child.fatal("no delivery settings from master") };
    let (resolver, warning) = Resolver::new(&d, &child.config.hostname);
    if let Some(w) = warning {
        child.warn(&w);
    }
    Prepared { resolver }
}

struct Local {
    child: Child,
    poll: Poll,
    qmgr: Option<Channel>,
    conf: DeliveryConf,
    resolver: Resolver,
    program: PathBuf,
}

/// Serve until master says stop.
pub fn serve(_token: Sandboxed, child: Child, prepared: Prepared) -> ! {
    let mut child = child;
    let poll = Poll::new().unwrap_or_else(|e| crate::child::die(Role::Local, &format!("poll: {e}")));
    let Some(conf) = child.config.delivery.clone() else { child.fatal("no delivery settings from master") };
    let raw = child.master.as_raw_fd();
    if let Err(e) = poll.registry().register(&mut SourceFd(&raw), MASTER, Interest::READABLE) {
        child.fatal(&format!("registering the master channel: {e}"));
    }
    let program = conf.libexec.join(Role::Local.program());
    let mut l = Local { child, poll, qmgr: None, conf: *conf, resolver: prepared.resolver, program };
    let mut events = Events::with_capacity(16);
    loop {
        if let Err(e) = l.poll.poll(&mut events, None)
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            l.child.fatal(&format!("poll: {e}"));
        }
        for ev in events.iter() {
            match ev.token() {
                MASTER => l.master_readable(),
                QMGR => l.qmgr_event(),
                _ => {}
            }
        }
    }
}

impl Local {
    fn master_readable(&mut self) {
        loop {
            match self.child.master.recv::<FromMaster>() {
                Ok(None) => return,
                Ok(Some((FromMaster::Peer { role: Role::Qmgr, pid }, fds))) => {
                    let chan = self.child.peer_channel(Role::Qmgr, fds);
                    install_channel(&mut self.child, &self.poll, &mut self.qmgr, chan, QMGR);
                    self.child.debug(&format!("channel to qmgr pid {pid}"));
                }
                Ok(Some((FromMaster::Stop, _))) => {
                    let _ = self.child.master.flush();
                    std::process::exit(0);
                }
                Ok(Some((m, _))) => self.child.fatal(&format!("unexpected message from master: {m:?}")),
                Err(crate::ipc::Error::Closed) => std::process::exit(0),
                Err(e) => self.child.fatal(&format!("master channel: {e}")),
            }
        }
    }

    fn qmgr_event(&mut self) {
        if let Some(q) = self.qmgr.as_mut() {
            let _ = q.flush();
        }
        loop {
            let Some(q) = self.qmgr.as_mut() else { return };
            match q.recv::<QmgrToSmtp>() {
                Ok(None) => return,
                Ok(Some((QmgrToSmtp::Deliver(d), mut fds))) => {
                    if fds.len() != 1 || d.recipients.is_empty() {
                        self.child.fatal("qmgr sent a delivery without its queue file or recipients");
                    }
                    let fd: OwnedFd = fds.remove(0);
                    if let Err(e) = sandbox::limit_received(&Grant::File { fd: fd.as_raw_fd(), write: false }) {
                        self.child.fatal(&format!("limiting a queue file: {e}"));
                    }
                    let job = d.job;
                    let recipients = self.deliver(&d, File::from(fd));
                    let done = SmtpToQmgr::Done { job, site: SiteReport::Reached, recipients };
                    if let Some(q) = self.qmgr.as_mut()
                        && let Err(e) = q.send(&done, &[])
                    {
                        self.child.warn(&format!("reporting to qmgr: {e}"));
                    }
                }
                Err(crate::ipc::Error::Closed) => return drop_channel(&self.poll, &mut self.qmgr),
                Err(e) => self.child.fatal(&format!("qmgr channel: {e}")),
            }
        }
    }

    /// Deliver every recipient of a request; one report each.
    fn deliver(&mut self, d: &Delivery, file: File) -> Vec<RecipientReport> {
        let start = Instant::now();
        let all = |why: String| -> Vec<RecipientReport> {
            d.recipients.iter().map(|&i| report(i, Outcome::defer("4.3.0", &why))).collect()
        };
        let qe = match read_envelope(&file) {
            Ok(q) if q.id.as_str() == d.queue_id => q,
            Ok(q) => return all(format!("the queue file holds message {}, not {}", q.id, d.queue_id)),
            Err(e) => return all(format!("cannot read the queue file: {e}")),
        };
        if let Err(e) = verify_content(&file, qe.content_range()) {
            return all(format!("the message content cannot be read: {e}"));
        }
        let mut out = Vec::with_capacity(d.recipients.len());
        for &index in &d.recipients {
            let Some(r) = qe.recipients.get(index as usize) else {
                out.push(report(index, Outcome::defer("4.3.0", &format!("the queue file has no recipient #{index}"))));
                continue;
            };
            let address = r.address.clone();
            let outcome = self.deliver_one(&d.queue_id, start, &qe, &file, &address);
            out.push(report(index, outcome));
        }
        out
    }

    /// One recipient: resolve it, then deliver to each mailbox it ends
    /// in, logging each. Several mailboxes (an alias list) count as
    /// delivered when all are; the first failure decides otherwise (the
    /// retry repeats the list, so a mailbox may get the message twice).
    fn deliver_one(&mut self, id: &str, start: Instant, qe: &QueueEnvelope, file: &File, address: &str) -> Outcome {
        let targets = match self.resolver.resolve(address) {
            Ok(t) => t,
            Err(o) => {
                self.log(id, start, address, None, &o);
                return o;
            }
        };
        let mut last = Outcome::defer("4.3.0", "no destination");
        for t in targets {
            let o = match &t {
                Target::Mailbox { user, via_alias } => {
                    // Delivered-To: the address as sent, or the user's
                    // own when an alias led there.
                    if *via_alias {
                        let to = format!("{}@{}", user.name, self.resolver.hostname());
                        let o = self.mailbox(qe, file, user, &to);
                        self.log(id, start, &to, Some(address), &o);
                        o
                    } else {
                        let o = self.mailbox(qe, file, user, address);
                        self.log(id, start, address, None, &o);
                        o
                    }
                }
                Target::Unsupported { what, reason } => {
                    let o = Outcome::defer("4.3.0", &format!("{what}: {reason}"));
                    self.log(id, start, address, None, &o);
                    o
                }
            };
            if !matches!(o.status, RecipientStatus::Delivered { .. }) {
                return o;
            }
            last = o;
        }
        last
    }

    /// The delivery's log line, as Postfix's local writes it.
    fn log(&mut self, id: &str, start: Instant, to: &str, orig_to: Option<&str>, o: &Outcome) {
        let status = match o.status {
            RecipientStatus::Delivered { .. } => "sent",
            RecipientStatus::Deferred => "deferred",
            RecipientStatus::Bounced => "bounced",
        };
        let orig = orig_to.map(|a| format!(", orig_to=<{}>", crate::log::sanitize(a, 1024))).unwrap_or_default();
        self.child.info(&format!(
            "{id}: to=<{}>{orig}, relay=local, delay={:.2}, dsn={}, status={status} ({})",
            crate::log::sanitize(to, 1024),
            start.elapsed().as_secs_f64(),
            o.dsn,
            crate::log::sanitize(&o.reason, 2048),
        ));
    }

    /// Run a mailbox delivery child as `user` and wait for it.
    fn mailbox(&mut self, qe: &QueueEnvelope, file: &File, user: &super::resolve::User, recipient: &str) -> Outcome {
        let lc = &self.conf.local;
        let arrival = qe.envelope.arrival.secs.to_string();
        let lock_ms = lc.lock_timeout.as_millis().to_string();
        let (kind, dir, name, gid) = match lc.mailbox {
            MailboxKind::Mbox => {
                let gid = super::resolve::spool_group(&lc.mail_spool).unwrap_or(user.gid);
                ("mbox", lc.mail_spool.clone(), user.name.clone(), gid)
            }
            MailboxKind::Maildir => ("maildir", user.home.clone(), lc.maildir.clone(), user.gid),
        };
        let Some(dir_str) = dir.to_str() else {
            return Outcome::defer("4.3.0", &format!("{}: not a UTF-8 path", dir.display()));
        };
        let unconfined = if self.child.config.allow_unconfined { "unconfined" } else { "confined" };
        let argv = [
            "local",
            "deliver",
            kind,
            dir_str,
            name.as_str(),
            qe.envelope.sender.as_str(),
            recipient,
            arrival.as_str(),
            self.child.config.hostname.as_str(),
            lock_ms.as_str(),
            unconfined,
        ];
        let (rd, wr) = match nix::unistd::pipe() {
            Ok(p) => p,
            Err(e) => return Outcome::defer("4.3.0", &format!("pipe: {e}")),
        };
        let creds = sandbox::Credentials { uid: user.uid, gid, groups: vec![gid] };
        let fds = [file.as_raw_fd()];
        let limits = [
            sandbox::Limit { resource: sandbox::Resource::OpenFiles, soft: 64, hard: 64 },
            sandbox::Limit { resource: sandbox::Resource::CoreSize, soft: 0, hard: 0 },
        ];
        let env = [("PATH", "/usr/bin:/bin")];
        let spec = sandbox::Spawn {
            program: &self.program,
            argv: &argv,
            env: &env,
            fds: &fds,
            stderr: Some(wr.as_raw_fd()),
            credentials: Some(&creds),
            limits: &limits,
        };
        let pid = match sandbox::spawn(&spec) {
            Ok(p) => Pid::from_raw(p),
            Err(e) => return Outcome::defer("4.3.0", &format!("cannot start the delivery: {e}")),
        };
        drop(wr);
        let (text, timed_out) = read_report(rd, lc.time_limit);
        if timed_out {
            let _ = kill(pid, Signal::SIGKILL);
        }
        let status = loop {
            match waitpid(pid, None) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other,
            }
        };
        if timed_out {
            return Outcome::defer("4.3.0", &format!("delivery stopped after {}s", lc.time_limit.as_secs()));
        }
        let (dsn, reason) = split_report(&text);
        match status {
            Ok(WaitStatus::Exited(_, EX_OK)) => Outcome::sent(&reason),
            Ok(WaitStatus::Exited(_, EX_NOUSER | EX_DATAERR)) => Outcome::bounce(dsn.unwrap_or("5.1.1"), &reason),
            Ok(WaitStatus::Exited(_, code)) => {
                let reason = if reason.is_empty() { format!("delivery failed (status {code})") } else { reason };
                Outcome::defer(dsn.filter(|d| d.starts_with('4')).unwrap_or("4.3.0"), &reason)
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => Outcome::defer("4.3.0", &format!("delivery killed by {sig}")),
            other => Outcome::defer("4.3.0", &format!("delivery ended oddly: {other:?}")),
        }
    }
}

/// The child's report: read until end of file, at most
/// [`MAX_CHILD_REPORT`] bytes kept, within `limit`. Returns the text and
/// whether time ran out.
fn read_report(rd: OwnedFd, limit: Duration) -> (String, bool) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = Instant::now() + limit;
    let mut f = File::from(rd);
    let mut kept = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&kept).into_owned(), true);
        }
        let ms = u16::try_from(left.as_millis().min(60_000)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return (String::from_utf8_lossy(&kept).into_owned(), false),
        }
        match f.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&kept).into_owned(), false),
            Ok(n) => {
                let room = MAX_CHILD_REPORT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return (String::from_utf8_lossy(&kept).into_owned(), false),
        }
    }
}

/// The child writes one line: `D.D.D reason`. Anything else is the
/// reason alone.
fn split_report(text: &str) -> (Option<&'static str>, String) {
    let line = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let line: String = line.chars().filter(|c| !c.is_control()).take(512).collect();
    let (code, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
    match super::resolve::known_dsn(code) {
        Some(d) => (Some(d), rest.to_string()),
        None => (None, line),
    }
}

/// What became of one recipient.
#[derive(Debug)]
pub struct Outcome {
    pub status: RecipientStatus,
    pub dsn: String,
    pub reason: String,
}

impl Outcome {
    pub fn sent(reason: &str) -> Outcome {
        Outcome::new(RecipientStatus::Delivered { dsn_passed: false }, "2.0.0", reason)
    }
    pub fn defer(dsn: &str, reason: &str) -> Outcome {
        Outcome::new(RecipientStatus::Deferred, dsn, reason)
    }
    pub fn bounce(dsn: &str, reason: &str) -> Outcome {
        Outcome::new(RecipientStatus::Bounced, dsn, reason)
    }
    fn new(status: RecipientStatus, dsn: &str, reason: &str) -> Outcome {
        Outcome { status, dsn: dsn.to_string(), reason: reason.to_string() }
    }
}

fn report(index: u32, o: Outcome) -> RecipientReport {
    RecipientReport { index, status: o.status, dsn: o.dsn, reason: o.reason }
}

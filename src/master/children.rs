//! master's table of child processes: slots per role (how many of each
//! should run and their restart state), the live processes, starting a
//! child with its descriptors, wiring peer channels from the whitelist,
//! reading what children send, and reaping them.
//!
//! Trusts: nothing a child sends. A message that does not decode, carries
//! descriptors, or is not one the child's role may send gets the child
//! killed; the slot restarts it after the usual pause.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::{Master, sockets, spool};
use crate::config::Config;
use crate::ipc::msg::{ChildConfig, ChildState, ChildStatus, FromMaster, Level, ToMaster};
use crate::ipc::{self, Channel};
use crate::roles::{self, Role};

/// One process master started.
pub struct Proc {
    pub role: Role,
    /// The slot it fills; None once it is retiring (old generation or stop).
    pub slot: Option<usize>,
    pub pid: u32,
    pub generation: u64,
    pub started: Instant,
    pub channel: Option<Channel>,
    pub state: ChildState,
    pub restarts: u32,
    pub stop_deadline: Option<Instant>,
    pub killed: bool,
}

/// One process that should be running.
pub struct Slot {
    pub role: Role,
    pub failures: u32,
    pub restarts: u32,
    pub next_start: Option<Instant>,
    pub child: Option<usize>,
}

#[derive(Default)]
pub struct Children {
    procs: BTreeMap<usize, Proc>,
    slots: Vec<Slot>,
    next_id: usize,
}

impl Children {
    /// One slot per process the configuration asks for.
    pub fn reset_slots(&mut self, config: &Config) {
        self.slots.clear();
        for role in Role::ALL {
            for _ in 0..config.count(role) {
                self.slots.push(Slot { role, failures: 0, restarts: 0, next_start: None, child: None });
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.procs.values().map(|p| p.pid).collect()
    }

    /// Slots that should start a process now. A singleton waits until no
    /// process of its role is alive (e.g. the old generation's).
    pub fn due(&self, now: Instant) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            if s.child.is_some() || s.next_start.is_some_and(|t| t > now) {
                continue;
            }
            if s.role.singleton() && self.procs.values().any(|p| p.role == s.role) {
                continue;
            }
            out.push(i);
        }
        out
    }

    pub fn next_wakeup(&self) -> Option<Instant> {
        let starts = self.slots.iter().filter(|s| s.child.is_none()).filter_map(|s| s.next_start);
        let stops = self.procs.values().filter(|p| !p.killed).filter_map(|p| p.stop_deadline);
        starts.chain(stops).min()
    }

    /// Mark every process as retiring; returns their ids.
    pub fn retire_all(&mut self, deadline: Instant) -> Vec<usize> {
        for s in &mut self.slots {
            s.child = None;
        }
        let mut ids = Vec::new();
        for (id, p) in &mut self.procs {
            p.slot = None;
            if p.stop_deadline.is_none() {
                p.stop_deadline = Some(deadline);
            }
            ids.push(*id);
        }
        ids
    }

    /// Give the retiring processes of `role` until `deadline` at least.
    pub fn extend_deadline(&mut self, role: Role, deadline: Instant) {
        for p in self.procs.values_mut() {
            if p.role == role && p.slot.is_none() && p.stop_deadline.is_some_and(|d| d < deadline) {
                p.stop_deadline = Some(deadline);
            }
        }
    }

    /// Whether a process of one of `roles` is alive, retiring ones too.
    pub fn any_of(&self, roles: &[Role]) -> bool {
        self.procs.values().any(|p| roles.contains(&p.role))
    }

    /// The role of process `id`.
    pub fn role_of(&self, id: usize) -> Option<Role> {
        self.procs.get(&id).map(|p| p.role)
    }

    /// The processes of `role`, retiring ones too.
    pub fn of_role(&self, role: Role) -> Vec<usize> {
        self.procs.iter().filter(|(_, p)| p.role == role).map(|(id, _)| *id).collect()
    }

    /// Mark the processes of `role` in the current generation as
    /// retiring (their slots start new ones once they are gone); returns
    /// their ids.
    pub fn retire_role(&mut self, role: Role, deadline: Instant) -> Vec<usize> {
        let mut ids = Vec::new();
        for (id, p) in &mut self.procs {
            if p.role != role {
                continue;
            }
            if let Some(s) = p.slot.take() {
                self.slots[s].child = None;
                self.slots[s].next_start = None;
                p.stop_deadline = Some(deadline);
                ids.push(*id);
            }
        }
        ids
    }

    /// Kill retiring processes that outlived their deadline.
    pub fn kill_overdue(&mut self, now: Instant, log: &mut impl FnMut(Level, &str)) {
        for p in self.procs.values_mut() {
            if !p.killed && p.stop_deadline.is_some_and(|d| d <= now) {
                log(Level::Warning, &format!("{} pid {} did not stop in time; killing it", p.role.name(), p.pid));
                let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGKILL);
                p.killed = true;
            }
        }
    }

    pub fn status(&self) -> Vec<ChildStatus> {
        self.procs
            .values()
            .map(|p| ChildStatus {
                role: p.role,
                pid: p.pid,
                generation: p.generation,
                uptime_secs: p.started.elapsed().as_secs(),
                restarts: p.slot.map_or(p.restarts, |s| self.slots[s].restarts),
                state: p.state,
            })
            .collect()
    }

    fn by_pid(&self, pid: u32) -> Option<usize> {
        self.procs.iter().find(|(_, p)| p.pid == pid).map(|(id, _)| *id)
    }

    /// Record a failure of slot `s` and schedule its restart.
    fn fail(&mut self, s: usize, ran: Option<Duration>, config: &Config, now: Instant) -> (Duration, u32) {
        let sup = &config.supervise;
        let slot = &mut self.slots[s];
        if ran.is_some_and(|r| r >= sup.stable_after) {
            slot.failures = 0;
        }
        slot.failures += 1;
        let factor = 1u32 << (slot.failures - 1).min(16);
        let delay = sup.restart_delay.saturating_mul(factor).min(sup.restart_delay_max);
        slot.next_start = Some(now + delay);
        slot.child = None;
        slot.restarts += 1;
        (delay, slot.failures)
    }
}

fn describe(status: WaitStatus) -> Option<(u32, String)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw() as u32, format!("exited with status {code}"))),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw() as u32, format!("killed by {sig}"))),
        _ => None,
    }
}

impl Master {
    /// Start the process for slot `s`.
    pub(super) fn start_child(&mut self, s: usize) {
        let role = self.children.slots[s].role;
        let now = Instant::now();
        match self.spawn_role(role) {
            Ok((pid, channel)) => {
                let id = self.children.next_id + 1;
                self.children.next_id = id;
                let raw = channel.as_raw_fd();
                let interest = Interest::READABLE | Interest::WRITABLE;
                if let Err(e) = self.poll.registry().register(&mut SourceFd(&raw), Token(id), interest) {
                    self.log(Level::Error, &format!("registering {} channel: {e}", role.name()));
                }
                let restarts = self.children.slots[s].restarts;
                self.children.slots[s].child = Some(id);
                self.children.slots[s].next_start = None;
                let proc = Proc {
                    role,
                    slot: Some(s),
                    pid,
                    generation: self.generation,
                    started: now,
                    channel: Some(channel),
                    state: ChildState::Starting,
                    restarts,
                    stop_deadline: None,
                    killed: false,
                };
                self.children.procs.insert(id, proc);
                self.log(Level::Debug, &format!("started {} pid {pid}", role.name()));
                self.connect_peers(id);
            }
            Err(e) => {
                let (delay, n) = self.children.fail(s, None, &self.config, now);
                self.log(
                    Level::Error,
                    &format!(
                        "cannot start {}: {e}; retrying in {:.1}s (failure {n})",
                        role.name(),
                        delay.as_secs_f64()
                    ),
                );
            }
        }
    }

    fn spawn_role(&mut self, role: Role) -> Result<(u32, Channel), String> {
        let program = self.config.libexec_directory.join(role.program());
        spool::check_program(&program, self.owner.privileged)?;
        let (mine, theirs) = ipc::pair().map_err(|e| format!("socketpair: {e}"))?;
        let mut fds: Vec<RawFd> = vec![theirs.as_raw_fd()];
        // The connector's socket directories, open until it has them.
        let mut socket_dirs: Vec<(std::path::PathBuf, std::os::fd::OwnedFd)> = Vec::new();
        match role {
            Role::Control => fds.push(self.control_listener.as_raw_fd()),
            Role::Qmgr => fds.extend(self.queue_fds.iter().map(|f| f.as_raw_fd())),
            Role::Smtpd => {
                fds.extend(self.smtp_listeners.iter().map(|(_, _, l)| l.as_raw_fd()));
                fds.push(self.intake.recipients.as_raw_fd());
            }
            Role::Cleanup => {
                fds.push(self.journal_fd.as_raw_fd());
                // incoming, active, deferred, hold: QUEUE_DIRS order.
                fds.extend(self.queue_fds.iter().take(4).map(|f| f.as_raw_fd()));
            }
            Role::Pickup => {
                fds.push(self.maildrop_fd.as_raw_fd());
                // corrupt/: QUEUE_DIRS' last.
                fds.extend(self.queue_fds.iter().skip(4).map(|f| f.as_raw_fd()));
            }
            Role::Connector => {
                let opened = sockets::open(&self.config.transport_map);
                for (dir, why) in &opened.missing {
                    self.log(
                        Level::Warning,
                        &format!(
                            "transport_map: cannot open the socket directory {}: {why}; its LMTP sockets are \
                             unreachable until it exists (the connector is restarted then)",
                            dir.display()
                        ),
                    );
                }
                fds.extend(opened.dirs.iter().map(|(_, fd)| fd.as_raw_fd()));
                socket_dirs = opened.dirs;
                self.socket_watch = opened.watch;
                self.socket_check = (!self.socket_watch.is_empty()).then(|| Instant::now() + sockets::CHECK_EVERY);
            }
            Role::Smtp | Role::Bounce | Role::Local | Role::Lookup => {}
        }
        // local keeps root: it runs each delivery as its recipient.
        let creds = (self.owner.privileged && role != Role::Local).then(|| sandbox::Credentials {
            uid: self.owner.uid,
            gid: self.owner.gid,
            // pickup reads what postdrop left in maildrop/ (group-readable).
            groups: if role == Role::Pickup {
                vec![self.owner.gid, self.owner.submission_gid]
            } else {
                vec![self.owner.gid]
            },
        });
        // smtp makes the LMTP deliveries too.
        let t = &self.config.transport;
        let deliveries = t.smtp.processes.saturating_add(t.lmtp.processes);
        // Set before the child drops root, so it may be above master's
        // own; where the system allows less, the child gets its hard
        // limit and says so in the log (see `child::start`).
        let nofile = role.open_files(self.config.limits.sessions, deliveries);
        let limits = [
            sandbox::Limit { resource: sandbox::Resource::OpenFiles, soft: nofile, hard: nofile },
            sandbox::Limit { resource: sandbox::Resource::CoreSize, soft: 0, hard: 0 },
        ];
        let program_str = program.to_str().ok_or_else(|| format!("{}: path is not UTF-8", program.display()))?;
        let spec = sandbox::Spawn {
            program: &program,
            argv: &[role.name()],
            env: &[],
            fds: &fds,
            stderr: self.opts.foreground.then_some(2),
            credentials: creds.as_ref(),
            limits: &limits,
            // Signals for master's process group (^C at the terminal of
            // mta -d, a supervisor's) are master's alone: it stops the
            // children in order, and they exit when its channel closes.
            new_session: true,
        };
        let pid = sandbox::spawn(&spec).map_err(|e| format!("{program_str}: {e}"))? as u32;
        drop(theirs);
        let mut channel = Channel::new(mine);
        let init = FromMaster::Init(Box::new(ChildConfig {
            role,
            generation: self.generation,
            session: self.session,
            hostname: self.config.hostname.clone(),
            spool: self.config.spool.clone(),
            verbose: self.opts.verbose,
            open_files: nofile,
            allow_unconfined: self.config.sandbox.allow_unconfined,
            log_line_length: self.config.log.line_length,
            control: self.config.control.clone(),
            operator: (!self.owner.privileged).then_some(self.owner.uid),
            intake: matches!(role, Role::Smtpd | Role::Cleanup | Role::Pickup).then(|| self.intake_for(role)),
            delivery: matches!(
                role,
                Role::Qmgr | Role::Smtp | Role::Connector | Role::Bounce | Role::Local | Role::Pickup
            )
            .then(|| {
                let credentials = if role == Role::Smtp { self.intake.credentials.clone() } else { None };
                let mut delivery = self.config.delivery(credentials);
                if role == Role::Smtp {
                    delivery.tls_ca = self.intake.tls_ca.clone();
                }
                if matches!(role, Role::Qmgr | Role::Connector) {
                    delivery.own_addresses = self.intake.own_addresses.clone();
                }
                Box::new(delivery)
            }),
            socket_dirs: socket_dirs.iter().map(|(p, _)| p.clone()).collect(),
            lookup_threads: self.config.local.directory_lookup_threads,
            stop_timeout: self.config.supervise.stop_timeout,
        }));
        channel.send(&init, &[]).map_err(|e| format!("sending configuration: {e}"))?;
        Ok((pid, channel))
    }

    /// Give the new process `id` a channel to every live peer its role may
    /// talk to, and each peer the other end.
    fn connect_peers(&mut self, id: usize) {
        let (role, pid) = match self.children.procs.get(&id) {
            Some(p) => (p.role, p.pid),
            None => return,
        };
        let peers: Vec<usize> = self
            .children
            .procs
            .iter()
            .filter(|(pid2, p)| **pid2 != id && p.channel.is_some())
            // Retiring processes are left alone, but for smtpd finishing
            // its sessions: it needs the new cleanup (the old one is gone:
            // a singleton) and connector, and the new lookup (the old one
            // exits once no smtpd holds its channel, rather than being
            // killed at the stop deadline while the sessions go on); for
            // bounce and local finishing
            // the work of the old qmgr, which drains (see `qmgr::drain`):
            // they need the new cleanup too; and for that qmgr, which
            // serves the new control's queue requests until it exits and
            // the new qmgr (a singleton) starts. The old qmgr keeps its
            // channels to the old delivery agents; the new one gets the new
            // agents, cleanup and control.
            .filter(|(_, p)| {
                p.slot.is_some()
                    || (p.role == Role::Smtpd && matches!(role, Role::Cleanup | Role::Connector | Role::Lookup))
                    // bounce and local queue the notices and forwards of
                    // the deliveries the old qmgr still hears of.
                    || (matches!(p.role, Role::Bounce | Role::Local) && role == Role::Cleanup)
                    || (p.role == Role::Qmgr && role == Role::Control && !p.killed)
            })
            .filter(|(_, p)| roles::channel_allowed(role, p.role))
            .map(|(i, _)| *i)
            .collect();
        for peer in peers {
            let (a, b) = match ipc::pair() {
                Ok(x) => x,
                Err(e) => {
                    self.log(Level::Error, &format!("socketpair for peers: {e}"));
                    continue;
                }
            };
            let (peer_role, peer_pid) = {
                let p = &self.children.procs[&peer];
                (p.role, p.pid)
            };
            self.send_to(id, &FromMaster::Peer { role: peer_role, pid: peer_pid }, Some(a.as_fd()));
            self.send_to(peer, &FromMaster::Peer { role, pid }, Some(b.as_fd()));
        }
    }

    /// Send to a child; a channel that fails gets the child killed.
    pub(super) fn send_to(&mut self, id: usize, msg: &FromMaster, fd: Option<BorrowedFd<'_>>) {
        let Some(p) = self.children.procs.get_mut(&id) else { return };
        let Some(ch) = p.channel.as_mut() else { return };
        let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
        match ch.send(msg, &fds) {
            Ok(()) => {}
            // The child is exiting; SIGCHLD follows.
            Err(ipc::Error::Closed) => {}
            Err(e) => {
                let text = format!("{} pid {}: {e}", p.role.name(), p.pid);
                self.kill_child(id, &text);
            }
        }
    }

    pub(super) fn send_stop(&mut self, id: usize) {
        self.send_stop_as(id, &FromMaster::Stop);
    }

    /// `Stop`, or `Shutdown` (smtpd at a full stop).
    pub(super) fn send_stop_as(&mut self, id: usize, msg: &FromMaster) {
        if let Some(p) = self.children.procs.get_mut(&id) {
            p.state = ChildState::Stopping;
        }
        self.send_to(id, msg, None);
    }

    fn kill_child(&mut self, id: usize, why: &str) {
        let Some(p) = self.children.procs.get_mut(&id) else { return };
        let pid = p.pid;
        if let Some(ch) = p.channel.take() {
            let raw = ch.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
        }
        if !p.killed {
            p.killed = true;
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        self.log(Level::Error, &format!("killing {why}"));
    }

    /// Something happened on child `token`'s channel.
    pub(super) fn child_event(&mut self, token: Token, readable: bool, writable: bool) {
        let id = token.0;
        if writable
            && let Some(Some(ch)) = self.children.procs.get_mut(&id).map(|p| p.channel.as_mut())
            && let Err(e) = ch.flush()
        {
            self.channel_error(id, e);
            return;
        }
        if !readable {
            return;
        }
        self.unread.remove(&id);
        for _ in 0..super::READ_BUDGET {
            let Some(p) = self.children.procs.get_mut(&id) else { return };
            let Some(ch) = p.channel.as_mut() else { return };
            match ch.recv::<ToMaster>() {
                Ok(None) => return,
                Ok(Some((msg, fds))) => {
                    let role = p.role;
                    if !fds.is_empty() || !msg.allowed_from(role) {
                        let why = format!("{} pid {}: sent a message its role may not send", role.name(), p.pid);
                        return self.kill_child(id, &why);
                    }
                    self.child_message(id, msg);
                }
                Err(e) => return self.channel_error(id, e),
            }
        }
        // More may wait: read on in the next turn, after the others (the
        // poll, edge-triggered, will not say so again). One child cannot
        // keep master from its signals, its timers and the others.
        self.unread.insert(id);
    }

    fn channel_error(&mut self, id: usize, e: ipc::Error) {
        let Some(p) = self.children.procs.get_mut(&id) else { return };
        match e {
            // The child is exiting; SIGCHLD follows.
            ipc::Error::Closed => {
                if let Some(ch) = p.channel.take() {
                    let raw = ch.as_raw_fd();
                    let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
                }
            }
            e => {
                let why = format!("{} pid {}: {e}", p.role.name(), p.pid);
                self.kill_child(id, &why);
            }
        }
    }

    fn child_message(&mut self, id: usize, msg: ToMaster) {
        let (role, pid) = match self.children.procs.get(&id) {
            Some(p) => (p.role, p.pid),
            None => return,
        };
        match msg {
            ToMaster::Log { at, level, text } => self.child_record(at, role, pid, level, text),
            ToMaster::Ready { confined } => {
                if let Some(p) = self.children.procs.get_mut(&id)
                    && p.state == ChildState::Starting
                {
                    p.state = ChildState::Running;
                }
                let how = if confined { "sandboxed" } else { "UNCONFINED" };
                self.log(Level::Info, &format!("{} pid {pid} running, {how}", role.name()));
            }
            ToMaster::Status { id: req } => {
                let status = self.status();
                self.send_to(id, &FromMaster::Status { id: req, status }, None);
            }
            ToMaster::Reload { id: req } => {
                // Answer before the reload retires this very process, so the
                // reply is ahead of the stop request on its channel.
                match self.check_reload() {
                    Ok(()) => {
                        self.send_to(id, &FromMaster::Reloaded { id: req, result: Ok(self.generation + 1) }, None);
                        if let Err(e) = self.reload() {
                            self.log(Level::Error, &e);
                        }
                    }
                    Err(e) => {
                        self.log(Level::Error, &e);
                        self.send_to(id, &FromMaster::Reloaded { id: req, result: Err(e) }, None);
                    }
                }
            }
            ToMaster::Stop { id: req } => {
                self.send_to(id, &FromMaster::Stopping { id: req }, None);
                self.begin_stop();
            }
        }
    }

    /// Log the records an exited child left in its channel: a child
    /// sends its last ones just before it exits (see `Child::exit`), and
    /// master may reap it before the turn that would have read them.
    /// Other messages from a process that is gone are moot.
    fn last_records(&mut self, ch: &mut ipc::Channel, role: Role, pid: u32) {
        while let Ok(Some((msg, fds))) = ch.recv::<ToMaster>() {
            if let ToMaster::Log { at, level, text } = msg
                && fds.is_empty()
            {
                self.child_record(at, role, pid, level, text);
            }
        }
    }

    /// A child's log record for the log (debug ones only with -v), held
    /// until the end of the turn (see [`Master::flush_records`]).
    fn child_record(&mut self, at: u64, role: Role, pid: u32, level: Level, mut text: String) {
        if level == Level::Debug && !self.opts.verbose {
            return;
        }
        // Held as long as it is written at most (a line is cut there,
        // and escaping only lengthens it): a child's megabyte records
        // cannot fill master's memory while they wait.
        text.truncate(text.floor_char_boundary(self.config.log.line_length as usize));
        self.records.push(super::HeldRecord { at, role, pid, level, text });
        if self.records.len() >= super::MAX_HELD_RECORDS {
            self.flush_records();
        }
    }

    /// Collect every child that exited and schedule restarts.
    pub(super) fn reap(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            // The listing of the directory users (see `directory`).
            if self.directory.reaped(status) {
                continue;
            }
            let Some((pid, how)) = describe(status) else { continue };
            let Some(id) = self.children.by_pid(pid) else { continue };
            let Some(mut p) = self.children.procs.remove(&id) else { continue };
            if let Some(mut ch) = p.channel.take() {
                let raw = ch.as_raw_fd();
                let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
                self.last_records(&mut ch, p.role, pid);
            }
            let now = Instant::now();
            match p.slot {
                Some(s) if self.stopping.is_none() => {
                    let (delay, n) = self.children.fail(s, Some(now - p.started), &self.config, now);
                    self.log(
                        Level::Warning,
                        &format!(
                            "{} pid {pid} {how}; restarting in {:.1}s (failure {n} in a row)",
                            p.role.name(),
                            delay.as_secs_f64()
                        ),
                    );
                }
                _ => {
                    self.log(Level::Debug, &format!("{} pid {pid} {how} (generation {})", p.role.name(), p.generation))
                }
            }
        }
    }
}

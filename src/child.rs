//! The skeleton every child runs, in a fixed order: claim the descriptors
//! master placed at known numbers → receive the role's configuration →
//! (the role opens what it still needs) → enter the sandbox → serve with
//! the token `enter` returns. Serving code takes a `sandbox::Sandboxed`,
//! so serving before the sandbox does not compile.
//!
//! Trusts: master (its channel is the child's only authority).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use sandbox::{Grant, Sandboxed, Unconfined};

use crate::ipc::Channel;
use crate::ipc::msg::{ChildConfig, FromMaster, Level, ToMaster};
use crate::log::ChildLog;
use crate::roles::{self, FIRST_ROLE_FD, MASTER_FD, Role};

/// How long a new child waits for its configuration.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before a fatal exit, so a crash loop cannot spin.
const FATAL_PAUSE: Duration = Duration::from_secs(1);
/// How long a child about to exit waits for master to take the log
/// records it still holds (master reads its children while it stops).
pub const EXIT_FLUSH: Duration = Duration::from_secs(2);

/// A child between start-up and serving.
pub struct Child {
    pub config: ChildConfig,
    pub master: Channel,
    pub log: ChildLog,
    /// Role descriptors, in order from FIRST_ROLE_FD.
    pub fds: Vec<OwnedFd>,
    /// The token master's channel is polled under, and whether for
    /// writability too (only while records wait: see [`Child::end_turn`]).
    master_poll: Option<(mio::Token, bool)>,
}

/// Log to stderr, pause, exit. For errors before the channel works.
pub fn die(role: Role, msg: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "mta/{}[{}]: fatal: {}", role.name(), std::process::id(), msg);
    std::thread::sleep(FATAL_PAUSE);
    std::process::exit(1);
}

/// Claim the inherited descriptors and receive the configuration.
pub fn start(role: Role) -> Child {
    let master = sandbox::fds::take_inherited(MASTER_FD).unwrap_or_else(|e| die(role, &format!("master channel: {e}")));
    let mut master = Channel::new(master);
    let (msg, fds) = master
        .recv_blocking::<FromMaster>(INIT_TIMEOUT)
        .unwrap_or_else(|e| die(role, &format!("no configuration from master: {e}")));
    let config = match msg {
        FromMaster::Init(c) if fds.is_empty() && c.role == role => *c,
        other => die(role, &format!("unexpected first message from master: {other:?}")),
    };
    let n = roles::policy(role, &config.layout()).grants.len() - 1;
    let mut role_fds = Vec::with_capacity(n);
    for i in 0..n {
        let fd = FIRST_ROLE_FD + i as i32;
        role_fds.push(sandbox::fds::take_inherited(fd).unwrap_or_else(|e| die(role, &format!("descriptor {fd}: {e}"))));
    }
    let log = ChildLog::new(config.log_line_length as usize, config.verbose);
    let mut child = Child { config, master, log, fds: role_fds, master_poll: None };
    child.check_open_files();
    child
}

/// Where the bound on a process's open files is set, beyond its hard
/// limit (which master, as root, raises for each child).
const OPEN_FILES_BOUND: &str = if cfg!(target_os = "linux") {
    "fs.nr_open"
} else if cfg!(target_os = "freebsd") {
    "kern.maxfilesperproc"
} else {
    "kern.maxfiles"
};

impl Child {
    /// Warn when the system gave this process fewer open files than
    /// master asked for it (a bound of the system's, or, when master is
    /// not root, the hard limit it was started with).
    fn check_open_files(&mut self) {
        let want = self.config.open_files;
        let Ok((soft, _)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) else {
            return;
        };
        // rlim_t is unsigned on Linux and OpenBSD, signed on FreeBSD.
        #[allow(clippy::useless_conversion)]
        let soft = u64::try_from(soft).unwrap_or(u64::MAX);
        if soft < want {
            let role = self.config.role;
            self.warn(&format!(
                "the limit on open files is {soft}, below the {want} a {} process is to have ({}); raise {} or, \
                 when mta does not run as root, the hard limit it is started with",
                role.name(),
                role.open_files_basis(),
                OPEN_FILES_BOUND
            ));
        }
    }

    pub fn info(&mut self, text: &str) {
        self.log.log(&mut self.master, Level::Info, text);
    }
    pub fn warn(&mut self, text: &str) {
        self.log.log(&mut self.master, Level::Warning, text);
    }
    pub fn debug(&mut self, text: &str) {
        self.log.log(&mut self.master, Level::Debug, text);
    }

    /// Log an error, tell nothing more, pause, exit. master restarts us.
    pub fn fatal(&mut self, text: &str) -> ! {
        self.log.log(&mut self.master, Level::Error, &format!("fatal: {text}"));
        let _ = self.master.flush_within(EXIT_FLUSH);
        std::thread::sleep(FATAL_PAUSE);
        std::process::exit(1);
    }

    /// Exit with `code` once master has what this process logged (or
    /// [`EXIT_FLUSH`] has passed): a record must not die queued with us.
    pub fn exit(&mut self, code: i32) -> ! {
        let _ = self.master.flush_within(EXIT_FLUSH);
        std::process::exit(code);
    }

    /// Poll master's channel under `token`: for its messages, and (see
    /// [`Child::end_turn`]) for room while records wait to go.
    pub fn register_master(&mut self, registry: &mio::Registry, token: mio::Token) -> std::io::Result<()> {
        let raw = self.master.as_raw_fd();
        registry.register(&mut mio::unix::SourceFd(&raw), token, mio::Interest::READABLE)?;
        self.master_poll = Some((token, false));
        Ok(())
    }

    /// An event on master's channel: what waits goes if it is writable;
    /// true when it is readable (the caller reads it).
    pub fn master_event(&mut self, ev: &mio::event::Event) -> bool {
        if ev.is_writable() {
            let _ = self.master.flush();
        }
        ev.is_readable() || ev.is_read_closed() || ev.is_error()
    }

    /// At the end of an event-loop turn: send master what the turn
    /// logged, and poll its channel for room only while some of it is
    /// left (a full socket), so that it goes as soon as master reads
    /// rather than with the next unrelated event. Polled for room all
    /// the time, the channel would wake the loop for every datagram
    /// master takes.
    pub fn end_turn(&mut self, registry: &mio::Registry) {
        let _ = self.master.flush();
        let Some((token, polled)) = self.master_poll else { return };
        let waiting = self.master.wants_write();
        if waiting == polled {
            return;
        }
        let interest =
            if waiting { mio::Interest::READABLE | mio::Interest::WRITABLE } else { mio::Interest::READABLE };
        let raw = self.master.as_raw_fd();
        if registry.reregister(&mut mio::unix::SourceFd(&raw), token, interest).is_ok() {
            self.master_poll = Some((token, waiting));
        }
    }

    /// Enter the role's sandbox and tell master. Exits when the sandbox
    /// cannot be entered, unless the configuration allows running
    /// unconfined (then says so in the log, at every start).
    pub fn enter(&mut self) -> Sandboxed {
        let role = self.config.role;
        let policy = roles::policy(role, &self.config.layout());
        let unconfined = if self.config.allow_unconfined { Unconfined::Allowed } else { Unconfined::Refused };
        let token = match sandbox::enter(&policy, unconfined) {
            Ok(t) => t,
            Err(e) => self.fatal(&format!("cannot enter the {} sandbox: {e}", role.name())),
        };
        if !token.confined() {
            self.warn("running UNCONFINED: the sandbox could not be entered and sandbox.allow_unconfined is set");
        }
        let _ = self.master.send(&ToMaster::Ready { confined: token.confined() }, &[]);
        token
    }

    /// Accept a peer channel master sent: limit its rights and wrap it.
    pub fn peer_channel(&mut self, role: Role, mut fds: Vec<OwnedFd>) -> Channel {
        if fds.len() != 1 {
            self.fatal(&format!("peer message for {} with {} descriptors", role.name(), fds.len()));
        }
        let fd = fds.remove(0);
        if let Err(e) = sandbox::limit_received(&Grant::Channel { fd: fd.as_raw_fd() }) {
            self.fatal(&format!("limiting the {} channel: {e}", role.name()));
        }
        if !roles::channel_allowed(self.config.role, role) {
            self.fatal(&format!("master sent a channel to {}, which this role may not talk to", role.name()));
        }
        Channel::new(fd)
    }
}

/// Put `chan` in `slot` and poll it for both directions under `token`,
/// replacing (and no longer polling) whatever channel was there: a
/// restarted peer's new channel. A poll that refuses it is fatal.
pub fn install_channel(
    child: &mut Child,
    poll: &mio::Poll,
    slot: &mut Option<Channel>,
    chan: Channel,
    token: mio::Token,
) {
    drop_channel(poll, slot);
    let raw = chan.as_raw_fd();
    if let Err(e) = poll.registry().register(
        &mut mio::unix::SourceFd(&raw),
        token,
        mio::Interest::READABLE | mio::Interest::WRITABLE,
    ) {
        child.fatal(&format!("registering a channel: {e}"));
    }
    *slot = Some(chan);
}

/// Empty `slot`, no longer polling its channel (a peer that went away).
pub fn drop_channel(poll: &mio::Poll, slot: &mut Option<Channel>) {
    if let Some(old) = slot.take() {
        let _ = poll.registry().deregister(&mut mio::unix::SourceFd(&old.as_raw_fd()));
    }
}

//! master: the resident root daemon. It reads the configuration, holds
//! the spool lock, the control socket and the queue directory
//! descriptors, starts every child with its descriptors at known numbers,
//! creates the channels between children from the whitelist in `roles`,
//! restarts children that die (after a pause that grows), re-reads the
//! configuration on SIGHUP and stops cleanly on SIGTERM.
//!
//! Single-threaded: one mio loop; signals arrive through a self-pipe.
//!
//! Trusts: the configuration (root's file). Distrusts children: a child
//! that sends a malformed or forbidden message is killed and restarted.

mod children;
pub mod directory;
pub mod intake;
mod sockets;
pub mod spool;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::config::smtp::ListenTls;
use crate::ipc::msg::{FromMaster, Level};
use crate::log::{Sink, Syslog};
use crate::roles::Role;

use children::Children;

const SIGNALS: Token = Token(0);
/// How long master lets children's records gather after reading some.
const GATHER: Duration = Duration::from_millis(2);
/// How often master looks at what the local-recipient table is made
/// from (a stat of the compiled aliases and of the password file), to
/// rebuild it after a `newaliases` or a `useradd`.
const RECIPIENTS_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Command-line options.
#[derive(Debug, Default)]
pub struct Options {
    pub config: Option<PathBuf>,
    pub foreground: bool,
    pub check_only: bool,
    pub verbose: bool,
}

pub const USAGE: &str = "usage: mta [-dnv] [-f file]";

/// Parse argv (without argv[0]) in the BSD getopt style: `-dv`, `-f file`, `-ffile`.
pub fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        let Some(flags) = a.strip_prefix('-').filter(|f| !f.is_empty()) else { break };
        for (j, c) in flags.char_indices() {
            match c {
                'd' => o.foreground = true,
                'n' => o.check_only = true,
                'v' => o.verbose = true,
                'f' => {
                    let rest = &flags[j + 1..];
                    let value = if !rest.is_empty() {
                        rest.to_string()
                    } else {
                        i += 1;
                        args.get(i).cloned().ok_or_else(|| String::from("option -f needs a file"))?
                    };
                    o.config = Some(PathBuf::from(value));
                    break;
                }
                c => return Err(format!("unknown option -{c}")),
            }
        }
        i += 1;
    }
    if i < args.len() {
        return Err(format!("unexpected argument `{}`", args[i]));
    }
    Ok(o)
}

/// Everything master holds.
/// A child's log record, held until the end of master's turn.
pub(crate) struct HeldRecord {
    at: u64,
    role: Role,
    pid: u32,
    level: Level,
    text: String,
}

/// Records held at most before they are written in the middle of a turn.
const MAX_HELD_RECORDS: usize = 4096;
/// Messages read from one child's channel in one turn at most.
const READ_BUDGET: usize = 1024;
/// While records wait for syslogd, master looks again this often.
const HELD_RETRY: Duration = Duration::from_millis(100);

pub struct Master {
    pub opts: Options,
    pub config_path: PathBuf,
    pub config: Config,
    pub owner: spool::Owner,
    pub sink: Sink,
    /// Children's records read this turn (see [`Master::flush_records`]).
    records: Vec<HeldRecord>,
    /// Children whose channel was not read to its end in the last turn
    /// ([`READ_BUDGET`]): read on in the next.
    unread: std::collections::BTreeSet<usize>,
    pub generation: u64,
    /// This master's random session number (see `ChildConfig::session`).
    pub session: u64,
    pub started: Instant,
    pub queue_fds: Vec<OwnedFd>,
    /// The intake journal's directory (cleanup's).
    pub journal_fd: OwnedFd,
    /// Local submission's maildrop/ (pickup's).
    pub maildrop_fd: OwnedFd,
    pub control_listener: UnixListener,
    /// SMTP listeners, in the configuration's (sorted) order.
    pub smtp_listeners: Vec<(String, ListenTls, TcpListener)>,
    /// What master read for smtpd: the local-recipient table and TLS files.
    pub intake: intake::Material,
    pub poll: Poll,
    pub children: Children,
    /// Set by a stop request: the time after which children are killed.
    pub stopping: Option<Instant>,
    /// At a stop, the cleanup processes not yet asked to stop: they are
    /// once qmgr and bounce are gone, and smtpd and pickup too or this
    /// time has come (see [`Master::begin_stop`]).
    held_stops: Vec<usize>,
    held_for_intake: Option<Instant>,
    /// The socket directories the running connector was given.
    socket_watch: sockets::Watch,
    /// When to look at them next.
    socket_check: Option<Instant>,
    /// When to look at the local-recipient table's sources next.
    recipients_check: Instant,
    /// The listing of the name service's users for the table.
    pub directory: directory::Directory,
    lock: spool::Lock,
    /// The daemon wrote its pid file (it removes it when it stops).
    pidfile_written: bool,
}

/// Run master; returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    let opts = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mta: {e}\n{USAGE}");
            return 1;
        }
    };
    let config_path = opts.config.clone().unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_PATH));
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mta: {e}");
            return 1;
        }
    };
    let (owner, warnings) = match preflight(&config) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("mta: {e}");
            return 1;
        }
    };
    if opts.check_only {
        for w in warnings {
            eprintln!("mta: warning: {w}");
        }
        if opts.verbose {
            eprintln!("mta: {}: configuration is valid", config_path.display());
        }
        return 0;
    }
    // A reload reads the file again, after the daemon moved to `/`.
    let config_path = match std::fs::canonicalize(&config_path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mta: {}: {e}", config_path.display());
            return 1;
        }
    };
    let mut m = match Master::start(opts, config_path, config, owner) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("mta: {e}");
            return 1;
        }
    };
    // Every step that can fail comes before the shell hears the outcome:
    // as a daemon, the process it started waits until this one is up.
    let detached = if m.opts.foreground {
        None
    } else {
        match sandbox::daemonize("mta") {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("mta: becoming a daemon: {e}");
                m.shutdown_cleanup();
                return 1;
            }
        }
    };
    let signals = match m.up(detached.is_some()) {
        Ok(s) => s,
        Err(e) => {
            let e = format!("mta: {e}");
            match detached {
                Some(d) => d.fail(&e),
                None => eprintln!("{e}"),
            }
            m.shutdown_cleanup();
            return 1;
        }
    };
    if let Some(d) = detached {
        // Its standard error is gone now; the log is syslog.
        let _ = d.ready();
    }
    m.run(signals)
}

/// Every check start makes that writes nothing, so that `mta -n` (the rc
/// scripts' check before a start, restart or reload) refuses what start
/// would: the mail user and the submission group; the spool tree as far
/// as it exists; the child programs; the TLS certificate and key, the
/// relay's password file, the aliases database and the SMTP client's CA
/// file; the control socket's path. Start runs it first. Returns who owns
/// the queue, and the warnings loading the files logs (for `-n`).
fn preflight(config: &Config) -> Result<(spool::Owner, Vec<String>), String> {
    let owner = spool::Owner::resolve(&config.user, &config.submission_group)?;
    spool::check(&config.spool, &owner)?;
    for role in Role::ALL {
        spool::check_program(&config.libexec_directory.join(role.program()), owner.privileged)?;
    }
    let warnings = intake::check(config)?;
    spool::check_control(&config.control.socket)?;
    Ok((owner, warnings))
}

impl Master {
    /// `owner` is what [`preflight`] found, which has run.
    fn start(opts: Options, config_path: PathBuf, config: Config, owner: spool::Owner) -> Result<Master, String> {
        spool::make_spool_root(&config.spool)?;
        let lock = spool::lock(&config.spool)?;
        let queue_fds = spool::prepare(&config.spool, &owner)?;
        let journal_fd = spool::prepare_dir(&config.spool, crate::roles::JOURNAL_DIR, &owner)?;
        let maildrop_fd = spool::prepare_maildrop(&config.spool, &owner)?;
        // The directory users come with the first listing (see
        // `check_directory`); until then the table is incomplete.
        let intake = intake::Material::load(&config, None)?;
        let smtp_listeners = intake::bind(&config)?;
        let control_listener = spool::bind_control(&config.control.socket)?;
        let sink = if opts.foreground { Sink::Stderr } else { Sink::Syslog(Syslog::new(&config.log.facility)) };
        let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
        Ok(Master {
            opts,
            config_path,
            config,
            owner,
            sink,
            generation: 1,
            session: {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::hash::RandomState::new().build_hasher();
                h.write_u32(std::process::id());
                h.write_u128(
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
                );
                h.finish()
            },
            started: Instant::now(),
            queue_fds,
            journal_fd,
            maildrop_fd,
            control_listener,
            smtp_listeners,
            intake,
            poll,
            children: Children::default(),
            stopping: None,
            held_stops: Vec::new(),
            held_for_intake: None,
            socket_watch: sockets::Watch::default(),
            socket_check: None,
            recipients_check: Instant::now() + RECIPIENTS_CHECK_EVERY,
            directory: directory::Directory::new(Instant::now()),
            lock,
            pidfile_written: false,
            records: Vec::new(),
            unread: std::collections::BTreeSet::new(),
        })
    }

    pub fn log(&mut self, level: Level, text: &str) {
        if level == Level::Debug && !self.opts.verbose {
            return;
        }
        // What children logged before comes first.
        self.flush_records();
        let max = self.config.log.line_length as usize;
        self.sink.write("master", std::process::id(), level, text, max);
    }

    /// Write the children's records held this turn, in the order they
    /// were made (their monotonic time; the order read for the same
    /// time). Read channel by channel, they would come in the order of
    /// the poll's events instead: a line one process logged after
    /// another's (qmgr's `from=` after smtpd's `client=`, which came
    /// first by design) could be written before it, and log summarisers
    /// such as pflogsumm miscount what they see out of order.
    pub(crate) fn flush_records(&mut self) {
        if self.records.is_empty() {
            return;
        }
        let mut records = std::mem::take(&mut self.records);
        records.sort_by_key(|r| r.at);
        let max = self.config.log.line_length as usize;
        for r in records.drain(..) {
            self.sink.write(r.role.name(), r.pid, r.level, &r.text, max);
        }
        self.records = records;
    }

    /// The last steps of a start, in the process that goes on (the
    /// daemon, when `daemon`): its pid in the lock file and the pid file,
    /// and the signals it obeys.
    fn up(&mut self, daemon: bool) -> Result<Signals, String> {
        if daemon {
            self.lock.record_pid()?;
            spool::write_pidfile(&self.config.pidfile)?;
            self.pidfile_written = true;
        }
        let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT, SIGCHLD]).map_err(|e| format!("signals: {e}"))?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| format!("signals: {e}"))?;
        Ok(signals)
    }

    fn run(&mut self, mut signals: Signals) -> i32 {
        self.log(
            Level::Info,
            &format!(
                "starting mta {} (configuration {}, {}; {})",
                env!("CARGO_PKG_VERSION"),
                self.config_path.display(),
                if self.owner.privileged { "children run as the mail user" } else { "unprivileged mode" },
                sandbox::describe_kernel()
            ),
        );
        if let Err(e) = raise_open_files() {
            self.log(Level::Warning, &format!("cannot raise the limit on open files to the hard limit: {e}"));
        }
        self.log_intake_warnings();
        self.first_listing();
        self.children.reset_slots(&self.config);
        let mut events = Events::with_capacity(128);
        loop {
            self.reap();
            if self.stopping.is_none() {
                self.schedule();
                self.check_socket_dirs();
                self.check_recipients();
            }
            if let Some(deadline) = self.stopping {
                self.release_held_stops();
                if self.children.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    self.kill_all();
                    break;
                }
            }
            let max = self.config.log.line_length as usize;
            let sink = &mut self.sink;
            let mut log = |level, text: &str| sink.write("master", std::process::id(), level, text, max);
            self.children.kill_overdue(Instant::now(), &mut log);
            let mut timeout = if self.unread.is_empty() {
                self.next_wakeup().map(|t| t.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if self.sink.holding() {
                // Records wait for syslogd: look again soon.
                timeout = Some(timeout.map_or(HELD_RETRY, |t| t.min(HELD_RETRY)));
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    self.log(Level::Error, &format!("poll: {e}"));
                    std::thread::sleep(Duration::from_secs(1));
                }
                continue;
            }
            let mut from_children = false;
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => {
                        let pending: Vec<i32> = signals.pending().collect();
                        for s in pending {
                            self.signal(s);
                        }
                    }
                    t => {
                        from_children |= ev.is_readable();
                        self.child_event(t, ev.is_readable(), ev.is_writable());
                    }
                }
            }
            // Channels left with messages in the last turn read on.
            for id in std::mem::take(&mut self.unread) {
                from_children = true;
                self.child_event(Token(id), true, false);
            }
            self.flush_records();
            if self.sink.holding() {
                self.sink.send_held();
            }
            if from_children && self.stopping.is_none() {
                // Let the next records gather: under load, children log
                // all the time, and a wake-up per datagram cost master more
                // than the records did. Nothing waits on master meanwhile
                // (children's channels queue, signals are read after).
                std::thread::sleep(GATHER);
            }
        }
        self.shutdown_cleanup();
        self.log(Level::Info, "stopped");
        self.sink.drain_held(Duration::from_secs(1));
        0
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let mut t = self.children.next_wakeup();
        if let Some(c) = self.socket_check.filter(|_| self.stopping.is_none()) {
            t = Some(t.map_or(c, |x| x.min(c)));
        }
        if self.stopping.is_none() {
            t = Some(t.map_or(self.recipients_check, |x| x.min(self.recipients_check)));
        }
        if let Some(d) = self.stopping {
            t = Some(t.map_or(d, |x| x.min(d)));
        }
        // (Once past, the stops wait for qmgr and bounce only: no wake-up.)
        if let Some(d) = self.held_for_intake.filter(|d| !self.held_stops.is_empty() && *d > Instant::now()) {
            t = Some(t.map_or(d, |x| x.min(d)));
        }
        t
    }

    fn signal(&mut self, s: i32) {
        match s {
            SIGCHLD => self.reap(),
            SIGHUP => {
                let r = self.reload();
                if let Err(e) = r {
                    self.log(Level::Error, &e);
                }
            }
            SIGTERM | SIGINT => self.begin_stop(),
            _ => {}
        }
    }

    /// Ask every child to finish; kill what is left after stop_timeout.
    /// qmgr drains (see `qmgr::drain`): the deliveries in flight are
    /// reported and their notices queued. smtpd ends its sessions with a
    /// 421, those in the middle of a message within half the time (see
    /// `smtpd::server`). cleanup, which queues those notices (from
    /// bounce) and those messages, is asked only once qmgr and bounce are
    /// gone, and smtpd and pickup too or three quarters of the time have
    /// passed (a last quarter for it to close its journal).
    pub fn begin_stop(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        self.log(Level::Info, "stopping: asking children to finish");
        let now = Instant::now();
        let stop_timeout = self.config.supervise.stop_timeout;
        self.stopping = Some(now + stop_timeout);
        self.held_for_intake = Some(now + stop_timeout * 3 / 4);
        let pids = self.children.retire_all(now + stop_timeout);
        for id in pids {
            match self.children.role_of(id) {
                Some(Role::Cleanup) => self.held_stops.push(id),
                Some(Role::Smtpd) => self.send_stop_as(id, &FromMaster::Shutdown),
                _ => self.send_stop(id),
            }
        }
        self.release_held_stops();
    }

    /// Ask the held cleanup processes to stop once nothing is left to
    /// need them.
    fn release_held_stops(&mut self) {
        let intake = self.held_for_intake.is_some_and(|t| Instant::now() < t)
            && self.children.any_of(&[Role::Smtpd, Role::Pickup]);
        if self.held_stops.is_empty() || intake || self.children.any_of(&[Role::Qmgr, Role::Bounce]) {
            return;
        }
        for id in std::mem::take(&mut self.held_stops) {
            self.send_stop(id);
        }
    }

    fn kill_all(&mut self) {
        let pids = self.children.pids();
        for pid in &pids {
            self.log(Level::Warning, &format!("pid {pid} did not stop in time; killing it"));
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        for pid in pids {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
        }
    }

    /// Read and check the configuration file for a reload, without
    /// applying it (nothing is written). Settings that need a restart
    /// keep their running value. Returns who is to own the queue then:
    /// the running mail user, with the submission group looked up again.
    fn load_new(&mut self) -> Result<(Config, Vec<&'static str>, spool::Owner), String> {
        // A stop in progress retires its children in order (cleanup
        // last): a new generation would undo that.
        if self.stopping.is_some() {
            return Err(String::from("reload refused: the mail system is stopping"));
        }
        let mut new = Config::load(&self.config_path)
            .map_err(|e| format!("reload refused, keeping the running configuration: {e}"))?;
        let mut kept = Vec::new();
        macro_rules! keep {
            ($($f:ident).+) => {
                if new.$($f).+ != self.config.$($f).+ {
                    kept.push(stringify!($($f).+));
                    new.$($f).+ = self.config.$($f).+.clone();
                }
            };
        }
        keep!(spool);
        keep!(user);
        keep!(pidfile);
        keep!(control.socket);
        keep!(libexec_directory);
        keep!(listen);
        for role in Role::ALL {
            spool::check_program(&new.libexec_directory.join(role.program()), self.owner.privileged)
                .map_err(|e| format!("reload refused: {e}"))?;
        }
        let owner = if new.submission_group == self.config.submission_group {
            self.owner.clone()
        } else {
            let found =
                spool::Owner::resolve(&new.user, &new.submission_group).map_err(|e| format!("reload refused: {e}"))?;
            spool::Owner { submission_gid: found.submission_gid, ..self.owner.clone() }
        };
        Ok((new, kept, owner))
    }

    /// Everything a reload must read before it may replace the running
    /// configuration.
    fn load_material(&self, new: &Config) -> Result<intake::Material, String> {
        intake::Material::load(new, self.intake.directory()).map_err(|e| format!("reload refused: {e}"))
    }

    /// Whether a reload would be accepted.
    pub(crate) fn check_reload(&mut self) -> Result<(), String> {
        let (new, _, _) = self.load_new()?;
        self.load_material(&new).map(|_| ())
    }

    /// Re-read the configuration. A bad one is reported and the running
    /// one kept; a good one starts a new generation of children.
    pub fn reload(&mut self) -> Result<u64, String> {
        let (new, kept, owner) = self.load_new()?;
        let intake = self.load_material(&new)?;
        if owner.submission_gid != self.owner.submission_gid {
            // maildrop/ to the new group; pickup, restarted below, holds it.
            self.maildrop_fd =
                spool::prepare_maildrop(&new.spool, &owner).map_err(|e| format!("reload refused: {e}"))?;
            self.owner = owner;
        }
        if new.log.facility != self.config.log.facility
            && let Sink::Syslog(_) = self.sink
        {
            self.log(Level::Info, &format!("reload: logging to the facility {} from now on", new.log.facility));
            if let Sink::Syslog(s) = &mut self.sink {
                s.set_facility(&new.log.facility);
            }
        }
        self.intake = intake;
        self.directory.refresh_soon(Instant::now());
        self.log_intake_warnings();
        if !kept.is_empty() {
            self.log(Level::Warning, &format!("reload: {} change only at restart; kept as running", kept.join(", ")));
        }
        // smtpd's sessions in progress may last as long as the running
        // configuration let them: the old processes finish them. The old
        // processes were told the running stop_timeout (qmgr drains within
        // it): they are killed after that one, not a new one.
        let sessions = self.config.smtpd.session_timeout;
        let stop_timeout = self.config.supervise.stop_timeout;
        self.config = new;
        self.generation += 1;
        let now = Instant::now();
        let deadline = now + stop_timeout;
        let ids = self.children.retire_all(deadline);
        self.children.extend_deadline(Role::Smtpd, now + sessions + self.config.supervise.stop_timeout);
        for id in ids {
            self.send_stop(id);
        }
        self.children.reset_slots(&self.config);
        self.log(Level::Info, &format!("reloaded {}: generation {}", self.config_path.display(), self.generation));
        Ok(self.generation)
    }

    /// Log what loading the intake material found odd (a stale aliases
    /// database), once.
    fn log_intake_warnings(&mut self) {
        for w in std::mem::take(&mut self.intake.warnings) {
            self.log(Level::Warning, &w);
        }
    }

    fn shutdown_cleanup(&mut self) {
        self.directory.stop();
        let _ = std::fs::remove_file(&self.config.control.socket);
        if self.pidfile_written {
            let _ = std::fs::remove_file(&self.config.pidfile);
        }
        let _ = std::io::stderr().flush();
    }

    /// Restart the connector when a socket directory it lacks appeared,
    /// or one it holds was made again (see `sockets`).
    fn check_socket_dirs(&mut self) {
        let now = Instant::now();
        if self.socket_check.is_none_or(|t| t > now) {
            return;
        }
        self.socket_check = Some(now + sockets::CHECK_EVERY);
        let Some(what) = self.socket_watch.changed() else { return };
        let deadline = now + self.config.supervise.stop_timeout;
        let ids = self.children.retire_role(Role::Connector, deadline);
        if ids.is_empty() {
            return;
        }
        self.log(Level::Info, &format!("transport_map: {what}: restarting the connector"));
        // The next connector looks again.
        self.socket_check = None;
        for id in ids {
            self.send_stop(id);
        }
    }

    /// After `newaliases` or `useradd` (the compiled aliases file or the
    /// password file is another one, see [`intake::Material::look`]):
    /// build the local-recipient table again and send it to every smtpd
    /// process, which reads it in place of the one it holds: sessions in
    /// progress go on, with the new names from their next RCPT (smtpd
    /// processes started from now on get it at start). A table that
    /// cannot be built leaves the table as it was; one that holds the
    /// same names is not sent.
    fn check_recipients(&mut self) {
        let now = Instant::now();
        if self.recipients_check > now {
            return;
        }
        self.recipients_check = now + RECIPIENTS_CHECK_EVERY;
        if let Some(look) = self.check_directory(now) {
            self.apply_look(look);
        }
        if let Some(look) = self.intake.look(&self.config, now) {
            self.apply_look(look);
        }
    }

    /// The first listing of the directory users, waited for (at most
    /// `local.directory_timeout`) before any child starts, so that smtpd
    /// knows them from the start; the table is built with them. One that
    /// fails leaves the table incomplete (see [`directory`]).
    fn first_listing(&mut self) {
        if !self.config.local.directory_users {
            return;
        }
        let now = Instant::now();
        let _ = self.check_directory(now);
        let outcome = self.directory.wait();
        if let Some(look) = self.take_listing(outcome) {
            self.apply_look(look);
        }
    }

    /// Start a listing of the directory users when one is due, and take
    /// the names of one that has ended (see [`directory`]).
    fn check_directory(&mut self, now: Instant) -> Option<intake::Look> {
        if !self.config.local.directory_users {
            self.directory.stop();
            if self.intake.directory().is_some_and(|d| d.is_empty()) {
                return None;
            }
            return Some(self.intake.set_directory(&self.config, std::collections::BTreeSet::new()));
        }
        let outcome = self.directory.poll(now);
        let look = self.take_listing(outcome);
        if self.directory.due(now) {
            let local = &self.config.local;
            let program = self.config.libexec_directory.join(Role::Local.program());
            let credentials = self.owner.privileged.then(|| sandbox::Credentials {
                uid: self.owner.uid,
                gid: self.owner.gid,
                groups: vec![self.owner.gid],
            });
            let start = directory::Start {
                program: &program,
                dir: &self.config.spool,
                credentials: credentials.as_ref(),
                limit: local.directory_user_limit,
                timeout: local.directory_timeout,
                stderr: self.opts.foreground,
                unconfined: self.config.sandbox.allow_unconfined,
            };
            if let Err(e) = self.directory.start(&start, local.directory_refresh, now) {
                self.log(Level::Warning, &format!("cannot list the directory users: {e}"));
            }
        }
        look
    }

    /// Log what a listing found, and build the table with new names.
    fn take_listing(&mut self, outcome: Option<directory::Outcome>) -> Option<intake::Look> {
        match outcome {
            None => {}
            Some(directory::Outcome::Failed(why)) => {
                let then = match self.intake.directory() {
                    Some(d) => format!("the local-recipient table keeps the {} listed before", d.len()),
                    None => String::from("until one ends, local names not in the table get 451 4.3.0"),
                };
                self.log(Level::Warning, &format!("listing the directory users: {why}; {then}"));
            }
            Some(directory::Outcome::Listed { names, truncated }) => {
                if truncated {
                    self.log(
                        Level::Warning,
                        &format!(
                            "the name service lists more than local.directory_user_limit ({}) users: the others are \
                             not local recipients",
                            self.config.local.directory_user_limit
                        ),
                    );
                }
                self.log(Level::Debug, &format!("directory users listed: {}", names.len()));
                if self.intake.directory() != Some(&names) {
                    return Some(self.intake.set_directory(&self.config, names));
                }
            }
        }
        None
    }

    /// Act on what a look at the table's sources found: log it, and send
    /// a table built again to every smtpd.
    fn apply_look(&mut self, look: intake::Look) {
        self.log_intake_warnings();
        match look {
            intake::Look::Failed(e) => {
                self.log(Level::Error, &format!("{e}; the local-recipient table is kept as it was"));
            }
            intake::Look::Same(what) => {
                self.log(Level::Info, &format!("{what} changed: the local recipients are the same, smtpd kept"));
            }
            intake::Look::Rebuilt(what) => {
                let table = match self.intake.recipients.try_clone() {
                    Ok(t) => t,
                    Err(e) => {
                        return self
                            .log(Level::Error, &format!("{what} changed, but the new table cannot be sent: {e}"));
                    }
                };
                let msg = FromMaster::RecipientTable { incomplete: self.intake.local.incomplete };
                let ids = self.children.of_role(Role::Smtpd);
                for id in &ids {
                    self.send_to(*id, &msg, Some(std::os::fd::AsFd::as_fd(&table)));
                }
                self.log(
                    Level::Info,
                    &format!("{what} changed: local-recipient table rebuilt and sent to {} smtpd", ids.len()),
                );
            }
        }
    }

    fn schedule(&mut self) {
        let now = Instant::now();
        for role_slot in self.children.due(now) {
            self.start_child(role_slot);
        }
    }

    fn status(&self) -> crate::ipc::msg::MasterStatus {
        crate::ipc::msg::MasterStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            generation: self.generation,
            uptime_secs: self.started.elapsed().as_secs(),
            children: self.children.status(),
        }
    }
}

/// Raise master's limit on open files to its hard limit: it holds a
/// channel per child and the listeners, and the soft limit it was
/// started with (a login class's, a shell's) may be far lower. (Each
/// child's limit is set for its role when it starts.)
fn raise_open_files() -> nix::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard && hard != libc::RLIM_INFINITY {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(())
}

/// Per-role counts, for tests and status.
pub fn counts(config: &Config) -> BTreeMap<Role, u32> {
    Role::ALL.into_iter().map(|r| (r, config.count(r))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn bsd_style_options() {
        let o = parse_args(&args(&["-dv", "-f", "/x.conf"])).unwrap();
        assert!(o.foreground && o.verbose && !o.check_only);
        assert_eq!(o.config, Some(PathBuf::from("/x.conf")));
        let o = parse_args(&args(&["-nf/y.conf"])).unwrap();
        assert!(o.check_only);
        assert_eq!(o.config, Some(PathBuf::from("/y.conf")));
    }

    #[test]
    fn bad_options_refused() {
        assert!(parse_args(&args(&["-x"])).unwrap_err().contains("-x"));
        assert!(parse_args(&args(&["-f"])).unwrap_err().contains("-f"));
        assert!(parse_args(&args(&["extra"])).unwrap_err().contains("extra"));
    }
}

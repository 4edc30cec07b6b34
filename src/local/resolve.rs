//! Where a local recipient's mail goes: the local part of the address
//! (its `recipient_delimiter` extension set aside), followed through the
//! compiled aliases ([`crate::aliases::expand`]) to mailboxes, commands,
//! files and other addresses ([`Dest`]). A user's `.forward` is read
//! later, as that user, by the agent.
//!
//! Rules:
//! - a local part that could name a command or a file (`|`, `/`, quotes,
//!   control characters) is refused: those destinations come only from
//!   the aliases and `.forward` files, never from the envelope;
//! - `user+ext` goes to the alias `user+ext` if there is one, else as
//!   `user` would;
//! - mail for root's own mailbox is delivered only through an alias
//!   (`root: root`, or `postmaster: root`); addressed to root directly
//!   with no alias, it waits with a reason the administrator can act on;
//! - an unknown user bounces (5.1.1); in an alias list, it fails alone
//!   ([`Target::Failed`]) and the other members get the message;
//! - `user+ext` named in an alias is `user`'s mailbox;
//! - `\user` named in an alias (or its `:include:` file) is `user`'s
//!   mailbox itself: `user` is not looked up as an alias and its
//!   `.forward` is not read (`root: \root, admin`);
//! - commands and files of the aliases run as the owner of the aliases
//!   database when that is not root, else as `local.default_user`
//!   (`nobody`): never as root unless the configuration says so;
//! - an address an alias forwards to keeps the sender, or becomes from
//!   `owner-LIST@hostname` when the alias `owner-LIST` exists;
//! - while the aliases database cannot be used (unreadable, damaged, or
//!   not there although the aliases file is: `newaliases` never ran),
//!   every local recipient waits (4.3.0) with a reason naming the file,
//!   since any name, root's too, may be an alias ([`AliasesDb`]).
//!
//! Trusts: nothing in the address; the aliases database is read by the
//! bounded cdb reader; `:include:` files must be root's regular files,
//! not writable by group or others.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::agent::Outcome;
use crate::aliases::{self, Stamp, Target as AliasTarget};
use crate::config::delivery::DeliveryConf;
use crate::queue::{DoneAction, Envelope, Notify, Recipient, Ret};
use crate::table::cdb::Table;

/// A user whose mailbox gets mail, or as whom a command or file
/// delivery runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl User {
    fn from_nix(u: nix::unistd::User) -> User {
        User { name: u.name, uid: u.uid.as_raw(), gid: u.gid.as_raw(), home: u.dir }
    }
}

/// One destination of a recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The user's mailbox; `via_alias`: reached through an alias;
    /// `forward`: the user's `.forward`, if any, decides instead.
    Mailbox { user: User, via_alias: bool, forward: bool },
    /// `|command`, run as `user`.
    Command { command: String, user: User },
    /// `/file/name` appended to (a Maildir when it ends in `/`), as `user`.
    File { path: PathBuf, user: User },
    /// Another address: the message goes on as a new one, from `sender`
    /// when set (the `owner-` alias of the list it came through).
    Forward { address: String, sender: Option<String> },
    /// A member of an alias list that cannot be delivered to (an unknown
    /// user, say): it fails alone, with this outcome, and the other
    /// members get the message.
    Failed(Outcome),
}

/// A destination and the address it is delivered for (`Delivered-To:`,
/// the loop check, the log's `to=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dest {
    pub target: Target,
    pub to: String,
}

/// The compiled aliases database as this process has it.
pub struct AliasesDb {
    /// The aliases file (`aliases` in mta.conf): whether it exists tells
    /// a database never compiled from a system with no aliases.
    source: PathBuf,
    path: PathBuf,
    state: DbState,
    /// What the file was when it was last opened: [`AliasesDb::refresh`]
    /// opens it again when the path names something else.
    seen: Stamp,
    /// The database's owner when that is not root: commands and files
    /// of the aliases run as that user (as in Postfix).
    owner: Option<u32>,
}

enum DbState {
    /// No database and no aliases file: mail is resolved without
    /// aliases.
    Missing,
    Open(Table),
    /// The database is there but cannot be used (unreadable, damaged):
    /// every local recipient waits, with this reason, until it is
    /// mended; a bounce now would wrongly say that an alias's name is
    /// no user.
    Broken(String),
    /// The aliases file exists but its database does not (`newaliases`
    /// never ran, or the database was removed): the aliases are unknown
    /// rather than absent, so every local recipient waits as for
    /// [`DbState::Broken`], with this reason, until the database is
    /// compiled (Postfix's "alias database unavailable").
    Uncompiled(String),
}

/// What [`AliasesDb::refresh`] found, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum DbNote {
    Info(String),
    Warning(String),
}

impl AliasesDb {
    /// The database of the aliases file `source`, opened now.
    pub fn open(source: PathBuf) -> (AliasesDb, Option<DbNote>) {
        let path = aliases::db_path(&source);
        let mut db = AliasesDb { source, path, state: DbState::Missing, seen: Stamp::Missing, owner: None };
        let note = db.load();
        (db, note)
    }

    /// Open the database again when the file at its path is not the one
    /// opened last (a `newaliases` since, say), or when it could not be
    /// used: the caller does this before each batch of deliveries, so
    /// new aliases take effect without a reload. What changed is logged.
    pub fn refresh(&mut self) -> Option<DbNote> {
        let retry = matches!(self.state, DbState::Broken(_) | DbState::Uncompiled(_));
        if !retry && Stamp::of(&self.path) == self.seen {
            return None;
        }
        self.load()
    }

    /// Open and check the database; the note says how that differs from
    /// before (None: as before).
    fn load(&mut self) -> Option<DbNote> {
        let shown = self.path.display();
        let (state, seen, owner) = match std::fs::File::open(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && aliases::source_present(&self.source) => {
                let source = self.source.display();
                let why = format!("aliases database {shown} does not exist: run newaliases to compile {source}");
                (DbState::Uncompiled(why), Stamp::Missing, None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (DbState::Missing, Stamp::Missing, None),
            Err(e) => (DbState::Broken(format!("aliases database {shown}: {e}")), Stamp::Unknown, None),
            Ok(f) => {
                let meta = f.metadata();
                let seen = meta.as_ref().map_or(Stamp::Unknown, Stamp::of_metadata);
                let owner = meta.as_ref().ok().map(|m| m.uid()).filter(|&u| u != 0);
                let checked = meta.map_err(|e| e.to_string()).and_then(|_| {
                    let t = Table::read(&f, aliases::MAX_DB_SIZE).map_err(|e| e.to_string())?;
                    aliases::names(&t).map_err(|e| e.to_string())?;
                    Ok(t)
                });
                match checked {
                    Ok(t) => (DbState::Open(t), seen, owner),
                    Err(e) => (DbState::Broken(format!("aliases database {shown}: {e}")), seen, None),
                }
            }
        };
        let note = match (&self.state, &state) {
            (_, DbState::Broken(new)) => match &self.state {
                DbState::Broken(old) if old == new => None,
                _ => Some(DbNote::Warning(format!("{new}; mail for local recipients waits until it is mended"))),
            },
            (DbState::Uncompiled(_), DbState::Uncompiled(_)) => None,
            (_, DbState::Uncompiled(new)) => {
                Some(DbNote::Warning(format!("{new}; mail for local recipients waits until then")))
            }
            (DbState::Missing, DbState::Missing) => None,
            (DbState::Uncompiled(_), DbState::Missing) => {
                Some(DbNote::Info(format!("aliases file {} is gone as well: no aliases now", self.source.display())))
            }
            (_, DbState::Missing) => Some(DbNote::Warning(format!("aliases database {shown} is gone: no aliases now"))),
            (DbState::Open(_), DbState::Open(_)) => {
                Some(DbNote::Info(format!("aliases database {shown} changed: reopened")))
            }
            (_, DbState::Open(_)) => Some(DbNote::Info(format!("aliases database {shown} opened"))),
        };
        self.state = state;
        self.seen = seen;
        self.owner = owner;
        note
    }

    /// The table to look aliases up in, None when there is no database,
    /// or why the mail must wait.
    fn table(&self) -> Result<Option<&Table>, Outcome> {
        match &self.state {
            DbState::Missing => Ok(None),
            DbState::Open(t) => Ok(Some(t)),
            DbState::Broken(why) | DbState::Uncompiled(why) => Err(Outcome::defer("4.3.0", why)),
        }
    }
}

pub struct Resolver {
    aliases: AliasesDb,
    delimiter: String,
    /// The domain local names are qualified with (`owner-` senders,
    /// `.forward` entries, `Delivered-To:`): the host name when mail for
    /// it is local, else the first of `domains`.
    hostname: String,
    /// The local domains, lower case.
    domains: Vec<String>,
    default_user: String,
    /// Users looked up since the last [`Resolver::forget_users`] (the
    /// end of a batch): the password database is read once per user per
    /// batch, not once per delivery.
    users: RefCell<HashMap<String, nix::unistd::User>>,
}

/// The most users remembered in one batch.
const MAX_USERS: usize = 1024;

/// Enhanced status codes a delivery child may report.
pub fn known_dsn(code: &str) -> Option<&'static str> {
    ["2.0.0", "4.2.0", "4.2.1", "4.2.2", "4.3.0", "4.3.5", "5.1.1", "5.2.0", "5.3.0", "5.4.6"]
        .into_iter()
        .find(|c| *c == code)
}

/// The mail spool's group when it is group-writable and not
/// world-writable (Debian's 2775 root:mail): mailboxes and their
/// dot-locks are created with it, as Postfix does. `None`: a
/// world-writable (sticky) spool, one its group may not write (0755
/// root:wheel: its group, often 0, would be given for nothing), or
/// unreadable.
pub fn spool_group(spool: &Path) -> Option<u32> {
    let m = std::fs::metadata(spool).ok()?;
    (m.mode() & 0o002 == 0 && m.mode() & 0o020 != 0).then_some(m.gid())
}

impl Resolver {
    /// The resolver, and a note for the log on its aliases database:
    /// one that cannot be used, or an aliases file never compiled, makes
    /// every local recipient wait (see [`AliasesDb`]); neither file at
    /// all means no aliases.
    pub fn new(conf: &DeliveryConf, hostname: &str) -> (Resolver, Option<DbNote>) {
        let (aliases, note) = AliasesDb::open(conf.aliases.clone());
        let domains: Vec<String> =
            conf.domains.iter().map(|d| crate::address::domain_key(d).unwrap_or_else(|| d.to_lowercase())).collect();
        let hostname = hostname.to_lowercase();
        let hostname = match domains.first() {
            Some(first) if !domains.contains(&hostname) => first.clone(),
            _ => hostname,
        };
        let r = Resolver {
            aliases,
            delimiter: conf.local.recipient_delimiter.clone(),
            hostname,
            domains,
            default_user: conf.local.default_user.clone(),
            users: RefCell::new(HashMap::new()),
        };
        (r, note)
    }

    /// See [`AliasesDb::refresh`].
    pub fn refresh_aliases(&mut self) -> Option<DbNote> {
        self.aliases.refresh()
    }

    /// Look users up afresh from now on.
    pub fn forget_users(&self) {
        self.users.borrow_mut().clear();
    }

    /// The password entry of `name` (remembered until
    /// [`Resolver::forget_users`]).
    fn lookup(&self, name: &str) -> nix::Result<Option<nix::unistd::User>> {
        if let Some(u) = self.users.borrow().get(name) {
            return Ok(Some(u.clone()));
        }
        let found = nix::unistd::User::from_name(name)?;
        if let Some(u) = &found {
            let mut users = self.users.borrow_mut();
            if users.len() >= MAX_USERS {
                users.clear();
            }
            users.insert(name.to_string(), u.clone());
        }
        Ok(found)
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    pub fn delimiter(&self) -> &str {
        &self.delimiter
    }

    /// Whether `address` is `user`'s own (its local part, extension set
    /// aside, is the user's name, and its domain a local one): in the
    /// user's `.forward` it means the mailbox, not a new message that
    /// would come back as a loop.
    pub fn is_own(&self, address: &str, user: &str) -> bool {
        let Some((local, domain)) = address.rsplit_once('@') else { return false };
        let local = local.to_lowercase();
        crate::address::without_extension(&local, &self.delimiter) == user
            && crate::address::domain_key(domain).is_some_and(|k| self.domains.contains(&k))
    }

    /// The destinations of `address` (a recipient in a local domain), or
    /// the outcome when there is none to deliver to.
    pub fn resolve(&self, address: &str) -> Result<Vec<Dest>, Outcome> {
        let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
        let local = crate::address::local_text(local).to_lowercase();
        let base = crate::address::without_extension(&local, &self.delimiter);
        if !crate::address::deliverable_local(base) || local.len() > 256 || local.chars().any(char::is_control) {
            return Err(Outcome::bounce("5.1.3", "not a deliverable local address"));
        }
        // An extension with what no name may hold is set aside, as
        // Postfix's local does ("address with illegal extension"): the
        // mail is the user's.
        let local = if crate::address::deliverable_local(&local) { local.as_str() } else { base };
        let table = self.aliases.table()?;
        let name = match table {
            Some(t) if self.is_alias(t, local)? => local,
            _ => base,
        };
        let expanded = match table {
            Some(t) => aliases::expand(t, name, read_include).map_err(|e| match e {
                // An unreadable database or :include: file is the
                // administrator's to mend: the mail waits meanwhile.
                e @ (aliases::ExpandError::Table(_) | aliases::ExpandError::Include { .. }) => {
                    Outcome::defer("4.3.0", &format!("aliases: {e}"))
                }
                e => Outcome::bounce("5.3.0", &format!("aliases: {e}")),
            })?,
            None => {
                vec![aliases::Delivery { target: AliasTarget::Local(name.to_string()), alias: None, include: None }]
            }
        };
        let list = expanded.len() > 1;
        let mut out = Vec::with_capacity(expanded.len());
        let mut expanded = expanded;
        // `alice: alice@thishost, alice@elsewhere`, to keep a copy: the
        // address in a local domain that names the alias itself is the
        // alias naming itself (`alice: alice, ...`), the mailbox, as with
        // Postfix, not mail sent again that would come back as a loop.
        for d in &mut expanded {
            if let (AliasTarget::Address(a), Some(alias)) = (&d.target, &d.alias)
                && self.is_own(a, alias)
            {
                d.target = AliasTarget::Local(alias.clone());
            }
        }
        let mut seen = std::collections::HashSet::new();
        expanded.retain(|d| !matches!(&d.target, AliasTarget::Local(_)) || seen.insert(d.target.clone()));
        for d in expanded {
            let via_alias = d.alias.is_some();
            let to = address.to_string();
            let member = match &d.target {
                AliasTarget::Local(name) | AliasTarget::Mailbox(name) => format!("{name}@{}", self.hostname),
                AliasTarget::Address(a) => a.clone(),
                AliasTarget::Command(c) => format!("|{c}"),
                AliasTarget::File(f) | AliasTarget::Include(f) => f.display().to_string(),
            };
            let target = match d.target {
                // `\user` is the mailbox itself: no `.forward` is read.
                AliasTarget::Local(ref name) | AliasTarget::Mailbox(ref name) => {
                    let forward = matches!(d.target, AliasTarget::Local(_));
                    // `user+ext` in an alias is user's mailbox.
                    let base = crate::address::without_extension(name, &self.delimiter);
                    match self.user(base, via_alias) {
                        Ok(user) => {
                            // Delivered-To: the address as sent, or the
                            // user's own when an alias led there.
                            let to = if via_alias { format!("{}@{}", user.name, self.hostname) } else { to };
                            out.push(Dest { target: Target::Mailbox { user, via_alias, forward }, to });
                            continue;
                        }
                        Err(o) => Err(o),
                    }
                }
                AliasTarget::Address(a) => {
                    self.owner(d.alias.as_deref()).map(|sender| Target::Forward { address: a, sender })
                }
                AliasTarget::Command(c) => {
                    self.alias_user(d.include.is_some()).map(|user| Target::Command { command: c, user })
                }
                AliasTarget::File(f) => self.alias_user(d.include.is_some()).map(|user| Target::File { path: f, user }),
                AliasTarget::Include(p) => {
                    Err(Outcome::defer("4.3.0", &format!(":include:{} left unexpanded", p.display())))
                }
            };
            match target {
                Ok(target) => out.push(Dest { target, to }),
                // One member of a list fails alone.
                Err(o) if list => out.push(Dest { target: Target::Failed(o), to: member }),
                Err(o) => return Err(o),
            }
        }
        if out.is_empty() {
            return Err(Outcome::bounce("5.1.1", "the alias has no destination"));
        }
        Ok(out)
    }

    /// The envelope sender for mail forwarded through the alias `list`:
    /// `owner-list@hostname` when that alias exists.
    fn owner(&self, list: Option<&str>) -> Result<Option<String>, Outcome> {
        let (Some(t), Some(list)) = (self.aliases.table()?, list) else { return Ok(None) };
        match aliases::owner(t, list) {
            Ok(o) => Ok(o.map(|name| format!("{name}@{}", self.hostname))),
            Err(e) => Err(Outcome::defer("4.3.0", &format!("aliases: {e}"))),
        }
    }

    /// Who runs a command or writes a file named in the aliases: the
    /// owner of the aliases database when that is not root, else
    /// `local.default_user` (an `:include:` file is root's: the latter).
    fn alias_user(&self, from_include: bool) -> Result<User, Outcome> {
        if let (Some(uid), false) = (self.aliases.owner, from_include) {
            return match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
                Ok(Some(u)) => Ok(User::from_nix(u)),
                Ok(None) => {
                    Err(Outcome::defer("4.3.0", &format!("the aliases database's owner (uid {uid}) is unknown")))
                }
                Err(e) => Err(Outcome::defer("4.3.0", &format!("looking up uid {uid}: {e}"))),
            };
        }
        self.default_user()
    }

    /// `local.default_user`, as which root's commands and files run.
    pub fn default_user(&self) -> Result<User, Outcome> {
        match self.lookup(&self.default_user) {
            Ok(Some(u)) => Ok(User::from_nix(u)),
            Ok(None) => {
                Err(Outcome::defer("4.3.0", &format!("local.default_user \"{}\" is not a user", self.default_user)))
            }
            Err(e) => Err(Outcome::defer("4.3.0", &format!("looking up user \"{}\": {e}", self.default_user))),
        }
    }

    fn is_alias(&self, t: &Table, name: &str) -> Result<bool, Outcome> {
        aliases::lookup(t, name).map(|v| v.is_some()).map_err(|e| Outcome::defer("4.3.0", &format!("aliases: {e}")))
    }

    /// The user whose mailbox `name` is.
    pub fn user(&self, name: &str, via_alias: bool) -> Result<User, Outcome> {
        let user = match self.lookup(name) {
            Ok(Some(u)) => u,
            // postmaster must reach someone: without an alias it waits
            // (a double bounce is never thrown away).
            Ok(None) if name == "postmaster" => {
                return Err(Outcome::defer(
                    "4.3.0",
                    "postmaster has no alias (add e.g. `postmaster: root` to the aliases file)",
                ));
            }
            Ok(None) => return Err(Outcome::bounce("5.1.1", &format!("unknown user: \"{name}\""))),
            Err(e) => return Err(Outcome::defer("4.3.0", &format!("looking up user \"{name}\": {e}"))),
        };
        if user.uid.is_root() && !via_alias {
            return Err(Outcome::defer(
                "4.3.0",
                "mail for root is delivered only through an alias (e.g. `root: someone` in the aliases file)",
            ));
        }
        Ok(User::from_nix(user))
    }
}

/// An `:include:` file: root's regular file, not writable by group or
/// others, read without following a symbolic link.
fn read_include(path: &Path) -> Result<Vec<AliasTarget>, String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let m = f.metadata().map_err(|e| e.to_string())?;
    if !m.is_file() || m.uid() != 0 || m.mode() & 0o022 != 0 {
        return Err(String::from("not a regular file of root's, unwritable by group and others"));
    }
    let mut text = Vec::new();
    f.take(aliases::MAX_INCLUDE_SIZE + 1).read_to_end(&mut text).map_err(|e| e.to_string())?;
    if text.len() as u64 > aliases::MAX_INCLUDE_SIZE {
        return Err(String::from("too large"));
    }
    aliases::parse_include(&text, path).map_err(|e| e.to_string())
}

/// Add `d` unless the same destination is there already.
pub(super) fn push_new(out: &mut Vec<Dest>, d: Dest) {
    if !out.iter().any(|o| o.target == d.target) {
        out.push(d);
    }
}

/// What is done for a recipient, in order.
pub(super) enum Step {
    /// A mailbox, command or file, one by one.
    Here(Dest),
    /// The addresses forwarded to, as one new message from `sender`
    /// with `Delivered-To: to`; `owned`: from the `owner-` alias of the
    /// list they came through (a mailing list, RFC 3461 6.2.7.3).
    Forward { sender: String, to: String, addresses: Vec<String>, owned: bool },
}

/// How a recipient whose destinations (aliases and `.forward` followed)
/// are `dests` counts once each of them has the message: the Action of
/// its success notice (RFC 3461 5.2.7, 6.2.7; RFC 3464 2.3.3). What the
/// forwarded copies carry of the DSN request is [`forward_dsn`]'s.
/// - one mailbox, command or file: `delivered` (an alias to a single
///   destination is transparent);
/// - one address, forwarded with the message's sender: `relayed`, into
///   a new message that carries the request on, NOTIFY and all (RFC 3461
///   6.2.7.1, 6.2.7.4): no success notice comes from here (the agent
///   reports the DSN request passed), the new message's delivery
///   reports;
/// - a mailing list: addresses that all go on from its `owner-` alias,
///   which takes the message over: `delivered`, as Postfix reports it;
/// - anything else with more than one destination: `expanded`, whose
///   forwarded copies ask for no success notice (RFC 3461 6.2.7.5).
pub(super) fn done_action(dests: &[Dest]) -> DoneAction {
    let forward =
        |d: &Dest, owned: bool| matches!(&d.target, Target::Forward { sender, .. } if sender.is_some() == owned);
    match dests {
        [d] if forward(d, false) => DoneAction::Relayed,
        [_] | [] => DoneAction::Delivered,
        _ if dests.iter().all(|d| forward(d, true)) => DoneAction::Delivered,
        _ => DoneAction::Expanded,
    }
}

/// Mailboxes, commands and files first, in order; then the addresses,
/// grouped by sender and `Delivered-To:` (`sender`: the message's, for
/// a forward that names none).
pub(super) fn steps(dests: Vec<Dest>, sender: &str) -> Vec<Step> {
    let mut here = Vec::new();
    let mut forwards: Vec<Step> = Vec::new();
    for d in dests {
        let Target::Forward { address, sender: owner } = d.target else {
            here.push(Step::Here(d));
            continue;
        };
        let owned = owner.is_some();
        let from = owner.unwrap_or_else(|| sender.to_string());
        let group = forwards.iter_mut().find_map(|s| match s {
            Step::Forward { sender, to, addresses, owned: o } if *sender == from && *to == d.to && *o == owned => {
                Some(addresses)
            }
            _ => None,
        });
        match group {
            Some(addresses) => addresses.push(address),
            None => forwards.push(Step::Forward { sender: from, to: d.to, addresses: vec![address], owned }),
        }
    }
    here.extend(forwards);
    here
}

/// The DSN parameters (RFC 3461) a forwarded copy of a message carries:
/// NOTIFY and ORCPT for each of its recipients, RET and ENVID for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct ForwardDsn {
    pub notify: Option<Notify>,
    pub orcpt: Option<String>,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
}

/// What a copy forwarded for `rcpt` (of a message with envelope `env`)
/// carries of the DSN request, as RFC 3461 6.2.7 says and Postfix does,
/// given the recipient's [`done_action`] and whether the copy goes out
/// from a list's `owner-` alias (`owned`):
/// - a mailing list's copy carries nothing of it (6.2.7.3: the ENVID,
///   NOTIFY, RET and ORCPT of the redistributed message MUST NOT be
///   derived from the original's); its failures go to the list's owner;
/// - otherwise (an alias, a `.forward`: the sender is kept, and failures
///   of the new recipients go to the original sender, 6.2.7.4, 6.2.7.5),
///   RET and ENVID, and the recipient's ORCPT, or one naming its address
///   when it had none, so that a notice from further on names the
///   address the sender used; and its NOTIFY: as it is for a forward to
///   one address (`relayed`: the request goes on, as to a relay with
///   DSN), without SUCCESS for several (`expanded`: the original
///   recipient's notice was the success notice; NOTIFY=SUCCESS alone
///   becomes NEVER, as in Postfix).
pub(super) fn forward_dsn(action: DoneAction, owned: bool, rcpt: &Recipient, env: &Envelope) -> ForwardDsn {
    if owned {
        return ForwardDsn::default();
    }
    let notify = match (action, rcpt.notify) {
        (DoneAction::Relayed, n) | (_, n @ (None | Some(Notify::Never))) => n,
        (_, Some(Notify::On { failure, delay, .. })) if failure || delay => {
            Some(Notify::On { success: false, failure, delay })
        }
        (_, Some(Notify::On { .. })) => Some(Notify::Never),
    };
    ForwardDsn {
        notify,
        orcpt: rcpt.orcpt.clone().or_else(|| crate::address::orcpt::for_address(&rcpt.address)),
        ret: env.dsn_ret,
        envid: env.dsn_envid.clone(),
    }
}

#[cfg(test)]
mod spool_tests {
    use std::os::unix::fs::PermissionsExt;

    use super::spool_group;

    #[test]
    fn spool_group_only_when_the_group_may_write() {
        let dir = std::env::temp_dir().join(format!("mta-spoolgroup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let set = |mode: u32| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let gid = std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(&dir).unwrap());
        set(0o2775);
        assert_eq!(spool_group(&dir), Some(gid));
        set(0o1777);
        assert_eq!(spool_group(&dir), None);
        set(0o755);
        assert_eq!(spool_group(&dir), None);
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(spool_group(&dir), None);
    }
}

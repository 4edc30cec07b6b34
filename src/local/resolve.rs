//! Where a local recipient's mail goes: the local part of the address
//! (its `recipient_delimiter` extension set aside), followed through the
//! compiled aliases ([`crate::aliases::expand`]) to the users whose
//! mailboxes it ends in, each looked up in the password database.
//!
//! Rules:
//! - a local part that could name a command or a file (`|`, `/`, quotes,
//!   control characters) is refused: those destinations come only from
//!   the aliases, never from the envelope;
//! - `user+ext` goes to the alias `user+ext` if there is one, else as
//!   `user` would;
//! - mail for root's own mailbox is delivered only through an alias
//!   (`root: root`, or `postmaster: root`); addressed to root directly
//!   with no alias, it waits with a reason the administrator can act on;
//! - an unknown user bounces (5.1.1);
//! - destinations this version does not deliver to yet (other addresses,
//!   commands, files, a user's `.forward`) make the recipient wait with
//!   a reason that says so, never lose it.
//!
//! Trusts: nothing in the address; the aliases database is read by the
//! bounded cdb reader; `:include:` files must be root's regular files,
//! not writable by group or others.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::agent::Outcome;
use crate::aliases::{self, Target as AliasTarget};
use crate::config::delivery::DeliveryConf;
use crate::table::cdb::Table;

/// A user whose mailbox gets mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// One destination of a recipient.
#[derive(Debug)]
pub enum Target {
    /// The user's mailbox; `via_alias`: reached through an alias.
    Mailbox { user: User, via_alias: bool },
    /// A destination this version does not deliver to.
    Unsupported { what: String, reason: &'static str },
}

pub struct Resolver {
    aliases: Option<Table>,
    delimiter: String,
    hostname: String,
}

/// Enhanced status codes a delivery child may report.
pub fn known_dsn(code: &str) -> Option<&'static str> {
    ["2.0.0", "4.2.0", "4.2.1", "4.2.2", "4.3.0", "4.3.5", "5.1.1", "5.2.0", "5.3.0", "5.4.6"]
        .into_iter()
        .find(|c| *c == code)
}

/// The mail spool's group when it is not world-writable (Debian's 2775
/// root:mail): mailboxes and their dot-locks are created with it, as
/// Postfix does. `None`: a world-writable (sticky) spool, or unreadable.
pub fn spool_group(spool: &Path) -> Option<u32> {
    let m = std::fs::metadata(spool).ok()?;
    (m.mode() & 0o002 == 0).then_some(m.gid())
}

const NOT_YET: &str = "not delivered by this version of mta yet; the mail waits";

impl Resolver {
    /// The resolver, and a warning for the log when the aliases database
    /// cannot be used (mail is then resolved without aliases).
    pub fn new(conf: &DeliveryConf, hostname: &str) -> (Resolver, Option<String>) {
        let db = aliases::db_path(&conf.aliases);
        let (aliases, warning) = match std::fs::File::open(&db) {
            Ok(f) => match Table::read(&f, aliases::MAX_DB_SIZE) {
                Ok(t) => (Some(t), None),
                Err(e) => (None, Some(format!("{}: {e}; delivering without aliases", db.display()))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
            Err(e) => (None, Some(format!("{}: {e}; delivering without aliases", db.display()))),
        };
        let r =
            Resolver { aliases, delimiter: conf.local.recipient_delimiter.clone(), hostname: hostname.to_lowercase() };
        (r, warning)
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The destinations of `address` (a recipient in a local domain), or
    /// the outcome when there is none to deliver to.
    pub fn resolve(&self, address: &str) -> Result<Vec<Target>, Outcome> {
        let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
        if local.is_empty()
            || local.len() > 256
            || local.chars().any(|c| c.is_control() || matches!(c, '|' | '/' | '"' | '\\' | '`' | '$'))
            || local.starts_with(['.', '-'])
        {
            return Err(Outcome::bounce("5.1.3", "not a deliverable local address"));
        }
        let local = local.to_lowercase();
        let base = crate::address::without_extension(&local, &self.delimiter);
        let name = match &self.aliases {
            Some(t) if self.is_alias(t, &local)? => local.as_str(),
            _ => base,
        };
        let expanded = match &self.aliases {
            Some(t) => aliases::expand(t, name, read_include).map_err(|e| match e {
                aliases::ExpandError::Table(e) => Outcome::defer("4.3.0", &format!("aliases: {e}")),
                e => Outcome::bounce("5.3.0", &format!("aliases: {e}")),
            })?,
            None => {
                vec![aliases::Delivery { target: AliasTarget::Local(name.to_string()), alias: None, include: None }]
            }
        };
        let mut out = Vec::with_capacity(expanded.len());
        for d in expanded {
            let via_alias = d.alias.is_some();
            match d.target {
                AliasTarget::Local(user) => out.push(self.mailbox(&user, via_alias)?),
                AliasTarget::Address(a) => {
                    out.push(Target::Unsupported { what: format!("forwarding to <{a}>"), reason: NOT_YET })
                }
                AliasTarget::Command(c) => {
                    out.push(Target::Unsupported { what: format!("command \"|{c}\""), reason: NOT_YET })
                }
                AliasTarget::File(f) => {
                    out.push(Target::Unsupported { what: format!("file {}", f.display()), reason: NOT_YET })
                }
                AliasTarget::Include(p) => {
                    return Err(Outcome::defer("4.3.0", &format!(":include:{} left unexpanded", p.display())));
                }
            }
        }
        if out.is_empty() {
            return Err(Outcome::bounce("5.1.1", "the alias has no destination"));
        }
        Ok(out)
    }

    fn is_alias(&self, t: &Table, name: &str) -> Result<bool, Outcome> {
        aliases::lookup(t, name).map(|v| v.is_some()).map_err(|e| Outcome::defer("4.3.0", &format!("aliases: {e}")))
    }

    fn mailbox(&self, name: &str, via_alias: bool) -> Result<Target, Outcome> {
        let user = match nix::unistd::User::from_name(name) {
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
        // A .forward would send the mail elsewhere: until this version
        // reads it, the mail waits rather than land in the wrong place.
        let forward = user.dir.join(".forward");
        if std::fs::symlink_metadata(&forward).is_ok() {
            return Ok(Target::Unsupported { what: format!("{}", forward.display()), reason: NOT_YET });
        }
        Ok(Target::Mailbox {
            user: User { name: user.name, uid: user.uid.as_raw(), gid: user.gid.as_raw(), home: user.dir },
            via_alias,
        })
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

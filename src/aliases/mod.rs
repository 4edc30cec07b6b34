//! The aliases(5) database: the administrator's list of local names that
//! stand for other recipients (`postmaster: root`, `staff: alice, bob`,
//! `joe: joe, "|/usr/bin/vacation joe"`), compiled by `newaliases` into a
//! cdb beside the text. Master adds every alias name to smtpd's
//! local-recipient table; the local delivery agent will expand names.
//!
//! - [`parse()`] reads the text (the syntax is in `man8/aliases.5` and in
//!   the `parse` submodule) and [`parse_include`] the lists of
//!   `:include:` files, both bounded and with errors that name file and
//!   line;
//! - [`expand()`] follows a name to the mailboxes, addresses, commands and
//!   files it ends in, with loop detection and no I/O: the caller reads
//!   `:include:` files;
//! - [`compile()`] writes the cdb atomically, [`lookup`] and [`names`] read
//!   it with the bounded reader of [`crate::table::cdb`], [`stale`]
//!   says when it is older than its source, and a [`Stamp`] when it was
//!   replaced (by `newaliases`) since it was read.
//!
//! # The compiled form
//!
//! One cdb record per alias. The key is the alias name in lower case
//! (UTF-8). The value is the alias's targets in order, each written as one
//! tag byte, the target's text, and a NUL byte:
//!
//! | tag | target              | text                                  |
//! |-----|---------------------|---------------------------------------|
//! | `l` | [`Target::Local`]   | the local name, lower case            |
//! | `m` | [`Target::Mailbox`] | the user name of `\name`, lower case  |
//! | `a` | [`Target::Address`] | `local@domain` as written             |
//! | `c` | [`Target::Command`] | the command line, without its `\|`    |
//! | `f` | [`Target::File`]    | the absolute path                     |
//! | `i` | [`Target::Include`] | the absolute path of the list file    |
//!
//! So `joe: joe, "|/usr/bin/vacation joe"` is stored under `joe` as
//! `ljoe\0c/usr/bin/vacation joe\0`. No target holds a NUL byte (the
//! parser refuses every control character but tab), so the value reads
//! back exactly. A value that does not decode this way, is empty, or holds
//! a target the parser would not have produced is [`Error::Corrupt`].
//!
//! ## Formats
//!
//! The tag `m` (`\name`) came after the others, and a version from before
//! it refuses a value that holds one. No older form means the same thing:
//! `lroot` would have such a version follow an alias `root` and read
//! root's `.forward`, delivering elsewhere without a word. So
//! [`compile()`] writes the oldest format that holds the file:
//!
//! - format 1: the records above and nothing else, when no target is
//!   `\name`; every version reads it, so going back to an older version
//!   needs no `newaliases`;
//! - format 2: when a target is `\name`, a format record comes first,
//!   under [`FORMAT_KEY`] (a name the parser refuses), its value stored as
//!   the target `\2` (`m2\0`). A version from before `m` stops at this
//!   first record, refusing the start or reload with `aliases database
//!   damaged at `(aliases format of a newer mta)`: unknown target tag
//!   0x6d; run newaliases`, and defers local mail: nothing is delivered
//!   by a wrong reading. A version that knew `m` but not the record (it
//!   wrote format 2's aliases without it) takes the record for an alias
//!   nobody can address, and reads the rest correctly.
//!
//! This version reads format 1 (with or without `m`: a database written
//! by that intermediate version) and format 2. A database whose format
//! record names a later format is [`Error::Newer`], refused before any
//! alias is read, with a message that says to run `newaliases`: a later
//! version that changes the encoding must write the format record, under
//! the same key and in the same form, with a greater number.
//!
//! Trusts: the aliases file and its directory are root's, but the file is
//! still read with bounds and every line checked; `:include:` files may be
//! users' and are parsed with the same checks (the caller decides whether
//! to read them at all). A compiled database is read with the bounded cdb
//! reader and each value is checked as it is decoded.

mod db;
mod expand;
mod parse;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::PathBuf;

pub use db::{FORMAT, FORMAT_KEY, Stamp, compile, db_path, format, lookup, names, source_present, stale};
pub use expand::{Delivery, ExpandError, Lookup, expand, owner};
pub use parse::{parse, parse_include};

/// Largest aliases file read, in bytes.
pub const MAX_FILE_SIZE: u64 = 64 << 20;
/// Largest `:include:` file [`parse_include`] takes, in bytes.
pub const MAX_INCLUDE_SIZE: u64 = 4 << 20;
/// Longest entry, in bytes: an alias line joined with its continuation
/// lines (each line break counts as one byte).
pub const MAX_ENTRY: usize = 1 << 20;
/// Most aliases in one file.
pub const MAX_ALIASES: usize = 100_000;
/// Most targets of one alias, and of one `:include:` file.
pub const MAX_TARGETS: usize = 10_000;
/// Longest alias name, in bytes.
pub const MAX_NAME: usize = 256;
/// Longest single target, in bytes (a command line, a path, an address).
pub const MAX_TARGET: usize = 4096;
/// Deepest nesting [`expand()`] follows: aliases and `:include:` files
/// within one another, counted together.
pub const MAX_DEPTH: usize = 20;
/// Most targets [`expand()`] looks at for one name, in all its aliases and
/// `:include:` files together; this also bounds its result.
pub const MAX_EXPANSION: usize = 100_000;
/// Largest compiled database [`names`] and master read, in bytes.
pub const MAX_DB_SIZE: u64 = 256 << 20;

/// Where a name sends mail.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A local name, in lower case: another alias or a user's mailbox.
    Local(String),
    /// `\name`: the mailbox of the user `name` (lower case) itself, not
    /// looked up as an alias, and (from the aliases file or its
    /// `:include:` files) with no `.forward` read.
    Mailbox(String),
    /// An address with a domain, `local@domain`, as written (a quoted
    /// local part keeps its quotes).
    Address(String),
    /// `|command`: the command line that gets the message on its standard
    /// input, without the `|`.
    Command(String),
    /// `/file/name`: an absolute path the message is appended to.
    File(PathBuf),
    /// `:include:/file/name`: an absolute path to a file that lists more
    /// targets.
    Include(PathBuf),
}

/// One alias as parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alias {
    /// The name, in lower case.
    pub name: String,
    /// Its targets in the order written; never empty.
    pub targets: Vec<Target>,
    /// The line the entry starts on.
    pub line: usize,
}

/// The aliases of one file, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Aliases {
    map: BTreeMap<String, Alias>,
}

impl Aliases {
    /// The alias called `name` (in any case).
    pub fn get(&self, name: &str) -> Option<&Alias> {
        self.map.get(&name.to_lowercase())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every alias, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = &Alias> {
        self.map.values()
    }
}

/// A parsed aliases file and what was odd about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub aliases: Aliases,
    /// Things worth telling the administrator that did not stop the parse
    /// (a name defined twice: the later entry wins).
    pub warnings: Vec<Warning>,
}

/// Something odd at a line of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// What [`compile()`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Aliases written.
    pub aliases: usize,
    /// The longest value written (one alias's targets, encoded), in bytes.
    pub longest: usize,
    /// All values together, in bytes.
    pub total: usize,
    /// The format written: 1, or 2 when a target is `\\user` (see the
    /// module documentation).
    pub format: u32,
    /// The parser's warnings, for the caller to print.
    pub warnings: Vec<Warning>,
    /// An alias names root (without one, local delivers nothing for root).
    pub root: bool,
}

/// `12 aliases, longest 40 bytes`, as `newaliases` reports it.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let noun = if self.aliases == 1 { "alias" } else { "aliases" };
        write!(f, "{} {noun}, longest {} bytes", self.aliases, self.longest)?;
        if self.format >= 2 {
            // Worth knowing before going back to an older version.
            write!(f, ", format {} (\\user: an mta without \\user refuses it)", self.format)?;
        }
        Ok(())
    }
}

/// Why an aliases file or database could not be used.
#[derive(Debug)]
pub enum Error {
    /// A line that is not valid aliases syntax, or one past a bound.
    Syntax { file: PathBuf, line: usize, message: String },
    /// A file larger than its bound.
    TooLarge { path: PathBuf, size: u64, max: u64 },
    /// Reading or writing `path` failed.
    Io { path: PathBuf, error: io::Error },
    /// A compiled database whose content is not what [`compile()`] writes.
    Corrupt { key: String, reason: String },
    /// A compiled database in a format newer than [`FORMAT`]: written by
    /// a newer version's `newaliases`.
    Newer { format: u32 },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Syntax { file, line, message } => write!(f, "{}:{line}: {message}", file.display()),
            Error::TooLarge { path, size, max } => {
                write!(f, "{}: {size} bytes, larger than the limit of {max}", path.display())
            }
            Error::Io { path, error } => write!(f, "{}: {error}", path.display()),
            Error::Corrupt { key, reason } => {
                write!(f, "aliases database damaged at `{key}`: {reason}; run newaliases")
            }
            Error::Newer { format } => write!(
                f,
                "aliases database in format {format}, written by a newer mta; this one reads up to format {FORMAT}: \
                 run newaliases"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Compile the configured aliases file (`aliases` in mta.conf) into its
/// database, the same path with `.cdb` appended, mode 0644: what
/// `newaliases` and `sendmail -bi` do.
pub fn newaliases(config: &crate::config::Config) -> Result<Summary, Error> {
    compile(&config.aliases, &db_path(&config.aliases))
}

#[cfg(test)]
mod tests;

//! Following a local name through the aliases to where its mail goes: the
//! mailboxes, addresses, commands and files it ends in. No I/O: the table
//! is behind [`Lookup`] and `:include:` files are read by the caller.
//!
//! The rules, as Sendmail and Postfix have them:
//!
//! - a name that is not an alias is a mailbox, delivered as
//!   [`Target::Local`];
//! - `\name` ([`Target::Mailbox`]) is delivered as it is, never looked
//!   up as an alias;
//! - an alias that names itself (`joe: joe, other`) delivers to its own
//!   mailbox there, also from its `:include:` files;
//! - any other way back to an alias being expanded (`staff: alice,
//!   admins` with `admins: bob, staff`) is passed over, as a destination
//!   reached twice is (alice and bob get the mail, as with Sendmail and
//!   Postfix); a loop that leaves no destination at all (`a: b` with
//!   `b: a`) is an error, as is an `:include:` file that includes itself;
//! - a destination reached twice is delivered once;
//! - nesting is bounded by [`MAX_DEPTH`] and the work by [`MAX_EXPANSION`].
//!
//! Trusts: nothing in the table or in `:include:` lists; whatever they
//! hold, expansion ends within its bounds.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use super::{Aliases, Error, MAX_DEPTH, MAX_EXPANSION, MAX_TARGETS, Target};

/// Where aliases are looked up: a parsed file or a compiled database.
pub trait Lookup {
    /// The targets of the alias `name` (given in lower case), or `None`
    /// when there is no such alias.
    fn targets(&self, name: &str) -> Result<Option<Vec<Target>>, Error>;
}

impl Lookup for Aliases {
    fn targets(&self, name: &str) -> Result<Option<Vec<Target>>, Error> {
        Ok(self.get(name).map(|a| a.targets.clone()))
    }
}

impl Lookup for crate::table::cdb::Table {
    fn targets(&self, name: &str) -> Result<Option<Vec<Target>>, Error> {
        super::lookup(self, name)
    }
}

/// One destination of an expanded name, and where it came from (the local
/// delivery agent chooses the privileges of a command or file by it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Never [`Target::Include`]; a [`Target::Local`] is a mailbox (whose
    /// user's `.forward` may still send the mail elsewhere), a
    /// [`Target::Mailbox`] the mailbox itself.
    pub target: Target,
    /// The alias whose list held it; `None` for the name expanded itself
    /// when it is no alias.
    pub alias: Option<String>,
    /// The innermost `:include:` file it was listed in, if any.
    pub include: Option<PathBuf>,
}

/// Why a name could not be expanded.
#[derive(Debug)]
pub enum ExpandError {
    /// A loop: the aliases and `:include:` files from the first visit of
    /// the repeated one back to it.
    Loop(Vec<String>),
    /// Nesting deeper than [`MAX_DEPTH`]: the aliases and files entered.
    TooDeep(Vec<String>),
    /// More than [`MAX_EXPANSION`] targets looked at for `name`.
    TooLarge { name: String },
    /// The caller could not read or parse an `:include:` file.
    Include { path: PathBuf, reason: String },
    /// The table could not be read.
    Table(Error),
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandError::Loop(chain) => write!(f, "alias loop: {}", chain.join(" -> ")),
            ExpandError::TooDeep(chain) => {
                write!(f, "aliases nested more than {MAX_DEPTH} deep: {}", chain.join(" -> "))
            }
            ExpandError::TooLarge { name } => write!(f, "`{name}` expands to more than {MAX_EXPANSION} targets"),
            ExpandError::Include { path, reason } => write!(f, ":include:{}: {reason}", path.display()),
            ExpandError::Table(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ExpandError {}

/// Expand the local name `name` (in any case) to its destinations, in the
/// order first reached. `include` returns the targets listed in an
/// `:include:` file (typically by [`super::parse_include`]).
pub fn expand<L, F>(table: &L, name: &str, include: F) -> Result<Vec<Delivery>, ExpandError>
where
    L: Lookup + ?Sized,
    F: FnMut(&Path) -> Result<Vec<Target>, String>,
{
    let name = name.to_lowercase();
    let mut e = Expander {
        table,
        read: include,
        top: name.clone(),
        chain: Vec::new(),
        done: HashSet::new(),
        seen: HashSet::new(),
        out: Vec::new(),
        work: 0,
        looped: None,
    };
    e.name(&name, Context { alias: None, include: None })?;
    match e.looped {
        Some(chain) if e.out.is_empty() => Err(ExpandError::Loop(chain)),
        _ => Ok(e.out),
    }
}

/// The owner of the list `list`: the alias `owner-LIST`, if there is one.
/// Mail expanded through the list should carry it as envelope sender, so
/// that bounces go to the owner instead of to whoever wrote to the list.
pub fn owner<L: Lookup + ?Sized>(table: &L, list: &str) -> Result<Option<String>, Error> {
    let name = format!("owner-{}", list.to_lowercase());
    Ok(table.targets(&name)?.map(|_| name))
}

/// An alias or `:include:` file being expanded.
enum Node {
    Alias(String),
    Include(PathBuf),
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Alias(a) => f.write_str(a),
            Node::Include(p) => write!(f, ":include:{}", p.display()),
        }
    }
}

/// Where a target was found: the nearest alias and `:include:` file.
#[derive(Clone, Copy)]
struct Context<'c> {
    alias: Option<&'c str>,
    include: Option<&'c Path>,
}

struct Expander<'t, L: ?Sized, F> {
    table: &'t L,
    read: F,
    /// The name asked for, for errors.
    top: String,
    /// What is being expanded, outermost first.
    chain: Vec<Node>,
    /// Aliases fully expanded: their destinations are in `out` already.
    done: HashSet<String>,
    seen: HashSet<Target>,
    out: Vec<Delivery>,
    /// Targets looked at so far.
    work: usize,
    /// The first way back to an alias being expanded, passed over.
    looped: Option<Vec<String>>,
}

impl<L, F> Expander<'_, L, F>
where
    L: Lookup + ?Sized,
    F: FnMut(&Path) -> Result<Vec<Target>, String>,
{
    fn name(&mut self, name: &str, ctx: Context<'_>) -> Result<(), ExpandError> {
        if ctx.alias == Some(name) {
            self.deliver(Target::Local(name.to_string()), ctx);
            return Ok(());
        }
        if let Some(first) = self.chain.iter().position(|n| matches!(n, Node::Alias(a) if a == name)) {
            // Being expanded: its destinations are on their way already.
            if self.looped.is_none() {
                self.looped = Some(self.loop_from(first));
            }
            return Ok(());
        }
        if self.done.contains(name) {
            return Ok(());
        }
        match self.table.targets(name).map_err(ExpandError::Table)? {
            None => self.deliver(Target::Local(name.to_string()), ctx),
            Some(targets) => {
                self.enter(Node::Alias(name.to_string()))?;
                let inner = Context { alias: Some(name), include: None };
                for t in targets {
                    self.target(t, inner)?;
                }
                self.chain.pop();
                self.done.insert(name.to_string());
            }
        }
        Ok(())
    }

    fn target(&mut self, target: Target, ctx: Context<'_>) -> Result<(), ExpandError> {
        self.work += 1;
        if self.work > MAX_EXPANSION {
            return Err(ExpandError::TooLarge { name: self.top.clone() });
        }
        match target {
            Target::Local(n) => self.name(&n, ctx),
            Target::Include(p) => self.include(&p, ctx),
            other => {
                self.deliver(other, ctx);
                Ok(())
            }
        }
    }

    fn include(&mut self, path: &Path, ctx: Context<'_>) -> Result<(), ExpandError> {
        // The files open since the nearest alias: what one of them lists
        // belongs to that alias, so meeting one again is a loop.
        let open = self.chain.iter().rposition(|n| matches!(n, Node::Alias(_))).map_or(0, |i| i + 1);
        if let Some(i) = self.chain[open..].iter().position(|n| matches!(n, Node::Include(p) if p == path)) {
            return Err(ExpandError::Loop(self.loop_from(open + i)));
        }
        self.enter(Node::Include(path.to_path_buf()))?;
        let targets = (self.read)(path).map_err(|reason| ExpandError::Include { path: path.to_path_buf(), reason })?;
        if targets.len() > MAX_TARGETS {
            let reason = format!("more than {MAX_TARGETS} targets");
            return Err(ExpandError::Include { path: path.to_path_buf(), reason });
        }
        let inner = Context { alias: ctx.alias, include: Some(path) };
        for t in targets {
            self.target(t, inner)?;
        }
        self.chain.pop();
        Ok(())
    }

    fn enter(&mut self, node: Node) -> Result<(), ExpandError> {
        if self.chain.len() >= MAX_DEPTH {
            let mut names: Vec<String> = self.chain.iter().map(Node::to_string).collect();
            names.push(node.to_string());
            return Err(ExpandError::TooDeep(names));
        }
        self.chain.push(node);
        Ok(())
    }

    /// The chain from `first` on, and `first` again.
    fn loop_from(&self, first: usize) -> Vec<String> {
        let mut names: Vec<String> = self.chain[first..].iter().map(Node::to_string).collect();
        names.push(self.chain[first].to_string());
        names
    }

    fn deliver(&mut self, target: Target, ctx: Context<'_>) {
        if self.seen.insert(target.clone()) {
            let delivery =
                Delivery { target, alias: ctx.alias.map(str::to_string), include: ctx.include.map(Path::to_path_buf) };
            self.out.push(delivery);
        }
    }
}

//! The text of an aliases file and of `:include:` files.
//!
//! An aliases file is a list of entries `name: target, target, ...`.
//! A line that starts with a space or a tab continues the entry above it;
//! any other line starts a new entry. An empty (or blank) line ends the
//! entry above it, and so does a comment line that starts with `#` at its
//! first column; a comment line indented with whitespace (`   # bob left`)
//! is skipped without ending the entry. A `#` elsewhere is ordinary text.
//!
//! The name is a local name, folded to lower case; one holding whitespace,
//! `@`, `:` or another special character must be written in double quotes.
//! Targets are separated by commas; each is one of
//!
//! - `|command`: pipe the message into a command;
//! - `/file/name`: append the message to a file (an absolute path);
//! - `:include:/file/name`: the targets listed in that file;
//! - `user@domain`: forward to an address;
//! - `name`: a local name, another alias or a user's mailbox;
//! - `\\name`: the mailbox of the user `name` itself, with no further
//!   alias or `.forward` expansion (`root: \\root, admin`).
//!
//! A target in double quotes (`"|/usr/bin/vacation joe"`) may hold
//! commas and whitespace; within quotes a backslash takes the next
//! character literally. Unquoted, only a command may hold whitespace, and
//! a comma always ends a target.
//!
//! An `:include:` file lists targets, any number on a line, separated by
//! commas, with blank lines and `#` comment lines; it has no names and no
//! continuation lines. A user's `.forward` file has the same form, and is
//! read with the same function ([`parse_include`]): `\name` is written
//! the same way in all three (what it may reach in a `.forward` is the
//! local delivery agent's to decide).
//!
//! Trusts: nothing in the text; every bound in [`super`] is checked
//! before the memory it limits is used.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::{
    Alias, Aliases, Error, MAX_ALIASES, MAX_ENTRY, MAX_FILE_SIZE, MAX_INCLUDE_SIZE, MAX_NAME, MAX_TARGET, MAX_TARGETS,
    Parsed, Target, Warning,
};

/// Characters that may not appear unquoted in a local name: RFC 5322's
/// specials but the dot, and whitespace.
const NAME_SPECIALS: &str = " \t\"(),:;<>@[\\]";

/// Parse an aliases file's content; `file` names it in errors and warnings.
pub fn parse(text: &[u8], file: &Path) -> Result<Parsed, Error> {
    let text = as_text(text, file, MAX_FILE_SIZE)?;
    let mut table = Builder { file, map: BTreeMap::new(), warnings: Vec::new() };
    let mut entry: Option<Entry> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let n = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let body = line.trim_start_matches([' ', '\t']);
        let indented = body.len() != line.len();
        if body.is_empty() || (body.starts_with('#') && !indented) {
            table.add(entry.take())?;
        } else if body.starts_with('#') {
            // An indented comment: skipped, the entry goes on.
        } else if indented {
            let Some(e) = entry.as_mut() else {
                return Err(syntax(file, n, "continuation line (it starts with whitespace) with no alias before it"));
            };
            e.push(n, body, file)?;
        } else {
            table.add(entry.take())?;
            entry = Some(Entry::new(n, body, file)?);
        }
    }
    table.add(entry)?;
    Ok(Parsed { aliases: Aliases { map: table.map }, warnings: table.warnings })
}

/// Parse the content of an `:include:` file, or of a user's `.forward`,
/// into its targets, in order.
pub fn parse_include(text: &[u8], file: &Path) -> Result<Vec<Target>, Error> {
    let text = as_text(text, file, MAX_INCLUDE_SIZE)?;
    let mut targets = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let body = line.trim_start_matches([' ', '\t']);
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let list = target_list(body, MAX_TARGETS - targets.len()).map_err(|(_, m)| syntax(file, i + 1, m))?;
        targets.extend(list);
    }
    Ok(targets)
}

fn syntax(file: &Path, line: usize, message: impl Into<String>) -> Error {
    Error::Syntax { file: file.to_path_buf(), line, message: message.into() }
}

/// The content as text, within `max` bytes.
fn as_text<'a>(text: &'a [u8], file: &Path, max: u64) -> Result<&'a str, Error> {
    if text.len() as u64 > max {
        return Err(Error::TooLarge { path: file.to_path_buf(), size: text.len() as u64, max });
    }
    std::str::from_utf8(text).map_err(|e| {
        let line = text[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        syntax(file, line, "not valid UTF-8")
    })
}

/// Aliases as they are added, entry by entry.
struct Builder<'a> {
    file: &'a Path,
    map: BTreeMap<String, Alias>,
    warnings: Vec<Warning>,
}

impl Builder<'_> {
    fn add(&mut self, entry: Option<Entry>) -> Result<(), Error> {
        let Some(entry) = entry else { return Ok(()) };
        let alias = entry.alias(self.file)?;
        if let Some(old) = self.map.get(&alias.name) {
            self.warnings.push(Warning {
                file: self.file.to_path_buf(),
                line: alias.line,
                message: format!("duplicate alias `{}`: this entry replaces the one on line {}", alias.name, old.line),
            });
        } else if self.map.len() >= MAX_ALIASES {
            return Err(syntax(self.file, alias.line, format!("more than {MAX_ALIASES} aliases")));
        }
        self.map.insert(alias.name.clone(), alias);
        Ok(())
    }
}

/// One entry: its first line joined with its continuation lines.
struct Entry {
    line: usize,
    text: String,
    /// Where each physical line starts in `text`, and its number.
    starts: Vec<(usize, usize)>,
}

impl Entry {
    fn new(line: usize, body: &str, file: &Path) -> Result<Entry, Error> {
        if body.len() > MAX_ENTRY {
            return Err(syntax(file, line, format!("alias entry longer than {MAX_ENTRY} bytes")));
        }
        Ok(Entry { line, text: body.to_string(), starts: vec![(0, line)] })
    }

    /// Add a continuation line; the line break becomes one space.
    fn push(&mut self, line: usize, body: &str, file: &Path) -> Result<(), Error> {
        if self.text.len() + 1 + body.len() > MAX_ENTRY {
            return Err(syntax(file, line, format!("alias entry longer than {MAX_ENTRY} bytes")));
        }
        self.text.push(' ');
        self.starts.push((self.text.len(), line));
        self.text.push_str(body);
        Ok(())
    }

    /// The line that holds byte `offset` of the text.
    fn line_at(&self, offset: usize) -> usize {
        self.starts.iter().rev().find(|(o, _)| *o <= offset).map_or(self.line, |&(_, l)| l)
    }

    fn alias(&self, file: &Path) -> Result<Alias, Error> {
        let (name, value_at) = alias_name(&self.text).map_err(|m| syntax(file, self.line, m))?;
        let targets = target_list(&self.text[value_at..], MAX_TARGETS)
            .map_err(|(at, m)| syntax(file, self.line_at(value_at + at), format!("alias `{name}`: {m}")))?;
        if targets.is_empty() {
            return Err(syntax(file, self.line, format!("alias `{name}` has no targets")));
        }
        Ok(Alias { name, targets, line: self.line })
    }
}

/// The name of an entry, in lower case, and where the text after its
/// colon starts.
fn alias_name(text: &str) -> Result<(String, usize), String> {
    let (name, end) = if text.starts_with('"') {
        quoted_prefix(text).ok_or("unterminated quoted alias name")?
    } else {
        let colon = text.find(':').ok_or("missing ':' after alias name")?;
        let name = text[..colon].trim_end_matches([' ', '\t']);
        if let Some(c) = name.chars().find(|&c| NAME_SPECIALS.contains(c)) {
            return Err(match c {
                ' ' | '\t' => format!("alias name `{name}` holds whitespace: quote it, or add the missing ':'"),
                '@' => format!("alias name `{name}` has a domain: an alias is a local name"),
                c => format!("alias name `{name}` holds `{c}`: quote it"),
            });
        }
        (name.to_string(), name.len())
    };
    let rest = &text[end..];
    let after_space = rest.trim_start_matches([' ', '\t']);
    if !after_space.starts_with(':') {
        return Err(String::from("missing ':' after alias name"));
    }
    if name.is_empty() {
        return Err(String::from("empty alias name"));
    }
    if name.chars().any(forbidden_control) {
        return Err(String::from("control character in alias name"));
    }
    // Measured in lower case, as it is kept: some letters grow (`İ`).
    let name = name.to_lowercase();
    if name.len() > MAX_NAME {
        return Err(format!("alias name longer than {MAX_NAME} bytes"));
    }
    if name == super::FORMAT_KEY {
        return Err(format!("alias name `{name}` is reserved: the compiled database keeps its format under it"));
    }
    Ok((name, end + (rest.len() - after_space.len()) + 1))
}

/// A control character other than tab.
pub(super) fn forbidden_control(c: char) -> bool {
    c.is_control() && c != '\t'
}

/// If `text` starts with a quoted string: its content (backslash escapes
/// removed) and the index just after its closing quote.
fn quoted_prefix(text: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut escape = false;
    for (i, c) in text.char_indices().skip(1) {
        if escape {
            out.push(c);
            escape = false;
        } else if c == '\\' {
            escape = true;
        } else if c == '"' {
            return Some((out, i + 1));
        } else {
            out.push(c);
        }
    }
    None
}

/// The targets of a comma-separated list, at most `max` of them. Errors
/// carry the byte offset in `value` they concern.
fn target_list(value: &str, max: usize) -> Result<Vec<Target>, (usize, String)> {
    let mut targets = Vec::new();
    for (at, item) in split_items(value)? {
        if targets.len() >= max {
            return Err((at, format!("more than {MAX_TARGETS} targets")));
        }
        targets.push(target(item).map_err(|m| (at, m))?);
    }
    Ok(targets)
}

/// Split at commas outside quotes; items are trimmed, empty ones dropped.
fn split_items(value: &str) -> Result<Vec<(usize, &str)>, (usize, String)> {
    let mut items = Vec::new();
    let mut push = |start: usize, end: usize| {
        let piece = &value[start..end];
        let item = piece.trim_matches([' ', '\t']);
        if !item.is_empty() {
            items.push((start + (piece.len() - piece.trim_start_matches([' ', '\t']).len()), item));
        }
    };
    let mut start = 0;
    let mut quote: Option<usize> = None;
    let mut escape = false;
    for (i, c) in value.char_indices() {
        if quote.is_some() {
            if escape {
                escape = false;
            } else if c == '\\' {
                escape = true;
            } else if c == '"' {
                quote = None;
            }
        } else if c == '"' {
            quote = Some(i);
        } else if c == ',' {
            push(start, i);
            start = i + 1;
        }
    }
    if let Some(q) = quote {
        return Err((q, String::from("unterminated quoted string")));
    }
    push(start, value.len());
    Ok(items)
}

/// One target as written (trimmed, non-empty).
fn target(item: &str) -> Result<Target, String> {
    if item.len() > MAX_TARGET {
        return Err(format!("target longer than {MAX_TARGET} bytes"));
    }
    // `\name`: the mailbox itself; the name may be quoted (`\"a b"`).
    if let Some(name) = item.strip_prefix('\\') {
        return match target(name) {
            Ok(Target::Local(n)) if !n.is_empty() => Ok(Target::Mailbox(n)),
            Ok(_) | Err(_) => Err(format!("`{item}`: a backslash goes before a local name only")),
        };
    }
    let whole = match item.starts_with('"') {
        true => quoted_prefix(item).filter(|(_, end)| *end == item.len()).map(|(s, _)| s),
        false => None,
    };
    let t = match &whole {
        Some(inner) => classify(inner, true)?,
        None => classify(item, false)?,
    };
    t.validate().map_err(|m| format!("`{item}`: {m}"))?;
    Ok(t)
}

/// What kind of target `text` is; `quoted`: it was the whole of a quoted
/// string, so whitespace and special characters are its own.
fn classify(text: &str, quoted: bool) -> Result<Target, String> {
    if let Some(command) = text.strip_prefix('|') {
        return Ok(Target::Command(command.to_string()));
    }
    if text.starts_with('/') {
        plain_path(text, quoted)?;
        return Ok(Target::File(PathBuf::from(text)));
    }
    if let Some(rest) = strip_include(text) {
        let path = rest.trim_start_matches([' ', '\t']);
        plain_path(path, quoted)?;
        return Ok(Target::Include(PathBuf::from(path)));
    }
    if quoted {
        return Ok(Target::Local(text.to_lowercase()));
    }
    if text.contains('@') {
        return Ok(Target::Address(text.to_string()));
    }
    if let Some(c) = text.chars().find(|&c| NAME_SPECIALS.contains(c)) {
        return Err(match c {
            ' ' | '\t' => format!("`{text}`: whitespace inside a target: separate targets with commas, or quote one"),
            '\\' => format!("`{text}`: a backslash may only come first, before a local name (`\\name`)"),
            c => format!("`{text}`: `{c}` in a local name: quote the name if it belongs there"),
        });
    }
    Ok(Target::Local(text.to_lowercase()))
}

/// `text` without a leading `:include:` (in any case).
fn strip_include(text: &str) -> Option<&str> {
    const PREFIX: &str = ":include:";
    text.get(..PREFIX.len()).filter(|p| p.eq_ignore_ascii_case(PREFIX)).map(|_| &text[PREFIX.len()..])
}

/// An unquoted path may hold neither whitespace nor quotes.
fn plain_path(path: &str, quoted: bool) -> Result<(), String> {
    if !quoted && path.contains([' ', '\t', '"']) {
        return Err(format!("`{path}`: a path with whitespace or quotes must be quoted whole"));
    }
    Ok(())
}

impl Target {
    /// Check what every target holds, however it was made: no control
    /// character but tab, at most [`MAX_TARGET`] bytes, absolute paths, a
    /// valid address, and a local name in lower case that cannot be read
    /// as another kind of target.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Target::Local(n) | Target::Mailbox(n) => {
                if *n != n.to_lowercase() {
                    return Err(String::from("local name not in lower case"));
                }
                if n.starts_with(['|', '/']) || strip_include(n).is_some() {
                    return Err(String::from("local name that reads as another kind of target"));
                }
            }
            Target::Address(a) => {
                if a.starts_with(['|', '/']) {
                    return Err(String::from("address that reads as a command or a file"));
                }
                // As leniently as a recipient from the network.
                crate::address::parse_mailbox_lenient(a, true).map_err(|e| e.to_string())?;
            }
            Target::Command(c) => {
                if c.trim_matches([' ', '\t']).is_empty() {
                    return Err(String::from("empty command"));
                }
            }
            Target::File(p) | Target::Include(p) => {
                if !p.is_absolute() {
                    return Err(String::from("the file must be given as an absolute path"));
                }
            }
        }
        let text = self.text().ok_or("path is not UTF-8")?;
        if text.is_empty() {
            return Err(String::from("empty target"));
        }
        if text.len() > MAX_TARGET {
            return Err(format!("target longer than {MAX_TARGET} bytes"));
        }
        if text.chars().any(forbidden_control) {
            return Err(String::from("control character in target"));
        }
        Ok(())
    }

    /// The target's text as stored (without `|` or `:include:`).
    pub(super) fn text(&self) -> Option<&str> {
        match self {
            Target::Local(s) | Target::Mailbox(s) | Target::Address(s) | Target::Command(s) => Some(s),
            Target::File(p) | Target::Include(p) => p.to_str(),
        }
    }
}

/// The target in aliases syntax, quoted where needed: parsing what this
/// writes gives the same target back, for any target that passes
/// [`Target::validate`] (but an address starting with `#` at the start of
/// a line, which reads as a comment).
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, text) = match self {
            Target::Local(s) => ("", s.as_str()),
            Target::Mailbox(s) => {
                f.write_str("\\")?;
                return Target::Local(s.clone()).fmt(f);
            }
            Target::Address(s) => return f.write_str(s),
            Target::Command(s) => ("|", s.as_str()),
            Target::File(p) => ("", p.to_str().unwrap_or("?")),
            Target::Include(p) => (":include:", p.to_str().unwrap_or("?")),
        };
        let plain = match self {
            Target::Local(_) => !text.contains(|c| NAME_SPECIALS.contains(c) || c == '#') && !text.is_empty(),
            Target::Command(_) => false,
            _ => !text.contains([' ', '\t', '"', ',', '\\']),
        };
        if plain {
            return write!(f, "{prefix}{text}");
        }
        f.write_str("\"")?;
        f.write_str(prefix)?;
        for c in text.chars() {
            if c == '"' || c == '\\' {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}

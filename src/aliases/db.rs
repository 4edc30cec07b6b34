//! The compiled aliases database: written by [`compile()`] (the format is in
//! the [module documentation](super)), read by [`lookup`] and [`names`].
//!
//! Trusts: the source file only as far as the parser does; the database
//! not at all: every value is decoded with checks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::parse::forbidden_control;
use super::{Error, MAX_ALIASES, MAX_FILE_SIZE, MAX_NAME, MAX_TARGETS, Summary, Target, parse};
use crate::table::cdb::Table;

const TAG_LOCAL: u8 = b'l';
const TAG_MAILBOX: u8 = b'm';
const TAG_ADDRESS: u8 = b'a';
const TAG_COMMAND: u8 = b'c';
const TAG_FILE: u8 = b'f';
const TAG_INCLUDE: u8 = b'i';

/// The newest format this version writes and reads (see the module
/// documentation): 1, a record per alias; 2, the same with `\\user`
/// targets (tag `m`) and the format record [`FORMAT_KEY`] first.
pub const FORMAT: u32 = 2;

/// The key of the format record, written only in a database of format 2
/// or later. Its value is stored as a `\\name` target whose name is the
/// format's number (`m2\0`): an mta that knows the tag `m` but not this
/// record reads it as an alias it never looks up (the name holds spaces
/// and parentheses, which no unquoted address has, and smtpd keeps the
/// quotes of a quoted one), and one older still stops at this record,
/// the first, with `aliases database damaged at `(aliases format of a
/// newer mta)`: unknown target tag 0x6d; run newaliases`. The parser
/// refuses it as an alias name.
pub const FORMAT_KEY: &str = "(aliases format of a newer mta)";

/// The database of the aliases file `source`: its path with `.cdb`
/// appended (`/etc/mail/aliases` → `/etc/mail/aliases.cdb`).
pub fn db_path(source: &Path) -> PathBuf {
    let mut p = source.as_os_str().to_owned();
    p.push(".cdb");
    PathBuf::from(p)
}

/// Compile the aliases file `source` into a cdb at `dest`, mode 0644. The
/// database is written beside `dest` under a temporary name, synced, and
/// renamed over `dest`, and the directory is synced: a reader sees the old
/// database or the new one, never a part of either. Nothing is written if
/// the source has an error.
pub fn compile(source: &Path, dest: &Path) -> Result<Summary, Error> {
    let text = read_bounded(source, MAX_FILE_SIZE)?;
    let parsed = parse(&text, source)?;
    let mut records = Vec::with_capacity(parsed.aliases.len() + 1);
    // The oldest format that holds every target: a database without
    // `\\user` stays readable by every version.
    let format = match parsed.aliases.iter().flat_map(|a| &a.targets).any(|t| matches!(t, Target::Mailbox(_))) {
        true => 2,
        false => 1,
    };
    if format >= 2 {
        // First, so that an older reader walking the records meets it
        // before any alias it could misread.
        records.push((FORMAT_KEY.as_bytes(), format_value(format)));
    }
    let (mut longest, mut total) = (0, 0);
    for alias in parsed.aliases.iter() {
        let value = encode(&alias.targets);
        longest = longest.max(value.len());
        total += value.len();
        records.push((alias.name.as_bytes(), value));
    }
    write_atomically(dest, &records)?;
    let aliases = parsed.aliases.len();
    let root = parsed.aliases.iter().any(|a| a.name == "root");
    Ok(Summary { aliases, longest, total, format, warnings: parsed.warnings, root })
}

/// The value of the format record of `format`.
fn format_value(format: u32) -> Vec<u8> {
    encode(&[Target::Mailbox(format.to_string())])
}

/// The format of a compiled database: 1 without a format record, else
/// the record's number; a format newer than [`FORMAT`] is
/// [`Error::Newer`], a record that is no number [`Error::Corrupt`].
pub fn format(table: &Table) -> Result<u32, Error> {
    let Some(value) = table.get(FORMAT_KEY.as_bytes()) else { return Ok(1) };
    let corrupt = |reason: &str| Error::Corrupt { key: FORMAT_KEY.to_string(), reason: reason.to_string() };
    let number = value
        .strip_prefix(&[TAG_MAILBOX])
        .and_then(|v| v.strip_suffix(&[0]))
        .filter(|n| !n.is_empty() && n.len() <= 9 && n.iter().all(u8::is_ascii_digit))
        .ok_or_else(|| corrupt("the format record is not a format number"))?;
    let format: u32 = std::str::from_utf8(number).ok().and_then(|n| n.parse().ok()).unwrap_or(0);
    match format {
        0 | 1 => Err(corrupt("the format record names no format that has one")),
        f if f > FORMAT => Err(Error::Newer { format: f }),
        f => Ok(f),
    }
}

/// The targets of the alias `name` (in any case) in a compiled database,
/// or `None` if it has none (the format record is no alias). The
/// database's format is [`names`]'s to check, once.
pub fn lookup(table: &Table, name: &str) -> Result<Option<Vec<Target>>, Error> {
    let key = name.to_lowercase();
    if key == FORMAT_KEY {
        return Ok(None);
    }
    table.get(key.as_bytes()).map(|v| decode(v).map_err(|reason| Error::Corrupt { key, reason })).transpose()
}

/// Every alias name in a compiled database, each checked, with its value,
/// and found by [`lookup`] (so a database this accepts has no entry
/// [`lookup`] refuses or misses); first, its [`format`] (one newer than
/// this version reads is refused before anything else is looked at).
pub fn names(table: &Table) -> Result<Vec<String>, Error> {
    format(table)?;
    let mut out = Vec::new();
    for record in table.records() {
        let (key, value) = record.map_err(|e| Error::Corrupt { key: String::new(), reason: e.to_string() })?;
        if key == FORMAT_KEY.as_bytes() {
            // Checked by format(); found by its name, since get() found it.
            continue;
        }
        let name = String::from_utf8_lossy(key);
        let corrupt = |reason: &str| Error::Corrupt { key: name.to_string(), reason: reason.to_string() };
        if out.len() >= MAX_ALIASES {
            return Err(corrupt(&format!("more than {MAX_ALIASES} aliases")));
        }
        let name = std::str::from_utf8(key).map_err(|_| corrupt("name is not UTF-8"))?;
        if name.is_empty()
            || name.len() > MAX_NAME
            || name != name.to_lowercase()
            || name.chars().any(forbidden_control)
        {
            return Err(corrupt("not an alias name"));
        }
        decode(value).map_err(|r| corrupt(&r))?;
        // (compile writes each name once, so the lookup finds this very
        // record; one it does not find has damaged hash tables.)
        if table.get(key) != Some(value) {
            return Err(corrupt("not found by its name: the hash tables are damaged"));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

/// Whether the database `db` should be compiled again: it is missing, or
/// the source `source` was changed after it was written. A missing source
/// makes nothing stale.
pub fn stale(source: &Path, db: &Path) -> bool {
    let Ok(db_time) = fs::metadata(db).and_then(|m| m.modified()) else { return true };
    match fs::metadata(source).and_then(|m| m.modified()) {
        Ok(source_time) => source_time > db_time,
        Err(_) => false,
    }
}

/// Whether there is an aliases file at `source`: anything but "not found"
/// counts, so that a file that cannot be looked at makes mail wait rather
/// than be taken for no aliases at all. Together with a database that
/// does not exist, it means `newaliases` was never run (or the database
/// was removed): the aliases are unknown, not absent, and mail for local
/// names waits.
pub fn source_present(source: &Path) -> bool {
    !matches!(fs::metadata(source), Err(e) if e.kind() == io::ErrorKind::NotFound)
}

/// What the file at a path is, enough to tell that the path names
/// another file (`newaliases` renames a new database over the old one)
/// or that the file was rewritten: how a process holding a database
/// notices that it should read it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// Nothing there.
    Missing,
    /// It could not be looked at (the error is met again when it is
    /// opened).
    Unknown,
    File {
        dev: u64,
        ino: u64,
        size: u64,
        mtime: i64,
        mtime_nsec: i64,
    },
}

impl Stamp {
    /// The file at `path` now.
    pub fn of(path: &Path) -> Stamp {
        match fs::metadata(path) {
            Ok(m) => Stamp::of_metadata(&m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Stamp::Missing,
            Err(_) => Stamp::Unknown,
        }
    }

    /// The file `m` describes (an open file's, say).
    pub fn of_metadata(m: &fs::Metadata) -> Stamp {
        Stamp::File { dev: m.dev(), ino: m.ino(), size: m.size(), mtime: m.mtime(), mtime_nsec: m.mtime_nsec() }
    }
}

/// The stored form of a target list (see the module documentation).
pub(super) fn encode(targets: &[Target]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in targets {
        let tag = match t {
            Target::Local(_) => TAG_LOCAL,
            Target::Mailbox(_) => TAG_MAILBOX,
            Target::Address(_) => TAG_ADDRESS,
            Target::Command(_) => TAG_COMMAND,
            Target::File(_) => TAG_FILE,
            Target::Include(_) => TAG_INCLUDE,
        };
        out.push(tag);
        // Parsed targets are UTF-8 and hold no NUL (Target::validate).
        out.extend_from_slice(t.text().unwrap_or_default().as_bytes());
        out.push(0);
    }
    out
}

/// A target list from its stored form, each target checked as the parser
/// checks it.
pub(super) fn decode(value: &[u8]) -> Result<Vec<Target>, String> {
    let body = value.strip_suffix(&[0]).ok_or("value does not end with NUL")?;
    let mut targets = Vec::new();
    for record in body.split(|&b| b == 0) {
        if targets.len() >= MAX_TARGETS {
            return Err(format!("more than {MAX_TARGETS} targets"));
        }
        let (&tag, text) = record.split_first().ok_or("empty target")?;
        let text = String::from_utf8(text.to_vec()).map_err(|_| "target is not UTF-8")?;
        let t = match tag {
            TAG_LOCAL => Target::Local(text),
            TAG_MAILBOX => Target::Mailbox(text),
            TAG_ADDRESS => Target::Address(text),
            TAG_COMMAND => Target::Command(text),
            TAG_FILE => Target::File(PathBuf::from(text)),
            TAG_INCLUDE => Target::Include(PathBuf::from(text)),
            other => return Err(format!("unknown target tag 0x{other:02x}")),
        };
        t.validate()?;
        targets.push(t);
    }
    Ok(targets)
}

/// The content of `path`, refused if larger than `max` bytes.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, Error> {
    let io_err = |error| Error::Io { path: path.to_path_buf(), error };
    let file = File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    if size > max {
        return Err(Error::TooLarge { path: path.to_path_buf(), size, max });
    }
    let mut data = Vec::with_capacity(size as usize);
    file.take(max + 1).read_to_end(&mut data).map_err(io_err)?;
    if data.len() as u64 > max {
        return Err(Error::TooLarge { path: path.to_path_buf(), size: data.len() as u64, max });
    }
    Ok(data)
}

/// Write `records` as a cdb at `dest`, atomically and durably.
fn write_atomically(dest: &Path, records: &[(&[u8], Vec<u8>)]) -> Result<(), Error> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(file_name) = dest.file_name() else {
        let error = io::Error::new(io::ErrorKind::InvalidInput, "not a file name");
        return Err(Error::Io { path: dest.to_path_buf(), error });
    };
    let tmp = dir.join(format!(".{}.tmp.{}", file_name.to_string_lossy(), std::process::id()));
    let at = |path: &Path| {
        let path = path.to_path_buf();
        move |error| Error::Io { path, error }
    };
    let file = create_new(&tmp).map_err(at(&tmp))?;
    let written = write_cdb(file, records).map_err(at(&tmp)).and_then(|()| fs::rename(&tmp, dest).map_err(at(dest)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

/// Create `path` afresh (a file left there by a crashed run of the same
/// process id is replaced), mode 0644 whatever the umask.
fn create_new(path: &Path) -> io::Result<File> {
    let open = || OpenOptions::new().write(true).create_new(true).mode(0o644).open(path);
    let file = match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            open()?
        }
        other => other?,
    };
    file.set_permissions(fs::Permissions::from_mode(0o644))?;
    Ok(file)
}

fn write_cdb(file: File, records: &[(&[u8], Vec<u8>)]) -> io::Result<()> {
    let sync = file.try_clone()?;
    let mut cdb = cdb2::CDBMake::new(file)?;
    for (key, value) in records {
        cdb.add(key, value)?;
    }
    cdb.finish()?;
    sync.sync_all()
}

//! The sendmail(8) command line, as Sendmail and Postfix accept it: options
//! first (getopt style: clusters of flags, `-fuser` or `-f user`, `--` ends
//! them), then recipients. Flags that only made sense in Sendmail's own
//! design are accepted and ignored, a few with a warning; modes that belong
//! to mta(8) or that mta does not have are usage errors saying what to use.
//!
//! Trusts: nothing; any user runs sendmail with any arguments.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use crate::queue::{BodyType, Notify, Ret};

use super::headers::{self, MAX_ADDRESS};

/// Longest `-V` envelope ID (RFC 3461 section 4.4).
pub const MAX_ENVID: usize = crate::maildrop::MAX_ENVID;
/// Longest `-F` full name, in bytes.
pub const MAX_FULL_NAME: usize = crate::maildrop::MAX_FULL_NAME;

/// What the invocation asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Read a message from standard input and queue it (`-bm`, the default).
    Deliver,
    /// SMTP on standard input and output (`-bs`).
    Smtp,
    /// List the queue (`-bp`, or run as `mailq`).
    ListQueue,
    /// Rebuild the aliases database (`-bi`, `-I`, or run as `newaliases`).
    Aliases,
    /// Attempt delivery of queued mail now (`-q`, `-q<interval>`, `-qf`,
    /// `-qR<site>`, `-qI<queue id>`).
    Flush(FlushTarget),
}

/// Which queued mail `-q` asks to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlushTarget {
    /// The whole queue (`-q`).
    All,
    /// Mail for one destination (`-qRsite`).
    Site(String),
    /// One message (`-qIqueueid`).
    QueueId(String),
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub mode: Mode,
    /// `-C file`: the configuration file.
    pub config: Option<PathBuf>,
    /// `-f addr` or `-r addr`, without angle brackets or display name; the
    /// empty string is the null sender (`-f ''`, `-f '<>'`). Not yet
    /// qualified (see [`super::qualify`]).
    pub sender: Option<String>,
    /// `-F name`: no control characters, at most [`MAX_FULL_NAME`] bytes.
    pub full_name: Option<String>,
    /// `-t`: take recipients from the header too. Postfix adds them to the
    /// command-line recipients (done here); Sendmail would instead leave
    /// out the command-line ones.
    pub extract: bool,
    /// `-i`, `-oi`, `-O IgnoreDots`: a line holding only `.` does not end
    /// the message.
    pub ignore_dots: bool,
    /// `-v` (any number of times).
    pub verbose: bool,
    /// `-N never` or `-N success,failure,delay` (any of them).
    pub notify: Option<Notify>,
    /// `-R full` or `-R hdrs`.
    pub ret: Option<Ret>,
    /// `-V envid`: printable ASCII (0x21 to 0x7E), at most [`MAX_ENVID`].
    pub envid: Option<String>,
    /// `-B 7BIT` or `-B 8BITMIME`.
    pub body: Option<BodyType>,
    /// `-SMTPUTF8`.
    pub smtputf8: bool,
    /// Each argument after the options, read as an address list (so
    /// `"Joe <joe@example.org>, bob"` gives two), in order, duplicates
    /// removed; not yet qualified.
    pub recipients: Vec<String>,
    /// One line for each flag accepted but ignored that a user may care
    /// about, to print on standard error.
    pub warnings: Vec<String>,
}

/// A command line sendmail cannot carry out; `Display` is one line naming
/// the flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UsageError {
    /// A flag neither Sendmail nor Postfix knows, as given (`-x`).
    UnknownOption(String),
    /// A flag that needs a value came last.
    MissingValue(char),
    /// A flag with a value it does not take, and what it takes.
    BadValue { option: String, value: String, expected: &'static str },
    /// A flag mta knows but does not carry out, and what to do instead.
    Unsupported { option: String, instead: &'static str },
    /// Delivery mode with no recipient and no `-t`.
    NoRecipients,
    /// Recipients given in a mode that takes none.
    RecipientsNotAllowed(&'static str),
    /// `-t` outside delivery mode.
    ExtractNotDelivering,
    /// Argument `index` (counted from 1, after the program name) is not
    /// UTF-8.
    NotUtf8 { index: usize },
    /// A recipient argument that is not an address list.
    BadRecipient { value: String, reason: &'static str },
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::UnknownOption(o) => write!(f, "unknown option {o}"),
            UsageError::MissingValue(c) => write!(f, "option -{c} needs a value"),
            UsageError::BadValue { option, value, expected } => {
                write!(f, "{option}: bad value {value:?} ({expected})")
            }
            UsageError::Unsupported { option, instead } => write!(f, "{option} is not supported: {instead}"),
            UsageError::NoRecipients => f.write_str("no recipients given (and no -t)"),
            UsageError::RecipientsNotAllowed(mode) => write!(f, "{mode} takes no recipients"),
            UsageError::ExtractNotDelivering => f.write_str("-t can be used only when sending mail"),
            UsageError::NotUtf8 { index } => write!(f, "argument {index} is not valid UTF-8"),
            UsageError::BadRecipient { value, reason } => write!(f, "bad recipient {value:?}: {reason}"),
        }
    }
}

impl std::error::Error for UsageError {}

/// Short usage text, for `prog` (the name sendmail was run as).
pub fn usage(prog: &str) -> String {
    format!(
        "usage: {prog} [-tiv] [-f sender] [-F full-name] [-N never|success,failure,delay] [-R full|hdrs]\n\
         \x20      [-V envid] [-B 7BIT|8BITMIME] [-SMTPUTF8] [-C config] [--] [recipient ...]\n\
         \x20      {prog} -bp | -bs | -bi | -q | -qRsite | -qIqueueid\n\
         \x20      mailq\n\
         \x20      newaliases\n"
    )
}

/// Flags that take a value (attached, `-fuser`, or as the next argument).
const WITH_VALUE: &str = "ABCFLNORVXbefhopqr";
/// Flags that take none and may be grouped (`-ti`).
const WITHOUT_VALUE: &str = "GIUcimntvx";

/// Parse the arguments after the program name; `argv0` picks the default
/// mode by its file name (`mailq`, `newaliases`, anything else sendmail).
pub fn parse(argv0: &str, args: &[OsString]) -> Result<Invocation, UsageError> {
    let args: Vec<&str> = args
        .iter()
        .enumerate()
        .map(|(i, a)| a.to_str().ok_or(UsageError::NotUtf8 { index: i + 1 }))
        .collect::<Result<_, _>>()?;
    let mut inv = Invocation {
        mode: default_mode(argv0),
        config: None,
        sender: None,
        full_name: None,
        extract: false,
        ignore_dots: false,
        verbose: false,
        notify: None,
        ret: None,
        envid: None,
        body: None,
        smtputf8: false,
        recipients: Vec::new(),
        warnings: Vec::new(),
    };
    let mut i = 0;
    while let Some(&arg) = args.get(i) {
        i += 1;
        if arg == "--" {
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            i -= 1;
            break;
        }
        if whole_word_option(&mut inv, arg) {
            continue;
        }
        let flags = &arg[1..];
        for (at, c) in flags.char_indices() {
            if WITHOUT_VALUE.contains(c) {
                flag(&mut inv, c);
                continue;
            }
            if !WITH_VALUE.contains(c) {
                return Err(UsageError::UnknownOption(format!("-{c}")));
            }
            let attached = &flags[at + c.len_utf8()..];
            let value = if !attached.is_empty() || c == 'q' {
                // -q takes its value attached only: a bare -q flushes.
                attached
            } else {
                let next = args.get(i).ok_or(UsageError::MissingValue(c))?;
                i += 1;
                next
            };
            option(&mut inv, c, value)?;
            break;
        }
    }
    for arg in &args[i..] {
        add_recipients(&mut inv.recipients, arg)?;
    }
    check(&inv)?;
    Ok(inv)
}

fn default_mode(argv0: &str) -> Mode {
    match argv0.rsplit('/').next().unwrap_or(argv0) {
        "mailq" => Mode::ListQueue,
        "newaliases" => Mode::Aliases,
        _ => Mode::Deliver,
    }
}

/// Options that are whole words rather than getopt letters.
fn whole_word_option(inv: &mut Invocation, arg: &str) -> bool {
    if arg == "-SMTPUTF8" {
        inv.smtputf8 = true;
    } else if arg == "-XV" || (arg.starts_with("-XV") && arg.len() == 5) {
        inv.warnings.push(format!("{arg}: VERP is not supported; ignored"));
    } else {
        return false;
    }
    true
}

/// A flag without a value.
fn flag(inv: &mut Invocation, c: char) {
    match c {
        'I' => inv.mode = Mode::Aliases,
        'i' => inv.ignore_dots = true,
        't' => inv.extract = true,
        'v' => inv.verbose = true,
        'n' => inv.warnings.push("-n: aliases are always expanded; ignored".into()),
        // -G (gateway submission), -U (initial submission), -m (me too),
        // -c and -x (old Sendmail): nothing to do.
        _ => {}
    }
}

/// A flag with its value.
fn option(inv: &mut Invocation, c: char, value: &str) -> Result<(), UsageError> {
    let bad = |expected| UsageError::BadValue { option: format!("-{c}"), value: value.to_string(), expected };
    match c {
        'B' => inv.body = Some(body_type(value).ok_or_else(|| bad("7BIT or 8BITMIME"))?),
        'b' => mode_option(inv, value)?,
        'C' if value.is_empty() => return Err(bad("a file name")),
        'C' => inv.config = Some(PathBuf::from(value)),
        'F' => inv.full_name = Some(full_name(value).ok_or_else(|| bad("no control characters, 256 bytes at most"))?),
        'f' | 'r' => inv.sender = Some(sender(value).ok_or_else(|| bad("one address, or <> for the null sender"))?),
        'N' => inv.notify = Some(notify(value).ok_or_else(|| bad("never, or success,failure,delay"))?),
        'R' => inv.ret = Some(ret(value).ok_or_else(|| bad("full or hdrs"))?),
        'V' => inv.envid = Some(envid(value).ok_or_else(|| bad("printable ASCII without spaces, 100 at most"))?),
        'o' => sendmail_option(inv, value)?,
        'O' => long_option(inv, value)?,
        'q' => inv.mode = Mode::Flush(flush(inv, value)?),
        'X' => inv.warnings.push(format!("-X {value}: traffic logging is not supported; ignored")),
        // -A m|c (submission or relay configuration), -L label, -h hops,
        // -e mode, -p protocol: nothing to do.
        _ => {}
    }
    Ok(())
}

/// `-b<mode>`.
fn mode_option(inv: &mut Invocation, value: &str) -> Result<(), UsageError> {
    let unsupported = |instead| UsageError::Unsupported { option: format!("-b{value}"), instead };
    inv.mode = match value {
        "m" => Mode::Deliver,
        "s" => Mode::Smtp,
        "p" => Mode::ListQueue,
        "i" => Mode::Aliases,
        "d" | "D" | "l" => {
            return Err(unsupported("the mail daemon is mta(8); start it with the system's service manager"));
        }
        "h" | "H" => return Err(unsupported("mta keeps no host status database")),
        "v" => return Err(unsupported("mta has no address verification mode")),
        "t" => return Err(unsupported("mta has no address test mode")),
        "P" => return Err(unsupported("use mtactl status")),
        "C" => return Err(unsupported("use mta -n to check the configuration")),
        "a" => return Err(unsupported("ARPANET mode is long gone")),
        _ => return Err(UsageError::UnknownOption(format!("-b{value}"))),
    };
    Ok(())
}

/// `-o<letter><value>`: Sendmail's one-letter options. Only `i` matters.
fn sendmail_option(inv: &mut Invocation, value: &str) -> Result<(), UsageError> {
    let mut chars = value.chars();
    match chars.next() {
        None => Err(UsageError::MissingValue('o')),
        Some('i') => {
            inv.ignore_dots = boolean(chars.as_str()).ok_or_else(|| UsageError::BadValue {
                option: "-oi".into(),
                value: chars.as_str().into(),
                expected: "true or false",
            })?;
            Ok(())
        }
        Some('A') => {
            inv.warnings.push(format!("-o{value}: the aliases file is set in the configuration; ignored"));
            Ok(())
        }
        // -om, -oem, -odb, -oQ/var/spool/mqueue, -o7, -o8 and the rest.
        Some(_) => Ok(()),
    }
}

/// `-O Name=value`: Sendmail's long options. Only IgnoreDots matters.
fn long_option(inv: &mut Invocation, value: &str) -> Result<(), UsageError> {
    let (name, v) = value.split_once('=').unwrap_or((value, ""));
    if name.trim().eq_ignore_ascii_case("IgnoreDots") {
        inv.ignore_dots = boolean(v.trim()).ok_or_else(|| UsageError::BadValue {
            option: "-O IgnoreDots".into(),
            value: v.into(),
            expected: "true or false",
        })?;
    }
    Ok(())
}

/// Sendmail's booleans: empty means true.
fn boolean(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "" | "t" | "true" | "y" | "yes" => Some(true),
        "f" | "false" | "n" | "no" => Some(false),
        _ => None,
    }
}

/// `-q<value>`; the value may be empty.
fn flush(inv: &mut Invocation, value: &str) -> Result<FlushTarget, UsageError> {
    let bad = |expected| UsageError::BadValue { option: "-q".into(), value: value.to_string(), expected };
    let unsupported = |instead| UsageError::Unsupported { option: format!("-q{value}"), instead };
    if value.is_empty() || value == "f" {
        return Ok(FlushTarget::All);
    }
    if let Some(site) = value.strip_prefix('R') {
        if site.is_empty() {
            return Err(UsageError::BadValue { option: "-qR".into(), value: site.into(), expected: "a site name" });
        }
        return Ok(FlushTarget::Site(site.into()));
    }
    if let Some(id) = value.strip_prefix('I') {
        if id.is_empty() {
            return Err(UsageError::BadValue { option: "-qI".into(), value: id.into(), expected: "a queue ID" });
        }
        return Ok(FlushTarget::QueueId(id.into()));
    }
    let interval = value.strip_prefix('p').unwrap_or(value);
    if interval.is_empty() || is_interval(interval) {
        inv.warnings.push(format!("-q{value}: mta(8) schedules queue runs itself; flushing the queue once"));
        return Ok(FlushTarget::All);
    }
    match value.chars().next() {
        Some('S') => Err(unsupported("flush by site with -qR instead")),
        Some('Q' | 'L' | 'G' | '!') => Err(unsupported("mta has no quarantine, lost items or queue groups")),
        _ => Err(bad("an interval such as 30m, Rsite or Iqueueid")),
    }
}

/// Sendmail's time: digits with a unit (s, m, h, d, w, or none), repeated.
fn is_interval(v: &str) -> bool {
    let mut digits = false;
    for c in v.chars() {
        match c {
            '0'..='9' => digits = true,
            's' | 'm' | 'h' | 'd' | 'w' if digits => digits = false,
            _ => return false,
        }
    }
    v.starts_with(|c: char| c.is_ascii_digit())
}

fn body_type(v: &str) -> Option<BodyType> {
    if v.eq_ignore_ascii_case("7BIT") {
        Some(BodyType::SevenBit)
    } else if v.eq_ignore_ascii_case("8BITMIME") {
        Some(BodyType::EightBitMime)
    } else {
        None
    }
}

fn ret(v: &str) -> Option<Ret> {
    if v.eq_ignore_ascii_case("full") {
        Some(Ret::Full)
    } else if v.eq_ignore_ascii_case("hdrs") {
        Some(Ret::Headers)
    } else {
        None
    }
}

/// `never`, or a comma-separated list of `success`, `failure`, `delay`.
fn notify(v: &str) -> Option<Notify> {
    if v.trim().eq_ignore_ascii_case("never") {
        return Some(Notify::Never);
    }
    let (mut success, mut failure, mut delay) = (false, false, false);
    for word in v.split(',').map(str::trim) {
        match word.to_ascii_lowercase().as_str() {
            "success" => success = true,
            "failure" => failure = true,
            "delay" => delay = true,
            _ => return None,
        }
    }
    Some(Notify::On { success, failure, delay })
}

fn envid(v: &str) -> Option<String> {
    let ok = !v.is_empty() && v.len() <= MAX_ENVID && v.bytes().all(|b| (0x21..=0x7e).contains(&b));
    ok.then(|| v.to_string())
}

fn full_name(v: &str) -> Option<String> {
    let ok = v.len() <= MAX_FULL_NAME && !v.chars().any(char::is_control);
    ok.then(|| v.to_string())
}

/// The envelope sender: one address, bare or in angle brackets, perhaps
/// with a display name; empty or `<>` is the null sender.
fn sender(v: &str) -> Option<String> {
    let t = v.trim();
    if t.is_empty() || t == "<>" {
        return Some(String::new());
    }
    match headers::parse_address_list(t).as_deref() {
        Ok([address]) if address.len() <= MAX_ADDRESS => Some(address.clone()),
        _ => None,
    }
}

/// One recipient argument, read as an address list.
fn add_recipients(recipients: &mut Vec<String>, arg: &str) -> Result<(), UsageError> {
    let bad = |reason| UsageError::BadRecipient { value: arg.to_string(), reason };
    let list = headers::parse_address_list(arg).map_err(|e| bad(e.reason()))?;
    if list.is_empty() && !arg.contains(':') {
        return Err(bad("no address"));
    }
    for address in list {
        if address.len() > MAX_ADDRESS {
            return Err(bad("address too long"));
        }
        if !recipients.contains(&address) {
            recipients.push(address);
        }
    }
    Ok(())
}

/// Combinations that make no sense.
fn check(inv: &Invocation) -> Result<(), UsageError> {
    let name = match &inv.mode {
        Mode::Deliver => {
            if inv.recipients.is_empty() && !inv.extract {
                return Err(UsageError::NoRecipients);
            }
            return Ok(());
        }
        Mode::Smtp => "-bs",
        Mode::ListQueue => "listing the queue",
        Mode::Aliases => "rebuilding the aliases",
        Mode::Flush(_) => "flushing the queue",
    };
    if inv.extract {
        return Err(UsageError::ExtractNotDelivering);
    }
    if !inv.recipients.is_empty() {
        return Err(UsageError::RecipientsNotAllowed(name));
    }
    Ok(())
}

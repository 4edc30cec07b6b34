//! The header of a locally submitted message: where it ends, the
//! recipients `-t` takes from it, the Bcc: fields it must lose, and the
//! From:, Date: and Message-ID: fields it must gain (appended, as Postfix
//! does; [`crate::header`] decides which, as it does for cleanup). Also
//! the RFC 5322 address-list reader that `-t` and the command line share:
//! a small iterative tokenizer and parser, bounded by its input, that
//! keeps quoted local parts quoted (an envelope needs them so).
//!
//! Trusts: nothing in the message; any local user writes it. The values in
//! [`HeaderOptions`] come from the caller and are still checked for control
//! characters, so that none can add a header line.

use std::collections::HashSet;
use std::fmt;

use memchr::memchr;

/// Longest recipient address `-t` takes, in bytes (what a maildrop stream
/// holds).
pub const MAX_ADDRESS: usize = crate::maildrop::MAX_ADDRESS;
const _: () = assert!(MAX_ADDRESS == 1024);

/// What [`prepare`] needs besides the header.
#[derive(Clone, Copy, Debug)]
pub struct HeaderOptions<'a> {
    /// `-t`: collect recipients from To:, Cc:, Bcc: (or their Resent- forms).
    pub extract: bool,
    /// This host's name, to qualify bare local parts.
    pub hostname: &'a str,
    /// The envelope sender, qualified, for a missing From:; empty (or `<>`)
    /// for the null sender, which is written as `MAILER-DAEMON@hostname`.
    pub from: &'a str,
    /// The sender's full name for a missing From:.
    pub full_name: Option<&'a str>,
    /// An RFC 5322 date for a missing Date:.
    pub date: &'a str,
    /// For a missing Message-ID:, without angle brackets.
    pub message_id: &'a str,
}

/// The header, ready to queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The new header block: CRLF line ends, ending with the empty line.
    pub header: Vec<u8>,
    /// With `extract`: the recipients of the header, qualified, in order,
    /// duplicates removed (the domain compared without case).
    pub recipients: Vec<String>,
    /// With `extract`: the members of those fields that could not be read
    /// as addresses (the others are in `recipients`).
    pub unreadable: Vec<Unreadable>,
    /// The names of the fields added, in the order added.
    pub added: Vec<&'static str>,
}

/// Why a header could not be prepared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Line `line` (from 1) is neither a header field nor a continuation.
    NotHeader { line: usize },
    /// A value in [`HeaderOptions`] that holds a control character.
    BadOption { what: &'static str },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::NotHeader { line } => {
                write!(f, "header line {line} is neither a header field nor the continuation of one")
            }
            HeaderError::BadOption { what } => write!(f, "the {what} holds a control character"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Why an address list could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressError(&'static str);

impl AddressError {
    pub fn reason(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Where the header block of `msg` ends: just after the empty line that
/// ends it, or at the start of the first line that is neither a header
/// field nor a continuation (the body then starts there, with no empty
/// line between, as Postfix reads it; [`prepare`] supplies the empty
/// line). `None` while every line so far belongs to the header and it has
/// not ended: more input may follow, and at the end of input the whole of
/// `msg` is the header.
pub fn split_header(msg: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while pos < msg.len() {
        let rest = &msg[pos..];
        let Some(nl) = memchr(b'\n', rest) else {
            return match partial_line(rest) {
                Line::Other => Some(pos),
                Line::Continuation if pos == 0 => Some(0),
                _ => None,
            };
        };
        let line = strip_cr(&rest[..nl]);
        match classify(line) {
            Line::Empty => return Some(pos + nl + 1),
            Line::Continuation if pos == 0 => return Some(0),
            Line::Other => return Some(pos),
            Line::Field | Line::Continuation => pos += nl + 1,
        }
    }
    None
}

/// What a header line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    Empty,
    /// `name:` (white space allowed before the colon, RFC 5322 4.5.3).
    Field,
    /// Starts with white space.
    Continuation,
    Other,
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn classify(line: &[u8]) -> Line {
    match line.first() {
        None => Line::Empty,
        Some(b' ' | b'\t') => Line::Continuation,
        Some(_) if field_name(line).is_some() => Line::Field,
        Some(_) => Line::Other,
    }
}

/// A line whose end has not arrived: `Other` only once it cannot become
/// a field; `Field` if it can (or is not yet known).
fn partial_line(line: &[u8]) -> Line {
    let line = strip_cr(line);
    match line.first() {
        None => Line::Field,
        Some(b' ' | b'\t') => Line::Continuation,
        Some(_) => {
            let name = line.iter().take_while(|&&b| name_byte(b)).count();
            let blanks = line[name..].iter().take_while(|&&b| b == b' ' || b == b'\t').count();
            match line.get(name + blanks) {
                None if name > 0 => Line::Field,
                Some(b':') if name > 0 => Line::Field,
                _ => Line::Other,
            }
        }
    }
}

fn name_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b':'
}

/// The field name of a header field line.
fn field_name(line: &[u8]) -> Option<&[u8]> {
    let name = line.iter().take_while(|&&b| name_byte(b)).count();
    let blanks = line[name..].iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    (name > 0 && line.get(name + blanks) == Some(&b':')).then(|| &line[..name])
}

/// One header field: its name and its lines, without line ends.
struct Field<'a> {
    name: &'a [u8],
    lines: Vec<&'a [u8]>,
}

impl Field<'_> {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value, unfolded: the line ends removed, the white space kept.
    fn value(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for (i, line) in self.lines.iter().enumerate() {
            let part = match i {
                0 => line.iter().position(|&b| b == b':').map_or(&line[..0], |c| &line[c + 1..]),
                _ => line,
            };
            v.extend_from_slice(part);
        }
        v
    }
}

/// The fields of a header block, up to its empty line (whatever follows
/// that line is not looked at).
fn fields(header: &[u8]) -> Result<Vec<Field<'_>>, HeaderError> {
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut rest = header;
    let mut number = 0;
    while !rest.is_empty() {
        number += 1;
        let (line, next) = match memchr(b'\n', rest) {
            Some(nl) => (strip_cr(&rest[..nl]), &rest[nl + 1..]),
            None => (strip_cr(rest), &rest[rest.len()..]),
        };
        rest = next;
        match (classify(line), fields.last_mut()) {
            (Line::Empty, _) => break,
            (Line::Continuation, Some(field)) => field.lines.push(line),
            (Line::Field, _) => fields.push(Field { name: field_name(line).unwrap_or_default(), lines: vec![line] }),
            (Line::Continuation | Line::Other, _) => return Err(HeaderError::NotHeader { line: number }),
        }
    }
    Ok(fields)
}

/// Prepare the header block of a locally submitted message (the bytes
/// up to the offset [`split_header`] gave, or the whole message when it
/// gave none): remove Bcc: and Resent-Bcc:, with `extract` collect the
/// recipients, and append a missing From:, Date: and Message-ID: (their
/// Resent- forms when the message has Resent- fields, as Postfix does).
pub fn prepare(header: &[u8], opts: &HeaderOptions<'_>) -> Result<Prepared, HeaderError> {
    check_options(opts)?;
    let fields = fields(header)?;
    // The Resent- recipients replace To:, Cc: and Bcc: only when there
    // are some (as in Postfix): a lone Resent-From: hides nobody.
    let resent_to = fields.iter().any(|f| f.is("Resent-To") || f.is("Resent-Cc") || f.is("Resent-Bcc"));
    let (recipients, unreadable) = match opts.extract {
        true => extract(&fields, resent_to, opts.hostname),
        false => (Vec::new(), Vec::new()),
    };
    let mut out = Vec::with_capacity(header.len() + 256);
    for field in fields.iter().filter(|f| !f.is("Bcc") && !f.is("Resent-Bcc")) {
        for line in &field.lines {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    let mut seen = crate::header::Seen::default();
    fields.iter().for_each(|f| seen.note(f.name));
    let from = from_value(opts);
    let values = crate::header::Values { message_id: opts.message_id, date: opts.date, from: &from };
    let added = crate::header::append_missing(&mut out, &seen, &values);
    out.extend_from_slice(b"\r\n");
    Ok(Prepared { header: out, recipients, unreadable, added })
}

fn check_options(opts: &HeaderOptions<'_>) -> Result<(), HeaderError> {
    let values = [
        ("host name", Some(opts.hostname)),
        ("sender", Some(opts.from)),
        ("full name", opts.full_name),
        ("date", Some(opts.date)),
        ("message ID", Some(opts.message_id)),
    ];
    for (what, value) in values {
        if value.is_some_and(|v| v.chars().any(char::is_control)) {
            return Err(HeaderError::BadOption { what });
        }
    }
    Ok(())
}

/// The recipients of To:, Cc: and Bcc:, or with `resent` of their Resent-
/// forms only (as Sendmail does). Each member of a list is read on its
/// own, so that every one that cannot be read is reported in the second
/// list, each with its reason (a `;` outside a group is read as a `,`, and
/// bytes that are not UTF-8 become U+FFFD, harmless in a display name).
fn extract(fields: &[Field<'_>], resent: bool, hostname: &str) -> (Vec<String>, Vec<Unreadable>) {
    let names: [&str; 3] = match resent {
        true => ["Resent-To", "Resent-Cc", "Resent-Bcc"],
        false => ["To", "Cc", "Bcc"],
    };
    let mut seen = HashSet::new();
    let mut recipients = Vec::new();
    let mut unreadable = Vec::new();
    for field in fields.iter().filter(|f| names.iter().any(|n| f.is(n))) {
        let value = field.value();
        let text = String::from_utf8_lossy(&value);
        let bad = |text: &str, reason: &str| Unreadable {
            field: String::from_utf8_lossy(field.name).into_owned(),
            text: excerpt(text.as_bytes()),
            reason: reason.to_string(),
        };
        for member in list_members(&text) {
            let addresses = match parse_address_list(member) {
                Ok(a) => a,
                Err(e) => {
                    unreadable.push(bad(member, e.reason()));
                    continue;
                }
            };
            for address in addresses {
                let address = qualify(&address, hostname);
                if address.len() > MAX_ADDRESS {
                    unreadable.push(bad(&address, "address longer than 1024 bytes"));
                } else if address.contains('\u{fffd}') {
                    unreadable.push(bad(member, "not UTF-8"));
                } else if seen.insert(dedup_key(&address)) {
                    recipients.push(address);
                }
            }
        }
    }
    (recipients, unreadable)
}

/// The members of an address list as text, each readable on its own by
/// [`parse_address_list`]: split at the commas outside quotes, comments
/// and angle brackets, and at a `;` that closes no group (a common slip
/// for `,`). A group's members are members (its name is dropped).
fn list_members(text: &str) -> Vec<&str> {
    let mut members = Vec::new();
    let (mut start, mut depth, mut quoted, mut escaped) = (0, 0usize, false, false);
    let (mut in_angle, mut in_group, mut in_literal) = (false, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => escaped = true,
            '"' if depth == 0 => quoted = !quoted,
            _ if quoted => {}
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            '<' => in_angle = true,
            '>' => in_angle = false,
            _ if in_angle => {}
            // An address literal's colons (`[IPv6:2001:db8::1]`) start
            // no group.
            '[' => in_literal = true,
            ']' => in_literal = false,
            _ if in_literal => {}
            ':' if !in_group => {
                in_group = true;
                start = i + 1;
            }
            ',' | ';' => {
                members.push(&text[start..i]);
                start = i + 1;
                if c == ';' {
                    in_group = false;
                }
            }
            _ => {}
        }
    }
    members.push(&text[start..]);
    members.retain(|m| !m.trim().is_empty());
    members
}

/// A member of an address field `-t` could not read; sendmail then sends
/// the message to nobody.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub field: String,
    /// The member, as far as 80 characters of it.
    pub text: String,
    pub reason: String,
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: cannot read the address {:?}: {}", self.field, self.text, self.reason)
    }
}

/// At most 80 characters of a field value, for a message.
fn excerpt(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let text = text.trim();
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// The address with its domain in lower case.
fn dedup_key(address: &str) -> String {
    match domain_at(address) {
        Some(at) => format!("{}@{}", &address[..at], address[at + 1..].to_lowercase()),
        None => address.to_string(),
    }
}

/// The value of a missing From: field.
fn from_value(opts: &HeaderOptions<'_>) -> crate::header::Originator {
    let name = opts.full_name.map(str::trim).filter(|n| !n.is_empty()).map(display_name);
    crate::header::originator(opts.from, name.unwrap_or_default(), opts.hostname)
}

/// A full name as the words of an RFC 5322 display name, which the From:
/// field may be folded between: atoms when it is all atoms, a quoted
/// string (split at its spaces, where folding white space may go) when it
/// is ASCII with specials, RFC 2047 encoded words when it is not ASCII or
/// has a word too long for a header line. Runs of spaces become one.
pub fn display_name(name: &str) -> Vec<String> {
    if !name.is_ascii() {
        return encoded_words(name);
    }
    let words: Vec<&str> = name.split_ascii_whitespace().collect();
    let words: Vec<String> = match words.iter().all(|w| w.chars().all(atext)) {
        true => words.into_iter().map(String::from).collect(),
        false => quoted_words(&words),
    };
    // A word no line can hold (a space goes before it): encoded words
    // split anywhere.
    if words.iter().any(|w| 1 + w.len() > crate::header::MAX_LINE) {
        return encoded_words(name);
    }
    words
}

/// `words` as one quoted string, split where they were.
fn quoted_words(words: &[&str]) -> Vec<String> {
    let last = words.len().saturating_sub(1);
    let quote = |i: usize, w: &str| {
        let mut q = String::with_capacity(w.len() + 2);
        if i == 0 {
            q.push('"');
        }
        for c in w.chars() {
            if c == '"' || c == '\\' {
                q.push('\\');
            }
            q.push(c);
        }
        if i == last {
            q.push('"');
        }
        q
    };
    words.iter().enumerate().map(|(i, w)| quote(i, w)).collect()
}

/// RFC 2047 "Q" encoded words for a phrase, each holding whole
/// characters and short enough that `Resent-From: ` and one of them keep
/// to the 76 characters RFC 2047 allows a line with encoded words.
fn encoded_words(text: &str) -> Vec<String> {
    const PREFIX: &str = "=?utf-8?q?";
    const ROOM: usize = crate::header::FOLD_AT - "Resent-From: ".len() - PREFIX.len() - 2;
    let mut words = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        let mut piece = String::new();
        if c == ' ' {
            piece.push('_');
        } else if c.is_ascii_alphanumeric() || "!*+-/".contains(c) {
            piece.push(c);
        } else {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                piece.push_str(&format!("={b:02X}"));
            }
        }
        if word.len() + piece.len() > ROOM {
            words.push(std::mem::take(&mut word));
        }
        word.push_str(&piece);
    }
    words.push(word);
    words.iter().map(|w| format!("{PREFIX}{w}?=")).collect()
}

/// Qualify a bare local part with `hostname` (`root` becomes
/// `root@hostname`); an address with a domain, the empty address (the null
/// sender) and `<>` come back unchanged. An `@` inside a quoted local part
/// does not count as the domain's.
pub fn qualify(address: &str, hostname: &str) -> String {
    if address.is_empty() || address == "<>" || hostname.is_empty() || domain_at(address).is_some() {
        return address.to_string();
    }
    format!("{address}@{hostname}")
}

/// The index of the `@` before the domain, outside quotes.
fn domain_at(address: &str) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    let mut at = None;
    for (i, c) in address.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '@' if !quoted => at = Some(i),
            _ => {}
        }
    }
    at
}

/// atext of RFC 5322, with UTF-8 (RFC 6532).
fn atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || (!c.is_ascii() && !c.is_control())
}

/// A lexical token of an address list; comments and white space are
/// dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Atom(String),
    /// The content of a quoted string, quoted pairs resolved.
    Quoted(String),
    /// A domain literal as written, brackets included.
    Literal(String),
    /// One of `<>:;@,.`.
    Special(char),
}

fn tokens(text: &str) -> Result<Vec<Token>, AddressError> {
    use crate::address::lex::{self, Kind};
    let mut out = Vec::new();
    for t in lex::tokens(text.as_bytes()).map_err(AddressError)? {
        // (Every span starts and ends at an ASCII byte or the text's end.)
        let span = &text[t.start..t.end];
        out.push(match t.kind {
            Kind::Atom if span.chars().any(char::is_control) => return Err(AddressError("control character")),
            Kind::Atom => Token::Atom(span.to_string()),
            Kind::Quoted => Token::Quoted(unescape(&span[1..span.len() - 1], |c| matches!(c, '\r' | '\n'))),
            Kind::Literal => {
                let inner = unescape(&span[1..span.len() - 1], |c| matches!(c, ' ' | '\t' | '\r' | '\n'));
                Token::Literal(format!("[{inner}]"))
            }
            Kind::Special(b) => Token::Special(char::from(b)),
        });
    }
    Ok(out)
}

/// `text` with its quoted pairs resolved and the characters `drop` names
/// (folding) left out.
fn unescape(text: &str, drop: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c if drop(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// Read an RFC 5322 address list (display names, comments, quoted
/// strings, groups, route addresses, the obsolete forms with empty
/// members) and return its addresses as an envelope holds them: no
/// display name, no brackets, the local part quoted only when it must
/// be. A bare local part (`root`) is returned bare; groups yield their
/// members (`undisclosed-recipients:;` none), `<>` nothing.
pub fn parse_address_list(text: &str) -> Result<Vec<String>, AddressError> {
    let mut out = Vec::new();
    let mut member: Vec<Token> = Vec::new();
    let mut angle: Option<Vec<Token>> = None;
    let (mut in_angle, mut in_group) = (false, false);
    for token in tokens(text)? {
        if in_angle {
            match token {
                Token::Special('>') => in_angle = false,
                Token::Special('<') => return Err(AddressError("'<' inside <...>")),
                t => angle.get_or_insert_with(Vec::new).push(t),
            }
            continue;
        }
        match token {
            Token::Special(',') => finish(&mut out, &mut member, &mut angle)?,
            Token::Special(';') if in_group => {
                finish(&mut out, &mut member, &mut angle)?;
                in_group = false;
            }
            Token::Special(';') => return Err(AddressError("';' without a group")),
            Token::Special(':') if in_group => return Err(AddressError("group inside a group")),
            Token::Special(':') if angle.is_some() => return Err(AddressError("':' after <address>")),
            Token::Special(':') => {
                member.clear();
                in_group = true;
            }
            Token::Special('<') if angle.is_some() => return Err(AddressError("two <addresses> in one")),
            Token::Special('<') => {
                angle = Some(Vec::new());
                in_angle = true;
            }
            Token::Special('>') => return Err(AddressError("'>' without '<'")),
            _ if angle.is_some() => return Err(AddressError("text after <address>")),
            t => member.push(t),
        }
    }
    if in_angle {
        return Err(AddressError("unclosed '<'"));
    }
    finish(&mut out, &mut member, &mut angle)?;
    Ok(out)
}

/// End one member of the list: its address is what the angle brackets
/// held, or else the whole member (a bare addr-spec).
fn finish(out: &mut Vec<String>, member: &mut Vec<Token>, angle: &mut Option<Vec<Token>>) -> Result<(), AddressError> {
    let address = match angle.take() {
        Some(inner) => addr_spec(strip_route(&inner))?,
        None if member.is_empty() => None,
        None => addr_spec(member)?,
    };
    member.clear();
    out.extend(address);
    Ok(())
}

/// Drop an obsolete source route (`@a,@b:`) from inside angle brackets.
fn strip_route(inner: &[Token]) -> &[Token] {
    match inner.iter().position(|t| *t == Token::Special(':')) {
        Some(colon) if inner.first() == Some(&Token::Special('@')) => &inner[colon + 1..],
        _ => inner,
    }
}

/// `local-part [@ domain]` from tokens; `None` for `<>`.
fn addr_spec(tokens: &[Token]) -> Result<Option<String>, AddressError> {
    if tokens.is_empty() {
        return Ok(None);
    }
    let at = tokens.iter().position(|t| *t == Token::Special('@'));
    let (local, domain) = match at {
        Some(at) => (&tokens[..at], Some(&tokens[at + 1..])),
        None => (tokens, None),
    };
    let mut address = local_part(local)?;
    if let Some(domain) = domain {
        address.push('@');
        address.push_str(&domain_text(domain)?);
    }
    Ok(Some(address))
}

/// Words joined by dots (the obsolete form allows white space and quoted
/// words between them), quoted again only if the result needs it.
fn local_part(tokens: &[Token]) -> Result<String, AddressError> {
    let mut text = String::new();
    let mut quoted = false;
    let mut after_word = false;
    for token in tokens {
        match token {
            Token::Atom(w) | Token::Quoted(w) if !after_word => {
                quoted |= matches!(token, Token::Quoted(_));
                text.push_str(w);
                after_word = true;
            }
            Token::Atom(_) | Token::Quoted(_) => return Err(AddressError("display name without <address>")),
            Token::Special('.') => {
                text.push('.');
                after_word = false;
            }
            _ => return Err(AddressError("malformed local part")),
        }
    }
    if text.is_empty() {
        return Err(AddressError("missing local part"));
    }
    if !quoted || is_dot_atom(&text) {
        return Ok(text);
    }
    let mut q = String::with_capacity(text.len() + 2);
    q.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    Ok(q)
}

fn is_dot_atom(text: &str) -> bool {
    text.split('.').all(|a| !a.is_empty() && a.chars().all(atext))
}

/// Atoms joined by dots, or one domain literal.
fn domain_text(tokens: &[Token]) -> Result<String, AddressError> {
    match tokens {
        [] => Err(AddressError("missing domain")),
        [Token::Literal(l)] => Ok(l.clone()),
        _ => {
            let mut text = String::new();
            let mut want_atom = true;
            for token in tokens {
                match (token, want_atom) {
                    (Token::Atom(a), true) => text.push_str(a),
                    (Token::Special('.'), false) => text.push('.'),
                    (Token::Special('@'), _) => return Err(AddressError("two '@' in one address")),
                    _ => return Err(AddressError("malformed domain")),
                }
                want_atom = !want_atom;
            }
            if want_atom {
                return Err(AddressError("domain ends with '.'"));
            }
            Ok(text)
        }
    }
}

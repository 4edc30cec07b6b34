//! Mail addresses as SMTP carries them (RFC 5321 section 4.1.2, with
//! RFC 6531 UTF-8 when the client asked for SMTPUTF8). The parser is
//! strict and bounded: anything outside the grammar is an error with a
//! reason a client can act on.
//!
//! Header address lists (RFC 5322) are lexed by [`lex`].
//!
//! Trusts: nothing; input comes from the network.

pub mod lex;
pub mod orcpt;

use std::fmt;

/// Longest local part (RFC 5321 4.5.3.1.1).
pub const MAX_LOCAL: usize = 64;
/// Longest domain (RFC 5321 4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Longest path, brackets included (RFC 5321 4.5.3.1.3).
pub const MAX_PATH: usize = 256;

/// A mailbox: local part and domain, as written (the local part keeps its
/// quotes if it needed them).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Mailbox {
    pub local: String,
    pub domain: String,
}

impl Mailbox {
    /// Whether any part is non-ASCII (needs SMTPUTF8 to relay).
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }

    /// The domain in lower case for comparisons (address literals as written).
    /// The domain as domains are compared ([`domain_key`]).
    pub fn domain_lower(&self) -> String {
        domain_key(&self.domain).unwrap_or_else(|| self.domain.to_lowercase())
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// What a reverse-path or forward-path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    /// `<>`: the null reverse-path (bounces).
    Null,
    /// `<Postmaster>` without a domain (RCPT only).
    Postmaster,
    Mailbox(Mailbox),
}

/// Why an address was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Not enclosed in angle brackets.
    Brackets,
    TooLong,
    LocalTooLong,
    DomainTooLong,
    /// A character the grammar does not allow, and where.
    BadLocal,
    BadDomain,
    /// Non-ASCII without SMTPUTF8.
    Utf8NotAllowed,
    /// `<>` where a mailbox is required.
    NullNotAllowed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Brackets => "address must be enclosed in <>",
            Error::TooLong => "address too long",
            Error::LocalTooLong => "local part longer than 64 octets",
            Error::DomainTooLong => "domain longer than 255 octets",
            Error::BadLocal => "invalid local part",
            Error::BadDomain => "invalid domain",
            Error::Utf8NotAllowed => "non-ASCII address without SMTPUTF8",
            Error::NullNotAllowed => "null address not allowed here",
        })
    }
}

/// atext of RFC 5322 (ASCII part).
fn atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

fn utf8_ok(c: char, utf8: bool) -> bool {
    utf8 && !c.is_ascii() && !c.is_control()
}

/// A local part without its extension: what precedes the first of the
/// `delimiters` (`local.recipient_delimiter`), if it is not the first
/// character; the whole local part otherwise. `bob+lists` is `bob`.
/// A list's `owner-list` and `list-request` are never split, as with
/// Postfix's `owner_request_special` (with `-` among the delimiters, they
/// would be the list itself).
pub fn without_extension<'a>(local: &'a str, delimiters: &str) -> &'a str {
    let owner = local.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("owner-"));
    let request = local.len() > 8 && local.get(local.len() - 8..).is_some_and(|s| s.eq_ignore_ascii_case("-request"));
    if owner || request {
        return local;
    }
    match local.find(|c| delimiters.contains(c)) {
        Some(i) if i > 0 => &local[..i],
        _ => local,
    }
}

/// Whether a local part (its extension set aside) may name a local user
/// or alias: local delivery refuses the rest (a path, a quote or a shell
/// character), and smtpd refuses them at RCPT, so that no mail it took is
/// bounced for it later.
pub fn deliverable_local(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= 256
        && !local.starts_with(['.', '-'])
        && !local.chars().any(|c| c.is_control() || matches!(c, '|' | '/' | '"' | '\\' | '`' | '$'))
}

/// How strictly a local part is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strictness {
    /// RFC 5321: at most 64 octets, atoms never empty.
    Strict,
    /// What is in use though the RFC does not allow it, and harmless to
    /// carry: a local part longer than 64 octets (SRS and VERP senders),
    /// empty atoms (`taro..yamada`, `taro.`, as some Japanese mobile
    /// carriers hand out). Still no control, space or other character
    /// outside atext: nothing a command or header could be broken with.
    Lenient,
}

/// Parse `<...>` from the start of `s`; returns the path and the rest of
/// the line (the ESMTP parameters). `utf8`: the client asked for SMTPUTF8.
pub fn parse_path(s: &str, utf8: bool) -> Result<(Path, &str), Error> {
    path(s, utf8, Strictness::Strict)
}

/// [`parse_path`] for a reverse-path (MAIL FROM), whose local part is
/// checked leniently ([`parse_mailbox_lenient`]): refusing a sender
/// loses mail that Postfix takes (RFC 5321 4.5.3.1 asks to avoid limits).
pub fn parse_reverse_path(s: &str, utf8: bool) -> Result<(Path, &str), Error> {
    path(s, utf8, Strictness::Lenient)
}

/// [`parse_path`] for a forward-path (RCPT TO), as leniently as
/// [`parse_reverse_path`]: Postfix takes `taro..yamada@docomo.ne.jp` as a
/// recipient too, and a local name that is no user is refused by the
/// recipient checks all the same.
pub fn parse_forward_path(s: &str, utf8: bool) -> Result<(Path, &str), Error> {
    path(s, utf8, Strictness::Lenient)
}

fn path(s: &str, utf8: bool, strictness: Strictness) -> Result<(Path, &str), Error> {
    let s = s.strip_prefix('<').ok_or(Error::Brackets)?;
    let end = find_close(s).ok_or(Error::Brackets)?;
    let inner = &s[..end];
    let rest = &s[end + 1..];
    if inner.len() + 2 > MAX_PATH {
        return Err(Error::TooLong);
    }
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(Error::Brackets);
    }
    if inner.is_empty() {
        return Ok((Path::Null, rest));
    }
    if inner.eq_ignore_ascii_case("postmaster") {
        return Ok((Path::Postmaster, rest));
    }
    // A source route (@a,@b:) is accepted and ignored (RFC 5321 4.1.2, C.).
    let mailbox_text = match inner.strip_prefix('@') {
        Some(route) => {
            let colon = route.find(':').ok_or(Error::BadDomain)?;
            for hop in route[..colon].split(',') {
                let d = hop.strip_prefix('@').unwrap_or(hop);
                parse_domain(d, utf8)?;
            }
            &route[colon + 1..]
        }
        None => inner,
    };
    Ok((Path::Mailbox(mailbox(mailbox_text, utf8, strictness)?), rest))
}

/// The index of the `>` closing the path, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escape = false;
    for (i, c) in s.char_indices() {
        if escape {
            escape = false;
        } else if quoted && c == '\\' {
            escape = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == '>' && !quoted {
            return Some(i);
        }
    }
    None
}

/// Parse `local@domain`.
pub fn parse_mailbox(s: &str, utf8: bool) -> Result<Mailbox, Error> {
    mailbox(s, utf8, Strictness::Strict)
}

/// Parse `local@domain`, the local part checked leniently: longer than 64
/// octets, or with empty atoms (`a..b`, `a.`). For senders, and for the
/// addresses mta hands another server (whose to judge them).
pub fn parse_mailbox_lenient(s: &str, utf8: bool) -> Result<Mailbox, Error> {
    mailbox(s, utf8, Strictness::Lenient)
}

fn mailbox(s: &str, utf8: bool, strictness: Strictness) -> Result<Mailbox, Error> {
    if !utf8 && !s.is_ascii() {
        return Err(Error::Utf8NotAllowed);
    }
    let at = local_end(s)?;
    let (local, domain) = (&s[..at], &s[at + 1..]);
    if local.len() > MAX_LOCAL && strictness == Strictness::Strict {
        return Err(Error::LocalTooLong);
    }
    check_local(local, utf8, strictness)?;
    parse_domain(domain, utf8)?;
    Ok(Mailbox { local: unquoted(local, utf8).unwrap_or_else(|| local.to_string()), domain: domain.to_string() })
}

/// A domain as domains are compared: lower case, without a final dot,
/// and a non-ASCII one (IDNA U-labels, from an SMTPUTF8 client or the
/// configuration) in its ASCII form: `Bücher.example` is
/// `xn--bcher-kva.example`, one domain however it is written. None when
/// a non-ASCII domain has no ASCII form.
pub fn domain_key(domain: &str) -> Option<String> {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    if d.is_ascii() {
        return Some(d.to_ascii_lowercase());
    }
    idna::domain_to_ascii(d).ok()
}

/// The address of an address-literal domain (`[192.0.2.1]`,
/// `[IPv6:2001:db8::1]`, any case), an IPv4-mapped one as the IPv4
/// address; None for any other domain.
pub fn literal_ip(domain: &str) -> Option<std::net::IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let ip = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => std::net::IpAddr::V6(inner[5..].parse().ok()?),
        _ => std::net::IpAddr::V4(inner.parse().ok()?),
    };
    Some(ip.to_canonical())
}

/// What a local part says, as the aliases and the users are looked up by:
/// a quoted one (`"joe smith"`, kept quoted for the wire) without its
/// quotes and escapes, any other as it is.
pub fn local_text(local: &str) -> std::borrow::Cow<'_, str> {
    let Some(body) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) else {
        return std::borrow::Cow::Borrowed(local);
    };
    let mut out = String::with_capacity(body.len());
    let mut escape = false;
    for c in body.chars() {
        if !escape && c == '\\' {
            escape = true;
            continue;
        }
        escape = false;
        out.push(c);
    }
    std::borrow::Cow::Owned(out)
}

/// A quoted local part whose content is a dot-string, without its quotes
/// and escapes: `"alice"` is the mailbox `alice` (RFC 5321 4.1.2 makes
/// the two the same), so lookups and comparisons see one form.
fn unquoted(local: &str, utf8: bool) -> Option<String> {
    let std::borrow::Cow::Owned(out) = local_text(local) else { return None };
    // (A dot-string never starts with a quote: `"\"a\""` stays quoted.)
    (!out.starts_with('"') && check_local(&out, utf8, Strictness::Strict).is_ok()).then_some(out)
}

/// The index of the `@` that ends the local part.
fn local_end(s: &str) -> Result<usize, Error> {
    if s.starts_with('"') {
        let mut escape = false;
        for (i, c) in s.char_indices().skip(1) {
            if escape {
                escape = false;
            } else if c == '\\' {
                escape = true;
            } else if c == '"' {
                return match s[i + 1..].starts_with('@') {
                    true => Ok(i + 1),
                    false => Err(Error::BadLocal),
                };
            }
        }
        Err(Error::BadLocal)
    } else {
        s.rfind('@').ok_or(Error::BadDomain)
    }
}

fn check_local(local: &str, utf8: bool, strictness: Strictness) -> Result<(), Error> {
    if local.is_empty() {
        return Err(Error::BadLocal);
    }
    if let Some(q) = local.strip_prefix('"') {
        let body = q.strip_suffix('"').ok_or(Error::BadLocal)?;
        let mut escape = false;
        for c in body.chars() {
            let ok = if escape {
                (' '..='~').contains(&c)
            } else {
                c == '\\' || ((' '..='~').contains(&c) && c != '"') || utf8_ok(c, utf8)
            };
            if !ok {
                return Err(Error::BadLocal);
            }
            escape = !escape && c == '\\';
        }
        if escape {
            return Err(Error::BadLocal);
        }
        return Ok(());
    }
    // Dot-string: atoms separated by single dots.
    let empty_ok = strictness == Strictness::Lenient;
    if empty_ok && local.split('.').all(str::is_empty) {
        return Err(Error::BadLocal);
    }
    for atom in local.split('.') {
        if (atom.is_empty() && !empty_ok) || !atom.chars().all(|c| atext(c) || utf8_ok(c, utf8)) {
            return Err(Error::BadLocal);
        }
    }
    Ok(())
}

/// Check a domain or an address literal.
pub fn parse_domain(d: &str, utf8: bool) -> Result<(), Error> {
    if d.is_empty() {
        return Err(Error::BadDomain);
    }
    if d.len() > MAX_DOMAIN {
        return Err(Error::DomainTooLong);
    }
    if let Some(lit) = d.strip_prefix('[') {
        let lit = lit.strip_suffix(']').ok_or(Error::BadDomain)?;
        // The tag is case-insensitive (RFC 5321 4.1.3, RFC 5234).
        let v6 = lit.get(..5).filter(|t| t.eq_ignore_ascii_case("IPv6:")).map(|_| &lit[5..]);
        let ok = match v6 {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => lit.parse::<std::net::Ipv4Addr>().is_ok(),
        };
        return if ok { Ok(()) } else { Err(Error::BadDomain) };
    }
    for label in d.split('.') {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || utf8_ok(c, utf8);
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label.chars().all(ok_char)
        {
            return Err(Error::BadDomain);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

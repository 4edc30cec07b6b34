//! ESMTP parameters of MAIL and RCPT (RFC 1870 SIZE, RFC 6152 8BITMIME,
//! RFC 6531 SMTPUTF8, RFC 3461 DSN: RET, ENVID, NOTIFY, ORCPT), parsed and
//! validated; each error carries the reply a client should get.
//!
//! Trusts: nothing; input comes from the network.

use serde::{Deserialize, Serialize};

/// The BODY parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Body {
    #[default]
    SevenBit,
    EightBitMime,
}

/// RET: what a failure DSN carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ret {
    Full,
    Headers,
}

/// NOTIFY: when a DSN is wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

// The same parameters as the queue file stores them: smtpd's forms are what
// travels to cleanup, the queue's what a queue or maildrop file holds.

impl From<Body> for crate::queue::BodyType {
    fn from(b: Body) -> Self {
        match b {
            Body::SevenBit => crate::queue::BodyType::SevenBit,
            Body::EightBitMime => crate::queue::BodyType::EightBitMime,
        }
    }
}

impl TryFrom<crate::queue::BodyType> for Body {
    /// BINARYMIME, which smtpd does not offer.
    type Error = ();
    fn try_from(b: crate::queue::BodyType) -> Result<Body, ()> {
        match b {
            crate::queue::BodyType::SevenBit => Ok(Body::SevenBit),
            crate::queue::BodyType::EightBitMime => Ok(Body::EightBitMime),
            crate::queue::BodyType::BinaryMime => Err(()),
        }
    }
}

impl From<Ret> for crate::queue::Ret {
    fn from(r: Ret) -> Self {
        match r {
            Ret::Full => crate::queue::Ret::Full,
            Ret::Headers => crate::queue::Ret::Headers,
        }
    }
}

impl From<crate::queue::Ret> for Ret {
    fn from(r: crate::queue::Ret) -> Self {
        match r {
            crate::queue::Ret::Full => Ret::Full,
            crate::queue::Ret::Headers => Ret::Headers,
        }
    }
}

impl From<Notify> for crate::queue::Notify {
    fn from(n: Notify) -> Self {
        match n.never {
            true => crate::queue::Notify::Never,
            false => crate::queue::Notify::On { success: n.success, failure: n.failure, delay: n.delay },
        }
    }
}

impl From<crate::queue::Notify> for Notify {
    fn from(n: crate::queue::Notify) -> Self {
        match n {
            crate::queue::Notify::Never => Notify { never: true, ..Notify::default() },
            crate::queue::Notify::On { success, failure, delay } => Notify { never: false, success, failure, delay },
        }
    }
}

/// Parameters of MAIL FROM.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Body,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
}

/// Parameters of RCPT TO.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    /// ORCPT as `addr-type;address`, as the queue keeps it (see
    /// `orcpt` below).
    pub orcpt: Option<String>,
}

/// A parameter error: the reply code, enhanced code and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamError {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: String,
}

fn err(code: u16, enhanced: &'static str, text: impl Into<String>) -> ParamError {
    ParamError { code, enhanced, text: text.into() }
}

/// Longest ENVID (RFC 3461 4.4) and ORCPT value we keep.
const MAX_ENVID: usize = 100;
const MAX_ORCPT: usize = 500;
const MAX_PARAMS: usize = 16;

/// Split `KEY[=VALUE]` words; keys are case-insensitive and may appear once.
fn words(s: &str) -> Result<Vec<(String, Option<&str>)>, ParamError> {
    let mut out: Vec<(String, Option<&str>)> = Vec::new();
    for w in s.split(' ').filter(|w| !w.is_empty()) {
        if out.len() == MAX_PARAMS {
            return Err(err(555, "5.5.4", "too many parameters"));
        }
        let (k, v) = match w.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (w, None),
        };
        let valid_key = !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        // esmtp-value: printable ASCII but `=`, and (RFC 6531 3.3) UTF-8,
        // which each parameter that may have it admits only with SMTPUTF8.
        let value_char = |c: char| (('!'..='~').contains(&c) && c != '=') || (!c.is_ascii() && !c.is_control());
        if !valid_key || v.is_some_and(|v| v.is_empty() || !v.chars().all(value_char)) {
            return Err(err(501, "5.5.4", format!("malformed parameter `{}`", printable(w))));
        }
        let key = k.to_ascii_uppercase();
        if out.iter().any(|(x, _)| *x == key) {
            return Err(err(501, "5.5.4", format!("{key} given twice")));
        }
        out.push((key, v));
    }
    Ok(out)
}

/// Decode RFC 3461 xtext (`+XX` hex escapes).
pub fn xtext_decode(s: &str) -> Option<String> {
    decode(s, false)
}

/// [`xtext_decode`], and with `utf8` UTF-8 characters taken as they are
/// (an RFC 6533 `utf-8-addr-unitext` ORCPT address, in which a client
/// unaware of RFC 6533 may still have escaped bytes as xtext).
fn decode(s: &str, utf8: bool) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '+' => {
                let hex = s.get(i + 1..i + 3)?;
                if !hex.bytes().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                chars.next();
                chars.next();
            }
            '!'..='~' if c != '=' => out.push(c as u8),
            c if utf8 && !c.is_ascii() && !c.is_control() => {
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            }
            _ => return None,
        }
    }
    let text = String::from_utf8(out).ok()?;
    text.chars().all(|c| !c.is_control()).then_some(text)
}

/// The ORCPT parameter's value (`addr-type;address`) as the queue keeps it
/// ([`crate::address::orcpt`]): the type in lower case, an `rfc822` (or
/// other) address decoded from xtext, a `utf-8` one (RFC 6533 3) as
/// received, in its `utf-8-addr-xtext` form (7 bit, `\x{HEX}` escapes)
/// or, in an SMTPUTF8 transaction (`smtputf8`), its `utf-8-addr-unitext`
/// form (UTF-8 as it is).
fn orcpt(v: &str, smtputf8: bool) -> Result<String, ParamError> {
    let malformed = || err(501, "5.5.4", "malformed ORCPT");
    let (kind, addr) = v.split_once(';').ok_or_else(malformed)?;
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(malformed());
    }
    let utf8_type = crate::address::orcpt::is_utf8_type(kind);
    if !addr.is_ascii() {
        if !utf8_type {
            return Err(err(501, "5.5.4", "malformed ORCPT: only a utf-8 address (RFC 6533) may hold UTF-8"));
        }
        if !smtputf8 {
            return Err(err(
                501,
                "5.5.4",
                "malformed ORCPT: UTF-8 needs SMTPUTF8 in MAIL FROM (without it, escape it as \\x{HEX}: RFC 6533)",
            ));
        }
    }
    let decoded = decode(addr, utf8_type && smtputf8).filter(|a| !a.is_empty() && a.len() <= MAX_ORCPT);
    match decoded {
        Some(a) if !utf8_type || crate::address::orcpt::valid_utf8_addr(&a) => {
            Ok(format!("{};{a}", kind.to_ascii_lowercase()))
        }
        _ => Err(malformed()),
    }
}

/// Parse MAIL FROM parameters. `max_size` is the message size limit.
pub fn mail(s: &str, max_size: u64) -> Result<MailParams, ParamError> {
    let mut p = MailParams::default();
    for (key, value) in words(s)? {
        match (key.as_str(), value) {
            ("SIZE", Some(v)) => {
                if v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err(501, "5.5.4", "SIZE must be a decimal number"));
                }
                let n: u64 = v.parse().map_err(|_| err(552, "5.3.4", "message size exceeds fixed limit"))?;
                if n > max_size {
                    return Err(err(552, "5.3.4", "message size exceeds fixed limit"));
                }
                p.size = Some(n);
            }
            ("BODY", Some(v)) => {
                p.body = match v.to_ascii_uppercase().as_str() {
                    "7BIT" => Body::SevenBit,
                    "8BITMIME" => Body::EightBitMime,
                    _ => return Err(err(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")),
                }
            }
            ("SMTPUTF8", None) => p.smtputf8 = true,
            ("RET", Some(v)) => {
                p.ret = Some(match v.to_ascii_uppercase().as_str() {
                    "FULL" => Ret::Full,
                    "HDRS" => Ret::Headers,
                    _ => return Err(err(501, "5.5.4", "RET must be FULL or HDRS")),
                })
            }
            ("ENVID", Some(v)) => {
                let id = xtext_decode(v).filter(|d| d.len() <= MAX_ENVID && d.is_ascii());
                p.envid = Some(id.ok_or_else(|| err(501, "5.5.4", "malformed ENVID"))?);
            }
            ("SIZE" | "BODY" | "RET" | "ENVID", None) | ("SMTPUTF8", Some(_)) => {
                return Err(err(501, "5.5.4", format!("malformed {key} parameter")));
            }
            _ => return Err(err(555, "5.5.4", format!("unsupported parameter {}", printable(&key)))),
        }
    }
    Ok(p)
}

/// Parse RCPT TO parameters; `smtputf8`: the transaction's MAIL FROM
/// had SMTPUTF8 (a `utf-8` ORCPT may then hold UTF-8).
pub fn rcpt(s: &str, smtputf8: bool) -> Result<RcptParams, ParamError> {
    let mut p = RcptParams::default();
    for (key, value) in words(s)? {
        match (key.as_str(), value) {
            ("NOTIFY", Some(v)) => {
                let mut n = Notify::default();
                for item in v.split(',') {
                    match item.to_ascii_uppercase().as_str() {
                        "NEVER" => n.never = true,
                        "SUCCESS" => n.success = true,
                        "FAILURE" => n.failure = true,
                        "DELAY" => n.delay = true,
                        _ => return Err(err(501, "5.5.4", "NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY")),
                    }
                }
                if n.never && (n.success || n.failure || n.delay) {
                    return Err(err(501, "5.5.4", "NOTIFY=NEVER cannot be combined"));
                }
                p.notify = Some(n);
            }
            ("ORCPT", Some(v)) => p.orcpt = Some(orcpt(v, smtputf8)?),
            ("NOTIFY" | "ORCPT", None) => return Err(err(501, "5.5.4", format!("malformed {key} parameter"))),
            _ => return Err(err(555, "5.5.4", format!("unsupported parameter {}", printable(&key)))),
        }
    }
    Ok(p)
}

/// Make a client's text safe to echo in a reply.
pub fn printable(s: &str) -> String {
    s.chars().take(64).map(|c| if (' '..='~').contains(&c) { c } else { '?' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_bounds() {
        assert_eq!(mail("SIZE=100", 1000).unwrap().size, Some(100));
        assert_eq!(mail("SIZE=1001", 1000).unwrap_err().code, 552);
        assert_eq!(mail("SIZE=-1", 1000).unwrap_err().code, 501);
        assert_eq!(mail("SIZE=18446744073709551616", 1000).unwrap_err().code, 552);
        assert_eq!(mail("SIZE=184467440737095516160000", 1000).unwrap_err().code, 501);
        assert_eq!(mail("SIZE", 1000).unwrap_err().code, 501);
    }

    #[test]
    fn repeated_and_unknown() {
        assert_eq!(mail("BODY=8BITMIME BODY=7BIT", 10).unwrap_err().text, "BODY given twice");
        assert_eq!(mail("body=8bitmime BODY=7BIT", 10).unwrap_err().code, 501);
        assert_eq!(mail("FOO=1", 10).unwrap_err().code, 555);
        assert_eq!(mail("BODY=BINARYMIME", 10).unwrap_err().code, 501);
        assert_eq!(mail("SIZE=\"10", 10).unwrap_err().code, 501);
    }

    #[test]
    fn dsn_parameters() {
        let m = mail("RET=HDRS ENVID=QQ+2B1 SMTPUTF8 BODY=8BITMIME", 10).unwrap();
        assert_eq!(m.ret, Some(Ret::Headers));
        assert_eq!(m.envid.as_deref(), Some("QQ+1"));
        assert!(m.smtputf8);
        let r = rcpt("NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@example.org", false).unwrap();
        assert_eq!(r.notify, Some(Notify { success: true, failure: true, ..Notify::default() }));
        assert_eq!(r.orcpt.as_deref(), Some("rfc822;a+b@example.org"));
        assert!(rcpt("NOTIFY=NEVER,SUCCESS", false).is_err());
        assert!(rcpt("ORCPT=rfc822", false).is_err());
        assert!(rcpt("ORCPT=rfc822;a+0Db", false).is_err());
        assert!(mail("ENVID=a+zz", 10).is_err());
    }

    #[test]
    fn a_raw_utf8_orcpt_is_taken_only_with_smtputf8() {
        // RFC 6533 3: utf-8-addr-unitext in an SMTPUTF8 transaction, kept
        // as received; its escapes stay for the readers to resolve.
        let r = rcpt(r"ORCPT=utf-8;josé\x{2B}1@例え.jp", true).unwrap();
        assert_eq!(r.orcpt.as_deref(), Some(r"utf-8;josé\x{2B}1@例え.jp"));
        assert_eq!(rcpt("ORCPT=UTF-8;josé@x.example", true).unwrap().orcpt.as_deref(), Some("utf-8;josé@x.example"));
        // Without SMTPUTF8: refused, saying what to do instead.
        let e = rcpt("ORCPT=utf-8;josé@x.example", false).unwrap_err();
        assert_eq!((e.code, e.enhanced), (501, "5.5.4"));
        assert!(e.text.contains("SMTPUTF8"), "{}", e.text);
        // ... where the 7-bit form is taken, and so is xtext of its bytes
        // from a client unaware of RFC 6533.
        let seven = rcpt(r"ORCPT=utf-8;jos\x{E9}@x.example", false).unwrap();
        assert_eq!(seven.orcpt.as_deref(), Some(r"utf-8;jos\x{E9}@x.example"));
        assert_eq!(
            rcpt("ORCPT=utf-8;jos+C3+A9@x.example", false).unwrap().orcpt.as_deref(),
            Some("utf-8;josé@x.example")
        );
        // Only the utf-8 type may hold UTF-8, and never a control.
        let e = rcpt("ORCPT=rfc822;josé@x.example", true).unwrap_err();
        assert!(e.text.contains("utf-8"), "{}", e.text);
        for bad in [r"ORCPT=utf-8;a\b@x.example", "ORCPT=utf-8;a\u{85}@x.example", r"ORCPT=utf-8;a\x{7F}@x"] {
            assert_eq!(rcpt(bad, true).unwrap_err().code, 501, "{bad}");
        }
        // UTF-8 elsewhere is no value of any parameter.
        assert!(rcpt("NOTIFY=SUCCÈS", true).is_err());
        assert!(mail("ENVID=é", 10).is_err());
        assert!(mail("BODY=8BITMIMÉ", 10).is_err());
    }
}

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
    /// ORCPT as `addr-type;address`, decoded from xtext.
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
        if !valid_key || v.is_some_and(|v| v.is_empty() || !v.bytes().all(|b| (33..=126).contains(&b) && b != b'=')) {
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
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = s.get(i + 1..i + 3)?;
                if !hex.bytes().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c if (33..=126).contains(&c) && c != b'=' => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    let text = String::from_utf8(out).ok()?;
    text.chars().all(|c| !c.is_control()).then_some(text)
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

/// Parse RCPT TO parameters.
pub fn rcpt(s: &str) -> Result<RcptParams, ParamError> {
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
            ("ORCPT", Some(v)) => {
                let (kind, addr) = v.split_once(';').ok_or_else(|| err(501, "5.5.4", "malformed ORCPT"))?;
                let decoded = xtext_decode(addr).filter(|a| !a.is_empty() && a.len() <= MAX_ORCPT);
                let valid_kind = !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                match decoded {
                    Some(a) if valid_kind => p.orcpt = Some(format!("{};{a}", kind.to_ascii_lowercase())),
                    _ => return Err(err(501, "5.5.4", "malformed ORCPT")),
                }
            }
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
        let r = rcpt("NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@example.org").unwrap();
        assert_eq!(r.notify, Some(Notify { success: true, failure: true, ..Notify::default() }));
        assert_eq!(r.orcpt.as_deref(), Some("rfc822;a+b@example.org"));
        assert!(rcpt("NOTIFY=NEVER,SUCCESS").is_err());
        assert!(rcpt("ORCPT=rfc822").is_err());
        assert!(rcpt("ORCPT=rfc822;a+0Db").is_err());
        assert!(mail("ENVID=a+zz", 10).is_err());
    }
}

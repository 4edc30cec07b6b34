//! The command lines the client sends: MAIL FROM and RCPT TO with their
//! ESMTP parameters (SIZE, BODY, SMTPUTF8, RET, ENVID, NOTIFY, ORCPT),
//! AUTH PLAIN, and the encodings they need (xtext, RFC 6533's forms of
//! a UTF-8 address for ORCPT, base64). Every value
//! that reaches a command line is checked or encoded so that it cannot
//! carry a CR, an LF or a space into the line.
//!
//! Trusts: nothing; values come from queue files.

use crate::address::{self, MAX_PATH};
use crate::queue::{BodyType, Notify, Ret};

use super::job::{Credentials, Features, Job, JobRecipient};

/// RFC 3461 xtext: printable ASCII except `+` and `=` as is, every other
/// byte as `+XX`.
pub fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// An address of the ORCPT type `utf-8` (RFC 6533 3) as the queue keeps
/// it, with its `\x{HEX}` escapes (the 7-bit `utf-8-addr-xtext` form a
/// client sent) made characters; what is no valid escape stays as it is.
pub fn utf8_addr_decode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let escaped = rest
            .strip_prefix("\\x{")
            .and_then(|r| r.find('}').filter(|&end| end <= 6).map(|end| (&r[..end], &r[end + 1..])))
            .and_then(|(hex, after)| hexpoint(hex).map(|c| (c, after)));
        match escaped {
            Some((c, after)) => {
                out.push(c);
                rest = after;
            }
            None => {
                out.push('\\');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// RFC 6533 HEXPOINT: the code point of an `EmbeddedUnicodeChar`, in
/// the digits the grammar allows (two for the ASCII characters that
/// xtext cannot carry and for U+0080 to U+00FF, no leading zero beyond,
/// no surrogate, at most U+10FFFF).
fn hexpoint(hex: &str) -> Option<char> {
    if !(2..=6).contains(&hex.len()) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let v = u32::from_str_radix(hex, 16).ok()?;
    let ok = if hex.len() == 2 {
        matches!(v, 0x01..=0x09 | 0x10..=0x19 | 0x20 | 0x2B | 0x3D | 0x5C | 0x7F | 0x80..=0xFF)
    } else {
        !hex.starts_with('0') && (0x100..=0x10FFFF).contains(&v)
    };
    if ok { char::from_u32(v) } else { None }
}

/// RFC 6533 `utf-8-addr-xtext` (`eight_bit` false: ASCII only, for a
/// server without SMTPUTF8) or `utf-8-addr-unitext` (`eight_bit`: UTF-8
/// as it is): QCHAR as is, `\`, `+`, `=` and space as `\x{5C}`,
/// `\x{2B}`, `\x{3D}`, `\x{20}`, other characters as `\x{HEX}` in the
/// xtext form. `s` has no control character.
fn utf8_addr_encode(s: &str, eight_bit: bool) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        match c {
            '!'..='~' if !matches!(c, '\\' | '+' | '=') => out.push(c),
            _ if c.is_ascii() => out.push_str(&format!("\\x{{{:02X}}}", u32::from(c))),
            _ if eight_bit => out.push(c),
            _ => out.push_str(&format!("\\x{{{:X}}}", u32::from(c))),
        }
    }
    out
}

/// The ORCPT parameter's value for the queue's `type;address`, decoded,
/// or None when it cannot be sent (no type, no address, a control
/// character in a UTF-8 address). `smtputf8`: this transaction's MAIL
/// carries SMTPUTF8.
///
/// A `utf-8` address (RFC 6533 3) that is ASCII throughout is an
/// `rfc822` one and goes as such (xtext); one that is not goes as
/// `utf-8-addr-unitext` (UTF-8) in an SMTPUTF8 transaction and as
/// `utf-8-addr-xtext` (7 bit, `\x{HEX}`) to a server without it, never as
/// xtext of its UTF-8 bytes, which no reader would take for the address.
/// Other types go as xtext, as received.
pub fn orcpt(stored: &str, smtputf8: bool) -> Option<String> {
    let (kind, addr) = stored.split_once(';')?;
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || addr.is_empty() {
        return None;
    }
    if !kind.eq_ignore_ascii_case("utf-8") {
        return Some(format!("{kind};{}", xtext(addr)));
    }
    let addr = utf8_addr_decode(addr);
    if addr.chars().any(char::is_control) {
        None
    } else if addr.is_ascii() {
        Some(format!("rfc822;{}", xtext(&addr)))
    } else {
        Some(format!("utf-8;{}", utf8_addr_encode(&addr, smtputf8)))
    }
}

/// Base64 (RFC 4648) with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Check an envelope address before it goes into a command; returns
/// whether it needs SMTPUTF8. `postmaster` without a domain is allowed
/// for recipients (RFC 5321 4.5.1).
pub fn check_address(addr: &str, recipient: bool) -> Result<bool, address::Error> {
    if recipient && addr.eq_ignore_ascii_case("postmaster") {
        return Ok(false);
    }
    if addr.len() + 2 > MAX_PATH {
        return Err(address::Error::TooLong);
    }
    // The next server judges the local part (a long SRS sender, `a..b`).
    let mailbox = address::parse_mailbox_lenient(addr, true)?;
    Ok(mailbox.is_utf8())
}

/// The AUTH PLAIN initial response, or why the credentials cannot be sent.
pub fn auth_plain(c: &Credentials) -> Result<String, &'static str> {
    if c.username.is_empty() || c.username.contains('\0') || c.password.contains('\0') {
        return Err("a user name is required, and neither it nor the password may contain NUL");
    }
    let mut msg = Vec::with_capacity(c.username.len() + c.password.len() + 2);
    msg.push(0);
    msg.extend_from_slice(c.username.as_bytes());
    msg.push(0);
    msg.extend_from_slice(c.password.as_bytes());
    let line = format!("AUTH PLAIN {}\r\n", base64(&msg));
    // RFC 4954 4: a command line of at most 12,288 octets.
    if line.len() > 12_288 {
        return Err("user name and password are too long");
    }
    Ok(line)
}

/// MAIL FROM with the parameters the server offered and the job needs.
pub fn mail(job: &Job, features: &Features, smtputf8: bool) -> String {
    let mut line = format!("MAIL FROM:<{}>", job.sender);
    if features.size.is_some() {
        line.push_str(&format!(" SIZE={}", job.size));
    }
    if job.body == BodyType::EightBitMime && features.eightbitmime {
        line.push_str(" BODY=8BITMIME");
    }
    if smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    if features.dsn {
        match job.ret {
            Some(Ret::Full) => line.push_str(" RET=FULL"),
            Some(Ret::Headers) => line.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &job.envid {
            line.push_str(&format!(" ENVID={}", xtext(envid)));
        }
    }
    line.push_str("\r\n");
    line
}

/// RCPT TO, with NOTIFY and ORCPT when the server offered DSN;
/// `smtputf8`: the transaction's MAIL carries SMTPUTF8 (see [`orcpt`]).
pub fn rcpt(r: &JobRecipient, dsn: bool, smtputf8: bool) -> String {
    let mut line = format!("RCPT TO:<{}>", r.address);
    if dsn {
        match r.notify {
            Some(Notify::Never) => line.push_str(" NOTIFY=NEVER"),
            Some(Notify::On { success, failure, delay }) => {
                let words: Vec<&str> = [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")]
                    .into_iter()
                    .filter_map(|(on, w)| on.then_some(w))
                    .collect();
                if !words.is_empty() {
                    line.push_str(&format!(" NOTIFY={}", words.join(",")));
                }
            }
            None => {}
        }
        if let Some(value) = r.orcpt.as_deref().and_then(|o| orcpt(o, smtputf8)) {
            line.push_str(&format!(" ORCPT={value}"));
        }
    }
    line.push_str("\r\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_escapes_plus_equals_and_non_printables() {
        assert_eq!(xtext("a+b=c d\r\né"), "a+2Bb+3Dc+20d+0D+0A+C3+A9");
        assert_eq!(xtext("rfc822@example.org"), "rfc822@example.org");
    }

    #[test]
    fn a_utf8_orcpt_goes_as_utf8_addr_xtext_without_smtputf8_and_unitext_with_it() {
        // RFC 6533 3: 7 bit, `\x{HEX}` for each character beyond ASCII
        // (2, 3, 4 and 5 digits), never xtext of its UTF-8 bytes.
        let stored = "utf-8;café.δ中😀@例え.jp";
        assert_eq!(
            orcpt(stored, false).as_deref(),
            Some(r"utf-8;caf\x{E9}.\x{3B4}\x{4E2D}\x{1F600}@\x{4F8B}\x{3048}.jp")
        );
        assert_eq!(orcpt(stored, true).as_deref(), Some("utf-8;café.δ中😀@例え.jp"));
        // The xtext specials and `\` are escaped in both forms; QCHAR
        // (the rest of printable ASCII) goes as it is.
        let specials = r#"utf-8;"é a"+b=c\d!~@x.example"#;
        assert_eq!(
            orcpt(specials, false).as_deref(),
            Some(r#"utf-8;"\x{E9}\x{20}a"\x{2B}b\x{3D}c\x{5C}d!~@x.example"#)
        );
        assert_eq!(orcpt(specials, true).as_deref(), Some(r#"utf-8;"é\x{20}a"\x{2B}b\x{3D}c\x{5C}d!~@x.example"#));
        // As a client sent it in the 7-bit form (kept by smtpd as it
        // came): the same address, the same parameter.
        assert_eq!(orcpt(r"utf-8;caf\x{E9}@x.example", false).as_deref(), Some(r"utf-8;caf\x{E9}@x.example"));
        assert_eq!(orcpt(r"utf-8;caf\x{e9}@x.example", true).as_deref(), Some("utf-8;café@x.example"));
    }

    #[test]
    fn an_ascii_utf8_orcpt_goes_as_rfc822_and_other_types_as_xtext() {
        assert_eq!(orcpt("utf-8;user@example.org", false).as_deref(), Some("rfc822;user@example.org"));
        assert_eq!(orcpt("utf-8;a+b=c@example.org", true).as_deref(), Some("rfc822;a+2Bb+3Dc@example.org"));
        // `\x{2B}` is an escaped `+`: ASCII after all.
        assert_eq!(orcpt(r"UTF-8;a\x{2B}b@example.org", false).as_deref(), Some("rfc822;a+2Bb@example.org"));
        assert_eq!(orcpt("rfc822;a+b@example.org", false).as_deref(), Some("rfc822;a+2Bb@example.org"));
        // An rfc822 address with UTF-8 in it goes as it came: xtext.
        assert_eq!(orcpt("rfc822;é@example.org", false).as_deref(), Some("rfc822;+C3+A9@example.org"));
        assert_eq!(orcpt("x-local;a b", false).as_deref(), Some("x-local;a+20b"));
        for bad in ["rfc822", "rfc822;", ";a@b", "rfc 822;a@b", "utf-8;"] {
            assert_eq!(orcpt(bad, false), None, "{bad:?}");
        }
        // A control character is in no address: no ORCPT at all.
        assert_eq!(orcpt(r"utf-8;é\x{7F}@example.org", false), None);
        assert_eq!(orcpt("utf-8;é\u{85}@example.org", true), None);
    }

    #[test]
    fn only_valid_hexpoints_are_decoded() {
        // RFC 6533's HEXPOINT: two digits only for the xtext specials and
        // U+0080 to U+00FF, otherwise no leading zero, no surrogate.
        assert_eq!(utf8_addr_decode(r"\x{E9}\x{3B4}\x{10FFFF}\x{2B}"), "é\u{3B4}\u{10FFFF}+");
        for literal in [
            r"\x{41}",
            r"\x{0E9}",
            r"\x{00E9}",
            r"\x{D800}",
            r"\x{110000}",
            r"\x{E}",
            r"\x{}",
            r"\x{ZZ}",
            r"\xE9",
            r"\x{E9",
        ] {
            assert_eq!(utf8_addr_decode(literal), literal, "{literal}");
        }
        // A lone backslash stays; one before a valid escape too.
        assert_eq!(utf8_addr_decode(r"a\b\\x{E9}c"), r"a\b\éc");
    }

    proptest::proptest! {
        #[test]
        fn utf8_addr_xtext_is_7_bit_xtext_and_decodes_back(s in "\\PC{1,40}") {
            let x = utf8_addr_encode(&s, false);
            proptest::prop_assert!(x.bytes().all(|b| (33..=126).contains(&b) && b != b'+' && b != b'='), "{}", x);
            proptest::prop_assert_eq!(utf8_addr_decode(&x), s.clone());
            let u = utf8_addr_encode(&s, true);
            proptest::prop_assert!(!u.contains([' ', '+', '=']));
            proptest::prop_assert_eq!(utf8_addr_decode(&u), s);
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, enc) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
        {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
        assert_eq!(base64(b"\0user\0pass"), "AHVzZXIAcGFzcw==");
    }

    #[test]
    fn addresses_that_could_break_a_command_are_refused() {
        assert_eq!(check_address("user@example.org", false), Ok(false));
        assert_eq!(check_address("üser@example.org", true), Ok(true));
        assert_eq!(check_address("Postmaster", true), Ok(false));
        assert!(check_address("Postmaster", false).is_err());
        for bad in ["a@b> SIZE=1", "a@b\r\nRSET", "a b@c", "<a@b>", "a@b@c", ""] {
            assert!(check_address(bad, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn auth_plain_refuses_nul_and_encodes() {
        let c = |u: &str, p: &str| Credentials { username: u.into(), password: p.into() };
        assert_eq!(auth_plain(&c("user", "pass")).unwrap(), "AUTH PLAIN AHVzZXIAcGFzcw==\r\n");
        assert!(auth_plain(&c("us\0er", "pass")).is_err());
        assert!(auth_plain(&c("", "pass")).is_err());
        assert!(auth_plain(&c("user", &"x".repeat(10_000))).is_err());
    }
}

//! The ORCPT parameter's address (RFC 3461 4.2) in each form mta meets
//! it: as smtpd receives it, as the queue keeps it, as the smtp client
//! sends it on and as a delivery status notification reports it; and
//! RFC 3461 xtext, which ORCPT and ENVID travel in.
//!
//! The queue keeps ORCPT as `type;address` ([`crate::queue::Recipient`]).
//! An `rfc822` (or any other type's) address is kept decoded from xtext.
//! A `utf-8` address (RFC 6533 3) is kept as received, in the
//! `utf-8-addr-unitext` form: UTF-8 as it is, and the `\x{HEX}` escapes
//! of `utf-8-addr-xtext` left in (`utf-8;caf\x{E9}@x.example` and
//! `utf-8;café@x.example` are one address); [`decode_utf8_addr`] makes
//! it characters, [`encode_utf8_addr`] the 7-bit or the 8-bit form again.
//!
//! Trusts: nothing; values come from the network and from queue files.

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

/// Whether an ORCPT's address type is RFC 6533's `utf-8`.
pub fn is_utf8_type(kind: &str) -> bool {
    kind.eq_ignore_ascii_case("utf-8")
}

/// An address of the ORCPT type `utf-8` as the queue keeps it, with its
/// `\x{HEX}` escapes (the 7-bit `utf-8-addr-xtext` form a client sent)
/// made characters; what is no valid escape stays as it is.
pub fn decode_utf8_addr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match escape(rest) {
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

/// The character of an RFC 6533 `EmbeddedUnicodeChar` (`\x{HEXPOINT}`)
/// at the start of `s`, and what follows it.
fn escape(s: &str) -> Option<(char, &str)> {
    let r = s.strip_prefix("\\x{")?;
    let end = r.find('}').filter(|&end| end <= 6)?;
    hexpoint(&r[..end]).map(|c| (c, &r[end + 1..]))
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

/// Whether `s` is a `utf-8` ORCPT address smtpd may keep: not empty,
/// every `\` the start of a valid `\x{HEXPOINT}` (RFC 6533 3: a
/// backslash is no QCHAR), and no control character once the escapes
/// are made characters (it could be carried nowhere).
pub fn valid_utf8_addr(s: &str) -> bool {
    let mut rest = s;
    while let Some(at) = rest.find('\\') {
        match escape(&rest[at..]) {
            Some((_, after)) => rest = after,
            None => return false,
        }
    }
    !s.is_empty() && !decode_utf8_addr(s).chars().any(char::is_control)
}

/// RFC 6533 `utf-8-addr-xtext` (`eight_bit` false: ASCII only, for a
/// server without SMTPUTF8 or a report without the RFC 6533 types) or
/// `utf-8-addr-unitext` (`eight_bit`: UTF-8 as it is): QCHAR as is, `\`,
/// `+`, `=` and space as `\x{5C}`, `\x{2B}`, `\x{3D}`, `\x{20}`, other
/// characters as `\x{HEX}` in the xtext form. `s` has no control
/// character.
pub fn encode_utf8_addr(s: &str, eight_bit: bool) -> String {
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

/// The ORCPT parameter's value for the queue's `type;address`, encoded,
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
pub fn to_send(stored: &str, smtputf8: bool) -> Option<String> {
    let (kind, addr) = stored.split_once(';')?;
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || addr.is_empty() {
        return None;
    }
    if !is_utf8_type(kind) {
        return Some(format!("{kind};{}", xtext(addr)));
    }
    let addr = decode_utf8_addr(addr);
    if addr.chars().any(char::is_control) {
        None
    } else if addr.is_ascii() {
        Some(format!("rfc822;{}", xtext(&addr)))
    } else {
        Some(format!("utf-8;{}", encode_utf8_addr(&addr, smtputf8)))
    }
}

/// The address type and address a delivery status notification gives as
/// Original-Recipient (RFC 3464 2.3.1) for the queue's `type;address` (a
/// value without `;` is an `rfc822` address). `global`: the report uses
/// the RFC 6533 types (`message/global-delivery-status`).
///
/// A `utf-8` address is reported as RFC 6533 3 asks: in its
/// `utf-8-address` form (characters, no escapes) in a global report, in
/// its 7-bit `utf-8-addr-xtext` form in any other; one that is ASCII
/// throughout as an `rfc822` address. Other types as kept. The caller
/// still cleans what it writes.
pub fn to_report(stored: &str, global: bool) -> (String, String) {
    let (kind, addr) = stored.split_once(';').unwrap_or(("rfc822", stored));
    if !is_utf8_type(kind) {
        return (kind.to_string(), addr.to_string());
    }
    let decoded = decode_utf8_addr(addr);
    if decoded.is_ascii() {
        (String::from("rfc822"), decoded)
    } else if global {
        (String::from("utf-8"), decoded)
    } else {
        (String::from("utf-8"), encode_utf8_addr(&decoded, false))
    }
}

/// The ORCPT, as the queue keeps it, that names `address` (an envelope
/// recipient, which carried none): `rfc822;address`, or `utf-8;...` for a
/// UTF-8 one. None when it would be longer than the queue keeps
/// ([`crate::queue::MAX_ADDRESS`]) or `address` holds a control
/// character.
pub fn for_address(address: &str) -> Option<String> {
    if address.is_empty() || address.chars().any(char::is_control) {
        return None;
    }
    let value = match address.is_ascii() {
        true => format!("rfc822;{address}"),
        false => format!("utf-8;{}", encode_utf8_addr(address, true)),
    };
    (value.len() <= crate::queue::MAX_ADDRESS).then_some(value)
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
            to_send(stored, false).as_deref(),
            Some(r"utf-8;caf\x{E9}.\x{3B4}\x{4E2D}\x{1F600}@\x{4F8B}\x{3048}.jp")
        );
        assert_eq!(to_send(stored, true).as_deref(), Some("utf-8;café.δ中😀@例え.jp"));
        // The xtext specials and `\` are escaped in both forms; QCHAR
        // (the rest of printable ASCII) goes as it is.
        let specials = r#"utf-8;"é a"+b=c\d!~@x.example"#;
        assert_eq!(
            to_send(specials, false).as_deref(),
            Some(r#"utf-8;"\x{E9}\x{20}a"\x{2B}b\x{3D}c\x{5C}d!~@x.example"#)
        );
        assert_eq!(to_send(specials, true).as_deref(), Some(r#"utf-8;"é\x{20}a"\x{2B}b\x{3D}c\x{5C}d!~@x.example"#));
        // As a client sent it in the 7-bit form (kept by smtpd as it
        // came): the same address, the same parameter.
        assert_eq!(to_send(r"utf-8;caf\x{E9}@x.example", false).as_deref(), Some(r"utf-8;caf\x{E9}@x.example"));
        assert_eq!(to_send(r"utf-8;caf\x{e9}@x.example", true).as_deref(), Some("utf-8;café@x.example"));
        // The unitext form smtpd keeps from an SMTPUTF8 client: 7 bit
        // again for a server without SMTPUTF8.
        assert_eq!(
            to_send(r"utf-8;josé\x{2B}1@x.example", false).as_deref(),
            Some(r"utf-8;jos\x{E9}\x{2B}1@x.example")
        );
    }

    #[test]
    fn an_ascii_utf8_orcpt_goes_as_rfc822_and_other_types_as_xtext() {
        assert_eq!(to_send("utf-8;user@example.org", false).as_deref(), Some("rfc822;user@example.org"));
        assert_eq!(to_send("utf-8;a+b=c@example.org", true).as_deref(), Some("rfc822;a+2Bb+3Dc@example.org"));
        // `\x{2B}` is an escaped `+`: ASCII after all.
        assert_eq!(to_send(r"UTF-8;a\x{2B}b@example.org", false).as_deref(), Some("rfc822;a+2Bb@example.org"));
        assert_eq!(to_send("rfc822;a+b@example.org", false).as_deref(), Some("rfc822;a+2Bb@example.org"));
        // An rfc822 address with UTF-8 in it goes as it came: xtext.
        assert_eq!(to_send("rfc822;é@example.org", false).as_deref(), Some("rfc822;+C3+A9@example.org"));
        assert_eq!(to_send("x-local;a b", false).as_deref(), Some("x-local;a+20b"));
        for bad in ["rfc822", "rfc822;", ";a@b", "rfc 822;a@b", "utf-8;"] {
            assert_eq!(to_send(bad, false), None, "{bad:?}");
        }
        // A control character is in no address: no ORCPT at all.
        assert_eq!(to_send(r"utf-8;é\x{7F}@example.org", false), None);
        assert_eq!(to_send("utf-8;é\u{85}@example.org", true), None);
    }

    #[test]
    fn only_valid_hexpoints_are_decoded() {
        // RFC 6533's HEXPOINT: two digits only for the xtext specials and
        // U+0080 to U+00FF, otherwise no leading zero, no surrogate.
        assert_eq!(decode_utf8_addr(r"\x{E9}\x{3B4}\x{10FFFF}\x{2B}"), "é\u{3B4}\u{10FFFF}+");
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
            assert_eq!(decode_utf8_addr(literal), literal, "{literal}");
            assert!(!valid_utf8_addr(&format!("a{literal}@x.example")), "{literal}");
        }
        // A lone backslash stays; one before a valid escape too.
        assert_eq!(decode_utf8_addr(r"a\b\\x{E9}c"), r"a\b\éc");
    }

    #[test]
    fn smtpd_keeps_utf8_addresses_with_valid_escapes_and_no_controls() {
        for good in [r"caf\x{E9}@x.example", "café@x.example", r"josé\x{2B}1@例え.jp", "a+b@x.example"] {
            assert!(valid_utf8_addr(good), "{good}");
        }
        for bad in ["", r"a\b@x.example", r"a\@x.example", r"a\x{7F}@x.example", "a\u{85}@x.example", r"a\x{9}b@x"] {
            assert!(!valid_utf8_addr(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_report_gives_utf8_addresses_as_rfc6533_asks() {
        // A global report: the address itself; any other: 7 bit.
        assert_eq!(to_report(r"utf-8;caf\x{E9}@x.example", true), ("utf-8".into(), "café@x.example".into()));
        assert_eq!(to_report("utf-8;café@x.example", true), ("utf-8".into(), "café@x.example".into()));
        assert_eq!(to_report("utf-8;café@x.example", false), ("utf-8".into(), r"caf\x{E9}@x.example".into()));
        assert_eq!(to_report(r"UTF-8;a\x{2B}b@x.example", false), ("rfc822".into(), "a+b@x.example".into()));
        assert_eq!(to_report("rfc822;a+b@x.example", true), ("rfc822".into(), "a+b@x.example".into()));
        assert_eq!(to_report("x.example", false), ("rfc822".into(), "x.example".into()));
    }

    #[test]
    fn an_orcpt_made_for_an_address() {
        assert_eq!(for_address("fwd@localhost").as_deref(), Some("rfc822;fwd@localhost"));
        assert_eq!(for_address("josé+x@例え.jp").as_deref(), Some(r"utf-8;josé\x{2B}x@例え.jp"));
        assert_eq!(decode_utf8_addr(&for_address("josé+x@例え.jp").unwrap()[6..]), "josé+x@例え.jp");
        assert_eq!(for_address(""), None);
        assert_eq!(for_address("a\r\n@b"), None);
        assert_eq!(for_address(&format!("{}@b", "a".repeat(crate::queue::MAX_ADDRESS))), None);
    }

    proptest::proptest! {
        #[test]
        fn utf8_addr_xtext_is_7_bit_xtext_and_decodes_back(s in "\\PC{1,40}") {
            let x = encode_utf8_addr(&s, false);
            proptest::prop_assert!(x.bytes().all(|b| (33..=126).contains(&b) && b != b'+' && b != b'='), "{}", x);
            proptest::prop_assert_eq!(decode_utf8_addr(&x), s.clone());
            proptest::prop_assert!(valid_utf8_addr(&x));
            let u = encode_utf8_addr(&s, true);
            proptest::prop_assert!(!u.contains([' ', '+', '=']));
            proptest::prop_assert_eq!(decode_utf8_addr(&u), s);
            proptest::prop_assert!(valid_utf8_addr(&u));
        }
    }
}

//! The lexer of RFC 5322 address lists (header fields such as From:, To:
//! and Cc:): atoms, quoted strings, domain literals and the specials
//! `<>:;@,.`, each by its place in the text; comments and white space,
//! folding included, are skipped. sendmail reads recipients out of the
//! tokens (`-t`), cleanup finds where a bare local name ends in them.
//!
//! Bytes of 0x80 and above count as atom bytes (UTF-8, or Latin-1 as
//! old mailers write it); the callers judge them.
//!
//! Trusts: nothing; every byte is checked.

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Atom,
    /// A quoted string, its quotes included in the span.
    Quoted,
    /// A domain literal, its brackets included in the span.
    Literal,
    /// One of `<>:;@,.`.
    Special(u8),
}

/// A token and where it lies: `text[start..end]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

/// An atom byte: RFC 5322 atext, or any byte of 0x80 and above.
pub fn atom_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

/// The tokens of an address list, or why it does not tokenize.
pub fn tokens(v: &[u8]) -> Result<Vec<Token>, &'static str> {
    let mut out = Vec::new();
    let mut i = 0;
    // The end of a quoted string or domain literal opened at `i`: past
    // its `close`, quoted pairs skipped.
    let closed = |mut i: usize, close: u8, what: &'static str| -> Result<usize, &'static str> {
        i += 1;
        loop {
            match *v.get(i).ok_or(what)? {
                b if b == close => return Ok(i + 1),
                b'[' if close == b']' => return Err("'[' inside a domain literal"),
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
    };
    while i < v.len() {
        let start = i;
        let kind = match v[i] {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => {
                let mut depth = 1usize;
                i += 1;
                while depth > 0 {
                    match *v.get(i).ok_or("unclosed comment")? {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => depth -= 1,
                        _ => {}
                    }
                    i += 1;
                }
                continue;
            }
            b'"' => {
                i = closed(i, b'"', "unclosed quoted string")?;
                Kind::Quoted
            }
            b'[' => {
                i = closed(i, b']', "unclosed domain literal")?;
                Kind::Literal
            }
            b @ (b'<' | b'>' | b':' | b';' | b'@' | b',' | b'.') => {
                i += 1;
                Kind::Special(b)
            }
            b if atom_byte(b) => {
                while i < v.len() && atom_byte(v[i]) {
                    i += 1;
                }
                Kind::Atom
            }
            b')' => return Err("')' without '('"),
            b']' => return Err("']' without '['"),
            b if b < 0x20 || b == 0x7f => return Err("control character"),
            _ => return Err("character not allowed outside quotes"),
        };
        out.push(Token { kind, start, end: i.min(v.len()) });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, &str)> {
        tokens(text.as_bytes()).expect(text).into_iter().map(|t| (t.kind, &text[t.start..t.end])).collect()
    }

    #[test]
    fn tokens_by_place() {
        assert_eq!(
            kinds("\"Jo \\\"J\\\" Doe\" (a (nested) comment)\r\n <jo@[192.0.2.1]>, root"),
            [
                (Kind::Quoted, "\"Jo \\\"J\\\" Doe\""),
                (Kind::Special(b'<'), "<"),
                (Kind::Atom, "jo"),
                (Kind::Special(b'@'), "@"),
                (Kind::Literal, "[192.0.2.1]"),
                (Kind::Special(b'>'), ">"),
                (Kind::Special(b','), ","),
                (Kind::Atom, "root"),
            ]
        );
        assert_eq!(kinds("Zoë <z@x.example>")[0], (Kind::Atom, "Zoë"));
    }

    #[test]
    fn what_does_not_tokenize() {
        for (text, why) in [
            ("(open", "unclosed comment"),
            ("\"open", "unclosed quoted string"),
            ("\"ends in a pair\\", "unclosed quoted string"),
            ("[1.2", "unclosed domain literal"),
            ("[a[b]", "'[' inside a domain literal"),
            ("a)", "')' without '('"),
            ("a]", "']' without '['"),
            ("a\0b", "control character"),
            ("a\\b", "character not allowed outside quotes"),
        ] {
            assert_eq!(tokens(text.as_bytes()), Err(why), "{text:?}");
        }
    }
}

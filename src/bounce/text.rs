//! The text rules of a report: values cleaned before they are written,
//! header fields folded, and human-readable text wrapped, so that no line
//! exceeds 998 octets and no value can end a line early.
//!
//! Nothing is ever inserted into a value. A header field is folded only
//! before a space it has; a run without one too long for any line (over
//! 997 octets) is written as RFC 2047 encoded-words, which mail readers
//! decode and join back. The human-readable text is wrapped between
//! words only; a word too long for a line makes the text part
//! quoted-printable, whose soft line breaks readers remove.
//!
//! Trusts: nothing; every string may come from a remote server.

use super::MAX_LINE;

/// Where a header field is folded when it can be: RFC 5322's 78 characters.
pub(crate) const FOLD_AT: usize = 78;
/// Where the human-readable text is wrapped.
pub(crate) const WRAP_AT: usize = 79;
/// Indentation of wrapped text lines after the first.
pub(crate) const WRAP_INDENT: usize = 4;

/// `s` made safe for a header field or a text line: C0 and C1 control
/// characters and DEL become `?`, except CR, LF and TAB, which become a
/// space; runs of white space become one space and none is left at either
/// end; non-ASCII becomes `?` unless `utf8`; at most `max` bytes, cut at a
/// character boundary.
pub(crate) fn clean(s: &str, utf8: bool, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    let mut space = false;
    for c in s.chars() {
        let c = match c {
            '\r' | '\n' | '\t' | ' ' => ' ',
            c if c.is_control() => '?',
            c if !c.is_ascii() && !utf8 => '?',
            c => c,
        };
        if c == ' ' {
            space = !out.is_empty();
            continue;
        }
        let extra = usize::from(space) + c.len_utf8();
        if out.len() + extra > max {
            break;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

/// `s` with only ASCII letters and digits, at most `max` of them.
pub(crate) fn alnum(s: &str, max: usize) -> String {
    s.chars().filter(char::is_ascii_alphanumeric).take(max).collect()
}

/// The largest character boundary of `s` at or below `at`.
fn floor_boundary(s: &str, at: usize) -> usize {
    let mut at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Appends the header field `name: value` (value already cleaned: single
/// spaces, none at either end), CR LF terminated, folded before a space
/// so that lines stay within 78 characters where the value allows it and
/// within 998 octets always. Folding only ever adds a CR LF before a
/// space the value has, so unfolding gives the value back. A run without
/// a space too long for a line of its own (over 997 octets: only an
/// address or an identifier beyond any SMTP limit, or a reply of the
/// same kind, can be) cannot be folded: it is written as RFC 2047
/// encoded-words instead ([`encoded_words`]), which a reader joins back
/// without the folds between them.
pub(crate) fn field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    let mut len = name.len() + 1;
    // The first word stays on the name's line when it can.
    let mut first = true;
    // The last word written was an encoded-word.
    let mut encoded = false;
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        let words = if word.len() < MAX_LINE { vec![word.to_string()] } else { encoded_words(word, encoded) };
        encoded = word.len() >= MAX_LINE;
        for w in words {
            let fits = len + 1 + w.len() <= if first { MAX_LINE } else { FOLD_AT };
            if !fits {
                out.push_str("\r\n");
                len = 0;
            }
            out.push(' ');
            out.push_str(&w);
            len += 1 + w.len();
            first = false;
        }
    }
    out.push_str("\r\n");
}

/// The longest RFC 2047 encoded-word.
const MAX_ENCODED_WORD: usize = 75;

/// `run` as RFC 2047 encoded-words ("Q" encoding, `us-ascii` or `utf-8`),
/// each at most 75 octets and whole characters; `space`: the run follows
/// another encoded run after a space, which a reader would drop between
/// two encoded-words, so it is encoded at the run's start.
pub(crate) fn encoded_words(run: &str, space: bool) -> Vec<String> {
    let charset = if run.is_ascii() { "us-ascii" } else { "utf-8" };
    let open = format!("=?{charset}?Q?");
    let room = MAX_ENCODED_WORD - open.len() - 2;
    let mut words = Vec::new();
    let mut word = String::new();
    let chars = space.then_some(' ').into_iter().chain(run.chars());
    for c in chars {
        let mut piece = String::new();
        match c {
            ' ' => piece.push('_'),
            '!'..='~' if !matches!(c, '=' | '?' | '_') => piece.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    piece.push_str(&format!("={b:02X}"));
                }
            }
        }
        if word.len() + piece.len() > room {
            words.push(format!("{open}{word}?="));
            word.clear();
        }
        word.push_str(&piece);
    }
    if !word.is_empty() {
        words.push(format!("{open}{word}?="));
    }
    words
}

/// How the text part is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TextEncoding {
    /// As it is: every word fits a line ([`fits_plain`]).
    Plain,
    /// Quoted-printable (RFC 2045): a word too long for a line is cut by
    /// soft line breaks, which a reader removes.
    QuotedPrintable,
}

/// Whether `text`, wrapped with `indent`, has no word too long for a
/// line, so that it can be written [`TextEncoding::Plain`].
pub(crate) fn fits_plain(text: &str, indent: usize) -> bool {
    text.split(' ').all(|w| indent + w.len() <= MAX_LINE)
}

/// Appends `text` (already cleaned) as lines of at most 79 characters
/// where its words allow, each CR LF terminated, lines after the first
/// indented by `indent` spaces, in `encoding`. Words are never cut: a
/// word too long for a line is the reason for quoted-printable, whose
/// soft line breaks keep every line within 76 characters. (Plain text
/// with a word too long for a 998-octet line, which [`fits_plain`] rules
/// out, would have it cut, with a line end and the indentation added.)
pub(crate) fn wrap(out: &mut String, text: &str, indent: usize, encoding: TextEncoding) {
    let mut line = String::new();
    let mut first_on_line = true;
    let emit = |out: &mut String, line: &str| match encoding {
        TextEncoding::Plain => {
            out.push_str(line);
            out.push_str("\r\n");
        }
        TextEncoding::QuotedPrintable => quoted_printable(out, line),
    };
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word = word;
        if !first_on_line && line.len() + 1 + word.len() > WRAP_AT {
            emit(out, &line);
            line = " ".repeat(indent);
            first_on_line = true;
        }
        if !first_on_line {
            line.push(' ');
        }
        while encoding == TextEncoding::Plain && line.len() + word.len() > MAX_LINE {
            let i = floor_boundary(word, MAX_LINE - line.len());
            line.push_str(&word[..i]);
            emit(out, &line);
            line = " ".repeat(indent);
            word = &word[i..];
        }
        line.push_str(word);
        first_on_line = false;
    }
    emit(out, &line);
}

/// The longest quoted-printable line, its soft break's `=` included.
const QP_LINE: usize = 76;

/// Appends `line` quoted-printable encoded (RFC 2045), with soft line
/// breaks where it is longer than 76 characters, CR LF terminated.
fn quoted_printable(out: &mut String, line: &str) {
    let bytes = line.as_bytes();
    let mut len = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let last = i + 1 == bytes.len();
        let literal = matches!(b, b'!'..=b'<' | b'>'..=b'~') || (b == b' ' && !last);
        let piece = if literal { (b as char).to_string() } else { format!("={b:02X}") };
        // Room for the soft break's `=`, unless this is the line's end.
        let limit = if last { QP_LINE } else { QP_LINE - 1 };
        if len + piece.len() > limit {
            out.push_str("=\r\n");
            len = 0;
        }
        out.push_str(&piece);
        len += piece.len();
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<&str> {
        s.strip_suffix("\r\n").unwrap().split("\r\n").collect()
    }

    #[test]
    fn clean_replaces_controls_and_collapses_space() {
        assert_eq!(clean(" a\r\nb\t\tc \u{7f}\u{0}\u{85}é ", false, 100), "a b c ????");
        assert_eq!(clean("é\u{85}", true, 100), "é?");
        assert_eq!(clean("aé", true, 2), "a");
        assert_eq!(clean("ab  cd", false, 4), "ab c");
        assert_eq!(clean("ab cd", false, 3), "ab");
    }

    #[test]
    fn field_folds_at_spaces_losslessly() {
        let value = clean(&"word ".repeat(100), false, 10_000);
        let mut out = String::new();
        field(&mut out, "Diagnostic-Code", &format!("smtp; {value}"));
        for l in lines(&out) {
            assert!(l.len() <= FOLD_AT, "{l:?}");
        }
        assert_eq!(out.replace("\r\n", ""), format!("Diagnostic-Code: smtp; {value}\r\n").replace("\r\n", ""));
    }

    /// A field as a reader has it: unfolded (each CR LF before a space
    /// removed), then RFC 2047 encoded-words decoded, adjacent ones
    /// joined without the space between them.
    fn read_field(out: &str) -> String {
        let unfolded = out.strip_suffix("\r\n").unwrap().replace("\r\n ", " ");
        let (_, value) = unfolded.split_once(": ").unwrap();
        let mut text = Vec::new();
        let mut last_encoded = false;
        for token in value.split(' ') {
            let word = token.strip_prefix("=?").and_then(|t| t.strip_suffix("?=")).and_then(|t| {
                let (_, rest) = t.split_once("?Q?")?;
                let mut b = Vec::new();
                let mut i = 0;
                while i < rest.len() {
                    match &rest[i..i + 1] {
                        "_" => b.push(b' '),
                        "=" => {
                            b.push(u8::from_str_radix(&rest[i + 1..i + 3], 16).unwrap());
                            i += 2;
                        }
                        c => b.extend_from_slice(c.as_bytes()),
                    }
                    i += 1;
                }
                Some(b)
            });
            if !text.is_empty() && !(last_encoded && word.is_some()) {
                text.push(b' ');
            }
            last_encoded = word.is_some();
            text.extend(word.unwrap_or_else(|| token.as_bytes().to_vec()));
        }
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn field_never_adds_a_space_to_a_long_run() {
        for value in [
            format!("smtp; {} tail", "x".repeat(1500)),
            format!("rfc822; {}@example.org", "a".repeat(1010)),
            format!("{} {}", "y=?_".repeat(300), "z".repeat(998)),
            format!("x{} y", "é".repeat(1500)),
            "z".repeat(997),
        ] {
            let mut out = String::new();
            field(&mut out, "Final-Recipient", &value);
            for l in lines(&out) {
                assert!(l.len() <= MAX_LINE, "{}", l.len());
            }
            assert_eq!(read_field(&out), value);
        }
        // A run that fits a line of its own is folded before, never cut.
        let mut out = String::new();
        let value = format!("smtp; {}", "w".repeat(997));
        field(&mut out, "Diagnostic-Code", &value);
        assert_eq!(out, format!("Diagnostic-Code: smtp;\r\n {}\r\n", "w".repeat(997)));
    }

    /// Quoted-printable decoded: soft breaks removed, `=XX` made bytes.
    fn read_qp(out: &str) -> String {
        let joined = out.replace("=\r\n", "");
        let mut b = Vec::new();
        let mut i = 0;
        while i < joined.len() {
            if &joined[i..i + 1] == "=" {
                b.push(u8::from_str_radix(&joined[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                b.push(joined.as_bytes()[i]);
                i += 1;
            }
        }
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn wrap_keeps_long_words_whole_in_quoted_printable() {
        let long = format!("<{}@example.org>:", "a=é".repeat(400));
        let text = format!("{long} host mx said: 550 no such user {}", "reason ".repeat(20).trim_end());
        assert!(!fits_plain(&text, WRAP_INDENT));
        let mut out = String::new();
        wrap(&mut out, &text, WRAP_INDENT, TextEncoding::QuotedPrintable);
        for l in lines(&out) {
            assert!(l.len() <= QP_LINE, "{l:?}");
        }
        let decoded = read_qp(&out);
        let ls = lines(&decoded);
        assert_eq!(ls[0], long);
        assert!(ls[1..].iter().all(|l| l.starts_with("    ") && l.len() <= WRAP_AT));
        let words: Vec<&str> = decoded.split_whitespace().collect();
        assert_eq!(words, text.split(' ').collect::<Vec<_>>());
        // Plain text that fits is as it was, and a trailing space is
        // encoded.
        let mut plain = String::new();
        wrap(&mut plain, "short text", 0, TextEncoding::Plain);
        assert_eq!(plain, "short text\r\n");
        let mut qp = String::new();
        quoted_printable(&mut qp, "a = b ");
        assert_eq!(qp, "a =3D b=20\r\n");
    }

    #[test]
    fn wrap_indents_and_bounds() {
        let mut out = String::new();
        wrap(
            &mut out,
            &format!("<a@b>: {} {}", "reason ".repeat(30).trim_end(), "z".repeat(2000)),
            WRAP_INDENT,
            TextEncoding::Plain,
        );
        let ls = lines(&out);
        assert!(ls[0].starts_with("<a@b>: reason"));
        assert!(ls[1..].iter().all(|l| l.starts_with("    ") && l.len() <= MAX_LINE));
        assert!(ls.iter().filter(|l| !l.contains('z')).all(|l| l.len() <= WRAP_AT));
    }
}

//! The text rules of a report: values cleaned before they are written,
//! header fields folded, and human-readable text wrapped, so that no line
//! exceeds 998 octets and no value can end a line early.
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
/// within 998 octets always. A run of more than 997 octets without a space
/// is broken anyway, and the break adds a space to the unfolded value.
pub(crate) fn field(out: &mut String, name: &str, value: &str) {
    let line = format!("{name}: {value}");
    let mut rest = line.as_str();
    // The first line keeps the name and at least one character of value.
    let mut min = name.len() + 2;
    // The line starts with a space the value does not have (a forced break).
    let mut lead = false;
    loop {
        let soft = FOLD_AT - usize::from(lead);
        let hard = MAX_LINE - usize::from(lead);
        if lead {
            out.push(' ');
        }
        let spaces = || rest.char_indices().filter(|&(i, c)| c == ' ' && i >= min).map(|(i, _)| i);
        let at = match rest.len() <= soft {
            true => None,
            false => spaces().take_while(|&i| i <= soft).last().or_else(|| spaces().next().filter(|&i| i <= hard)),
        };
        match at {
            Some(i) => {
                out.push_str(&rest[..i]);
                rest = &rest[i..];
                lead = false;
            }
            None if rest.len() <= hard => {
                out.push_str(rest);
                out.push_str("\r\n");
                return;
            }
            None => {
                let i = floor_boundary(rest, hard);
                out.push_str(&rest[..i]);
                rest = &rest[i..];
                lead = true;
            }
        }
        out.push_str("\r\n");
        min = 1;
    }
}

/// Appends `text` (already cleaned) as lines of at most 79 characters
/// where its words allow, each CR LF terminated, lines after the first
/// indented by `indent` spaces; a word too long for a 998-octet line is
/// split.
pub(crate) fn wrap(out: &mut String, text: &str, indent: usize) {
    let mut len = 0;
    let mut first_on_line = true;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word = word;
        if !first_on_line && len + 1 + word.len() > WRAP_AT {
            out.push_str("\r\n");
            out.push_str(&" ".repeat(indent));
            len = indent;
            first_on_line = true;
        }
        if !first_on_line {
            out.push(' ');
            len += 1;
        }
        // Only a word longer than a line can ever hold is split.
        while len + word.len() > MAX_LINE {
            let i = floor_boundary(word, MAX_LINE - len);
            out.push_str(&word[..i]);
            out.push_str("\r\n");
            out.push_str(&" ".repeat(indent));
            len = indent;
            word = &word[i..];
        }
        out.push_str(word);
        len += word.len();
        first_on_line = false;
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

    #[test]
    fn field_breaks_long_runs_within_998() {
        let value = format!("x{} y", "é".repeat(1500));
        let mut out = String::new();
        field(&mut out, "Final-Recipient", &value);
        let ls = lines(&out);
        assert!(ls.len() >= 3);
        for l in &ls {
            assert!(l.len() <= MAX_LINE, "{}", l.len());
        }
        assert!(ls[1..].iter().all(|l| l.starts_with(' ')));
    }

    #[test]
    fn wrap_indents_and_bounds() {
        let mut out = String::new();
        wrap(&mut out, &format!("<a@b>: {} {}", "reason ".repeat(30).trim_end(), "z".repeat(2000)), WRAP_INDENT);
        let ls = lines(&out);
        assert!(ls[0].starts_with("<a@b>: reason"));
        assert!(ls[1..].iter().all(|l| l.starts_with("    ") && l.len() <= MAX_LINE));
        assert!(ls.iter().filter(|l| !l.contains('z')).all(|l| l.len() <= WRAP_AT));
    }
}

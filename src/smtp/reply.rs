//! Replies of a remote SMTP or LMTP server (RFC 5321 section 4.2), read
//! incrementally and within bounds: the length of a line, the number of
//! lines and the size of a whole reply. Enhanced status codes (RFC 3463,
//! RFC 2034) are recognised when their class agrees with the reply code.
//! The text is kept as the server wrote it, but made printable and cut to
//! a bound, so that it can go into logs and delivery status notifications.
//!
//! Anything outside the grammar is a [`ReplyError`]; the client treats it
//! as a protocol error (a temporary failure of the whole job).
//!
//! Trusts: nothing; input comes from the network.

use std::fmt;

/// An enhanced status code, `class.subject.detail` (RFC 3463).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Enhanced {
    /// 2, 4 or 5.
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl Enhanced {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Enhanced {
        Enhanced { class, subject, detail }
    }

    /// Parse `c.s.d` at the start of `text`; returns the code and the
    /// length it took. Subject and detail have one to three digits.
    pub fn parse_prefix(text: &[u8]) -> Option<(Enhanced, usize)> {
        let class = match text.first()? {
            c @ (b'2' | b'4' | b'5') => c - b'0',
            _ => return None,
        };
        let mut i = 1;
        let mut numbers = [0u16; 2];
        for n in &mut numbers {
            if text.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
            let digits = text[i..].iter().take(4).take_while(|b| b.is_ascii_digit()).count();
            if !(1..=3).contains(&digits) {
                return None;
            }
            *n = text[i..i + digits].iter().fold(0, |acc, &d| acc * 10 + u16::from(d - b'0'));
            i += digits;
        }
        match text.get(i) {
            None | Some(b' ') => Some((Enhanced { class, subject: numbers[0], detail: numbers[1] }, i)),
            Some(_) => None,
        }
    }
}

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A reply: from the server, or made up locally for a failure we detected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<Enhanced>,
    /// The text of all lines, without codes, joined by single spaces;
    /// printable and bounded (see [`sanitize`]).
    pub text: String,
}

impl Reply {
    /// A reply generated locally.
    pub fn local(code: u16, enhanced: Enhanced, text: impl Into<String>) -> Reply {
        Reply { code, enhanced: Some(enhanced), text: text.into() }
    }

    /// The first digit of the code.
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    /// The enhanced status code, or the one its class implies (`X.0.0`).
    pub fn status(&self) -> Enhanced {
        self.enhanced.unwrap_or(Enhanced::new((self.class() as u8).clamp(2, 5), 0, 0))
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// A complete reply as read, lines kept apart (EHLO keywords need them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawReply {
    pub code: u16,
    /// The text of each line after the code and its separator, raw.
    pub lines: Vec<Vec<u8>>,
}

impl RawReply {
    /// The reply with enhanced code recognised and text made printable,
    /// cut to `max_text` bytes.
    pub fn to_reply(&self, max_text: usize) -> Reply {
        let class = (self.code / 100) as u8;
        let enhanced =
            self.lines.first().and_then(|l| Enhanced::parse_prefix(l)).map(|(e, _)| e).filter(|e| e.class == class);
        let mut joined: Vec<u8> = Vec::new();
        for line in &self.lines {
            let mut text = &line[..];
            // RFC 2034 puts the code on every line; keep it once.
            if let Some(e) = enhanced
                && let Some((le, n)) = Enhanced::parse_prefix(text)
                && le == e
            {
                text = &text[n..];
                text = text.strip_prefix(b" ").unwrap_or(text);
            }
            if text.is_empty() {
                continue;
            }
            if !joined.is_empty() {
                joined.push(b' ');
            }
            joined.extend_from_slice(text);
            if joined.len() > max_text {
                break;
            }
        }
        Reply { code: self.code, enhanced, text: sanitize(&joined, max_text) }
    }
}

/// Make reply text printable: invalid UTF-8 and control characters become
/// `?`, and the result is cut at a character boundary to at most `max`
/// bytes, ending in `...` when cut.
pub fn sanitize(text: &[u8], max: usize) -> String {
    let mut out: String = String::from_utf8_lossy(text)
        .chars()
        .map(|c| if c.is_control() || c == char::REPLACEMENT_CHARACTER { '?' } else { c })
        .collect();
    if out.len() > max {
        let mut cut = max.saturating_sub(3);
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(&"..."[..max.min(3)]);
    }
    out
}

/// Bounds on what a server may send as one reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyLimits {
    /// Longest line, CR LF included.
    pub line: usize,
    /// Most lines in one reply.
    pub lines: usize,
    /// Most bytes in one reply.
    pub bytes: usize,
    /// Longest reply text kept (after joining lines).
    pub text: usize,
}

impl Default for ReplyLimits {
    fn default() -> ReplyLimits {
        ReplyLimits { line: 2048, lines: 128, bytes: 32 * 1024, text: 2048 }
    }
}

/// Why a reply could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyError {
    LineTooLong,
    TooManyLines,
    TooLarge,
    /// A line that does not start with a reply code and a separator.
    Malformed(String),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::LineTooLong => f.write_str("reply line too long"),
            ReplyError::TooManyLines => f.write_str("reply has too many lines"),
            ReplyError::TooLarge => f.write_str("reply too large"),
            ReplyError::Malformed(line) => write!(f, "malformed reply: {line}"),
        }
    }
}

/// Reads replies from a byte stream, one line at a time.
#[derive(Debug)]
pub struct ReplyReader {
    limits: ReplyLimits,
    lines: Vec<Vec<u8>>,
    bytes: usize,
}

impl ReplyReader {
    pub fn new(limits: ReplyLimits) -> ReplyReader {
        ReplyReader { limits, lines: Vec::new(), bytes: 0 }
    }

    /// Forget a reply read in part (the stream is being abandoned).
    pub fn reset(&mut self) {
        self.lines.clear();
        self.bytes = 0;
    }

    /// Whether part of a reply has been read.
    pub fn in_reply(&self) -> bool {
        !self.lines.is_empty()
    }

    /// Read from `input[*pos..]`, advancing `pos` past the lines taken.
    /// `Ok(None)`: more input is needed (a partial line stays unread).
    pub fn read(&mut self, input: &[u8], pos: &mut usize) -> Result<Option<RawReply>, ReplyError> {
        loop {
            let rest = &input[*pos..];
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                if rest.len() >= self.limits.line {
                    return Err(ReplyError::LineTooLong);
                }
                return Ok(None);
            };
            if nl + 1 > self.limits.line {
                return Err(ReplyError::LineTooLong);
            }
            *pos += nl + 1;
            self.bytes += nl + 1;
            if self.bytes > self.limits.bytes {
                return Err(ReplyError::TooLarge);
            }
            let line = &rest[..nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let (code, last, text) = parse_line(line)?;
            if self.lines.len() == self.limits.lines {
                return Err(ReplyError::TooManyLines);
            }
            self.lines.push(text.to_vec());
            if last {
                let lines = std::mem::take(&mut self.lines);
                self.bytes = 0;
                // RFC 5321 4.2.1: the code of the last line is the one that counts.
                return Ok(Some(RawReply { code, lines }));
            }
        }
    }
}

/// Split a reply line into its code, whether it is the last line, and text.
fn parse_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ReplyError> {
    let malformed = || ReplyError::Malformed(sanitize(line, 80));
    let code = match line {
        [a @ b'2'..=b'5', b @ b'0'..=b'5', c @ b'0'..=b'9', ..] => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(malformed()),
    };
    match line.get(3) {
        None => Ok((code, true, &[])),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(input: &[u8]) -> Result<Vec<RawReply>, ReplyError> {
        let mut r = ReplyReader::new(ReplyLimits::default());
        let mut pos = 0;
        let mut out = Vec::new();
        while let Some(reply) = r.read(input, &mut pos)? {
            out.push(reply);
        }
        Ok(out)
    }

    #[test]
    fn multiline_reply_with_enhanced_codes_on_each_line() {
        let r = read_all(b"550-5.1.1 The email account that you tried\r\n550 5.1.1 does not exist.\r\n").unwrap();
        assert_eq!(r.len(), 1);
        let reply = r[0].to_reply(1000);
        assert_eq!(reply.code, 550);
        assert_eq!(reply.enhanced, Some(Enhanced::new(5, 1, 1)));
        assert_eq!(reply.text, "The email account that you tried does not exist.");
        assert_eq!(reply.to_string(), "550 5.1.1 The email account that you tried does not exist.");
    }

    #[test]
    fn enhanced_code_of_another_class_is_ignored() {
        let reply = read_all(b"450 5.7.1 odd\r\n").unwrap()[0].to_reply(100);
        assert_eq!(reply.enhanced, None);
        assert_eq!(reply.status(), Enhanced::new(4, 0, 0));
        assert_eq!(reply.text, "5.7.1 odd");
    }

    #[test]
    fn bare_code_and_lf_only_lines_are_accepted() {
        let r = read_all(b"250\n354 go ahead\n").unwrap();
        assert_eq!(r[0], RawReply { code: 250, lines: vec![vec![]] });
        assert_eq!(r[1].code, 354);
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [&b"hello\r\n"[..], b"25\r\n", b"250x\r\n", b"199 no\r\n", b"650 no\r\n", b"2a0 x\r\n"] {
            assert!(matches!(read_all(bad), Err(ReplyError::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn over_long_line_is_refused_before_its_end_arrives() {
        let mut r = ReplyReader::new(ReplyLimits { line: 16, ..ReplyLimits::default() });
        let mut pos = 0;
        assert_eq!(r.read(b"250 0123456789ab", &mut pos), Err(ReplyError::LineTooLong));
        let mut pos = 0;
        assert_eq!(r.read(b"250 0123456789abcdef\r\n", &mut pos), Err(ReplyError::LineTooLong));
    }

    #[test]
    fn too_many_lines_and_too_many_bytes() {
        let many = "250-x\r\n".repeat(200) + "250 x\r\n";
        assert_eq!(read_all(many.as_bytes()), Err(ReplyError::TooManyLines));
        let mut r = ReplyReader::new(ReplyLimits { bytes: 100, ..ReplyLimits::default() });
        let big = "250-0123456789012345678901234567890123456789\r\n".repeat(3);
        let mut pos = 0;
        assert_eq!(r.read(big.as_bytes(), &mut pos), Err(ReplyError::TooLarge));
    }

    #[test]
    fn text_is_made_printable_and_bounded() {
        let reply = read_all(b"554 bad\x1b[31m \xff\x00 text\r\n").unwrap()[0].to_reply(100);
        assert_eq!(reply.text, "bad?[31m ?? text");
        let long = format!("554 {}\r\n", "é".repeat(100));
        let reply = read_all(long.as_bytes()).unwrap()[0].to_reply(20);
        assert!(reply.text.len() <= 20);
        assert!(reply.text.ends_with("..."));
        assert_eq!(sanitize(b"exactly 10", 10), "exactly 10");
    }

    proptest! {
        #[test]
        fn reader_never_panics_and_respects_bounds(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            let limits = ReplyLimits { line: 64, lines: 4, bytes: 200, text: 50 };
            let mut r = ReplyReader::new(limits);
            let mut pos = 0;
            while let Ok(Some(reply)) = r.read(&input, &mut pos) {
                prop_assert!(reply.lines.len() <= 4);
                let text = reply.to_reply(50).text;
                prop_assert!(text.len() <= 50);
                prop_assert!(!text.chars().any(char::is_control));
            }
        }
    }
}

//! Message content as it goes out after DATA: line ends normalised to
//! CR LF, an optional 8-bit to 7-bit conversion ([`super::mime7bit`]),
//! dot-stuffing (RFC 5321 4.5.2), and the end-of-data line.
//!
//! Whatever the content, the output has CR LF line ends only (a bare CR
//! and a bare LF each end a line, CR LF ends one), every line starting
//! with "." gets a second one, the last line is ended if it was not, and
//! `.` CR LF follows. So nothing in the content can end the data early
//! or be read by the server as a command (SMTP smuggling). Content
//! streams through: the encoder holds at most the converter's bounded
//! state, never a line or the message.
//!
//! Trusts: nothing; the content is whatever a client sent us.

use super::mime7bit::{Downgrade, MimeError, MimeLimits};

/// Receives content as lines: text without CR or LF, then a line end.
pub trait LineSink {
    fn text(&mut self, bytes: &[u8]);
    fn end_line(&mut self);
}

/// Dot-stuffs lines into a buffer, with CR LF line ends.
struct Stuffer<'a> {
    out: &'a mut Vec<u8>,
    at_line_start: &'a mut bool,
}

impl LineSink for Stuffer<'_> {
    fn text(&mut self, bytes: &[u8]) {
        let Some(&first) = bytes.first() else { return };
        if *self.at_line_start && first == b'.' {
            self.out.push(b'.');
        }
        self.out.extend_from_slice(bytes);
        *self.at_line_start = false;
    }

    fn end_line(&mut self) {
        self.out.extend_from_slice(b"\r\n");
        *self.at_line_start = true;
    }
}

/// The stage after line splitting: straight to the stuffer, or through
/// the 7-bit converter first.
fn forward(mime: &mut Option<Downgrade>, sink: &mut Stuffer<'_>, text: Option<&[u8]>) {
    match (mime, text) {
        (Some(m), Some(t)) => m.text(t, sink),
        (Some(m), None) => m.end_line(sink),
        (None, Some(t)) => sink.text(t),
        (None, None) => sink.end_line(),
    }
}

/// Encodes content for DATA, chunk by chunk.
#[derive(Debug)]
pub struct DataEncoder {
    /// The previous chunk ended in CR (its line already ended; an LF
    /// starting this chunk belongs to it).
    after_cr: bool,
    at_line_start: bool,
    mime: Option<Downgrade>,
    finished: bool,
}

impl DataEncoder {
    /// `downgrade`: convert 8-bit MIME parts to quoted-printable.
    pub fn new(downgrade: Option<MimeLimits>) -> DataEncoder {
        DataEncoder { after_cr: false, at_line_start: true, mime: downgrade.map(Downgrade::new), finished: false }
    }

    /// Encode a chunk of content, appending to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        let DataEncoder { after_cr, at_line_start, mime, .. } = self;
        let mut sink = Stuffer { out, at_line_start };
        let mut i = 0;
        if *after_cr && data.first() == Some(&b'\n') {
            i = 1;
        }
        if !data.is_empty() {
            *after_cr = false;
        }
        while i < data.len() {
            match memchr::memchr2(b'\r', b'\n', &data[i..]) {
                None => {
                    forward(mime, &mut sink, Some(&data[i..]));
                    break;
                }
                Some(n) => {
                    if n > 0 {
                        forward(mime, &mut sink, Some(&data[i..i + n]));
                    }
                    forward(mime, &mut sink, None);
                    let end = i + n;
                    i = end + 1;
                    if data[end] == b'\r' {
                        match data.get(i) {
                            Some(b'\n') => i += 1,
                            Some(_) => {}
                            None => *after_cr = true,
                        }
                    }
                }
            }
        }
    }

    /// The content is complete: end the last line if needed and append
    /// the end-of-data line.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let DataEncoder { at_line_start, mime, .. } = self;
        let mut sink = Stuffer { out, at_line_start };
        if let Some(m) = mime {
            m.finish(&mut sink);
        }
        if !*sink.at_line_start {
            sink.end_line();
        }
        out.extend_from_slice(b".\r\n");
    }

    /// A conversion error that makes the message impossible to send.
    pub fn error(&self) -> Option<MimeError> {
        self.mime.as_ref().and_then(Downgrade::error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(chunks: &[&[u8]]) -> Vec<u8> {
        let mut enc = DataEncoder::new(None);
        let mut out = Vec::new();
        for c in chunks {
            enc.feed(c, &mut out);
        }
        enc.finish(&mut out);
        out
    }

    /// Undo dot-stuffing: the lines up to the end-of-data line, joined
    /// by CR LF. Panics if the data has no proper end or a bare CR/LF.
    fn unstuff(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = data;
        loop {
            let i = rest.windows(2).position(|w| w == b"\r\n").expect("line without CR LF");
            let line = &rest[..i];
            assert!(!line.contains(&b'\r') && !line.contains(&b'\n'), "bare CR or LF in {line:?}");
            rest = &rest[i + 2..];
            if line == b"." {
                assert!(rest.is_empty(), "data after the end-of-data line");
                return out;
            }
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The reference: every CR LF, bare CR or bare LF ends a line; the
    /// last line is ended.
    fn normalise(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            match input[i] {
                b'\r' if input.get(i + 1) == Some(&b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    i += 1;
                }
                b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
                b => out.push(b),
            }
            i += 1;
        }
        if !out.is_empty() && !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    #[test]
    fn dots_at_line_start_are_doubled() {
        assert_eq!(encode(&[b".\r\n..x\r\na.b\r\n"]), b"..\r\n...x\r\na.b\r\n.\r\n");
    }

    #[test]
    fn smuggling_bare_lf_dot_cannot_end_the_data() {
        // A bare LF "." bare LF, or CR "." CR, in content: each becomes a
        // stuffed ".." line, never an end of data.
        assert_eq!(encode(&[b"a\n.\nb\r.\rc"]), b"a\r\n..\r\nb\r\n..\r\nc\r\n.\r\n");
    }

    #[test]
    fn last_line_is_ended_and_empty_content_is_just_the_end() {
        assert_eq!(encode(&[b"no newline"]), b"no newline\r\n.\r\n");
        assert_eq!(encode(&[]), b".\r\n");
    }

    #[test]
    fn cr_lf_split_across_chunks_is_one_line_end() {
        assert_eq!(encode(&[b"a\r", b"\nb\r", b"", b"\n.c"]), b"a\r\nb\r\n..c\r\n.\r\n");
        assert_eq!(encode(&[b"a\r", b"\r\n"]), b"a\r\n\r\n.\r\n");
    }

    proptest! {
        #[test]
        fn unstuffing_gives_the_content_with_crlf_line_ends(
            input in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for c in cuts {
                chunks.push(&input[start..c]);
                start = c;
            }
            chunks.push(&input[start..]);
            let out = encode(&chunks);
            prop_assert!(out.ends_with(b".\r\n"));
            prop_assert_eq!(unstuff(&out), normalise(&input));
        }

        #[test]
        fn converted_content_is_just_as_safe(
            pieces in proptest::collection::vec(prop_oneof![
                Just(b"\r\n".to_vec()), Just(b"\n".to_vec()), Just(b"\r".to_vec()), Just(b".".to_vec()),
                Just(b"--b".to_vec()), Just(b"Content-Type: multipart/mixed; boundary=b".to_vec()),
                Just(b"Content-Transfer-Encoding: 8bit".to_vec()), Just(b"Content-Type: message/rfc822".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..20),
            ], 0..40),
            chunk in 1usize..20,
        ) {
            let input = pieces.concat();
            let limits = MimeLimits { header: 64, depth: 3, boundary: 8 };
            let mut enc = DataEncoder::new(Some(limits));
            let mut out = Vec::new();
            for c in input.chunks(chunk) {
                enc.feed(c, &mut out);
            }
            enc.finish(&mut out);
            // unstuff panics on a bare CR or LF, or data after the end.
            let lines = unstuff(&out);
            prop_assert!(lines.is_empty() || lines.ends_with(b"\r\n"));
        }
    }
}

//! The scan of the original's content, byte by byte as it streams past, in
//! chunks of any size: whether each line can travel as 8bit MIME (at most
//! 998 octets, CR only before LF, LF only after CR, no NUL), where the
//! first 8-bit byte is, where a MIME boundary candidate first occurs, and,
//! over the header block, how much of it fits a size limit in whole header
//! fields.
//!
//! Trusts: nothing; the content is whatever the sender sent.

use memchr::memmem;

use super::MAX_LINE;

/// How far into the current line the header name has been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineKind {
    /// Nothing read yet.
    Start,
    /// A CR first: the empty line if LF follows.
    Cr,
    /// Field name characters so far.
    Name,
    /// Field name, then white space (obsolete syntax).
    NameSpace,
    /// A header field's first line (the colon was seen).
    Field,
    /// White space first: a continuation of the open field.
    Continuation,
}

/// The header block, tracked to find how much of it fits `limit` in whole
/// fields whose every line is clean.
#[derive(Debug)]
struct Headers {
    limit: u64,
    kind: LineKind,
    /// The block ended (an empty line, a line that is no header field).
    done: bool,
    /// A field has begun and not yet ended.
    open: bool,
    /// Every line of the open field so far is clean.
    open_clean: bool,
    /// A field did not fit; `cut` stays where it is.
    stopped: bool,
    /// End of the last whole field that fits.
    cut: u64,
}

impl Headers {
    /// The open field ends at `at`.
    fn close(&mut self, at: u64) {
        if self.open && !self.stopped {
            if self.open_clean && at <= self.limit {
                self.cut = at;
            } else {
                self.stopped = true;
            }
        }
        self.open = false;
    }

    /// The first byte of a line starting at `at`.
    fn line_start(&mut self, b: u8, at: u64) {
        if b == b' ' || b == b'\t' {
            if self.open {
                self.kind = LineKind::Continuation;
            } else {
                self.done = true;
            }
            return;
        }
        self.close(at);
        self.kind = LineKind::Start;
        self.next(b);
    }

    /// A further byte of the line's start, while its kind is undecided.
    fn next(&mut self, b: u8) {
        let name = (33..=126).contains(&b) && b != b':';
        self.kind = match (self.kind, b) {
            (LineKind::Start, b'\r') => LineKind::Cr,
            (LineKind::Start | LineKind::Name, _) if name => LineKind::Name,
            (LineKind::Name | LineKind::NameSpace, b' ' | b'\t') => LineKind::NameSpace,
            (LineKind::Name | LineKind::NameSpace, b':') => {
                self.open = true;
                self.open_clean = true;
                LineKind::Field
            }
            // The empty line, or a line that is no header field.
            _ => {
                self.done = true;
                self.kind
            }
        };
    }

    /// The line ended; `clean` says whether it can travel as 8bit.
    fn line_end(&mut self, clean: bool) {
        match self.kind {
            LineKind::Field | LineKind::Continuation => self.open_clean &= clean,
            _ => self.done = true,
        }
    }
}

/// The scan of one range of the content, starting at offset 0.
#[derive(Debug)]
pub(crate) struct Scan {
    offset: u64,
    /// Bytes of the current line so far, LF excluded.
    line_len: u64,
    line_start: u64,
    line_clean: bool,
    /// The previous byte was a CR.
    cr: bool,
    first_8bit: Option<u64>,
    first_unclean: Option<u64>,
    headers: Option<Headers>,
    finder: memmem::Finder<'static>,
    /// The last bytes of what came before, to find the needle across
    /// chunks; reused for each chunk.
    window: Vec<u8>,
    first_match_end: Option<u64>,
}

impl Scan {
    /// A scan for `boundary`; with `header_limit`, it also tracks the
    /// header block against that limit.
    pub(crate) fn new(boundary: &str, header_limit: Option<u64>) -> Scan {
        let headers = header_limit.map(|limit| Headers {
            limit,
            kind: LineKind::Start,
            done: false,
            open: false,
            open_clean: true,
            stopped: false,
            cut: 0,
        });
        Scan {
            offset: 0,
            line_len: 0,
            line_start: 0,
            line_clean: true,
            cr: false,
            first_8bit: None,
            first_unclean: None,
            headers,
            finder: memmem::Finder::new(boundary.as_bytes()).into_owned(),
            window: Vec::new(),
            first_match_end: None,
        }
    }

    /// Bytes scanned so far.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// The header block has ended: nothing further changes [`Scan::header_cut`].
    pub(crate) fn headers_done(&self) -> bool {
        self.headers.as_ref().is_some_and(|h| h.done || h.stopped)
    }

    /// Scans the next chunk.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        self.find(chunk);
        for &b in chunk {
            self.byte(b);
        }
    }

    fn find(&mut self, chunk: &[u8]) {
        if self.first_match_end.is_some() {
            return;
        }
        let needle = self.finder.needle().len();
        let base = self.offset - self.window.len() as u64;
        self.window.extend_from_slice(chunk);
        if let Some(i) = self.finder.find(&self.window) {
            self.first_match_end = Some(base + (i + needle) as u64);
        }
        let keep = needle.saturating_sub(1).min(self.window.len());
        self.window.drain(..self.window.len() - keep);
    }

    fn byte(&mut self, b: u8) {
        let at = self.offset;
        self.offset += 1;
        if b >= 0x80 && self.first_8bit.is_none() {
            self.first_8bit = Some(at);
        }
        if let Some(h) = self.headers.as_mut().filter(|h| !h.done) {
            match h.kind {
                _ if at == self.line_start => h.line_start(b, at),
                LineKind::Start | LineKind::Cr | LineKind::Name | LineKind::NameSpace => h.next(b),
                LineKind::Field | LineKind::Continuation => {}
            }
        }
        if (self.cr && b != b'\n') || b == 0 {
            self.line_clean = false;
        }
        if b == b'\n' {
            if !self.cr {
                self.line_clean = false;
            }
            self.end_line();
            self.line_start = self.offset;
        } else {
            self.line_len += 1;
            self.cr = b == b'\r';
        }
    }

    fn end_line(&mut self) {
        let len = self.line_len - u64::from(self.cr);
        let clean = self.line_clean && len <= MAX_LINE as u64;
        if !clean && self.first_unclean.is_none() {
            self.first_unclean = Some(self.line_start);
        }
        if let Some(h) = self.headers.as_mut().filter(|h| !h.done) {
            h.line_end(clean);
        }
        self.line_len = 0;
        self.line_clean = true;
        self.cr = false;
    }

    /// The scan reached the end of the content: a last line without LF
    /// ends here (a CR at its end is a bare CR), and so does the header
    /// block.
    pub(crate) fn finish_content(&mut self) {
        if self.offset > self.line_start {
            if self.cr {
                self.line_clean = false;
                self.cr = false;
                self.line_len += 1;
            }
            self.end_line();
        }
        if let Some(h) = self.headers.as_mut() {
            if !h.done {
                h.close(self.offset);
            }
            h.done = true;
        }
    }

    /// End of the whole header fields within the limit: the header block
    /// to return.
    pub(crate) fn header_cut(&self) -> u64 {
        self.headers.as_ref().map_or(0, |h| h.cut)
    }

    /// No line starting before `end` is unfit for 8bit MIME.
    pub(crate) fn clean_before(&self, end: u64) -> bool {
        self.first_unclean.is_none_or(|o| o >= end)
    }

    /// A byte at or above 0x80 lies before `end`.
    pub(crate) fn eight_bit_before(&self, end: u64) -> bool {
        self.first_8bit.is_some_and(|o| o < end)
    }

    /// The boundary occurs within the first `end` bytes.
    pub(crate) fn found_within(&self, end: u64) -> bool {
        self.first_match_end.is_some_and(|o| o <= end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(content: &[u8], limit: u64, chunk: usize) -> Scan {
        let mut s = Scan::new("BOUNDARY", Some(limit));
        for c in content.chunks(chunk.max(1)) {
            s.feed(c);
        }
        s.finish_content();
        s
    }

    #[test]
    fn header_cut_at_whole_fields() {
        let m = b"A: 1\r\nB: 2\r\n 2b\r\nC: 3\r\n\r\nbody\r\n";
        for chunk in 1..m.len() {
            assert_eq!(scan(m, 1000, chunk).header_cut(), 23);
            // B's continuation ends at 17; B does not fit in 16.
            assert_eq!(scan(m, 16, chunk).header_cut(), 6);
            assert_eq!(scan(m, 17, chunk).header_cut(), 17);
            assert_eq!(scan(m, 5, chunk).header_cut(), 0);
        }
    }

    #[test]
    fn header_block_ends_at_a_line_that_is_no_field() {
        assert_eq!(scan(b"A: 1\r\nnot a header\r\nB: 2\r\n", 1000, 3).header_cut(), 6);
        assert_eq!(scan(b" x\r\nA: 1\r\n", 1000, 3).header_cut(), 0);
        assert_eq!(scan(b"A: 1\r\nB : 2\r\n\r\n", 1000, 3).header_cut(), 13);
        assert_eq!(scan(b"A: 1\r\nB: no end", 1000, 3).header_cut(), 15);
    }

    #[test]
    fn unclean_lines() {
        let long = format!("A: {}\r\n", "x".repeat(995));
        assert!(scan(long.as_bytes(), 5000, 7).clean_before(u64::MAX));
        let long = format!("A: {}\r\nB: 2\r\n", "x".repeat(996));
        let s = scan(long.as_bytes(), 5000, 7);
        assert!(!s.clean_before(u64::MAX));
        assert_eq!(s.header_cut(), 0);
        for bad in [&b"A: 1\r\nB: 2\n\r\n"[..], b"A: 1\r\nB: \r2\r\n\r\n", b"A: 1\r\nB: \x002\r\n\r\n", b"A: 1\r\nB\r"]
        {
            let s = scan(bad, 1000, 2);
            assert_eq!(s.first_unclean, Some(6), "{bad:?}");
            assert_eq!(s.header_cut(), 6, "{bad:?}");
        }
    }

    #[test]
    fn boundary_found_across_chunks() {
        let m = b"x\r\n--BOUNDARY\r\n";
        for chunk in 1..m.len() {
            let s = scan(m, 1000, chunk);
            assert!(s.found_within(13) && !s.found_within(12), "{chunk}");
        }
        assert!(!scan(b"BOUNDAR", 1000, 1).found_within(u64::MAX));
    }
}

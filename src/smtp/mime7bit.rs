//! 8-bit to 7-bit conversion of a message on its way out, for a server
//! that does not offer 8BITMIME (RFC 6152 section 3: convert, or bounce).
//! It streams: lines go in as they come from the queue file and come out
//! at once, with bounded state (one header, one boundary probe, one
//! quoted-printable output line, the stack of multipart boundaries).
//!
//! What it does is Postfix's `mime_state` downgrade, reimplemented:
//!
//! - Only entities that *declare* `Content-Transfer-Encoding: 8bit` (or
//!   `binary`) are converted. Their header is dropped and a new one is
//!   written at the end of their header block: `quoted-printable` for a
//!   leaf (any type: Postfix does not pick base64 for non-text), `7bit`
//!   for `multipart/*` and `message/rfc822`, whose parts are converted
//!   one by one. A leaf's body is then encoded as quoted-printable: every
//!   byte outside printable ASCII (tab kept), and `=`, becomes `=XX`; a
//!   space or tab ending a line is encoded too; a soft line break keeps
//!   lines at most 76 characters.
//! - A message without MIME headers, or whose body defaults to 7bit, is
//!   passed through unchanged, 8-bit bytes and all: there is nothing that
//!   says how to label it, and Postfix sends it as it is. So are headers
//!   with 8-bit bytes (header encoding is not part of 8BITMIME).
//! - Multipart boundaries are found as Postfix finds them: a line starting
//!   with `--` and a boundary of an enclosing multipart (innermost first;
//!   an outer boundary closes the inner parts), `--` after it closing the
//!   multipart. Boundaries longer than [`MimeLimits::boundary`] are
//!   compared on that prefix. Preamble and epilogue are not converted.
//! - A header longer than [`MimeLimits::header`] is passed through as it
//!   is (a `Content-Type` is judged on its first part, an over-long
//!   `Content-Transfer-Encoding` is ignored); a header block ended by a
//!   line that is not a header gets an empty line inserted in the primary
//!   block only, as Postfix does.
//! - Multipart nesting deeper than [`MimeLimits::depth`] is an error
//!   ([`MimeError::Nesting`]): the message cannot be converted, and the
//!   client fails it (5.6.0) as Postfix does.
//!
//! Trusts: nothing; the content is whatever a client sent us.

use super::content::LineSink;

/// The converter's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MimeLimits {
    /// Longest header (with its continuation lines) held for analysis.
    pub header: usize,
    /// Deepest multipart nesting.
    pub depth: usize,
    /// Longest boundary kept (longer ones are compared on this prefix).
    pub boundary: usize,
}

impl Default for MimeLimits {
    fn default() -> MimeLimits {
        MimeLimits { header: 32 * 1024, depth: 20, boundary: 256 }
    }
}

/// Why a message cannot be converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MimeError {
    Nesting,
}

impl std::fmt::Display for MimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MimeError::Nesting => f.write_str("MIME nesting exceeds safety limit"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Anything converted as a whole (text, images, message/global...).
    Leaf,
    /// message/rfc822: headers of a nested message follow.
    Rfc822,
    Multipart,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Domain {
    /// 7bit, or an encoding (base64, quoted-printable), or unknown.
    SevenBit,
    /// 8bit or binary: converted.
    EightBit,
}

/// What the current header block says about its entity.
#[derive(Clone, Debug)]
struct Entity {
    kind: Kind,
    domain: Domain,
    digest: bool,
    boundary: Option<Vec<u8>>,
}

impl Entity {
    /// The default for a part: message/rfc822 inside multipart/digest,
    /// text/plain elsewhere; 7bit.
    fn default_in(digest: bool) -> Entity {
        Entity {
            kind: if digest { Kind::Rfc822 } else { Kind::Leaf },
            domain: Domain::SevenBit,
            digest: false,
            boundary: None,
        }
    }
}

#[derive(Clone, Debug)]
struct Frame {
    boundary: Vec<u8>,
    digest: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Primary,
    Part,
    Nested,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Region {
    Headers(Block),
    Body { qp: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    /// Nothing of the current line seen yet.
    Start,
    /// Accumulating a header line in `hdr`.
    Header,
    /// Passing the rest of the line through unchanged.
    Pass,
    /// Collecting the start of a body line to look for a boundary.
    Probe,
    /// A body line: passed through or encoded, as the region says.
    Body,
}

/// The converter. Feed it lines with [`Downgrade::text`] and
/// [`Downgrade::end_line`]; it writes the converted lines to the sink.
#[derive(Debug)]
pub struct Downgrade {
    limits: MimeLimits,
    region: Region,
    line: Line,
    entity: Entity,
    stack: Vec<Frame>,
    /// The current header, its lines joined by LF.
    hdr: Vec<u8>,
    /// The current header was too long and is being passed through.
    hdr_passing: bool,
    probe: Vec<u8>,
    /// The quoted-printable line being built.
    qp: Vec<u8>,
    error: Option<MimeError>,
}

const SOFT_BREAK_AFTER: usize = 72;

impl Downgrade {
    pub fn new(limits: MimeLimits) -> Downgrade {
        Downgrade {
            limits,
            region: Region::Headers(Block::Primary),
            line: Line::Start,
            entity: Entity::default_in(false),
            stack: Vec::new(),
            hdr: Vec::new(),
            hdr_passing: false,
            probe: Vec::new(),
            qp: Vec::new(),
            error: None,
        }
    }

    pub fn error(&self) -> Option<MimeError> {
        self.error
    }

    /// Text of the current line (no CR or LF in it).
    pub fn text(&mut self, mut bytes: &[u8], sink: &mut dyn LineSink) {
        while !bytes.is_empty() {
            match self.line {
                Line::Start => self.line_start(bytes[0], sink),
                Line::Header => {
                    let room = self.limits.header.saturating_sub(self.hdr.len());
                    if bytes.len() <= room {
                        self.hdr.extend_from_slice(bytes);
                        return;
                    }
                    self.hdr.extend_from_slice(&bytes[..room]);
                    bytes = &bytes[room..];
                    self.header_overflow(sink);
                }
                Line::Pass => {
                    sink.text(bytes);
                    return;
                }
                Line::Probe => {
                    let n = (self.probe_len() - self.probe.len()).min(bytes.len());
                    self.probe.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if self.probe.len() >= self.probe_len() {
                        self.probe_decide(sink);
                    }
                }
                Line::Body => {
                    self.body_text(bytes, sink);
                    return;
                }
            }
        }
    }

    /// The current line ends.
    pub fn end_line(&mut self, sink: &mut dyn LineSink) {
        match self.line {
            Line::Start => match self.region {
                Region::Headers(_) => {
                    self.finish_header(sink);
                    self.end_headers(false, sink);
                }
                Region::Body { .. } => self.body_end_line(sink),
            },
            Line::Header => {
                self.line = Line::Start;
                let first_line = !self.hdr.contains(&b'\n');
                if first_line && header_colon(&self.hdr).is_none() {
                    self.garbage_line(sink);
                    self.end_line(sink);
                }
            }
            Line::Pass => {
                sink.end_line();
                self.line = Line::Start;
            }
            Line::Probe => {
                self.probe_decide(sink);
                self.end_line(sink);
            }
            Line::Body => self.body_end_line(sink),
        }
    }

    /// The content ends: end an open line, and finish a header block the
    /// message ended in.
    pub fn finish(&mut self, sink: &mut dyn LineSink) {
        if self.line != Line::Start {
            self.end_line(sink);
        }
        if let Region::Headers(_) = self.region {
            self.finish_header(sink);
            self.write_encoding_header(sink);
        }
    }

    fn line_start(&mut self, first: u8, sink: &mut dyn LineSink) {
        match self.region {
            Region::Headers(_) if first == b' ' || first == b'\t' => {
                if self.hdr_passing {
                    self.line = Line::Pass;
                } else if !self.hdr.is_empty() {
                    self.hdr.push(b'\n');
                    self.line = Line::Header;
                } else {
                    // A continuation line with no header before it.
                    self.end_headers(true, sink);
                }
            }
            Region::Headers(_) => {
                self.finish_header(sink);
                self.line = Line::Header;
            }
            Region::Body { .. } if first == b'-' && !self.stack.is_empty() => self.line = Line::Probe,
            Region::Body { .. } => self.line = Line::Body,
        }
    }

    /// The line held in `hdr` is not a header: it ends the header block
    /// and is fed again as the first body line.
    fn garbage_line(&mut self, sink: &mut dyn LineSink) {
        let line = std::mem::take(&mut self.hdr);
        self.end_headers(true, sink);
        self.line = Line::Start;
        self.text(&line, sink);
    }

    /// `hdr` reached its bound in the middle of a line.
    fn header_overflow(&mut self, sink: &mut dyn LineSink) {
        if !self.hdr.contains(&b'\n') && header_colon(&self.hdr).is_none() {
            return self.garbage_line(sink);
        }
        if let Some(value) = header_value(&self.hdr, b"content-type") {
            let value = value.to_vec();
            self.content_type(&value);
        }
        let mut lines = self.hdr.split(|&b| b == b'\n').peekable();
        while let Some(l) = lines.next() {
            sink.text(l);
            if lines.peek().is_some() {
                sink.end_line();
            }
        }
        self.hdr.clear();
        self.hdr_passing = true;
        self.line = Line::Pass;
    }

    /// A complete header: analyse it and write it (or drop it, if it is
    /// a Content-Transfer-Encoding that will be replaced).
    fn finish_header(&mut self, sink: &mut dyn LineSink) {
        if std::mem::take(&mut self.hdr_passing) || self.hdr.is_empty() {
            return;
        }
        let hdr = std::mem::take(&mut self.hdr);
        let mut keep = true;
        if let Some(value) = header_value(&hdr, b"content-type") {
            self.content_type(value);
        } else if let Some(value) = header_value(&hdr, b"content-transfer-encoding") {
            self.entity.domain = transfer_domain(value);
            keep = self.entity.domain == Domain::SevenBit;
        }
        if keep {
            for l in hdr.split(|&b| b == b'\n') {
                sink.text(l);
                sink.end_line();
            }
        }
        self.hdr = hdr;
        self.hdr.clear();
    }

    fn write_encoding_header(&mut self, sink: &mut dyn LineSink) {
        if self.entity.domain == Domain::EightBit {
            let cte: &[u8] = match self.entity.kind {
                Kind::Leaf => b"Content-Transfer-Encoding: quoted-printable",
                Kind::Rfc822 | Kind::Multipart => b"Content-Transfer-Encoding: 7bit",
            };
            sink.text(cte);
            sink.end_line();
        }
    }

    /// The header block ends: by an empty line, or by a line that is not
    /// a header (`garbage`), which the caller then feeds as body.
    fn end_headers(&mut self, garbage: bool, sink: &mut dyn LineSink) {
        let Region::Headers(block) = self.region else { return };
        self.write_encoding_header(sink);
        if !garbage || block == Block::Primary {
            sink.end_line();
        }
        self.hdr.clear();
        self.hdr_passing = false;
        let entity = std::mem::replace(&mut self.entity, Entity::default_in(false));
        self.region = match entity.kind {
            Kind::Rfc822 if !garbage => Region::Headers(Block::Nested),
            Kind::Rfc822 => Region::Body { qp: false },
            Kind::Multipart => {
                if let Some(boundary) = entity.boundary {
                    if self.stack.len() >= self.limits.depth {
                        self.error = Some(MimeError::Nesting);
                    } else {
                        self.stack.push(Frame { boundary, digest: entity.digest });
                    }
                }
                Region::Body { qp: false }
            }
            Kind::Leaf => Region::Body { qp: entity.domain == Domain::EightBit },
        };
    }

    fn probe_len(&self) -> usize {
        4 + self.stack.iter().map(|f| f.boundary.len()).max().unwrap_or(0)
    }

    /// Decide whether the probed line start is a boundary.
    fn probe_decide(&mut self, sink: &mut dyn LineSink) {
        let line = std::mem::take(&mut self.probe);
        let found = line.strip_prefix(b"--").and_then(|rest| {
            let (i, f) = self.stack.iter().enumerate().rev().find(|(_, f)| rest.starts_with(&f.boundary))?;
            Some((i, rest[f.boundary.len()..].starts_with(b"--")))
        });
        let Some((index, closing)) = found else {
            self.line = Line::Body;
            self.body_text(&line, sink);
            self.probe = line;
            self.probe.clear();
            return;
        };
        sink.text(&line);
        self.stack.truncate(index + 1);
        if closing {
            self.stack.pop();
            self.region = Region::Body { qp: false };
            self.entity = Entity::default_in(false);
        } else {
            let digest = self.stack.last().is_some_and(|f| f.digest);
            self.region = Region::Headers(Block::Part);
            self.entity = Entity::default_in(digest);
        }
        self.hdr.clear();
        self.hdr_passing = false;
        self.line = Line::Pass;
        self.probe = line;
        self.probe.clear();
    }

    fn body_text(&mut self, bytes: &[u8], sink: &mut dyn LineSink) {
        if self.region != (Region::Body { qp: true }) {
            return sink.text(bytes);
        }
        for &b in bytes {
            if self.qp.len() > SOFT_BREAK_AFTER {
                self.qp.push(b'=');
                sink.text(&self.qp);
                sink.end_line();
                self.qp.clear();
            }
            // A `-` starting an encoded line is written `=2D`: after a
            // soft break the line could otherwise read as a boundary
            // (`--b1--`) that was content (real boundaries never get here).
            if (b < 32 && b != b'\t') || b == b'=' || b > 126 || (b == b'-' && self.qp.is_empty()) {
                push_hex(&mut self.qp, b);
            } else {
                self.qp.push(b);
            }
        }
    }

    fn body_end_line(&mut self, sink: &mut dyn LineSink) {
        self.line = Line::Start;
        if self.region != (Region::Body { qp: true }) {
            return sink.end_line();
        }
        if let Some(&last) = self.qp.last()
            && (last == b' ' || last == b'\t')
        {
            self.qp.pop();
            push_hex(&mut self.qp, last);
        }
        sink.text(&self.qp);
        sink.end_line();
        self.qp.clear();
    }

    fn content_type(&mut self, value: &[u8]) {
        let tokens = tokens(value);
        let word = |i: usize| match tokens.get(i) {
            Some(Token::Atom(a)) => a.to_ascii_lowercase(),
            _ => Vec::new(),
        };
        let (major, minor) = match tokens.get(1) {
            Some(Token::Special(b'/')) => (word(0), word(2)),
            _ => (word(0), Vec::new()),
        };
        self.entity.digest = false;
        self.entity.boundary = None;
        self.entity.kind = match (&major[..], &minor[..]) {
            (b"message", b"rfc822") => Kind::Rfc822,
            (b"multipart", sub) => {
                self.entity.digest = sub == b"digest";
                self.entity.boundary = boundary(&tokens).map(|b| b[..b.len().min(self.limits.boundary)].to_vec());
                Kind::Multipart
            }
            _ => Kind::Leaf,
        };
    }
}

fn push_hex(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// The index of the colon of a header's first line: a name of printable
/// ASCII other than colon, optional blanks (the obsolete `name :`), `:`.
fn header_colon(line: &[u8]) -> Option<usize> {
    let name = line.iter().take_while(|&&b| (33..=126).contains(&b) && b != b':').count();
    let blanks = line[name..].iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    (name > 0 && line.get(name + blanks) == Some(&b':')).then_some(name + blanks)
}

/// The value of `hdr` if its name is `name` (lower case).
fn header_value<'a>(hdr: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let colon = header_colon(hdr)?;
    let n = hdr[..colon].iter().take_while(|&&b| b != b' ' && b != b'\t').count();
    hdr[..n].eq_ignore_ascii_case(name).then(|| &hdr[colon + 1..])
}

fn transfer_domain(value: &[u8]) -> Domain {
    match tokens(value).first() {
        Some(Token::Atom(a)) if a.eq_ignore_ascii_case(b"8bit") || a.eq_ignore_ascii_case(b"binary") => {
            Domain::EightBit
        }
        _ => Domain::SevenBit,
    }
}

/// The `boundary` parameter of a Content-Type.
fn boundary(tokens: &[Token]) -> Option<Vec<u8>> {
    tokens.windows(4).find_map(|w| match w {
        [Token::Special(b';'), Token::Atom(name), Token::Special(b'='), Token::Atom(v) | Token::Quoted(v)]
            if name.eq_ignore_ascii_case(b"boundary") && !v.is_empty() =>
        {
            Some(v.clone())
        }
        _ => None,
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Atom(Vec<u8>),
    Quoted(Vec<u8>),
    Special(u8),
}

const TSPECIALS: &[u8] = b"()<>@,;:\\\"/[]?=";

/// RFC 2045 tokens of a header value; comments and folding skipped.
fn tokens(value: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' => {
                let mut depth = 0usize;
                while i < value.len() {
                    match value[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => depth -= 1,
                        _ => {}
                    }
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
            }
            b'"' => {
                let mut q = Vec::new();
                i += 1;
                while i < value.len() && value[i] != b'"' {
                    if value[i] == b'\\' && i + 1 < value.len() {
                        i += 1;
                    }
                    if value[i] != b'\n' {
                        q.push(value[i]);
                    }
                    i += 1;
                }
                i += 1;
                out.push(Token::Quoted(q));
            }
            _ if TSPECIALS.contains(&b) => {
                out.push(Token::Special(b));
                i += 1;
            }
            _ if b < 32 || b == 127 => i += 1,
            _ => {
                let n = value[i..].iter().take_while(|&&c| c > 32 && c != 127 && !TSPECIALS.contains(&c)).count();
                out.push(Token::Atom(value[i..i + n].to_vec()));
                i += n;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;

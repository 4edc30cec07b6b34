//! Message content as it arrives after DATA (dot-stuffed, ended by
//! CRLF.CRLF) or in BDAT chunks (raw), decoded one byte at a time with no
//! line buffer, so a line of any length streams through in bounded memory.
//!
//! Smuggling safety: the end of data is CR LF "." CR LF and nothing else.
//! A bare LF or a bare CR (one not part of CR LF) is, by default, a
//! violation that ends the transaction (the session refuses the message
//! and closes the connection, so nothing after it is read as commands);
//! with `Bare::Normalize` it ends a line as CR LF would, but never counts
//! toward the end-of-data sequence. NUL is dropped and reported, and the
//! session refuses a message that had one.
//!
//! Trusts: nothing; input comes from the network.

/// What to do with a bare CR or LF in content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bare {
    Reject,
    Normalize,
}

/// The outcome of feeding bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// All input consumed; more content expected.
    More,
    /// The end-of-data line was consumed; bytes after it are the client's next commands.
    End,
    /// A bare CR or LF (in Reject mode): stop reading content.
    BareLine,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line; `proper` says whether a real CR LF led here.
    LineStart {
        proper: bool,
    },
    /// A dot at the start of a line.
    Dot {
        proper: bool,
    },
    /// CR after a lone dot.
    DotCr {
        proper: bool,
    },
    InLine,
    Cr,
}

/// Decoder for DATA content.
#[derive(Debug)]
pub struct DotDecoder {
    state: State,
    bare: Bare,
    /// A NUL byte was seen (and dropped).
    pub saw_nul: bool,
    /// A bare CR or LF was normalised.
    pub normalized: bool,
}

impl DotDecoder {
    pub fn new(bare: Bare) -> DotDecoder {
        DotDecoder { state: State::LineStart { proper: true }, bare, saw_nul: false, normalized: false }
    }

    /// Decode from `input`, appending content (CR LF line ends, dots
    /// unstuffed) to `out`. Returns how many bytes were consumed and why it
    /// stopped.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Status) {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::InLine {
                // Inside a line only NUL, CR and LF mean anything: copy the
                // run up to the next one as it is.
                let run = memchr::memchr3(0, b'\r', b'\n', &input[i..]).unwrap_or(input.len() - i);
                out.extend_from_slice(&input[i..i + run]);
                i += run;
                if i == input.len() {
                    break;
                }
            }
            let b = input[i];
            i += 1;
            if b == 0 {
                // A NUL is dropped, but counts as content: it breaks a lone-dot
                // line, and after a CR it makes that CR bare.
                self.saw_nul = true;
                if matches!(self.state, State::Cr | State::DotCr { .. }) && self.bare(out).is_some() {
                    return (i, Status::BareLine);
                }
                self.state = State::InLine;
                continue;
            }
            match self.step(b, out) {
                Some(Status::End) => return (i, Status::End),
                Some(Status::BareLine) => return (i, Status::BareLine),
                _ => {}
            }
        }
        (input.len(), Status::More)
    }

    fn bare(&mut self, out: &mut Vec<u8>) -> Option<Status> {
        match self.bare {
            Bare::Reject => Some(Status::BareLine),
            Bare::Normalize => {
                self.normalized = true;
                out.extend_from_slice(b"\r\n");
                self.state = State::LineStart { proper: false };
                None
            }
        }
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> Option<Status> {
        match (self.state, b) {
            (State::LineStart { proper }, b'.') => self.state = State::Dot { proper },
            (State::LineStart { .. }, b'\r') | (State::InLine, b'\r') => self.state = State::Cr,
            (State::LineStart { .. }, b'\n') | (State::InLine, b'\n') => return self.bare(out),
            (State::LineStart { .. }, _) | (State::InLine, _) => {
                out.push(b);
                self.state = State::InLine;
            }
            (State::Dot { proper }, b'\r') => self.state = State::DotCr { proper },
            // ".\n": a lone dot ended by a bare LF is never the end of data.
            (State::Dot { .. }, b'\n') => return self.bare(out),
            // A stuffed dot: drop it, keep what follows (".." gives ".").
            (State::Dot { .. }, _) => {
                out.push(b);
                self.state = State::InLine;
            }
            (State::DotCr { proper: true }, b'\n') => return Some(Status::End),
            (State::DotCr { proper: false }, b'\n') => {
                // Only reachable in Normalize mode: a lone-dot line after a
                // normalised line end is an empty line, not the end.
                out.extend_from_slice(b"\r\n");
                self.state = State::LineStart { proper: true };
            }
            (State::DotCr { .. }, _) => {
                let r = self.bare(out);
                if r.is_none() {
                    return self.step(b, out);
                }
                return r;
            }
            (State::Cr, b'\n') => {
                out.extend_from_slice(b"\r\n");
                self.state = State::LineStart { proper: true };
            }
            (State::Cr, _) => {
                let r = self.bare(out);
                if r.is_none() {
                    return self.step(b, out);
                }
                return r;
            }
        }
        None
    }
}

/// Checks BDAT chunks (raw content, no dot-stuffing) for bare CR and LF,
/// across chunk boundaries.
#[derive(Debug)]
pub struct ChunkChecker {
    bare: Bare,
    cr: bool,
    pub saw_nul: bool,
    pub normalized: bool,
    /// A violation was seen (Reject mode); the transaction fails.
    pub violated: bool,
}

impl ChunkChecker {
    pub fn new(bare: Bare) -> ChunkChecker {
        ChunkChecker { bare, cr: false, saw_nul: false, normalized: false, violated: false }
    }

    /// Check and copy `input` to `out` (normalising when configured).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            match (self.cr, b) {
                (_, 0) => {
                    self.saw_nul = true;
                    if self.cr {
                        self.bare_cr(out);
                    }
                    self.cr = false;
                }
                (true, b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    self.cr = false;
                }
                (true, b'\r') => self.bare_cr(out),
                (true, _) => {
                    self.bare_cr(out);
                    self.cr = false;
                    out.push(b);
                }
                (false, b'\r') => self.cr = true,
                (false, b'\n') => self.bare_lf(out),
                (false, _) => out.push(b),
            }
        }
    }

    /// At the LAST chunk: a CR left dangling is bare.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.cr {
            self.bare_cr(out);
            self.cr = false;
        }
    }

    fn bare_cr(&mut self, out: &mut Vec<u8>) {
        match self.bare {
            Bare::Reject => self.violated = true,
            Bare::Normalize => {
                self.normalized = true;
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    fn bare_lf(&mut self, out: &mut Vec<u8>) {
        match self.bare {
            Bare::Reject => self.violated = true,
            Bare::Normalize => {
                self.normalized = true;
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! The message as sendmail reads it from standard input, converted as it
//! streams: CRLF line ends whatever came in (LF and bare CR each become
//! CRLF), a leading mbox `From ` line dropped, and, unless `-i`, a line
//! holding only `.` taken as the end of the message, as Sendmail does.
//! Dots are not unstuffed: `..` stays `..`. The output does not depend on
//! how the input is cut into chunks.
//!
//! Trusts: nothing; keeps at most a few bytes of state between chunks,
//! whatever the input.

use memchr::{memchr, memchr2};

/// What the mbox envelope line starts with.
const ENVELOPE: &[u8; 5] = b"From ";

/// Where the converter stands between two bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of input, the first `n` bytes of `From ` seen (held).
    Start(u8),
    /// Dropping the mbox envelope line, up to its LF.
    SkipEnvelope,
    /// At the start of a line.
    LineStart,
    /// The line so far is `.` (held).
    Dot,
    /// The line so far is `.` and a CR (held).
    DotCr,
    InLine,
    /// A CR was seen (held) in a line.
    Cr,
    /// The end was seen: the rest is ignored.
    Done,
}

/// The streaming converter; [`Input::feed`] each chunk, then
/// [`Input::finish`] at end of input.
#[derive(Clone, Debug)]
pub struct Input {
    ignore_dots: bool,
    state: State,
}

impl Input {
    /// `ignore_dots`: `-i`; a line holding only `.` is content.
    pub fn new(ignore_dots: bool) -> Input {
        Input { ignore_dots, state: State::Start(0) }
    }

    /// Convert `data`, appending to `out`. True once the end of the message
    /// (the `.` line) was seen; the rest of the input is then ignored.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Done => break,
                State::InLine => {
                    // Copy the run up to the next line end in one go, then
                    // take the line end.
                    let n = memchr2(b'\r', b'\n', &data[i..]).unwrap_or(data.len() - i);
                    out.extend_from_slice(&data[i..i + n]);
                    i += n;
                    if let Some(&end) = data.get(i) {
                        self.push(end, out);
                        i += 1;
                    }
                }
                State::SkipEnvelope => match memchr(b'\n', &data[i..]) {
                    Some(n) => {
                        i += n + 1;
                        self.state = State::LineStart;
                    }
                    None => i = data.len(),
                },
                _ => {
                    self.push(data[i], out);
                    i += 1;
                }
            }
        }
        self.state == State::Done
    }

    /// At end of input: flush what is held and end a last line that has no
    /// line end with CRLF. A last line holding only `.` (without `-i`)
    /// ends the message as it would with a line end.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let State::Start(n) = self.state {
            self.state = State::LineStart;
            self.replay(n, out);
        }
        match self.state {
            State::InLine | State::Cr => out.extend_from_slice(b"\r\n"),
            State::Start(_) | State::SkipEnvelope | State::LineStart | State::Dot | State::DotCr | State::Done => {}
        }
        self.state = State::Done;
    }

    /// Take one byte.
    fn push(&mut self, b: u8, out: &mut Vec<u8>) {
        while !self.step(b, out) {}
    }

    /// The held start of `From `, once it turned out not to be one.
    fn replay(&mut self, n: u8, out: &mut Vec<u8>) {
        for &held in &ENVELOPE[..usize::from(n)] {
            self.push(held, out);
        }
    }

    /// One transition; false when `b` is still to be taken in the new
    /// state.
    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        match self.state {
            State::Start(n) => {
                if b == ENVELOPE[usize::from(n)] {
                    self.state =
                        if usize::from(n) + 1 == ENVELOPE.len() { State::SkipEnvelope } else { State::Start(n + 1) };
                    return true;
                }
                self.state = State::LineStart;
                self.replay(n, out);
                return false;
            }
            State::SkipEnvelope => {
                if b == b'\n' {
                    self.state = State::LineStart;
                }
            }
            State::LineStart => {
                if b != b'.' || self.ignore_dots {
                    self.state = State::InLine;
                    return false;
                }
                self.state = State::Dot;
            }
            State::Dot => match b {
                b'\n' => self.state = State::Done,
                b'\r' => self.state = State::DotCr,
                _ => {
                    out.push(b'.');
                    self.state = State::InLine;
                    return false;
                }
            },
            State::DotCr => match b {
                b'\n' => self.state = State::Done,
                b'\r' => {}
                _ => {
                    // A bare CR after the dot: a space, as any other
                    // bare CR, and not the end of the message.
                    out.extend_from_slice(b". ");
                    self.state = State::InLine;
                    return false;
                }
            },
            State::InLine => match b {
                b'\r' => self.state = State::Cr,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.state = State::LineStart;
                }
                _ => out.push(b),
            },
            // CRs before a LF are part of the line end (CR CR LF, as some
            // programs write, is one line end); a CR inside a line is a
            // space: it must neither end a header field early (losing
            // the fields after it to the body) nor go out bare.
            State::Cr => match b {
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.state = State::LineStart;
                }
                b'\r' => {}
                _ => {
                    out.push(b' ');
                    self.state = State::InLine;
                    return false;
                }
            },
            State::Done => {}
        }
        true
    }
}

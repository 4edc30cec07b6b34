use super::*;
use proptest::prelude::*;

/// Collects lines with CR LF ends.
#[derive(Default)]
struct Lines(Vec<u8>);

impl LineSink for Lines {
    fn text(&mut self, bytes: &[u8]) {
        assert!(!bytes.contains(&b'\r') && !bytes.contains(&b'\n'));
        self.0.extend_from_slice(bytes);
    }
    fn end_line(&mut self) {
        self.0.extend_from_slice(b"\r\n");
    }
}

/// Feed CR LF separated `input`, each line's text cut into pieces of at
/// most `piece` bytes.
fn convert_with(input: &[u8], piece: usize, limits: MimeLimits) -> (Vec<u8>, Option<MimeError>) {
    let mut d = Downgrade::new(limits);
    let mut out = Lines::default();
    let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let unterminated = lines.pop().filter(|l| !l.is_empty());
    for l in lines {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        for p in l.chunks(piece.max(1)) {
            d.text(p, &mut out);
        }
        d.end_line(&mut out);
    }
    if let Some(l) = unterminated {
        d.text(l, &mut out);
    }
    d.finish(&mut out);
    (out.0, d.error())
}

fn convert(input: &str) -> String {
    String::from_utf8(convert_with(input.as_bytes(), usize::MAX, MimeLimits::default()).0).unwrap()
}

/// Decode quoted-printable lines (CR LF separated).
fn qp_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut lines = text.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() && line.is_empty() {
            break;
        }
        let line = line.strip_suffix(b"\r").expect("CR LF line ends");
        let (line, soft) = match line.strip_suffix(b"=") {
            Some(l) => (l, true),
            None => (line, false),
        };
        let mut i = 0;
        while i < line.len() {
            if line[i] == b'=' {
                let hex = std::str::from_utf8(&line[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(line[i]);
                i += 1;
            }
        }
        if !soft {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

#[test]
fn eight_bit_text_part_becomes_quoted_printable() {
    let input = "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Transfer-Encoding: 8bit\r\nSubject: x\r\n\r\nGrüße, café = 1 \r\n.\r\n";
    let expected = "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
                    Subject: x\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
                    Gr=C3=BC=C3=9Fe, caf=C3=A9 =3D 1=20\r\n.\r\n";
    assert_eq!(convert(input), expected);
}

#[test]
fn message_without_mime_headers_is_sent_unchanged() {
    let input = "From: a@example.org\r\nSubject: Grüße\r\n\r\nNo MIME here: ü\r\n";
    assert_eq!(convert(input), input);
}

#[test]
fn multipart_parts_are_converted_one_by_one() {
    let input = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n\tboundary=\"b1\"\r\n\
                 Content-Transfer-Encoding: 8bit\r\n\r\npreamble\r\n\
                 --b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8BIT\r\n\r\nhéllo\r\n\
                 --b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n\
                 --b1\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n\
                 --b1--\r\nepilogue\r\n";
    let expected = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n\tboundary=\"b1\"\r\n\
                    Content-Transfer-Encoding: 7bit\r\n\r\npreamble\r\n\
                    --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\
                    Content-Transfer-Encoding: quoted-printable\r\n\r\nh=C3=A9llo\r\n\
                    --b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n\
                    --b1\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n\
                    --b1--\r\nepilogue\r\n";
    assert_eq!(convert(input), expected);
}

#[test]
fn nested_message_is_labelled_7bit_and_its_body_converted() {
    let input = "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
                 Subject: inner\r\nContent-Transfer-Encoding: binary\r\n\r\nÅ\r\n";
    let expected = "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\
                    Subject: inner\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=85\r\n";
    assert_eq!(convert(input), expected);
}

#[test]
fn digest_parts_default_to_message_rfc822() {
    let input = "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n\
                 Content-Transfer-Encoding: 8bit\r\n\r\nü\r\n--d--\r\n";
    let out = convert(input);
    assert!(out.contains("\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=BC\r\n--d--\r\n"), "{out}");
}

#[test]
fn outer_boundary_closes_inner_parts() {
    let input = "Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\n\
                 Content-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\n\
                 Content-Transfer-Encoding: 8bit\r\n\r\né\r\n--outer\r\nContent-Type: text/plain\r\n\r\né\r\n--outer--\r\n";
    let out = convert(input);
    // The part after --outer is not the 8-bit inner part any more.
    assert!(out.ends_with("--outer\r\nContent-Type: text/plain\r\n\r\né\r\n--outer--\r\n"), "{out}");
    assert!(out.contains("=C3=A9\r\n--outer\r\n"), "{out}");
}

#[test]
fn long_lines_get_soft_breaks_and_trailing_blanks_are_encoded() {
    let body = format!("{}\t\r\n{} \r\n", "é".repeat(100), "x".repeat(200));
    let input = format!("Content-Transfer-Encoding: 8bit\r\n\r\n{body}");
    let out = convert(&input);
    let (_, encoded) = out.split_once("\r\n\r\n").unwrap();
    for line in encoded.split("\r\n") {
        assert!(line.len() <= 76, "{line}");
        assert!(!line.ends_with(' ') && !line.ends_with('\t'));
    }
    assert_eq!(qp_decode(encoded.as_bytes()), body.as_bytes());
}

#[test]
fn a_soft_break_never_makes_a_boundary_line() {
    // A text part whose long line goes on with `--b1--` right where the
    // soft break falls: the next encoded line must not read as the
    // closing boundary (the parts after it would fall into the epilogue).
    // (é is 6 encoded bytes: with 67 more the line is full at the dash.)
    let line = format!("é{}--b1--", "a".repeat(67));
    let input = format!(
        "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{line}\r\n-- \r\nsig\r\n--b1\r\n\r\nnext part\r\n--b1--\r\n"
    );
    let out = convert(&input);
    let boundaries: Vec<&str> = out.split("\r\n").filter(|l| l.starts_with("--b1")).collect();
    assert_eq!(boundaries, ["--b1", "--b1", "--b1--"], "{out}");
    let (_, part) = out.split_once("quoted-printable\r\n\r\n").unwrap();
    let (encoded, _) = part.split_once("\r\n--b1\r\n").unwrap();
    assert_eq!(qp_decode(format!("{encoded}\r\n").as_bytes()), format!("{line}\r\n-- \r\nsig\r\n").as_bytes());
}

#[test]
fn nesting_beyond_the_limit_is_an_error() {
    let mut input = String::new();
    for i in 0..25 {
        input.push_str(&format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"));
    }
    input.push_str("\r\nx\r\n");
    let (_, err) = convert_with(input.as_bytes(), usize::MAX, MimeLimits::default());
    assert_eq!(err, Some(MimeError::Nesting));
    let (_, err) = convert_with(input.as_bytes(), usize::MAX, MimeLimits { depth: 30, ..MimeLimits::default() });
    assert_eq!(err, None);
}

#[test]
fn over_long_header_passes_through_and_conversion_goes_on() {
    let long = format!("X-Long: {}\r\n\t{}\r\n", "a".repeat(5000), "b".repeat(5000));
    let input = format!("{long}Content-Transfer-Encoding: 8bit\r\n\r\nü\r\n");
    let limits = MimeLimits { header: 1000, ..MimeLimits::default() };
    let (out, _) = convert_with(input.as_bytes(), 7, limits);
    let expected = format!("{long}Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=BC\r\n");
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

#[test]
fn non_header_line_ends_the_primary_headers_with_an_empty_line() {
    let input = "Content-Transfer-Encoding: 8bit\r\nnot a header ü\r\n";
    assert_eq!(convert(input), "Content-Transfer-Encoding: quoted-printable\r\n\r\nnot a header =C3=BC\r\n");
    // Also when the line is longer than the header bound.
    let long = format!("Content-Transfer-Encoding: 8bit\r\n{}\r\n", "x ".repeat(600));
    let (out, _) = convert_with(long.as_bytes(), 3, MimeLimits { header: 100, ..MimeLimits::default() });
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("Content-Transfer-Encoding: quoted-printable\r\n\r\nx x "), "{out}");
}

#[test]
fn message_of_headers_only_still_gets_its_label() {
    assert_eq!(
        convert("Content-Transfer-Encoding: 8bit\r\nSubject: x"),
        "Subject: x\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    );
}

fn single_part(body: &[u8]) -> Vec<u8> {
    let mut m = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".to_vec();
    m.extend_from_slice(body);
    m
}

proptest! {
    #[test]
    fn quoted_printable_decodes_to_the_body(
        lines in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no line end", |b| *b != b'\r' && *b != b'\n'), 0..200), 0..6),
        piece in 1usize..50,
    ) {
        let mut body = Vec::new();
        for l in &lines {
            body.extend_from_slice(l);
            body.extend_from_slice(b"\r\n");
        }
        let (out, err) = convert_with(&single_part(&body), piece, MimeLimits::default());
        prop_assert_eq!(err, None);
        prop_assert!(out.iter().all(|b| b.is_ascii()));
        let text = &out[out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
        for line in text.split(|&b| b == b'\n') {
            prop_assert!(line.len() <= 77);
        }
        prop_assert_eq!(qp_decode(text), body);
    }

    #[test]
    fn output_does_not_depend_on_how_lines_are_cut(
        input in proptest::collection::vec(prop_oneof![
            Just(b"\r\n".to_vec()), Just(b"--b".to_vec()), Just(b"--".to_vec()), Just(b" ".to_vec()),
            Just(b"Content-Type: multipart/mixed; boundary=b".to_vec()), Just(b"Content-Transfer-Encoding: 8bit".to_vec()),
            Just(b"Content-Type: message/rfc822".to_vec()), Just("é=x:".as_bytes().to_vec()),
        ], 0..40),
        piece in 1usize..12,
    ) {
        let input = input.concat();
        let limits = MimeLimits { header: 64, depth: 3, boundary: 8 };
        prop_assert_eq!(convert_with(&input, usize::MAX, limits), convert_with(&input, piece, limits));
    }
}

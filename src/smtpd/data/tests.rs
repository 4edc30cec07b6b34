use super::*;
use proptest::prelude::*;

fn decode(bare: Bare, input: &[u8]) -> (Vec<u8>, Status, usize, bool) {
    let mut d = DotDecoder::new(bare);
    let mut out = Vec::new();
    let (n, st) = d.feed(input, &mut out);
    (out, st, n, d.saw_nul)
}

#[test]
fn plain_message() {
    let (out, st, n, _) = decode(Bare::Reject, b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    assert_eq!(st, Status::End);
    assert_eq!(out, b"Subject: x\r\n\r\nbody\r\n");
    assert_eq!(n, b"Subject: x\r\n\r\nbody\r\n.\r\n".len());
}

#[test]
fn empty_message() {
    let (out, st, n, _) = decode(Bare::Reject, b".\r\n");
    assert_eq!((out.as_slice(), st, n), (&b""[..], Status::End, 3));
}

#[test]
fn dot_unstuffing() {
    let (out, st, _, _) = decode(Bare::Reject, b"..leading\r\n...\r\nmid.dot\r\n.\r\n");
    assert_eq!(st, Status::End);
    assert_eq!(out, b".leading\r\n..\r\nmid.dot\r\n");
}

#[test]
fn split_anywhere_gives_the_same_result() {
    let msg = b"a\r\n..b\r\n\r\n.c\r\n.\r\n";
    for cut in 0..msg.len() {
        let mut d = DotDecoder::new(Bare::Reject);
        let mut out = Vec::new();
        let (n1, s1) = d.feed(&msg[..cut], &mut out);
        assert_eq!((n1, s1), (cut, Status::More));
        let (_, s2) = d.feed(&msg[cut..], &mut out);
        assert_eq!(s2, Status::End);
        assert_eq!(out, b"a\r\n.b\r\n\r\nc\r\n");
    }
}

/// Each smuggling variant: with the default policy it is a bare line (the
/// session refuses and closes); the end of data is never found early.
#[test]
fn smuggling_variants_are_never_end_of_data() {
    let variants: [&[u8]; 9] =
        [b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r\n.\r\r\n"];
    for v in variants {
        let mut input = b"Subject: x\r\n\r\nhello".to_vec();
        input.extend_from_slice(v);
        input.extend_from_slice(b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n");
        let (_, st, _, _) = decode(Bare::Reject, &input);
        assert_eq!(st, Status::BareLine, "variant {v:?}");
        // Normalising: still no end of data; the smuggled commands are content.
        let (out, st, _, _) = decode(Bare::Normalize, &input);
        assert_eq!(st, Status::More, "variant {v:?} ended data when normalised");
        assert!(out.windows(4).any(|w| w == b"MAIL"), "variant {v:?}");
    }
}

#[test]
fn nul_around_the_dot_is_not_end_of_data() {
    for v in [&b"\r\n\0.\r\n"[..], b"\r\n.\0\r\n", b"\r\n.\r\0\n"] {
        let mut input = b"hello".to_vec();
        input.extend_from_slice(v);
        input.extend_from_slice(b"MAIL FROM:<a@b.example>\r\n");
        let (_, st, _, nul) = decode(Bare::Reject, &input);
        assert_ne!(st, Status::End, "variant {v:?}");
        assert!(nul);
        let (_, st, _, _) = decode(Bare::Normalize, &input);
        assert_ne!(st, Status::End, "variant {v:?} normalised");
    }
}

#[test]
fn normalize_converts_bare_line_ends() {
    let (out, st, _, _) = decode(Bare::Normalize, b"a\nb\rc\r\n.\r\n");
    assert_eq!(st, Status::End);
    assert_eq!(out, b"a\r\nb\r\nc\r\n");
}

#[test]
fn long_lines_stream_uncut() {
    let mut input = vec![b'x'; 1_000_000];
    input.extend_from_slice(b"\r\n.\r\n");
    let (out, st, _, _) = decode(Bare::Reject, &input);
    assert_eq!(st, Status::End);
    assert_eq!(out.len(), 1_000_002);
}

#[test]
fn chunks_checked_across_boundaries() {
    let mut c = ChunkChecker::new(Bare::Reject);
    let mut out = Vec::new();
    c.feed(b"line\r", &mut out);
    c.feed(b"\nnext\r\n", &mut out);
    c.finish(&mut out);
    assert!(!c.violated);
    assert_eq!(out, b"line\r\nnext\r\n");
    for bad in [&b"a\nb"[..], b"a\rb", b"a\r"] {
        let mut c = ChunkChecker::new(Bare::Reject);
        let mut out = Vec::new();
        c.feed(bad, &mut out);
        c.finish(&mut out);
        assert!(c.violated, "{bad:?}");
    }
    let mut c = ChunkChecker::new(Bare::Normalize);
    let mut out = Vec::new();
    c.feed(b"a\nb\rc\r", &mut out);
    c.finish(&mut out);
    assert_eq!(out, b"a\r\nb\r\nc\r\n");
}

proptest! {
    /// smtp_data_no_panic, and: the content emitted never contains a bare
    /// CR or LF, and in Reject mode End is only reported right after CRLF.CRLF.
    #[test]
    fn smtp_data_decoder_properties(input in proptest::collection::vec(
        prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(0u8), Just(b'a')], 0..200)) {
        for bare in [Bare::Reject, Bare::Normalize] {
            let mut d = DotDecoder::new(bare);
            let mut out = Vec::new();
            let (n, st) = d.feed(&input, &mut out);
            prop_assert!(n <= input.len());
            for (i, &b) in out.iter().enumerate() {
                if b == b'\n' { prop_assert!(i > 0 && out[i - 1] == b'\r'); }
                if b == b'\r' { prop_assert!(out.get(i + 1) == Some(&b'\n')); }
            }
            if st == Status::End && bare == Bare::Reject {
                let consumed = &input[..n];
                prop_assert!(consumed.ends_with(b".\r\n"));
                prop_assert!(n == 3 || consumed[..n - 3].ends_with(b"\r\n"));
            }
        }
    }
}

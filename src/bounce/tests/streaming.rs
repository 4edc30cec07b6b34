//! Tests of how the composer reads the original and hands the report
//! out: short and interrupted reads, content that changes between the
//! passes, read errors, bounded chunks, and the property that any chunking
//! gives the same report.

use std::io;

use proptest::prelude::*;

use super::*;

// ----- the original's source -----

/// Serves `data` in short reads, now and then interrupted.
struct Choppy<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    calls: usize,
}

impl Original for Choppy<'_> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        let size = self.sizes[self.calls % self.sizes.len()];
        if size == 0 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = size.min(buf.len());
        let mut data = self.data;
        data.read_at(offset, &mut buf[..n])
    }
}

/// Serves `first` until it is read from offset 0 a second time, then `then`.
struct Changing {
    first: Vec<u8>,
    then: Vec<u8>,
    starts: usize,
}

impl Original for Changing {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset == 0 {
            self.starts += 1;
        }
        if self.starts < 2 { self.first.read_at(offset, buf) } else { self.then.read_at(offset, buf) }
    }
}

#[test]
fn content_changing_between_passes_is_an_error() {
    let m = big_message(2000);
    let r = report(Kind::Failure, None, vec![failed()], &m);
    let mut then = m.clone();
    let b = format!("--{}", candidate(0));
    then[ORIGINAL_HEADERS + 2..ORIGINAL_HEADERS + 2 + b.len()].copy_from_slice(b.as_bytes());
    let mut source = Changing { first: m.clone(), then, starts: 0 };
    let mut composer = Composer::new(r, Options::default()).unwrap();
    let err = loop {
        match composer.next_chunk(&mut source) {
            Ok(Some(_)) => {}
            Ok(None) => panic!("a report from changed content"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::ContentChanged), "{err}");
    assert!(matches!(composer.next_chunk(&mut source), Err(Error::Aborted)));
}

#[test]
fn short_content_and_read_errors() {
    let mut r = report(Kind::Failure, None, vec![failed()], ORIGINAL);
    r.original.content_len += 10;
    let err = compose(r, Options::default(), &mut ORIGINAL.to_vec()).unwrap_err();
    assert!(matches!(err, Error::ContentShort { offset, .. } if offset == ORIGINAL.len() as u64), "{err}");
    struct Failing;
    impl Original for Failing {
        fn read_at(&mut self, _: u64, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    let r = report(Kind::Failure, None, vec![failed()], ORIGINAL);
    let err = compose(r, Options::default(), &mut Failing).unwrap_err();
    assert_eq!(err.to_string(), "reading the original message at byte 0: disk on fire");
}

#[test]
fn chunks_stay_bounded() {
    let m = big_message(200_000);
    let recipients = (0..500).map(|i| RecipientReport { address: format!("u{i}@example.net"), ..failed() }).collect();
    let options = Options { size_limit: 1_000_000, read_size: 4096, ..Options::default() };
    let mut composer = Composer::new(report(Kind::Failure, None, recipients, &m), options).unwrap();
    let mut source = m.clone();
    let (mut total, mut chunks) = (0, 0);
    while let Some(chunk) = composer.next_chunk(&mut source).unwrap() {
        assert!(chunk.len() <= 4096, "{}", chunk.len());
        total += chunk.len();
        chunks += 1;
    }
    assert!(total > m.len() && chunks > 500);
}

// ----- any chunking, the same report -----

/// Content lines: header fields, folded lines, an empty line, body lines
/// with 8-bit bytes, long lines, bare CR or LF, and boundary look-alikes.
fn content() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        4 => "[A-Z][a-z]{0,8}: [ -~]{0,60}".prop_map(|s| format!("{s}\r\n").into_bytes()),
        2 => "[ \t][ -~]{0,40}".prop_map(|s| format!("{s}\r\n").into_bytes()),
        2 => Just(b"\r\n".to_vec()),
        3 => proptest::collection::vec(any::<u8>(), 0..120).prop_map(|mut v| { v.extend_from_slice(b"\r\n"); v }),
        1 => (990usize..1010).prop_map(|n| [vec![b'x'; n], b"\r\n".to_vec()].concat()),
        1 => (0usize..3).prop_map(|k| format!("--{}\r\n", candidate(k)).into_bytes()),
    ];
    proptest::collection::vec(line, 0..60).prop_map(|lines| lines.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_chunking_gives_the_same_report(
        content in content(),
        kind in 0usize..3,
        ret in 0usize..3,
        size_limit in prop_oneof![Just(0u64), 1u64..4000, Just(50_000)],
        read_size in 1usize..300,
        sizes in proptest::collection::vec(0usize..50, 1..8),
    ) {
        let (kind, action) =
            [(Kind::Failure, Action::Failed), (Kind::Delay, Action::Delayed), (Kind::Success, Action::Delivered)][kind];
        let ret = [None, Some(Ret::Full), Some(Ret::Headers)][ret];
        let recipient = rcpt("bob@example.net", action, "5.1.1", Diagnostic::Local("reason".into()));
        let r = report(kind, ret, vec![recipient], &content);
        let reference = compose(r.clone(), Options { size_limit, ..Options::default() }, &mut content.clone()).unwrap();
        let sizes = if sizes.iter().all(|&s| s == 0) { vec![1] } else { sizes };
        let mut choppy = Choppy { data: &content, sizes, calls: 0 };
        let options = Options { size_limit, read_size, ..Options::default() };
        let mut composer = Composer::new(r, options).unwrap();
        let plan = composer.plan(&mut choppy).unwrap().clone();
        let mut out = Vec::new();
        while let Some(chunk) = composer.next_chunk(&mut choppy).unwrap() {
            out.extend_from_slice(chunk);
        }
        prop_assert_eq!(&out, &reference);
        prop_assert!(plan.returned.bytes() <= size_limit);
        let parsed = Parsed { raw: out, plan };
        check(&parsed);
        if let Some(original) = parsed.parts().get(2) {
            prop_assert!(content.starts_with(original.body));
        }
    }
}

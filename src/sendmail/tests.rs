use std::ffi::OsString;

use proptest::prelude::*;

use super::args::{FlushTarget, Invocation, Mode, UsageError, parse, usage};
use super::headers::{HeaderError, HeaderOptions, parse_address_list, prepare, qualify, split_header};
use super::input::Input;
use crate::queue::{BodyType, Notify, Ret};

// ---- command line ----

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn run(args: &[&str]) -> Invocation {
    parse("sendmail", &os(args)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn fail(args: &[&str]) -> String {
    match parse("/usr/sbin/sendmail", &os(args)) {
        Ok(inv) => panic!("{args:?} parsed: {inv:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn plain_delivery() {
    let inv = run(&["alice@example.org", "bob"]);
    assert_eq!(inv.mode, Mode::Deliver);
    assert_eq!(inv.recipients, ["alice@example.org", "bob"]);
    assert_eq!(inv.sender, None);
    assert!(!inv.extract && !inv.ignore_dots && !inv.verbose && !inv.smtputf8);
    assert!(inv.warnings.is_empty());
}

#[test]
fn sender_attached_and_separate() {
    for args in [
        &["-f", "me@example.org", "u"][..],
        &["-fme@example.org", "u"],
        &["-r", "me@example.org", "u"],
        &["-rme@example.org", "u"],
    ] {
        assert_eq!(run(args).sender.as_deref(), Some("me@example.org"), "{args:?}");
    }
}

#[test]
fn sender_null_forms() {
    for args in [&["-f", "", "u"][..], &["-f", "<>", "u"], &["-f<>", "u"], &["-f", " <> ", "u"], &["-r<>", "u"]] {
        assert_eq!(run(args).sender.as_deref(), Some(""), "{args:?}");
    }
}

#[test]
fn sender_brackets_and_name_dropped() {
    assert_eq!(run(&["-f", "<me@example.org>", "u"]).sender.as_deref(), Some("me@example.org"));
    assert_eq!(run(&["-f", "Me Myself <me@example.org>", "u"]).sender.as_deref(), Some("me@example.org"));
    assert_eq!(run(&["-f", "root", "u"]).sender.as_deref(), Some("root"));
    assert_eq!(
        fail(&["-f", "a@example.org, b@example.org", "u"]),
        "-f: bad value \"a@example.org, b@example.org\" (one address, or <> for the null sender)"
    );
    assert!(fail(&["-f", "\"unclosed@example.org", "u"]).starts_with("-f: bad value"));
}

#[test]
fn full_name_config_and_values() {
    let inv = run(&["-F", "Joe Q. Public", "-C", "/etc/mta/other.conf", "u"]);
    assert_eq!(inv.full_name.as_deref(), Some("Joe Q. Public"));
    assert_eq!(inv.config.as_deref(), Some(std::path::Path::new("/etc/mta/other.conf")));
    let inv = run(&["-FJoe", "-C/x.conf", "u"]);
    assert_eq!(inv.full_name.as_deref(), Some("Joe"));
    assert_eq!(inv.config.as_deref(), Some(std::path::Path::new("/x.conf")));
    assert!(fail(&["-F", "Joe\r\nBcc: victim@example.org", "u"]).starts_with("-F: bad value"));
    assert!(fail(&["-F", &"x".repeat(257), "u"]).starts_with("-F: bad value"));
}

#[test]
fn dsn_options() {
    let inv = run(&["-N", "success,FAILURE", "-R", "hdrs", "-V", "env-1", "-B", "8BITMIME", "-SMTPUTF8", "u"]);
    assert_eq!(inv.notify, Some(Notify::On { success: true, failure: true, delay: false }));
    assert_eq!(inv.ret, Some(Ret::Headers));
    assert_eq!(inv.envid.as_deref(), Some("env-1"));
    assert_eq!(inv.body, Some(BodyType::EightBitMime));
    assert!(inv.smtputf8);
    let inv = run(&["-Nnever", "-Rfull", "-Vx", "-B7bit", "u"]);
    assert_eq!(inv.notify, Some(Notify::Never));
    assert_eq!(inv.ret, Some(Ret::Full));
    assert_eq!(inv.envid.as_deref(), Some("x"));
    assert_eq!(inv.body, Some(BodyType::SevenBit));
    assert_eq!(
        run(&["-N", "delay, failure", "u"]).notify,
        Some(Notify::On { success: false, failure: true, delay: true })
    );
    assert_eq!(run(&["-N", "NEVER", "u"]).notify, Some(Notify::Never));
}

#[test]
fn dsn_values_checked() {
    assert_eq!(fail(&["-N", "sometimes", "u"]), "-N: bad value \"sometimes\" (never, or success,failure,delay)");
    assert!(fail(&["-N", "never,success", "u"]).starts_with("-N: bad value"));
    assert!(fail(&["-N", "", "u"]).starts_with("-N: bad value"));
    assert!(fail(&["-N", "success,,delay", "u"]).starts_with("-N: bad value"));
    assert_eq!(fail(&["-R", "some", "u"]), "-R: bad value \"some\" (full or hdrs)");
    assert!(fail(&["-V", "has space", "u"]).starts_with("-V: bad value"));
    assert!(fail(&["-V", &"x".repeat(101), "u"]).starts_with("-V: bad value"));
    assert!(run(&["-V", &"x".repeat(100), "u"]).envid.is_some());
    assert_eq!(fail(&["-B", "BINARYMIME", "u"]), "-B: bad value \"BINARYMIME\" (7BIT or 8BITMIME)");
}

#[test]
fn ignore_dots_forms() {
    for args in [
        &["-i", "u"][..],
        &["-oi", "u"],
        &["-o", "i", "u"],
        &["-oitrue", "u"],
        &["-O", "IgnoreDots", "u"],
        &["-OIgnoreDots=True", "u"],
        &["-ti", "u"],
    ] {
        assert!(run(args).ignore_dots, "{args:?}");
    }
    assert!(!run(&["-oi", "-oifalse", "u"]).ignore_dots);
    assert!(!run(&["-O", "IgnoreDots=no", "u"]).ignore_dots);
    assert!(fail(&["-oimaybe", "u"]).starts_with("-oi: bad value"));
}

#[test]
fn flag_clusters() {
    for args in [&["-ti"][..], &["-it"], &["-t", "-i"], &["-vti"]] {
        let inv = run(args);
        assert!(inv.extract && inv.ignore_dots, "{args:?}");
        assert!(inv.recipients.is_empty());
    }
    // A flag with a value ends the cluster, its value attached or next.
    let inv = run(&["-tif", "me@example.org"]);
    assert!(inv.extract && inv.ignore_dots);
    assert_eq!(inv.sender.as_deref(), Some("me@example.org"));
    let inv = run(&["-tfme@example.org", "u"]);
    assert!(inv.extract && !inv.ignore_dots);
    assert_eq!(inv.sender.as_deref(), Some("me@example.org"));
    assert!(run(&["-toi"]).ignore_dots);
    assert!(run(&["-v", "-v", "u"]).verbose);
}

#[test]
fn ignored_flags() {
    let inv = run(&[
        "-h",
        "5",
        "-h9",
        "-L",
        "label",
        "-Lx",
        "-m",
        "-U",
        "-Am",
        "-Ac",
        "-A",
        "m",
        "-G",
        "-c",
        "-x",
        "-oem",
        "-odb",
        "-om",
        "-oQ/var/spool/mqueue",
        "-oC",
        "-o7",
        "-O",
        "DeliveryMode=b",
        "-e",
        "m",
        "-p",
        "smtp:host",
        "-bm",
        "u",
    ]);
    assert_eq!(inv.mode, Mode::Deliver);
    assert_eq!(inv.recipients, ["u"]);
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    assert!(!inv.ignore_dots);
}

#[test]
fn ignored_flags_with_warnings() {
    let inv = run(&["-X", "/tmp/log", "-n", "-XV", "-oA/etc/aliases", "u"]);
    assert_eq!(inv.warnings.len(), 4, "{:?}", inv.warnings);
    assert!(inv.warnings[0].starts_with("-X /tmp/log:"));
    assert!(inv.warnings[1].starts_with("-n:"));
    assert!(inv.warnings[2].starts_with("-XV:"));
    assert!(inv.warnings[3].starts_with("-oA/etc/aliases:"));
    assert_eq!(run(&["-Xlog", "u"]).warnings.len(), 1);
}

#[test]
fn modes_by_flag() {
    assert_eq!(run(&["-bs"]).mode, Mode::Smtp);
    assert_eq!(run(&["-bp"]).mode, Mode::ListQueue);
    assert_eq!(run(&["-b", "p"]).mode, Mode::ListQueue);
    assert_eq!(run(&["-bi"]).mode, Mode::Aliases);
    assert_eq!(run(&["-I"]).mode, Mode::Aliases);
    assert_eq!(run(&["-bm", "u"]).mode, Mode::Deliver);
    assert_eq!(run(&["-bp", "-bm", "u"]).mode, Mode::Deliver);
}

#[test]
fn modes_by_program_name() {
    for (argv0, mode) in [
        ("mailq", Mode::ListQueue),
        ("/usr/bin/mailq", Mode::ListQueue),
        ("newaliases", Mode::Aliases),
        ("/usr/local/sbin/newaliases", Mode::Aliases),
        ("/usr/sbin/sendmail", Mode::Deliver),
    ] {
        let args = if mode == Mode::Deliver { os(&["u"]) } else { os(&[]) };
        assert_eq!(parse(argv0, &args).unwrap().mode, mode, "{argv0}");
    }
    assert_eq!(parse("/usr/bin/mailq", &os(&["-bm", "u"])).unwrap().mode, Mode::Deliver);
    assert_eq!(parse("mailq", &os(&["u"])).unwrap_err().to_string(), "listing the queue takes no recipients");
    assert!(parse("newaliases", &os(&["u"])).is_err());
    assert!(parse("mailq.real", &os(&[])).is_err(), "not mailq: delivery without recipients");
}

#[test]
fn flush_forms() {
    assert_eq!(run(&["-q"]).mode, Mode::Flush(FlushTarget::All));
    assert_eq!(run(&["-qf"]).mode, Mode::Flush(FlushTarget::All));
    assert_eq!(run(&["-v", "-q"]).mode, Mode::Flush(FlushTarget::All));
    assert_eq!(run(&["-vq"]).mode, Mode::Flush(FlushTarget::All));
    for interval in ["-q30m", "-q1h30m", "-q15", "-qp", "-qp5m"] {
        let inv = run(&[interval]);
        assert_eq!(inv.mode, Mode::Flush(FlushTarget::All), "{interval}");
        assert_eq!(inv.warnings.len(), 1, "{interval}");
    }
    assert_eq!(run(&["-qRexample.org"]).mode, Mode::Flush(FlushTarget::Site("example.org".into())));
    assert_eq!(run(&["-qI4F2A1B"]).mode, Mode::Flush(FlushTarget::QueueId("4F2A1B".into())));
    assert_eq!(fail(&["-qR"]), "-qR: bad value \"\" (a site name)");
    assert_eq!(fail(&["-qI"]), "-qI: bad value \"\" (a queue ID)");
    assert!(fail(&["-qSsender"]).starts_with("-qSsender is not supported"));
    assert!(fail(&["-q30x"]).starts_with("-q: bad value \"30x\""));
    assert_eq!(fail(&["-q", "u"]), "flushing the queue takes no recipients");
}

#[test]
fn daemon_and_other_modes_refused() {
    assert_eq!(
        fail(&["-bd"]),
        "-bd is not supported: the mail daemon is mta(8); start it with the system's service manager"
    );
    for flag in ["-bD", "-bl"] {
        assert!(fail(&[flag]).contains("mta(8)"), "{flag}");
    }
    for flag in ["-bv", "-bh", "-bH", "-bt", "-bP", "-bC", "-ba"] {
        assert!(fail(&[flag, "u"]).starts_with(&format!("{flag} is not supported: ")), "{flag}");
    }
    assert_eq!(fail(&["-bz"]), "unknown option -bz");
    assert_eq!(fail(&["-bpx"]), "unknown option -bpx");
}

#[test]
fn unknown_and_missing() {
    assert_eq!(fail(&["-z", "u"]), "unknown option -z");
    assert_eq!(fail(&["-tz", "u"]), "unknown option -z");
    assert_eq!(fail(&["-tö", "u"]), "unknown option -ö");
    assert_eq!(fail(&["-f"]), "option -f needs a value");
    assert_eq!(fail(&["-o"]), "option -o needs a value");
    assert_eq!(fail(&["-o", ""]), "option -o needs a value");
}

#[test]
fn recipients_and_end_of_options() {
    let inv = run(&["-t", "--", "-notaflag", "u"]);
    assert!(inv.extract);
    assert_eq!(inv.recipients, ["-notaflag", "u"]);
    // No permutation: once a recipient is seen, the rest are recipients.
    let inv = run(&["user", "-f", "x"]);
    assert_eq!(inv.sender, None);
    assert_eq!(inv.recipients, ["user", "-f", "x"]);
    // Each argument is an address list.
    let inv = run(&["Joe <joe@example.org>, bob", "bob", "\"two words\"@example.org"]);
    assert_eq!(inv.recipients, ["joe@example.org", "bob", "\"two words\"@example.org"]);
    assert!(fail(&["<unclosed@example.org"]).starts_with("bad recipient"));
    assert_eq!(fail(&[""]), "bad recipient \"\": no address");
}

#[test]
fn recipients_required_or_refused() {
    assert_eq!(fail(&[]), "no recipients given (and no -t)");
    assert_eq!(fail(&["-i", "-f", "me"]), "no recipients given (and no -t)");
    assert!(run(&["-t"]).recipients.is_empty());
    assert_eq!(fail(&["-bs", "u"]), "-bs takes no recipients");
    assert_eq!(fail(&["-bp", "-t"]), "-t can be used only when sending mail");
}

#[test]
fn not_utf8_refused() {
    use std::os::unix::ffi::OsStringExt;
    let args = vec![OsString::from("-f"), OsString::from_vec(vec![0xff, b'a']), OsString::from("u")];
    assert_eq!(parse("sendmail", &args).unwrap_err(), UsageError::NotUtf8 { index: 2 });
    assert_eq!(parse("sendmail", &args).unwrap_err().to_string(), "argument 2 is not valid UTF-8");
}

#[test]
fn usage_names_program() {
    let text = usage("sendmail");
    assert!(text.starts_with("usage: sendmail "));
    assert!(text.contains("-bp") && text.contains("mailq") && text.contains("newaliases"));
}

// ---- standard input ----

fn convert(input: &[u8], ignore_dots: bool) -> (Vec<u8>, bool) {
    let mut inp = Input::new(ignore_dots);
    let mut out = Vec::new();
    let ended = inp.feed(input, &mut out);
    inp.finish(&mut out);
    (out, ended)
}

fn text(input: &str, ignore_dots: bool) -> String {
    String::from_utf8(convert(input.as_bytes(), ignore_dots).0).unwrap()
}

#[test]
fn line_ends_become_crlf() {
    assert_eq!(text("a\nb\n", false), "a\r\nb\r\n");
    assert_eq!(text("a\r\nb\r\n", false), "a\r\nb\r\n");
    // A CR inside a line is a space; CRs before a LF are its line end.
    assert_eq!(text("a\rb\r\n", false), "a b\r\n");
    assert_eq!(text("a\r\rb", false), "a b\r\n");
    assert_eq!(text("a\r\r\nb\r\r\n", false), "a\r\nb\r\n");
    assert_eq!(text("a\r", false), "a\r\n");
    assert_eq!(text("last", false), "last\r\n");
    assert_eq!(text("", false), "");
    assert_eq!(text("\n\n", false), "\r\n\r\n");
}

#[test]
fn lone_dot_ends_message() {
    assert_eq!(convert(b"a\n.\nb\n", false), (b"a\r\n".to_vec(), true));
    assert_eq!(convert(b"a\r\n.\r\nb\r\n", false), (b"a\r\n".to_vec(), true));
    assert_eq!(convert(b".\n", false), (Vec::new(), true));
    assert_eq!(text("a\n.", false), "a\r\n", "a last line holding only . ends it too");
}

#[test]
fn dots_kept_otherwise() {
    assert_eq!(text("..\n", false), "..\r\n", "no unstuffing");
    assert_eq!(text(". \n", false), ". \r\n");
    assert_eq!(text(".x\n", false), ".x\r\n");
    assert_eq!(text("a.\n", false), "a.\r\n");
    assert_eq!(text(".\rb\n", false), ". b\r\n", "a bare CR is not LF or CRLF");
    assert_eq!(convert(b"a\n.\r\r\nb\n", false), (b"a\r\n".to_vec(), true), "CR CR LF ends the dot line");
    assert_eq!(convert(b"a\n.\nb\n", true), (b"a\r\n.\r\nb\r\n".to_vec(), false));
    assert_eq!(text(".", true), ".\r\n");
}

#[test]
fn mbox_from_line_dropped() {
    assert_eq!(
        text("From me@example.org Mon Jan  1 00:00:00 2024\nSubject: x\n\nbody\n", false),
        "Subject: x\r\n\r\nbody\r\n"
    );
    assert_eq!(text("From x\r\n.\r\n", false), "");
    assert_eq!(text("From: me@example.org\n", false), "From: me@example.org\r\n");
    assert_eq!(text("a\nFrom x\n", false), "a\r\nFrom x\r\n", "only the first line");
    assert_eq!(text(">From x\n", false), ">From x\r\n");
    assert_eq!(text("Fro", false), "Fro\r\n");
    assert_eq!(text("From", false), "From\r\n");
    assert_eq!(text("From x", false), "");
    assert_eq!(text(".From x\n", false), ".From x\r\n");
}

#[test]
fn rest_ignored_after_end() {
    let mut inp = Input::new(false);
    let mut out = Vec::new();
    assert!(!inp.feed(b"a\n", &mut out));
    assert!(inp.feed(b".\nmore\n", &mut out));
    assert!(inp.feed(b"still more", &mut out));
    inp.finish(&mut out);
    assert_eq!(out, b"a\r\n");
}

#[test]
fn byte_at_a_time_same_output() {
    let input = b"From x\nA: b\r\n\r\n..\r.x\r\n.\r\r\nlast\r";
    for ignore_dots in [false, true] {
        let whole = convert(input, ignore_dots).0;
        let mut inp = Input::new(ignore_dots);
        let mut out = Vec::new();
        for b in input {
            inp.feed(&[*b], &mut out);
        }
        inp.finish(&mut out);
        assert_eq!(out, whole);
    }
}

/// What the converter should give, written line by line.
fn reference(input: &[u8], ignore_dots: bool) -> Vec<u8> {
    let mut rest = input;
    if rest.starts_with(b"From ") {
        rest = rest.iter().position(|&b| b == b'\n').map_or(&rest[rest.len()..], |n| &rest[n + 1..]);
    }
    let mut out = Vec::new();
    while !rest.is_empty() {
        // Lines end at LF (or the input's end), CRs before it included;
        // each run of CRs inside a line is one space.
        let (raw, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(n) => (&rest[..n], &rest[n + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let mut end = raw.len();
        while end > 0 && raw[end - 1] == b'\r' {
            end -= 1;
        }
        let mut line = Vec::new();
        for (k, &b) in raw[..end].iter().enumerate() {
            match b {
                b'\r' if k > 0 && raw[k - 1] == b'\r' => {}
                b'\r' => line.push(b' '),
                _ => line.push(b),
            }
        }
        if !ignore_dots && line == b"." {
            break;
        }
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\r\n");
        rest = next;
    }
    out
}

fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'F'), Just(b'x'), Just(b' ')],
        0..64,
    )
    .prop_map(|mut v| {
        if v.first() == Some(&b'F') {
            v.splice(0..1, b"From ".iter().copied());
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn input_chunking_does_not_matter(input in message_bytes(), cuts in proptest::collection::vec(0usize..64, 0..8), ignore_dots in any::<bool>()) {
        let whole = convert(&input, ignore_dots).0;
        prop_assert_eq!(&whole, &reference(&input, ignore_dots));
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
        cuts.sort_unstable();
        let mut inp = Input::new(ignore_dots);
        let mut out = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([input.len()]) {
            inp.feed(&input[start..cut], &mut out);
            start = cut;
        }
        inp.finish(&mut out);
        prop_assert_eq!(&out, &whole);
        let mut inp = Input::new(ignore_dots);
        let mut bytewise = Vec::new();
        for b in &input {
            inp.feed(std::slice::from_ref(b), &mut bytewise);
        }
        inp.finish(&mut bytewise);
        prop_assert_eq!(&bytewise, &whole);
    }
}

// ---- header ----

const OPTS: HeaderOptions<'static> = HeaderOptions {
    extract: true,
    hostname: "host.example.org",
    from: "me@host.example.org",
    full_name: None,
    date: "Mon, 1 Jan 2024 00:00:00 +0000",
    message_id: "20240101000000.ABCDEF@host.example.org",
};

fn prep(header: &str, opts: &HeaderOptions<'_>) -> (String, Vec<String>, Vec<&'static str>) {
    let p = prepare(header.as_bytes(), opts).unwrap_or_else(|e| panic!("{header:?}: {e}"));
    (String::from_utf8(p.header).unwrap(), p.recipients, p.added)
}

#[test]
fn split_at_empty_line() {
    assert_eq!(split_header(b"A: b\r\n\r\nbody\r\n"), Some(8));
    assert_eq!(split_header(b"A: b\r\n c\r\n\r\n"), Some(12));
    assert_eq!(split_header(b"A: b\n\nbody"), Some(6));
    assert_eq!(split_header(b"\r\nbody"), Some(2));
    assert_eq!(split_header(b"Obsolete : form\r\n\r\n"), Some(19));
}

#[test]
fn split_at_first_non_header_line() {
    assert_eq!(split_header(b"A: b\r\nnot a header\r\n"), Some(6));
    assert_eq!(split_header(b"hello world\r\n"), Some(0));
    assert_eq!(split_header(b" starts with space\r\n"), Some(0));
    assert_eq!(split_header(b"A: b\r\n: no name\r\n"), Some(6));
    // A partial line decided already.
    assert_eq!(split_header(b"A: b\r\nnot a hea"), Some(6));
}

#[test]
fn split_undecided() {
    assert_eq!(split_header(b""), None);
    assert_eq!(split_header(b"A: b\r\n"), None);
    assert_eq!(split_header(b"A: b\r\nSubj"), None);
    assert_eq!(split_header(b"A: b\r\nSubject: x"), None);
    assert_eq!(split_header(b"A: b\r\n\r"), None);
    assert_eq!(split_header(b"A: b\r\n  more"), None);
}

#[test]
fn extract_to_cc_bcc() {
    let header = "From: me@host.example.org\r\n\
        To: \"Doe, John\" <john@example.org>, root (the admin),\r\n\
        \tfriends: anna@example.net, \"b c\"@example.net;, undisclosed-recipients:;\r\n\
        Cc: Carol <carol@Example.COM>, john@EXAMPLE.org\r\n\
        Subject: hi\r\n\
        Bcc: secret@example.org,\r\n  secret2 <secret2@example.org>\r\n\
        Date: x\r\nMessage-ID: <a@b>\r\n";
    let (out, recipients, added) = prep(header, &OPTS);
    assert_eq!(
        recipients,
        [
            "john@example.org",
            "root@host.example.org",
            "anna@example.net",
            "\"b c\"@example.net",
            "carol@Example.COM",
            "secret@example.org",
            "secret2@example.org",
        ]
    );
    assert!(added.is_empty());
    assert!(!out.to_ascii_lowercase().contains("bcc") && !out.contains("secret"), "{out}");
    assert!(out.ends_with("Date: x\r\nMessage-ID: <a@b>\r\n\r\n"), "{out}");
    assert!(out.contains("\tfriends: anna@example.net"), "continuation lines kept");
}

#[test]
fn extract_address_forms() {
    let list = |s: &str| parse_address_list(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
    assert_eq!(list("<@relay.example:u@example.org>"), ["u@example.org"]);
    assert_eq!(list("john . doe @ example . org"), ["john.doe@example.org"]);
    assert_eq!(list("\"john\"@example.org"), ["john@example.org"], "quotes that are not needed go");
    assert_eq!(list("\"a\\\"b\"@example.org"), ["\"a\\\"b\"@example.org"]);
    assert_eq!(list("u@[192.0.2.1]"), ["u@[192.0.2.1]"]);
    assert_eq!(list("(c1) u (c2 (nested)) @ example.org (c3)"), ["u@example.org"]);
    assert_eq!(list("=?utf-8?q?J=C3=B6rg?= <j@example.org>"), ["j@example.org"]);
    assert_eq!(list("a@example.org,, ,b@example.org"), ["a@example.org", "b@example.org"]);
    assert_eq!(list("<>"), Vec::<String>::new());
    assert_eq!(list("Jörg <jörg@bücher.example>"), ["jörg@bücher.example"]);
    for bad in [
        "John Smith",
        "a@b@c",
        "<a@b",
        "a@b>",
        "\"open",
        "(open",
        "@example.org",
        "u@",
        "u@example.",
        "a <b> c",
        "g: a;;",
        "g: h: a;",
        "u@[1.2",
    ] {
        assert!(parse_address_list(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn resent_fields_take_precedence() {
    let header = "From: a@example.org\r\nTo: old@example.org\r\nDate: x\r\nMessage-ID: <y>\r\n\
        Resent-To: new@example.org\r\nResent-Bcc: hidden@example.org\r\n  (more)\r\nBcc: oldhidden@example.org\r\n";
    let (out, recipients, added) = prep(header, &OPTS);
    assert_eq!(recipients, ["new@example.org", "hidden@example.org"]);
    assert!(!out.contains("hidden") && !out.contains("(more)"), "{out}");
    assert!(out.contains("To: old@example.org\r\n"));
    assert_eq!(added, ["Resent-Message-ID", "Resent-Date", "Resent-From"]);
    assert!(out.ends_with(
        "Resent-Message-ID: <20240101000000.ABCDEF@host.example.org>\r\n\
         Resent-Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nResent-From: me@host.example.org\r\n\r\n"
    ));
}

#[test]
fn resent_fields_without_recipients_hide_nobody() {
    // (A forwarding script that sets Resent-From: alone.)
    let header = "Resent-From: x@example.org\r\nTo: alice@example.org\r\nCc: bob@example.org\r\n";
    let (_, recipients, added) = prep(header, &OPTS);
    assert_eq!(recipients, ["alice@example.org", "bob@example.org"]);
    assert!(added.contains(&"Resent-Date"), "the Resent- forms are still the ones added: {added:?}");
}

#[test]
fn a_bare_cr_inside_a_header_field_does_not_end_the_header() {
    let mut inp = Input::new(true);
    let mut out = Vec::new();
    inp.feed(b"Subject: x\r\r\nTo: a@example.org\r\r\n\r\r\nhi\r\r\n", &mut out);
    inp.finish(&mut out);
    assert_eq!(out, b"Subject: x\r\nTo: a@example.org\r\n\r\nhi\r\n");
}

#[test]
fn missing_fields_appended() {
    let opts = HeaderOptions { extract: false, ..OPTS };
    let (out, recipients, added) = prep("Subject: hello\r\nTo: x@example.org\r\n", &opts);
    assert!(recipients.is_empty(), "no -t, no recipients");
    assert_eq!(added, ["Message-ID", "Date", "From"]);
    assert_eq!(
        out,
        "Subject: hello\r\nTo: x@example.org\r\n\
         Message-ID: <20240101000000.ABCDEF@host.example.org>\r\n\
         Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
         From: me@host.example.org\r\n\r\n"
    );
    let (out, _, added) = prep("", &opts);
    assert_eq!(added.len(), 3);
    assert!(out.starts_with("Message-ID: <") && out.ends_with("\r\n\r\n"));
}

#[test]
fn present_fields_not_added() {
    let opts = HeaderOptions { extract: false, ..OPTS };
    let header = "fROM: a@example.org\r\nDATE: x\r\nmessage-id: <z>\r\n\r\n";
    let (out, _, added) = prep(header, &opts);
    assert!(added.is_empty());
    assert_eq!(out, header);
    let (_, _, added) = prep("From : a@example.org\r\nDate:x\r\n", &opts);
    assert_eq!(added, ["Message-ID"]);
}

#[test]
fn bcc_removed_without_extract() {
    let opts = HeaderOptions { extract: false, ..OPTS };
    let (out, recipients, _) = prep("BCC: a@example.org,\r\n b@example.org\r\nTo: c@example.org\r\n", &opts);
    assert!(recipients.is_empty());
    assert!(out.starts_with("To: c@example.org\r\n"), "{out}");
}

#[test]
fn from_with_full_name() {
    let from = |name: Option<&str>, sender: &str| {
        let opts = HeaderOptions { extract: false, full_name: name, from: sender, ..OPTS };
        let (out, _, _) = prep("Date: x\r\nMessage-ID: <y>\r\n", &opts);
        out.strip_prefix("Date: x\r\nMessage-ID: <y>\r\nFrom: ").unwrap().strip_suffix("\r\n\r\n").unwrap().to_string()
    };
    assert_eq!(from(Some("Joe Public"), "joe@example.org"), "Joe Public <joe@example.org>");
    assert_eq!(from(Some("Joe  Q Public"), "joe@example.org"), "Joe Q Public <joe@example.org>");
    assert_eq!(from(Some("Joe Q. Public"), "joe@example.org"), "\"Joe Q. Public\" <joe@example.org>");
    assert_eq!(from(Some("Doe, \"JJ\" \\ John"), "j@example.org"), "\"Doe, \\\"JJ\\\" \\\\ John\" <j@example.org>");
    assert_eq!(from(Some("Jörg Müller"), "j@example.org"), "=?utf-8?q?J=C3=B6rg_M=C3=BCller?= <j@example.org>");
    assert_eq!(from(Some(""), "joe@example.org"), "joe@example.org");
    assert_eq!(from(None, "joe@example.org"), "joe@example.org");
    assert_eq!(from(None, ""), "MAILER-DAEMON@host.example.org");
    assert_eq!(from(None, "<>"), "MAILER-DAEMON@host.example.org");
    assert_eq!(from(Some("Mail System"), ""), "Mail System <MAILER-DAEMON@host.example.org>");
    let long = from(Some(&"ü".repeat(60)), "j@example.org");
    let lines: Vec<&str> = long.split("\r\n ").collect();
    assert!(lines.len() > 1 && lines.iter().all(|w| w.len() <= 75 + " <j@example.org>".len()), "{long}");
    assert!(lines.iter().all(|w| w.starts_with("=?utf-8?q?")), "{long}");
}

/// The added From: of a header prepared with `name` as the full name and
/// `sender`, its lines checked: none over 998 octets, the continuation
/// lines starting with a space.
fn long_from(name: &str, sender: &str) -> String {
    let opts = HeaderOptions { extract: false, full_name: Some(name), from: sender, ..OPTS };
    let (out, _, _) = prep("Date: x\r\nMessage-ID: <y>\r\n", &opts);
    let from = out.strip_prefix("Date: x\r\nMessage-ID: <y>\r\n").unwrap().strip_suffix("\r\n\r\n").unwrap();
    for (i, line) in from.split("\r\n").enumerate() {
        assert!(line.len() <= crate::header::MAX_LINE, "line {i}: {} octets", line.len());
        assert!(i == 0 || line.starts_with(' ') && !line.trim().is_empty(), "line {i}: {line:?}");
    }
    from.to_string()
}

/// The text of RFC 2047 Q-encoded words (as `display_name` writes them).
fn decode_q(words: &str) -> String {
    let mut bytes = Vec::new();
    for w in words.split_ascii_whitespace() {
        let q = w.strip_prefix("=?utf-8?q?").and_then(|w| w.strip_suffix("?=")).unwrap_or_else(|| panic!("{w}"));
        let mut it = q.bytes();
        while let Some(b) = it.next() {
            match b {
                b'_' => bytes.push(b' '),
                b'=' => {
                    let hex = [it.next().unwrap(), it.next().unwrap()];
                    bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
                }
                b => bytes.push(b),
            }
        }
    }
    String::from_utf8(bytes).unwrap()
}

#[test]
fn a_full_name_longer_than_a_line_is_folded_between_its_words() {
    // A GECOS name of 3000 octets: folded between its words and before
    // the address, which stays whole on its line.
    let name = "Firstname Lastname ".repeat(160);
    let name = name.trim();
    let from = long_from(name, "joe@example.org");
    assert!(from.split("\r\n").count() > 40, "{from}");
    assert_eq!(from.replace("\r\n", ""), format!("From: {name} <joe@example.org>"));
    assert!(from.ends_with(" <joe@example.org>"), "{from}");
    // The same as a quoted string: folded inside the quotes, at its spaces.
    let name = "Lastname, Firstname ".repeat(160);
    let name = name.trim();
    let from = long_from(name, "joe@example.org");
    assert_eq!(from.replace("\r\n", ""), format!("From: \"{name}\" <joe@example.org>"));
    // A word no line can hold: encoded words, which split anywhere.
    let name = format!("Jo {}", "x".repeat(1200));
    let from = long_from(&name, "joe@example.org");
    let value = from.replace("\r\n", "");
    let words = value.strip_prefix("From: ").unwrap().strip_suffix(" <joe@example.org>").unwrap();
    assert_eq!(decode_q(words), name);
    // The longest sender there may be, with a name: on its own line.
    let sender = format!("{}@example.org", "s".repeat(crate::header::MAX_SENDER - "@example.org".len()));
    let from = long_from("Joe Public", &sender);
    assert_eq!(from, format!("From: Joe Public\r\n <{sender}>"));
}

#[test]
fn control_characters_in_options_refused() {
    let opts = HeaderOptions { full_name: Some("x\r\nBcc: y"), ..OPTS };
    assert_eq!(prepare(b"", &opts), Err(HeaderError::BadOption { what: "full name" }));
    let opts = HeaderOptions { from: "a\n@b", ..OPTS };
    assert_eq!(prepare(b"", &opts), Err(HeaderError::BadOption { what: "sender" }));
    let opts = HeaderOptions { message_id: "a\rb", ..OPTS };
    assert!(prepare(b"", &opts).is_err());
}

#[test]
fn malformed_header_reported() {
    assert_eq!(prepare(b"A: b\r\nnot a header\r\n", &OPTS), Err(HeaderError::NotHeader { line: 2 }));
    assert_eq!(prepare(b" leading space\r\n", &OPTS), Err(HeaderError::NotHeader { line: 1 }));
    let p = prepare(b"To: John Smith, ann\r\n", &OPTS).unwrap();
    assert_eq!(p.recipients, ["ann@host.example.org"]);
    assert_eq!(
        p.unreadable.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["To: cannot read the address \"John Smith\": display name without <address>"]
    );
    let p = prepare(b"Cc: \xff@example.org, J\xf6rg <j@example.org>\r\n", &OPTS).unwrap();
    assert_eq!(p.recipients, ["j@example.org"]);
    assert_eq!(p.unreadable.len(), 1);
    assert_eq!(p.unreadable[0].reason, "not UTF-8");
    let long = format!("To: {}@example.org\r\n", "a".repeat(1012));
    assert!(prepare(long.as_bytes(), &OPTS).unwrap().unreadable.is_empty());
    let long = format!("To: {}@example.org, b@example.org\r\n", "a".repeat(1013));
    let p = prepare(long.as_bytes(), &OPTS).unwrap();
    assert_eq!(p.recipients, ["b@example.org"]);
    assert_eq!(p.unreadable[0].reason, "address longer than 1024 bytes");
    // Without -t the addresses are not read.
    let p = prepare(b"To: John Smith\r\n", &HeaderOptions { extract: false, ..OPTS }).unwrap();
    assert!(p.unreadable.is_empty());
}

#[test]
fn semicolons_groups_and_stray_text_in_address_fields() {
    let p = prepare(b"To: a@example.org; b@example.org;c\r\nCc: team: d, \"e;f\"@example.org; , (x, y) g\r\n", &OPTS)
        .unwrap();
    assert_eq!(
        p.recipients,
        [
            "a@example.org",
            "b@example.org",
            "c@host.example.org",
            "d@host.example.org",
            "\"e;f\"@example.org",
            "g@host.example.org"
        ]
    );
    assert!(p.unreadable.is_empty(), "{:?}", p.unreadable);
    let p = prepare(b"To: <a@example.org, b@example.org\r\nCc: c@example.org\r\n", &OPTS).unwrap();
    assert_eq!(p.recipients, ["c@example.org"]);
    assert_eq!(p.unreadable[0].reason, "unclosed '<'");
    // An IPv6 literal's colons start no group.
    let p = prepare(b"To: u@[IPv6:2001:db8::1], v@example.org\r\n", &OPTS).unwrap();
    assert_eq!(p.recipients, ["u@[IPv6:2001:db8::1]", "v@example.org"]);
    assert!(p.unreadable.is_empty(), "{:?}", p.unreadable);
}

#[test]
fn stops_at_empty_line() {
    let (out, recipients, _) = prep("To: a@example.org\r\n\r\nTo: b@example.org\r\nnot a header\r\n", &OPTS);
    assert_eq!(recipients, ["a@example.org"]);
    assert!(!out.contains("b@example.org"));
}

#[test]
fn lf_only_header_gets_crlf() {
    let (out, _, _) = prep("Subject: a\n b\nDate: x\nFrom: y\nMessage-ID: <z>\n", &OPTS);
    assert_eq!(out, "Subject: a\r\n b\r\nDate: x\r\nFrom: y\r\nMessage-ID: <z>\r\n\r\n");
}

#[test]
fn qualify_bare_local_parts() {
    assert_eq!(qualify("root", "host.example.org"), "root@host.example.org");
    assert_eq!(qualify("a@b.example", "host.example.org"), "a@b.example");
    assert_eq!(qualify("", "host.example.org"), "");
    assert_eq!(qualify("<>", "host.example.org"), "<>");
    assert_eq!(qualify("\"a@b\"", "host.example.org"), "\"a@b\"@host.example.org");
    assert_eq!(qualify("\"john doe\"@example.org", "host.example.org"), "\"john doe\"@example.org");
    assert_eq!(qualify("\"a\\\"@b\"", "h.example"), "\"a\\\"@b\"@h.example");
    assert_eq!(qualify("u@[192.0.2.1]", "h.example"), "u@[192.0.2.1]");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn prepare_no_panic(header in proptest::collection::vec(any::<u8>(), 0..512), extract in any::<bool>()) {
        let _ = prepare(&header, &HeaderOptions { extract, ..OPTS });
        let _ = split_header(&header);
    }

    #[test]
    fn prepare_no_panic_header_like(header in "([A-Za-z-]{1,8}:|[ \t]|[\"()<>@,;:.\\\\\\[\\]a-z ]{0,12}|\r\n|\n){0,40}") {
        let _ = prepare(header.as_bytes(), &OPTS);
    }

    #[test]
    fn address_list_no_panic(text in "\\PC{0,64}|[\"()<>@,;:.\\\\\\[\\] a-z\u{e9}]{0,64}") {
        if let Ok(list) = parse_address_list(&text) {
            for address in list {
                prop_assert!(!address.is_empty());
            }
        }
    }

    #[test]
    fn split_decision_holds_for_longer_input(msg in "([A-Za-z]{1,4}: ?x|[ \t]x|x y|)(\r\n|\n)?([A-Za-z]{1,4}: x|[ \t]x|x y|)(\r\n|\n)?([A-Za-z]{1,4}: x|[ \t]x|x y|)(\r\n|\n)?[a-z: ]{0,4}", cut in 0usize..64) {
        let msg = msg.as_bytes();
        let cut = cut.min(msg.len());
        if let Some(n) = split_header(&msg[..cut]) {
            prop_assert!(n <= cut);
            prop_assert_eq!(split_header(msg), Some(n));
        }
    }
}

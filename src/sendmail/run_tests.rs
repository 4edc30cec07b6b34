//! The plumbing against a stand-in postdrop: a shell script that keeps
//! the stream it is given and answers as postdrop does.

use std::io::Cursor;
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::maildrop::{Limits, Reader};
use crate::queue::{Notify, Ret};

/// A directory with a fake `postdrop` that saves its input to `stream`,
/// its arguments to `args`, and then exits with `status` after printing
/// `say` (to stdout on success, to stderr otherwise).
struct Fake {
    dir: PathBuf,
}

impl Fake {
    fn new(tag: &str, status: i32, say: &str) -> Fake {
        let dir = std::env::temp_dir().join(format!("mta-sendmail-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let out = if status == 0 { "" } else { ">&2" };
        let script = format!(
            "#!/bin/sh\necho \"$@\" > {d}/args\nenv > {d}/env\ncat > {d}/stream\necho '{say}' {out}\nexit {status}\n"
        );
        let p = dir.join("postdrop");
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Fake { dir }
    }

    fn context(&self) -> Context {
        let text = format!(
            "hostname = \"host.example\";\nlibexec_directory = \"{}\";\nlimits {{ header_size = 4kb; }}\n",
            self.dir.display()
        );
        Context { prog: String::from("sendmail"), config: Config::parse(&text).unwrap(), config_path: None }
    }

    /// The stream postdrop got, read back.
    fn stream(&self) -> (Envelope, Vec<u8>) {
        let bytes = std::fs::read(self.dir.join("stream")).unwrap();
        let (mut r, env) = Reader::new(&bytes[..], Limits::default()).unwrap();
        let mut content = Vec::new();
        while let Some(c) = r.next_chunk().unwrap() {
            content.extend_from_slice(&c);
        }
        (env, content)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn invocation(args: &[&str]) -> Invocation {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    parse("sendmail", &args).unwrap()
}

fn login() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid()).unwrap().unwrap().name
}

#[test]
fn extract_recipients_and_complete_the_header() {
    let fake = Fake::new("extract", 0, "0000FEED");
    let msg = "To: joe, Ann <ann@example.org>\nCc: bob@example.net\nBcc: secret@example.com\nSubject: hi\n\nbody line\n.\nnot read\n";
    let sent = fake.context().send(&invocation(&["-t", "extra@example.org"]), &mut Cursor::new(msg)).unwrap();
    assert_eq!(sent.name, "0000FEED");
    let (env, content) = fake.stream();
    assert_eq!(env.sender, format!("{}@host.example", login()));
    let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(
        rcpts,
        ["extra@example.org", "joe@host.example", "ann@example.org", "bob@example.net", "secret@example.com"]
    );
    let text = String::from_utf8(content).unwrap();
    assert!(text.starts_with("To: joe, Ann <ann@example.org>\r\nCc: bob@example.net\r\nSubject: hi\r\n"), "{text}");
    assert!(!text.contains("secret"), "Bcc must go: {text}");
    assert!(text.contains("\r\nMessage-ID: <") && text.contains("@host.example>\r\n"), "{text}");
    assert!(text.contains("\r\nDate: ") && text.contains("\r\nFrom: "), "{text}");
    assert!(text.contains(&format!("{}@host.example>\r\n", login())), "From: names the sender: {text}");
    assert!(text.ends_with("\r\n\r\nbody line\r\n"), "the dot line ends the message: {text}");
    // postdrop is run with no environment and no -C.
    assert_eq!(std::fs::read_to_string(fake.dir.join("args")).unwrap().trim(), "");
    let env_dump = std::fs::read_to_string(fake.dir.join("env")).unwrap();
    assert!(!env_dump.contains("HOME="), "{env_dump}");
}

#[test]
fn an_unreadable_header_address_stops_the_whole_message() {
    // `;` for `,`, a Latin-1 display name, a name without an address, and
    // an address of Latin-1 bytes: the last two cannot be read, and
    // nothing is sent (postdrop is not even run), so that the failing
    // exit status is true of every recipient and a caller that tries
    // again sends no copy twice.
    let fake = Fake::new("unreadable", 0, "0000BEEF");
    let msg = b"To: ann@example.org; bob@example.org\nCc: J\xf6rg <joerg@example.org>, John Smith, \xe9t\xe9@example.org\n\nbody\n";
    let f = fake.context().send(&invocation(&["-t"]), &mut Cursor::new(&msg[..])).unwrap_err();
    assert_eq!(f.code, EX_DATAERR);
    let (first, rest) = f.message.split_once("; ").unwrap();
    assert_eq!(first, "Cc: cannot read the address \"John Smith\": display name without <address>");
    assert!(rest.starts_with("Cc: cannot read the address") && rest.ends_with("not UTF-8; nothing was sent"), "{rest}");
    assert!(!fake.dir.join("stream").exists(), "postdrop was not run");
    assert_eq!(fake.context().deliver_with(&invocation(&["-t"]), &mut Cursor::new(&msg[..])), EX_DATAERR);
    assert!(!fake.dir.join("stream").exists(), "postdrop was not run");
    // An address cleanup would refuse, though it reads: the same.
    let msg = format!("To: ann@example.org, x@{}.example\n\nbody\n", "d".repeat(64));
    let f = fake.context().send(&invocation(&["-t"]), &mut Cursor::new(msg)).unwrap_err();
    assert_eq!(f.code, EX_DATAERR);
    assert!(f.message.starts_with("bad recipient address") && f.message.ends_with("nothing was sent"), "{}", f.message);
    assert!(!fake.dir.join("stream").exists(), "postdrop was not run");
    // Nobody readable: the same, and the caller hears why.
    let f = fake.context().send(&invocation(&["-t"]), &mut Cursor::new("To: John Smith\n\nbody\n")).unwrap_err();
    assert_eq!(f.code, EX_DATAERR);
    assert!(f.message.contains("\"John Smith\"") && f.message.ends_with("nothing was sent"), "{}", f.message);
    assert!(!fake.dir.join("stream").exists(), "postdrop was not run");
    // With every address readable, every recipient gets it, exit 0.
    let msg = b"To: ann@example.org; bob@example.org\nCc: J\xf6rg <joerg@example.org>\n\nbody\n";
    assert_eq!(fake.context().deliver_with(&invocation(&["-t"]), &mut Cursor::new(&msg[..])), 0);
    let (env, _) = fake.stream();
    let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["ann@example.org", "bob@example.org", "joerg@example.org"]);
    // What smtpd and cleanup take (as Postfix queues it), PHP's mail()
    // (-t -i) and the command line alike.
    let msg = "To: taro..yamada@docomo.ne.jp\n\nbody\n";
    assert_eq!(fake.context().deliver_with(&invocation(&["-t", "-i"]), &mut Cursor::new(msg)), 0);
    assert_eq!(fake.stream().0.recipients[0].address, "taro..yamada@docomo.ne.jp");
    let args = ["-i", "hanako.@docomo.ne.jp"];
    assert_eq!(fake.context().deliver_with(&invocation(&args), &mut Cursor::new("body\n")), 0);
    assert_eq!(fake.stream().0.recipients[0].address, "hanako.@docomo.ne.jp");
}

#[test]
fn a_sender_no_header_line_can_hold_is_refused_before_postdrop() {
    let fake = Fake::new("longsender", 0, "X");
    let max = crate::header::MAX_SENDER;
    let longest = format!("{}@example.org", "s".repeat(max - "@example.org".len()));
    let ok = fake.context().send(&invocation(&["-f", &longest, "u@example.org"]), &mut Cursor::new("\nbody\n"));
    assert_eq!(ok.unwrap().name, "X");
    let (env, content) = fake.stream();
    assert_eq!(env.sender, longest);
    assert!(content.split(|&b| b == b'\n').all(|l| l.len() <= crate::header::MAX_LINE + 1));
    let fake = Fake::new("longersender", 0, "X");
    let longer = format!("s{longest}");
    let f =
        fake.context().send(&invocation(&["-f", &longer, "u@example.org"]), &mut Cursor::new("\nbody\n")).unwrap_err();
    assert_eq!(f.code, EX_DATAERR);
    assert!(f.message.contains("longer than 983 octets"), "{}", f.message);
    assert!(!fake.dir.join("stream").exists(), "postdrop must not run");
}

#[test]
fn sender_name_and_dsn_options() {
    let fake = Fake::new("opts", 0, "N1");
    let inv = invocation(&[
        "-i",
        "-f",
        "list-bounces",
        "-F",
        "The List",
        "-N",
        "failure,delay",
        "-R",
        "hdrs",
        "-V",
        "env1",
        "u@example.org",
    ]);
    fake.context().send(&inv, &mut Cursor::new("Subject: x\n\n.\nkept\n")).unwrap();
    let (env, content) = fake.stream();
    assert_eq!(env.sender, "list-bounces@host.example");
    assert_eq!(env.ret, Some(Ret::Headers));
    assert_eq!(env.envid.as_deref(), Some("env1"));
    assert_eq!(env.recipients[0].notify, Some(Notify::On { success: false, failure: true, delay: true }));
    let text = String::from_utf8(content).unwrap();
    assert!(text.contains("From: The List <list-bounces@host.example>\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n.\r\nkept\r\n"), "-i keeps the dot line: {text}");
}

#[test]
fn a_large_body_streams_through_intact() {
    let fake = Fake::new("large", 0, "BIG");
    let mut msg = b"Subject: big\n\n".to_vec();
    for i in 0..40_000 {
        msg.extend_from_slice(format!("line {i} of the body, long enough to matter\n").as_bytes());
    }
    fake.context().send(&invocation(&["-i", "u@example.org"]), &mut Cursor::new(&msg)).unwrap();
    let (_, content) = fake.stream();
    let expected = String::from_utf8(msg[14..].to_vec()).unwrap().replace('\n', "\r\n");
    assert!(content.len() > 1_800_000);
    assert!(content.ends_with(expected.as_bytes()));
}

#[test]
fn postdrop_refusal_gives_its_status_and_words() {
    let fake = Fake::new("refuse", 65, "postdrop: message too big");
    let f = fake.context().send(&invocation(&["u@example.org"]), &mut Cursor::new("Subject: x\n\nbody\n")).unwrap_err();
    assert_eq!(f.code, EX_DATAERR);
    assert_eq!(f.message, "postdrop: message too big");
}

#[test]
fn no_recipient_in_the_header() {
    let fake = Fake::new("norcpt", 0, "X");
    let f = fake.context().send(&invocation(&["-t"]), &mut Cursor::new("Subject: x\n\nbody\n")).unwrap_err();
    assert_eq!(f.code, EX_USAGE);
    assert!(!fake.dir.join("stream").exists(), "postdrop must not run");
}

#[test]
fn oversized_header_is_refused() {
    let fake = Fake::new("bighdr", 0, "X");
    let msg = format!("Subject: {}\n\nbody\n", "x".repeat(5000));
    let f = fake.context().send(&invocation(&["u@example.org"]), &mut Cursor::new(msg)).unwrap_err();
    assert_eq!(f.code, EX_DATAERR);
    assert!(f.message.contains("header is larger than 4096"), "{}", f.message);
}

#[test]
fn header_grown_past_the_bound_by_added_fields_is_refused() {
    // Under 4,096 bytes as given; From:, Date: and Message-ID: push it
    // over, and cleanup would then refuse what postdrop had taken.
    let fake = Fake::new("grown", 0, "X");
    let msg = format!("Subject: {}\n\nbody\n", "x".repeat(4060));
    let f = fake.context().send(&invocation(&["u@example.org"]), &mut Cursor::new(msg)).unwrap_err();
    assert_eq!(f.code, EX_DATAERR);
    assert!(f.message.contains("header is larger than 4096"), "{}", f.message);
    assert!(!fake.dir.join("stream").exists(), "postdrop must not run");
}

#[test]
fn too_many_hops_are_refused_before_postdrop() {
    let fake = Fake::new("hops", 0, "X");
    let fifty = "Received: from a by b; Mon, 23 Nov 2026 08:00:00 +0000\n".repeat(50);
    let ok = fake.context().send(&invocation(&["u@example.org"]), &mut Cursor::new(format!("{fifty}\nbody\n")));
    assert_eq!(ok.unwrap().name, "X");
    let fake = Fake::new("hops51", 0, "X");
    let msg = format!("{fifty}Received: from c by a; Mon, 23 Nov 2026 08:00:00 +0000\n\nbody\n");
    let f = fake.context().send(&invocation(&["u@example.org"]), &mut Cursor::new(msg)).unwrap_err();
    assert_eq!(f.code, EX_DATAERR);
    assert!(f.message.contains("too many hops (51 Received: headers)"), "{}", f.message);
    assert!(!fake.dir.join("stream").exists(), "postdrop must not run");
}

#[test]
fn envelope_over_what_cleanup_takes_is_refused_before_postdrop() {
    // 6,000 recipients of 200 octets: over the 1 MiB cleanup takes in one
    // message, which pickup could only set aside, unbounced.
    let fake = Fake::new("bigenv", 0, "X");
    let rcpts: Vec<String> = (0..6000)
        .map(|i| format!("r{i:05}@{}.{}.{}.example.org", "d".repeat(60), "e".repeat(60), "f".repeat(60)))
        .collect();
    let mut args: Vec<&str> = vec!["-i"];
    args.extend(rcpts.iter().map(String::as_str));
    let f = fake.context().send(&invocation(&args), &mut Cursor::new("Subject: x\n\nbody\n")).unwrap_err();
    assert_eq!(f.code, EX_DATAERR);
    assert!(f.message.contains("6000 recipients"), "{}", f.message);
    assert!(!fake.dir.join("stream").exists(), "postdrop must not run");
    // A few hundred go through.
    let fake = Fake::new("bigenv-ok", 0, "X");
    let mut args: Vec<&str> = vec!["-i"];
    args.extend(rcpts[..300].iter().map(String::as_str));
    assert_eq!(fake.context().send(&invocation(&args), &mut Cursor::new("Subject: x\n\nbody\n")).unwrap().name, "X");
}

#[test]
fn bad_recipient_is_refused_before_postdrop() {
    let fake = Fake::new("badrcpt", 0, "X");
    let f = fake
        .context()
        .send(&invocation(&["-t"]), &mut Cursor::new("To: \"a\\\r\nb\"@example.org\n\nbody\n"))
        .unwrap_err();
    assert_eq!(f.code, EX_DATAERR, "{}", f.message);
    assert!(!fake.dir.join("stream").exists());
}

/// A client that writes each piece only after reading the replies to the
/// one before (one piece per read), as a client waiting for 354 does.
struct Pieces(std::collections::VecDeque<&'static str>);

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(p) = self.0.pop_front() else { return Ok(0) };
        assert!(p.len() <= buf.len());
        buf[..p.len()].copy_from_slice(p.as_bytes());
        Ok(p.len())
    }
}

fn smtp(fake: &Fake, pieces: &[&'static str]) -> String {
    let mut out = Vec::new();
    fake.context().smtp_session(&mut Pieces(pieces.iter().copied().collect()), &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn smtp_session_hands_the_message_to_postdrop() {
    let fake = Fake::new("bs", 0, "CAFE01");
    let out = smtp(
        &fake,
        &[
            "EHLO me\r\n",
            "MAIL FROM:<a@example.org> RET=HDRS ENVID=e+2Bx\r\n\
             RCPT TO:<b@example.net> NOTIFY=SUCCESS ORCPT=rfc822;b@example.net\r\nRCPT TO:<Postmaster>\r\nDATA\r\n",
            "Subject: t\r\n\r\n..dot\r\n.\r\n",
            "QUIT\r\n",
        ],
    );
    assert!(out.starts_with("220 host.example ESMTP"), "{out}");
    assert!(out.contains("250 2.0.0 Ok: queued as maildrop file CAFE01\r\n"), "{out}");
    assert!(out.ends_with("221 2.0.0 Bye\r\n") || out.contains("\r\n221 "), "{out}");
    let (env, content) = fake.stream();
    assert_eq!(env.sender, "a@example.org");
    assert_eq!(env.ret, Some(Ret::Headers));
    assert_eq!(env.envid.as_deref(), Some("e+x"));
    assert_eq!(env.recipients[0].orcpt.as_deref(), Some("rfc822;b@example.net"));
    assert_eq!(env.recipients[0].notify, Some(Notify::On { success: true, failure: false, delay: false }));
    assert_eq!(env.recipients[1].address, "postmaster");
    assert_eq!(content, b"Subject: t\r\n\r\n.dot\r\n");
}

#[test]
fn smtp_session_reports_postdrop_failures() {
    let fake = Fake::new("bsfail", 65, "postdrop: too many recipients");
    let out = smtp(
        &fake,
        &["HELO me\r\n", "MAIL FROM:<>\r\n", "RCPT TO:<b@example.net>\r\n", "DATA\r\n", "x\r\n.\r\n", "QUIT\r\n"],
    );
    assert!(out.contains("554 5.6.0 postdrop: too many recipients\r\n"), "{out}");
    let fake = Fake::new("bstemp", 75, "postdrop: creating a file: No space left on device");
    let out = smtp(
        &fake,
        &["HELO me\r\n", "MAIL FROM:<>\r\n", "RCPT TO:<b@example.net>\r\n", "DATA\r\n", "x\r\n.\r\n", "QUIT\r\n"],
    );
    assert!(out.contains("451 4.3.0 "), "{out}");
    assert!(out.contains("No space left on device"), "{out}");
}

#[test]
fn smtp_session_refuses_what_cleanup_would() {
    let hops: &'static str = "Received: from a by b; Mon, 23 Nov 2026 08:00:00 +0000\r\n".repeat(51).leak();
    let fake = Fake::new("bshops", 0, "X");
    let out = smtp(
        &fake,
        &[
            "HELO me\r\n",
            "MAIL FROM:<>\r\n",
            "RCPT TO:<b@example.net>\r\n",
            "DATA\r\n",
            hops,
            "\r\nx\r\n.\r\n",
            "QUIT\r\n",
        ],
    );
    assert!(out.contains("554 5.4.6 too many hops (51 Received: headers)"), "{out}");
    assert!(!out.contains("queued"), "{out}");
    let big: &'static str = format!("Subject: {}\r\n\r\nx\r\n.\r\n", "x".repeat(4100)).leak();
    let fake = Fake::new("bsbig", 0, "X");
    let out =
        smtp(&fake, &["HELO me\r\n", "MAIL FROM:<>\r\n", "RCPT TO:<b@example.net>\r\n", "DATA\r\n", big, "QUIT\r\n"]);
    assert!(out.contains("552 5.3.4 the message header is larger than 4096 bytes"), "{out}");
    assert!(!out.contains("queued"), "{out}");
}

#[test]
fn smtp_session_abandoned_midway_leaves_no_message() {
    let fake = Fake::new("bsabort", 0, "X");
    let out = smtp(
        &fake,
        &["HELO me\r\n", "MAIL FROM:<a@example.org>\r\n", "RCPT TO:<b@example.net>\r\n", "DATA\r\n", "partial\r\n"],
    );
    assert!(out.contains("354 "), "{out}");
    assert!(!out.contains("queued"), "{out}");
    // The stream postdrop saw has no end: postdrop would refuse it.
    let bytes = std::fs::read(fake.dir.join("stream")).unwrap();
    let err = match Reader::new(&bytes[..], Limits::default()) {
        Err(e) => Some(e),
        Ok((mut r, _)) => (0..10).find_map(|_| r.next_chunk().err()),
    };
    assert!(matches!(err, Some(maildrop::Error::Truncated { .. })), "{err:?}");
}

#[test]
fn newaliases_compiles_the_configured_file() {
    let fake = Fake::new("aliases", 0, "X");
    let source = fake.dir.join("aliases");
    std::fs::write(&source, "postmaster: root\nstaff: joe, ann@example.org\n").unwrap();
    let mut ctx = fake.context();
    ctx.config.aliases = source.clone();
    assert_eq!(ctx.newaliases(), 0);
    // No root: the administrator is told mail for root would wait.
    let w = without_root(&crate::aliases::newaliases(&ctx.config).unwrap()).expect("a warning");
    assert!(w.starts_with("no alias for root: mail for root"), "{w}");
    std::fs::write(&source, "postmaster: root\nroot: joe\nstaff: joe, ann@example.org\n").unwrap();
    assert_eq!(ctx.newaliases(), 0);
    assert_eq!(without_root(&crate::aliases::newaliases(&ctx.config).unwrap()), None);
    let db = std::fs::File::open(crate::aliases::db_path(&source)).unwrap();
    let table = crate::table::cdb::Table::read(&db, 1 << 20).unwrap();
    let staff = crate::aliases::lookup(&table, "staff").unwrap().unwrap();
    assert_eq!(staff.len(), 2);
    // A syntax error is a data error, and the old database stays.
    std::fs::write(&source, "staff joe\n").unwrap();
    assert_eq!(ctx.newaliases(), EX_DATAERR);
    assert!(crate::aliases::lookup(&table, "postmaster").unwrap().is_some());
    let db = std::fs::File::open(crate::aliases::db_path(&source)).unwrap();
    let table = crate::table::cdb::Table::read(&db, 1 << 20).unwrap();
    assert!(crate::aliases::lookup(&table, "staff").unwrap().is_some(), "the old database was replaced");
    // No source at all.
    ctx.config.aliases = fake.dir.join("missing");
    assert_eq!(ctx.newaliases(), EX_NOINPUT);
}

#[test]
fn a_login_becomes_a_valid_sender() {
    assert_eq!(login_sender("alice", "host.example.org"), "alice@host.example.org");
    // GECOS as Postfix and Sendmail read it: BSD's root is "Charlie &".
    assert_eq!(gecos_name("Charlie &", "root"), "Charlie Root");
    assert_eq!(gecos_name("Ann Smith,Room 1,555", "ann"), "Ann Smith");
    assert_eq!(gecos_name("Bob; x", "bob"), "Bob");
    assert_eq!(gecos_name("Eve%y", "eve"), "Eve");
    assert_eq!(gecos_name("Jo\u{7}e", "jo"), "Joe");
    assert_eq!(gecos_name("", "x"), "");
    // SSSD and winbind logins that are addresses already.
    assert_eq!(login_sender("jo@ad.example", "host.example.org"), "jo@ad.example");
    // Not a dot-atom: quoted, so that cleanup takes it.
    let quoted = login_sender("jo smith", "host.example.org");
    assert_eq!(quoted, "\"jo smith\"@host.example.org");
    assert!(address::parse_mailbox(&quoted, true).is_ok());
    assert!(address::parse_mailbox(&login_sender("a\"b\\c", "h.example"), true).is_ok());
}

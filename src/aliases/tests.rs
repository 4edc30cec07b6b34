use std::collections::HashMap;
use std::path::Path;

use proptest::prelude::*;

use super::db::{decode, encode};
use super::*;
use crate::table::cdb::Table;

const FILE: &str = "/etc/mail/aliases";

fn parsed(text: &str) -> Parsed {
    match parse(text.as_bytes(), Path::new(FILE)) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn targets(text: &str, name: &str) -> Vec<Target> {
    parsed(text).aliases.get(name).unwrap_or_else(|| panic!("no alias {name}")).targets.clone()
}

/// The line and message of a syntax error.
fn error(text: &str) -> (usize, String) {
    match parse(text.as_bytes(), Path::new(FILE)) {
        Err(Error::Syntax { file, line, message }) => {
            assert_eq!(file, Path::new(FILE));
            (line, message)
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

fn local(s: &str) -> Target {
    Target::Local(s.into())
}
fn address(s: &str) -> Target {
    Target::Address(s.into())
}
fn command(s: &str) -> Target {
    Target::Command(s.into())
}
fn file(s: &str) -> Target {
    Target::File(s.into())
}
fn include(s: &str) -> Target {
    Target::Include(s.into())
}
fn mailbox(s: &str) -> Target {
    Target::Mailbox(s.into())
}

/// A fresh directory under the system's temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("mta-aliases-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---- syntax ----

#[test]
fn every_target_form() {
    let t = targets(
        "all: root, user@example.org, |/usr/local/bin/procmail, \"|/usr/bin/vacation joe\", /var/log/all.mbox, \
         :include:/etc/mail/lists/all, \"joe smith\", \"joe smith\"@example.org, \":include:/etc/mail/a list\", \
         \"/var/mail/a, b\"\n",
        "all",
    );
    assert_eq!(
        t,
        [
            local("root"),
            address("user@example.org"),
            command("/usr/local/bin/procmail"),
            command("/usr/bin/vacation joe"),
            file("/var/log/all.mbox"),
            include("/etc/mail/lists/all"),
            local("joe smith"),
            address("\"joe smith\"@example.org"),
            include("/etc/mail/a list"),
            file("/var/mail/a, b"),
        ]
    );
}

#[test]
fn unquoted_command_runs_to_the_comma() {
    assert_eq!(
        targets("joe: joe, |/usr/bin/vacation -a \"Joe\" joe, other\n", "joe"),
        [local("joe"), command("/usr/bin/vacation -a \"Joe\" joe"), local("other")]
    );
}

#[test]
fn quoted_strings_take_backslash_escapes() {
    assert_eq!(targets(r#"x: "|/bin/echo \"a, b\" \\ c""#, "x"), [command(r#"/bin/echo "a, b" \ c"#)]);
}

#[test]
fn include_prefix_in_any_case_with_space() {
    assert_eq!(targets("l: :INCLUDE:/etc/l, :include: /etc/m\n", "l"), [include("/etc/l"), include("/etc/m")]);
}

#[test]
fn names_fold_case_and_may_be_quoted() {
    let p = parsed("PostMaster: Root\n\"Joe Smith\": joe\n\"a:b\" : c\nowner-Staff : Alice@Example.ORG\n");
    assert_eq!(p.aliases.len(), 4);
    assert_eq!(p.aliases.get("postmaster").unwrap().targets, [local("root")]);
    assert_eq!(p.aliases.get("POSTMASTER").unwrap().name, "postmaster");
    assert_eq!(p.aliases.get("joe smith").unwrap().targets, [local("joe")]);
    assert_eq!(p.aliases.get("a:b").unwrap().targets, [local("c")]);
    // The domain of an address keeps its case; the name is folded.
    assert_eq!(p.aliases.get("owner-staff").unwrap().targets, [address("Alice@Example.ORG")]);
    let names: Vec<&str> = p.aliases.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["a:b", "joe smith", "owner-staff", "postmaster"]);
}

#[test]
fn continuation_lines_join_the_entry() {
    let p = parsed("staff: alice,\n  bob,\n\tcarol\n     , dave\nother: x\n");
    let staff = p.aliases.get("staff").unwrap();
    assert_eq!(staff.targets, [local("alice"), local("bob"), local("carol"), local("dave")]);
    assert_eq!(staff.line, 1);
    assert_eq!(p.aliases.get("other").unwrap().line, 5);
}

#[test]
fn continuation_joins_inside_a_quoted_string() {
    assert_eq!(targets("v: \"|/usr/bin/vacation\n   joe\"\n", "v"), [command("/usr/bin/vacation joe")]);
}

#[test]
fn comments_and_blank_lines() {
    let p = parsed("# the aliases\n\n   \nroot: joe\n#postmaster: nobody\nstaff: alice,\n   # bob left\n   carol\n");
    assert_eq!(p.aliases.len(), 2);
    assert!(p.aliases.get("postmaster").is_none());
    assert_eq!(p.aliases.get("root").unwrap().targets, [local("joe")]);
    assert_eq!(p.aliases.get("staff").unwrap().targets, [local("alice"), local("carol")]);
    // A `#` after a target starts no comment: it is text, here with whitespace.
    let (line, m) = error("root: joe # the admin\n");
    assert_eq!(line, 1);
    assert!(m.contains("whitespace"), "{m}");
}

#[test]
fn hash_inside_a_target_is_text() {
    assert_eq!(targets("a: b#c, #d@example.org\n", "a"), [local("b#c"), address("#d@example.org")]);
}

#[test]
fn a_comment_at_the_first_column_ends_the_entry() {
    let (line, m) = error("staff: alice,\n# bob left\n   carol\n");
    assert_eq!(line, 3);
    assert!(m.contains("continuation"), "{m}");
}

#[test]
fn a_blank_line_ends_the_entry() {
    let (line, m) = error("staff: alice,\n\n   carol\n");
    assert_eq!(line, 3);
    assert!(m.contains("continuation"), "{m}");
    let (line, _) = error("   root: joe\n");
    assert_eq!(line, 1);
}

#[test]
fn crlf_line_ends() {
    let p = parsed("root: joe\r\nstaff: a,\r\n  b\r\n\r\n");
    assert_eq!(p.aliases.get("staff").unwrap().targets, [local("a"), local("b")]);
    assert_eq!(p.aliases.get("root").unwrap().targets, [local("joe")]);
}

#[test]
fn empty_items_and_trailing_commas_are_ignored() {
    assert_eq!(targets("a: b,, c,\n   ,\n", "a"), [local("b"), local("c")]);
    assert!(parsed("").aliases.is_empty());
    assert!(parsed("# nothing\n\n").aliases.is_empty());
}

#[test]
fn missing_colon_names_file_and_line() {
    let mut text = String::new();
    for i in 1..12 {
        text.push_str(&format!("a{i}: b\n"));
    }
    text.push_str("broken root\n");
    let e = parse(text.as_bytes(), Path::new(FILE)).unwrap_err();
    assert_eq!(e.to_string(), "/etc/mail/aliases:12: missing ':' after alias name");
    assert_eq!(error("\"joe\" root\n").1, "missing ':' after alias name");
}

#[test]
fn bad_names_refused() {
    let cases = [
        ("joe smith: x\n", "whitespace"),
        ("joe@example.org: x\n", "domain"),
        ("jo<e: x\n", "`<`"),
        (": x\n", "empty alias name"),
        ("\"\": x\n", "empty alias name"),
        ("\"joe: x\n", "unterminated"),
        ("\"a\u{7}b\": x\n", "control character"),
    ];
    for (text, want) in cases {
        let (line, m) = error(text);
        assert_eq!(line, 1, "{text:?}");
        assert!(m.contains(want), "{text:?}: {m}");
    }
}

#[test]
fn bad_targets_refused_with_their_line() {
    let cases = [
        ("a:\n", 1, "no targets"),
        ("a: ,\n", 1, "no targets"),
        ("a: b,\n  joe smith\n", 2, "whitespace inside a target"),
        ("a: b,\n  c,\n  \"|cmd\n", 3, "unterminated quoted string"),
        ("a: :include:etc/list\n", 1, "absolute path"),
        ("a: :include:\n", 1, "absolute path"),
        ("a: |\n", 1, "empty command"),
        ("a: \"|  \"\n", 1, "empty command"),
        ("a: joe@\n", 1, "invalid domain"),
        ("a: joe@exa mple.org\n", 1, "invalid domain"),
        ("a: \\joe@example.org\n", 1, "a backslash goes before a local name only"),
        ("a: \\|/bin/sh\n", 1, "a backslash goes before a local name only"),
        ("a: \\/var/mail/x\n", 1, "a backslash goes before a local name only"),
        ("a: \\\\joe\n", 1, "a backslash goes before a local name only"),
        ("a: \\\n", 1, "a backslash goes before a local name only"),
        ("a: jo\\e\n", 1, "a backslash may only come first"),
        ("a: <joe@example.org>\n", 1, "invalid local part"),
        ("a: b\u{0}c\n", 1, "`b\u{0}c`"),
        ("a: \"b\u{1b}c\"\n", 1, "control character"),
        ("a: /var/mail/my file\n", 1, "quoted whole"),
        ("a: :include:\"/x y\"\n", 1, "quoted whole"),
        ("x: y\na: b,\n c,\n d:e\n", 4, "`:`"),
    ];
    for (text, line, want) in cases {
        let (l, m) = error(text);
        assert_eq!(l, line, "{text:?}: {m}");
        assert!(m.contains(want), "{text:?}: {m}");
        assert!(m.starts_with("alias `") || m.contains("no targets"), "{text:?}: names the alias: {m}");
    }
}

#[test]
fn invalid_utf8_names_its_line() {
    let e = parse(b"a: b\nc: d\xff\n", Path::new(FILE)).unwrap_err();
    assert_eq!(e.to_string(), "/etc/mail/aliases:2: not valid UTF-8");
}

#[test]
fn duplicate_name_later_wins_with_a_warning() {
    let p = parsed("joe: a\nother: x\nJOE: b\n");
    assert_eq!(p.aliases.get("joe").unwrap().targets, [local("b")]);
    assert_eq!(p.aliases.get("joe").unwrap().line, 3);
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(
        p.warnings[0].to_string(),
        "/etc/mail/aliases:3: duplicate alias `joe`: this entry replaces the one on line 1"
    );
    assert!(parsed("a: b\nc: d\n").warnings.is_empty());
}

// ---- bounds ----

#[test]
fn entry_longer_than_the_bound_refused() {
    let long = format!("a: {}\n", "b".repeat(MAX_ENTRY));
    assert!(error(&long).1.contains("longer than"));
    // Built from continuation lines, the error is at the line that passes it.
    let mut text = String::from("a: b\n");
    let piece = format!("  {},\n", "c".repeat(1000));
    for _ in 0..(MAX_ENTRY / 1000 + 2) {
        text.push_str(&piece);
    }
    let (line, m) = error(&text);
    assert!(m.contains(&format!("longer than {MAX_ENTRY} bytes")), "{m}");
    // "a: b" and then 1002 bytes a line (the break and 1001 bytes of text).
    let lines_that_fit = (MAX_ENTRY - 4) / 1002;
    assert_eq!(line, 1 + lines_that_fit + 1, "{m}");
}

#[test]
fn too_many_targets_refused() {
    let ok = format!("a: {}\n", vec!["b"; MAX_TARGETS].join(","));
    assert_eq!(targets(&ok, "a").len(), MAX_TARGETS);
    let over = format!("a: {}\n", vec!["b"; MAX_TARGETS + 1].join(","));
    assert!(error(&over).1.contains(&format!("more than {MAX_TARGETS} targets")));
}

#[test]
fn too_many_aliases_refused() {
    let mut text: String = (0..MAX_ALIASES).map(|i| format!("a{i}: b\n")).collect();
    assert_eq!(parsed(&text).aliases.len(), MAX_ALIASES);
    // Redefining one is no new alias.
    text.push_str("a0: c\n");
    assert_eq!(parsed(&text).aliases.len(), MAX_ALIASES);
    text.push_str("one-more: c\n");
    let (line, m) = error(&text);
    assert_eq!(line, MAX_ALIASES + 2);
    assert!(m.contains(&format!("more than {MAX_ALIASES} aliases")), "{m}");
}

#[test]
fn long_names_and_targets_refused() {
    let name = "n".repeat(MAX_NAME);
    assert_eq!(parsed(&format!("{name}: b\n")).aliases.len(), 1);
    assert!(error(&format!("{name}n: b\n")).1.contains("alias name longer"));
    // Measured as kept, in lower case: `İ` (2 bytes) is 3 in lower case,
    // and a database holding it would be refused as damaged.
    let grows = "\u{130}".repeat(MAX_NAME / 2);
    assert!(grows.len() <= MAX_NAME && grows.to_lowercase().len() > MAX_NAME);
    assert!(error(&format!("\"{grows}\": b\n")).1.contains("alias name longer"));
    let target = format!("/{}", "f".repeat(MAX_TARGET - 1));
    assert_eq!(targets(&format!("a: {target}\n"), "a"), [file(&target)]);
    assert!(error(&format!("a: {target}f\n")).1.contains("target longer"));
}

#[test]
fn oversized_input_refused_before_parsing() {
    let big = vec![b'#'; MAX_INCLUDE_SIZE as usize + 1];
    assert!(matches!(parse_include(&big, Path::new("/l")), Err(Error::TooLarge { .. })));
    let d = temp_dir("big");
    let source = d.join("aliases");
    let f = std::fs::File::create(&source).unwrap();
    f.set_len(MAX_FILE_SIZE + 1).unwrap();
    let e = compile(&source, &d.join("aliases.cdb")).unwrap_err();
    assert!(matches!(e, Error::TooLarge { size, max, .. } if size == MAX_FILE_SIZE + 1 && max == MAX_FILE_SIZE));
    assert!(!d.join("aliases.cdb").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

// ---- include files ----

#[test]
fn include_file_lists_targets_by_line() {
    let t = parse_include(b"# members\nalice, bob\n\n  carol@example.org\n\"|/bin/cat\"\r\n", Path::new("/l")).unwrap();
    assert_eq!(t, [local("alice"), local("bob"), address("carol@example.org"), command("/bin/cat")]);
    let e = parse_include(b"alice\nbob smith\n", Path::new("/etc/mail/l")).unwrap_err();
    assert!(e.to_string().starts_with("/etc/mail/l:2: `bob smith`: whitespace"), "{e}");
    let over = vec!["x"; MAX_TARGETS + 1].join("\n");
    assert!(parse_include(over.as_bytes(), Path::new("/l")).unwrap_err().to_string().contains("more than"));
}

#[test]
fn backslash_names_the_mailbox_in_aliases_includes_and_forward_files() {
    // The aliases file: `root: \root, admin` (Sendmail's and Postfix's).
    assert_eq!(targets("root: \\root, admin\n", "root"), [mailbox("root"), local("admin")]);
    assert_eq!(
        targets("x: \\Joe,\\ann , \\\"joe smith\", joe\n", "x"),
        [mailbox("joe"), mailbox("ann"), mailbox("joe smith"), local("joe")]
    );
    // An :include: file, and a user's .forward, read by the same parser.
    let text = b"\\Joe, \"|/usr/bin/vacation joe\"\n# away\n/home/joe/saved, joe@elsewhere.example\n";
    let want =
        [mailbox("joe"), command("/usr/bin/vacation joe"), file("/home/joe/saved"), address("joe@elsewhere.example")];
    assert_eq!(parse_include(text, Path::new("/etc/mail/list")).unwrap(), want);
    assert_eq!(parse_include(text, Path::new("/home/joe/.forward")).unwrap(), want);
    // The same mistakes are refused in each, naming file and line.
    let e = parse_include(b"bob\n\\|/bin/sh\n", Path::new("/home/bob/.forward")).unwrap_err();
    assert_eq!(e.to_string(), "/home/bob/.forward:2: `\\|/bin/sh`: a backslash goes before a local name only");
    let (line, m) = error("ok: x\nbob: bob,\n  \\|/bin/sh\n");
    assert_eq!((line, m.as_str()), (3, "alias `bob`: `\\|/bin/sh`: a backslash goes before a local name only"));
    assert!(parse_include(b"bob smith\n", Path::new("/f")).is_err());
    assert!(parse_include(&[b'a'; (MAX_INCLUDE_SIZE + 1) as usize], Path::new("/f")).is_err());
}

// ---- writing targets back ----

#[test]
fn targets_display_in_aliases_syntax() {
    let cases = [
        (local("root"), "root"),
        (local("joe smith"), "\"joe smith\""),
        (local("a@b"), "\"a@b\""),
        (address("\"a b\"@example.org"), "\"a b\"@example.org"),
        (command("/usr/bin/vacation \"joe\""), "\"|/usr/bin/vacation \\\"joe\\\"\""),
        (file("/var/mail/x"), "/var/mail/x"),
        (file("/var/mail/a, b"), "\"/var/mail/a, b\""),
        (include("/etc/l"), ":include:/etc/l"),
        (include("/etc/a l"), "\":include:/etc/a l\""),
        (mailbox("root"), "\\root"),
        (mailbox("joe smith"), "\\\"joe smith\""),
        (local("\\root"), "\"\\\\root\""),
    ];
    for (t, text) in cases {
        assert_eq!(t.to_string(), text);
        assert_eq!(targets(&format!("x: {t}\n"), "x"), [t]);
    }
}

fn any_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ -~\t\u{e9}\u{4e2d}]{0,24}").unwrap()
}

fn any_target() -> impl Strategy<Value = Target> {
    prop_oneof![
        any_text().prop_map(|s| Target::Local(s.to_lowercase())),
        any_text().prop_map(|s| Target::Mailbox(s.to_lowercase())),
        ("[a-z0-9.!#%+_-]{1,12}", "[a-z0-9]{1,10}(\\.[a-z]{2,5}){0,2}")
            .prop_map(|(l, d)| Target::Address(format!("{l}@{d}"))),
        ("[ -~]{1,12}", "[a-z]{1,10}").prop_map(|(l, d)| {
            let quoted = l.replace('\\', "\\\\").replace('"', "\\\"");
            Target::Address(format!("\"{quoted}\"@{d}"))
        }),
        any_text().prop_map(Target::Command),
        any_text().prop_map(|s| Target::File(PathBuf::from(format!("/{s}")))),
        any_text().prop_map(|s| Target::Include(PathBuf::from(format!("/{s}")))),
    ]
    .prop_filter("valid targets only", |t| t.validate().is_ok() && !t.to_string().starts_with('#'))
}

proptest! {
    /// target_syntax_roundtrip: what Display writes parses back to the
    /// same target, in an alias and in an :include: file.
    #[test]
    fn target_syntax_roundtrip(list in proptest::collection::vec(any_target(), 1..6)) {
        let rhs: Vec<String> = list.iter().map(Target::to_string).collect();
        let p = parse(format!("x: {}\n", rhs.join(", ")).as_bytes(), Path::new(FILE)).unwrap();
        prop_assert_eq!(&p.aliases.get("x").unwrap().targets, &list);
        let inc = parse_include(rhs.join("\n").as_bytes(), Path::new("/l")).unwrap();
        prop_assert_eq!(&inc, &list);
    }

    /// alias_value_roundtrip: the stored form decodes to the same list.
    #[test]
    fn alias_value_roundtrip(list in proptest::collection::vec(any_target(), 1..8)) {
        prop_assert_eq!(decode(&encode(&list)).unwrap(), list);
    }

    /// aliases_parse_no_panic: any bytes parse or fail cleanly.
    #[test]
    fn aliases_parse_no_panic(text in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&text, Path::new(FILE));
        let _ = parse_include(&text, Path::new("/l"));
    }

    /// aliases_parse_no_panic, on text that looks like an aliases file.
    #[test]
    fn aliases_text_parse_no_panic(text in "([a-z\"|/:@, \t#\n\\\\]{0,12}\n){0,12}") {
        if let Ok(p) = parse(text.as_bytes(), Path::new(FILE)) {
            for a in p.aliases.iter() {
                prop_assert!(!a.targets.is_empty());
                for t in &a.targets {
                    prop_assert!(t.validate().is_ok());
                }
            }
        }
    }

    /// aliases_decode_no_panic: any stored value decodes or fails cleanly.
    #[test]
    fn aliases_decode_no_panic(value in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(list) = decode(&value) {
            prop_assert_eq!(encode(&list), value);
        }
    }
}

// ---- the stored form ----

#[test]
fn stored_form_is_as_documented() {
    let t = targets("joe: joe, \"|/usr/bin/vacation joe\"\n", "joe");
    assert_eq!(encode(&t), b"ljoe\0c/usr/bin/vacation joe\0");
    let all = [local("a"), address("b@c.d"), command("e"), file("/f"), include("/g"), mailbox("h")];
    assert_eq!(encode(&all), b"la\0ab@c.d\0ce\0f/f\0i/g\0mh\0");
    assert_eq!(decode(b"la\0ab@c.d\0ce\0f/f\0i/g\0mh\0").unwrap(), all);
    assert_eq!(encode(&targets("root: \\root, admin\n", "root")), b"mroot\0ladmin\0");
}

#[test]
fn damaged_values_refused() {
    let cases: [(&[u8], &str); 10] = [
        (b"", "NUL"),
        (b"mRoot\0", "lower case"),
        (b"m|/bin/sh\0", "reads as another kind"),
        (b"lroot", "NUL"),
        (b"\0", "empty target"),
        (b"lroot\0\0", "empty target"),
        (b"xroot\0", "unknown target tag"),
        (b"fvar/mail\0", "absolute"),
        (b"lRoot\0", "lower case"),
        (b"l\xff\0", "UTF-8"),
    ];
    for (value, want) in cases {
        let e = decode(value).unwrap_err();
        assert!(e.contains(want), "{value:?}: {e}");
    }
    assert!(decode(b"l/etc/passwd\0").is_err(), "a local name that reads as a file");
    assert!(decode(b"a|x@y\0").is_err(), "an address that reads as a command");
}

// ---- expansion ----

fn no_includes(p: &Path) -> Result<Vec<Target>, String> {
    panic!("unexpected :include: of {}", p.display())
}

fn expand_text(text: &str, name: &str) -> Result<Vec<Target>, ExpandError> {
    let p = parsed(text);
    expand(&p.aliases, name, no_includes).map(|d| d.into_iter().map(|d| d.target).collect())
}

#[test]
fn a_name_that_is_no_alias_is_a_mailbox() {
    let p = parsed("root: joe\n");
    let d = expand(&p.aliases, "Alice", no_includes).unwrap();
    assert_eq!(d, [Delivery { target: local("alice"), alias: None, include: None }]);
}

#[test]
fn aliases_expand_recursively_in_order() {
    let text = "postmaster: root\nroot: joe, admins\nadmins: alice, bob@example.org, \"|/bin/log\", /var/log/admins\n";
    assert_eq!(
        expand_text(text, "POSTMASTER").unwrap(),
        [local("joe"), local("alice"), address("bob@example.org"), command("/bin/log"), file("/var/log/admins")]
    );
    let p = parsed(text);
    let d = expand(&p.aliases, "postmaster", no_includes).unwrap();
    assert_eq!(d[0].alias.as_deref(), Some("root"));
    assert_eq!(d[1].alias.as_deref(), Some("admins"));
}

#[test]
fn self_reference_delivers_to_the_mailbox() {
    assert_eq!(
        expand_text("joe: joe, \"|/usr/bin/vacation joe\"\n", "joe").unwrap(),
        [local("joe"), command("/usr/bin/vacation joe")]
    );
    assert_eq!(expand_text("joe: Joe\n", "joe").unwrap(), [local("joe")]);
    // Through another alias, the self-reference is joe's own.
    assert_eq!(expand_text("all: joe, ann\njoe: joe, ann\n", "all").unwrap(), [local("joe"), local("ann")]);
}

#[test]
fn backslash_names_are_mailboxes_never_looked_up() {
    // root's mail to its own mailbox and to admin: no loop, and the
    // alias root is not entered again.
    let text = "root: \\root, admin\nadmin: joe, \\admin\nlist: a, b\nx: \\list, \\root\n";
    assert_eq!(expand_text(text, "root").unwrap(), [mailbox("root"), local("joe"), mailbox("admin")]);
    // `\list` is the mailbox list, not the alias list.
    assert_eq!(expand_text(text, "x").unwrap(), [mailbox("list"), mailbox("root")]);
    let p = parsed(text);
    let d = expand(&p.aliases, "root", no_includes).unwrap();
    assert_eq!((d[0].alias.as_deref(), d[2].alias.as_deref()), (Some("root"), Some("admin")));
    // From an :include: file too, with its origin.
    let p = parsed("staff: :include:/etc/mail/staff\nann: elsewhere@example.org\n");
    let d = expand(&p.aliases, "staff", |_: &Path| Ok(vec![mailbox("ann"), local("ann")])).unwrap();
    assert_eq!(
        d,
        [
            Delivery {
                target: mailbox("ann"),
                alias: Some(String::from("staff")),
                include: Some(PathBuf::from("/etc/mail/staff"))
            },
            Delivery { target: address("elsewhere@example.org"), alias: Some(String::from("ann")), include: None },
        ]
    );
}

#[test]
fn a_cycle_with_no_destination_is_an_error() {
    let e = expand_text("a: b\nb: a\n", "a").unwrap_err();
    assert!(matches!(&e, ExpandError::Loop(c) if c == &["a", "b", "a"]), "{e:?}");
    assert_eq!(e.to_string(), "alias loop: a -> b -> a");
    let e = expand_text("a: b\nb: c\nc: a\n", "a").unwrap_err();
    assert!(matches!(&e, ExpandError::Loop(c) if c == &["a", "b", "c", "a"]), "{e:?}");
    // Expanding from inside the cycle finds it too.
    assert!(matches!(expand_text("a: b\nb: a\n", "b"), Err(ExpandError::Loop(_))));
}

#[test]
fn a_way_back_to_an_alias_being_expanded_is_passed_over() {
    // As Sendmail and Postfix: alice and bob get the mail, whichever
    // list it was sent to; before, the loop bounced it for everyone.
    let text = "staff: alice, admins\nadmins: bob, staff\n";
    assert_eq!(expand_text(text, "staff").unwrap(), [local("alice"), local("bob")]);
    assert_eq!(expand_text(text, "admins").unwrap(), [local("bob"), local("alice")]);
    let text = "top: x, a\na: ok, b\nb: c\nc: a\n";
    assert_eq!(expand_text(text, "top").unwrap(), [local("x"), local("ok")]);
}

#[test]
fn a_destination_reached_twice_is_delivered_once() {
    let text = "all: staff, ops, carol\nstaff: alice, bob@example.org\nops: bob@example.org, alice, carol\n";
    assert_eq!(expand_text(text, "all").unwrap(), [local("alice"), address("bob@example.org"), local("carol")]);
}

#[test]
fn diamonds_are_expanded_once() {
    // 1000 ways to `hub`, which has 200 members: looked at once, that is
    // some 2200 targets; for every way, 200,000, past MAX_EXPANSION.
    let mut text = format!("fan: {}\n", (0..1000).map(|i| format!("b{i}")).collect::<Vec<_>>().join(", "));
    for i in 0..1000 {
        text.push_str(&format!("b{i}: hub\n"));
    }
    text.push_str(&format!("hub: {}\n", (0..200).map(|i| format!("m{i}")).collect::<Vec<_>>().join(", ")));
    let got = expand_text(&text, "fan").unwrap();
    assert_eq!(got.len(), 200);
    assert_eq!(got[199], local("m199"));
    // Nested diamonds.
    let mut text = String::new();
    for i in 0..9 {
        text.push_str(&format!("a{i}: b{i}, c{i}\nb{i}: a{next}\nc{i}: a{next}, x{i}\n", next = i + 1));
    }
    let got = expand_text(&text, "a0").unwrap();
    assert_eq!(got.len(), 10);
    assert_eq!(got[0], local("a9"));
}

#[test]
fn nesting_is_bounded() {
    let chain = |n: usize| -> String { (0..n).map(|i| format!("a{i}: a{}\n", i + 1)).collect() };
    // MAX_DEPTH aliases within one another: the last names a mailbox.
    assert_eq!(expand_text(&chain(MAX_DEPTH), "a0").unwrap(), [local(&format!("a{MAX_DEPTH}"))]);
    let e = expand_text(&chain(MAX_DEPTH + 1), "a0").unwrap_err();
    assert!(matches!(&e, ExpandError::TooDeep(c) if c.len() == MAX_DEPTH + 1), "{e:?}");
    assert!(e.to_string().starts_with(&format!("aliases nested more than {MAX_DEPTH} deep: a0 -> a1")), "{e}");
}

#[test]
fn includes_expand_with_their_origin() {
    let p = parsed("list: owner, :include:/etc/mail/list\nowner: root\nsub: sue\n");
    let mut read = Vec::new();
    let d = expand(&p.aliases, "list", |path: &Path| {
        read.push(path.to_path_buf());
        Ok(vec![local("bob"), local("sub"), address("carol@example.org"), local("owner")])
    })
    .unwrap();
    assert_eq!(read, [PathBuf::from("/etc/mail/list")]);
    let got: Vec<(Target, Option<&str>, Option<&Path>)> =
        d.iter().map(|d| (d.target.clone(), d.alias.as_deref(), d.include.as_deref())).collect();
    let inc = Some(Path::new("/etc/mail/list"));
    assert_eq!(
        got,
        [
            (local("root"), Some("owner"), None),
            (local("bob"), Some("list"), inc),
            (local("sue"), Some("sub"), None),
            (address("carol@example.org"), Some("list"), inc),
        ]
    );
}

#[test]
fn include_naming_its_list_delivers_to_the_mailbox() {
    let p = parsed("list: :include:/l\n");
    let d = expand(&p.aliases, "list", |_: &Path| Ok(vec![local("list"), local("ann")])).unwrap();
    assert_eq!(d.iter().map(|d| d.target.clone()).collect::<Vec<_>>(), [local("list"), local("ann")]);
}

#[test]
fn include_loops_are_errors() {
    let p = parsed("list: :include:/a\n");
    let files: HashMap<&str, Vec<Target>> =
        HashMap::from([("/a", vec![local("x"), include("/b")]), ("/b", vec![include("/a")])]);
    let e = expand(&p.aliases, "list", |path: &Path| Ok(files[path.to_str().unwrap()].clone())).unwrap_err();
    assert_eq!(e.to_string(), "alias loop: :include:/a -> :include:/b -> :include:/a");
    // The same file under two aliases is no loop.
    let p = parsed("a: :include:/f\nb: :include:/f, a\n");
    let d = expand(&p.aliases, "b", |_: &Path| Ok(vec![local("a"), local("z")])).unwrap();
    assert_eq!(d.iter().map(|d| d.target.clone()).collect::<Vec<_>>(), [local("a"), local("z")]);
}

#[test]
fn include_errors_name_the_file() {
    let p = parsed("list: a, :include:/etc/mail/list\n");
    let e = expand(&p.aliases, "list", |_: &Path| Err(String::from("permission denied"))).unwrap_err();
    assert_eq!(e.to_string(), ":include:/etc/mail/list: permission denied");
    let e = expand(&p.aliases, "list", |_: &Path| Ok(vec![local("x"); MAX_TARGETS + 1])).unwrap_err();
    assert!(matches!(e, ExpandError::Include { .. }), "{e:?}");
}

#[test]
fn total_expansion_is_bounded() {
    let p = parsed(&format!("big: {}\n", (0..11).map(|i| format!(":include:/l{i}")).collect::<Vec<_>>().join(", ")));
    let list = |path: &Path| -> Result<Vec<Target>, String> {
        let p = path.to_str().unwrap().to_string();
        Ok((0..MAX_TARGETS).map(|i| Target::Address(format!("u{i}@{}.example", &p[1..]))).collect())
    };
    let e = expand(&p.aliases, "big", list).unwrap_err();
    assert!(matches!(&e, ExpandError::TooLarge { name } if name == "big"), "{e:?}");
    let p = parsed(&format!("big: {}\n", (0..9).map(|i| format!(":include:/l{i}")).collect::<Vec<_>>().join(", ")));
    assert_eq!(expand(&p.aliases, "big", list).unwrap().len(), 9 * MAX_TARGETS);
}

#[test]
fn owner_of_a_list() {
    let p = parsed("staff: a, b\nowner-staff: alice\n");
    assert_eq!(owner(&p.aliases, "Staff").unwrap(), Some(String::from("owner-staff")));
    assert_eq!(owner(&p.aliases, "other").unwrap(), None);
}

// ---- the compiled database ----

const SAMPLE: &str = "# sample\npostmaster: root\nroot: joe\nJoe: joe, \"|/usr/bin/vacation joe\"\n\
                      staff: alice,\n   bob@example.org, :include:/etc/mail/staff\nlog: /var/log/mail.all\n";

fn read_table(path: &Path) -> Table {
    Table::read(&std::fs::File::open(path).unwrap(), MAX_DB_SIZE).unwrap()
}

#[test]
fn compile_and_read_back() {
    let d = temp_dir("roundtrip");
    let source = d.join("aliases");
    std::fs::write(&source, SAMPLE).unwrap();
    let db = db_path(&source);
    assert_eq!(db, d.join("aliases.cdb"));
    let summary = compile(&source, &db).unwrap();
    let p = parsed(SAMPLE);
    let t = read_table(&db);
    for a in p.aliases.iter() {
        assert_eq!(lookup(&t, &a.name).unwrap().as_ref(), Some(&a.targets), "{}", a.name);
    }
    assert_eq!(lookup(&t, "JOE").unwrap(), Some(vec![local("joe"), command("/usr/bin/vacation joe")]));
    assert_eq!(lookup(&t, "nobody").unwrap(), None);
    assert_eq!(names(&t).unwrap(), ["joe", "log", "postmaster", "root", "staff"]);
    let longest = p.aliases.iter().map(|a| encode(&a.targets).len()).max().unwrap();
    let total: usize = p.aliases.iter().map(|a| encode(&a.targets).len()).sum();
    assert_eq!(summary, Summary { aliases: 5, longest, total, format: 1, warnings: vec![], root: true });
    assert_eq!(summary.to_string(), format!("5 aliases, longest {longest} bytes"));
    // Expansion through the database agrees with the parsed file.
    let inc = |_: &Path| Ok(vec![local("sue")]);
    for name in ["postmaster", "staff", "joe", "log", "nobody"] {
        assert_eq!(expand(&t, name, inc).unwrap(), expand(&p.aliases, name, inc).unwrap(), "{name}");
    }
    assert_eq!(owner(&t, "staff").unwrap(), None);
    // The database is world-readable, and nothing else is left behind.
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&db).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o644);
    let mut left: Vec<String> =
        std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    assert_eq!(left, ["aliases", "aliases.cdb"]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn summary_counts_and_warnings() {
    let d = temp_dir("summary");
    let source = d.join("aliases");
    std::fs::write(&source, "a: b\na: c\n").unwrap();
    let s = compile(&source, &db_path(&source)).unwrap();
    assert_eq!(s.to_string(), "1 alias, longest 3 bytes");
    assert_eq!(s.warnings.len(), 1);
    assert!(s.warnings[0].to_string().contains("duplicate alias `a`"));
    assert_eq!(lookup(&read_table(&db_path(&source)), "a").unwrap(), Some(vec![local("c")]));
    std::fs::write(&source, "").unwrap();
    let s = compile(&source, &db_path(&source)).unwrap();
    assert_eq!(s.to_string(), "0 aliases, longest 0 bytes");
    assert!(names(&read_table(&db_path(&source))).unwrap().is_empty());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn errors_leave_the_database_alone() {
    let d = temp_dir("errors");
    let source = d.join("aliases");
    let db = db_path(&source);
    std::fs::write(&source, "a: b\n").unwrap();
    compile(&source, &db).unwrap();
    let before = std::fs::read(&db).unwrap();
    std::fs::write(&source, "a: b\nbroken\n").unwrap();
    let e = compile(&source, &db).unwrap_err();
    assert_eq!(e.to_string(), format!("{}:2: missing ':' after alias name", source.display()));
    assert_eq!(std::fs::read(&db).unwrap(), before);
    let e = compile(&d.join("missing"), &db).unwrap_err();
    assert!(matches!(&e, Error::Io { path, .. } if path == &d.join("missing")), "{e:?}");
    // A directory that is not there: nothing half-written stays.
    std::fs::write(&source, "a: c\n").unwrap();
    let e = compile(&source, &d.join("no/such/dir/aliases.cdb")).unwrap_err();
    assert!(matches!(&e, Error::Io { path, .. } if path.starts_with(d.join("no"))), "{e:?}");
    let mut left: Vec<String> =
        std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    assert_eq!(left, ["aliases", "aliases.cdb"]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_leftover_temporary_file_is_replaced() {
    let d = temp_dir("leftover");
    let source = d.join("aliases");
    std::fs::write(&source, "a: b\n").unwrap();
    let tmp = d.join(format!(".aliases.cdb.tmp.{}", std::process::id()));
    std::fs::write(&tmp, "junk from a crash").unwrap();
    compile(&source, &db_path(&source)).unwrap();
    assert!(!tmp.exists());
    assert_eq!(lookup(&read_table(&db_path(&source)), "a").unwrap(), Some(vec![local("b")]));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn replacement_is_atomic_for_readers() {
    let d = temp_dir("atomic");
    let source = d.join("aliases");
    let db = db_path(&source);
    std::fs::write(&source, "list: old\n").unwrap();
    compile(&source, &db).unwrap();
    // A reader that opened the old database, as master or local would.
    let old = std::fs::File::open(&db).unwrap();
    std::fs::write(&source, "list: new\nextra: x\n").unwrap();
    compile(&source, &db).unwrap();
    let t = Table::read(&old, MAX_DB_SIZE).unwrap();
    assert_eq!(lookup(&t, "list").unwrap(), Some(vec![local("old")]));
    assert_eq!(lookup(&t, "extra").unwrap(), None);
    let t = read_table(&db);
    assert_eq!(lookup(&t, "list").unwrap(), Some(vec![local("new")]));
    assert_eq!(lookup(&t, "extra").unwrap(), Some(vec![local("x")]));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn stale_database_detected() {
    let d = temp_dir("stale");
    let source = d.join("aliases");
    let db = db_path(&source);
    assert!(stale(&source, &db), "no database at all");
    std::fs::write(&source, "a: b\n").unwrap();
    assert!(stale(&source, &db), "never compiled");
    compile(&source, &db).unwrap();
    assert!(!stale(&source, &db));
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options().write(true).open(&source).unwrap().set_modified(later).unwrap();
    assert!(stale(&source, &db), "source edited after compiling");
    compile(&source, &db).unwrap();
    std::fs::File::options().write(true).open(&db).unwrap().set_modified(later).unwrap();
    assert!(!stale(&source, &db));
    std::fs::remove_file(&source).unwrap();
    assert!(!stale(&source, &db), "no source: nothing to compile");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn damaged_database_refused_by_names_and_lookup() {
    let d = temp_dir("damaged");
    let db = d.join("aliases.cdb");
    let mut w = cdb2::CDBWriter::create(&db).unwrap();
    w.add(b"good", b"lroot\0").unwrap();
    w.add(b"bad", b"lroot").unwrap();
    w.finish().unwrap();
    let t = read_table(&db);
    assert_eq!(lookup(&t, "good").unwrap(), Some(vec![local("root")]));
    let e = lookup(&t, "bad").unwrap_err();
    assert!(e.to_string().contains("`bad`") && e.to_string().contains("newaliases"), "{e}");
    assert!(matches!(names(&t), Err(Error::Corrupt { key, .. }) if key == "bad"));
    let mut w = cdb2::CDBWriter::create(&db).unwrap();
    w.add(b"Upper", b"lroot\0").unwrap();
    w.finish().unwrap();
    assert!(matches!(names(&read_table(&db)), Err(Error::Corrupt { key, .. }) if key == "Upper"));
    // Good records, but hash tables that do not find them (a lookup would
    // say "no such alias"): refused.
    let source = d.join("aliases");
    std::fs::write(&source, "staff: alice\n").unwrap();
    compile(&source, &db).unwrap();
    let mut bytes = std::fs::read(&db).unwrap();
    let tables = (0..256).map(|i| u32::from_le_bytes(bytes[i * 8..i * 8 + 4].try_into().unwrap())).min().unwrap();
    bytes[tables as usize..].fill(0xff);
    std::fs::write(&db, &bytes).unwrap();
    let t = read_table(&db);
    assert_eq!(t.records().count(), 1);
    let e = names(&t).unwrap_err();
    assert!(e.to_string().contains("`staff`: not found by its name"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn newaliases_compiles_the_configured_file() {
    let d = temp_dir("newaliases");
    let config = crate::config::Config { aliases: d.join("aliases"), ..Default::default() };
    std::fs::write(&config.aliases, SAMPLE).unwrap();
    let s = newaliases(&config).unwrap();
    assert_eq!(s.aliases, 5);
    let t = read_table(&d.join("aliases.cdb"));
    assert_eq!(lookup(&t, "root").unwrap(), Some(vec![local("joe")]));
    std::fs::remove_dir_all(&d).unwrap();
}

// ---- formats: what older versions make of a database ----

/// The check a version that knows only the tags `tags` makes of every
/// record at start, as `names` did before the tag `m`: the message it
/// stops with, or the names it takes for aliases.
fn older_names(t: &Table, tags: &[u8]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for record in t.records() {
        let (key, value) = record.unwrap();
        let key = std::str::from_utf8(key).unwrap();
        assert!(!key.is_empty() && key == key.to_lowercase() && !key.chars().any(|c| c.is_control()), "{key}");
        for target in value.strip_suffix(&[0]).unwrap().split(|&b| b == 0) {
            if !tags.contains(&target[0]) {
                let tag = target[0];
                return Err(format!(
                    "aliases database damaged at `{key}`: unknown target tag 0x{tag:02x}; run newaliases"
                ));
            }
        }
        out.push(key.to_string());
    }
    Ok(out)
}

/// The tags of the first version, and of the one that added `m`.
const FIRST_TAGS: &[u8] = b"lacfi";
const M_TAGS: &[u8] = b"lacfim";

#[test]
fn without_backslash_user_the_database_is_format_1_for_every_version() {
    let d = temp_dir("format1");
    let source = d.join("aliases");
    std::fs::write(&source, SAMPLE).unwrap();
    let summary = compile(&source, &db_path(&source)).unwrap();
    assert_eq!(summary.format, 1);
    let t = read_table(&db_path(&source));
    assert_eq!(format(&t).unwrap(), 1);
    assert_eq!(t.get(FORMAT_KEY.as_bytes()), None, "no format record");
    // The first version reads it whole, as this one does.
    assert_eq!(older_names(&t, FIRST_TAGS).unwrap(), names(&t).unwrap());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn backslash_user_makes_format_2_which_older_versions_refuse_at_its_first_record() {
    let d = temp_dir("format2");
    let source = d.join("aliases");
    std::fs::write(&source, "staff: alice, bob\nroot: \\root, admin\n").unwrap();
    let summary = compile(&source, &db_path(&source)).unwrap();
    assert_eq!(summary.format, 2);
    assert_eq!(summary.aliases, 2);
    assert!(summary.to_string().ends_with(", format 2 (\\user: an mta without \\user refuses it)"), "{summary}");
    let t = read_table(&db_path(&source));
    // The format record comes first, stored as the target `\2`.
    let (first, value) = t.records().next().unwrap().unwrap();
    assert_eq!((first, value), (FORMAT_KEY.as_bytes(), &b"m2\0"[..]));
    // This version: format 2, the aliases and nothing else.
    assert_eq!(format(&t).unwrap(), 2);
    assert_eq!(names(&t).unwrap(), ["root", "staff"]);
    assert_eq!(lookup(&t, "root").unwrap(), Some(vec![mailbox("root"), local("admin")]));
    assert_eq!(lookup(&t, FORMAT_KEY).unwrap(), None, "the format record is no alias");
    let inc = |_: &Path| Ok(vec![]);
    let expanded: Vec<Target> = expand(&t, FORMAT_KEY, inc).unwrap().into_iter().map(|d| d.target).collect();
    assert_eq!(expanded, [local(FORMAT_KEY)], "a mailbox of that name, not the target \\2");
    // The first version stops at the format record, before any alias it
    // could misread, and says what it is.
    assert_eq!(
        older_names(&t, FIRST_TAGS).unwrap_err(),
        "aliases database damaged at `(aliases format of a newer mta)`: unknown target tag 0x6d; run newaliases"
    );
    // The version that added `m` reads every alias right, and takes the
    // record for one more name, which no address reaches: smtpd keeps a
    // quoted local part's quotes, and this one needs them.
    assert_eq!(older_names(&t, M_TAGS).unwrap(), [FORMAT_KEY, "root", "staff"]);
    assert!(crate::address::parse_mailbox(&format!("{FORMAT_KEY}@example.org"), true).is_err());
    let quoted = crate::address::parse_mailbox(&format!("\"{FORMAT_KEY}\"@example.org"), true).unwrap();
    assert_ne!(quoted.local.to_lowercase(), FORMAT_KEY);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_database_of_the_version_without_the_format_record_is_read() {
    let d = temp_dir("format-m");
    let db = d.join("aliases.cdb");
    let mut w = cdb2::CDBWriter::create(&db).unwrap();
    w.add(b"root", b"mroot\0ladmin\0").unwrap();
    w.finish().unwrap();
    let t = read_table(&db);
    assert_eq!(format(&t).unwrap(), 1);
    assert_eq!(names(&t).unwrap(), ["root"]);
    assert_eq!(lookup(&t, "root").unwrap(), Some(vec![mailbox("root"), local("admin")]));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_newer_format_is_refused_first_with_run_newaliases() {
    let d = temp_dir("format-newer");
    let db = d.join("aliases.cdb");
    let write = |format: &[u8]| {
        let mut w = cdb2::CDBWriter::create(&db).unwrap();
        w.add(FORMAT_KEY.as_bytes(), format).unwrap();
        // (what a later format might hold, unreadable here)
        w.add(b"root", b"zroot\0").unwrap();
        w.finish().unwrap();
        read_table(&db)
    };
    let t = write(b"m3\0");
    let e = names(&t).unwrap_err();
    assert!(matches!(e, Error::Newer { format: 3 }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "aliases database in format 3, written by a newer mta; this one reads up to format 2: run newaliases"
    );
    assert!(matches!(format(&t), Err(Error::Newer { format: 3 })));
    // A format record that names no format is damage.
    for bad in [&b"m\0"[..], b"mx\0", b"m1\0", b"m0\0", b"l2\0", b"m2", b"m99999999999\0"] {
        let e = names(&write(bad)).unwrap_err();
        assert!(matches!(&e, Error::Corrupt { key, .. } if key == FORMAT_KEY), "{bad:?}: {e:?}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn the_format_key_is_no_alias_name() {
    for text in ["\"(aliases format of a newer mta)\": root\n", "\"(Aliases Format of a Newer MTA)\": root\n"] {
        let (line, message) = error(text);
        assert_eq!(line, 1);
        assert!(message.contains("is reserved"), "{message}");
    }
}

#[test]
fn addresses_in_use_that_the_rfc_does_not_allow_are_targets() {
    // As a recipient from the network: newaliases must not refuse the
    // whole file for a Japanese carrier's address or a long VERP one.
    let long = format!("{}@lists.example", "v".repeat(100));
    for a in ["taro..yamada@docomo.ne.jp", "taro.@docomo.ne.jp", long.as_str()] {
        assert_eq!(Target::Address(a.to_string()).validate(), Ok(()), "{a}");
    }
    for a in ["a b@x.example", "a\u{1}b@x.example", "@x.example"] {
        assert!(Target::Address(a.to_string()).validate().is_err(), "{a}");
    }
}

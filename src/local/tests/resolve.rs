//! The resolver's use of the compiled aliases: `\user`, a database that
//! cannot be used, and one replaced by `newaliases` while local runs.

use super::TempDir;
use crate::aliases;
use crate::config::delivery::DeliveryConf;
use crate::ipc::msg::RecipientStatus;
use crate::local::resolve::{DbNote, Dest, Resolver, Target};

/// The settings of a local process whose aliases file is `dir/aliases`.
fn conf(dir: &TempDir) -> DeliveryConf {
    let mut c = crate::config::Config::default().delivery(None);
    c.aliases = dir.path.join("aliases");
    c
}

/// Write `text` as the aliases file and compile it, as newaliases does.
fn newaliases(c: &DeliveryConf, text: &str) {
    std::fs::write(&c.aliases, text).expect("aliases file");
    aliases::compile(&c.aliases, &aliases::db_path(&c.aliases)).expect("newaliases");
}

/// Each destination's mailbox owner and whether its `.forward` is read
/// (`None` for destinations that are no mailbox).
fn mailboxes(dests: &[Dest]) -> Vec<(String, bool, bool)> {
    dests
        .iter()
        .map(|d| match &d.target {
            Target::Mailbox { user, via_alias, forward } => (user.name.clone(), *via_alias, *forward),
            other => panic!("not a mailbox: {other:?}"),
        })
        .collect()
}

fn mailbox(name: &str, via_alias: bool, forward: bool) -> (String, bool, bool) {
    (name.to_string(), via_alias, forward)
}

#[test]
fn backslash_user_is_the_mailbox_without_forward_or_alias() {
    let dir = TempDir::new("local-resolve-backslash");
    let c = conf(&dir);
    newaliases(&c, "root: \\root, nobody\nlist: \\root\nnobody: \\nobody\n");
    let (r, note) = Resolver::new(&c, "host.test");
    assert!(matches!(note, Some(DbNote::Info(_))), "{note:?}");
    // root's own mailbox (no alias loop, no .forward), and nobody's, whose
    // alias in turn names the mailbox itself.
    assert_eq!(
        mailboxes(&r.resolve("root@host.test").expect("root")),
        [mailbox("root", true, false), mailbox("nobody", true, false)]
    );
    // `\root` is root's mailbox, not the alias root.
    assert_eq!(mailboxes(&r.resolve("list@host.test").expect("list")), [mailbox("root", true, false)]);
    // Without the backslash, the user's .forward is read.
    newaliases(&c, "staff: root\n");
    let (r, _) = Resolver::new(&c, "host.test");
    assert_eq!(mailboxes(&r.resolve("staff@host.test").expect("staff")), [mailbox("root", true, true)]);
}

#[test]
fn a_database_that_cannot_be_used_defers_naming_the_file() {
    let dir = TempDir::new("local-resolve-damaged");
    let c = conf(&dir);
    let db = aliases::db_path(&c.aliases);
    // No aliases file and no database: no aliases, no complaint.
    let (r, note) = Resolver::new(&c, "host.test");
    assert_eq!(note, None);
    assert_eq!(mailboxes(&r.resolve("nobody@host.test").expect("nobody")), [mailbox("nobody", false, true)]);
    // Damaged (too short for a cdb, or a value that is no target list):
    // every recipient waits, alias or not, and the reason names the file.
    let mut damaged = vec![(b"not a cdb".to_vec(), "not a cdb file")];
    let mut w = cdb2::CDBWriter::create(&db).expect("cdb");
    w.add(b"staff", b"x").expect("record");
    w.finish().expect("cdb");
    damaged.push((std::fs::read(&db).expect("cdb"), "damaged at `staff`"));
    for (bytes, why) in damaged {
        std::fs::write(&db, bytes).expect("write");
        let (r, note) = Resolver::new(&c, "host.test");
        let Some(DbNote::Warning(w)) = note else { panic!("no warning: {note:?}") };
        assert!(w.contains(&db.display().to_string()) && w.contains(why), "{w}");
        for rcpt in ["staff@host.test", "nobody@host.test"] {
            let o = r.resolve(rcpt).expect_err("deferred");
            assert_eq!((o.status, o.dsn.as_str()), (RecipientStatus::Deferred, "4.3.0"), "{rcpt}");
            assert!(o.reason.starts_with(&format!("aliases database {}: ", db.display())), "{}", o.reason);
            assert!(o.reason.contains(why), "{}", o.reason);
        }
    }
    // Unreadable (a directory where the file should be).
    std::fs::remove_file(&db).expect("rm");
    std::fs::create_dir(&db).expect("mkdir");
    let (r, note) = Resolver::new(&c, "host.test");
    assert!(matches!(note, Some(DbNote::Warning(_))), "{note:?}");
    assert_eq!(r.resolve("nobody@host.test").expect_err("deferred").status, RecipientStatus::Deferred);
}

#[test]
fn newaliases_takes_effect_at_the_next_refresh() {
    let dir = TempDir::new("local-resolve-refresh");
    let c = conf(&dir);
    let db = aliases::db_path(&c.aliases);
    newaliases(&c, "staff: root\n");
    let (mut r, _) = Resolver::new(&c, "host.test");
    assert_eq!(r.refresh_aliases(), None, "nothing changed");
    newaliases(&c, "staff: root\nhelp: nobody\n");
    // Until the next batch, the database opened is used.
    assert_eq!(r.resolve("help@host.test").expect_err("no alias yet").reason, "unknown user: \"help\"");
    assert_eq!(r.refresh_aliases(), Some(DbNote::Info(format!("aliases database {} changed: reopened", db.display()))));
    assert_eq!(mailboxes(&r.resolve("help@host.test").expect("help")), [mailbox("nobody", true, true)]);
    assert_eq!(r.refresh_aliases(), None);
    // Damaged meanwhile: said once, and mail waits; mended: used again.
    std::fs::write(&db, b"not a cdb").expect("damage");
    assert!(matches!(r.refresh_aliases(), Some(DbNote::Warning(w)) if w.contains("not a cdb")));
    assert_eq!(r.refresh_aliases(), None, "the same damage is not logged again");
    assert_eq!(r.resolve("help@host.test").expect_err("deferred").status, RecipientStatus::Deferred);
    newaliases(&c, "help: root\n");
    assert!(matches!(r.refresh_aliases(), Some(DbNote::Info(_))));
    assert_eq!(mailboxes(&r.resolve("help@host.test").expect("help")), [mailbox("root", true, true)]);
    // Removed with its aliases file: no aliases any more, said once.
    std::fs::remove_file(&db).expect("rm");
    std::fs::remove_file(&c.aliases).expect("rm");
    assert!(matches!(r.refresh_aliases(), Some(DbNote::Warning(w)) if w.contains("is gone")));
    assert_eq!(r.refresh_aliases(), None);
    assert_eq!(mailboxes(&r.resolve("nobody@host.test").expect("nobody")), [mailbox("nobody", false, true)]);
}

#[test]
fn an_aliases_file_never_compiled_defers_every_recipient() {
    let dir = TempDir::new("local-resolve-uncompiled");
    let c = conf(&dir);
    let db = aliases::db_path(&c.aliases);
    std::fs::write(&c.aliases, "staff: nobody\npostmaster: root\n").expect("aliases file");
    let why =
        format!("aliases database {} does not exist: run newaliases to compile {}", db.display(), c.aliases.display());
    let (mut r, note) = Resolver::new(&c, "host.test");
    assert_eq!(note, Some(DbNote::Warning(format!("{why}; mail for local recipients waits until then"))));
    // Neither an alias's name nor root's (delivered only through an
    // alias) nor a user's bounces or is delivered: any may be an alias.
    for rcpt in ["staff@host.test", "postmaster@host.test", "root@host.test", "nobody@host.test"] {
        let o = r.resolve(rcpt).expect_err("deferred");
        assert_eq!((o.status, o.dsn.as_str(), o.reason.as_str()), (RecipientStatus::Deferred, "4.3.0", why.as_str()));
    }
    assert_eq!(r.refresh_aliases(), None, "said once");
    // newaliases: used from the next batch on.
    newaliases(&c, "staff: nobody\n");
    assert_eq!(r.refresh_aliases(), Some(DbNote::Info(format!("aliases database {} opened", db.display()))));
    assert_eq!(mailboxes(&r.resolve("staff@host.test").expect("staff")), [mailbox("nobody", true, true)]);
    // The database removed, the file still there: waiting again.
    std::fs::remove_file(&db).expect("rm");
    assert!(matches!(r.refresh_aliases(), Some(DbNote::Warning(w)) if w.contains("run newaliases")));
    assert_eq!(r.resolve("nobody@host.test").expect_err("deferred").reason, why);
    // The file removed as well: no aliases.
    std::fs::remove_file(&c.aliases).expect("rm");
    assert!(matches!(r.refresh_aliases(), Some(DbNote::Info(i)) if i.contains("gone as well")));
    assert_eq!(mailboxes(&r.resolve("nobody@host.test").expect("nobody")), [mailbox("nobody", false, true)]);
}

#[test]
fn an_extension_no_name_may_hold_is_set_aside_and_a_name_so_is_bounced() {
    let dir = TempDir::new("local-resolve-extension");
    let c = conf(&dir);
    let (r, _) = Resolver::new(&c, "host.test");
    // As Postfix's local: the mail is the user's, the extension ignored.
    for rcpt in ["nobody+x/y@host.test", "nobody+a|b@host.test", "nobody+$x@host.test"] {
        assert_eq!(mailboxes(&r.resolve(rcpt).expect(rcpt)), [mailbox("nobody", false, true)], "{rcpt}");
    }
    for rcpt in ["nobody/x@host.test", "nobody$@host.test", "-nobody@host.test", "nobody+\u{7}@host.test"] {
        let o = r.resolve(rcpt).expect_err(rcpt);
        assert_eq!((o.status, o.dsn.as_str()), (RecipientStatus::Bounced, "5.1.3"), "{rcpt}");
    }
}

#[test]
fn an_alias_naming_its_own_address_keeps_a_copy_in_the_mailbox() {
    // `nobody: nobody@host.test, ...` is `nobody: nobody, ...`: the
    // mailbox (once), not mail sent again that comes back as a loop.
    let dir = TempDir::new("local-resolve-own-address");
    let mut c = conf(&dir);
    c.domains = vec![String::from("host.test")];
    newaliases(&c, "nobody: nobody@host.test, someone@elsewhere.example, nobody, NOBODY+copy@HOST.TEST\n");
    let (r, _) = Resolver::new(&c, "host.test");
    let dests = r.resolve("nobody@host.test").expect("nobody");
    let kinds: Vec<String> = dests
        .iter()
        .map(|d| match &d.target {
            Target::Mailbox { user, via_alias, forward } => format!("mailbox {} {via_alias} {forward}", user.name),
            Target::Forward { address, .. } => format!("forward {address}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["mailbox nobody true true", "forward someone@elsewhere.example"]);
    // Another user's address in a local domain is forwarded as before.
    newaliases(&c, "staff: root@host.test\n");
    let (r, _) = Resolver::new(&c, "host.test");
    assert!(matches!(&r.resolve("staff@host.test").expect("staff")[0].target, Target::Forward { .. }));
}

#[test]
fn a_quoted_local_part_is_the_alias_it_spells() {
    let dir = TempDir::new("local-resolve-quoted");
    let c = conf(&dir);
    newaliases(&c, "\"joe smith\": nobody\n");
    let (r, _) = Resolver::new(&c, "host.test");
    assert_eq!(mailboxes(&r.resolve("\"Joe Smith\"@host.test").expect("joe smith")), [mailbox("nobody", true, true)]);
    let o = r.resolve("\"a/b\"@host.test").expect_err("no such name");
    assert_eq!(o.dsn, "5.1.3");
}

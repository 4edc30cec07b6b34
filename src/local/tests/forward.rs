//! When a `.forward` or its directory is not safe to obey, and how its
//! forwarded addresses are grouped into new messages.

use std::os::unix::fs::PermissionsExt;

use nix::sys::stat::{fstat, stat};

use super::TempDir;
use crate::local::forward::{unsafe_dir, unsafe_file};

#[test]
fn unsafe_files_and_directories() {
    let d = TempDir::new("forward-checks");
    let f = d.path.join(".forward");
    std::fs::write(&f, "joe\n").unwrap();
    let me = nix::unistd::geteuid().as_raw();
    let mode = |m: u32| std::fs::set_permissions(&f, std::fs::Permissions::from_mode(m)).unwrap();
    mode(0o644);
    assert_eq!(unsafe_file(&stat(&f).unwrap(), me), None);
    // Owned by root: obeyed for anyone; owned by us: obeyed for us only.
    assert_eq!(unsafe_file(&stat(&f).unwrap(), me.wrapping_add(1)).is_some(), me != 0);
    mode(0o664);
    assert_eq!(unsafe_file(&stat(&f).unwrap(), me), Some("writable by group or others"));
    mode(0o646);
    assert_eq!(unsafe_file(&stat(&f).unwrap(), me), Some("writable by group or others"));
    let dir = std::fs::File::open(&d.path).unwrap();
    std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(unsafe_file(&fstat(&dir).unwrap(), me), Some("not a regular file"));
    assert_eq!(unsafe_dir(&fstat(&dir).unwrap(), me), None);
    std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(0o775)).unwrap();
    assert_eq!(unsafe_dir(&fstat(&dir).unwrap(), me), Some("in a directory writable by group or others"));
    std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(0o1777)).unwrap();
    assert!(unsafe_dir(&fstat(&dir).unwrap(), me).is_some());
    std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn forwards_go_last_one_message_per_sender_and_delivered_to() {
    use crate::local::resolve::{Dest, Target, User};
    use crate::local::resolve::{Step, steps};
    let user = User { name: String::from("bob"), uid: 1000, gid: 1000, home: "/home/bob".into() };
    let fwd = |a: &str, owner: Option<&str>, to: &str| Dest {
        target: Target::Forward { address: a.to_string(), sender: owner.map(String::from) },
        to: to.to_string(),
    };
    let dests = vec![
        fwd("a@x.example", None, "list@here"),
        Dest { target: Target::Mailbox { user, via_alias: true, forward: false }, to: String::from("bob@here") },
        fwd("b@x.example", None, "list@here"),
        fwd("c@x.example", Some("owner-list@here"), "list@here"),
        fwd("d@x.example", None, "bob@here"),
    ];
    let got: Vec<String> = steps(dests, "s@y.example")
        .iter()
        .map(|s| match s {
            Step::Here(d) => format!("here {}", d.to),
            Step::Forward { sender, to, addresses, owned } => {
                format!("{sender} {to} {}{}", addresses.join(","), if *owned { " (list)" } else { "" })
            }
        })
        .collect();
    assert_eq!(
        got,
        [
            "here bob@here",
            "s@y.example list@here a@x.example,b@x.example",
            "owner-list@here list@here c@x.example (list)",
            "s@y.example bob@here d@x.example",
        ]
    );
}

#[test]
fn a_recipients_action_follows_its_destinations() {
    use crate::local::agent::Outcome;
    use crate::local::resolve::{Dest, Target, User, done_action};
    use crate::queue::DoneAction;
    let user = |n: &str| User { name: n.to_string(), uid: 1000, gid: 1000, home: format!("/home/{n}").into() };
    let mailbox = |n: &str| Dest {
        target: Target::Mailbox { user: user(n), via_alias: true, forward: false },
        to: format!("{n}@here"),
    };
    let fwd = |a: &str, owner: Option<&str>| Dest {
        target: Target::Forward { address: a.to_string(), sender: owner.map(String::from) },
        to: String::from("list@here"),
    };
    let file = Dest { target: Target::File { path: "/var/log/x".into(), user: user("n") }, to: "x@here".into() };
    let command = Dest { target: Target::Command { command: "true".into(), user: user("n") }, to: "c@here".into() };
    let failed = Dest { target: Target::Failed(Outcome::bounce("5.1.1", "no")), to: "u@here".into() };
    // One destination here: delivered, alias or not.
    assert_eq!(done_action(&[mailbox("bob")]), DoneAction::Delivered);
    assert_eq!(done_action(std::slice::from_ref(&file)), DoneAction::Delivered);
    assert_eq!(done_action(std::slice::from_ref(&command)), DoneAction::Delivered);
    // One address further on, in a new message that carries NOTIFY on:
    // relayed; a list's, from its owner- alias: delivered, to the list.
    assert_eq!(done_action(&[fwd("a@x.example", None)]), DoneAction::Relayed);
    assert_eq!(done_action(&[fwd("a@x.example", Some("owner-list@here"))]), DoneAction::Delivered);
    assert_eq!(
        done_action(&[fwd("a@x.example", Some("owner-list@here")), fwd("b@y.example", Some("owner-list@here"))]),
        DoneAction::Delivered
    );
    // Several: expanded (RFC 3461 5.2.7.3).
    assert_eq!(done_action(&[mailbox("bob"), mailbox("carol")]), DoneAction::Expanded);
    assert_eq!(done_action(&[mailbox("bob"), fwd("a@x.example", None)]), DoneAction::Expanded);
    assert_eq!(done_action(&[fwd("a@x.example", None), fwd("b@x.example", None)]), DoneAction::Expanded);
    assert_eq!(done_action(&[mailbox("bob"), fwd("a@x.example", Some("owner-list@here"))]), DoneAction::Expanded);
    assert_eq!(done_action(&[file, command, failed]), DoneAction::Expanded);
}

#[test]
fn forwarded_copies_carry_the_dsn_request_as_rfc3461_6_2_7_says() {
    use crate::local::resolve::{ForwardDsn, forward_dsn};
    use crate::queue::{DoneAction, Notify, QueueIdGen, Recipient, Ret};
    let env = crate::queue::tests::sample(&mut QueueIdGen::new(1), 1, 10).envelope;
    assert_eq!((env.dsn_ret, env.dsn_envid.as_deref()), (Some(Ret::Headers), Some("QQ314159")));
    let on = |success, failure, delay| Some(Notify::On { success, failure, delay });
    let rcpt = |notify, orcpt: Option<&str>| Recipient {
        address: String::from("fwd@here.example"),
        orcpt: orcpt.map(String::from),
        notify,
        ..Recipient::default()
    };
    let all = rcpt(on(true, true, false), Some("rfc822;Fwd@Here.example"));
    // One address: the request goes on whole (the success notice comes
    // from the new message's delivery), with RET and ENVID.
    assert_eq!(
        forward_dsn(DoneAction::Relayed, false, &all, &env),
        ForwardDsn {
            notify: on(true, true, false),
            orcpt: Some(String::from("rfc822;Fwd@Here.example")),
            ret: Some(Ret::Headers),
            envid: Some(String::from("QQ314159")),
        }
    );
    // Several: no success notice from further on (the original
    // recipient's "expanded" one was it); failures still go back.
    let d = forward_dsn(DoneAction::Expanded, false, &all, &env);
    assert_eq!(d.notify, on(false, true, false));
    assert_eq!(d.orcpt.as_deref(), Some("rfc822;Fwd@Here.example"));
    assert_eq!(
        forward_dsn(DoneAction::Expanded, false, &rcpt(on(true, false, false), None), &env).notify,
        Some(Notify::Never)
    );
    assert_eq!(
        forward_dsn(DoneAction::Expanded, false, &rcpt(Some(Notify::Never), None), &env).notify,
        Some(Notify::Never)
    );
    assert_eq!(forward_dsn(DoneAction::Expanded, false, &rcpt(None, None), &env).notify, None);
    // No ORCPT given: one naming the address the sender used.
    assert_eq!(
        forward_dsn(DoneAction::Relayed, false, &rcpt(None, None), &env).orcpt.as_deref(),
        Some("rfc822;fwd@here.example")
    );
    // A mailing list's copy: nothing of the original request.
    assert_eq!(forward_dsn(DoneAction::Delivered, true, &all, &env), ForwardDsn::default());
    assert_eq!(forward_dsn(DoneAction::Expanded, true, &all, &env), ForwardDsn::default());
}

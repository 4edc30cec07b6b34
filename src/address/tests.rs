use super::*;
use proptest::prelude::*;

fn mb(s: &str) -> Mailbox {
    match parse_path(s, false).unwrap().0 {
        Path::Mailbox(m) => m,
        other => panic!("{other:?}"),
    }
}

#[test]
fn ordinary_addresses() {
    assert_eq!(mb("<user@example.org>"), Mailbox { local: "user".into(), domain: "example.org".into() });
    assert_eq!(mb("<first.last+tag@mx.example.org>").local, "first.last+tag");
    assert_eq!(mb("<\"john doe\"@example.org>").local, "\"john doe\"");
    assert_eq!(mb("<\"a>b\"@example.org>").local, "\"a>b\"");
    assert_eq!(mb("<u@[192.0.2.1]>").domain, "[192.0.2.1]");
    assert_eq!(mb("<u@[IPv6:2001:db8::1]>").domain, "[IPv6:2001:db8::1]");
    // The tag is case-insensitive.
    assert_eq!(mb("<u@[IPV6:2001:db8::1]>").domain, "[IPV6:2001:db8::1]");
    assert_eq!(mb("<u@[ipv6:2001:db8::1]>").domain, "[ipv6:2001:db8::1]");
    // A quoted local part that is a dot-string is that dot-string.
    assert_eq!(mb("<\"alice\"@example.org>").local, "alice");
    assert_eq!(mb("<\"al\\ice.b\"@example.org>").local, "alice.b");
    assert_eq!(mb("<\"john doe\"@example.org>").local, "\"john doe\"");
    assert_eq!(mb("<\"a..b\"@example.org>").local, "\"a..b\"");
    assert_eq!(mb("<\"\\\"a\\\"\"@example.org>").local, "\"\\\"a\\\"\"");
    assert_eq!(mb("<@relay.example:u@example.org>").local, "u");
}

#[test]
fn null_and_postmaster() {
    assert_eq!(parse_path("<>", false).unwrap().0, Path::Null);
    assert_eq!(parse_path("<Postmaster>", false).unwrap().0, Path::Postmaster);
    assert_eq!(parse_path("<postmaster>", false).unwrap().0, Path::Postmaster);
}

#[test]
fn parameters_follow() {
    let (p, rest) = parse_path("<a@b.example> SIZE=100 BODY=8BITMIME", false).unwrap();
    assert!(matches!(p, Path::Mailbox(_)));
    assert_eq!(rest, " SIZE=100 BODY=8BITMIME");
    assert_eq!(parse_path("<a@b.example>SIZE=1", false), Err(Error::Brackets));
}

#[test]
fn refused() {
    for bad in [
        "a@b.example",
        "<a@b.example",
        "<a..b@example.org>",
        "<.a@example.org>",
        "<a.@example.org>",
        "<a b@example.org>",
        "<a@-example.org>",
        "<a@example..org>",
        "<a@exa_mple.org>",
        "<a@>",
        "<@example.org>",
        "<a@[300.1.1.1]>",
        "<\"unterminated@example.org>",
        "<a;rm -rf /@example.org>",
        "<a\0b@example.org>",
        "<a\r@example.org>",
    ] {
        assert!(parse_path(bad, false).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn shell_metacharacters_are_atext_and_kept_literally() {
    // CVE-2020-7247 class: such local parts are legal; they must be stored
    // literally and never reach a shell.
    let m = mb("<`id`|$IFS&{x}@example.org>");
    assert_eq!(m.local, "`id`|$IFS&{x}");
    // The original exploit's sender has no domain and a ';': refused.
    assert!(parse_path("<;sleep 66;>", false).is_err());
}

#[test]
fn senders_are_taken_leniently() {
    // SRS/VERP senders over 64 octets; empty atoms (Japanese carriers).
    let srs = format!("SRS0=HHH=TT={}=user@forwarder.example", "a".repeat(60));
    for s in [srs.as_str(), "taro..yamada@docomo.ne.jp", "taro.@ezweb.ne.jp", ".taro@example.jp"] {
        let text = format!("<{s}> SIZE=10");
        assert!(parse_path(&text, false).is_err(), "strict: {s}");
        let (p, rest) = parse_reverse_path(&text, false).expect(s);
        assert!(matches!(p, Path::Mailbox(_)), "{s}");
        assert_eq!(rest, " SIZE=10");
        assert!(parse_mailbox_lenient(s, false).is_ok(), "{s}");
    }
    // Still nothing outside atext, no all-dots local part, and the path
    // length limit holds.
    for s in ["<a b@example.org>", "<.@example.org>", "<..@example.org>", "<a\r\nb@example.org>"] {
        assert!(parse_reverse_path(s, false).is_err(), "{s:?}");
    }
    let long = format!("<{}@example.org>", "a".repeat(300));
    assert_eq!(parse_reverse_path(&long, false).unwrap_err(), Error::TooLong);
}

#[test]
fn utf8_only_with_smtputf8() {
    assert_eq!(parse_path("<jürgen@bücher.example>", false), Err(Error::Utf8NotAllowed));
    let (p, _) = parse_path("<jürgen@bücher.example>", true).unwrap();
    let Path::Mailbox(m) = p else { panic!() };
    assert!(m.is_utf8());
}

#[test]
fn lengths() {
    let local = "a".repeat(65);
    assert_eq!(parse_path(&format!("<{local}@example.org>"), false), Err(Error::LocalTooLong));
    let long = format!("<a@{}.example>", "b".repeat(250));
    assert!(parse_path(&long, false).is_err());
}

proptest! {
    #[test]
    fn address_parse_no_panic(s in "\\PC{0,300}", utf8 in any::<bool>()) {
        let _ = parse_path(&s, utf8);
    }

    #[test]
    fn valid_dot_atoms_round_trip(local in "[a-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\\.[a-z0-9_-]{1,10}){0,3}",
                                 domain in "[a-z0-9]{1,20}(\\.[a-z0-9]{1,10}){1,3}") {
        let text = format!("<{local}@{domain}>");
        let (p, rest) = parse_path(&text, false).unwrap();
        prop_assert_eq!(rest, "");
        prop_assert_eq!(p, Path::Mailbox(Mailbox { local, domain }));
    }
}

#[test]
fn a_lists_owner_and_request_names_are_never_split() {
    assert_eq!(without_extension("bob+lists", "+"), "bob");
    assert_eq!(without_extension("bob-lists", "-+"), "bob");
    // Postfix's owner_request_special: not the list itself.
    for whole in ["owner-staff", "staff-request", "Owner-Staff", "STAFF-REQUEST", "owner-staff+x"] {
        assert_eq!(without_extension(whole, "-+"), whole);
    }
    assert_eq!(without_extension("-request", "-"), "-request", "a delimiter first is no split anyway");
    assert_eq!(without_extension("staff-requests", "-"), "staff");
}

#[test]
fn address_literals_give_their_address() {
    let v4: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    assert_eq!(literal_ip("[192.0.2.1]"), Some(v4));
    assert_eq!(literal_ip("[IPv6:2001:DB8:0::1]"), Some("2001:db8::1".parse().unwrap()));
    assert_eq!(literal_ip("[ipv6:::ffff:192.0.2.1]"), Some(v4), "IPv4-mapped is the IPv4 address");
    for not in ["192.0.2.1", "[192.0.2]", "[2001:db8::1]", "[IPv6:192.0.2.1]", "[]", "example.org"] {
        assert_eq!(literal_ip(not), None, "{not}");
    }
}

#[test]
fn domains_are_compared_in_their_ascii_form() {
    assert_eq!(domain_key("Example.ORG.").as_deref(), Some("example.org"));
    assert_eq!(domain_key("Bücher.Example").as_deref(), Some("xn--bcher-kva.example"));
    assert_eq!(domain_key("XN--BCHER-KVA.example").as_deref(), Some("xn--bcher-kva.example"));
    assert_eq!(domain_key("[192.0.2.1]").as_deref(), Some("[192.0.2.1]"));
}

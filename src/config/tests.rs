use super::*;

#[test]
fn empty_file_gives_defaults() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.spool, PathBuf::from("/var/spool/mta"));
    assert_eq!(c.user, "_mta");
    assert_eq!(c.supervise.restart_delay, Duration::from_secs(1));
    assert_eq!(c.count(Role::Qmgr), 1);
}

#[test]
fn values_with_units() {
    let c = Config::parse("supervise { restart_delay = 2s; restart_delay_max = 5min; }\nlog { line_length = 4kb; }\n")
        .unwrap();
    assert_eq!(c.supervise.restart_delay, Duration::from_secs(2));
    assert_eq!(c.supervise.restart_delay_max, Duration::from_secs(300));
    assert_eq!(c.log.line_length, 4096);
}

#[test]
fn unknown_key_names_line_and_key() {
    let (line, m) = Config::parse("hostname = \"a.example\";\n\nspoool = \"/x\";\n").unwrap_err();
    assert_eq!(line, Some(3));
    assert!(m.contains("spoool"), "{m}");
}

#[test]
fn nested_unknown_key() {
    let (line, m) = Config::parse("control {\n  socket = \"/s\";\n  sockett = 1;\n}\n").unwrap_err();
    assert_eq!(line, Some(3));
    assert!(m.contains("sockett"), "{m}");
}

#[test]
fn bad_value_names_key() {
    let (line, m) = Config::parse("\ncontrol { clients = \"many\"; }\n").unwrap_err();
    assert_eq!(line, Some(2));
    assert!(m.contains("control.clients"), "{m}");
}

#[test]
fn singleton_count_refused() {
    let (line, m) = Config::parse("\nprocesses {\n qmgr = 2;\n}\n").unwrap_err();
    assert_eq!(line, Some(2));
    assert!(m.contains("processes") && m.contains("qmgr"), "{m}");
    assert!(m.contains("singleton"), "{m}");
    let (_, m) = Config::parse("processes { nosuch = 1; }\n").unwrap_err();
    assert!(m.contains("unknown role"), "{m}");
}

#[test]
fn syntax_error_has_line() {
    let (line, m) = Config::parse("a {\n b = \"x\n").unwrap_err();
    assert!(line.is_some(), "{m}");
    assert!(m.starts_with("syntax error"), "{m}");
}

#[test]
fn error_at_the_end_is_on_the_last_line() {
    // A key with no value before the end (found at the end of the text).
    let (line, m) = Config::parse("hostname = \"a.example\";\nma\t# a comment\n# more\n").unwrap_err();
    assert_eq!(line, Some(3), "{m}");
    assert!(m.starts_with("syntax error") && m.contains("at the end of the file"), "{m}");
    // A block left open, with no final newline.
    let (line, m) = Config::parse("queue {\n  lifetime = 5d;").unwrap_err();
    assert_eq!(line, Some(2), "{m}");
    assert!(m.contains("at the end of the file"), "{m}");
    // An error within the text keeps its own line.
    let (line, m) = Config::parse("a {\n b = \"x\n").unwrap_err();
    assert_eq!(line, Some(2), "{m}");
    assert!(!m.contains("at the end of the file"), "{m}");
}

#[test]
fn bad_facility_refused() {
    let (_, m) = Config::parse("log { facility = kern; }").unwrap_err();
    assert!(m.contains("facility"), "{m}");
}

#[test]
fn relative_paths_resolve_against_config_folder() {
    let dir = std::env::temp_dir().join(format!("mta-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("mta.conf");
    std::fs::write(&f, "spool = \"spool\";\ncontrol { socket = \"run/ctl.sock\"; }\naliases = \"mail/aliases\";\n")
        .unwrap();
    let c = Config::load(&f).unwrap();
    let base = std::fs::canonicalize(&dir).unwrap();
    assert_eq!(c.spool, base.join("spool"));
    assert_eq!(c.aliases, base.join("mail/aliases"));
    assert_eq!(c.control.socket, base.join("run/ctl.sock"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn error_display_names_file_and_line() {
    let e = Error { file: PathBuf::from("/etc/mta/mta.conf"), line: Some(7), message: String::from("key `x`: bad") };
    assert_eq!(e.to_string(), "/etc/mta/mta.conf:7: key `x`: bad");
}

#[test]
fn semantic_errors_have_lines() {
    let (line, m) = Config::parse("\nsupervise {\n restart_delay = 10s;\n restart_delay_max = 1s;\n}\n").unwrap_err();
    assert_eq!(line, Some(2), "{m}");
    assert!(m.contains("restart_delay"), "{m}");
    let (line, m) = Config::parse("\n\nhostname = \"bad host\";\n").unwrap_err();
    assert_eq!(line, Some(3), "{m}");
    assert!(m.contains("hostname"), "{m}");
    let (line, m) = Config::parse("control {\n clients = 0;\n}\n").unwrap_err();
    assert_eq!(line, Some(2), "{m}");
    assert!(m.contains("out of range"), "{m}");
    let (_, m) = Config::parse("user = \"a:b\";").unwrap_err();
    assert!(m.contains("user"), "{m}");
}

#[test]
fn cross_key_errors_have_the_line_of_their_key() {
    let (line, m) = Config::parse("hostname = a.example;\n\nrelay {\n\n  password_file = \"/x\";\n}\n").unwrap_err();
    assert_eq!(line, Some(5), "{m}");
    assert!(m.starts_with("key `relay.password_file`: needs relay.host"), "{m}");
    let (line, m) =
        Config::parse("\nlisten smtps {\n  address = \"0.0.0.0:465\";\n  tls = implicit;\n}\n").unwrap_err();
    assert_eq!(line, Some(4), "{m}");
    assert!(m.contains("listen.smtps.tls"), "{m}");
    // A key left at its default: the line of the closest block written.
    let (line, m) = Config::parse("\n\nqueue {\n  backoff {\n    min = 2h;\n  }\n}\n").unwrap_err();
    assert_eq!(line, Some(4), "{m}");
    assert!(m.contains("queue.backoff.max"), "{m}");
    let (line, m) = Config::parse("\ntransport {\n  smtp {\n    initial_concurrency = 50;\n  }\n}\n").unwrap_err();
    assert_eq!(line, Some(3), "{m}");
    assert!(m.contains("transport.smtp.concurrency_limit"), "{m}");
}

#[test]
fn intake_settings() {
    let c = Config::parse(
        "hostname = mx.example.org;\ndomains = [ \"Example.org\", \"example.net\" ];\nnetworks = [ \"192.0.2.0/24\" ];\n\
         listen smtp { address = \"127.0.0.1:2525\"; tls = none; }\nlimits { message_size = 20mb; recipients = 10; }\n\
         smtpd { bare_line_ends = normalize; idle_timeout = 30s; }\n",
    )
    .unwrap();
    assert_eq!(c.local_domains(), ["example.org", "example.net"]);
    // A non-ASCII domain is kept in its ASCII form, as mail to it is compared.
    let idn = Config::parse("domains = [ \"Bücher.Example\" ];").unwrap();
    assert_eq!(idn.local_domains(), ["xn--bcher-kva.example"]);
    assert_eq!(c.listen["smtp"].address, "127.0.0.1:2525".parse().unwrap());
    assert_eq!(c.limits.message_size, 20 << 20);
    assert_eq!(c.smtpd.bare_line_ends, crate::smtpd::data::Bare::Normalize);
    assert_eq!(Config::parse("hostname = a.example;").unwrap().local_domains(), ["a.example", "localhost"]);
}

#[test]
fn cleanup_settings() {
    use crate::config::smtp::HeaderClients;
    assert_eq!(Config::default().cleanup.add_missing_headers, HeaderClients::Local);
    for (text, want) in [
        ("none", HeaderClients::None),
        ("local", HeaderClients::Local),
        ("networks", HeaderClients::Networks),
        ("\"all\"", HeaderClients::All),
    ] {
        let c = Config::parse(&format!("cleanup {{ add_missing_headers = {text}; }}")).unwrap();
        assert_eq!(c.cleanup.add_missing_headers, want);
    }
    let (line, m) = Config::parse("\ncleanup {\n  add_missing_headers = mynetworks;\n}\n").unwrap_err();
    assert_eq!(line, Some(3), "{m}");
    assert!(m.contains("cleanup.add_missing_headers"), "{m}");
    let (_, m) = Config::parse("cleanup { always = yes; }").unwrap_err();
    assert!(m.contains("always"), "{m}");
}

#[test]
fn intake_errors_name_the_key() {
    let (line, m) = Config::parse("\nlisten smtp {\n  address = \"localhost:25\";\n}\n").unwrap_err();
    assert_eq!(line, Some(3), "{m}");
    assert!(m.contains("address"), "{m}");
    let (_, m) = Config::parse("networks = [ \"10.0.0.0/40\" ];").unwrap_err();
    assert!(m.contains("networks"), "{m}");
    let (_, m) = Config::parse("listen smtps { address = \"0.0.0.0:465\"; tls = implicit; }").unwrap_err();
    assert!(m.contains("listen.smtps.tls"), "{m}");
    let (_, m) = Config::parse("limits { recipients = 0; }").unwrap_err();
    assert!(m.contains("recipients"), "{m}");
    for key in ["rate_time_unit = 0s", "connection_rate_per_client = 2000000", "recipient_rate_per_client = 2000000"] {
        let (_, m) = Config::parse(&format!("limits {{ {key}; }}")).unwrap_err();
        let name = key.split(' ').next().unwrap_or_default();
        assert!(m.contains(name), "{key}: {m}");
    }
    let c = Config::parse("limits { connection_rate_per_client = 30; rate_time_unit = 10min; }").unwrap();
    assert_eq!((c.limits.connection_rate_per_client, c.limits.rate_time_unit.as_secs()), (30, 600));
    let (_, m) = Config::parse("domains = [ \"bad domain\" ];").unwrap_err();
    assert!(m.contains("domains"), "{m}");
}

#[test]
fn repeated_listen_blocks_merge() {
    let c = Config::parse(
        "listen smtp { address = \"127.0.0.1:25\"; tls = none; }\nlisten smtp6 { address = \"[::1]:25\"; }\n",
    )
    .unwrap();
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.listen["smtp6"].address, "[::1]:25".parse().unwrap());
    let (_, m) = Config::parse("listen a { address = \"127.0.0.1:1\"; }\nlisten a { address = \"127.0.0.1:2\"; }\n")
        .unwrap_err();
    assert!(m.contains("twice"), "{m}");
    let (line, m) =
        Config::parse("listen a { address = \"127.0.0.1:1\"; }\nlisten b {\n address = \"x\"; }\n").unwrap_err();
    assert!(m.contains("address"), "{m}");
    assert!(line.is_some(), "{m}");
}

#[test]
fn aliases_default_follows_the_system() {
    let c = Config::parse("").unwrap();
    let expected =
        if cfg!(any(target_os = "freebsd", target_os = "openbsd")) { "/etc/mail/aliases" } else { "/etc/aliases" };
    assert_eq!(c.aliases, PathBuf::from(expected));
    assert_eq!(crate::aliases::db_path(&c.aliases), PathBuf::from(format!("{expected}.cdb")));
}

#[test]
fn aliases_path_set_and_checked() {
    let c = Config::parse("aliases = \"/usr/local/etc/mail/aliases\";\n").unwrap();
    assert_eq!(c.aliases, PathBuf::from("/usr/local/etc/mail/aliases"));
    let (line, m) = Config::parse("\naliases = [ \"/a\", \"/b\" ];\n").unwrap_err();
    assert_eq!(line, Some(2), "{m}");
    assert!(m.contains("aliases"), "{m}");
}

#[test]
fn mx_routing_and_reverse_lookup_settings() {
    let c = Config::parse("").unwrap();
    assert_eq!((c.smtp.port, c.smtp.mx_host_limit, c.smtp.mx_address_limit), (25, 5, 10));
    assert_eq!(c.smtp.mx_session_limit, 2);
    assert!(c.smtpd.reverse_lookups);
    assert_eq!(c.smtpd.reverse_lookup_timeout, Duration::from_secs(5));
    assert_eq!(c.dns.reverse_lookup_limit, 200);
    let c = Config::parse(
        "smtp { port = 2525; mx_host_limit = 2; mx_address_limit = 3; mx_session_limit = 4; }\n\
         smtpd { reverse_lookups = no; reverse_lookup_timeout = 500ms; }\ndns { reverse_lookup_limit = 7; }\n",
    )
    .unwrap();
    assert_eq!((c.smtp.port, c.smtp.mx_host_limit, c.smtp.mx_address_limit), (2525, 2, 3));
    assert_eq!(c.smtp.mx_session_limit, 4);
    assert!(!c.smtpd.reverse_lookups);
    assert_eq!(c.smtpd.reverse_lookup_timeout, Duration::from_millis(500));
    assert_eq!(c.dns.reverse_lookup_limit, 7);
    let d = c.delivery(None);
    assert_eq!((d.smtp.port, d.dns.reverse_lookup_limit), (2525, 7));
    for (text, key) in [
        ("smtp { port = 0; }", "smtp.port"),
        ("smtp { port = 65536; }", "port"),
        ("smtp { mx_host_limit = 0; }", "smtp.mx_host_limit"),
        ("smtp { mx_address_limit = 101; }", "smtp.mx_address_limit"),
        ("smtp { mx_session_limit = 0; }", "smtp.mx_session_limit"),
        ("smtp { mx_session_limit = 11; }", "smtp.mx_session_limit"),
        ("dns { reverse_lookup_limit = 0; }", "dns.reverse_lookup_limit"),
        ("smtpd { reverse_lookup_timeout = 0; }", "smtpd"),
        ("smtpd { reverse_lookup_timeout = 61s; }", "smtpd"),
        ("smtpd { reverse_lookups = maybe; }", "reverse_lookups"),
    ] {
        let (_, m) = Config::parse(text).unwrap_err();
        assert!(m.contains(key), "{text}: {m}");
    }
}

#[test]
fn transport_map_and_lmtp_limits() {
    let c = Config::parse(
        "transport_map {\n  \"example.org\" = \"lmtp:unix:/var/run/dovecot/lmtp\";\n  \
         \"partner.example\" = \"smtp:[mx.partner.example]:587\";\n  \".example.net\" = \"smtp:[gw.example.net]\";\n  \
         \"*\" = \"smtp\";\n}\ntransport { lmtp { processes = 10; recipient_limit = 5; } }\n",
    )
    .unwrap();
    let d = c.delivery(None);
    assert_eq!(d.settings().lmtp.processes, 10);
    assert_eq!(d.settings().lmtp.recipient_limit, 5);
    assert_eq!(d.settings().lmtp.concurrency_limit, 20, "the other keys keep their defaults");
    let routing = d.routing();
    let dest = crate::qmgr::schedule::route("u@example.org", &routing);
    assert_eq!(dest.to_string(), "lmtp:unix:/var/run/dovecot/lmtp");
    assert_eq!(crate::qmgr::schedule::route("u@x.example.net", &routing).to_string(), "smtp:[gw.example.net]");
    // What master sends the delivery roles reads back the same.
    let bytes = postcard::to_allocvec(&d).unwrap();
    let back: delivery::DeliveryConf = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, d);
    assert!(Config::parse("").unwrap().transport_map.is_empty());
}

#[test]
fn local_concurrency_defaults_to_its_process_limit() {
    // A local destination is a whole domain: its limit is the transport's.
    let d = Config::parse("").unwrap().delivery(None);
    assert_eq!(d.settings().local.concurrency_limit, 100);
    assert_eq!(d.settings().smtp.concurrency_limit, 20);
    let c = Config::parse("transport { local { processes = 40; } smtp { processes = 40; } }\n").unwrap();
    assert_eq!(c.delivery(None).settings().local.concurrency_limit, 40);
    assert_eq!(c.delivery(None).settings().smtp.concurrency_limit, 20);
    let c = Config::parse("transport { local { concurrency_limit = 8; } }\n").unwrap();
    assert_eq!(c.delivery(None).settings().local.concurrency_limit, 8);
    // Below initial_concurrency (5), it is refused, naming the key.
    let (_, m) = Config::parse("transport { local { processes = 3; } }\n").unwrap_err();
    assert!(m.contains("transport.local.concurrency_limit"), "{m}");
}

#[test]
fn transport_map_errors_name_line_and_entry() {
    let (line, m) =
        Config::parse("hostname = a.example;\ntransport_map {\n  \"example.org\" = \"lmtp\";\n}\n").unwrap_err();
    assert_eq!(line, Some(3), "{m}");
    assert!(m.contains("transport_map.example.org") && m.contains("lmtp needs a next hop"), "{m}");
    let (line, m) =
        Config::parse("transport_map {\n  \"a.example\" = \"smtp\";\n  \"user@example.org\" = \"smtp\";\n}\n")
            .unwrap_err();
    assert_eq!(line, Some(3), "{m}");
    assert!(m.contains("transport_map") && m.contains("user@example.org") && m.contains("not addresses"), "{m}");
    let (line, m) = Config::parse("transport_map {\n  \"b.example\" = \"lmtp:unix:relative\";\n}\n").unwrap_err();
    assert_eq!(line, Some(2), "{m}");
    assert!(m.contains("transport_map.b.example") && m.contains("absolute"), "{m}");
    // The same key twice: UCL makes a list of it.
    let (line, m) =
        Config::parse("transport_map {\n  \"a.example\" = \"smtp\";\n  \"a.example\" = \"local\";\n}\n").unwrap_err();
    assert!(line.is_some(), "{m}");
    assert!(m.contains("transport_map.a.example") && m.contains("one transport per key"), "{m}");
    let (_, m) =
        Config::parse("transport_map {\n  \"A.example\" = \"smtp\";\n  \"a.example.\" = \"local\";\n}\n").unwrap_err();
    assert!(m.contains("`a.example` is in the table twice"), "{m}");
    let (_, m) = Config::parse("transport_map = \"smtp\";\n").unwrap_err();
    assert!(m.contains("transport_map"), "{m}");
    let (line, m) = Config::parse("transport {\n lmtp {\n  processes = 0;\n }\n}\n").unwrap_err();
    assert!(m.contains("transport.lmtp.processes"), "{line:?} {m}");
}

#[test]
fn the_local_recipient_check_is_on_unless_turned_off() {
    assert!(Config::parse("").unwrap().local.recipient_check);
    assert!(!Config::parse("local { recipient_check = no; }\n").unwrap().local.recipient_check);
    let (line, m) = Config::parse("local {\n  recipient_check = sometimes;\n}\n").unwrap_err();
    assert!(m.contains("recipient_check") && line == Some(2), "{line:?} {m}");
}

#[test]
fn directory_lookups_are_on_by_default_and_run_the_lookup_process_only_when_used() {
    let c = Config::parse("").unwrap();
    assert!(c.local.directory_lookup && c.local.looks_up_users());
    assert_eq!(c.local.directory_lookup_timeout, Duration::from_secs(10));
    assert_eq!(c.local.directory_lookup_cache, Duration::from_secs(60));
    assert_eq!((c.local.directory_lookup_cache_names, c.local.directory_lookup_backlog), (10_000, 1024));
    assert_eq!(c.count(Role::Lookup), 1);
    for off in ["directory_lookup = no;", "directory_users = no;", "recipient_check = no;"] {
        let c = Config::parse(&format!("local {{ {off} }}\n")).unwrap();
        assert!(!c.local.looks_up_users(), "{off}");
        assert_eq!(c.count(Role::Lookup), 0, "{off}");
    }
    let c = Config::parse("local { directory_lookup_timeout = 3s; directory_lookup_cache = 0s; }\n").unwrap();
    assert_eq!(c.local.directory_lookup_timeout, Duration::from_secs(3));
    assert!(c.local.directory_lookup_cache.is_zero());
    let (line, m) = Config::parse("local {\n  directory_lookup_timeout = 0s;\n}\n").unwrap_err();
    assert!(m.contains("local.directory_lookup_timeout"), "{line:?} {m}");
    let (_, m) = Config::parse("local { directory_lookup_cache = 2d; }\n").unwrap_err();
    assert!(m.contains("local.directory_lookup_cache"), "{m}");
    let (_, m) = Config::parse("local { directory_lookup_cache_names = 0; }\n").unwrap_err();
    assert!(m.contains("local.directory_lookup_cache_names"), "{m}");
    let (_, m) = Config::parse("local { directory_lookup_backlog = 100001; }\n").unwrap_err();
    assert!(m.contains("local.directory_lookup_backlog"), "{m}");
    let c = Config::parse("local { directory_lookup_cache_names = 5; directory_lookup_backlog = 7; }\n").unwrap();
    assert_eq!((c.local.directory_lookup_cache_names, c.local.directory_lookup_backlog), (5, 7));
    assert_eq!(c.local.directory_lookup_threads, 4);
    let c = Config::parse("local { directory_lookup_threads = 1; }\n").unwrap();
    assert_eq!(c.local.directory_lookup_threads, 1);
    for bad in ["0", "65"] {
        let (_, m) = Config::parse(&format!("local {{ directory_lookup_threads = {bad}; }}\n")).unwrap_err();
        assert!(m.contains("local.directory_lookup_threads") && m.contains("1 to 64"), "{m}");
    }
    let (line, m) = Config::parse("\nprocesses {\n lookup = 2;\n}\n").unwrap_err();
    assert!(m.contains("lookup") && m.contains("runs once") && line == Some(2), "{line:?} {m}");
}

#[test]
fn local_delivery_workers_are_bounded() {
    let c = Config::parse("").unwrap();
    assert_eq!((c.local.workers, c.local.worker_idle_time), (32, Duration::from_secs(10)));
    let c = Config::parse("local { workers = 0; worker_idle_time = 2min; }\n").unwrap();
    assert_eq!((c.local.workers, c.local.worker_idle_time), (0, Duration::from_secs(120)));
    let (_, m) = Config::parse("local { workers = 129; }\n").unwrap_err();
    assert!(m.contains("local.workers"), "{m}");
    let (_, m) = Config::parse("local { worker_idle_time = 0s; }\n").unwrap_err();
    assert!(m.contains("local.worker_idle_time"), "{m}");
}

#[test]
fn memory_hand_over_keys() {
    let q = Config::parse("").unwrap().queue;
    assert_eq!((q.memory_messages, q.memory_message_size, q.memory_time), (1024, 1 << 20, Duration::from_secs(2)));
    let c = Config::parse("queue {\n  memory_messages = 0;\n  memory_message_size = 64mb;\n  memory_time = 60s;\n}\n")
        .unwrap();
    assert_eq!(c.queue.memory_messages, 0);
    assert_eq!(c.queue.memory_message_size, 64 << 20);
    assert_eq!(c.queue.memory_time, Duration::from_secs(60));
    for (text, key) in [
        ("queue {\n\n  memory_messages = 65537;\n}\n", "queue.memory_messages"),
        ("queue {\n\n  memory_message_size = 65mb;\n}\n", "queue.memory_message_size"),
        ("queue {\n\n  memory_time = 0;\n}\n", "queue.memory_time"),
        ("queue {\n\n  memory_time = 61s;\n}\n", "queue.memory_time"),
    ] {
        let (line, m) = Config::parse(text).unwrap_err();
        assert_eq!(line, Some(3), "{m}");
        assert!(m.starts_with(&format!("key `{key}`: ")), "{m}");
    }
}

//! `mtactl config [-n] [NAME ...]`, as Postfix's postconf(1): the
//! configuration in force, every setting with its value, defaults
//! included, one `name = value` line each, named as mta.conf(5) names
//! them (`supervise.stop_timeout`, `listen.smtp.address`). `-n` shows only
//! the settings whose value is not the default; NAMEs choose settings,
//! each one setting or a section (`limits`: every `limits.` setting). With
//! `-j`, one JSON object of the same names and values.
//!
//! The file is read and checked as master reads it (`-f`, or the default
//! path), without the daemon: an error names file, line and key. Values
//! are written as the file would give them: strings quoted, times with a
//! unit (`10s`, `5min`, `4d`), lists in brackets.
//!
//! Trusts: the configuration file as master does (it is parsed by the
//! same code); nothing else is read.

use std::path::Path;

use serde_json::{Map, Value};

use crate::config::Config;

/// What `mtactl config` was asked.
#[derive(Debug, Default, PartialEq)]
pub struct Query {
    /// `-n`: only the settings that differ from the default.
    pub changed: bool,
    /// Settings or sections; none: every setting.
    pub names: Vec<String>,
}

impl Query {
    pub fn parse(args: &[String]) -> Result<Query, String> {
        let mut q = Query::default();
        for a in args {
            match a.as_str() {
                "-n" => q.changed = true,
                s if s.starts_with('-') => return Err(format!("unknown config option `{s}`")),
                s => q.names.push(s.to_string()),
            }
        }
        Ok(q)
    }
}

/// Print the settings of the configuration at `path`; the exit status.
pub fn run(path: &Path, q: &Query, json: bool) -> i32 {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mtactl: {e}");
            return 1;
        }
    };
    let (chosen, unknown) = settings(&config, q);
    if json {
        let object: Map<String, Value> = chosen.into_iter().map(|(k, v)| (k, to_json(&v))).collect();
        println!("{}", Value::Object(object));
    } else {
        for (k, v) in &chosen {
            // (`name =` for a setting with no value, as postconf has it.)
            println!("{}", format!("{k} = {}", text(v)).trim_end());
        }
    }
    for name in &unknown {
        eprintln!("mtactl: unknown setting `{name}`");
    }
    i32::from(!unknown.is_empty())
}

/// The settings `q` asks for, in name order, and the NAMEs that match
/// no setting.
pub fn settings(config: &Config, q: &Query) -> (Vec<(String, Value)>, Vec<String>) {
    let all = flatten(config);
    // The defaults as master would take them here (the hostname is this
    // system's).
    let defaults: std::collections::HashMap<String, Value> =
        if q.changed { flatten(&Config::default()).into_iter().collect() } else { Default::default() };
    let unknown = q.names.iter().filter(|n| !all.iter().any(|(k, _)| within(k, n))).cloned().collect();
    let chosen = all
        .into_iter()
        .filter(|(k, _)| q.names.is_empty() || q.names.iter().any(|n| within(k, n)))
        .filter(|(k, v)| defaults.get(k) != Some(v))
        .collect();
    (chosen, unknown)
}

/// `key` is the setting `name` or one of the section `name`.
fn within(key: &str, name: &str) -> bool {
    key == name || key.strip_prefix(name).is_some_and(|rest| rest.starts_with('.'))
}

/// Every setting of `config`: `section.key` and its value, sorted. A map
/// or section with nothing in it is one setting (`processes = {}`);
/// a list is one value.
pub fn flatten(config: &Config) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let value = serde_json::to_value(config).unwrap_or(Value::Null);
    walk(String::new(), &value, &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn walk(prefix: String, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{}", key(k)) };
                walk(name, v, out);
            }
        }
        _ => out.push((prefix, v.clone())),
    }
}

/// A map's key as the file would write it: quoted unless it is a plain
/// word (`transport_map."example.org"`).
fn key(k: &str) -> String {
    if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

/// A time with the largest unit that states it exactly, in UCL's
/// suffixes (minutes are `min`: UCL reads `10m` as ten million). The
/// configuration's times are written as seconds in floating point
/// (`serde_ucl::time`), and nothing else in it is a float.
fn duration(secs: f64) -> String {
    let ms = (secs * 1000.0).round();
    if (ms / 1000.0 - secs).abs() > 1e-9 || ms >= u64::MAX as f64 {
        return format!("{secs}s");
    }
    let ms = ms as u64;
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("min", 60)] {
        if s != 0 && s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

/// A value as the file would give it.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Number(n) if n.is_f64() => duration(n.as_f64().unwrap_or(0.0)),
        Value::Array(a) => format!("[{}]", a.iter().map(text).collect::<Vec<_>>().join(", ")),
        Value::Object(m) if m.is_empty() => String::from("{}"),
        Value::Object(m) => {
            let inner: Vec<String> = m.iter().map(|(k, v)| format!("{} = {};", key(k), text(v))).collect();
            format!("{{ {} }}", inner.join(" "))
        }
        other => other.to_string(),
    }
}

/// A value for `-j`: times as the file writes them, the rest as is.
fn to_json(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => Value::String(duration(n.as_f64().unwrap_or(0.0))),
        Value::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const FILE: &str = r#"
        hostname = "mx.example.org";
        supervise { stop_timeout = 5min; restart_delay = 1500ms; }
        limits { message_size = 20mb; rate_time_unit = 1h; }
        networks = [ "192.0.2.0/24", "2001:db8::/32" ];
        listen { mx { address = "127.0.0.1:2525"; tls = none; } }
        relay { host = "[mx.example.net]:587"; }
        transport_map { "example.org" = "lmtp:unix:/var/run/dovecot/lmtp"; }
        queue { lifetime = 2d; }
    "#;

    fn lines(config: &Config, q: &Query) -> Vec<String> {
        let (s, _) = settings(config, q);
        s.iter().map(|(k, v)| format!("{k} = {}", text(v)).trim_end().to_string()).collect()
    }

    #[test]
    fn every_setting_is_named_as_the_manual_names_it() {
        let all = lines(&Config::default(), &Query::default());
        for want in [
            "supervise.stop_timeout = 10s",
            "limits.rate_time_unit = 1min",
            "listen.smtp.address = \"0.0.0.0:25\"",
            "networks = [\"127.0.0.0/8\", \"::1/128\"]",
            "relay.host =",
            "processes = {}",
        ] {
            assert!(all.iter().any(|l| l == want), "no `{want}` in {all:#?}");
        }
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
    }

    #[test]
    fn changed_settings_only_with_n() {
        let c = Config::parse(FILE).expect("parse");
        let q = Query { changed: true, names: Vec::new() };
        assert_eq!(
            lines(&c, &q),
            [
                "hostname = \"mx.example.org\"",
                "limits.message_size = 20971520",
                "limits.rate_time_unit = 1h",
                "listen.mx.address = \"127.0.0.1:2525\"",
                "listen.mx.tls = \"none\"",
                "networks = [\"192.0.2.0/24\", \"2001:db8::/32\"]",
                "queue.lifetime = 2d",
                "relay.host = \"[mx.example.net]:587\"",
                "supervise.restart_delay = 1500ms",
                "supervise.stop_timeout = 5min",
                "transport_map.\"example.org\" = \"lmtp:unix:/var/run/dovecot/lmtp\"",
            ]
        );
    }

    #[test]
    fn names_choose_settings_and_sections_and_unknown_ones_are_said() {
        let c = Config::default();
        let q = Query::parse(&["supervise.stop_timeout".into(), "log".into()]).expect("query");
        assert_eq!(
            lines(&c, &q),
            ["log.facility = \"mail\"", "log.line_length = 2048", "supervise.stop_timeout = 10s"]
        );
        // A prefix that is not a whole section name is no section.
        let q = Query::parse(&["supervise.stop".into(), "lo".into(), "limits".into()]).expect("query");
        let (got, unknown) = settings(&c, &q);
        assert_eq!(unknown, ["supervise.stop", "lo"]);
        assert!(!got.is_empty() && got.iter().all(|(k, _)| k.starts_with("limits.")));
        assert!(Query::parse(&["-x".into()]).is_err());
        assert!(Query::parse(&["-n".into()]).expect("query").changed);
    }

    #[test]
    fn times_take_the_largest_exact_unit() {
        for (secs, want) in [
            (0.0, "0s"),
            (45.0, "45s"),
            (90.0, "90s"),
            (120.0, "2min"),
            (7200.0, "2h"),
            (432_000.0, "5d"),
            (1.5, "1500ms"),
            (0.25, "250ms"),
        ] {
            assert_eq!(duration(secs), want);
        }
    }

    /// The settings written back as a file (`a.b = v` nested as `a { b = v; }`).
    fn as_file(settings: &[(String, Value)]) -> String {
        #[derive(Default)]
        struct Node(BTreeMap<String, Node>, Option<String>);
        fn segments(key: &str) -> Vec<String> {
            let mut out = Vec::new();
            let mut rest = key;
            while !rest.is_empty() {
                let (seg, tail) = if let Some(quoted) = rest.strip_prefix('"') {
                    let end = quoted.find('"').expect("closing quote") + 2;
                    rest.split_at(end)
                } else {
                    rest.split_at(rest.find('.').unwrap_or(rest.len()))
                };
                out.push(seg.to_string());
                rest = tail.strip_prefix('.').unwrap_or(tail);
            }
            out
        }
        fn write(n: &Node, out: &mut String) {
            for (k, child) in &n.0 {
                match &child.1 {
                    Some(v) => out.push_str(&format!("{k} = {v};\n")),
                    None => {
                        out.push_str(&format!("{k} {{\n"));
                        write(child, out);
                        out.push_str("}\n");
                    }
                }
            }
        }
        let mut root = Node::default();
        for (k, v) in settings.iter().filter(|(_, v)| !v.is_null()) {
            let mut n = &mut root;
            for seg in segments(k) {
                n = n.0.entry(seg).or_default();
            }
            n.1 = Some(text(v));
        }
        let mut out = String::new();
        write(&root, &mut out);
        out
    }

    #[test]
    fn what_is_printed_reads_back_as_the_same_configuration() {
        for c in [Config::default(), Config::parse(FILE).expect("parse")] {
            let (all, unknown) = settings(&c, &Query::default());
            assert!(unknown.is_empty());
            let file = as_file(&all);
            let back = Config::parse(&file).unwrap_or_else(|e| panic!("{e:?} in\n{file}"));
            assert_eq!(back, c, "from\n{file}");
        }
    }
}

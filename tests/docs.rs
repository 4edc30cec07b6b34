//! The manual and the sample configuration say what the code does: every
//! configuration key appears in mta.conf.5 with its default (and the page
//! documents no key the code lacks), and every key is in the sample.

use mta::config::Config;
use serde_json::Value;

/// Flatten the default configuration into (dotted key, default literal).
fn keys() -> Vec<(String, Option<Vec<String>>)> {
    let v = serde_json::to_value(Config::default()).unwrap();
    let mut out = Vec::new();
    flatten("", &v, &mut out);
    out
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Option<Vec<String>>)>) {
    let Value::Object(map) = v else { unreachable!() };
    for (k, v) in map {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        // Named blocks (listen "smtp" { ... }) are documented as listen.NAME.
        let key = if prefix == "listen" { String::from("listen.NAME") } else { key };
        let literal = match v {
            // A map whose keys are the user's (processes, smtp.tls_policy,
            // the transport table): documented as a block.
            Value::Object(m)
                if matches!(key.as_str(), "processes" | "smtp.tls_policy" | "transport_map") && m.is_empty() =>
            {
                None
            }
            // No value by default: the page says in words what happens.
            Value::Null => None,
            Value::Array(items) => Some(items.iter().map(|i| i.as_str().unwrap_or_default().to_string()).collect()),
            Value::Object(_) => {
                flatten(&key, v, out);
                continue;
            }
            // UCL times serialise as float seconds.
            Value::Number(n) if n.is_f64() => Some(vec![format!("{}s", n.as_f64().unwrap())]),
            Value::Number(n) => Some(vec![n.to_string()]),
            Value::Bool(b) => Some(vec![String::from(if *b { "yes" } else { "no" })]),
            Value::String(s) => Some(vec![s.clone()]),
        };
        // The host name default is the machine's; the page says so in words.
        let literal = if key == "hostname" { Some(vec![String::from("the system's host name")]) } else { literal };
        out.push((key, literal));
    }
}

fn page() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man8/mta.conf.5")).unwrap()
}

/// The text of the `.It Ic KEY` item up to the next item.
fn item<'a>(page: &'a str, key: &str) -> Option<&'a str> {
    let start = page.lines().position(|l| l.split_whitespace().take(3).eq([".It", "Ic", key]))?;
    let offset: usize = page.lines().take(start + 1).map(|l| l.len() + 1).sum();
    let rest = &page[offset..];
    let end = rest.find("\n.It ").or_else(|| rest.find("\n.El")).unwrap_or(rest.len());
    Some(&rest[..end])
}

#[test]
fn every_key_in_the_manual_with_its_default() {
    let page = page();
    let mut missing = Vec::new();
    for (key, default) in keys() {
        match item(&page, &key) {
            None => missing.push(format!("{key}: no `.It Ic {key}` item")),
            Some(body) => {
                let joined = body.lines().filter(|l| !l.starts_with(".\\\"")).collect::<Vec<_>>().join(" ");
                let Some(defaults) = default else { continue };
                let after = joined.split("The default is").nth(1);
                for d in defaults {
                    if !after.is_some_and(|a| a.contains(&d)) {
                        missing.push(format!("{key}: default `{d}` not stated after \"The default is\""));
                    }
                }
            }
        }
    }
    assert!(missing.is_empty(), "mta.conf.5 is out of date:\n{}", missing.join("\n"));
}

#[test]
fn manual_documents_no_unknown_key() {
    let known: Vec<String> = keys().into_iter().map(|(k, _)| k).collect();
    let page = page();
    // Only items of the key list (dotted names or lower-case words with _).
    let documented: Vec<&str> =
        page.lines().filter_map(|l| l.strip_prefix(".It Ic ")).filter_map(|l| l.split_whitespace().next()).collect();
    for d in documented {
        assert!(known.iter().any(|k| k == d), "mta.conf.5 documents `{d}`, which the code does not know");
    }
}

#[test]
fn sample_configuration_names_every_key_and_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/mta.conf.sample");
    let sample = std::fs::read_to_string(path).unwrap();
    for (key, _) in keys() {
        let leaf = key.rsplit('.').next().unwrap();
        let leaf = if leaf == "NAME" { "listen" } else { leaf };
        assert!(sample.contains(&format!("{leaf} ")) || sample.contains(&format!("{leaf}=")), "sample lacks {key}");
    }
    // Uncommented, the sample is a valid configuration.
    let enabled: String = sample
        .lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("##") {
                String::new()
            } else if let Some(rest) = t.strip_prefix("# ") {
                format!("{}{}", &l[..l.len() - t.len()], rest)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    if let Err((line, m)) = Config::parse(&enabled) {
        panic!("uncommented sample does not parse: line {line:?}: {m}\n{enabled}");
    }
}

//! `mtactl queue shape [senders] [QUEUE ...]`: the queue by domain and by
//! age, as Postfix's qshape(1) prints it, for finding where mail backs
//! up: a column per age bucket (less than 5, 10, 20, ... 1280 minutes,
//! and older), a row per recipient domain (or sender domain, a message each,
//! with `senders`), the busiest first, under a TOTAL row. Recipients
//! still to be delivered are counted (not those done or bounced); the
//! queues are incoming and active unless named, as qshape has them.
//! Built from the queue listing, so it needs what `mtactl queue` needs.
//!
//! Trusts: the listing only as far as counting it.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::batch::QUEUES;

/// The first bucket's bound, in minutes, and how many buckets double it.
const FIRST_BUCKET: u64 = 5;
const BUCKETS: u32 = 8;
/// Rows for recipients a listing left out of a message (very many).
const NOT_LISTED: &str = "(not listed)";

/// What to count.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Shape {
    pub senders: bool,
    pub queues: Vec<String>,
}

impl Shape {
    /// The arguments after `queue shape`.
    pub fn parse(args: &[String]) -> Result<Shape, String> {
        let mut s = Shape::default();
        for (i, a) in args.iter().enumerate() {
            match a.as_str() {
                "senders" if i == 0 => s.senders = true,
                q if QUEUES.contains(&q) => {
                    if !s.queues.iter().any(|x| x == q) {
                        s.queues.push(q.to_string());
                    }
                }
                other => return Err(format!("`{other}` is not a queue (incoming, active, deferred, hold)")),
            }
        }
        if s.queues.is_empty() {
            s.queues = vec![String::from("incoming"), String::from("active")];
        }
        Ok(s)
    }
}

/// Counts by domain and age.
#[derive(Debug)]
pub struct Table {
    /// Each bucket's bound in minutes; one more column for older mail.
    bounds: Vec<u64>,
    rows: HashMap<String, Vec<u64>>,
    total: Vec<u64>,
}

impl Default for Table {
    fn default() -> Table {
        let bounds: Vec<u64> = (0..=BUCKETS).map(|i| FIRST_BUCKET << i).collect();
        let columns = bounds.len() + 1;
        Table { bounds, rows: HashMap::new(), total: vec![0; columns] }
    }
}

impl Table {
    /// Count `n` for `domain`, queued `age` seconds.
    pub fn add(&mut self, domain: &str, age: i64, n: u64) {
        let minutes = u64::try_from(age.max(0)).unwrap_or(0) / 60;
        // Up to 5 minutes (exclusive) is the first bucket, as in qshape.
        let column = self.bounds.iter().position(|&b| minutes < b).unwrap_or(self.bounds.len());
        let row = self.rows.entry(domain.to_string()).or_insert_with(|| vec![0; self.total.len()]);
        row[column] += n;
        self.total[column] += n;
    }

    /// Count one message of the listing (`e`, one entry of `mtactl -j
    /// queue`) queued at Unix time `arrival`, seen at `now`.
    pub fn add_entry(&mut self, e: &Value, senders: bool, now: i64) {
        let age = now - e["arrival"].as_i64().unwrap_or(now);
        if senders {
            let sender = e["sender"].as_str().unwrap_or("");
            let domain = if sender.is_empty() { String::from("MAILER-DAEMON") } else { domain_of(sender) };
            return self.add(&domain, age, 1);
        }
        for r in e["recipients"].as_array().into_iter().flatten() {
            if matches!(r["state"].as_str(), Some("done" | "bounced")) {
                continue;
            }
            self.add(&domain_of(r["address"].as_str().unwrap_or("")), age, 1);
        }
        if let Some(n) = e["omitted"].as_u64().filter(|n| *n > 0) {
            self.add(NOT_LISTED, age, n);
        }
    }

    /// The rows, busiest first (then by name), TOTAL before them.
    fn rows(&self) -> Vec<(&str, &[u64])> {
        let mut rows: Vec<(&str, &[u64])> = self.rows.iter().map(|(d, v)| (d.as_str(), v.as_slice())).collect();
        rows.sort_by(|a, b| b.1.iter().sum::<u64>().cmp(&a.1.iter().sum::<u64>()).then(a.0.cmp(b.0)));
        rows.insert(0, ("TOTAL", &self.total));
        rows
    }

    /// qshape's table: `T` (the row's total), then a column per bucket.
    pub fn render(&self) -> String {
        let mut header: Vec<String> = vec![String::new(), String::from("T")];
        header.extend(self.bounds.iter().map(u64::to_string));
        header.push(format!("{}+", self.bounds.last().copied().unwrap_or(0)));
        let lines: Vec<Vec<String>> = self
            .rows()
            .into_iter()
            .map(|(d, v)| {
                let mut l = vec![d.to_string(), v.iter().sum::<u64>().to_string()];
                l.extend(v.iter().map(u64::to_string));
                l
            })
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|c| lines.iter().map(|l| l[c].len()).chain([header[c].len()]).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for l in std::iter::once(&header).chain(lines.iter()) {
            let cells: Vec<String> = l.iter().zip(&widths).map(|(cell, w)| format!("{cell:>w$}")).collect();
            let _ = writeln!(out, "{}", cells.join(" "));
        }
        out
    }

    /// The same as JSON: the buckets' bounds in minutes (the last column
    /// is older mail) and each row.
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows()
            .into_iter()
            .map(|(d, v)| json!({ "domain": d, "total": v.iter().sum::<u64>(), "ages": v }))
            .collect();
        json!({ "ok": true, "bucket_minutes": self.bounds, "shape": rows })
    }
}

/// The domain of an address, in lower case; a bare name is its own row.
fn domain_of(address: &str) -> String {
    address.rsplit_once('@').map_or(address, |(_, d)| d).to_ascii_lowercase()
}

/// Run `mtactl queue shape` against `socket`; the exit status.
pub fn run(socket: &std::path::Path, s: &Shape, json: bool) -> i32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut table = Table::default();
    let listed = super::client::each_listed(socket, &mut |e: &Value| {
        if e["queue"].as_str().is_some_and(|q| s.queues.iter().any(|x| x == q)) {
            table.add_entry(e, s.senders, now);
        }
    });
    if !listed {
        return 1;
    }
    if json {
        println!("{}", table.to_json());
    } else {
        print!("{}", table.render());
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn queues_default_to_incoming_and_active() {
        assert_eq!(Shape::parse(&[]).unwrap().queues, ["incoming", "active"]);
        let s = Shape::parse(&args(&["senders", "deferred", "hold", "deferred"])).unwrap();
        assert_eq!((s.senders, s.queues), (true, vec![String::from("deferred"), String::from("hold")]));
        assert!(Shape::parse(&args(&["deferred", "senders"])).is_err());
        assert!(Shape::parse(&args(&["maildrop"])).is_err());
    }

    #[test]
    fn ages_fall_in_doubling_buckets() {
        let mut t = Table::default();
        // 0 and 4 minutes: the first bucket; 5: the second; 1280 and a
        // day: the last, 1280 minutes or more.
        for (minutes, n) in [(0, 1), (4, 1), (5, 1), (639, 1), (640, 1), (1280, 2), (1440, 1)] {
            t.add("example.org", minutes * 60 + 30, n);
        }
        t.add("other.example", -10, 1);
        let row = &t.rows["example.org"];
        assert_eq!(row, &[2, 1, 0, 0, 0, 0, 0, 1, 1, 3]);
        assert_eq!(t.total, [3, 1, 0, 0, 0, 0, 0, 1, 1, 3]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        let words: Vec<String> = lines.iter().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        assert_eq!(
            words,
            [
                "T 5 10 20 40 80 160 320 640 1280 1280+",
                "TOTAL 9 3 1 0 0 0 0 0 1 1 3",
                "example.org 8 2 1 0 0 0 0 0 1 1 3",
                "other.example 1 1 0 0 0 0 0 0 0 0 0"
            ]
        );
        // The columns line up.
        let ends: Vec<usize> = lines.iter().map(|l| l.len()).collect();
        assert!(ends.iter().all(|&e| e == ends[0]), "{text}");
    }

    #[test]
    fn entries_count_pending_recipients_or_senders() {
        let e = json!({
            "id": "1NG585DGN9V0000GJ8TR", "queue": "deferred", "size": 10, "arrival": 1000,
            "sender": "", "omitted": 2,
            "recipients": [
                {"address": "a@Example.ORG", "state": "deferred", "reason": ""},
                {"address": "b@example.org", "state": "pending", "reason": ""},
                {"address": "c@example.org", "state": "done", "reason": ""},
                {"address": "d@else.example", "state": "bounced", "reason": ""},
                {"address": "postmaster", "state": "pending", "reason": ""}
            ]
        });
        let mut t = Table::default();
        t.add_entry(&e, false, 1000 + 3600);
        assert_eq!(t.rows["example.org"].iter().sum::<u64>(), 2);
        assert_eq!(t.rows["example.org"][4], 2, "an hour old: up to 80 minutes");
        assert_eq!(t.rows["postmaster"].iter().sum::<u64>(), 1);
        assert_eq!(t.rows[NOT_LISTED].iter().sum::<u64>(), 2);
        assert!(!t.rows.contains_key("else.example"));
        let mut t = Table::default();
        t.add_entry(&e, true, 1000);
        assert_eq!(t.rows["MAILER-DAEMON"][0], 1);
        let j = t.to_json();
        assert_eq!(j["shape"][0]["domain"], "TOTAL");
        assert_eq!(j["shape"][1]["total"], 1);
    }
}

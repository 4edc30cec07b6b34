//! `mtactl queue hold|release|requeue|delete` on many messages at once,
//! as Postfix's postsuper(1) does them: several IDs, `-` for IDs read
//! from standard input (one per line, such as `mailq | awk` makes: the
//! first word of each line, its `*` or `!` mark dropped), and `ALL`, every
//! message the listing shows, or those of one queue (`ALL deferred`).
//! Each message is one request to the control socket, as for one ID, so
//! each is checked, carried out and logged by qmgr alone; [`WINDOW`] of
//! them are under way at once (each request waits on control and qmgr
//! in turn: one at a time, most of the time went on waiting), within
//! control's `control.clients`. mtactl prints each answer, in the order
//! of the IDs, then how many were done.
//!
//! Trusts: standard input only for the IDs it parses.

use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use crate::queue::QueueId;

/// The queues a listing names, for `ALL QUEUE`.
pub const QUEUES: [&str; 4] = ["incoming", "active", "deferred", "hold"];
/// The most IDs read from standard input.
pub const MAX_STDIN_IDS: usize = 1_000_000;
/// Requests under way at once (control serves 16 clients by default;
/// more wait to be accepted).
pub const WINDOW: usize = 8;
/// IDs whose answers are gathered before they are printed in order.
const CHUNK: usize = 512;

/// What a batch acts on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub op: String,
    /// IDs named on the command line, in order.
    pub ids: Vec<String>,
    /// `-`: more from standard input.
    pub stdin: bool,
    /// `ALL`, with the queue named after it, if any.
    pub all: Option<Option<String>>,
}

impl Batch {
    /// The arguments after `queue OP`; Err for one that is neither a
    /// queue ID, `-` nor `ALL [QUEUE]`.
    pub fn parse(op: &str, args: &[String]) -> Result<Batch, String> {
        let mut b = Batch { op: op.to_string(), ..Batch::default() };
        if let [all, rest @ ..] = args
            && all == "ALL"
        {
            match rest {
                [] => b.all = Some(None),
                [q] if QUEUES.contains(&q.as_str()) => b.all = Some(Some(q.clone())),
                [q] => return Err(format!("`{q}` is not a queue (incoming, active, deferred, hold)")),
                [_, extra, ..] => return Err(format!("unexpected argument `{extra}`")),
            }
            return Ok(b);
        }
        for a in args {
            match a.as_str() {
                "-" => b.stdin = true,
                "ALL" => return Err(String::from("ALL goes alone, with a queue at most")),
                id if QueueId::parse(id).is_some() => b.ids.push(id.to_string()),
                other => return Err(format!("`{other}` is not a queue ID")),
            }
        }
        Ok(b)
    }

    /// The queues `ALL` means without one named: what the operation can
    /// act on (a release, held mail; a requeue, mail waiting for its next
    /// attempt or held; a hold, what is not held already; a delete,
    /// everything).
    fn takes(&self, queue: &str) -> bool {
        match &self.all {
            Some(Some(q)) => q == queue,
            _ => match self.op.as_str() {
                "release" => queue == "hold",
                "requeue" => matches!(queue, "deferred" | "hold"),
                "hold" => queue != "hold",
                _ => true,
            },
        }
    }
}

/// The IDs in `input`, a line each (the first word, without a listing's
/// `*` or `!`; blank lines skipped), at most [`MAX_STDIN_IDS`]; the lines
/// that are no queue ID, for a warning each.
pub fn read_ids(input: &mut dyn BufRead) -> (Vec<String>, Vec<String>) {
    let (mut ids, mut bad) = (Vec::new(), Vec::new());
    let mut line = String::new();
    while ids.len() < MAX_STDIN_IDS {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                bad.push(format!("standard input: {e}"));
                break;
            }
        }
        let Some(word) = line.split_whitespace().next() else { continue };
        let id = word.trim_end_matches(['*', '!']);
        if QueueId::parse(id).is_some() {
            ids.push(id.to_string());
        } else {
            bad.push(format!("`{}` is not a queue ID", crate::log::sanitize(word, 64)));
        }
    }
    (ids, bad)
}

/// Run the batch against `socket`, each answer printed as for one ID
/// (`o`: -j, and the operation); the exit status: 0 when every message
/// was done, 1 otherwise.
pub fn run(socket: &Path, b: &Batch, o: &super::client::Options) -> i32 {
    let mut failed = false;
    let mut ids = b.ids.clone();
    if b.stdin {
        let (more, bad) = read_ids(&mut std::io::stdin().lock());
        for e in bad {
            eprintln!("mtactl: {e}");
            failed = true;
        }
        ids.extend(more);
    }
    if b.all.is_some() {
        let listed = super::client::each_listed(socket, &mut |e: &Value| {
            if let (Some(id), Some(q)) = (e["id"].as_str(), e["queue"].as_str())
                && b.takes(q)
            {
                ids.push(id.to_string());
            }
        });
        if !listed {
            return 1;
        }
    }
    let mut done = 0usize;
    for chunk in ids.chunks(CHUNK) {
        let answers = ask_all(chunk.len(), |i| super::client::request(socket, &format!("{} {}", b.op, chunk[i])));
        for answer in answers {
            match answer {
                Ok(v) if super::client::print(o, &v) == 0 => done += 1,
                Ok(_) => failed = true,
                Err(e) => {
                    eprintln!("mtactl: {}: {e}", socket.display());
                    return 1;
                }
            }
        }
    }
    if !o.json {
        let s = if ids.len() == 1 { "" } else { "s" };
        println!("{}: {done} of {} message{s}", b.op, ids.len());
    }
    i32::from(failed)
}

/// `ask(i)` for each `i` below `n`, [`WINDOW`] at a time on as many
/// threads; the answers in the order of `i`.
fn ask_all<T: Send>(
    n: usize,
    ask: impl Fn(usize) -> Result<T, super::client::RequestError> + Sync,
) -> Vec<Result<T, super::client::RequestError>> {
    let next = AtomicUsize::new(0);
    let mut answers: Vec<Option<Result<T, super::client::RequestError>>> = (0..n).map(|_| None).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..WINDOW.min(n))
            .map(|_| {
                s.spawn(|| {
                    let mut got = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return got;
                        }
                        got.push((i, ask(i)));
                    }
                })
            })
            .collect();
        for w in workers {
            for (i, a) in w.join().unwrap_or_default() {
                answers[i] = Some(a);
            }
        }
    });
    answers
        .into_iter()
        .map(|a| {
            a.unwrap_or_else(|| {
                Err(super::client::RequestError { nobody_listens: false, message: String::from("no answer") })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1NG585DGN9V0000GJ001";

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn answers_come_in_order_whichever_finishes_first() {
        // Later ones answer sooner: the order is still that of the IDs.
        let answers = ask_all(50, |i| {
            std::thread::sleep(std::time::Duration::from_micros(((50 - i) * 100) as u64));
            if i == 7 {
                Err(super::super::client::RequestError { nobody_listens: false, message: String::from("seven") })
            } else {
                Ok(i)
            }
        });
        assert_eq!(answers.len(), 50);
        for (i, a) in answers.iter().enumerate() {
            match a {
                Ok(v) => assert_eq!(*v, i),
                Err(e) => assert_eq!((i, e.message.as_str()), (7, "seven")),
            }
        }
        assert!(ask_all(0, |_| Ok(())).is_empty());
    }

    #[test]
    fn ids_dash_and_all_are_parsed() {
        assert!(QueueId::parse(ID).is_some());
        let b = Batch::parse("delete", &args(&[ID, "-", ID])).unwrap();
        assert_eq!((b.ids.len(), b.stdin, b.all.clone()), (2, true, None));
        let b = Batch::parse("hold", &args(&["ALL"])).unwrap();
        assert_eq!(b.all, Some(None));
        let b = Batch::parse("delete", &args(&["ALL", "deferred"])).unwrap();
        assert_eq!(b.all, Some(Some(String::from("deferred"))));
        for bad in [&["ALL", "bogus"][..], &["ALL", "hold", "x"], &[ID, "ALL"], &["nonsense"]] {
            assert!(Batch::parse("delete", &args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn all_means_what_the_operation_can_act_on() {
        let all = |op: &str, q: Option<&str>| Batch {
            op: op.to_string(),
            all: Some(q.map(String::from)),
            ..Batch::default()
        };
        let takes = |b: &Batch| QUEUES.iter().filter(|q| b.takes(q)).copied().collect::<Vec<_>>();
        assert_eq!(takes(&all("release", None)), ["hold"]);
        assert_eq!(takes(&all("requeue", None)), ["deferred", "hold"]);
        assert_eq!(takes(&all("hold", None)), ["incoming", "active", "deferred"]);
        assert_eq!(takes(&all("delete", None)), QUEUES);
        assert_eq!(takes(&all("delete", Some("deferred"))), ["deferred"]);
    }

    #[test]
    fn ids_from_a_listing_on_standard_input() {
        let input = format!(
            "-Queue ID-  --Size-- ...\n{ID}*     512  Mon, 1 Jan  sender@example.org\n\n{ID}!   12\n  \
             (deferred: reason)\nnot-an-id\n{ID}\n"
        );
        let (ids, bad) = read_ids(&mut input.as_bytes());
        assert_eq!(ids, [ID, ID, ID]);
        assert_eq!(bad.len(), 3, "{bad:?}");
    }
}

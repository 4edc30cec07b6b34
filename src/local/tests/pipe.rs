//! The command delivery's pieces: the environment filter, the verdict on
//! an exit status, and running a real /bin/sh with a message bigger than
//! a pipe holds while it writes output of its own.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::TempDir;
use crate::local::child::Content;
use crate::local::pipe::{self, Input, MAX_OUTPUT, environment, filter, one_line, verdict};
use crate::queue::ContentRange;

#[test]
fn envelope_values_are_filtered() {
    assert_eq!(filter("joe@example.org"), "joe@example.org");
    assert_eq!(filter("\"$(touch x)`id`${run{/bin/sh}}\"@a"), "___touch_x__id___run_/bin/sh___@a");
    assert_eq!(filter("a;b|c&d\ne'f"), "a_b_c_d_e_f");
    let env = environment("\"$(rm -rf /)\"@evil", "joe@host", "Joe+Lists@Host", "+", "joe", "/home/joe");
    let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str()).unwrap();
    assert_eq!(get("SENDER"), "___rm_-rf_/__@evil");
    assert_eq!(get("LOCAL"), "Joe+Lists");
    assert_eq!(get("EXTENSION"), "Lists");
    assert_eq!(get("DOMAIN"), "Host");
    assert_eq!(get("PATH"), "/usr/bin:/bin");
    assert_eq!(environment("", "a@b", "plain@b", "+", "u", "/").iter().find(|(n, _)| *n == "EXTENSION").unwrap().1, "");
}

#[test]
fn exit_statuses_map_as_sysexits_say() {
    let limit = Duration::from_secs(5);
    let exited = |c: i32| Some(ExitStatus::from_raw(c << 8));
    assert_eq!(verdict(exited(0), false, limit, "").0, 0);
    let (code, dsn, reason) = verdict(exited(75), false, limit, "busy");
    assert_eq!((code, dsn.as_str(), reason.as_str()), (75, "4.3.0", "command exited with status 75: busy"));
    assert_eq!(verdict(exited(74), false, limit, "").0, 75);
    let (code, dsn, _) = verdict(exited(1), false, limit, "");
    assert_eq!((code, dsn.as_str()), (67, "5.3.0"));
    assert_eq!(verdict(exited(67), false, limit, "").0, 67);
    assert_eq!(verdict(Some(ExitStatus::from_raw(9)), false, limit, "").1, "4.3.0");
    assert_eq!(verdict(None, true, limit, "").2, "command stopped after 5s");
}

#[test]
fn output_becomes_one_bounded_line() {
    assert_eq!(one_line(b"line one\r\n\tline\x1b[31m two\n\n"), "line one line [31m two");
    assert_eq!(one_line(&vec![b'x'; 10_000]).len(), MAX_OUTPUT);
}

fn run_sh(dir: &TempDir, content: &[u8], command: &str, limit: Duration) -> pipe::Ran {
    let path = dir.path.join("content");
    std::fs::write(&path, content).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let range = ContentRange { offset: 0, len: content.len() as u64, crc: 0 };
    let input = Input::new(Content { file: &file, range, at: 0 }, b"From x\n".to_vec());
    let env = [("PATH", String::from("/usr/bin:/bin")), ("OUT", dir.path.join("out").display().to_string())];
    pipe::run(command, &env, &dir.path, input, limit, pipe::Group::Own).unwrap()
}

#[test]
fn a_big_message_goes_in_while_output_comes_out() {
    let dir = TempDir::new("pipe-big");
    // 4 MiB in, and the command writes as much as it reads: neither side
    // may wait for the other.
    let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n";
    let content: Vec<u8> = line.iter().copied().cycle().take(line.len() * 65536).collect();
    let ran = run_sh(&dir, &content, "tee \"$OUT\"; echo done >&2", Duration::from_secs(30));
    assert!(!ran.timed_out);
    assert_eq!(ran.status.and_then(|s| s.code()), Some(0));
    assert_eq!(ran.output.len(), MAX_OUTPUT);
    let got = std::fs::read(dir.path.join("out")).unwrap();
    assert_eq!(got.len(), 7 + content.len() - 65536, "CR LF became LF, after the From line");
    assert!(got.starts_with(b"From x\n0123"));
}

#[test]
fn a_command_that_reads_nothing_is_judged_by_its_status() {
    let dir = TempDir::new("pipe-early");
    let content = vec![b'x'; 1 << 20];
    let ran = run_sh(&dir, &content, "echo refused; exit 67", Duration::from_secs(10));
    assert_eq!(ran.status.and_then(|s| s.code()), Some(67));
    assert_eq!(one_line(&ran.output), "refused");
}

#[test]
fn time_runs_out_for_the_whole_group() {
    let dir = TempDir::new("pipe-slow");
    let start = Instant::now();
    // The background sleep holds the output open: the group is killed.
    let ran = run_sh(&dir, b"a\r\n", "sleep 30 & sleep 30", Duration::from_millis(500));
    assert!(ran.timed_out);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(ran.status.and_then(|s| s.signal()), Some(9));
}

#[test]
fn an_exited_command_is_not_waited_on_for_its_children() {
    let dir = TempDir::new("pipe-bg");
    let start = Instant::now();
    let ran = run_sh(&dir, b"a\r\n", "(sleep 5 >/dev/null 2>&1 </dev/null &) ; echo ok", Duration::from_secs(20));
    assert!(!ran.timed_out);
    assert_eq!(ran.status.and_then(|s| s.code()), Some(0));
    assert!(start.elapsed() < Duration::from_secs(4), "{:?}", start.elapsed());
}

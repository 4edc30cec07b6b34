//! Maildrop files that could not be read because of an I/O error: each
//! is tried again after a pause that doubles, while the others go on, and
//! set aside in corrupt/ only when it has failed that way for
//! [`GIVE_UP`]. (Errors of the process, not of the file, such as no
//! descriptor or memory to spare, pause pickup as a whole instead:
//! [`process_wide`].)

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use nix::errno::Errno;

/// The first pause after a failure; it doubles with each one after.
pub const FIRST_PAUSE: Duration = Duration::from_secs(5);
/// The longest pause between tries.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);
/// A file still failing this long after its first failure is set aside.
pub const GIVE_UP: Duration = Duration::from_secs(3600);
/// Most files remembered; one beyond is tried again after
/// [`FIRST_PAUSE`] each time, and never given up.
const MAX_REMEMBERED: usize = 1000;

/// What to do after a failure that may pass.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Leave the file; try it again after this pause.
    RetryIn(Duration),
    /// It has failed for too long: set it aside.
    GiveUp,
}

struct Entry {
    first: Instant,
    next: Instant,
    failures: u32,
}

/// The files in trouble, by name in maildrop/.
#[derive(Default)]
pub struct Troubles {
    files: HashMap<String, Entry>,
}

impl Troubles {
    /// Records a failure of `name` at `now`.
    pub fn failed(&mut self, name: &str, now: Instant) -> Verdict {
        if !self.files.contains_key(name) && self.files.len() >= MAX_REMEMBERED {
            return Verdict::RetryIn(FIRST_PAUSE);
        }
        let e = self.files.entry(name.to_string()).or_insert(Entry { first: now, next: now, failures: 0 });
        if now.saturating_duration_since(e.first) >= GIVE_UP {
            self.files.remove(name);
            return Verdict::GiveUp;
        }
        let pause = FIRST_PAUSE.saturating_mul(1 << e.failures.min(16)).min(MAX_PAUSE);
        e.failures += 1;
        e.next = now + pause;
        Verdict::RetryIn(pause)
    }

    /// `name` was given up but could not be set aside: tried again after
    /// [`MAX_PAUSE`], and given up again at its next failure.
    pub fn given_up_but_kept(&mut self, name: &str, now: Instant) {
        let first = now.checked_sub(GIVE_UP).unwrap_or(now);
        self.files.insert(name.to_string(), Entry { first, next: now + MAX_PAUSE, failures: 16 });
    }

    /// Whether `name` may be tried at `now`.
    pub fn due(&self, name: &str, now: Instant) -> bool {
        self.files.get(name).is_none_or(|e| now >= e.next)
    }

    /// `name` was taken (or is gone): forget it.
    pub fn clear(&mut self, name: &str) {
        self.files.remove(name);
    }

    /// Forgets the files not in `present` (removed meanwhile).
    pub fn keep_only(&mut self, present: &HashSet<String>) {
        self.files.retain(|name, _| present.contains(name));
    }

    /// Whether `name` is remembered.
    pub fn contains(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }
}

/// Whether an error is the process's or the system's, not the file's:
/// out of descriptors or memory, an interrupted call. Such a failure
/// pauses pickup and counts against no file.
pub fn process_wide(e: Errno) -> bool {
    matches!(e, Errno::EMFILE | Errno::ENFILE | Errno::ENOMEM | Errno::ENOBUFS | Errno::EINTR | Errno::EAGAIN)
}

/// The same for an error from reading.
pub fn process_wide_io(e: &std::io::Error) -> bool {
    e.raw_os_error().is_some_and(|n| process_wide(Errno::from_raw(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_file_waits_longer_each_time_then_is_given_up() {
        let mut t = Troubles::default();
        let start = Instant::now();
        assert_eq!(t.failed("a", start), Verdict::RetryIn(FIRST_PAUSE));
        assert!(!t.due("a", start + FIRST_PAUSE / 2));
        assert!(t.due("a", start + FIRST_PAUSE));
        assert!(t.due("b", start), "another file is not held back");
        let second = start + FIRST_PAUSE;
        assert_eq!(t.failed("a", second), Verdict::RetryIn(FIRST_PAUSE * 2));
        assert!(!t.due("a", second + FIRST_PAUSE));
        let mut now = second;
        let mut pauses = Vec::new();
        let mut gave_up = None;
        for _ in 0..10_000 {
            now += FIRST_PAUSE * 2;
            match t.failed("a", now) {
                Verdict::RetryIn(p) => pauses.push(p),
                Verdict::GiveUp => {
                    gave_up = Some(now);
                    break;
                }
            }
        }
        assert!(pauses.iter().all(|p| *p <= MAX_PAUSE));
        assert_eq!(pauses.last(), Some(&MAX_PAUSE));
        let gave_up = gave_up.expect("given up in the end");
        assert!(gave_up.duration_since(start) >= GIVE_UP);
        assert!(gave_up.duration_since(start) < GIVE_UP + FIRST_PAUSE * 2);
        assert!(!t.contains("a"), "given up: forgotten");
        assert_eq!(t.failed("a", start + GIVE_UP), Verdict::RetryIn(FIRST_PAUSE), "a new trouble starts afresh");
    }

    #[test]
    fn a_file_that_could_not_be_set_aside_waits_the_longest_pause() {
        let mut t = Troubles::default();
        let now = Instant::now() + GIVE_UP;
        t.given_up_but_kept("a", now);
        assert!(!t.due("a", now + MAX_PAUSE / 2));
        assert!(t.due("a", now + MAX_PAUSE));
        assert_eq!(t.failed("a", now + MAX_PAUSE), Verdict::GiveUp);
    }

    #[test]
    fn a_file_taken_or_removed_is_forgotten() {
        let mut t = Troubles::default();
        let now = Instant::now();
        t.failed("a", now);
        t.failed("b", now);
        t.clear("a");
        assert!(t.due("a", now));
        t.keep_only(&HashSet::from([String::from("c")]));
        assert!(!t.contains("b"));
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = Troubles::default();
        let now = Instant::now();
        for i in 0..MAX_REMEMBERED {
            assert_eq!(t.failed(&i.to_string(), now), Verdict::RetryIn(FIRST_PAUSE));
        }
        assert_eq!(t.failed("one more", now), Verdict::RetryIn(FIRST_PAUSE));
        assert!(!t.contains("one more"));
        assert_eq!(t.failed("0", now), Verdict::RetryIn(FIRST_PAUSE * 2), "those remembered still count");
    }

    #[test]
    fn errors_of_the_process_are_told_from_those_of_the_file() {
        assert!(process_wide(Errno::EMFILE));
        assert!(process_wide(Errno::ENOMEM));
        assert!(!process_wide(Errno::EIO));
        assert!(!process_wide(Errno::ELOOP));
        assert!(process_wide_io(&std::io::Error::from_raw_os_error(Errno::ENFILE as i32)));
        assert!(!process_wide_io(&std::io::Error::from_raw_os_error(Errno::EIO as i32)));
        assert!(!process_wide_io(&std::io::Error::other("no errno")));
    }
}

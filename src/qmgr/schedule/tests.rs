//! Tests of the scheduler's policies, each named after what it guards,
//! and a property test that drives it like a shell would (with crashes)
//! and checks that no recipient is ever lost or delivered twice at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::queue::{Envelope, Notify, Recipient, State, Status};

const T0: i64 = 1_700_000_000;

fn at(secs: i64) -> Time {
    Time { secs: T0 + secs, micros: 0 }
}

fn qid(n: u32) -> QueueId {
    QueueId::new(Time { secs: T0, micros: n % 1_000_000 }, 7, n)
}

fn envelope(arrival: i64, sender: &str) -> Envelope {
    Envelope { sender: sender.to_string(), arrival: at(arrival), ..Envelope::default() }
}

fn rcpt_in(address: &str, state: State, notify: Option<Notify>) -> Recipient {
    Recipient {
        address: address.to_string(),
        orcpt: None,
        notify,
        status: Status { state, changed: T0, ..Status::default() },
    }
}

fn rcpt(address: &str) -> Recipient {
    rcpt_in(address, State::Pending, None)
}

fn many(n: usize, domain: &str) -> Vec<Recipient> {
    (0..n).map(|i| rcpt(&format!("u{i}@{domain}"))).collect()
}

/// Local domain example.org; d4.test by LMTP (the property test's
/// fourth domain), so every transport takes part.
fn scheduler(settings: Settings) -> Scheduler {
    let mut map = TransportMap::default();
    map.insert("d4.test", "lmtp:unix:/run/lmtp/socket").expect("valid entry");
    Scheduler::new(settings, Routing::new(None, ["example.org"]).with_map(map)).expect("valid settings")
}

fn smtp(host: &str) -> Destination {
    Destination {
        transport: Transport::Smtp,
        nexthop: Hop::Inet(Nexthop { host: host.to_string(), port: None, mx: true }),
    }
}

fn add(s: &mut Scheduler, id: QueueId, recipients: &[Recipient], now: i64) -> Vec<Action> {
    s.add_message(id, &envelope(0, "sender@example.net"), recipients, Origin::Incoming, at(now)).expect("admitted")
}

fn jobs(s: &mut Scheduler, now: i64) -> Vec<Job> {
    std::iter::from_fn(|| s.next_job(at(now))).collect()
}

fn report(job: &Job, outcome: impl Fn(u32) -> Outcome) -> Report {
    Report { site: SiteStatus::Reached, outcomes: job.recipients.iter().map(|r| (r.index, outcome(r.index))).collect() }
}

fn delivered(_: u32) -> Outcome {
    Outcome::Delivered { reason: String::from("250 ok"), dsn_passed: false, action: DoneAction::Relayed }
}

fn deferred(_: u32) -> Outcome {
    Outcome::Deferred { reason: String::from("451 try later") }
}

fn unreachable() -> Report {
    Report { site: SiteStatus::Unreachable { reason: String::from("connect: refused") }, outcomes: Vec::new() }
}

fn window(s: &Scheduler, d: &Destination) -> u32 {
    s.destination(d).map_or(0, |i| i.window)
}

fn writes(actions: &[Action]) -> Vec<(u32, State)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Write { recipient, status, .. } => Some((*recipient, status.state)),
            _ => None,
        })
        .collect()
}

/// The recipients whose status the shell must log itself (no delivery
/// agent logged it).
fn to_log(actions: &[Action]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Write { recipient, log: true, .. } => Some(*recipient),
            _ => None,
        })
        .collect()
}

fn fate(actions: &[Action]) -> Option<&Fate> {
    actions.iter().find_map(|a| match a {
        Action::Finish { fate, .. } => Some(fate),
        _ => None,
    })
}

fn notices(actions: &[Action]) -> Vec<&Notices> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Notify { notices, .. } => Some(notices),
            _ => None,
        })
        .collect()
}

fn one_at_a_time() -> Settings {
    let mut s = Settings::default();
    s.smtp.recipient_limit = 1;
    s
}

#[test]
fn slow_start_grows_one_per_window_of_successes() {
    let mut s = scheduler(one_at_a_time());
    let d = smtp("remote.test");
    add(&mut s, qid(1), &many(2000, "remote.test"), 0);
    let mut running: VecDeque<Job> = jobs(&mut s, 0).into();
    assert_eq!(running.len(), 5, "the initial concurrency");
    let (mut model, mut count) = (5u32, 0u32);
    for _ in 0..400 {
        let job = running.pop_front().expect("a delivery runs");
        s.job_finished(job.id, &report(&job, delivered), at(1)).expect("report taken");
        count += 1;
        if model < 20 && count >= model {
            model += 1;
            count = 0;
        }
        assert_eq!(window(&s, &d), model);
        running.extend(jobs(&mut s, 1));
        assert!(running.len() as u32 <= window(&s, &d), "never more deliveries than the window");
    }
    assert_eq!(window(&s, &d), 20, "capped at the concurrency limit");
}

#[test]
fn window_stays_near_the_concurrency_used() {
    // One delivery at a time from a long queue: the window grows only to
    // what is used plus the initial concurrency.
    let mut s = scheduler(one_at_a_time());
    let d = smtp("remote.test");
    add(&mut s, qid(1), &many(200, "remote.test"), 0);
    let mut job = s.next_job(at(0)).expect("a delivery");
    for extra in jobs(&mut s, 0) {
        s.job_finished(extra.id, &report(&extra, delivered), at(0)).expect("report taken");
    }
    for _ in 0..100 {
        s.job_finished(job.id, &report(&job, delivered), at(0)).expect("report taken");
        job = s.next_job(at(0)).expect("a delivery");
        assert!(window(&s, &d) <= 6, "window {}", window(&s, &d));
    }
    assert_eq!(window(&s, &d), 6);
    // An idle destination is forgotten (its window starts over, as in
    // Postfix).
    let mut s = scheduler(one_at_a_time());
    add(&mut s, qid(2), &[rcpt("a@remote.test")], 0);
    let job = s.next_job(at(0)).expect("a delivery");
    s.job_finished(job.id, &report(&job, delivered), at(0)).expect("report taken");
    assert_eq!(s.destination(&d), None);
    assert_eq!(s.counts().destinations, 0);
}

#[test]
fn negative_feedback_shrinks_the_window_to_one() {
    let mut settings = one_at_a_time();
    settings.smtp.failed_cohort_limit = 0;
    let mut s = scheduler(settings);
    let d = smtp("remote.test");
    add(&mut s, qid(1), &many(100, "remote.test"), 0);
    let mut running: VecDeque<Job> = jobs(&mut s, 0).into();
    let mut seen = Vec::new();
    for _ in 0..12 {
        let job = running.pop_front().expect("a delivery runs");
        let actions = s.job_finished(job.id, &unreachable(), at(1)).expect("report taken");
        assert_eq!(writes(&actions), vec![(job.recipients[0].index, State::Deferred)]);
        seen.push(window(&s, &d));
        running.extend(jobs(&mut s, 1));
        if running.is_empty() {
            running.extend(jobs(&mut s, 1));
        }
    }
    // The first failure narrows at once, then one step per window of
    // failures, never below one.
    assert_eq!(seen, vec![4, 4, 4, 3, 3, 3, 2, 2, 1, 1, 1, 1]);
    assert!(s.destination(&d).is_some_and(|i| i.dead.is_none()), "never dead with no cohort limit");
}

#[test]
fn failed_cohort_makes_a_destination_dead_until_its_retry_time() {
    let mut s = scheduler(one_at_a_time());
    let dead = smtp("dead.test");
    add(&mut s, qid(1), &many(10, "dead.test"), 0);
    add(&mut s, qid(2), &[rcpt("x@alive.test")], 0);
    let started = jobs(&mut s, 0);
    let to_dead: Vec<&Job> = started.iter().filter(|j| j.destination == dead).collect();
    assert_eq!(to_dead.len(), 5);
    let mut last = Vec::new();
    for job in &to_dead {
        last = s.job_finished(job.id, &unreachable(), at(10)).expect("report taken");
    }
    // Dead after a cohort of failures: the five waiting are deferred with
    // the reason, and the message goes to deferred/.
    let info = s.destination(&dead).expect("remembered while dead");
    assert_eq!(info.window, 0);
    assert_eq!(info.dead.as_ref().map(|(t, _)| *t), Some(at(310)));
    let deferred_now: Vec<_> = last
        .iter()
        .filter_map(|a| match a {
            Action::Write { status, .. } if status.attempts == 0 => Some(status.reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(deferred_now.len(), 5);
    // qmgr logs the five it deferred, and the one tried too: this report
    // says nothing about its recipient, so the agent logged nothing.
    assert_eq!(to_log(&last).len(), 6);
    assert!(deferred_now.iter().all(|r| r == "4.4.1 delivery temporarily suspended: connect: refused"));
    // The code is what a notice reports (an expiry keeps it, as Postfix does).
    let expired = format!("message expired in the queue; last error: {}", deferred_now[0]);
    assert_eq!(crate::bounce::agent::diagnose(&expired, 5).0.to_string(), "4.4.1");
    assert!(matches!(fate(&last), Some(Fate::Defer { .. })));
    assert_eq!(s.next_wakeup(), Some(at(310)));

    // New mail for it is deferred at once and takes no delivery slot.
    let actions = add(&mut s, qid(3), &[rcpt("y@dead.test")], 20);
    assert_eq!(writes(&actions), vec![(0, State::Deferred)]);
    assert_eq!(to_log(&actions), vec![0]);
    assert!(matches!(fate(&actions), Some(Fate::Defer { .. })));
    assert!(jobs(&mut s, 20).iter().all(|j| j.destination != dead));

    // After its retry time it is tried again, at the initial concurrency.
    add(&mut s, qid(4), &many(8, "dead.test"), 310);
    let again = jobs(&mut s, 310);
    assert_eq!(again.iter().filter(|j| j.destination == dead).count(), 5);
    assert!(s.destination(&dead).is_some_and(|i| i.dead.is_none()));
}

/// The wall clock set back a day while a destination rests: it would rest
/// a day longer; qmgr, noticing, has it tried again.
#[test]
fn a_clock_set_back_does_not_keep_a_destination_dead_longer() {
    let mut s = scheduler(one_at_a_time());
    let dead = smtp("dead.test");
    add(&mut s, qid(1), &many(10, "dead.test"), 0);
    for job in jobs(&mut s, 0).iter().filter(|j| j.destination == dead) {
        s.job_finished(job.id, &unreachable(), at(10)).expect("report taken");
    }
    assert_eq!(s.destination(&dead).and_then(|i| i.dead).map(|(t, _)| t), Some(at(310)));
    // Back by a minute and a half: still within its dead time from then.
    s.clock_went_back(at(100));
    assert!(s.destination(&dead).is_some_and(|i| i.dead.is_some()), "revived too early");
    s.clock_went_back(at(-86_400));
    assert!(s.destination(&dead).is_none_or(|i| i.dead.is_none()), "still dead a day longer");
    add(&mut s, qid(2), &many(2, "dead.test"), -86_400);
    assert!(jobs(&mut s, -86_400).iter().any(|j| j.destination == dead), "not tried again");
}

#[test]
fn a_success_brings_a_dead_destination_back() {
    let mut s = scheduler(one_at_a_time());
    let d = smtp("flaky.test");
    add(&mut s, qid(1), &many(10, "flaky.test"), 0);
    let first = jobs(&mut s, 0);
    assert_eq!(first.len(), 5);
    for job in &first[..4] {
        s.job_finished(job.id, &unreachable(), at(1)).expect("report taken");
    }
    assert_eq!(window(&s, &d), 3, "narrowed, not dead yet");
    let more = jobs(&mut s, 1);
    assert_eq!(more.len(), 2, "one still running, window three");
    let actions = s.job_finished(first[4].id, &unreachable(), at(2)).expect("report taken");
    assert_eq!(window(&s, &d), 0, "dead");
    assert_eq!(writes(&actions).len(), 1 + 3, "its own recipient and the three waiting");
    assert_eq!(s.next_wakeup(), Some(at(302)));
    // A delivery that was still running reaches the site: alive again,
    // with a window of what runs or the initial concurrency.
    s.job_finished(more[0].id, &report(&more[0], delivered), at(3)).expect("report taken");
    let info = s.destination(&d).expect("known");
    assert_eq!((info.window, info.dead), (5, None));
    assert_eq!(s.counts().dead_destinations, 0);
}

#[test]
fn recipient_limit_splits_deliveries() {
    let mut s = scheduler(Settings::default());
    let mut recipients = many(120, "big.test");
    recipients.extend(many(3, "other.test"));
    add(&mut s, qid(1), &recipients, 0);
    add(&mut s, qid(2), &many(2, "big.test"), 0);
    let started = jobs(&mut s, 0);
    let sizes: Vec<(String, QueueId, usize)> =
        started.iter().map(|j| (j.destination.nexthop.to_string(), j.message, j.recipients.len())).collect();
    assert_eq!(
        sizes,
        vec![
            ("big.test".into(), qid(1), 50),
            ("other.test".into(), qid(1), 3),
            ("big.test".into(), qid(1), 50),
            ("big.test".into(), qid(1), 20),
            ("big.test".into(), qid(2), 2),
        ]
    );
    let mut all: Vec<u32> =
        started.iter().filter(|j| j.message == qid(1)).flat_map(|j| j.recipients.iter().map(|r| r.index)).collect();
    all.sort_unstable();
    assert_eq!(all, (0..123).collect::<Vec<u32>>(), "every recipient exactly once");
}

#[test]
fn round_robin_big_destination_does_not_starve_a_small_one() {
    let mut settings = one_at_a_time();
    settings.smtp.processes = 2;
    settings.smtp.initial_concurrency = 20;
    settings.active_recipients = 30_000;
    let mut s = scheduler(settings);
    add(&mut s, qid(1), &many(10_000, "big.test"), 0);
    add(&mut s, qid(2), &[rcpt("only@small.test")], 0);
    let mut running: VecDeque<Job> = jobs(&mut s, 0).into();
    assert_eq!(running.len(), 2, "the transport's process limit");
    let mut order = Vec::new();
    for _ in 0..6 {
        let job = running.pop_front().expect("a delivery runs");
        order.push(job.destination.nexthop.to_string());
        s.job_finished(job.id, &report(&job, delivered), at(1)).expect("report taken");
        running.extend(jobs(&mut s, 1));
    }
    let small = order.iter().position(|h| h == "small.test").expect("small.test was served");
    assert!(small <= 1, "served in the first turn: {order:?}");
}

#[test]
fn transports_take_turns() {
    let mut s = scheduler(Settings::default());
    add(&mut s, qid(1), &many(500, "remote.test"), 0);
    add(&mut s, qid(2), &[rcpt("me@example.org"), rcpt("postmaster")], 0);
    let started = jobs(&mut s, 0);
    let local: Vec<&Job> = started.iter().filter(|j| j.destination.transport == Transport::Local).collect();
    assert_eq!(local.len(), 2, "one per local destination (example.org and no domain)");
    assert!(started.iter().take(4).any(|j| j.destination.transport == Transport::Local));
}

#[test]
fn active_queue_limit_holds_the_rest_on_disk() {
    let settings = Settings { active_messages: 3, ..Settings::default() };
    let mut s = scheduler(settings);
    let mut admitted = 0;
    while let Some(a) = s.next_admission(at(0), true) {
        assert_eq!(a, Admit::Incoming);
        add(&mut s, qid(admitted), &[rcpt("a@remote.test")], 0);
        admitted += 1;
    }
    assert_eq!(admitted, 3);
    assert_eq!(s.room(), Room { messages: 0, recipients: 20_000 - 3 });
    assert_eq!(
        s.add_message(qid(9), &envelope(0, ""), &[rcpt("a@b.test")], Origin::Incoming, at(0)),
        Err(Error::NoRoom(qid(9)))
    );
    let job = s.next_job(at(0)).expect("a delivery");
    let actions = s.job_finished(job.id, &report(&job, delivered), at(1)).expect("report taken");
    assert_eq!(fate(&actions), Some(&Fate::Remove));
    assert_eq!(s.next_admission(at(1), true), Some(Admit::Incoming), "room again");
}

#[test]
fn big_message_is_taken_in_slices_within_the_recipient_limit() {
    let settings = Settings { active_recipients: 10, ..Settings::default() };
    let mut s = scheduler(settings);
    let mut recipients = many(23, "remote.test");
    recipients[3].status.state = State::Done;
    let mut actions = add(&mut s, qid(1), &recipients, 0);
    let mut delivered_to = Vec::new();
    let mut loads = 1;
    loop {
        assert!(s.counts().recipients <= 10);
        if let Some(Action::LoadMore { from, .. }) = actions.iter().find(|a| matches!(a, Action::LoadMore { .. })) {
            assert!(*from > 0);
            actions = add(&mut s, qid(1), &recipients, 0);
            loads += 1;
            continue;
        }
        if fate(&actions).is_some() {
            break;
        }
        let job = s.next_job(at(0)).expect("a delivery");
        assert!(job.recipients.len() <= 5, "half the room at most");
        delivered_to.extend(job.recipients.iter().map(|r| r.index));
        actions = s.job_finished(job.id, &report(&job, delivered), at(0)).expect("report taken");
        for a in &actions {
            if let Action::Write { recipient, status, .. } = a {
                recipients[*recipient as usize].status = status.clone();
            }
        }
    }
    assert_eq!(fate(&actions), Some(&Fate::Remove));
    assert_eq!(loads, 5);
    let expected: Vec<u32> = (0..23).filter(|&i| i != 3).collect();
    assert_eq!(delivered_to, expected);
    assert_eq!(s.counts().recipients, 0);
}

#[test]
fn incoming_and_deferred_mail_take_turns() {
    let mut s = scheduler(Settings::default());
    for n in 0..3 {
        s.deferred_found(qid(100 + n), at(-10));
    }
    s.deferred_found(qid(200), at(1000));
    let mut order = Vec::new();
    for _ in 0..6 {
        match s.next_admission(at(0), true) {
            Some(Admit::Incoming) => order.push(String::from("in")),
            Some(Admit::Deferred(id)) => order.push(id.to_string()),
            None => break,
        }
    }
    let d = |n| qid(n).to_string();
    assert_eq!(order, vec!["in".into(), d(100), "in".into(), d(101), "in".into(), d(102)]);
    assert_eq!(s.next_admission(at(0), false), None, "the last is not due");
    assert_eq!(s.next_wakeup(), Some(at(1000)));
    assert_eq!(s.next_admission(at(1000), false), Some(Admit::Deferred(qid(200))));
}

#[test]
fn deferred_index_is_bounded_and_asks_for_a_scan() {
    let settings = Settings { deferred_index: 3, ..Settings::default() };
    let mut s = scheduler(settings);
    for n in 0..5 {
        s.deferred_found(qid(n), at(100 * i64::from(n)));
    }
    assert_eq!(s.counts().deferred_indexed, 3);
    assert!(!s.counts().deferred_complete);
    assert!(!s.wants_deferred_scan(at(299)));
    assert!(s.wants_deferred_scan(at(300)), "the first dropped may be due");
    assert_eq!(s.next_wakeup(), Some(at(0)));
    s.begin_deferred_scan(at(300));
    assert!(s.counts().deferred_complete);
    assert!(!s.forget_deferred(&qid(0)));
}

#[test]
fn scans_for_the_horizon_are_spaced() {
    let settings = Settings { deferred_index: 2, ..Settings::default() };
    let mut s = scheduler(settings);
    s.begin_deferred_scan(at(1000));
    // More are due than the index holds: the horizon is behind the clock.
    for n in 0..4 {
        s.deferred_found(qid(n), at(900 + i64::from(n)));
    }
    assert!(!s.counts().deferred_complete);
    assert!(!s.wants_deferred_scan(at(1001)), "a scan a second after the last");
    assert!(!s.wants_deferred_scan(at(1009)));
    assert!(s.wants_deferred_scan(at(1010)));
    // The indexed ones are due now; the scan wakes no one before its time.
    assert_eq!(s.next_wakeup(), Some(at(900)));
    assert!(s.forget_deferred(&qid(0)) && s.forget_deferred(&qid(1)));
    assert_eq!(s.next_wakeup(), Some(at(1010)));
}

#[test]
fn backoff_doubles_between_min_and_max() {
    let b = Backoff::default();
    let delays: Vec<u64> = [0, 1, 300, 600, 1200, 2400, 4000, 100_000]
        .iter()
        .map(|&q| retry_delay(Duration::from_secs(q), &b).as_secs())
        .collect();
    assert_eq!(delays, vec![300, 300, 300, 600, 1200, 2400, 4000, 4000]);
    // Attempt times of a message that fails every time.
    let mut now = at(0);
    let mut seq = Vec::new();
    for _ in 0..7 {
        now = next_attempt(at(0), now, &b);
        seq.push(now.secs - T0);
    }
    assert_eq!(seq, vec![300, 600, 1200, 2400, 4800, 8800, 12_800]);
    // A clock that went back counts as no time queued.
    assert_eq!(next_attempt(at(500), at(0), &b), at(300));
    // Nothing overflows on absurd times.
    let far = Time { secs: i64::MAX, micros: 0 };
    assert_eq!(next_attempt(Time { secs: i64::MIN, micros: 0 }, far, &b).secs, i64::MAX);
    let odd = Backoff { min: Duration::from_secs(10), max: Duration::from_secs(5) };
    assert_eq!(retry_delay(Duration::from_secs(60), &odd), Duration::from_secs(10));
}

#[test]
fn lifetime_turns_deferral_into_bounce() {
    let settings = Settings {
        lifetime: Duration::from_secs(86_400),
        bounce_lifetime: Duration::from_secs(3600),
        ..Settings::default()
    };
    let mut s = scheduler(settings.clone());
    add(&mut s, qid(1), &[rcpt("a@remote.test")], 86_399);
    let job = s.next_job(at(86_399)).expect("a delivery");
    let actions = s.job_finished(job.id, &report(&job, deferred), at(86_399)).expect("report taken");
    assert_eq!(writes(&actions), vec![(0, State::Deferred)]);
    assert_eq!(to_log(&actions), Vec::<u32>::new(), "the agent logged its deferral");
    assert!(matches!(fate(&actions), Some(Fate::Defer { .. })));

    let mut s = scheduler(settings.clone());
    add(&mut s, qid(1), &[rcpt("a@remote.test"), rcpt("b@remote.test")], 86_400);
    let job = s.next_job(at(86_400)).expect("a delivery");
    let actions = s
        .job_finished(job.id, &report(&job, |i| if i == 0 { deferred(i) } else { delivered(i) }), at(86_400))
        .expect("report taken");
    assert_eq!(writes(&actions), vec![(0, State::Bounced), (1, State::Done)]);
    // The agent logged a deferral; the expiry is qmgr's to log.
    assert_eq!(to_log(&actions), vec![0]);
    let Some(Action::Write { status, .. }) = actions.first() else { panic!("a write first") };
    assert!(status.reason.contains("expired") && status.reason.contains("451 try later"), "{}", status.reason);
    assert_eq!(notices(&actions), vec![&Notices { failure: vec![0], ..Notices::default() }]);
    assert_eq!(fate(&actions), Some(&Fate::Remove));

    // Bounces have their own, shorter lifetime.
    assert!(expired(at(0), true, at(3600), &settings));
    assert!(!expired(at(0), false, at(3600), &settings));
}

#[test]
fn delay_warning_is_sent_once() {
    let settings = Settings { delay_warning: Duration::from_secs(4 * 3600), ..Settings::default() };
    let pass = |changed: i64, now: i64, notify: Option<Notify>, sender: &str| {
        let mut s = scheduler(settings.clone());
        let mut r = rcpt_in("a@remote.test", State::Deferred, notify);
        r.status.changed = T0 + changed;
        s.add_message(qid(1), &envelope(0, sender), &[r], Origin::Deferred, at(now)).expect("admitted");
        let job = s.next_job(at(now)).expect("a delivery");
        let actions = s.job_finished(job.id, &report(&job, deferred), at(now)).expect("report taken");
        notices(&actions).first().map(|n| n.delay.clone()).unwrap_or_default()
    };
    assert!(pass(0, 3600, None, "s@example.net").is_empty(), "too early");
    assert_eq!(pass(3600, 5 * 3600, None, "s@example.net"), vec![0], "first pass past the time");
    assert!(pass(5 * 3600, 6 * 3600, None, "s@example.net").is_empty(), "warned already");
    assert!(pass(3600, 5 * 3600, Some(Notify::Never), "s@example.net").is_empty());
    let failure_only = Some(Notify::On { success: false, failure: true, delay: false });
    assert!(pass(3600, 5 * 3600, failure_only, "s@example.net").is_empty());
    assert!(pass(3600, 5 * 3600, None, "").is_empty(), "never for the null sender");
}

#[test]
fn success_notice_only_when_asked_and_not_passed_on() {
    let success = Some(Notify::On { success: true, failure: true, delay: false });
    let mut s = scheduler(Settings::default());
    add(&mut s, qid(1), &[rcpt_in("a@remote.test", State::Pending, success), rcpt("b@remote.test")], 0);
    let job = s.next_job(at(0)).expect("a delivery");
    let actions = s.job_finished(job.id, &report(&job, delivered), at(0)).expect("report taken");
    assert_eq!(notices(&actions), vec![&Notices { success: vec![0], ..Notices::default() }]);
    let mut s = scheduler(Settings::default());
    add(&mut s, qid(1), &[rcpt_in("a@remote.test", State::Pending, success)], 0);
    let job = s.next_job(at(0)).expect("a delivery");
    let passed =
        |_| Outcome::Delivered { reason: String::from("250 ok"), dsn_passed: true, action: DoneAction::Relayed };
    let actions = s.job_finished(job.id, &report(&job, passed), at(0)).expect("report taken");
    assert!(notices(&actions).is_empty());
}

#[test]
fn a_delivered_recipients_action_is_written_with_its_status() {
    let success = Some(Notify::On { success: true, failure: true, delay: false });
    let mut s = scheduler(Settings::default());
    let rcpts: Vec<Recipient> = (0..3).map(|i| rcpt_in(&format!("u{i}@local.test"), State::Pending, success)).collect();
    add(&mut s, qid(1), &rcpts, 0);
    let job = s.next_job(at(0)).expect("a delivery");
    let how = [DoneAction::Delivered, DoneAction::Relayed, DoneAction::Expanded];
    let outcome = |i: u32| Outcome::Delivered { reason: format!("r{i}"), dsn_passed: false, action: how[i as usize] };
    let actions = s.job_finished(job.id, &report(&job, outcome), at(0)).expect("report taken");
    let written: Vec<(u32, State, Option<DoneAction>, String)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Write { recipient, status, .. } => {
                Some((*recipient, status.state, status.action, status.reason.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        written,
        (0..3u32).map(|i| (i, State::Done, Some(how[i as usize]), format!("r{i}"))).collect::<Vec<_>>()
    );
    assert_eq!(notices(&actions), vec![&Notices { success: vec![0, 1, 2], ..Notices::default() }]);
    // A failure records none.
    let mut s = scheduler(Settings::default());
    add(&mut s, qid(2), &[rcpt("a@remote.test")], 0);
    let job = s.next_job(at(0)).expect("a delivery");
    let actions = s.job_finished(job.id, &report(&job, deferred), at(0)).expect("report taken");
    let Some(Action::Write { status, .. }) = actions.first() else { panic!("a write") };
    assert_eq!((status.state, status.action), (State::Deferred, None));
}

#[test]
fn restart_rebuilds_from_files_skipping_done_recipients() {
    let stored = vec![
        rcpt_in("done@remote.test", State::Done, None),
        rcpt_in("pending@remote.test", State::Pending, None),
        rcpt_in("deferred@other.test", State::Deferred, None),
        rcpt_in("bounced@remote.test", State::Bounced, None),
    ];
    for origin in [Origin::Deferred, Origin::Incoming] {
        let mut s = scheduler(Settings::default());
        let first = s.add_message(qid(1), &envelope(0, "s@example.net"), &stored, origin, at(0)).expect("admitted");
        assert!(first.is_empty());
        let held = if origin == Origin::Incoming { 3 } else { 2 };
        assert_eq!(s.counts().recipients, held);
        let started = jobs(&mut s, 0);
        let mut indexes: Vec<u32> = started.iter().flat_map(|j| j.recipients.iter().map(|r| r.index)).collect();
        indexes.sort_unstable();
        assert_eq!(indexes, vec![1, 2], "neither the done nor the bounced recipient is delivered again");
        let mut last = Vec::new();
        for job in &started {
            last.extend(s.job_finished(job.id, &report(job, delivered), at(1)).expect("report taken"));
        }
        let failure: Vec<u32> = notices(&last).iter().flat_map(|n| n.failure.clone()).collect();
        // From deferred/ the bounce was reported before; after a crash it
        // may not have been, so it is reported again.
        assert_eq!(failure, if origin == Origin::Incoming { vec![3] } else { vec![] });
        assert_eq!(fate(&last), Some(&Fate::Remove));
        assert_eq!(s.counts().messages, 0);
    }
    // Nothing left to do: finished at once.
    let mut s = scheduler(Settings::default());
    let all_done = [rcpt_in("a@remote.test", State::Done, None)];
    let actions = s.add_message(qid(2), &envelope(0, ""), &all_done, Origin::Incoming, at(0)).expect("admitted");
    assert_eq!(actions, vec![Action::Finish { message: qid(2), fate: Fate::Remove }]);
    assert_eq!(s.add_message(qid(3), &envelope(0, ""), &stored, Origin::Incoming, at(0)).map(|_| ()), Ok(()));
    assert_eq!(
        s.add_message(qid(3), &envelope(0, ""), &stored, Origin::Incoming, at(0)),
        Err(Error::AlreadyActive(qid(3)))
    );
}

#[test]
fn bad_reports_are_refused_and_failed_jobs_defer() {
    let mut s = scheduler(Settings::default());
    add(&mut s, qid(1), &[rcpt("a@remote.test"), rcpt("b@remote.test")], 0);
    let job = s.next_job(at(0)).expect("a delivery");
    let stranger = Report { site: SiteStatus::Reached, outcomes: vec![(7, delivered(7))] };
    assert!(matches!(s.job_finished(job.id, &stranger, at(0)), Err(Error::BadReport { .. })));
    let twice = Report { site: SiteStatus::Reached, outcomes: vec![(0, delivered(0)), (0, delivered(0))] };
    assert!(matches!(s.job_finished(job.id, &twice, at(0)), Err(Error::BadReport { .. })));
    let actions = s.job_failed(job.id, "delivery agent died", at(0)).expect("job known");
    assert_eq!(writes(&actions), vec![(0, State::Deferred), (1, State::Deferred)]);
    assert_eq!(to_log(&actions), vec![0, 1], "nobody else logs a dead agent's recipients");
    assert_eq!(s.job_failed(job.id, "again", at(0)), Err(Error::UnknownJob(job.id)));
    // Attempts count deliveries tried.
    let Some(Action::Write { status, .. }) = actions.first() else { panic!("a write") };
    assert_eq!(status.attempts, 1);
    assert!(status.next_attempt > status.changed);
}

#[test]
fn deferred_subdir_is_stable_and_even() {
    // Written down once: a change would strand every deferred file.
    let ids = ["0S3M4G80000000000001", "0S3M4G80000000000002", "0S3M4G8000000JPVJZ5K", "ZZZZZZZZZZZZZZZZZZZZ"];
    let dirs: Vec<&str> = ids.iter().map(|s| deferred_subdir(&QueueId::parse(s).expect("an ID"))).collect();
    assert_eq!(dirs, PINNED);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for n in 0..1600 {
        let dir = deferred_subdir(&qid(n));
        assert!(DEFERRED_SUBDIRS.contains(&dir));
        *counts.entry(dir).or_default() += 1;
    }
    assert_eq!(counts.len(), 16);
    assert!(counts.values().all(|&c| (50..=150).contains(&c)), "{counts:?}");
}

const PINNED: [&str; 4] = ["7", "3", "6", "4"];

#[test]
fn routing_by_relay_host_local_domains_and_literals() {
    let relay = Nexthop::parse("[Relay.Example.NET]:587").expect("valid");
    assert_eq!(relay, Nexthop { host: "relay.example.net".into(), port: Some(587), mx: false });
    assert_eq!(relay.to_string(), "[relay.example.net]:587");
    assert_eq!(Nexthop::parse("mx.test:25").map(|n| n.to_string()), Ok("mx.test:25".into()));
    assert_eq!(Nexthop::parse("[2001:db8::1]").map(|n| n.to_string()), Ok("[2001:db8::1]".into()));
    for bad in ["", "[x", "[]", "a:0", "a:99999", "a:b", "2001:db8::1", "a b", "[a]x"] {
        assert!(Nexthop::parse(bad).is_err(), "{bad:?}");
    }
    let direct = Routing::new(None, ["Example.ORG."]);
    assert_eq!(route("u@EXAMPLE.org", &direct).transport, Transport::Local);
    assert_eq!(route("postmaster", &direct).transport, Transport::Local);
    assert_eq!(route("u@Remote.Test", &direct), smtp("remote.test"));
    assert_eq!(route("\"a@b\"@remote.test.", &direct), smtp("remote.test"));
    let literal = route("u@[192.0.2.1]", &direct);
    assert_eq!(literal.nexthop, Hop::Inet(Nexthop { host: "192.0.2.1".into(), port: None, mx: true }));
    assert_eq!(route("u@Example.org", &direct).to_string(), "local:example.org");
    assert_eq!(route("u@remote.test", &direct).to_string(), "smtp:remote.test");
    // A domain is ours however it is written (U-label or A-label).
    let idn = Routing::new(None, ["Bücher.example"]);
    assert_eq!(route("u@xn--bcher-kva.example", &idn).transport, Transport::Local);
    assert_eq!(route("u@BÜCHER.example", &idn).transport, Transport::Local);
    // This host's address literals are local domains (RFC 1123 5.2.17).
    let own = Routing::new(None, ["example.org"]).with_own_addresses(vec!["192.0.2.10".parse().unwrap()]);
    assert_eq!(route("u@[192.0.2.10]", &own).transport, Transport::Local);
    assert_eq!(route("u@[IPv6:::FFFF:192.0.2.10]", &own).transport, Transport::Local);
    assert_eq!(route("u@[192.0.2.11]", &own).transport, Transport::Smtp);
    assert!(own.is_local("[192.0.2.10]") && !direct.is_local("[192.0.2.10]"));
    let relayed = Routing::new(Some(relay.clone()), ["example.org"]);
    assert_eq!(route("u@remote.test", &relayed).nexthop, Hop::Inet(relay));
    assert_eq!(route("u@example.org", &relayed).transport, Transport::Local);
}

#[test]
fn settings_are_checked() {
    assert_eq!(Settings::default().check(), Ok(()));
    let mut s = Settings::default();
    s.backoff.max = Duration::from_secs(1);
    assert!(s.check().is_err_and(|m| m.contains("queue.backoff.max")));
    let mut s = Settings::default();
    s.local.concurrency_limit = 1;
    assert!(s.check().is_err_and(|m| m.contains("transport.local.concurrency_limit")));
    assert!(matches!(Scheduler::new(s, Routing::default()), Err(Error::Settings(_))));
}

// ----- the whole cycle, driven like the shell drives it -----

/// Where a message's file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Incoming,
    Active,
    Deferred(i64),
    Removed,
}

struct File {
    envelope: Envelope,
    recipients: Vec<Recipient>,
    place: Place,
}

/// A shell over a simulated spool: it carries out every action and
/// checks each against the files.
struct Shell {
    settings: Settings,
    s: Scheduler,
    files: HashMap<QueueId, File>,
    incoming: VecDeque<QueueId>,
    running: Vec<Job>,
    in_flight: HashSet<(QueueId, u32)>,
    now: i64,
}

impl Shell {
    fn new(settings: Settings, messages: &[Vec<u8>]) -> Shell {
        let mut files = HashMap::new();
        let mut incoming = VecDeque::new();
        for (n, domains) in messages.iter().enumerate() {
            let id = qid(n as u32);
            let recipients = domains
                .iter()
                .enumerate()
                .map(|(i, &d)| match d {
                    0 => rcpt(&format!("u{i}@example.org")),
                    d => rcpt_in(&format!("u{i}@d{d}.test"), State::Pending, Some(Notify::Never)),
                })
                .collect();
            let sender = if n % 3 == 0 { "" } else { "s@example.net" };
            files.insert(id, File { envelope: envelope(0, sender), recipients, place: Place::Incoming });
            incoming.push_back(id);
        }
        let s = scheduler(settings.clone());
        Shell { settings, s, files, incoming, running: Vec::new(), in_flight: HashSet::new(), now: 0 }
    }

    fn admit(&mut self) {
        while let Some(a) = self.s.next_admission(at(self.now), !self.incoming.is_empty()) {
            let (id, origin) = match a {
                Admit::Incoming => (self.incoming.pop_front().expect("incoming/ has a file"), Origin::Incoming),
                Admit::Deferred(id) => {
                    let due = matches!(self.files[&id].place, Place::Deferred(t) if t <= T0 + self.now);
                    assert!(due, "{id} admitted from deferred/ when not there or not due");
                    (id, Origin::Deferred)
                }
            };
            let f = self.files.get_mut(&id).expect("a file");
            f.place = Place::Active;
            let (envelope, recipients) = (f.envelope.clone(), f.recipients.clone());
            let actions = self.s.add_message(id, &envelope, &recipients, origin, at(self.now)).expect("room");
            self.apply(actions);
        }
    }

    fn start(&mut self) {
        while let Some(job) = self.s.next_job(at(self.now)) {
            let ts = *self.settings.transport(job.destination.transport);
            assert!(!job.recipients.is_empty() && job.recipients.len() <= ts.recipient_limit);
            for r in &job.recipients {
                let state = self.files[&job.message].recipients[r.index as usize].status.state;
                assert!(matches!(state, State::Pending | State::Deferred), "delivering a {state:?} recipient");
                assert!(self.in_flight.insert((job.message, r.index)), "a recipient in two deliveries");
            }
            let info = self.s.destination(&job.destination).expect("known");
            assert!(info.busy <= ts.concurrency_limit && info.dead.is_none());
            self.running.push(job);
        }
        for t in Transport::ALL {
            let n = self.running.iter().filter(|j| j.destination.transport == t).count();
            assert!(n <= self.settings.transport(t).processes);
        }
        let c = self.s.counts();
        assert!(c.messages <= self.settings.active_messages && c.recipients <= self.settings.active_recipients);
        assert_eq!(c.messages, self.files.values().filter(|f| f.place == Place::Active).count());
    }

    fn finish(&mut self, pick: usize, seed: u8) {
        let job = self.running.swap_remove(pick % self.running.len());
        for r in &job.recipients {
            self.in_flight.remove(&(job.message, r.index));
        }
        let outcome = |i: u32| match (u32::from(seed) + i) % 5 {
            0 => Outcome::Deferred { reason: "451 later".into() },
            1 => Outcome::Bounced { reason: "550 no".into() },
            _ => Outcome::Delivered { reason: "250 ok".into(), dsn_passed: false, action: DoneAction::Relayed },
        };
        let actions = match seed % 8 {
            0 => self.s.job_finished(job.id, &unreachable(), at(self.now)),
            1 => self.s.job_failed(job.id, "agent died", at(self.now)),
            _ => self.s.job_finished(job.id, &report(&job, outcome), at(self.now)),
        };
        self.apply(actions.expect("report taken"));
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Write { message, recipient, status, .. } => {
                    let f = self.files.get_mut(&message).expect("a file");
                    assert_eq!(f.place, Place::Active, "write to a message not in active/");
                    assert!(status.state != State::Deferred || status.next_attempt > status.changed);
                    assert!(matches!(status.state, State::Done | State::Deferred | State::Bounced));
                    f.recipients[recipient as usize].status = status;
                }
                Action::Notify { message, notices } => {
                    assert!(!notices.is_empty());
                    assert_eq!(self.files[&message].place, Place::Active);
                }
                Action::LoadMore { message, .. } => {
                    let f = &self.files[&message];
                    assert_eq!(f.place, Place::Active);
                    let (envelope, recipients) = (f.envelope.clone(), f.recipients.clone());
                    let more = self.s.add_message(message, &envelope, &recipients, Origin::Incoming, at(self.now));
                    self.apply(more.expect("room kept for the next slice"));
                }
                Action::Finish { message, fate } => {
                    assert!(!self.s.is_active(&message));
                    let f = self.files.get_mut(&message).expect("a file");
                    assert_eq!(f.place, Place::Active);
                    let states: Vec<State> = f.recipients.iter().map(|r| r.status.state).collect();
                    assert!(!states.contains(&State::Pending), "finished with a recipient never tried");
                    match fate {
                        Fate::Remove => {
                            assert!(states.iter().all(|s| matches!(s, State::Done | State::Bounced)));
                            f.place = Place::Removed;
                        }
                        Fate::Defer { until, subdir } => {
                            assert!(states.contains(&State::Deferred));
                            assert!(until.secs > T0 + self.now && subdir == deferred_subdir(&message));
                            f.place = Place::Deferred(until.secs);
                        }
                    }
                }
            }
        }
    }

    /// qmgr dies and starts again: everything is rebuilt from the files.
    fn restart(&mut self) {
        self.s = scheduler(self.settings.clone());
        self.running.clear();
        self.in_flight.clear();
        let mut ids: Vec<QueueId> = self.files.keys().copied().collect();
        ids.sort();
        for id in ids {
            let f = self.files.get_mut(&id).expect("a file");
            match f.place {
                Place::Active => {
                    f.place = Place::Incoming;
                    self.incoming.push_front(id);
                }
                Place::Deferred(t) => self.s.deferred_found(id, Time { secs: t, micros: 0 }),
                Place::Incoming | Place::Removed => {}
            }
        }
    }

    fn all_removed(&self) -> bool {
        self.files.values().all(|f| f.place == Place::Removed)
    }
}

fn small_settings() -> Settings {
    let transport = TransportSettings {
        processes: 4,
        initial_concurrency: 2,
        concurrency_limit: 3,
        recipient_limit: 3,
        failed_cohort_limit: 1,
        dead_time: Duration::from_secs(120),
    };
    Settings {
        active_messages: 4,
        active_recipients: 12,
        deferred_index: 3,
        lifetime: Duration::from_secs(3600),
        bounce_lifetime: Duration::from_secs(1800),
        delay_warning: Duration::from_secs(600),
        backoff: Backoff { min: Duration::from_secs(60), max: Duration::from_secs(600) },
        smtp: transport,
        lmtp: TransportSettings { processes: 2, ..transport },
        local: transport,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Every recipient of every message ends done or bounced, through
    /// deferrals, dead destinations, slices, full queues and crashes;
    /// until then it is never lost, never in two deliveries at once,
    /// never delivered once done, and every deferral carries a time.
    #[test]
    fn no_recipient_is_lost(
        messages in proptest::collection::vec(proptest::collection::vec(0u8..5, 1..30), 1..12),
        seeds in proptest::collection::vec(any::<u8>(), 1..400),
    ) {
        let mut sh = Shell::new(small_settings(), &messages);
        let mut seeds = seeds.into_iter().cycle();
        let mut steps = 0;
        loop {
            steps += 1;
            prop_assert!(steps < 100_000, "no progress");
            if sh.s.wants_deferred_scan(at(sh.now)) {
                sh.s.begin_deferred_scan(at(sh.now));
                let waiting: Vec<(QueueId, i64)> = sh.files.iter()
                    .filter_map(|(id, f)| match f.place { Place::Deferred(t) => Some((*id, t)), _ => None })
                    .collect();
                for (id, t) in waiting {
                    sh.s.deferred_found(id, Time { secs: t, micros: 0 });
                }
            }
            sh.admit();
            sh.start();
            if sh.running.is_empty() {
                if sh.all_removed() {
                    break;
                }
                let wake = sh.s.next_wakeup().expect("something to wait for");
                sh.now = sh.now.max(wake.secs - T0).max(sh.now + 1);
                continue;
            }
            let seed = seeds.next().unwrap_or(0);
            sh.now += i64::from(seed % 40);
            if seed == 255 {
                sh.restart();
                continue;
            }
            sh.finish(usize::from(seed), seeds.next().unwrap_or(0));
        }
        for f in sh.files.values() {
            for r in &f.recipients {
                prop_assert!(matches!(r.status.state, State::Done | State::Bounced));
            }
        }
        prop_assert_eq!(sh.s.counts().recipients, 0);
    }
}

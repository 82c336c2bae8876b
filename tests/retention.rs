//! Retention never loses an entry a group still needs: `streamsink trim` (the real binary) and
//! the worker's own periodic trim, against the real Redis. Old entries are written with
//! explicit ids whose time is weeks ago.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use streamsink::config::Retention;

const DAY_MS: u64 = 86_400_000;
const GROUP: &str = "event-processors";

/// Runs `streamsink trim ARGS` against the shared Redis, nothing else inherited; (exit code,
/// stdout, stderr).
fn trim(args: &[&str]) -> (Option<i32>, String, String) {
    run_streamsink(&[&["trim"], args].concat(), &[("REDIS_URL", &redis_url())])
}

/// Milliseconds since 1970, `days` ago.
fn days_ago(days: u64) -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    now.as_millis() as u64 - days * DAY_MS
}

/// `n` entries with explicit ids `<base + i>-0`, i from 1 (pipelined); returns their ids.
fn add_at(r: &mut redis::Connection, stream: &str, base_ms: u64, n: u64) -> Vec<String> {
    let ids: Vec<String> = (1..=n).map(|i| format!("{}-0", base_ms + i)).collect();
    for chunk in ids.chunks(1000) {
        let mut pipe = redis::pipe();
        for (i, id) in chunk.iter().enumerate() {
            let ev =
                serde_json::json!({"id": format!("{stream}-{id}"), "type": "old.event", "data": {"i": i}});
            pipe.cmd("XADD").arg(stream).arg(id).arg("event").arg(ev.to_string());
        }
        let _: Vec<String> = pipe.query(r).expect("XADD with an explicit id");
    }
    ids
}

/// `n` entries with ids of now.
fn add_now(r: &mut redis::Connection, stream: &str, n: usize) -> Vec<String> {
    publish_many(r, stream, n, &unique("recent"))
}

fn create_group(r: &mut redis::Connection, stream: &str, group: &str) {
    let _: () =
        redis::cmd("XGROUP").arg("CREATE").arg(stream).arg(group).arg("0").query(r).expect("XGROUP CREATE");
}

fn ack(r: &mut redis::Connection, stream: &str, group: &str, ids: &[String]) {
    let _: u64 = redis::cmd("XACK").arg(stream).arg(group).arg(ids).query(r).expect("XACK");
}

/// Delivers and acknowledges the group's next `count` entries.
fn process(r: &mut redis::Connection, stream: &str, group: &str, count: usize) -> Vec<String> {
    let ids = deliver(r, stream, group, "alive", count);
    ack(r, stream, group, &ids);
    ids
}

fn ids(r: &mut redis::Connection, stream: &str) -> Vec<String> {
    entries(r, stream).into_iter().map(|(id, _)| id).collect()
}

fn len(r: &mut redis::Connection, stream: &str) -> u64 {
    redis::cmd("XLEN").arg(stream).query(r).expect("XLEN")
}

/// The story: 10 entries of 40 days ago and 3 of now; the group processed the first
/// two, a consumer that then died read the next two and never acknowledged them, and the rest
/// was processed. Returns (old ids, recent ids).
fn stream_with_old_entries_pending_for_a_dead_consumer(stream: &str) -> (Vec<String>, Vec<String>) {
    let mut r = redis();
    let old = add_at(&mut r, stream, days_ago(40), 10);
    let recent = add_now(&mut r, stream, 3);
    create_group(&mut r, stream, GROUP);
    process(&mut r, stream, GROUP, 2);
    assert_eq!(deliver(&mut r, stream, GROUP, "dead", 2), old[2..4]);
    assert_eq!(process(&mut r, stream, GROUP, 100).len(), 9);
    (old, recent)
}

#[test]
fn trim_by_age_removes_only_the_entries_before_the_oldest_pending_one() {
    let stream = TestStream::new();
    let (old, recent) = stream_with_old_entries_pending_for_a_dead_consumer(&stream.name);

    let (code, out, err) = trim(&["--stream", &stream.name, "--max-age", "30d"]);

    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("removed=2 minid={}", old[2])), "{out}");
    assert!(out.contains(&format!("held back by group {GROUP}")), "{out}");
    assert!(out.contains(&format!("oldest pending entry {}", old[2])), "{out}");
    assert!(out.contains("8 entries older than the target are kept"), "{out}");
    let mut r = redis();
    let expected: Vec<String> = old[2..].iter().chain(&recent).cloned().collect();
    assert_eq!(ids(&mut r, &stream.name), expected, "the pending entries and everything after stay");
    assert_eq!(pending(&mut r, &stream.name, GROUP), 2);
}

#[test]
fn a_group_not_yet_delivered_old_entries_holds_them_whatever_other_groups_did() {
    let stream = TestStream::new();
    let mut r = redis();
    let old = add_at(&mut r, &stream.name, days_ago(40), 10);
    let recent = add_now(&mut r, &stream.name, 2);
    create_group(&mut r, &stream.name, "fast");
    process(&mut r, &stream.name, "fast", 100);
    create_group(&mut r, &stream.name, "slow");
    process(&mut r, &stream.name, "slow", 3); // last delivered: old[2], nothing pending

    let (code, out, err) = trim(&["--stream", &stream.name, "--max-age", "30d", "--json"]);

    assert_eq!(code, Some(0), "{out}{err}");
    let report = json_of(&out);
    assert_eq!(report["removed"]["entries"], 3, "{report}");
    let after_last_delivered = old[2].replace("-0", "-1");
    assert_eq!(report["minid"], after_last_delivered.as_str(), "{report}");
    assert_eq!(report["held_back"]["group"], "slow", "{report}");
    assert_eq!(report["held_back"]["by"], "undelivered", "{report}");
    assert_eq!(report["held_back"]["kept_older_than_target"]["entries"], 7, "{report}");
    let expected: Vec<String> = old[3..].iter().chain(&recent).cloned().collect();
    assert_eq!(ids(&mut r, &stream.name), expected);
}

#[test]
fn trim_to_a_length_keeps_the_newest_n_once_every_group_is_done_with_the_rest() {
    let stream = TestStream::new();
    let mut r = redis();
    let all = add_now(&mut r, &stream.name, 10);
    create_group(&mut r, &stream.name, GROUP);
    process(&mut r, &stream.name, GROUP, 10);

    let (code, out, err) = trim(&["--stream", &stream.name, "--maxlen", "10"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("removed=0 (nothing to trim: all but the newest 10 entries)"), "{out}");
    // 2 to remove, 8 to keep: found from the start.
    let (code, out, err) = trim(&["--stream", &stream.name, "--maxlen", "8"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("removed=2 minid={}", all[2])), "{out}");
    assert_eq!(ids(&mut r, &stream.name), all[2..]);
    // 4 to remove, 4 to keep: found from the end.
    let (code, out, err) = trim(&["--stream", &stream.name, "--maxlen", "4"]);

    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("removed=4 minid={}", all[6])), "{out}");
    assert!(!out.contains("held back"), "{out}");
    assert_eq!(ids(&mut r, &stream.name), all[6..]);
}

/// `n` entries of 1 MB with explicit ids `<base + i>-0` (one round trip each).
fn add_large_at(r: &mut redis::Connection, stream: &str, base_ms: u64, n: u64) -> Vec<String> {
    let data = "x".repeat(1 << 20);
    (1..=n)
        .map(|i| {
            let id = format!("{}-0", base_ms + i);
            let ev = serde_json::json!({"id": format!("{stream}-{id}"), "type": "large", "data": data});
            redis::cmd("XADD")
                .arg(stream)
                .arg(&id)
                .arg("event")
                .arg(ev.to_string())
                .query(r)
                .expect("XADD 1 MB")
        })
        .collect()
}

#[test]
fn counting_over_1_mb_events_holds_redis_for_a_few_entries_per_call_and_counts_them_all() {
    use streamsink::broker::trim::{Direction, step};
    let stream = TestStream::new();
    let mut r = redis();
    add_large_at(&mut r, &stream.name, days_ago(40), 12);
    let recent = add_now(&mut r, &stream.name, 3);

    // Each call stops after about 4 MB of fields, whatever `most` asks.
    let (mut total, mut calls, mut from) = (0, 0, "-".to_string());
    loop {
        let stepped =
            step(&mut broker_at(&redis_url()), &stream.name, Direction::Forward, &from, "+", 1000).unwrap();
        assert!(stepped.n <= 5, "one call went over {} entries of 1 MB", stepped.n);
        total += stepped.n;
        calls += 1;
        match stepped.last {
            Some(last) if !stepped.ended => from = format!("({last}"),
            last => {
                assert_eq!(last.as_deref(), recent.last().map(String::as_str));
                break;
            }
        }
    }
    assert_eq!(total, 15);
    assert!(calls >= 3, "{calls} calls");

    let (code, out, err) = trim(&["--stream", &stream.name, "--max-age", "30d", "--dry-run", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(json_of(&out)["would_remove"], serde_json::json!({"entries": 12, "at_least": false}), "{out}");
    let (code, out, err) = trim(&["--stream", &stream.name, "--maxlen", "1", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(json_of(&out)["removed"]["entries"], 14, "{out}");
    assert_eq!(ids(&mut r, &stream.name), recent[2..]);
}

#[test]
fn a_dry_run_states_what_it_would_remove_and_changes_nothing() {
    let stream = TestStream::new();
    let (old, _) = stream_with_old_entries_pending_for_a_dead_consumer(&stream.name);
    let mut r = redis();
    let before = ids(&mut r, &stream.name);

    let (code, out, err) = trim(&["--stream", &stream.name, "--max-age", "30d", "--dry-run"]);

    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("would remove=2 minid={}", old[2])), "{out}");
    assert!(out.contains("nothing changed"), "{out}");
    assert!(out.contains(&format!("held back by group {GROUP}")), "{out}");
    let (code, out, _) = trim(&["--stream", &stream.name, "--maxlen", "0", "--dry-run", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(json_of(&out)["would_remove"]["entries"], 2, "{out}");
    assert_eq!(ids(&mut r, &stream.name), before);
}

#[test]
fn a_stream_without_groups_is_trimmed_to_the_target() {
    let stream = TestStream::new();
    let mut r = redis();
    add_at(&mut r, &stream.dlq(), days_ago(100), 250);
    let recent = add_now(&mut r, &stream.dlq(), 3);

    let (code, out, err) = trim(&["--stream", &stream.dlq(), "--max-age", "90d", "--json"]);

    assert_eq!(code, Some(0), "{out}{err}");
    let report = json_of(&out);
    assert_eq!(report["removed"]["entries"], 250, "{report}");
    assert_eq!(report["held_back"], Value::Null, "{report}");
    assert_eq!(report["safe_point"], Value::Null, "{report}");
    assert_eq!(ids(&mut r, &stream.dlq()), recent);
}

#[test]
fn ids_are_compared_exactly_at_the_top_of_the_sequence_range() {
    // As doubles, 5-18446744073709551614 and 5-18446744073709551615 would be one id, and the
    // entry after the second would not be 6-0.
    let stream = TestStream::new();
    let mut r = redis();
    let all = ["1-0", "5-18446744073709551614", "5-18446744073709551615", "6-0", "7-0"];
    for id in all {
        let _: String = redis::cmd("XADD").arg(&stream.name).arg(id).arg("f").arg("v").query(&mut r).unwrap();
    }
    create_group(&mut r, &stream.name, GROUP);
    deliver(&mut r, &stream.name, GROUP, "dead", 2);
    ack(&mut r, &stream.name, GROUP, &["1-0".to_string()]);
    process(&mut r, &stream.name, GROUP, 1); // 5-MAX delivered and acknowledged

    let (code, out, err) = trim(&["--stream", &stream.name, "--maxlen", "1", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(json_of(&out)["minid"], "5-18446744073709551614", "{out}");
    assert_eq!(ids(&mut r, &stream.name), all[1..]);

    ack(&mut r, &stream.name, GROUP, &[all[1].to_string()]);
    let (code, out, err) = trim(&["--stream", &stream.name, "--maxlen", "1", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let report = json_of(&out);
    assert_eq!(report["minid"], "6-0", "the entry after 5-18446744073709551615: {report}");
    assert_eq!(report["held_back"]["by"], "undelivered", "{report}");
    assert_eq!(ids(&mut r, &stream.name), all[3..]);
}

#[test]
fn a_stream_that_does_not_exist_has_nothing_to_trim_and_is_no_failure() {
    let stream = TestStream::new();
    let (code, out, err) = trim(&["--stream", &stream.dlq(), "--max-age", "90d"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), format!("{}: removed=0 (no such stream)", stream.dlq()));
    let (code, out, err) = trim(&["--stream", &stream.dlq(), "--maxlen", "5", "--dry-run", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let report = json_of(&out);
    assert_eq!(report["exists"], false, "{report}");
    assert_eq!(report["would_remove"]["entries"], 0, "{report}");
    let mut r = redis();
    let exists: bool = redis::cmd("EXISTS").arg(stream.dlq()).query(&mut r).unwrap();
    assert!(!exists, "a dry run or a trim creates nothing");
}

#[test]
fn a_key_that_is_not_a_stream_or_a_missing_target_is_one_line_and_a_failure() {
    let stream = TestStream::new();
    let mut r = redis();
    let _: () = redis::cmd("HSET").arg(&stream.name).arg("f").arg("v").query(&mut r).unwrap();
    let (code, out, err) = trim(&["--stream", &stream.name, "--max-age", "30d"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is a hash, not a stream"), "{err}");

    let (code, _, err) = trim(&["--stream", &stream.name]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--max-age") && err.contains("--maxlen"), "{err}");
    let (code, _, err) = trim(&["--stream", &stream.name, "--max-age", "30d", "--maxlen", "5"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn the_worker_s_trim_leaves_a_stream_alone_while_its_group_is_missing() {
    use streamsink::broker::trim::{Mode, trim_to_safe_point_of_group};
    let stream = TestStream::new();
    let mut r = redis();
    let old = add_at(&mut r, &stream.name, days_ago(40), 10);
    create_group(&mut r, &stream.name, "another-app");
    process(&mut r, &stream.name, "another-app", 10); // holds nothing back
    let target =
        streamsink::broker::trim::target_for_age(Duration::from_secs(30 * 86_400), jiff::Timestamp::now());
    let mut b = broker_at(&redis_url());
    let trim =
        |b: &mut _| trim_to_safe_point_of_group(b, &stream.name, GROUP, &target.to_string(), Mode::Exact);

    let done = trim(&mut b).unwrap();
    assert_eq!(done, None, "{GROUP} does not exist on the stream: nothing done");
    assert_eq!(ids(&mut r, &stream.name), old);

    create_group(&mut r, &stream.name, GROUP);
    process(&mut r, &stream.name, GROUP, 10);
    let done = trim(&mut b).unwrap();
    assert_eq!(done.map(|t| t.removed), Some(10));
    assert_eq!(len(&mut r, &stream.name), 0);
}

/// Waits until `stream` is shorter than `before`, then checks that every entry of `kept` (the
/// ones newer than the cutoff) is still there and the old ones left are the newest old ones.
fn wait_trimmed(stream: &str, before: u64, old: &[String], kept: &[String]) {
    let mut r = redis();
    wait_until(Duration::from_secs(20), &format!("{stream} trimmed"), || {
        (len(&mut r, stream) < before).then_some(())
    });
    let left = ids(&mut r, stream);
    let old_left = left.len() - kept.len();
    assert_eq!(left[old_left..], *kept, "nothing newer than the cutoff removed");
    assert_eq!(left[..old_left], old[old.len() - old_left..], "the oldest go first");
    assert!(old_left < 100, "only whole macro-nodes are kept back: {old_left} old entries left");
}

#[test]
fn the_worker_trims_processed_entries_older_than_its_retention() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    let old = add_at(&mut r, &stream.name, days_ago(40), 1000);
    create_group(&mut r, &stream.name, GROUP);
    assert_eq!(process(&mut r, &stream.name, GROUP, 1000).len(), 1000);
    let mut config = settings(&db, &stream);
    config.worker.retention = Some(Retention(Some(Duration::from_secs(30 * 86_400))));
    config.worker.claim_interval = Duration::from_millis(200);
    let running = Running::start(config);
    let recent = add_now(&mut r, &stream.name, 5);
    running.wait_processed(5);

    wait_trimmed(&stream.name, 1005, &old, &recent);
    running.stop();
}

#[test]
fn the_worker_trims_dead_letters_older_than_their_own_retention() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    let old = add_at(&mut r, &stream.dlq(), days_ago(100), 500);
    let recent = add_at(&mut r, &stream.dlq(), days_ago(10), 5);
    let mut config = settings(&db, &stream);
    config.worker.dlq_retention = Some(Retention(Some(Duration::from_secs(90 * 86_400))));
    config.worker.claim_interval = Duration::from_millis(200);
    let running = Running::start(config);

    wait_trimmed(&stream.dlq(), 505, &old, &recent);
    running.stop();
}

#[test]
fn the_worker_never_trims_entries_pending_for_a_dead_consumer() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    let old = add_at(&mut r, &stream.name, days_ago(40), 300);
    create_group(&mut r, &stream.name, GROUP);
    process(&mut r, &stream.name, GROUP, 100);
    assert_eq!(deliver(&mut r, &stream.name, GROUP, "dead", 100), old[100..200]);
    process(&mut r, &stream.name, GROUP, 100);
    let mut config = settings(&db, &stream);
    config.worker.retention = Some(Retention(Some(Duration::from_secs(30 * 86_400))));
    config.worker.claim_interval = Duration::from_millis(200); // claim_min_idle stays 60 s
    let running = Running::start(config);

    wait_until(Duration::from_secs(20), "the entries before the pending ones trimmed", || {
        (len(&mut r, &stream.name) < 300).then_some(())
    });
    running.stop();
    let left = ids(&mut r, &stream.name);
    assert_eq!(left[left.len() - 200..], old[100..], "the pending entries and everything after stay");
    assert_eq!(pending(&mut r, &stream.name, GROUP), 100);
}

#[test]
fn a_dry_run_over_a_long_stream_stops_counting_at_its_cap_and_says_at_least() {
    let stream = TestStream::new();
    let mut r = redis();
    let cap = streamsink::operate::trim::COUNT_CAP;
    add_at(&mut r, &stream.name, days_ago(40), cap + 10);

    let (code, out, err) = trim(&["--stream", &stream.name, "--max-age", "30d", "--dry-run", "--json"]);

    assert_eq!(code, Some(0), "{out}{err}");
    let report = json_of(&out);
    assert_eq!(report["would_remove"], serde_json::json!({"entries": cap, "at_least": true}), "{report}");
    assert_eq!(len(&mut r, &stream.name), cap + 10);
}

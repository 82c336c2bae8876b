//! `streamsink dlq list|show|replay|purge`: the incident story end to end (events a CHECK
//! constraint rejects are dead-lettered by the worker, the constraint is dropped, a replay
//! lands them), the filters and output of list and show, the selectors of replay and purge,
//! and a replay killed mid-way losing and doubling nothing (the real binary, real Redis and
//! Postgres).

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

/// Runs `streamsink dlq ARGS` against the shared Redis with nothing else in its environment
/// (no DATABASE_URL: these commands need Redis only); (exit code, stdout, stderr).
fn dlq(args: &[&str]) -> (Option<i32>, String, String) {
    run_streamsink(&[&["dlq"], args].concat(), &[("REDIS_URL", &redis_url())])
}

fn dlq_command(args: &[&str]) -> Command {
    streamsink_command(&[&["dlq"], args].concat(), &[("REDIS_URL", &redis_url())])
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;
/// A stream entry as XRANGE returns it: its id and fields.
type Entry = (String, Fields);

/// Writes a dead letter the way the worker does (`broker::ack`): the original fields in their
/// order, then the eight `dlq_*` fields. `id` is `*` or an explicit entry id.
fn dead_letter(
    con: &mut redis::Connection,
    stream: &str,
    id: &str,
    original: &Fields,
    reason: &str,
) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(format!("{stream}:dlq")).arg(id);
    for (k, v) in original {
        cmd.arg(k).arg(v);
    }
    push_dlq_fields(&mut cmd, stream, reason, id);
    cmd.query(con).expect("XADD dead letter")
}

fn push_dlq_fields(cmd: &mut redis::Cmd, stream: &str, reason: &str, tag: &str) {
    let error = format!(
        "{reason}: a long explanation of what went wrong with entry {tag}, which goes on for a while\nand a second line"
    );
    cmd.arg("dlq_reason")
        .arg(reason)
        .arg("dlq_error")
        .arg(error)
        .arg("dlq_stream")
        .arg(stream)
        .arg("dlq_original_id")
        .arg("1-1")
        .arg("dlq_group")
        .arg("event-processors")
        .arg("dlq_consumer")
        .arg("host-1")
        .arg("dlq_deliveries")
        .arg(3)
        .arg("dlq_failed_at")
        .arg("2026-03-01T10:00:00.123456Z");
}

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
}

/// Entries of `key` with their fields as bytes, in order.
fn raw_entries(con: &mut redis::Connection, key: &str) -> Vec<Entry> {
    redis::cmd("XRANGE").arg(key).arg("-").arg("+").query(con).expect("XRANGE")
}

fn len(con: &mut redis::Connection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query(con).expect("XLEN")
}

#[test]
fn events_a_check_constraint_rejected_land_once_it_is_dropped_and_the_dead_letters_are_replayed() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    migrate_schema(&db.url);
    let constraint = "ALTER TABLE events ADD CONSTRAINT no_rejected_orders CHECK (type <> 'order.rejected')";
    db.client().batch_execute(constraint).expect("add the CHECK constraint");
    let running = Running::start(settings(&db, &stream));
    let mut r = redis();
    let rejected: Vec<String> = (0..10).map(|i| format!("rejected-{i}")).collect();
    for i in 0..30 {
        let (id, kind) = if i % 3 == 0 {
            (rejected[i / 3].clone(), "order.rejected")
        } else {
            (format!("ok-{i}"), "order.placed")
        };
        publish_event(&mut r, &stream.name, json!({"id": id, "type": kind, "data": {"i": i}}));
    }
    wait_until(Duration::from_secs(20), "10 dead letters and 20 rows", || {
        (len(&mut r, &stream.dlq()) == 10 && db.count("SELECT count(*) FROM events") == 20).then_some(())
    });
    running.wait_processed(30);
    let (code, out, err) = dlq(&["list", "--stream", &stream.name, "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let listed = json_of(&out);
    let letters = listed["dead_letters"].as_array().expect("dead_letters");
    assert_eq!(letters.len(), 10, "{out}");
    assert!(letters.iter().all(|l| l["reason"] == "rejected by postgres"), "{out}");
    assert!(
        letters.iter().all(|l| l["error"].as_str().is_some_and(|e| e.contains("no_rejected_orders"))),
        "{out}"
    );

    db.client().batch_execute("ALTER TABLE events DROP CONSTRAINT no_rejected_orders").expect("drop it");
    let (code, out, err) = dlq(&["replay", "--stream", &stream.name, "--all"]);

    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), "replayed=10", "{err}");
    assert_eq!(len(&mut r, &stream.dlq()), 0, "the dead-letter stream is empty");
    wait_until(Duration::from_secs(20), "the replayed events in Postgres", || {
        (db.count("SELECT count(*) FROM events") == 30).then_some(())
    });
    let mut client = db.client();
    let landed: i64 = client
        .query_one("SELECT count(*) FROM events WHERE type = 'order.rejected' AND id = ANY($1)", &[&rejected])
        .expect("count the replayed events")
        .get(0);
    assert_eq!(landed, 10, "the same event ids, each once");
    running.wait_processed(40);
    assert_eq!(len(&mut r, &stream.dlq()), 0, "nothing dead-lettered again");
}

/// Four dead letters an hour apart from 2025-01-01T00:00:00Z (their entry ids carry the time).
fn four_dead_letters_an_hour_apart(stream: &TestStream) -> Vec<String> {
    let t0: u64 = 1_735_689_600_000;
    let hour = 3_600_000;
    let mut r = redis();
    let reasons = ["invalid json", "rejected by postgres", "invalid json", "invalid json"];
    reasons
        .iter()
        .enumerate()
        .map(|(i, reason)| {
            let mut original = fields(&[("event", &format!("{{\"id\":\"e{i}\"}}"))]);
            original.push((b"blob".to_vec(), vec![b'a', 0xff, b'z']));
            dead_letter(&mut r, &stream.name, &format!("{}-0", t0 + i as u64 * hour), &original, reason)
        })
        .collect()
}

#[test]
fn list_filters_by_reason_and_dead_letter_time_and_says_when_more_match_than_shown() {
    let stream = TestStream::new();
    let ids = four_dead_letters_an_hour_apart(&stream);
    let ids_of = |out: &str| -> Vec<String> {
        json_of(out)["dead_letters"]
            .as_array()
            .expect("dead_letters")
            .iter()
            .map(|l| l["id"].as_str().expect("id").to_string())
            .collect()
    };

    let (code, out, err) = dlq(&["list", "--stream", &stream.name, "--reason", "invalid json", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ids_of(&out), [ids[0].clone(), ids[2].clone(), ids[3].clone()]);

    let range = ["--since", "2025-01-01T00:30:00Z", "--until", "2025-01-01T02:00:00Z"];
    let (_, out, _) = dlq(&[&["list", "--stream", &stream.name, "--json"][..], &range].concat());
    assert_eq!(
        ids_of(&out),
        [ids[1].clone(), ids[2].clone()],
        "by the time each was dead-lettered, both ends included"
    );

    let (_, out, _) = dlq(&["list", "--stream", &stream.name, "--limit", "2", "--json"]);
    let listed = json_of(&out);
    assert_eq!(ids_of(&out), [ids[0].clone(), ids[1].clone()]);
    assert_eq!((listed["more"].clone(), listed["limit"].clone()), (json!(true), json!(2)));
    let first = &listed["dead_letters"][0];
    assert_eq!(first["reason"], "invalid json");
    assert_eq!(first["original_id"], "1-1");
    assert_eq!(first["deliveries"], 3);
    assert_eq!(first["failed_at"], "2026-03-01T10:00:00.123456Z");
    assert!(
        first["error"].as_str().is_some_and(|e| e.ends_with("\nand a second line")),
        "whole in JSON: {out}"
    );

    let (code, out, _) = dlq(&["list", "--stream", &stream.name, "--limit", "2"]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>().join(" "),
        "id failed at reason error original id deliveries"
    );
    assert!(lines[1].starts_with(&ids[0]) && lines[1].contains("2026-03-01T10:00:00Z"), "{out}");
    assert!(lines[1].contains('…') && !out.contains("second line"), "the error shortened: {out}");
    assert!(lines[3].starts_with("more dead letters match than the 2 shown"), "{out}");

    let (_, out, _) = dlq(&["list", "--stream", &stream.name, "--reason", "nothing like it"]);
    assert!(out.starts_with("no dead letters on"), "{out}");
}

#[test]
fn show_prints_every_field_in_order_and_a_missing_id_fails_in_one_line() {
    let stream = TestStream::new();
    let ids = four_dead_letters_an_hour_apart(&stream);

    let (code, out, err) = dlq(&["show", "--stream", &stream.name, &ids[1], "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let shown = json_of(&out);
    assert_eq!(shown["id"], ids[1].as_str());
    assert_eq!(shown["reason"], "rejected by postgres");
    let names: Vec<&str> = shown["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["name"].as_str().unwrap_or(""))
        .collect();
    let mut expected = vec!["event", "blob"];
    expected.extend([
        "dlq_reason",
        "dlq_error",
        "dlq_stream",
        "dlq_original_id",
        "dlq_group",
        "dlq_consumer",
        "dlq_deliveries",
        "dlq_failed_at",
    ]);
    assert_eq!(names, expected);
    assert_eq!(shown["fields"][1]["value"], "a\u{fffd}z", "bytes that are not UTF-8 shown lossily");

    let (code, out, _) = dlq(&["show", "--stream", &stream.name, &ids[1]]);
    assert_eq!(code, Some(0));
    assert!(
        out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["event", "{\"id\":\"e1\"}"]),
        "{out}"
    );

    let (code, out, err) = dlq(&["show", "--stream", &stream.name, "1-0"]);
    assert_eq!(code, Some(1));
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no dead letter 1-0 on") && err.contains(&stream.dlq()), "{err}");
}

#[test]
fn replay_and_purge_act_on_the_selected_dead_letters_only_and_dry_runs_change_nothing() {
    let stream = TestStream::new();
    let mut r = redis();
    let megabyte = "x".repeat(1 << 20);
    let wide =
        fields(&[("event", "{\"id\":\"big\"}"), ("payload", &megabyte), ("dlq_note", "an original field")]);
    let big = dead_letter(&mut r, &stream.name, "*", &wide, "invalid json");
    let x1 = dead_letter(&mut r, &stream.name, "*", &fields(&[("event", "x1")]), "reason x");
    let y = dead_letter(&mut r, &stream.name, "*", &fields(&[("event", "y")]), "reason y");
    let x2 = dead_letter(&mut r, &stream.name, "*", &fields(&[("event", "x2")]), "reason x");
    let foreign = publish(&mut r, &stream.dlq(), &[("written", "by someone else")]);

    let (code, out, err) = dlq(&["replay", "--stream", &stream.name, "--reason", "reason x", "--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("dry run: 2 dead letters would be replayed"), "{out}");
    assert!(out.contains(&x1) && out.contains(&x2) && !out.contains(&y), "{out}");
    assert_eq!((len(&mut r, &stream.dlq()), len(&mut r, &stream.name)), (5, 0), "a dry run changes nothing");

    let (code, out, err) = dlq(&["replay", "--stream", &stream.name, &big, "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json_of(&out)["replayed"], 1);
    let replayed = raw_entries(&mut r, &stream.name);
    assert_eq!(replayed.len(), 1);
    assert_eq!(
        replayed[0].1, wide,
        "the original fields, in order, the 1 MB value whole, no dlq_* field added"
    );

    let (code, out, _) = dlq(&["replay", "--stream", &stream.name, "--reason", "reason x"]);
    assert_eq!((code, out.trim()), (Some(0), "replayed=2"));
    let on_stream: Vec<Fields> =
        raw_entries(&mut r, &stream.name).into_iter().skip(1).map(|(_, f)| f).collect();
    assert_eq!(on_stream, [fields(&[("event", "x1")]), fields(&[("event", "x2")])]);
    let left: Vec<String> = raw_entries(&mut r, &stream.dlq()).into_iter().map(|(id, _)| id).collect();
    assert_eq!(left, [y.clone(), foreign.clone()]);

    let (code, out, _) = dlq(&["replay", "--stream", &stream.name, &big]);
    assert_eq!(code, Some(1), "an id that is not there: {out}");
    assert!(out.contains("not found=1") && out.contains(&big), "{out}");

    let (code, out, _) = dlq(&["replay", "--stream", &stream.name, "--all", "--json"]);
    assert_eq!(code, Some(1), "an entry left in place: {out}");
    let outcome = json_of(&out);
    assert_eq!(outcome["replayed"], 1);
    assert_eq!(
        outcome["skipped"][0]["id"],
        foreign.as_str(),
        "not in the dead-letter format: its fields are unknown"
    );
    assert_eq!(len(&mut r, &stream.dlq()), 1);

    let (code, out, _) = dlq(&["purge", "--stream", &stream.name, "--all", "--dry-run"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("dry run: 1 dead letters would be purged") && out.contains(&foreign), "{out}");
    assert_eq!(len(&mut r, &stream.dlq()), 1);
    let (code, out, _) = dlq(&["purge", "--stream", &stream.name, &foreign]);
    assert_eq!((code, out.trim()), (Some(0), "purged=1"));
    assert_eq!(len(&mut r, &stream.dlq()), 0);
    assert_eq!(len(&mut r, &stream.name), 4, "purging never touches the stream");
}

#[test]
fn purge_by_reason_and_time_deletes_exactly_those() {
    let stream = TestStream::new();
    let ids = four_dead_letters_an_hour_apart(&stream);
    let mut r = redis();

    let args =
        ["purge", "--stream", &stream.name, "--reason", "invalid json", "--since", "2025-01-01T01:00:00Z"];
    let (code, out, err) = dlq(&args);

    assert_eq!((code, out.trim()), (Some(0), "purged=2"), "{err}");
    let left: Vec<String> = raw_entries(&mut r, &stream.dlq()).into_iter().map(|(id, _)| id).collect();
    assert_eq!(left, [ids[0].clone(), ids[1].clone()]);
}

#[test]
fn a_dead_letter_too_wide_for_a_script_is_replayed_whole() {
    let stream = TestStream::new();
    let mut r = redis();
    let wide: Fields =
        (0..5000).map(|i| (format!("f{i}").into_bytes(), format!("v{i}").into_bytes())).collect();
    let id = dead_letter(&mut r, &stream.name, "*", &wide, "too wide");

    let (code, out, err) = dlq(&["replay", "--stream", &stream.name, &id]);

    assert_eq!((code, out.trim()), (Some(0), "replayed=1"), "{err}");
    let replayed = raw_entries(&mut r, &stream.name);
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].1, wide, "5000 fields, in order");
    assert_eq!(len(&mut r, &stream.dlq()), 0);
}

#[test]
fn a_redis_that_has_not_seen_the_replay_script_yet_gets_it_loaded() {
    let private = PrivateRedis::start(None);
    let stream = TestStream::on(&private.url());
    let mut r = redis_at(&private.url());
    for i in 0..3 {
        dead_letter(&mut r, &stream.name, "*", &fields(&[("event", &i.to_string())]), "r");
    }

    let out = dlq_command(&["replay", "--stream", &stream.name, "--all"])
        .env("REDIS_URL", private.url())
        .output()
        .expect("run streamsink dlq replay");

    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "replayed=3", "{out:?}");
    assert_eq!((len(&mut r, &stream.name), len(&mut r, &stream.dlq())), (3, 0));
}

#[test]
fn a_bad_selection_is_refused_before_anything_connects() {
    for args in [
        &["replay", "--stream", "s"][..],
        &["replay", "--stream", "s", "--all", "1-0"],
        &["purge", "--stream", "s", "--all", "--reason", "r"],
        &["replay", "--stream", "s", "1700000000000"],
        &["list", "--stream", "s", "--since", "yesterday"],
        &["list", "--stream", "s", "--limit", "0"],
        &["list", "--stream", "s", "--since", "1h", "--until", "2h"],
        &["replay", "--stream", "s", "--since", "1h", "--until", "2h"],
        &["purge", "--stream", "s", "--since", "2026-03-02T00:00:00Z", "--until", "2026-03-01T00:00:00Z"],
    ] {
        let (code, out, err) = dlq(args);
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    let (_, _, err) = dlq(&["replay", "--stream", "s"]);
    assert!(err.contains("one of --all, ID, --reason, --since, --until"), "{err}");
    let (_, _, err) = dlq(&["replay", "--stream", "s", "--since", "1h", "--until", "2h"]);
    assert!(err.contains("--until is before --since"), "{err}");
    let (_, _, err) = dlq(&["list", "--stream", "s", "--limit", "0"]);
    assert!(err.contains("--limit: '0' is not a count"), "{err}");
}

#[test]
fn a_replay_killed_mid_way_leaves_every_entry_in_exactly_one_of_the_two_streams() {
    let stream = TestStream::new();
    let mut r = redis();
    let n = 20_000;
    for chunk in (0..n).collect::<Vec<usize>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(stream.dlq()).arg("*").arg("n").arg(i).arg("event").arg("{\"id\":\"small\"}");
            push_dlq_fields(&mut cmd, &stream.name, "crash", &i.to_string());
            pipe.add_command(cmd).ignore();
        }
        let () = pipe.query(&mut r).expect("XADD dead letters");
    }
    let mut replay = dlq_command(&["replay", "--stream", &stream.name, "--all"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn streamsink dlq replay");

    wait_until(Duration::from_secs(60), "some dead letters replayed", || {
        (len(&mut r, &stream.name) >= 1000).then_some(())
    });
    // Stopped, it sends nothing more: what Redis already received (a page of 1000 at most)
    // still runs, so most of the 20 000 are left whatever the machine's speed.
    let pid = replay.id().to_string();
    let stopped = Command::new("kill").args(["-STOP", &pid]).status().expect("run kill -STOP");
    assert!(stopped.success(), "SIGSTOP the replay");
    let left_when_stopped = len(&mut r, &stream.dlq());
    assert!(
        left_when_stopped > 0,
        "the replay finished before it could be stopped: this test needs more dead letters than {n}"
    );
    replay.kill().expect("SIGKILL the replay");
    let status = replay.wait().expect("wait for the replay");
    assert!(!status.success(), "killed, not finished");

    // Both streams in one MULTI/EXEC: a script still running could not move an entry between
    // the two reads.
    let (on, dead): (Vec<Entry>, Vec<Entry>) = redis::pipe()
        .atomic()
        .cmd("XRANGE")
        .arg(&stream.name)
        .arg("-")
        .arg("+")
        .cmd("XRANGE")
        .arg(stream.dlq())
        .arg("-")
        .arg("+")
        .query(&mut r)
        .expect("XRANGE both streams");
    let numbers = |entries: &[Entry]| -> Vec<usize> {
        entries
            .iter()
            .map(|(_, f)| {
                let (_, v) = f.iter().find(|(k, _)| k == b"n").expect("field n");
                String::from_utf8_lossy(v).parse().expect("a number")
            })
            .collect()
    };
    let (replayed, left) = (numbers(&on), numbers(&dead));
    assert!(!left.is_empty(), "killed mid-way: {} replayed, none left", replayed.len());
    let on_stream: HashSet<usize> = replayed.iter().copied().collect();
    let in_dlq: HashSet<usize> = left.iter().copied().collect();
    assert_eq!(on_stream.len(), replayed.len(), "none replayed twice");
    assert!(on_stream.is_disjoint(&in_dlq), "none in both streams");
    assert_eq!(replayed.len() + left.len(), n, "none missing");
    assert_eq!(on_stream.union(&in_dlq).count(), n);
    let first = &on[0].1;
    assert_eq!(*first, fields(&[("n", "0"), ("event", "{\"id\":\"small\"}")]), "dlq_* fields gone");
}

#[test]
fn a_replay_that_fails_part_way_says_how_many_it_replayed_before_the_failure() {
    let private = PrivateRedis::start(None);
    let stream = TestStream::on(&private.url());
    let mut r = redis_at(&private.url());
    // Unlimited stream nodes: a node freed by XDEL would give back what each replay takes.
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-bytes")
        .arg(0)
        .query(&mut r)
        .expect("CONFIG SET stream-node-max-bytes");
    let n = 200;
    let big = "x".repeat(10_000);
    for i in 0..n {
        dead_letter(&mut r, &stream.name, "*", &fields(&[("n", &i.to_string()), ("event", &big)]), "r");
    }
    // Room for about 100 of the 200 (10 kB each) to be added to the stream: then every write
    // fails with OOM, part-way through a pipelined page.
    let info: redis::InfoDict = redis::cmd("INFO").arg("memory").query(&mut r).expect("INFO memory");
    let used: u64 = info.get("used_memory").expect("used_memory");
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used + 1_000_000)
        .query(&mut r)
        .expect("CONFIG SET maxmemory");

    let out = dlq_command(&["replay", "--stream", &stream.name, "--all"])
        .env("REDIS_URL", private.url())
        .output()
        .expect("run streamsink dlq replay");

    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("OOM"), "{err}");
    let replayed: u64 = err
        .split_once("replayed=")
        .and_then(|(_, rest)| rest.split_once(" before the failure: "))
        .and_then(|(count, _)| count.parse().ok())
        .unwrap_or_else(|| panic!("no 'replayed=N before the failure: ' in {err}"));
    assert!(replayed > 16, "more than the first page was replayed: {err}");
    assert_eq!(replayed, len(&mut r, &stream.name), "the count is what reached the stream");
    assert_eq!(len(&mut r, &stream.dlq()), n - replayed, "the rest is still dead-lettered");

    let () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query(&mut r).expect("CONFIG SET");
    let out = dlq_command(&["replay", "--stream", &stream.name, "--all"])
        .env("REDIS_URL", private.url())
        .output()
        .expect("run streamsink dlq replay again");
    let rest = format!("replayed={}", n - replayed);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), rest, "{out:?}");
    assert_eq!((len(&mut r, &stream.name), len(&mut r, &stream.dlq())), (n, 0));
}

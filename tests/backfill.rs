//! `streamsink backfill`: a time range of a stream written to Postgres again after a restore
//! lost rows, outside the consumer group (the real binary, the real Redis and Postgres).

mod common;

use std::process::Command;
use std::time::Instant;

use common::*;
use serde_json::json;

fn backfill(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    run_streamsink(&[&["backfill"], args].concat(), env)
}

/// XADD with an explicit entry id (its time is what backfill selects by).
fn xadd_at(con: &mut redis::Connection, stream: &str, id: &str, event: &str) {
    let _: String = redis::cmd("XADD").arg(stream).arg(id).arg("event").arg(event).query(con).expect("XADD");
}

/// 2023-11-14T22:13:20Z, in milliseconds: the start of the range backfilled.
const T0: u64 = 1_700_000_000_000;
const SINCE: &str = "2023-11-14T22:13:20Z";
const UNTIL: &str = "2023-11-14T22:13:21Z";

/// A stream holding, by entry time: 3 events before the range; in it 5 events, a session
/// start, a malformed entry and an event Postgres rejects; 2 events after it.
fn stream_spanning_the_range(con: &mut redis::Connection, stream: &str) {
    for i in 0..3 {
        xadd_at(
            con,
            stream,
            &format!("1600000000000-{i}"),
            &json!({"id": format!("old-{i}"), "type": "t"}).to_string(),
        );
    }
    for i in 0..5 {
        xadd_at(
            con,
            stream,
            &format!("{T0}-{i}"),
            &json!({"id": format!("in-{i}"), "type": "t"}).to_string(),
        );
    }
    let start = json!({"id": "st-1", "type": "session.start", "session_id": "sess-1",
        "timestamp": "2023-11-14T22:13:20Z"});
    xadd_at(con, stream, &format!("{}-0", T0 + 500), &start.to_string());
    xadd_at(con, stream, &format!("{}-0", T0 + 600), "{not json");
    xadd_at(con, stream, &format!("{}-0", T0 + 700), r#"{"id":"nul","type":"t","data":{"s":"a\u0000b"}}"#);
    for i in 0..2 {
        xadd_at(
            con,
            stream,
            &format!("1750000000000-{i}"),
            &json!({"id": format!("new-{i}"), "type": "t"}).to_string(),
        );
    }
}

/// A second group on `stream` with the first entry delivered to a consumer that never
/// acknowledges it: pending 1, its last-delivered id the first entry.
fn group_with_a_pending_entry(con: &mut redis::Connection, stream: &str) {
    let _: () =
        redis::cmd("XGROUP").arg("CREATE").arg(stream).arg("other").arg("0").query(con).expect("XGROUP");
    deliver(con, stream, "other", "gone", 1);
}

/// What Redis says of the stream's groups and their pending entries (every figure of XINFO
/// GROUPS, each group's XPENDING summary), and its length and dead letters.
fn redis_state(con: &mut redis::Connection, stream: &str) -> String {
    let groups: redis::Value = redis::cmd("XINFO").arg("GROUPS").arg(stream).query(con).expect("XINFO");
    let mut state = format!("{groups:?}");
    for group in ["event-processors", "other"] {
        let pending: redis::Value =
            redis::cmd("XPENDING").arg(stream).arg(group).query(con).expect("XPENDING");
        state.push_str(&format!(" {group}: {pending:?}"));
    }
    let lengths: (u64, u64) = redis::pipe()
        .cmd("XLEN")
        .arg(stream)
        .cmd("XLEN")
        .arg(format!("{stream}:dlq"))
        .query(con)
        .expect("XLEN");
    state + &format!(" lengths {lengths:?}")
}

fn ids(db: &TestDb) -> Vec<String> {
    db.client()
        .query("SELECT id FROM events ORDER BY id", &[])
        .expect("SELECT")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn rows_a_restore_lost_come_back_once_and_only_from_the_range_leaving_redis_untouched() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    stream_spanning_the_range(&mut r, &stream.name);
    let running = Running::start(settings(&db, &stream));
    running.wait_processed(13);
    running.stop();
    assert_eq!(db.count("SELECT count(*) FROM events"), 11, "the worker wrote every good event");
    group_with_a_pending_entry(&mut r, &stream.name);
    let before = redis_state(&mut r, &stream.name);

    // The restore lost every row and the session.
    db.client().batch_execute("DELETE FROM events; DELETE FROM sessions").expect("DELETE");
    let url = redis_url();
    let env = [("REDIS_URL", url.as_str()), ("DATABASE_URL", db.url.as_str())];
    let args = ["--stream", &stream.name, "--since", SINCE, "--until", UNTIL, "--json"];

    let (code, out, err) = backfill(&args, &env);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(err, "", "no progress line when stderr is not a terminal");
    let report = json_of(&out);
    let figures = ["read", "inserted", "duplicates", "malformed", "rejected"].map(|k| report[k].as_u64());
    assert_eq!(figures, [Some(8), Some(6), Some(0), Some(1), Some(1)], "{report}");
    assert_eq!(ids(&db), ["in-0", "in-1", "in-2", "in-3", "in-4", "st-1"], "the range, nothing outside it");
    assert_eq!(db.count("SELECT count(*) FROM sessions WHERE session_id = 'sess-1'"), 1, "handlers ran");
    let problems = report["problems"].as_array().expect("problems");
    let listed: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p["entry_id"].as_str().unwrap_or(""), p["kind"].as_str().unwrap_or("")))
        .collect();
    let (bad, nul) = (format!("{}-0", T0 + 600), format!("{}-0", T0 + 700));
    assert_eq!(listed, [(bad.as_str(), "malformed"), (nul.as_str(), "rejected")], "{report}");
    assert_eq!(problems[0]["reason"], "invalid json");
    assert_eq!(problems[1]["reason"], "rejected by postgres");

    // Safe to repeat: everything is a duplicate now.
    let (code, out, err) = backfill(&args[..6], &env);
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(&format!("backfilled {} from entry {T0}-0 to {}-", stream.name, T0 + 1000)),
        "{out}"
    );
    let cells: Vec<&str> = lines[2].split_whitespace().collect();
    // read inserted duplicates malformed rejected handler-errors seconds rate
    assert_eq!(cells[..6], ["8", "0", "6", "1", "1", "0"], "{out}");
    assert!(out.contains("rejected by postgres") && out.contains("invalid json"), "{out}");
    assert_eq!(db.count("SELECT count(*) FROM events"), 6);

    assert_eq!(redis_state(&mut r, &stream.name), before, "no XREADGROUP, no XACK, no dead letter");
}

#[test]
fn without_until_it_runs_to_the_end_of_the_stream() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    migrate_schema(&db.url);
    let mut r = redis();
    stream_spanning_the_range(&mut r, &stream.name);
    let url = redis_url();
    let env = [("REDIS_URL", url.as_str()), ("DATABASE_URL", db.url.as_str())];
    let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(&stream.name)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut r)
        .unwrap();
    let (code, out, err) = backfill(&["--stream", &stream.name, "--since", SINCE, "--json"], &env);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(json_of(&out)["inserted"], 8, "{out}");
    assert_eq!(json_of(&out)["to_id"], last[0].0.as_str(), "ends at the entry last when it started: {out}");
    assert_eq!(db.count("SELECT count(*) FROM events WHERE id LIKE 'new-%' OR id LIKE 'in-%'"), 7);
    assert_eq!(db.count("SELECT count(*) FROM events WHERE id LIKE 'old-%'"), 0);
}

#[test]
fn postgres_unreachable_or_unmigrated_is_one_line_and_exit_1() {
    let stream = TestStream::new();
    stream_spanning_the_range(&mut redis(), &stream.name);
    let url = redis_url();
    let nowhere = format!("postgres://postgres:secret-pw@127.0.0.1:{}/x", free_port());
    let fresh = TestDb::create(); // never migrated
    for (database_url, says) in
        [(nowhere.as_str(), "cannot connect to Postgres"), (&fresh.url, "run streamsink migrate")]
    {
        let env = [("REDIS_URL", url.as_str()), ("DATABASE_URL", database_url)];
        let (code, out, err) = backfill(&["--stream", &stream.name, "--since", SINCE], &env);
        assert_eq!(code, Some(1), "{out}{err}");
        assert_eq!((out.as_str(), err.lines().count()), ("", 1), "{err}");
        assert!(err.contains(says) && !err.contains("secret-pw"), "{err}");
    }
    assert_eq!(fresh.count_or_zero("SELECT count(*) FROM pg_tables WHERE tablename = 'events'"), 0);
}

#[test]
fn until_before_since_is_refused_before_connecting() {
    let env = [("REDIS_URL", "redis://127.0.0.1:1"), ("DATABASE_URL", "postgres://u@127.0.0.1:1/x")];
    let (code, _, err) = backfill(&["--stream", "s", "--since", UNTIL, "--until", SINCE], &env);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--until is before --since"), "{err}");
    let (code, _, err) = backfill(&["--stream", "s", "--since", "yesterday"], &env);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn on_a_terminal_progress_shows_done_total_and_rate() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    migrate_schema(&db.url);
    stream_spanning_the_range(&mut redis(), &stream.name);
    let binary = env!("CARGO_BIN_EXE_streamsink");
    let line = format!("{binary} backfill --stream '{}' --since 10000d", stream.name);
    // `script` runs the command on a pseudo-terminal: stderr is a TTY there.
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("REDIS_URL", redis_url())
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("\rbackfill: ") || text.contains("\r\u{1b}[Kbackfill: "), "{text:?}");
    assert!(
        text.contains("backfill: 13/13 entries, ") && text.contains(" entries/s"),
        "XLEN is the total of the whole stream: {text:?}"
    );
}

/// Not a speed limit: prints backfill's rate for 20 000 small events (BENCHMARKS.md-style
/// figure for the report). Asserts only that every event was written.
#[test]
fn backfill_rate_for_20000_small_events_is_printed() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    migrate_schema(&db.url);
    publish_many(&mut redis(), &stream.name, 20_000, "rate");
    let url = redis_url();
    let env = [("REDIS_URL", url.as_str()), ("DATABASE_URL", db.url.as_str())];
    let started = Instant::now();
    let (code, out, err) = backfill(&["--stream", &stream.name, "--since", "1h", "--json"], &env);
    let wall = started.elapsed();
    assert_eq!(code, Some(0), "{out}{err}");
    let report = json_of(&out);
    assert_eq!(report["inserted"], 20_000, "{report}");
    println!(
        "backfill of 20000 small events: {:.0} events/s ({:.2} s inside, {:.2} s with process start)",
        report["rate"].as_f64().unwrap_or(0.0),
        report["seconds"].as_f64().unwrap_or(0.0),
        wall.as_secs_f64()
    );
}

#[test]
fn a_stream_with_no_entries_is_named_and_exit_1() {
    let db = TestDb::create();
    migrate_schema(&db.url);
    let missing = TestStream::new();
    let url = redis_url();
    let env = [("REDIS_URL", url.as_str()), ("DATABASE_URL", db.url.as_str())];
    let (code, out, err) = backfill(&["--stream", &missing.name, "--since", "1h"], &env);
    assert_eq!((code, out.as_str(), err.lines().count()), (Some(1), "", 1), "{err}");
    assert!(err.contains(&format!("stream '{}' has no entries", missing.name)), "{err}");
}

#[test]
fn one_megabyte_events_are_backfilled_a_few_per_page() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    migrate_schema(&db.url);
    let mut r = redis();
    let blob = "x".repeat(1 << 20);
    for i in 0..20 {
        publish_event(
            &mut r,
            &stream.name,
            json!({"id": format!("big-{i}"), "type": "t", "data": {"blob": blob}}),
        );
    }
    let url = redis_url();
    let env = [("REDIS_URL", url.as_str()), ("DATABASE_URL", db.url.as_str())];
    let (code, out, err) = backfill(&["--stream", &stream.name, "--since", "1h", "--json"], &env);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(json_of(&out)["inserted"], 20, "{out}");
    assert_eq!(db.count("SELECT count(*) FROM events WHERE length(data->>'blob') = 1048576"), 20);
}

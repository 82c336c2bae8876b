//! The `streamsink` binary as an operator meets it: command line, start-up, logs, signals.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

const GROUP: &str = "event-processors";
const START_LINE: &str = "Event consumer started";

fn env_for<'a>(db: &'a TestDb, stream: &'a TestStream, redis_url: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("REDIS_URL", redis_url), ("DATABASE_URL", &db.url), ("STREAMSINK_STREAMS", &stream.name)]
}

/// Runs the binary to completion and returns (exit code, output lines).
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, Vec<String>) {
    let mut p = Process::spawn(args, env);
    let (code, _) = p.wait_exit(Duration::from_secs(20));
    (code, p.output())
}

#[test]
fn help_and_version_work() {
    let (code, out) = run_to_exit(&["--help"], &[]);
    assert_eq!(code, Some(0));
    let text = out.join("\n");
    for word in ["run", "migrate"] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
    let (code, out) = run_to_exit(&["run", "--help"], &[]);
    assert_eq!(code, Some(0));
    let text = out.join("\n");
    for word in ["REDIS_URL", "DATABASE_URL", "STREAMSINK_BLOCK", "STREAMSINK_GROUP_START", "[default: 1s]"] {
        assert!(text.contains(word), "run --help lacks {word}: {text}");
    }
    let (code, out) = run_to_exit(&["--version"], &[]);
    assert_eq!(code, Some(0));
    assert_eq!(out, vec![format!("streamsink {}", env!("CARGO_PKG_VERSION"))]);
}

#[test]
fn each_command_asks_only_for_the_settings_it_uses() {
    let (_, out) = run_to_exit(&["migrate", "--help"], &[]);
    let text = out.join("\n");
    assert!(text.contains("DATABASE_URL"), "{text}");
    assert!(
        !text.contains("REDIS")
            && text.matches("STREAMSINK_").count() == text.matches("STREAMSINK_PG_").count(),
        "migrate needs Postgres only: {text}"
    );
    let secret = "s3cret-in-env";
    let url = format!("postgres://u:{secret}@h/db");
    let (_, out) = run_to_exit(&["run", "--help"], &[("DATABASE_URL", &url)]);
    assert!(!out.join("\n").contains(secret), "--help shows a URL's value");
}

#[test]
fn a_bad_flag_stops_the_process_with_one_line() {
    let (code, out) =
        run_to_exit(&["run", "--bogus"], &[("REDIS_URL", "redis://x"), ("DATABASE_URL", "postgres://x/y")]);
    assert_eq!(code, Some(2));
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].contains("--bogus"), "{out:?}");
}

#[test]
fn a_missing_or_invalid_setting_is_named_in_one_line() {
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("DATABASE_URL", "postgres://x/y")], "REDIS_URL"),
        (vec![("REDIS_URL", "redis://127.0.0.1:1")], "DATABASE_URL"),
        (
            vec![
                ("REDIS_URL", "redis://127.0.0.1:1"),
                ("DATABASE_URL", "postgres://x/y"),
                ("STREAMSINK_BLOCK", "5"),
            ],
            "STREAMSINK_BLOCK",
        ),
        (
            vec![
                ("REDIS_URL", "redis://127.0.0.1:1"),
                ("DATABASE_URL", "postgres://x/y"),
                ("STREAMSINK_WORKERS", "lots"),
            ],
            "STREAMSINK_WORKERS",
        ),
        (vec![("REDIS_URL", "http://:topsecret@host"), ("DATABASE_URL", "postgres://x/y")], "REDIS_URL"),
    ];
    for (env, setting) in cases {
        let (code, out) = run_to_exit(&["run"], &env);
        assert_eq!(code, Some(2), "{env:?}: {out:?}");
        assert_eq!(out.len(), 1, "{env:?}: {out:?}");
        assert!(out[0].contains(setting), "{out:?} should name {setting}");
        assert!(!out[0].contains("topsecret"), "{out:?}");
    }
}

#[test]
fn a_flag_overrides_its_environment_variable() {
    let (code, out) = run_to_exit(
        &["run", "--block", "nonsense"],
        &[("REDIS_URL", "redis://x"), ("DATABASE_URL", "postgres://x/y"), ("STREAMSINK_BLOCK", "5s")],
    );
    assert_eq!(code, Some(2));
    assert!(out[0].contains("'nonsense'"), "{out:?}");
}

#[test]
fn the_redis_password_never_appears_in_the_output() {
    let secret = "s3cret-Pa55word";
    let redis = PrivateRedis::start(Some(secret));
    let (db, stream) = (TestDb::create(), TestStream::on(&redis.url()));
    let url = redis.url();
    let mut env = env_for(&db, &stream, &url);
    env.push(("RUST_LOG", "debug"));
    env.push(("STREAMSINK_STATS_INTERVAL", "250ms"));
    let mut p = Process::spawn(&["run"], &env);
    p.wait_for_line(START_LINE, Duration::from_secs(20));
    publish(&mut redis_at(&url), &stream.name, &[("type", "t")]);
    p.wait_for_line("processed=1", Duration::from_secs(10));
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).0, Some(0));
    let out = p.output().join("\n");
    assert!(out.contains(&format!("redis://:***@127.0.0.1:{}", redis.port)), "{out}");
    assert!(!out.contains(secret), "password leaked:\n{out}");

    // A wrong password: the failed attempts are logged, masked.
    let wrong = "wr0ng-Pa55word";
    let bad_url = format!("redis://:{wrong}@127.0.0.1:{}", redis.port);
    let mut p = Process::spawn(&["run"], &env_for(&db, &stream, &bad_url));
    p.wait_for_line("(attempt 2)", Duration::from_secs(10));
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).0, Some(0));
    let out = p.output().join("\n");
    assert!(!out.contains(wrong), "password leaked:\n{out}");
}

#[test]
fn the_default_consumer_name_is_host_and_pid() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let url = redis_url();
    let mut p = Process::spawn(&["run"], &env_for(&db, &stream, &url));
    let line = p.wait_for_line(START_LINE, Duration::from_secs(20));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let expected = format!("{host}-{}", p.child.id());
    assert!(line.contains(&format!("consumer={expected} ")), "{line}");

    // Redis knows the consumer by that name once it has read.
    let mut r = redis();
    publish(&mut r, &stream.name, &[("type", "t")]);
    wait_until(Duration::from_secs(10), "the consumer to appear in XINFO CONSUMERS", || {
        let consumers: Vec<redis::Value> =
            redis::cmd("XINFO").arg("CONSUMERS").arg(&stream.name).arg(GROUP).query(&mut r).ok()?;
        format!("{consumers:?}").contains(&expected).then_some(())
    });
    p.signal("INT");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).0, Some(0));
}

#[test]
fn under_journald_lines_carry_the_syslog_priority_and_no_timestamp() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let url = redis_url();
    let mut env = env_for(&db, &stream, &url);
    env.push(("JOURNAL_STREAM", "8:12345"));
    env.push(("REDIS_URL", "redis://127.0.0.1:1")); // unreachable: a warning is logged
    let mut p = Process::spawn(&["run"], &env);
    let warn = p.wait_for_line("cannot connect to Redis", Duration::from_secs(10));
    assert!(warn.starts_with("<4>"), "{warn}");
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).0, Some(0));
    let out = p.output();
    assert!(out.iter().any(|l| l.starts_with("<6>")), "{out:?}");
    for line in &out {
        assert!(line.starts_with('<') && line.as_bytes()[2] == b'>', "no priority prefix: {line}");
        // env_logger's own format starts with "[<timestamp>"; the journal stamps lines itself.
        assert!(!line[3..].starts_with('['), "a timestamp of its own: {line}");
    }
}

#[test]
fn a_dead_letter_line_names_its_stream_and_entry_as_fields() {
    // Outside the journal a record's fields follow its text (`key=value`); on a stream that is
    // not ours, after the priority prefix. journald gets them as STREAM=, ENTRY_ID= (vm-test.sh).
    for journal_stream in [None, Some("8:12345")] {
        let (db, stream) = (TestDb::create(), TestStream::new());
        let url = redis_url();
        let mut env = env_for(&db, &stream, &url);
        if let Some(js) = journal_stream {
            env.push(("JOURNAL_STREAM", js));
        }
        let mut p = Process::spawn(&["run"], &env);
        p.wait_for_line(START_LINE, Duration::from_secs(20));
        let id = publish(&mut redis(), &stream.name, &[("event", "{not json")]);
        let line = p.wait_for_line(&format!("malformed entry {id}"), Duration::from_secs(10));
        assert!(
            line.contains(&format!(" stream={} entry_id={id}", stream.name)),
            "{journal_stream:?}: {line}"
        );
        if journal_stream.is_some() {
            assert!(line.starts_with("<4>"), "{line}");
        }
        p.signal("TERM");
        assert_eq!(p.wait_exit(Duration::from_secs(10)).0, Some(0));
    }
}

#[test]
fn under_systemd_a_refused_setting_is_one_line_at_error_priority() {
    // The line that explains a failed unit must show under `journalctl -p err`.
    let env = [
        ("JOURNAL_STREAM", "8:12345"),
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("DATABASE_URL", "postgres://x/y"),
        ("STREAMSINK_WORKERS", "0"),
    ];
    let (code, out) = run_to_exit(&["run"], &env);
    assert_eq!(code, Some(2), "{out:?}");
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].starts_with("<3>streamsink: invalid setting STREAMSINK_WORKERS"), "{out:?}");
}

#[test]
fn start_up_retries_an_unreachable_redis_and_a_signal_stops_it_cleanly() {
    let db = TestDb::create();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut p = Process::spawn(&["run"], &[("REDIS_URL", &url), ("DATABASE_URL", &db.url)]);
    p.wait_for_line("(attempt 3)", Duration::from_secs(10));
    p.signal("TERM");
    let (code, took) = p.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5));
}

#[test]
fn an_idle_worker_stops_within_two_seconds_with_the_default_block() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let url = redis_url();
    let mut p = Process::spawn(&["run"], &env_for(&db, &stream, &url));
    p.wait_for_line(START_LINE, Duration::from_secs(20));
    // Idle: the reader has issued its XREADGROUP (which registers the consumer) and blocks.
    let mut r = redis();
    wait_until(Duration::from_secs(10), "the reader's first read", || {
        let consumers: Vec<redis::Value> =
            redis::cmd("XINFO").arg("CONSUMERS").arg(&stream.name).arg(GROUP).query(&mut r).ok()?;
        (!consumers.is_empty()).then_some(())
    });
    p.signal("TERM");
    let (code, took) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    assert!(took <= Duration::from_secs(2), "an idle stop took {took:?}");
}

#[test]
fn migrate_applies_the_schema_once() {
    let db = TestDb::create();
    let (code, out) = run_to_exit(&["migrate"], &[("DATABASE_URL", &db.url)]);
    assert_eq!(code, Some(0), "{out:?}");
    assert!(out.join("\n").contains("applied migrations [1]"), "{out:?}");
    assert_eq!(
        db.count("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('events', 'sessions')"),
        2
    );
    let (code, out) = run_to_exit(&["migrate"], &[("DATABASE_URL", &db.url)]);
    assert_eq!(code, Some(0));
    assert!(out.join("\n").contains("schema is up to date"), "{out:?}");
}

#[test]
fn a_second_signal_exits_at_once() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let url = redis_url();
    let mut env = env_for(&db, &stream, &url);
    env.push(("STREAMSINK_BLOCK", "1m")); // the first signal would wait for this read to end
    let mut p = Process::spawn(&["run"], &env);
    p.wait_for_line(START_LINE, Duration::from_secs(20));
    p.signal("TERM");
    p.wait_for_line("stop signal received", Duration::from_secs(5));
    p.signal("TERM");
    let (code, took) = p.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(130));
    assert!(took < Duration::from_secs(5));
}

/// Entry ids of `stream` that the group delivered (at or before its last-delivered-id).
fn delivered_ids(r: &mut redis::Connection, stream: &str, all: &[String]) -> Vec<String> {
    let groups: Vec<Vec<redis::Value>> = redis::cmd("XINFO").arg("GROUPS").arg(stream).query(r).unwrap();
    let fields = &groups[0];
    let at = fields
        .iter()
        .position(|v| matches!(v, redis::Value::BulkString(b) if b == b"last-delivered-id"))
        .unwrap();
    let last: String = redis::from_redis_value(fields[at + 1].clone()).unwrap();
    let key = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    };
    all.iter().filter(|id| key(id) <= key(&last)).cloned().collect()
}

#[test]
fn shutdown_under_load_exits_within_ten_seconds_and_loses_nothing() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    let published = publish_many(&mut r, &stream.name, 50_000, "load");
    let url = redis_url();
    let mut env = env_for(&db, &stream, &url); // default BLOCK (5s)
    env.push(("STREAMSINK_WORKERS", "2"));
    let mut p = Process::spawn(&["run"], &env);
    p.wait_for_line(START_LINE, Duration::from_secs(20));
    wait_until(Duration::from_secs(20), "the drain to be under way", || {
        (db.count_or_zero("SELECT count(*) FROM events") > 0).then_some(())
    });
    p.signal("TERM");
    let (code, took) = p.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{:?}", p.output());
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    assert!(p.output().iter().any(|l| l.contains("final stats:")));

    // Every delivered entry is committed (a row) or still pending; nothing else.
    let pending_ids: HashSet<String> = {
        let reply: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&stream.name)
            .arg(GROUP)
            .arg("-")
            .arg("+")
            .arg(100_000)
            .query(&mut r)
            .unwrap();
        reply.into_iter().map(|(id, ..)| id).collect()
    };
    let rows: HashSet<String> = db
        .client()
        .query("SELECT stream_entry_id FROM events", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let delivered = delivered_ids(&mut r, &stream.name, &published);
    let acked: Vec<&String> = delivered.iter().filter(|id| !pending_ids.contains(*id)).collect();
    assert!(!acked.is_empty());
    let lost: Vec<&&String> = acked.iter().filter(|id| !rows.contains(**id)).collect();
    assert!(lost.is_empty(), "{} acknowledged entries have no row, e.g. {:?}", lost.len(), lost.first());
    let delivered: HashSet<&String> = delivered.iter().collect();
    assert!(rows.iter().all(|id| delivered.contains(id)), "a row for an entry never delivered");
    eprintln!("stopped with {} of {} rows, {} pending", rows.len(), published.len(), pending_ids.len());
    assert!(rows.len() < published.len(), "the drain finished before the signal: not a test under load");
}

#[test]
fn the_stats_line_reports_counters_pending_and_lag() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    publish(&mut r, &stream.name, &[("id", "a"), ("type", "t")]);
    publish(&mut r, &stream.name, &[("id", "b"), ("type", "t")]);
    publish(&mut r, &stream.name, &[("id", "a"), ("type", "t")]);
    publish(&mut r, &stream.name, &[("event", "{oops")]);
    let url = redis_url();
    let mut env = env_for(&db, &stream, &url);
    env.push(("STREAMSINK_STATS_INTERVAL", "250ms"));
    env.push(("STREAMSINK_BLOCK", "200ms"));
    let mut p = Process::spawn(&["run"], &env);
    let counts = "processed=4 inserted=2 duplicates=1 handler_errors=0 dead_lettered=1 acknowledged=4";
    let line = p.wait_for_line(&format!("stats: {counts}"), Duration::from_secs(20));
    assert!(line.contains(" rate="), "{line}");
    assert!(line.ends_with("pending=0 lag=0 held=0.0MiB"), "{line}");
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).0, Some(0));
    p.wait_for_line(&format!("final stats: {counts}"), Duration::from_secs(1));
}

//! `streamsink check`: what a shell or a monitoring agent gets, and its exit code, for healthy
//! and unhealthy states (the real binary, real Redis and Postgres).

mod common;

use common::*;

/// Runs `streamsink check ARGS` with exactly `env` (nothing inherited); (exit code, stdout, stderr).
fn check(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    run_streamsink(&[&["check"], args].concat(), env)
}

/// A group on `stream` created at 0 with `n` entries undelivered, and one entry of 1970
/// delivered and never acknowledged (pending for 56 years).
fn lagging_stream_with_an_ancient_pending_entry(stream: &str, n: usize) {
    let mut r = redis();
    let _: String =
        redis::cmd("XADD").arg(stream).arg("1000-0").arg("event").arg("{}").query(&mut r).unwrap();
    group_at_0_with_one_entry_delivered(&mut r, stream);
    publish_many(&mut r, stream, n, "lag");
}

/// Creates the group at the stream's start and delivers its first entry to a consumer that
/// never acknowledges it.
fn group_at_0_with_one_entry_delivered(r: &mut redis::Connection, stream: &str) {
    let _: () =
        redis::cmd("XGROUP").arg("CREATE").arg(stream).arg("event-processors").arg("0").query(r).unwrap();
    deliver(r, stream, "event-processors", "gone", 1);
}

#[test]
fn a_healthy_pipeline_checks_healthy_with_every_figure() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let running = Running::start(settings(&db, &stream));
    let mut r = redis();
    publish_many(&mut r, &stream.name, 20, "c");
    publish(&mut r, &stream.name, &[("event", "{oops")]);
    running.wait_processed(21);
    let url = redis_url();
    let env = [
        ("REDIS_URL", url.as_str()),
        ("DATABASE_URL", db.url.as_str()),
        ("STREAMSINK_STREAMS", &stream.name),
    ];

    let (code, out, err) = check(&[], &env);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.trim_end().ends_with("healthy"), "{out}");
    assert!(out.contains("schema current"), "{out}");
    let row = out.lines().find(|l| l.starts_with(&stream.name)).unwrap_or_else(|| panic!("{out}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    // stream group length lag pending oldest consumers dead-letters
    assert_eq!(cells[1..].to_vec(), ["event-processors", "21", "0", "0", "-", "1", "1"], "{out}");

    let (code, out, _) = check(&["--json"], &env);
    assert_eq!(code, Some(0));
    let report = json_of(&out);
    assert_eq!(report["healthy"], true);
    assert_eq!(report["postgres"]["migrations_missing"], serde_json::json!([]));
    let s = &report["streams"][0];
    assert_eq!(
        (s["stream"].as_str(), s["length"].as_u64(), s["dead_letters"].as_u64()),
        (Some(&*stream.name), Some(21), Some(1))
    );
    assert_eq!(
        (s["lag"].as_u64(), s["pending"].as_u64(), s["consumers"].as_u64()),
        (Some(0), Some(0), Some(1))
    );
    assert!(report["redis"]["ping_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{report}");
    assert!(!out.contains("postgres:postgres@"), "the password is masked: {out}");
    drop(running);
}

#[test]
fn thresholds_on_lag_and_pending_age_turn_into_exit_1() {
    let stream = TestStream::new();
    lagging_stream_with_an_ancient_pending_entry(&stream.name, 5);
    let url = redis_url();
    let env = [("REDIS_URL", url.as_str()), ("STREAMSINK_STREAMS", &stream.name)];

    let (code, out, _) = check(&["--json"], &env);
    assert_eq!(code, Some(0), "no thresholds: figures only\n{out}");
    let s = &json_of(&out)["streams"][0];
    assert_eq!((s["lag"].as_u64(), s["pending"].as_u64()), (Some(5), Some(1)), "{out}");
    assert!(s["oldest_pending_seconds"].as_f64().is_some_and(|age| age > 1e9), "{out}");

    assert_eq!(check(&["--max-lag", "5"], &env).0, Some(0));
    let (code, out, _) = check(&["--max-lag", "4"], &env);
    assert_eq!(code, Some(1));
    assert!(out.contains("lag 5 is over --max-lag 4"), "{out}");
    let (code, out, _) = check(&["--max-pending-age", "1h"], &env);
    assert_eq!(code, Some(1));
    assert!(out.contains("oldest pending entry is") && out.contains("--max-pending-age 3600s"), "{out}");
    let (code, _, err) = check(&["--max-pending-age", "5"], &env);
    assert_eq!(code, Some(2), "a duration needs a unit: {err}");
}

#[test]
fn without_database_url_it_checks_redis_alone_and_says_so() {
    let stream = TestStream::new();
    lagging_stream_with_an_ancient_pending_entry(&stream.name, 0);
    let url = redis_url();
    let (code, out, err) = check(&[], &[("REDIS_URL", &url), ("STREAMSINK_STREAMS", &stream.name)]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("DATABASE_URL not set: Redis checked alone"), "{out}");
    let (_, out, _) = check(&["--json"], &[("REDIS_URL", &url), ("STREAMSINK_STREAMS", &stream.name)]);
    assert_eq!(json_of(&out)["postgres"]["checked"], false);
    // An env file's `DATABASE_URL=` line says the same.
    let env = [("REDIS_URL", url.as_str()), ("STREAMSINK_STREAMS", &stream.name), ("DATABASE_URL", "")];
    let (code, out, err) = check(&[], &env);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("Redis checked alone"), "{out}");
}

#[test]
fn each_unhealthy_state_is_named_and_exits_1() {
    let stream = TestStream::new();
    lagging_stream_with_an_ancient_pending_entry(&stream.name, 0);
    let url = redis_url();
    let missing = TestStream::new();
    let fresh = TestDb::create(); // never migrated
    let closed = format!("redis://127.0.0.1:{}", free_port());
    let nowhere = format!("postgres://postgres:secret-pw@127.0.0.1:{}/x", free_port());
    let streams = format!("{},{}", stream.name, missing.name);
    let cases: [(Vec<(&str, &str)>, &str); 4] = [
        (
            vec![("REDIS_URL", &url), ("STREAMSINK_STREAMS", &streams)],
            &format!("group event-processors does not exist on stream {}", missing.name),
        ),
        (
            vec![("REDIS_URL", &url), ("STREAMSINK_STREAMS", &stream.name), ("DATABASE_URL", &fresh.url)],
            "migrations [1] not applied",
        ),
        (
            vec![("REDIS_URL", &url), ("STREAMSINK_STREAMS", &stream.name), ("DATABASE_URL", &nowhere)],
            "Postgres: ",
        ),
        (vec![("REDIS_URL", &closed), ("STREAMSINK_STREAMS", &stream.name)], "Redis: cannot connect"),
    ];
    for (env, problem) in cases {
        let (code, out, err) = check(&[], &env);
        assert_eq!(code, Some(1), "{env:?}: {out}{err}");
        let verdict = out.lines().last().unwrap_or_default();
        assert!(verdict.starts_with("UNHEALTHY: ") && verdict.contains(problem), "{problem:?} in {out}");
        assert!(!out.contains("secret-pw") && !err.contains("secret-pw"), "{out}{err}");
        let (_, out, _) = check(&["--json"], &env);
        let report = json_of(&out);
        assert_eq!(report["healthy"], false);
        assert!(
            report["problems"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p.as_str().unwrap_or("").contains(problem)))
        );
    }
    assert_eq!(
        fresh.count_or_zero("SELECT count(*) FROM pg_tables WHERE tablename = 'events'"),
        0,
        "check never migrates"
    );
}

#[test]
fn max_lag_holds_where_redis_has_lost_count_of_the_lag() {
    let stream = TestStream::new();
    let mut r = redis();
    let ids = publish_many(&mut r, &stream.name, 3, "l");
    group_at_0_with_one_entry_delivered(&mut r, &stream.name);
    // An entry deleted between the group's position and the end: Redis 7 reports the lag as nil.
    let _: u64 = redis::cmd("XDEL").arg(&stream.name).arg(&ids[1]).query(&mut r).unwrap();
    let url = redis_url();
    let env = [("REDIS_URL", url.as_str()), ("STREAMSINK_STREAMS", &stream.name)];
    let (_, out, _) = check(&["--json"], &env);
    assert!(json_of(&out)["streams"][0]["lag"].is_null(), "Redis does not know the lag here: {out}");
    let (code, out, _) = check(&["--max-lag", "0"], &env);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("lag 1 is over --max-lag 0"), "{out}");
    assert_eq!(check(&["--max-lag", "1"], &env).0, Some(0));
}

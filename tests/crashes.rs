//! Breaking things for real while the binary drains a stream: kill -9 of the worker, Postgres
//! stopped, Redis restarted. Each test has its own private redis-server and PostgreSQL. In
//! every case each published event must end up in `events` exactly once, nothing pending,
//! nothing dead-lettered.

mod common;

use std::time::{Duration, Instant};

use common::*;

const GROUP: &str = "event-processors";
const START_LINE: &str = "Event consumer started";

fn rows(p: &Private) -> i64 {
    p.db.count_or_zero("SELECT count(*) FROM events")
}

/// The worker's settings for these tests: small batches (a drain that lasts), fast reclaim.
fn env(p: &Private, claim_min_idle: &str) -> Vec<(String, String)> {
    let mut env = p.env();
    for (k, v) in [
        ("STREAMSINK_BATCH", "100"),
        ("STREAMSINK_WORKERS", "2"),
        ("STREAMSINK_BLOCK", "250ms"),
        ("STREAMSINK_CLAIM_INTERVAL", "250ms"),
        ("STREAMSINK_CLAIM_MIN_IDLE", claim_min_idle),
        ("STREAMSINK_STATS_INTERVAL", "1s"),
        // Each failed attempt during an outage as a debug line ("… still unavailable"), so
        // tests can see that many attempts made one warning.
        ("RUST_LOG", "info,streamsink::retry=debug"),
    ] {
        env.push((k.into(), v.into()));
    }
    env
}

/// Waits until every published event is a row and nothing is pending, then checks that each
/// entry became exactly one row and that nothing was dead-lettered.
fn assert_drained_exactly_once(p: &Private, published: usize, deadline: Duration) {
    let mut r = p.con();
    wait_until(deadline, &format!("{published} rows and nothing pending"), || {
        (rows(p) == published as i64 && pending(&mut r, &p.stream.name, GROUP) == 0).then_some(())
    });
    let row = p
        .db
        .client()
        .query_one("SELECT count(*), count(DISTINCT id), count(DISTINCT stream_entry_id) FROM events", &[])
        .unwrap();
    let counts: (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(counts, (published as i64, published as i64, published as i64));
    assert!(entries(&mut r, &p.stream.dlq()).is_empty(), "nothing may be dead-lettered");
}

#[test]
fn kill_9_three_times_while_draining_loses_and_duplicates_nothing() {
    let p = Private::start();
    let total = 20_000;
    publish_many(&mut p.con(), &p.stream.name, total, "kill");
    let env = env(&p, "1s");
    let mut pending_at_kills = 0;
    for kill in 1..=3 {
        // Each run has a new consumer name (<host>-<pid>); entries the killed one held are
        // reclaimed by a later run once idle for 1 s.
        let mut worker = Process::spawn_owned(&["run"], &env);
        worker.wait_for_line(START_LINE, Duration::from_secs(20));
        let target = (kill * 4_000) as i64;
        wait_until(Duration::from_secs(60), &format!("{target} rows before kill {kill}"), || {
            (rows(&p) >= target).then_some(())
        });
        worker.child.kill().unwrap(); // SIGKILL
        let (code, _) = worker.wait_exit(Duration::from_secs(5));
        assert_eq!(code, None, "killed by a signal");
        pending_at_kills += pending(&mut p.con(), &p.stream.name, GROUP);
    }
    assert!(pending_at_kills > 0, "the kills left nothing in flight: they tested nothing");
    assert!(rows(&p) < total as i64, "the drain finished before the last kill");

    let mut worker = Process::spawn_owned(&["run"], &env);
    assert_drained_exactly_once(&p, total, Duration::from_secs(90));
    assert!(worker.output().iter().any(|l| l.contains("reclaimed:")), "{:?}", worker.output());
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(Duration::from_secs(10)).0, Some(0));
}

/// True while the process is running; panics with its output if it exited.
fn assert_alive(worker: &mut Process) {
    if let Some(status) = worker.child.try_wait().unwrap() {
        panic!("the worker exited ({status}) during the outage: {:?}", worker.output());
    }
}

fn count_lines(worker: &Process, needle: &str) -> usize {
    worker.output().iter().filter(|l| l.contains(needle)).count()
}

/// While `dependency` ("Redis", "Postgres") is down: checks that the worker stays up, and
/// waits until it has logged the outage and failed `attempts` more times (at least `down`
/// from now), so the restart comes after many attempts. Nothing can clear the outage while
/// the server is down, so at this point the count is exact: one warning, however many
/// attempts.
fn hold_outage(worker: &mut Process, dependency: &str, down: Duration, attempts: usize) {
    let warned = format!("{dependency} unavailable (");
    let failed_again = format!("{dependency} still unavailable (");
    let since = Instant::now();
    let what = format!("the {dependency} outage logged and {attempts} more attempts failed");
    wait_until(Duration::from_secs(60), &what, || {
        assert_alive(worker);
        let logged = count_lines(worker, &warned) > 0;
        (logged && count_lines(worker, &failed_again) >= attempts && since.elapsed() >= down).then_some(())
    });
    assert_eq!(count_lines(worker, &warned), 1, "one warning, not one per attempt: {:?}", worker.output());
    assert_eq!(count_lines(worker, &format!("{dependency} available again")), 0, "{:?}", worker.output());
}

/// Once `dependency` is back and used: its outage lines are a warning and then one info line
/// with the outage's length. A thread whose attempt failed just before the restart may
/// report it only after another thread has logged the end, which starts and ends a second
/// outage; what never happens is a warning without its end, or two warnings in a row.
fn assert_outage_logged_once(worker: &Process, dependency: &str) {
    let (warned, cleared) =
        (format!("{dependency} unavailable ("), format!("{dependency} available again after"));
    let outage_lines = || -> Vec<String> {
        worker.output().into_iter().filter(|l| l.contains(&warned) || l.contains(&cleared)).collect()
    };
    let lines =
        wait_until(Duration::from_secs(10), &format!("the {dependency} outage logged as over"), || {
            let lines = outage_lines();
            lines.last().is_some_and(|l| l.contains(&cleared)).then_some(lines)
        });
    assert!(lines.len() >= 2, "{lines:?}");
    for pair in lines.chunks(2) {
        assert!(
            pair.len() == 2 && pair[0].contains(&warned) && pair[1].contains(&cleared),
            "each warning is followed by one line saying it is over: {lines:?}"
        );
    }
}

#[test]
fn postgres_stopped_mid_drain_the_worker_waits_and_every_event_lands_once() {
    let p = Private::start();
    let total = 20_000;
    publish_many(&mut p.con(), &p.stream.name, total, "pg");
    let mut worker = Process::spawn_owned(&["run"], &env(&p, "60s"));
    worker.wait_for_line(START_LINE, Duration::from_secs(20));
    wait_until(Duration::from_secs(60), "the drain to be under way", || (rows(&p) >= 2_000).then_some(()));

    p.postgres.stop();
    let before = p.db.count_or_zero("SELECT 1");
    assert_eq!(before, 0, "postgres is down");
    hold_outage(&mut worker, "Postgres", Duration::from_secs(4), 2);
    p.postgres.start_again();
    let back = Instant::now();
    let resumed_from = rows(&p);
    wait_until(Duration::from_secs(15), "writing to resume", || (rows(&p) > resumed_from).then_some(()));
    eprintln!("work resumed {:?} after postgres accepted connections again", back.elapsed());

    assert_drained_exactly_once(&p, total, Duration::from_secs(90));
    assert_outage_logged_once(&worker, "Postgres");
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(Duration::from_secs(10)).0, Some(0));
}

#[test]
fn redis_restarted_mid_drain_the_worker_reconnects_and_every_event_lands_once() {
    let redis = PrivateRedis::start_with(None, &["--appendonly", "yes", "--appendfsync", "always"]);
    let mut p = Private::start_with_redis(redis);
    let total = 20_000;
    publish_many(&mut p.con(), &p.stream.name, total, "redis");
    // A reply lost in the restart strands its entries in this consumer's pending list until
    // reclaimed: a short idle time keeps the test short.
    let mut worker = Process::spawn_owned(&["run"], &env(&p, "2s"));
    worker.wait_for_line(START_LINE, Duration::from_secs(20));
    wait_until(Duration::from_secs(60), "the drain to be under way", || (rows(&p) >= 2_000).then_some(()));

    p.redis.stop();
    hold_outage(&mut worker, "Redis", Duration::from_secs(3), 3);
    p.redis.start_again();

    assert_drained_exactly_once(&p, total, Duration::from_secs(90));
    assert_outage_logged_once(&worker, "Redis");
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(Duration::from_secs(10)).0, Some(0));
}

//! streamsink on Redis servers older than Debian's 7.0, run from the binaries that
//! `scripts/old-redis.sh` fetches: 6.2 (XAUTOCLAIM answers nil for an entry deleted while
//! pending) and 5.0 (no XAUTOCLAIM; the XPENDING + XCLAIM fallback, where XCLAIM answers nil).
//! Either way the deleted entry is acknowledged and counted as lost upstream, not re-claimed at
//! every cycle. And `streamsink trim`, whose scripts need 6.2 (`XTRIM MINID`, `(id` bounds):
//! on 6.2 it trims up to the safe point; on 5.0 it refuses in one line, and the error is one
//! the worker's retention recognises (it then switches itself off).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

const GROUP: &str = "event-processors";

/// A private redis-server of `series`, fetched by scripts/old-redis.sh if needed.
fn old_redis(series: &str) -> PrivateRedis {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/old-redis.sh");
    let out = Command::new("bash").arg(script).arg(series).output().expect("run scripts/old-redis.sh");
    assert!(out.status.success(), "scripts/old-redis.sh {series}: {}", String::from_utf8_lossy(&out.stderr));
    let program = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    PrivateRedis::start_program(&program, None, &[])
}

fn trimmed_pending_entries_are_acknowledged_as_lost_upstream(series: &str, expected_version: &str) {
    let redis = old_redis(series);
    let (db, stream) = (TestDb::create(), TestStream::on(&redis.url()));
    let mut r = redis_at(&redis.url());
    let info: String = redis::cmd("INFO").arg("server").query(&mut r).unwrap();
    assert!(info.contains(&format!("redis_version:{expected_version}")), "{info}");

    let ids = publish_many(&mut r, &stream.name, 3, "old");
    streamsink::broker::group::ensure_group(&mut broker_at(&redis.url()), &stream.name, GROUP, "0").unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("dead-consumer")
        .arg("STREAMS")
        .arg(&stream.name)
        .arg(">")
        .query(&mut r)
        .unwrap();
    let _: u64 = redis::cmd("XDEL").arg(&stream.name).arg(&ids[1]).query(&mut r).unwrap();

    let mut config = settings_at(&redis.url(), &db.url, &stream.name);
    config.worker.block = Duration::from_millis(100);
    config.worker.claim_interval = Duration::from_millis(100);
    config.worker.claim_min_idle = Duration::from_millis(300);
    let running = Running::start(config);
    running.wait_processed(2);
    wait_until(Duration::from_secs(10), "the deleted entry to be acknowledged", || {
        (pending(&mut r, &stream.name, GROUP) == 0).then_some(())
    });
    // And new entries flow as on a current server.
    publish_many(&mut r, &stream.name, 5, "later");
    running.wait_processed(7);
    assert_eq!(db.count("SELECT count(*) FROM events"), 7);
    assert_eq!(pending(&mut r, &stream.name, GROUP), 0);
    let done = running.stop();
    assert_eq!((done.lost_upstream, done.dead_lettered), (1, 0));
}

#[test]
fn on_redis_6_2_an_entry_deleted_while_pending_is_acknowledged_as_lost_upstream() {
    trimmed_pending_entries_are_acknowledged_as_lost_upstream("6.2", "6.2.");
}

#[test]
fn on_redis_5_0_an_entry_deleted_while_pending_is_acknowledged_as_lost_upstream() {
    trimmed_pending_entries_are_acknowledged_as_lost_upstream("5.0", "5.0.");
}

/// Runs `streamsink trim ARGS` against `url`, nothing else inherited; (exit code, stdout, stderr).
fn trim_at(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    run_streamsink(&[&["trim"], args].concat(), &[("REDIS_URL", url)])
}

/// 6 entries of 40 days ago and 2 of now; GROUP processed the first two, a dead consumer holds
/// the next two, the rest is processed. Returns every id, oldest first.
fn old_entries_pending_for_a_dead_consumer(
    r: &mut redis::Connection,
    url: &str,
    stream: &str,
) -> Vec<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    let base = now.as_millis() as u64 - 40 * 86_400_000;
    let mut ids: Vec<String> = (1..=6)
        .map(|i| {
            let id = format!("{}-0", base + i);
            redis::cmd("XADD").arg(stream).arg(&id).arg("event").arg("{}").query::<String>(r).unwrap()
        })
        .collect();
    ids.extend(publish_many(r, stream, 2, "recent"));
    streamsink::broker::group::ensure_group(&mut broker_at(url), stream, GROUP, "0").unwrap();
    for (consumer, count, acknowledge) in [("alive", 2, true), ("dead", 2, false), ("alive", 10, true)] {
        let read = deliver(r, stream, GROUP, consumer, count);
        if acknowledge {
            let _: u64 = redis::cmd("XACK").arg(stream).arg(GROUP).arg(&read).query(r).unwrap();
        }
    }
    ids
}

#[test]
fn on_redis_6_2_trim_stops_at_the_entry_pending_for_a_dead_consumer() {
    let redis = old_redis("6.2");
    let stream = TestStream::on(&redis.url());
    let mut r = redis_at(&redis.url());
    let all = old_entries_pending_for_a_dead_consumer(&mut r, &redis.url(), &stream.name);

    let (code, out, err) =
        trim_at(&redis.url(), &["--stream", &stream.name, "--max-age", "30d", "--dry-run"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("would remove=2 minid={}", all[2])), "{out}");
    assert!(out.contains("4 entries older than the target are kept"), "{out}");
    let (code, out, err) = trim_at(&redis.url(), &["--stream", &stream.name, "--max-age", "30d"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("removed=2 minid={}", all[2])), "{out}");
    assert!(
        out.contains(&format!("held back by group {GROUP}: its oldest pending entry {}", all[2])),
        "{out}"
    );
    assert_eq!(entries(&mut r, &stream.name).into_iter().map(|(id, _)| id).collect::<Vec<_>>(), all[2..]);
    assert_eq!(pending(&mut r, &stream.name, GROUP), 2);
}

#[test]
fn on_redis_5_0_trim_refuses_in_one_line_and_retention_knows_why() {
    let redis = old_redis("5.0");
    let stream = TestStream::on(&redis.url());
    let mut r = redis_at(&redis.url());
    let all = old_entries_pending_for_a_dead_consumer(&mut r, &redis.url(), &stream.name);

    for target in [["--max-age", "30d"], ["--maxlen", "1"]] {
        let (code, out, err) = trim_at(&redis.url(), &["--stream", &stream.name, target[0], target[1]]);
        assert_eq!(code, Some(1), "{out}{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("trim needs Redis 6.2 or later"), "{err}");
    }
    // What the worker's retention sends: recognised, so it logs once and switches off.
    let pass = streamsink::broker::trim::Mode::Approximate { limit: 100 };
    let refused = streamsink::broker::trim::trim_to_safe_point(
        &mut broker_at(&redis.url()),
        &stream.name,
        &all[7],
        pass,
    )
    .unwrap_err();
    assert!(refused.is_trim_unsupported(), "{refused}");
    assert_eq!(entries(&mut r, &stream.name).len(), all.len(), "nothing removed");
}

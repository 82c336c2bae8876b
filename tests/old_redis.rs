//! streamsink on Redis servers older than Debian's 7.0, run from the binaries that
//! `scripts/old-redis.sh` fetches: 6.2 (XAUTOCLAIM answers nil for an entry deleted while
//! pending) and 5.0 (no XAUTOCLAIM; the XPENDING + XCLAIM fallback, where XCLAIM answers nil).
//! Either way the deleted entry is acknowledged and counted as lost upstream, not re-claimed at
//! every cycle.

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
    streamsink::broker::group::ensure_group(&mut r, &stream.name, GROUP, "0").unwrap();
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

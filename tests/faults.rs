//! Failure semantics, each test against its own private redis-server and PostgreSQL: stuck
//! entries are reclaimed, the retry budget comes from Redis, poison is isolated and
//! dead-lettered with its reason, dead consumers are pruned only when empty.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use streamsink::{Config, Handler, HandlerError, Registry};

const GROUP: &str = "event-processors";

/// In-process settings on the private instances, with fast reclaim.
fn fast_reclaim(p: &Private) -> Config {
    let mut config = settings_at(&p.redis.url(), &p.db.url, &p.stream.name);
    config.worker.block = ms(100);
    config.worker.claim_interval = ms(100);
    config.worker.claim_min_idle = ms(300);
    config
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Creates the group and lets consumer `name` read (and never acknowledge) up to `n` entries.
fn read_as(con: &mut redis::Connection, stream: &str, name: &str, n: usize) -> Vec<String> {
    let _: redis::RedisResult<()> =
        redis::cmd("XGROUP").arg("CREATE").arg(stream).arg(GROUP).arg("0").arg("MKSTREAM").query(con);
    let reply: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(name)
        .arg("COUNT")
        .arg(n)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query(con)
        .unwrap();
    let text = format!("{reply:?}");
    let ids: Vec<String> = pending_of(con, stream, name);
    assert_eq!(ids.len(), n, "{name} read {text}");
    ids
}

/// Ids pending for one consumer.
fn pending_of(con: &mut redis::Connection, stream: &str, consumer: &str) -> Vec<String> {
    let reply: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(10_000)
        .arg(consumer)
        .query(con)
        .unwrap();
    reply.into_iter().map(|(id, ..)| id).collect()
}

fn consumers(con: &mut redis::Connection, stream: &str) -> Vec<String> {
    let reply: Vec<redis::Value> =
        redis::cmd("XINFO").arg("CONSUMERS").arg(stream).arg(GROUP).query(con).unwrap();
    reply
        .into_iter()
        .filter_map(|c| match c {
            redis::Value::Array(kv) => kv.chunks(2).find_map(|p| match (&p[0], &p[1]) {
                (redis::Value::BulkString(k), redis::Value::BulkString(v)) if k == b"name" => {
                    Some(String::from_utf8_lossy(v).into_owned())
                }
                _ => None,
            }),
            _ => None,
        })
        .collect()
}

fn reclaims_a_dead_consumers_entries(start: fn(Config) -> Running) {
    let p = Private::start();
    let mut r = p.con();
    publish_many(&mut r, &p.stream.name, 5, "stuck");
    read_as(&mut r, &p.stream.name, "dead-consumer", 5);

    let running = start(fast_reclaim(&p));
    running.wait_processed(5);
    assert_eq!(p.db.count("SELECT count(*) FROM events"), 5);
    assert_eq!(pending(&mut r, &p.stream.name, GROUP), 0);
    assert!(pending_of(&mut r, &p.stream.name, "dead-consumer").is_empty());
    let done = running.stop();
    assert_eq!((done.reclaimed, done.inserted, done.dead_lettered), (5, 5, 0));
}

#[test]
fn a_dead_consumers_entries_are_reclaimed_after_the_idle_time() {
    reclaims_a_dead_consumers_entries(Running::start);
}

#[test]
#[cfg(feature = "test-hooks")]
fn the_xpending_xclaim_fallback_reclaims_them_too() {
    use streamsink::hooks::Hooks;
    reclaims_a_dead_consumers_entries(|c| Running::start_hooked(c, Hooks::default().force_claim_fallback()));
}

#[test]
fn entries_younger_than_the_idle_time_are_left_alone() {
    let p = Private::start();
    let mut r = p.con();
    publish_many(&mut r, &p.stream.name, 3, "young");
    read_as(&mut r, &p.stream.name, "busy-consumer", 3);
    // An idle, empty consumer: its pruning shows a whole reclaim cycle has run.
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&p.stream.name)
        .arg(GROUP)
        .arg("witness")
        .query(&mut r)
        .unwrap();
    let mut config = fast_reclaim(&p);
    config.worker.claim_min_idle = Duration::from_secs(3600);
    config.worker.consumer_prune_idle = ms(100);
    let running = Running::start(config);
    wait_until(Duration::from_secs(5), "a reclaim cycle (the witness pruned)", || {
        (!consumers(&mut r, &p.stream.name).contains(&"witness".to_string())).then_some(())
    });
    assert_eq!(pending_of(&mut r, &p.stream.name, "busy-consumer").len(), 3);
    assert!(consumers(&mut r, &p.stream.name).contains(&"busy-consumer".to_string()));
    assert_eq!(running.stop().reclaimed, 0);
}

#[test]
fn own_pending_entries_are_read_again_at_start() {
    let p = Private::start();
    let mut r = p.con();
    publish_many(&mut r, &p.stream.name, 4, "mine");
    // A previous run under the same consumer name read them and died.
    read_as(&mut r, &p.stream.name, "fixed-name", 4);
    let mut config = fast_reclaim(&p);
    config.worker.consumer = Some("fixed-name".into());
    config.worker.claim_min_idle = Duration::from_secs(3600); // not by XAUTOCLAIM: by the start-up re-read
    let running = Running::start(config);
    running.wait_processed(4);
    assert_eq!(p.db.count("SELECT count(*) FROM events"), 4);
    assert_eq!(pending(&mut r, &p.stream.name, GROUP), 0);
}

#[test]
fn an_entry_delivered_too_often_is_dead_lettered_with_its_last_error() {
    let p = Private::start();
    let mut r = p.con();
    let id = publish(&mut r, &p.stream.name, &[("id", "poison-loop"), ("type", "t")]);
    let ok_id = publish(&mut r, &p.stream.name, &[("id", "second-try"), ("type", "t")]);
    read_as(&mut r, &p.stream.name, "crashed-1", 2);
    // Three more deliveries of the first (as if three more consumers took it and crashed, the
    // last in its lone try).
    for name in ["crashed-2", "crashed-3", "crashed-4"] {
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(&p.stream.name)
            .arg(GROUP)
            .arg(name)
            .arg(0)
            .arg(&id)
            .query(&mut r)
            .unwrap();
    }
    streamsink::broker::errors::record_errors(
        &mut broker_at(&p.redis.url()),
        &p.stream.name,
        &[&id],
        "worker panicked: boom",
    )
    .unwrap();
    let errors_key = format!("{}:errors", p.stream.name);
    let recorded: usize = redis::cmd("HLEN").arg(&errors_key).query(&mut r).unwrap();
    assert_eq!(recorded, 1);

    let running = Running::start(fast_reclaim(&p)); // max deliveries 3: the reclaim is the 5th
    running.wait_processed(2);
    let dead = entries(&mut r, &p.stream.dlq());
    assert_eq!(dead.len(), 1, "{dead:?}");
    let f = &dead[0].1;
    assert_eq!(f["dlq_original_id"], id);
    assert_eq!(f["dlq_reason"], "max deliveries exceeded");
    assert_eq!(f["dlq_deliveries"], "5");
    assert!(f["dlq_error"].contains("delivered 5 times"), "{f:?}");
    assert!(f["dlq_error"].contains("worker panicked: boom"), "{f:?}");
    assert_eq!(f["id"], "poison-loop");
    // The entry delivered twice was still within its budget: processed normally.
    assert_eq!(p.db.count("SELECT count(*) FROM events WHERE id = 'second-try'"), 1);
    assert_eq!(p.db.count("SELECT count(*) FROM events WHERE id = 'poison-loop'"), 0);
    assert_eq!(pending(&mut r, &p.stream.name, GROUP), 0);
    // Recorded errors are dropped once their entries are acknowledged: just after the
    // processed count, so waited for.
    wait_until(Duration::from_secs(5), "the recorded errors to be dropped", || {
        let left: usize = redis::cmd("HLEN").arg(&errors_key).query(&mut r).unwrap();
        (left == 0).then_some(())
    });
    let _ = ok_id;
}

#[test]
fn entries_trimmed_while_pending_are_counted_as_lost_upstream() {
    let p = Private::start();
    let mut r = p.con();
    let ids = publish_many(&mut r, &p.stream.name, 3, "trim");
    read_as(&mut r, &p.stream.name, "dead-consumer", 3);
    let _: u64 = redis::cmd("XDEL").arg(&p.stream.name).arg(&ids[1]).query(&mut r).unwrap();

    let running = Running::start(fast_reclaim(&p));
    running.wait_processed(2);
    wait_until(Duration::from_secs(5), "the pending list to empty", || {
        (pending(&mut r, &p.stream.name, GROUP) == 0).then_some(())
    });
    assert_eq!(p.db.count("SELECT count(*) FROM events"), 2);
    let done = running.stop();
    assert_eq!(done.lost_upstream, 1);
}

#[test]
fn own_pending_entries_trimmed_before_a_restart_are_acknowledged_as_lost() {
    let p = Private::start();
    let mut r = p.con();
    let ids = publish_many(&mut r, &p.stream.name, 2, "own-trim");
    read_as(&mut r, &p.stream.name, "fixed-name", 2);
    let _: u64 = redis::cmd("XDEL").arg(&p.stream.name).arg(&ids[0]).query(&mut r).unwrap();
    let mut config = fast_reclaim(&p);
    config.worker.consumer = Some("fixed-name".into());
    config.worker.claim_min_idle = Duration::from_secs(3600);
    let running = Running::start(config);
    running.wait_processed(1);
    wait_until(Duration::from_secs(5), "the deleted entry to leave the pending list", || {
        (pending(&mut r, &p.stream.name, GROUP) == 0).then_some(())
    });
    assert_eq!(running.stop().lost_upstream, 1);
}

#[test]
fn idle_consumers_are_pruned_only_once_nothing_is_pending() {
    let p = Private::start();
    let mut r = p.con();
    publish_many(&mut r, &p.stream.name, 2, "prune");
    read_as(&mut r, &p.stream.name, "dead-with-entries", 2);
    // Created after the read, so idle for less time than the consumer holding entries.
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&p.stream.name)
        .arg(GROUP)
        .arg("dead-and-empty")
        .query(&mut r)
        .unwrap();
    let mut config = fast_reclaim(&p);
    config.worker.consumer_prune_idle = ms(200);

    // First run: the entries never get old enough to reclaim, so only the "nothing pending"
    // rule can keep their holder. The cycle that prunes the empty consumer saw the other one
    // idle even longer.
    config.worker.claim_min_idle = Duration::from_secs(3600);
    let running = Running::start(config.clone());
    wait_until(Duration::from_secs(5), "the empty consumer to be pruned", || {
        (!consumers(&mut r, &p.stream.name).contains(&"dead-and-empty".to_string())).then_some(())
    });
    assert!(consumers(&mut r, &p.stream.name).contains(&"dead-with-entries".to_string()));
    assert_eq!(pending_of(&mut r, &p.stream.name, "dead-with-entries").len(), 2);
    assert_eq!(running.stop().reclaimed, 0);

    // Second run: the entries are reclaimed; their former holder, now empty, goes too.
    config.worker.claim_min_idle = ms(300);
    let running = Running::start(config);
    running.wait_processed(2);
    wait_until(Duration::from_secs(5), "the reclaimed-from consumer to be pruned", || {
        (!consumers(&mut r, &p.stream.name).contains(&"dead-with-entries".to_string())).then_some(())
    });
    assert_eq!(p.db.count("SELECT count(*) FROM events"), 2);
    assert_eq!(pending(&mut r, &p.stream.name, GROUP), 0);
}

#[test]
fn every_kind_of_poison_is_dead_lettered_with_a_reason_naming_it_and_good_events_land() {
    let p = Private::start();
    let mut r = p.con();
    let long_id = "x".repeat(1000);
    // (kind, the entry's fields, expected dlq_reason, text dlq_error must contain)
    type Poison<'a> = (&'a str, Vec<Field>, &'a str, &'a str);
    let kinds: Vec<Poison> = vec![
        ("bad json", vec![kv("event", "{\"id\": oops")], "invalid json", "invalid JSON"),
        ("no type", vec![kv("event", r#"{"id":"p-notype","data":{}}"#)], "missing type", "type"),
        (
            "wrong types",
            vec![kv("event", r#"{"id":42,"type":"t"}"#)],
            "wrong field type",
            "'id' must be a string",
        ),
        (
            "timestamp out of range",
            vec![kv("event", r#"{"id":"p-ts","type":"t","timestamp":"-005000-01-01T00:00:00Z"}"#)],
            "rejected by postgres",
            "timestamp out of range",
        ),
        (
            "unparseable timestamp",
            vec![kv("event", r#"{"id":"p-ts2","type":"t","timestamp":"next tuesday"}"#)],
            "invalid timestamp",
            "next tuesday",
        ),
        (
            "NUL in JSON",
            vec![kv("event", r#"{"id":"p-nul","type":"t","data":{"s":"a\u0000b"}}"#)],
            "rejected by postgres",
            "\\u0000",
        ),
        ("oversized id", vec![kv("id", &long_id), kv("type", "t")], "field too long", "1000 bytes"),
        ("invalid utf-8", vec![(b"type".to_vec(), vec![0xc3, 0x28, 0xff])], "invalid utf-8", "UTF-8"),
        ("empty entry", vec![kv("", "")], "empty entry", "no fields"),
        ("data not JSON", vec![kv("type", "t"), kv("data", "not json")], "invalid json", "'data'"),
    ];
    let mut expected = Vec::new();
    for (i, (name, fields, reason, detail)) in kinds.iter().enumerate() {
        publish_many(&mut r, &p.stream.name, 2, &format!("good-{i}"));
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&p.stream.name).arg("*");
        for (k, v) in fields {
            cmd.arg(k.as_slice()).arg(v.as_slice());
        }
        let id: String = cmd.query(&mut r).unwrap();
        expected.push((id, *name, *reason, *detail));
    }
    publish_many(&mut r, &p.stream.name, 2, "good-last");
    let total = kinds.len() * 3 + 2;

    let running = Running::start(fast_reclaim(&p));
    running.wait_processed(total as u64);
    assert_eq!(
        p.db.count("SELECT count(*) FROM events WHERE id LIKE 'good-%'"),
        (kinds.len() * 2 + 2) as i64
    );
    assert_eq!(p.db.count("SELECT count(*) FROM events"), (kinds.len() * 2 + 2) as i64);
    let dead = entries(&mut r, &p.stream.dlq());
    assert_eq!(dead.len(), kinds.len());
    for (id, name, reason, detail) in expected {
        let (_, f) = dead
            .iter()
            .find(|(_, f)| f["dlq_original_id"] == id)
            .unwrap_or_else(|| panic!("{name} not dead-lettered"));
        assert_eq!(f["dlq_reason"], reason, "{name}: {f:?}");
        assert!(f["dlq_error"].contains(detail), "{name}: {:?} lacks {detail:?}", f["dlq_error"]);
        for field in ["dlq_stream", "dlq_group", "dlq_consumer", "dlq_deliveries", "dlq_failed_at"] {
            assert!(f.contains_key(field), "{name}: no {field}");
        }
        assert_eq!(f["dlq_stream"], p.stream.name);
        assert_eq!(f["dlq_deliveries"], "1");
        assert!(f["dlq_failed_at"].parse::<jiff::Timestamp>().is_ok(), "{}", f["dlq_failed_at"]);
    }
    // The original fields travel unchanged, bytes included.
    let raw: Vec<(String, Vec<Field>)> =
        redis::cmd("XRANGE").arg(p.stream.dlq()).arg("-").arg("+").query(&mut r).unwrap();
    assert!(raw.iter().any(|(_, f)| f.first() == Some(&(b"type".to_vec(), vec![0xc3, 0x28, 0xff]))));
    assert_eq!(pending(&mut r, &p.stream.name, GROUP), 0);
    assert_eq!(running.stop().dead_lettered, kinds.len() as u64);
}

type Field = (Vec<u8>, Vec<u8>);

fn kv(k: &str, v: &str) -> Field {
    (k.as_bytes().to_vec(), v.as_bytes().to_vec())
}

/// A handler that fails on every event.
struct AlwaysFails;

impl Handler for AlwaysFails {
    fn handle(
        &self,
        _: &mut postgres::Transaction<'_>,
        _: &mut streamsink::sink::StatementCache,
        events: &[&streamsink::event::Event],
    ) -> Result<(), HandlerError> {
        Err(HandlerError::Invalid {
            event_id: events[0].id.clone(),
            problem: "this handler always fails".into(),
        })
    }
}

#[test]
fn an_event_whose_handler_always_fails_is_kept_counted_and_acknowledged() {
    let p = Private::start();
    let mut r = p.con();
    let mut registry = Registry::builtin();
    registry.register("cursed", Arc::new(AlwaysFails));
    publish_event(&mut r, &p.stream.name, json!({"id": "c-1", "type": "cursed"}));
    publish_event(&mut r, &p.stream.name, json!({"id": "c-2", "type": "cursed"}));
    publish_event(&mut r, &p.stream.name, json!({"id": "fine", "type": "other"}));
    let running = Running::start_with(fast_reclaim(&p), registry);
    running.wait_processed(3);
    assert_eq!(p.db.count("SELECT count(*) FROM events"), 3);
    assert_eq!(pending(&mut r, &p.stream.name, GROUP), 0);
    assert!(entries(&mut r, &p.stream.dlq()).is_empty(), "a handler error is not poison");
    let done = running.stop();
    assert_eq!((done.handler_errors, done.dead_lettered, done.acknowledged), (2, 0, 3));
}

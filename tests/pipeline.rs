//! The pipeline's promises, against real Redis and PostgreSQL: what a published event becomes,
//! what happens to duplicates, both wire formats, the sessions projection, malformed entries
//! and handler failures.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use streamsink::config::StreamList;
use streamsink::{Handler, HandlerError, Registry};

const GROUP: &str = "event-processors";

#[test]
fn a_published_event_becomes_a_row_within_seconds() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let running = Running::start(settings(&db, &stream));
    let mut r = redis();
    publish_event(
        &mut r,
        &stream.name,
        json!({"id": "ev-1", "type": "page.view",
        "timestamp": "2024-05-01T12:00:00Z", "session_id": "s-1", "data": {"path": "/home"}}),
    );

    wait_until(Duration::from_secs(5), "the event row", || {
        (db.count_or_zero("SELECT count(*) FROM events WHERE id = 'ev-1'") == 1).then_some(())
    });
    let row = db
        .client()
        .query_one(
            "SELECT type, occurred_at = '2024-05-01T12:00:00Z', session_id, data->>'path', stream FROM events",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "page.view");
    assert!(row.get::<_, bool>(1));
    assert_eq!(row.get::<_, String>(2), "s-1");
    assert_eq!(row.get::<_, String>(3), "/home");
    assert_eq!(row.get::<_, String>(4), stream.name);
    running.wait_processed(1);
    assert_eq!(pending(&mut r, &stream.name, GROUP), 0);
}

#[test]
fn a_batch_of_five_becomes_five_rows_and_is_acknowledged() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    // Published before the group exists: group start 0 must not skip them.
    publish_many(&mut r, &stream.name, 5, "five");
    let running = Running::start(settings(&db, &stream));
    running.wait_processed(5);
    assert_eq!(db.count("SELECT count(*) FROM events"), 5);
    assert_eq!(pending(&mut r, &stream.name, GROUP), 0);
    let done = running.stop();
    assert_eq!((done.inserted, done.acknowledged, done.duplicates), (5, 5, 0));
}

#[test]
fn the_same_id_twice_gives_one_row_and_both_entries_are_acknowledged() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let running = Running::start(settings(&db, &stream));
    let mut r = redis();
    let ev = json!({"id": "dup-1", "type": "order.placed", "data": {"n": 1}});
    publish_event(&mut r, &stream.name, ev.clone());
    running.wait_processed(1);
    publish_event(&mut r, &stream.name, ev);
    running.wait_processed(2);

    assert_eq!(db.count("SELECT count(*) FROM events WHERE id = 'dup-1'"), 1);
    assert_eq!(pending(&mut r, &stream.name, GROUP), 0);
    let done = running.stop();
    assert_eq!((done.inserted, done.duplicates, done.acknowledged), (1, 1, 2));
}

#[test]
fn duplicates_within_one_batch_give_one_row() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    for _ in 0..3 {
        publish_event(
            &mut r,
            &stream.name,
            json!({"id": "same", "type": "session.start", "session_id": "S"}),
        );
    }
    let running = Running::start(settings(&db, &stream));
    running.wait_processed(3);
    assert_eq!(db.count("SELECT count(*) FROM events"), 1);
    assert_eq!(db.count("SELECT count(*) FROM sessions"), 1);
    let done = running.stop();
    assert_eq!((done.inserted, done.duplicates, done.handler_errors), (1, 2, 0));
}

#[test]
fn both_wire_formats_are_accepted() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    publish_event(
        &mut r,
        &stream.name,
        json!({"id": "env-1", "type": "click", "timestamp": 1714564800,
        "workspace_id": "w-1", "device_id": "d-1", "data": {"x": 1}, "campaign": "spring"}),
    );
    publish(
        &mut r,
        &stream.name,
        &[
            ("event_id", "flat-1"),
            ("event_type", "click"),
            ("timestamp", "2024-05-01T12:00:00.250Z"),
            ("workspace_id", "w-2"),
            ("payload", r#"{"x": 2}"#),
            ("region", "eu"),
        ],
    );
    let running = Running::start(settings(&db, &stream));
    running.wait_processed(2);

    let mut c = db.client();
    let rows = c
        .query(
            "SELECT id, workspace_id, data, attributes, extract(epoch FROM occurred_at)::float8
             FROM events ORDER BY id",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, String>(0), "env-1");
    assert_eq!(rows[0].get::<_, String>(1), "w-1");
    assert_eq!(rows[0].get::<_, serde_json::Value>(2), json!({"x": 1}));
    assert_eq!(rows[0].get::<_, serde_json::Value>(3), json!({"campaign": "spring"}));
    assert_eq!(rows[0].get::<_, f64>(4), 1714564800.0);
    assert_eq!(rows[1].get::<_, String>(0), "flat-1");
    assert_eq!(rows[1].get::<_, String>(1), "w-2");
    assert_eq!(rows[1].get::<_, serde_json::Value>(2), json!({"x": 2}));
    assert_eq!(rows[1].get::<_, serde_json::Value>(3), json!({"region": "eu"}));
    assert_eq!(rows[1].get::<_, f64>(4), 1714564800.25);
}

#[test]
fn an_event_without_id_is_keyed_by_its_stream_and_entry_id() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    let entry_id = publish(&mut r, &stream.name, &[("type", "anon")]);
    let running = Running::start(settings(&db, &stream));
    running.wait_processed(1);
    let expected = format!("{}/{entry_id}", stream.name);
    assert_eq!(db.count(&format!("SELECT count(*) FROM events WHERE id = '{expected}'")), 1);
}

fn session_row(db: &TestDb) -> Vec<String> {
    let row = db
        .client()
        .query_one(
            "SELECT session_id, workspace_id, device_id, started_at::text, ended_at::text, end_reason,
                    duration_ms::text, lifecycle, start_event_id, end_event_id FROM sessions",
            &[],
        )
        .unwrap();
    (0..10).map(|i| row.get::<_, Option<String>>(i).unwrap_or_else(|| "NULL".into())).collect()
}

fn session_events() -> (serde_json::Value, serde_json::Value) {
    let start = json!({"id": "st-1", "type": "session.start", "session_id": "sess-1", "workspace_id": "w-1",
        "device_id": "d-1", "timestamp": "2024-05-01T12:00:00Z"});
    let end = json!({"id": "en-1", "type": "session.end", "session_id": "sess-1",
        "timestamp": "2024-05-01T12:30:00Z", "data": {"reason": "logout"}});
    (start, end)
}

#[test]
fn session_start_creates_an_active_session() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let running = Running::start(settings(&db, &stream));
    let mut r = redis();
    publish_event(&mut r, &stream.name, session_events().0);
    running.wait_processed(1);
    let row = session_row(&db);
    assert_eq!(row[0..5], ["sess-1", "w-1", "d-1", "2024-05-01 12:00:00+00", "NULL"]);
    assert_eq!(row[7], "active");
}

/// Publishes the events one at a time (each in its own batch), then returns the sessions row.
fn sessions_row_after(events: &[serde_json::Value]) -> Vec<String> {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let running = Running::start(settings(&db, &stream));
    let mut r = redis();
    for (n, ev) in events.iter().enumerate() {
        publish_event(&mut r, &stream.name, ev.clone());
        running.wait_processed(n as u64 + 1);
    }
    session_row(&db)
}

#[test]
fn session_end_before_start_gives_the_same_row_as_start_before_end() {
    let (start, end) = session_events();
    let in_order = sessions_row_after(&[start.clone(), end.clone()]);
    let reversed = sessions_row_after(&[end, start]);
    assert_eq!(
        in_order,
        [
            "sess-1",
            "w-1",
            "d-1",
            "2024-05-01 12:00:00+00",
            "2024-05-01 12:30:00+00",
            "logout",
            "1800000",
            "ended",
            "st-1",
            "en-1"
        ]
    );
    assert_eq!(reversed, in_order);
}

#[test]
fn redelivered_session_events_leave_the_row_unchanged() {
    let (start, end) = session_events();
    let once = sessions_row_after(&[start.clone(), end.clone()]);
    let redelivered = sessions_row_after(&[start.clone(), end.clone(), start, end]);
    assert_eq!(redelivered, once);
}

#[test]
fn start_and_end_in_one_batch_give_the_same_row() {
    let (start, end) = session_events();
    let expected = sessions_row_after(&[start.clone(), end.clone()]);
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    publish_event(&mut r, &stream.name, end);
    publish_event(&mut r, &stream.name, start);
    let running = Running::start(settings(&db, &stream));
    running.wait_processed(2);
    assert_eq!(session_row(&db), expected);
}

#[test]
fn a_malformed_entry_is_dead_lettered_with_its_reason_and_the_rest_commit() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    publish_event(&mut r, &stream.name, json!({"id": "good-1", "type": "t"}));
    let bad_id = publish(&mut r, &stream.name, &[("event", "{not json"), ("source", "test")]);
    publish_event(&mut r, &stream.name, json!({"id": "good-2", "type": "t"}));
    let running = Running::start(settings(&db, &stream));
    running.wait_processed(3);

    assert_eq!(db.count("SELECT count(*) FROM events WHERE id IN ('good-1', 'good-2')"), 2);
    assert_eq!(db.count("SELECT count(*) FROM events"), 2);
    let dead = entries(&mut r, &stream.dlq());
    assert_eq!(dead.len(), 1, "{dead:?}");
    let fields = &dead[0].1;
    assert_eq!(fields["event"], "{not json");
    assert_eq!(fields["source"], "test");
    assert_eq!(fields["dlq_reason"], "invalid json");
    assert!(fields["dlq_error"].contains("invalid JSON in field 'event'"), "{fields:?}");
    assert_eq!(fields["dlq_original_id"], bad_id);
    assert_eq!(fields["dlq_stream"], stream.name);
    assert_eq!(fields["dlq_group"], GROUP);
    assert_eq!(pending(&mut r, &stream.name, GROUP), 0);
    let done = running.stop();
    assert_eq!((done.dead_lettered, done.inserted, done.acknowledged), (1, 2, 3));
}

#[test]
fn a_row_postgres_rejects_is_dead_lettered_and_its_neighbours_commit() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    for i in 0..5 {
        publish_event(&mut r, &stream.name, json!({"id": format!("ok-{i}"), "type": "t"}));
    }
    // Valid JSON that jsonb refuses: a NUL escape.
    publish(&mut r, &stream.name, &[("event", r#"{"id":"nul","type":"t","data":{"s":"a\u0000b"}}"#)]);
    for i in 5..10 {
        publish_event(&mut r, &stream.name, json!({"id": format!("ok-{i}"), "type": "t"}));
    }
    let running = Running::start(settings(&db, &stream));
    running.wait_processed(11);
    assert_eq!(db.count("SELECT count(*) FROM events WHERE id LIKE 'ok-%'"), 10);
    let dead = entries(&mut r, &stream.dlq());
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1["dlq_reason"], "rejected by postgres");
    assert!(dead[0].1["dlq_error"].contains("SQLSTATE 22"), "{:?}", dead[0].1);
    assert_eq!(pending(&mut r, &stream.name, GROUP), 0);
}

#[test]
fn a_handler_error_keeps_the_event_and_is_counted() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    // session.start without a session id: the handler refuses it.
    publish_event(&mut r, &stream.name, json!({"id": "no-session", "type": "session.start"}));
    publish_event(
        &mut r,
        &stream.name,
        json!({"id": "st-ok", "type": "session.start", "session_id": "s-ok"}),
    );
    let running = Running::start(settings(&db, &stream));
    running.wait_processed(2);
    assert_eq!(db.count("SELECT count(*) FROM events"), 2);
    assert_eq!(db.count("SELECT count(*) FROM sessions WHERE session_id = 's-ok'"), 1);
    assert_eq!(pending(&mut r, &stream.name, GROUP), 0);
    assert_eq!(entries(&mut r, &stream.dlq()).len(), 0);
    let done = running.stop();
    assert_eq!(done.handler_errors, 1);
}

/// A handler that writes, then fails: its write must be rolled back, the event row kept.
struct WritesThenFails;

impl Handler for WritesThenFails {
    fn handle(
        &self,
        tx: &mut postgres::Transaction<'_>,
        _: &mut streamsink::sink::StatementCache,
        events: &[&streamsink::event::Event],
    ) -> Result<(), HandlerError> {
        for e in events {
            tx.execute("INSERT INTO side_effects (event_id) VALUES ($1)", &[&e.id])?;
        }
        Err(HandlerError::Invalid { event_id: events[0].id.clone(), problem: "always fails".into() })
    }
}

#[test]
fn a_failing_handler_is_rolled_back_to_its_savepoint() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    db.client().batch_execute("CREATE TABLE side_effects (event_id text)").unwrap();
    let mut registry = Registry::builtin();
    registry.register("fails", Arc::new(WritesThenFails));
    let mut r = redis();
    publish_event(&mut r, &stream.name, json!({"id": "f-1", "type": "fails"}));
    publish_event(&mut r, &stream.name, json!({"id": "s-1", "type": "session.start", "session_id": "x"}));
    let running = Running::start_with(settings(&db, &stream), registry);
    running.wait_processed(2);
    assert_eq!(db.count("SELECT count(*) FROM events"), 2);
    assert_eq!(db.count("SELECT count(*) FROM side_effects"), 0);
    assert_eq!(db.count("SELECT count(*) FROM sessions"), 1);
    assert_eq!(pending(&mut r, &stream.name, GROUP), 0);
    assert_eq!(running.stop().handler_errors, 1);
}

#[test]
fn one_reader_reads_several_streams() {
    let db = TestDb::create();
    let (a, b) = (TestStream::new(), TestStream::new());
    let mut config = settings(&db, &a);
    config.group.streams.streams = StreamList(vec![a.name.clone(), b.name.clone()]);
    let mut r = redis();
    publish_many(&mut r, &a.name, 3, "a");
    publish_many(&mut r, &b.name, 4, "b");
    let running = Running::start(config);
    running.wait_processed(7);
    assert_eq!(db.count(&format!("SELECT count(*) FROM events WHERE stream = '{}'", a.name)), 3);
    assert_eq!(db.count(&format!("SELECT count(*) FROM events WHERE stream = '{}'", b.name)), 4);
    assert_eq!(pending(&mut r, &a.name, GROUP) + pending(&mut r, &b.name, GROUP), 0);
}

#[test]
fn ensuring_the_group_twice_is_not_an_error() {
    let stream = TestStream::new();
    let mut r = broker_at(&redis_url());
    assert!(streamsink::broker::group::ensure_group(&mut r, &stream.name, GROUP, "0").unwrap());
    assert!(!streamsink::broker::group::ensure_group(&mut r, &stream.name, GROUP, "0").unwrap());
}

#[test]
fn two_instances_migrating_at_once_both_succeed() {
    let db = TestDb::create();
    // Both connect first, then start migrating together: neither can finish before the other
    // has begun.
    let together = Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let url = db.url.clone();
            let together = Arc::clone(&together);
            std::thread::spawn(move || {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                together.wait();
                streamsink::sink::migrate::migrate(&mut c).map_err(|e| e.to_string())
            })
        })
        .collect();
    let mut applied: Vec<Vec<i32>> = handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
    applied.sort();
    assert_eq!(applied, vec![vec![], vec![1]], "exactly one instance applies the migration");
    assert_eq!(db.count("SELECT count(*) FROM streamsink_migrations"), 1);
}

#[test]
fn session_ids_merge_the_same_way_in_either_order() {
    // The start's workspace wins; the end fills in the device the start lacked.
    let start = json!({"id": "st-2", "type": "session.start", "session_id": "sess-2", "workspace_id": "w-start",
        "timestamp": "2024-05-01T12:00:00Z"});
    let end = json!({"id": "en-2", "type": "session.end", "session_id": "sess-2", "workspace_id": "w-end",
        "device_id": "d-end", "timestamp": "2024-05-01T12:00:01.5Z"});
    let in_order = sessions_row_after(&[start.clone(), end.clone()]);
    assert_eq!(in_order[1..3], ["w-start", "d-end"]);
    assert_eq!(in_order[6], "1500");
    assert_eq!(sessions_row_after(&[end, start]), in_order);
}

/// A handler that records every event it is given, so a test can count the calls per event.
struct Records;

impl Handler for Records {
    fn handle(
        &self,
        tx: &mut postgres::Transaction<'_>,
        _: &mut streamsink::sink::StatementCache,
        events: &[&streamsink::event::Event],
    ) -> Result<(), HandlerError> {
        for e in events {
            tx.execute("INSERT INTO seen (event_id) VALUES ($1)", &[&e.id])?;
        }
        Ok(())
    }
}

#[test]
fn a_batch_mixing_stored_repeated_and_new_ids_writes_and_handles_each_new_event_once() {
    // The batch's COPY meets stored ids: it is redone with its ids looked up and only the new
    // ones copied; with one worker (one connection), the batch after it is looked up first.
    let (db, stream) = (TestDb::create(), TestStream::new());
    let settings = || {
        let mut config = settings(&db, &stream);
        config.worker.workers = 1;
        config
    };
    db.client().batch_execute("CREATE TABLE seen (event_id text)").unwrap();
    let registry = || {
        let mut registry = Registry::builtin();
        registry.register("counted", Arc::new(Records));
        registry
    };
    let event = |id: &str, n: i32| json!({"id": id, "type": "counted", "timestamp": "2026-01-01T00:00:00Z", "data": {"n": n}});
    let mut r = redis();
    let running = Running::start_with(settings(), registry());
    for id in ["old-1", "old-2", "old-3"] {
        publish_event(&mut r, &stream.name, event(id, 1));
    }
    running.wait_processed(3);
    running.stop();

    // Published while no worker runs, so they are read as one batch.
    for (id, n) in [("old-2", 1), ("new-1", 1), ("new-1", 1), ("old-3", 2), ("new-2", 1)] {
        publish_event(&mut r, &stream.name, event(id, n));
    }
    let running = Running::start_with(settings(), registry());
    running.wait_processed(5);
    publish_event(&mut r, &stream.name, event("new-3", 1));
    running.wait_processed(6);

    assert_eq!(db.count("SELECT count(*) FROM events"), 6);
    assert_eq!(db.count("SELECT count(*) FROM seen"), 6, "each new event handled once");
    assert_eq!(db.count("SELECT count(DISTINCT event_id) FROM seen"), 6);
    let stored: serde_json::Value =
        db.client().query_one("SELECT data FROM events WHERE id = 'old-3'", &[]).unwrap().get(0);
    assert_eq!(stored, json!({"n": 1}), "a stored event is never overwritten");
    let dead = entries(&mut r, &stream.dlq());
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1["dlq_reason"], "id reused with different content");
    assert!(dead[0].1["event"].contains("\"old-3\""), "the reused one is dead-lettered: {dead:?}");
    assert_eq!(pending(&mut r, &stream.name, GROUP), 0);
    let done = running.stop();
    assert_eq!((done.inserted, done.duplicates, done.reused_ids), (3, 2, 1));
}

#[test]
fn an_id_another_writer_stores_while_the_batch_is_written_is_a_duplicate_and_not_handled() {
    // Another session inserts `b-racing` and holds it uncommitted. The batch's COPY fails on the
    // stored `a-stored` (it sorts first); its lookup cannot see `b-racing`, so the COPY of the
    // new ids waits on that row; the other session commits, and that COPY fails too. The batch
    // is then written with INSERT … ON CONFLICT (without that branch, the unique violation would
    // split the batch into halves: the same outcome, more transactions). Either way `b-racing`
    // is a duplicate and its handler does not run.
    let (db, stream) = (TestDb::create(), TestStream::new());
    let start = |id: &str, session: &str| {
        json!({"id": id, "type": "session.start", "session_id": session,
               "timestamp": "2026-01-01T00:00:00Z", "data": {}})
    };
    let mut r = redis();
    let running = Running::start(settings(&db, &stream));
    publish_event(&mut r, &stream.name, start("a-stored", "s-stored"));
    running.wait_processed(1);
    running.stop();

    let mut other = db.client();
    let mut racing = other.transaction().unwrap();
    racing
        .execute(
            "INSERT INTO events (id, type, occurred_at, session_id, data, stream, stream_entry_id)
             VALUES ('b-racing', 'session.start', '2026-01-01T00:00:00Z', 's-racing', '{}', 'elsewhere', '0-1')",
            &[],
        )
        .unwrap();
    for ev in [start("a-stored", "s-stored"), start("b-racing", "s-racing"), start("c-new", "s-new")] {
        publish_event(&mut r, &stream.name, ev);
    }
    let running = Running::start(settings(&db, &stream));
    let mut watcher = db.client();
    wait_until(Duration::from_secs(20), "the batch's COPY waiting on the uncommitted row", || {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .unwrap()
            .get(0);
        (waiting > 0).then_some(())
    });
    racing.commit().unwrap();
    running.wait_processed(3);

    assert_eq!(db.count("SELECT count(*) FROM events"), 3);
    assert_eq!(db.count("SELECT count(*) FROM events WHERE id = 'b-racing' AND stream = 'elsewhere'"), 1);
    assert_eq!(db.count("SELECT count(*) FROM sessions WHERE session_id = 's-new'"), 1);
    assert_eq!(
        db.count("SELECT count(*) FROM sessions WHERE session_id = 's-racing'"),
        0,
        "the other writer's event is not handled by this batch"
    );
    assert!(entries(&mut r, &stream.dlq()).is_empty());
    assert_eq!(pending(&mut r, &stream.name, GROUP), 0);
    let done = running.stop();
    assert_eq!((done.inserted, done.duplicates, done.reused_ids), (1, 2, 0));
}

//! The delivery budget is spent only by real faults, and memory is bounded in bytes: a panicking
//! handler costs only its own event, an entry over its budget gets one lone try, a refused
//! dead letter is retried until Redis takes it, an id reused for other content is
//! dead-lettered, and large entries are held within `STREAMSINK_MAX_INFLIGHT`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;
use streamsink::{Handler, HandlerError, Registry};

const GROUP: &str = "event-processors";

/// Panics on one event id; remembers the largest set of events it was handed at once.
struct PanicsOn {
    id: &'static str,
    largest_call: AtomicUsize,
}

impl Handler for PanicsOn {
    fn handle(
        &self,
        _: &mut postgres::Transaction<'_>,
        _: &mut streamsink::sink::StatementCache,
        events: &[&streamsink::event::Event],
    ) -> Result<(), HandlerError> {
        self.largest_call.fetch_max(events.len(), Ordering::SeqCst);
        if events.iter().any(|e| e.id == self.id) {
            panic!("cannot handle {}", self.id);
        }
        Ok(())
    }
}

/// `streamsink run` as a process on `stream` into `db`, with `extra` settings.
fn run_worker(db: &TestDb, stream: &TestStream, extra: &[(&str, &str)]) -> Process {
    let mut env: Vec<(String, String)> = vec![
        ("REDIS_URL".into(), redis_url()),
        ("DATABASE_URL".into(), db.url.clone()),
        ("STREAMSINK_STREAMS".into(), stream.name.clone()),
        ("STREAMSINK_BLOCK".into(), "200ms".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Process::spawn_owned(&["run"], &env)
}

/// Publishes `events` in one MULTI/EXEC, so that a blocked reader receives them in one read.
fn publish_at_once(r: &mut redis::Connection, stream: &str, events: &[serde_json::Value]) {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for ev in events {
        pipe.cmd("XADD").arg(stream).arg("*").arg("event").arg(ev.to_string()).ignore();
    }
    let () = pipe.query(r).expect("MULTI XADD");
}

#[test]
fn a_handler_panicking_on_one_event_of_a_batch_of_1000_dead_letters_only_that_entry() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    let handler = Arc::new(PanicsOn { id: "boom-500", largest_call: AtomicUsize::new(0) });
    let mut registry = Registry::builtin();
    registry.register("boom", Arc::clone(&handler) as Arc<dyn Handler>);
    // Warm up: reads grow to full batches on a backlog.
    publish_many(&mut r, &stream.name, 2000, "warm");
    let running = Running::start_with(settings(&db, &stream), registry);
    running.wait_processed(2000);

    let batch: Vec<_> = (0..1000).map(|i| json!({"id": format!("boom-{i}"), "type": "boom"})).collect();
    publish_at_once(&mut r, &stream.name, &batch);
    running.wait_processed(3000);

    assert_eq!(handler.largest_call.load(Ordering::SeqCst), 1000, "the 1000 events came as one batch");
    let dead = entries(&mut r, &stream.dlq());
    assert_eq!(dead.len(), 1, "{dead:?}");
    let f = &dead[0].1;
    assert_eq!(f["dlq_reason"], "handler panicked");
    assert!(f["dlq_error"].contains("cannot handle boom-500"), "{f:?}");
    assert!(f["event"].contains("boom-500"), "{f:?}");
    assert_eq!(db.count("SELECT count(*) FROM events WHERE type = 'boom'"), 999);
    assert_eq!(db.count("SELECT count(*) FROM events WHERE id = 'boom-500'"), 0);
    assert_eq!(pending(&mut r, &stream.name, GROUP), 0);
    let done = running.stop();
    assert_eq!(done.dead_lettered, 1);
}

#[test]
fn an_id_reused_with_different_content_is_dead_lettered_and_a_true_duplicate_is_not() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    let running = Running::start(settings(&db, &stream));
    let original = json!({"id": "order-1", "type": "order.placed", "timestamp": "2026-01-01T00:00:00Z",
                          "data": {"total": 10, "items": [1, 2]}});
    publish_event(&mut r, &stream.name, original);
    running.wait_processed(1);
    // The same event again, keys reordered and respaced: a true duplicate.
    publish(
        &mut r,
        &stream.name,
        &[(
            "event",
            r#"{"type":"order.placed","data":{"items":[1,2],"total":10},"id":"order-1","timestamp":"2026-01-01T00:00:00Z"}"#,
        )],
    );
    // Without a timestamp its time comes from the entry id, which is not content: still a duplicate.
    publish_event(
        &mut r,
        &stream.name,
        json!({"id": "order-1", "type": "order.placed",
                                                "data": {"total": 10, "items": [1, 2]}}),
    );
    running.wait_processed(3);
    assert!(entries(&mut r, &stream.dlq()).is_empty(), "a true duplicate is acknowledged silently");

    let reused = [
        json!({"id": "order-1", "type": "order.placed", "timestamp": "2026-01-01T00:00:00Z", "data": {"total": 99}}),
        json!({"id": "order-1", "type": "order.cancelled", "timestamp": "2026-01-01T00:00:00Z",
               "data": {"total": 10, "items": [1, 2]}}),
        json!({"id": "order-1", "type": "order.placed", "timestamp": "2026-01-02T00:00:00Z",
               "data": {"total": 10, "items": [1, 2]}}),
    ];
    for ev in &reused {
        publish_event(&mut r, &stream.name, ev.clone());
    }
    running.wait_processed(6);
    let dead = entries(&mut r, &stream.dlq());
    assert_eq!(dead.len(), 3, "{dead:?}");
    for (_, f) in &dead {
        assert_eq!(f["dlq_reason"], "id reused with different content", "{f:?}");
    }
    let stored: serde_json::Value =
        db.client().query_one("SELECT data FROM events WHERE id = 'order-1'", &[]).unwrap().get(0);
    assert_eq!(stored, json!({"total": 10, "items": [1, 2]}), "the first event stays as it was");
    assert_eq!(pending(&mut r, &stream.name, GROUP), 0);
    let done = running.stop();
    assert_eq!((done.inserted, done.duplicates, done.reused_ids, done.dead_lettered), (1, 2, 3, 3));
}

/// Lets consumer `name` read every entry (and never acknowledge), then `extra` more consumers
/// claim the entry `id` in turn: its delivery count is then 1 + `extra`.
fn deliver(r: &mut redis::Connection, stream: &str, id: &str, extra: usize) {
    for n in 0..extra {
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(stream)
            .arg(GROUP)
            .arg(format!("crashed-{n}"))
            .arg(0)
            .arg(id)
            .query(r)
            .expect("XCLAIM");
    }
}

#[test]
fn an_entry_over_its_budget_is_tried_once_alone_before_it_is_dead_lettered() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    // Already stored (as if committed by a consumer that crashed before acknowledging).
    let first = Running::start(settings(&db, &stream));
    publish_event(&mut r, &stream.name, json!({"id": "committed", "type": "t", "timestamp": 1_700_000_000}));
    first.wait_processed(1);
    first.stop();

    let committed = publish_event(
        &mut r,
        &stream.name,
        json!({"id": "committed", "type": "t", "timestamp": 1_700_000_000}),
    );
    let lone = publish_event(&mut r, &stream.name, json!({"id": "lone", "type": "t"}));
    let spent = publish_event(&mut r, &stream.name, json!({"id": "spent", "type": "t"}));
    let spent_committed = publish_event(
        &mut r,
        &stream.name,
        json!({"id": "committed", "type": "t", "timestamp": 1_700_000_000}),
    );
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("crashed")
        .arg("STREAMS")
        .arg(&stream.name)
        .arg(">")
        .query(&mut r)
        .unwrap();
    // max_deliveries 3: the reclaim makes `committed` and `lone` delivery 4 (over by one:
    // tried alone), `spent` and `spent_committed` delivery 5 (their lone try did not finish
    // either; the second's event is stored, so it is a duplicate, not a dead letter).
    deliver(&mut r, &stream.name, &committed, 2);
    deliver(&mut r, &stream.name, &lone, 2);
    deliver(&mut r, &stream.name, &spent, 3);
    deliver(&mut r, &stream.name, &spent_committed, 3);

    let mut config = settings(&db, &stream);
    config.worker.claim_interval = Duration::from_millis(100);
    config.worker.claim_min_idle = Duration::from_millis(200);
    let running = Running::start(config);
    running.wait_processed(4);

    let dead = entries(&mut r, &stream.dlq());
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1["dlq_original_id"], spent);
    assert_eq!(dead[0].1["dlq_reason"], "max deliveries exceeded");
    assert!(dead[0].1["dlq_error"].contains("delivered 5 times"), "{:?}", dead[0].1);
    assert_eq!(db.count("SELECT count(*) FROM events WHERE id = 'lone'"), 1, "the lone try wrote it");
    assert_eq!(db.count("SELECT count(*) FROM events WHERE id = 'committed'"), 1);
    assert_eq!(db.count("SELECT count(*) FROM events WHERE id = 'spent'"), 0);
    assert_eq!(pending(&mut r, &stream.name, GROUP), 0);
    let done = running.stop();
    assert_eq!((done.inserted, done.duplicates, done.dead_lettered), (1, 2, 1));
}

#[test]
fn a_refused_dead_letter_keeps_its_batch_pending_until_redis_takes_it() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    // The dead-letter key holds a string: XADD to it fails with WRONGTYPE.
    let () = redis::cmd("SET").arg(stream.dlq()).arg("not a stream").query(&mut r).unwrap();
    publish(&mut r, &stream.name, &[("event", "{not json")]);
    publish_event(&mut r, &stream.name, json!({"id": "good", "type": "t"}));
    let mut p = run_worker(&db, &stream, &[("RUST_LOG", "info,streamsink::ingest::ack=debug")]);
    p.wait_for_line("WRONGTYPE", Duration::from_secs(20));
    // Several retries later, still one error line, and both entries still pending.
    wait_until(Duration::from_secs(20), "three retries", || {
        (p.output().iter().filter(|l| l.contains("redis still refuses")).count() >= 3).then_some(())
    });
    let errors: Vec<String> = p.output().into_iter().filter(|l| l.contains("WRONGTYPE")).collect();
    assert_eq!(errors.iter().filter(|l| l.contains("ERROR")).count(), 1, "{errors:?}");
    assert!(errors[0].contains("refused to dead-letter and acknowledge 2 entries"), "{errors:?}");
    assert_eq!(pending(&mut r, &stream.name, GROUP), 2, "nothing acknowledged without its dead letter");
    assert_eq!(db.count("SELECT count(*) FROM events WHERE id = 'good'"), 1, "committed meanwhile");

    let () = redis::cmd("DEL").arg(stream.dlq()).query(&mut r).unwrap();
    wait_until(Duration::from_secs(20), "the batch to be acknowledged", || {
        (pending(&mut r, &stream.name, GROUP) == 0).then_some(())
    });
    let dead = entries(&mut r, &stream.dlq());
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1["dlq_reason"], "invalid json");
    p.wait_for_line("redis accepted to dead-letter and acknowledge", Duration::from_secs(5));
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).0, Some(0));
}

/// Peak resident memory of `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM line");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmHWM value");
    kib * 1024
}

/// A JSON envelope of about `bytes` bytes, its payload varied so nothing compresses it away.
fn large_event(id: &str, bytes: usize) -> String {
    let payload: String = (0..bytes).map(|i| char::from(b'a' + ((i * 7 + i / 13) % 26) as u8)).collect();
    json!({"id": id, "type": "blob", "data": {"payload": payload}}).to_string()
}

#[test]
fn large_entries_are_held_within_the_byte_budget_and_one_larger_than_it_still_lands() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    let n = 100;
    for i in 0..n {
        publish(&mut r, &stream.name, &[("event", &large_event(&format!("big-{i}"), 1 << 20))]);
    }
    // Larger than the whole budget: read and written alone.
    publish(&mut r, &stream.name, &[("event", &large_event("huge", 6 << 20))]);
    let p = run_worker(&db, &stream, &[("STREAMSINK_MAX_INFLIGHT", "4MiB")]);
    wait_until(Duration::from_secs(120), "every entry acknowledged", || {
        let drained = db.count_or_zero("SELECT count(*) FROM events") == n + 1
            && pending(&mut r, &stream.name, GROUP) == 0;
        drained.then_some(())
    });
    let peak = peak_rss(p.child.id());
    // 100 MiB of entries and one of 6 MiB went through; held at once: one 1 MiB entry (the
    // budget counts its three copies), or the huge one alone. Without the budget the peak is
    // about 360 MiB; with it, measured about 60 MiB (the process's baseline is about 20 MiB).
    assert!(peak < 100 << 20, "peak RSS {} MiB", peak >> 20);
    assert!(entries(&mut r, &stream.dlq()).is_empty());
    assert_eq!(db.count("SELECT count(*) FROM events WHERE id = 'huge'"), 1);
}

#[test]
fn a_statement_refused_to_a_handler_acknowledges_nothing_until_it_is_fixed() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    migrate_schema(&db.url);
    // The sessions projection is refused as if its permissions were revoked (the test's user
    // is a superuser, which REVOKE does not restrict).
    db.client()
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'permission denied for table sessions' USING ERRCODE = '42501'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON sessions FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .unwrap();
    publish_event(
        &mut r,
        &stream.name,
        json!({"id": "s-start", "type": "session.start", "session_id": "s1"}),
    );
    let mut p = run_worker(&db, &stream, &[]);
    let line = p.wait_for_line("the schema or permissions need attention", Duration::from_secs(20));
    assert!(line.contains("42501") && line.contains("ERROR"), "{line}");
    assert_eq!(pending(&mut r, &stream.name, GROUP), 1, "nothing acknowledged while refused");
    assert_eq!(db.count("SELECT count(*) FROM events"), 0, "the event row waits for its handler");

    db.client().batch_execute("DROP TRIGGER refuse ON sessions").unwrap();
    wait_until(Duration::from_secs(20), "the event to be acknowledged", || {
        (pending(&mut r, &stream.name, GROUP) == 0).then_some(())
    });
    assert_eq!(db.count("SELECT count(*) FROM sessions WHERE session_id = 's1'"), 1);
    p.wait_for_line("postgres accepts the writes again", Duration::from_secs(5));
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).0, Some(0));
}

#[test]
fn a_dead_letter_with_more_fields_than_a_script_can_take_is_written_whole() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();
    // 5000 fields and no type: malformed, and too many for one Lua unpack.
    let fields: Vec<(String, String)> = (0..5000).map(|i| (format!("f{i}"), format!("v{i}"))).collect();
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let id = publish(&mut r, &stream.name, &pairs);
    publish_event(&mut r, &stream.name, json!({"id": "neighbour", "type": "t"}));
    let running = Running::start(settings(&db, &stream));
    running.wait_processed(2);
    let dead = entries(&mut r, &stream.dlq());
    assert_eq!(dead.len(), 1);
    let f = &dead[0].1;
    assert_eq!(f["dlq_original_id"], id);
    assert_eq!(f["dlq_reason"], "missing type");
    assert_eq!((f["f0"].as_str(), f["f4999"].as_str()), ("v0", "v4999"));
    assert_eq!(f.len(), 5000 + 8, "every original field and the eight dlq_ fields");
    assert_eq!(pending(&mut r, &stream.name, GROUP), 0);
    assert_eq!(db.count("SELECT count(*) FROM events WHERE id = 'neighbour'"), 1);
}

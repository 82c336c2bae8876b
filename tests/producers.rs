//! Real producers' entries, written exactly as they write them, become the rows their own readers
//! would make of them. fuel-code's server publishes flat fields through `serializeEvent()`:
//!
//! ```js
//! function serializeEvent(event) { return {
//!     id: event.id, type: event.type, timestamp: event.timestamp,
//!     device_id: event.device_id, workspace_id: event.workspace_id,
//!     session_id: event.session_id ?? "",
//!     data: JSON.stringify(event.data),
//!     blob_refs: JSON.stringify(event.blob_refs),
//!     ingested_at: event.ingested_at ?? "",
//! }; }
//! ```

mod common;

use common::*;
use serde_json::{Value, json};

const GROUP: &str = "event-processors";

/// A fuel-code event as its server holds it before publishing; `data` and `blob_refs` are
/// given as the text `JSON.stringify` makes of them (compact, keys in insertion order).
struct FuelCodeEvent<'a> {
    id: &'a str,
    event_type: &'a str,
    timestamp: &'a str,
    device_id: &'a str,
    workspace_id: &'a str,
    session_id: Option<&'a str>,
    data: &'a str,
    blob_refs: &'a str,
    ingested_at: Option<&'a str>,
}

/// fuel-code's `serializeEvent()`, field for field and in its order: every value a string, a
/// null `session_id`/`ingested_at` as `""`.
fn serialize_event<'a>(event: &FuelCodeEvent<'a>) -> [(&'static str, &'a str); 9] {
    [
        ("id", event.id),
        ("type", event.event_type),
        ("timestamp", event.timestamp),
        ("device_id", event.device_id),
        ("workspace_id", event.workspace_id),
        ("session_id", event.session_id.unwrap_or("")),
        ("data", event.data),
        ("blob_refs", event.blob_refs),
        ("ingested_at", event.ingested_at.unwrap_or("")),
    ]
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("test JSON")
}

#[test]
fn fuel_code_flat_entries_become_rows_as_its_reader_reads_them() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let mut r = redis();

    let commit = FuelCodeEvent {
        id: "01JN8Z3Q7R2W4X6Y8A0B1C2D3E",
        event_type: "git.commit",
        timestamp: "2026-02-27T10:15:30.123Z",
        device_id: "dev-7f3a",
        workspace_id: "github.com/user/repo",
        session_id: None,
        data: concat!(
            r#"{"hash":"9f2c1e7b4a0d3c5e8f1a2b3c4d5e6f7a8b9c0d1e","#,
            r#""message":"Fix the \"flat\" parser\n\nEmpty strings are null.","#,
            r#""author_name":"Ada Lovelace","author_email":"ada@example.com","branch":"main","#,
            r#""files_changed":2,"insertions":41,"deletions":7,"#,
            r#""file_list":[{"path":"src/event/flat.rs","status":"modified"},"#,
            r#"{"path":"tests/producers.rs","status":"added"}]}"#
        ),
        blob_refs: r#"[{"key":"blobs/9f2c1e7.diff","content_type":"text/x-diff","size_bytes":1834}]"#,
        ingested_at: None,
    };
    let start = FuelCodeEvent {
        id: "01JN8Z3Q7R2W4X6Y8A0B1C2D3F",
        event_type: "session.start",
        timestamp: "2026-02-27T10:15:29.001Z",
        device_id: "dev-7f3a",
        workspace_id: "github.com/user/repo",
        session_id: Some("sess-5b0c7e52"),
        data: concat!(
            r#"{"cc_session_id":"5b0c7e52-2f4e-4c8a-9b7d-1e2f3a4b5c6d","cwd":"/home/ada/src/repo","#,
            r#""git_branch":"main","git_remote":"git@github.com:user/repo.git","cc_version":"1.0.44","#,
            r#""model":null,"source":"startup","#,
            r#""transcript_path":"/home/ada/.claude/projects/repo/5b0c7e52.jsonl"}"#
        ),
        blob_refs: "[]",
        ingested_at: Some("2026-02-27T10:15:29.250Z"),
    };
    publish(&mut r, &stream.name, &serialize_event(&commit));
    publish(&mut r, &stream.name, &serialize_event(&start));

    let running = Running::start(settings(&db, &stream));
    running.wait_processed(2);

    let dead: u64 = redis::cmd("XLEN").arg(stream.dlq()).query(&mut r).expect("XLEN");
    assert_eq!(dead, 0, "dead letters: {:?}", entries(&mut r, &stream.dlq()));
    assert_eq!(pending(&mut r, &stream.name, GROUP), 0);

    let mut c = db.client();
    let mut row = |id: &str, timestamp: &str| {
        c.query_one(
            "SELECT type, session_id, workspace_id, device_id,
                    occurred_at = $2::text::timestamptz, data, jsonb_typeof(data),
                    jsonb_typeof(attributes->'blob_refs'), attributes->'blob_refs',
                    jsonb_typeof(attributes->'ingested_at'), attributes->>'ingested_at'
             FROM events WHERE id = $1",
            &[&id, &timestamp],
        )
        .unwrap_or_else(|e| panic!("the row of {id}: {e}"))
    };

    let git = row(commit.id, commit.timestamp);
    assert_eq!(git.get::<_, String>(0), "git.commit");
    assert_eq!(git.get::<_, Option<String>>(1), None, "session_id \"\" is NULL");
    assert_eq!(git.get::<_, Option<String>>(2).as_deref(), Some("github.com/user/repo"));
    assert_eq!(git.get::<_, Option<String>>(3).as_deref(), Some("dev-7f3a"));
    assert!(git.get::<_, bool>(4), "occurred_at is the event's timestamp");
    assert_eq!(git.get::<_, Value>(5), json(commit.data));
    assert_eq!(git.get::<_, String>(6), "object");
    assert_eq!(git.get::<_, String>(7), "array", "blob_refs is JSON, not text");
    assert_eq!(git.get::<_, Value>(8), json(commit.blob_refs));
    assert_eq!(git.get::<_, Option<String>>(9).as_deref(), Some("null"), "ingested_at \"\" is JSON null");

    let st = row(start.id, start.timestamp);
    assert_eq!(st.get::<_, String>(0), "session.start");
    assert_eq!(st.get::<_, Option<String>>(1).as_deref(), Some("sess-5b0c7e52"));
    assert!(st.get::<_, bool>(4));
    assert_eq!(st.get::<_, Value>(5), json(start.data));
    assert_eq!(st.get::<_, String>(7), "array");
    assert_eq!(st.get::<_, Value>(8), json!([]));
    assert_eq!(st.get::<_, Option<String>>(9).as_deref(), Some("string"));
    assert_eq!(st.get::<_, Option<String>>(10).as_deref(), Some("2026-02-27T10:15:29.250Z"));

    let session = c
        .query_one(
            "SELECT start_event_id, workspace_id, device_id,
                    started_at = '2026-02-27T10:15:29.001Z', lifecycle
             FROM sessions WHERE session_id = 'sess-5b0c7e52'",
            &[],
        )
        .expect("the session.start's row in sessions");
    assert_eq!(session.get::<_, Option<String>>(0).as_deref(), Some(start.id));
    assert_eq!(session.get::<_, Option<String>>(1).as_deref(), Some("github.com/user/repo"));
    assert_eq!(session.get::<_, Option<String>>(2).as_deref(), Some("dev-7f3a"));
    assert!(session.get::<_, bool>(3));
    assert_eq!(session.get::<_, String>(4), "active");
    assert_eq!(db.count("SELECT count(*) FROM sessions"), 1, "the sessionless commit makes no session");

    let done = running.stop();
    assert_eq!((done.inserted, done.acknowledged), (2, 2));
}

//! `streamsink publish`: JSON lines in, envelopes on the stream, one report line per failed
//! line and exit 1 when any failed (the real binary, the real Redis and Postgres).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Runs `streamsink publish ARGS` with `input` on stdin and exactly `env` (nothing inherited);
/// (exit code, stdout, stderr).
fn publish_cmd(args: &[&str], env: &[(&str, &str)], input: &[u8]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamsink"));
    cmd.arg("publish").args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.envs(env.iter().copied()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run streamsink publish");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("streamsink publish output");
    writer.join().expect("stdin writer");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn env(url: &str) -> [(&str, &str); 1] {
    [("REDIS_URL", url)]
}

#[test]
fn good_lines_land_in_order_in_the_event_field_and_bad_ones_are_reported_by_line() {
    let stream = TestStream::new();
    let url = redis_url();
    let input = concat!(
        "{\"id\":\"p-1\",\"type\":\"t\",\"data\":{\"n\":1}}\n",
        "\n",
        "not json at all\n",
        "  {\"id\":\"p-2\",\"type\":\"t\"}  \r\n",
        "[1, 2]\n",
        "{\"id\":\"p-3\",\"type\":\"t\"}", // the last line, without a newline
    );
    let (code, out, err) = publish_cmd(&["--stream", &stream.name], &env(&url), input.as_bytes());
    assert_eq!(code, Some(1), "a line failed: exit 1\n{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "published=3 failed=2", "{out}");
    assert!(lines[1].starts_with("line 3: not JSON"), "{out}");
    assert!(lines[2].starts_with("line 5: not a JSON object"), "{out}");
    assert_eq!(lines.len(), 3, "{out}");

    let entries = entries(&mut redis(), &stream.name);
    let events: Vec<Value> = entries
        .iter()
        .map(|(_, fields)| {
            assert_eq!(fields.len(), 1, "one field per entry: {fields:?}");
            serde_json::from_str(&fields["event"]).expect("the line's JSON")
        })
        .collect();
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap_or("")).collect();
    assert_eq!(ids, ["p-1", "p-2", "p-3"]);
    assert_eq!(events[0]["data"], json!({"n": 1}));
}

#[test]
fn the_event_field_setting_names_the_field() {
    let stream = TestStream::new();
    let url = redis_url();
    let env = [("REDIS_URL", url.as_str()), ("STREAMSINK_EVENT_FIELD", "payload_json")];
    let (code, out, err) = publish_cmd(&["--stream", &stream.name, "-"], &env, b"{\"type\":\"t\"}\n");
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out, "published=1 failed=0\n");
    let entries = entries(&mut redis(), &stream.name);
    assert_eq!(entries[0].1.get("payload_json").map(String::as_str), Some("{\"type\":\"t\"}"));
}

#[test]
fn maxlen_keeps_the_stream_near_its_cap() {
    let stream = TestStream::new();
    let url = redis_url();
    let input: String = (0..5000).map(|i| format!("{{\"id\":\"m-{i}\",\"type\":\"t\"}}\n")).collect();
    let (code, out, err) =
        publish_cmd(&["--stream", &stream.name, "--maxlen", "100", "--json"], &env(&url), input.as_bytes());
    assert_eq!(code, Some(0), "{out}{err}");
    let report: Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!((report["published"].as_u64(), report["failed"].as_u64()), (Some(5000), Some(0)), "{out}");
    let length: u64 = redis::cmd("XLEN").arg(&stream.name).query(&mut redis()).expect("XLEN");
    // `~` trims whole radix-tree nodes (100 entries each by default): at least N stay, and
    // less than N + a node's worth more.
    assert!((100..=300).contains(&length), "length {length} after MAXLEN ~ 100");
    let entries = entries(&mut redis(), &stream.name);
    let last: Value = serde_json::from_str(&entries[entries.len() - 1].1["event"]).expect("JSON");
    assert_eq!(last["id"], "m-4999", "the newest entries are the ones kept");
}

#[test]
fn redis_refusing_each_xadd_fails_every_line_with_its_error_and_exit_1() {
    let key = TestStream::new(); // deleted after, whatever type it holds
    let mut r = redis();
    let _: () = redis::cmd("SET").arg(&key.name).arg("a string, not a stream").query(&mut r).expect("SET");
    let url = redis_url();
    let input = "{\"type\":\"a\"}\n{\"type\":\"b\"}\n\n{\"type\":\"c\"}\n";
    let (code, out, err) = publish_cmd(&["--stream", &key.name], &env(&url), input.as_bytes());
    assert_eq!(code, Some(1), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "published=0 failed=3", "{out}");
    for (line, n) in lines[1..].iter().zip([1, 2, 4]) {
        assert_eq!(
            *line,
            format!("line {n}: WRONGTYPE Operation against a key holding the wrong kind of value")
        );
    }
    let (_, out, _) = publish_cmd(&["--stream", &key.name, "--json"], &env(&url), input.as_bytes());
    let report: Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(
        report["failures"][2],
        json!({"line": 4, "error": "WRONGTYPE Operation against a key holding the wrong kind of value"})
    );
}

#[test]
fn a_file_that_cannot_be_opened_is_one_line_and_exit_1() {
    let url = redis_url();
    let (code, out, err) = publish_cmd(&["--stream", "s", "/nonexistent/events.jsonl"], &env(&url), b"");
    assert_eq!(code, Some(1));
    assert_eq!(out, "");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot read /nonexistent/events.jsonl: No such file"), "{err}");
}

#[test]
fn events_from_a_file_reach_postgres_through_a_running_worker() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let running = Running::start(settings(&db, &stream));
    let file = std::env::temp_dir().join(unique("events") + ".jsonl");
    let lines: String = (0..3)
        .map(|i| format!("{}\n", json!({"id": format!("f-{i}"), "type": "demo.test", "data": {"i": i}})))
        .collect();
    std::fs::write(&file, lines).expect("write the file");
    let url = redis_url();
    let path = file.display().to_string();
    let (code, out, err) = publish_cmd(&["--stream", &stream.name, &path], &env(&url), b"");
    let _ = std::fs::remove_file(&file);
    assert_eq!((code, out.as_str()), (Some(0), "published=3 failed=0\n"), "{err}");
    wait_until(Duration::from_secs(20), "three rows", || {
        (db.count_or_zero("SELECT count(*) FROM events WHERE type = 'demo.test'") == 3).then_some(())
    });
    assert_eq!(db.count("SELECT sum((data->>'i')::bigint)::bigint FROM events"), 3);
    drop(running);
}

#[test]
fn a_one_megabyte_event_goes_through() {
    let stream = TestStream::new();
    let url = redis_url();
    let big = "x".repeat(1 << 20);
    let input = format!(
        "{}\n{}\n",
        json!({"id": "big", "type": "t", "data": {"blob": big}}),
        json!({"type": "small"})
    );
    let (code, out, err) = publish_cmd(&["--stream", &stream.name], &env(&url), input.as_bytes());
    assert_eq!((code, out.as_str()), (Some(0), "published=2 failed=0\n"), "{err}");
    let entries = entries(&mut redis(), &stream.name);
    let first: Value = serde_json::from_str(&entries[0].1["event"]).expect("JSON");
    assert_eq!(first["data"]["blob"].as_str().map(str::len), Some(1 << 20));
}

#[test]
fn redis_unreachable_is_one_line_and_exit_1() {
    let closed = format!("redis://:secret-pw@127.0.0.1:{}", free_port());
    let (code, out, err) = publish_cmd(&["--stream", "s"], &env(&closed), b"{}\n");
    assert_eq!((code, out.as_str(), err.lines().count()), (Some(1), "", 1), "{err}");
    assert!(err.contains("cannot connect to Redis") && !err.contains("secret-pw"), "{err}");
}

/// Deletes the shards `<name>:{0..n-1}` and their dead-letter streams when dropped.
struct Shards<'a>(&'a TestStream, u32);

impl Drop for Shards<'_> {
    fn drop(&mut self) {
        let mut r = redis();
        for k in 0..self.1 {
            let shard = format!("{}:{{{k}}}", self.0.name);
            let _: redis::RedisResult<()> =
                redis::cmd("DEL").arg(&shard).arg(format!("{shard}:dlq")).query(&mut r);
        }
    }
}

#[test]
fn sharded_publishing_puts_each_event_on_the_shard_of_its_id_and_a_worker_reads_them_all() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let _shards = Shards(&stream, 4);
    let url = redis_url();
    // Each id's shard is Python's `zlib.crc32(id.encode()) % 4`; an event without an id goes by
    // its text (`zlib.crc32(b'{"type":"t","n":9}') % 4` is 2).
    let expected = [
        ("order-1", 3),
        ("order-2", 1),
        ("order-3", 3),
        ("order-4", 0),
        ("order-5", 2),
        ("order-6", 0),
        ("order-7", 2),
        ("order-8", 3),
    ];
    let mut input: String =
        expected.iter().map(|(id, _)| format!("{}\n", json!({"id": id, "type": "t"}))).collect();
    input.push_str("{\"type\":\"t\",\"n\":9}\n");
    let (code, out, err) =
        publish_cmd(&["--stream", &stream.name, "--shards", "4"], &env(&url), input.as_bytes());
    assert_eq!((code, out.as_str()), (Some(0), "published=9 failed=0\n"), "{err}");

    let mut r = redis();
    let on_shard = |r: &mut redis::Connection, k: u32| -> Vec<Value> {
        entries(r, &format!("{}:{{{k}}}", stream.name))
            .iter()
            .map(|(_, f)| serde_json::from_str(&f["event"]).expect("an envelope"))
            .collect()
    };
    for (id, k) in expected {
        assert!(on_shard(&mut r, k).iter().any(|e| e["id"] == id), "{id} on shard {k}");
    }
    assert!(on_shard(&mut r, 2).iter().any(|e| e["n"] == 9), "the event without id on shard 2");
    let per_shard: usize = (0..4).map(|k| on_shard(&mut r, k).len()).sum();
    assert_eq!(per_shard, 9, "each event on one shard only");
    assert_eq!(entries(&mut r, &stream.name).len(), 0, "nothing on the unsharded name");

    // Published again: every copy meets its first on the same shard, and is a duplicate there.
    let (code, _, err) =
        publish_cmd(&["--stream", &stream.name, "--shards", "4"], &env(&url), input.as_bytes());
    assert_eq!(code, Some(0), "{err}");
    let all = format!("{}:{{0..3}}", stream.name);
    let running = Running::start(settings_at(&url, &db.url, &all));
    running.wait_processed(18);
    assert_eq!(db.count("SELECT count(*) FROM events"), 10, "8 ids, and the id-less event twice");
    for k in 0..4 {
        assert_eq!(pending(&mut r, &format!("{}:{{{k}}}", stream.name), "event-processors"), 0);
    }
    let done = running.stop();
    assert_eq!((done.inserted, done.duplicates), (10, 8));
}

#[test]
fn a_shard_count_out_of_range_is_refused_at_start() {
    let stream = TestStream::new();
    let url = redis_url();
    let (code, out, err) = publish_cmd(&["--stream", &stream.name, "--shards", "0"], &env(&url), b"{}\n");
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("--shards"), "{err}");
    assert_eq!(entries(&mut redis(), &stream.name).len(), 0);
}

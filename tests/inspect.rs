//! `streamsink status` and `streamsink pending`: what an operator reads of streams, groups,
//! consumers and pending entries (the real binary against the real Redis).

mod common;

use common::*;
use serde_json::Value;

/// Runs `streamsink ARGS` with exactly `env` (nothing inherited); (exit code, stdout, stderr).
fn streamsink(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let url = redis_url();
    run_streamsink(args, &[&[("REDIS_URL", url.as_str())], env].concat())
}

fn xadd_at(r: &mut redis::Connection, stream: &str, id: &str) {
    let _: String = redis::cmd("XADD").arg(stream).arg(id).arg("event").arg("{}").query(r).unwrap();
}

fn create_group(r: &mut redis::Connection, stream: &str, group: &str, at: &str) {
    let _: () = redis::cmd("XGROUP").arg("CREATE").arg(stream).arg(group).arg(at).query(r).unwrap();
}

/// Ten entries a minute apart starting an hour ago (`<ms>-0` ids), two groups: `ours` delivered
/// three to `dead` (never acknowledged) and one to `alive`; `theirs` created at the end.
fn two_groups(stream: &TestStream) -> u64 {
    let mut r = redis();
    let start = jiff::Timestamp::now().as_millisecond() as u64 - 3_600_000;
    for i in 0..10 {
        xadd_at(&mut r, &stream.name, &format!("{}-0", start + i * 60_000));
    }
    create_group(&mut r, &stream.name, "ours", "0");
    create_group(&mut r, &stream.name, "theirs", "$");
    deliver(&mut r, &stream.name, "ours", "dead", 3);
    deliver(&mut r, &stream.name, "ours", "alive", 1);
    start
}

#[test]
fn status_reports_every_group_its_consumers_lag_and_oldest_pending_and_the_dead_letters() {
    let stream = TestStream::new();
    let start = two_groups(&stream);
    let mut r = redis();
    let _: String =
        redis::cmd("XADD").arg(stream.dlq()).arg("*").arg("dlq_reason").arg("x").query(&mut r).unwrap();

    let (code, out, err) = streamsink(&["status", "--stream", &stream.name, "--json"], &[]);
    assert_eq!(code, Some(0), "{err}");
    let all = json_of(&out);
    let s = &all[0];
    assert_eq!(s["stream"], stream.name.as_str());
    assert_eq!(s["length"], 10);
    assert_eq!(s["first_id"], format!("{start}-0"));
    assert_eq!(s["last_id"], format!("{}-0", start + 9 * 60_000));
    assert_eq!(s["dead_letters"]["length"], 1);
    let groups = s["groups"].as_array().unwrap();
    let ours = groups.iter().find(|g| g["group"] == "ours").expect("ours listed");
    let theirs =
        groups.iter().find(|g| g["group"] == "theirs").expect("every group is listed, not only ours");
    assert_eq!(ours["pending"], 4);
    assert_eq!(ours["lag"], 6);
    assert_eq!(ours["oldest_pending_id"], format!("{start}-0"));
    let age = ours["oldest_pending_seconds"].as_f64().unwrap();
    assert!((3_590.0..3_700.0).contains(&age), "the oldest pending entry was added an hour ago: {age}");
    assert_eq!(ours["last_delivered_id"], format!("{}-0", start + 3 * 60_000));
    let dead = ours["consumers"].as_array().unwrap().iter().find(|c| c["consumer"] == "dead").unwrap();
    assert_eq!(dead["pending"], 3);
    assert_eq!(theirs["pending"], 0);
    assert_eq!(theirs["lag"], 0);

    let (code, table, _) = streamsink(&["status", "--stream", &stream.name], &[]);
    assert_eq!(code, Some(0));
    assert!(table.starts_with(&format!("{}: 10 entries, ", stream.name)), "{table}");
    assert!(table.contains(&format!("dead letters ({}): 1, ", stream.dlq())), "{table}");
    let ours_row = table.lines().find(|l| l.starts_with("ours ")).unwrap();
    assert_eq!(ours_row.split_whitespace().collect::<Vec<_>>()[..4], ["ours", "2", "4", "6"], "{table}");
    assert!(ours_row.contains("59m") || ours_row.contains("1h00m"), "oldest pending an hour old: {ours_row}");
    assert!(
        table.lines().any(|l| l.split_whitespace().collect::<Vec<_>>().starts_with(&["ours", "dead", "3"])),
        "{table}"
    );
}

#[test]
fn status_defaults_to_the_configured_streams_and_reports_a_missing_one_as_missing() {
    let (a, missing) = (TestStream::new(), TestStream::new());
    two_groups(&a);
    let list = format!("{},{}", a.name, missing.name);
    let (code, out, err) = streamsink(&["status", "--json"], &[("STREAMSINK_STREAMS", &list)]);
    assert_eq!(code, Some(0), "{err}");
    let all = json_of(&out);
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(all[0]["exists"], true);
    assert_eq!(all[1]["stream"], missing.name.as_str());
    assert_eq!(all[1]["exists"], false);
    let (_, table, _) = streamsink(&["status", "--stream", &missing.name], &[]);
    assert_eq!(table.trim(), format!("{}: no such stream", missing.name));
}

#[test]
fn pending_lists_each_entry_with_its_consumer_deliveries_and_last_error() {
    let stream = TestStream::new();
    let start = two_groups(&stream);
    let mut r = redis();
    // Delivered again (a claim), so its count is 2; and an error recorded as the workers do.
    let first = format!("{start}-0");
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&stream.name)
        .arg("ours")
        .arg("dead")
        .arg(0)
        .arg(&first)
        .query(&mut r)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{}:errors", stream.name))
        .arg(&first)
        .arg("postgres refused: value too long\nfor type")
        .query(&mut r)
        .unwrap();

    let (code, out, err) =
        streamsink(&["pending", "--stream", &stream.name, "--group", "ours", "--json"], &[]);
    assert_eq!(code, Some(0), "{err}");
    let p = json_of(&out);
    assert_eq!(p["pending"], 4);
    assert_eq!(p["more"], false);
    let entries = p["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0]["id"], first.as_str());
    assert_eq!(entries[0]["consumer"], "dead");
    assert_eq!(entries[0]["deliveries"], 2);
    assert_eq!(entries[0]["last_error"], "postgres refused: value too long\nfor type");
    assert_eq!(entries[1]["last_error"], Value::Null);
    assert_eq!(entries[3]["consumer"], "alive");

    let (_, table, _) = streamsink(&["pending", "--stream", &stream.name, "--group", "ours"], &[]);
    let row = table.lines().find(|l| l.starts_with(&first)).unwrap();
    assert!(row.ends_with("postgres refused: value too long for type"), "one line per entry: {row}");
    assert!(
        table.trim_end().ends_with(&format!("4 shown; 4 pending in group ours on {}", stream.name)),
        "{table}"
    );
}

#[test]
fn pending_filters_by_consumer_and_idle_time_and_says_when_the_limit_cut_the_list() {
    let stream = TestStream::new();
    two_groups(&stream);
    let base = ["pending", "--stream", &stream.name, "--group", "ours", "--json"];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (code, out, err) = streamsink(&args, &[]);
        assert_eq!(code, Some(0), "{err}");
        json_of(&out)
    };
    let alive = run(&["--consumer", "alive"]);
    assert_eq!(alive["entries"].as_array().unwrap().len(), 1);
    assert!(run(&["--min-idle", "1h"])["entries"].as_array().unwrap().is_empty(), "delivered just now");
    assert_eq!(run(&["--min-idle", "0s"])["entries"].as_array().unwrap().len(), 4);
    let cut = run(&["--limit", "2"]);
    assert_eq!(cut["entries"].as_array().unwrap().len(), 2);
    assert_eq!(cut["more"], true);
    let (_, table, _) =
        streamsink(&["pending", "--stream", &stream.name, "--group", "ours", "--limit", "2"], &[]);
    assert!(table.contains("2 shown (more match: raise --limit); 4 pending"), "{table}");
}

#[test]
fn a_missing_group_or_an_unreachable_redis_fails_in_one_line_without_the_password() {
    let stream = TestStream::new();
    two_groups(&stream);
    let (code, out, err) = streamsink(&["pending", "--stream", &stream.name, "--group", "nope"], &[]);
    assert_eq!(code, Some(1));
    assert!(out.is_empty());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&format!("group nope does not exist on stream {}", stream.name)), "{err}");

    let (code, _, err) = streamsink(&["pending", "--stream", &stream.name, "--limit", "0"], &[]);
    assert_eq!(code, Some(2), "a limit of 0 is refused at start: {err}");
    assert!(err.contains("--limit"), "{err}");

    let port = free_port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    for args in [&["status"][..], &["pending", "--stream", "s"]] {
        let (code, _, err) = streamsink(args, &[("REDIS_URL", &url)]);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("cannot connect to Redis") && !err.contains("hunter2"), "{err}");
    }
}

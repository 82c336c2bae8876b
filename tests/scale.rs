//! Scaling out: several streamsink processes in one group on one stream split its entries, and
//! every event is written exactly once (the real binary, real Redis and Postgres).

mod common;

use std::time::Duration;

use common::*;

/// The figure `name=` of a `final stats:` line.
fn figure(line: &str, name: &str) -> u64 {
    let value = line.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{name}=")));
    value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {name} in {line}"))
}

#[test]
fn three_processes_split_30000_events_each_written_once_and_nothing_left_pending() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    migrate_schema(&db.url);
    let redis_at = redis_url();
    let processes: Vec<Process> = (1..=3)
        .map(|n| {
            let consumer = format!("scale-{n}");
            let env = [
                ("REDIS_URL", redis_at.as_str()),
                ("DATABASE_URL", db.url.as_str()),
                ("STREAMSINK_STREAMS", stream.name.as_str()),
                ("STREAMSINK_CONSUMER", consumer.as_str()),
                ("STREAMSINK_BATCH", "100"),
                ("STREAMSINK_WORKERS", "2"),
            ];
            Process::spawn(&["run"], &env)
        })
        .collect();
    for p in &processes {
        p.wait_for_line("Event consumer started", Duration::from_secs(30));
    }
    let mut r = redis();
    publish_many(&mut r, &stream.name, 30_000, "scale");
    wait_until(Duration::from_secs(120), "30 000 rows and nothing pending", || {
        let done = db.count("SELECT count(*) FROM events") == 30_000
            && pending(&mut r, &stream.name, "event-processors") == 0;
        done.then_some(())
    });
    let mut inserted = Vec::new();
    for mut p in processes {
        p.signal("TERM");
        let (code, _) = p.wait_exit(Duration::from_secs(15));
        assert_eq!(code, Some(0), "{:?}", p.output());
        let last = p.output().into_iter().rev().find(|l| l.contains("final stats:")).expect("final stats");
        assert_eq!(figure(&last, "duplicates"), 0, "nothing written twice: {last}");
        inserted.push(figure(&last, "inserted"));
    }
    assert_eq!(inserted.iter().sum::<u64>(), 30_000, "each event written once: {inserted:?}");
    assert!(inserted.iter().all(|&n| n > 0), "every process took a share: {inserted:?}");
    assert_eq!(db.count("SELECT count(DISTINCT id) FROM events WHERE id LIKE 'scale%'"), 30_000);
    assert_eq!(pending(&mut r, &stream.name, "event-processors"), 0);
}

//! The operator scripts keep working: a small chaos run and a small benchmark run complete and
//! report their figures (never asserted against a speed).

use std::process::Command;

#[test]
fn a_small_chaos_run_completes_and_reports_nothing_lost() {
    // Both phases: kills and restarts, then 750 events published over 6 s while a lock on
    // `events` comes and goes under a worker with a delivery budget of 1.
    let out = Command::new("bash")
        .arg("scripts/chaos.sh")
        .arg("3000")
        .env("CHAOS_BIN", env!("CARGO_BIN_EXE_streamsink"))
        .env("CHAOS_STALL_SECONDS", "6")
        .env_remove("CHAOS_PHASES")
        .output()
        .expect("run scripts/chaos.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stdout.lines().find(|l| l.starts_with("chaos: published=")).unwrap_or_else(|| {
        panic!("no summary line; chaos.sh exited with {}:\n{stdout}\n{stderr}", out.status)
    });
    let figures: std::collections::HashMap<&str, u64> = summary
        .trim_start_matches("chaos: ")
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, v.parse().unwrap_or_else(|_| panic!("{k}={v} in {summary}"))))
        .collect();
    let expected = [
        ("published", 3000),
        ("rows", 3000),
        ("duplicates", 0),
        ("lost", 0),
        ("dead_lettered", 0),
        ("pending", 0),
    ];
    for (figure, value) in expected {
        assert_eq!(figures.get(figure), Some(&value), "{figure} in {summary}\n{stderr}");
    }
    assert!(figures.contains_key("seconds"), "{summary}");
    // The stall phase really ran, and at least one lock met the worker.
    let stall = stderr
        .lines()
        .find(|l| l.starts_with("chaos: stall phase: ") && l.contains(" lock cycles"))
        .unwrap_or_else(|| panic!("no stall phase report:\n{stderr}"));
    let cycles: u64 = stall["chaos: stall phase: ".len()..].split(' ').next().unwrap().parse().unwrap();
    assert!(cycles >= 1, "{stall}");
    assert!(out.status.success(), "chaos.sh failed:\n{stdout}\n{stderr}");
}

#[test]
fn a_small_benchmark_run_prints_every_figure() {
    let out = Command::new("bash")
        .arg("scripts/bench.sh")
        .args([
            "--events",
            "5000",
            "--naive-events",
            "500",
            "--latency-rate",
            "500",
            "--latency-high-rate",
            "1000",
            "--latency-seconds",
            "1",
            "--processes",
            "2",
        ])
        .env("STREAMSINK_BENCH_BIN", env!("CARGO_BIN_EXE_streamsink-bench"))
        .output()
        .expect("run scripts/bench.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench.sh failed:\n{stdout}\n{stderr}");
    let line = stdout.lines().find(|l| l.starts_with("bench: streamsink=")).expect("the summary line");
    let figures: std::collections::HashMap<&str, &str> =
        line.trim_start_matches("bench: ").split(' ').filter_map(|kv| kv.split_once('=')).collect();
    for key in [
        "streamsink",
        "ceiling",
        "naive",
        "ratio_ceiling",
        "ratio_naive",
        "p50_ms",
        "p99_ms",
        "ceiling_parallel",
        "ratio_parallel",
        "redelivered",
        "p99_high_ms",
        "ceiling_pk",
        "ceiling_parallel_pk",
        "scale_1",
        "scale_2",
    ] {
        let value: f64 =
            figures.get(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{key} in {line}"));
        assert!(value > 0.0, "{key} = {value} in {line}");
    }
    for key in ["rss_mb", "rss_large_mb"] {
        assert!(figures.contains_key(key), "{key} in {line}");
    }
}

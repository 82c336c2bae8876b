//! The metrics and health endpoint (`STREAMSINK_METRICS_ADDR`): what a Prometheus scrape and a
//! load balancer's probe see while events flow, during an outage, and at a bad setting.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use streamsink::{Config, Registry, Supervisor, SupervisorError};

/// A pipeline in this process with its endpoint on a port the OS chose.
struct Served {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    handle: Option<JoinHandle<Result<streamsink::observe::Snapshot, SupervisorError>>>,
}

impl Served {
    fn start(config: Config) -> Served {
        let stop = Arc::new(AtomicBool::new(false));
        let supervisor = Supervisor::start(&config, Registry::builtin(), Arc::clone(&stop)).expect("starts");
        let addr = supervisor.metrics_addr().expect("an endpoint was configured");
        let handle = std::thread::spawn(move || supervisor.wait());
        Served { stop, addr, handle: Some(handle) }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path)
    }

    fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn with_endpoint(config: Config) -> Config {
    let mut config = config;
    config.worker.metrics_addr = Some(streamsink::config::Listen(Some("127.0.0.1:0".parse().unwrap())));
    config
}

/// A plain HTTP/1.0 GET: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("a reply");
    let status = reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn a_scrape_reports_what_the_pipeline_did_while_events_flow() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let served = Served::start(with_endpoint(settings(&db, &stream)));
    let mut r = redis();
    publish_many(&mut r, &stream.name, 500, "m");
    publish(&mut r, &stream.name, &[("event", "{not json")]);
    publish(&mut r, &stream.name, &[("event", "{\"type\":\"t\",\"data\":{}}"), ("x", "1")]); // no id: fine
    publish(&mut r, &stream.name, &[("event", "[]")]);
    let g = "group=\"event-processors\"";
    let s = format!("stream=\"{}\",{g}", stream.name);
    // Counters move with the work; the Redis figures follow within a refresh (1 s here).
    let text = wait_until(Duration::from_secs(30), "the scrape to show the work done", || {
        let text = served.metrics();
        let done = sample(&text, &format!("streamsink_events_inserted_total{{{g}}}")) == Some(501.0)
            && sample(&text, &format!("streamsink_stream_length{{{s}}}")) == Some(503.0)
            && sample(&text, &format!("streamsink_dead_letter_length{{{s}}}")) == Some(2.0)
            && sample(&text, &format!("streamsink_group_pending{{{s}}}")) == Some(0.0);
        done.then_some(text)
    });
    let get = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(get(&format!("streamsink_entries_read_total{{{g}}}")), 503.0);
    assert_eq!(get(&format!("streamsink_entries_acked_total{{{g}}}")), 503.0);
    assert_eq!(get(&format!("streamsink_events_duplicate_total{{{g}}}")), 0.0);
    let invalid = format!("streamsink_entries_dead_lettered_total{{{s},reason=\"invalid json\"}}");
    let not_object = text
        .lines()
        .filter(|l| l.starts_with("streamsink_entries_dead_lettered_total{") && !l.contains("invalid json"))
        .count();
    assert_eq!(get(&invalid), 1.0, "{text}");
    assert_eq!(not_object, 1, "the [] envelope is dead-lettered under its own reason:\n{text}");
    assert_eq!(get(&format!("streamsink_group_lag{{{s}}}")), 0.0);
    assert_eq!(get(&format!("streamsink_oldest_pending_age_seconds{{{s}}}")), 0.0);
    assert_eq!(get("streamsink_batch_size_sum"), 503.0);
    assert!(get("streamsink_batch_size_count") >= 1.0);
    assert!(get("streamsink_batch_write_seconds_count") >= 1.0);
    assert_eq!(get("streamsink_event_latency_seconds_count"), 501.0);
    assert_eq!(get("streamsink_event_latency_seconds_bucket{le=\"+Inf\"}"), 501.0);
    let latency = get("streamsink_event_latency_seconds_sum") / 501.0;
    assert!((0.0..30.0).contains(&latency), "mean latency {latency}s");
    let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
    let last_commit = get("streamsink_last_commit_timestamp_seconds");
    assert!((now - 60.0..=now + 1.0).contains(&last_commit), "last commit {last_commit}, now {now}");
    assert_eq!(get("streamsink_up{service=\"redis\"}"), 1.0);
    assert_eq!(get("streamsink_up{service=\"postgres\"}"), 1.0);
    assert_eq!(get(&format!("streamsink_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))), 1.0);
    assert!(!text.contains("consumer="), "no consumer labels:\n{text}");
    assert_eq!(served.get("/health/live"), (200, "ok\n".into()));
    assert_eq!(served.get("/health/ready"), (200, "ok\n".into()));
    assert_eq!(served.get("/nowhere").0, 404);
    assert_eq!(served.get("/metrics?from=prometheus").0, 200, "a query string is not a path");
}

#[test]
fn a_client_that_never_reads_does_not_stop_the_probes_of_others() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let served = Served::start(with_endpoint(settings(&db, &stream)));
    // Hundreds of pipelined scrapes whose answers are never read: they fill the socket's
    // buffers, and whatever writes them blocks.
    let mut greedy = TcpStream::connect(served.addr).unwrap();
    let burst = "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n".repeat(400);
    let _ = greedy.write_all(burst.as_bytes());
    for _ in 0..3 {
        let started = std::time::Instant::now();
        assert_eq!(served.get("/health/live"), (200, "ok\n".into()));
        assert!(started.elapsed() < Duration::from_secs(2), "a probe waited {:?}", started.elapsed());
    }
    drop(greedy);
}

#[test]
fn probes_are_answered_during_start_up_and_say_so() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let _ = db;
    let port = free_port();
    let nowhere = format!("postgres://postgres:pw@127.0.0.1:{}/x", free_port()); // start-up waits for it
    let url = redis_url();
    let addr = format!("127.0.0.1:{port}");
    let env = [
        ("REDIS_URL", url.as_str()),
        ("DATABASE_URL", nowhere.as_str()),
        ("STREAMSINK_STREAMS", stream.name.as_str()),
        ("STREAMSINK_METRICS_ADDR", addr.as_str()),
    ];
    let mut p = Process::spawn(&["run"], &env);
    p.wait_for_line("postgres not ready", Duration::from_secs(20));
    let addr: SocketAddr = addr.parse().unwrap();
    assert_eq!(http_get(addr, "/health/live"), (200, "ok\n".into()), "start-up retrying is alive");
    let (status, why) = http_get(addr, "/health/ready");
    assert_eq!((status, why.as_str()), (503, "starting: connecting to Redis and Postgres\n"));
    let (status, text) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(text.contains("streamsink_build_info{version="), "{text}");
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).0, Some(0));
}

#[test]
fn an_idle_worker_is_not_ready_while_postgres_is_away() {
    let postgres = PrivatePostgres::start();
    let db = TestDb::create_on(&postgres.admin_url());
    let stream = TestStream::new();
    let served = Served::start(with_endpoint(settings(&db, &stream)));
    wait_until(Duration::from_secs(10), "ready", || (served.get("/health/ready").0 == 200).then_some(()));
    postgres.stop(); // and nothing published: no write will meet the outage
    let why = wait_until(Duration::from_secs(30), "not ready while idle", || {
        let (status, body) = served.get("/health/ready");
        (status == 503).then_some(body)
    });
    assert!(why.starts_with("Postgres did not answer a check for "), "{why}");
    assert_eq!(sample(&served.metrics(), "streamsink_up{service=\"postgres\"}"), Some(0.0));
    postgres.start_again();
    wait_until(Duration::from_secs(30), "ready again", || {
        (served.get("/health/ready").0 == 200).then_some(())
    });
}

#[test]
fn readiness_names_a_postgres_outage_and_returns_with_it_while_liveness_holds() {
    let postgres = PrivatePostgres::start();
    let db = TestDb::create_on(&postgres.admin_url());
    let stream = TestStream::new();
    let served = Served::start(with_endpoint(settings(&db, &stream)));
    wait_until(Duration::from_secs(10), "ready", || (served.get("/health/ready").0 == 200).then_some(()));

    postgres.stop();
    publish_many(&mut redis(), &stream.name, 10, "o");
    // The workers meet the outage (an idle probe may have said so first, in its own words).
    let (status, why) = wait_until(Duration::from_secs(30), "the workers' outage in /health/ready", || {
        let (status, body) = served.get("/health/ready");
        (status == 503 && body.starts_with("Postgres unavailable for ")).then_some((status, body))
    });
    assert_eq!(status, 503);
    assert_eq!(why.lines().count(), 1, "{why}");
    assert_eq!(sample(&served.metrics(), "streamsink_up{service=\"postgres\"}"), Some(0.0));
    // A worker waiting out an outage is alive: a restart would not help.
    assert_eq!(served.get("/health/live").0, 200);

    postgres.start_again();
    wait_until(Duration::from_secs(60), "ready again with the events written", || {
        let inserted =
            sample(&served.metrics(), "streamsink_events_inserted_total{group=\"event-processors\"}");
        (served.get("/health/ready").0 == 200 && inserted == Some(10.0)).then_some(())
    });
    assert_eq!(sample(&served.metrics(), "streamsink_up{service=\"postgres\"}"), Some(1.0));
}

#[test]
fn a_bad_or_taken_metrics_address_stops_the_start_with_one_line() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let url = redis_url();
    let env = |addr: &str| {
        vec![
            ("REDIS_URL", url.clone()),
            ("DATABASE_URL", db.url.clone()),
            ("STREAMSINK_STREAMS", stream.name.clone()),
            ("STREAMSINK_METRICS_ADDR", addr.to_string()),
        ]
    };
    let run = |env: Vec<(&str, String)>| {
        let env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let mut p = Process::spawn_owned(&["run"], &env);
        let (code, _) = p.wait_exit(Duration::from_secs(20));
        (code, p.output())
    };

    let (code, out) = run(env("not an address"));
    assert_eq!(code, Some(2), "{out:?}");
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].contains("STREAMSINK_METRICS_ADDR") && out[0].contains("--metrics-addr"), "{out:?}");

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, out) = run(env(&addr));
    assert_eq!(code, Some(1), "{out:?}");
    let line = out.iter().find(|l| l.contains("cannot listen")).unwrap_or_else(|| panic!("{out:?}"));
    assert!(line.contains(&addr) && line.contains("STREAMSINK_METRICS_ADDR"), "{line}");

    // Empty means off, as an env file's `STREAMSINK_METRICS_ADDR=` line says.
    let config =
        Config::from_flags(["--redis-url", &url, "--database-url", &db.url, "--metrics-addr", ""]).unwrap();
    assert_eq!(config.worker.metrics_addr, Some(streamsink::config::Listen(None)));
}

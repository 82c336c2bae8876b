//! Test harness: real Redis and PostgreSQL, one database and one stream per test, so tests run
//! in parallel; waits are conditions with deadlines, never bare sleeps.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use streamsink::stats::{Counters, Snapshot};
use streamsink::{Config, Pipeline, PipelineError, Purpose, RawSettings, Registry};

/// The shared Redis (scripts/services.sh starts it).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Postgres URL with rights to create databases.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

/// A name unique to this test run: `<prefix>_<ulid>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    )
}

/// Polls `f` until it returns `Some`, panicking with `what` after `deadline`.
pub fn wait_until<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A fresh database, dropped at the end of the test.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn create() -> TestDb {
        let name = unique("ss");
        let admin = admin_database_url();
        let mut client =
            postgres::Client::connect(&admin, postgres::NoTls).expect("connect to admin database");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create test database");
        let config: postgres::Config = admin.parse().expect("admin URL");
        let url = replace_dbname(&admin, config.get_dbname().unwrap_or("postgres"), &name);
        TestDb { name, url }
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to test database")
    }

    /// Runs a query returning one bigint.
    pub fn count(&self, sql: &str) -> i64 {
        self.client().query_one(sql, &[]).expect(sql).get(0)
    }

    /// Like `count`, but 0 while the schema does not exist yet.
    pub fn count_or_zero(&self, sql: &str) -> i64 {
        self.client()
            .query_one(sql, &[])
            .map(|r| r.get(0))
            .unwrap_or(0)
    }
}

fn replace_dbname(url: &str, old: &str, new: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.strip_suffix(&format!("/{old}")).unwrap_or(base);
    match query {
        Some(q) => format!("{base}/{new}?{q}"),
        None => format!("{base}/{new}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&admin_database_url(), postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A stream name unique to one test; the stream and its dead-letter stream are deleted after.
pub struct TestStream {
    pub name: String,
    url: String,
}

impl TestStream {
    pub fn new() -> TestStream {
        TestStream::on(&redis_url())
    }

    pub fn on(url: &str) -> TestStream {
        TestStream {
            name: unique("ss:stream"),
            url: url.to_string(),
        }
    }

    pub fn dlq(&self) -> String {
        format!("{}:dlq", self.name)
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        if let Ok(mut c) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection()) {
            let _: redis::RedisResult<()> = redis::cmd("DEL")
                .arg(&self.name)
                .arg(self.dlq())
                .query(&mut c);
        }
    }
}

pub fn redis_at(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("connect to redis")
}

pub fn redis() -> redis::Connection {
    redis_at(&redis_url())
}

/// XADD of field/value pairs; returns the entry id.
pub fn publish(con: &mut redis::Connection, stream: &str, fields: &[(&str, &str)]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query(con).expect("XADD")
}

/// XADD of a JSON envelope in the `event` field.
pub fn publish_event(
    con: &mut redis::Connection,
    stream: &str,
    event: serde_json::Value,
) -> String {
    publish(con, stream, &[("event", &event.to_string())])
}

/// XADD of `n` simple envelopes (pipelined); returns their ids.
pub fn publish_many(
    con: &mut redis::Connection,
    stream: &str,
    n: usize,
    id_prefix: &str,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            let ev = serde_json::json!({"id": format!("{id_prefix}-{i}"), "type": "load.test", "data": {"i": i}});
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("event")
                .arg(ev.to_string());
        }
        let chunk_ids: Vec<String> = pipe.query(con).expect("XADD pipeline");
        ids.extend(chunk_ids);
    }
    ids
}

/// The group's pending count on `stream`.
pub fn pending(con: &mut redis::Connection, stream: &str, group: &str) -> u64 {
    let reply: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query(con)
        .expect("XPENDING");
    reply.0
}

/// Entries of a stream as (id, field map).
pub fn entries(
    con: &mut redis::Connection,
    stream: &str,
) -> Vec<(String, std::collections::HashMap<String, String>)> {
    let reply: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(con)
        .expect("XRANGE");
    reply
        .into_iter()
        .map(|(id, fields)| (id, fields.into_iter().collect()))
        .collect()
}

/// Settings for a pipeline reading `stream` into `db`, with short timings for tests.
pub fn settings(db: &TestDb, stream: &TestStream) -> RawSettings {
    RawSettings {
        redis_url: Some(stream.url.clone()),
        database_url: Some(db.url.clone()),
        streams: Some(stream.name.clone()),
        group: Some("event-processors".into()),
        block: Some("200ms".into()),
        stats_interval: Some("1s".into()),
        workers: Some("2".into()),
        ..RawSettings::default()
    }
}

/// A pipeline running in this process, stopped and joined on drop.
pub struct Running {
    stop: Arc<AtomicBool>,
    pub counters: Arc<Counters>,
    handle: Option<JoinHandle<Result<Snapshot, PipelineError>>>,
}

impl Running {
    pub fn start(raw: RawSettings) -> Running {
        Running::start_with(raw, Registry::builtin())
    }

    pub fn start_with(raw: RawSettings, registry: Registry) -> Running {
        let _ = env_logger::builder().is_test(true).try_init();
        let config = Config::from_raw(raw, Purpose::Run).expect("valid test settings");
        let stop = Arc::new(AtomicBool::new(false));
        let pipeline =
            Pipeline::start(&config, registry, Arc::clone(&stop)).expect("pipeline starts");
        let counters = pipeline.counters();
        let handle = std::thread::spawn(move || pipeline.wait());
        Running {
            stop,
            counters,
            handle: Some(handle),
        }
    }

    /// Waits until `n` entries have been processed (written or dead-lettered, and acknowledged).
    pub fn wait_processed(&self, n: u64) {
        wait_until(
            Duration::from_secs(20),
            &format!("{n} entries processed"),
            || (self.counters.snapshot().processed >= n).then_some(()),
        );
    }

    pub fn stop(mut self) -> Snapshot {
        self.stop.store(true, Ordering::SeqCst);
        let h = self.handle.take().expect("running");
        h.join().expect("pipeline thread").expect("clean stop")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A private redis-server on its own port and directory, killed on drop: for tests that need
/// a password or break the server, never touching the shared one.
pub struct PrivateRedis {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
    password: Option<String>,
}

impl PrivateRedis {
    pub fn start(password: Option<&str>) -> PrivateRedis {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("ss-redis"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd
            .spawn()
            .expect("redis-server is installed (scripts/services.sh installs it)");
        let r = PrivateRedis {
            port,
            dir,
            child,
            password: password.map(str::to_string),
        };
        wait_until(
            Duration::from_secs(10),
            "private redis-server to answer",
            || {
                redis::Client::open(r.url().as_str())
                    .and_then(|c| c.get_connection())
                    .ok()
                    .map(|_| ())
            },
        );
        r
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The streamsink binary running as a child process, its stderr collected line by line.
pub struct Process {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Process {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamsink"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in [
            "REDIS_URL",
            "DATABASE_URL",
            "STREAMSINK_STREAMS",
            "STREAMSINK_GROUP",
            "STREAMSINK_CONSUMER",
            "STREAMSINK_BLOCK",
            "JOURNAL_STREAM",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("spawn streamsink");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let stdout = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            let out_sink = Arc::clone(&sink);
            let out = std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    out_sink.lock().unwrap().push(line);
                }
            });
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
            let _ = out.join();
        });
        Process {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Everything printed so far (stdout and stderr), one line per element.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a line containing `needle`; returns it.
    pub fn wait_for_line(&self, needle: &str, deadline: Duration) -> String {
        wait_until(
            deadline,
            &format!(
                "a line containing {needle:?}; output so far: {:?}",
                self.output()
            ),
            || {
                self.lines
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|l| l.contains(needle))
                    .cloned()
            },
        )
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code and the time it took.
    pub fn wait_exit(&mut self, deadline: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        let status = wait_until(deadline, "streamsink to exit", || {
            self.child.try_wait().expect("try_wait")
        });
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status.code(), started.elapsed())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

pub mod tls;

use streamsink::observe::{Counters, Snapshot};
use streamsink::{Config, Registry, Supervisor, SupervisorError};

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
    format!("{prefix}_{}", ulid::Ulid::generate().to_string().to_lowercase())
}

/// Polls `f` until it returns `Some`, panicking with `what` after `deadline`.
pub fn wait_until<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A fresh database, dropped at the end of the test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin: String,
}

impl TestDb {
    pub fn create() -> TestDb {
        TestDb::create_on(&admin_database_url())
    }

    /// A fresh database on the server of `admin` (a URL with rights to create databases).
    pub fn create_on(admin: &str) -> TestDb {
        let name = unique("ss");
        let admin = admin.to_string();
        let mut client =
            postgres::Client::connect(&admin, postgres::NoTls).expect("connect to admin database");
        client.batch_execute(&format!("CREATE DATABASE {name}")).expect("create test database");
        let config: postgres::Config = admin.parse().expect("admin URL");
        let url = replace_dbname(&admin, config.get_dbname().unwrap_or("postgres"), &name);
        TestDb { name, url, admin }
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to test database")
    }

    /// Runs a query returning one bigint.
    pub fn count(&self, sql: &str) -> i64 {
        self.client().query_one(sql, &[]).expect(sql).get(0)
    }

    /// Like `count`, but 0 while the schema does not exist yet or the server is down.
    pub fn count_or_zero(&self, sql: &str) -> i64 {
        postgres::Client::connect(&self.url, postgres::NoTls)
            .and_then(|mut c| c.query_one(sql, &[]))
            .map(|r| r.get(0))
            .unwrap_or(0)
    }
}

fn replace_dbname(url: &str, old: &str, new: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.strip_suffix(&format!("/{old}")).unwrap_or(base);
    match query {
        Some(q) => format!("{base}/{new}?{q}"),
        None => format!("{base}/{new}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
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
        TestStream { name: unique("ss:stream"), url: url.to_string() }
    }

    pub fn dlq(&self) -> String {
        format!("{}:dlq", self.name)
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        if let Ok(mut c) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection()) {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&self.name).arg(self.dlq()).query(&mut c);
        }
    }
}

pub fn redis_at(url: &str) -> redis::Connection {
    redis::Client::open(url).and_then(|c| c.get_connection()).expect("connect to redis")
}

/// A connection to the Redis at `url` as the library's broker functions take it.
pub fn broker_at(url: &str) -> streamsink::broker::Redis {
    streamsink::broker::Redis::Node(redis_at(url))
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
pub fn publish_event(con: &mut redis::Connection, stream: &str, event: serde_json::Value) -> String {
    publish(con, stream, &[("event", &event.to_string())])
}

/// XADD of `n` simple envelopes (pipelined); returns their ids.
pub fn publish_many(con: &mut redis::Connection, stream: &str, n: usize, id_prefix: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            let ev =
                serde_json::json!({"id": format!("{id_prefix}-{i}"), "type": "load.test", "data": {"i": i}});
            pipe.cmd("XADD").arg(stream).arg("*").arg("event").arg(ev.to_string());
        }
        let chunk_ids: Vec<String> = pipe.query(con).expect("XADD pipeline");
        ids.extend(chunk_ids);
    }
    ids
}

/// The group's pending count on `stream`.
pub fn pending(con: &mut redis::Connection, stream: &str, group: &str) -> u64 {
    let reply: (u64, redis::Value, redis::Value, redis::Value) =
        redis::cmd("XPENDING").arg(stream).arg(group).query(con).expect("XPENDING");
    reply.0
}

/// Entries of a stream as (id, field map).
pub fn entries(
    con: &mut redis::Connection,
    stream: &str,
) -> Vec<(String, std::collections::HashMap<String, String>)> {
    type RawEntry = (String, Vec<(Vec<u8>, Vec<u8>)>);
    let reply: Vec<RawEntry> = redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query(con).expect("XRANGE");
    let lossy = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    reply
        .into_iter()
        .map(|(id, fields)| (id, fields.into_iter().map(|(k, v)| (lossy(k), lossy(v))).collect()))
        .collect()
}

/// Settings for a pipeline reading `stream` into `db`, with short timings for tests: parsed as
/// `streamsink run` would parse these flags (so a `STREAMSINK_*` variable exported in the
/// shell fills in a setting not given here, as it would for the binary).
pub fn settings(db: &TestDb, stream: &TestStream) -> Config {
    settings_at(&stream.url, &db.url, &stream.name)
}

pub fn settings_at(redis_url: &str, database_url: &str, stream: &str) -> Config {
    Config::from_flags([
        "--redis-url",
        redis_url,
        "--database-url",
        database_url,
        "--streams",
        stream,
        "--group",
        "event-processors",
        "--block",
        "200ms",
        "--stats-interval",
        "1s",
        "--workers",
        "2",
    ])
    .expect("valid test settings")
}

/// A pipeline running in this process, stopped and joined on drop.
pub struct Running {
    stop: Arc<AtomicBool>,
    pub counters: Arc<Counters>,
    handle: Option<JoinHandle<Result<Snapshot, SupervisorError>>>,
}

impl Running {
    pub fn start(config: Config) -> Running {
        Running::start_with(config, Registry::builtin())
    }

    pub fn start_with(config: Config, registry: Registry) -> Running {
        Running::launch(|stop| Supervisor::start(&config, registry, stop))
    }

    /// Starts with test hooks on (the `test-hooks` feature, which scripts/test.sh enables).
    #[cfg(feature = "test-hooks")]
    pub fn start_hooked(config: Config, hooks: streamsink::hooks::Hooks) -> Running {
        Running::launch(|stop| Supervisor::start_hooked(&config, Registry::builtin(), stop, hooks))
    }

    fn launch(start: impl FnOnce(Arc<AtomicBool>) -> Result<Supervisor, SupervisorError>) -> Running {
        let _ = env_logger::builder().is_test(true).try_init();
        let stop = Arc::new(AtomicBool::new(false));
        let supervisor = start(Arc::clone(&stop)).expect("pipeline starts");
        let counters = supervisor.counters();
        let handle = std::thread::spawn(move || supervisor.wait());
        Running { stop, counters, handle: Some(handle) }
    }

    /// Waits until `n` entries have been processed (written or dead-lettered, and acknowledged).
    pub fn wait_processed(&self, n: u64) {
        wait_until(Duration::from_secs(20), &format!("{n} entries processed"), || {
            (self.counters.snapshot().processed >= n).then_some(())
        });
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
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A private redis-server on its own port and directory, killed on drop: for tests that need
/// a password or break the server, never touching the shared one.
pub struct PrivateRedis {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
    password: Option<String>,
    extra: Vec<String>,
    program: PathBuf,
}

impl PrivateRedis {
    pub fn start(password: Option<&str>) -> PrivateRedis {
        PrivateRedis::start_with(password, &[])
    }

    /// Starts with extra server arguments (e.g. `--appendonly yes`).
    pub fn start_with(password: Option<&str>, extra: &[&str]) -> PrivateRedis {
        PrivateRedis::start_program("redis-server".as_ref(), password, extra)
    }

    /// Starts `program` (another redis-server build, e.g. an older series).
    pub fn start_program(program: &std::path::Path, password: Option<&str>, extra: &[&str]) -> PrivateRedis {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("ss-redis"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let program = program.to_path_buf();
        let child = spawn_redis(&program, port, &dir, password, &extra);
        let r = PrivateRedis { port, dir, child, password: password.map(str::to_string), extra, program };
        r.wait_ready();
        r
    }

    fn wait_ready(&self) {
        wait_until(Duration::from_secs(10), "private redis-server to answer", || {
            let mut con = redis::Client::open(self.url().as_str()).and_then(|c| c.get_connection()).ok()?;
            redis::cmd("PING").query::<String>(&mut con).ok().map(|_| ())
        });
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Stops the server (SIGTERM: a clean shutdown that flushes the AOF) and waits for it.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and directory (its AOF, if on, is reloaded).
    pub fn start_again(&mut self) {
        self.child = spawn_redis(&self.program, self.port, &self.dir, self.password.as_deref(), &self.extra);
        self.wait_ready();
    }
}

fn spawn_redis(
    program: &std::path::Path,
    port: u16,
    dir: &std::path::Path,
    password: Option<&str>,
    extra: &[String],
) -> Child {
    let mut cmd = Command::new(program);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if !extra.iter().any(|a| a == "--appendonly") {
        cmd.args(["--appendonly", "no"]);
    }
    if let Some(p) = password {
        cmd.args(["--requirepass", p]);
    }
    cmd.args(extra);
    cmd.spawn().expect("redis-server is installed (scripts/services.sh installs it)")
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private PostgreSQL cluster (initdb in a directory owned by `postgres`, its own port and
/// socket directory), stopped and removed on drop: for tests that stop the database.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        PrivatePostgres::start_configured(|_| {})
    }

    /// Like [`PrivatePostgres::start`], running `configure` on the cluster (its data directory
    /// made, the server not yet started) first: for TLS, other `pg_hba.conf` lines.
    pub fn start_configured(configure: impl FnOnce(&PrivatePostgres)) -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql (scripts/services.sh installs them)")
            .filter_map(Result::ok)
            .map(|d| d.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max_by_key(|b| {
                let version = b.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).unwrap_or("0");
                version.parse::<u32>().unwrap_or(0)
            })
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = std::env::temp_dir().join(unique("ss-pg"));
        std::fs::create_dir_all(&dir).expect("postgres dir");
        let pg = PrivatePostgres { port: free_port(), dir, bin };
        if is_root() {
            let ok = Command::new("chown").arg("postgres:postgres").arg(&pg.dir).status().expect("chown");
            assert!(ok.success(), "chown of {}", pg.dir.display());
        }
        let status = pg
            .as_postgres("initdb")
            .arg("-D")
            .arg(pg.dir.join("data"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed");
        configure(&pg);
        pg.start_again();
        pg
    }

    /// The cluster's data directory (owned by `postgres`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A URL with rights to create databases, over the unix socket: for a server that refuses
    /// clear text over TCP.
    pub fn socket_admin_url(&self) -> String {
        let dir = self.dir.display().to_string().replace('/', "%2F");
        format!("postgres://postgres@{dir}:{}/postgres", self.port)
    }

    /// Gives `path` to the `postgres` user, readable by it alone (a server key must be).
    pub fn give_to_postgres(path: &std::path::Path) {
        if is_root() {
            let ok = Command::new("chown").arg("postgres:postgres").arg(path).status().expect("chown");
            assert!(ok.success(), "chown of {}", path.display());
        }
        let ok = Command::new("chmod").arg("600").arg(path).status().expect("chmod");
        assert!(ok.success(), "chmod of {}", path.display());
    }

    /// A command run as the `postgres` user (PostgreSQL refuses to run as root).
    fn as_postgres(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> bool {
        self.as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Starts (or restarts) the server and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        let ok = self.pg_ctl(&[
            "-w",
            "-t",
            "60",
            "-l",
            log.to_str().unwrap_or("/dev/null"),
            "-o",
            &options,
            "start",
        ]);
        assert!(ok, "pg_ctl start failed: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }

    /// Stops the server (fast shutdown: connections are cut, committed data kept).
    pub fn stop(&self) {
        assert!(self.pg_ctl(&["-w", "-m", "fast", "stop"]), "pg_ctl stop failed");
    }

    /// A URL with rights to create databases.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.pg_ctl(&["-w", "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// A private Redis and a private Postgres with a database and a stream on them.
pub struct Private {
    pub redis: PrivateRedis,
    pub postgres: PrivatePostgres,
    pub db: TestDb,
    pub stream: TestStream,
}

impl Private {
    pub fn start() -> Private {
        Private::start_with_redis(PrivateRedis::start(None))
    }

    pub fn start_with_redis(redis: PrivateRedis) -> Private {
        let postgres = PrivatePostgres::start();
        let db = TestDb::create_on(&postgres.admin_url());
        let stream = TestStream::on(&redis.url());
        Private { redis, postgres, db, stream }
    }

    pub fn con(&self) -> redis::Connection {
        redis_at(&self.redis.url())
    }

    /// Settings for the binary: URLs and stream of the private instances.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("REDIS_URL".into(), self.redis.url()),
            ("DATABASE_URL".into(), self.db.url.clone()),
            ("STREAMSINK_STREAMS".into(), self.stream.name.clone()),
        ]
    }
}

/// `streamsink migrate` on `database_url`, so the schema exists before a test adds a lock or a
/// trigger to it.
pub fn migrate_schema(database_url: &str) {
    let mut p = Process::spawn(&["migrate"], &[("DATABASE_URL", database_url)]);
    let (code, _) = p.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "streamsink migrate: {:?}", p.output());
}

/// The streamsink binary running as a child process, its stderr collected line by line.
pub struct Process {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Process {
    pub fn spawn_owned(args: &[&str], env: &[(String, String)]) -> Process {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Process::spawn(args, &env)
    }

    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamsink"));
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Only what the test gives: no setting leaks in from the shell that runs the suite.
        for (var, _) in std::env::vars_os() {
            let name = var.to_string_lossy();
            if name.starts_with("STREAMSINK_")
                || [
                    "REDIS_URL",
                    "DATABASE_URL",
                    "JOURNAL_STREAM",
                    "RUST_LOG",
                    "NOTIFY_SOCKET",
                    "WATCHDOG_USEC",
                    "WATCHDOG_PID",
                ]
                .contains(&name.as_ref())
            {
                cmd.env_remove(&var);
            }
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
        Process { child, lines, reader: Some(reader) }
    }

    /// Everything printed so far (stdout and stderr), one line per element.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a line containing `needle`; returns it.
    pub fn wait_for_line(&self, needle: &str, deadline: Duration) -> String {
        wait_until(
            deadline,
            &format!("a line containing {needle:?}; output so far: {:?}", self.output()),
            || self.lines.lock().unwrap().iter().find(|l| l.contains(needle)).cloned(),
        )
    }

    pub fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").args(["-s", signal, &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code and the time it took.
    pub fn wait_exit(&mut self, deadline: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        let status = wait_until(deadline, "streamsink to exit", || self.child.try_wait().expect("try_wait"));
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

/// `streamsink ARGS` with nothing inherited from the environment but PATH, and `env` set: what
/// an operator's shell (or a systemd `EnvironmentFile=`) gives the binary, and nothing else.
pub fn streamsink_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamsink"));
    cmd.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.envs(env.iter().copied());
    cmd
}

/// Runs [`streamsink_command`] to its end: (exit code, stdout, stderr).
pub fn run_streamsink(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = streamsink_command(args, env).output().expect("run streamsink");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `stdout` as one JSON value (what `--json` prints), or a panic that shows it.
pub fn json_of(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not one JSON value ({e}): {stdout}"))
}

/// Delivers up to `count` new entries of `stream` to `consumer` of `group` (XREADGROUP), never
/// acknowledged: a consumer that dies holding them. Returns their ids.
pub fn deliver(
    r: &mut redis::Connection,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
) -> Vec<String> {
    type Reply = Vec<(String, Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>)>;
    let reply: Option<Reply> = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query(r)
        .expect("XREADGROUP");
    reply.into_iter().flatten().flat_map(|(_, entries)| entries).map(|(id, _)| id).collect()
}

/// A private Redis Cluster (`scripts/redis-cluster.sh`): 3 masters, each with a replica, on six
/// consecutive local ports of its own and their bus ports; stopped on drop.
pub struct PrivateCluster {
    pub ports: Vec<u16>,
    pub dir: PathBuf,
    /// The password every node requires, if any.
    pub password: Option<String>,
    /// True when every node speaks TLS only (`start_configured` with a PKI directory).
    pub tls: bool,
}

impl PrivateCluster {
    pub fn start() -> PrivateCluster {
        PrivateCluster::start_with(None)
    }

    /// A cluster whose nodes require `password` (`requirepass` and `masterauth`).
    pub fn start_with(password: Option<&str>) -> PrivateCluster {
        PrivateCluster::start_configured(password, None)
    }

    /// A cluster requiring `password`, and speaking TLS only with the certificates in `tls`
    /// (`ca.pem`, `node.pem`, `node.key`: a `tls::Pki`'s directory).
    pub fn start_configured(password: Option<&str>, tls: Option<&std::path::Path>) -> PrivateCluster {
        let dir = std::env::temp_dir().join(unique("cluster"));
        for _ in 0..20 {
            let base = cluster_base_port();
            let mut cmd = Command::new("bash");
            cmd.arg("scripts/redis-cluster.sh").arg("start").arg(&dir).arg(base.to_string());
            if let Some(p) = password {
                cmd.env("REDIS_CLUSTER_PASSWORD", p);
            }
            if let Some(tls) = tls {
                cmd.env("REDIS_CLUSTER_TLS_DIR", tls);
            }
            let out = cmd.output().expect("run scripts/redis-cluster.sh");
            if out.status.success() {
                let password = password.map(str::to_string);
                let tls = tls.is_some();
                return PrivateCluster { ports: (base..base + 6).collect(), dir, password, tls };
            }
            // Another process took a port between the check and the start: try elsewhere.
            let _ = Command::new("bash").arg("scripts/redis-cluster.sh").arg("stop").arg(&dir).status();
        }
        panic!("no private cluster could be started (see {})", dir.display());
    }

    /// A plain connection to the node on `port`.
    pub fn node(&self, port: u16) -> redis::Connection {
        redis_at(&self.node_url(port))
    }

    /// The URL of the node on `port`, with the password.
    pub fn node_url(&self, port: u16) -> String {
        let auth = self.password.as_deref().map(|p| format!(":{p}@")).unwrap_or_default();
        format!("redis://{auth}127.0.0.1:{port}")
    }

    /// `REDIS_URL` for streamsink: two seed nodes, the password if any.
    pub fn url(&self) -> String {
        let auth = self.password.as_deref().map(|p| format!(":{p}@")).unwrap_or_default();
        let scheme = if self.tls { "rediss+cluster" } else { "redis+cluster" };
        format!("{scheme}://{auth}127.0.0.1:{},127.0.0.1:{}", self.ports[0], self.ports[3])
    }

    /// The pid of the node on `port` (from its pid file).
    pub fn pid(&self, port: u16) -> u32 {
        let text =
            std::fs::read_to_string(self.dir.join(port.to_string()).join("redis.pid")).expect("pid file");
        text.trim().parse().expect("a pid")
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg("scripts/redis-cluster.sh").arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A base port B with B … B+5 and their cluster bus ports B+10000 … free just now, all below
/// Linux's ephemeral range (32768 and up), where a client's port could take a bus port.
fn cluster_base_port() -> u16 {
    loop {
        let base = 20_000 + (ulid::Ulid::generate().random() % 2_700) as u16;
        let free = (base..base + 6)
            .chain(base + 10_000..base + 10_006)
            .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
}

//! Stalls and refusals on the Postgres side, with the real binary.
//!
//! A. Only faults spend the delivery budget: entries this process holds while a table lock
//!    comes and goes (queued or being written, idle longer than `claim_min_idle` as Redis sees
//!    them) are never reclaimed, by this process or by another instance of the group; with
//!    `max_deliveries=1` every event lands and nothing is dead-lettered.
//! B. SIGTERM stops the worker, exit code 0, within 10 s, in each of the classifier's states:
//!    Postgres unreachable (stopped, or silent), conflicting forever, rejecting every row,
//!    refusing the statement (class 42), and a statement stalled behind a lock; and after the
//!    stop nothing published is unaccounted for (every entry is a row, a dead letter, or still
//!    pending in Redis).
//!
//! Faults that stop a server use private instances; locks and triggers live in the test's own
//! database on the shared Postgres; a silent Postgres is a relay owned by the test.

mod common;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

const GROUP: &str = "event-processors";
const START_LINE: &str = "Event consumer started";
/// DESIGN.md: "Shutdown on SIGTERM/SIGINT finishes in-flight batches and exits 0 within 10 s."
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// How long a stop is waited for before the worker is killed and the test goes on to report.
const STOP_GIVE_UP: Duration = Duration::from_secs(25);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The binary's environment: the three required settings plus `extra`.
fn worker_env(
    redis_url: &str,
    database_url: &str,
    stream: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("REDIS_URL".into(), redis_url.into()),
        ("DATABASE_URL".into(), database_url.into()),
        ("STREAMSINK_STREAMS".into(), stream.into()),
        ("STREAMSINK_STATS_INTERVAL".into(), "1s".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// Starts the worker and waits for its start line.
fn start_worker(env: &[(String, String)]) -> Process {
    let worker = Process::spawn_owned(&["run"], env);
    worker.wait_for_line(START_LINE, Duration::from_secs(30));
    worker
}

/// How a SIGTERM went.
#[derive(Debug)]
struct Stop {
    /// Exit code, or `None` if killed by a signal (or by us after `STOP_GIVE_UP`).
    code: Option<i32>,
    /// From the signal to the exit (or to giving up).
    took: Duration,
    /// False when it had not exited after `STOP_GIVE_UP` and was killed.
    exited: bool,
}

/// Sends SIGTERM and times the exit; kills the worker after `STOP_GIVE_UP` so the test can go
/// on to check what it left behind.
fn terminate(worker: &mut Process) -> Stop {
    let sent = Instant::now();
    worker.signal("TERM");
    loop {
        if let Some(status) = worker.child.try_wait().expect("try_wait") {
            let took = sent.elapsed();
            let _ = worker.wait_exit(Duration::from_secs(5)); // joins the output reader
            return Stop { code: status.code(), took, exited: true };
        }
        if sent.elapsed() > STOP_GIVE_UP {
            let took = sent.elapsed();
            let _ = worker.child.kill();
            let _ = worker.wait_exit(Duration::from_secs(10));
            return Stop { code: None, took, exited: false };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Expectations checked one after another; every failed one is reported together, with the
/// worker's last lines, so one run tells everything a test found wrong.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn stopped_in_time(&mut self, stop: &Stop) {
        self.check(stop.exited, || {
            format!("SIGTERM: the worker had not exited after {:.1}s; killed", stop.took.as_secs_f64())
        });
        if stop.exited {
            self.check(stop.code == Some(0), || format!("SIGTERM: exit code {:?}, expected 0", stop.code));
            self.check(stop.took <= STOP_LIMIT, || {
                format!("SIGTERM: exit took {:.2}s, more than {STOP_LIMIT:?}", stop.took.as_secs_f64())
            });
        }
    }

    fn assert_none(self, test: &str, output: &[String]) {
        if self.0.is_empty() {
            return;
        }
        let tail = output.iter().rev().take(40).rev().cloned().collect::<Vec<_>>().join("\n");
        panic!(
            "{test}: {} expectation(s) failed:\n  - {}\n--- worker output (last 40 lines) ---\n{tail}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

fn has_line(output: &[String], pred: impl Fn(&str) -> bool) -> bool {
    output.iter().any(|l| pred(l))
}

/// Entry ids pending for the group on `stream`.
fn pending_ids(con: &mut redis::Connection, stream: &str) -> HashSet<String> {
    let reply: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(1_000_000)
        .query(con)
        .expect("XPENDING");
    reply.into_iter().map(|(id, ..)| id).collect()
}

/// The stream entry ids of the dead letters on `<stream>:dlq`.
fn dead_lettered_ids(con: &mut redis::Connection, stream: &TestStream) -> HashSet<String> {
    entries(con, &stream.dlq()).into_iter().filter_map(|(_, f)| f.get("dlq_original_id").cloned()).collect()
}

/// Stream entry ids that have a row in `events`.
fn row_entry_ids(client: &mut postgres::Client) -> HashSet<String> {
    client
        .query("SELECT stream_entry_id FROM events", &[])
        .expect("read events")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

/// A stream entry id as a comparable pair.
fn entry_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("an entry id");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

/// The group's last-delivered-id on `stream` (XINFO GROUPS): every entry up to it has been
/// delivered to some consumer, none after it.
fn last_delivered(con: &mut redis::Connection, stream: &str) -> (u64, u64) {
    let groups: Vec<Vec<redis::Value>> =
        redis::cmd("XINFO").arg("GROUPS").arg(stream).query(con).expect("XINFO");
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    };
    for group in groups {
        let fields: std::collections::HashMap<String, String> =
            group.chunks(2).map(|kv| (text(&kv[0]), text(&kv[1]))).collect();
        if fields.get("name").map(String::as_str) == Some(GROUP) {
            return entry_id(&fields["last-delivered-id"]);
        }
    }
    panic!("no group {GROUP} on {stream}");
}

/// What became of the published entries after a stop.
struct Accounting {
    published: usize,
    /// Entries the group delivered (to this process: it is the only consumer).
    delivered: usize,
    pending: HashSet<String>,
    rows: HashSet<String>,
    dead: HashSet<String>,
    /// Delivered entries no longer pending.
    acknowledged: Vec<String>,
    /// Acknowledged entries that are neither a row nor a dead letter: lost.
    lost: Vec<String>,
}

impl Accounting {
    fn take(
        published: &[String],
        con: &mut redis::Connection,
        stream: &TestStream,
        db: &mut postgres::Client,
    ) -> Accounting {
        let last = last_delivered(con, &stream.name);
        let pending = pending_ids(con, &stream.name);
        let dead = dead_lettered_ids(con, stream);
        let rows = row_entry_ids(db);
        let delivered: Vec<&String> = published.iter().filter(|id| entry_id(id) <= last).collect();
        let acknowledged: Vec<String> =
            delivered.iter().filter(|id| !pending.contains(**id)).map(|id| id.to_string()).collect();
        let lost =
            acknowledged.iter().filter(|id| !rows.contains(*id) && !dead.contains(*id)).cloned().collect();
        Accounting {
            published: published.len(),
            delivered: delivered.len(),
            pending,
            rows,
            dead,
            acknowledged,
            lost,
        }
    }

    fn summary(&self) -> String {
        format!(
            "published {}, delivered {}, pending {}, acknowledged {}, rows {}, dead letters {}, lost {}",
            self.published,
            self.delivered,
            self.pending.len(),
            self.acknowledged.len(),
            self.rows.len(),
            self.dead.len(),
            self.lost.len()
        )
    }

    fn nothing_lost(&self, f: &mut Findings) {
        f.check(self.lost.is_empty(), || {
            format!(
                "{} entries acknowledged with no row and no dead letter (e.g. {:?}); {}",
                self.lost.len(),
                self.lost.iter().take(3).collect::<Vec<_>>(),
                self.summary()
            )
        });
    }

    /// Nothing could be committed: every delivered entry is still pending, nothing is a row or
    /// a dead letter.
    fn nothing_acknowledged(&self, f: &mut Findings) {
        self.nothing_lost(f);
        f.check(self.delivered > 0, || {
            format!("nothing was delivered: the test tested nothing; {}", self.summary())
        });
        f.check(self.acknowledged.is_empty(), || {
            format!("expected every delivered entry still pending (nothing acknowledged); {}", self.summary())
        });
        f.check(self.rows.is_empty(), || format!("expected no row; {}", self.summary()));
        f.check(self.dead.is_empty(), || format!("expected no dead letter; {}", self.summary()));
    }
}

/// Installs a BEFORE INSERT trigger on `events` that raises `sqlstate` for every row, after
/// counting the attempt in a sequence (sequences are not rolled back, so every attempt shows).
fn install_failing_trigger(db: &TestDb, sqlstate: &str) {
    db.client()
        .batch_execute(&format!(
            "CREATE SEQUENCE insert_attempts;
             CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM nextval('insert_attempts');
                 RAISE EXCEPTION 'injected by the test (SQLSTATE {sqlstate})' USING ERRCODE = '{sqlstate}';
             END $$;
             CREATE TRIGGER fail_insert BEFORE INSERT ON events
                 FOR EACH ROW EXECUTE FUNCTION fail_insert();"
        ))
        .expect("install the failing trigger");
}

/// Rows the trigger has refused so far.
fn insert_attempts(db: &TestDb) -> i64 {
    db.count("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM insert_attempts")
}

/// Sessions of the worker (`application_name = 'streamsink'`) in `db` waiting for a lock.
fn writers_waiting_on_a_lock(admin: &mut postgres::Client, db: &TestDb) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = $1 AND application_name = 'streamsink' AND wait_event_type = 'Lock'",
            &[&db.name],
        )
        .expect("pg_stat_activity")
        .get(0)
}

/// A TCP relay in front of Postgres that can go silent: while silent it keeps every
/// connection open, swallows what either side sends and answers nothing, as a dead network
/// path or a hung server would. New connections are accepted and never answered.
struct Relay {
    port: u16,
    silent: Arc<AtomicBool>,
    /// Bytes swallowed while silent, either way: a statement, a reply or a start-up message
    /// that will never arrive.
    swallowed: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(upstream: SocketAddr, silent: bool) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("relay addr").port();
        listener.set_nonblocking(true).expect("nonblocking listener");
        let silent = Arc::new(AtomicBool::new(silent));
        let swallowed = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        let (s, w, c) = (Arc::clone(&silent), Arc::clone(&swallowed), Arc::clone(&closed));
        let accept = std::thread::spawn(move || {
            while !c.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (s, w, c) = (Arc::clone(&s), Arc::clone(&w), Arc::clone(&c));
                        std::thread::spawn(move || relay_connection(client, upstream, s, w, c));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => return,
                }
            }
        });
        Relay { port, silent, swallowed, closed, accept: Some(accept) }
    }

    fn silence(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }

    fn swallowed(&self) -> u64 {
        self.swallowed.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn relay_connection(
    client: TcpStream,
    upstream: SocketAddr,
    silent: Arc<AtomicBool>,
    swallowed: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
) {
    let _ = client.set_nonblocking(false);
    let server = if silent.load(Ordering::SeqCst) { None } else { TcpStream::connect(upstream).ok() };
    let Some(server) = server else {
        // Accepted, never answered: whatever the client sends is swallowed.
        let mut sink = client.try_clone().expect("clone");
        pump(&mut sink, None, &silent, &swallowed, &closed);
        return;
    };
    let (mut c_in, mut c_out) = (client.try_clone().expect("clone"), client);
    let (mut s_in, mut s_out) = (server.try_clone().expect("clone"), server);
    let (s2, w2, cl2) = (Arc::clone(&silent), Arc::clone(&swallowed), Arc::clone(&closed));
    let up = std::thread::spawn(move || pump(&mut c_in, Some(&mut s_out), &s2, &w2, &cl2));
    pump(&mut s_in, Some(&mut c_out), &silent, &swallowed, &closed);
    let _ = up.join();
}

/// Copies `from` to `to` until `from` closes; while `silent` (or with nowhere to copy to),
/// swallows instead, counting into `swallowed`, and holds both sides open until the relay is
/// closed.
fn pump(
    from: &mut TcpStream,
    mut to: Option<&mut TcpStream>,
    silent: &AtomicBool,
    swallowed: &AtomicU64,
    closed: &AtomicBool,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 16 * 1024];
    while !closed.load(Ordering::SeqCst) {
        match from.read(&mut buf) {
            Ok(0) => {
                if !silent.load(Ordering::SeqCst) {
                    if let Some(to) = to.as_mut() {
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    }
                    return;
                }
                // Silent: hold the other side open, as a dead path would.
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(n) => {
                if silent.load(Ordering::SeqCst) || to.is_none() {
                    swallowed.fetch_add(n as u64, Ordering::SeqCst);
                } else if let Some(to) = to.as_mut() {
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                if !silent.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The address of the database in `url` and the same URL pointed at `127.0.0.1:<port>`.
fn via_relay(url: &str, port: u16) -> (SocketAddr, String) {
    let config: postgres::Config = url.parse().expect("database URL");
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        other => panic!("the relay needs a TCP host, not {other:?}"),
    };
    let port_now = config.get_ports().first().copied().unwrap_or(5432);
    let upstream = (host.as_str(), port_now)
        .to_socket_addrs()
        .expect("resolve")
        .next()
        .expect("an address for the host");
    let from = format!("@{host}:{port_now}/");
    assert!(url.contains(&from), "cannot rewrite {url} to the relay");
    (upstream, url.replacen(&from, &format!("@127.0.0.1:{port}/"), 1))
}

// ---------------------------------------------------------------------------------------------
// A. Only faults spend the budget
// ---------------------------------------------------------------------------------------------

const STALL_TOTAL: usize = 20_000;
const STALL_FOR: Duration = Duration::from_secs(30);
const LOCK_HOLD: Duration = Duration::from_secs(3);
const LOCK_GAP: Duration = Duration::from_millis(750);

/// The worker's settings for the stall: a claim idle time shorter than one lock hold, a claim
/// cycle every second, and a budget of one delivery, so any reclaim of an entry still held
/// dead-letters it.
fn stall_env(db: &TestDb, stream: &TestStream) -> Vec<(String, String)> {
    worker_env(
        &redis_url(),
        &db.url,
        &stream.name,
        &[
            ("STREAMSINK_CLAIM_MIN_IDLE", "2s"),
            ("STREAMSINK_CLAIM_INTERVAL", "1s"),
            ("STREAMSINK_MAX_DELIVERIES", "1"),
            ("STREAMSINK_BLOCK", "250ms"),
            ("STREAMSINK_BATCH", "100"),
            ("STREAMSINK_WORKERS", "2"),
        ],
    )
}

/// What the lock cycler did.
#[derive(Debug, Default)]
struct Cycles {
    holds: u32,
    /// Holds during which a worker's statement was seen waiting for the lock.
    holds_blocking_a_writer: u32,
}

/// Holds `LOCK TABLE events IN ACCESS EXCLUSIVE MODE` for `LOCK_HOLD`, releases it for
/// `LOCK_GAP`, again and again for `STALL_FOR`. Tells `locked` once the first hold is in place.
fn cycle_table_lock(db: &TestDb, locked: mpsc::Sender<()>) -> JoinHandle<Cycles> {
    let (url, name) = (db.url.clone(), db.name.clone());
    std::thread::spawn(move || {
        let mut locker = postgres::Client::connect(&url, postgres::NoTls).expect("locker connects");
        let mut watcher = postgres::Client::connect(&url, postgres::NoTls).expect("watcher connects");
        let started = Instant::now();
        let mut cycles = Cycles::default();
        let mut locked = Some(locked);
        while started.elapsed() < STALL_FOR {
            locker.batch_execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE").expect("lock events");
            if let Some(l) = locked.take() {
                let _ = l.send(());
            }
            let hold_until = Instant::now() + LOCK_HOLD;
            // Look for a blocked writer late in the hold, when the held batches are older
            // than claim_min_idle.
            std::thread::sleep(LOCK_HOLD - Duration::from_millis(500));
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE datname = $1 AND application_name = 'streamsink' AND wait_event_type = 'Lock'",
                    &[&name],
                )
                .expect("pg_stat_activity")
                .get(0);
            cycles.holds += 1;
            if waiting > 0 {
                cycles.holds_blocking_a_writer += 1;
            }
            std::thread::sleep(hold_until.saturating_duration_since(Instant::now()));
            locker.batch_execute("COMMIT").expect("release the lock");
            std::thread::sleep(LOCK_GAP);
        }
        cycles
    })
}

/// Publishes `STALL_TOTAL` events: a quarter at once (a backlog behind the first hold), the
/// rest in steady chunks over most of the stall, so every hold finds batches to hold up.
fn publish_through_the_stall(stream: &TestStream) -> JoinHandle<Vec<String>> {
    let name = stream.name.clone();
    std::thread::spawn(move || {
        let mut con = redis();
        let mut ids = publish_many(&mut con, &name, STALL_TOTAL / 4, "stall-0");
        let chunks = 30;
        let chunk = (STALL_TOTAL - ids.len()) / chunks;
        let every = (STALL_FOR - Duration::from_secs(5)) / chunks as u32;
        let start = Instant::now();
        for k in 1..=chunks {
            let n = if k == chunks { STALL_TOTAL - ids.len() } else { chunk };
            ids.extend(publish_many(&mut con, &name, n, &format!("stall-{k}")));
            std::thread::sleep((start + every * k as u32).saturating_duration_since(Instant::now()));
        }
        ids
    })
}

/// Runs the stall with `instances` worker processes in one group and checks that every event
/// landed once, nothing was dead-lettered and nothing is pending.
fn stall_spends_no_budget(test: &str, instances: usize) {
    let (db, stream) = (TestDb::create(), TestStream::new());
    migrate_schema(&db.url);
    let (locked, first_hold) = mpsc::channel();
    let locker = cycle_table_lock(&db, locked);
    first_hold.recv_timeout(Duration::from_secs(10)).expect("the first table lock within 10 s");
    let publisher = publish_through_the_stall(&stream);
    let env = stall_env(&db, &stream);
    let mut workers: Vec<Process> = (0..instances).map(|_| start_worker(&env)).collect();

    let cycles = locker.join().expect("lock cycler");
    let published = publisher.join().expect("publisher");
    assert_eq!(published.len(), STALL_TOTAL);
    eprintln!("{test}: lock cycles {cycles:?}");

    // Drained: every event is a row and nothing is pending (or the deadline says otherwise).
    let mut con = redis();
    let deadline = Instant::now() + Duration::from_secs(60);
    let drained = loop {
        let rows = db.count("SELECT count(*) FROM events");
        let pending = pending(&mut con, &stream.name, GROUP);
        if rows == STALL_TOTAL as i64 && pending == 0 {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    let mut client = db.client();
    let account = Accounting::take(&published, &mut con, &stream, &mut client);
    let output: Vec<String> = workers.iter().flat_map(|w| w.output()).collect();
    let mut f = Findings::default();
    f.check(cycles.holds >= 6, || format!("only {} lock holds in {STALL_FOR:?}", cycles.holds));
    f.check(cycles.holds_blocking_a_writer * 2 >= cycles.holds, || {
        format!(
            "the lock held up a writer in only {} of {} holds: the stall tested little",
            cycles.holds_blocking_a_writer, cycles.holds
        )
    });
    f.check(drained, || format!("not drained 60 s after the stall: {}", account.summary()));
    let row: (i64, i64) = {
        let r =
            client.query_one("SELECT count(*), count(DISTINCT stream_entry_id) FROM events", &[]).unwrap();
        (r.get(0), r.get(1))
    };
    f.check(row == (STALL_TOTAL as i64, STALL_TOTAL as i64), || {
        format!("rows (count, distinct entries) = {row:?}, expected {STALL_TOTAL} each")
    });
    f.check(published.iter().all(|id| account.rows.contains(id)), || {
        let missing = published.iter().filter(|id| !account.rows.contains(*id)).count();
        format!("{missing} published entries have no row")
    });
    let dead = entries(&mut con, &stream.dlq());
    f.check(dead.is_empty(), || {
        let reasons: HashSet<&str> = dead.iter().filter_map(|(_, e)| e.get("dlq_reason").map(String::as_str)).collect();
        let reclaims = output.iter().filter(|l| l.contains("reclaimed:")).count();
        format!(
            "{} entries dead-lettered (reasons {reasons:?}); the workers logged {reclaims} 'reclaimed:' lines",
            dead.len()
        )
    });
    f.check(account.pending.is_empty(), || format!("XPENDING not empty: {}", account.summary()));
    for w in &mut workers {
        let stop = terminate(w);
        f.stopped_in_time(&stop);
    }
    f.assert_none(test, &output);
}

#[test]
fn a_table_lock_that_comes_and_goes_for_30s_spends_no_delivery_budget() {
    stall_spends_no_budget("one instance", 1);
}

#[test]
fn another_instance_does_not_steal_entries_held_through_a_stall() {
    stall_spends_no_budget("two instances", 2);
}

// ---------------------------------------------------------------------------------------------
// B. Stop within 10 s in every Postgres fault state
// ---------------------------------------------------------------------------------------------

/// Settings for the fault states: batches of 100 and 2 workers, so the reader has more to
/// read than the process can hold (it waits on a full channel); BLOCK and timeouts as shipped.
fn fault_env(redis_url: &str, database_url: &str, stream: &str) -> Vec<(String, String)> {
    worker_env(redis_url, database_url, stream, &[("STREAMSINK_BATCH", "100"), ("STREAMSINK_WORKERS", "2")])
}

const POSTGRES_UNAVAILABLE: &str = "Postgres unavailable";
const NEEDS_ATTENTION: &str = "the schema or permissions need attention";

#[test]
fn stop_within_10s_while_postgres_is_stopped_with_events_pending() {
    let p = Private::start();
    let published = publish_many(&mut p.con(), &p.stream.name, 20_000, "down");
    let mut worker = start_worker(&fault_env(&p.redis.url(), &p.db.url, &p.stream.name));
    wait_until(Duration::from_secs(60), "the drain to be under way", || {
        (p.db.count_or_zero("SELECT count(*) FROM events") >= 1_000).then_some(())
    });
    p.postgres.stop();
    worker.wait_for_line(POSTGRES_UNAVAILABLE, Duration::from_secs(15));

    let stop = terminate(&mut worker);
    eprintln!("stop with Postgres stopped: {stop:?}");
    p.postgres.start_again();
    let account = Accounting::take(&published, &mut p.con(), &p.stream, &mut p.db.client());
    let mut f = Findings::default();
    f.stopped_in_time(&stop);
    account.nothing_lost(&mut f);
    f.check(!account.pending.is_empty(), || {
        format!("expected entries still pending (the outage came mid-drain); {}", account.summary())
    });
    f.check(account.dead.is_empty(), || format!("an outage dead-lettered entries; {}", account.summary()));
    f.assert_none("postgres stopped", &worker.output());
}

#[test]
fn stop_within_10s_while_postgres_goes_silent_mid_drain() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    migrate_schema(&db.url);
    let published = publish_many(&mut redis(), &stream.name, 20_000, "silent");
    let relay = Relay::start(via_relay(&db.url, 0).0, false);
    let (_, url) = via_relay(&db.url, relay.port);
    let mut worker = start_worker(&fault_env(&redis_url(), &url, &stream.name));
    wait_until(Duration::from_secs(60), "the drain to be under way", || {
        (db.count("SELECT count(*) FROM events") >= 1_000).then_some(())
    });
    relay.silence();
    // A worker's conversation with Postgres is cut: a statement or a reply was swallowed.
    wait_until(Duration::from_secs(15), "a worker's statement or its reply swallowed", || {
        (relay.swallowed() > 0).then_some(())
    });

    let stop = terminate(&mut worker);
    eprintln!("stop with Postgres silent: {stop:?}");
    let account = Accounting::take(&published, &mut redis(), &stream, &mut db.client());
    let mut f = Findings::default();
    f.stopped_in_time(&stop);
    account.nothing_lost(&mut f);
    f.check(!account.pending.is_empty(), || {
        format!("expected entries still pending (the silence came mid-drain); {}", account.summary())
    });
    f.check(account.dead.is_empty(), || {
        format!("a silent Postgres dead-lettered entries; {}", account.summary())
    });
    f.assert_none("postgres silent", &worker.output());
    drop(relay);
}

#[test]
fn stop_within_10s_while_start_up_waits_on_a_postgres_that_never_answers() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    // Accepts the connection, swallows the start-up message, never replies.
    let relay = Relay::start(via_relay(&db.url, 0).0, true);
    let (_, url) = via_relay(&db.url, relay.port);
    let mut worker = Process::spawn_owned(&["run"], &fault_env(&redis_url(), &url, &stream.name));
    wait_until(Duration::from_secs(15), "the worker's connect to hang in the start-up exchange", || {
        (relay.swallowed() > 0).then_some(())
    });

    let stop = terminate(&mut worker);
    eprintln!("stop while connecting to a silent Postgres: {stop:?}");
    let mut f = Findings::default();
    f.stopped_in_time(&stop);
    f.check(!has_line(&worker.output(), |l| l.contains(START_LINE)), || {
        "the worker claims to have started against a Postgres that never answered".into()
    });
    f.assert_none("postgres never answers", &worker.output());
}

#[test]
fn stop_within_10s_while_every_write_conflicts() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    migrate_schema(&db.url);
    install_failing_trigger(&db, "40001");
    let published = publish_many(&mut redis(), &stream.name, 5_000, "conflict");
    let mut worker = start_worker(&fault_env(&redis_url(), &db.url, &stream.name));
    wait_until(Duration::from_secs(20), "writes to conflict again and again", || {
        (insert_attempts(&db) >= 10).then_some(())
    });

    let stop = terminate(&mut worker);
    eprintln!("stop while conflicting: {stop:?}; attempts {}", insert_attempts(&db));
    let account = Accounting::take(&published, &mut redis(), &stream, &mut db.client());
    let output = worker.output();
    let mut f = Findings::default();
    f.stopped_in_time(&stop);
    account.nothing_acknowledged(&mut f);
    f.check(!has_line(&output, |l| l.contains(POSTGRES_UNAVAILABLE)), || {
        "a conflict was logged as \"Postgres unavailable\"".into()
    });
    f.check(!has_line(&output, |l| l.contains(NEEDS_ATTENTION)), || {
        "a conflict was logged as a refused statement".into()
    });
    f.assert_none("conflicts", &output);
}

#[test]
fn stop_within_10s_while_every_row_is_rejected() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    migrate_schema(&db.url);
    install_failing_trigger(&db, "23514");
    let published = publish_many(&mut redis(), &stream.name, 20_000, "rejected");
    // Batches and workers as shipped (1000, 4): isolating the rows of one batch takes ~2000
    // transactions, and the process holds up to 8 batches.
    let env = worker_env(&redis_url(), &db.url, &stream.name, &[]);
    let mut worker = start_worker(&env);
    let mut con = redis();
    wait_until(Duration::from_secs(30), "rejected rows to be dead-lettered", || {
        (!entries(&mut con, &stream.dlq()).is_empty()).then_some(())
    });

    let stop = terminate(&mut worker);
    eprintln!("stop while rejecting rows: {stop:?}");
    let account = Accounting::take(&published, &mut con, &stream, &mut db.client());
    eprintln!("after stop: {}", account.summary());
    let output = worker.output();
    let mut f = Findings::default();
    f.stopped_in_time(&stop);
    account.nothing_lost(&mut f);
    f.check(account.rows.is_empty(), || format!("a rejected row was written; {}", account.summary()));
    f.check(account.dead.len() < published.len(), || {
        format!("everything was dead-lettered before the stop: it tested nothing; {}", account.summary())
    });
    let reasons: HashSet<String> = entries(&mut con, &stream.dlq())
        .into_iter()
        .filter_map(|(_, e)| e.get("dlq_reason").cloned())
        .collect();
    f.check(reasons.len() == 1, || format!("dead letters with several reasons: {reasons:?}"));
    f.check(!has_line(&output, |l| l.contains(POSTGRES_UNAVAILABLE)), || {
        "a rejected row was logged as \"Postgres unavailable\"".into()
    });
    f.assert_none("rejected rows", &output);
}

#[test]
fn stop_within_10s_while_the_statement_is_refused_and_the_log_says_why() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    migrate_schema(&db.url);
    // The worker connects as a superuser, whom REVOKE does not restrict: a trigger raises
    // insufficient_privilege instead.
    install_failing_trigger(&db, "42501");
    let published = publish_many(&mut redis(), &stream.name, 5_000, "refused");
    let mut worker = start_worker(&fault_env(&redis_url(), &db.url, &stream.name));
    wait_until(Duration::from_secs(20), "the statement to be refused more than once", || {
        (insert_attempts(&db) >= 2).then_some(())
    });
    let error_line = |l: &str| {
        (l.contains(" ERROR ") || l.starts_with("<3>")) && l.contains("42501") && l.contains(NEEDS_ATTENTION)
    };
    // The line is logged when the refusal is met; give it a moment, without failing here.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && !has_line(&worker.output(), error_line) {
        std::thread::sleep(Duration::from_millis(50));
    }

    let stop = terminate(&mut worker);
    eprintln!("stop while refused: {stop:?}; attempts {}", insert_attempts(&db));
    let account = Accounting::take(&published, &mut redis(), &stream, &mut db.client());
    let output = worker.output();
    let mut f = Findings::default();
    f.stopped_in_time(&stop);
    f.check(has_line(&output, error_line), || {
        format!("no ERROR line naming 42501 and saying \"{NEEDS_ATTENTION}\"")
    });
    f.check(!has_line(&output, |l| l.contains(POSTGRES_UNAVAILABLE)), || {
        let line = output.iter().find(|l| l.contains(POSTGRES_UNAVAILABLE)).cloned().unwrap_or_default();
        format!("a refused statement was logged as an outage: {line}")
    });
    account.nothing_acknowledged(&mut f);
    f.assert_none("statement refused", &output);
}

#[test]
fn stop_within_10s_while_the_insert_waits_behind_a_table_lock() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    migrate_schema(&db.url);
    let mut locker = db.client();
    locker.batch_execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE").expect("lock events");
    let published = publish_many(&mut redis(), &stream.name, 5_000, "stalled");
    let mut worker = start_worker(&fault_env(&redis_url(), &db.url, &stream.name));
    let mut admin = postgres::Client::connect(&admin_database_url(), postgres::NoTls).expect("admin");
    wait_until(Duration::from_secs(20), "both workers' writes to wait for the lock", || {
        (writers_waiting_on_a_lock(&mut admin, &db) >= 2).then_some(())
    });

    let stop = terminate(&mut worker);
    eprintln!("stop while stalled: {stop:?}");
    locker.batch_execute("COMMIT").expect("release the lock");
    let account = Accounting::take(&published, &mut redis(), &stream, &mut db.client());
    let mut f = Findings::default();
    f.stopped_in_time(&stop);
    account.nothing_acknowledged(&mut f);
    f.assert_none("stalled insert", &worker.output());
}

#[test]
fn stop_within_10s_while_start_up_waits_for_another_instances_migration() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    // Another instance holds the migration lock (as while it applies a long migration).
    let mut holder = db.client();
    let lock: i64 = 0x7374_7265_616d_736b;
    holder.execute("SELECT pg_advisory_lock($1)", &[&lock]).unwrap();
    let mut worker = Process::spawn_owned(&["run"], &fault_env(&redis_url(), &db.url, &stream.name));
    worker.wait_for_line("lock timeout", Duration::from_secs(20));

    let stop = terminate(&mut worker);
    eprintln!("stop while waiting for the migration lock: {stop:?}");
    let mut f = Findings::default();
    f.stopped_in_time(&stop);
    f.check(!has_line(&worker.output(), |l| l.contains(START_LINE)), || {
        "the worker claims to have started without its migrations".into()
    });
    f.assert_none("migration lock held elsewhere", &worker.output());
}

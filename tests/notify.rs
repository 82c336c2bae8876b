//! systemd's notify protocol as the worker speaks it, heard on a notify socket of the test's
//! own (the datagram socket systemd gives a `Type=notify` service in `NOTIFY_SOCKET`): READY
//! only once start-up is done, a STATUS line an operator can read, STOPPING and
//! EXTEND_TIMEOUT_USEC on a stop. (`scripts/vm-test.sh` is where a real systemd listens.)

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use serde_json::json;

/// A notify socket collecting every datagram sent to it.
struct NotifySocket {
    path: PathBuf,
    heard: Arc<Mutex<Vec<String>>>,
    _listener: JoinHandle<()>,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = std::env::temp_dir().join(unique("ss-notify"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&heard);
        let listener = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]);
                sink.lock().unwrap().extend(text.lines().map(str::to_string));
            }
        });
        NotifySocket { path, heard, _listener: listener }
    }

    fn heard(&self) -> Vec<String> {
        self.heard.lock().unwrap().clone()
    }

    /// Waits for a message satisfying `pred`; returns it.
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_until(Duration::from_secs(20), &format!("{what}; heard {:?}", self.heard()), || {
            self.heard().into_iter().find(|m| pred(m))
        })
    }
}

/// `streamsink run` talking to `notify`, with `extra` settings or systemd variables.
fn worker(notify: &NotifySocket, database_url: &str, stream: &TestStream, extra: &[(&str, &str)]) -> Process {
    let mut env: Vec<(String, String)> = vec![
        ("REDIS_URL".into(), redis_url()),
        ("DATABASE_URL".into(), database_url.into()),
        ("STREAMSINK_STREAMS".into(), stream.name.clone()),
        ("STREAMSINK_BLOCK".into(), "200ms".into()),
        ("STREAMSINK_STATS_INTERVAL".into(), "250ms".into()),
        ("NOTIFY_SOCKET".into(), notify.path.to_string_lossy().into_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Process::spawn_owned(&["run"], &env)
}

#[test]
fn ready_follows_start_up_status_tells_the_pipeline_and_a_stop_says_stopping() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let notify = NotifySocket::bind();
    let mut p = worker(&notify, &db.url, &stream, &[]);
    notify.wait_for("READY=1", |m| m == "READY=1");
    assert!(
        p.output().iter().any(|l| l.contains("Event consumer started")),
        "READY came before start-up was done: {:?}",
        p.output()
    );
    let first = notify.wait_for("a STATUS line", |m| m.starts_with("STATUS=rate "));
    assert!(first.contains("lag 0, pending 0") && first.contains("no commit yet"), "{first}");

    let mut r = redis();
    for i in 0..10 {
        publish_event(&mut r, &stream.name, json!({"id": format!("n-{i}"), "type": "t"}));
    }
    let after = notify.wait_for("a STATUS line after a commit", |m| {
        m.starts_with("STATUS=") && m.contains("pending 0") && m.contains("last commit")
    });
    assert!(!after.contains("unavailable"), "{after}");

    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).0, Some(0));
    let heard = notify.heard();
    assert!(heard.iter().any(|m| m == "STOPPING=1"), "{heard:?}");
    let extend = heard.iter().find(|m| m.starts_with("EXTEND_TIMEOUT_USEC=")).expect("EXTEND_TIMEOUT_USEC");
    let usec: u64 = extend["EXTEND_TIMEOUT_USEC=".len()..].parse().unwrap();
    assert!((5_000_000..=15_000_000).contains(&usec), "{extend}");
}

#[test]
fn ready_is_not_sent_while_postgres_cannot_be_reached() {
    let stream = TestStream::new();
    let notify = NotifySocket::bind();
    let url = format!("postgres://postgres@127.0.0.1:{}/none", free_port());
    let mut p = worker(&notify, &url, &stream, &[]);
    p.wait_for_line("(attempt 2)", Duration::from_secs(30));
    assert!(!notify.heard().iter().any(|m| m == "READY=1"), "{:?}", notify.heard());
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).0, Some(0));
    assert!(!notify.heard().iter().any(|m| m == "READY=1"), "{:?}", notify.heard());
}

#[test]
fn status_names_a_postgres_outage_and_how_long_it_lasts() {
    let postgres = PrivatePostgres::start();
    let db = TestDb::create_on(&postgres.admin_url());
    let stream = TestStream::new();
    let notify = NotifySocket::bind();
    let mut p = worker(&notify, &db.url, &stream, &[]);
    notify.wait_for("READY=1", |m| m == "READY=1");
    postgres.stop();
    publish_event(&mut redis(), &stream.name, json!({"id": "during-outage", "type": "t"}));
    let line = notify.wait_for("STATUS naming the outage", |m| m.contains("; Postgres unavailable for "));
    assert!(line.starts_with("STATUS=rate "), "{line}");
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).0, Some(0));
}

#[test]
fn the_watchdog_is_fed_only_while_every_thread_shows_signs_of_life() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let notify = NotifySocket::bind();
    // WatchdogSec=4s: fed every second while every thread beat within 2 s.
    let mut p = worker(&notify, &db.url, &stream, &[("WATCHDOG_USEC", "4000000")]);
    let pings = || notify.heard().iter().filter(|m| *m == "WATCHDOG=1").count();
    let statuses = || notify.heard().iter().filter(|m| m.starts_with("STATUS=")).count();
    notify.wait_for("READY=1", |m| m == "READY=1");
    wait_until(Duration::from_secs(10), "two watchdog pings while idle", || (pings() >= 2).then_some(()));

    // A worker stuck in a statement: its INSERT waits behind a lock that is never released.
    let mut holder = db.client();
    let mut lock = holder.transaction().unwrap();
    lock.batch_execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE").unwrap();
    publish_event(&mut redis(), &stream.name, json!({"id": "stuck", "type": "t"}));
    p.wait_for_line("withholding the watchdog ping", Duration::from_secs(15));
    let starved_at = pings();
    let seen = statuses();
    wait_until(Duration::from_secs(10), "two more seconds of status lines", || {
        (statuses() >= seen + 8).then_some(())
    });
    assert_eq!(pings(), starved_at, "the watchdog was fed while a worker was stuck");

    lock.rollback().unwrap();
    p.wait_for_line("every thread is alive again", Duration::from_secs(15));
    wait_until(Duration::from_secs(10), "pings to resume", || (pings() > starved_at).then_some(()));
    assert_eq!(db.count("SELECT count(*) FROM events WHERE id = 'stuck'"), 1);
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).0, Some(0));
}

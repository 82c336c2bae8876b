//! Secrets cannot leak by construction: the real binary is given passwords in every form the
//! client libraries read one from (and in places it does not belong), and no piece of any of
//! them may appear in anything it prints, while the host and port it tried still do.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const START_LINE: &str = "Event consumer started";

/// Fails unless no piece of a secret appears in `out` and every part of `shown` does.
fn check(case: &str, out: &str, pieces: &[&str], shown: &[&str]) {
    for piece in pieces {
        assert!(!out.contains(piece), "{case}: {piece:?} leaked:\n{out}");
    }
    for part in shown {
        assert!(out.contains(part), "{case}: {part:?} should be shown:\n{out}");
    }
}

/// Waits for a line holding `needle`, stops the process with SIGTERM, and returns all its
/// output once it has exited cleanly.
fn output_after(p: &mut Process, needle: &str, deadline: Duration) -> String {
    p.wait_for_line(needle, deadline);
    p.signal("TERM");
    let (code, _) = p.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{:?}", p.output());
    p.output().join("\n")
}

#[test]
fn redis_passwords_never_leak_while_start_up_retries() {
    let db = TestDb::create();
    let port = free_port(); // nothing listens there
    let socket = std::env::temp_dir().join(unique("ss-no-redis")).with_extension("sock");
    let socket = socket.display().to_string();
    let at = format!("127.0.0.1:{port}");
    let cases: Vec<(String, Vec<&str>, Vec<&str>)> = vec![
        // redis-rs reads `pass` from a unix URL's query.
        (format!("unix://{socket}?pass=s3cretA"), vec!["s3cretA"], vec![&socket]),
        // A percent-encoded '@': neither the encoded nor the decoded form may show.
        (format!("redis://:s3cret%40B@{at}"), vec!["s3cret", "%40B", "@B"], vec![&at]),
        // A password holding '@' and ':' (the last '@' ends it): no half of it may show.
        (format!("redis://user:p@ss:w0rd@{at}"), vec!["p@ss", "ss:w0rd", "w0rd"], vec![&at, "user"]),
    ];
    let mut running: Vec<Process> = cases
        .iter()
        .map(|(url, ..)| Process::spawn(&["run"], &[("REDIS_URL", url), ("DATABASE_URL", &db.url)]))
        .collect();
    for (p, (url, pieces, shown)) in running.iter_mut().zip(&cases) {
        let out = output_after(p, "(attempt 2)", Duration::from_secs(10));
        check(url, &out, pieces, shown);
        assert!(out.contains("cannot connect to Redis at"), "{url}: the failure is not reported:\n{out}");
    }
}

/// A private redis-server listening only on a unix socket, with a password; killed on drop.
struct SocketRedis {
    dir: PathBuf,
    child: Child,
}

impl SocketRedis {
    fn start(password: &str) -> SocketRedis {
        let dir = std::env::temp_dir().join(unique("ss-sock"));
        std::fs::create_dir_all(&dir).expect("socket dir");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocketperm", "700", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(dir.join("redis.sock"))
            .arg("--dir")
            .arg(&dir)
            .args(["--requirepass", password])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/services.sh installs it)");
        let r = SocketRedis { dir, child };
        let url = r.url(password);
        wait_until(Duration::from_secs(10), "the socket redis-server to answer", || {
            let mut con = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()).ok()?;
            redis::cmd("PING").query::<String>(&mut con).ok()
        });
        r
    }

    fn socket(&self) -> String {
        self.dir.join("redis.sock").display().to_string()
    }

    fn url(&self, password: &str) -> String {
        format!("unix://{}?pass={password}", self.socket())
    }
}

impl Drop for SocketRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_unix_socket_password_is_used_and_never_shown() {
    let secret = "s3cret-sock-A";
    let redis = SocketRedis::start(secret);
    let (db, stream) = (TestDb::create(), TestStream::on(&redis.url(secret)));
    let socket = redis.socket();

    // The right password: the worker starts, so the password was read from `?pass=`.
    let url = redis.url(secret);
    let env = [("REDIS_URL", url.as_str()), ("DATABASE_URL", &db.url), ("STREAMSINK_STREAMS", &stream.name)];
    let mut p = Process::spawn(&["run"], &env);
    let out = output_after(&mut p, START_LINE, Duration::from_secs(20));
    check("right password", &out, &[secret], &[&socket, "pass=***"]);

    // A wrong one: the refused attempts are logged, without it.
    let wrong = "wr0ng-sock-B";
    let url = redis.url(wrong);
    let env = [("REDIS_URL", url.as_str()), ("DATABASE_URL", &db.url), ("STREAMSINK_STREAMS", &stream.name)];
    let mut p = Process::spawn(&["run"], &env);
    let out = output_after(&mut p, "(attempt 2)", Duration::from_secs(10));
    check("wrong password", &out, &[wrong, secret], &[&socket]);
}

#[test]
fn postgres_passwords_never_leak_while_start_up_retries() {
    let stream = TestStream::new();
    let at = format!("127.0.0.1:{}", free_port()); // nothing listens there
    let (host, port) = at.split_once(':').unwrap();
    let cases: Vec<(String, Vec<&str>)> = vec![
        // libpq key/value strings: spaces around '=', a quoted value holding a space, an
        // escaped quote.
        (format!("host={host} port={port} password = s3cretC user=u dbname=d"), vec!["s3cretC"]),
        (format!("host={host} password='s3cret D' port={port}"), vec!["s3cret", "cret D"]),
        (
            format!(r"host={host} port={port} password='it\'s s3cretF' user=u"),
            vec!["s3cretF", "it's", r"it\'s"],
        ),
        // A password in the URL's query.
        (format!("postgres://{at}/db?user=u&password=s3cretE"), vec!["s3cretE"]),
    ];
    // `migrate` reports the failure and exits 1; `run` retries until stopped.
    let mut migrating: Vec<Process> =
        cases.iter().map(|(url, _)| Process::spawn(&["migrate"], &[("DATABASE_URL", url)])).collect();
    let redis = redis_url();
    let mut running: Vec<Process> = cases
        .iter()
        .map(|(url, _)| {
            let env =
                [("REDIS_URL", redis.as_str()), ("DATABASE_URL", url), ("STREAMSINK_STREAMS", &stream.name)];
            Process::spawn(&["run"], &env)
        })
        .collect();
    for (p, (url, pieces)) in migrating.iter_mut().zip(&cases) {
        let (code, _) = p.wait_exit(Duration::from_secs(20));
        let out = p.output().join("\n");
        assert_eq!(code, Some(1), "{url}: {out}");
        assert!(out.contains("cannot connect to Postgres"), "{url}: the failure is not reported:\n{out}");
        check(url, &out, pieces, &[&at]);
    }
    for (p, (url, pieces)) in running.iter_mut().zip(&cases) {
        let out = output_after(p, "postgres not ready (attempt 1)", Duration::from_secs(20));
        check(url, &out, pieces, &["connecting: redis", &at]);
    }
}

#[test]
fn a_key_value_string_with_a_spaced_quoted_password_connects() {
    let (db, stream) = (TestDb::create(), TestStream::new());
    let config: postgres::Config = db.url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("a TCP test database expected, not {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let (user, dbname) = (config.get_user().unwrap(), config.get_dbname().unwrap());
    // The local server trusts 127.0.0.1, so the password is sent nowhere that checks it: what
    // this shows is that the string is read the way libpq reads it, and never printed.
    let kv = format!(r"host = {host} port= {port} user ={user} dbname={dbname} password = 'it\'s s3cret G'");
    let redis = redis_url();
    let env = [("REDIS_URL", redis.as_str()), ("DATABASE_URL", &kv), ("STREAMSINK_STREAMS", &stream.name)];
    let mut p = Process::spawn(&["run"], &env);
    let out = output_after(&mut p, START_LINE, Duration::from_secs(20));
    let shown = format!("postgres://{user}:***@{host}:{port}/{dbname}");
    check("key/value", &out, &["s3cret", "it's", " G'"], &[&shown]);
}

#[test]
fn a_mistyped_command_line_never_echoes_what_was_typed() {
    let ok_redis = ("REDIS_URL", "redis://127.0.0.1:1");
    let ok_db = ("DATABASE_URL", "postgres://u@127.0.0.1:1/db");
    // (arguments, environment, pieces that must not appear, what the line must say)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, Vec<&'a str>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        // URLs given without their flag.
        (
            vec!["run", "redis://:s3cretH@127.0.0.1:6379"],
            vec![ok_redis, ok_db],
            vec!["s3cretH"],
            vec!["--database-url"],
        ),
        (vec!["redis://u:p@ss:w0rd@h"], vec![], vec!["p@ss", "w0rd", "u:p"], vec!["run, migrate"]),
        (
            vec!["run", "host=h password=s3cretI"],
            vec![ok_redis, ok_db],
            vec!["s3cretI"],
            vec!["DATABASE_URL"],
        ),
        (vec!["migrate", "postgres://u:s3cretJ@h/db"], vec![ok_db], vec!["s3cretJ"], vec!["DATABASE_URL"]),
        (
            vec!["run", "--", "redis://:s3cretK@h"],
            vec![ok_redis, ok_db],
            vec!["s3cretK"],
            vec!["unexpected argument"],
        ),
        // A secret taken for a short option (clap reports only its first letter).
        (
            vec!["run", "-s3cretL"],
            vec![ok_redis, ok_db],
            vec!["s3cretL", "'-s'"],
            vec!["unexpected argument"],
        ),
        // A URL given twice.
        (
            vec!["run", "--redis-url", "redis://:s3cretM@h", "--redis-url", "redis://:s3cretN@h"],
            vec![ok_db],
            vec!["s3cretM", "s3cretN"],
            vec!["--redis-url"],
        ),
        // Values that do not parse.
        (vec!["run"], vec![("REDIS_URL", "http://:s3cretO@h"), ok_db], vec!["s3cretO"], vec!["REDIS_URL"]),
        (
            vec!["run"],
            vec![("REDIS_URL", "redis://u:12#s3cretP@h"), ok_db],
            vec!["s3cretP", "12"],
            vec!["REDIS_URL"],
        ),
        (
            vec!["run"],
            vec![ok_redis, ("DATABASE_URL", "host=h password=s3cretQ Dx9q port=1")],
            vec!["s3cretQ", "Dx9q"],
            vec!["DATABASE_URL", "quote"],
        ),
        (
            vec!["migrate"],
            vec![("DATABASE_URL", "postgres://u:s3c:r@t@127.0.0.1:1/db")],
            vec!["s3c", ":r@", "t@"],
            vec!["127.0.0.1:1", "%40"],
        ),
    ];
    let mut started: Vec<(Process, &Case)> =
        cases.iter().map(|case| (Process::spawn(&case.0, &case.1), case)).collect();
    for (p, (args, env, pieces, said)) in started.iter_mut() {
        let (code, _) = p.wait_exit(Duration::from_secs(20));
        let out = p.output();
        let case = format!("{args:?} {env:?}");
        assert_eq!(code, Some(2), "{case}: {out:?}");
        assert_eq!(out.len(), 1, "{case}: {out:?}");
        check(&case, &out[0], pieces, said);
    }
}

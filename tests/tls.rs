//! TLS to Redis and to PostgreSQL, against real servers that speak only TLS: a private CA
//! (rcgen), a redis-server with its TLS port only, a PostgreSQL cluster with `ssl = on` and
//! `hostssl`-only TCP access. What an operator meets (one-line errors naming the setting, exit
//! codes) is checked on the binary; how each mode verifies, on the library's own connections.

mod common;

use std::time::Duration;

use clap::Parser;
use common::tls::{Pki, TlsRedis, serve_certificate, tls_postgres};
use common::*;
use streamsink::config::PostgresSettings;
use streamsink::sink::pool::Postgres;

const GROUP: &str = "event-processors";
const START_LINE: &str = "Event consumer started";

/// Waits for the process to exit; returns its code and its output.
fn exit_of(mut p: Process) -> (Option<i32>, Vec<String>) {
    let (code, _) = p.wait_exit(Duration::from_secs(30));
    (code, p.output())
}

/// The one line of `out` holding `needle`; fails if none or several do.
fn the_line<'a>(out: &'a [String], needle: &str) -> &'a str {
    let lines: Vec<&String> = out.iter().filter(|l| l.contains(needle)).collect();
    assert_eq!(lines.len(), 1, "one line holding {needle:?} expected in {out:#?}");
    lines[0]
}

/// `SELECT ssl FROM pg_stat_ssl` for the worker's connections (application_name streamsink)
/// to `db`, as seen by the test's own connection.
fn worker_connections_ssl(db: &TestDb) -> Vec<bool> {
    let rows = db
        .client()
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'streamsink' AND a.datname = current_database()",
            &[],
        )
        .expect("pg_stat_ssl");
    rows.iter().map(|r| r.get(0)).collect()
}

/// A TLS-only Redis and a TLS-only PostgreSQL of the test's own, a database on it and a stream
/// name. Fields drop in order: the database before its server, the certificates last.
struct Servers {
    db: TestDb,
    pg: PrivatePostgres,
    redis: TlsRedis,
    stream: String,
    pki: Pki,
}

impl Servers {
    fn start() -> Servers {
        let pki = Pki::new();
        let redis = TlsRedis::start(&pki, false);
        let pg = tls_postgres(&pki);
        let db = TestDb::create_on(&pg.socket_admin_url());
        Servers { db, pg, redis, stream: unique("ss:stream"), pki }
    }

    fn database_url(&self) -> String {
        format!("postgres://postgres@localhost:{}/{}", self.pg.port, self.db.name)
    }

    /// `streamsink run` verifying both servers (verify-full) against the test CA.
    fn verifying_worker(&self) -> Process {
        let (ca, database_url, redis_url) = (self.pki.path("ca.pem"), self.database_url(), self.redis.url());
        Process::spawn(
            &["run"],
            &[
                ("REDIS_URL", redis_url.as_str()),
                ("STREAMSINK_REDIS_CA", &ca),
                ("DATABASE_URL", &database_url),
                ("STREAMSINK_PG_TLS", "verify-full"),
                ("STREAMSINK_PG_CA", &ca),
                ("STREAMSINK_STREAMS", &self.stream),
                ("STREAMSINK_BLOCK", "200ms"),
            ],
        )
    }
}

#[test]
fn events_drain_over_tls_to_both_and_every_connection_is_encrypted() {
    let servers = Servers::start();
    let Servers { db, redis, stream, pki, .. } = &servers;
    let mut con = redis.con(pki);
    publish_many(&mut con, stream, 300, "tls");

    let p = servers.verifying_worker();
    let connecting = p.wait_for_line("connecting:", Duration::from_secs(10));
    assert!(connecting.contains(&format!("rediss://127.0.0.1:{}", redis.port)), "{connecting}");
    assert!(connecting.contains("(TLS verify-full)"), "{connecting}");
    wait_until(Duration::from_secs(30), "300 rows over TLS", || {
        (db.count_or_zero("SELECT count(*) FROM events") == 300).then_some(())
    });
    wait_until(Duration::from_secs(10), "nothing pending", || {
        (pending(&mut con, stream, GROUP) == 0).then_some(())
    });
    let ssl = worker_connections_ssl(db);
    assert!(!ssl.is_empty() && ssl.iter().all(|s| *s), "the worker's connections: ssl = {ssl:?}");
    // And Redis sees only TLS clients: its TCP port is closed (port 0), so the worker's reader,
    // acker and stats connections all came in on the TLS port.
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).expect("CLIENT LIST");
    assert!(clients.lines().count() >= 3, "the worker's connections: {clients}");
    p.signal("TERM");
    let (code, out) = exit_of(p);
    assert_eq!(code, Some(0), "{out:#?}");
}

#[test]
fn mutual_tls_to_redis_needs_the_client_certificate() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, true);
    let db = TestDb::create(); // the shared PostgreSQL: this test is about Redis
    let stream = unique("ss:stream");
    let mut con = redis.con(&pki);
    publish_many(&mut con, &stream, 50, "mtls");
    let (url, ca) = (redis.url(), pki.path("ca.pem"));
    let base = [
        ("REDIS_URL", url.as_str()),
        ("STREAMSINK_REDIS_CA", ca.as_str()),
        ("DATABASE_URL", db.url.as_str()),
        ("STREAMSINK_STREAMS", stream.as_str()),
    ];

    // Without a client certificate: refused by the server, named, exit 1 at once.
    let (code, out) = exit_of(Process::spawn(&["run"], &base));
    assert_eq!(code, Some(1), "{out:#?}");
    let line = the_line(&out, "cannot connect to Redis");
    assert!(line.contains(&format!("at rediss://127.0.0.1:{}/0", redis.port)), "{line}");
    assert!(line.contains("set STREAMSINK_REDIS_CERT and STREAMSINK_REDIS_KEY"), "{line}");

    // A certificate another CA signed: refused too.
    let (cert, key) = (pki.path("other-client.pem"), pki.path("other-client.key"));
    let env: Vec<(&str, &str)> = base
        .iter()
        .copied()
        .chain([("STREAMSINK_REDIS_CERT", cert.as_str()), ("STREAMSINK_REDIS_KEY", key.as_str())])
        .collect();
    let (code, out) = exit_of(Process::spawn(&["run"], &env));
    assert_eq!(code, Some(1), "{out:#?}");
    assert!(
        the_line(&out, "cannot connect to Redis")
            .contains("check STREAMSINK_REDIS_CERT and STREAMSINK_REDIS_KEY")
    );

    // With the CA's client certificate: the events drain.
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let env: Vec<(&str, &str)> = base
        .iter()
        .copied()
        .chain([("STREAMSINK_REDIS_CERT", cert.as_str()), ("STREAMSINK_REDIS_KEY", key.as_str())])
        .collect();
    let p = Process::spawn(&["run"], &env);
    p.wait_for_line(START_LINE, Duration::from_secs(20));
    wait_until(Duration::from_secs(30), "50 rows", || {
        (db.count_or_zero("SELECT count(*) FROM events") == 50).then_some(())
    });
    wait_until(Duration::from_secs(10), "nothing pending", || {
        (pending(&mut con, &stream, GROUP) == 0).then_some(())
    });
    p.signal("TERM");
    let (code, out) = exit_of(p);
    assert_eq!(code, Some(0), "{out:#?}");
}

#[test]
fn a_wrong_ca_fails_at_start_in_one_line_naming_the_setting() {
    let servers = Servers::start();
    let Servers { db, pg, redis, stream, pki } = &servers;
    let (wrong, right) = (pki.path("other-ca.pem"), pki.path("ca.pem"));
    let redis_url = redis.url();
    let database_url = servers.database_url();

    // Redis: the worker exits 1 on its first attempt with one error line.
    let (code, out) = exit_of(Process::spawn(
        &["run"],
        &[
            ("REDIS_URL", redis_url.as_str()),
            ("STREAMSINK_REDIS_CA", &wrong),
            ("DATABASE_URL", &database_url),
            ("STREAMSINK_PG_CA", &right),
            ("STREAMSINK_STREAMS", stream),
        ],
    ));
    assert_eq!(code, Some(1), "{out:#?}");
    let line = the_line(&out, "cannot connect to Redis");
    assert!(
        line.ends_with(&format!(
            "cannot connect to Redis at rediss://127.0.0.1:{}/0: invalid peer certificate: UnknownIssuer (check \
             STREAMSINK_REDIS_CA)",
            redis.port
        )),
        "{line}"
    );
    assert!(!out.iter().any(|l| l.contains("retrying")), "not retried: {out:#?}");

    // PostgreSQL, verify-full: `run` and `migrate` alike.
    let pg_env = [
        ("REDIS_URL", redis_url.as_str()),
        ("STREAMSINK_REDIS_CA", right.as_str()),
        ("DATABASE_URL", database_url.as_str()),
        ("STREAMSINK_PG_TLS", "verify-full"),
        ("STREAMSINK_PG_CA", wrong.as_str()),
        ("STREAMSINK_STREAMS", stream.as_str()),
    ];
    for args in [&["run"][..], &["migrate"][..]] {
        let (code, out) = exit_of(Process::spawn(args, &pg_env));
        assert_eq!(code, Some(1), "{args:?}: {out:#?}");
        let line = the_line(&out, "cannot connect to Postgres");
        assert!(
            line.contains(&format!("at postgres://postgres@localhost:{}/{}", pg.port, db.name)),
            "{line}"
        );
        assert!(line.ends_with("invalid peer certificate: UnknownIssuer (check STREAMSINK_PG_CA)"), "{line}");
        assert!(!out.iter().any(|l| l.contains("retrying")), "{args:?} not retried: {out:#?}");
    }
}

#[test]
fn clear_text_to_a_tls_only_server_fails_clearly_and_tls_to_a_clear_text_one_too() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false);
    let pg = tls_postgres(&pki);
    let db = TestDb::create_on(&pg.socket_admin_url());
    let stream = TestStream::new();

    // redis:// to the TLS port: the server hangs up; start-up says so, suggests rediss://,
    // and keeps trying (the server may be restarting) until stopped.
    let plain = format!("redis://127.0.0.1:{}", redis.port);
    let p = Process::spawn(
        &["run"],
        &[
            ("REDIS_URL", plain.as_str()),
            ("DATABASE_URL", &TestDb::create().url),
            ("STREAMSINK_STREAMS", &stream.name),
        ],
    );
    let line = p.wait_for_line("cannot connect to Redis", Duration::from_secs(15));
    assert!(line.contains(&format!("at redis://127.0.0.1:{}/0", redis.port)), "{line}");
    assert!(line.contains("if it accepts only TLS, use a rediss:// URL"), "{line}");
    p.signal("TERM");
    let (code, out) = exit_of(p);
    assert_eq!(code, Some(0), "{out:#?}");

    // Clear text to PostgreSQL's hostssl-only TCP: the server's refusal, and the setting.
    for (url, tls) in [
        (format!("postgres://postgres@127.0.0.1:{}/{}", pg.port, db.name), "off"),
        (format!("postgres://postgres@127.0.0.1:{}/{}?sslmode=disable", pg.port, db.name), ""),
    ] {
        let mut env = vec![("DATABASE_URL", url.as_str())];
        if !tls.is_empty() {
            env.push(("STREAMSINK_PG_TLS", tls));
        }
        let (code, out) = exit_of(Process::spawn(&["migrate"], &env));
        assert_eq!(code, Some(1), "{out:#?}");
        let line = the_line(&out, "cannot connect to Postgres");
        assert!(line.contains("no encryption (SQLSTATE 28000)"), "{line}");
        assert!(line.contains("set STREAMSINK_PG_TLS=require or verify-full"), "{line}");
    }

    // rediss:// to a clear-text port: Redis waits for the end of a command that never comes,
    // so the handshake times out (10 s); the line says where to look.
    let clear = PrivateRedis::start(None);
    let tls_url = format!("rediss://127.0.0.1:{}", clear.port);
    let p = Process::spawn(
        &["run"],
        &[("REDIS_URL", tls_url.as_str()), ("DATABASE_URL", &db.url), ("STREAMSINK_STREAMS", &stream.name)],
    );
    let line = p.wait_for_line("cannot connect to Redis", Duration::from_secs(20));
    assert!(line.contains("no answer to the TLS handshake: check that the port in REDIS_URL"), "{line}");
    p.signal("TERM");
    let (code, out) = exit_of(p);
    assert_eq!(code, Some(0), "{out:#?}");

    // require to a PostgreSQL without TLS: refused at once.
    let no_tls = PrivatePostgres::start();
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", no_tls.port);
    let (code, out) =
        exit_of(Process::spawn(&["migrate"], &[("DATABASE_URL", &url), ("STREAMSINK_PG_TLS", "require")]));
    assert_eq!(code, Some(1), "{out:#?}");
    assert!(the_line(&out, "cannot connect to Postgres").contains("this server has no TLS"), "{out:#?}");
}

/// PostgreSQL settings parsed as a command line would (flags only).
fn pg_settings(flags: &[&str]) -> PostgresSettings {
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        postgres: PostgresSettings,
    }
    let args =
        Args::try_parse_from(std::iter::once("streamsink").chain(flags.iter().copied())).expect("settings");
    args.postgres.check().expect("settings that go together");
    args.postgres
}

/// Connects as `flags` say; `Ok(ssl)` from `pg_stat_ssl` for the connection itself.
fn connect_with(flags: &[&str]) -> Result<bool, String> {
    let settings = pg_settings(flags);
    let mut client = Postgres::new(&settings.database_url, &settings.tls)
        .and_then(|p| p.connect())
        .map_err(|e| e.to_string())?;
    let row = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[test]
fn each_postgres_mode_verifies_what_it_says_and_the_setting_overrides_sslmode() {
    let pki = Pki::new();
    let pg = tls_postgres(&pki);
    let (ca, other) = (pki.path("ca.pem"), pki.path("other-ca.pem"));
    let right = format!("postgres://postgres@localhost:{}/postgres", pg.port);
    // A host name the certificate does not hold, reaching the same server (libpq's hostaddr).
    let wrong = format!("postgres://postgres@db.invalid:{}/postgres?hostaddr=127.0.0.1", pg.port);
    let wrong_full = format!("{wrong}&sslmode=verify-full");

    // The default (prefer, as libpq) encrypts where the server offers TLS, verifying nothing.
    assert_eq!(connect_with(&["--database-url", &right]), Ok(true));
    // require: encrypted, no CA needed, the host name not checked.
    assert_eq!(connect_with(&["--database-url", &wrong, "--pg-tls", "require"]), Ok(true));
    // ... but with a CA the chain is checked, as libpq does.
    let e = connect_with(&["--database-url", &wrong, "--pg-tls", "require", "--pg-ca", &other]).unwrap_err();
    assert!(e.ends_with("UnknownIssuer (check STREAMSINK_PG_CA)"), "{e}");
    assert_eq!(connect_with(&["--database-url", &wrong, "--pg-tls", "require", "--pg-ca", &ca]), Ok(true));
    // verify-full: the chain and the host name.
    assert_eq!(
        connect_with(&["--database-url", &right, "--pg-tls", "verify-full", "--pg-ca", &ca]),
        Ok(true)
    );
    let e = connect_with(&["--database-url", &wrong, "--pg-tls", "verify-full", "--pg-ca", &ca]).unwrap_err();
    assert!(
        e.contains("not valid for name \"db.invalid\"") && e.contains("check the host in DATABASE_URL"),
        "{e}"
    );
    let e =
        connect_with(&["--database-url", &right, "--pg-tls", "verify-full", "--pg-ca", &other]).unwrap_err();
    assert!(e.ends_with("(check STREAMSINK_PG_CA)"), "{e}");
    // The URL's sslmode decides when STREAMSINK_PG_TLS is unset (verify-full read from it too) ...
    let e = connect_with(&["--database-url", &wrong_full, "--pg-ca", &ca]).unwrap_err();
    assert!(e.contains("check the host in DATABASE_URL"), "{e}");
    let verify_ca = format!("{wrong}&sslmode=verify-ca");
    assert_eq!(connect_with(&["--database-url", &verify_ca, "--pg-ca", &ca]), Ok(true));
    // ... and the setting overrides it.
    assert_eq!(
        connect_with(&["--database-url", &wrong_full, "--pg-tls", "require", "--pg-ca", &ca]),
        Ok(true)
    );
}

#[test]
fn bad_tls_settings_stop_the_process_before_it_connects_in_one_line() {
    let pki = Pki::new();
    let not_pem = pki.dir.join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let not_pem = not_pem.display().to_string();
    let (ca, cert, other_key) = (pki.path("ca.pem"), pki.path("client.pem"), pki.path("other-client.key"));
    // Nothing listens on these: a setting refused is refused before any connection.
    let (rediss, redis, pg) = ("rediss://127.0.0.1:1", "redis://127.0.0.1:1", "postgres://u@127.0.0.1:1/db");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("REDIS_URL", rediss), ("STREAMSINK_REDIS_CA", "/nonexistent/ca.pem")],
            "invalid setting STREAMSINK_REDIS_CA (--redis-ca): '/nonexistent/ca.pem' cannot be read",
        ),
        (
            vec![("REDIS_URL", rediss), ("STREAMSINK_PG_CA", &not_pem)],
            "invalid setting STREAMSINK_PG_CA (--pg-ca): ",
        ),
        (
            vec![("REDIS_URL", rediss), ("STREAMSINK_REDIS_CERT", &cert), ("STREAMSINK_REDIS_KEY", &cert)],
            "invalid setting STREAMSINK_REDIS_KEY (--redis-key): ",
        ),
        (
            vec![("REDIS_URL", redis), ("STREAMSINK_REDIS_CA", &ca)],
            "invalid setting STREAMSINK_REDIS_CA (--redis-ca): is for TLS, but REDIS_URL (--redis-url) is not a \
             rediss:// URL",
        ),
        (
            vec![("REDIS_URL", rediss), ("STREAMSINK_REDIS_CERT", &cert)],
            "invalid setting STREAMSINK_REDIS_KEY (--redis-key): required with STREAMSINK_REDIS_CERT (--redis-cert)",
        ),
        (
            vec![
                ("REDIS_URL", rediss),
                ("STREAMSINK_REDIS_CERT", &cert),
                ("STREAMSINK_REDIS_KEY", &other_key),
            ],
            "invalid setting STREAMSINK_REDIS_KEY (--redis-key): is not the private key of the certificate in \
             STREAMSINK_REDIS_CERT (--redis-cert)",
        ),
        (
            vec![("REDIS_URL", "rediss://127.0.0.1:1#insecure")],
            "invalid setting REDIS_URL (--redis-url): a rediss:// URL ending in #insecure",
        ),
        (
            vec![("REDIS_URL", rediss), ("STREAMSINK_PG_TLS", "verify-ca")],
            "invalid setting STREAMSINK_PG_TLS (--pg-tls): 'verify-ca' is not off, require or verify-full",
        ),
        (
            vec![("REDIS_URL", rediss), ("STREAMSINK_PG_TLS", "off"), ("STREAMSINK_PG_CA", &ca)],
            "invalid setting STREAMSINK_PG_CA (--pg-ca): TLS to PostgreSQL is off",
        ),
        (
            vec![
                ("REDIS_URL", rediss),
                ("DATABASE_URL", "postgres://u@%2Frun%2Fpostgresql/db?sslmode=verify-full"),
            ],
            "invalid setting DATABASE_URL (--database-url): asks for TLS (verify-full), but",
        ),
    ];
    for (env, expected) in cases {
        let mut env = env;
        if !env.iter().any(|(k, _)| *k == "DATABASE_URL") {
            env.push(("DATABASE_URL", pg));
        }
        let (code, out) = exit_of(Process::spawn(&["run"], &env));
        assert_eq!(code, Some(2), "{env:?}: {out:#?}");
        assert_eq!(out.len(), 1, "{env:?}: one line: {out:#?}");
        assert!(out[0].contains(expected), "{env:?}: {:?} should hold {expected:?}", out[0]);
    }
}

#[test]
fn at_the_stop_deadline_statements_are_cancelled_over_tls() {
    let pki = Pki::new();
    let pg = tls_postgres(&pki);
    let db = TestDb::create_on(&pg.socket_admin_url());
    let stream = TestStream::new(); // the shared Redis: this test is about PostgreSQL
    let database_url = format!("postgres://postgres@localhost:{}/{}", pg.port, db.name);
    migrate_schema(&database_url); // sslmode prefer (none given): TLS, as the server offers it
    let mut locker = db.client();
    locker.batch_execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE").expect("lock events");
    publish_many(&mut redis(), &stream.name, 200, "locked");
    let ca = pki.path("ca.pem");
    let redis_url = redis_url();
    let mut p = Process::spawn(
        &["run"],
        &[
            ("REDIS_URL", redis_url.as_str()),
            ("DATABASE_URL", &database_url),
            ("STREAMSINK_PG_TLS", "verify-full"),
            ("STREAMSINK_PG_CA", &ca),
            ("STREAMSINK_STREAMS", &stream.name),
        ],
    );
    let mut watcher = db.client();
    wait_until(Duration::from_secs(20), "a write waiting for the lock", || {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'streamsink' AND wait_event_type = 'Lock'",
                &[],
            )
            .ok()?
            .get(0);
        (waiting >= 1).then_some(())
    });
    let sent = std::time::Instant::now();
    p.signal("TERM");
    let (code, _) = p.wait_exit(Duration::from_secs(15));
    let took = sent.elapsed();
    locker.batch_execute("COMMIT").expect("release the lock");
    let out = p.output();
    assert_eq!(code, Some(0), "{out:#?}");
    assert!(out.iter().any(|l| l.contains("cancelled (their entries stay pending")), "{out:#?}");
    // A cancel that did not reach the server would leave the writers blocked until the
    // supervisor gives up on them at 8 s.
    assert!(!out.iter().any(|l| l.contains("still blocked")), "{out:#?}");
    assert!(took < Duration::from_secs(8), "stopped in {took:?}");
}

#[test]
fn a_certificate_refused_while_running_is_an_outage_naming_the_setting_and_the_worker_resumes() {
    let mut servers = Servers::start();
    let p = servers.verifying_worker();
    let Servers { db, pg, redis, stream, pki } = &mut servers;
    let rows = |n: i64| {
        wait_until(Duration::from_secs(30), &format!("{n} rows"), || {
            (db.count_or_zero("SELECT count(*) FROM events") == n).then_some(())
        })
    };
    publish_many(&mut redis.con(pki), stream, 10, "before");
    rows(10);

    // Redis comes back with a certificate of another CA: one error line naming the setting,
    // the worker waits; with its own certificate again, the worker goes on.
    redis.restart_serving(pki, "other-server");
    let line = p.wait_for_line("Redis refuses the TLS connection", Duration::from_secs(20));
    assert!(line.contains("invalid peer certificate: UnknownIssuer (check STREAMSINK_REDIS_CA)"), "{line}");
    redis.restart_serving(pki, "server");
    publish_many(&mut redis.con(pki), stream, 10, "after-redis");
    rows(20);
    p.wait_for_line("Redis available again", Duration::from_secs(10));

    // The same for PostgreSQL, whose pooled connections the restart breaks.
    pg.stop();
    serve_certificate(pg, pki, "other-server");
    pg.start_again();
    publish_many(&mut redis.con(pki), stream, 10, "after-pg");
    let line = p.wait_for_line("Postgres refuses the TLS connection", Duration::from_secs(20));
    assert!(line.contains("invalid peer certificate: UnknownIssuer (check STREAMSINK_PG_CA)"), "{line}");
    pg.stop();
    serve_certificate(pg, pki, "server");
    pg.start_again();
    rows(30);
    p.wait_for_line("Postgres available again", Duration::from_secs(10));

    let out = p.output();
    for needle in ["Redis refuses the TLS connection", "Postgres refuses the TLS connection"] {
        assert_eq!(out.iter().filter(|l| l.contains(needle)).count(), 1, "once per outage: {out:#?}");
    }
    p.signal("TERM");
    let (code, out) = exit_of(p);
    assert_eq!(code, Some(0), "{out:#?}");
}

#[test]
fn a_ca_given_with_the_default_mode_means_verify_never_clear_text() {
    let pki = Pki::new();
    let plain = PrivatePostgres::start(); // no TLS at all
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", plain.port);
    // prefer, as libpq: clear text from a server without TLS ...
    assert_eq!(connect_with(&["--database-url", &url]), Ok(false));
    // ... but not once a CA says what to trust: that is require, which refuses clear text.
    let e = connect_with(&["--database-url", &url, "--pg-ca", &pki.path("ca.pem")]).unwrap_err();
    assert!(e.contains("no TLS"), "{e}");
}

//! The schema, embedded in the binary and applied in order at start (and by `migrate`).

use std::collections::HashSet;

use super::{SinkError, pool};
use crate::config::PostgresSettings;

/// Ordered, embedded schema migrations: (version, name, SQL). Append only; never edit one that
/// has shipped.
const MIGRATIONS: &[(i32, &str, &str)] = &[(1, "init", include_str!("migrations/0001_init.sql"))];

/// Any 64-bit number unique to streamsink: the advisory lock serialising migrations.
const MIGRATION_LOCK: i64 = 0x7374_7265_616d_736b; // "streamsk"

/// Applies the migrations not yet applied, in order, in one transaction holding an advisory
/// lock: concurrent starts wait for each other and then find nothing left to do.
/// Returns the versions it applied.
pub fn migrate(client: &mut postgres::Client) -> Result<Vec<i32>, SinkError> {
    apply(client, None)
}

/// [`migrate`], giving up on the advisory lock after `lock_wait` (SQLSTATE 55P03, a conflict
/// to retry): the worker's start-up retries it between stop-aware waits, so a stop is not held
/// by another instance's migration.
pub fn migrate_waiting_at_most(
    client: &mut postgres::Client,
    lock_wait: std::time::Duration,
) -> Result<Vec<i32>, SinkError> {
    apply(client, Some(lock_wait))
}

fn apply(
    client: &mut postgres::Client,
    lock_wait: Option<std::time::Duration>,
) -> Result<Vec<i32>, SinkError> {
    let q = |op| move |source| SinkError::Query { op, source };
    let mut tx = client.transaction().map_err(q("BEGIN"))?;
    // `CREATE … IF NOT EXISTS` on a migrated database sends a NOTICE, which the client logs at
    // info at every start: noise, not news.
    tx.batch_execute("SET LOCAL client_min_messages = warning").map_err(q("SET client_min_messages"))?;
    if let Some(wait) = lock_wait {
        let set = format!("SET LOCAL lock_timeout = {}", wait.as_millis().max(1));
        tx.batch_execute(&set).map_err(q("SET lock_timeout"))?;
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(q("advisory lock"))?;
    if lock_wait.is_some() {
        // The migrations themselves may wait as long as they need.
        tx.batch_execute("SET LOCAL lock_timeout = 0").map_err(q("SET lock_timeout"))?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS streamsink_migrations (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .map_err(q("create streamsink_migrations"))?;
    let applied: HashSet<i32> = tx
        .query("SELECT version FROM streamsink_migrations", &[])
        .map_err(q("read streamsink_migrations"))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut done = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).map_err(q("migration"))?;
        tx.execute("INSERT INTO streamsink_migrations (version, name) VALUES ($1, $2)", &[version, name])
            .map_err(q("record migration"))?;
        done.push(*version);
    }
    tx.commit().map_err(q("COMMIT"))?;
    Ok(done)
}

/// How far the database's schema is: migrations applied, and the known ones not applied yet
/// (the binary is newer than the schema). Reads only; a database never migrated has none.
pub fn schema_state(client: &mut postgres::Client) -> Result<(usize, Vec<i32>), SinkError> {
    let q = |op| move |source| SinkError::Query { op, source };
    let exists: bool = client
        .query_one("SELECT to_regclass('streamsink_migrations') IS NOT NULL", &[])
        .map_err(q("look for streamsink_migrations"))?
        .get(0);
    let applied: HashSet<i32> = if exists {
        client
            .query("SELECT version FROM streamsink_migrations", &[])
            .map_err(q("read streamsink_migrations"))?
            .iter()
            .map(|row| row.get(0))
            .collect()
    } else {
        HashSet::new()
    };
    let missing = MIGRATIONS.iter().map(|(v, _, _)| *v).filter(|v| !applied.contains(v)).collect();
    Ok((applied.len(), missing))
}

/// Connects as `settings` say (with the pool's timeouts, application name and TLS) and
/// migrates: what `streamsink migrate` does.
pub fn migrate_database(settings: &PostgresSettings) -> Result<Vec<i32>, SinkError> {
    let mut client = pool::Postgres::new(&settings.database_url, &settings.tls)?.connect()?;
    migrate(&mut client)
}

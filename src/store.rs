//! Postgres: the connection pool, the embedded migrations, and the set-based event insert.
//!
//! Invariant: `insert_events` runs inside the caller's transaction, so the event rows and every
//! handler's effect commit (or roll back) together.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres::types::{IsNull, ToSql, Type, accepts, to_sql_checked};
use postgres::{NoTls, Statement, Transaction};
use r2d2_postgres::PostgresConnectionManager;

use crate::config::mask_url;
use crate::event::Event;

/// The pool the workers share: one connection per worker.
pub type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// A pooled connection.
pub type PooledClient = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// What went wrong in the store, and where.
#[derive(Debug)]
pub enum StoreError {
    /// The URL does not parse as a Postgres configuration.
    Url { url: String, error: String },
    /// No connection could be had from the pool.
    Connect(r2d2::Error),
    /// A statement failed.
    Query { op: &'static str, source: postgres::Error },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Url { url, error } => write!(f, "invalid database URL '{url}': {error}"),
            StoreError::Connect(e) => write!(f, "cannot connect to Postgres: {e}"),
            StoreError::Query { op, source } => {
                write!(f, "postgres {op} failed: {}", describe(source))
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// A Postgres error as one line: the server's message, its detail, and its SQLSTATE, or the
/// client's error.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {detail} (SQLSTATE {})", db.message(), db.code().code()),
            None => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        },
        None => e.to_string(),
    }
}

/// Whose fault an error is: the event's (retrying cannot help) or the infrastructure's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The data was rejected (SQLSTATE class 22 data exception, 23 integrity constraint,
    /// 54 program limit such as an oversized index row): dead-letter the event.
    Data,
    /// Anything else (connection lost, server restarting, lock timeout, ...): retry later
    /// without spending the event's budget.
    Transient,
}

pub fn classify(e: &postgres::Error) -> Fault {
    match e.code().map(|c| c.code()) {
        Some(code) if ["22", "23", "54"].iter().any(|class| code.starts_with(class)) => Fault::Data,
        _ => Fault::Transient,
    }
}

/// True when an error is the infrastructure's, not the statement's: the connection is gone
/// (no SQLSTATE), or the server says it is unavailable (class 08 connection, 53 resources,
/// 57 operator intervention such as a shutdown, 40 serialization/deadlock).
pub fn is_infrastructure(e: &postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => ["08", "53", "57", "40"].iter().any(|class| code.code().starts_with(class)),
    }
}

/// True for a conflict between concurrent transactions (deadlock, serialization failure):
/// nobody's fault, retried at once without declaring an outage.
pub fn is_conflict(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| c.code().starts_with("40"))
}

/// Prepared statements of one connection, keyed by their SQL: each is parsed and planned once
/// per connection instead of once per batch. Kept in the pooled connection's extensions, so it
/// lives and dies with the connection; dropped after any error, in case one went stale.
#[derive(Default)]
pub struct StatementCache(HashMap<&'static str, Statement>);

impl StatementCache {
    /// The prepared form of `sql` on this transaction's connection.
    pub fn prepare(
        &mut self,
        tx: &mut Transaction<'_>,
        sql: &'static str,
    ) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = tx.prepare(sql)?;
        self.0.insert(sql, statement.clone());
        Ok(statement)
    }

    /// Takes the cache out of a pooled connection (an empty one if it has none yet).
    pub fn take(client: &mut PooledClient) -> StatementCache {
        r2d2::PooledConnection::extensions_mut(client).remove::<StatementCache>().unwrap_or_default()
    }

    /// Puts the cache back into its connection.
    pub fn put_back(self, client: &mut PooledClient) {
        r2d2::PooledConnection::extensions_mut(client).insert(self);
    }
}

/// JSON text bound to a `json`/`jsonb` parameter as is: the jsonb wire format is a version byte
/// and the text. The caller guarantees the text is valid JSON (event parsing checks it).
#[derive(Debug, Clone, Copy)]
pub struct RawJson<'a>(pub &'a str);

impl ToSql for RawJson<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.put_u8(1);
        }
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    accepts!(JSON, JSONB);
    to_sql_checked!();
}

/// Builds the pool without connecting: connections are made on first use, so start-up can
/// retry an unreachable database with its own backoff and logging.
pub fn pool(database_url: &str, size: usize) -> Result<Pool, StoreError> {
    let mut config: postgres::Config = database_url.parse().map_err(|e: postgres::Error| {
        StoreError::Url { url: mask_url(database_url), error: e.to_string() }
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("streamsink");
    }
    let manager = PostgresConnectionManager::new(config, NoTls);
    Ok(r2d2::Pool::builder()
        .max_size(size as u32)
        .min_idle(Some(0))
        // has_broken() (a closed socket) is checked on return; a round trip per checkout
        // would cost more than the rare retry it saves.
        .test_on_check_out(false)
        .connection_timeout(Duration::from_secs(5))
        // r2d2 would log every failed connect; `retry::Outage` logs an outage once instead.
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(manager))
}

/// Ordered, embedded schema migrations: (version, name, SQL). Append only; never edit one that
/// has shipped.
const MIGRATIONS: &[(i32, &str, &str)] = &[(1, "init", include_str!("migrations/0001_init.sql"))];

/// Any 64-bit number unique to streamsink: the advisory lock serialising migrations.
const MIGRATION_LOCK: i64 = 0x7374_7265_616d_736b; // "streamsk"

/// Applies the migrations not yet applied, in order, in one transaction holding an advisory
/// lock: concurrent starts wait for each other and then find nothing left to do.
/// Returns the versions it applied.
pub fn migrate(client: &mut postgres::Client) -> Result<Vec<i32>, StoreError> {
    let q = |op| move |source| StoreError::Query { op, source };
    let mut tx = client.transaction().map_err(q("BEGIN"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(q("advisory lock"))?;
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

const INSERT_EVENTS: &str = "\
INSERT INTO events (id, type, occurred_at, session_id, workspace_id, device_id, data, attributes,
                    stream, stream_entry_id)
SELECT u.id, u.type, u.occurred_at, u.session_id, u.workspace_id, u.device_id, u.data,
       u.attributes, $9, u.entry_id
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
            $7::jsonb[], $8::jsonb[], $10::text[])
     AS u(id, type, occurred_at, session_id, workspace_id, device_id, data, attributes, entry_id)
ORDER BY u.id -- one lock order for every batch: concurrent batches cannot deadlock
ON CONFLICT (id) DO NOTHING
RETURNING CASE WHEN type = ANY($11::text[]) THEN id END";

/// What one insert did.
#[derive(Debug, Default)]
pub struct Inserted {
    /// Rows that were new (the rest were already present: redeliveries or repeats).
    pub count: u64,
    /// Ids of the new rows whose type is in `handled_types`: the events handlers must see.
    pub to_handle: HashSet<String>,
}

/// Inserts `events` of `stream` in one statement. An id already present (a redelivery) changes
/// nothing; an id repeated within `events` is inserted once. Only the new ids of
/// `handled_types` come back as text: the others are counted, not transferred.
pub fn insert_events(
    tx: &mut Transaction<'_>,
    cache: &mut StatementCache,
    stream: &str,
    events: &[Event],
    handled_types: &[&str],
) -> Result<Inserted, postgres::Error> {
    let statement = cache.prepare(tx, INSERT_EVENTS)?;
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let times: Vec<jiff::Timestamp> = events.iter().map(|e| e.occurred_at).collect();
    let sessions: Vec<Option<&str>> = events.iter().map(|e| e.session_id.as_deref()).collect();
    let workspaces: Vec<Option<&str>> = events.iter().map(|e| e.workspace_id.as_deref()).collect();
    let devices: Vec<Option<&str>> = events.iter().map(|e| e.device_id.as_deref()).collect();
    let data: Vec<RawJson> = events.iter().map(|e| RawJson(&e.data)).collect();
    let attributes: Vec<RawJson> = events.iter().map(|e| RawJson(&e.attributes)).collect();
    let entry_ids: Vec<&str> = events.iter().map(|e| e.entry_id.as_str()).collect();
    let rows = tx.query(
        &statement,
        &[
            &ids,
            &types,
            &times,
            &sessions,
            &workspaces,
            &devices,
            &data,
            &attributes,
            &stream,
            &entry_ids,
            &handled_types,
        ],
    )?;
    Ok(Inserted {
        count: rows.len() as u64,
        to_handle: rows.iter().filter_map(|r| r.get::<_, Option<String>>(0)).collect(),
    })
}

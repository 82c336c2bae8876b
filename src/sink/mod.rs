//! Everything streamsink does in PostgreSQL, one file per role: `pool` (connections),
//! `migrate` (the embedded schema), `batch` (one batch in one transaction: `insert` then
//! the handlers), `statements` (prepared once per connection), `fault` (whose fault an
//! error is).
//!
//! Invariant: a batch's event rows and every handler's effect commit in one transaction, or
//! not at all. These functions do not retry or log; the workers in `ingest` do.

pub(crate) mod batch;
pub(crate) mod cancel;
pub(crate) mod fault;
mod insert;
pub mod migrate;
pub mod pool;
mod statements;

pub use insert::{Inserted, RawJson, copy_events, insert_events};
pub use statements::StatementCache;

use crate::secret::SecretUrl;

/// What went wrong in Postgres, and where.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The URL given for Postgres is a Redis URL (a caller's mistake: the settings parse
    /// `DATABASE_URL` as a Postgres configuration, so a bad one never gets this far).
    #[error("'{url}' is not a PostgreSQL URL")]
    Url { url: SecretUrl },
    /// No connection could be had from the pool.
    #[error("cannot connect to Postgres: {0}")]
    Connect(#[source] r2d2::Error),
    /// A connection outside the pool failed (start-up's migration, `streamsink migrate`).
    #[error("cannot connect to Postgres at {url}: {source}")]
    Open {
        url: SecretUrl,
        #[source]
        source: pool::ConnectError,
    },
    /// A connection outside the pool got no answer in time (connecting, the TLS handshake or
    /// the start-up exchange).
    #[error("cannot connect to Postgres at {url}: no answer within {after:?}")]
    NoAnswer { url: SecretUrl, after: std::time::Duration },
    /// The thread making a connection could not be started.
    #[error("cannot start a thread to connect to Postgres: {0}")]
    Spawn(#[source] std::io::Error),
    /// TLS could not be set up (no trust anchor to verify the server by).
    #[error("cannot set up TLS to Postgres: {0}")]
    Tls(#[source] crate::tls::SetupError),
    /// A statement failed.
    #[error("postgres {op} failed: {}", fault::describe(.source))]
    Query {
        op: &'static str,
        #[source]
        source: postgres::Error,
    },
}

impl SinkError {
    /// True when waiting can cure it: no connection could be had, or the statement met an
    /// unreachable server or a conflict (`fault::Fault::is_infrastructure`). A bad URL never
    /// is, nor a TLS refusal (a certificate refused, TLS not spoken as configured), nor TLS
    /// that cannot be set up.
    pub(crate) fn is_infrastructure(&self) -> bool {
        match self {
            SinkError::Url { .. } | SinkError::Tls(_) => false,
            SinkError::Connect(_) | SinkError::NoAnswer { .. } | SinkError::Spawn(_) => true,
            SinkError::Open { source, .. } => !source.is_refusal(),
            SinkError::Query { source, .. } => fault::classify(source).is_infrastructure(),
        }
    }
}

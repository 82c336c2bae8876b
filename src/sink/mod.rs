//! Everything streamsink does in PostgreSQL, one file per role: `pool` (connections),
//! `migrate` (the embedded schema), `batch` (one batch in one transaction: `insert` then
//! the handlers), `statements` (prepared once per connection), `fault` (whose fault an
//! error is).
//!
//! Invariant: a batch's event rows and every handler's effect commit in one transaction, or
//! not at all. These functions do not retry or log; the workers in `ingest` do.

pub(crate) mod batch;
pub(crate) mod fault;
mod insert;
pub mod migrate;
pub(crate) mod pool;
mod statements;

pub use insert::RawJson;
pub use statements::StatementCache;

use crate::secret::SecretUrl;

/// What went wrong in Postgres, and where.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The URL does not parse as a Postgres configuration.
    #[error("invalid database URL '{url}': {source}")]
    Url {
        url: SecretUrl,
        #[source]
        source: postgres::Error,
    },
    /// No connection could be had from the pool.
    #[error("cannot connect to Postgres: {0}")]
    Connect(#[source] r2d2::Error),
    /// A statement failed.
    #[error("postgres {op} failed: {}", fault::describe(.source))]
    Query {
        op: &'static str,
        #[source]
        source: postgres::Error,
    },
}

impl SinkError {
    /// Whose fault this is: a failed connect is Postgres being unreachable.
    pub(crate) fn fault(&self) -> fault::Fault {
        match self {
            SinkError::Url { .. } => fault::Fault::StatementRefused,
            SinkError::Connect(_) => fault::Fault::Unreachable,
            SinkError::Query { source, .. } => fault::classify(source),
        }
    }
}

//! What an operator does to streams from the command line, one file per command family:
//! `status`, `pending`, `dlq` (inspect, replay and purge dead letters), `publish`, `backfill`
//! and `trim` (retention that never passes an entry a group still needs; the worker's
//! periodic trim uses the same rule).
//!
//! Each command connects once, does its work and returns a report that prints as a table
//! ([`std::fmt::Display`]) or as JSON ([`Report::to_json`]); `cli/` turns it into output and an
//! exit code. These functions never log: what they did is in their report, what failed in
//! their error.

pub mod backfill;
pub mod dlq;
pub mod pending;
pub mod publish;
pub mod status;
pub mod table;
pub mod trim;

use crate::broker::Redis;

use crate::broker::id::EntryId;
use crate::broker::{self, BrokerError};
use crate::config::RedisSettings;
use crate::sink::SinkError;

/// A command's outcome, for people (`Display`: a table) and for machines (`--json`).
pub trait Report: std::fmt::Display {
    /// The same content as one JSON value.
    fn to_json(&self) -> serde_json::Value;
}

/// One report per shard of a logical stream, in shard order: a JSON array of theirs, or their
/// texts one after another.
#[derive(Debug, Clone)]
pub struct PerShard<T>(pub Vec<T>);

impl<T: Report> Report for PerShard<T> {
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(self.0.iter().map(Report::to_json).collect())
    }
}

impl<T: Report> std::fmt::Display for PerShard<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|r| write!(f, "{r}"))
    }
}

/// Why an operator's command failed, as one line.
#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    /// Redis could not be reached (the URL is shown with its password masked).
    #[error("cannot connect to Redis at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    /// A Redis command failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// Postgres could not be reached or refused a statement.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Input could not be read (a file, stdin).
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The request cannot be carried out as asked (an id that is not there, a stream that is
    /// not one): says what and why.
    #[error("{0}")]
    Refused(String),
}

/// One Redis connection for a command, with the worker's timeouts and TLS settings.
pub fn connect(settings: &RedisSettings) -> Result<Redis, OperateError> {
    broker::connect(settings, broker::COMMAND_TIMEOUT)
        .map_err(|source| OperateError::Connect { url: settings.redis_url.to_string(), source })
}

/// The lowest entry id at or after `at` (XRANGE bounds by entry-id time): `<ms>-0`.
pub fn first_id_at(at: jiff::Timestamp) -> String {
    EntryId::first_at(at).to_string()
}

/// The highest entry id at or before `at`: `<ms>-<max>`.
pub fn last_id_at(at: jiff::Timestamp) -> String {
    EntryId::last_at(at).to_string()
}

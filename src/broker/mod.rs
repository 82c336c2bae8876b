//! Everything streamsink says to Redis, one file per role: `conn` (connecting, fault kinds),
//! `reply` (decoding stream replies by hand), `read` (XREADGROUP), `claim` (taking over
//! pending entries), `ack` (acknowledging, with dead letters, atomically), `group` (group
//! admin and figures), `inspect` (what an operator reads: stream, groups, consumers, pending
//! entries), `id` (entry ids: order, next, the ids at a time), `errors` (the last-error hash), `dlq` (reading, replaying and deleting
//! dead letters), `publish` (pipelined XADD of envelopes), `range` (XRANGE pages outside any
//! group), `trim` (retention up to the safe point).
//!
//! Named "broker" rather than "redis" so that `redis::…` always means the client crate.
//! These functions send commands and decode replies; they do not retry, log or decide: the
//! threads in `ingest` do.

pub(crate) mod ack;
pub(crate) mod claim;
pub(crate) mod conn;
pub(crate) mod dlq;
pub mod errors;
pub mod group;
pub mod id;
pub mod inspect;
pub mod keys;
pub(crate) mod nodes;
pub mod publish;
pub mod range;
pub(crate) mod read;
mod reply;
mod script;
pub mod shard;
pub mod trim;

use std::sync::Arc;

use crate::event::Entry;

pub use conn::Redis;
pub(crate) use conn::{COMMAND_TIMEOUT, connect};

/// Entries read from one stream in one call: the unit that travels on the channel from the
/// reader to a worker, and is acknowledged together.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    pub stream: Arc<str>,
    pub entries: Vec<Entry>,
}

/// A Redis command that failed, naming the operation and the stream.
#[derive(Debug, thiserror::Error)]
#[error("redis {op} on stream '{stream}' failed: {source}")]
pub struct BrokerError {
    /// The command or script that failed (`XREADGROUP`, `dead-letter + XACK`, ...).
    pub op: &'static str,
    /// The stream (or comma-separated streams) it was sent for.
    pub stream: String,
    #[source]
    pub source: redis::RedisError,
}

impl BrokerError {
    pub(crate) fn new(op: &'static str, stream: &str, source: redis::RedisError) -> BrokerError {
        BrokerError { op, stream: stream.to_string(), source }
    }

    /// A reply whose shape is not what the command returns.
    pub(crate) fn bad_reply(op: &'static str, stream: &str, detail: String) -> BrokerError {
        let source =
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "unexpected reply", detail));
        BrokerError::new(op, stream, source)
    }

    /// True when the connection is unusable (I/O, timeout, server gone or not serving yet):
    /// reconnect and retry.
    pub fn is_connection(&self) -> bool {
        conn::is_connection_error(&self.source)
    }

    /// True when Redis does not know the command (XAUTOCLAIM before Redis 6.2).
    pub fn is_unknown_command(&self) -> bool {
        self.source.to_string().to_ascii_lowercase().contains("unknown command")
    }

    /// True when the consumer group (or its stream) no longer exists, e.g. after Redis lost its
    /// data in a restart: re-create the group and carry on.
    pub fn is_no_group(&self) -> bool {
        self.source.code() == Some("NOGROUP")
    }
}

//! Acknowledging: one XACK for a batch, or one Lua script that writes its dead letters and
//! then acknowledges everything, so that no entry is acknowledged unless its dead letter is
//! written.

use std::sync::LazyLock;

use redis::Connection;

use super::BrokerError;
use crate::event::Entry;

/// An entry that can never succeed, with why: it goes to `<stream>:dlq`.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub entry: &'a Entry,
    /// Short name of the problem (`invalid json`, `max deliveries exceeded`, ...).
    pub reason: String,
    /// The full error message.
    pub error: String,
}

/// The dead-letter stream of `stream`.
fn dead_letter_stream(stream: &str) -> String {
    format!("{stream}:dlq")
}

/// Who is acknowledging: written into every dead-letter entry.
#[derive(Debug, Clone, Copy)]
pub struct Acknowledger<'a> {
    pub group: &'a str,
    pub consumer: &'a str,
}

/// Stops at the first failed call, before any XACK (see the script's header). A retry after a
/// failure may write a dead letter twice; it never acknowledges one unwritten.
static ACK_WITH_DEAD_LETTERS: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/ack_with_dead_letters.lua")));

/// Acknowledges `ids` of `stream`, and moves `dead` to `<stream>:dlq` with the reason, in one
/// atomic call. Returns how many entries Redis acknowledged.
///
/// Call only after every other entry in `ids` is committed to Postgres.
pub fn ack(
    con: &mut Connection,
    by: Acknowledger<'_>,
    stream: &str,
    ids: &[&str],
    dead: &[DeadLetter<'_>],
) -> Result<u64, BrokerError> {
    if ids.is_empty() && dead.is_empty() {
        return Ok(0);
    }
    if dead.is_empty() {
        return redis::cmd("XACK")
            .arg(stream)
            .arg(by.group)
            .arg(ids)
            .query(con)
            .map_err(|e| BrokerError::new("XACK", stream, e));
    }
    let mut inv = ACK_WITH_DEAD_LETTERS.key(stream);
    inv.key(dead_letter_stream(stream)).arg(by.group).arg(dead.len());
    let failed_at = jiff::Timestamp::now().to_string();
    for d in dead {
        let deliveries = d.entry.deliveries.to_string();
        let extra: [(&str, &str); 8] = [
            ("dlq_reason", &d.reason),
            ("dlq_error", &d.error),
            ("dlq_stream", stream),
            ("dlq_original_id", &d.entry.id),
            ("dlq_group", by.group),
            ("dlq_consumer", by.consumer),
            ("dlq_deliveries", &deliveries),
            ("dlq_failed_at", &failed_at),
        ];
        inv.arg(2 * (d.entry.fields.len() + extra.len()));
        for (k, v) in &d.entry.fields {
            inv.arg(k.as_slice()).arg(v.as_slice());
        }
        for (k, v) in extra {
            inv.arg(k).arg(v);
        }
    }
    inv.arg(ids);
    for d in dead {
        if !ids.contains(&d.entry.id.as_str()) {
            inv.arg(&d.entry.id);
        }
    }
    inv.invoke(con).map_err(|e| BrokerError::new("dead-letter + XACK", stream, e))
}

/// Acknowledges pending ids whose entries no longer exist: there is nothing to process or
/// dead-letter, and left pending they would be reported again at every reclaim.
pub fn ack_deleted(
    con: &mut Connection,
    stream: &str,
    group: &str,
    ids: &[String],
) -> Result<(), BrokerError> {
    if ids.is_empty() {
        return Ok(());
    }
    redis::cmd("XACK")
        .arg(stream)
        .arg(group)
        .arg(ids)
        .query::<u64>(con)
        .map(|_| ())
        .map_err(|e| BrokerError::new("XACK (deleted)", stream, e))
}

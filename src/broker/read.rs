//! XREADGROUP: new entries for the reader, and this consumer's own pending entries at start.

use std::time::Duration;

use super::Redis;
use redis::Value;

use super::claim::Claimed;
use super::id::EntryId;
use super::reply;
use super::{Batch, BrokerError};

/// The longest blocking read in a cluster, where a read can block on one shard only, one per
/// master (`broker::nodes`): a new entry on another shard of that master waits at most this long.
pub const CLUSTER_BLOCK: Duration = Duration::from_millis(100);

/// XREADGROUP of new entries (`>`) from every stream: at most `count` per stream, blocking up
/// to `block` (`None`: answering at once). An empty vector means the block timed out with
/// nothing new.
///
/// The connection's read timeout must exceed `block`; otherwise a reply that arrives late is
/// abandoned and its entries sit in this consumer's pending list until reclaimed.
pub fn new_entries(
    con: &mut Redis,
    group: &str,
    consumer: &str,
    streams: &[String],
    count: usize,
    block: Option<Duration>,
) -> Result<Vec<Batch>, BrokerError> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP").arg(group).arg(consumer).arg("COUNT").arg(count);
    if let Some(block) = block {
        cmd.arg("BLOCK").arg(block.as_millis() as u64);
    }
    cmd.arg("STREAMS").arg(streams);
    for _ in streams {
        cmd.arg(">");
    }
    let label = streams.join(",");
    let reply: Value = cmd.query(con).map_err(|e| BrokerError::new("XREADGROUP", &label, e))?;
    let replies = reply::read_reply(reply).map_err(|d| BrokerError::bad_reply("XREADGROUP", &label, d))?;
    Ok(replies
        .into_iter()
        .filter(|(_, entries, _)| !entries.is_empty())
        .map(|(stream, entries, _)| Batch { stream, entries })
        .collect())
}

/// This consumer's own pending entries after `after` (XREADGROUP with an ID instead of `>`):
/// what a previous run under the same consumer name read and never acknowledged. Deleted
/// entries are reported in `deleted`; they stay pending until acknowledged.
pub fn own_pending(
    con: &mut Redis,
    group: &str,
    consumer: &str,
    stream: &str,
    after: &str,
    count: usize,
) -> Result<Claimed, BrokerError> {
    const OP: &str = "XREADGROUP (own pending)";
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(after)
        .query(con)
        .map_err(|e| BrokerError::new(OP, stream, e))?;
    let replies = reply::read_reply(reply).map_err(|d| BrokerError::bad_reply(OP, stream, d))?;
    let mut claimed = Claimed::default();
    for (_, entries, deleted) in replies {
        claimed.entries.extend(entries);
        claimed.deleted.extend(deleted);
    }
    let last = claimed
        .entries
        .iter()
        .map(|e| &e.id)
        .chain(&claimed.deleted)
        .max_by_key(|id| id.parse::<EntryId>().ok());
    claimed.next = last.filter(|_| claimed.entries.len() + claimed.deleted.len() >= count).cloned();
    Ok(claimed)
}

//! Taking over pending entries: XAUTOCLAIM, its XPENDING + XCLAIM fallback for Redis < 6.2,
//! and the delivery counts that the budget is held against.

use std::time::Duration;

use super::Redis;
use redis::Value;

use super::BrokerError;
use super::id::after as next_id;
use super::reply::{self, text};
use crate::event::Entry;

/// Entries taken over from the pending list (this consumer's own, or stuck with another).
#[derive(Debug, Default)]
pub struct Claimed {
    pub entries: Vec<Entry>,
    /// Ids Redis reports deleted from the stream while pending: lost upstream.
    pub deleted: Vec<String>,
    /// Where the next call continues; `None` at the end.
    pub next: Option<String>,
}

/// XAUTOCLAIM: takes over up to `count` entries idle longer than `min_idle`, scanning from
/// `cursor` (`0-0` to start). Redis ≥ 7 lists entries deleted while pending (it drops them
/// from the pending list itself); Redis 6.2 answers nil in their place and keeps them pending,
/// now with this consumer: they are found and reported as deleted too, to be acknowledged.
pub fn autoclaim(
    con: &mut Redis,
    stream: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
    cursor: &str,
    count: usize,
) -> Result<Claimed, BrokerError> {
    let reply: Value = redis::cmd("XAUTOCLAIM")
        .arg(stream)
        .arg(group)
        .arg(consumer)
        .arg(min_idle.as_millis() as u64)
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query(con)
        .map_err(|e| BrokerError::new("XAUTOCLAIM", stream, e))?;
    let bad = |d: String| BrokerError::bad_reply("XAUTOCLAIM", stream, d);
    let Value::Array(mut parts) = reply else {
        return Err(bad("reply is not an array".into()));
    };
    if parts.len() < 2 {
        return Err(bad(format!("reply has {} parts", parts.len())));
    }
    let deleted_ids = if parts.len() >= 3 { parts.pop() } else { None };
    let entries = parts.pop().unwrap_or(Value::Nil);
    let next = parts.pop().and_then(text).ok_or_else(|| bad("cursor is not text".into()))?;
    let decoded = reply::entries_of(entries).map_err(bad)?;
    let (entries, mut deleted) = (decoded.entries, decoded.deleted);
    if let Some(Value::Array(ids)) = deleted_ids {
        deleted.extend(ids.into_iter().filter_map(text));
    }
    let next = (next != "0-0").then_some(next);
    if decoded.nils > 0 {
        // Redis 6.2: the claimed entries that no longer exist are now pending with this
        // consumer, in the range scanned, and answered as bare nils.
        let end = next.as_ref().map_or_else(|| "+".to_string(), |n| format!("({n}"));
        let mine: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .arg(cursor)
            .arg(&end)
            .arg(count.saturating_mul(10))
            .arg(consumer)
            .query(con)
            .map_err(|e| BrokerError::new("XPENDING", stream, e))?;
        let returned: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let candidates: Vec<String> =
            mine.into_iter().map(|(id, ..)| id).filter(|id| !returned.contains(&id.as_str())).collect();
        deleted.extend(missing(con, stream, candidates)?);
    }
    Ok(Claimed { entries, deleted, next })
}

/// The XAUTOCLAIM of Redis < 6.2: XPENDING from `start`, then XCLAIM of the entries idle
/// longer than `min_idle`. Redis < 7 answers nil for an entry deleted while pending: those of
/// the ids claimed that no longer exist are reported as deleted, to be acknowledged.
pub fn fallback(
    con: &mut Redis,
    stream: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
    start: &str,
    count: usize,
) -> Result<Claimed, BrokerError> {
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .arg(start)
        .arg("+")
        .arg(count)
        .query(con)
        .map_err(|e| BrokerError::new("XPENDING", stream, e))?;
    let next = if pending.len() < count { None } else { pending.last().map(|(id, ..)| next_id(id)) };
    let min_ms = min_idle.as_millis() as u64;
    let stale: Vec<&str> =
        pending.iter().filter(|(_, _, idle, _)| *idle >= min_ms).map(|(id, ..)| id.as_str()).collect();
    if stale.is_empty() {
        return Ok(Claimed { next, ..Claimed::default() });
    }
    let reply: Value = redis::cmd("XCLAIM")
        .arg(stream)
        .arg(group)
        .arg(consumer)
        .arg(min_ms)
        .arg(&stale)
        .query(con)
        .map_err(|e| BrokerError::new("XCLAIM", stream, e))?;
    let decoded = reply::entries_of(reply).map_err(|d| BrokerError::bad_reply("XCLAIM", stream, d))?;
    let (entries, mut deleted) = (decoded.entries, decoded.deleted);
    if decoded.nils > 0 {
        // Redis < 7: an entry deleted while pending is claimed and answered as a bare nil.
        let candidates: Vec<String> = stale
            .iter()
            .filter(|id| !entries.iter().any(|e| e.id == **id))
            .map(|id| id.to_string())
            .collect();
        deleted.extend(missing(con, stream, candidates)?);
    }
    Ok(Claimed { entries, deleted, next })
}

/// Those of `ids` that no longer exist in `stream` (one XRANGE each, pipelined).
fn missing(con: &mut Redis, stream: &str, ids: Vec<String>) -> Result<Vec<String>, BrokerError> {
    if ids.is_empty() {
        return Ok(ids);
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("XRANGE").arg(stream).arg(id).arg(id).arg("COUNT").arg(1);
    }
    let found: Vec<Value> = pipe.query(con).map_err(|e| BrokerError::new("XRANGE", stream, e))?;
    Ok(ids
        .into_iter()
        .zip(found)
        .filter(|(_, reply)| matches!(reply, Value::Array(items) if items.is_empty()))
        .map(|(id, _)| id)
        .collect())
}

/// Resets the idle time of `ids`, pending with this consumer, to zero (`XCLAIM … 0 … JUSTID`
/// to itself), without counting a delivery: entries the process still holds must not look
/// stuck to any XAUTOCLAIM. Ids no longer pending are skipped by Redis.
pub fn refresh(
    con: &mut Redis,
    stream: &str,
    group: &str,
    consumer: &str,
    ids: &[String],
) -> Result<(), BrokerError> {
    for chunk in ids.chunks(1000) {
        redis::cmd("XCLAIM")
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(0)
            .arg(chunk)
            .arg("JUSTID")
            .query::<Value>(con)
            .map_err(|e| BrokerError::new("XCLAIM JUSTID (refresh)", stream, e))?;
    }
    Ok(())
}

/// Sets each entry's `deliveries` to Redis's count (XPENDING per id, pipelined). An entry no
/// longer pending keeps its count.
pub fn load_delivery_counts(
    con: &mut Redis,
    stream: &str,
    group: &str,
    entries: &mut [Entry],
) -> Result<(), BrokerError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for e in entries.iter() {
        pipe.cmd("XPENDING").arg(stream).arg(group).arg(&e.id).arg(&e.id).arg(1);
    }
    let replies: Vec<Vec<(String, String, u64, u64)>> =
        pipe.query(con).map_err(|e| BrokerError::new("XPENDING", stream, e))?;
    for (entry, reply) in entries.iter_mut().zip(replies) {
        if let Some((_, _, _, n)) = reply.first() {
            entry.deliveries = *n;
        }
    }
    Ok(())
}

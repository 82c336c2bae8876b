//! What an operator reads of a stream (`streamsink status`, `streamsink pending`): XINFO STREAM,
//! XINFO GROUPS and XINFO CONSUMERS for every group, and XPENDING's entries. Read-only.

use std::time::Duration;

use super::Redis;
use redis::Value;

use super::BrokerError;
use super::reply::{pairs, text};

/// What XINFO STREAM says of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamInfo {
    /// Entries in the stream (XLEN).
    pub length: u64,
    /// Ids of the first and last entries; `None` in an empty stream.
    pub first_id: Option<String>,
    pub last_id: Option<String>,
}

/// XINFO STREAM of `stream`; `None` if no such key.
pub fn stream_info(con: &mut Redis, stream: &str) -> Result<Option<StreamInfo>, BrokerError> {
    let reply: redis::RedisResult<Value> = redis::cmd("XINFO").arg("STREAM").arg(stream).query(con);
    let reply = match reply {
        Ok(r) => r,
        Err(e) if is_no_such_key(&e) => return Ok(None),
        Err(e) => return Err(BrokerError::new("XINFO STREAM", stream, e)),
    };
    let mut info = StreamInfo::default();
    for (k, v) in pairs(reply) {
        match (text(k).as_deref(), v) {
            (Some("length"), Value::Int(n)) => info.length = n.max(0) as u64,
            (Some("first-entry"), v) => info.first_id = entry_id(v),
            (Some("last-entry"), v) => info.last_id = entry_id(v),
            _ => {}
        }
    }
    Ok(Some(info))
}

/// The id of an `[id, fields]` entry (nil in an empty stream).
fn entry_id(v: Value) -> Option<String> {
    match v {
        Value::Array(mut parts) if !parts.is_empty() => text(parts.swap_remove(0)),
        _ => None,
    }
}

/// What XINFO GROUPS says of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// Consumers the group knows (live or not).
    pub consumers: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// `None` where Redis does not know (or is older than 7).
    pub lag: Option<u64>,
    /// The id of the last entry delivered to the group: its position in the stream.
    pub last_delivered: String,
}

/// Every group of `stream`, as XINFO GROUPS reports them; `None` if the stream does not exist.
pub fn groups(con: &mut Redis, stream: &str) -> Result<Option<Vec<GroupInfo>>, BrokerError> {
    let reply: redis::RedisResult<Value> = redis::cmd("XINFO").arg("GROUPS").arg(stream).query(con);
    let reply = match reply {
        Ok(r) => r,
        Err(e) if is_no_such_key(&e) => return Ok(None),
        Err(e) => return Err(BrokerError::new("XINFO GROUPS", stream, e)),
    };
    let Value::Array(groups) = reply else {
        return Ok(Some(Vec::new()));
    };
    let decode = |g: Value| {
        let mut info = GroupInfo::default();
        for (k, v) in pairs(g) {
            match (text(k).as_deref(), v) {
                (Some("name"), v) => info.name = text(v).unwrap_or_default(),
                (Some("consumers"), Value::Int(n)) => info.consumers = n.max(0) as u64,
                (Some("pending"), Value::Int(n)) => info.pending = n.max(0) as u64,
                (Some("lag"), Value::Int(n)) => info.lag = Some(n.max(0) as u64),
                (Some("last-delivered-id"), v) => info.last_delivered = text(v).unwrap_or_default(),
                _ => {}
            }
        }
        info
    };
    Ok(Some(groups.into_iter().map(decode).collect()))
}

/// One consumer of a group, as XINFO CONSUMERS reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// The consumer's name (streamsink's: `<host>-<pid>` unless set).
    pub name: String,
    /// Entries delivered to it and not yet acknowledged.
    pub pending: u64,
    /// Since the consumer's last attempted interaction (a read, a claim).
    pub idle: Duration,
}

/// The consumers of `group` on `stream`.
pub fn consumers(con: &mut Redis, stream: &str, group: &str) -> Result<Vec<ConsumerInfo>, BrokerError> {
    let reply: Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query(con)
        .map_err(|e| BrokerError::new("XINFO CONSUMERS", stream, e))?;
    let Value::Array(consumers) = reply else {
        return Ok(Vec::new());
    };
    let decode = |c: Value| {
        let mut info = ConsumerInfo::default();
        for (k, v) in pairs(c) {
            match (text(k).as_deref(), v) {
                (Some("name"), v) => info.name = text(v).unwrap_or_default(),
                (Some("pending"), Value::Int(n)) => info.pending = n.max(0) as u64,
                (Some("idle"), Value::Int(n)) => info.idle = Duration::from_millis(n.max(0) as u64),
                _ => {}
            }
        }
        info
    };
    Ok(consumers.into_iter().map(decode).collect())
}

/// One pending entry, as XPENDING's extended form reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    /// The entry's id.
    pub id: String,
    /// The consumer holding it.
    pub consumer: String,
    /// Since it was last delivered (or claimed).
    pub idle: Duration,
    /// Redis's delivery count.
    pub deliveries: u64,
}

/// Up to `count` pending entries of `group` on `stream` with ids after `after` (exclusive;
/// `None` from the start), of `consumer` only if given, in id order. An empty page means no
/// more. The idle filter is left to the caller: XPENDING's IDLE needs Redis 6.2.
pub fn pending_page(
    con: &mut Redis,
    stream: &str,
    group: &str,
    after: Option<&str>,
    count: usize,
    consumer: Option<&str>,
) -> Result<Vec<PendingEntry>, BrokerError> {
    let start = after.map_or_else(|| "-".to_string(), super::id::after);
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(stream).arg(group).arg(start).arg("+").arg(count);
    if let Some(consumer) = consumer {
        cmd.arg(consumer);
    }
    let rows: Vec<(String, String, u64, u64)> =
        cmd.query(con).map_err(|e| BrokerError::new("XPENDING", stream, e))?;
    Ok(rows
        .into_iter()
        .map(|(id, consumer, idle, deliveries)| PendingEntry {
            id,
            consumer,
            idle: Duration::from_millis(idle),
            deliveries,
        })
        .collect())
}

/// Redis's answer to XINFO on a key that does not exist.
fn is_no_such_key(e: &redis::RedisError) -> bool {
    e.to_string().to_ascii_lowercase().contains("no such key")
}

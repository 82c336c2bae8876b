//! XRANGE: a stretch of a stream read outside any consumer group, page by page, and the
//! stream's two ends. Reading this way delivers nothing to a group: no pending entry, no
//! change of a group's last-delivered id.

use super::Redis;
use redis::Value;

use super::BrokerError;
use super::reply;
use crate::event::Entry;

/// Up to `count` entries of `stream` with ids from `start` to `end` (both inclusive; `-` and
/// `+` for the ends), oldest first, each with its fields in the producer's order. A missing
/// stream is empty.
pub fn page(
    con: &mut Redis,
    stream: &str,
    start: &str,
    end: &str,
    count: usize,
) -> Result<Vec<Entry>, BrokerError> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg(start)
        .arg(end)
        .arg("COUNT")
        .arg(count)
        .query(con)
        .map_err(|e| BrokerError::new("XRANGE", stream, e))?;
    let decoded = reply::entries_of(reply).map_err(|d| BrokerError::bad_reply("XRANGE", stream, d))?;
    Ok(decoded.entries)
}

/// The ids of the first and last entries of `stream`; `None` when it is empty or missing.
pub fn ends(con: &mut Redis, stream: &str) -> Result<Option<(String, String)>, BrokerError> {
    let mut pipe = redis::pipe();
    pipe.cmd("XRANGE").arg(stream).arg("-").arg("+").arg("COUNT").arg(1);
    pipe.cmd("XREVRANGE").arg(stream).arg("+").arg("-").arg("COUNT").arg(1);
    let (first, last): (Value, Value) =
        pipe.query(con).map_err(|e| BrokerError::new("XRANGE/XREVRANGE", stream, e))?;
    let id = |v: Value| -> Result<Option<String>, BrokerError> {
        let decoded = reply::entries_of(v).map_err(|d| BrokerError::bad_reply("XRANGE", stream, d))?;
        Ok(decoded.entries.into_iter().next().map(|e| e.id))
    };
    Ok(id(first)?.zip(id(last)?))
}

//! XADD of envelopes, many to a pipeline: what `streamsink publish` sends.

use redis::Connection;

use super::BrokerError;

/// Where envelopes go: the stream (named in errors; each event names its own, a shard of it or
/// itself), the field the worker reads them from, and an approximate cap on each stream's length.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub stream: &'a str,
    pub field: &'a str,
    /// `MAXLEN ~ N`: Redis trims whole nodes only, so the stream may hold somewhat more.
    pub maxlen: Option<u64>,
}

/// Sends `XADD <stream> [MAXLEN ~ N] * <field> <json>` for each `(stream, json)` of `events` in one pipeline
/// (one round trip), and returns one result per event, in order: its new entry id, or the
/// error Redis answered to that XADD alone (the others still took effect), as Redis wrote it
/// (`WRONGTYPE Operation against a key holding the wrong kind of value`).
///
/// `Err` only when the pipeline as a whole failed (the connection): then any number of the
/// events, in order from the first, may have been added.
pub fn add_envelopes<'e>(
    con: &mut Connection,
    target: Target<'_>,
    events: impl ExactSizeIterator<Item = (&'e str, &'e str)>,
) -> Result<Vec<Result<String, String>>, BrokerError> {
    const OP: &str = "XADD (pipelined)";
    let sent = events.len();
    let mut pipe = redis::pipe();
    for (stream, json) in events {
        let cmd = pipe.cmd("XADD").arg(stream);
        if let Some(n) = target.maxlen {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*").arg(target.field).arg(json);
    }
    // `ignore_errors`: a command's error reply comes back in its own place instead of failing
    // the whole query (redis-rs `Pipeline::ignore_errors`); I/O errors still fail it.
    let results: Vec<redis::RedisResult<String>> =
        pipe.ignore_errors().query(con).map_err(|e| BrokerError::new(OP, target.stream, e))?;
    if results.len() != sent {
        let detail = format!("{} replies to {sent} commands", results.len());
        return Err(BrokerError::bad_reply(OP, target.stream, detail));
    }
    Ok(results.into_iter().map(|r| r.map_err(|e| reply_text(&e))).collect())
}

/// An error reply as Redis sent it: its code, then its message.
fn reply_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => e.to_string(),
    }
}

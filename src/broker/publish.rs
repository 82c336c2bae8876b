//! XADD of envelopes, many to a pipeline: what `streamsink publish` sends.

use super::Redis;

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
/// events may have been added (on one node, in order from the first).
///
/// In a cluster, a pipeline goes to the node of its first key (`broker::Redis`), so the events
/// are sent in one pipeline per stream (each stream is one slot), in the order of each
/// stream's first event; within a stream, in input order.
pub fn add_envelopes<'e>(
    con: &mut Redis,
    target: Target<'_>,
    events: impl ExactSizeIterator<Item = (&'e str, &'e str)>,
) -> Result<Vec<Result<String, String>>, BrokerError> {
    if !con.is_cluster() {
        return add_pipelined(con, target, events);
    }
    let events: Vec<(&str, &str)> = events.collect();
    let mut index = std::collections::HashMap::new();
    let mut streams: Vec<Vec<usize>> = Vec::new();
    for (at, (stream, _)) in events.iter().enumerate() {
        let k = *index.entry(*stream).or_insert_with(|| {
            streams.push(Vec::new());
            streams.len() - 1
        });
        streams[k].push(at);
    }
    let mut results = vec![Ok(String::new()); events.len()];
    for positions in streams {
        let sent = add_pipelined(con, target, positions.iter().map(|&at| events[at]))?;
        for (at, result) in positions.into_iter().zip(sent) {
            results[at] = result;
        }
    }
    Ok(results)
}

/// [`add_envelopes`] in one pipeline.
fn add_pipelined<'e>(
    con: &mut Redis,
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

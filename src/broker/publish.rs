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
/// In a cluster each XADD is sent on its own: a cluster connection fails a pipeline as a whole
/// on one error reply, and resends it whole on a redirection, which would add the events before
/// it twice. One command at a time keeps each line's own result.
pub fn add_envelopes<'e>(
    con: &mut Redis,
    target: Target<'_>,
    events: impl ExactSizeIterator<Item = (&'e str, &'e str)>,
) -> Result<Vec<Result<String, String>>, BrokerError> {
    if !con.is_cluster() {
        return add_pipelined(con, target, events);
    }
    events
        .map(|(stream, json)| match xadd(target, stream, json).query::<String>(con) {
            Ok(id) => Ok(Ok(id)),
            Err(e) if super::conn::is_connection_error(&e) => Err(BrokerError::new("XADD", stream, e)),
            Err(e) => Ok(Err(reply_text(&e))),
        })
        .collect()
}

/// `XADD <stream> [MAXLEN ~ N] * <field> <json>`.
fn xadd(target: Target<'_>, stream: &str, json: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream);
    if let Some(n) = target.maxlen {
        cmd.arg("MAXLEN").arg("~").arg(n);
    }
    cmd.arg("*").arg(target.field).arg(json);
    cmd
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
        pipe.add_command(xadd(target, stream, json));
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

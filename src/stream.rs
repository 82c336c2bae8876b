//! Every Redis command streamsink sends: connect, ensure the group, read a batch, acknowledge
//! (with dead letters, atomically), and the figures the stats thread reports.
//!
//! Replies are decoded by hand from [`redis::Value`] so that field order and non-UTF-8 bytes
//! survive untouched into the dead-letter stream.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use redis::{Connection, Value};

use crate::config::mask_url;
use crate::event::Entry;
use crate::retry::{Backoff, sleep_unless};

/// Entries read from one stream in one call; acknowledged together.
#[derive(Debug, Clone)]
pub struct Batch {
    pub stream: Arc<str>,
    pub entries: Vec<Entry>,
}

/// One stream's part of an XREADGROUP reply: its entries, and the ids of pending entries
/// deleted from the stream (only a re-read of pending entries can meet those).
type StreamReply = (Arc<str>, Vec<Entry>, Vec<String>);

/// A Redis command that failed, naming the operation and the stream.
#[derive(Debug)]
pub struct StreamError {
    pub op: &'static str,
    pub stream: String,
    pub source: redis::RedisError,
}

impl StreamError {
    fn new(op: &'static str, stream: &str, source: redis::RedisError) -> StreamError {
        StreamError { op, stream: stream.to_string(), source }
    }

    /// True when the connection is unusable (I/O, timeout, server gone): reconnect and retry.
    pub fn is_connection(&self) -> bool {
        is_connection_error(&self.source)
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

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis {} on stream '{}' failed: {}", self.op, self.stream, self.source)
    }
}

impl std::error::Error for StreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Connection lost, or a server that is up but not serving yet (loading its AOF after a
/// restart, a failover under way): in every case, reconnect later and retry.
fn is_connection_error(e: &redis::RedisError) -> bool {
    use redis::ServerErrorKind::{BusyLoading, ClusterDown, MasterDown, TryAgain};
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || matches!(e.kind(), redis::ErrorKind::Server(BusyLoading | TryAgain | MasterDown | ClusterDown))
}

/// Time allowed for a TCP connect and for each reply outside a blocking read.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens one connection with connect, read and write timeouts, so no call can hang forever.
pub fn connect(url: &str, read_timeout: Duration) -> redis::RedisResult<Connection> {
    let client = redis::Client::open(url)?;
    let con = client.get_connection_with_timeout(COMMAND_TIMEOUT)?;
    con.set_read_timeout(Some(read_timeout))?;
    con.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    Ok(con)
}

/// Connects, retrying with capped exponential backoff (100 ms → 3 s) and logging each failed
/// attempt, until it succeeds or `stop` is set (then `None`). `who` names the caller in logs.
pub fn connect_with_retry(
    url: &str,
    read_timeout: Duration,
    stop: &AtomicBool,
    who: &str,
) -> Option<Connection> {
    let mut backoff = Backoff::reconnect();
    let mut attempt = 1u32;
    loop {
        match connect(url, read_timeout) {
            Ok(con) => return Some(con),
            Err(e) => {
                let delay = backoff.next_delay();
                log::warn!(
                    "{who}: cannot connect to Redis at {} (attempt {attempt}): {e}; retrying in {delay:?}",
                    mask_url(url)
                );
                if !sleep_unless(stop, delay) {
                    return None;
                }
                attempt += 1;
            }
        }
    }
}

/// Creates the group on `stream` (and the stream, MKSTREAM) starting at `start`; an existing
/// group (BUSYGROUP) is success, so every instance may call this at every start.
pub fn ensure_group(
    con: &mut Connection,
    stream: &str,
    group: &str,
    start: &str,
) -> Result<bool, StreamError> {
    let result: redis::RedisResult<Value> =
        redis::cmd("XGROUP").arg("CREATE").arg(stream).arg(group).arg(start).arg("MKSTREAM").query(con);
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
        Err(e) => Err(StreamError::new("XGROUP CREATE", stream, e)),
    }
}

/// XREADGROUP of new entries (`>`) from every stream: at most `count` per stream, blocking up
/// to `block`. An empty vector means the block timed out with nothing new.
///
/// The connection's read timeout must exceed `block`; otherwise a reply that arrives late is
/// abandoned and its entries sit in this consumer's pending list until reclaimed.
pub fn read_new(
    con: &mut Connection,
    group: &str,
    consumer: &str,
    streams: &[String],
    count: usize,
    block: Duration,
) -> Result<Vec<Batch>, StreamError> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("STREAMS")
        .arg(streams);
    for _ in streams {
        cmd.arg(">");
    }
    let label = streams.join(",");
    let reply: Value = cmd.query(con).map_err(|e| StreamError::new("XREADGROUP", &label, e))?;
    let replies = decode_read_reply(reply)
        .map_err(|detail| StreamError::new("XREADGROUP", &label, reply_error(detail)))?;
    Ok(replies
        .into_iter()
        .filter(|(_, entries, _)| !entries.is_empty())
        .map(|(stream, entries, _)| Batch { stream, entries })
        .collect())
}

fn reply_error(detail: String) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "unexpected reply", detail))
}

fn decode_read_reply(reply: Value) -> Result<Vec<StreamReply>, String> {
    let per_stream: Vec<(Value, Value)> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(mut pair) if pair.len() == 2 => {
                    let entries = pair.pop().unwrap_or(Value::Nil);
                    let name = pair.pop().unwrap_or(Value::Nil);
                    Ok((name, entries))
                }
                other => Err(format!("stream item is not a pair: {other:?}")),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(pairs) => pairs,
        other => return Err(format!("XREADGROUP reply is not an array: {other:?}")),
    };
    let mut batches = Vec::with_capacity(per_stream.len());
    for (name, entries) in per_stream {
        let stream = text(name).ok_or("stream name is not text")?;
        let (entries, deleted) = decode_entries(entries)?;
        batches.push((Arc::from(stream), entries, deleted));
    }
    Ok(batches)
}

/// Decodes `[[id, [field, value, ...]], ...]` into entries (delivered once, as far as a
/// plain read knows) and the ids whose fields are nil: entries deleted (trimmed) while pending.
fn decode_entries(entries: Value) -> Result<(Vec<Entry>, Vec<String>), String> {
    let Value::Array(entries) = entries else {
        return Err(format!("entry list is not an array: {entries:?}"));
    };
    let mut out = Vec::with_capacity(entries.len());
    let mut deleted = Vec::new();
    for entry in entries {
        let mut parts = match entry {
            Value::Array(parts) => parts,
            Value::Nil => continue, // XCLAIM before Redis 7 answers nil for a deleted entry
            other => return Err(format!("entry is not an array: {other:?}")),
        };
        if parts.len() != 2 {
            return Err(format!("entry has {} parts, expected 2", parts.len()));
        }
        let fields = parts.pop().unwrap_or(Value::Nil);
        let id = parts.pop().and_then(text).ok_or("entry id is not text")?;
        let fields = match fields {
            Value::Nil => {
                deleted.push(id);
                continue;
            }
            Value::Array(flat) => {
                let mut pairs = Vec::with_capacity(flat.len() / 2);
                let mut it = flat.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    let k = bytes(k).ok_or("field name is not a string")?;
                    pairs.push((k, bytes(v).ok_or("field value is not a string")?));
                }
                pairs
            }
            Value::Map(map) => map
                .into_iter()
                .map(|(k, v)| Ok((bytes(k).ok_or("field name")?, bytes(v).ok_or("field value")?)))
                .collect::<Result<_, &str>>()?,
            other => return Err(format!("entry fields are not an array: {other:?}")),
        };
        out.push(Entry { id, fields, deliveries: 1 });
    }
    Ok((out, deleted))
}

fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn text(v: Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

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
pub fn dead_letter_stream(stream: &str) -> String {
    format!("{stream}:dlq")
}

/// Who is acknowledging: written into every dead-letter entry.
#[derive(Debug, Clone)]
pub struct AckContext<'a> {
    pub group: &'a str,
    pub consumer: &'a str,
}

/// Appends `dead` to the dead-letter stream, then acknowledges them and `ids`, atomically.
///
/// A Lua script rather than MULTI/EXEC: Redis does not roll back a transaction whose command
/// fails at run time (an XADD meeting WRONGTYPE), so MULTI would still run the XACK and lose the
/// entry. The script stops at the first failed call, before any XACK. A retry after a failure
/// may write a dead letter twice; it never acknowledges one unwritten.
const ACK_WITH_DEAD_LETTERS: &str = r"
-- KEYS[1] stream, KEYS[2] dead-letter stream; ARGV[1] group, ARGV[2] number of dead letters,
-- then per dead letter: its item count and its field/value items; then the ids to acknowledge.
local i = 3
for _ = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[i])
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
local acked = 0
while i <= #ARGV do
  local last = math.min(i + 999, #ARGV)
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, last))
  i = last + 1
end
return acked";

/// Acknowledges `ids` of `stream`, and moves `dead` to `<stream>:dlq` with the reason, in one
/// atomic call. Returns how many entries Redis acknowledged.
///
/// Call only after every other entry in `ids` is committed to Postgres.
pub fn ack(
    con: &mut Connection,
    ctx: &AckContext<'_>,
    stream: &str,
    ids: &[&str],
    dead: &[DeadLetter<'_>],
) -> Result<u64, StreamError> {
    if ids.is_empty() && dead.is_empty() {
        return Ok(0);
    }
    if dead.is_empty() {
        return redis::cmd("XACK")
            .arg(stream)
            .arg(ctx.group)
            .arg(ids)
            .query(con)
            .map_err(|e| StreamError::new("XACK", stream, e));
    }
    let script = redis::Script::new(ACK_WITH_DEAD_LETTERS);
    let mut inv = script.key(stream);
    inv.key(dead_letter_stream(stream)).arg(ctx.group).arg(dead.len());
    let failed_at = jiff::Timestamp::now().to_string();
    for d in dead {
        let deliveries = d.entry.deliveries.to_string();
        let extra: [(&str, &str); 8] = [
            ("dlq_reason", &d.reason),
            ("dlq_error", &d.error),
            ("dlq_stream", stream),
            ("dlq_original_id", &d.entry.id),
            ("dlq_group", ctx.group),
            ("dlq_consumer", ctx.consumer),
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
    inv.invoke(con).map_err(|e| StreamError::new("dead-letter + XACK", stream, e))
}

/// Acknowledges pending ids whose entries no longer exist: there is nothing to process or
/// dead-letter, and left pending they would be reported again at every reclaim.
pub fn ack_deleted(
    con: &mut Connection,
    stream: &str,
    group: &str,
    ids: &[String],
) -> Result<(), StreamError> {
    if ids.is_empty() {
        return Ok(());
    }
    redis::cmd("XACK")
        .arg(stream)
        .arg(group)
        .arg(ids)
        .query::<u64>(con)
        .map(|_| ())
        .map_err(|e| StreamError::new("XACK (deleted)", stream, e))
}

/// Entries delivered to the group and not yet acknowledged (XPENDING summary).
pub fn pending_count(con: &mut Connection, stream: &str, group: &str) -> Result<u64, StreamError> {
    let reply: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query(con)
        .map_err(|e| StreamError::new("XPENDING", stream, e))?;
    match reply {
        Value::Array(items) => match items.first() {
            Some(Value::Int(n)) => Ok((*n).max(0) as u64),
            _ => Ok(0),
        },
        _ => Ok(0),
    }
}

/// Entries in the stream not yet delivered to the group (XINFO GROUPS `lag`, Redis ≥ 7);
/// `None` where Redis does not report it.
pub fn group_lag(con: &mut Connection, stream: &str, group: &str) -> Result<Option<u64>, StreamError> {
    let reply: Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query(con)
        .map_err(|e| StreamError::new("XINFO GROUPS", stream, e))?;
    let Value::Array(groups) = reply else {
        return Ok(None);
    };
    for g in groups {
        let pairs: Vec<(Value, Value)> = match g {
            Value::Array(flat) => {
                let mut it = flat.into_iter();
                std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
            }
            Value::Map(m) => m,
            _ => continue,
        };
        let mut name = None;
        let mut lag = None;
        for (k, v) in pairs {
            match (text(k).as_deref(), v) {
                (Some("name"), v) => name = text(v),
                (Some("lag"), Value::Int(n)) => lag = Some(n.max(0) as u64),
                _ => {}
            }
        }
        if name.as_deref() == Some(group) {
            return Ok(lag);
        }
    }
    Ok(None)
}

/// Entries taken over from the pending list (this consumer's own, or stuck with another).
#[derive(Debug, Default)]
pub struct Claimed {
    pub entries: Vec<Entry>,
    /// Ids Redis reports deleted from the stream while pending: lost upstream.
    pub deleted: Vec<String>,
    /// Where the next call continues; `None` at the end.
    pub next: Option<String>,
}

/// This consumer's own pending entries after `after` (XREADGROUP with an ID instead of `>`):
/// what a previous run under the same consumer name read and never acknowledged. Deleted
/// entries are reported in `deleted`; they stay pending until acknowledged.
pub fn read_own_pending(
    con: &mut Connection,
    group: &str,
    consumer: &str,
    stream: &str,
    after: &str,
    count: usize,
) -> Result<Claimed, StreamError> {
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
        .map_err(|e| StreamError::new("XREADGROUP (own pending)", stream, e))?;
    let replies = decode_read_reply(reply)
        .map_err(|d| StreamError::new("XREADGROUP (own pending)", stream, reply_error(d)))?;
    let mut claimed = Claimed::default();
    for (_, entries, deleted) in replies {
        claimed.entries.extend(entries);
        claimed.deleted.extend(deleted);
    }
    let last = claimed.entries.iter().map(|e| &e.id).chain(&claimed.deleted).max_by_key(|id| id_key(id));
    claimed.next = last.filter(|_| claimed.entries.len() + claimed.deleted.len() >= count).cloned();
    Ok(claimed)
}

/// XAUTOCLAIM: takes over up to `count` entries idle longer than `min_idle`, scanning from
/// `cursor` (`0-0` to start). Redis ≥ 7 lists entries deleted while pending (it drops them
/// from the pending list itself).
pub fn autoclaim(
    con: &mut Connection,
    stream: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
    cursor: &str,
    count: usize,
) -> Result<Claimed, StreamError> {
    let reply: Value = redis::cmd("XAUTOCLAIM")
        .arg(stream)
        .arg(group)
        .arg(consumer)
        .arg(min_idle.as_millis() as u64)
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query(con)
        .map_err(|e| StreamError::new("XAUTOCLAIM", stream, e))?;
    let bad = |d: String| StreamError::new("XAUTOCLAIM", stream, reply_error(d));
    let Value::Array(mut parts) = reply else {
        return Err(bad("reply is not an array".into()));
    };
    if parts.len() < 2 {
        return Err(bad(format!("reply has {} parts", parts.len())));
    }
    let deleted_ids = if parts.len() >= 3 { parts.pop() } else { None };
    let entries = parts.pop().unwrap_or(Value::Nil);
    let next = parts.pop().and_then(text).ok_or_else(|| bad("cursor is not text".into()))?;
    let (entries, mut deleted) = decode_entries(entries).map_err(bad)?;
    if let Some(Value::Array(ids)) = deleted_ids {
        deleted.extend(ids.into_iter().filter_map(text));
    }
    let next = (next != "0-0").then_some(next);
    Ok(Claimed { entries, deleted, next })
}

/// The XAUTOCLAIM of Redis < 6.2: XPENDING from `start`, then XCLAIM of the entries idle
/// longer than `min_idle`. Entries deleted while pending are not reported by old servers.
pub fn claim_fallback(
    con: &mut Connection,
    stream: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
    start: &str,
    count: usize,
) -> Result<Claimed, StreamError> {
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .arg(start)
        .arg("+")
        .arg(count)
        .query(con)
        .map_err(|e| StreamError::new("XPENDING", stream, e))?;
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
        .map_err(|e| StreamError::new("XCLAIM", stream, e))?;
    let (entries, deleted) =
        decode_entries(reply).map_err(|d| StreamError::new("XCLAIM", stream, reply_error(d)))?;
    Ok(Claimed { entries, deleted, next })
}

/// (ms, seq) of an entry id, for ordering; malformed parts sort first.
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// The smallest id after `id` (exclusive ranges need Redis 6.2, which the fallback lacks).
fn next_id(id: &str) -> String {
    let (ms, seq) = id_key(id);
    match seq.checked_add(1) {
        Some(seq) => format!("{ms}-{seq}"),
        None => format!("{}-0", ms + 1),
    }
}

/// Sets each entry's `deliveries` to Redis's count (XPENDING per id, pipelined). An entry no
/// longer pending keeps its count.
pub fn load_delivery_counts(
    con: &mut Connection,
    stream: &str,
    group: &str,
    entries: &mut [Entry],
) -> Result<(), StreamError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for e in entries.iter() {
        pipe.cmd("XPENDING").arg(stream).arg(group).arg(&e.id).arg(&e.id).arg(1);
    }
    let replies: Vec<Vec<(String, String, u64, u64)>> =
        pipe.query(con).map_err(|e| StreamError::new("XPENDING", stream, e))?;
    for (entry, reply) in entries.iter_mut().zip(replies) {
        if let Some((_, _, _, n)) = reply.first() {
            entry.deliveries = *n;
        }
    }
    Ok(())
}

/// Deletes the group's consumers, other than `me`, idle longer than `min_idle` with no pending
/// entries. One Lua script, so a consumer cannot read between the check and the delete
/// (DELCONSUMER would drop what it read from the pending list). Returns the names removed.
pub fn prune_consumers(
    con: &mut Connection,
    stream: &str,
    group: &str,
    me: &str,
    min_idle: Duration,
) -> Result<Vec<String>, StreamError> {
    const PRUNE: &str = r"
local removed = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] ~= ARGV[2] and tonumber(info['pending']) == 0
     and tonumber(info['idle']) >= tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed[#removed + 1] = info['name']
  end
end
return removed";
    redis::Script::new(PRUNE)
        .key(stream)
        .arg(group)
        .arg(me)
        .arg(min_idle.as_millis() as u64)
        .invoke(con)
        .map_err(|e| StreamError::new("prune consumers", stream, e))
}

/// The hash where the last error of an entry that may be redelivered is kept, so the dead
/// letter written when its delivery budget runs out can say what went wrong, even in
/// another process.
pub fn errors_key(stream: &str) -> String {
    format!("{stream}:errors")
}

/// How long the error hash outlives its last write: long enough for any redelivery.
const ERRORS_TTL_SECS: u64 = 7 * 24 * 3600;

/// Records `error` as the last error of `ids`.
pub fn record_errors(
    con: &mut Connection,
    stream: &str,
    ids: &[&str],
    error: &str,
) -> Result<(), StreamError> {
    if ids.is_empty() {
        return Ok(());
    }
    let key = errors_key(stream);
    let mut hset = redis::cmd("HSET");
    hset.arg(&key);
    for id in ids {
        hset.arg(*id).arg(error);
    }
    redis::pipe()
        .add_command(hset)
        .ignore()
        .cmd("EXPIRE")
        .arg(&key)
        .arg(ERRORS_TTL_SECS)
        .ignore()
        .query::<()>(con)
        .map_err(|e| StreamError::new("HSET errors", stream, e))
}

/// The last recorded error of each id, if any.
pub fn last_errors(
    con: &mut Connection,
    stream: &str,
    ids: &[&str],
) -> Result<Vec<Option<String>>, StreamError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    redis::cmd("HMGET")
        .arg(errors_key(stream))
        .arg(ids)
        .query(con)
        .map_err(|e| StreamError::new("HMGET errors", stream, e))
}

/// Forgets the recorded errors of `ids` (they are acknowledged now).
pub fn forget_errors(con: &mut Connection, stream: &str, ids: &[&str]) -> Result<(), StreamError> {
    if ids.is_empty() {
        return Ok(());
    }
    redis::cmd("HDEL")
        .arg(errors_key(stream))
        .arg(ids)
        .query::<()>(con)
        .map_err(|e| StreamError::new("HDEL errors", stream, e))
}

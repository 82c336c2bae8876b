//! The consumer group itself: creating it, pruning dead consumers, and the figures the stats
//! line reports.

use std::sync::LazyLock;
use std::time::Duration;

use super::Redis;
use super::script::Lua;
use redis::Value;

use super::BrokerError;
use super::inspect::GroupInfo;

/// Creates the group on `stream` (and the stream, MKSTREAM) starting at `start`. Returns
/// whether it was created; an existing group (BUSYGROUP) is success, so every instance may
/// call this at every start.
pub fn ensure_group(con: &mut Redis, stream: &str, group: &str, start: &str) -> Result<bool, BrokerError> {
    let result: redis::RedisResult<Value> =
        redis::cmd("XGROUP").arg("CREATE").arg(stream).arg(group).arg(start).arg("MKSTREAM").query(con);
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
        Err(e) => Err(BrokerError::new("XGROUP CREATE", stream, e)),
    }
}

/// Checks "idle and nothing pending" and deletes in one step (see the script's header).
static PRUNE_CONSUMERS: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("lua/prune_consumers.lua")));

/// Deletes the group's consumers, other than `me`, idle longer than `min_idle` with no pending
/// entries. Returns the names removed.
pub(crate) fn prune_consumers(
    con: &mut Redis,
    stream: &str,
    group: &str,
    me: &str,
    min_idle: Duration,
) -> Result<Vec<String>, BrokerError> {
    let mut inv = PRUNE_CONSUMERS.script.key(stream);
    inv.arg(group).arg(me).arg(min_idle.as_millis() as u64);
    PRUNE_CONSUMERS.run(con, &inv, stream).map_err(|e| BrokerError::new("prune consumers", stream, e))
}

/// Entries in the stream `key` (XLEN; 0 for a key that does not exist).
pub fn length(con: &mut Redis, key: &str) -> Result<u64, BrokerError> {
    redis::cmd("XLEN").arg(key).query(con).map_err(|e| BrokerError::new("XLEN", key, e))
}

/// The type of the key `key` (`stream`, `none` when it does not exist, `hash`…).
pub fn key_type(con: &mut Redis, key: &str) -> Result<String, BrokerError> {
    redis::cmd("TYPE").arg(key).query(con).map_err(|e| BrokerError::new("TYPE", key, e))
}

/// The group's pending count on `stream`, and its oldest pending entry's id (XPENDING summary).
pub fn pending_summary(
    con: &mut Redis,
    stream: &str,
    group: &str,
) -> Result<(u64, Option<String>), BrokerError> {
    let reply: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query(con)
        .map_err(|e| BrokerError::new("XPENDING", stream, e))?;
    let Value::Array(mut items) = reply else {
        return Ok((0, None));
    };
    let count = match items.first() {
        Some(Value::Int(n)) => (*n).max(0) as u64,
        _ => 0,
    };
    let oldest = if items.len() > 1 { super::reply::text(items.swap_remove(1)) } else { None };
    Ok((count, oldest.filter(|_| count > 0)))
}

/// `group` on `stream` as XINFO GROUPS reports it; `None` if the group (or the stream) does
/// not exist.
pub fn group_info(con: &mut Redis, stream: &str, group: &str) -> Result<Option<GroupInfo>, BrokerError> {
    Ok(super::inspect::groups(con, stream)?.and_then(|all| all.into_iter().find(|g| g.name == group)))
}

/// What Redis says of one stream and the group on it: what `/metrics` exposes (refreshed by the
/// stats thread) and `streamsink check` prints. `None` where Redis cannot say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamFigures {
    pub stream: String,
    /// Whether the group exists on the stream; without it, every group figure is `None`.
    pub group_exists: bool,
    pub length: u64,
    /// Entries not yet delivered to the group (XINFO GROUPS `lag`, Redis ≥ 7); `None` where
    /// Redis does not know it.
    pub lag: Option<u64>,
    pub pending: Option<u64>,
    /// Age of the oldest pending entry (from its id's time, at `now`); `None` with none pending.
    pub oldest_pending: Option<Duration>,
    pub consumers: Option<u64>,
    /// The group's position (XINFO GROUPS `last-delivered-id`).
    pub last_delivered: Option<String>,
    /// Entries in `<stream>:dlq`.
    pub dead_letters: u64,
}

/// Reads [`StreamFigures`] for `stream` and `group`: XLEN of the stream and its dead-letter
/// stream, XINFO GROUPS, XPENDING. A missing group (or stream) is a figure, not an error.
pub fn stream_figures(
    con: &mut Redis,
    stream: &str,
    group: &str,
    now: jiff::Timestamp,
) -> Result<StreamFigures, BrokerError> {
    let mut f = StreamFigures {
        stream: stream.to_string(),
        length: length(con, stream)?,
        dead_letters: length(con, &super::keys::dead_letter_stream(stream, con.is_cluster()))?,
        ..StreamFigures::default()
    };
    if let Some(info) = group_info(con, stream, group)? {
        let (pending, oldest) = pending_summary(con, stream, group)?;
        let oldest = oldest.as_deref().and_then(crate::event::entry_timestamp);
        f.group_exists = true;
        f.lag = info.lag;
        f.pending = Some(pending);
        f.oldest_pending = oldest.map(|at| Duration::try_from(now.duration_since(at)).unwrap_or_default());
        f.consumers = Some(info.consumers);
        f.last_delivered = Some(info.last_delivered);
    }
    Ok(f)
}

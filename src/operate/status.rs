//! `streamsink status`: what an operator asks first in an incident. Per stream: its length and
//! time span; per group (every group, not only streamsink's): consumers with their pending and
//! idle time, pending, lag, oldest pending age and position; the dead-letter stream's length and
//! time span. Read-only, Redis only.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::table::{self, age, id_time};
use super::{OperateError, Report};
use crate::broker::group::pending_summary;
use crate::broker::inspect::{self, ConsumerInfo, GroupInfo, StreamInfo};
use crate::broker::keys::dead_letter_stream;
use crate::config::RedisSettings;

/// The status of some streams, read at `at`.
#[derive(Debug, Clone)]
pub struct Status {
    /// When it was read: ages are as of this time.
    pub at: Timestamp,
    /// In the order asked for.
    pub streams: Vec<StreamStatus>,
    /// Every logical stream two or more of `streams` are shards of, summed over them.
    pub sharded: Vec<ShardedStatus>,
}

/// The shards of one logical stream (`events:{0}` … of `events`), summed: what an operator reads
/// first about a sharded stream, before any one shard.
#[derive(Debug, Clone)]
pub struct ShardedStatus {
    /// The logical stream's name.
    pub stream: String,
    /// Shards asked for, and how many of them exist.
    pub shards: usize,
    pub existing: usize,
    /// Entries over all shards.
    pub length: u64,
    /// Dead letters over all shards.
    pub dead_letters: u64,
    /// Per group name, over the shards it is on.
    pub groups: Vec<ShardedGroup>,
}

/// One group summed over the shards of a logical stream.
#[derive(Debug, Clone)]
pub struct ShardedGroup {
    pub name: String,
    /// Shards the group is on.
    pub shards: usize,
    /// Distinct consumer names over those shards.
    pub consumers: std::collections::BTreeSet<String>,
    pub pending: u64,
    /// `None` when a shard's lag is unknown.
    pub lag: Option<u64>,
    /// The oldest pending entry's id over all shards (by its time).
    pub oldest_pending: Option<String>,
}

impl ShardedStatus {
    /// Sums the shards among `streams` per logical stream having two or more of them.
    fn of(streams: &[StreamStatus]) -> Vec<ShardedStatus> {
        let mut out: Vec<ShardedStatus> = Vec::new();
        for s in streams {
            let Some(logical) = crate::broker::shard::logical_of(&s.stream) else { continue };
            let at = match out.iter().position(|o| o.stream == logical) {
                Some(at) => at,
                None => {
                    let empty = ShardedStatus {
                        stream: logical.to_string(),
                        shards: 0,
                        existing: 0,
                        length: 0,
                        dead_letters: 0,
                        groups: Vec::new(),
                    };
                    out.push(empty);
                    out.len() - 1
                }
            };
            out[at].add(s);
        }
        out.retain(|o| o.shards > 1);
        out
    }

    fn add(&mut self, shard: &StreamStatus) {
        self.shards += 1;
        self.existing += usize::from(shard.info.is_some());
        self.length += shard.info.as_ref().map_or(0, |i| i.length);
        self.dead_letters += shard.dead_letters.as_ref().map_or(0, |i| i.length);
        for g in &shard.groups {
            let at = match self.groups.iter().position(|o| o.name == g.info.name) {
                Some(at) => at,
                None => {
                    let name = g.info.name.clone();
                    let empty = ShardedGroup {
                        name,
                        shards: 0,
                        consumers: Default::default(),
                        pending: 0,
                        lag: Some(0),
                        oldest_pending: None,
                    };
                    self.groups.push(empty);
                    self.groups.len() - 1
                }
            };
            let sum = &mut self.groups[at];
            sum.shards += 1;
            sum.consumers.extend(g.consumers.iter().map(|c| c.name.clone()));
            sum.pending += g.info.pending;
            sum.lag = sum.lag.zip(g.info.lag).map(|(a, b)| a + b);
            let older = |id: &String| {
                let time = |id: &str| id.parse::<crate::broker::id::EntryId>().ok();
                sum.oldest_pending.as_deref().is_none_or(|o| time(id) < time(o))
            };
            if let Some(id) = g.oldest_pending.as_ref().filter(|id| older(id)) {
                sum.oldest_pending = Some(id.clone());
            }
        }
    }
}

/// One stream, its groups and its dead letters. `info` is `None` for a stream that does not
/// exist (a typo, or a stream nothing has written to yet).
#[derive(Debug, Clone)]
pub struct StreamStatus {
    /// The stream's name.
    pub stream: String,
    /// Its length and first and last ids.
    pub info: Option<StreamInfo>,
    /// Every group on it, as XINFO GROUPS lists them.
    pub groups: Vec<GroupStatus>,
    /// The dead-letter stream's name (`<stream>:dlq`; `broker::keys`).
    pub dead_letter_stream: String,
    /// The dead-letter stream; `None` where it does not exist (no dead letters yet).
    pub dead_letters: Option<StreamInfo>,
}

/// One group of a stream.
#[derive(Debug, Clone)]
pub struct GroupStatus {
    /// Its name, consumer count, pending count, lag and position.
    pub info: GroupInfo,
    /// Id of the oldest pending entry (its age is the time since it was added).
    pub oldest_pending: Option<String>,
    /// Its consumers, with their pending counts and idle times.
    pub consumers: Vec<ConsumerInfo>,
}

/// Reads the status of `streams`.
pub fn status(redis: &RedisSettings, streams: &[String]) -> Result<Status, OperateError> {
    let mut con = super::connect(redis)?;
    let mut out =
        Status { at: Timestamp::now(), streams: Vec::with_capacity(streams.len()), sharded: Vec::new() };
    for stream in streams {
        let dlq = dead_letter_stream(stream, con.is_cluster());
        let mut s = StreamStatus {
            stream: stream.clone(),
            info: inspect::stream_info(&mut con, stream)?,
            groups: Vec::new(),
            dead_letters: inspect::stream_info(&mut con, &dlq)?,
            dead_letter_stream: dlq,
        };
        for info in inspect::groups(&mut con, stream)?.unwrap_or_default() {
            let read = pending_summary(&mut con, stream, &info.name)
                .and_then(|(_, oldest)| Ok((oldest, inspect::consumers(&mut con, stream, &info.name)?)));
            match read {
                Ok((oldest_pending, consumers)) => {
                    s.groups.push(GroupStatus { info, oldest_pending, consumers })
                }
                Err(e) if e.is_no_group() => {} // destroyed since XINFO GROUPS listed it
                Err(e) => return Err(e.into()),
            }
        }
        out.streams.push(s);
    }
    out.sharded = ShardedStatus::of(&out.streams);
    Ok(out)
}

impl Status {
    /// Time since the entry `id` was added, as of this status.
    fn age_of(&self, id: &str) -> Option<Duration> {
        let added = crate::event::entry_timestamp(id)?;
        Some(Duration::try_from(self.at.duration_since(added)).unwrap_or_default())
    }
}

impl Report for Status {
    /// An array with one object per stream.
    fn to_json(&self) -> Value {
        let span = |info: &Option<StreamInfo>| match info {
            None => json!({ "exists": false, "length": 0 }),
            Some(i) => json!({
                "exists": true,
                "length": i.length,
                "first_id": i.first_id,
                "first_at": i.first_id.as_deref().map(|id| id_time(Some(id))),
                "last_id": i.last_id,
                "last_at": i.last_id.as_deref().map(|id| id_time(Some(id))),
            }),
        };
        let streams = self.streams.iter().map(|s| {
            let mut stream = span(&s.info);
            stream["stream"] = json!(s.stream);
            stream["dead_letters"] = span(&s.dead_letters);
            stream["dead_letters"]["stream"] = json!(s.dead_letter_stream);
            stream["groups"] = s
                .groups
                .iter()
                .map(|g| {
                    json!({
                        "group": g.info.name,
                        "pending": g.info.pending,
                        "lag": g.info.lag,
                        "last_delivered_id": g.info.last_delivered,
                        "oldest_pending_id": g.oldest_pending,
                        "oldest_pending_seconds": g.oldest_pending.as_deref().and_then(|id| self.age_of(id)).map(|d| d.as_secs_f64()),
                        "consumers": g.consumers.iter().map(|c| json!({
                            "consumer": c.name, "pending": c.pending, "idle_seconds": c.idle.as_secs_f64(),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            stream
        });
        // A sharded stream's sums follow its shards, marked by "shards".
        let sharded = self.sharded.iter().map(|s| {
            json!({
                "stream": s.stream,
                "shards": s.shards,
                "existing_shards": s.existing,
                "length": s.length,
                "dead_letters": { "length": s.dead_letters },
                "groups": s.groups.iter().map(|g| json!({
                    "group": g.name,
                    "shards": g.shards,
                    "consumers": g.consumers.len(),
                    "pending": g.pending,
                    "lag": g.lag,
                    "oldest_pending_id": g.oldest_pending,
                    "oldest_pending_seconds": g.oldest_pending.as_deref().and_then(|id| self.age_of(id)).map(|d| d.as_secs_f64()),
                })).collect::<Vec<_>>(),
            })
        });
        Value::Array(streams.chain(sharded).collect())
    }
}

/// First each sharded stream's sums, then per stream: a headline, a table of groups, a table
/// of consumers.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dash = || "-".to_string();
        for s in &self.sharded {
            writeln!(
                f,
                "{} ({} shards, {} existing): {} entries, {} dead letters",
                s.stream, s.shards, s.existing, s.length, s.dead_letters
            )?;
            let groups: Vec<Vec<String>> = s
                .groups
                .iter()
                .map(|g| {
                    vec![
                        g.name.clone(),
                        g.shards.to_string(),
                        g.consumers.len().to_string(),
                        g.pending.to_string(),
                        g.lag.map_or_else(dash, |l| l.to_string()),
                        g.oldest_pending.as_deref().and_then(|id| self.age_of(id)).map_or_else(dash, age),
                    ]
                })
                .collect();
            if !groups.is_empty() {
                writeln!(f)?;
                let header = ["group", "shards", "consumers", "pending", "lag", "oldest pending"];
                write!(f, "{}", table::render(&header, &groups))?;
            }
            writeln!(f)?;
        }
        for (n, s) in self.streams.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            let Some(info) = &s.info else {
                writeln!(f, "{}: no such stream", s.stream)?;
                continue;
            };
            writeln!(
                f,
                "{}: {} entries, {} .. {}",
                s.stream,
                info.length,
                id_time(info.first_id.as_deref()),
                id_time(info.last_id.as_deref())
            )?;
            match &s.dead_letters {
                Some(d) if d.length > 0 => writeln!(
                    f,
                    "dead letters ({}): {}, {} .. {}",
                    s.dead_letter_stream,
                    d.length,
                    id_time(d.first_id.as_deref()),
                    id_time(d.last_id.as_deref())
                )?,
                _ => writeln!(f, "dead letters ({}): none", s.dead_letter_stream)?,
            }
            if s.groups.is_empty() {
                writeln!(f, "no consumer groups")?;
                continue;
            }
            let groups: Vec<Vec<String>> = s
                .groups
                .iter()
                .map(|g| {
                    vec![
                        g.info.name.clone(),
                        g.consumers.len().to_string(),
                        g.info.pending.to_string(),
                        g.info.lag.map_or_else(dash, |l| l.to_string()),
                        g.oldest_pending.as_deref().and_then(|id| self.age_of(id)).map_or_else(dash, age),
                        g.info.last_delivered.clone(),
                    ]
                })
                .collect();
            let header = ["group", "consumers", "pending", "lag", "oldest pending", "last delivered"];
            writeln!(f)?;
            write!(f, "{}", table::render(&header, &groups))?;
            let consumers: Vec<Vec<String>> = s
                .groups
                .iter()
                .flat_map(|g| {
                    g.consumers.iter().map(|c| {
                        vec![g.info.name.clone(), c.name.clone(), c.pending.to_string(), age(c.idle)]
                    })
                })
                .collect();
            if !consumers.is_empty() {
                writeln!(f)?;
                write!(f, "{}", table::render(&["group", "consumer", "pending", "idle"], &consumers))?;
            }
        }
        Ok(())
    }
}

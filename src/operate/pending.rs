//! `streamsink pending`: the entries a group holds but has not acknowledged, oldest first, with
//! who holds them, for how long, how often they were delivered, and the last error recorded for
//! them (the `<stream>:errors` hash the workers keep), so an operator can tell a slow consumer
//! from a poison entry from a dead consumer. Read-only, Redis only.

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

use super::table::{self, age};
use super::{OperateError, Report};
use crate::broker::errors::last_errors;
use crate::broker::group::pending_summary;
use crate::broker::inspect::{self, PendingEntry};
use crate::config::RedisSettings;

/// Which pending entries to list.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The group whose pending entries these are.
    pub group: &'a str,
    /// Only this consumer's.
    pub consumer: Option<&'a str>,
    /// Only entries idle at least this long.
    pub min_idle: Option<Duration>,
    /// At most this many.
    pub limit: usize,
}

/// Pending entries, oldest first.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The stream.
    pub stream: String,
    /// The group.
    pub group: String,
    /// The group's whole pending count (all consumers, any idle time).
    pub total: u64,
    /// The entries selected, oldest first.
    pub entries: Vec<Listed>,
    /// True when more entries matched than `limit` allowed.
    pub more: bool,
}

/// One pending entry and its last recorded error.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The stream (the shard, when several were asked for) it is pending on.
    pub stream: String,
    /// Id, consumer, idle time and deliveries.
    pub entry: PendingEntry,
    /// The last error a worker recorded for it (`<stream>:errors`), if any is kept.
    pub last_error: Option<String>,
}

/// Entries read from XPENDING per round trip while filtering by idle time.
const PAGE: usize = 1000;

/// Lists the pending entries `query` selects. A group (or stream) that does not exist is
/// refused with one line saying which.
pub fn pending(redis: &RedisSettings, query: &Query<'_>) -> Result<Pending, OperateError> {
    let mut con = super::connect(redis)?;
    let exists =
        inspect::groups(&mut con, query.stream)?.is_some_and(|g| g.iter().any(|g| g.name == query.group));
    if !exists {
        return Err(OperateError::Refused(format!(
            "group {} does not exist on stream {} (see streamsink status --stream {})",
            query.group, query.stream, query.stream
        )));
    }
    let (total, _) = pending_summary(&mut con, query.stream, query.group)?;
    let mut found: Vec<PendingEntry> = Vec::new();
    let mut after: Option<String> = None;
    let mut more = false;
    loop {
        let page = inspect::pending_page(
            &mut con,
            query.stream,
            query.group,
            after.as_deref(),
            PAGE,
            query.consumer,
        )?;
        let last = page.last().map(|e| e.id.clone());
        let full = page.len() == PAGE;
        for e in page.into_iter().filter(|e| query.min_idle.is_none_or(|min| e.idle >= min)) {
            if found.len() == query.limit {
                more = true;
                break;
            }
            found.push(e);
        }
        if more || !full {
            break;
        }
        after = last;
    }
    let ids: Vec<&str> = found.iter().map(|e| e.id.as_str()).collect();
    let errors = last_errors(&mut con, query.stream, &ids)?;
    let stream = query.stream.to_string();
    let entries = found
        .into_iter()
        .zip(errors)
        .map(|(entry, last_error)| Listed { stream: stream.clone(), entry, last_error })
        .collect();
    Ok(Pending { stream, group: query.group.to_string(), total, entries, more })
}

/// [`pending`] over the shards `streams` of one logical stream (`label`, as the operator wrote
/// it): every shard's selection, merged oldest first (by entry id time) and cut at the limit;
/// the total is the sum. A shard without the group is skipped; no shard with it is refused.
pub fn pending_of_shards(
    redis: &RedisSettings,
    label: &str,
    streams: &[String],
    query: &Query<'_>,
) -> Result<Pending, OperateError> {
    let mut merged = Pending {
        stream: label.to_string(),
        group: query.group.to_string(),
        total: 0,
        entries: Vec::new(),
        more: false,
    };
    let mut found_group = false;
    for stream in streams {
        match pending(redis, &Query { stream, ..query.clone() }) {
            Ok(p) => {
                found_group = true;
                merged.total += p.total;
                merged.more |= p.more;
                merged.entries.extend(p.entries);
            }
            Err(OperateError::Refused(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if !found_group {
        return Err(OperateError::Refused(format!(
            "group {} does not exist on any of the {} shards {label} (see streamsink status --stream '{label}')",
            query.group,
            streams.len()
        )));
    }
    let time = |l: &Listed| l.entry.id.parse::<crate::broker::id::EntryId>().ok();
    merged.entries.sort_by_key(time);
    if merged.entries.len() > query.limit {
        merged.entries.truncate(query.limit);
        merged.more = true;
    }
    Ok(merged)
}

impl Report for Pending {
    fn to_json(&self) -> Value {
        json!({
            "stream": self.stream,
            "group": self.group,
            "pending": self.total,
            "more": self.more,
            "entries": self.entries.iter().map(|l| json!({
                "stream": l.stream,
                "id": l.entry.id,
                "consumer": l.entry.consumer,
                "idle_seconds": l.entry.idle.as_secs_f64(),
                "deliveries": l.entry.deliveries,
                "last_error": l.last_error,
            })).collect::<Vec<_>>(),
        })
    }
}

/// A table of entries, then a line of totals.
impl fmt::Display for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.entries.is_empty() {
            // A shard column only when the entries come from several streams.
            let shards = self.entries.iter().any(|l| l.stream != self.stream);
            let rows: Vec<Vec<String>> = self
                .entries
                .iter()
                .map(|l| {
                    let shard = shards.then(|| l.stream.clone());
                    shard
                        .into_iter()
                        .chain([
                            l.entry.id.clone(),
                            l.entry.consumer.clone(),
                            age(l.entry.idle),
                            l.entry.deliveries.to_string(),
                            l.last_error.as_deref().map_or_else(|| "-".to_string(), one_line),
                        ])
                        .collect()
                })
                .collect();
            let header = ["shard", "id", "consumer", "idle", "deliveries", "last error"];
            let header = if shards { &header[..] } else { &header[1..] };
            write!(f, "{}", table::render(header, &rows))?;
        }
        let more = if self.more { " (more match: raise --limit)" } else { "" };
        writeln!(
            f,
            "{} shown{more}; {} pending in group {} on {}",
            self.entries.len(),
            self.total,
            self.group,
            self.stream
        )
    }
}

/// An error message on one table line: newlines folded, at most 120 characters.
fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= 120 {
        flat
    } else {
        format!("{}…", flat.chars().take(119).collect::<String>())
    }
}

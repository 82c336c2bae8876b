//! `streamsink backfill`: a time range of a stream written to Postgres again, for rebuilding
//! rows after a database restore.
//!
//! The entries are read with XRANGE (by entry-id time), page by page, parsed as the worker
//! parses them (`event::parse`) and written through the worker's own write path
//! (`ingest::triage::write_isolating`, handlers included), so an event already stored is a
//! duplicate and changes nothing: a backfill can be repeated, or run while the worker runs.
//!
//! Invariants: nothing in Redis changes (no XREADGROUP, no XACK, no dead letter: a group's
//! pending entries and last-delivered id stay as they were); malformed entries and rows
//! Postgres rejects are counted and listed, not fatal; memory is bounded by a page
//! ([`PAGE_ENTRIES`] entries, fewer when entries are large: about [`PAGE_BYTES`]).

use crate::broker::Redis;
use std::fmt;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{OperateError, first_id_at, last_id_at, table};
use crate::broker::{group, range};
use crate::config::PostgresSettings;
use crate::event::{self, Entry, Event};
use crate::handlers::Registry;
use crate::ingest::triage::{self, Outcome};
use crate::retry::{Failure, GaveUp, Outage, retry};
use crate::sink::SinkError;
use crate::sink::fault::{self, Fault};
use crate::sink::migrate;
use crate::sink::pool::{PooledClient, Postgres};

/// Most entries read (and written in one transaction) at once.
pub const PAGE_ENTRIES: usize = 1000;
/// Bytes a page aims at: the next page holds as many entries as fit, judged by the largest
/// entry of the last page, so large events are not read a thousand at a time.
pub const PAGE_BYTES: usize = 8 << 20;
/// The first page, before any entry's size is known (16 entries of 1 MB is still a page).
const FIRST_PAGE: usize = 16;
/// Problems listed one by one, of each kind (malformed, rejected); the rest are counted.
pub const MAX_LISTED: usize = 10;
/// Tries of a page that meets a conflict with a concurrent transaction (the worker's).
const CONFLICT_TRIES: u32 = 5;

/// What to backfill.
#[derive(Debug, Clone)]
pub struct Request {
    /// The stream to read (outside any group).
    pub stream: String,
    /// Entries at or after this time (their id's time).
    pub since: Timestamp,
    /// Entries at or before this time; `None`: to the stream's end.
    pub until: Option<Timestamp>,
    /// The worker's envelope field (`STREAMSINK_EVENT_FIELD`).
    pub event_field: String,
}

/// How far a backfill has got, for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Entries read so far.
    pub done: u64,
    /// Entries in the range: see [`Total`].
    pub total: Total,
    /// Since reading began.
    pub elapsed: Duration,
}

/// The number of entries in the range, found without reading them: XLEN when the range holds
/// the whole stream (exact); otherwise XLEN scaled by the part of the stream's time span the
/// range covers (an estimate, exact only if entries came at an even rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    Exact(u64),
    About(u64),
}

/// An entry that was not written.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The entry's id on the stream.
    pub entry_id: String,
    /// `malformed` or `rejected`.
    pub kind: &'static str,
    /// The dead-letter reason the worker gives it (`invalid json`, `rejected by postgres`, ...).
    pub reason: String,
    /// The whole message.
    pub error: String,
}

/// What a backfill did.
#[derive(Debug, Clone, Default)]
pub struct Backfilled {
    /// The stream read.
    pub stream: String,
    /// The XRANGE bounds used.
    pub from_id: String,
    pub to_id: String,
    /// Entries read from the range.
    pub read: u64,
    /// Events newly written (with their handlers' effects).
    pub inserted: u64,
    /// Events already stored: nothing changed for them.
    pub duplicates: u64,
    /// Entries that are not events (the worker dead-letters them).
    pub malformed: u64,
    /// Events Postgres rejects, whose handler panics, or whose id is stored with other content.
    pub rejected: u64,
    /// Events written whose handler failed (row kept, handler effect rolled back).
    pub handler_errors: u64,
    /// The first [`MAX_LISTED`] malformed and the first [`MAX_LISTED`] rejected entries.
    pub problems: Vec<Problem>,
    /// From the first XRANGE to the last commit (connecting left out).
    pub elapsed: Duration,
}

impl Backfilled {
    /// Entries read per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.read as f64 / secs } else { 0.0 }
    }
}

impl super::Report for Backfilled {
    fn to_json(&self) -> Value {
        json!({
            "stream": self.stream,
            "from_id": self.from_id,
            "to_id": self.to_id,
            "read": self.read,
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "malformed": self.malformed,
            "rejected": self.rejected,
            "handler_errors": self.handler_errors,
            "seconds": self.elapsed.as_secs_f64(),
            "rate": self.rate(),
            "problems": self.problems.iter().map(|p| json!({
                "entry_id": p.entry_id, "kind": p.kind, "reason": p.reason, "error": p.error,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The range, a table of the figures, and the problems listed.
impl fmt::Display for Backfilled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "backfilled {} from entry {} to {}", self.stream, self.from_id, self.to_id)?;
        let header = [
            "read",
            "inserted",
            "duplicates",
            "malformed",
            "rejected",
            "handler errors",
            "seconds",
            "entries/s",
        ];
        let row = vec![
            self.read.to_string(),
            self.inserted.to_string(),
            self.duplicates.to_string(),
            self.malformed.to_string(),
            self.rejected.to_string(),
            self.handler_errors.to_string(),
            format!("{:.2}", self.elapsed.as_secs_f64()),
            format!("{:.0}", self.rate()),
        ];
        write!(f, "{}", table::render(&header, &[row]))?;
        if !self.problems.is_empty() {
            writeln!(f)?;
            let rows: Vec<Vec<&str>> = self
                .problems
                .iter()
                .map(|p| vec![p.entry_id.as_str(), p.kind, p.reason.as_str(), p.error.as_str()])
                .collect();
            write!(f, "{}", table::render(&["entry id", "problem", "reason", "error"], &rows))?;
            let unlisted = self.malformed + self.rejected - self.problems.len() as u64;
            if unlisted > 0 {
                writeln!(f, "... and {unlisted} more, not listed")?;
            }
        }
        Ok(())
    }
}

/// Backfills `request`: reads from Redis (`con`) and writes to Postgres (`postgres`), calling
/// `progress` after each page when given. Fails when the stream has no entries at all (a
/// mistyped name), when Postgres cannot be reached or its schema is behind, or when a Redis command or a write fails for another reason than the rows (what
/// was committed before stays; a rerun finds it as duplicates).
pub fn backfill(
    con: &mut Redis,
    postgres: &PostgresSettings,
    request: &Request,
    mut progress: Option<&mut dyn FnMut(&Progress)>,
) -> Result<Backfilled, OperateError> {
    let stream = request.stream.as_str();
    if group::length(con, stream)? == 0 {
        return Err(OperateError::Refused(format!(
            "stream '{stream}' has no entries (or does not exist): nothing to backfill"
        )));
    }
    let from_id = first_id_at(request.since);
    // Without --until, up to the entry that is last now: a producer faster than the backfill
    // must not keep it running (and its total growing) for ever.
    let to_id = match request.until {
        Some(until) => last_id_at(until),
        None => range::ends(con, stream)?.map_or_else(|| "+".to_string(), |(_, last)| last),
    };
    let pool = Postgres::new(&postgres.database_url, &postgres.tls)?.pool(1, Outage::new("postgres").into());
    let mut client = pool.get().map_err(SinkError::Connect)?;
    let (_, missing) = migrate::schema_state(&mut client)?;
    if !missing.is_empty() {
        return Err(OperateError::Refused(format!(
            "the schema lacks migrations {missing:?} that this binary knows: run streamsink migrate first"
        )));
    }
    let total = match progress {
        Some(_) => total(con, stream, &from_id, &to_id)?,
        None => Total::About(0),
    };
    let registry = Registry::builtin();
    let mut report = Backfilled {
        stream: stream.to_string(),
        from_id: from_id.clone(),
        to_id: to_id.clone(),
        ..Default::default()
    };
    let started = Instant::now();
    let (mut start, mut count) = (from_id, FIRST_PAGE);
    loop {
        let entries = range::page(con, stream, &start, &to_id, count)?;
        let Some(last) = entries.last() else { break };
        let full = entries.len() == count;
        start = crate::broker::id::after(&last.id);
        let largest = entries.iter().map(size).max().unwrap_or(1).max(1);
        count = (PAGE_BYTES / largest).clamp(1, PAGE_ENTRIES);
        write_page(&mut client, &registry, stream, &request.event_field, &entries, &mut report)?;
        report.elapsed = started.elapsed();
        if let Some(progress) = progress.as_mut() {
            progress(&Progress { done: report.read, total, elapsed: report.elapsed });
        }
        if !full {
            break;
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Bytes of an entry's fields.
fn size(entry: &Entry) -> usize {
    entry.fields.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Parses and writes one page, adding what happened to `report`.
fn write_page(
    client: &mut PooledClient,
    registry: &Registry,
    stream: &str,
    event_field: &str,
    entries: &[Entry],
    report: &mut Backfilled,
) -> Result<(), OperateError> {
    report.read += entries.len() as u64;
    let mut events: Vec<Event> = Vec::with_capacity(entries.len());
    for entry in entries {
        match event::parse(stream, entry, event_field) {
            Ok(e) => events.push(e),
            Err(m) => {
                if report.malformed < MAX_LISTED as u64 {
                    report.problems.push(Problem {
                        entry_id: entry.id.clone(),
                        kind: "malformed",
                        reason: m.kind().to_string(),
                        error: m.to_string(),
                    });
                }
                report.malformed += 1;
            }
        }
    }
    let outcome = write_retrying_conflicts(client, registry, stream, &events)?;
    report.inserted += outcome.written.inserted;
    report.duplicates += outcome.written.duplicates;
    report.handler_errors += outcome.written.handler_errors;
    for failed in &outcome.failed {
        if report.rejected < MAX_LISTED as u64 {
            let entry_id = events.get(failed.index).map_or_else(String::new, |e| e.entry_id.clone());
            report.problems.push(Problem {
                entry_id,
                kind: "rejected",
                reason: failed.reason.to_string(),
                error: failed.error.clone(),
            });
        }
        report.rejected += 1;
    }
    Ok(())
}

/// The worker's write (rejected rows and panicking handlers isolated), tried again after a
/// conflict with a concurrent transaction; any other failure ends the backfill.
fn write_retrying_conflicts(
    client: &mut PooledClient,
    registry: &Registry,
    stream: &str,
    events: &[Event],
) -> Result<Outcome, OperateError> {
    if events.is_empty() {
        return Ok(Outcome::default());
    }
    // No stop signal to honour: a backfill runs to its end or fails (it can be run again).
    let never = std::sync::atomic::AtomicBool::new(false);
    let mut tries = 0;
    let attempt = || {
        tries += 1;
        triage::write_isolating(client, registry, stream, events).map_err(|e| {
            if fault::classify(&e) == Fault::Conflict && tries < CONFLICT_TRIES {
                Failure::Shortly(e)
            } else {
                Failure::Fatal(e)
            }
        })
    };
    retry(&never, attempt, |_, _, _| {}).map_err(|(GaveUp::Fatal(source) | GaveUp::Stopped(source))| {
        SinkError::Query { op: "backfill write", source }.into()
    })
}

/// The entries from `from_id` to `to_id` ([`Total`]), from XLEN and the stream's two ends.
fn total(con: &mut Redis, stream: &str, from_id: &str, to_id: &str) -> Result<Total, OperateError> {
    let Some((first, last)) = range::ends(con, stream)? else {
        return Ok(Total::Exact(0));
    };
    let length = group::length(con, stream)?;
    let range = (range_ms(from_id).unwrap_or(0), range_ms(to_id).unwrap_or(u64::MAX));
    let stream_span = (range_ms(&first).unwrap_or(0), range_ms(&last).unwrap_or(0));
    Ok(estimate(length, stream_span, range))
}

/// [`Total`] of a stream of `length` entries from `first` to `last` (ms) within `from..=to`.
fn estimate(length: u64, (first, last): (u64, u64), (from, to): (u64, u64)) -> Total {
    if length == 0 {
        return Total::Exact(0); // emptied (trimmed) between the reads of its ends and its length
    }
    if from <= first && to >= last {
        return Total::Exact(length);
    }
    let (lo, hi) = (from.max(first), to.min(last));
    if lo > hi {
        return Total::Exact(0);
    }
    let share = (hi - lo).max(1) as f64 / (last - first).max(1) as f64;
    Total::About(((length as f64 * share).round() as u64).clamp(1, length))
}

/// The milliseconds of an entry id (`+` has none).
fn range_ms(id: &str) -> Option<u64> {
    id.split_once('-').map_or(id, |(ms, _)| ms).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::{Total, estimate};

    #[test]
    fn the_total_is_exact_for_the_whole_stream_and_scaled_by_time_for_part_of_it() {
        let stream = (1_000, 2_000);
        assert_eq!(estimate(500, stream, (0, u64::MAX)), Total::Exact(500));
        assert_eq!(estimate(500, stream, (1_000, 2_000)), Total::Exact(500));
        assert_eq!(estimate(500, stream, (1_500, u64::MAX)), Total::About(250));
        assert_eq!(estimate(500, stream, (1_200, 1_300)), Total::About(50));
        assert_eq!(estimate(500, stream, (2_001, u64::MAX)), Total::Exact(0), "after the last entry");
        assert_eq!(estimate(500, stream, (0, 999)), Total::Exact(0), "before the first entry");
        assert_eq!(estimate(500, stream, (1_700, 1_700)), Total::About(1), "never 0 where entries may be");
        assert_eq!(estimate(0, stream, (1_200, 1_300)), Total::Exact(0), "a stream emptied meanwhile");
    }
}

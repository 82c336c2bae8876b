//! `streamsink dlq`: a stream's dead letters (`<stream>:dlq`), listed, shown one by one,
//! replayed onto the stream, or purged.
//!
//! Invariants: a replay moves each dead letter on its own and atomically (`broker::dlq`), so a
//! crash mid-replay neither loses nor doubles one; a replay or purge touches only the dead
//! letters there when it started (those the worker adds meanwhile, perhaps the replayed events
//! failing again, wait for the next run); the dead-letter stream is read a page at a time, the
//! page sized to a few MiB whatever the size of its entries; `--dry-run` changes nothing.

use crate::broker::Redis;
use std::fmt;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{OperateError, Report, connect, first_id_at, last_id_at, table};
use crate::broker::dlq::{self as broker_dlq, Replay, dead_letter_stream};
use crate::broker::id::{self, EntryId};
use crate::broker::range;
use crate::config::RedisSettings;
use crate::event::Entry;

/// Which dead letters `list` shows and `replay`/`purge` select: all conditions given hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `dlq_reason` exactly.
    pub reason: Option<String>,
    /// Dead-lettered at or after (the dead letter's entry-id time).
    pub since: Option<Timestamp>,
    /// Dead-lettered at or before.
    pub until: Option<Timestamp>,
}

impl Filter {
    fn matches(&self, letter: &Summary) -> bool {
        self.reason.as_ref().is_none_or(|r| *r == letter.reason)
    }
}

/// The dead letters a `replay` or `purge` acts on.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Every one there when the command starts.
    All,
    /// These ids, in this order.
    Ids(Vec<String>),
    /// Those matching.
    Matching(Filter),
}

/// A full entry id `<ms>-<seq>`; `None` for anything else (a bare `<ms>` would select a whole
/// millisecond in XRANGE).
pub fn entry_id(id: &str) -> Option<EntryId> {
    id.contains('-').then(|| id.parse().ok()).flatten()
}

/// One dead letter as `list` shows it: the `dlq_*` fields `ack` wrote (empty when the entry
/// does not carry them: it was not written by streamsink).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The dead letter's own id in the dead-letter stream: what `show`, `replay` and `purge` take.
    pub id: String,
    /// `dlq_failed_at`: when the worker gave up on the entry (RFC 3339).
    pub failed_at: String,
    /// `dlq_reason`: the problem's short, stable name, what `--reason` matches.
    pub reason: String,
    /// `dlq_error`: the full error message.
    pub error: String,
    /// `dlq_stream`: the stream the entry was read from.
    pub original_stream: String,
    /// `dlq_original_id`: the entry's id there (a replay gives it a new one).
    pub original_id: String,
    /// `dlq_group`: the consumer group that read it.
    pub group: String,
    /// `dlq_consumer`: the consumer that dead-lettered it.
    pub consumer: String,
    /// `dlq_deliveries`: how many times it was delivered, as written.
    pub deliveries: String,
}

impl Summary {
    fn of(entry: &Entry) -> Summary {
        let mut s = Summary { id: entry.id.clone(), ..Summary::default() };
        let Some((_, tail)) = broker_dlq::split(&entry.fields) else { return s };
        for (k, v) in tail {
            let v = String::from_utf8_lossy(v).into_owned();
            match k.as_slice() {
                b"dlq_reason" => s.reason = v,
                b"dlq_error" => s.error = v,
                b"dlq_stream" => s.original_stream = v,
                b"dlq_original_id" => s.original_id = v,
                b"dlq_group" => s.group = v,
                b"dlq_consumer" => s.consumer = v,
                b"dlq_deliveries" => s.deliveries = v,
                b"dlq_failed_at" => s.failed_at = v,
                _ => {}
            }
        }
        s
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "failed_at": self.failed_at,
            "reason": self.reason,
            "error": self.error,
            "original_stream": self.original_stream,
            "original_id": self.original_id,
            "group": self.group,
            "consumer": self.consumer,
            "deliveries": self.deliveries.parse::<u64>().ok(),
        })
    }

    /// The table row: the time to the second, the error's first line cut to fit.
    fn row(&self) -> Vec<String> {
        let failed_at = self
            .failed_at
            .parse::<Timestamp>()
            .ok()
            .and_then(|t| t.round(jiff::Unit::Second).ok())
            .map_or_else(|| self.failed_at.clone(), |t| t.to_string());
        vec![
            self.id.clone(),
            failed_at,
            self.reason.clone(),
            shorten(&self.error, ERROR_WIDTH),
            self.original_id.clone(),
            self.deliveries.clone(),
        ]
    }
}

/// Characters of an error shown in `list`'s table (`--json` has it whole).
const ERROR_WIDTH: usize = 60;

fn shorten(text: &str, width: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() <= width && line.len() == text.len() {
        return line.to_string();
    }
    let cut: String = line.chars().take(width.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// `dlq list`: the first dead letters matching, oldest first.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The stream read (`<stream>:dlq`).
    pub dead_letter_stream: String,
    /// The dead letters matching, oldest first, at most `limit`.
    pub letters: Vec<Summary>,
    /// More matched than `limit`, which were not read.
    pub more: bool,
    /// The most asked for (`--limit`).
    pub limit: usize,
}

/// Lists up to `limit` dead letters of `stream` matching `filter`.
pub fn list(
    redis: &RedisSettings,
    stream: &str,
    filter: &Filter,
    limit: usize,
) -> Result<Listed, OperateError> {
    let mut con = connect(redis)?;
    let dlq = dead_letter_stream(stream, con.is_cluster());
    let mut listed = Listed { dead_letter_stream: dlq.clone(), letters: Vec::new(), more: false, limit };
    walk(&mut con, &dlq, filter, |_, page| {
        for letter in page.iter().map(Summary::of).filter(|l| filter.matches(l)) {
            if listed.letters.len() == limit {
                listed.more = true;
                return Ok(false);
            }
            listed.letters.push(letter);
        }
        Ok(true)
    })?;
    Ok(listed)
}

impl Report for Listed {
    fn to_json(&self) -> Value {
        json!({
            "dead_letter_stream": self.dead_letter_stream,
            "dead_letters": self.letters.iter().map(Summary::to_json).collect::<Vec<_>>(),
            "more": self.more,
            "limit": self.limit,
        })
    }
}

impl fmt::Display for Listed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.letters.is_empty() {
            return writeln!(f, "no dead letters on {} match", self.dead_letter_stream);
        }
        let header = ["id", "failed at", "reason", "error", "original id", "deliveries"];
        let rows: Vec<Vec<String>> = self.letters.iter().map(Summary::row).collect();
        write!(f, "{}", table::render(&header, &rows))?;
        if self.more {
            writeln!(
                f,
                "more dead letters match than the {} shown: raise --limit, or narrow with --reason, --since, --until",
                self.limit
            )?;
        }
        Ok(())
    }
}

/// `dlq show`: one dead letter, every field in its order.
#[derive(Debug, Clone)]
pub struct Shown {
    /// The stream read (`<stream>:dlq`).
    pub dead_letter_stream: String,
    /// Its `dlq_*` fields, as `list` shows them.
    pub summary: Summary,
    /// Field names and values as text (bytes that are not UTF-8 shown as U+FFFD).
    pub fields: Vec<(String, String)>,
}

/// Reads dead letter `id` of `stream`; refused when it is not there.
pub fn show(redis: &RedisSettings, stream: &str, id: &str) -> Result<Shown, OperateError> {
    let mut con = connect(redis)?;
    let dlq = dead_letter_stream(stream, con.is_cluster());
    let entry = broker_dlq::get(&mut con, &dlq, id)?
        .ok_or_else(|| OperateError::Refused(format!("no dead letter {id} on {dlq}")))?;
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(Shown {
        summary: Summary::of(&entry),
        fields: entry.fields.iter().map(|(k, v)| (lossy(k), lossy(v))).collect(),
        dead_letter_stream: dlq,
    })
}

impl Report for Shown {
    fn to_json(&self) -> Value {
        let mut v = self.summary.to_json();
        v["dead_letter_stream"] = json!(self.dead_letter_stream);
        v["fields"] = self.fields.iter().map(|(k, v)| json!({ "name": k, "value": v })).collect();
        v
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dead letter {} on {}", self.summary.id, self.dead_letter_stream)?;
        let rows: Vec<Vec<&str>> = self.fields.iter().map(|(k, v)| vec![k.as_str(), v.as_str()]).collect();
        write!(f, "{}", table::render(&["field", "value"], &rows))
    }
}

/// What `replay` or `purge` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Put back on the stream (`dlq replay`).
    Replay,
    /// Deleted (`dlq purge`).
    Purge,
}

impl Action {
    fn done(self) -> &'static str {
        match self {
            Action::Replay => "replayed",
            Action::Purge => "purged",
        }
    }
}

/// The outcome of `replay` or `purge`.
#[derive(Debug, Clone)]
pub struct Moved {
    /// Replay or purge.
    pub action: Action,
    /// The stream the dead letters belong to (where a replay puts them).
    pub stream: String,
    /// Where they are read from (`<stream>:dlq`).
    pub dead_letter_stream: String,
    /// Nothing was changed: `count` and `selected` say what would be.
    pub dry_run: bool,
    /// Dead letters replayed or purged (with `--dry-run`: that would be).
    pub count: u64,
    /// With `--dry-run`: their ids.
    pub selected: Vec<String>,
    /// Ids asked for that are not in the dead-letter stream.
    pub not_found: Vec<String>,
    /// Dead letters left in place, and why.
    pub skipped: Vec<(String, String)>,
}

impl Moved {
    /// Nothing done yet to `stream`'s dead letters.
    fn none(action: Action, stream: &str, cluster: bool, dry_run: bool) -> Moved {
        Moved {
            action,
            stream: stream.to_string(),
            dead_letter_stream: dead_letter_stream(stream, cluster),
            dry_run,
            count: 0,
            selected: Vec::new(),
            not_found: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// True when every dead letter selected was replayed or purged.
    pub fn complete(&self) -> bool {
        self.not_found.is_empty() && self.skipped.is_empty()
    }
}

/// A replay or purge that failed part-way, with how many dead letters it had replayed or purged
/// by then: those stay done (each move or delete is whole), and a rerun does not find them
/// again. Displayed as `replayed=N before the failure: <error>` (a dry run: the error alone).
#[derive(Debug)]
pub struct Interrupted {
    /// What was being done.
    pub action: Action,
    /// Nothing could have been changed: no count is shown.
    pub dry_run: bool,
    /// Dead letters replayed or purged before the failure. When the connection dropped, the
    /// page in flight when it did is not counted: what it did is unknown.
    pub count: u64,
    /// The failure.
    pub source: OperateError,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.dry_run {
            write!(f, "{}={} before the failure: ", self.action.done(), self.count)?;
        }
        write!(f, "{}", self.source)
    }
}

impl std::error::Error for Interrupted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Puts the selected dead letters of `stream` back on it (original fields, in order), each
/// moved atomically; with `dry_run`, only says which.
pub fn replay(
    redis: &RedisSettings,
    stream: &str,
    selection: &Selection,
    dry_run: bool,
) -> Result<Moved, Interrupted> {
    act(redis, stream, selection, dry_run, Action::Replay)
}

/// Deletes the selected dead letters of `stream`; with `dry_run`, only says which.
pub fn purge(
    redis: &RedisSettings,
    stream: &str,
    selection: &Selection,
    dry_run: bool,
) -> Result<Moved, Interrupted> {
    act(redis, stream, selection, dry_run, Action::Purge)
}

/// [`list`] over the shards `streams` of one logical stream (`label`, as the operator wrote it):
/// each shard's first matches, merged oldest first and cut at `limit` (each dead letter's
/// `original_stream` names its shard).
pub fn list_of_shards(
    redis: &RedisSettings,
    label: &str,
    streams: &[String],
    filter: &Filter,
    limit: usize,
) -> Result<Listed, OperateError> {
    let dlq = dead_letter_stream(label, redis.is_cluster());
    let mut merged = Listed { dead_letter_stream: dlq, letters: Vec::new(), more: false, limit };
    for stream in streams {
        let listed = list(redis, stream, filter, limit)?;
        merged.more |= listed.more;
        merged.letters.extend(listed.letters);
    }
    merged.letters.sort_by_key(|l| entry_id(&l.id));
    if merged.letters.len() > limit {
        merged.letters.truncate(limit);
        merged.more = true;
    }
    Ok(merged)
}

/// [`replay`] or [`purge`] (`action`) over the shards `streams` of one logical stream, one
/// shard after another; the outcome sums theirs. Ids name a dead letter of one shard only, so a
/// selection by ids is refused here (give the shard's own name).
pub fn act_on_shards(
    redis: &RedisSettings,
    label: &str,
    streams: &[String],
    selection: &Selection,
    dry_run: bool,
    action: Action,
) -> Result<Moved, Interrupted> {
    if matches!(selection, Selection::Ids(_)) {
        let why =
            format!("dead-letter ids belong to one shard: give --stream one shard of {label}, not a range");
        return Err(Interrupted { action, dry_run: true, count: 0, source: OperateError::Refused(why) });
    }
    let mut sum = Moved::none(action, label, redis.is_cluster(), dry_run);
    for stream in streams {
        let moved = act(redis, stream, selection, dry_run, action).map_err(|mut e| {
            e.count += sum.count;
            e
        })?;
        sum.count += moved.count;
        sum.selected.extend(moved.selected);
        sum.not_found.extend(moved.not_found);
        sum.skipped.extend(moved.skipped);
    }
    Ok(sum)
}

fn act(
    redis: &RedisSettings,
    stream: &str,
    selection: &Selection,
    dry_run: bool,
    action: Action,
) -> Result<Moved, Interrupted> {
    let mut moved = Moved::none(action, stream, redis.is_cluster(), dry_run);
    match act_on(redis, selection, &mut moved) {
        Ok(()) => Ok(moved),
        Err(source) => Err(Interrupted { action, dry_run, count: moved.count, source }),
    }
}

/// Does what `moved` says to the `selection`, counting in `moved` as it goes.
fn act_on(redis: &RedisSettings, selection: &Selection, moved: &mut Moved) -> Result<(), OperateError> {
    let mut con = connect(redis)?;
    let (dlq, dry_run) = (moved.dead_letter_stream.clone(), moved.dry_run);
    let all = Filter::default();
    let filter = match selection {
        Selection::Ids(ids) => {
            for id in ids {
                if dry_run {
                    match broker_dlq::get(&mut con, &dlq, id)? {
                        Some(entry) => moved.select(&entry),
                        None => moved.not_found.push(id.clone()),
                    }
                } else {
                    moved.apply(&mut con, std::slice::from_ref(id))?;
                }
            }
            return Ok(());
        }
        Selection::All => &all,
        Selection::Matching(filter) => filter,
    };
    walk(&mut con, &dlq, filter, |con, page| {
        let chosen = page.iter().filter(|e| filter.matches(&Summary::of(e)));
        if dry_run {
            chosen.for_each(|e| moved.select(e));
        } else {
            let ids: Vec<String> = chosen.map(|e| e.id.clone()).collect();
            // Entries that vanish between the page and the move were removed by someone else:
            // not an id the operator asked for, so not reported.
            let asked = moved.not_found.len();
            moved.apply(con, &ids)?;
            moved.not_found.truncate(asked);
        }
        Ok(true)
    })
}

impl Moved {
    /// Counts `entry` as one a dry run would act on, or would skip.
    fn select(&mut self, entry: &Entry) {
        if self.action == Action::Replay && broker_dlq::split(&entry.fields).is_none() {
            self.skipped.push((entry.id.clone(), NOT_A_DEAD_LETTER.into()));
            return;
        }
        self.count += 1;
        self.selected.push(entry.id.clone());
    }

    /// Replays or deletes `ids`, recording each outcome.
    fn apply(&mut self, con: &mut Redis, ids: &[String]) -> Result<(), OperateError> {
        match self.action {
            Action::Purge if ids.len() == 1 => {
                match broker_dlq::delete(con, &self.dead_letter_stream, ids)? {
                    0 => self.not_found.extend_from_slice(ids),
                    n => self.count += n,
                }
            }
            Action::Purge => self.count += broker_dlq::delete(con, &self.dead_letter_stream, ids)?,
            Action::Replay => match broker_dlq::replay(con, &self.stream, ids) {
                Ok(outcomes) => self.record(ids.iter().zip(outcomes)),
                Err(interrupted) => {
                    let known = ids.iter().zip(interrupted.outcomes).filter_map(|(id, o)| Some((id, o?)));
                    self.record(known);
                    return Err(interrupted.error.into());
                }
            },
        }
        Ok(())
    }

    /// Records what became of each dead letter replayed.
    fn record<'a>(&mut self, outcomes: impl Iterator<Item = (&'a String, Replay)>) {
        for (id, outcome) in outcomes {
            match outcome {
                Replay::Moved(_) => self.count += 1,
                Replay::Gone => self.not_found.push(id.clone()),
                Replay::NotADeadLetter => self.skipped.push((id.clone(), NOT_A_DEAD_LETTER.into())),
                Replay::Busy => self.skipped.push((
                    id.clone(),
                    "the dead-letter stream kept changing during the move; run again".into(),
                )),
            }
        }
    }
}

impl Report for Moved {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "stream": self.stream,
            "dead_letter_stream": self.dead_letter_stream,
            "dry_run": self.dry_run,
            "not_found": self.not_found,
            "skipped": self.skipped.iter().map(|(id, why)| json!({ "id": id, "why": why })).collect::<Vec<_>>(),
        });
        if self.dry_run {
            v[format!("would_be_{}", self.action.done())] = json!(self.count);
            v["ids"] = json!(self.selected);
        } else {
            v[self.action.done()] = json!(self.count);
        }
        v
    }
}

/// Why a replay leaves an entry it cannot tell the original fields of.
const NOT_A_DEAD_LETTER: &str = "does not end with the eight dlq_* fields streamsink writes";

/// Ids listed under a dry run's summary line at most (`--json` lists all).
const DRY_RUN_IDS: usize = 100;

impl fmt::Display for Moved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done = self.action.done();
        if self.dry_run {
            let what = match self.action {
                Action::Replay => format!("replayed from {} onto {}", self.dead_letter_stream, self.stream),
                Action::Purge => format!("purged from {}", self.dead_letter_stream),
            };
            writeln!(f, "dry run: {} dead letters would be {what}; nothing changed", self.count)?;
            for id in self.selected.iter().take(DRY_RUN_IDS) {
                writeln!(f, "  {id}")?;
            }
            if self.selected.len() > DRY_RUN_IDS {
                writeln!(f, "  ... and {} more (--json lists all)", self.selected.len() - DRY_RUN_IDS)?;
            }
        } else {
            writeln!(f, "{done}={}", self.count)?;
        }
        if !self.not_found.is_empty() {
            writeln!(f, "not found={} ({})", self.not_found.len(), self.not_found.join(" "))?;
        }
        if !self.skipped.is_empty() {
            writeln!(f, "skipped={}", self.skipped.len())?;
            for (id, why) in &self.skipped {
                writeln!(f, "  {id}: {why}")?;
            }
        }
        Ok(())
    }
}

/// Bytes of dead letters held at once, roughly: the page size follows the entries' size.
const PAGE_BYTES: usize = 4 << 20;
/// Entries per page: the first (sizes unknown yet), and the most.
const FIRST_PAGE: usize = 16;
const MAX_PAGE: usize = 1000;

/// Calls `each` with every page of `dlq`'s entries in `filter`'s time range, oldest first, up
/// to the newest entry there now; stops when `each` returns false.
fn walk(
    con: &mut Redis,
    dlq: &str,
    filter: &Filter,
    mut each: impl FnMut(&mut Redis, &[Entry]) -> Result<bool, OperateError>,
) -> Result<(), OperateError> {
    let Some(newest) = broker_dlq::last_id(con, dlq)? else { return Ok(()) };
    let mut start = filter.since.map_or_else(|| "-".to_string(), first_id_at);
    let end = match filter.until.map(last_id_at) {
        Some(until) if entry_id(&until) < entry_id(&newest) => until,
        _ => newest,
    };
    let mut count = FIRST_PAGE;
    loop {
        let page = range::page(con, dlq, &start, &end, count)?;
        let Some(last) = page.last() else { return Ok(()) };
        start = id::after(&last.id);
        let full = page.len() == count;
        let bytes: usize = page.iter().flat_map(|e| &e.fields).map(|(k, v)| k.len() + v.len()).sum();
        count = (count * PAGE_BYTES / bytes.max(1)).clamp(1, MAX_PAGE);
        if !each(con, &page)? || !full {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_entry_ids_are_ids() {
        assert_eq!(entry_id("1700000000000-3"), Some(EntryId { ms: 1_700_000_000_000, seq: 3 }));
        assert_eq!(entry_id("1700000000000"), None);
        assert_eq!(entry_id("x-1"), None);
    }

    #[test]
    fn a_summary_reads_every_field_ack_writes() {
        let mut fields = vec![(b"event".to_vec(), b"{}".to_vec())];
        fields.extend(
            broker_dlq::DEAD_LETTER_FIELDS.iter().map(|f| (f.as_bytes().to_vec(), f.as_bytes().to_vec())),
        );
        let s = Summary::of(&Entry { id: "1-0".into(), fields, deliveries: 1 });
        let read = [
            &s.reason,
            &s.error,
            &s.original_stream,
            &s.original_id,
            &s.group,
            &s.consumer,
            &s.deliveries,
            &s.failed_at,
        ];
        let mut read: Vec<&str> = read.iter().map(|v| v.as_str()).collect();
        read.sort_unstable();
        let mut written = broker_dlq::DEAD_LETTER_FIELDS;
        written.sort_unstable();
        assert_eq!(read, written, "each dlq_* field lands in its own Summary field");
    }

    #[test]
    fn errors_are_cut_to_their_first_line_in_the_table() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("first\nsecond", 10), "first…");
        assert_eq!(shorten("abcdefghijkl", 5), "abcd…");
    }
}

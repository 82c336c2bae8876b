//! `streamsink trim`: retention on demand, by age or by length, never past the stream's safe
//! point (the oldest entry any of its groups still needs: see [`crate::broker::trim`]).
//!
//! Invariants: whatever the target, the MINID sent is never above the safe point, and the
//! safe point is re-read in the same script as each trim; a dry run changes nothing; counts
//! step over entries inside Redis (their fields never travel), in calls bounded by entries and
//! by bytes, and stop at [`COUNT_CAP`] ("at least").

use crate::broker::Redis;
use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

use super::OperateError;
use crate::broker::group;
use crate::broker::trim::{self, Direction, EntryId, HoldReason, Holder, Mode};
use crate::config::RedisSettings;

/// Most entries one counting call steps over (inside Redis): about 13 ms of Redis's time for
/// small events (~13 µs an entry, measured); the script also stops after about 4 MB of fields
/// (4 entries of 1 MB, ~30 ms), so no call stalls other clients.
const COUNT_PAGE: u64 = 1_000;
/// Counting stops here (about 1.3 s of small events) and says "at least".
pub const COUNT_CAP: u64 = 100_000;
/// Entries one approximate pass may remove (XTRIM … LIMIT): keeps each call short for Redis.
pub const APPROXIMATE_LIMIT: u64 = 100_000;

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Entries whose id time is within this age of now.
    MaxAge(Duration),
    /// The newest N entries.
    MaxLen(u64),
}

/// How to trim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Count and report; remove nothing.
    pub dry_run: bool,
    /// Whole macro-nodes only (`XTRIM ~`): cheaper, may keep some entries below the MINID.
    pub approximate: bool,
}

/// A number of entries, exact or a lower bound (counting stopped at [`COUNT_CAP`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Entries counted.
    pub n: u64,
    /// Counting stopped at [`COUNT_CAP`] with entries left: there are more than `n`.
    pub at_least: bool,
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at_least { write!(f, "at least {}", self.n) } else { write!(f, "{}", self.n) }
    }
}

/// What `streamsink trim` did, or would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trimmed {
    /// The stream asked for.
    pub stream: String,
    /// What was asked to keep.
    pub target: Target,
    /// As asked (dry run, approximate).
    pub options: Options,
    /// False when the key does not exist: nothing to trim, not a failure (a dead-letter stream
    /// exists only once a first entry is dead-lettered).
    pub exists: bool,
    /// The id the target asks to trim below; `None` when the stream has no more entries than
    /// `--maxlen` (nothing to trim).
    pub target_id: Option<EntryId>,
    /// The MINID used: the target id, or the safe point where that is lower.
    pub minid: Option<String>,
    /// Entries removed; in a dry run, entries that would be.
    pub removed: Count,
    /// The group whose needs held the MINID below the target.
    pub held_by: Option<Holder>,
    /// With `held_by`: entries older than the target that stay (after the trim).
    pub kept_older: Option<Count>,
    /// The lowest id any group still needs; `None` for a stream without groups.
    pub safe_point: Option<String>,
}

/// Trims `stream` to `target`, never past its safe point; with `dry_run`, only says what it
/// would remove. A stream that does not exist is reported as such (nothing removed); a key of
/// another type is refused, and so is a server older than Redis 6.2 (no `XTRIM MINID`).
pub fn trim(
    redis: &RedisSettings,
    stream: &str,
    target: Target,
    options: Options,
) -> Result<Trimmed, OperateError> {
    let mut con = super::connect(redis)?;
    trim_on(&mut con, stream, target, options).map_err(|e| match e {
        OperateError::Broker(e) if e.is_trim_unsupported() => {
            OperateError::Refused(format!("trim needs Redis 6.2 or later (XTRIM MINID): {e}"))
        }
        e => e,
    })
}

fn trim_on(con: &mut Redis, stream: &str, target: Target, options: Options) -> Result<Trimmed, OperateError> {
    let mut report = Trimmed {
        stream: stream.to_string(),
        target,
        options,
        exists: true,
        target_id: None,
        minid: None,
        removed: Count::default(),
        held_by: None,
        kept_older: None,
        safe_point: None,
    };
    match crate::broker::group::key_type(con, stream)?.as_str() {
        "stream" => {}
        "none" => return Ok(Trimmed { exists: false, ..report }),
        other => return Err(OperateError::Refused(format!("'{stream}' is a {other}, not a stream"))),
    }
    report.target_id = target_id(con, stream, target)?;
    let Some(target_id) = report.target_id else {
        return Ok(report);
    };
    let target_text = target_id.to_string();
    let mut trimmed = if options.dry_run {
        trim::trim_to_safe_point(con, stream, &target_text, Mode::Plan)?
    } else {
        let mut removed = 0;
        let pass = Mode::Approximate { limit: APPROXIMATE_LIMIT };
        let mut last = loop {
            let t = trim::trim_to_safe_point(con, stream, &target_text, pass)?;
            removed += t.removed;
            if t.removed == 0 {
                break t;
            }
        };
        if !options.approximate {
            // What the whole-node passes left below the MINID: less than one node.
            last = trim::trim_to_safe_point(con, stream, &target_text, Mode::Exact)?;
            removed += last.removed;
        }
        last.removed = removed;
        last
    };
    let minid: EntryId = trimmed.minid.parse().map_err(OperateError::Refused)?;
    report.removed = if options.dry_run {
        count_below(con, stream, minid)?
    } else {
        Count { n: trimmed.removed, at_least: false }
    };
    if trimmed.held_by.is_some() {
        // Entries below the target, less (in a dry run) those that would go.
        let gone = if options.dry_run { report.removed } else { Count::default() };
        report.kept_older = Some(count_below(con, stream, target_id)?.minus(gone));
    }
    report.minid = Some(std::mem::take(&mut trimmed.minid));
    report.held_by = trimmed.held_by;
    report.safe_point = trimmed.safe_point;
    Ok(report)
}

impl Count {
    /// Entries of `self` not in `other` (both counted from the stream's start).
    fn minus(self, other: Count) -> Count {
        Count { n: self.n.saturating_sub(other.n), at_least: self.at_least }
    }
}

/// The id the target asks to trim below: the first id at now - age, or the N-th newest
/// entry's id (`None` when the stream holds N entries or fewer; for N = 0, the id after the
/// newest). For N, XLEN first, then a walk from the nearer end: the `len - N` oldest from the
/// start when they are fewer than N. Entries added or removed meanwhile shift the target by
/// as many.
fn target_id(con: &mut Redis, stream: &str, target: Target) -> Result<Option<EntryId>, OperateError> {
    let n = match target {
        Target::MaxAge(age) => return Ok(Some(trim::target_for_age(age, jiff::Timestamp::now()))),
        Target::MaxLen(n) => n,
    };
    let len = group::length(con, stream)?;
    if len <= n {
        return Ok(None);
    }
    if n == 0 {
        let newest = nth(con, stream, Direction::Backward, 1)?;
        return Ok(newest.map(|id| id.next().unwrap_or(id)));
    }
    let older = len - n;
    if older < n {
        // The oldest entry kept: the (len - N + 1)-th from the start.
        nth(con, stream, Direction::Forward, older + 1)
    } else {
        nth(con, stream, Direction::Backward, n)
    }
}

/// The `k`-th entry (from 1) from the start (forward) or the end (backward); `None` when the
/// stream has fewer.
fn nth(con: &mut Redis, stream: &str, direction: Direction, k: u64) -> Result<Option<EntryId>, OperateError> {
    let (mut from, to) = match direction {
        Direction::Forward => ("-".to_string(), "+"),
        Direction::Backward => ("+".to_string(), "-"),
    };
    let mut stepped = 0;
    while stepped < k {
        let step = trim::step(con, stream, direction, &from, to, (k - stepped).min(COUNT_PAGE))?;
        stepped += step.n;
        match step.last {
            Some(last) if stepped == k => return Ok(Some(parse(&last)?)),
            Some(last) if !step.ended => from = format!("({last}"),
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Entries with ids below `below`, counted up to [`COUNT_CAP`].
fn count_below(con: &mut Redis, stream: &str, below: EntryId) -> Result<Count, OperateError> {
    let Some(end) = below.prev() else {
        return Ok(Count::default());
    };
    let end = end.to_string();
    let (mut n, mut from) = (0, "-".to_string());
    loop {
        if n >= COUNT_CAP {
            let more = trim::step(con, stream, Direction::Forward, &from, &end, 1)?;
            return Ok(Count { n, at_least: more.n > 0 });
        }
        let step = trim::step(con, stream, Direction::Forward, &from, &end, (COUNT_CAP - n).min(COUNT_PAGE))?;
        n += step.n;
        match step.last {
            Some(last) if !step.ended => from = format!("({last}"),
            _ => return Ok(Count { n, at_least: false }),
        }
    }
}

fn parse(id: &str) -> Result<EntryId, OperateError> {
    id.parse().map_err(OperateError::Refused)
}

fn reason_text(reason: HoldReason, safe_point: &str) -> String {
    match reason {
        HoldReason::Pending => {
            format!("its oldest pending entry {safe_point} was delivered and never acknowledged")
        }
        HoldReason::Undelivered => {
            format!("entry {safe_point} and the ones after it are not delivered to it yet")
        }
    }
}

impl Trimmed {
    fn target_text(&self) -> String {
        match self.target {
            Target::MaxAge(age) => format!("entries older than {}", crate::config::duration_text(age)),
            Target::MaxLen(n) => format!("all but the newest {n} entries"),
        }
    }
}

/// One summary line (`removed=N minid=ID`), then why the safe point held it back, if it did.
impl fmt::Display for Trimmed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.exists {
            return writeln!(f, "{}: removed=0 (no such stream)", self.stream);
        }
        let (Some(target_id), Some(minid)) = (self.target_id, self.minid.as_deref()) else {
            return writeln!(f, "{}: removed=0 (nothing to trim: {})", self.stream, self.target_text());
        };
        let verb = if self.options.dry_run { "would remove" } else { "removed" };
        let how = match (self.options.dry_run, self.options.approximate) {
            (true, true) => " (dry run; approximate trimming removes whole nodes only, so fewer)",
            (true, false) => " (dry run: nothing changed)",
            (false, true) => " (approximate)",
            (false, false) => "",
        };
        writeln!(
            f,
            "{}: {verb}={} minid={minid} target={target_id} ({}){how}",
            self.stream,
            self.removed,
            self.target_text()
        )?;
        if let (Some(holder), Some(safe)) = (&self.held_by, self.safe_point.as_deref()) {
            let kept = self.kept_older.unwrap_or_default();
            writeln!(
                f,
                "held back by group {}: {}; {kept} entries older than the target are kept",
                holder.group,
                reason_text(holder.reason, safe)
            )?;
        }
        Ok(())
    }
}

impl super::Report for Trimmed {
    fn to_json(&self) -> Value {
        let count = |c: Count| json!({ "entries": c.n, "at_least": c.at_least });
        let mut out = json!({
            "stream": self.stream,
            "exists": self.exists,
            "dry_run": self.options.dry_run,
            "approximate": self.options.approximate,
            "target": match self.target {
                Target::MaxAge(age) => json!({ "max_age_seconds": age.as_secs() }),
                Target::MaxLen(n) => json!({ "maxlen": n }),
            },
            "target_id": self.target_id.map(|id| id.to_string()),
            "minid": self.minid,
            "held_back": self.held_by.as_ref().map(|h| json!({
                "group": h.group,
                "by": h.reason.as_str(),
                "kept_older_than_target": self.kept_older.map(count),
            })),
            "safe_point": self.safe_point,
        });
        let removed = if self.options.dry_run { "would_remove" } else { "removed" };
        out[removed] = count(self.removed);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{duration_text, parse_duration};

    #[test]
    fn ages_print_in_the_largest_unit_and_read_back() {
        for (d, text) in [(30 * 86_400, "30d"), (12 * 3_600, "12h"), (90 * 60, "90m"), (61, "61s")] {
            let d = Duration::from_secs(d);
            assert_eq!(duration_text(d), text);
            assert_eq!(parse_duration(text), Some(d));
        }
        assert_eq!(duration_text(Duration::from_millis(1500)), "1500ms");
    }
}

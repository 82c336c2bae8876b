//! Retention: trimming a stream by MINID, never past its safe point (the oldest entry any of
//! its groups still needs), and stepping over entries without fetching their fields (for
//! counts and for finding the N-th newest entry).
//!
//! Invariant: the safe point is read and the stream trimmed in one script, so no group can
//! read, claim or acknowledge in between; an entry pending with any group, or not yet delivered
//! to one, is never removed. A stream without groups (a dead-letter stream) has no safe point.

use super::Redis;
use super::script::Lua;
use std::sync::LazyLock;
use std::time::Duration;

use super::BrokerError;
pub use super::id::EntryId;

/// The target id of a retention by age: the first id at `now - age`, so that every entry older
/// than `age` is below it. An age reaching back before 1970 gives `0-0` (nothing is older).
pub fn target_for_age(age: Duration, now: jiff::Timestamp) -> EntryId {
    let age = jiff::SignedDuration::try_from(age).unwrap_or(jiff::SignedDuration::MAX);
    EntryId::first_at(now.checked_sub(age).unwrap_or(jiff::Timestamp::MIN))
}

/// See the script's header.
static TRIM_TO_SAFE_POINT: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("lua/trim_to_safe_point.lua")));

/// See the script's header.
static STEP_ENTRIES: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("lua/step_entries.lua")));

/// How far one call trims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read the safe point; remove nothing (a dry run).
    Plan,
    /// `XTRIM MINID`: every entry below the MINID goes, however many (Redis is busy meanwhile).
    Exact,
    /// `XTRIM MINID ~ … LIMIT n`: only whole macro-nodes, at most about `limit` entries: cheap
    /// for Redis, and may leave some entries below the MINID.
    Approximate { limit: u64 },
}

/// Why a group holds the safe point where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// Its oldest pending entry: delivered to a consumer and not acknowledged.
    Pending,
    /// The entry right after its last-delivered id: not yet delivered to it.
    Undelivered,
}

impl HoldReason {
    /// `pending` or `undelivered`, as in `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::Pending => "pending",
            HoldReason::Undelivered => "undelivered",
        }
    }
}

/// The group whose needs held trimming below its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The group's name (any group of the stream, not only streamsink's).
    pub group: String,
    /// What it still needs: an entry pending with it, or one not yet delivered to it.
    pub reason: HoldReason,
}

/// What one trim call did (or, in [`Mode::Plan`], would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trimmed {
    /// The MINID used: the target, or the safe point where that is lower.
    pub minid: String,
    /// Entries removed (0 in [`Mode::Plan`]).
    pub removed: u64,
    /// Set only when the safe point is below the target and keeps entries older than it.
    pub held_by: Option<Holder>,
    /// The lowest id any group still needs; `None` for a stream without groups.
    pub safe_point: Option<String>,
}

const TRIM_OP: &str = "trim to safe point";

/// Trims `stream` to `target` (an entry id `<ms>-<seq>`), or to its safe point where that is
/// lower, in one atomic call. A stream that does not exist is left alone (removed 0).
pub fn trim_to_safe_point(
    con: &mut Redis,
    stream: &str,
    target: &str,
    mode: Mode,
) -> Result<Trimmed, BrokerError> {
    invoke_trim(con, stream, target, mode, "")?
        .ok_or_else(|| BrokerError::bad_reply(TRIM_OP, stream, "a group missing, none required".into()))
}

/// Like [`trim_to_safe_point`], but only if `group` exists on `stream`, checked in the same
/// script: `None` (nothing done) otherwise. Without its group, nothing on the stream records
/// what that group's reader has still to read (it re-creates the group at its start id, which
/// may expect the old entries), so no safe point protects them.
pub fn trim_to_safe_point_of_group(
    con: &mut Redis,
    stream: &str,
    group: &str,
    target: &str,
    mode: Mode,
) -> Result<Option<Trimmed>, BrokerError> {
    invoke_trim(con, stream, target, mode, group)
}

fn invoke_trim(
    con: &mut Redis,
    stream: &str,
    target: &str,
    mode: Mode,
    required_group: &str,
) -> Result<Option<Trimmed>, BrokerError> {
    let (mode, limit) = match mode {
        Mode::Plan => ("plan", 0),
        Mode::Exact => ("exact", 0),
        Mode::Approximate { limit } => ("approx", limit),
    };
    type Reply = (String, u64, String, String, String, u8);
    let mut inv = TRIM_TO_SAFE_POINT.script.key(stream);
    inv.arg(target).arg(mode).arg(limit).arg(required_group);
    let (minid, removed, group, reason, safe, found): Reply =
        TRIM_TO_SAFE_POINT.run(con, &inv, stream).map_err(|e| BrokerError::new(TRIM_OP, stream, e))?;
    if found == 0 {
        return Ok(None);
    }
    let reason = match reason.as_str() {
        "pending" => Some(HoldReason::Pending),
        "undelivered" => Some(HoldReason::Undelivered),
        _ => None,
    };
    Ok(Some(Trimmed {
        minid,
        removed,
        held_by: reason.map(|reason| Holder { group, reason }),
        safe_point: Some(safe).filter(|s| !s.is_empty()),
    }))
}

impl BrokerError {
    /// True when the server is older than Redis 6.2 and so cannot run these scripts: it says
    /// "syntax error" to `XTRIM MINID … LIMIT` and "Invalid stream ID" to an exclusive `(id`
    /// bound. Both scripts send only ids they formatted themselves, so on 6.2 or later neither
    /// message can come from them.
    pub fn is_trim_unsupported(&self) -> bool {
        let text = self.source.to_string().to_ascii_lowercase();
        text.contains("syntax error") || text.contains("invalid stream id")
    }
}

/// Which way [`step`] walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first (XRANGE `from` `to`).
    Forward,
    /// Newest first (XREVRANGE `from` `to`, `from` the higher bound).
    Backward,
}

/// What one [`step`] call went over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stepped {
    /// Entries stepped over: up to `most`, fewer when the range ended or the call's byte budget
    /// (about 4 MB of fields) ran out.
    pub n: u64,
    /// The last one's id; `None` when there was none.
    pub last: Option<String>,
    /// The range holds no entry after `last`: stop. Otherwise go on from `(last`.
    pub ended: bool,
}

/// Steps over at most `most` entries of `stream` between `from` and `to` (bounds as XRANGE
/// takes them: `-`, `+`, an id, `(id` exclusive). The entries' fields never leave Redis, and a
/// call stops once it has gone over about 4 MB of them (Redis copies them into the script), so
/// one call holds Redis for tens of milliseconds whether events are 300 B or 1 MB; callers go
/// on from `(last` until [`Stepped::ended`].
pub fn step(
    con: &mut Redis,
    stream: &str,
    direction: Direction,
    from: &str,
    to: &str,
    most: u64,
) -> Result<Stepped, BrokerError> {
    let way = match direction {
        Direction::Forward => "fwd",
        Direction::Backward => "rev",
    };
    let mut inv = STEP_ENTRIES.script.key(stream);
    inv.arg(way).arg(from).arg(to).arg(most);
    let (n, last, ended): (u64, String, u8) =
        STEP_ENTRIES.run(con, &inv, stream).map_err(|e| BrokerError::new("step over entries", stream, e))?;
    Ok(Stepped { n, last: Some(last).filter(|l| !l.is_empty()), ended: ended == 1 })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{EntryId, target_for_age};

    fn id(s: &str) -> EntryId {
        s.parse().unwrap()
    }

    #[test]
    fn the_target_for_an_age_is_the_first_id_at_now_minus_it_and_never_before_1970() {
        let now: jiff::Timestamp = "2026-01-31T00:00:00Z".parse().unwrap();
        let day = Duration::from_secs(86_400);
        let expected = now.as_millisecond() as u64 - 30 * 86_400_000;
        assert_eq!(target_for_age(30 * day, now), EntryId { ms: expected, seq: 0 });
        assert_eq!(target_for_age(Duration::from_secs(u64::MAX), now), id("0-0"));
        assert_eq!(target_for_age(Duration::ZERO, now), EntryId { ms: now.as_millisecond() as u64, seq: 0 });
    }
}

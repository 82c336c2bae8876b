//! Retention: trimming a stream by MINID, never past its safe point (the oldest entry any of
//! its groups still needs), and stepping over entries without fetching their fields (for
//! counts and for finding the N-th newest entry).
//!
//! Invariant: the safe point is read and the stream trimmed in one script, so no group can
//! read, claim or acknowledge in between; an entry pending with any group, or not yet delivered
//! to one, is never removed. A stream without groups (a dead-letter stream) has no safe point.

use std::sync::LazyLock;

use redis::Connection;

use super::BrokerError;

/// A stream entry id `<ms>-<seq>`, ordered as Redis orders them (both parts as u64, so
/// nothing is lost above 2^53 as it would be in a double).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    /// The lowest id at time `at` (`<ms>-0`); times before 1970 are 0.
    pub fn first_at(at: jiff::Timestamp) -> EntryId {
        EntryId { ms: at.as_millisecond().max(0) as u64, seq: 0 }
    }

    /// The id right after this one (`seq` + 1, or the next millisecond's first); `None` after
    /// the highest possible id.
    pub fn next(self) -> Option<EntryId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(EntryId { seq, ..self }),
            None => self.ms.checked_add(1).map(|ms| EntryId { ms, seq: 0 }),
        }
    }

    /// The id right before this one; `None` before `0-0`.
    pub fn prev(self) -> Option<EntryId> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(EntryId { seq, ..self }),
            None => self.ms.checked_sub(1).map(|ms| EntryId { ms, seq: u64::MAX }),
        }
    }
}

impl std::str::FromStr for EntryId {
    type Err = String;

    /// `<ms>-<seq>`, or `<ms>` alone (`<ms>-0`), as Redis reads an id bound.
    fn from_str(s: &str) -> Result<EntryId, String> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        match (ms.parse(), seq.parse()) {
            (Ok(ms), Ok(seq)) => Ok(EntryId { ms, seq }),
            _ => Err(format!("'{s}' is not a stream entry id (<ms>-<seq>)")),
        }
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// See the script's header.
static TRIM_TO_SAFE_POINT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/trim_to_safe_point.lua")));

/// See the script's header.
static STEP_ENTRIES: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/step_entries.lua")));

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
    pub group: String,
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

/// Trims `stream` to `target` (an entry id `<ms>-<seq>`), or to its safe point where that is
/// lower, in one atomic call. A stream that does not exist is left alone (removed 0).
pub fn trim_to_safe_point(
    con: &mut Connection,
    stream: &str,
    target: &str,
    mode: Mode,
) -> Result<Trimmed, BrokerError> {
    let mut inv = TRIM_TO_SAFE_POINT.key(stream);
    match mode {
        Mode::Plan => inv.arg(target).arg("plan"),
        Mode::Exact => inv.arg(target).arg("exact"),
        Mode::Approximate { limit } => inv.arg(target).arg("approx").arg(limit),
    };
    let (minid, removed, group, reason, safe): (String, u64, String, String, String) =
        inv.invoke(con).map_err(|e| BrokerError::new("trim to safe point", stream, e))?;
    let reason = match reason.as_str() {
        "pending" => Some(HoldReason::Pending),
        "undelivered" => Some(HoldReason::Undelivered),
        _ => None,
    };
    Ok(Trimmed {
        minid,
        removed,
        held_by: reason.map(|reason| Holder { group, reason }),
        safe_point: Some(safe).filter(|s| !s.is_empty()),
    })
}

/// Which way [`step`] walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first (XRANGE `from` `to`).
    Forward,
    /// Newest first (XREVRANGE `from` `to`, `from` the higher bound).
    Backward,
}

/// Steps over at most `most` entries of `stream` between `from` and `to` (bounds as XRANGE
/// takes them: `-`, `+`, an id, `(id` exclusive) and returns how many there were and the last
/// one's id. The entries' fields never leave Redis, so this costs the same for 1 MB events as
/// for 300 B ones; callers page with `(last` to go on.
pub fn step(
    con: &mut Connection,
    stream: &str,
    direction: Direction,
    from: &str,
    to: &str,
    most: u64,
) -> Result<(u64, Option<String>), BrokerError> {
    let way = match direction {
        Direction::Forward => "fwd",
        Direction::Backward => "rev",
    };
    let (n, last): (u64, String) = STEP_ENTRIES
        .key(stream)
        .arg(way)
        .arg(from)
        .arg(to)
        .arg(most)
        .invoke(con)
        .map_err(|e| BrokerError::new("step over entries", stream, e))?;
    Ok((n, Some(last).filter(|l| !l.is_empty())))
}

/// The type of the key `key` (`stream`, `none` when it does not exist, `hash`…).
pub fn key_type(con: &mut Connection, key: &str) -> Result<String, BrokerError> {
    redis::cmd("TYPE").arg(key).query(con).map_err(|e| BrokerError::new("TYPE", key, e))
}

#[cfg(test)]
mod tests {
    use super::EntryId;

    fn id(s: &str) -> EntryId {
        s.parse().unwrap()
    }

    #[test]
    fn ids_compare_by_time_then_sequence_exactly_at_the_top_of_u64() {
        assert!(id("5-18446744073709551614") < id("5-18446744073709551615"));
        assert!(id("5-18446744073709551615") < id("6-0"));
        assert!(id("9-1") < id("10-0"), "numbers, not strings");
        assert_eq!(id("7"), id("7-0"));
    }

    #[test]
    fn the_next_id_after_the_highest_sequence_is_the_next_milliseconds_first() {
        assert_eq!(id("5-18446744073709551615").next(), Some(id("6-0")));
        assert_eq!(id("5-3").next(), Some(id("5-4")));
        assert_eq!(id("18446744073709551615-18446744073709551615").next(), None);
    }

    #[test]
    fn the_id_before_a_milliseconds_first_is_the_previous_milliseconds_last() {
        assert_eq!(id("6-0").prev(), Some(id("5-18446744073709551615")));
        assert_eq!(id("0-0").prev(), None);
    }

    #[test]
    fn text_that_is_not_an_id_is_refused() {
        for bad in ["", "x-1", "1-", "1-2-3", "-1-0", "18446744073709551616-0"] {
            assert!(bad.parse::<EntryId>().is_err(), "{bad}");
        }
        assert_eq!(id("1700000000000-3").to_string(), "1700000000000-3");
    }
}

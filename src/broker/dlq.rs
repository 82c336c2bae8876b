//! Reading and moving dead letters (`<stream>:dlq`, written by `ack`): paging through them,
//! reading one, putting one back on its stream, deleting some.
//!
//! Invariant: a replayed dead letter is in exactly one of the two streams at every moment a
//! crash could observe: its XADD to the stream and its XDEL from the dead-letter stream happen
//! in one Lua script, or, for an entry too wide for a script, in one MULTI/EXEC guarded by
//! WATCH.

use std::sync::LazyLock;

use super::Redis;
use super::script::Lua;
use redis::Value;

use super::reply::{self, text};
use super::{BrokerError, range};
use crate::event::Entry;

pub(crate) use super::ack::DEAD_LETTER_FIELDS;
pub use super::keys::dead_letter_stream;

/// A field name and its value, as bytes.
pub type Field = (Vec<u8>, Vec<u8>);

/// A dead letter's original fields (the entry as its producer wrote it) and the eight
/// `dlq_*` fields after them; `None` when the entry does not end with those eight (it was not
/// written by streamsink) or has no original field.
pub fn split(fields: &[Field]) -> Option<(&[Field], &[Field])> {
    let kept = fields.len().checked_sub(DEAD_LETTER_FIELDS.len()).filter(|&k| k > 0)?;
    let (original, tail) = fields.split_at(kept);
    let mut names: Vec<&[u8]> = tail.iter().map(|(k, _)| k.as_slice()).collect();
    names.sort_unstable();
    let mut known: Vec<&[u8]> = DEAD_LETTER_FIELDS.iter().map(|f| f.as_bytes()).collect();
    known.sort_unstable();
    (names == known).then_some((original, tail))
}

/// The dead letter `id` of `dlq`, if it is there.
pub fn get(con: &mut Redis, dlq: &str, id: &str) -> Result<Option<Entry>, BrokerError> {
    Ok(range::page(con, dlq, id, id, 1)?.into_iter().next())
}

/// The id of the newest entry of `dlq` (XREVRANGE + - COUNT 1); `None` when it is empty.
pub fn last_id(con: &mut Redis, dlq: &str) -> Result<Option<String>, BrokerError> {
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(dlq)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(con)
        .map_err(|e| BrokerError::new("XREVRANGE", dlq, e))?;
    let decoded =
        reply::entries_of(reply).map_err(|detail| BrokerError::bad_reply("XREVRANGE", dlq, detail))?;
    Ok(decoded.entries.into_iter().next().map(|e| e.id))
}

/// Deletes `ids` from `dlq` (XDEL); returns how many were there.
pub fn delete(con: &mut Redis, dlq: &str, ids: &[String]) -> Result<u64, BrokerError> {
    if ids.is_empty() {
        return Ok(0);
    }
    redis::cmd("XDEL").arg(dlq).arg(ids).query(con).map_err(|e| BrokerError::new("XDEL", dlq, e))
}

/// What became of one dead letter asked to be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Back on the stream under this new id, and gone from the dead-letter stream.
    Moved(String),
    /// Not in the dead-letter stream (never was, or already replayed or purged).
    Gone,
    /// Left where it is: it does not end with the eight `dlq_*` fields, so which of its fields
    /// are the original ones is unknown.
    NotADeadLetter,
    /// Left where it is: the dead-letter stream kept changing under the WATCH of a wide entry.
    Busy,
}

/// Field/value items the script unpacks into one XADD at most: Lua's C stack holds about 8000
/// values (the same bound as `ack`'s).
const MAX_SCRIPT_ITEMS: usize = 6000;

/// Attempts of the WATCH/MULTI/EXEC path before an entry is reported [`Replay::Busy`].
const WATCH_ATTEMPTS: usize = 10;

static REPLAY: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("lua/replay_dead_letter.lua")));

/// A replay of a page of dead letters that stopped at a failure. Each move is atomic, so every
/// dead letter is still in exactly one of the two streams; `outcomes` says which moved.
#[derive(Debug)]
pub struct Interrupted {
    /// What became of each id, in the order of the ids asked for; `None` for the one that failed
    /// and for any left untouched. The scripts pipelined after the failing one ran on the server
    /// as well: what they did is recorded, but nothing more is sent (no script reloaded, no
    /// entry too wide for a script moved). Empty when the page's reply was lost (a dropped
    /// connection): what that page did is then unknown.
    pub outcomes: Vec<Option<Replay>>,
    /// The first failure.
    pub error: BrokerError,
}

/// Moves dead letters `ids` of `<stream>:dlq` back onto `stream`, each with its original
/// fields in their order (the eight `dlq_*` fields removed) and each atomically (see the
/// module's invariant), in one round trip: one script call per id, pipelined. Returns what
/// became of each, in the order of `ids`; on a failure, what became of those before it too.
pub fn replay(con: &mut Redis, stream: &str, ids: &[String]) -> Result<Vec<Replay>, Interrupted> {
    let op = "replay dead letter";
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let dlq = dead_letter_stream(stream, con.is_cluster());
    REPLAY
        .load_on(con, &dlq)
        .map_err(|e| Interrupted { outcomes: Vec::new(), error: BrokerError::new(op, stream, e) })?;
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("EVALSHA")
            .arg(REPLAY.script.get_hash())
            .arg(2)
            .arg(&dlq)
            .arg(stream)
            .arg(id)
            .arg(MAX_SCRIPT_ITEMS);
    }
    let replies: Vec<redis::RedisResult<Value>> = pipe
        .ignore_errors()
        .query(con)
        .map_err(|e| Interrupted { outcomes: Vec::new(), error: BrokerError::new(op, stream, e) })?;
    let mut outcomes = Vec::with_capacity(ids.len());
    let mut failure = None;
    for (id, reply) in ids.iter().zip(replies) {
        if failure.is_some() {
            outcomes.push(reply.ok().and_then(|r| decode(stream, r).ok()).and_then(Step::done));
            continue;
        }
        let reply = match reply {
            // The script was not cached yet (or was flushed): the id is untouched; invoke
            // loads the script and calls it again.
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let mut inv = REPLAY.script.key(&dlq);
                inv.key(stream).arg(id).arg(MAX_SCRIPT_ITEMS);
                REPLAY.run(con, &inv, &dlq)
            }
            other => other,
        };
        let outcome =
            reply.map_err(|e| BrokerError::new(op, stream, e)).and_then(|r| match decode(stream, r)? {
                Step::Done(done) => Ok(done),
                Step::TooLarge => replay_watched(con, stream, &dlq, id),
            });
        match outcome {
            Ok(done) => outcomes.push(Some(done)),
            Err(error) => {
                outcomes.push(None);
                failure = Some(error);
            }
        }
    }
    match failure {
        None => Ok(outcomes.into_iter().flatten().collect()),
        Some(error) => Err(Interrupted { outcomes, error }),
    }
}

/// The script's reply for one dead letter.
enum Step {
    Done(Replay),
    /// Too wide for the script: nothing was done; [`replay_watched`] moves it.
    TooLarge,
}

impl Step {
    fn done(self) -> Option<Replay> {
        match self {
            Step::Done(done) => Some(done),
            Step::TooLarge => None,
        }
    }
}

/// Decodes the script's reply.
fn decode(stream: &str, reply: Value) -> Result<Step, BrokerError> {
    let op = "replay dead letter";
    let Value::Array(reply) = reply else {
        return Err(BrokerError::bad_reply(op, stream, format!("not an array: {reply:?}")));
    };
    let mut reply = reply.into_iter();
    let status = reply.next().and_then(text).unwrap_or_default();
    match status.as_str() {
        "replayed" => reply
            .next()
            .and_then(text)
            .map(|id| Step::Done(Replay::Moved(id)))
            .ok_or_else(|| BrokerError::bad_reply(op, stream, "no new id".into())),
        "gone" => Ok(Step::Done(Replay::Gone)),
        "not a dead letter" => Ok(Step::Done(Replay::NotADeadLetter)),
        "too large" => Ok(Step::TooLarge),
        other => Err(BrokerError::bad_reply(op, stream, format!("status '{other}'"))),
    }
}

/// The script's move for an entry too wide for Lua: WATCH the dead-letter stream, read the
/// entry, then XADD + XDEL in one MULTI/EXEC, which Redis runs whole or not at all (and not at
/// all if the dead-letter stream changed since the WATCH: then it is read again).
///
/// MULTI/EXEC does not stop at a command failing at run time, so the one way the XADD could
/// fail there, `stream` holding another type, is ruled out just before (TYPE).
fn replay_watched(con: &mut Redis, stream: &str, dlq: &str, id: &str) -> Result<Replay, BrokerError> {
    let op = "replay dead letter (MULTI)";
    let err = |e| BrokerError::new(op, stream, e);
    for _ in 0..WATCH_ATTEMPTS {
        // Only the dead-letter stream is watched: producers writing to `stream` all the time
        // would abort every attempt, and nothing they do can make the XADD fail.
        redis::cmd("WATCH").arg(dlq).query::<()>(con).map_err(err)?;
        let outcome = watched_move(con, stream, dlq, id);
        if !matches!(outcome, Ok(None)) {
            // Ends a WATCH no EXEC ended; a failure here only costs the next attempt a retry.
            let _ = redis::cmd("UNWATCH").query::<()>(con);
        }
        if let Some(done) = outcome? {
            return Ok(done);
        }
    }
    Ok(Replay::Busy)
}

/// One attempt under WATCH: `Ok(None)` when EXEC was aborted because a watched key changed.
fn watched_move(con: &mut Redis, stream: &str, dlq: &str, id: &str) -> Result<Option<Replay>, BrokerError> {
    let op = "replay dead letter (MULTI)";
    let err = |e| BrokerError::new(op, stream, e);
    let Some(entry) = get(con, dlq, id)? else { return Ok(Some(Replay::Gone)) };
    let Some((original, _)) = split(&entry.fields) else { return Ok(Some(Replay::NotADeadLetter)) };
    let kind: String = redis::cmd("TYPE").arg(stream).query(con).map_err(err)?;
    if kind != "stream" && kind != "none" {
        let detail = format!("'{stream}' holds a {kind}, not a stream");
        return Err(BrokerError::bad_reply(op, stream, detail));
    }
    let mut xadd = redis::cmd("XADD");
    xadd.arg(stream).arg("*");
    for (k, v) in original {
        xadd.arg(k).arg(v);
    }
    let mut pipe = redis::pipe();
    pipe.atomic().add_command(xadd).cmd("XDEL").arg(dlq).arg(id);
    let done: Option<(String, u64)> = pipe.query(con).map_err(err)?;
    Ok(done.map(|(new_id, _)| Replay::Moved(new_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_script_strips_exactly_the_eight_fields_ack_writes() {
        let script = include_str!("lua/replay_dead_letter.lua");
        let start = script.find("local known = {").expect("the script's known table");
        let table = &script[start..];
        let table = &table[..table.find('}').expect("the end of the known table")];
        for name in DEAD_LETTER_FIELDS {
            assert!(table.contains(&format!("{name} = true")), "{name} missing from the script: {table}");
        }
        assert_eq!(table.matches("= true").count(), DEAD_LETTER_FIELDS.len(), "{table}");
    }

    fn pairs(names: &[&str]) -> Vec<(Vec<u8>, Vec<u8>)> {
        names.iter().map(|n| (n.as_bytes().to_vec(), b"v".to_vec())).collect()
    }

    #[test]
    fn split_takes_the_eight_dlq_fields_from_the_end_only() {
        let mut names = vec!["event", "dlq_note"];
        names.extend(DEAD_LETTER_FIELDS);
        let fields = pairs(&names);
        let (original, tail) = split(&fields).expect("a dead letter");
        assert_eq!(original, &fields[..2], "an original field starting with dlq_ stays");
        assert_eq!(tail.len(), 8);
    }

    #[test]
    fn split_refuses_entries_without_the_eight_fields_or_without_original_fields() {
        assert!(split(&pairs(&["event", "dlq_reason"])).is_none());
        assert!(split(&pairs(&DEAD_LETTER_FIELDS)).is_none(), "nothing to put back");
        let mut names = vec!["event"];
        names.extend(&DEAD_LETTER_FIELDS[..7]);
        names.push("dlq_reason");
        assert!(split(&pairs(&names)).is_none(), "a repeated name is not the eight fields");
    }
}

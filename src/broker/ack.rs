//! Acknowledging: one XACK for a batch, or one Lua script that writes its dead letters and
//! then acknowledges everything, so that no entry is acknowledged unless its dead letter is
//! written.

use super::Redis;
use super::script::Lua;
use std::sync::LazyLock;

use super::BrokerError;
use super::keys::dead_letter_stream;
use crate::event::Entry;

/// An entry that can never succeed, with why: it goes to `<stream>:dlq`.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// The entry as read from the stream: its fields are written first, unchanged.
    pub entry: &'a Entry,
    /// Short name of the problem (`invalid json`, `max deliveries exceeded`, ...).
    pub reason: String,
    /// The full error message.
    pub error: String,
}

/// The fields appended to every dead letter, after the original fields, in this order: the one
/// list of their names, which `broker::dlq` strips on replay and `replay_dead_letter.lua`'s
/// `known` table must match (a unit test checks).
pub(crate) const DEAD_LETTER_FIELDS: [&str; 8] = [
    "dlq_reason",
    "dlq_error",
    "dlq_stream",
    "dlq_original_id",
    "dlq_group",
    "dlq_consumer",
    "dlq_deliveries",
    "dlq_failed_at",
];

/// Who is acknowledging: written into every dead-letter entry.
#[derive(Debug, Clone, Copy)]
pub struct Acknowledger<'a> {
    /// The consumer group the entries are acknowledged in (`dlq_group`).
    pub group: &'a str,
    /// The consumer that read them (`dlq_consumer`).
    pub consumer: &'a str,
}

/// Stops at the first failed call, before any XACK (see the script's header). A retry after a
/// failure may write a dead letter twice; it never acknowledges one unwritten.
static ACK_WITH_DEAD_LETTERS: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("lua/ack_with_dead_letters.lua")));

/// Acknowledges `ids` of `stream`, and moves `dead` to `<stream>:dlq` with the reason, in one
/// atomic call. Returns how many entries Redis acknowledged.
///
/// Call only after every other entry in `ids` is committed to Postgres.
pub fn ack(
    con: &mut Redis,
    by: Acknowledger<'_>,
    stream: &str,
    ids: &[&str],
    dead: &[DeadLetter<'_>],
) -> Result<u64, BrokerError> {
    if ids.is_empty() && dead.is_empty() {
        return Ok(0);
    }
    if dead.is_empty() {
        return redis::cmd("XACK")
            .arg(stream)
            .arg(by.group)
            .arg(ids)
            .query(con)
            .map_err(|e| BrokerError::new("XACK", stream, e));
    }
    let failed_at = jiff::Timestamp::now().to_string();
    // Lua cannot unpack that many values into one XADD: such a dead letter is written before
    // the script, which then acknowledges it (a failure still stops before any XACK).
    let (large, small): (Vec<_>, Vec<_>) =
        dead.iter().partition(|d| d.entry.fields.len() > MAX_SCRIPT_FIELDS);
    for d in &large {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(dead_letter_stream(stream, con.is_cluster())).arg("*");
        push_dead_letter(&mut xadd, d, by, stream, &failed_at);
        xadd.query::<String>(con).map_err(|e| BrokerError::new("XADD (dead letter)", stream, e))?;
    }
    let mut inv = ACK_WITH_DEAD_LETTERS.script.key(stream);
    inv.key(dead_letter_stream(stream, con.is_cluster())).arg(by.group).arg(small.len());
    for d in &small {
        inv.arg(2 * (d.entry.fields.len() + 8));
        push_dead_letter(&mut inv, d, by, stream, &failed_at);
    }
    inv.arg(ids);
    for d in dead {
        if !ids.contains(&d.entry.id.as_str()) {
            inv.arg(&d.entry.id);
        }
    }
    ACK_WITH_DEAD_LETTERS
        .run(con, &inv, stream)
        .map_err(|e| BrokerError::new("dead-letter + XACK", stream, e))
}

/// Field pairs of the largest dead letter written by the script: Lua unpacks at most about 8000
/// values into one call.
const MAX_SCRIPT_FIELDS: usize = 3000;

/// Something dead-letter fields can be appended to: an XADD command or a script invocation.
trait Args {
    fn push(&mut self, value: &[u8]);
}

impl Args for redis::Cmd {
    fn push(&mut self, value: &[u8]) {
        self.arg(value);
    }
}

impl Args for redis::ScriptInvocation<'_> {
    fn push(&mut self, value: &[u8]) {
        self.arg(value);
    }
}

/// Appends `d`'s original fields, then its eight [`DEAD_LETTER_FIELDS`].
fn push_dead_letter(
    out: &mut impl Args,
    d: &DeadLetter<'_>,
    by: Acknowledger<'_>,
    stream: &str,
    failed_at: &str,
) {
    for (k, v) in &d.entry.fields {
        out.push(k);
        out.push(v);
    }
    let deliveries = d.entry.deliveries.to_string();
    // In the order of DEAD_LETTER_FIELDS.
    let values: [&str; 8] =
        [&d.reason, &d.error, stream, &d.entry.id, by.group, by.consumer, &deliveries, failed_at];
    for (k, v) in DEAD_LETTER_FIELDS.into_iter().zip(values) {
        out.push(k.as_bytes());
        out.push(v.as_bytes());
    }
}

/// Acknowledges pending ids whose entries no longer exist: there is nothing to process or
/// dead-letter, and left pending they would be reported again at every reclaim.
pub fn ack_deleted(con: &mut Redis, stream: &str, group: &str, ids: &[String]) -> Result<(), BrokerError> {
    if ids.is_empty() {
        return Ok(());
    }
    redis::cmd("XACK")
        .arg(stream)
        .arg(group)
        .arg(ids)
        .query::<u64>(con)
        .map(|_| ())
        .map_err(|e| BrokerError::new("XACK (deleted)", stream, e))
}

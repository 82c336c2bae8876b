//! The worker's own retention, run at the end of a reclaim cycle (so on the reader's
//! connection, never during an outage): when `STREAMSINK_RETENTION` is set, each stream read
//! is trimmed to entries younger than it; when `STREAMSINK_DLQ_RETENTION` is set, each
//! `<stream>:dlq` likewise. Same rule as `streamsink trim` ([`crate::broker::trim`]): never
//! past an entry any group still needs.
//!
//! At most once a minute, approximate (`XTRIM ~`: whole macro-nodes only, cheap for Redis),
//! in passes of at most [`PASS_LIMIT`] entries. A failure is not fatal: it is logged and the
//! next run tries again (a lost connection goes back to the reader, which reconnects). On a
//! server older than Redis 6.2 (no `XTRIM MINID`) it is logged once, and retention is off for
//! the rest of the process. A stream read by the worker is trimmed only while the worker's
//! group exists on it (checked in the trimming script): the reader re-creates a missing group
//! at `STREAMSINK_GROUP_START`, which may expect the old entries.

use crate::broker::Redis;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::broker::BrokerError;
use crate::broker::keys::dead_letter_stream;
use crate::broker::trim::{self, HoldReason, Mode};
use crate::config::duration_text;
use crate::supervisor::Shared;

/// Shortest time between two runs.
const INTERVAL: Duration = Duration::from_secs(60);
/// Entries one approximate pass may remove (XTRIM … LIMIT), so no call keeps Redis busy long.
const PASS_LIMIT: u64 = 100_000;
/// Passes per stream per run: 10 million entries a minute is far beyond any producer here.
const MOST_PASSES: usize = 100;

/// State of the periodic trim.
pub(super) struct Retention {
    next_at: Instant,
    /// Streams whose trimming a group holds back, by the group's name: logged once when the
    /// episode starts (or the group changes), once when it ends.
    held: HashMap<String, String>,
    /// Set when the server cannot trim to a MINID (older than Redis 6.2): retention is off for
    /// the rest of the process (logged once).
    unsupported: bool,
}

impl Retention {
    pub(super) fn new() -> Retention {
        Retention { next_at: Instant::now(), held: HashMap::new(), unsupported: false }
    }

    /// Trims every stream (and dead-letter stream) with a retention, if a minute has passed
    /// since the last run. Returns only a lost connection; other failures are logged.
    pub(super) fn run(&mut self, c: &mut Redis, shared: &Shared) -> Result<(), BrokerError> {
        let worker = &shared.config.worker;
        let (streams, dead_letters) = (worker.retention(), worker.dlq_retention());
        let off = (streams.is_none() && dead_letters.is_none()) || self.unsupported;
        if off || Instant::now() < self.next_at {
            return Ok(());
        }
        self.next_at = Instant::now() + INTERVAL;
        let group: &str = &shared.config.group.name;
        for s in shared.config.group.streams.iter() {
            if let Some(age) = streams {
                self.trim(c, s, Some(group), age)?;
            }
            if let Some(age) = dead_letters {
                self.trim(c, &dead_letter_stream(s, c.is_cluster()), None, age)?;
            }
            if self.unsupported {
                break;
            }
        }
        Ok(())
    }

    /// One stream's trim, in passes; with `group`, only while that group exists on it.
    fn trim(
        &mut self,
        c: &mut Redis,
        stream: &str,
        group: Option<&str>,
        age: Duration,
    ) -> Result<(), BrokerError> {
        let target = trim::target_for_age(age, jiff::Timestamp::now()).to_string();
        let pass = Mode::Approximate { limit: PASS_LIMIT };
        let mut removed = 0;
        let mut last = None;
        for _ in 0..MOST_PASSES {
            let result = match group {
                Some(group) => trim::trim_to_safe_point_of_group(c, stream, group, &target, pass),
                None => trim::trim_to_safe_point(c, stream, &target, pass).map(Some),
            };
            match result {
                Ok(Some(t)) => {
                    removed += t.removed;
                    let done = t.removed == 0;
                    last = Some(t);
                    if done {
                        break;
                    }
                }
                Ok(None) => {
                    log::debug!(
                        stream = stream;
                        "retention: group {} does not exist on {stream}; not trimming it until the reader re-creates the group",
                        group.unwrap_or_default()
                    );
                    break;
                }
                Err(e) if e.is_connection() => return Err(e),
                Err(e) if e.is_trim_unsupported() => {
                    log::error!(
                        "retention needs Redis 6.2 or later (XTRIM MINID); it is off for this process: {e}"
                    );
                    self.unsupported = true;
                    return Ok(());
                }
                Err(e) => {
                    log::warn!(stream = stream; "retention: {e}; trying again in a minute");
                    break;
                }
            }
        }
        if removed > 0 {
            log::info!(stream = stream; "retention: removed {removed} entries of {stream} older than {}", duration_text(age));
        }
        let Some(last) = last else { return Ok(()) };
        match (last.held_by, last.safe_point) {
            (Some(holder), Some(safe)) => {
                if self.held.get(stream) != Some(&holder.group) {
                    let why = match holder.reason {
                        HoldReason::Pending => "is pending with it (delivered, never acknowledged)",
                        HoldReason::Undelivered => "is not delivered to it yet",
                    };
                    log::warn!(
                        stream = stream;
                        "retention: group {} holds back the trimming of {stream}: entry {safe} {why}; \
                         entries older than {} are kept until it moves on",
                        holder.group,
                        duration_text(age)
                    );
                    self.held.insert(stream.to_string(), holder.group);
                }
            }
            _ => {
                if let Some(group) = self.held.remove(stream) {
                    log::info!(stream = stream; "retention: group {group} no longer holds back the trimming of {stream}");
                }
            }
        }
        Ok(())
    }
}

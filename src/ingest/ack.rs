//! A worker's side of Redis: acknowledging a written batch (with its dead letters) and keeping
//! the last-error record of entries that may come back.
//!
//! Invariant: [`Acker::acknowledge`] is called only after the batch's events are committed;
//! it retries every Redis error (unreachable, OOM, READONLY, WRONGTYPE on the dead-letter
//! key...) with backoff and gives up only at shutdown, leaving the entries pending (they are
//! redelivered, as duplicates, later). No entry is acknowledged unless its dead letter is
//! written: both happen in one script that stops at the first failure.

use crate::broker::Redis;
use std::sync::Arc;

use crate::broker::ack::{self, Acknowledger, DeadLetter};
use crate::broker::{self, Batch, BrokerError, errors};
use crate::event::Entry;
use crate::observe::Counters;
use crate::observe::heartbeat::Beat;
use crate::retry::{Failure, GaveUp, Staleness, retry};
use crate::supervisor::Shared;

/// A worker's own Redis connection and what it does with it.
pub(crate) struct Acker {
    shared: Arc<Shared>,
    /// The worker's heartbeat, beaten while an acknowledgement waits out a fault.
    beat: Beat,
    /// `None` until (re)connected.
    con: Option<Redis>,
}

/// Why an acknowledgement is being retried.
#[derive(Debug, thiserror::Error)]
enum AckFault {
    #[error(transparent)]
    Connect(redis::RedisError),
    #[error(transparent)]
    Broker(BrokerError),
    /// Redis answered with an error (not a lost connection).
    #[error(transparent)]
    Refused(BrokerError),
}

impl Acker {
    pub(crate) fn new(shared: Arc<Shared>, beat: Beat) -> Acker {
        Acker { shared, beat, con: None }
    }

    /// Forgets the connection (after a panic its state is unknown).
    pub(crate) fn reset(&mut self) {
        self.con = None;
    }

    /// The connection, connecting once if there is none.
    fn connection(&mut self) -> redis::RedisResult<&mut Redis> {
        let con = match self.con.take() {
            Some(con) => con,
            None => broker::connect(&self.shared.config.redis, broker::COMMAND_TIMEOUT)?,
        };
        Ok(self.con.insert(con))
    }

    /// Acknowledges `ids` and dead-letters `dead` in one call, retrying every failure with
    /// backoff. Returns false if it gave up (shutdown): the entries stay pending.
    pub(crate) fn acknowledge(&mut self, stream: &str, ids: &[&str], dead: &[DeadLetter<'_>]) -> bool {
        let shared = Arc::clone(&self.shared);
        let by = Acknowledger { group: &shared.config.group.name, consumer: &shared.consumer };
        let mut staleness = Staleness::new(self.con.is_none());
        let refused = if dead.is_empty() { &shared.ack_refused } else { &shared.dead_letter_refused };
        let beat = self.beat;
        let mut issued = std::time::Instant::now();
        let attempt = || {
            if self.con.is_none() {
                staleness.connected();
            }
            issued = std::time::Instant::now();
            let con = self.connection().map_err(|e| Failure::Wait(AckFault::Connect(e)))?;
            match ack::ack(con, by, stream, ids, dead) {
                Ok(acked) => Ok(acked),
                Err(e) if e.is_connection() => {
                    self.con = None;
                    if staleness.retry_at_once() {
                        Err(Failure::Again)
                    } else {
                        Err(Failure::Wait(AckFault::Broker(e)))
                    }
                }
                Err(e) => {
                    // A new connection may reach a new primary (READONLY after a failover).
                    self.con = None;
                    Err(Failure::Wait(AckFault::Refused(e)))
                }
            }
        };
        let what = if dead.is_empty() { "acknowledge" } else { "dead-letter and acknowledge" };
        let on_wait = |e: &AckFault, _, _| {
            shared.heartbeats.beat(beat); // waiting on purpose
            match e {
                AckFault::Refused(e) if refused.begin() => log::error!(
                    "redis refused to {what} {} entries of {stream}: {e}; retrying with backoff, \
                     they stay pending until it succeeds",
                    ids.len()
                ),
                AckFault::Refused(e) => log::debug!("redis still refuses: {e}"),
                e => shared.redis_outage.fault("worker", e),
            }
        };
        match retry(shared.stop_flag(), attempt, on_wait) {
            Ok(acked) => {
                shared.redis_outage.cleared(issued);
                if let Some(lasted) = refused.end() {
                    log::info!(
                        "redis accepted to {what} the entries of {stream} after {:.1}s",
                        lasted.as_secs_f64()
                    );
                }
                Counters::add(&shared.counters.acknowledged, acked);
                true
            }
            Err(GaveUp::Stopped(_)) => false,
            Err(GaveUp::Fatal(e)) => {
                log::error!("{e}; {} entries stay pending and will be redelivered", ids.len());
                false
            }
        }
    }

    /// Dead letters for entries delivered more often than the budget allows and than their
    /// lone try, carrying the last error recorded for each (by this or another process).
    pub(crate) fn over_budget<'b>(&mut self, stream: &str, entries: &[&'b Entry]) -> Vec<DeadLetter<'b>> {
        if entries.is_empty() {
            return Vec::new();
        }
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let last = self.best_effort(|con| errors::last_errors(con, stream, &ids)).unwrap_or_default();
        let max = self.shared.config.worker.max_deliveries;
        entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let last_error = last.get(i).cloned().flatten().unwrap_or_else(|| {
                    "none recorded (each consumer it was delivered to stopped before finishing it)".into()
                });
                let error = format!(
                    "delivered {} times (STREAMSINK_MAX_DELIVERIES={max}, then once alone); last error: \
                     {last_error}",
                    entry.deliveries
                );
                log::warn!(
                    stream = stream, entry_id = entry.id.as_str();
                    "entry {} on {stream}: {error}; dead-lettering", entry.id
                );
                DeadLetter { entry, reason: "max deliveries exceeded".into(), error }
            })
            .collect()
    }

    /// Best effort: remembers `error` as the last error of the batch's entries.
    pub(crate) fn record_errors(&mut self, batch: &Batch, error: &str) {
        let ids: Vec<&str> = batch.entries.iter().map(|e| e.id.as_str()).collect();
        self.best_effort(|con| errors::record_errors(con, &batch.stream, &ids, error));
    }

    /// Best effort: drops recorded errors of redelivered entries once they are acknowledged.
    pub(crate) fn forget_errors(&mut self, batch: &Batch) {
        let ids: Vec<&str> =
            batch.entries.iter().filter(|e| e.deliveries > 1).map(|e| e.id.as_str()).collect();
        if !ids.is_empty() {
            self.best_effort(|con| errors::forget_errors(con, &batch.stream, &ids));
        }
    }

    /// Runs `f` once on the connection; a failure is logged (an unreachable Redis as an
    /// outage, anything else at debug) and ignored.
    fn best_effort<T>(&mut self, f: impl FnOnce(&mut Redis) -> Result<T, BrokerError>) -> Option<T> {
        let con = match self.connection() {
            Ok(con) => con,
            Err(e) => {
                self.shared.redis_outage.fault("worker", &e);
                return None;
            }
        };
        f(con).map_err(|e| log::debug!("{e}")).ok()
    }
}

//! A worker thread: takes a batch off the channel, sorts it ([`super::triage`]), writes its
//! events in one transaction (retrying while Postgres is unreachable), then acknowledges it in
//! Redis in one call ([`super::ack`]).
//!
//! Invariant: nothing is acknowledged that is not committed to Postgres or written to the
//! dead-letter stream. A batch abandoned at shutdown stays pending in Redis, with why recorded
//! as its entries' last error.

use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::ack::Acker;
use super::triage::{self, Outcome};
use crate::broker::Batch;
use crate::event::Event;
use crate::handlers::Registry;
use crate::observe::Counters;
use crate::retry::{Failure, GaveUp, Staleness, retry};
use crate::sink::SinkError;
use crate::sink::fault::{self, Fault};
use crate::sink::pool::Pool;
use crate::supervisor::Shared;

/// Runs one worker until the channel is closed and drained. A panic while processing a batch
/// is recorded as its entries' last error (so the dead letter written when their delivery
/// budget runs out says why), then ends the thread, which stops the process for a restart.
pub(crate) fn run(shared: Arc<Shared>, pool: Pool, registry: Arc<Registry>, rx: Receiver<Batch>) {
    let per_event = shared.hooks.per_event;
    let mut worker = Worker { acker: Acker::new(Arc::clone(&shared)), shared, pool, registry };
    for batch in rx.iter() {
        for unit in units(batch, per_event) {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.process(&unit)));
            if let Err(panic) = outcome {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                worker.acker.reset();
                worker.acker.record_errors(&unit, &format!("worker panicked: {message}"));
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// What one transaction and one acknowledgement cover: the whole batch, or (the benchmark's
/// naive baseline, a test hook) each entry on its own.
fn units(batch: Batch, per_event: bool) -> Vec<Batch> {
    if !per_event {
        return vec![batch];
    }
    let stream = batch.stream;
    batch.entries.into_iter().map(|e| Batch { stream: Arc::clone(&stream), entries: vec![e] }).collect()
}

struct Worker {
    shared: Arc<Shared>,
    pool: Pool,
    registry: Arc<Registry>,
    acker: Acker,
}

impl Worker {
    fn process(&mut self, batch: &Batch) {
        let worker = &self.shared.config.worker;
        let sorted = triage::sort(batch, worker.max_deliveries as u64, &worker.event_field);
        let mut dead = sorted.malformed;
        dead.extend(self.acker.over_budget(&batch.stream, &sorted.over_budget));
        let outcome = match self.write(&batch.stream, &sorted.events) {
            Ok(outcome) => outcome,
            Err(last_error) => {
                log::warn!(
                    "stopping with a batch of {} entries of {} unwritten; they stay pending in Redis",
                    batch.entries.len(),
                    batch.stream
                );
                self.acker.record_errors(batch, &format!("not written before shutdown: {last_error}"));
                return;
            }
        };
        dead.extend(outcome.dead_letters(batch, &sorted.events));
        let c = &self.shared.counters;
        Counters::add(&c.inserted, outcome.written.inserted);
        Counters::add(&c.duplicates, outcome.written.duplicates);
        Counters::add(&c.handler_errors, outcome.written.handler_errors);
        let ids: Vec<&str> = batch.entries.iter().map(|e| e.id.as_str()).collect();
        if self.acker.acknowledge(&batch.stream, &ids, &dead) {
            Counters::add(&c.processed, batch.entries.len() as u64);
            Counters::add(&c.dead_lettered, dead.len() as u64);
            self.acker.forget_errors(batch);
        }
    }

    /// Writes `events` in one transaction (isolating rejected rows), retrying while Postgres
    /// is unreachable. Fails with the last error only if shutdown came first (then nothing is
    /// committed that the caller would acknowledge).
    fn write(&self, stream: &str, events: &[Event]) -> Result<Outcome, SinkError> {
        if events.is_empty() {
            return Ok(Outcome::default());
        }
        // A pooled connection may have served before, so may be stale.
        let mut staleness = Staleness::new(false);
        let attempt = || {
            let mut client = self.pool.get().map_err(|e| Failure::Wait(SinkError::Connect(e)))?;
            triage::write_isolating(&mut client, &self.registry, stream, events).map_err(|source| {
                match fault::classify(&source) {
                    Fault::Conflict => {
                        log::debug!("batch write conflicted ({}); retrying", fault::describe(&source));
                        Failure::Again
                    }
                    Fault::Unreachable if source.code().is_none() && staleness.retry_at_once() => {
                        // The connection itself failed: Postgres may have restarted since this
                        // pooled connection was opened (the pool discards it now): one
                        // immediate retry on a new one.
                        log::debug!("batch write failed on a pooled connection ({source}); retrying");
                        Failure::Again
                    }
                    _ => Failure::Wait(SinkError::Query { op: "batch write", source }),
                }
            })
        };
        let outage = &self.shared.postgres_outage;
        match retry(self.shared.stop_flag(), attempt, |e, _, _| outage.fault("worker", e)) {
            Ok(outcome) => {
                outage.cleared();
                Ok(outcome)
            }
            Err(GaveUp::Stopped(e) | GaveUp::Fatal(e)) => Err(e),
        }
    }
}

//! A worker thread: takes a batch off the channel, sorts it ([`super::triage`]), writes its
//! events in one transaction (retrying while Postgres is unreachable or refuses), then
//! acknowledges it in Redis in one call ([`super::ack`]).
//!
//! Invariant: nothing is acknowledged that is not committed to Postgres or written to the
//! dead-letter stream. A batch abandoned at shutdown stays pending in Redis, with why recorded
//! as its entries' last error. The batch is released from the byte budget when the worker is
//! done with it, on every path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::ack::Acker;
use super::inflight::HeldBatch;
use super::triage::{self, Outcome};
use crate::broker::Batch;
use crate::event::{Entry, Event};
use crate::handlers::Registry;
use crate::observe::Counters;
use crate::observe::heartbeat::Beat;
use crate::retry::{Failure, GaveUp, Staleness, retry};
use crate::sink::fault::{self, Fault};
use crate::sink::pool::{Pool, PooledClient};
use crate::sink::{SinkError, batch};
use crate::supervisor::Shared;

/// Runs one worker until the channel is closed and drained. A panic outside a handler (which
/// triage isolates) is recorded as its entries' last error (so the dead letter written when
/// their delivery budget runs out says why), then ends the thread, which stops the process for
/// a restart.
pub(crate) fn run(
    shared: Arc<Shared>,
    n: usize,
    pool: Pool,
    registry: Arc<Registry>,
    rx: Receiver<HeldBatch>,
) {
    let per_event = shared.hooks.per_event;
    let beat = Beat::Worker(n);
    let acker = Acker::new(Arc::clone(&shared), beat);
    let mut worker = Worker { acker, shared, pool, registry, beat };
    loop {
        worker.shared.heartbeats.beat(beat);
        let held = match rx.recv_timeout(IDLE_BEAT) {
            Ok(held) => held,
            Err(RecvTimeoutError::Timeout) => continue, // an empty stream: alive, waiting
            Err(RecvTimeoutError::Disconnected) => return,
        };
        for unit in units(&held.batch, per_event).iter() {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.process(unit)));
            if let Err(panic) = outcome {
                let message = batch::panic_message(panic.as_ref());
                worker.acker.reset();
                worker.acker.record_errors(unit, &format!("worker panicked: {message}"));
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// What one transaction and one acknowledgement cover: the whole batch, or (the benchmark's
/// naive baseline, a test hook) each entry on its own.
fn units(batch: &Batch, per_event: bool) -> std::borrow::Cow<'_, [Batch]> {
    if !per_event {
        return std::borrow::Cow::Borrowed(std::slice::from_ref(batch));
    }
    let one = |e: &Entry| Batch { stream: Arc::clone(&batch.stream), entries: vec![e.clone()] };
    std::borrow::Cow::Owned(batch.entries.iter().map(one).collect())
}

/// How often an idle worker beats while it waits for a batch.
const IDLE_BEAT: std::time::Duration = std::time::Duration::from_secs(1);

struct Worker {
    shared: Arc<Shared>,
    pool: Pool,
    registry: Arc<Registry>,
    acker: Acker,
    beat: Beat,
}

/// Why a batch write is being retried; each kind is logged its own way.
#[derive(Debug, thiserror::Error)]
enum WriteFault {
    /// No connection, or the server is not serving: an outage.
    #[error(transparent)]
    Unreachable(SinkError),
    /// A deadlock or serialization failure: retried shortly.
    #[error("{}", fault::describe(.0))]
    Conflict(postgres::Error),
    /// The statement itself was refused (class 42 and the like): an operator must act.
    #[error("{}", fault::describe(.0))]
    Refused(postgres::Error),
    /// The stop deadline passed before a connection could be had.
    #[error("stop deadline passed")]
    Deadline,
}

impl Worker {
    fn process(&mut self, batch: &Batch) {
        let worker = &self.shared.config.worker;
        let max = worker.max_deliveries as u64;
        self.shared.metrics.batch_size.observe(batch.entries.len() as f64);
        let sorted = triage::sort(batch, max, &worker.event_field);
        let mut dead = sorted.malformed;
        // Past their lone try: an event already committed (its consumer died before the
        // acknowledgement) is a duplicate; only the others are dead-lettered.
        let committed = match self.already_written(&sorted.over_budget) {
            Ok(committed) => committed,
            Err(last_error) => return self.abandon(batch, &last_error),
        };
        let spent: Vec<_> =
            sorted.over_budget.iter().map(|(e, _)| *e).filter(|e| !committed.contains(&e.id)).collect();
        dead.extend(self.acker.over_budget(&batch.stream, &spent));
        let mut outcome = match self.write(&batch.stream, &sorted.events) {
            Ok(outcome) => outcome,
            Err(last_error) => return self.abandon(batch, &last_error),
        };
        let n = sorted.events.len();
        for (i, event) in sorted.alone.iter().enumerate() {
            log::info!(
                "entry {} on {}: delivered more than {max} times; trying it once alone before dead-lettering",
                event.entry_id,
                batch.stream
            );
            match self.write(&batch.stream, std::slice::from_ref(event)) {
                Ok(alone) => outcome.merge(alone, n + i),
                Err(last_error) => return self.abandon(batch, &last_error),
            }
        }
        let all: Vec<&Event> = sorted.events.iter().chain(&sorted.alone).collect();
        dead.extend(outcome.dead_letters(batch, &all));
        let c = &self.shared.counters;
        Counters::add(&c.inserted, outcome.written.inserted);
        Counters::add(&c.duplicates, outcome.written.duplicates + committed.len() as u64);
        Counters::add(&c.handler_errors, outcome.written.handler_errors);
        Counters::add(&c.reused_ids, outcome.reused());
        let ids: Vec<&str> = batch.entries.iter().map(|e| e.id.as_str()).collect();
        for event_type in &outcome.written.failed_types {
            self.shared.metrics.handler_failed(event_type);
        }
        if self.acker.acknowledge(&batch.stream, &ids, &dead) {
            Counters::add(&c.processed, batch.entries.len() as u64);
            Counters::add(&c.dead_lettered, dead.len() as u64);
            for d in &dead {
                self.shared.metrics.dead_lettered(&batch.stream, &d.reason);
            }
            self.acker.forget_errors(batch);
        }
    }

    /// Leaves `batch` pending in Redis at shutdown, recording why. (Part of it may be
    /// committed already; those entries come back as duplicates.)
    fn abandon(&mut self, batch: &Batch, last_error: &WriteFault) {
        log::warn!(
            stream = &*batch.stream;
            "stopping with a batch of {} entries of {} not finished ({last_error}); they stay pending in Redis",
            batch.entries.len(),
            batch.stream
        );
        self.acker.record_errors(batch, &format!("not finished before shutdown: {last_error}"));
    }

    /// Entry ids of `entries` whose event is already in `events`.
    fn already_written(&self, entries: &[(&Entry, Option<String>)]) -> Result<Vec<String>, WriteFault> {
        let parsed: Vec<(&str, &str)> =
            entries.iter().filter_map(|(e, id)| Some((id.as_deref()?, e.id.as_str()))).collect();
        if parsed.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = parsed.iter().map(|(id, _)| *id).collect();
        let stored =
            self.with_postgres("duplicate check", ids.len(), |client| batch::stored_ids(client, &ids))?;
        Ok(parsed
            .into_iter()
            .filter(|(id, _)| stored.iter().any(|s| s == id))
            .map(|(_, e)| e.to_string())
            .collect())
    }

    /// Writes `events` in one transaction (isolating rejected rows and panicking handlers),
    /// retrying while Postgres is unreachable, conflicts or refuses the statement. Fails with
    /// the last error only if shutdown came first (then nothing is committed that the caller
    /// would acknowledge).
    fn write(&self, stream: &str, events: &[Event]) -> Result<Outcome, WriteFault> {
        if events.is_empty() {
            return Ok(Outcome::default());
        }
        // The time of the attempt that committed, not of the retries and waits before it.
        let mut took = Duration::ZERO;
        let outcome = self.with_postgres("batch write", events.len(), |client| {
            let started = Instant::now();
            let written = triage::write_isolating(client, &self.registry, stream, events);
            took = started.elapsed();
            written
        })?;
        self.shared.counters.committed();
        let metrics = &self.shared.metrics;
        metrics.batch_write_seconds.observe(took.as_secs_f64());
        // Latency of the events this commit wrote. A batch holding redeliveries is left out
        // whole: their commit was in an earlier life, and which rows are new is not
        // transferred back (only the handled ones are). Dead-lettered events are left out.
        if outcome.written.duplicates == 0 {
            let now = jiff::Timestamp::now();
            for (i, e) in events.iter().enumerate() {
                if outcome.failed.iter().any(|f| f.index == i) {
                    continue;
                }
                if let Some(at) = crate::event::entry_timestamp(&e.entry_id) {
                    metrics.event_latency_seconds.observe(now.duration_since(at).as_secs_f64());
                }
            }
        }
        Ok(outcome)
    }

    /// Runs `f` (`what`, about `n` events) on a pooled connection until it succeeds, retrying
    /// each kind of fault its own way; fails only if shutdown came first.
    fn with_postgres<T>(
        &self,
        what: &'static str,
        n: usize,
        mut f: impl FnMut(&mut PooledClient) -> Result<T, postgres::Error>,
    ) -> Result<T, WriteFault> {
        let shared = &self.shared;
        // A pooled connection may have served before, so may be stale.
        let mut staleness = Staleness::new(false);
        let mut issued = std::time::Instant::now();
        let attempt = || {
            issued = std::time::Instant::now();
            let timeout = shared.pool_timeout().ok_or(Failure::Fatal(WriteFault::Deadline))?;
            let mut client = self
                .pool
                .get_timeout(timeout)
                .map_err(|e| Failure::Wait(WriteFault::Unreachable(SinkError::Connect(e))))?;
            let _running = shared.queries.register(client.cancel_token());
            f(&mut client).map_err(|source| {
                match fault::classify(&source) {
                    Fault::Conflict => Failure::Shortly(WriteFault::Conflict(source)),
                    Fault::Unreachable if source.code().is_none() && staleness.retry_at_once() => {
                        // The connection itself failed: Postgres may have restarted since this
                        // pooled connection was opened (the pool discards it now): one
                        // immediate retry on a new one.
                        log::debug!("{what} failed on a pooled connection ({source}); retrying");
                        Failure::Again
                    }
                    Fault::Unreachable => {
                        Failure::Wait(WriteFault::Unreachable(SinkError::Query { op: what, source }))
                    }
                    // Rejected rows are isolated by triage; one reaching here is not a row's.
                    Fault::StatementRefused | Fault::RejectedRow => {
                        Failure::Wait(WriteFault::Refused(source))
                    }
                }
            })
        };
        let on_wait = |e: &WriteFault, _, _| {
            shared.heartbeats.beat(self.beat); // waiting on purpose
            match e {
                // At shutdown, a statement cancelled at the stop deadline is no outage.
                WriteFault::Unreachable(e) if shared.stopping() => log::debug!("{e}"),
                WriteFault::Unreachable(e) => shared.postgres_outage.fault("worker", e),
                WriteFault::Conflict(e) => {
                    log::debug!("{what} conflicted ({}); retrying shortly", fault::describe(e))
                }
                WriteFault::Refused(e) if shared.statement_refused.begin() => log::error!(
                    "postgres refused the {what} of {n} events: {}: the schema or permissions need \
                     attention; retrying with backoff, nothing is acknowledged meanwhile",
                    fault::describe(e)
                ),
                WriteFault::Refused(e) => log::debug!("postgres still refuses: {}", fault::describe(e)),
                WriteFault::Deadline => {}
            }
        };
        match retry(shared.stop_flag(), attempt, on_wait) {
            Ok(outcome) => {
                shared.postgres_outage.cleared(issued);
                if let Some(lasted) = shared.statement_refused.end() {
                    log::info!("postgres accepts the writes again after {:.1}s", lasted.as_secs_f64());
                }
                Ok(outcome)
            }
            Err(GaveUp::Stopped(e) | GaveUp::Fatal(e)) => Err(e),
        }
    }
}

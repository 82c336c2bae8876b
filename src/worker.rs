//! A worker thread: takes a batch from the channel, writes it to Postgres in one transaction,
//! then acknowledges it in Redis in one call.
//!
//! The path of one batch, top to bottom:
//! 1. parse every entry ([`event::parse`]); a malformed one becomes a dead letter;
//! 2. [`Worker::write`]: one transaction, one set-based insert, handlers on new events under
//!    savepoints, commit; retried with backoff while Postgres is unreachable; a row Postgres
//!    rejects is isolated by splitting the batch and becomes a dead letter;
//! 3. [`Worker::acknowledge`]: one call acknowledging every entry and dead-lettering the bad
//!    ones, only after the commit; retried while Redis is unreachable.
//!
//! Invariant: nothing is acknowledged that is not committed to Postgres or written to the
//! dead-letter stream. A batch abandoned at shutdown stays pending in Redis.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crossbeam_channel::Receiver;
use postgres::Transaction;

use crate::event::{self, Entry, Event};
use crate::handlers::{Handler, HandlerError, Registry};
use crate::retry::{Backoff, Outage, sleep_unless};
use crate::stats::Counters;
use crate::store::{self, Fault, Pool, PooledClient, StatementCache, StoreError};
use crate::stream::{self, AckContext, Batch, DeadLetter};

/// Everything the workers share.
pub struct WorkerContext {
    pub pool: Pool,
    pub redis_url: String,
    pub group: String,
    pub consumer: String,
    pub event_field: String,
    /// Deliveries after which an entry is dead-lettered unprocessed.
    pub max_deliveries: u64,
    /// One transaction and one acknowledgement per event (the benchmark's naive baseline).
    pub per_event: bool,
    pub registry: Registry,
    pub counters: Arc<Counters>,
    pub stop: Arc<AtomicBool>,
    pub postgres_outage: Arc<Outage>,
    pub redis_outage: Arc<Outage>,
}

/// Runs one worker until the channel is closed and drained. A panic while processing a batch
/// is recorded as its entries' last error (so the dead letter written when their delivery
/// budget runs out says why), then ends the thread, which stops the process for a restart.
pub fn run(ctx: Arc<WorkerContext>, rx: Receiver<Batch>) {
    let per_event = ctx.per_event;
    let mut worker = Worker { ctx, redis: None };
    for batch in rx.iter() {
        for unit in units(batch, per_event) {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.process(&unit)));
            if let Err(panic) = outcome {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                worker.redis = None; // its state is unknown after a panic
                worker.record_errors(&unit, &format!("worker panicked: {message}"));
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// What one transaction and one acknowledgement cover: the whole batch, or (the benchmark's
/// naive baseline) each entry on its own.
fn units(batch: Batch, per_event: bool) -> Vec<Batch> {
    if !per_event {
        return vec![batch];
    }
    let stream = batch.stream;
    batch.entries.into_iter().map(|e| Batch { stream: Arc::clone(&stream), entries: vec![e] }).collect()
}

struct Worker {
    ctx: Arc<WorkerContext>,
    /// This worker's own Redis connection for acknowledgements; `None` until (re)connected.
    redis: Option<redis::Connection>,
}

/// The outcome of writing a batch's events.
#[derive(Debug, Default)]
struct Written {
    inserted: u64,
    duplicates: u64,
    handler_errors: u64,
    /// Events Postgres rejected (index into the events slice, Postgres's message).
    rejected: Vec<(usize, String)>,
}

const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(3);

impl Worker {
    fn process(&mut self, batch: &Batch) {
        let mut events = Vec::with_capacity(batch.entries.len());
        let mut dead = Vec::new();
        let mut over_budget = Vec::new();
        for entry in &batch.entries {
            if entry.deliveries > self.ctx.max_deliveries {
                over_budget.push(entry);
                continue;
            }
            match event::parse(&batch.stream, entry, &self.ctx.event_field) {
                Ok(e) => events.push(e),
                Err(m) => {
                    log::warn!("malformed entry {} on {}: {m}; dead-lettering", entry.id, batch.stream);
                    dead.push(DeadLetter { entry, reason: m.kind().into(), error: m.to_string() });
                }
            }
        }
        dead.extend(self.over_budget(&batch.stream, &over_budget));
        let written = match self.write(&batch.stream, &events) {
            Ok(w) => w,
            Err(last_error) => {
                log::warn!(
                    "stopping with a batch of {} entries of {} unwritten; they stay pending in Redis",
                    batch.entries.len(),
                    batch.stream
                );
                self.record_errors(batch, &format!("not written before shutdown: {last_error}"));
                return;
            }
        };
        for (index, error) in &written.rejected {
            let e = &events[*index];
            log::warn!(
                "postgres rejected event {} (entry {} on {}): {error}; dead-lettering",
                e.id,
                e.entry_id,
                batch.stream
            );
            if let Some(entry) = batch.entries.iter().find(|en| en.id == e.entry_id) {
                dead.push(DeadLetter { entry, reason: "rejected by postgres".into(), error: error.clone() });
            }
        }
        let c = Arc::clone(&self.ctx.counters);
        Counters::add(&c.inserted, written.inserted);
        Counters::add(&c.duplicates, written.duplicates);
        Counters::add(&c.handler_errors, written.handler_errors);
        let ids: Vec<&str> = batch.entries.iter().map(|e| e.id.as_str()).collect();
        if self.acknowledge(&batch.stream, &ids, &dead) {
            Counters::add(&c.processed, batch.entries.len() as u64);
            Counters::add(&c.dead_lettered, dead.len() as u64);
            self.forget_errors(batch);
        }
    }

    /// Dead letters for entries delivered more often than the budget allows, carrying the
    /// last error recorded for each (by this or another process).
    fn over_budget<'b>(&mut self, stream: &str, entries: &[&'b Entry]) -> Vec<DeadLetter<'b>> {
        if entries.is_empty() {
            return Vec::new();
        }
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let last = self
            .redis_connection()
            .and_then(|con| stream::last_errors(con, stream, &ids).ok())
            .unwrap_or_default();
        entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let last_error = last.get(i).cloned().flatten().unwrap_or_else(|| {
                    "none recorded (each consumer it was delivered to stopped before finishing it)".into()
                });
                let error = format!(
                    "delivered {} times (STREAMSINK_MAX_DELIVERIES={}); last error: {last_error}",
                    entry.deliveries, self.ctx.max_deliveries
                );
                log::warn!("entry {} on {stream}: {error}; dead-lettering", entry.id);
                DeadLetter { entry, reason: "max deliveries exceeded".into(), error }
            })
            .collect()
    }

    /// Best effort: remembers `error` as the last error of the batch's entries.
    fn record_errors(&mut self, batch: &Batch, error: &str) {
        let ids: Vec<&str> = batch.entries.iter().map(|e| e.id.as_str()).collect();
        if let Some(con) = self.redis_connection() {
            if let Err(e) = stream::record_errors(con, &batch.stream, &ids, error) {
                log::debug!("{e}");
            }
        }
    }

    /// Best effort: drops recorded errors of redelivered entries once they are acknowledged.
    fn forget_errors(&mut self, batch: &Batch) {
        let ids: Vec<&str> =
            batch.entries.iter().filter(|e| e.deliveries > 1).map(|e| e.id.as_str()).collect();
        if ids.is_empty() {
            return;
        }
        if let Some(con) = self.redis_connection() {
            if let Err(e) = stream::forget_errors(con, &batch.stream, &ids) {
                log::debug!("{e}");
            }
        }
    }

    /// This worker's Redis connection, connecting once if there is none.
    fn redis_connection(&mut self) -> Option<&mut redis::Connection> {
        if self.redis.is_none() {
            match stream::connect(&self.ctx.redis_url, stream::COMMAND_TIMEOUT) {
                Ok(con) => self.redis = Some(con),
                Err(e) => {
                    self.ctx.redis_outage.fault("worker", &e);
                    return None;
                }
            }
        }
        self.redis.as_mut()
    }

    /// Writes `events` in one transaction, retrying while Postgres is unreachable. Fails with
    /// the last error only if shutdown came first (nothing committed, nothing to acknowledge).
    fn write(&self, stream: &str, events: &[Event]) -> Result<Written, String> {
        if events.is_empty() {
            return Ok(Written::default());
        }
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        let mut stale_retried = false;
        loop {
            let attempt = self.ctx.pool.get().map_err(StoreError::Connect).and_then(|mut client| {
                let mut written = Written::default();
                self.write_isolating(&mut client, stream, events, 0, &mut written)
                    .map(|()| written)
                    .map_err(|source| StoreError::Query { op: "batch write", source })
            });
            match attempt {
                Ok(written) => {
                    self.ctx.postgres_outage.cleared();
                    return Ok(written);
                }
                Err(StoreError::Query { source, .. }) if store::is_conflict(&source) => {
                    // A deadlock or serialization failure with a concurrent batch: retry now.
                    log::debug!("batch write conflicted ({}); retrying", store::describe(&source));
                }
                Err(StoreError::Query { source, .. }) if source.code().is_none() && !stale_retried => {
                    // The pooled connection may just be stale (Postgres restarted since it was
                    // opened; the pool discards it now): one immediate retry on a new one.
                    stale_retried = true;
                    log::debug!("batch write failed on a pooled connection ({source}); retrying");
                }
                Err(e) => {
                    self.ctx.postgres_outage.fault("worker", &e);
                    if !sleep_unless(&self.ctx.stop, backoff.next_delay()) {
                        return Err(e.to_string());
                    }
                }
            }
        }
    }

    /// Commits `events`; when Postgres rejects the data, splits the batch in halves until the
    /// rejected event stands alone, so its neighbours still commit. `offset` is the position of
    /// `events` in the batch, to report rejected events by index.
    fn write_isolating(
        &self,
        client: &mut PooledClient,
        stream: &str,
        events: &[Event],
        offset: usize,
        written: &mut Written,
    ) -> Result<(), postgres::Error> {
        match self.write_once(client, stream, events) {
            Ok(w) => {
                written.inserted += w.inserted;
                written.duplicates += w.duplicates;
                written.handler_errors += w.handler_errors;
                Ok(())
            }
            Err(e) if store::classify(&e) == Fault::Data => {
                if events.len() == 1 {
                    written.rejected.push((offset, store::describe(&e)));
                    return Ok(());
                }
                let mid = events.len() / 2;
                self.write_isolating(client, stream, &events[..mid], offset, written)?;
                self.write_isolating(client, stream, &events[mid..], offset + mid, written)
            }
            Err(e) => Err(e),
        }
    }

    /// One transaction: insert, run handlers for the new events, commit.
    fn write_once(
        &self,
        client: &mut PooledClient,
        stream: &str,
        events: &[Event],
    ) -> Result<Written, postgres::Error> {
        let mut statements = StatementCache::take(client);
        let written = self.write_once_with(client, &mut statements, stream, events)?;
        statements.put_back(client); // only after success: an error may have left one stale
        Ok(written)
    }

    fn write_once_with(
        &self,
        client: &mut PooledClient,
        statements: &mut StatementCache,
        stream: &str,
        events: &[Event],
    ) -> Result<Written, postgres::Error> {
        let mut tx = client.transaction()?;
        let handled_types = self.ctx.registry.types();
        let inserted = store::insert_events(&mut tx, statements, stream, events, &handled_types)?;
        let new_ids = inserted.to_handle;
        let mut written = Written {
            inserted: inserted.count,
            duplicates: events.len() as u64 - inserted.count,
            ..Written::default()
        };
        // Each handler gets one call with all its new events, in stream order; an id repeated
        // in the batch is a duplicate and is seen once.
        let mut seen: HashSet<&str> = HashSet::with_capacity(new_ids.len());
        let mut calls: Vec<(&Arc<dyn Handler>, Vec<&Event>)> = Vec::new();
        for e in events {
            let Some(handler) = self.ctx.registry.get(&e.event_type) else { continue };
            if !new_ids.contains(&e.id) || !seen.insert(e.id.as_str()) {
                continue;
            }
            match calls.iter_mut().find(|(h, _)| Arc::ptr_eq(h, handler)) {
                Some((_, evs)) => evs.push(e),
                None => calls.push((handler, vec![e])),
            }
        }
        for (handler, evs) in calls {
            written.handler_errors += run_handler(&mut tx, statements, handler.as_ref(), &evs)?;
        }
        tx.commit()?;
        Ok(written)
    }

    /// Acknowledges `ids` and dead-letters `dead` in one call, retrying while Redis is
    /// unreachable. Returns false if it gave up (shutdown, or Redis refused the command);
    /// the entries then stay pending and are redelivered, as duplicates, later.
    fn acknowledge(&mut self, stream: &str, ids: &[&str], dead: &[DeadLetter<'_>]) -> bool {
        let ctx = Arc::clone(&self.ctx);
        let ack_ctx = AckContext { group: &ctx.group, consumer: &ctx.consumer };
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        let mut fresh = self.redis.is_none();
        loop {
            fresh |= self.redis.is_none();
            let Some(con) = self.redis_connection() else {
                if !sleep_unless(&ctx.stop, backoff.next_delay()) {
                    return false;
                }
                continue;
            };
            match stream::ack(con, &ack_ctx, stream, ids, dead) {
                Ok(acked) => {
                    ctx.redis_outage.cleared();
                    Counters::add(&ctx.counters.acknowledged, acked);
                    return true;
                }
                Err(e) if e.is_connection() => {
                    self.redis = None;
                    if !fresh {
                        // This connection may just be stale (Redis restarted since it was
                        // opened): one immediate reconnect before calling it an outage.
                        fresh = true;
                        continue;
                    }
                    ctx.redis_outage.fault("worker", &e);
                    if !sleep_unless(&ctx.stop, backoff.next_delay()) {
                        return false;
                    }
                }
                Err(e) => {
                    log::error!("{e}; {} entries stay pending and will be redelivered", ids.len());
                    return false;
                }
            }
        }
    }
}

/// Runs `handler` on `events` under a savepoint. If it fails, retries each event under its own
/// savepoint, so one failing event does not undo the others; each failure is logged with the
/// event's id and type. Returns how many events failed. Infrastructure errors are returned, to
/// retry the whole batch.
fn run_handler(
    tx: &mut Transaction<'_>,
    statements: &mut StatementCache,
    handler: &dyn Handler,
    events: &[&Event],
) -> Result<u64, postgres::Error> {
    let mut sp = tx.savepoint("handler")?;
    match handler.handle(&mut sp, statements, events) {
        Ok(()) => {
            sp.commit()?;
            return Ok(0);
        }
        Err(e) => {
            infrastructure(e)?;
            sp.rollback()?;
        }
    }
    let mut failures = 0;
    for event in events {
        let mut sp = tx.savepoint("handler")?;
        match handler.handle(&mut sp, statements, &[*event]) {
            Ok(()) => sp.commit()?,
            Err(e) => {
                let e = infrastructure(e)?;
                log::error!("handler failed on event {} (type {}): {e}", event.id, event.event_type);
                sp.rollback()?;
                failures += 1;
            }
        }
    }
    Ok(failures)
}

/// Passes a handler's own error through; turns a lost connection or server fault into `Err`,
/// which is not the event's fault.
fn infrastructure(e: HandlerError) -> Result<HandlerError, postgres::Error> {
    match e {
        HandlerError::Db(db) if store::is_infrastructure(&db) => Err(db),
        other => Ok(other),
    }
}

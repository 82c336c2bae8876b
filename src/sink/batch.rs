//! One batch in one transaction: the set-based insert (a binary COPY; when the batch holds a
//! redelivery, a lookup of its ids and a COPY of the new ones; INSERT … ON CONFLICT should
//! another writer store one of them meanwhile), then each handler once on the batch's new
//! events under a savepoint, then COMMIT.
//!
//! Invariants: handlers see new events only (a redelivered event is a duplicate by primary key
//! and runs nothing), each id once per batch; a handler's failure rolls back its own effect to
//! its savepoint and nothing else; an infrastructure error aborts the whole transaction so
//! the caller can retry the batch.

use std::collections::HashSet;
use std::sync::Arc;

use postgres::Transaction;

use super::fault;
use super::insert::{Inserted, STORED_IDS, copy_events, copy_new, insert_events, is_duplicate, reused_ids};
use super::pool::PooledClient;
use super::statements::StatementCache;
use crate::event::Event;
use crate::handlers::{Handler, HandlerError, Registry};

/// What writing a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    /// Events newly inserted.
    pub inserted: u64,
    /// Events already present (redeliveries, repeated ids): nothing changed.
    pub duplicates: u64,
    /// Events whose handler failed (row kept, handler effect rolled back).
    pub handler_errors: u64,
    /// The type of each of those events, for the metric counted by type.
    pub failed_types: Vec<String>,
}

impl std::ops::AddAssign for Written {
    fn add_assign(&mut self, other: Written) {
        self.inserted += other.inserted;
        self.duplicates += other.duplicates;
        self.handler_errors += other.handler_errors;
        self.failed_types.extend(other.failed_types);
    }
}

/// What writing a batch did, and which of its events could not be written.
#[derive(Debug, Default)]
pub(crate) struct Wrote {
    pub written: Written,
    /// Positions of events whose id is stored with other content: not written, not handled.
    pub reused: Vec<usize>,
}

/// Why a batch was not committed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// A statement failed; [`fault::classify`] says whose fault it was.
    #[error("{}", fault::describe(.0))]
    Db(#[from] postgres::Error),
    /// A handler panicked (with this message); the transaction was rolled back.
    #[error("handler panicked: {0}")]
    HandlerPanicked(String),
}

/// Writes `events` of `stream` in one transaction and commits it. On error nothing is
/// committed.
pub(crate) fn write(
    client: &mut PooledClient,
    registry: &Registry,
    stream: &str,
    events: &[Event],
) -> Result<Wrote, WriteError> {
    let mut statements = StatementCache::take(client);
    let mut path = Path::take(client);
    let wrote = write_with(client, &mut statements, &mut path, registry, stream, events);
    // Kept whatever happened: the halves of a batch split after an error are still redeliveries.
    path.put_back(client);
    let wrote = wrote?;
    statements.put_back(client); // only after success: an error may have left one stale
    Ok(wrote)
}

/// Whether a connection's next batch tries a blind COPY first. Redeliveries come in runs (a
/// consumer's pending entries after a crash, a producer retrying a range), and a COPY that meets
/// one is wasted work: after a batch held a duplicate, the next [`Path::AFTER_DUPLICATE`]
/// batches on this connection look their ids up first (`copy_new`), and the blind COPY is tried
/// again once that many in a row held none.
#[derive(Debug, Default, Clone, Copy)]
struct Path {
    /// Batches still to write by lookup and COPY before trying the blind COPY again.
    look_up_next: u32,
}

impl Path {
    const AFTER_DUPLICATE: u32 = 16;

    fn take(client: &mut PooledClient) -> Path {
        r2d2::PooledConnection::extensions_mut(client).remove::<Path>().unwrap_or_default()
    }

    fn put_back(self, client: &mut PooledClient) {
        r2d2::PooledConnection::extensions_mut(client).insert(self);
    }

    /// True when the next batch should be copied without looking its ids up.
    fn copy_all_next(self) -> bool {
        self.look_up_next == 0
    }

    /// Records what the batch just written held.
    fn wrote(&mut self, held_duplicates: bool) {
        self.look_up_next =
            if held_duplicates { Path::AFTER_DUPLICATE } else { self.look_up_next.saturating_sub(1) };
    }
}

fn write_with(
    client: &mut PooledClient,
    statements: &mut StatementCache,
    path: &mut Path,
    registry: &Registry,
    stream: &str,
    events: &[Event],
) -> Result<Wrote, WriteError> {
    let handled_types = registry.types();
    let mut tx = client.transaction()?;
    // COPY first. A batch holding a redelivery (rare) fails it, and is redone from the start of
    // a new transaction (the failed COPY aborted this one): its ids looked up, the new ones
    // copied; and should that COPY meet an id stored meanwhile, with ON CONFLICT.
    let mut wrote: Option<(Inserted, Option<Vec<usize>>)> = None;
    if path.copy_all_next() {
        match copy_events(&mut tx, stream, events) {
            Ok(()) => wrote = Some((Inserted::of_new(events.iter(), &handled_types), Some(Vec::new()))),
            Err(e) if is_duplicate(&e) => {
                tx.rollback()?;
                tx = client.transaction()?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if wrote.is_none() {
        match copy_new(&mut tx, statements, stream, events, &handled_types)? {
            Some(copied) => wrote = Some((copied.inserted, Some(copied.skipped))),
            None => {
                tx.rollback()?;
                tx = client.transaction()?;
            }
        }
    }
    // `None` as the positions to check: every event may be an id reused with other content.
    let (inserted, suspects) = match wrote {
        Some(w) => w,
        None => (insert_events(&mut tx, statements, stream, events, &handled_types)?, None),
    };
    path.wrote(inserted.count < events.len() as u64);
    let new_ids = inserted.to_handle;
    let reused = match suspects {
        _ if inserted.count == events.len() as u64 => Vec::new(),
        None => reused_ids(&mut tx, statements, &events.iter().collect::<Vec<_>>())?,
        Some(positions) => {
            let suspects: Vec<&Event> = positions.iter().map(|&i| &events[i]).collect();
            reused_ids(&mut tx, statements, &suspects)?.into_iter().map(|p| positions[p]).collect()
        }
    };
    let mut written = Written {
        inserted: inserted.count,
        duplicates: (events.len() as u64 - inserted.count).saturating_sub(reused.len() as u64),
        handler_errors: 0,
        failed_types: Vec::new(),
    };
    // Each handler gets one call with all its new events, in stream order; an id repeated
    // in the batch is a duplicate and is seen once.
    let mut seen: HashSet<&str> = HashSet::with_capacity(new_ids.len());
    let mut calls: Vec<(&Arc<dyn Handler>, Vec<&Event>)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let Some(handler) = registry.get(&e.event_type) else { continue };
        if reused.binary_search(&i).is_ok() {
            continue;
        }
        if !new_ids.contains(&e.id) || !seen.insert(e.id.as_str()) {
            continue;
        }
        match calls.iter_mut().find(|(h, _)| Arc::ptr_eq(h, handler)) {
            Some((_, evs)) => evs.push(e),
            None => calls.push((handler, vec![e])),
        }
    }
    for (handler, evs) in calls {
        let failed = run_handler(&mut tx, statements, handler.as_ref(), stream, &evs)?;
        written.handler_errors += failed.len() as u64;
        written.failed_types.extend(failed);
    }
    tx.commit()?;
    Ok(Wrote { written, reused })
}

/// Which of `ids` are stored in `events`.
pub(crate) fn stored_ids(client: &mut PooledClient, ids: &[&str]) -> Result<Vec<String>, postgres::Error> {
    let rows = client.query(STORED_IDS, &[&ids])?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Runs `handler` on `events` under a savepoint. If it fails, retries each event under its own
/// savepoint, so one failing event does not undo the others; each failure is logged with the
/// event's id and type. Returns the types of the events that failed. Infrastructure errors are returned, to
/// retry the whole batch; a panic is returned as [`WriteError::HandlerPanicked`], for the
/// caller to isolate (the transaction rolls back as it is dropped).
fn run_handler(
    tx: &mut Transaction<'_>,
    statements: &mut StatementCache,
    handler: &dyn Handler,
    stream: &str,
    events: &[&Event],
) -> Result<Vec<String>, WriteError> {
    let mut sp = tx.savepoint("handler")?;
    match guarded(|| handler.handle(&mut sp, statements, events))? {
        Ok(()) => {
            sp.commit()?;
            return Ok(Vec::new());
        }
        Err(e) => {
            infrastructure(e)?;
            sp.rollback()?;
        }
    }
    let mut failed = Vec::new();
    for event in events {
        let mut sp = tx.savepoint("handler")?;
        match guarded(|| handler.handle(&mut sp, statements, &[*event]))? {
            Ok(()) => sp.commit()?,
            Err(e) => {
                let e = infrastructure(e)?;
                log::error!(
                    stream = stream, entry_id = event.entry_id.as_str(), event_id = event.id.as_str();
                    "handler failed on event {} (type {}): {e}", event.id, event.event_type
                );
                sp.rollback()?;
                failed.push(event.event_type.clone());
            }
        }
    }
    Ok(failed)
}

/// Runs a handler, turning its panic into [`WriteError::HandlerPanicked`]. Only the handler's
/// own code is guarded: a panic in streamsink's code is a bug, left to end the worker.
fn guarded(f: impl FnOnce() -> Result<(), HandlerError>) -> Result<Result<(), HandlerError>, WriteError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|panic| WriteError::HandlerPanicked(panic_message(panic.as_ref())))
}

/// The text a panic was raised with.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Passes a handler's own error (and a row its statement rejects) through; turns a lost
/// connection, a conflict or a refused statement into `Err`, which is not the event's fault:
/// the whole batch is retried, and a refused statement (permissions, a missing column) is
/// reported as such, with nothing acknowledged, rather than dropping the handler's effects.
fn infrastructure(e: HandlerError) -> Result<HandlerError, postgres::Error> {
    match e {
        HandlerError::Db(db) if fault::classify(&db) != fault::Fault::RejectedRow => Err(db),
        other => Ok(other),
    }
}

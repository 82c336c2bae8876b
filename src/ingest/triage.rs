//! Sorting a batch before and while it is written: entries over their delivery budget and
//! malformed entries become dead letters; events Postgres rejects, and events whose handler
//! panics, are isolated by splitting the batch in halves until the failing one stands alone,
//! so its neighbours still commit.

use crate::broker::Batch;
use crate::broker::ack::DeadLetter;
use crate::event::{self, Entry, Event};
use crate::handlers::Registry;
use crate::sink::batch::{self, WriteError, Written};
use crate::sink::fault::{self, Fault};
use crate::sink::pool::PooledClient;

/// A batch sorted by what happens to each entry next.
pub(super) struct Sorted<'b> {
    /// Parsed events, in stream order: to be written together.
    pub events: Vec<Event>,
    /// Events of entries delivered once more than the budget allows: each is tried once
    /// alone, so that an entry that brought down its batch cannot do it again.
    pub alone: Vec<Event>,
    /// Malformed entries, with why: to be dead-lettered.
    pub malformed: Vec<DeadLetter<'b>>,
    /// Entries delivered more often still (their lone try did not finish either), with their
    /// event's id if they parse: dead-lettered unwritten, unless that id is already stored.
    pub over_budget: Vec<(&'b Entry, Option<String>)>,
}

/// Sorts `batch` by parsing each entry, then by its delivery count.
pub(super) fn sort<'b>(batch: &'b Batch, max_deliveries: u64, event_field: &str) -> Sorted<'b> {
    let mut sorted = Sorted {
        events: Vec::with_capacity(batch.entries.len()),
        alone: Vec::new(),
        malformed: Vec::new(),
        over_budget: Vec::new(),
    };
    for entry in &batch.entries {
        let parsed = event::parse(&batch.stream, entry, event_field);
        if entry.deliveries > max_deliveries + 1 {
            sorted.over_budget.push((entry, parsed.ok().map(|e| e.id)));
            continue;
        }
        match parsed {
            Ok(e) if entry.deliveries > max_deliveries => sorted.alone.push(e),
            Ok(e) => sorted.events.push(e),
            Err(m) => {
                log::warn!(
                    stream = &*batch.stream, entry_id = entry.id.as_str();
                    "malformed entry {} on {}: {m}; dead-lettering", entry.id, batch.stream
                );
                sorted.malformed.push(DeadLetter { entry, reason: m.kind().into(), error: m.to_string() });
            }
        }
    }
    sorted
}

/// Why one event could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failed {
    /// Position in the events written.
    pub index: usize,
    /// The dead letter's `dlq_reason`.
    pub reason: &'static str,
    pub error: String,
}

/// Dead-letter reason of an event Postgres rejects.
pub(super) const REJECTED: &str = "rejected by postgres";
/// Dead-letter reason of an event whose handler panics.
pub(super) const PANICKED: &str = "handler panicked";
/// Dead-letter reason of an event whose id is stored with other content.
pub(super) const REUSED: &str = "id reused with different content";

/// What writing a batch's events did, failed events included.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub written: Written,
    /// Events that cannot be written, by position among the events written.
    pub failed: Vec<Failed>,
}

impl Outcome {
    /// Adds `other`, an outcome of the events from position `offset` on.
    pub(super) fn merge(&mut self, other: Outcome, offset: usize) {
        self.written += other.written;
        self.failed.extend(other.failed.into_iter().map(|f| Failed { index: f.index + offset, ..f }));
    }

    /// Events whose id is stored with other content.
    pub(super) fn reused(&self) -> u64 {
        self.failed.iter().filter(|f| f.reason == REUSED).count() as u64
    }

    /// Dead letters for the failed events, found among `batch`'s entries.
    pub(super) fn dead_letters<'b>(&self, batch: &'b Batch, events: &[&Event]) -> Vec<DeadLetter<'b>> {
        let mut dead = Vec::with_capacity(self.failed.len());
        for f in &self.failed {
            let e = events[f.index];
            log::warn!(
                stream = &*batch.stream, entry_id = e.entry_id.as_str(), event_id = e.id.as_str();
                "event {} (entry {} on {}): {}: {}; dead-lettering",
                e.id,
                e.entry_id,
                batch.stream,
                f.reason,
                f.error
            );
            if let Some(entry) = batch.entries.iter().find(|en| en.id == e.entry_id) {
                dead.push(DeadLetter { entry, reason: f.reason.into(), error: f.error.clone() });
            }
        }
        dead
    }
}

/// Commits `events`, isolating the rows Postgres rejects and the events whose handler panics.
/// The worker's write path, which `streamsink backfill` shares. Any other error is returned (nothing of the failing part committed) for the caller to
/// retry: committed halves then come back as duplicates and change nothing.
pub(crate) fn write_isolating(
    client: &mut PooledClient,
    registry: &Registry,
    stream: &str,
    events: &[Event],
) -> Result<Outcome, postgres::Error> {
    let mut outcome = Outcome::default();
    split(client, registry, stream, events, 0, &mut outcome)?;
    Ok(outcome)
}

/// `offset` is the position of `events` in the whole batch, to report failed events by index.
fn split(
    client: &mut PooledClient,
    registry: &Registry,
    stream: &str,
    events: &[Event],
    offset: usize,
    outcome: &mut Outcome,
) -> Result<(), postgres::Error> {
    let failure = match batch::write(client, registry, stream, events) {
        Ok(wrote) => {
            outcome.written += wrote.written;
            for i in wrote.reused {
                let id = events.get(i).map_or("?", |e| e.id.as_str());
                let error = format!("event id '{id}' is stored with another type, timestamp or data");
                outcome.failed.push(Failed { index: offset + i, reason: REUSED, error });
            }
            return Ok(());
        }
        Err(WriteError::Db(e)) if fault::classify(&e) == Fault::RejectedRow => {
            (REJECTED, fault::describe(&e))
        }
        Err(WriteError::Db(e)) => return Err(e),
        Err(WriteError::HandlerPanicked(message)) => (PANICKED, message),
    };
    if events.len() == 1 {
        outcome.failed.push(Failed { index: offset, reason: failure.0, error: failure.1 });
        return Ok(());
    }
    if failure.0 == PANICKED {
        log::warn!("a handler panicked in a batch of {} events ({}); isolating it", events.len(), failure.1);
    }
    let mid = events.len() / 2;
    split(client, registry, stream, &events[..mid], offset, outcome)?;
    split(client, registry, stream, &events[mid..], offset + mid, outcome)
}

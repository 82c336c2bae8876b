//! Sorting a batch before and while it is written: entries over their delivery budget and
//! malformed entries become dead letters; events Postgres rejects are isolated by splitting
//! the batch in halves until the rejected one stands alone, so its neighbours still commit.

use crate::broker::Batch;
use crate::broker::ack::DeadLetter;
use crate::event::{self, Entry, Event};
use crate::handlers::Registry;
use crate::sink::batch::{self, Written};
use crate::sink::fault::{self, Fault};
use crate::sink::pool::PooledClient;

/// A batch sorted by what happens to each entry next.
pub(super) struct Sorted<'b> {
    /// Parsed events, in stream order: to be written.
    pub events: Vec<Event>,
    /// Malformed entries, with why: to be dead-lettered.
    pub malformed: Vec<DeadLetter<'b>>,
    /// Entries delivered more often than the budget allows: to be dead-lettered unprocessed.
    pub over_budget: Vec<&'b Entry>,
}

/// Sorts `batch`: over budget first (such an entry is not even parsed), then parse.
pub(super) fn sort<'b>(batch: &'b Batch, max_deliveries: u64, event_field: &str) -> Sorted<'b> {
    let mut sorted = Sorted {
        events: Vec::with_capacity(batch.entries.len()),
        malformed: Vec::new(),
        over_budget: Vec::new(),
    };
    for entry in &batch.entries {
        if entry.deliveries > max_deliveries {
            sorted.over_budget.push(entry);
            continue;
        }
        match event::parse(&batch.stream, entry, event_field) {
            Ok(e) => sorted.events.push(e),
            Err(m) => {
                log::warn!("malformed entry {} on {}: {m}; dead-lettering", entry.id, batch.stream);
                sorted.malformed.push(DeadLetter { entry, reason: m.kind().into(), error: m.to_string() });
            }
        }
    }
    sorted
}

/// What writing a batch's events did, rejected rows included.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub written: Written,
    /// Events Postgres rejected: (index into the events written, Postgres's message).
    pub rejected: Vec<(usize, String)>,
}

impl Outcome {
    /// Dead letters for the rejected events, found among `batch`'s entries.
    pub(super) fn dead_letters<'b>(&self, batch: &'b Batch, events: &[Event]) -> Vec<DeadLetter<'b>> {
        let mut dead = Vec::with_capacity(self.rejected.len());
        for (index, error) in &self.rejected {
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
        dead
    }
}

/// Commits `events`, isolating the rows Postgres rejects. Any other error is returned (nothing
/// of the failing part committed) for the caller to retry: committed halves then come back as
/// duplicates and change nothing.
pub(super) fn write_isolating(
    client: &mut PooledClient,
    registry: &Registry,
    stream: &str,
    events: &[Event],
) -> Result<Outcome, postgres::Error> {
    let mut outcome = Outcome::default();
    split(client, registry, stream, events, 0, &mut outcome)?;
    Ok(outcome)
}

/// `offset` is the position of `events` in the whole batch, to report rejected events by index.
fn split(
    client: &mut PooledClient,
    registry: &Registry,
    stream: &str,
    events: &[Event],
    offset: usize,
    outcome: &mut Outcome,
) -> Result<(), postgres::Error> {
    match batch::write(client, registry, stream, events) {
        Ok(w) => {
            outcome.written += w;
            Ok(())
        }
        Err(e) if fault::classify(&e) == Fault::RejectedRow => {
            if events.len() == 1 {
                outcome.rejected.push((offset, fault::describe(&e)));
                return Ok(());
            }
            let mid = events.len() / 2;
            split(client, registry, stream, &events[..mid], offset, outcome)?;
            split(client, registry, stream, &events[mid..], offset + mid, outcome)
        }
        Err(e) => Err(e),
    }
}

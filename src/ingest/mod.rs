//! The path of one event, one role per file, top-down:
//!
//! 1. [`reader`]: XREADGROUP of new entries → a `Batch` on the bounded channel; every claim
//!    interval it runs [`reclaim`] first (own pending at start, stuck entries, dead consumers,
//!    then [`retention`]'s trimming when it is set).
//! 2. [`worker`]: takes a batch off the channel and drives it through the next three steps.
//! 3. [`triage`]: sorts the batch (over budget, malformed, events), and writes the events in
//!    one transaction (`sink::batch`), splitting the batch until a row Postgres rejects stands
//!    alone.
//! 4. [`ack`]: one call that acknowledges every entry and dead-letters the bad ones, only after
//!    the commit.
//!
//! Invariant: nothing is acknowledged that is not committed to Postgres or written to the
//! dead-letter stream. The reader acknowledges nothing but ids whose entries no longer exist.

pub(crate) mod ack;
mod handoff;
pub(crate) mod inflight;
pub(crate) mod reader;
mod reclaim;
mod retention;
pub(crate) mod triage;
pub(crate) mod worker;

/// Whether the reader should keep going after handing something over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// Every worker has exited (the channel's receivers are gone): nothing can be processed.
    WorkersGone,
}

//! The reader's side of the byte budget ([`super::inflight`]): how many entries it may read
//! next, handing a read batch to the workers, and keeping the entries the process holds fresh
//! in Redis while it waits for either.
//!
//! Invariant: while Redis answers, the reader never waits longer than [`tick`] without
//! refreshing the entries the process holds, so none of them reaches `claim_min_idle` while it
//! is queued or being written. (While Redis does not answer, nobody can claim them either.)

use crate::broker::Redis;
use std::time::{Duration, Instant};

use crossbeam_channel::{SendTimeoutError, Sender};

use super::Flow;
use super::inflight::HeldBatch;
use crate::broker::{Batch, BrokerError, claim};
use crate::observe::Counters;
use crate::observe::heartbeat::Beat;
use crate::supervisor::Shared;

/// Held entries are refreshed once they are this old in Redis: a third of `claim_min_idle`,
/// so that a refresh late by a whole read still comes in time.
pub(super) fn refresh_age(shared: &Shared) -> Duration {
    (shared.config.worker.claim_min_idle / 3).max(Duration::from_millis(50))
}

/// The longest the reader waits on anything (budget, channel, a blocking read while entries
/// are held) before refreshing.
pub(super) fn tick(shared: &Shared) -> Duration {
    refresh_age(shared).min(Duration::from_secs(1))
}

/// Entries to ask for per stream of `streams`, waiting while the budget is used up (and
/// refreshing meanwhile). `None` if a stop came first.
pub(super) fn admit(c: &mut Redis, shared: &Shared, streams: usize) -> Result<Option<usize>, BrokerError> {
    loop {
        shared.heartbeats.beat(Beat::Reader);
        if let Some(n) = shared.inflight.admit(streams, tick(shared)) {
            return Ok(Some(n));
        }
        refresh(c, shared)?;
        if shared.stopping() {
            return Ok(None);
        }
    }
}

/// One read or claim call: the COUNT it asked for, and when it was issued (when Redis made
/// its entries fresh, at the latest).
#[derive(Debug, Clone, Copy)]
pub(super) struct Read {
    pub asked: usize,
    pub at: Instant,
}

impl Read {
    /// A call about to be issued now, asking for `asked` entries.
    pub(super) fn now(asked: usize) -> Read {
        Read { asked, at: Instant::now() }
    }
}

/// Holds `batch`, got by `read`: from then on its entries are refreshed while they wait.
pub(super) fn hold(shared: &Shared, batch: Batch, read: Read) -> HeldBatch {
    shared.inflight.hold(batch, read.asked, read.at)
}

/// Sends `held` to the workers, refreshing while the channel is full (a failed refresh is
/// retried at the next tick; the batch is never given up for it). At a stop, a batch the
/// workers cannot take within a tick is dropped unprocessed: its entries stay pending with this
/// consumer and are read again at next start.
pub(super) fn send(c: &mut Redis, shared: &Shared, tx: &Sender<HeldBatch>, held: HeldBatch) -> Flow {
    let mut held = held;
    // Read is read, whether or not the hand-off completes (a stop may leave it pending).
    Counters::add(&shared.counters.read, held.batch.entries.len() as u64);
    loop {
        shared.heartbeats.beat(Beat::Reader);
        match tx.send_timeout(held, tick(shared)) {
            Ok(()) => return Flow::Continue,
            Err(SendTimeoutError::Disconnected(_)) => return Flow::WorkersGone,
            Err(SendTimeoutError::Timeout(back)) => {
                if shared.stopping() {
                    log::info!(
                        "stopping: {} entries of {} read but not started stay pending",
                        back.batch.entries.len(),
                        back.batch.stream
                    );
                    return Flow::Continue;
                }
                held = back;
                if let Err(e) = refresh(c, shared) {
                    log::debug!("{e}; refreshing again at the next tick");
                }
            }
        }
    }
}

/// Re-claims to this consumer, without counting a delivery, every held entry whose idle time
/// in Redis is older than [`refresh_age`].
pub(super) fn refresh(c: &mut Redis, shared: &Shared) -> Result<(), BrokerError> {
    let (group, me) = (&shared.config.group.name, &shared.consumer);
    for (stream, ids) in shared.inflight.due_refresh(refresh_age(shared)) {
        log::debug!("refreshing {} held entries of {stream}", ids.len());
        if let Err(e) = claim::refresh(c, &stream, group, me, &ids) {
            shared.inflight.refresh_failed();
            return Err(e);
        }
    }
    Ok(())
}

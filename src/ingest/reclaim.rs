//! The reclaim cycle, run by the reader at start and every `claim_interval`: this consumer's
//! own pending entries (once, at start), then entries idle longer than `claim_min_idle` with
//! any consumer (XAUTOCLAIM; XPENDING + XCLAIM before Redis 6.2), then pruning of dead
//! consumers, then the streams' retention ([`super::retention`], at most once a minute).
//! Reclaimed entries carry Redis's delivery count, which the workers hold against the budget.

use crate::broker::Redis;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::inflight::HeldBatch;
use super::retention::Retention;
use super::{Flow, handoff};
use crate::broker::{Batch, BrokerError, ack, claim, claim::Claimed, group, read};
use crate::observe::Counters;
use crate::supervisor::Shared;

/// State of the periodic reclaim.
pub(super) struct Reclaim {
    next_at: Instant,
    /// This consumer's own pending entries have been re-read (done once, at start).
    own_done: bool,
    /// XAUTOCLAIM is missing (Redis < 6.2) or the fallback is forced.
    fallback: bool,
    retention: Retention,
}

impl Reclaim {
    pub(super) fn new(force_fallback: bool) -> Reclaim {
        Reclaim {
            next_at: Instant::now(),
            own_done: false,
            fallback: force_fallback,
            retention: Retention::new(),
        }
    }

    /// Due at start and every claim interval, but never while an outage holds batches back,
    /// nor until those batches have had `claim_min_idle` to drain after it.
    pub(super) fn is_due(&self, shared: &Shared) -> bool {
        let calm = shared.config.worker.claim_min_idle;
        !shared.stopping()
            && Instant::now() >= self.next_at
            && shared.postgres_outage.is_settled(calm)
            && shared.redis_outage.is_settled(calm)
    }

    /// One whole cycle over every stream.
    pub(super) fn run(
        &mut self,
        c: &mut Redis,
        shared: &Shared,
        tx: &Sender<HeldBatch>,
    ) -> Result<Flow, BrokerError> {
        let (group_name, worker) = (&shared.config.group.name, &shared.config.worker);
        for s in shared.config.group.streams.iter() {
            if !self.own_done {
                let fetch = |c: &mut Redis, after: &str, count: usize| {
                    read::own_pending(c, group_name, &shared.consumer, s, after, count)
                };
                if follow(c, shared, tx, s, "0", "own pending", fetch)? == Flow::WorkersGone {
                    return Ok(Flow::WorkersGone);
                }
            }
            if self.stuck(c, shared, tx, s)? == Flow::WorkersGone {
                return Ok(Flow::WorkersGone);
            }
            match group::prune_consumers(c, s, group_name, &shared.consumer, worker.consumer_prune_idle) {
                Ok(removed) => {
                    for name in removed {
                        log::info!(
                            "removed consumer {name} from group {group_name} on {s}: idle, nothing pending"
                        );
                    }
                }
                Err(e) if e.is_connection() => return Err(e),
                Err(e) => log::warn!("{e}"),
            }
        }
        self.own_done = true;
        self.next_at = Instant::now() + worker.claim_interval;
        self.retention.run(c, shared)?;
        Ok(Flow::Continue)
    }

    /// Takes over entries idle longer than `claim_min_idle`, following the cursor to the end.
    /// The entries this process holds were refreshed just before (by `follow`), so none of
    /// them is idle that long.
    fn stuck(
        &mut self,
        c: &mut Redis,
        shared: &Shared,
        tx: &Sender<HeldBatch>,
        s: &str,
    ) -> Result<Flow, BrokerError> {
        let fallback = &mut self.fallback;
        let (group, me) = (&shared.config.group.name, &shared.consumer);
        let idle = shared.config.worker.claim_min_idle;
        follow(c, shared, tx, s, "0-0", "reclaimed", |c, cursor, count| {
            if !*fallback {
                match claim::autoclaim(c, s, group, me, idle, cursor, count) {
                    Err(e) if e.is_unknown_command() => {
                        log::info!(
                            "XAUTOCLAIM not available (Redis < 6.2): reclaiming with XPENDING + XCLAIM"
                        );
                        *fallback = true;
                    }
                    other => return other,
                }
            }
            claim::fallback(c, s, group, me, idle, cursor, count)
        })
    }
}

/// Follows a pending-list cursor from `start` to its end, handing each chunk `fetch` returns
/// to the workers. Each fetch asks for as many entries as the byte budget allows, after the
/// held entries are refreshed.
fn follow(
    c: &mut Redis,
    shared: &Shared,
    tx: &Sender<HeldBatch>,
    s: &str,
    start: &str,
    what: &str,
    mut fetch: impl FnMut(&mut Redis, &str, usize) -> Result<Claimed, BrokerError>,
) -> Result<Flow, BrokerError> {
    let mut cursor = start.to_string();
    loop {
        if shared.stopping() {
            // Claiming now would spend deliveries on entries nobody will process.
            return Ok(Flow::Continue);
        }
        let Some(count) = handoff::admit(c, shared, 1)? else {
            return Ok(Flow::Continue);
        };
        handoff::refresh(c, shared)?;
        let read = handoff::Read::now(count);
        let claimed = fetch(c, &cursor, count)?;
        let next = claimed.next.clone();
        if hand_over(c, shared, tx, s, claimed, what, read)? == Flow::WorkersGone {
            return Ok(Flow::WorkersGone);
        }
        match next {
            Some(n) => cursor = n,
            None => return Ok(Flow::Continue),
        }
    }
}

/// Loads the delivery counts of taken-over entries and sends them to the workers. Deleted ids
/// are counted and logged as lost upstream, and acknowledged at once (there is nothing of them
/// to commit, and the next XAUTOCLAIM would report them again). An entry the process already
/// holds is not sent twice.
fn hand_over(
    c: &mut Redis,
    shared: &Shared,
    tx: &Sender<HeldBatch>,
    s: &str,
    claimed: Claimed,
    what: &str,
    read: handoff::Read,
) -> Result<Flow, BrokerError> {
    let Claimed { mut entries, mut deleted, .. } = claimed;
    let group = &shared.config.group.name;
    if !deleted.is_empty() && !shared.inflight.is_empty() {
        // Trimmed after this process read them: their content is in memory, and their worker
        // commits and acknowledges them.
        let held = shared.inflight.held_ids(s);
        deleted.retain(|id| !held.contains(id));
    }
    if !deleted.is_empty() {
        Counters::add(&shared.counters.lost_upstream, deleted.len() as u64);
        log::warn!(
            stream = s;
            "{} pending entries of {s} were deleted from the stream before they were processed \
             (lost upstream, e.g. by XTRIM/MAXLEN): {}",
            deleted.len(),
            deleted.join(",")
        );
    }
    ack::ack_deleted(c, s, group, &deleted)?;
    if !entries.is_empty() && !shared.inflight.is_empty() {
        let held = shared.inflight.held_ids(s);
        let before = entries.len();
        entries.retain(|e| !held.contains(&e.id));
        if entries.len() < before {
            log::debug!("{what}: {} entries of {s} already held here", before - entries.len());
        }
    }
    if entries.is_empty() {
        return Ok(Flow::Continue);
    }
    claim::load_delivery_counts(c, s, group, &mut entries)?;
    Counters::add(&shared.counters.reclaimed, entries.len() as u64);
    let most = entries.iter().map(|e| e.deliveries).max().unwrap_or(0);
    log::info!("{what}: {} entries of {s} (up to {most} deliveries each)", entries.len());
    let held = handoff::hold(shared, Batch { stream: Arc::from(s), entries }, read);
    Ok(handoff::send(c, shared, tx, held))
}

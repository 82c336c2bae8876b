//! The reader thread: XREADGROUP on its own connection, whole batches into the bounded channel;
//! every claim interval, the reclaim cycle ([`super::reclaim`]) first.
//!
//! Invariants: the channel is bounded and every read is sized by the byte budget
//! ([`super::inflight`]), so a slow database slows reading instead of growing memory; the
//! entries the process holds are refreshed in Redis while they wait ([`super::handoff`]); on
//! stop the reader finishes the read under way, hands over what it read, drops its sender
//! (which is how the workers learn there is nothing more), and keeps refreshing until the
//! workers are done or the stop deadline passes.

use crate::broker::Redis;
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::Flow;
use super::handoff;
use super::inflight::HeldBatch;
use super::reclaim::Reclaim;
use crate::broker::nodes::Masters;
use crate::broker::{self, BrokerError, group, read};
use crate::observe::heartbeat::Beat;
use crate::retry::{Failure, GaveUp, Staleness, retry};
use crate::supervisor::Shared;

/// Runs the reader until a stop is requested; returns after dropping the channel's sender.
pub(crate) fn run(shared: Arc<Shared>, tx: Sender<HeldBatch>) {
    let reclaim = Reclaim::new(shared.hooks.force_claim_fallback);
    let staleness = Staleness::new(true);
    let mut reader =
        Reader { shared: Arc::clone(&shared), tx, con: None, masters: None, staleness, reclaim, turn: 0 };
    while !shared.stopping() {
        let on_wait = |e: &ReaderFault, _, _| {
            shared.heartbeats.beat(Beat::Reader); // waiting on purpose
            match e {
                ReaderFault::Connect(e) => shared.redis_outage.fault("reader", e),
                ReaderFault::Broker(e) if e.is_connection() => shared.redis_outage.fault("reader", e),
                ReaderFault::Broker(e) if e.is_no_group() => {} // logged where the group is re-created
                ReaderFault::Broker(e) => log::error!("{e}"),
            }
        };
        match retry(shared.stop_flag(), || reader.step(), on_wait) {
            Ok(Flow::Continue) => {}
            Ok(Flow::WorkersGone) => {
                log::error!("reader: every worker has exited; stopping");
                return;
            }
            Err(GaveUp::Stopped(_) | GaveUp::Fatal(_)) => break,
        }
    }
    // Closing the channel lets the workers finish; until they have (or the stop deadline),
    // the entries they hold are kept fresh, so that no other instance takes them meanwhile.
    let Reader { con, tx, .. } = reader;
    drop(tx);
    if let Some(mut con) = con {
        while !shared.inflight.is_empty() && shared.time_left().is_some_and(|left| !left.is_zero()) {
            shared.heartbeats.beat(Beat::Reader);
            if let Err(e) = handoff::refresh(&mut con, &shared) {
                log::debug!("{e}");
            }
            std::thread::sleep(handoff::tick(&shared).min(std::time::Duration::from_millis(100)));
        }
    }
    log::info!("reader stopped");
}

/// Why a step of the reader failed; every one is waited out and retried.
#[derive(Debug, thiserror::Error)]
enum ReaderFault {
    #[error(transparent)]
    Connect(redis::RedisError),
    #[error(transparent)]
    Broker(BrokerError),
}

struct Reader {
    shared: Arc<Shared>,
    tx: Sender<HeldBatch>,
    /// The reader's own connection; `None` until (re)connected.
    con: Option<Redis>,
    staleness: Staleness,
    reclaim: Reclaim,
    /// In a cluster, its own connection to each master owning a shard (`broker::nodes`); `None`
    /// until made, and again after a connection fault (a new slot map).
    masters: Option<Masters>,
    /// In a cluster, which shard of each master blocks an idle round.
    turn: usize,
}

impl Reader {
    /// One read of new entries, or one reclaim cycle when it is due.
    fn step(&mut self) -> Result<Flow, Failure<ReaderFault>> {
        self.shared.heartbeats.beat(Beat::Reader);
        let issued = std::time::Instant::now();
        let con = match self.con.take() {
            Some(con) => con,
            None => {
                let con =
                    broker::connect(&self.shared.config.redis, self.shared.config.worker.read_timeout())
                        .map_err(|e| Failure::Wait(ReaderFault::Connect(e)))?;
                self.staleness.connected();
                con
            }
        };
        let con = self.con.insert(con);
        let result = handoff::refresh(con, &self.shared).and_then(|()| {
            if self.reclaim.is_due(&self.shared) {
                self.reclaim.run(con, &self.shared, &self.tx)
            } else {
                read_new(con, &self.shared, &self.tx, &mut self.masters, &mut self.turn)
            }
        });
        match result {
            Ok(flow) => {
                self.shared.redis_outage.cleared(issued);
                self.staleness.served();
                Ok(flow)
            }
            Err(e) if e.is_no_group() => {
                // Redis lost the group (restarted without persistence, or someone deleted
                // it): re-create it where the configuration says and keep reading.
                log::warn!("{e}; re-creating the consumer group");
                let config = &self.shared.config;
                for s in config.group.streams.iter() {
                    if let Err(e) =
                        group::ensure_group(con, s, &config.group.name, &config.worker.group_start)
                    {
                        log::error!("{e}");
                    }
                }
                Err(Failure::Wait(ReaderFault::Broker(e)))
            }
            Err(e) if e.is_connection() => {
                self.con = None;
                self.masters = None;
                if self.shared.stopping() {
                    // A stop came in: leave rather than reconnect for one more read.
                    Err(Failure::Fatal(ReaderFault::Broker(e)))
                } else if self.staleness.retry_at_once() {
                    Err(Failure::Again)
                } else {
                    Err(Failure::Wait(ReaderFault::Broker(e)))
                }
            }
            Err(e) => Err(Failure::Wait(ReaderFault::Broker(e))),
        }
    }
}

/// Reads new entries from every stream, as many as the byte budget allows, and hands each
/// stream's batch to the workers (waiting while they are behind). While the process holds
/// entries, the read blocks no longer than a refresh tick. In a cluster, every shard is read on
/// its master, over the reader's own connection to each (`broker::nodes`); a failure part-way
/// still hands over what was read.
fn read_new(
    con: &mut Redis,
    shared: &Shared,
    tx: &Sender<HeldBatch>,
    masters: &mut Option<Masters>,
    turn: &mut usize,
) -> Result<Flow, BrokerError> {
    let (group, worker) = (&shared.config.group, &shared.config.worker);
    let Some(count) = handoff::admit(con, shared, group.streams.len())? else {
        return Ok(Flow::Continue);
    };
    let block =
        if shared.inflight.is_empty() { worker.block } else { worker.block.min(handoff::tick(shared)) };
    let read = handoff::Read::now(count);
    let (batches, failed) = if con.is_cluster() {
        let masters = match masters {
            Some(masters) => masters,
            None => {
                let made =
                    Masters::connect(&shared.config.redis, con, &group.streams, worker.read_timeout())?;
                log::info!("reading {} shards over {} masters", group.streams.len(), made.len());
                masters.insert(made)
            }
        };
        *turn = turn.wrapping_add(1);
        masters.read(&group.name, &shared.consumer, &group.streams, count, block, *turn)
    } else {
        (read::new_entries(con, &group.name, &shared.consumer, &group.streams, count, Some(block))?, None)
    };
    // Every stream's batch is held at once, so none goes unrefreshed while another waits.
    let held: Vec<HeldBatch> = batches
        .into_iter()
        .map(|batch| {
            log::debug!("read {} entries from {}", batch.entries.len(), batch.stream);
            handoff::hold(shared, batch, read)
        })
        .collect();
    for batch in held {
        if handoff::send(con, shared, tx, batch) == Flow::WorkersGone {
            return Ok(Flow::WorkersGone);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(Flow::Continue),
    }
}

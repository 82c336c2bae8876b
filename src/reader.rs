//! The reader thread: XREADGROUP on its own connection, whole batches into the bounded channel;
//! every claim interval, the reclaim cycle first.
//!
//! Invariants: the channel is bounded, so a slow database slows reading instead of growing
//! memory; the reader acknowledges nothing but ids whose entries no longer exist (workers
//! acknowledge, after commit); on stop it
//! finishes the read under way, hands over what it read, and drops its sender, which is how
//! the workers learn there is nothing more.
//!
//! The reclaim cycle (every `claim_interval`, and at start): this consumer's own pending
//! entries (ID `0`, once, at start), then XAUTOCLAIM of entries idle longer than
//! `claim_min_idle` (XPENDING + XCLAIM before Redis 6.2), then pruning of dead consumers.
//! Reclaimed entries carry Redis's delivery count, which the workers hold against the budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::event::Entry;
use crate::retry::{Backoff, Outage, sleep_unless};
use crate::stats::Counters;
use crate::stream::{self, Batch, Claimed, StreamError};

/// What the reader reads, and how.
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    pub redis_url: String,
    pub streams: Vec<String>,
    pub group: String,
    pub consumer: String,
    pub group_start: String,
    pub batch: usize,
    pub block: Duration,
    pub claim_interval: Duration,
    pub claim_min_idle: Duration,
    pub consumer_prune_idle: Duration,
    /// Use XPENDING + XCLAIM even where XAUTOCLAIM exists (it is chosen automatically on
    /// Redis < 6.2; forcing it lets the fallback be tested on a current server).
    pub force_claim_fallback: bool,
}

impl ReaderConfig {
    /// Longer than BLOCK, so that a reply the server sends at the end of BLOCK is never
    /// abandoned (abandoned entries would sit pending until reclaimed).
    fn read_timeout(&self) -> Duration {
        self.block + stream::COMMAND_TIMEOUT
    }
}

/// The reader's links to the rest of the pipeline.
pub struct ReaderLinks {
    pub tx: Sender<Batch>,
    pub stop: Arc<AtomicBool>,
    pub redis_outage: Arc<Outage>,
    pub postgres_outage: Arc<Outage>,
    pub counters: Arc<Counters>,
}

/// Runs the reader until `stop` is set; returns after dropping the channel's sender.
pub fn run(cfg: ReaderConfig, links: ReaderLinks) {
    let mut con: Option<redis::Connection> = None;
    let mut backoff = Backoff::reconnect();
    let mut reclaim = Reclaim::new(&cfg);
    let stop = Arc::clone(&links.stop);
    // True while the connection has not yet served a command since it was opened.
    let mut fresh = true;
    while !stop.load(Ordering::Relaxed) {
        let c = match con.as_mut() {
            Some(c) => c,
            None => match stream::connect(&cfg.redis_url, cfg.read_timeout()) {
                Ok(c) => {
                    fresh = true;
                    con.insert(c)
                }
                Err(e) => {
                    links.redis_outage.fault("reader", &e);
                    sleep_unless(&stop, backoff.next_delay());
                    continue;
                }
            },
        };
        let result = if reclaim.is_due(&cfg, &links) {
            reclaim.run(c, &cfg, &links)
        } else {
            read_new(c, &cfg, &links)
        };
        match result {
            Ok(Flow::Continue) => {
                links.redis_outage.cleared();
                backoff.reset();
                fresh = false;
            }
            Ok(Flow::WorkersGone) => {
                log::error!("reader: every worker has exited; stopping");
                return;
            }
            Err(e) if e.is_no_group() => {
                // Redis lost the group (restarted without persistence, or someone deleted
                // it): re-create it where the configuration says and keep reading.
                log::warn!("{e}; re-creating the consumer group");
                for s in &cfg.streams {
                    if let Err(e) = stream::ensure_group(c, s, &cfg.group, &cfg.group_start) {
                        log::error!("{e}");
                    }
                }
                sleep_unless(&stop, backoff.next_delay());
            }
            Err(e) if e.is_connection() => {
                con = None;
                if fresh {
                    links.redis_outage.fault("reader", &e);
                    sleep_unless(&stop, backoff.next_delay());
                }
                // else: a connection that worked before may just be stale (Redis restarted):
                // reconnect at once; only a failure on a fresh one is an outage.
            }
            Err(e) => {
                log::error!("{e}");
                sleep_unless(&stop, backoff.next_delay());
            }
        }
    }
    log::info!("reader stopped");
}

enum Flow {
    Continue,
    WorkersGone,
}

fn read_new(c: &mut redis::Connection, cfg: &ReaderConfig, links: &ReaderLinks) -> Result<Flow, StreamError> {
    let batches = stream::read_new(c, &cfg.group, &cfg.consumer, &cfg.streams, cfg.batch, cfg.block)?;
    for batch in batches {
        log::debug!("read {} entries from {}", batch.entries.len(), batch.stream);
        if links.tx.send(batch).is_err() {
            return Ok(Flow::WorkersGone);
        }
    }
    Ok(Flow::Continue)
}

/// State of the periodic reclaim.
struct Reclaim {
    next_at: Instant,
    /// This consumer's own pending entries have been re-read (done once, at start).
    own_done: bool,
    /// XAUTOCLAIM is missing (Redis < 6.2) or the fallback is forced.
    fallback: bool,
}

impl Reclaim {
    fn new(cfg: &ReaderConfig) -> Reclaim {
        Reclaim { next_at: Instant::now(), own_done: false, fallback: cfg.force_claim_fallback }
    }

    /// Due at start and every claim interval, but never while an outage holds batches back,
    /// nor until those batches have had `claim_min_idle` to drain after it.
    fn is_due(&self, cfg: &ReaderConfig, links: &ReaderLinks) -> bool {
        Instant::now() >= self.next_at
            && links.postgres_outage.is_settled(cfg.claim_min_idle)
            && links.redis_outage.is_settled(cfg.claim_min_idle)
    }

    fn run(
        &mut self,
        c: &mut redis::Connection,
        cfg: &ReaderConfig,
        links: &ReaderLinks,
    ) -> Result<Flow, StreamError> {
        for s in &cfg.streams {
            if !self.own_done {
                if let Flow::WorkersGone = self.own_pending(c, cfg, links, s)? {
                    return Ok(Flow::WorkersGone);
                }
            }
            if let Flow::WorkersGone = self.stuck(c, cfg, links, s)? {
                return Ok(Flow::WorkersGone);
            }
            match stream::prune_consumers(c, s, &cfg.group, &cfg.consumer, cfg.consumer_prune_idle) {
                Ok(removed) => {
                    for name in removed {
                        log::info!(
                            "removed consumer {name} from group {} on {s}: idle, nothing pending",
                            cfg.group
                        );
                    }
                }
                Err(e) if e.is_connection() => return Err(e),
                Err(e) => log::warn!("{e}"),
            }
        }
        self.own_done = true;
        self.next_at = Instant::now() + cfg.claim_interval;
        Ok(Flow::Continue)
    }

    /// Re-reads what a previous run under this consumer name read and never acknowledged.
    fn own_pending(
        &self,
        c: &mut redis::Connection,
        cfg: &ReaderConfig,
        links: &ReaderLinks,
        s: &str,
    ) -> Result<Flow, StreamError> {
        follow(c, cfg, links, s, "0", "own pending", |c, after| {
            stream::read_own_pending(c, &cfg.group, &cfg.consumer, s, after, cfg.batch)
        })
    }

    /// Takes over entries idle longer than `claim_min_idle`, following the cursor to the end.
    fn stuck(
        &mut self,
        c: &mut redis::Connection,
        cfg: &ReaderConfig,
        links: &ReaderLinks,
        s: &str,
    ) -> Result<Flow, StreamError> {
        let fallback = &mut self.fallback;
        follow(c, cfg, links, s, "0-0", "reclaimed", |c, cursor| {
            let (group, me, idle) = (&cfg.group, &cfg.consumer, cfg.claim_min_idle);
            if !*fallback {
                match stream::autoclaim(c, s, group, me, idle, cursor, cfg.batch) {
                    Err(e) if e.is_unknown_command() => {
                        log::info!(
                            "XAUTOCLAIM not available (Redis < 6.2): reclaiming with XPENDING + XCLAIM"
                        );
                        *fallback = true;
                    }
                    other => return other,
                }
            }
            stream::claim_fallback(c, s, group, me, idle, cursor, cfg.batch)
        })
    }
}

/// Follows a pending-list cursor from `start` to its end, handing each chunk `fetch` returns
/// to the workers.
fn follow(
    c: &mut redis::Connection,
    cfg: &ReaderConfig,
    links: &ReaderLinks,
    s: &str,
    start: &str,
    what: &str,
    mut fetch: impl FnMut(&mut redis::Connection, &str) -> Result<Claimed, StreamError>,
) -> Result<Flow, StreamError> {
    let mut cursor = start.to_string();
    loop {
        let claimed = fetch(c, &cursor)?;
        let next = claimed.next.clone();
        if let Flow::WorkersGone = hand_over(c, cfg, links, s, claimed, what)? {
            return Ok(Flow::WorkersGone);
        }
        match next {
            Some(n) => cursor = n,
            None => return Ok(Flow::Continue),
        }
    }
}

/// Loads the delivery counts of taken-over entries and sends them to the workers. Deleted ids
/// are counted and logged as lost upstream, and acknowledged (the one acknowledgement the
/// reader makes: there is nothing of them to commit).
fn hand_over(
    c: &mut redis::Connection,
    cfg: &ReaderConfig,
    links: &ReaderLinks,
    s: &str,
    claimed: Claimed,
    what: &str,
) -> Result<Flow, StreamError> {
    let Claimed { mut entries, deleted, .. } = claimed;
    if !deleted.is_empty() {
        Counters::add(&links.counters.lost_upstream, deleted.len() as u64);
        log::warn!(
            "{} pending entries of {s} were deleted from the stream before they were processed \
             (lost upstream, e.g. by XTRIM/MAXLEN): {}",
            deleted.len(),
            deleted.join(",")
        );
    }
    // Acknowledged here, at once, so the next XAUTOCLAIM does not report them again.
    stream::ack_deleted(c, s, &cfg.group, &deleted)?;
    if entries.is_empty() {
        return Ok(Flow::Continue);
    }
    stream::load_delivery_counts(c, s, &cfg.group, &mut entries)?;
    Counters::add(&links.counters.reclaimed, entries.len() as u64);
    if !entries.is_empty() {
        let most = entries.iter().map(|e: &Entry| e.deliveries).max().unwrap_or(0);
        log::info!("{what}: {} entries of {s} (up to {most} deliveries each)", entries.len());
    }
    let batch = Batch { stream: Arc::from(s), entries };
    if links.tx.send(batch).is_err() {
        return Ok(Flow::WorkersGone);
    }
    Ok(Flow::Continue)
}

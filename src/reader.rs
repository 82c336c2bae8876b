//! The reader thread: XREADGROUP on its own connection, whole batches into the bounded channel.
//!
//! Invariants: the channel is bounded, so a slow database slows reading instead of growing
//! memory; the reader never acknowledges anything (workers do, after commit); on stop it
//! finishes the read under way, hands over what it read, and drops its sender, which is how
//! the workers learn there is nothing more.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::retry::{Backoff, Outage, sleep_unless};
use crate::stream::{self, Batch};

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
}

impl ReaderConfig {
    /// Longer than BLOCK, so that a reply the server sends at the end of BLOCK is never
    /// abandoned (abandoned entries would sit pending until reclaimed).
    fn read_timeout(&self) -> Duration {
        self.block + stream::COMMAND_TIMEOUT
    }
}

/// Runs the reader until `stop` is set; returns after dropping `tx`.
pub fn run(cfg: ReaderConfig, tx: Sender<Batch>, stop: Arc<AtomicBool>, redis_outage: Arc<Outage>) {
    let mut con: Option<redis::Connection> = None;
    let mut backoff = Backoff::reconnect();
    while !stop.load(Ordering::Relaxed) {
        let c = match con.as_mut() {
            Some(c) => c,
            None => match stream::connect(&cfg.redis_url, cfg.read_timeout()) {
                Ok(c) => con.insert(c),
                Err(e) => {
                    redis_outage.fault("reader", &e);
                    sleep_unless(&stop, backoff.next_delay());
                    continue;
                }
            },
        };
        match stream::read_new(
            c,
            &cfg.group,
            &cfg.consumer,
            &cfg.streams,
            cfg.batch,
            cfg.block,
        ) {
            Ok(batches) => {
                redis_outage.cleared();
                backoff.reset();
                for batch in batches {
                    log::debug!("read {} entries from {}", batch.entries.len(), batch.stream);
                    if tx.send(batch).is_err() {
                        log::error!("reader: every worker has exited; stopping");
                        return;
                    }
                }
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
                redis_outage.fault("reader", &e);
                con = None;
                sleep_unless(&stop, backoff.next_delay());
            }
            Err(e) => {
                log::error!("{e}");
                sleep_unless(&stop, backoff.next_delay());
            }
        }
    }
    log::info!("reader stopped");
}

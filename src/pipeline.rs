//! Starts and stops the threads: connect and migrate, then one reader, N workers and the stats
//! thread around a bounded channel; on stop, drain in order and report.
//!
//! Shutdown order (the invariant that makes it lossless): the stop flag makes the reader return
//! after its current read and drop the channel's sender; the workers finish every batch already
//! in the channel, acknowledging each after its commit, and exit when it is empty; then the stats
//! thread logs nothing more and the final line is written. Anything not acknowledged by then
//! is still pending in Redis.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::{Config, mask_url};
use crate::handlers::Registry;
use crate::reader::{self, ReaderConfig};
use crate::retry::{Backoff, Outage, sleep_unless};
use crate::stats::{self, Counters, Snapshot, StatsSource};
use crate::store::{self, StoreError};
use crate::stream::{self, StreamError};
use crate::worker::{self, WorkerContext};

/// Why the pipeline could not start or did not stop cleanly.
#[derive(Debug)]
pub enum PipelineError {
    /// A stop was requested before start-up finished.
    Stopped,
    /// Postgres refused something retrying cannot fix (migration failed, bad credentials...).
    Store(StoreError),
    /// Redis refused something retrying cannot fix (the stream key holds another type...).
    Stream(StreamError),
    /// A thread could not be spawned.
    Spawn(std::io::Error),
    /// A thread ended on its own (a panic): the process should exit non-zero and be restarted.
    ThreadDied(String),
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipelineError::Stopped => write!(f, "stopped during start-up"),
            PipelineError::Store(e) => write!(f, "{e}"),
            PipelineError::Stream(e) => write!(f, "{e}"),
            PipelineError::Spawn(e) => write!(f, "cannot start a thread: {e}"),
            PipelineError::ThreadDied(name) => write!(f, "thread '{name}' died unexpectedly"),
        }
    }
}

impl std::error::Error for PipelineError {}

/// A running pipeline.
pub struct Pipeline {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    reader: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    stats: JoinHandle<()>,
    stats_done: crossbeam_channel::Sender<()>,
}

impl Pipeline {
    /// Connects to Redis and Postgres (retrying with backoff until they answer or `stop` is
    /// set), applies migrations, ensures the consumer groups, and starts the threads.
    pub fn start(
        config: &Config,
        registry: Registry,
        stop: Arc<AtomicBool>,
    ) -> Result<Pipeline, PipelineError> {
        log::info!(
            "connecting: redis {} postgres {}",
            mask_url(&config.redis_url),
            mask_url(&config.database_url)
        );
        ensure_groups(config, &stop)?;
        let pool = store::pool(&config.database_url, config.workers).map_err(PipelineError::Store)?;
        migrate_with_retry(&pool, &stop)?;
        log::info!(
            "Event consumer started: streams={} group={} consumer={} workers={} batch={} handlers={}",
            config.streams.join(","),
            config.group,
            config.consumer,
            config.workers,
            config.batch,
            registry.types().join(",")
        );

        let counters = Arc::new(Counters::default());
        let (tx, rx) = crossbeam_channel::bounded(config.workers);
        let redis_outage = Arc::new(Outage::new("Redis"));
        let reader_cfg = ReaderConfig {
            redis_url: config.redis_url.clone(),
            streams: config.streams.clone(),
            group: config.group.clone(),
            consumer: config.consumer.clone(),
            group_start: config.group_start.clone(),
            batch: config.batch,
            block: config.block,
            claim_interval: config.claim_interval,
            claim_min_idle: config.claim_min_idle,
            consumer_prune_idle: config.consumer_prune_idle,
            force_claim_fallback: config.force_claim_fallback,
        };
        let postgres_outage = Arc::new(Outage::new("Postgres"));
        let reader = {
            let links = reader::ReaderLinks {
                tx,
                stop: Arc::clone(&stop),
                redis_outage: Arc::clone(&redis_outage),
                postgres_outage: Arc::clone(&postgres_outage),
                counters: Arc::clone(&counters),
            };
            spawn("reader", move || reader::run(reader_cfg, links))?
        };
        let ctx = Arc::new(WorkerContext {
            pool,
            redis_url: config.redis_url.clone(),
            group: config.group.clone(),
            consumer: config.consumer.clone(),
            event_field: config.event_field.clone(),
            max_deliveries: config.max_deliveries,
            per_event: config.per_event,
            registry,
            counters: Arc::clone(&counters),
            stop: Arc::clone(&stop),
            postgres_outage,
            redis_outage,
        });
        let mut workers = Vec::with_capacity(config.workers);
        for n in 1..=config.workers {
            let (ctx, rx) = (Arc::clone(&ctx), rx.clone());
            workers.push(spawn(&format!("worker-{n}"), move || worker::run(ctx, rx))?);
        }
        let (stats_done, done_rx) = crossbeam_channel::bounded(0);
        let stats = {
            let (counters, stop) = (Arc::clone(&counters), Arc::clone(&stop));
            let source = StatsSource {
                redis_url: config.redis_url.clone(),
                streams: config.streams.clone(),
                group: config.group.clone(),
            };
            let interval = config.stats_interval;
            spawn("stats", move || stats::run(&counters, source, interval, done_rx, &stop))?
        };
        Ok(Pipeline { stop, counters, reader, workers, stats, stats_done })
    }

    /// The live counters (for tests and status reporting).
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Asks the pipeline to stop; [`Pipeline::wait`] then drains and returns.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Runs until stopped (or until a thread dies), then drains and returns the final counts.
    pub fn wait(self) -> Result<Snapshot, PipelineError> {
        let mut died = None;
        while !self.stop.load(Ordering::SeqCst) {
            let threads = std::iter::once(&self.reader).chain(&self.workers).chain([&self.stats]);
            if let Some(t) = threads.into_iter().find(|t| t.is_finished()) {
                died = Some(t.thread().name().unwrap_or("?").to_string());
                log::error!("thread {} ended unexpectedly; shutting down", died.as_deref().unwrap_or("?"));
                self.stop();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        log::info!("stopping: finishing batches already read");
        let mut panicked = Vec::new();
        let mut join = |h: JoinHandle<()>| {
            let name = h.thread().name().unwrap_or("?").to_string();
            if h.join().is_err() {
                panicked.push(name);
            }
        };
        join(self.reader);
        self.workers.into_iter().for_each(&mut join);
        drop(self.stats_done);
        join(self.stats);
        let last = self.counters.snapshot();
        log::info!("final stats: {last}");
        match died.or_else(|| panicked.into_iter().next()) {
            Some(name) => Err(PipelineError::ThreadDied(name)),
            None => Ok(last),
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, PipelineError> {
    std::thread::Builder::new().name(name.to_string()).spawn(f).map_err(PipelineError::Spawn)
}

/// Creates every stream's group (BUSYGROUP is fine), reconnecting while Redis is unreachable.
fn ensure_groups(config: &Config, stop: &AtomicBool) -> Result<(), PipelineError> {
    let mut backoff = Backoff::reconnect();
    loop {
        let mut con =
            stream::connect_with_retry(&config.redis_url, stream::COMMAND_TIMEOUT, stop, "start-up")
                .ok_or(PipelineError::Stopped)?;
        let mut result = Ok(());
        for s in &config.streams {
            result = stream::ensure_group(&mut con, s, &config.group, &config.group_start).map(|created| {
                if created {
                    log::info!("created consumer group {} on {s} at {}", config.group, config.group_start);
                }
            });
            if result.is_err() {
                break;
            }
        }
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.is_connection() => {
                log::warn!("{e}; retrying");
                if !sleep_unless(stop, backoff.next_delay()) {
                    return Err(PipelineError::Stopped);
                }
            }
            Err(e) => return Err(PipelineError::Stream(e)),
        }
    }
}

/// Applies migrations, retrying (and logging each attempt) while Postgres is unreachable.
fn migrate_with_retry(pool: &store::Pool, stop: &AtomicBool) -> Result<(), PipelineError> {
    let mut backoff = Backoff::reconnect();
    let mut attempt = 1;
    loop {
        let e = match pool.get().map_err(StoreError::Connect).and_then(|mut c| store::migrate(&mut c)) {
            Ok(applied) => {
                if !applied.is_empty() {
                    log::info!("applied migrations {applied:?}");
                }
                return Ok(());
            }
            Err(e) => e,
        };
        let retry = match &e {
            StoreError::Connect(_) => true,
            StoreError::Query { source, .. } => store::is_infrastructure(source),
            StoreError::Url { .. } => false,
        };
        if !retry {
            return Err(PipelineError::Store(e));
        }
        let delay = backoff.next_delay();
        log::warn!("start-up: postgres not ready (attempt {attempt}): {e}; retrying in {delay:?}");
        if !sleep_unless(stop, delay) {
            return Err(PipelineError::Stopped);
        }
        attempt += 1;
    }
}

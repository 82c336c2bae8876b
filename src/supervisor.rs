//! Starts and stops the threads of one worker process: connect and migrate, then one reader,
//! N workers and the stats thread around a bounded channel; on stop, drain in order and report.
//!
//! Shutdown order (the invariant that makes it lossless): the stop flag makes the reader return
//! after its current read and drop the channel's sender; the workers finish every batch already
//! in the channel, acknowledging each after its commit, and exit when it is empty; then the stats
//! thread ends and the final line is written. Anything not acknowledged by then is still pending
//! in Redis.
//!
//! Where to add a thread: spawn it in [`Supervisor::start`] with a clone of `Shared`, and
//! join it in [`Supervisor::wait`] in the order its inputs stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::broker::{self, BrokerError, group};
use crate::config::{Config, Listen};
use crate::handlers::Registry;
use crate::hooks::Hooks;
use crate::ingest::inflight::Inflight;
use crate::ingest::{reader, worker};
use crate::observe::heartbeat::Heartbeats;
use crate::observe::http::{Endpoint, Pipeline, Serving};
use crate::observe::{Counters, Snapshot, service, stats};
use crate::retry::{Episode, Failure, GaveUp, Outage, retry};
use crate::sink::cancel::Queries;
use crate::sink::{SinkError, migrate, pool};
use crate::tls;

/// Why the pipeline could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A stop was requested before start-up finished.
    #[error("stopped during start-up")]
    Stopped,
    /// Postgres refused something retrying cannot fix (migration failed, bad credentials...).
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Redis refused something retrying cannot fix (the stream key holds another type...).
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// Redis did not answer (start-up retries this until it does or a stop is requested), or
    /// refused TLS as configured (`tls::is_refusal`: start-up gives up at once).
    #[error("cannot connect to Redis at {url}: {source}")]
    RedisConnect {
        url: crate::secret::SecretUrl,
        #[source]
        source: redis::RedisError,
    },
    /// A thread could not be spawned.
    #[error("cannot start a thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The metrics endpoint's address cannot be listened on (taken, not local...).
    #[error("cannot listen on {addr} (STREAMSINK_METRICS_ADDR): {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A thread ended on its own (a panic): the process should exit non-zero and be restarted.
    #[error("thread '{0}' died unexpectedly")]
    ThreadDied(String),
}

/// What every thread of one pipeline shares. Built once at start; threads hold an `Arc`.
pub(crate) struct Shared {
    pub config: Config,
    /// This process's consumer name (resolved once: the default holds the pid).
    pub consumer: String,
    pub hooks: Hooks,
    pub counters: Arc<Counters>,
    /// Histograms, labelled counts and the per-stream Redis figures `/metrics` exposes.
    pub metrics: crate::observe::metrics::Metrics,
    pub redis_outage: Outage,
    /// Shared with the pool, which reports TLS refusals to it (`pool::Postgres::pool`).
    pub postgres_outage: Arc<Outage>,
    /// What the process holds, against `STREAMSINK_MAX_INFLIGHT`.
    pub inflight: Arc<Inflight>,
    /// Postgres refusing batch writes (class 42 and the like): logged once per episode.
    pub statement_refused: Episode,
    /// Redis refusing acknowledgements (OOM, READONLY), and refusing dead letters (the same,
    /// or WRONGTYPE on the dead-letter key): each logged once per episode, however many
    /// workers meet it. Two episodes, so that plain acknowledgements going through do not end
    /// (and restart) an episode of refused dead letters.
    pub ack_refused: Episode,
    pub dead_letter_refused: Episode,
    /// Statements the workers are running, to cancel at the stop deadline.
    pub queries: Queries,
    /// Heartbeats of the reader and the workers, for the watchdog.
    pub heartbeats: Heartbeats,
    stop: Arc<AtomicBool>,
    /// When a stop must be complete (set when the stop is first noticed).
    stop_deadline: OnceLock<Instant>,
}

/// How long after a stop request the in-flight statements are cancelled, so that the
/// process exits within 10 s whatever Postgres is doing.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(6);

/// How long after a stop request the supervisor waits for its threads at most; one still
/// blocked then is left behind (the process exits; its batch stays pending).
const STOP_LIMIT: Duration = Duration::from_secs(8);

/// The longest a worker waits for a pooled connection (r2d2's timeout) outside a stop.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a worker waits for a pooled connection once a stop is requested: a healthy
/// pool answers at once, and an unreachable server must not hold each remaining batch 5 s.
const POOL_TIMEOUT_STOPPING: Duration = Duration::from_secs(1);

impl Shared {
    /// Time left before the stop deadline; `None` while no stop is requested.
    pub fn time_left(&self) -> Option<Duration> {
        if !self.stopping() {
            return None;
        }
        let deadline = *self.stop_deadline.get_or_init(|| Instant::now() + STOP_GRACE);
        Some(deadline.saturating_duration_since(Instant::now()))
    }

    /// How long a worker may wait for a connection now: the pool's timeout, capped by the stop
    /// deadline; `None` once the deadline has passed (give the batch up: it stays pending).
    pub fn pool_timeout(&self) -> Option<Duration> {
        match self.time_left() {
            None => Some(POOL_TIMEOUT),
            Some(left) if left < Duration::from_millis(10) => None,
            Some(left) => Some(left.min(POOL_TIMEOUT_STOPPING)),
        }
    }

    /// The stop flag, for stop-aware waits.
    pub fn stop_flag(&self) -> &AtomicBool {
        &self.stop
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A running pipeline.
pub struct Supervisor {
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    stats: JoinHandle<()>,
    stats_done: crossbeam_channel::Sender<()>,
    /// The metrics endpoint, when one is configured (serving since start-up began).
    http: Option<Serving>,
}

impl Supervisor {
    /// Connects to Redis and Postgres (retrying with backoff until they answer or `stop` is
    /// set), applies migrations, ensures the consumer groups, and starts the threads.
    pub fn start(
        config: &Config,
        registry: Registry,
        stop: Arc<AtomicBool>,
    ) -> Result<Supervisor, SupervisorError> {
        Supervisor::start_with_hooks(config, registry, stop, Hooks::default())
    }

    /// [`Supervisor::start`] with test or benchmark hooks switched on.
    #[cfg(feature = "test-hooks")]
    pub fn start_hooked(
        config: &Config,
        registry: Registry,
        stop: Arc<AtomicBool>,
        hooks: Hooks,
    ) -> Result<Supervisor, SupervisorError> {
        Supervisor::start_with_hooks(config, registry, stop, hooks)
    }

    fn start_with_hooks(
        config: &Config,
        registry: Registry,
        stop: Arc<AtomicBool>,
        hooks: Hooks,
    ) -> Result<Supervisor, SupervisorError> {
        let postgres = pool::Postgres::new(&config.postgres.database_url, &config.postgres.tls)?;
        log::info!(
            "connecting: redis {} postgres {} (TLS {})",
            config.redis.redis_url,
            config.postgres.database_url,
            postgres.tls_mode()
        );
        if hooks != Hooks::default() {
            log::warn!("test hooks on: {hooks:?}; not for production");
        }
        // Bound and answering before anything connects: a taken port fails the start at once,
        // and probes get "starting" (not silence) while start-up waits for the services.
        let pipeline: Pipeline = Arc::default();
        let http = match config.worker.metrics_addr {
            Some(Listen(Some(addr))) => {
                let endpoint =
                    Endpoint::bind(addr).map_err(|source| SupervisorError::Listen { addr, source })?;
                Some(endpoint.serve(Arc::clone(&pipeline)).map_err(SupervisorError::Spawn)?)
            }
            _ => None,
        };
        ensure_groups(config, &stop)?;
        migrate_with_retry(&postgres, &stop)?;
        let postgres_outage = Arc::new(Outage::new("Postgres"));
        let pool = postgres.pool(config.worker.workers, Arc::clone(&postgres_outage));
        let shared = Arc::new(Shared {
            config: config.clone(),
            consumer: config.worker.consumer_name(),
            hooks,
            counters: Arc::new(Counters::default()),
            metrics: crate::observe::metrics::Metrics::default(),
            redis_outage: Outage::new("Redis"),
            postgres_outage,
            inflight: Arc::new(Inflight::new(config.worker.max_inflight, config.worker.batch)),
            statement_refused: Episode::default(),
            ack_refused: Episode::default(),
            dead_letter_refused: Episode::default(),
            queries: Queries::new(postgres.connector()),
            heartbeats: Heartbeats::new(config.worker.workers),
            stop,
            stop_deadline: OnceLock::new(),
        });
        log::info!(
            "Event consumer started: streams={} group={} consumer={} workers={} batch={} max_inflight={} \
             handlers={}",
            config.group.streams.join(","),
            config.group.name,
            shared.consumer,
            config.worker.workers,
            config.worker.batch,
            config.worker.max_inflight,
            registry.types().join(",")
        );

        let (tx, rx) = crossbeam_channel::bounded(config.worker.workers);
        let reader = {
            let shared = Arc::clone(&shared);
            spawn("reader", move || reader::run(shared, tx))?
        };
        let registry = Arc::new(registry);
        let mut workers = Vec::with_capacity(config.worker.workers);
        for n in 1..=config.worker.workers {
            let (shared, pool, registry, rx) =
                (Arc::clone(&shared), pool.clone(), Arc::clone(&registry), rx.clone());
            workers.push(spawn(&format!("worker-{n}"), move || worker::run(shared, n, pool, registry, rx))?);
        }
        let (stats_done, done_rx) = crossbeam_channel::bounded(0);
        let stats = {
            let (shared, pool) = (Arc::clone(&shared), pool.clone());
            spawn("stats", move || stats::run(shared, pool, done_rx))?
        };
        let _ = pipeline.set(Arc::clone(&shared));
        service::ready();
        Ok(Supervisor { shared, reader, workers, stats, stats_done, http })
    }

    /// The live counters (for tests and status reporting); they outlive the supervisor.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.shared.counters)
    }

    /// Where the metrics endpoint listens, if one is configured (the port the OS chose, for `:0`).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(Serving::addr)
    }

    /// Asks the pipeline to stop; [`Supervisor::wait`] then drains and returns.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }

    /// Runs until stopped (or until a thread dies), then drains and returns the final counts.
    pub fn wait(self) -> Result<Snapshot, SupervisorError> {
        let mut died = None;
        let mut watchdog = service::watchdog_interval().map(|i| Watchdog::new(i, &self.shared.config));
        while !self.shared.stopping() {
            if let Some(w) = watchdog.as_mut() {
                w.feed_if_alive(&self.shared.heartbeats);
            }
            let threads = std::iter::once(&self.reader).chain(&self.workers).chain([&self.stats]);
            let finished =
                threads.into_iter().find(|t| t.is_finished()).map(|t| t.thread().name().map(String::from));
            let finished = finished
                .or_else(|| self.http.as_ref().filter(|h| h.is_finished()).map(|_| Some("metrics".into())));
            if let Some(name) = finished {
                died = Some(name.unwrap_or_else(|| "?".into()));
                log::error!("thread {} ended unexpectedly; shutting down", died.as_deref().unwrap_or("?"));
                self.stop();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        log::info!("stopping: finishing batches already read");
        service::stopping(STOP_LIMIT + Duration::from_secs(2));
        self.finish_or_cancel();
        let mut panicked = Vec::new();
        let mut join = |h: JoinHandle<()>| {
            let name = h.thread().name().unwrap_or("?").to_string();
            if !h.is_finished() {
                // Still blocked past the stop limit (a server that swallowed even the cancel
                // request): left behind; its batch stays pending in Redis.
                return;
            }
            if h.join().is_err() {
                panicked.push(name);
            }
        };
        join(self.reader);
        self.workers.into_iter().for_each(&mut join);
        drop(self.stats_done);
        join(self.stats);
        drop(self.http); // stops the endpoint and releases its port
        let last = self.shared.counters.snapshot();
        log::info!("final stats: {last}");
        match died.or_else(|| panicked.into_iter().next()) {
            Some(name) => Err(SupervisorError::ThreadDied(name)),
            None => Ok(last),
        }
    }
}

/// systemd's watchdog (`WatchdogSec=`): fed every quarter interval, but only while every
/// watched thread beat within half of it; a stuck thread lets systemd restart the service.
struct Watchdog {
    interval: Duration,
    next: Instant,
    starved: bool,
}

impl Watchdog {
    fn new(interval: Duration, config: &Config) -> Watchdog {
        log::info!("systemd watchdog: {interval:?}; fed while the reader and every worker beat");
        // The reader is silent for up to one read; a worker for up to one pool wait and backoff.
        let quiet = config.worker.read_timeout().max(Duration::from_secs(10));
        if interval / 2 < quiet {
            log::warn!(
                "WatchdogSec={interval:?} is short: a thread may be quiet for {quiet:?} (STREAMSINK_BLOCK + \
                 10 s) without being stuck; set WatchdogSec to at least {:?}",
                quiet * 2
            );
        }
        Watchdog { interval, next: Instant::now(), starved: false }
    }

    fn feed_if_alive(&mut self, heartbeats: &Heartbeats) {
        if Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + self.interval / 4;
        match heartbeats.stalest() {
            Some((name, age)) if age > self.interval / 2 => {
                if !self.starved {
                    log::error!(
                        "{name} has shown no sign of life for {:.1}s; withholding the watchdog ping \
                         (systemd restarts the service if it does not recover)",
                        age.as_secs_f64()
                    );
                    self.starved = true;
                }
            }
            _ => {
                if self.starved {
                    log::info!("every thread is alive again; feeding the watchdog");
                    self.starved = false;
                }
                service::watchdog();
            }
        }
    }
}

impl Supervisor {
    /// Waits for the reader and the workers to finish; at the stop deadline, cancels the
    /// statements still running (a lock or a stalled server would hold them indefinitely),
    /// whose batches then stay pending in Redis. At [`STOP_LIMIT`] it stops waiting: a thread
    /// still blocked then (the server did not even answer the cancel request) is left behind.
    fn finish_or_cancel(&self) {
        let mut cancelled = false;
        let limit =
            Instant::now() + (STOP_LIMIT - STOP_GRACE) + self.shared.time_left().unwrap_or(STOP_GRACE);
        while !(self.reader.is_finished() && self.workers.iter().all(JoinHandle::is_finished)) {
            if Instant::now() >= limit {
                let stuck = std::iter::once(&self.reader).chain(&self.workers).filter(|t| !t.is_finished());
                let names: Vec<&str> = stuck.map(|t| t.thread().name().unwrap_or("?")).collect();
                log::error!(
                    "stopping: {} still blocked after {STOP_LIMIT:?} (a server that does not answer); \
                     exiting without them: their entries stay pending and are redelivered",
                    names.join(", ")
                );
                return;
            }
            if !cancelled && self.shared.time_left().is_some_and(|left| left.is_zero()) {
                let n = self.shared.queries.cancel_all();
                if n > 0 {
                    log::warn!(
                        "stopping: {n} batch writes still running after {STOP_GRACE:?}; cancelled \
                         (their entries stay pending and are redelivered)"
                    );
                }
                cancelled = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, SupervisorError> {
    std::thread::Builder::new().name(name.to_string()).spawn(f).map_err(SupervisorError::Spawn)
}

/// Creates every stream's group (BUSYGROUP is fine), retrying while Redis is unreachable.
fn ensure_groups(config: &Config, stop: &AtomicBool) -> Result<(), SupervisorError> {
    let url = &config.redis.redis_url;
    let attempt = || {
        let mut con = broker::connect(&config.redis, broker::COMMAND_TIMEOUT).map_err(|source| {
            // A refused certificate, or TLS not spoken as configured: settings or certificates
            // need an operator. At start nothing has yet proved them right, so give up (exit 1;
            // systemd restarts within its start limit) rather than wait in silence for READY.
            let refusal = tls::is_refusal(&source);
            let e = SupervisorError::RedisConnect { url: url.clone(), source };
            if refusal { Failure::Fatal(e) } else { Failure::Wait(e) }
        })?;
        for s in config.group.streams.iter() {
            match group::ensure_group(&mut con, s, &config.group.name, &config.worker.group_start) {
                Ok(true) => {
                    log::info!(
                        "created consumer group {} on {s} at {}",
                        config.group.name,
                        config.worker.group_start
                    )
                }
                Ok(false) => {}
                Err(e) if e.is_connection() => return Err(Failure::Wait(e.into())),
                Err(e) => return Err(Failure::Fatal(e.into())),
            }
        }
        Ok(())
    };
    let on_wait =
        |e: &SupervisorError, n, delay| log::warn!("start-up: {e} (attempt {n}); retrying in {delay:?}");
    retry(stop, attempt, on_wait).map_err(startup_gave_up)
}

/// Applies migrations, retrying (and logging each attempt) while Postgres is unreachable. Its
/// connection is made outside the pool, so a failure is the client's own error: a TLS refusal
/// (`SinkError::is_infrastructure` is false for it) gives up, as for Redis.
fn migrate_with_retry(postgres: &pool::Postgres, stop: &AtomicBool) -> Result<(), SupervisorError> {
    let attempt = || {
        let applied = postgres
            .connect()
            .and_then(|mut c| migrate::migrate_waiting_at_most(&mut c, Duration::from_secs(2)))
            .map_err(|e| {
                if e.is_infrastructure() { Failure::Wait(e.into()) } else { Failure::Fatal(e.into()) }
            })?;
        if !applied.is_empty() {
            log::info!("applied migrations {applied:?}");
        }
        Ok(())
    };
    let on_wait = |e: &SupervisorError, n, delay| {
        log::warn!("start-up: postgres not ready (attempt {n}): {e}; retrying in {delay:?}")
    };
    retry(stop, attempt, on_wait).map_err(startup_gave_up)
}

/// A stop during start-up is [`SupervisorError::Stopped`], whatever was being waited for.
fn startup_gave_up(gave_up: GaveUp<SupervisorError>) -> SupervisorError {
    match gave_up {
        GaveUp::Stopped(_) => SupervisorError::Stopped,
        GaveUp::Fatal(e) => e,
    }
}

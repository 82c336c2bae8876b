//! Counters shared by all threads, and the stats thread that logs them every interval with the
//! group's pending count and lag as Redis reports them.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::stream;

/// Monotonic totals since start. Workers add; the stats thread and tests read.
#[derive(Debug, Default)]
pub struct Counters {
    /// Entries finished: written (or found duplicate) or dead-lettered, and acknowledged.
    pub processed: AtomicU64,
    /// Events newly inserted into `events`.
    pub inserted: AtomicU64,
    /// Events already present (redeliveries, repeated ids): acknowledged, nothing changed.
    pub duplicates: AtomicU64,
    /// Handler failures (event row kept, handler effect rolled back).
    pub handler_errors: AtomicU64,
    /// Entries moved to a dead-letter stream.
    pub dead_lettered: AtomicU64,
    /// Entries Redis confirmed acknowledged (XACK's count).
    pub acknowledged: AtomicU64,
    /// Entries taken over from the pending list (own leftovers, dead consumers' entries).
    pub reclaimed: AtomicU64,
    /// Pending entries deleted from the stream (trimmed) before anyone processed them.
    pub lost_upstream: AtomicU64,
}

/// A point-in-time copy of [`Counters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub processed: u64,
    pub inserted: u64,
    pub duplicates: u64,
    pub handler_errors: u64,
    pub dead_lettered: u64,
    pub acknowledged: u64,
    pub reclaimed: u64,
    pub lost_upstream: u64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            processed: get(&self.processed),
            inserted: get(&self.inserted),
            duplicates: get(&self.duplicates),
            handler_errors: get(&self.handler_errors),
            dead_lettered: get(&self.dead_lettered),
            acknowledged: get(&self.acknowledged),
            reclaimed: get(&self.reclaimed),
            lost_upstream: get(&self.lost_upstream),
        }
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "processed={} inserted={} duplicates={} handler_errors={} dead_lettered={} acknowledged={} \
             reclaimed={} lost_upstream={}",
            self.processed,
            self.inserted,
            self.duplicates,
            self.handler_errors,
            self.dead_lettered,
            self.acknowledged,
            self.reclaimed,
            self.lost_upstream
        )
    }
}

/// What the stats thread needs to ask Redis about the group.
pub struct StatsSource {
    pub redis_url: String,
    pub streams: Vec<String>,
    pub group: String,
}

/// Runs the stats thread: one info line every `interval` until `done` is closed.
pub fn run(
    counters: &Counters,
    source: StatsSource,
    interval: Duration,
    done: Receiver<()>,
    stop: &AtomicBool,
) {
    let mut redis: Option<redis::Connection> = None;
    let mut last = counters.snapshot();
    let mut last_at = Instant::now();
    loop {
        match done.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = counters.snapshot();
        let secs = last_at.elapsed().as_secs_f64().max(0.001);
        let rate = (now.processed - last.processed) as f64 / secs;
        let (pending, lag) = group_figures(&mut redis, &source, stop);
        log::info!("stats: {now} rate={rate:.1}/s pending={pending} lag={lag}");
        last = now;
        last_at = Instant::now();
    }
}

/// Pending count and lag summed over the streams, as text (`?` when Redis is unreachable,
/// `n/a` when it does not report lag).
fn group_figures(
    redis: &mut Option<redis::Connection>,
    source: &StatsSource,
    stop: &AtomicBool,
) -> (String, String) {
    if redis.is_none() && !stop.load(Ordering::Relaxed) {
        *redis = stream::connect(&source.redis_url, stream::COMMAND_TIMEOUT).ok();
    }
    let Some(con) = redis.as_mut() else {
        return ("?".into(), "?".into());
    };
    let mut pending = 0u64;
    let mut lag: Option<u64> = Some(0);
    for s in &source.streams {
        let figures = stream::pending_count(con, s, &source.group)
            .and_then(|p| Ok((p, stream::group_lag(con, s, &source.group)?)));
        match figures {
            Ok((p, l)) => {
                pending += p;
                lag = lag.zip(l).map(|(a, b)| a + b);
            }
            Err(e) => {
                log::debug!("stats: {e}");
                *redis = None;
                return ("?".into(), "?".into());
            }
        }
    }
    (pending.to_string(), lag.map_or_else(|| "n/a".into(), |l| l.to_string()))
}

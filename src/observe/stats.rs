//! The stats thread: every few seconds, the one-line STATUS `systemctl status` shows (rate,
//! lag, pending, oldest pending age, time since the last commit, the outage under way); every
//! stats interval, one log line of counters, rate, the group's pending count and lag as Redis
//! reports them, and the bytes of entries held in the process. A final line at shutdown comes
//! from the supervisor.

use crate::broker::Redis;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::service;
use crate::broker;
use crate::broker::group::{self, StreamFigures};
use crate::sink::pool::Pool;
use crate::supervisor::Shared;

/// How often the STATUS line is refreshed (or the stats interval, if shorter).
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// How long the idle probe of Postgres waits for a connection.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// Runs the stats thread until `done` is closed.
pub(crate) fn run(shared: Arc<Shared>, pool: Pool, done: Receiver<()>) {
    let interval = shared.config.worker.stats_interval;
    let tick = STATUS_INTERVAL.min(interval);
    let mut redis: Option<Redis> = None;
    let (mut logged, mut logged_at) = (shared.counters.snapshot(), Instant::now());
    let (mut ticked, mut ticked_at) = (logged, logged_at);
    // The figures `/metrics` and `/health/ready` read exist from the start, not a tick later.
    shared.metrics.set_streams(stream_figures(&mut redis, &shared));
    loop {
        match done.recv_timeout(tick) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = shared.counters.snapshot();
        probe_postgres_if_idle(&shared, &pool, tick);
        let streams = stream_figures(&mut redis, &shared);
        let figures = Figures::sum(&streams);
        shared.metrics.set_streams(streams);
        let rate =
            |since: u64, at: Instant| (now.processed - since) as f64 / at.elapsed().as_secs_f64().max(0.001);
        service::status(&status_line(&shared, rate(ticked.processed, ticked_at), &figures));
        (ticked, ticked_at) = (now, Instant::now());
        if logged_at.elapsed() + tick / 2 >= interval {
            let held_mib = shared.inflight.bytes() as f64 / (1024.0 * 1024.0);
            let (pending, lag) = (figures.pending_text(), figures.lag_text());
            let rate = rate(logged.processed, logged_at);
            log::info!("stats: {now} rate={rate:.1}/s pending={pending} lag={lag} held={held_mib:.1}MiB");
            (logged, logged_at) = (now, Instant::now());
        }
    }
}

/// The group's figures summed over the streams; `None` where Redis did not answer (or, for
/// lag, does not know).
#[derive(Debug, Default)]
struct Figures {
    pending: Option<u64>,
    lag: Option<u64>,
    /// Age of the oldest pending entry (from its id's time).
    oldest_pending: Option<Duration>,
    reachable: bool,
}

impl Figures {
    /// The group's figures over all streams; unreachable when Redis gave none.
    fn sum(streams: &[StreamFigures]) -> Figures {
        if streams.is_empty() {
            return Figures::default();
        }
        let mut f = Figures { pending: Some(0), lag: Some(0), reachable: true, ..Figures::default() };
        for s in streams {
            f.pending = f.pending.zip(s.pending).map(|(a, b)| a + b);
            f.lag = f.lag.zip(s.lag).map(|(a, b)| a + b);
            f.oldest_pending = f.oldest_pending.max(s.oldest_pending);
        }
        f
    }

    fn pending_text(&self) -> String {
        self.pending.map_or_else(|| "?".into(), |p| p.to_string())
    }

    fn lag_text(&self) -> String {
        match (self.reachable, self.lag) {
            (false, _) => "?".into(),
            (true, None) => "n/a".into(),
            (true, Some(l)) => l.to_string(),
        }
    }
}

/// `rate 812/s, lag 0, pending 37, oldest pending 2s, last commit 0s ago` and, during an
/// outage, `; Postgres unavailable for 42s`.
fn status_line(shared: &Shared, rate: f64, f: &Figures) -> String {
    let mut line = format!("rate {rate:.0}/s, lag {}, pending {}", f.lag_text(), f.pending_text());
    if let Some(age) = f.oldest_pending {
        line.push_str(&format!(", oldest pending {}s", age.as_secs()));
    }
    match shared.counters.since_last_commit() {
        Some(ago) => line.push_str(&format!(", last commit {}s ago", ago.as_secs())),
        None => line.push_str(", no commit yet"),
    }
    for outage in [&shared.postgres_outage, &shared.redis_outage] {
        if let Some(lasted) = outage.lasting() {
            line.push_str(&format!("; {} unavailable for {}s", outage.name(), lasted.as_secs()));
        }
    }
    line
}

/// Asks Postgres `SELECT 1` when no batch committed during the last `tick`: an idle worker
/// notices nothing of a database gone away (only a write or a pool refusal starts an outage),
/// and `/health/ready` and `streamsink_up` must. A commit proves it answers; so the probe costs
/// nothing while work flows.
fn probe_postgres_if_idle(shared: &Shared, pool: &Pool, tick: Duration) {
    if shared.counters.since_last_commit().is_some_and(|ago| ago < tick) {
        shared.metrics.postgres_answered(true);
        return;
    }
    let answered =
        pool.get_timeout(PROBE_WAIT).ok().is_some_and(|mut client| client.simple_query("SELECT 1").is_ok());
    shared.metrics.postgres_answered(answered);
}

/// Each stream's length, pending count, oldest pending age, lag and dead-letter length, as
/// Redis reports them; empty when Redis did not answer (the connection is then dropped and
/// made again next time). A missing group is a figure (`group_exists: false`), not a failure.
fn stream_figures(redis: &mut Option<Redis>, shared: &Shared) -> Vec<StreamFigures> {
    if redis.is_none() && !shared.stopping() {
        *redis = broker::connect(&shared.config.redis, broker::COMMAND_TIMEOUT).ok();
    }
    let Some(con) = redis.as_mut() else {
        return Vec::new();
    };
    let group = &shared.config.group.name;
    let now = jiff::Timestamp::now();
    let mut all = Vec::with_capacity(shared.config.group.streams.len());
    for s in shared.config.group.streams.iter() {
        match group::stream_figures(con, s, group, now) {
            Ok(f) => all.push(f),
            Err(e) => {
                log::debug!("stats: {e}");
                *redis = None;
                return Vec::new();
            }
        }
    }
    all
}

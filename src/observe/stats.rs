//! The stats thread: every interval, one line of counters, rate, the group's pending count
//! and lag as Redis reports them, and the bytes of entries held in the process; a final line at shutdown comes from the supervisor.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::broker::{self, group};
use crate::supervisor::Shared;

/// Runs the stats thread: one info line every stats interval until `done` is closed.
pub(crate) fn run(shared: Arc<Shared>, done: Receiver<()>) {
    let interval = shared.config.worker.stats_interval;
    let mut redis: Option<redis::Connection> = None;
    let mut last = shared.counters.snapshot();
    let mut last_at = Instant::now();
    loop {
        match done.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = shared.counters.snapshot();
        let secs = last_at.elapsed().as_secs_f64().max(0.001);
        let rate = (now.processed - last.processed) as f64 / secs;
        let (pending, lag) = group_figures(&mut redis, &shared);
        let held_mib = shared.inflight.bytes() as f64 / (1024.0 * 1024.0);
        log::info!("stats: {now} rate={rate:.1}/s pending={pending} lag={lag} held={held_mib:.1}MiB");
        last = now;
        last_at = Instant::now();
    }
}

/// Pending count and lag summed over the streams, as text (`?` when Redis is unreachable,
/// `n/a` when it does not report lag).
fn group_figures(redis: &mut Option<redis::Connection>, shared: &Shared) -> (String, String) {
    if redis.is_none() && !shared.stopping() {
        *redis = broker::connect(&shared.config.redis.redis_url, broker::COMMAND_TIMEOUT).ok();
    }
    let Some(con) = redis.as_mut() else {
        return ("?".into(), "?".into());
    };
    let group = &shared.config.group.name;
    let mut pending = 0u64;
    let mut lag: Option<u64> = Some(0);
    for s in shared.config.group.streams.iter() {
        let figures =
            group::pending_count(con, s, group).and_then(|p| Ok((p, group::group_lag(con, s, group)?)));
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

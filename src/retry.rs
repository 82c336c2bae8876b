//! How faults are waited out: capped exponential backoff, a sleep that a stop request cuts
//! short, and an [`Outage`] that logs a fault once when it starts and once when it clears.

use std::fmt::Display;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Delays that double from `min` to `max`; `reset` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, next: min }
    }

    /// The 100 ms → 3 s schedule used for every reconnect.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(3))
    }

    /// The delay to wait now; the following one is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Sleeps for `d`, waking early if `stop` is set. Returns `false` if it was stopped.
pub fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// One dependency's (Redis's or Postgres's) outage state, shared by every thread using it, so
/// an outage is logged once when it starts (warn) and once when it clears (info, with its
/// length), not once per attempt per thread.
#[derive(Debug)]
pub struct Outage {
    name: &'static str,
    state: Mutex<OutageState>,
}

#[derive(Debug, Default)]
struct OutageState {
    since: Option<Instant>,
    cleared_at: Option<Instant>,
}

impl Outage {
    pub fn new(name: &'static str) -> Outage {
        Outage { name, state: Mutex::new(OutageState::default()) }
    }

    /// Records a failed attempt; logs only if no outage was already under way.
    pub fn fault(&self, who: &str, error: &dyn Display) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.since.is_none() {
            state.since = Some(Instant::now());
            log::warn!("{} unavailable ({who}): {error}; retrying with backoff", self.name);
        } else {
            log::debug!("{} still unavailable ({who}): {error}", self.name);
        }
    }

    /// Records a success; logs the outage's length if one was under way.
    pub fn cleared(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(start) = state.since.take() {
            state.cleared_at = Some(Instant::now());
            log::info!("{} available again after {:.1}s", self.name, start.elapsed().as_secs_f64());
        }
    }

    /// True when no outage is under way and none ended within `calm`. While an outage holds
    /// batches back, their entries look idle to Redis; reclaiming them then would spend their
    /// delivery budget on a fault that is not theirs.
    pub fn is_settled(&self, calm: Duration) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.since.is_none() && state.cleared_at.is_none_or(|t| t.elapsed() >= calm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::reconnect();
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 3000, 3000, 3000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}

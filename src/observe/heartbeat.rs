//! Heartbeats of the reader and the workers, so that the supervisor pings systemd's watchdog
//! only while every one of them is making progress or waiting on purpose.
//!
//! Invariant: a thread beats at least every few seconds while it is alive: on every unit of
//! work, on every wait it chose (an empty stream, a full channel, a backoff in an outage). A
//! thread that is stuck (a statement that never returns, a deadlock) or dead stops beating, and
//! the watchdog ping is withheld until it beats again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One heartbeat per watched thread.
#[derive(Debug)]
pub(crate) struct Heartbeats {
    start: Instant,
    beats: Vec<(String, AtomicU64)>,
}

/// Which thread beats: the reader, or worker `n` (from 1).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Beat {
    Reader,
    Worker(usize),
}

impl Heartbeats {
    /// Heartbeats for the reader and `workers` workers, all fresh now.
    pub(crate) fn new(workers: usize) -> Heartbeats {
        let names = std::iter::once("reader".to_string()).chain((1..=workers).map(|n| format!("worker-{n}")));
        Heartbeats { start: Instant::now(), beats: names.map(|n| (n, AtomicU64::new(0))).collect() }
    }

    /// `who` is alive now.
    pub(crate) fn beat(&self, who: Beat) {
        let i = match who {
            Beat::Reader => 0,
            Beat::Worker(n) => n,
        };
        if let Some((_, at)) = self.beats.get(i) {
            at.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// The thread that beat longest ago, and how long ago.
    pub(crate) fn stalest(&self) -> Option<(&str, Duration)> {
        let now = self.start.elapsed().as_millis() as u64;
        self.beats
            .iter()
            .map(|(name, at)| {
                (name.as_str(), Duration::from_millis(now.saturating_sub(at.load(Ordering::Relaxed))))
            })
            .max_by_key(|(_, age)| *age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stalest_thread_is_the_one_that_beat_longest_ago() {
        let h = Heartbeats::new(2);
        std::thread::sleep(Duration::from_millis(20));
        h.beat(Beat::Reader);
        h.beat(Beat::Worker(2));
        let (name, age) = h.stalest().unwrap();
        assert_eq!(name, "worker-1");
        assert!(age >= Duration::from_millis(20));
        h.beat(Beat::Worker(1));
        assert!(h.stalest().unwrap().1 < Duration::from_millis(20));
    }
}

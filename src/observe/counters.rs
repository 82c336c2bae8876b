//! Counters shared by all threads: workers and the reader add, the stats line and tests read.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic totals since start. Workers add; the stats thread and tests read.
#[derive(Debug, Default)]
pub struct Counters {
    /// Entries handed to the workers (read new, own pending, or reclaimed).
    pub read: AtomicU64,
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
    /// Events whose id was already stored with other content: dead-lettered.
    pub reused_ids: AtomicU64,
    /// When a batch transaction last committed (Unix milliseconds; 0 = never).
    pub last_commit_ms: AtomicU64,
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
    pub reused_ids: u64,
}

impl Counters {
    /// Adds `n`. Relaxed: the counters are independent totals, read for reporting only; no
    /// other memory is published through them.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records that a batch transaction committed now.
    pub fn committed(&self) {
        let now = jiff::Timestamp::now().as_millisecond().max(0) as u64;
        self.last_commit_ms.store(now, Ordering::Relaxed);
    }

    /// Time since the last commit, if there was one.
    pub fn since_last_commit(&self) -> Option<std::time::Duration> {
        let at = self.last_commit_ms.load(Ordering::Relaxed);
        let now = jiff::Timestamp::now().as_millisecond().max(0) as u64;
        (at > 0).then(|| std::time::Duration::from_millis(now.saturating_sub(at)))
    }

    /// Every counter read once; the figures are each exact but not taken at one instant.
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
            reused_ids: get(&self.reused_ids),
        }
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "processed={} inserted={} duplicates={} handler_errors={} dead_lettered={} acknowledged={} \
             reclaimed={} lost_upstream={} reused_ids={}",
            self.processed,
            self.inserted,
            self.duplicates,
            self.handler_errors,
            self.dead_lettered,
            self.acknowledged,
            self.reclaimed,
            self.lost_upstream,
            self.reused_ids
        )
    }
}

//! What the process holds: every entry read or claimed and not yet finished (queued in the
//! channel, being written, being acknowledged), counted in bytes against
//! `STREAMSINK_MAX_INFLIGHT`, and remembered by id so that this process never reclaims its own
//! entries and keeps them from looking idle to anyone else.
//!
//! Invariants:
//! - An entry is held from the moment the reader hands it over until its worker is done with
//!   it (acknowledged, or abandoned at shutdown): [`HeldBatch`] releases it when dropped, on
//!   every path, panics included.
//! - The reader asks [`Inflight::admit`] before every read; it answers with a COUNT that keeps
//!   the bytes held under the budget, judged by the largest entries seen recently, and with 1
//!   when nothing is held, so an entry larger than the whole budget is still read, alone.
//! - Entries held longer than a third of `claim_min_idle` are named by [`Inflight::due_refresh`]
//!   for the reader to re-claim to itself with `XCLAIM … JUSTID` (idle time reset, delivery
//!   count unchanged), so neither this process's XAUTOCLAIM nor another instance's takes them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::broker::Batch;
use crate::event::Entry;

/// Bytes an entry costs beyond its id, names and values: the `Entry` and its vectors.
const ENTRY_OVERHEAD: u64 = 64;

/// Copies of an entry the process makes while it writes one: the entry as read, the parsed
/// event, and the statement's parameters on their way to Postgres. The budget counts them
/// all, so that it bounds the memory the entries cost, not only their size.
const COPIES: u64 = 3;

/// The first reads ask for this many entries at most, then twice as many each time a read
/// comes back full, up to `STREAMSINK_BATCH`: a stream of 1 MB entries is not first read a
/// thousand at a time, before their size is known.
const FIRST_COUNT: usize = 16;

/// The process's holdings and its byte budget. Shared by the reader (which holds) and the
/// workers (whose finished batches release).
#[derive(Debug)]
pub(crate) struct Inflight {
    budget: u64,
    max_count: usize,
    state: Mutex<State>,
    released: Condvar,
}

#[derive(Debug, Default)]
struct State {
    bytes: u64,
    next_token: u64,
    /// Held batches by token.
    held: HashMap<u64, Record>,
    /// Estimated bytes of one entry: the largest seen in recent reads, decaying slowly.
    entry_size: u64,
    /// COUNT ceiling of the slow start.
    ramp: usize,
}

#[derive(Debug)]
struct Record {
    /// The batch itself, shared with its `HeldBatch`: its ids are read only when needed
    /// (a refresh, a reclaim), not copied on the hot path.
    batch: Arc<Batch>,
    bytes: u64,
    /// When Redis last reset these entries' idle time (delivery, claim or refresh).
    fresh_at: Instant,
}

/// A batch the process holds; dropping it releases its bytes and ids.
#[derive(Debug)]
pub(crate) struct HeldBatch {
    pub batch: Arc<Batch>,
    inflight: Arc<Inflight>,
    token: u64,
}

impl Drop for HeldBatch {
    fn drop(&mut self) {
        let mut state = self.inflight.lock();
        if let Some(record) = state.held.remove(&self.token) {
            state.bytes -= record.bytes;
        }
        drop(state);
        self.inflight.released.notify_all();
    }
}

/// The bytes `entry` costs, as the budget counts them: every copy made of it while it is
/// written.
pub(crate) fn entry_bytes(entry: &Entry) -> u64 {
    let fields: usize = entry.fields.iter().map(|(k, v)| k.len() + v.len()).sum();
    ((entry.id.len() + fields) as u64 + ENTRY_OVERHEAD) * COPIES
}

impl Inflight {
    /// A budget of `budget` bytes; reads never ask for more than `max_count` entries.
    pub(crate) fn new(budget: u64, max_count: usize) -> Inflight {
        let state = State { ramp: FIRST_COUNT.min(max_count), ..State::default() };
        Inflight { budget, max_count, state: Mutex::new(state), released: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many entries the next read may ask for, per stream of `streams`, waiting up to
    /// `wait` for held batches to be released if the budget is used up. `None` if it is still
    /// used up after `wait` (the caller refreshes, checks for a stop, and asks again).
    pub(crate) fn admit(&self, streams: usize, wait: Duration) -> Option<usize> {
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
        loop {
            if let Some(count) = self.count(&state, streams) {
                return Some(count);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state = self.released.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn count(&self, state: &State, streams: usize) -> Option<usize> {
        if state.bytes == 0 {
            // Nothing held: at least one entry, however large.
            return Some(self.affordable(state, self.budget, streams).max(1));
        }
        let free = self.budget.saturating_sub(state.bytes);
        match self.affordable(state, free, streams) {
            0 => None,
            n => Some(n),
        }
    }

    fn affordable(&self, state: &State, bytes: u64, streams: usize) -> usize {
        let size = state.entry_size.max(ENTRY_OVERHEAD);
        let n = bytes / size / streams.max(1) as u64;
        (n.min(state.ramp as u64) as usize).min(self.max_count)
    }

    /// Holds `batch`, read or claimed (so made fresh in Redis) at `fresh_at`, and learns its
    /// entry sizes for the next [`Inflight::admit`]. `asked` is the COUNT the read asked for.
    pub(crate) fn hold(self: &Arc<Inflight>, batch: Batch, asked: usize, fresh_at: Instant) -> HeldBatch {
        let sizes = batch.entries.iter().map(entry_bytes);
        let (bytes, largest) = sizes.fold((0, 0), |(sum, max), b| (sum + b, u64::max(max, b)));
        let batch = Arc::new(batch);
        let mut state = self.lock();
        // The largest entry of this read, or the old estimate decaying by a quarter per read.
        state.entry_size = largest.max(state.entry_size - state.entry_size / 4);
        if batch.entries.len() >= asked {
            state.ramp = (state.ramp * 2).min(self.max_count);
        }
        state.bytes += bytes;
        let token = state.next_token;
        state.next_token += 1;
        let record = Record { batch: Arc::clone(&batch), bytes, fresh_at };
        state.held.insert(token, record);
        drop(state);
        HeldBatch { batch, inflight: Arc::clone(self), token }
    }

    /// Ids of `stream` the process holds now.
    pub(crate) fn held_ids(&self, stream: &str) -> HashSet<String> {
        let state = self.lock();
        let held = state.held.values().filter(|r| &*r.batch.stream == stream);
        held.flat_map(|r| r.batch.entries.iter().map(|e| e.id.clone())).collect()
    }

    /// True when nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().held.is_empty()
    }

    /// Held entries whose idle time in Redis is older than `age`, by stream; they are counted
    /// as fresh from now on, so the caller must refresh them (or they are named again after
    /// `age` if it failed: call again).
    pub(crate) fn due_refresh(&self, age: Duration) -> Vec<(Arc<str>, Vec<String>)> {
        let mut state = self.lock();
        let now = Instant::now();
        let mut due: Vec<(Arc<str>, Vec<String>)> = Vec::new();
        for record in state.held.values_mut().filter(|r| now.duration_since(r.fresh_at) >= age) {
            record.fresh_at = now;
            let ids = record.batch.entries.iter().map(|e| e.id.clone());
            match due.iter_mut().find(|(s, _)| *s == record.batch.stream) {
                Some((_, due_ids)) => due_ids.extend(ids),
                None => due.push((Arc::clone(&record.batch.stream), ids.collect())),
            }
        }
        due
    }

    /// Marks every held entry stale again (a refresh failed and must be retried).
    pub(crate) fn refresh_failed(&self) {
        let mut state = self.lock();
        let long_ago = Instant::now().checked_sub(Duration::from_secs(3600)).unwrap_or_else(Instant::now);
        for record in state.held.values_mut() {
            record.fresh_at = long_ago;
        }
    }

    /// Bytes held now (for tests and the stats line).
    pub(crate) fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize, value_len: usize) -> Batch {
        let entries = (0..n)
            .map(|i| Entry {
                id: format!("{i}-0"),
                fields: vec![(b"v".to_vec(), vec![b'x'; value_len])],
                deliveries: 1,
            })
            .collect();
        Batch { stream: Arc::from("s"), entries }
    }

    #[test]
    fn reads_start_small_and_grow_while_entries_are_small() {
        let inflight = Arc::new(Inflight::new(64 << 20, 1000));
        let mut counts = Vec::new();
        for _ in 0..8 {
            let n = inflight.admit(1, Duration::ZERO).unwrap();
            counts.push(n);
            drop(inflight.hold(batch(n, 300), n, Instant::now()));
        }
        assert_eq!(counts, vec![16, 32, 64, 128, 256, 512, 1000, 1000]);
        assert_eq!(inflight.bytes(), 0, "dropping a held batch releases it");
    }

    #[test]
    fn large_entries_shrink_the_count_and_a_full_budget_stops_reading() {
        let inflight = Arc::new(Inflight::new(24 << 20, 1000));
        let first = inflight.admit(1, Duration::ZERO).unwrap();
        let held = inflight.hold(batch(2, 1 << 20), first, Instant::now());
        // Two 1 MiB entries (3 MiB each with their copies) held of 24 MiB: five more fit.
        assert_eq!(inflight.admit(1, Duration::ZERO), Some(5));
        let more = inflight.hold(batch(6, 1 << 20), 5, Instant::now());
        assert_eq!(inflight.admit(1, Duration::from_millis(10)), None, "budget used up");
        drop(held);
        assert_eq!(inflight.admit(1, Duration::ZERO), Some(1));
        drop(more);
        assert!(inflight.is_empty());
    }

    #[test]
    fn an_entry_larger_than_the_budget_is_still_read_alone() {
        let inflight = Arc::new(Inflight::new(1 << 20, 1000));
        let held = inflight.hold(batch(1, 1 << 20), 1, Instant::now());
        assert_eq!(inflight.admit(1, Duration::ZERO), None, "nothing more while it is held");
        drop(held);
        assert_eq!(inflight.admit(1, Duration::ZERO), Some(1), "one at a time while they are this large");
    }

    #[test]
    fn entries_held_long_are_named_for_refresh_once_per_interval() {
        let inflight = Arc::new(Inflight::new(64 << 20, 1000));
        let _held = inflight.hold(batch(3, 10), 16, Instant::now());
        assert!(inflight.due_refresh(Duration::from_secs(60)).is_empty());
        let due = inflight.due_refresh(Duration::ZERO);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, vec!["0-0", "1-0", "2-0"]);
        assert!(inflight.due_refresh(Duration::from_secs(60)).is_empty(), "fresh again");
        inflight.refresh_failed();
        assert_eq!(inflight.due_refresh(Duration::from_secs(60)).len(), 1);
        assert_eq!(inflight.held_ids("s").len(), 3);
    }
}

//! How faults are waited out, in one place: [`retry`] runs an attempt until it succeeds,
//! backing off between transient failures and giving up when a stop is requested;
//! [`Staleness`] decides when a failed connection deserves one immediate retry; [`Outage`]
//! logs a dependency's fault once when it starts and once when it clears.
//!
//! Invariant: no retry in streamsink is a loop of its own: every one goes through [`retry`],
//! whose waits go through [`sleep_unless`], so a stop request cuts them short.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Delays that double from `min` to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { next: min, max }
    }

    /// The 100 ms → 3 s schedule every retry in streamsink uses.
    pub fn standard() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(3))
    }

    /// The delay to wait now; the following one is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
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

/// How one failed attempt should be retried; the caller classifies its own errors.
#[derive(Debug)]
pub enum Failure<E> {
    /// Try again at once (a stale connection, a conflict between transactions).
    Again,
    /// A transient fault: wait out the backoff, then try again.
    Wait(E),
    /// A fault that clears by itself in moments (a conflict between transactions): wait a
    /// short, growing delay (10 ms → 500 ms), then try again.
    Shortly(E),
    /// Retrying cannot help.
    Fatal(E),
}

/// Why [`retry`] returned without a result.
#[derive(Debug)]
pub enum GaveUp<E> {
    /// A stop was requested while waiting; carries the last transient error.
    Stopped(E),
    /// The attempt failed in a way retrying cannot fix.
    Fatal(E),
}

/// Runs `attempt` until it succeeds or fails fatally, waiting out [`Backoff::standard`]
/// after each [`Failure::Wait`] (and a short backoff after each [`Failure::Shortly`]). `on_wait` is told of each such failure (with the attempt's
/// number, from 1, and the delay about to be slept) so the caller can log it its own way.
///
/// The stop flag is checked only while waiting, never before an attempt: a worker draining
/// its last batches at shutdown still gets to try each one.
pub fn retry<T, E>(
    stop: &AtomicBool,
    mut attempt: impl FnMut() -> Result<T, Failure<E>>,
    mut on_wait: impl FnMut(&E, u32, Duration),
) -> Result<T, GaveUp<E>> {
    let mut backoff = Backoff::standard();
    let mut short = Backoff::new(Duration::from_millis(10), Duration::from_millis(500));
    let mut n = 1;
    let mut wait = |e: E, delay: Duration, n: &mut u32| {
        on_wait(&e, *n, delay);
        *n += 1;
        if sleep_unless(stop, delay) { Ok(()) } else { Err(GaveUp::Stopped(e)) }
    };
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(Failure::Again) => {}
            Err(Failure::Wait(e)) => wait(e, backoff.next_delay(), &mut n)?,
            Err(Failure::Shortly(e)) => wait(e, short.next_delay(), &mut n)?,
            Err(Failure::Fatal(e)) => return Err(GaveUp::Fatal(e)),
        }
    }
}

/// Whether a connection failure should be retried at once. A connection that has served
/// before may just be stale (the server restarted since it was opened): its first failure is
/// retried at once on a new connection. A failure on a fresh connection is a real fault.
#[derive(Debug, Clone)]
pub struct Staleness {
    fresh: bool,
}

impl Staleness {
    /// `fresh` is true when the connection about to be used has not served yet.
    pub fn new(fresh: bool) -> Staleness {
        Staleness { fresh }
    }

    /// A new connection was opened.
    pub fn connected(&mut self) {
        self.fresh = true;
    }

    /// The connection served a command.
    pub fn served(&mut self) {
        self.fresh = false;
    }

    /// After a connection failure: true (once) if the connection had served before, so the
    /// failure may be staleness, worth one immediate retry.
    pub fn retry_at_once(&mut self) -> bool {
        let had_served = !self.fresh;
        self.fresh = true;
        had_served
    }
}

/// A fault that lasts (a refused statement, a refused dead letter), logged once when it starts
/// and once when it ends, however many attempts meet it meanwhile.
#[derive(Debug, Default)]
pub struct Episode {
    since: Mutex<Option<Instant>>,
}

impl Episode {
    /// Records a failed attempt: true if it starts the episode (the caller logs it loudly).
    pub fn begin(&self) -> bool {
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        if since.is_some() {
            return false;
        }
        *since = Some(Instant::now());
        true
    }

    /// Records a success: how long the episode lasted, if one was under way.
    pub fn end(&self) -> Option<Duration> {
        self.since.lock().unwrap_or_else(|p| p.into_inner()).take().map(|t| t.elapsed())
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
    /// A TLS refusal was logged in the outage under way.
    refusal_logged: bool,
}

impl Outage {
    pub fn new(name: &'static str) -> Outage {
        Outage { name, state: Mutex::new(OutageState::default()) }
    }

    /// Records a failed attempt; logs only if no outage was already under way, or if `error`
    /// is the outage's first TLS refusal (`tls::is_refusal`: a certificate refused, TLS not
    /// spoken as configured). A refusal is logged at error level, whenever in the outage it
    /// comes: waiting alone will not end it, and an outage that began with a server going away
    /// may go on because the server came back with a certificate this client refuses.
    pub fn fault(&self, who: &str, error: &(dyn std::error::Error + 'static)) {
        let refusal = crate::tls::is_refusal(error);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if refusal && !state.refusal_logged {
            state.refusal_logged = true;
            state.since.get_or_insert_with(Instant::now);
            log::error!("{} refuses the TLS connection ({who}): {error}; retrying with backoff", self.name);
        } else if state.since.is_none() {
            state.since = Some(Instant::now());
            log::warn!("{} unavailable ({who}): {error}; retrying with backoff", self.name);
        } else {
            log::debug!("{} still unavailable ({who}): {error}", self.name);
        }
    }

    /// Records a success of a call issued at `issued`; logs the outage's length if one was
    /// under way. A call issued before the outage began proves nothing about it (it may have
    /// been answered just before the server went away), so it leaves the outage standing.
    pub fn cleared(&self, issued: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.since.is_some_and(|start| start > issued) {
            return;
        }
        if let Some(start) = state.since.take() {
            state.cleared_at = Some(Instant::now());
            state.refusal_logged = false;
            log::info!("{} available again after {:.1}s", self.name, start.elapsed().as_secs_f64());
        }
    }

    /// How long the outage under way has lasted; `None` if there is none.
    pub fn lasting(&self) -> Option<Duration> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).since.map(|t| t.elapsed())
    }

    /// The dependency's name (`Redis`, `Postgres`).
    pub fn name(&self) -> &'static str {
        self.name
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
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::standard();
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 3000, 3000, 3000]);
    }

    #[test]
    fn retry_waits_on_transient_failures_and_stops_on_fatal_ones() {
        let stop = AtomicBool::new(false);
        let mut calls = 0;
        let mut waits = Vec::new();
        let result: Result<u32, GaveUp<&str>> = retry(
            &stop,
            || {
                calls += 1;
                match calls {
                    1 => Err(Failure::Again),
                    2 => Err(Failure::Wait("down")),
                    _ => Ok(calls),
                }
            },
            |e, n, d| waits.push((*e, n, d.as_millis())),
        );
        assert_eq!(result.ok(), Some(3));
        assert_eq!(waits, vec![("down", 1, 100)]);
        let fatal: Result<(), _> = retry(&stop, || Err(Failure::Fatal("no")), |_: &&str, _, _| {});
        assert!(matches!(fatal, Err(GaveUp::Fatal("no"))));
    }

    #[test]
    fn retry_gives_up_when_stopped_while_waiting() {
        let stop = AtomicBool::new(true);
        let mut calls = 0;
        let result: Result<(), _> = retry(
            &stop,
            || {
                calls += 1;
                Err(Failure::Wait(calls))
            },
            |_, _, _| {},
        );
        assert!(matches!(result, Err(GaveUp::Stopped(1))), "one attempt even when stopped, then give up");
    }

    #[test]
    fn only_a_call_issued_during_an_outage_ends_it() {
        let outage = Outage::new("X");
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        outage.fault("t", &std::io::Error::other("down"));
        outage.cleared(before);
        assert!(!outage.is_settled(Duration::ZERO), "answered before the outage: still under way");
        outage.cleared(Instant::now());
        assert!(outage.is_settled(Duration::ZERO));
    }

    #[test]
    fn an_episode_starts_once_and_ends_once() {
        let e = Episode::default();
        assert!(e.begin());
        assert!(!e.begin(), "already under way");
        assert!(e.end().is_some());
        assert!(e.end().is_none());
        assert!(e.begin(), "a new episode");
    }

    #[test]
    fn conflicts_wait_briefly() {
        let stop = AtomicBool::new(false);
        let mut calls = 0;
        let mut waits = Vec::new();
        let result: Result<(), GaveUp<&str>> = retry(
            &stop,
            || {
                calls += 1;
                if calls < 3 { Err(Failure::Shortly("conflict")) } else { Ok(()) }
            },
            |_, n, d| waits.push((n, d.as_millis())),
        );
        assert!(result.is_ok());
        assert_eq!(waits, vec![(1, 10), (2, 20)]);
    }

    #[test]
    fn only_a_connection_that_served_gets_an_immediate_retry() {
        let mut s = Staleness::new(true);
        assert!(!s.retry_at_once(), "a fresh connection's failure is a fault");
        s.served();
        assert!(s.retry_at_once(), "a served connection may be stale");
        assert!(!s.retry_at_once(), "but only once");
        s.connected();
        assert!(!s.retry_at_once());
    }
}

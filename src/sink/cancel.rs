//! Cancelling the statements the workers have in flight, for a stop that cannot wait: a
//! statement blocked on a lock (or on a server that stopped answering) would otherwise hold
//! the process past its stop deadline.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use postgres::CancelToken;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The cancel tokens of the connections in use, one per worker writing, and the connector the
/// cancel requests go through: the one the connections were made with, so a request reaches a
/// server that accepts only TLS, in the same mode.
pub(crate) struct Queries {
    next: AtomicU64,
    running: Mutex<HashMap<u64, CancelToken>>,
    tls: MakeRustlsConnect,
}

impl std::fmt::Debug for Queries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queries").field("running", &self.lock().len()).finish()
    }
}

/// A registered connection; dropping it unregisters it.
pub(crate) struct Running<'q> {
    queries: &'q Queries,
    key: u64,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.queries.lock().remove(&self.key);
    }
}

impl Queries {
    pub(crate) fn new(tls: MakeRustlsConnect) -> Queries {
        Queries { next: AtomicU64::new(0), running: Mutex::default(), tls }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CancelToken>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the connection `token` belongs to while the returned guard lives.
    pub(crate) fn register(&self, token: CancelToken) -> Running<'_> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, token);
        Running { queries: self, key }
    }

    /// Asks the server to cancel whatever each registered connection is running. Each request
    /// is sent from a thread of its own, so an unreachable server cannot hold the caller.
    /// Returns how many were asked.
    pub(crate) fn cancel_all(&self) -> usize {
        let tokens: Vec<CancelToken> = self.lock().values().cloned().collect();
        for token in &tokens {
            let (token, tls) = (token.clone(), self.tls.clone());
            let spawned = std::thread::Builder::new().name("cancel".into()).spawn(move || {
                if let Err(e) = token.cancel_query(tls) {
                    log::debug!("cancel request failed: {e}");
                }
            });
            if let Err(e) = spawned {
                log::warn!("cannot start a thread to cancel a statement: {e}");
            }
        }
        tokens.len()
    }
}

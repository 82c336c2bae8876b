//! Handlers: projections maintained from events, keyed by event type. The registry is here;
//! each built-in handler has a file of its own (`sessions`).
//!
//! A handler runs inside the batch's transaction, on new events only (never on a duplicate),
//! under a savepoint: its failure rolls back its own effect and nothing else.

mod sessions;

use std::collections::BTreeMap;
use std::sync::Arc;

use postgres::Transaction;

use sessions::Sessions;

use crate::event::Event;
use crate::sink::StatementCache;
use crate::sink::fault::describe;

/// Why a handler could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event lacks something the handler needs.
    #[error("event {event_id}: {problem}")]
    Invalid { event_id: String, problem: String },
    /// A statement failed.
    #[error("{}", describe(.0))]
    Db(#[from] postgres::Error),
}

/// A projection of one or more event types.
pub trait Handler: Send + Sync {
    /// Applies `events` (new, of the types it is registered for, in stream order) within `tx`.
    /// One call per batch for all of them, so a handler can lock what it touches in one
    /// deterministic order (concurrent batches then cannot deadlock). Must give the same
    /// result whatever order events arrive in across batches. Prepare statements through
    /// `statements`. On error the caller rolls back to a savepoint and retries the events one
    /// by one to find the failing one.
    fn handle(
        &self,
        tx: &mut Transaction<'_>,
        statements: &mut StatementCache,
        events: &[&Event],
    ) -> Result<(), HandlerError>;
}

/// Event type → handler.
#[derive(Clone, Default)]
pub struct Registry {
    by_type: BTreeMap<String, Arc<dyn Handler>>,
}

impl Registry {
    /// A registry with no handlers: events are stored, nothing else.
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// The built-in handlers: `session.start` and `session.end` maintain `sessions`.
    pub fn builtin() -> Registry {
        let mut r = Registry::empty();
        let sessions: Arc<dyn Handler> = Arc::new(Sessions);
        r.register("session.start", Arc::clone(&sessions));
        r.register("session.end", sessions);
        r
    }

    /// Registers (or replaces) the handler of `event_type`. Register one `Arc` for several
    /// types to receive their events in one call.
    pub fn register(&mut self, event_type: &str, handler: Arc<dyn Handler>) {
        self.by_type.insert(event_type.to_string(), handler);
    }

    pub(crate) fn get(&self, event_type: &str) -> Option<&Arc<dyn Handler>> {
        self.by_type.get(event_type)
    }

    /// Registered types, sorted.
    pub(crate) fn types(&self) -> Vec<&str> {
        self.by_type.keys().map(String::as_str).collect()
    }
}

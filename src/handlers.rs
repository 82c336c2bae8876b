//! Handlers: projections maintained from events, keyed by event type.
//!
//! A handler runs inside the batch's transaction, on new events only (never on a duplicate),
//! under a savepoint: its failure rolls back its own effect and nothing else.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use postgres::Transaction;

use crate::event::Event;
use crate::store::{StatementCache, describe};

/// Why a handler could not apply an event.
#[derive(Debug)]
pub enum HandlerError {
    /// The event lacks something the handler needs.
    Invalid { event_id: String, problem: String },
    /// A statement failed.
    Db(postgres::Error),
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Invalid { event_id, problem } => write!(f, "event {event_id}: {problem}"),
            HandlerError::Db(e) => write!(f, "{}", describe(e)),
        }
    }
}

impl std::error::Error for HandlerError {}

impl From<postgres::Error> for HandlerError {
    fn from(e: postgres::Error) -> Self {
        HandlerError::Db(e)
    }
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

    pub fn get(&self, event_type: &str) -> Option<&Arc<dyn Handler>> {
        self.by_type.get(event_type)
    }

    /// Registered types, sorted.
    pub fn types(&self) -> Vec<&str> {
        self.by_type.keys().map(String::as_str).collect()
    }
}

/// The `sessions` projection of `session.start` and `session.end`. A start contributes the
/// start time and ids; an end the end time and reason. The upsert keeps the earliest start and
/// the latest end (ties by event id), and the winning start's workspace/device ids (an end's
/// fill in while no start has them), so every arrival order gives the same row.
#[derive(Debug, Clone, Copy)]
pub struct Sessions;

const UPSERT_SESSIONS: &str = "\
INSERT INTO sessions AS s (session_id, workspace_id, device_id, started_at, start_event_id,
                           ended_at, end_event_id, end_reason)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                     $6::timestamptz[], $7::text[], $8::text[])
ORDER BY 1 -- one lock order for every batch: concurrent batches cannot deadlock
ON CONFLICT (session_id) DO UPDATE SET
    (workspace_id, device_id, started_at, start_event_id) = (
        SELECT CASE WHEN w.wins THEN COALESCE(EXCLUDED.workspace_id, s.workspace_id)
                    ELSE COALESCE(s.workspace_id, EXCLUDED.workspace_id) END,
               CASE WHEN w.wins THEN COALESCE(EXCLUDED.device_id, s.device_id)
                    ELSE COALESCE(s.device_id, EXCLUDED.device_id) END,
               CASE WHEN w.wins THEN EXCLUDED.started_at ELSE s.started_at END,
               CASE WHEN w.wins THEN EXCLUDED.start_event_id ELSE s.start_event_id END
        FROM (SELECT EXCLUDED.started_at IS NOT NULL AND (s.started_at IS NULL
                     OR (EXCLUDED.started_at, EXCLUDED.start_event_id) < (s.started_at, s.start_event_id))
              AS wins) w),
    (ended_at, end_event_id, end_reason) = (
        SELECT CASE WHEN w.wins THEN EXCLUDED.ended_at ELSE s.ended_at END,
               CASE WHEN w.wins THEN EXCLUDED.end_event_id ELSE s.end_event_id END,
               CASE WHEN w.wins THEN EXCLUDED.end_reason ELSE s.end_reason END
        FROM (SELECT EXCLUDED.ended_at IS NOT NULL AND (s.ended_at IS NULL
                     OR (EXCLUDED.ended_at, EXCLUDED.end_event_id) > (s.ended_at, s.end_event_id))
              AS wins) w)";

impl Handler for Sessions {
    fn handle(
        &self,
        tx: &mut Transaction<'_>,
        statements: &mut StatementCache,
        events: &[&Event],
    ) -> Result<(), HandlerError> {
        for e in events {
            if e.session_id.is_none() {
                return Err(HandlerError::Invalid {
                    event_id: e.id.clone(),
                    problem: "no session_id".into(),
                });
            }
        }
        let statement = statements.prepare(tx, UPSERT_SESSIONS)?;
        // One upsert may not touch a row twice: events of the same session go to later rounds
        // (which only touch rows the first round already locked).
        for round in rounds_by_session(events) {
            let start = |e: &&Event| e.event_type == "session.start";
            let ids = |of_start: bool| -> Vec<Option<&str>> {
                round.iter().map(|e| (start(e) == of_start).then_some(e.id.as_str())).collect()
            };
            let time = |of_start: bool| -> Vec<Option<jiff::Timestamp>> {
                round.iter().map(|e| (start(e) == of_start).then_some(e.occurred_at)).collect()
            };
            let session: Vec<Option<&str>> = round.iter().map(|e| e.session_id.as_deref()).collect();
            let workspace: Vec<Option<&str>> = round.iter().map(|e| e.workspace_id.as_deref()).collect();
            let device: Vec<Option<&str>> = round.iter().map(|e| e.device_id.as_deref()).collect();
            let (started, start_ids) = (time(true), ids(true));
            let (ended, end_ids) = (time(false), ids(false));
            let reasons: Vec<Option<String>> =
                round.iter().map(|e| if start(e) { None } else { end_reason(e) }).collect();
            tx.execute(
                &statement,
                &[&session, &workspace, &device, &started, &start_ids, &ended, &end_ids, &reasons],
            )?;
        }
        Ok(())
    }
}

/// `data.reason` (or `data.end_reason`) of a session.end, if it is text.
fn end_reason(e: &Event) -> Option<String> {
    let data = e.data_value();
    ["reason", "end_reason"].iter().find_map(|k| data.get(*k).and_then(|v| v.as_str()).map(str::to_string))
}

/// Splits events into rounds in which no session id repeats, keeping stream order per session.
fn rounds_by_session<'a>(events: &[&'a Event]) -> Vec<Vec<&'a Event>> {
    let mut rounds: Vec<Vec<&'a Event>> = Vec::new();
    let mut next_round: HashMap<&'a str, usize> = HashMap::new();
    for e in events {
        let round = next_round.entry(e.session_id.as_deref().unwrap_or("")).or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push(e);
        *round += 1;
    }
    rounds
}

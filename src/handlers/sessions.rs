//! The built-in `sessions` projection of `session.start` and `session.end`.

use std::collections::HashMap;

use postgres::Transaction;

use super::{Handler, HandlerError};
use crate::event::Event;
use crate::sink::StatementCache;

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

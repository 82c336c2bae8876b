//! The set-based writes of a whole batch of events: a binary `COPY` for the common case (every
//! event new); for a batch holding a redelivery, a lookup of its ids and a `COPY` of the new
//! ones; and one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING` should another writer
//! store one of them between the two.
//!
//! Invariants: all three writes run inside the caller's transaction, so the event rows and
//! every handler's effect commit (or roll back) together; all three take the rows' locks in one
//! order, the ids' byte order (`COLLATE "C"`), so concurrent batches of any kind cannot deadlock
//! (the lookup takes no lock).

use std::collections::HashSet;

use bytes::{BufMut, BytesMut};
use postgres::Transaction;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type, accepts, to_sql_checked};

use super::StatementCache;
use crate::event::Event;

/// JSON text bound to a `json`/`jsonb` parameter as is: the jsonb wire format is a version byte
/// and the text. The caller guarantees the text is valid JSON (event parsing checks it).
#[derive(Debug, Clone, Copy)]
pub struct RawJson<'a>(pub &'a str);

impl ToSql for RawJson<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.put_u8(1);
        }
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    accepts!(JSON, JSONB);
    to_sql_checked!();
}

const INSERT_EVENTS: &str = "\
INSERT INTO events (id, type, occurred_at, session_id, workspace_id, device_id, data, attributes,
                    stream, stream_entry_id)
SELECT u.id, u.type, u.occurred_at, u.session_id, u.workspace_id, u.device_id, u.data,
       u.attributes, $9, u.entry_id
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
            $7::jsonb[], $8::jsonb[], $10::text[]) WITH ORDINALITY
     AS u(id, type, occurred_at, session_id, workspace_id, device_id, data, attributes, entry_id, n)
-- One lock order for every batch (concurrent batches cannot deadlock), the one COPY uses; of
-- one id repeated in the batch, the first in stream order is the one inserted (and the one
-- handlers see).
ORDER BY u.id COLLATE \"C\", u.n
ON CONFLICT (id) DO NOTHING
RETURNING CASE WHEN type = ANY($11::text[]) THEN id END";

const COPY_EVENTS: &str = "\
COPY events (id, type, occurred_at, session_id, workspace_id, device_id, data, attributes, stream,
             stream_entry_id) FROM STDIN (FORMAT binary)";

/// The columns of [`COPY_EVENTS`], in order.
const COPY_TYPES: [Type; 10] = [
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::JSONB,
    Type::TEXT,
    Type::TEXT,
];

/// Copies `events` of `stream` into `events` with one binary COPY, in id order: the cheapest
/// way in, where every event is new (PostgreSQL spends about half the time per row it spends on
/// `INSERT … ON CONFLICT`, whose speculative insertion every row pays). An id already stored
/// (a redelivery) or repeated in `events` fails it with a unique violation
/// ([`is_duplicate`]): the transaction is then aborted, and the caller redoes the batch with
/// [`copy_new`]. Public for the benchmark, whose ceiling is this same COPY.
pub fn copy_events(tx: &mut Transaction<'_>, stream: &str, events: &[Event]) -> Result<(), postgres::Error> {
    copy_rows(tx, stream, events.iter().collect())
}

/// [`copy_events`] of the events in `rows` (any order; sorted here).
fn copy_rows(
    tx: &mut Transaction<'_>,
    stream: &str,
    mut in_order: Vec<&Event>,
) -> Result<(), postgres::Error> {
    in_order.sort_unstable_by(|a, b| a.id.as_bytes().cmp(b.id.as_bytes()));
    let mut writer = BinaryCopyInWriter::new(tx.copy_in(COPY_EVENTS)?, &COPY_TYPES);
    for e in in_order {
        writer.write(&[
            &e.id,
            &e.event_type,
            &e.occurred_at,
            &e.session_id,
            &e.workspace_id,
            &e.device_id,
            &RawJson(&e.data),
            &RawJson(&e.attributes),
            &stream,
            &e.entry_id,
        ])?;
    }
    writer.finish()?;
    Ok(())
}

/// Which of a batch's ids are already stored: one primary-key lookup per id, no lock taken.
pub(crate) const STORED_IDS: &str = "SELECT id FROM events WHERE id = ANY($1)";

/// What [`copy_new`] did.
pub(crate) struct CopiedNew {
    /// The events copied: each id not stored yet, at its first position in the batch.
    pub inserted: Inserted,
    /// Positions in the batch of the events not copied (already stored, or an id repeated
    /// earlier in the batch): the only ones that can be an id reused with other content.
    pub skipped: Vec<usize>,
}

/// Copies the events of a batch whose id is not stored yet, after looking their ids up: a
/// redelivery costs one primary-key lookup, and the new events still go in by COPY (an
/// `INSERT … ON CONFLICT` costs PostgreSQL about 1.5 times as much per row). Of an id repeated in
/// the batch, the first in stream order is copied, as [`insert_events`] inserts it. `None` when
/// the COPY met an id stored meanwhile (another consumer writing the same entry after a claim):
/// the transaction is then aborted, and the caller redoes the batch with [`insert_events`].
pub(crate) fn copy_new(
    tx: &mut Transaction<'_>,
    cache: &mut StatementCache,
    stream: &str,
    events: &[Event],
    handled_types: &[&str],
) -> Result<Option<CopiedNew>, postgres::Error> {
    let statement = cache.prepare(tx, STORED_IDS)?;
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let rows = tx.query(&statement, &[&ids])?;
    let mut taken: HashSet<&str> = rows.iter().map(|r| r.get::<_, &str>(0)).collect();
    let mut fresh = Vec::with_capacity(events.len());
    let mut skipped = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if taken.insert(e.id.as_str()) {
            fresh.push(e);
        } else {
            skipped.push(i);
        }
    }
    let inserted = Inserted::of_new(fresh.iter().copied(), handled_types);
    if !fresh.is_empty() {
        match copy_rows(tx, stream, fresh) {
            Ok(()) => {}
            Err(e) if is_duplicate(&e) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(CopiedNew { inserted, skipped }))
}

/// True when `e` is a unique violation on an id already present. From [`copy_events`]: the
/// batch holds a duplicate, and goes through [`copy_new`] instead. Inside [`copy_new`]: another
/// writer stored one of the ids after the lookup, and the batch goes through [`insert_events`].
pub(crate) fn is_duplicate(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// Events of a batch whose id is stored with another type, time or data: an id reused by the
/// producer for a different event, not a redelivery. Run only when the insert found
/// duplicates, so a batch of new events never pays for it. A time the producer did not give
/// (null here) is not compared.
const REUSED_IDS: &str = "\
SELECT u.n
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::jsonb[]) WITH ORDINALITY
     AS u(id, type, occurred_at, data, n)
JOIN events e ON e.id = u.id
WHERE e.type <> u.type OR e.occurred_at <> u.occurred_at OR e.data <> u.data";

/// What one insert did.
#[derive(Debug, Default)]
pub struct Inserted {
    /// Rows that were new (the rest were already present: redeliveries or repeats).
    pub count: u64,
    /// Ids of the new rows whose type is in `handled_types`: the events handlers must see.
    pub to_handle: HashSet<String>,
}

impl Inserted {
    /// What a COPY of exactly the events `new` did: each became a row. For [`copy_events`] that
    /// is the whole batch (a repeated id would have failed it), for [`copy_new`] its fresh ids.
    pub(crate) fn of_new<'e>(
        new: impl ExactSizeIterator<Item = &'e Event>,
        handled_types: &[&str],
    ) -> Inserted {
        Inserted {
            count: new.len() as u64,
            to_handle: new
                .filter(|e| handled_types.contains(&e.event_type.as_str()))
                .map(|e| e.id.clone())
                .collect(),
        }
    }
}

/// Inserts `events` of `stream` in one statement. An id already present (a redelivery) changes
/// nothing; an id repeated within `events` is inserted once. Only the new ids of
/// `handled_types` come back as text: the others are counted, not transferred. Public for the
/// benchmark, which weighs it against [`copy_events`].
pub fn insert_events(
    tx: &mut Transaction<'_>,
    cache: &mut StatementCache,
    stream: &str,
    events: &[Event],
    handled_types: &[&str],
) -> Result<Inserted, postgres::Error> {
    let statement = cache.prepare(tx, INSERT_EVENTS)?;
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let times: Vec<jiff::Timestamp> = events.iter().map(|e| e.occurred_at).collect();
    let sessions: Vec<Option<&str>> = events.iter().map(|e| e.session_id.as_deref()).collect();
    let workspaces: Vec<Option<&str>> = events.iter().map(|e| e.workspace_id.as_deref()).collect();
    let devices: Vec<Option<&str>> = events.iter().map(|e| e.device_id.as_deref()).collect();
    let data: Vec<RawJson> = events.iter().map(|e| RawJson(&e.data)).collect();
    let attributes: Vec<RawJson> = events.iter().map(|e| RawJson(&e.attributes)).collect();
    let entry_ids: Vec<&str> = events.iter().map(|e| e.entry_id.as_str()).collect();
    let rows = tx.query(
        &statement,
        &[
            &ids,
            &types,
            &times,
            &sessions,
            &workspaces,
            &devices,
            &data,
            &attributes,
            &stream,
            &entry_ids,
            &handled_types,
        ],
    )?;
    Ok(Inserted {
        count: rows.len() as u64,
        to_handle: rows.iter().filter_map(|r| r.get::<_, Option<String>>(0)).collect(),
    })
}

/// Positions in `events` of the events whose id is already stored with a different type,
/// timestamp or data (compared as jsonb, so key order and spacing do not matter).
pub(crate) fn reused_ids(
    tx: &mut Transaction<'_>,
    cache: &mut StatementCache,
    events: &[&Event],
) -> Result<Vec<usize>, postgres::Error> {
    let statement = cache.prepare(tx, REUSED_IDS)?;
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let times: Vec<Option<jiff::Timestamp>> =
        events.iter().map(|e| (!e.occurred_at_from_entry).then_some(e.occurred_at)).collect();
    let data: Vec<RawJson> = events.iter().map(|e| RawJson(&e.data)).collect();
    let rows = tx.query(&statement, &[&ids, &types, &times, &data])?;
    let mut positions: Vec<usize> =
        rows.iter().map(|r| r.get::<_, i64>(0)).filter_map(|n| usize::try_from(n - 1).ok()).collect();
    positions.sort_unstable();
    Ok(positions)
}

//! The flat format: one stream field per attribute, as fuel-code's publisher writes it.
//!
//! fuel-code's `serializeEvent()` writes every value as a string: a null optional value as `""`,
//! `data` and `blob_refs` JSON-encoded. Its own reader turns `""` back into null and decodes the
//! JSON fields; this parser reads them the same way:
//!
//! - an empty `session_id`, `workspace_id` or `device_id` is a NULL column; an empty
//!   `timestamp` is absent (the entry id's time is used); an empty `ingested_at` (an attribute:
//!   our `events.ingested_at` is our own write time) is JSON `null` in `attributes`;
//! - an empty `data`/`payload` is `{}`;
//! - any other value that, trimmed, starts with `[` or `{` and parses as JSON is kept in
//!   `attributes` as that JSON (an array or object, never a string); one that does not parse
//!   (`[not json`) stays text.

use serde_json::value::RawValue;

use super::time::parse_timestamp;
use super::{Entry, Event, JsonObject, Malformed, Parts, build};

/// Fields mapped to columns; every other field is an attribute.
const MAPPED: [&str; 10] = [
    "id",
    "event_id",
    "type",
    "event_type",
    "timestamp",
    "data",
    "payload",
    "session_id",
    "workspace_id",
    "device_id",
];

/// Attributes whose empty value means null (fuel-code writes `?? ""` for them).
const NULL_WHEN_EMPTY: [&str; 1] = ["ingested_at"];

/// Parses an entry without an envelope field: `id`|`event_id`, `type`|`event_type`,
/// `timestamp`, `data`|`payload` (JSON text), the entity ids; anything else is an attribute.
/// When a field is repeated, the last value wins for a column.
pub(super) fn parse(stream: &str, entry: &Entry, fields: &[(&str, &str)]) -> Result<Event, Malformed> {
    let find = |names: &[&str]| {
        names.iter().find_map(|n| fields.iter().rev().find(|(k, _)| k == n).map(|(_, v)| *v))
    };
    let id = find(&["id", "event_id"]).map(str::to_string);
    let event_type = find(&["type", "event_type"]).ok_or(Malformed::MissingType)?.to_string();
    let occurred_at = match find(&["timestamp"]) {
        None => None,
        Some(s) if s.trim().is_empty() => None,
        Some(s) => Some(parse_timestamp(s)?),
    };
    let data = match fields.iter().rev().find(|(k, _)| *k == "data" || *k == "payload") {
        None => "{}".to_string(),
        Some((_, raw)) if raw.trim().is_empty() => "{}".to_string(),
        Some((name, raw)) => {
            // Checks the syntax without building a tree.
            serde_json::from_str::<&RawValue>(raw)
                .map_err(|e| Malformed::InvalidJson { field: (*name).to_string(), error: e.to_string() })?;
            raw.to_string()
        }
    };
    // An empty entity id is null, as fuel-code's reader reads it.
    let optional = |name: &str| find(&[name]).filter(|v| !v.is_empty()).map(str::to_string);
    let mut attributes = JsonObject::default();
    for (name, value) in fields {
        if MAPPED.contains(name) {
            continue;
        }
        if value.is_empty() && NULL_WHEN_EMPTY.contains(name) {
            attributes.push_raw(name, "null");
        } else if let Some(json) = json_container(value) {
            attributes.push_raw(name, json);
        } else {
            attributes.push_text(name, value);
        }
    }
    build(
        stream,
        entry,
        Parts {
            id,
            event_type,
            occurred_at,
            session_id: optional("session_id"),
            workspace_id: optional("workspace_id"),
            device_id: optional("device_id"),
            data,
        },
        attributes.finish(),
    )
}

/// The JSON text of `value` (without surrounding whitespace) if it is a JSON array or object;
/// `None` for anything else, including text that merely starts with a bracket. Only values
/// starting with `[` or `{` are tried, so plain text costs one byte comparison; the syntax is
/// checked without building a tree, and the slice returned borrows `value`.
fn json_container(value: &str) -> Option<&str> {
    if !value.trim_start().starts_with(['[', '{']) {
        return None;
    }
    serde_json::from_str::<&RawValue>(value).ok().map(RawValue::get)
}

//! The flat format: one stream field per attribute, as fuel-code's publisher writes it.

use serde_json::value::RawValue;

use super::time::parse_timestamp;
use super::{Entry, Event, JsonObject, Malformed, Parts, build};

/// Parses an entry without an envelope field: `id`|`event_id`, `type`|`event_type`,
/// `timestamp`, `data`|`payload` (JSON text), the entity ids; anything else is an attribute.
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
        Some((name, raw)) => {
            // Checks the syntax without building a tree.
            serde_json::from_str::<&RawValue>(raw)
                .map_err(|e| Malformed::InvalidJson { field: (*name).to_string(), error: e.to_string() })?;
            raw.to_string()
        }
    };
    let text = |name: &str| find(&[name]).map(str::to_string);
    let mapped = [
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
    let mut attributes = JsonObject::default();
    for (name, value) in fields {
        if !mapped.contains(name) {
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
            session_id: text("session_id"),
            workspace_id: text("workspace_id"),
            device_id: text("device_id"),
            data,
        },
        attributes.finish(),
    )
}

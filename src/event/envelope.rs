//! The envelope format: one field (default `event`) holding the event as a JSON object.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::time::{epoch_timestamp, parse_timestamp};
use super::{Entry, Event, JsonObject, Malformed, Parts, build, wrong_type};

/// Keys of the envelope mapped to columns; every other key is kept in `attributes`.
const ENVELOPE_KEYS: [&str; 7] =
    ["id", "type", "timestamp", "session_id", "workspace_id", "device_id", "data"];

/// Parses the envelope in `fields[at]`; the entry's other fields become attributes.
pub(super) fn parse(
    stream: &str,
    entry: &Entry,
    event_field: &str,
    fields: &[(&str, &str)],
    at: usize,
) -> Result<Event, Malformed> {
    let text = fields[at].1;
    // Only the top level is decoded; every value stays a slice of the input.
    let mut obj: BTreeMap<String, &RawValue> = serde_json::from_str(text).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            Malformed::NotAnObject { field: event_field.to_string() }
        } else {
            Malformed::InvalidJson { field: event_field.to_string(), error: e.to_string() }
        }
    })?;
    let id = optional_text(obj.remove("id"), "id")?;
    let event_type = optional_text(obj.remove("type"), "type")?.ok_or(Malformed::MissingType)?;
    let occurred_at = match obj.remove("timestamp").map(|r| r.get()) {
        None | Some("null") => None,
        Some(raw) if raw.starts_with('"') => {
            let s: String =
                serde_json::from_str(raw).map_err(|_| wrong_type("timestamp", "a string or a number"))?;
            Some(parse_timestamp(&s)?)
        }
        Some(raw) => match raw.parse::<f64>() {
            Ok(n) => Some(
                epoch_timestamp(n).ok_or_else(|| Malformed::InvalidTimestamp { value: raw.to_string() })?,
            ),
            Err(_) => return Err(wrong_type("timestamp", "a string or a number")),
        },
    };
    let session_id = optional_text(obj.remove("session_id"), "session_id")?;
    let workspace_id = optional_text(obj.remove("workspace_id"), "workspace_id")?;
    let device_id = optional_text(obj.remove("device_id"), "device_id")?;
    let data = obj.remove("data").map_or_else(|| "{}".to_string(), |r| r.get().to_string());
    debug_assert!(ENVELOPE_KEYS.iter().all(|k| !obj.contains_key(*k)));
    // Remaining keys, then other stream fields beside the envelope (not overriding keys).
    let mut attributes = JsonObject::default();
    for (key, raw) in &obj {
        attributes.push_raw(key, raw.get());
    }
    for (i, (name, value)) in fields.iter().enumerate() {
        if i != at && !obj.contains_key(*name) {
            attributes.push_text(name, value);
        }
    }
    build(
        stream,
        entry,
        Parts { id, event_type, occurred_at, session_id, workspace_id, device_id, data },
        attributes.finish(),
    )
}

/// A JSON string value (or null / absent); anything else is the wrong type.
fn optional_text(raw: Option<&RawValue>, field: &str) -> Result<Option<String>, Malformed> {
    match raw {
        None => Ok(None),
        Some(r) => serde_json::from_str::<Option<String>>(r.get()).map_err(|_| wrong_type(field, "a string")),
    }
}

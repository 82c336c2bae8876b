//! Stream entry → [`Event`]: the two wire formats of DESIGN.md (`envelope` and `flat`),
//! the timestamps they may carry (`time`), and why an entry is malformed.
//!
//! Parsing is pure (no I/O) and total: every entry becomes an `Event` or a [`Malformed`] whose
//! message names the problem; that message is what the dead-letter entry carries.

mod envelope;
mod flat;
mod time;

pub(crate) use time::entry_timestamp;

use jiff::Timestamp;
use serde_json::Value;

/// One entry as read from a stream: its ID and its field/value pairs in order, as bytes
/// (values need not be UTF-8; that is checked here, not by the reader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream entry id (`<ms>-<seq>`).
    pub id: String,
    /// Field/value pairs in the order the producer wrote them, so a dead letter is an exact copy.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// Times Redis has delivered this entry to the group, this delivery included (its
    /// XPENDING count): 1 for a first read, more for a reclaimed entry.
    pub deliveries: u64,
}

/// An event ready to be written: every field checked, so Postgres should accept it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Primary key in `events`; deduplicates redelivery. `<stream>/<entry-id>` when the
    /// producer gave none, which is stable across redeliveries of the same entry.
    pub id: String,
    pub event_type: String,
    pub occurred_at: Timestamp,
    /// The producer gave no timestamp: `occurred_at` is the stream entry's time, which differs
    /// between two publications of one event, so it says nothing about the event's content.
    pub occurred_at_from_entry: bool,
    pub session_id: Option<String>,
    pub workspace_id: Option<String>,
    pub device_id: Option<String>,
    /// `data` as the JSON text received (its syntax checked): parsed once here, sent to
    /// jsonb as is, never decoded into a tree and encoded again. [`Event::data_value`]
    /// decodes it for a handler that needs to look inside.
    pub data: String,
    /// Every field not mapped to a column, as the text of a JSON object.
    pub attributes: String,
    /// The stream entry this event came from.
    pub entry_id: String,
}

impl Event {
    /// `data` decoded (`Null` if it cannot be, which parsing has already ruled out).
    pub fn data_value(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// Longest accepted id, type or entity id (bytes): longer ones are producer bugs, and an index
/// entry over ~2.7 kB would make Postgres reject the row.
pub const MAX_ID_LEN: usize = 256;

/// Why an entry cannot become an event. Such an entry can never succeed, so it is dead-lettered
/// at once rather than retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The entry has no fields, or only empty names and values.
    #[error("empty entry: no fields")]
    Empty,
    /// A field name or value is not valid UTF-8.
    #[error("field '{field}' is not valid UTF-8")]
    NotUtf8 { field: String },
    /// A field that must hold JSON does not parse.
    #[error("invalid JSON in field '{field}': {error}")]
    InvalidJson { field: String, error: String },
    /// The envelope is valid JSON but not an object.
    #[error("field '{field}' holds JSON that is not an object")]
    NotAnObject { field: String },
    /// No event type was given.
    #[error("missing type: no 'type' or 'event_type'")]
    MissingType,
    /// A field has the wrong JSON type (an id that is a number, say).
    #[error("wrong field type: '{field}' must be {expected}")]
    WrongType { field: String, expected: &'static str },
    /// A required text field is empty.
    #[error("field '{field}' is empty")]
    EmptyField { field: String },
    /// A text field is longer than [`MAX_ID_LEN`].
    #[error("field '{field}' is too long: {len} bytes, at most {MAX_ID_LEN}")]
    TooLong { field: String, len: usize },
    /// A text field holds a NUL character, which Postgres text cannot store.
    #[error("field '{field}' contains a NUL character")]
    NulCharacter { field: String },
    /// The timestamp is neither RFC 3339 nor a Unix epoch number in range.
    #[error("invalid timestamp '{value}': expected RFC 3339 or Unix epoch seconds/milliseconds")]
    InvalidTimestamp { value: String },
}

impl Malformed {
    /// A short, stable name of the problem (the dead-letter `dlq_reason`).
    pub fn kind(&self) -> &'static str {
        match self {
            Malformed::Empty => "empty entry",
            Malformed::NotUtf8 { .. } => "invalid utf-8",
            Malformed::InvalidJson { .. } => "invalid json",
            Malformed::NotAnObject { .. } => "envelope not an object",
            Malformed::MissingType => "missing type",
            Malformed::WrongType { .. } => "wrong field type",
            Malformed::EmptyField { .. } => "empty field",
            Malformed::TooLong { .. } => "field too long",
            Malformed::NulCharacter { .. } => "nul character",
            Malformed::InvalidTimestamp { .. } => "invalid timestamp",
        }
    }
}

/// Parses one entry of `stream`. An entry holding `event_field` is an envelope; any other entry
/// is read as flat fields.
pub fn parse(stream: &str, entry: &Entry, event_field: &str) -> Result<Event, Malformed> {
    if entry.fields.iter().all(|(k, v)| k.is_empty() && v.is_empty()) {
        return Err(Malformed::Empty);
    }
    let mut fields: Vec<(&str, &str)> = Vec::with_capacity(entry.fields.len());
    for (name, value) in &entry.fields {
        let name = std::str::from_utf8(name)
            .map_err(|_| Malformed::NotUtf8 { field: String::from_utf8_lossy(name).into_owned() })?;
        let value = std::str::from_utf8(value).map_err(|_| Malformed::NotUtf8 { field: name.to_string() })?;
        fields.push((name, value));
    }
    match fields.iter().position(|(name, _)| *name == event_field) {
        Some(at) => envelope::parse(stream, entry, event_field, &fields, at),
        None => flat::parse(stream, entry, &fields),
    }
}

/// The columns either format yields, before the checks common to both.
struct Parts {
    id: Option<String>,
    event_type: String,
    occurred_at: Option<Timestamp>,
    session_id: Option<String>,
    workspace_id: Option<String>,
    device_id: Option<String>,
    data: String,
}

/// Applies the checks common to both formats and fills the defaults.
fn build(stream: &str, entry: &Entry, p: Parts, attributes: String) -> Result<Event, Malformed> {
    let id = match p.id {
        Some(id) => {
            check_text("id", &id)?;
            id
        }
        None => format!("{stream}/{}", entry.id),
    };
    check_text("type", &p.event_type)?;
    for (name, value) in
        [("session_id", &p.session_id), ("workspace_id", &p.workspace_id), ("device_id", &p.device_id)]
    {
        if let Some(v) = value {
            check_text(name, v)?;
        }
    }
    let occurred_at_from_entry = p.occurred_at.is_none();
    let occurred_at = match p.occurred_at {
        Some(t) => t,
        None => time::entry_timestamp(&entry.id)
            .ok_or_else(|| Malformed::InvalidTimestamp { value: entry.id.clone() })?,
    };
    Ok(Event {
        id,
        event_type: p.event_type,
        occurred_at,
        occurred_at_from_entry,
        session_id: p.session_id,
        workspace_id: p.workspace_id,
        device_id: p.device_id,
        data: p.data,
        attributes,
        entry_id: entry.id.clone(),
    })
}

fn wrong_type(field: &str, expected: &'static str) -> Malformed {
    Malformed::WrongType { field: field.to_string(), expected }
}

fn check_text(field: &str, value: &str) -> Result<(), Malformed> {
    if value.is_empty() {
        return Err(Malformed::EmptyField { field: field.to_string() });
    }
    if value.len() > MAX_ID_LEN {
        return Err(Malformed::TooLong { field: field.to_string(), len: value.len() });
    }
    if value.contains('\0') {
        return Err(Malformed::NulCharacter { field: field.to_string() });
    }
    Ok(())
}

/// Builds the text of a JSON object from raw JSON values and plain strings.
#[derive(Default)]
struct JsonObject(String);

impl JsonObject {
    fn push_key(&mut self, key: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        self.0.push_str(&Value::from(key).to_string());
        self.0.push(':');
    }

    fn push_raw(&mut self, key: &str, raw_json: &str) {
        self.push_key(key);
        self.0.push_str(raw_json);
    }

    fn push_text(&mut self, key: &str, text: &str) {
        self.push_key(key);
        self.0.push_str(&Value::from(text).to_string());
    }

    fn finish(mut self) -> String {
        if self.0.is_empty() {
            return "{}".into();
        }
        self.0.push('}');
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> Entry {
        Entry {
            id: "1700000000000-0".into(),
            fields: fields.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect(),
            deliveries: 1,
        }
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn data_keeps_the_text_received_and_attributes_are_escaped() {
        let e = parse_one(&[
            ("event", r#"{"type":"t","data":{"b": 2, "a": [1.50, "x"]},"we\"ird":{"k":null}}"#),
            ("note", "line\nbreak \"quoted\""),
        ])
        .unwrap();
        assert_eq!(e.data, r#"{"b": 2, "a": [1.50, "x"]}"#);
        assert_eq!(
            json(&e.attributes),
            serde_json::json!({"we\"ird": {"k": null}, "note": "line\nbreak \"quoted\""})
        );
        let bare = parse_one(&[("type", "t")]).unwrap();
        assert_eq!((bare.data.as_str(), bare.attributes.as_str()), ("{}", "{}"));
    }

    fn parse_one(fields: &[(&str, &str)]) -> Result<Event, Malformed> {
        parse("s", &entry(fields), "event")
    }

    #[test]
    fn envelope_maps_columns_and_keeps_extras() {
        let e = parse_one(&[(
            "event",
            r#"{"id":"e1","type":"page.view","timestamp":"2024-05-01T12:00:00+02:00",
                "session_id":"s1","data":{"a":1},"source":"web"}"#,
        )])
        .unwrap();
        assert_eq!(e.id, "e1");
        assert_eq!(e.event_type, "page.view");
        assert_eq!(e.occurred_at.to_string(), "2024-05-01T10:00:00Z");
        assert_eq!(e.session_id.as_deref(), Some("s1"));
        assert_eq!(e.data_value(), serde_json::json!({"a": 1}));
        assert_eq!(json(&e.attributes), serde_json::json!({"source": "web"}));
    }

    #[test]
    fn flat_fields_accept_aliases_and_keep_extras() {
        let e = parse_one(&[
            ("event_id", "e2"),
            ("event_type", "click"),
            ("timestamp", "1700000000"),
            ("payload", r#"{"x":[1,2]}"#),
            ("region", "eu"),
        ])
        .unwrap();
        assert_eq!(e.id, "e2");
        assert_eq!(e.event_type, "click");
        assert_eq!(e.occurred_at, Timestamp::from_second(1_700_000_000).unwrap());
        assert_eq!(e.data_value(), serde_json::json!({"x": [1, 2]}));
        assert_eq!(json(&e.attributes), serde_json::json!({"region": "eu"}));
    }

    /// An entry as fuel-code's `serializeEvent()` writes it, in its field order.
    fn fuel_code(
        session_id: &str,
        data: &str,
        blob_refs: &str,
        ingested_at: &str,
    ) -> Result<Event, Malformed> {
        parse_one(&[
            ("id", "01JN8Z3Q7R2W4X6Y8A0B1C2D3E"),
            ("type", "git.commit"),
            ("timestamp", "2026-02-27T10:15:30.123Z"),
            ("device_id", "dev-1"),
            ("workspace_id", "github.com/user/repo"),
            ("session_id", session_id),
            ("data", data),
            ("blob_refs", blob_refs),
            ("ingested_at", ingested_at),
        ])
    }

    #[test]
    fn flat_empty_entity_ids_are_null() {
        let e = fuel_code("", r#"{"hash":"abc"}"#, "[]", "").unwrap();
        assert_eq!(e.session_id, None);
        assert_eq!(e.workspace_id.as_deref(), Some("github.com/user/repo"));
        assert_eq!(e.device_id.as_deref(), Some("dev-1"));
        let none =
            parse_one(&[("type", "t"), ("session_id", ""), ("workspace_id", ""), ("device_id", "")]).unwrap();
        assert_eq!((none.session_id, none.workspace_id, none.device_id), (None, None, None));
        // Not an attribute either: the column is simply null.
        assert_eq!(none.attributes, "{}");
    }

    #[test]
    fn flat_empty_timestamp_is_the_entry_time() {
        let e = parse_one(&[("type", "t"), ("timestamp", "")]).unwrap();
        assert_eq!(e.occurred_at, Timestamp::from_millisecond(1_700_000_000_000).unwrap());
        let set = fuel_code("s", "{}", "[]", "").unwrap();
        assert_eq!(set.occurred_at.to_string(), "2026-02-27T10:15:30.123Z");
    }

    #[test]
    fn flat_ingested_at_is_an_attribute_null_when_empty() {
        let empty = fuel_code("", "{}", "[]", "").unwrap();
        assert_eq!(json(&empty.attributes)["ingested_at"], Value::Null);
        assert!(json(&empty.attributes).as_object().unwrap().contains_key("ingested_at"));
        let set = fuel_code("", "{}", "[]", "2026-02-27T10:15:31.000Z").unwrap();
        assert_eq!(json(&set.attributes)["ingested_at"], "2026-02-27T10:15:31.000Z");
        // Only the optional fields read "" as null; another empty attribute stays text.
        let other = parse_one(&[("type", "t"), ("note", "")]).unwrap();
        assert_eq!(json(&other.attributes), serde_json::json!({"note": ""}));
    }

    #[test]
    fn flat_empty_data_or_payload_is_an_empty_object() {
        for name in ["data", "payload"] {
            let e = parse_one(&[("type", "t"), (name, "")]).unwrap();
            assert_eq!(e.data, "{}", "{name}");
            assert_eq!(e.data_value(), serde_json::json!({}));
        }
        let e = fuel_code("", "", "[]", "").unwrap();
        assert_eq!(e.data, "{}");
    }

    #[test]
    fn flat_json_arrays_and_objects_are_kept_as_json() {
        let refs = r#"[{"key":"blobs/ab12","content_type":"text/plain","size_bytes":42}]"#;
        let e = fuel_code("", "{}", refs, "").unwrap();
        let attributes = json(&e.attributes);
        assert_eq!(attributes["blob_refs"], json(refs));
        let e = fuel_code("", "{}", "[]", "").unwrap();
        assert_eq!(json(&e.attributes)["blob_refs"], serde_json::json!([]));

        let e = parse_one(&[
            ("type", "t"),
            ("meta", r#"{"a": {"b": [1, null]}}"#),
            ("padded", " \n[1, 2] "),
            ("broken", "[not json"),
            ("half", r#"{"a": 1} trailing"#),
            ("number", "42"),
            ("quoted", r#""text""#),
            ("word", "true"),
        ])
        .unwrap();
        assert_eq!(
            json(&e.attributes),
            serde_json::json!({
                "meta": {"a": {"b": [1, null]}},
                "padded": [1, 2],
                "broken": "[not json",
                "half": "{\"a\": 1} trailing",
                "number": "42",
                "quoted": "\"text\"",
                "word": "true",
            })
        );
        // Kept as the text received, without the surrounding whitespace.
        assert!(e.attributes.contains(r#""padded":[1, 2]"#), "{}", e.attributes);
    }

    #[test]
    fn flat_entry_as_fuel_code_writes_it() {
        let data = r#"{"hash":"9f2c1e7","message":"Fix parser","files_changed":2,"file_list":[{"path":"a.rs","status":"M"}]}"#;
        let e = fuel_code("", data, "[]", "").unwrap();
        assert_eq!(e.id, "01JN8Z3Q7R2W4X6Y8A0B1C2D3E");
        assert_eq!(e.event_type, "git.commit");
        assert_eq!(e.data, data);
        assert_eq!(e.session_id, None);
        assert_eq!(json(&e.attributes), serde_json::json!({"blob_refs": [], "ingested_at": null}));
    }

    #[test]
    fn missing_id_and_timestamp_come_from_the_entry() {
        let e = parse_one(&[("type", "t")]).unwrap();
        assert_eq!(e.id, "s/1700000000000-0");
        assert_eq!(e.occurred_at, Timestamp::from_millisecond(1_700_000_000_000).unwrap());
    }

    #[test]
    fn epoch_milliseconds_are_recognised() {
        let e = parse_one(&[("event", r#"{"type":"t","timestamp":1700000000123}"#)]).unwrap();
        assert_eq!(e.occurred_at, Timestamp::from_millisecond(1_700_000_000_123).unwrap());
    }

    #[test]
    fn malformed_entries_say_why() {
        let long = "x".repeat(MAX_ID_LEN + 1);
        let long_id = format!(r#"{{"id":"{long}","type":"t"}}"#);
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![("event", "{not json")], "invalid json"),
            (vec![("event", "[1,2]")], "envelope not an object"),
            (vec![("event", r#"{"id":"a"}"#)], "missing type"),
            (vec![("event", r#"{"id":7,"type":"t"}"#)], "wrong field type"),
            (vec![("event", r#"{"type":"t","session_id":{}}"#)], "wrong field type"),
            (vec![("event", r#"{"type":""}"#)], "empty field"),
            (vec![("event", &long_id)], "field too long"),
            (vec![("event", r#"{"type":"a\u0000b"}"#)], "nul character"),
            (vec![("event", r#"{"type":"t","timestamp":"yesterday"}"#)], "invalid timestamp"),
            (vec![("type", "t"), ("data", "{")], "invalid json"),
            (vec![("id", "x")], "missing type"),
            (vec![], "empty entry"),
            (vec![("", "")], "empty entry"),
        ];
        for (fields, kind) in cases {
            let err = parse_one(&fields).unwrap_err();
            assert_eq!(err.kind(), kind, "{fields:?}: {err}");
        }
        let bad_utf8 =
            Entry { id: "1-0".into(), fields: vec![(b"type".to_vec(), vec![0xff, 0xfe])], deliveries: 1 };
        assert_eq!(parse("s", &bad_utf8, "event").unwrap_err().kind(), "invalid utf-8");
    }
}

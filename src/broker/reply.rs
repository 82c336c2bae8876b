//! Stream replies decoded by hand from [`redis::Value`], so that field order and non-UTF-8
//! bytes survive untouched into the dead-letter stream, and RESP2 arrays and RESP3 maps read
//! the same.

use std::sync::Arc;

use redis::Value;

use crate::event::Entry;

/// One stream's part of an XREADGROUP reply: its entries, and the ids of pending entries
/// deleted from the stream (only a re-read of pending entries can meet those).
pub(super) type StreamReply = (Arc<str>, Vec<Entry>, Vec<String>);

/// Decodes an XREADGROUP reply (nil when the block timed out).
pub(super) fn read_reply(reply: Value) -> Result<Vec<StreamReply>, String> {
    let per_stream: Vec<(Value, Value)> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(mut pair) if pair.len() == 2 => {
                    let entries = pair.pop().unwrap_or(Value::Nil);
                    let name = pair.pop().unwrap_or(Value::Nil);
                    Ok((name, entries))
                }
                other => Err(format!("stream item is not a pair: {other:?}")),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(pairs) => pairs,
        other => return Err(format!("XREADGROUP reply is not an array: {other:?}")),
    };
    let mut batches = Vec::with_capacity(per_stream.len());
    for (name, entries) in per_stream {
        let stream = text(name).ok_or("stream name is not text")?;
        let decoded = entries_of(entries)?;
        batches.push((Arc::from(stream), decoded.entries, decoded.deleted));
    }
    Ok(batches)
}

/// Entries decoded from a stream reply.
#[derive(Debug, Default)]
pub(super) struct Decoded {
    /// Entries with their fields, delivered once as far as a plain read knows.
    pub entries: Vec<Entry>,
    /// Ids whose fields are nil: entries deleted (trimmed) while pending.
    pub deleted: Vec<String>,
    /// Bare nils in place of an entry: XCLAIM and XAUTOCLAIM before Redis 7 answer so for an
    /// entry deleted while pending, without its id.
    pub nils: usize,
}

/// Decodes `[[id, [field, value, ...]], ...]`.
pub(super) fn entries_of(entries: Value) -> Result<Decoded, String> {
    let Value::Array(entries) = entries else {
        return Err(format!("entry list is not an array: {entries:?}"));
    };
    let mut out = Vec::with_capacity(entries.len());
    let mut deleted = Vec::new();
    let mut nils = 0;
    for entry in entries {
        let mut parts = match entry {
            Value::Array(parts) => parts,
            Value::Nil => {
                nils += 1;
                continue;
            }
            other => return Err(format!("entry is not an array: {other:?}")),
        };
        if parts.len() != 2 {
            return Err(format!("entry has {} parts, expected 2", parts.len()));
        }
        let fields = parts.pop().unwrap_or(Value::Nil);
        let id = parts.pop().and_then(text).ok_or("entry id is not text")?;
        let fields = match fields {
            Value::Nil => {
                deleted.push(id);
                continue;
            }
            Value::Array(flat) => {
                let mut pairs = Vec::with_capacity(flat.len() / 2);
                let mut it = flat.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    let k = bytes(k).ok_or("field name is not a string")?;
                    pairs.push((k, bytes(v).ok_or("field value is not a string")?));
                }
                pairs
            }
            Value::Map(map) => map
                .into_iter()
                .map(|(k, v)| Ok((bytes(k).ok_or("field name")?, bytes(v).ok_or("field value")?)))
                .collect::<Result<_, &str>>()?,
            other => return Err(format!("entry fields are not an array: {other:?}")),
        };
        out.push(Entry { id, fields, deliveries: 1 });
    }
    Ok(Decoded { entries: out, deleted, nils })
}

/// Pairs of a flat `[k1, v1, k2, v2, ...]` array or a RESP3 map; anything else gives none.
pub(super) fn pairs(v: Value) -> Vec<(Value, Value)> {
    match v {
        Value::Array(flat) => {
            let mut it = flat.into_iter();
            std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
        }
        Value::Map(m) => m,
        _ => Vec::new(),
    }
}

pub(super) fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

pub(super) fn text(v: Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn entries_keep_field_order_and_bytes_and_report_deleted_ids() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("b"), Value::BulkString(vec![0xff]), bulk("a"), bulk("x")]),
            ]),
            Value::Array(vec![bulk("2-0"), Value::Nil]),
            Value::Nil,
        ]);
        let Decoded { entries, deleted, nils } = entries_of(reply).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].fields, vec![(b"b".to_vec(), vec![0xff]), (b"a".to_vec(), b"x".to_vec())]);
        assert_eq!(deleted, vec!["2-0"]);
        assert_eq!(nils, 1, "a bare nil (Redis < 7) is counted, not dropped");
    }
}

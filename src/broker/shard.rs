//! One logical stream split over N Redis streams, its shards: `<stream>:{0}` … `<stream>:{N-1}`.
//! An event goes to shard `crc32(id) mod N` (CRC-32/ISO-HDLC, the `crc32` of zlib, Go's
//! `hash/crc32`, Java's `CRC32`), so every copy of one event (a producer's retry, a replay)
//! meets the same shard, where the consumer group and the table's primary key deduplicate it.
//!
//! The braces are a Redis Cluster hash tag: each shard lives in one slot, and so do the keys
//! named after it (`<stream>:{k}:dlq`, `<stream>:{k}:errors`). On a single node the names are
//! ordinary stream names.

/// Most shards one logical stream may have.
pub const MAX_SHARDS: u32 = 1024;

/// The shard of an event: by its id, or by its whole text when it has none (such an event gets
/// `<shard>/<entry id>` as its id, so no copy of it can meet another anyway).
pub fn shard_of(key: &[u8], shards: u32) -> u32 {
    crc32(key) % shards.max(1)
}

/// The name of shard `k` of `stream`.
pub fn shard_name(stream: &str, k: u32) -> String {
    format!("{stream}:{{{k}}}")
}

/// The logical stream `name` is a shard of (`events` for `events:{3}`), if it is named as one.
pub fn logical_of(name: &str) -> Option<&str> {
    let (stream, k) = name.strip_suffix('}')?.rsplit_once(":{")?;
    (!k.is_empty() && k.bytes().all(|b| b.is_ascii_digit())).then_some(stream)
}

/// `name` with a shard range `{A..B}` in it expanded into the names with `{A}` … `{B}`; any other
/// name as it is. `Err` says why a range is not one (`{3..1}`, more than [`MAX_SHARDS`]).
pub fn expand(name: &str) -> Result<Vec<String>, String> {
    let Some((prefix, rest)) = name.split_once('{') else { return Ok(vec![name.to_string()]) };
    let Some((range, suffix)) = rest.split_once('}') else { return Ok(vec![name.to_string()]) };
    let Some((from, to)) = range.split_once("..") else { return Ok(vec![name.to_string()]) };
    let bound =
        |s: &str| s.trim().parse::<u32>().map_err(|_| format!("'{name}': '{s}' is not a shard number"));
    let (from, to) = (bound(from)?, bound(to)?);
    if from > to || to - from >= MAX_SHARDS {
        return Err(format!(
            "'{name}': a shard range runs from a lower to a higher number, at most {MAX_SHARDS} shards"
        ));
    }
    Ok((from..=to).map(|k| format!("{prefix}{{{k}}}{suffix}")).collect())
}

/// CRC-32/ISO-HDLC (reflected 0x04C11DB7), bit by bit: ids are short, and a table would be the
/// only code here.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_names_its_logical_stream() {
        assert_eq!(logical_of("events:{3}"), Some("events"));
        assert_eq!(logical_of("a:b:{15}"), Some("a:b"));
        assert_eq!(logical_of("events"), None);
        assert_eq!(logical_of("events:{x}"), None);
        assert_eq!(logical_of("events:{}"), None);
        assert_eq!(logical_of("{events}:dlq"), None);
    }

    #[test]
    fn the_checksum_is_zlibs_crc32() {
        // The standard check value of CRC-32/ISO-HDLC, and Python's zlib.crc32(b"order-4") % 4.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(shard_of(b"order-4", 4), 0);
        assert_eq!(shard_of(b"order-5", 4), 2);
    }

    #[test]
    fn a_shard_range_expands_to_hash_tagged_names() {
        assert_eq!(expand("events:{0..2}").unwrap(), ["events:{0}", "events:{1}", "events:{2}"]);
        assert_eq!(expand("events:{5..5}").unwrap(), ["events:{5}"]);
        assert_eq!(expand("events:{3}").unwrap(), ["events:{3}"]);
        assert_eq!(expand("plain").unwrap(), ["plain"]);
        assert_eq!(expand("events:{0..1023}").unwrap().len(), 1024);
        assert!(expand("events:{3..1}").unwrap_err().contains("lower to a higher"));
        assert!(expand("events:{0..1024}").is_err());
        assert!(expand("events:{a..3}").unwrap_err().contains("'a' is not a shard number"));
        assert_eq!(expand("events:{0..3}").unwrap()[3], shard_name("events", 3));
    }
}

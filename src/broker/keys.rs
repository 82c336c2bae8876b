//! The names of a stream's companion keys: its dead-letter stream and its last-error hash.
//!
//! A script that acknowledges with dead letters, or replays one, touches the stream and its
//! dead-letter stream in one call, which Redis Cluster allows only for keys of one slot. A
//! cluster hashes only a key's hash tag (the text between its first `{` and the next `}`, when
//! not empty), so `events:{3}:dlq` shares `events:{3}`'s slot, but `events:dlq` does not share
//! `events`'s: there the companion is `{events}:dlq`. A single node keeps `<stream>:dlq` for
//! every stream, as it always has.

/// The dead-letter stream of `stream` (`<stream>:dlq`, or `{<stream>}:dlq` in a cluster when
/// that is what shares the stream's slot).
pub fn dead_letter_stream(stream: &str, cluster: bool) -> String {
    companion(stream, ":dlq", cluster)
}

/// The last-error hash of `stream` (`<stream>:errors`, or `{<stream>}:errors` as above).
pub fn errors_hash(stream: &str, cluster: bool) -> String {
    companion(stream, ":errors", cluster)
}

/// The part of `key` Redis Cluster hashes to find its slot.
pub fn hash_tag(key: &str) -> &str {
    key.find('{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.find('}').filter(|&close| close > 0).map(|close| &rest[..close])
        })
        .unwrap_or(key)
}

/// True when `stream`'s companion keys share its slot in a cluster (every name but one holding
/// a `}` without a hash tag).
pub fn shares_slot(stream: &str) -> bool {
    [dead_letter_stream(stream, true), errors_hash(stream, true)]
        .iter()
        .all(|k| hash_tag(k) == hash_tag(stream))
}

/// `<stream><suffix>` where it shares the stream's slot (or on a single node), else
/// `{<stream>}<suffix>`. A name for which neither does (a stream named with a `}` but no hash
/// tag) keeps the first form, and Redis refuses its scripts with CROSSSLOT, naming the keys.
fn companion(stream: &str, suffix: &str, cluster: bool) -> String {
    let plain = format!("{stream}{suffix}");
    if !cluster || hash_tag(&plain) == hash_tag(stream) {
        return plain;
    }
    let tagged = format!("{{{stream}}}{suffix}");
    if hash_tag(&tagged) == hash_tag(stream) { tagged } else { plain }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags_are_read_as_redis_cluster_reads_them() {
        assert_eq!(hash_tag("events"), "events");
        assert_eq!(hash_tag("events:{3}"), "3");
        assert_eq!(hash_tag("{events}:dlq"), "events");
        assert_eq!(hash_tag("a{}b"), "a{}b", "an empty tag hashes the whole key");
        assert_eq!(hash_tag("a{b"), "a{b", "no closing brace: the whole key");
        assert_eq!(hash_tag("{a}{b}"), "a", "only the first tag counts");
    }

    #[test]
    fn companions_share_the_stream_slot_in_a_cluster_and_keep_their_names_on_one_node() {
        assert_eq!(dead_letter_stream("events", false), "events:dlq");
        assert_eq!(errors_hash("events", false), "events:errors");
        assert_eq!(dead_letter_stream("events", true), "{events}:dlq");
        assert_eq!(errors_hash("events", true), "{events}:errors");
        assert_eq!(dead_letter_stream("events:{3}", true), "events:{3}:dlq");
        assert_eq!(dead_letter_stream("events:{3}", false), "events:{3}:dlq");
        assert_eq!(dead_letter_stream("a{b", true), "{a{b}:dlq");
        assert!(!shares_slot("a}b") && !shares_slot("a{}b}"), "no form shares these names' slots");
        for stream in ["events", "events:{3}", "{x}y", "a{b", "orders.eu"] {
            assert!(shares_slot(stream), "{stream}");
            let dlq = dead_letter_stream(stream, true);
            assert_eq!(hash_tag(&dlq), hash_tag(stream), "{stream} → {dlq}");
        }
    }
}

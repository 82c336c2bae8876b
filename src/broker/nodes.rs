//! The reader's own connection to each master of a Redis Cluster, and a round of reads over
//! them: every shard read on the master owning it, one pipeline per master, all masters at once.
//!
//! Redis cannot read streams of different slots in one command (CROSSSLOT), so a shard is one
//! XREADGROUP. Sent through the cluster client they would be one round trip each, one after
//! another; here the XREADGROUPs of one master go as one pipeline, the pipelines of all masters
//! are written before any reply is read, and an idle round blocks on one shard of every master
//! at once: one blocking read per node, and as many reader connections as masters.
//!
//! The slot map is read once (CLUSTER SLOTS) when the connections are made. A shard that moved
//! answers MOVED or ASK: the round's other reads still count, and the caller rebuilds the
//! connections (a new map) before the next round.

use std::time::Duration;

use redis::{Connection, Value};

use super::read::CLUSTER_BLOCK;
use super::{Batch, BrokerError, Redis, reply};
use crate::config::RedisSettings;

/// One master and the shards it owns (by their position in the reader's stream list).
struct Master {
    con: Connection,
    shards: Vec<usize>,
}

/// The reader's connections to the masters owning its shards.
pub(crate) struct Masters {
    masters: Vec<Master>,
}

impl Masters {
    /// Reads the slot map through `cluster` and connects to each master owning one of `streams`.
    pub(crate) fn connect(
        settings: &RedisSettings,
        cluster: &mut Redis,
        streams: &[String],
        read_timeout: Duration,
    ) -> Result<Masters, BrokerError> {
        let label = streams.join(",");
        let slots: Vec<Vec<Value>> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(cluster)
            .map_err(|e| BrokerError::new("CLUSTER SLOTS", &label, e))?;
        let ranges: Vec<(u16, u16, String, u16)> = slots.iter().filter_map(|r| range(r)).collect();
        let mut owners: Vec<((String, u16), Vec<usize>)> = Vec::new();
        for (at, stream) in streams.iter().enumerate() {
            let slot = slot_of(stream);
            let Some((_, _, host, port)) = ranges.iter().find(|(a, b, _, _)| (*a..=*b).contains(&slot))
            else {
                let detail = format!("no master owns slot {slot} of {stream}");
                return Err(BrokerError::bad_reply("CLUSTER SLOTS", &label, detail));
            };
            let key = (host.clone(), *port);
            match owners.iter_mut().find(|(k, _)| *k == key) {
                Some((_, shards)) => shards.push(at),
                None => owners.push((key, vec![at])),
            }
        }
        let masters = owners
            .into_iter()
            .map(|((host, port), shards)| {
                super::conn::connect_cluster_node(settings, &host, port, read_timeout)
                    .map(|con| Master { con, shards })
                    .map_err(|e| BrokerError::new("connect to a master", &format!("{host}:{port}"), e))
            })
            .collect::<Result<_, _>>()?;
        Ok(Masters { masters })
    }

    /// Connections held: one per master owning a shard.
    pub(crate) fn len(&self) -> usize {
        self.masters.len()
    }

    /// One round: at most `count` new entries of every shard, then, if none had any, one read
    /// per master blocking at most `block` (capped at [`CLUSTER_BLOCK`]) on its shard that `turn`
    /// points at. Returns what was read with the first failure, if any (the entries delivered
    /// must reach the workers either way); a shard that moved fails as a connection error, so
    /// the caller reconnects with a new slot map.
    pub(crate) fn read(
        &mut self,
        group: &str,
        consumer: &str,
        streams: &[String],
        count: usize,
        block: Duration,
        turn: usize,
    ) -> (Vec<Batch>, Option<BrokerError>) {
        let all: Vec<Vec<usize>> = self.masters.iter().map(|m| m.shards.clone()).collect();
        let (batches, failed) = self.round(group, consumer, streams, count, None, &all);
        if !batches.is_empty() || failed.is_some() || block.is_zero() {
            return (batches, failed);
        }
        let one: Vec<Vec<usize>> =
            self.masters.iter().map(|m| vec![m.shards[turn % m.shards.len()]]).collect();
        self.round(group, consumer, streams, count, Some(block.min(CLUSTER_BLOCK)), &one)
    }

    /// Writes each master's XREADGROUPs (for `shards[i]` of master i) as one pipeline, all
    /// masters before any reply is read, then reads every reply.
    fn round(
        &mut self,
        group: &str,
        consumer: &str,
        streams: &[String],
        count: usize,
        block: Option<Duration>,
        shards: &[Vec<usize>],
    ) -> (Vec<Batch>, Option<BrokerError>) {
        let mut failed = None;
        let mut sent = vec![false; self.masters.len()];
        for (i, master) in self.masters.iter_mut().enumerate() {
            let mut pipe = redis::pipe();
            for &s in &shards[i] {
                pipe.add_command(xreadgroup(group, consumer, &streams[s], count, block));
            }
            match master.con.send_packed_command(&pipe.get_packed_pipeline()) {
                Ok(()) => sent[i] = true,
                Err(e) => {
                    failed = failed.or(Some(BrokerError::new("XREADGROUP", &label(streams, &shards[i]), e)));
                }
            }
        }
        let mut batches = Vec::new();
        for (i, master) in self.masters.iter_mut().enumerate().filter(|(i, _)| sent[*i]) {
            for &s in &shards[i] {
                let stream = streams[s].as_str();
                let reply = master.con.recv_response().and_then(Value::extract_error);
                let reply = match reply {
                    Ok(reply) => reply,
                    Err(e) => {
                        let lost = e.is_io_error() || e.is_timeout() || e.is_connection_dropped();
                        failed = failed.or(Some(BrokerError::new("XREADGROUP", stream, moved_as_lost(e))));
                        if lost {
                            break; // the rest of this master's replies will not come
                        }
                        continue;
                    }
                };
                match reply::read_reply(reply) {
                    Ok(read) => batches.extend(
                        read.into_iter()
                            .filter(|(_, entries, _)| !entries.is_empty())
                            .map(|(stream, entries, _)| Batch { stream, entries }),
                    ),
                    Err(d) => failed = failed.or(Some(BrokerError::bad_reply("XREADGROUP", stream, d))),
                }
            }
        }
        (batches, failed)
    }
}

/// `XREADGROUP GROUP g c COUNT n [BLOCK ms] STREAMS <stream> >`.
fn xreadgroup(
    group: &str,
    consumer: &str,
    stream: &str,
    count: usize,
    block: Option<Duration>,
) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP").arg(group).arg(consumer).arg("COUNT").arg(count);
    if let Some(block) = block {
        cmd.arg("BLOCK").arg(block.as_millis() as u64);
    }
    cmd.arg("STREAMS").arg(stream).arg(">");
    cmd
}

fn label(streams: &[String], shards: &[usize]) -> String {
    shards.iter().map(|&s| streams[s].as_str()).collect::<Vec<_>>().join(",")
}

/// A shard that moved (MOVED, ASK) or a blocked read released by a failover (UNBLOCKED) means
/// the slot map is stale: reported as a lost connection, so the reader reconnects.
fn moved_as_lost(e: redis::RedisError) -> redis::RedisError {
    use redis::ServerErrorKind::{Ask, Moved, ReadOnly};
    let moved =
        matches!(e.kind(), redis::ErrorKind::Server(Moved | Ask | ReadOnly)) || e.code() == Some("UNBLOCKED");
    if !moved {
        return e;
    }
    let why = format!("a shard moved ({e}); reading the slot map again");
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::ConnectionReset, why))
}

/// (first slot, last slot, master host, master port) of one CLUSTER SLOTS item.
fn range(item: &[Value]) -> Option<(u16, u16, String, u16)> {
    let int = |v: &Value| match v {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let Some(Value::Array(master)) = item.get(2) else { return None };
    let host = match master.first()? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
        Value::SimpleString(s) => s.clone(),
        _ => return None,
    };
    Some((int(item.first()?)?, int(item.get(1)?)?, host, int(master.get(1)?)?))
}

/// The cluster slot of `key`: CRC16-XMODEM of its hash tag, mod 16384.
pub fn slot_of(key: &str) -> u16 {
    let mut crc: u16 = 0;
    for &byte in super::keys::hash_tag(key).as_bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // CLUSTER KEYSLOT on redis 7.0: the examples of the cluster spec, and shard tags.
        assert_eq!(slot_of("123456789"), 0x31C3);
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        assert_eq!(slot_of("events:{0}"), slot_of("0"));
    }
}

//! `--cluster-url`: the drain rate of 16 shards on one Redis node against the same 16 shards on
//! a 3-master Redis Cluster (`scripts/bench.sh --cluster` starts a private one), with 1 and 2
//! processes in one group, and one unsharded stream on the node for reference.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Instant;

use streamsink::broker::shard::{shard_name, shard_of};

use super::{Args, BenchResult, Table, Worker, cpu_seconds, say, scratch_schema};

const SHARDS: u32 = 16;

/// Where the shards live: one node (a `redis://` URL) or a cluster (a `redis+cluster://` URL,
/// reached by the bench through its first seed node).
struct Sharded {
    /// The URL streamsink is given.
    url: String,
    /// A node the bench connects to (the cluster client finds the others).
    seed: String,
    cluster: bool,
    name: String,
}

impl Sharded {
    fn new(url: &str) -> BenchResult<Sharded> {
        let cluster = url.starts_with("redis+cluster://");
        let seed = match url.strip_prefix("redis+cluster://") {
            Some(hosts) => {
                let first = hosts.split(',').next().unwrap_or_default().trim_end_matches('/');
                format!("redis://{first}")
            }
            None => url.to_string(),
        };
        let name = format!("bench:{}", ulid::Ulid::generate());
        Ok(Sharded { url: url.to_string(), seed, cluster, name })
    }

    fn shards(&self) -> Vec<String> {
        (0..SHARDS).map(|k| shard_name(&self.name, k)).collect()
    }

    fn con(&self) -> BenchResult<Box<dyn redis::ConnectionLike>> {
        Ok(match self.cluster {
            true => Box::new(redis::cluster::ClusterClient::new(vec![self.seed.as_str()])?.get_connection()?),
            false => Box::new(redis::Client::open(self.seed.as_str())?.get_connection()?),
        })
    }

    /// Each event to shard crc32(id) mod 16, as `streamsink publish --shards 16` puts it, in
    /// pipelines of 1000 per shard.
    fn publish(&self, events: &[String]) -> BenchResult<()> {
        let mut per_shard: HashMap<u32, Vec<&String>> = HashMap::new();
        for ev in events {
            let v: serde_json::Value = serde_json::from_str(ev)?;
            let id = v["id"].as_str().ok_or("an event without id")?;
            per_shard.entry(shard_of(id.as_bytes(), SHARDS)).or_default().push(ev);
        }
        let mut con = self.con()?;
        for (k, evs) in per_shard {
            let shard = shard_name(&self.name, k);
            for chunk in evs.chunks(1000) {
                let mut pipe = redis::pipe();
                for ev in chunk {
                    pipe.cmd("XADD").arg(&shard).arg("*").arg("event").arg(ev.as_str()).ignore();
                }
                // A cluster client takes a pipeline whose keys share one slot as one request.
                let packed = pipe.get_packed_pipeline();
                con.req_packed_commands(&packed, 0, chunk.len())?;
            }
        }
        Ok(())
    }

    /// True once every shard's group has nothing pending and nothing undelivered.
    fn drained(&self, con: &mut dyn redis::ConnectionLike) -> bool {
        self.shards().iter().all(|s| super::group_state(con, s) == Some((0, Some(0))))
    }
}

impl Drop for Sharded {
    fn drop(&mut self) {
        if let Ok(mut c) = self.con() {
            for s in self.shards() {
                for key in [s.clone(), format!("{s}:dlq")] {
                    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(key).query(c.as_mut());
                }
            }
        }
    }
}

/// Drains `events` over 16 shards at `url` with `processes` workers; events/s and the
/// workers' CPU seconds.
fn drain(
    args: &Args,
    binary: &str,
    url: &str,
    events: &[String],
    processes: usize,
) -> BenchResult<(f64, f64)> {
    let db = scratch_schema(args, Table::Full)?;
    let stream = Sharded::new(url)?;
    stream.publish(events)?;
    let mut con = stream.con()?;
    let started = Instant::now();
    let mut children = (0..processes)
        .map(|_| {
            let mut cmd = Command::new(binary);
            cmd.arg("run")
                .env("REDIS_URL", &stream.url)
                .env("DATABASE_URL", &db.url)
                .env("STREAMSINK_STREAMS", format!("{}:{{0..{}}}", stream.name, SHARDS - 1))
                .env("STREAMSINK_BLOCK", "1s")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            Ok(Worker(cmd.spawn()?))
        })
        .collect::<BenchResult<Vec<_>>>()?;
    let elapsed = super::wait_drained(started, &mut children, || stream.drained(con.as_mut()))?;
    let cpu: f64 = children.iter().filter_map(|c| cpu_seconds(c.id())).sum();
    drop(children);
    let rows: i64 = db.client()?.query_one("SELECT count(*) FROM events", &[])?.get(0);
    if rows != events.len() as i64 {
        return Err(format!("{rows} rows for {} events", events.len()).into());
    }
    Ok((events.len() as f64 / elapsed.as_secs_f64(), cpu))
}

/// The cluster comparison; prints one `bench-cluster:` line of figures.
pub(super) fn run(args: &Args, binary: &str, cluster_url: &str, events: &[String]) -> BenchResult<()> {
    let mut figures = Vec::new();
    let mut rates = HashMap::new();
    for round in 1..=args.rounds.max(1) {
        for (label, url) in [("node", args.redis_url.as_str()), ("cluster", cluster_url)] {
            for processes in [1, 2] {
                let (rate, cpu) = drain(args, binary, url, events, processes)?;
                say(&format!(
                    "round {round}: {label}, {SHARDS} shards, {processes} process(es): {} events at {rate:.0} events/s, \
                     {:.1} µs of streamsink CPU per event",
                    events.len(),
                    cpu * 1e6 / events.len() as f64
                ));
                let best: &mut f64 = rates.entry(format!("{label}_{processes}")).or_default();
                *best = best.max(rate);
            }
        }
    }
    for key in ["node_1", "node_2", "cluster_1", "cluster_2"] {
        figures.push(format!("{key}={:.0}", rates[key]));
    }
    println!(
        "bench-cluster: {} ratio_1={:.2} ratio_2={:.2}",
        figures.join(" "),
        rates["cluster_1"] / rates["node_1"],
        rates["cluster_2"] / rates["node_2"]
    );
    Ok(())
}

//! The private Redis Cluster the cluster tests and `scripts/bench.sh --cluster` run against
//! (`scripts/redis-cluster.sh`): what it starts, and that it fails over as a real one does.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// `CLUSTER INFO` of one node as key → value.
fn info(con: &mut redis::Connection) -> HashMap<String, String> {
    let text: String = redis::cmd("CLUSTER").arg("INFO").query(con).expect("CLUSTER INFO");
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// (address, role) of every node, as `CLUSTER NODES` on `con` sees them; failed ones are marked.
fn roles(con: &mut redis::Connection) -> Vec<(String, String)> {
    let text: String = redis::cmd("CLUSTER").arg("NODES").query(con).expect("CLUSTER NODES");
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let address = fields.get(1)?.split('@').next()?.to_string();
            let flags = fields.get(2)?;
            let role = if flags.contains("fail") && !flags.contains("fail?") {
                "failed"
            } else if flags.contains("master") {
                "master"
            } else {
                "replica"
            };
            Some((address, role.to_string()))
        })
        .collect()
}

#[test]
fn the_private_cluster_has_three_masters_with_a_replica_each_and_fails_over_when_one_dies() {
    let cluster = PrivateCluster::start();
    for &port in &cluster.ports {
        let i = info(&mut cluster.node(port));
        assert_eq!(i["cluster_state"], "ok", "node {port}: {i:?}");
        assert_eq!(i["cluster_slots_assigned"], "16384", "node {port}");
        assert_eq!(i["cluster_known_nodes"], "6", "node {port}");
    }
    let first = cluster.ports[0];
    let seen = roles(&mut cluster.node(first));
    let masters: Vec<String> = seen.iter().filter(|(_, r)| r == "master").map(|(a, _)| a.clone()).collect();
    assert_eq!(masters.len(), 3, "{seen:?}");

    // kill -9 a master other than the one we ask: its replica takes its slots over.
    let victim = masters.iter().find(|a| !a.ends_with(&format!(":{first}"))).expect("another master").clone();
    let victim_port: u16 = victim.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
    let pid = cluster.pid(victim_port);
    std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill");
    wait_until(Duration::from_secs(30), "a replica promoted in the dead master's place", || {
        let now = roles(&mut cluster.node(first));
        let state = info(&mut cluster.node(first));
        let masters = now.iter().filter(|(_, r)| r == "master").count();
        (state["cluster_state"] == "ok"
            && masters == 3
            && now.iter().any(|(a, r)| a == &victim && r == "failed"))
        .then_some(())
    });
}

const SHARDS: usize = 16;
const EVENTS: usize = 50_000;
const STREAM: &str = "events";

/// What a drain test starts: a private cluster, a database, and the events published over
/// [`SHARDS`] shards of [`STREAM`] (ids `ev-0` …), each XADD already on its master's replica.
struct Drain {
    cluster: PrivateCluster,
    db: TestDb,
    url: String,
    ids: Vec<String>,
}

impl Drain {
    fn publish() -> Drain {
        Drain::publish_on(PrivateCluster::start(), EVENTS)
    }

    /// `events` events published on `cluster`.
    fn publish_on(cluster: PrivateCluster, events: usize) -> Drain {
        let url = cluster.url();
        let ids: Vec<String> = (0..events).map(|i| format!("ev-{i}")).collect();
        let lines: String = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let session = format!("s-{}", i % 500);
                format!("{{\"id\":\"{id}\",\"type\":\"page.view\",\"data\":{{\"session_id\":\"{session}\",\"n\":{i}}}}}\n")
            })
            .collect();
        let file = cluster.dir.join("events.jsonl");
        std::fs::write(&file, lines).expect("write events");
        let shards = SHARDS.to_string();
        let (code, stdout, stderr) = run_streamsink(
            &["publish", "--stream", STREAM, "--shards", &shards, "--json", file.to_str().expect("path")],
            &[("REDIS_URL", &url)],
        );
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert_eq!(json_of(&stdout)["published"], events, "{stdout}");
        let drain = Drain { cluster, db: TestDb::create(), url, ids };
        // Every entry on a replica too: what Redis may lose in a failover below is only what
        // the workers change (delivery and acknowledgement), never an entry itself.
        for port in drain.masters() {
            let replicas: i64 =
                redis::cmd("WAIT").arg(1).arg(5000).query(&mut drain.cluster.node(port)).expect("WAIT");
            assert_eq!(replicas, 1, "master {port}: its replica did not confirm the entries");
        }
        drain
    }

    /// The ports of the current masters.
    fn masters(&self) -> Vec<u16> {
        let alive = self.alive_port();
        roles(&mut self.cluster.node(alive))
            .into_iter()
            .filter(|(_, role)| role == "master")
            .filter_map(|(address, _)| address.rsplit(':').next().and_then(|p| p.parse().ok()))
            .collect()
    }

    /// A node that answers.
    fn alive_port(&self) -> u16 {
        *self
            .cluster
            .ports
            .iter()
            .find(|&&p| {
                redis::Client::open(self.cluster.node_url(p)).and_then(|c| c.get_connection()).is_ok()
            })
            .expect("a live node")
    }

    /// A connection to the whole cluster, routing by key.
    fn client(&self) -> redis::cluster::ClusterConnection {
        let alive = self.alive_port();
        redis::cluster::ClusterClient::new(vec![self.cluster.node_url(alive)])
            .and_then(|c| c.get_connection())
            .expect("cluster connection")
    }

    fn shards() -> Vec<String> {
        (0..SHARDS).map(|k| format!("{STREAM}:{{{k}}}")).collect()
    }

    /// `streamsink run` reading every shard as consumer `name`, with `extra` settings.
    fn worker(&self, name: &str, extra: &[(&str, &str)]) -> Process {
        let mut env = vec![
            ("REDIS_URL", self.url.as_str()),
            ("DATABASE_URL", self.db.url.as_str()),
            ("STREAMSINK_STREAMS", "events:{0..15}"),
            ("STREAMSINK_GROUP_START", "0"),
            ("STREAMSINK_CONSUMER", name),
        ];
        env.extend_from_slice(extra);
        let process = Process::spawn(&["run"], &env);
        process.wait_for_line("Event consumer started", Duration::from_secs(60));
        process
    }

    fn stored(&self) -> i64 {
        self.db.count_or_zero("SELECT count(*) FROM events")
    }

    /// Per shard: (entries pending in the group, entries not yet delivered to it).
    fn backlog(&self) -> Vec<(i64, i64)> {
        let mut con = self.client();
        Drain::shards()
            .iter()
            .map(|shard| {
                let groups: Vec<HashMap<String, redis::Value>> =
                    redis::cmd("XINFO").arg("GROUPS").arg(shard).query(&mut con).expect("XINFO GROUPS");
                let group = groups.first().expect("the group");
                let int = |k: &str| match group.get(k) {
                    Some(redis::Value::Int(n)) => *n,
                    _ => -1, // unknown lag: counted as a backlog
                };
                (int("pending"), int("lag"))
            })
            .collect()
    }

    /// Event ids of every entry the shards hold now.
    fn ids_in_redis(&self) -> std::collections::HashSet<String> {
        let mut con = self.client();
        let mut ids = std::collections::HashSet::new();
        for shard in Drain::shards() {
            let entries: Vec<(String, HashMap<String, String>)> =
                redis::cmd("XRANGE").arg(&shard).arg("-").arg("+").query(&mut con).expect("XRANGE");
            for (_, fields) in entries {
                let event: serde_json::Value = serde_json::from_str(&fields["event"]).expect("an envelope");
                ids.insert(event["id"].as_str().expect("an id").to_string());
            }
        }
        ids
    }

    fn ids_in_postgres(&self) -> std::collections::HashSet<String> {
        let mut client = self.db.client();
        client.query("SELECT id FROM events", &[]).expect("ids").iter().map(|r| r.get(0)).collect()
    }

    /// Waits until every shard has nothing pending and nothing undelivered, and every entry the
    /// shards hold is stored.
    fn wait_drained(&self, deadline: Duration) {
        wait_until(deadline, "every shard drained and every entry stored", || {
            let backlog = self.backlog();
            let idle = backlog.iter().all(|&(pending, lag)| pending == 0 && lag == 0);
            (idle && self.ids_in_redis().is_subset(&self.ids_in_postgres())).then_some(())
        });
    }

    /// The shard master owning `slot`, as CLUSTER SLOTS says.
    fn owner_of(&self, slot: i64) -> u16 {
        let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.cluster.node(self.alive_port()))
            .expect("SLOTS");
        slots
            .iter()
            .find_map(|range| match (&range[0], &range[1], &range[2]) {
                (redis::Value::Int(from), redis::Value::Int(to), redis::Value::Array(master))
                    if (*from..=*to).contains(&slot) =>
                {
                    match master.get(1) {
                        Some(redis::Value::Int(port)) => Some(*port as u16),
                        _ => None,
                    }
                }
                _ => None,
            })
            .expect("an owner")
    }
}

/// Stops `worker` (SIGTERM) and returns its final counters line.
fn stop(worker: Process) -> String {
    final_stats(&stop_all(worker))
}

/// Stops `worker` (SIGTERM; it must exit within 10 s, with 0) and returns all it printed.
fn stop_all(mut worker: Process) -> Vec<String> {
    worker.signal("TERM");
    let (code, took) = worker.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{:?}", worker.output());
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    worker.output()
}

fn final_stats(lines: &[String]) -> String {
    lines.iter().rev().find(|l| l.contains("final stats:")).cloned().expect("a final stats line")
}

/// The value of `key=` in a stats line.
fn figure(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

fn slot_of(con: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(con).expect("KEYSLOT")
}

#[test]
fn fifty_thousand_events_over_sixteen_shards_land_exactly_once_with_two_processes() {
    let drain = Drain::publish();
    let started = Instant::now();
    let (a, b) = (drain.worker("a", &[]), drain.worker("b", &[]));
    wait_until(Duration::from_secs(240), "every event stored", || {
        (drain.stored() == EVENTS as i64).then_some(())
    });
    let elapsed = started.elapsed();
    drain.wait_drained(Duration::from_secs(30));
    let (said_a, said_b) = (stop_all(a), stop_all(b));
    for said in [&said_a, &said_b] {
        assert!(
            said.iter().any(|l| l.contains("reading 16 shards over 3 masters")),
            "one reader connection per master: {said:?}"
        );
    }
    let (a, b) = (final_stats(&said_a), final_stats(&said_b));

    assert_eq!(drain.ids_in_postgres(), drain.ids.iter().cloned().collect(), "every published id, once");
    let inserted = (figure(&a, "inserted"), figure(&b, "inserted"));
    assert_eq!(inserted.0 + inserted.1, EVENTS as u64, "a: {a}\nb: {b}");
    assert!(inserted.0 > 0 && inserted.1 > 0, "both processes took a share: {inserted:?}");
    // Redeliveries (an entry held past claim_min_idle on a starved machine, claimed by the other
    // process) are allowed: they are duplicates by primary key, never a second row.
    eprintln!(
        "drained {EVENTS} events over {SHARDS} shards on 3 masters with 2 processes in {:.1}s (debug build); \
         inserted a={} b={}; redelivered duplicates {}",
        elapsed.as_secs_f64(),
        inserted.0,
        inserted.1,
        figure(&a, "duplicates") + figure(&b, "duplicates")
    );
}

/// Small batches, so the drain is still under way when the cluster changes, and a short
/// claim_min_idle, so entries whose acknowledgement a failover lost are reclaimed soon.
const SLOW: [(&str, &str); 4] = [
    ("STREAMSINK_WORKERS", "2"),
    ("STREAMSINK_BATCH", "100"),
    ("STREAMSINK_CLAIM_MIN_IDLE", "3s"),
    ("STREAMSINK_CLAIM_INTERVAL", "1s"),
];

#[test]
fn a_master_killed_mid_drain_is_replaced_by_its_replica_and_the_drain_goes_on_without_a_restart() {
    let drain = Drain::publish();
    let (mut a, mut b) = (drain.worker("a", &SLOW), drain.worker("b", &SLOW));
    wait_until(Duration::from_secs(120), "a fifth stored", || {
        (drain.stored() >= EVENTS as i64 / 5).then_some(())
    });

    // kill -9 the master of shard 0.
    let mut any = drain.cluster.node(drain.alive_port());
    let victim = drain.owner_of(slot_of(&mut any, "events:{0}"));
    let stored_before = drain.ids_in_postgres();
    let pid = drain.cluster.pid(victim);
    Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill");
    assert!(stored_before.len() < EVENTS, "the drain ended before the kill: nothing was tested");

    wait_until(Duration::from_secs(60), "a replica promoted for shard 0", || {
        let mut any = drain.cluster.node(drain.alive_port());
        let owner = drain.owner_of(slot_of(&mut any, "events:{0}"));
        (owner != victim).then_some(())
    });
    drain.wait_drained(Duration::from_secs(180));
    assert_eq!(a.child.try_wait().expect("try_wait"), None, "worker a kept running through the failover");
    assert_eq!(b.child.try_wait().expect("try_wait"), None, "worker b kept running through the failover");
    let (fa, fb) = (stop(a), stop(b));

    let stored = drain.ids_in_postgres();
    let in_redis = drain.ids_in_redis();
    assert!(stored_before.is_subset(&stored), "what was stored before the kill is still stored");
    let lost_by_redis: Vec<&String> =
        drain.ids.iter().filter(|id| !in_redis.contains(*id) && !stored.contains(*id)).collect();
    let duplicates = figure(&fa, "duplicates") + figure(&fb, "duplicates");
    let inserted = figure(&fa, "inserted") + figure(&fb, "inserted");
    eprintln!(
        "failover: {} stored before the kill, {} after; entries lost by Redis to asynchronous replication: {}; \
         redelivered and recognised as duplicates (acknowledgements the replica had not received): {duplicates}",
        stored_before.len(),
        stored.len(),
        lost_by_redis.len()
    );
    // Every entry was on its replica before the kill (WAIT), so Redis lost none: each is stored.
    assert!(lost_by_redis.is_empty(), "entries lost by Redis to asynchronous replication: {lost_by_redis:?}");
    assert_eq!(stored.len(), EVENTS);
    assert_eq!(
        inserted, EVENTS as u64,
        "each event inserted once, whatever was redelivered: a: {fa}\nb: {fb}"
    );
}

#[test]
fn resharding_slots_mid_drain_does_not_stop_it() {
    let drain = Drain::publish();
    let (a, b) = (drain.worker("a", &SLOW), drain.worker("b", &SLOW));
    wait_until(Duration::from_secs(120), "a tenth stored", || {
        (drain.stored() >= EVENTS as i64 / 10).then_some(())
    });

    // Move the lowest slots of the master of slot 0, up to and including every shard it owns
    // in its first range, to another master (redis-cli moves a source's slots from its lowest).
    let mut any = drain.cluster.node(drain.alive_port());
    let source = drain.owner_of(0);
    let moved: Vec<(String, i64)> = Drain::shards()
        .into_iter()
        .map(|s| {
            let slot = slot_of(&mut any, &s);
            (s, slot)
        })
        .filter(|(_, slot)| drain.owner_of(*slot) == source && *slot < 5461)
        .collect();
    let count = moved.iter().map(|(_, slot)| slot + 1).max().expect("the master of slot 0 owns a shard");
    let target = *drain.masters().iter().find(|&&p| p != source).expect("another master");
    let id = |port: u16| -> String {
        redis::cmd("CLUSTER").arg("MYID").query(&mut drain.cluster.node(port)).expect("MYID")
    };
    let before = drain.stored();
    let out = Command::new("redis-cli")
        .args(["--cluster", "reshard", &format!("127.0.0.1:{source}")])
        .args(["--cluster-from", &id(source), "--cluster-to", &id(target)])
        .args(["--cluster-slots", &count.to_string(), "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster reshard");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let during = drain.stored();
    for (shard, slot) in &moved {
        assert_eq!(drain.owner_of(*slot), target, "{shard} moved to the other master");
    }
    assert!(before < EVENTS as i64, "the drain ended before the reshard: nothing was tested");

    drain.wait_drained(Duration::from_secs(180));
    let (fa, fb) = (stop(a), stop(b));
    assert_eq!(drain.ids_in_postgres(), drain.ids.iter().cloned().collect(), "every published id, once");
    assert_eq!(figure(&fa, "inserted") + figure(&fb, "inserted"), EVENTS as u64);
    eprintln!(
        "reshard: moved {count} slots holding {} shards from {source} to {target} with {before} of {EVENTS} stored \
         ({during} once it was done)",
        moved.len()
    );
}

#[test]
fn operators_read_a_sharded_stream_per_shard_and_summed_on_a_cluster_that_requires_a_password() {
    const PASSWORD: &str = "cl-s3cret-pw";
    let drain = Drain::publish_on(PrivateCluster::start_with(Some(PASSWORD)), 400);
    let mut con = drain.client();
    // Two entries that are no events: each becomes a dead letter of its own shard; a third on
    // an unsharded stream, whose dead letters go to `{plain}:dlq`, in its slot.
    for shard in ["events:{2}", "events:{9}", "plain"] {
        let _: String =
            redis::cmd("XADD").arg(shard).arg("*").arg("event").arg("not json").query(&mut con).unwrap();
    }
    // A consumer that dies holding 5 entries of shard 0: they stay pending.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("events:{0}")
        .arg("event-processors")
        .arg("0")
        .query(&mut con)
        .unwrap();
    let held: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("event-processors")
        .arg("ghost")
        .arg("COUNT")
        .arg(5)
        .arg("STREAMS")
        .arg("events:{0}")
        .arg(">")
        .query(&mut con)
        .unwrap();
    assert!(matches!(held, redis::Value::Array(_)), "{held:?}");
    let worker = drain.worker("a", &[("STREAMSINK_STREAMS", "events:{0..15},plain")]);
    wait_until(Duration::from_secs(60), "every event but the 5 held stored", || {
        (drain.stored() == 395 && drain.backlog().iter().map(|(p, _)| p).sum::<i64>() == 5).then_some(())
    });
    let said = stop_all(worker);
    let last = final_stats(&said);
    assert_eq!(figure(&last, "dead_lettered"), 3, "{last}");
    assert!(said.iter().all(|l| !l.contains(PASSWORD)), "the worker logged the password: {said:?}");

    let env = [("REDIS_URL", drain.url.as_str())];
    let (code, out, err) = run_streamsink(&["status", "--stream", "events:{0..15}", "--json"], &env);
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD), "the password was printed");
    let items = json_of(&out);
    let items = items.as_array().expect("an array");
    assert_eq!(items.len(), SHARDS + 1, "one item per shard, then the sum");
    let sum = items.iter().find(|i| i.get("shards").is_some()).expect("the sum of the shards");
    assert_eq!(sum["stream"], "events");
    assert_eq!(sum["shards"], SHARDS);
    assert_eq!(sum["length"], 402, "400 events and the 2 that are not");
    assert_eq!(sum["dead_letters"]["length"], 2);
    assert_eq!(sum["groups"][0]["pending"], 5);
    assert_eq!(sum["groups"][0]["lag"], 0);
    assert_eq!(sum["groups"][0]["consumers"], 2, "a and ghost");
    let dead = |shard: &str| -> serde_json::Value {
        items.iter().find(|i| i["stream"] == shard).expect("the shard")["dead_letters"].clone()
    };
    assert_eq!(dead("events:{2}")["stream"], "events:{2}:dlq", "the dead letters share the shard's slot");
    assert_eq!(dead("events:{2}")["length"], 1);
    let (code, out, err) = run_streamsink(&["status", "--stream", "plain", "--json"], &env);
    assert_eq!(code, Some(0), "{err}");
    let plain = json_of(&out);
    assert_eq!(plain[0]["dead_letters"]["stream"], "{plain}:dlq", "{out}");
    assert_eq!(plain[0]["dead_letters"]["length"], 1, "{out}");

    let (code, out, err) = run_streamsink(&["status", "--stream", "events:{0..15}"], &env);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("events (16 shards, 16 existing): 402 entries, 2 dead letters"), "{out}");

    let check_env = [("REDIS_URL", drain.url.as_str()), ("STREAMSINK_STREAMS", "events:{0..15}")];
    let (code, out, err) = run_streamsink(&["check", "--json"], &check_env);
    assert_eq!(code, Some(0), "{out}{err}");
    let check = json_of(&out);
    assert_eq!(check["streams"].as_array().map(Vec::len), Some(SHARDS), "every shard checked: {out}");
    let sum = &check["sharded"][0];
    assert_eq!((&sum["stream"], &sum["shards"]), (&serde_json::json!("events"), &serde_json::json!(SHARDS)));
    assert_eq!((&sum["length"], &sum["pending"], &sum["lag"]), (&402.into(), &5.into(), &0.into()), "{out}");
    assert_eq!(sum["dead_letters"], 2, "{out}");
    let (_, out, _) = run_streamsink(&["check"], &check_env);
    assert!(out.contains("events (sum of 16 shards)"), "{out}");

    let (code, out, err) = run_streamsink(&["pending", "--stream", "events:{0..15}", "--json"], &env);
    assert_eq!(code, Some(0), "{err}");
    let pending = json_of(&out);
    assert_eq!(pending["pending"], 5);
    let entries = pending["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 5);
    assert!(entries.iter().all(|e| e["stream"] == "events:{0}" && e["consumer"] == "ghost"), "{entries:?}");

    let (code, out, err) = run_streamsink(&["dlq", "list", "--stream", "events:{0..15}", "--json"], &env);
    assert_eq!(code, Some(0), "{err}");
    let letters = json_of(&out)["dead_letters"].as_array().expect("letters").clone();
    let mut shards: Vec<String> =
        letters.iter().map(|l| l["original_stream"].as_str().unwrap_or_default().to_string()).collect();
    shards.sort();
    assert_eq!(shards, ["events:{2}", "events:{9}"]);

    let (code, _, err) = run_streamsink(&["dlq", "show", "--stream", "events:{0..15}", "1-1"], &env);
    assert_eq!(code, Some(2), "a range names no one dead letter: {err}");
    // Replayed shard by shard: each goes back onto its own shard (a script per entry, loaded on
    // that shard's master first).
    let (code, out, err) =
        run_streamsink(&["dlq", "replay", "--stream", "events:{0..15}", "--all", "--json"], &env);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json_of(&out)["replayed"], 2, "{out}");
    let (_, out, _) = run_streamsink(&["status", "--stream", "events:{0..15}", "--json"], &env);
    let items = json_of(&out);
    let sum =
        items.as_array().and_then(|a| a.iter().find(|i| i.get("shards").is_some()).cloned()).expect("sum");
    assert_eq!(sum["dead_letters"]["length"], 0, "replayed from every shard");
    assert_eq!(sum["length"], 404, "the 2 replayed are back on their shards");
    let (code, out, err) = run_streamsink(&["dlq", "purge", "--stream", "plain", "--all", "--json"], &env);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json_of(&out)["purged"], 1, "{out}");

    // A line whose shard is a key of another type fails alone, with Redis's own words.
    let _: () = redis::cmd("SET").arg("other:{1}").arg("not a stream").query(&mut con).unwrap();
    let lines: String =
        (0..40).map(|i| format!("{{\"id\":\"o-{i}\",\"type\":\"t\",\"data\":{{}}}}\n")).collect();
    let file = drain.cluster.dir.join("other.jsonl");
    std::fs::write(&file, lines).expect("write");
    let path = file.to_str().expect("path");
    let (code, out, _) =
        run_streamsink(&["publish", "--stream", "other", "--shards", "4", "--json", path], &env);
    let report = json_of(&out);
    let failed = report["failed"].as_u64().expect("failed");
    assert_eq!(code, Some(1), "{out}");
    assert!(failed > 0 && failed < 40, "only the lines of shard 1 fail: {out}");
    assert_eq!(report["published"].as_u64().expect("published") + failed, 40, "{out}");
    assert!(out.contains("WRONGTYPE"), "{out}");

    // Trimmed shard by shard: the 5 pending on shard 0 hold that shard's trim back.
    let (code, out, err) =
        run_streamsink(&["trim", "--stream", "events:{0..15}", "--maxlen", "0", "--dry-run", "--json"], &env);
    assert_eq!(code, Some(0), "{err}");
    let reports = json_of(&out);
    let reports = reports.as_array().expect("one report per shard");
    let streams: Vec<&str> = reports.iter().filter_map(|r| r["stream"].as_str()).collect();
    assert_eq!(streams, Drain::shards().iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn a_cluster_over_tls_is_written_and_drained_with_its_ca_and_refused_without_it() {
    let pki = common::tls::Pki::new();
    let cluster = PrivateCluster::start_configured(None, Some(&pki.dir));
    let (url, ca, db) = (cluster.url(), pki.path("ca.pem"), TestDb::create());
    assert!(url.starts_with("rediss+cluster://"), "{url}");
    let lines: String =
        (0..300).map(|i| format!("{{\"id\":\"tls-{i}\",\"type\":\"t\",\"data\":{{}}}}\n")).collect();
    let file = cluster.dir.join("tls.jsonl");
    std::fs::write(&file, lines).expect("write events");
    let env = [("REDIS_URL", url.as_str()), ("STREAMSINK_REDIS_CA", ca.as_str())];
    let (code, out, err) = run_streamsink(
        &["publish", "--stream", STREAM, "--shards", "16", file.to_str().expect("path")],
        &env,
    );
    assert_eq!((code, out.trim()), (Some(0), "published=300 failed=0"), "{err}");

    let worker = Process::spawn(
        &["run"],
        &[
            ("REDIS_URL", url.as_str()),
            ("STREAMSINK_REDIS_CA", ca.as_str()),
            ("DATABASE_URL", db.url.as_str()),
            ("STREAMSINK_STREAMS", "events:{0..15}"),
        ],
    );
    wait_until(Duration::from_secs(60), "300 events stored over TLS", || {
        (db.count_or_zero("SELECT count(*) FROM events") == 300).then_some(())
    });
    let last = stop(worker);
    assert_eq!(figure(&last, "inserted"), 300, "{last}");

    // Without the CA, the system's trust store does not know the test CA: one line, naming it.
    let (code, _, err) =
        run_streamsink(&["status", "--stream", "events:{0..15}"], &[("REDIS_URL", url.as_str())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("STREAMSINK_REDIS_CA"), "the hint names the setting: {err}");
}

#[test]
fn a_master_that_stops_answering_holds_no_stop_and_the_drain_resumes_after_its_failover() {
    let drain = Drain::publish_on(PrivateCluster::start(), 20_000);
    let a = drain.worker("a", &SLOW);
    wait_until(Duration::from_secs(120), "a tenth stored", || (drain.stored() >= 2_000).then_some(()));

    // SIGSTOP: the master of shard 0 neither answers nor closes its connections.
    let mut any = drain.cluster.node(drain.alive_port());
    let victim = drain.owner_of(slot_of(&mut any, "events:{0}"));
    let pid = drain.cluster.pid(victim).to_string();
    Command::new("kill").args(["-STOP", &pid]).status().expect("kill -STOP");
    let before = drain.stored();
    let said = stop_all(a); // within 10 s, exit 0, though a thread may be waiting on that node
    Command::new("kill").args(["-CONT", &pid]).status().expect("kill -CONT");
    assert!(before < 20_000, "the drain ended before the stall: nothing was tested");
    assert!(said.iter().any(|l| l.contains("final stats:")), "{said:?}");

    // The cluster has moved shard 0 to the replica meanwhile (or the master is back): a new
    // process finishes the drain, every event once.
    let b = drain.worker("b", &SLOW);
    drain.wait_drained(Duration::from_secs(180));
    stop(b);
    assert_eq!(drain.ids_in_postgres(), drain.ids.iter().cloned().collect(), "every published id, once");
}

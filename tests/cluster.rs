//! The private Redis Cluster the cluster tests and `scripts/bench.sh --cluster` run against
//! (`scripts/redis-cluster.sh`): what it starts, and that it fails over as a real one does.

mod common;

use std::collections::HashMap;
use std::time::Duration;

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

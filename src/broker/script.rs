//! Lua scripts that run on the node holding their keys, on one Redis or in a cluster.

use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{FromRedisValue, Script, ScriptInvocation};

use super::Redis;

/// A script and its source. The source is kept because redis-rs, on a cluster, answers
/// NOSCRIPT by loading the script on every node, which fails while any node is down (a replica
/// under repair, the old master after a failover): here it is loaded on the one node that runs
/// it.
pub(crate) struct Lua {
    /// Build invocations from this (`.key(…)`, `.arg(…)`), then [`Lua::run`] them.
    pub script: Script,
    code: &'static str,
}

impl Lua {
    pub(crate) fn new(code: &'static str) -> Lua {
        Lua { script: Script::new(code), code }
    }

    /// Runs `inv` (built from `self.script`) where `key`, its first key, lives. On one node:
    /// EVALSHA, and SCRIPT LOAD on NOSCRIPT. In a cluster: SCRIPT LOAD on the master of `key`'s
    /// slot, then EVALSHA there (one more round trip; these scripts are not on the hot path).
    pub(crate) fn run<T: FromRedisValue>(
        &self,
        con: &mut Redis,
        inv: &ScriptInvocation<'_>,
        key: &str,
    ) -> redis::RedisResult<T> {
        if let Redis::Cluster(c) = con {
            let route = Route::with_key(key, SlotAddr::Master);
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
            c.route_command(redis::cmd("SCRIPT").arg("LOAD").arg(self.code), routing)?;
        }
        inv.invoke(con)
    }
}

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
        self.load_on(con, key)?;
        inv.invoke(con)
    }

    /// In a cluster, loads the script on the master of `key`'s slot: before a pipeline of
    /// EVALSHA too, which a cluster connection fails as a whole on one NOSCRIPT. Nothing on one
    /// node, where NOSCRIPT is answered per call.
    pub(crate) fn load_on(&self, con: &mut Redis, key: &str) -> redis::RedisResult<()> {
        if let Redis::Cluster(c) = con {
            let route = Route::with_key(key, SlotAddr::Master);
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
            c.route_command(redis::cmd("SCRIPT").arg("LOAD").arg(self.code), routing)?;
        }
        Ok(())
    }
}

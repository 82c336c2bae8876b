//! Opening a Redis connection (one node or a cluster) that can never hang, over TLS where the
//! URL is rediss://, and telling a lost connection from a refused command.

use std::time::Duration;

use redis::cluster::{ClusterClientBuilder, ClusterConnection};
use redis::{Connection, ConnectionLike};

use crate::config::RedisSettings;
use crate::tls;

/// Time allowed for a TCP connect and for each reply outside a blocking read.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a single Redis node, or to a Redis Cluster (the redis crate's synchronous
/// cluster client: it routes each command by its first key's slot, follows MOVED and ASK, and
/// reloads the slot map when they say it is stale). Every broker function takes this, so one
/// code path serves both; what differs is in [`Redis::is_cluster`]'s few callers (the names
/// of the dead-letter stream and the error hash, the reader's per-shard reads, publishing).
///
/// A pipeline sent through a cluster connection goes whole to the node of its first command's
/// key: every command of it must address keys of one slot (one stream and its `:dlq` and
/// `:errors` keys); a pipeline across shards is split per stream by its sender.
pub enum Redis {
    /// One server (standalone, or the primary of a replicated pair behind one address).
    Node(Connection),
    /// A Redis Cluster, reached from the seed nodes of a `redis+cluster://` URL.
    Cluster(Box<ClusterConnection>),
}

impl Redis {
    /// True for a Redis Cluster: multi-key commands must stay in one slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Redis::Cluster(_))
    }
}

impl ConnectionLike for Redis {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        match self {
            Redis::Node(c) => c.req_packed_command(cmd),
            Redis::Cluster(c) => c.req_packed_command(cmd).map_err(topology_as_connection),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        match self {
            Redis::Node(c) => c.req_packed_commands(cmd, offset, count),
            Redis::Cluster(c) => c.req_packed_commands(cmd, offset, count).map_err(topology_as_connection),
        }
    }

    fn req_command(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        match self {
            Redis::Node(c) => c.req_command(cmd),
            Redis::Cluster(c) => c.req_command(cmd).map_err(topology_as_connection),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Redis::Node(c) => c.get_db(),
            Redis::Cluster(c) => c.get_db(),
        }
    }

    /// True for both: a cluster connection takes a pipeline whose commands share one slot
    /// (see the type's doc).
    fn supports_pipelining(&self) -> bool {
        true
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Redis::Node(c) => c.check_connection(),
            Redis::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Redis::Node(c) => c.is_open(),
            Redis::Cluster(c) => c.is_open(),
        }
    }
}

/// Retries the cluster client makes itself before a command's error reaches us: one, enough to
/// follow a MOVED or an ASK (or one TRYAGAIN). The client also resends a command whose reply
/// timed out, each try waiting a whole response timeout, so every try counts against the time a
/// thread can be held: see [`cluster_timeout`]. Longer faults are ours to retry
/// (`retry::retry`, on a new connection built from the seed nodes).
const CLUSTER_RETRIES: u32 = 1;
const CLUSTER_RETRY_WAIT_MS: u64 = 200;

/// A cluster node's connect timeout: a slot map reload connects to the nodes one after another.
const CLUSTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The response timeout of a cluster connection asked for `read_timeout`: a cluster read blocks
/// at most `read::CLUSTER_BLOCK`, so half a command timeout past that is enough, and the two
/// tries ([`CLUSTER_RETRIES`] + 1) hold a thread about as long as one single-node timeout.
fn cluster_timeout(read_timeout: Duration) -> Duration {
    read_timeout.min(COMMAND_TIMEOUT / 2 + super::read::CLUSTER_BLOCK)
}

/// Opens one connection with connect, read and write timeouts, so no call can hang forever.
/// `read_timeout` must exceed any BLOCK the connection will be used for (for a cluster, a reply
/// later than it makes the client resend the command: a resent `XREADGROUP >` leaves the first
/// reply's entries pending, to be reclaimed). The client is built from the parsed connection
/// info the URL holds, never from text, and for a rediss:// URL with the CA, certificate and
/// key `settings` name (the TLS handshake runs within the connect timeout). Every Redis
/// connection of the process is made here, so all use TLS alike.
///
/// A failure with a TLS cause (`tls::diagnose`) says which setting to check in its message, and
/// is still an I/O error: retried where connection errors are.
pub fn connect(settings: &RedisSettings, read_timeout: Duration) -> redis::RedisResult<Redis> {
    tls::provider();
    let certificates = || {
        tls::redis_certificates(
            settings.redis_ca.as_ref(),
            settings.redis_cert.as_ref(),
            settings.redis_key.as_ref(),
        )
    };
    if let Some(nodes) = settings.redis_url.redis_cluster_nodes() {
        let mut builder = ClusterClientBuilder::new(nodes.to_vec())
            .connection_timeout(CLUSTER_CONNECT_TIMEOUT)
            .response_timeout(cluster_timeout(read_timeout))
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(CLUSTER_RETRY_WAIT_MS / 4)
            .max_retry_wait(CLUSTER_RETRY_WAIT_MS);
        if let Some(certificates) = certificates() {
            builder = builder.certs(certificates);
        }
        let mut con = builder
            .build()
            .and_then(|client| client.get_connection())
            .map_err(|e| tls::explain_redis(e, settings.peer()))?;
        con.set_write_timeout(Some(COMMAND_TIMEOUT))?;
        // A seed that is a single node answers PING but has no slot map: the client then has no
        // node for any command. Said once here, in words, rather than on every command.
        if let Err(e) = redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut con) {
            let text = e.to_string();
            let disabled = text.contains("No connections found") || text.contains("cluster support disabled");
            if disabled {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "the seed nodes are not a Redis Cluster (no slot map; for a single node, use redis://)",
                )));
            }
            return Err(e);
        }
        return Ok(Redis::Cluster(Box::new(con)));
    }
    let info = settings.redis_url.redis_connection_info().ok_or((
        redis::ErrorKind::InvalidClientConfig,
        "a PostgreSQL URL was given where a Redis URL belongs",
    ))?;
    connect_node(settings, info.clone(), read_timeout).map(Redis::Node)
}

/// One plain connection to the cluster node at `host:port`, with the seed nodes' user, password
/// and TLS settings: the reader's own connection to each master (`broker::nodes`). Its read
/// timeout is a cluster's ([`cluster_timeout`]).
pub(crate) fn connect_cluster_node(
    settings: &RedisSettings,
    host: &str,
    port: u16,
    read_timeout: Duration,
) -> redis::RedisResult<Connection> {
    let seed = settings
        .redis_url
        .redis_cluster_nodes()
        .and_then(|n| n.first())
        .ok_or((redis::ErrorKind::InvalidClientConfig, "not a redis+cluster:// URL"))?;
    let addr = match seed.addr() {
        redis::ConnectionAddr::TcpTls { insecure, tls_params, .. } => redis::ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => redis::ConnectionAddr::Tcp(host.to_string(), port),
    };
    connect_node(settings, seed.clone().set_addr(addr), cluster_timeout(read_timeout))
}

/// A plain connection to `info`, with the settings' TLS files, connect, read and write timeouts.
fn connect_node(
    settings: &RedisSettings,
    info: redis::ConnectionInfo,
    read_timeout: Duration,
) -> redis::RedisResult<Connection> {
    tls::provider();
    let certificates = tls::redis_certificates(
        settings.redis_ca.as_ref(),
        settings.redis_cert.as_ref(),
        settings.redis_key.as_ref(),
    );
    let client = match certificates {
        Some(certificates) => redis::Client::build_with_tls(info, certificates)?,
        None => redis::Client::open(info)?,
    };
    let con = client
        .get_connection_with_timeout(COMMAND_TIMEOUT)
        .map_err(|e| tls::explain_redis(e, settings.peer()))?;
    con.set_read_timeout(Some(read_timeout))?;
    con.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    Ok(con)
}

/// Connection lost, or a server that is up but not serving yet (loading its AOF after a
/// restart, a failover under way): in every case, reconnect later and retry.
pub(crate) fn is_connection_error(e: &redis::RedisError) -> bool {
    use redis::ServerErrorKind::{BusyLoading, ClusterDown, MasterDown, TryAgain};
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || matches!(e.kind(), redis::ErrorKind::Server(BusyLoading | TryAgain | MasterDown | ClusterDown))
}

/// In a cluster, an answer that means its topology changed under a command is a lost
/// connection: `MOVED` or `ASK` still there after the client's own retry, a blocked read
/// released by a failover or a slot migration (`UNBLOCKED`), a write to a node just demoted
/// (`READONLY`), or the client finding no node for a slot (its map is being rebuilt). A new
/// connection reloads the slot map. On a single node these keep their own meaning.
fn topology_as_connection(e: redis::RedisError) -> redis::RedisError {
    use redis::ServerErrorKind::{Ask, Moved, ReadOnly};
    let changed = matches!(
        e.kind(),
        redis::ErrorKind::Server(Moved | Ask | ReadOnly) | redis::ErrorKind::ClusterConnectionNotFound
    ) || e.code() == Some("UNBLOCKED")
        || e.to_string().contains("Missing slot coverage");
    if !changed {
        return e;
    }
    let why = format!("the cluster's topology changed under the command ({e})");
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::ConnectionReset, why))
}

//! Opening a Redis connection that can never hang, and telling a lost connection from a
//! refused command.

use std::time::Duration;

use redis::Connection;

use crate::secret::SecretUrl;

/// Time allowed for a TCP connect and for each reply outside a blocking read.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens one connection with connect, read and write timeouts, so no call can hang forever.
/// `read_timeout` must exceed any BLOCK the connection will be used for. The client is built
/// from the parsed connection info `url` holds, never from text.
pub fn connect(url: &SecretUrl, read_timeout: Duration) -> redis::RedisResult<Connection> {
    let info = url.redis_connection_info().ok_or((
        redis::ErrorKind::InvalidClientConfig,
        "a PostgreSQL URL was given where a Redis URL belongs",
    ))?;
    let client = redis::Client::open(info.clone())?;
    let con = client.get_connection_with_timeout(COMMAND_TIMEOUT)?;
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

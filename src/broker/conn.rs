//! Opening a Redis connection that can never hang, over TLS where the URL is rediss://, and
//! telling a lost connection from a refused command.

use std::time::Duration;

use redis::Connection;

use crate::config::RedisSettings;
use crate::tls;

/// Time allowed for a TCP connect and for each reply outside a blocking read.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens one connection with connect, read and write timeouts, so no call can hang forever.
/// `read_timeout` must exceed any BLOCK the connection will be used for. The client is built
/// from the parsed connection info the URL holds, never from text, and for a rediss:// URL with
/// the CA, certificate and key `settings` name (the TLS handshake runs within the connect
/// timeout). Every Redis connection of the process is made here, so all use TLS alike.
///
/// A failure with a TLS cause (`tls::diagnose`) says which setting to check in its message, and
/// is still an I/O error: retried where connection errors are.
pub fn connect(settings: &RedisSettings, read_timeout: Duration) -> redis::RedisResult<Connection> {
    let info = settings.redis_url.redis_connection_info().ok_or((
        redis::ErrorKind::InvalidClientConfig,
        "a PostgreSQL URL was given where a Redis URL belongs",
    ))?;
    tls::provider();
    let certificates = tls::redis_certificates(
        settings.redis_ca.as_ref(),
        settings.redis_cert.as_ref(),
        settings.redis_key.as_ref(),
    );
    let client = match certificates {
        Some(certificates) => redis::Client::build_with_tls(info.clone(), certificates)?,
        None => redis::Client::open(info.clone())?,
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

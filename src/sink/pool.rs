//! The r2d2 pool of Postgres connections the workers share.

use std::time::Duration;

use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;

use super::SinkError;
use crate::secret::SecretUrl;

/// The pool the workers share: one connection per worker.
pub type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// A pooled connection.
pub type PooledClient = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// Builds the pool without connecting: connections are made on first use, so start-up can
/// retry an unreachable database with its own backoff and logging.
pub fn pool(database_url: &SecretUrl, size: usize) -> Result<Pool, SinkError> {
    let mut config = database_url
        .postgres_config()
        .cloned()
        .ok_or_else(|| SinkError::Url { url: database_url.clone() })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("streamsink");
    }
    let manager = PostgresConnectionManager::new(config, NoTls);
    Ok(r2d2::Pool::builder()
        .max_size(size as u32)
        .min_idle(Some(0))
        // has_broken() (a closed socket) is checked on return; a round trip per checkout
        // would cost more than the rare retry it saves.
        .test_on_check_out(false)
        .connection_timeout(Duration::from_secs(5))
        // r2d2 would log every failed connect; `retry::Outage` logs an outage once instead.
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(manager))
}

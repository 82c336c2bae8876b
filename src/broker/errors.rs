//! The hash `<stream>:errors`, where the last error of an entry that may be redelivered is
//! kept, so the dead letter written when its delivery budget runs out can say what went
//! wrong, even in another process.

use super::Redis;

use super::BrokerError;

/// The last-error hash of `stream` on this connection's kind of server.
fn errors_key(con: &Redis, stream: &str) -> String {
    super::keys::errors_hash(stream, con.is_cluster())
}

/// How long the error hash outlives its last write: long enough for any redelivery.
const ERRORS_TTL_SECS: u64 = 7 * 24 * 3600;

/// Records `error` as the last error of `ids`.
pub fn record_errors(con: &mut Redis, stream: &str, ids: &[&str], error: &str) -> Result<(), BrokerError> {
    if ids.is_empty() {
        return Ok(());
    }
    let key = errors_key(con, stream);
    let mut hset = redis::cmd("HSET");
    hset.arg(&key);
    for id in ids {
        hset.arg(*id).arg(error);
    }
    redis::pipe()
        .add_command(hset)
        .ignore()
        .cmd("EXPIRE")
        .arg(&key)
        .arg(ERRORS_TTL_SECS)
        .ignore()
        .query::<()>(con)
        .map_err(|e| BrokerError::new("HSET errors", stream, e))
}

/// The last recorded error of each id, if any.
pub(crate) fn last_errors(
    con: &mut Redis,
    stream: &str,
    ids: &[&str],
) -> Result<Vec<Option<String>>, BrokerError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    redis::cmd("HMGET")
        .arg(errors_key(con, stream))
        .arg(ids)
        .query(con)
        .map_err(|e| BrokerError::new("HMGET errors", stream, e))
}

/// Forgets the recorded errors of `ids` (they are acknowledged now).
pub(crate) fn forget_errors(con: &mut Redis, stream: &str, ids: &[&str]) -> Result<(), BrokerError> {
    if ids.is_empty() {
        return Ok(());
    }
    redis::cmd("HDEL")
        .arg(errors_key(con, stream))
        .arg(ids)
        .query::<()>(con)
        .map_err(|e| BrokerError::new("HDEL errors", stream, e))
}

//! Prepared statements kept per pooled connection.

use std::collections::HashMap;

use postgres::{Statement, Transaction};

use super::pool::PooledClient;

/// Prepared statements of one connection, keyed by their SQL: each is parsed and planned once
/// per connection instead of once per batch. Kept in the pooled connection's extensions, so it
/// lives and dies with the connection; dropped after any error, in case one went stale.
#[derive(Default)]
pub struct StatementCache(HashMap<&'static str, Statement>);

impl StatementCache {
    /// The prepared form of `sql` on this transaction's connection.
    pub fn prepare(
        &mut self,
        tx: &mut Transaction<'_>,
        sql: &'static str,
    ) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = tx.prepare(sql)?;
        self.0.insert(sql, statement.clone());
        Ok(statement)
    }

    /// Takes the cache out of a pooled connection (an empty one if it has none yet).
    pub(crate) fn take(client: &mut PooledClient) -> StatementCache {
        r2d2::PooledConnection::extensions_mut(client).remove::<StatementCache>().unwrap_or_default()
    }

    /// Puts the cache back into its connection.
    pub(crate) fn put_back(self, client: &mut PooledClient) {
        r2d2::PooledConnection::extensions_mut(client).insert(self);
    }
}

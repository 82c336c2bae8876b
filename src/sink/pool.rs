//! How streamsink reaches PostgreSQL: [`Postgres`] (the client configuration and the TLS
//! connector, built once from the settings) and the r2d2 pool of connections the workers share.
//!
//! Invariant: every connection (the pool's, start-up's migration, `streamsink migrate`, the
//! cancel requests) is made from one [`Postgres`], so all use the same TLS mode and connector.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{SinkError, fault};
use crate::config::PostgresTlsSettings;
use crate::retry::Outage;
use crate::secret::SecretUrl;
use crate::tls::{self, Diagnosis, PgTls};

/// The pool the workers share: one connection per worker.
pub type Pool = r2d2::Pool<Manager>;

/// A pooled connection.
pub type PooledClient = r2d2::PooledConnection<Manager>;

/// Where PostgreSQL is and how to speak to it: the parsed configuration with its timeouts,
/// application name and sslmode (from the TLS mode), and the rustls connector.
pub struct Postgres {
    url: SecretUrl,
    config: postgres::Config,
    tls: MakeRustlsConnect,
    peer: tls::Peer,
    mode: PgTls,
    /// A [`Postgres::connect`] still under way after its caller stopped waiting for it.
    pending: Mutex<Option<Receiver<Result<postgres::Client, postgres::Error>>>>,
}

/// The longest [`Postgres::connect`] waits when the configuration sets no connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Postgres {
    /// Builds the configuration and the connector (reading the system's trust store if the
    /// mode verifies without `STREAMSINK_PG_CA`) for `url` as `tls` says. Connects nothing.
    pub fn new(url: &SecretUrl, tls: &PostgresTlsSettings) -> Result<Postgres, SinkError> {
        let mut config = url.postgres_config().cloned().ok_or_else(|| SinkError::Url { url: url.clone() })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("streamsink");
        }
        let mode = tls.mode(url);
        config.ssl_mode(mode.ssl_mode());
        let peer = tls.peer(url);
        let tls = tls::postgres_connector(mode, tls.pg_ca.as_ref()).map_err(SinkError::Tls)?;
        Ok(Postgres { url: url.clone(), config, tls, peer, mode, pending: Mutex::new(None) })
    }

    /// The TLS mode in force.
    pub fn tls_mode(&self) -> PgTls {
        self.mode
    }

    /// The connector, for cancel requests (sent on a connection of their own).
    pub(crate) fn connector(&self) -> MakeRustlsConnect {
        self.tls.clone()
    }

    /// One connection outside the pool (start-up's migration, `streamsink migrate`): its error
    /// is the client's own, diagnosed, not the pool's timeout.
    ///
    /// The client bounds only the TCP connect by its connect timeout; a server that accepts and
    /// then says nothing (a stalled server, a silent relay) would hold the SSL request or the
    /// start-up exchange forever. So the connect runs on a thread of its own and is waited for
    /// at most the connect timeout; one still under way then is waited for again by the next
    /// call rather than started anew, so a silent server holds one thread, not one per attempt.
    pub fn connect(&self) -> Result<postgres::Client, SinkError> {
        let wait = self.config.get_connect_timeout().copied().unwrap_or(CONNECT_TIMEOUT);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let result = match pending.take() {
            Some(under_way) => under_way,
            None => {
                let (tx, rx) = crossbeam_channel::bounded(1);
                let (config, tls) = (self.config.clone(), self.tls.clone());
                std::thread::Builder::new()
                    .name("pg-connect".into())
                    .spawn(move || {
                        let _ = tx.send(config.connect(tls));
                    })
                    .map_err(SinkError::Spawn)?;
                rx
            }
        };
        match result.recv_timeout(wait) {
            Ok(connected) => connected.map_err(|source| SinkError::Open {
                url: self.url.clone(),
                source: ConnectError::new(source, self.peer),
            }),
            Err(RecvTimeoutError::Timeout) => {
                *pending = Some(result);
                Err(SinkError::NoAnswer { url: self.url.clone(), after: wait })
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(SinkError::NoAnswer { url: self.url.clone(), after: wait })
            }
        }
    }

    /// The pool, built without connecting: connections are made on first use, so start-up can
    /// retry an unreachable database with its own backoff and logging. A connect that fails
    /// with a TLS refusal is reported to `outage` (which logs it once per outage): the pool
    /// keeps only the text of its last failure, so the worker that waited cannot tell.
    pub(crate) fn pool(&self, size: usize, outage: Arc<Outage>) -> Pool {
        let manager = Manager {
            inner: PostgresConnectionManager::new(self.config.clone(), self.tls.clone()),
            peer: self.peer,
        };
        r2d2::Pool::builder()
            .max_size(size as u32)
            .min_idle(Some(0))
            // has_broken() (a closed socket) is checked on return; a round trip per checkout
            // would cost more than the rare retry it saves.
            .test_on_check_out(false)
            .connection_timeout(Duration::from_secs(5))
            // r2d2 would log every failed connect; `retry::Outage` logs an outage once instead
            // (the worker reports the failure; refusals are reported from here).
            .error_handler(Box::new(Refusals(outage)))
            .build_unchecked(manager)
    }
}

/// A failed connect, with its TLS diagnosis: `Display` is the client's message and, where TLS
/// explains it, the setting to check in parentheses. The pool keeps only the text of its last
/// failed connect, so the diagnosis has to be in the text.
#[derive(Debug)]
pub struct ConnectError {
    pub source: postgres::Error,
    pub diagnosis: Option<Diagnosis>,
}

impl ConnectError {
    fn new(source: postgres::Error, peer: tls::Peer) -> ConnectError {
        let diagnosis = tls::diagnose(&source, peer);
        ConnectError { source, diagnosis }
    }

    /// True when a certificate was refused or TLS is not spoken as configured
    /// ([`Diagnosis::refused`]): waiting will not cure it.
    pub fn is_refusal(&self) -> bool {
        self.diagnosis.as_ref().is_some_and(|d| d.refused)
    }
}

impl std::fmt::Display for ConnectError {
    /// The server's message, or the client's with its causes (rust-postgres's own text is only
    /// the kind: "error performing TLS handshake"), then the hint.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&fault::describe(&self.source))?;
        if self.source.as_db_error().is_none() {
            let mut cause = std::error::Error::source(&self.source);
            while let Some(e) = cause {
                write!(f, ": {e}")?;
                cause = e.source();
            }
        }
        match &self.diagnosis {
            Some(d) => write!(f, " ({})", d.hint),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The pool's error handler: a TLS refusal goes to the outage it belongs to.
#[derive(Debug)]
struct Refusals(Arc<Outage>);

impl r2d2::HandleError<ConnectError> for Refusals {
    fn handle_error(&self, error: ConnectError) {
        if error.is_refusal() {
            self.0.fault("pool", &error);
        }
    }
}

/// r2d2_postgres's manager, whose connect errors carry their TLS diagnosis ([`ConnectError`]).
pub struct Manager {
    inner: PostgresConnectionManager<MakeRustlsConnect>,
    peer: tls::Peer,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager").field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = postgres::Client;
    type Error = ConnectError;

    fn connect(&self) -> Result<postgres::Client, ConnectError> {
        self.inner.connect().map_err(|e| ConnectError::new(e, self.peer))
    }

    fn is_valid(&self, client: &mut postgres::Client) -> Result<(), ConnectError> {
        self.inner.is_valid(client).map_err(|source| ConnectError { source, diagnosis: None })
    }

    fn has_broken(&self, client: &mut postgres::Client) -> bool {
        self.inner.has_broken(client)
    }
}

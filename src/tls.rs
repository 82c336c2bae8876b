//! TLS to Redis and to PostgreSQL on one stack: rustls with the `ring` provider (no OpenSSL).
//!
//! - The PEM files the settings name are read and parsed when the command line is read
//!   ([`ca_file`], [`cert_file`], [`key_file`]): a missing or unparsable file is a bad setting,
//!   refused before anything connects.
//! - Redis: redis-rs builds its rustls configuration from [`redis_certificates`]; the chain and
//!   the host name are always verified, against `STREAMSINK_REDIS_CA` or the system's trust
//!   store.
//! - PostgreSQL: [`PgTls`] is the mode resolved from `STREAMSINK_PG_TLS` and the URL's sslmode;
//!   [`postgres_connector`] builds the one connector type (`MakeRustlsConnect`) for every mode.
//! - [`diagnose`]: what a failed connection says about TLS, and the setting to check, so that
//!   the line reporting it names what to fix.
//!
//! Invariant: every rustls configuration is built with the `ring` provider, and `ring` is
//! installed as the process default ([`provider`]) before the first connection, so rustls never
//! has to pick a provider (and cannot panic for want of one).

use std::error::Error as StdError;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::InvalidValue;

/// The `ring` provider, installed as the process default on first use. redis-rs builds its
/// configuration with rustls's process default; ours are built with the provider returned.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| {
        // Err: a provider is installed already (by a test harness, say); it is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Arc::new(rustls::crypto::ring::default_provider())
    }))
}

/// A PEM file a setting names: its path (shown in messages) and its bytes, read once when the
/// command line is read. `Debug` and `Display` show the path only: a key file is a secret.
#[derive(Clone)]
pub struct PemFile {
    path: Arc<Path>,
    pem: Arc<[u8]>,
}

impl PemFile {
    fn read(value: &str) -> Result<PemFile, InvalidValue> {
        if value.trim().is_empty() {
            return Err(InvalidValue::Empty);
        }
        let pem = std::fs::read(value).map_err(|e| refused(value, format!("cannot be read ({e})")))?;
        Ok(PemFile { path: Path::new(value).into(), pem: pem.into() })
    }

    /// The path given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let certs = CertificateDer::pem_slice_iter(&self.pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("is not a valid PEM file ({e})"))?;
        if certs.is_empty() {
            return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
        }
        Ok(certs)
    }
}

impl fmt::Debug for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PemFile({:?})", self.path)
    }
}

impl fmt::Display for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())
    }
}

fn refused(path: &str, problem: String) -> InvalidValue {
    InvalidValue::TlsFile { path: path.to_string(), problem }
}

/// CA certificates to verify a server's certificate by (`STREAMSINK_REDIS_CA`,
/// `STREAMSINK_PG_CA`): one or more PEM certificates, each a usable trust anchor.
#[derive(Clone, Debug)]
pub struct CaFile(PemFile);

/// A client certificate chain, PEM (`STREAMSINK_REDIS_CERT`).
#[derive(Clone, Debug)]
pub struct CertFile(PemFile);

/// A client certificate's private key, PEM (`STREAMSINK_REDIS_KEY`).
#[derive(Clone, Debug)]
pub struct KeyFile(PemFile);

impl CaFile {
    /// The trust anchors. Every certificate was accepted as one when the file was read.
    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(self.0.certificates().unwrap_or_default());
        roots
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl CertFile {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl KeyFile {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// `STREAMSINK_*_CA`: a readable PEM file of certificates that can all be trust anchors.
pub(crate) fn ca_file(value: &str) -> Result<CaFile, InvalidValue> {
    let file = PemFile::read(value)?;
    let mut roots = RootCertStore::empty();
    for cert in file.certificates().map_err(|p| refused(value, p))? {
        roots.add(cert).map_err(|e| {
            refused(value, format!("holds a certificate that cannot be a trust anchor ({e})"))
        })?;
    }
    Ok(CaFile(file))
}

/// `STREAMSINK_REDIS_CERT`: a readable PEM file of at least one certificate.
pub(crate) fn cert_file(value: &str) -> Result<CertFile, InvalidValue> {
    let file = PemFile::read(value)?;
    file.certificates().map_err(|p| refused(value, p))?;
    Ok(CertFile(file))
}

/// `STREAMSINK_REDIS_KEY`: a readable PEM file holding a private key rustls can sign with.
pub(crate) fn key_file(value: &str) -> Result<KeyFile, InvalidValue> {
    let file = PemFile::read(value)?;
    let key = private_key(&file).map_err(|p| refused(value, p))?;
    provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| refused(value, format!("holds a private key that cannot be used ({e})")))?;
    Ok(KeyFile(file))
}

fn private_key(file: &PemFile) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(&file.pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "holds no PEM private key (-----BEGIN PRIVATE KEY----- or an RSA or EC key)".to_string()
        }
        e => format!("is not a valid PEM file ({e})"),
    })
}

/// Whether `key` is the private key of `cert`'s certificate; `Err` gives rustls's reason.
pub(crate) fn check_pair(cert: &CertFile, key: &KeyFile) -> Result<(), PairProblem> {
    let chain = cert.0.certificates().map_err(PairProblem::Certificate)?;
    let key = private_key(&key.0).map_err(PairProblem::NotItsKey)?;
    rustls::sign::CertifiedKey::from_der(chain, key, &provider()).map(|_| ()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => PairProblem::NotItsKey(e.to_string()),
        // A certificate rustls cannot use (version 1, an unknown key type...): the key may be
        // right, so the certificate is named, not the key.
        _ => PairProblem::Certificate(e.to_string()),
    })
}

/// Why a client certificate and key cannot be used together ([`check_pair`]).
#[derive(Debug)]
pub(crate) enum PairProblem {
    /// The key is not the certificate's (or is no usable key).
    NotItsKey(String),
    /// The certificate itself cannot be used.
    Certificate(String),
}

/// What redis-rs needs for a `rediss://` connection beyond its URL: the CA to verify the server
/// by (`None`: the system's trust store) and the client certificate and key for mutual TLS.
/// `None` when neither is set.
pub(crate) fn redis_certificates(
    ca: Option<&CaFile>,
    cert: Option<&CertFile>,
    key: Option<&KeyFile>,
) -> Option<redis::TlsCertificates> {
    let client_tls = match (cert, key) {
        (Some(cert), Some(key)) => {
            Some(redis::ClientTlsConfig { client_cert: cert.0.pem.to_vec(), client_key: key.0.pem.to_vec() })
        }
        _ => None,
    };
    let root_cert = ca.map(|ca| ca.0.pem.to_vec());
    (client_tls.is_some() || root_cert.is_some()).then_some(redis::TlsCertificates { client_tls, root_cert })
}

/// How a PostgreSQL connection uses TLS, once `STREAMSINK_PG_TLS` and the URL's sslmode are
/// resolved ([`PgTls::resolve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgTls {
    /// Clear text (`STREAMSINK_PG_TLS=off`, `sslmode=disable`).
    Off,
    /// TLS when the server offers it, else clear text (libpq's default, `sslmode=prefer`); the
    /// certificate is checked only against `STREAMSINK_PG_CA`, when set.
    Prefer,
    /// TLS or no connection; the certificate is checked only against `STREAMSINK_PG_CA`, when
    /// set (libpq's `require`, which checks the chain when a root certificate is given).
    Require,
    /// TLS or no connection; the chain is verified (against `STREAMSINK_PG_CA`, else the
    /// system's trust store), not the host name (`sslmode=verify-ca` in the URL).
    VerifyCa,
    /// TLS or no connection; the chain and the host name are verified.
    VerifyFull,
}

impl PgTls {
    /// The mode: `STREAMSINK_PG_TLS` when set, else the URL's sslmode.
    pub(crate) fn resolve(setting: Option<PgTls>, url: Option<crate::secret::SslMode>) -> PgTls {
        use crate::secret::SslMode;
        match (setting, url) {
            (Some(mode), _) => mode,
            (None, Some(SslMode::Disable)) => PgTls::Off,
            (None, Some(SslMode::Prefer) | None) => PgTls::Prefer,
            (None, Some(SslMode::Require)) => PgTls::Require,
            (None, Some(SslMode::VerifyCa)) => PgTls::VerifyCa,
            (None, Some(SslMode::VerifyFull)) => PgTls::VerifyFull,
        }
    }

    /// True when a connection in clear text is never made.
    pub fn requires_tls(self) -> bool {
        matches!(self, PgTls::Require | PgTls::VerifyCa | PgTls::VerifyFull)
    }

    /// The client's sslmode: `Require` for every mode that verifies, so `prefer` can never fall
    /// back to clear text where a certificate is to be checked.
    pub(crate) fn ssl_mode(self) -> postgres::config::SslMode {
        use postgres::config::SslMode;
        match self {
            PgTls::Off => SslMode::Disable,
            PgTls::Prefer => SslMode::Prefer,
            PgTls::Require | PgTls::VerifyCa | PgTls::VerifyFull => SslMode::Require,
        }
    }
}

impl fmt::Display for PgTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PgTls::Off => "off",
            PgTls::Prefer => "prefer",
            PgTls::Require => "require",
            PgTls::VerifyCa => "verify-ca",
            PgTls::VerifyFull => "verify-full",
        })
    }
}

/// `STREAMSINK_PG_TLS`: `off`, `require` or `verify-full`.
pub(crate) fn pg_tls(value: &str) -> Result<PgTls, InvalidValue> {
    match value.trim() {
        "off" => Ok(PgTls::Off),
        "require" => Ok(PgTls::Require),
        "verify-full" => Ok(PgTls::VerifyFull),
        other => Err(InvalidValue::NotAPgTlsMode(other.to_string())),
    }
}

/// TLS to PostgreSQL could not be set up (no trust anchor to verify by).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(String);

/// The connector for `mode`: one type for every mode (`Off` never uses it). Built once at
/// start; the system's trust store, when needed, is read here.
pub(crate) fn postgres_connector(mode: PgTls, ca: Option<&CaFile>) -> Result<MakeRustlsConnect, SetupError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError(format!("rustls refused its own protocol versions ({e})")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, ca) {
        (PgTls::Off | PgTls::Prefer | PgTls::Require, None) => {
            Arc::new(AnyCertificate { algorithms: provider.signature_verification_algorithms })
        }
        (PgTls::Off | PgTls::Prefer | PgTls::Require | PgTls::VerifyCa, _) => {
            Arc::new(ChainOnly(webpki(ca, &provider)?))
        }
        (PgTls::VerifyFull, _) => webpki(ca, &provider)?,
    };
    let config = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// rustls's verifier of chain and host name, against `ca` or the system's trust store.
fn webpki(
    ca: Option<&CaFile>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, SetupError> {
    let roots = match ca {
        Some(ca) => ca.roots(),
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let why = found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
                return Err(SetupError(format!(
                    "no CA certificate in the system's trust store{why}: set STREAMSINK_PG_CA"
                )));
            }
            roots
        }
    };
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|e| SetupError(format!("cannot verify certificates ({e})")))
}

/// `require` without a CA: the session is encrypted and the handshake's signatures are checked
/// (the server holds the key of the certificate it shows), but the certificate itself is not
/// verified: what libpq's `sslmode=require` does, proof against eavesdroppers, not against a
/// server that impersonates another.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`, and `require` with a CA: the chain is verified, the host name is not. webpki
/// checks the name last, after the chain, so a name error means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Which connection failed, with what it was configured with: what [`diagnose`] needs to name
/// the setting to check.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Peer {
    Redis { tls: bool, ca: bool, cert: bool },
    Postgres { mode: PgTls, ca: bool },
}

/// What a failed connection says about TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// What to check, naming the setting: shown in parentheses after the client's message.
    pub hint: String,
    /// A certificate was refused (the server's by us, ours by the server) or the other side
    /// does not speak TLS as configured: settings or certificates need an operator, so start-up
    /// gives up on it rather than retrying.
    pub refused: bool,
}

/// Reads `error` (a connection failure of `peer`) for a TLS cause; `None` when it has none
/// known here.
pub(crate) fn diagnose(error: &(dyn StdError + 'static), peer: Peer) -> Option<Diagnosis> {
    let refused = |hint: String| Some(Diagnosis { hint, refused: true });
    if let Some(e) = find_rustls(error) {
        return match e {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => refused(match peer {
                Peer::Redis { .. } => {
                    "check the host in REDIS_URL: the server's certificate does not name it".into()
                }
                Peer::Postgres { .. } => "check the host in DATABASE_URL: the server's certificate does not \
                                          name it, and verify-full checks the name"
                    .into(),
            }),
            rustls::Error::InvalidCertificate(_) => refused(match peer {
                Peer::Redis { ca: true, .. } => "check STREAMSINK_REDIS_CA".into(),
                Peer::Redis { ca: false, .. } => {
                    "check STREAMSINK_REDIS_CA: unset, so the system's trust store was used".into()
                }
                Peer::Postgres { ca: true, .. } => "check STREAMSINK_PG_CA".into(),
                Peer::Postgres { ca: false, .. } => {
                    "check STREAMSINK_PG_CA: unset, so the system's trust store was used".into()
                }
            }),
            rustls::Error::AlertReceived(_) | rustls::Error::NoCertificatesPresented => refused(match peer {
                Peer::Redis { cert: true, .. } => {
                    "the server refused the handshake: check STREAMSINK_REDIS_CERT and STREAMSINK_REDIS_KEY"
                        .into()
                }
                Peer::Redis { cert: false, .. } => "the server refused the handshake: if it asks for a \
                                                    client certificate, set STREAMSINK_REDIS_CERT and \
                                                    STREAMSINK_REDIS_KEY"
                    .into(),
                Peer::Postgres { .. } => {
                    "the server refused the handshake (streamsink sends PostgreSQL no client certificate)"
                        .into()
                }
            }),
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. } => refused(match peer {
                Peer::Redis { .. } => {
                    "the server does not speak TLS there: check the port in REDIS_URL (rediss:// needs \
                     the server's tls-port)"
                        .into()
                }
                Peer::Postgres { .. } => "the server does not speak TLS: check DATABASE_URL".into(),
            }),
            _ => None,
        };
    }
    match peer {
        Peer::Redis { tls: true, .. } if unanswered(error) => Some(Diagnosis {
            hint: "no answer to the TLS handshake: check that the port in REDIS_URL is the server's tls-port"
                .into(),
            refused: false,
        }),
        Peer::Redis { tls: false, .. } if closed_at_once(error) => Some(Diagnosis {
            hint: "the server closed the connection at once: if it accepts only TLS, use a rediss:// URL"
                .into(),
            refused: false,
        }),
        Peer::Postgres { mode, .. }
            if mode.requires_tls() && chain(error).any(|e| e.to_string() == NO_TLS) =>
        {
            refused(format!(
                "STREAMSINK_PG_TLS or the URL's sslmode asks for {mode}, and this server has no TLS (ssl = on \
                 in postgresql.conf)"
            ))
        }
        Peer::Postgres { mode: PgTls::Off, .. } if invalid_authorization(error) => Some(Diagnosis {
            hint: "TLS is off: if pg_hba.conf accepts only hostssl, set STREAMSINK_PG_TLS=require or \
                   verify-full"
                .into(),
            refused: false,
        }),
        _ => None,
    }
}

/// tokio-postgres's message when `sslmode=require` meets a server without TLS.
const NO_TLS: &str = "server does not support TLS";

/// `error` and its sources.
fn chain<'a>(error: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |e: &&'a (dyn StdError + 'static)| (*e).source())
}

/// The first `T` in `error`'s chain, looking inside the wrappers the clients use: an
/// `io::Error`'s payload (rustls reports through one) and redis-rs's `Arc`ed causes, neither of
/// which `source()` yields.
pub(crate) fn find<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    fn inside<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.get_ref().and_then(|inner| inside::<T>(inner));
        }
        if let Some(arc) = e.downcast_ref::<Arc<dyn StdError + Send + Sync>>() {
            return inside::<T>(&**arc);
        }
        None
    }
    chain(error).find_map(inside::<T>)
}

fn find_rustls<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    find::<rustls::Error>(error)
}

/// The server hung up before answering (a TLS-only port meeting clear text does).
fn closed_at_once(error: &(dyn StdError + 'static)) -> bool {
    use std::io::ErrorKind;
    find::<std::io::Error>(error).is_some_and(|io| {
        matches!(
            io.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::UnexpectedEof
                | ErrorKind::BrokenPipe
                | ErrorKind::ConnectionAborted
        )
    })
}

/// Connected, then no answer within the read timeout (`EAGAIN`; a connect that times out is
/// `TimedOut` instead): a clear-text Redis waits for the rest of what it takes for a command.
fn unanswered(error: &(dyn StdError + 'static)) -> bool {
    find::<std::io::Error>(error).is_some_and(|io| io.kind() == std::io::ErrorKind::WouldBlock)
}

/// SQLSTATE 28000: no pg_hba.conf line lets this connection in (among them, clear text to a
/// `hostssl`-only server).
fn invalid_authorization(error: &(dyn StdError + 'static)) -> bool {
    find::<postgres::Error>(error).and_then(postgres::Error::code).is_some_and(|c| c.code() == "28000")
}

/// A connection failure with its TLS diagnosis: `Display` is the client's message followed by
/// the hint in parentheses, so every line that reports the failure (a start-up warning, an
/// outage) names the setting to check. Carried inside the client's own error type (an
/// `io::Error` inside a `RedisError`), which keeps its kind, so retrying stays as it was.
#[derive(Debug)]
pub struct Explained {
    message: String,
    pub diagnosis: Diagnosis,
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.diagnosis.hint)
    }
}

impl StdError for Explained {}

/// `error` from connecting to Redis, with its TLS diagnosis (if any) in its message. The error
/// stays an I/O error (of the original kind where there was one), so callers retry it as a
/// lost connection, as before.
pub(crate) fn explain_redis(error: redis::RedisError, peer: Peer) -> redis::RedisError {
    let from_text = || rustls_in_text(&error.to_string()).and_then(|e| diagnose(&e, peer));
    let Some(diagnosis) = diagnose(&error, peer).or_else(from_text) else {
        return error;
    };
    let kind = find::<std::io::Error>(&error).map_or(std::io::ErrorKind::Other, std::io::Error::kind);
    let explained = Explained { message: error.to_string(), diagnosis };
    redis::RedisError::from(std::io::Error::new(kind, explained))
}

/// The rustls error a message quotes, for a client that keeps only the text of its cause: the
/// cluster client joins each seed node's error into one message ("Failed to connect to each
/// cluster node (127.0.0.1:7000: invalid peer certificate: UnknownIssuer; …)").
fn rustls_in_text(text: &str) -> Option<rustls::Error> {
    if text.contains("invalid peer certificate: NotValidForName") {
        Some(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
    } else if text.contains("invalid peer certificate") {
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
    } else if text.contains("received fatal alert") {
        Some(rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure))
    } else {
        None
    }
}

/// True when `error`'s chain holds a refusal ([`Diagnosis::refused`]): a Redis error explained
/// by [`explain_redis`], or a PostgreSQL connect error (`sink::pool::ConnectError`).
pub(crate) fn is_refusal(error: &(dyn StdError + 'static)) -> bool {
    find::<Explained>(error).is_some_and(|e| e.diagnosis.refused)
        || find::<crate::sink::pool::ConnectError>(error).is_some_and(|e| e.is_refusal())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis_peer() -> Peer {
        Peer::Redis { tls: true, ca: true, cert: false }
    }

    /// A rustls error as redis-rs reports a failed handshake: an `io::Error` around it, inside
    /// a `RedisError`.
    fn from_redis(e: rustls::Error) -> redis::RedisError {
        redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    #[test]
    fn an_unknown_issuer_names_the_ca_setting_and_is_a_refusal() {
        let e = from_redis(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
        let explained = explain_redis(e, redis_peer());
        assert_eq!(
            explained.to_string(),
            "invalid peer certificate: UnknownIssuer (check STREAMSINK_REDIS_CA)"
        );
        assert!(is_refusal(&explained));
        assert!(explained.is_io_error(), "still retried as a lost connection where retried");
        let pg = diagnose(
            &std::io::Error::other(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)),
            Peer::Postgres { mode: PgTls::VerifyFull, ca: false },
        );
        assert_eq!(
            pg.map(|d| d.hint),
            Some("check STREAMSINK_PG_CA: unset, so the system's trust store was used".into())
        );
    }

    #[test]
    fn a_refused_client_certificate_names_the_cert_and_key_settings() {
        let e = from_redis(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired));
        let d = diagnose(&e, redis_peer()).expect("diagnosed");
        assert!(d.refused && d.hint.contains("set STREAMSINK_REDIS_CERT and STREAMSINK_REDIS_KEY"), "{d:?}");
    }

    #[test]
    fn a_connection_closed_at_once_on_a_plain_url_suggests_rediss() {
        let e = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let d = diagnose(&e, Peer::Redis { tls: false, ca: false, cert: false }).expect("diagnosed");
        assert!(!d.refused && d.hint.contains("rediss://"), "{d:?}");
        assert!(diagnose(&e, redis_peer()).is_none(), "on a rediss:// URL it says nothing of TLS");
        let refused = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(diagnose(&refused, Peer::Redis { tls: false, ca: false, cert: false }).is_none());
    }

    #[test]
    fn errors_without_a_tls_cause_pass_unchanged() {
        let e = redis::RedisError::from((redis::ErrorKind::Io, "connection refused"));
        let same = explain_redis(e.clone(), redis_peer());
        assert_eq!(same.to_string(), e.to_string());
        assert!(!is_refusal(&same));
    }

    #[test]
    fn the_url_sslmode_decides_unless_the_setting_is_given() {
        use crate::secret::SslMode;
        assert_eq!(PgTls::resolve(None, None), PgTls::Prefer);
        assert_eq!(PgTls::resolve(None, Some(SslMode::Disable)), PgTls::Off);
        assert_eq!(PgTls::resolve(None, Some(SslMode::Require)), PgTls::Require);
        assert_eq!(PgTls::resolve(None, Some(SslMode::VerifyFull)), PgTls::VerifyFull);
        assert_eq!(PgTls::resolve(Some(PgTls::Off), Some(SslMode::VerifyFull)), PgTls::Off);
        assert_eq!(PgTls::resolve(Some(PgTls::VerifyFull), Some(SslMode::Disable)), PgTls::VerifyFull);
        // Every mode that verifies never falls back to clear text.
        for mode in [PgTls::Require, PgTls::VerifyCa, PgTls::VerifyFull] {
            assert_eq!(mode.ssl_mode(), postgres::config::SslMode::Require);
        }
    }
}

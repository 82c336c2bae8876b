//! Connection targets that may carry a password, parsed once so that printing one cannot leak
//! it.
//!
//! Masking a URL's text misses forms the client libraries read a password from (redis-rs takes
//! `?pass=` on a `unix://` URL; libpq allows `password = x` with spaces, quoted values and
//! escapes). So a [`SecretUrl`] keeps no text at all: it is parsed, when the command line is
//! read, into the client's own configuration (`redis::ConnectionInfo` or `postgres::Config`),
//! and the client is built from that configuration.
//!
//! Invariants: `Display` and `Debug` are built from the parsed parts an operator needs (scheme,
//! host, port or socket path, database, user) and print `***` where a password is set, never
//! the password itself; the configurations leave this module only through
//! `SecretUrl::redis_connection_info` and `SecretUrl::postgres_config`, where a client is
//! built; and a `UrlError` never quotes the text it refused, only the parsers' reasons,
//! reworded where those would quote it.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use postgres::config::Host;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion};

/// A parsed Redis or PostgreSQL connection target whose password never reaches a log line.
/// Shared (`Arc`): cloned into every error that names it, and small in a `Result`.
#[derive(Clone)]
pub struct SecretUrl(Arc<Target>);

#[derive(Clone)]
enum Target {
    Redis(ConnectionInfo),
    /// `redis+cluster://` / `rediss+cluster://`: the seed nodes, each with the same user,
    /// password and TLS mode (the cluster client takes them from the first).
    RedisCluster(Vec<ConnectionInfo>),
    Postgres(postgres::Config, SslMode),
}

/// A PostgreSQL URL's sslmode, as libpq reads it. rust-postgres reads `disable`, `prefer` (its
/// default, as libpq's) and `require`; `verify-ca` and `verify-full` are read here, and the
/// client is given `require` for them (`tls::PgTls` adds the verification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The schemes redis-rs reads (`redis::parse_redis_url`).
const REDIS_SCHEMES: [&str; 7] =
    ["redis", "rediss", "valkey", "valkeys", "unix", "redis+unix", "valkey+unix"];

/// Why a connection string was refused. The text itself is never part of the message: it may
/// hold a password, and a string that does not parse cannot say where its password is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlError {
    /// `rediss://…#insecure`: certificate checks off, which streamsink does not offer.
    #[error(
        "a rediss:// URL ending in #insecure skips the certificate checks, which streamsink does not \
         do: give the server's CA in STREAMSINK_REDIS_CA instead"
    )]
    InsecureTls,
    /// Another scheme (or none), e.g. `http://` given for Redis.
    #[error("not a {expected} URL{}", scheme_note(.scheme.as_deref()))]
    WrongScheme {
        expected: &'static str,
        /// The scheme, when the text starts with something shaped like one.
        scheme: Option<String>,
    },
    /// redis-rs refused the URL; `reason` is its message (which never quotes the URL).
    #[error(
        "not a valid Redis URL ({reason}); a password holding '/', '?', '#' or '%' must be \
         percent-encoded"
    )]
    Redis { reason: String },
    /// A cluster URL naming a database other than 0: a cluster has only database 0.
    #[error("a Redis Cluster has only database 0: drop the /N after the hosts")]
    ClusterDatabase,
    /// A cluster URL without a host, or with an empty one between commas.
    #[error("a redis+cluster:// URL lists its seed nodes as host:port,host:port (one is empty)")]
    ClusterHosts,
    /// An '@' after a Redis URL's host: a password holding '/', '?' or '#' ended the host part
    /// early, so part of the password would be read as host, port or database.
    #[error("an '@' after the host: a password holding '/', '?' or '#' must be percent-encoded")]
    AtAfterHost,
    /// rust-postgres refused the string; `reason` is its message, reworded where it would quote
    /// a key or character of the string.
    #[error("not a valid PostgreSQL URL or key=value string ({reason})")]
    Postgres { reason: String },
    /// A host holding '@': libpq ends the user part at the first '@', so the rest of a password
    /// holding one would be taken for the host. `target` is where the string points once that
    /// '@' is percent-encoded (rendered by [`SecretUrl`]'s `Display`), if it then parses.
    #[error("{}the password holds an '@' that is not percent-encoded: write it as %40", at_prefix(.target.as_deref()))]
    AtInHost { target: Option<String> },
}

fn scheme_note(scheme: Option<&str>) -> String {
    scheme.map(|s| format!(" (the scheme is '{s}')")).unwrap_or_default()
}

fn at_prefix(target: Option<&str>) -> String {
    target.map(|t| format!("{t}: ")).unwrap_or_default()
}

impl SecretUrl {
    /// Parses a Redis URL (`redis://`, `rediss://`, `unix://` and the other forms redis-rs
    /// reads) into its connection info, or a cluster's (`redis+cluster://`, `rediss+cluster://`)
    /// into its seed nodes'.
    pub(crate) fn redis(text: &str) -> Result<SecretUrl, UrlError> {
        if let Some(single) = scheme_of(text).and_then(|s| s.strip_suffix("+cluster")) {
            return redis_cluster(text, single).map(|nodes| SecretUrl(Arc::new(Target::RedisCluster(nodes))));
        }
        Ok(SecretUrl(Arc::new(Target::Redis(redis_node(text)?))))
    }

    /// Parses a PostgreSQL URL (`postgres://`, `postgresql://`) or libpq key=value string into
    /// its configuration.
    pub(crate) fn postgres(text: &str) -> Result<SecretUrl, UrlError> {
        if let Some(scheme) = scheme_of(text).filter(|s| !["postgres", "postgresql"].contains(s)) {
            return Err(UrlError::WrongScheme { expected: "PostgreSQL", scheme: Some(scheme.to_string()) });
        }
        let (config, sslmode) =
            parse_postgres(text).map_err(|e| UrlError::Postgres { reason: postgres_reason(&e) })?;
        if has_at_in_host(&config) {
            let target = at_encoded(text)
                .and_then(|t| parse_postgres(&t).ok())
                .filter(|(c, _)| !has_at_in_host(c))
                .map(|(c, mode)| SecretUrl(Arc::new(Target::Postgres(c, mode))).to_string());
            return Err(UrlError::AtInHost { target });
        }
        Ok(SecretUrl(Arc::new(Target::Postgres(config, sslmode))))
    }

    /// True for a Redis URL over TLS (`rediss://`, `valkeys://`).
    pub(crate) fn is_redis_tls(&self) -> bool {
        let tls = |info: &ConnectionInfo| matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        match &*self.0 {
            Target::Redis(info) => tls(info),
            Target::RedisCluster(nodes) => nodes.iter().any(tls),
            Target::Postgres(..) => false,
        }
    }

    /// The seed nodes of a Redis Cluster URL, passwords included: for building a client only.
    /// `None` for a single node or a PostgreSQL target.
    pub(crate) fn redis_cluster_nodes(&self) -> Option<&[ConnectionInfo]> {
        match &*self.0 {
            Target::RedisCluster(nodes) => Some(nodes),
            _ => None,
        }
    }

    /// A PostgreSQL URL's sslmode (`Prefer` when it names none, as libpq); `None` for Redis.
    pub(crate) fn postgres_sslmode(&self) -> Option<SslMode> {
        match &*self.0 {
            Target::Postgres(_, mode) => Some(*mode),
            Target::Redis(_) | Target::RedisCluster(_) => None,
        }
    }

    /// The Redis connection info, password included: for building a client only. `None` for
    /// a PostgreSQL target.
    pub(crate) fn redis_connection_info(&self) -> Option<&ConnectionInfo> {
        match &*self.0 {
            Target::Redis(info) => Some(info),
            Target::RedisCluster(_) | Target::Postgres(..) => None,
        }
    }

    /// The PostgreSQL configuration, password included: for building a client only. `None`
    /// for a Redis target.
    pub(crate) fn postgres_config(&self) -> Option<&postgres::Config> {
        match &*self.0 {
            Target::Postgres(config, _) => Some(config),
            Target::Redis(_) | Target::RedisCluster(_) => None,
        }
    }
}

/// Parses a PostgreSQL connection string with its sslmode. rust-postgres refuses libpq's
/// `verify-ca` and `verify-full`; only when it refuses the sslmode is the string read again with
/// those values taken as `require` (the verification is `tls::PgTls`'s), so nothing else of the
/// text (a password) is ever rewritten.
fn parse_postgres(text: &str) -> Result<(postgres::Config, SslMode), postgres::Error> {
    use postgres::config::SslMode as Client;
    let from_client = |c: &postgres::Config| match c.get_ssl_mode() {
        Client::Disable => SslMode::Disable,
        Client::Require => SslMode::Require,
        _ => SslMode::Prefer,
    };
    match text.parse::<postgres::Config>() {
        Ok(config) => {
            let mode = from_client(&config);
            Ok((config, mode))
        }
        Err(e) => {
            let refused_sslmode = std::error::Error::source(&e)
                .is_some_and(|cause| cause.to_string() == "invalid value for option `sslmode`");
            match verify_sslmode_as_require(text).filter(|_| refused_sslmode) {
                Some((rewritten, mode)) => Ok((rewritten.parse()?, mode)),
                None => Err(e),
            }
        }
    }
}

/// `text` with each `sslmode=verify-ca` / `verify-full` value (URL query or key=value, spaces
/// and quotes as libpq allows) replaced by `require`, and the last one's mode; `None` if there
/// is none.
fn verify_sslmode_as_require(text: &str) -> Option<(String, SslMode)> {
    const KEY: &str = "sslmode";
    let mut out = String::with_capacity(text.len());
    let mut mode = None;
    let mut rest = text;
    while let Some(at) = rest.find(KEY) {
        let before = rest[..at].chars().next_back().or_else(|| out.chars().next_back());
        out.push_str(&rest[..at + KEY.len()]);
        rest = &rest[at + KEY.len()..];
        if !before.is_none_or(|c| c == '?' || c == '&' || c.is_whitespace()) {
            continue;
        }
        let value_at = {
            let after_key = rest.trim_start();
            let Some(after_eq) = after_key.strip_prefix('=') else { continue };
            let value = after_eq.trim_start();
            let value = value.strip_prefix('\'').unwrap_or(value);
            rest.len() - value.len()
        };
        for (name, found) in [("verify-full", SslMode::VerifyFull), ("verify-ca", SslMode::VerifyCa)] {
            let value = &rest[value_at..];
            let ends = value.strip_prefix(name).map(|after| {
                after.chars().next().is_none_or(|c| c == '&' || c == '\'' || c == '#' || c.is_whitespace())
            });
            if ends == Some(true) {
                out.push_str(&rest[..value_at]);
                out.push_str("require");
                rest = &value[name.len()..];
                mode = Some(found);
                break;
            }
        }
    }
    out.push_str(rest);
    mode.map(|m| (out, m))
}

/// One Redis node's URL (`redis://`, `rediss://`, `unix://` and the other forms redis-rs
/// reads) as connection info.
fn redis_node(text: &str) -> Result<ConnectionInfo, UrlError> {
    let scheme = scheme_of(text);
    if !scheme.is_some_and(|s| REDIS_SCHEMES.contains(&s)) {
        return Err(UrlError::WrongScheme { expected: "Redis", scheme: scheme.map(str::to_string) });
    }
    let info = text
        .into_connection_info()
        .map_err(|e| UrlError::Redis { reason: e.to_string().replace(" - InvalidClientConfig", "") })?;
    if matches!(info.addr(), ConnectionAddr::Tcp(..) | ConnectionAddr::TcpTls { .. }) && at_after_host(text) {
        return Err(UrlError::AtAfterHost);
    }
    if matches!(info.addr(), ConnectionAddr::TcpTls { insecure: true, .. }) {
        return Err(UrlError::InsecureTls);
    }
    Ok(info)
}

/// `redis+cluster://[user][:password@]host:port,host:port[/0]` (or `rediss+cluster://`): each
/// seed node is read as `redis://[userinfo@]host:port[rest]` would be, with every check of a
/// single node's URL; `single` is the scheme without `+cluster`.
fn redis_cluster(text: &str, single: &str) -> Result<Vec<ConnectionInfo>, UrlError> {
    if !["redis", "rediss", "valkey", "valkeys"].contains(&single) {
        return Err(UrlError::WrongScheme { expected: "Redis", scheme: scheme_of(text).map(str::to_string) });
    }
    let rest = text.split_once("://").map_or("", |(_, rest)| rest);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let nodes = hosts
        .split(',')
        .map(|host| match host.is_empty() {
            true => Err(UrlError::ClusterHosts),
            false => redis_node(&format!("{single}://{userinfo}{host}{tail}")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if nodes.iter().any(|n| n.redis_settings().db() != 0) {
        return Err(UrlError::ClusterDatabase);
    }
    Ok(nodes)
}

/// The scheme of `text` (before `://`), if it is shaped like one.
fn scheme_of(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let shaped = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    (shaped && scheme.len() <= 20).then_some(scheme)
}

/// True when an '@' follows the host part (which ends at the first '/', '?' or '#' after
/// `://`, as the URL standard redis-rs follows has it).
fn at_after_host(text: &str) -> bool {
    let rest = text.split_once("://").map_or(text, |(_, rest)| rest);
    rest.find(['/', '?', '#']).is_some_and(|end| rest[end..].contains('@'))
}

fn has_at_in_host(config: &postgres::Config) -> bool {
    config.get_hosts().iter().any(|h| matches!(h, Host::Tcp(name) if name.contains('@')))
}

/// `text` with every '@' but the last one before the query percent-encoded: what the operator
/// meant when a password holds an '@'.
fn at_encoded(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let end = rest.find('?').unwrap_or(rest.len());
    let last = rest[..end].rfind('@')?;
    Some(format!("{scheme}://{}{}", rest[..last].replace('@', "%40"), &rest[last..]))
}

/// rust-postgres's reason for refusing a connection string (its `Display` says only "invalid
/// connection string"; the cause says why). Causes that would quote the string (an unknown
/// key, which may be the second half of an unquoted password holding a space; an unexpected
/// character) are reworded; a cause not known here is not shown.
fn postgres_reason(e: &postgres::Error) -> String {
    const QUOTE: &str = "quote a value holding spaces: password='a b'";
    let cause = std::error::Error::source(e).map(ToString::to_string).unwrap_or_default();
    if cause.starts_with("invalid value for option `") {
        cause // names one of rust-postgres's own options
    } else if cause == "unexpected EOF" {
        format!("a key without a value; {QUOTE}")
    } else if cause == "unterminated quoted connection parameter value" || cause == "unterminated parameter" {
        cause
    } else if cause.starts_with("unknown option `") {
        format!("an unknown key (not shown: it may be part of a password); {QUOTE}")
    } else if let Some(rest) = cause.strip_prefix("unexpected character at byte ") {
        let at: String = rest.chars().take_while(char::is_ascii_digit).collect();
        format!("a key not followed by '=' at byte {at}; {QUOTE}")
    } else if cause.starts_with("invalid utf-8") || cause.starts_with("incomplete utf-8") {
        "not UTF-8 once percent-decoded".to_string()
    } else {
        "its form is not recognised".to_string()
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Target::Redis(info) => fmt_redis(info, f),
            Target::RedisCluster(nodes) => fmt_redis_cluster(nodes, f),
            Target::Postgres(config, _) => fmt_postgres(config, f),
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", self.to_string())
    }
}

/// `user:***@`, `:***@`, `user@` or nothing.
fn userinfo(user: Option<&str>, has_password: bool) -> String {
    let mut out = user.unwrap_or_default().to_string();
    if has_password {
        out.push_str(":***");
    }
    if !out.is_empty() {
        out.push('@');
    }
    out
}

/// A host as it stands before `:port` (IPv6 literals in brackets).
fn bracketed(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_string() }
}

/// `redis://[user][:***@]host:port/db`, `rediss://…`, or `unix:///path?db=N[&user=U][&pass=***]`.
fn fmt_redis(info: &ConnectionInfo, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let r = info.redis_settings();
    let resp3 = r.protocol() == ProtocolVersion::RESP3;
    match info.addr() {
        ConnectionAddr::Unix(path) => {
            write!(f, "unix://{}?db={}", path.display(), r.db())?;
            if let Some(user) = r.username() {
                write!(f, "&user={user}")?;
            }
            if r.password().is_some() {
                f.write_str("&pass=***")?;
            }
            if resp3 {
                f.write_str("&protocol=resp3")?;
            }
            Ok(())
        }
        addr => {
            let (scheme, host, port) = match addr {
                ConnectionAddr::Tcp(host, port) => ("redis", host, port),
                ConnectionAddr::TcpTls { host, port, .. } => ("rediss", host, port),
                _ => return f.write_str("redis (an address of a kind unknown here)"),
            };
            let user = userinfo(r.username(), r.password().is_some());
            write!(f, "{scheme}://{user}{}:{port}/{}", bracketed(host), r.db())?;
            if resp3 {
                f.write_str("?protocol=resp3")?;
            }
            Ok(())
        }
    }
}

/// `redis+cluster://[user][:***@]host:port,host:port/0` (`rediss+cluster://` for TLS).
fn fmt_redis_cluster(nodes: &[ConnectionInfo], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let Some(first) = nodes.first() else { return f.write_str("redis+cluster (no seed node)") };
    let tls = matches!(first.addr(), ConnectionAddr::TcpTls { .. });
    let r = first.redis_settings();
    let user = userinfo(r.username(), r.password().is_some());
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| match n.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                format!("{}:{port}", bracketed(host))
            }
            _ => "?".to_string(),
        })
        .collect();
    write!(f, "{}+cluster://{user}{}/0", if tls { "rediss" } else { "redis" }, hosts.join(","))?;
    if r.protocol() == ProtocolVersion::RESP3 {
        f.write_str("?protocol=resp3")?;
    }
    Ok(())
}

/// `postgres://[user][:***@]host:port[,host:port…][/dbname]`; socket directories (and
/// `hostaddr`) go to the query, as libpq reads them: `postgres://user@/db?host=/run/postgresql&port=5432`.
fn fmt_postgres(config: &postgres::Config, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let ports = config.get_ports();
    let port = |i: usize| match ports {
        [] => 5432,
        [one] => *one,
        many => many.get(i).copied().unwrap_or(5432),
    };
    let hosts = config.get_hosts();
    let any_socket = hosts.iter().any(|h| !matches!(h, Host::Tcp(_)));
    let user = userinfo(config.get_user(), config.get_password().is_some());
    let mut authority = String::new();
    let mut query = Vec::new();
    if any_socket {
        let names: Vec<String> = hosts
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(dir) => dir.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = (0..hosts.len()).map(|i| port(i).to_string()).collect();
        query.push(format!("host={}", names.join(",")));
        query.push(format!("port={}", ports.join(",")));
    } else {
        for (i, h) in hosts.iter().enumerate() {
            if let Host::Tcp(name) = h {
                let sep = if i > 0 { "," } else { "" };
                let _ = write!(authority, "{sep}{}:{}", bracketed(name), port(i));
            }
        }
    }
    let addrs = config.get_hostaddrs();
    if !addrs.is_empty() {
        let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        query.push(format!("hostaddr={}", addrs.join(",")));
        if hosts.is_empty() {
            let ports: Vec<String> = (0..addrs.len()).map(|i| port(i).to_string()).collect();
            query.push(format!("port={}", ports.join(",")));
        }
    }
    write!(f, "postgres://{user}{authority}")?;
    if let Some(db) = config.get_dbname() {
        write!(f, "/{db}")?;
    }
    if !query.is_empty() {
        write!(f, "{}?{}", if config.get_dbname().is_none() { "/" } else { "" }, query.join("&"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Display and Debug of `url`: both must equal `expected` (Debug quoted) and hold no piece
    /// of `secrets`.
    fn shows(url: &SecretUrl, expected: &str, secrets: &[&str]) {
        let (display, debug) = (url.to_string(), format!("{url:?}"));
        assert_eq!(display, expected);
        assert_eq!(debug, format!("SecretUrl({expected:?})"));
        for s in secrets {
            assert!(!display.contains(s) && !debug.contains(s), "{s} in {display} / {debug}");
        }
    }

    #[test]
    fn redis_forms_show_where_and_never_the_password() {
        let cases: [(&str, &str, &[&str]); 7] = [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379/0", &[]),
            ("redis://:s3cret@h:6379/2", "redis://:***@h:6379/2", &["s3cret"]),
            ("redis://:s3cret%40B@127.0.0.1:1", "redis://:***@127.0.0.1:1/0", &["s3cret", "%40B"]),
            (
                "redis://user:p@ss:w0rd@127.0.0.1:1",
                "redis://user:***@127.0.0.1:1/0",
                &["p@ss", "w0rd", "ss:"],
            ),
            ("redis://alice@[::1]:7000/3?protocol=resp3", "redis://alice@[::1]:7000/3?protocol=resp3", &[]),
            ("unix:///tmp/x.sock?pass=s3cretA", "unix:///tmp/x.sock?db=0&pass=***", &["s3cretA"]),
            (
                "redis+unix:///run/r.sock?db=4&user=u&pass=s3cret",
                "unix:///run/r.sock?db=4&user=u&pass=***",
                &["s3cret"],
            ),
        ];
        for (text, expected, secrets) in cases {
            let url = SecretUrl::redis(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            shows(&url, expected, secrets);
        }
        let info = SecretUrl::redis("redis://user:p@ss:w0rd@127.0.0.1:1").unwrap();
        let info = info.redis_connection_info().unwrap().redis_settings();
        assert_eq!((info.username(), info.password()), (Some("user"), Some("p@ss:w0rd")));
    }

    #[test]
    fn postgres_forms_show_where_and_never_the_password() {
        let cases: [(&str, &str, &[&str]); 8] = [
            ("postgres://u:s3cret@h/db", "postgres://u:***@h:5432/db", &["s3cret"]),
            (
                "host=127.0.0.1 port=1 password = s3cretC user=u dbname=d",
                "postgres://u:***@127.0.0.1:1/d",
                &["s3cretC"],
            ),
            ("host=127.0.0.1 password='s3cret D' port=1", "postgres://:***@127.0.0.1:1", &["s3cret", " D"]),
            (r"host=h password='it\'s s3cret' user=u", "postgres://u:***@h:5432", &["s3cret", "it"]),
            (
                "postgres://127.0.0.1:1/db?user=u&password=s3cretE",
                "postgres://u:***@127.0.0.1:1/db",
                &["s3cretE"],
            ),
            ("postgresql://u@a:1,b:2/db", "postgres://u@a:1,b:2/db", &[]),
            ("host=/run/postgresql user=u dbname=d", "postgres://u@/d?host=/run/postgresql&port=5432", &[]),
            ("hostaddr=::1 port=6 user=u password=x", "postgres://u:***@/?hostaddr=::1&port=6", &[]),
        ];
        for (text, expected, secrets) in cases {
            let url = SecretUrl::postgres(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            shows(&url, expected, secrets);
        }
        let config = SecretUrl::postgres("host=h password='it\\'s s3cret'").unwrap();
        assert_eq!(config.postgres_config().unwrap().get_password(), Some(&b"it's s3cret"[..]));
    }

    #[test]
    fn refusals_never_quote_the_text() {
        let cases: [(Result<SecretUrl, UrlError>, &str, &[&str]); 10] = [
            (SecretUrl::redis("http://:s3cret@x"), "not a Redis URL (the scheme is 'http')", &["s3cret"]),
            (SecretUrl::redis("s3cret@host:6379"), "not a Redis URL", &["s3cret"]),
            (
                SecretUrl::redis("redis://:s3cret@h:notaport"),
                "not a valid Redis URL",
                &["s3cret", "notaport"],
            ),
            (SecretUrl::redis("redis://u:12#s3cret@host"), "an '@' after the host", &["s3cret", "12"]),
            (
                SecretUrl::postgres("redis://:s3cret@h"),
                "not a PostgreSQL URL (the scheme is 'redis')",
                &["s3cret"],
            ),
            (
                SecretUrl::postgres("host=h password=s3cret two=x"),
                "an unknown key (not shown: it may be part of a password)",
                &["s3cret", "two"],
            ),
            (
                SecretUrl::postgres("host=h password=s3cret tw xyz"),
                "a key not followed by '=' at byte 26",
                &["tw", "xyz"],
            ),
            (SecretUrl::postgres("host=h password"), "a key without a value", &[]),
            (
                SecretUrl::postgres("postgres://u:s3c:r@t@127.0.0.1:1/db"),
                "postgres://u:***@127.0.0.1:1/db: the password holds an '@' that is not percent-encoded",
                &["s3c", ":r", "t@"],
            ),
            (
                SecretUrl::postgres("host=a@b password=s3cret"),
                "the password holds an '@' that is not percent-encoded",
                &["s3cret", "a@b"],
            ),
        ];
        for (result, expected, secrets) in cases {
            let message = result.map(|u| u.to_string()).unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?} should contain {expected:?}");
            for s in secrets {
                assert!(!message.contains(s), "{s} in {message}");
            }
        }
    }

    #[test]
    fn cluster_urls_list_their_seed_nodes_with_one_password_never_shown() {
        let url = SecretUrl::redis("redis+cluster://:s3cret@127.0.0.1:7000,10.0.0.2:7001/").unwrap();
        shows(&url, "redis+cluster://:***@127.0.0.1:7000,10.0.0.2:7001/0", &["s3cret"]);
        let nodes = url.redis_cluster_nodes().expect("a cluster");
        assert_eq!(nodes.len(), 2);
        assert!(nodes.iter().all(|n| n.redis_settings().password() == Some("s3cret")));
        assert!(url.redis_connection_info().is_none(), "a cluster has no single node to connect to");
        assert!(!url.is_redis_tls());

        let tls = SecretUrl::redis("rediss+cluster://u:p%40ss@a:1,b:2").unwrap();
        shows(&tls, "rediss+cluster://u:***@a:1,b:2/0", &["p@ss", "p%40ss"]);
        assert!(tls.is_redis_tls());
        assert!(SecretUrl::redis("redis://h:1").unwrap().redis_cluster_nodes().is_none());

        let refused = [
            ("redis+cluster://:s3cret@a:1,,b:2", UrlError::ClusterHosts),
            ("redis+cluster://:s3cret@a:1,b:2/3", UrlError::ClusterDatabase),
            (
                "unix+cluster:///tmp/s3cret.sock",
                UrlError::WrongScheme { expected: "Redis", scheme: Some("unix+cluster".into()) },
            ),
            ("rediss+cluster://:s3cret@a:1#insecure", UrlError::InsecureTls),
        ];
        for (text, expected) in refused {
            let e = SecretUrl::redis(text).map(|u| u.to_string()).unwrap_err();
            assert_eq!(e, expected, "{text}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn rediss_urls_parse_as_tls_and_show_masked() {
        let url = SecretUrl::redis("rediss://:s3cret@redis.example:6390/2").unwrap();
        shows(&url, "rediss://:***@redis.example:6390/2", &["s3cret"]);
        assert!(url.is_redis_tls());
        assert!(!SecretUrl::redis("redis://h").unwrap().is_redis_tls());
        let refused =
            SecretUrl::redis("rediss://:s3cret@h:6390#insecure").map(|u| u.to_string()).unwrap_err();
        assert_eq!(refused, UrlError::InsecureTls);
        assert!(!refused.to_string().contains("s3cret"));
    }

    #[test]
    fn libpq_verify_sslmodes_are_read_and_nothing_else_is_rewritten() {
        let mode = |text: &str| SecretUrl::postgres(text).unwrap().postgres_sslmode();
        assert_eq!(mode("postgres://u@h/db"), Some(SslMode::Prefer));
        assert_eq!(mode("postgres://u@h/db?sslmode=disable"), Some(SslMode::Disable));
        assert_eq!(mode("postgres://u@h/db?sslmode=require"), Some(SslMode::Require));
        assert_eq!(mode("postgres://u@h/db?sslmode=verify-full"), Some(SslMode::VerifyFull));
        assert_eq!(mode("postgres://u@h/db?connect_timeout=3&sslmode=verify-ca"), Some(SslMode::VerifyCa));
        assert_eq!(mode("host=h sslmode = 'verify-full' user=u"), Some(SslMode::VerifyFull));
        // A password holding the words is kept as it is.
        let url = SecretUrl::postgres("host=h password='sslmode=verify-full' sslmode=verify-ca").unwrap();
        assert_eq!(url.postgres_sslmode(), Some(SslMode::VerifyCa));
        assert_eq!(url.postgres_config().unwrap().get_password(), Some(&b"sslmode=verify-full"[..]));
        assert_eq!(url.postgres_config().unwrap().get_ssl_mode(), postgres::config::SslMode::Require);
        // Any other value is still refused, without quoting the text.
        let e = SecretUrl::postgres("postgres://u:s3cret@h/db?sslmode=verify-all").unwrap_err().to_string();
        assert!(e.contains("invalid value for option `sslmode`") && !e.contains("s3cret"), "{e}");
    }

    #[test]
    fn each_target_gives_only_its_own_configuration() {
        let redis = SecretUrl::redis("redis://h").unwrap();
        let postgres = SecretUrl::postgres("postgres://h/db").unwrap();
        assert!(redis.redis_connection_info().is_some() && redis.postgres_config().is_none());
        assert!(postgres.postgres_config().is_some() && postgres.redis_connection_info().is_none());
    }
}

//! Settings, each defined once: its environment variable, flag, default and doc live in the
//! one `#[arg]` attribute below, which `--help`, the README table and the env example follow
//! (a test holds them to it).
//!
//! Settings are grouped by what they configure, and each subcommand flattens only the groups
//! it needs, so a command that does not touch Postgres does not ask for `DATABASE_URL`.
//! Every value is validated by its parser when the command line is read, so a bad value stops
//! the process before anything connects. Every setting has a safe default except the URLs.

// The settings' doc comments are their `--help` text, where brackets are literal.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::time::Duration;

use clap::Args;

use crate::secret::{SecretUrl, UrlError};
use crate::tls::{self, CaFile, CertFile, KeyFile, PgTls};

/// Where Redis is, and how to trust it: for every command that reads or writes streams.
///
/// The TLS files are read when the command line is; [`RedisSettings::check`] refuses the
/// combinations that cannot work (call it before connecting: `Config::from_flags` and every
/// subcommand do).
#[derive(Args, Debug, Clone)]
pub struct RedisSettings {
    /// Redis URL: redis://[:password@]host:port[/db], rediss://… (TLS), unix:///path; a Redis Cluster: redis+cluster://[:password@]host:port,host:port (rediss+cluster:// for TLS).
    #[arg(long, env = "REDIS_URL", value_name = "URL", hide_env_values = true, value_parser = redis_url)]
    pub redis_url: SecretUrl,
    /// CA certificates (PEM) to verify a rediss:// server by, instead of the system's trust store.
    #[arg(long, env = "STREAMSINK_REDIS_CA", value_name = "PATH", value_parser = tls::ca_file)]
    pub redis_ca: Option<CaFile>,
    /// Client certificate (PEM) for mutual TLS with a rediss:// server; needs STREAMSINK_REDIS_KEY.
    #[arg(long, env = "STREAMSINK_REDIS_CERT", value_name = "PATH", value_parser = tls::cert_file)]
    pub redis_cert: Option<CertFile>,
    /// Private key (PEM) of STREAMSINK_REDIS_CERT.
    #[arg(long, env = "STREAMSINK_REDIS_KEY", value_name = "PATH", value_parser = tls::key_file)]
    pub redis_key: Option<KeyFile>,
}

impl RedisSettings {
    /// Refuses TLS settings that would be ignored or cannot work: a CA, certificate or key with
    /// a URL that is not rediss://, a certificate without its key (or the reverse), a key that
    /// is not the certificate's.
    pub fn check(&self) -> Result<(), SettingsError> {
        let named = named::<RedisSettings>;
        let given = [
            (self.redis_ca.is_some(), "redis_ca"),
            (self.redis_cert.is_some(), "redis_cert"),
            (self.redis_key.is_some(), "redis_key"),
        ];
        if let Some((_, id)) = given.iter().find(|(set, _)| *set).filter(|_| !self.redis_url.is_redis_tls()) {
            let problem = format!("is for TLS, but {} is not a rediss:// URL", named("redis_url"));
            return Err(SettingsError::invalid(&named(id), problem));
        }
        match (&self.redis_cert, &self.redis_key) {
            (Some(_), None) => Err(SettingsError::invalid(
                &named("redis_key"),
                format!("required with {} (the client certificate's private key)", named("redis_cert")),
            )),
            (None, Some(_)) => Err(SettingsError::invalid(
                &named("redis_cert"),
                format!("required with {} (the certificate of that private key)", named("redis_key")),
            )),
            (Some(cert), Some(key)) => tls::check_pair(cert, key).map_err(|problem| match problem {
                tls::PairProblem::NotItsKey(why) => SettingsError::invalid(
                    &named("redis_key"),
                    format!("is not the private key of the certificate in {} ({why})", named("redis_cert")),
                ),
                tls::PairProblem::Certificate(why) => SettingsError::invalid(
                    &named("redis_cert"),
                    format!("cannot be used as a client certificate ({why})"),
                ),
            }),
            (None, None) => Ok(()),
        }
    }

    /// True for a `redis+cluster://` URL: a stream's companion keys are named to share its
    /// slot (`broker::keys`).
    pub fn is_cluster(&self) -> bool {
        self.redis_url.redis_cluster_nodes().is_some()
    }

    /// What a failed connection's diagnosis needs to know (`tls::diagnose`).
    pub(crate) fn peer(&self) -> tls::Peer {
        tls::Peer::Redis {
            tls: self.redis_url.is_redis_tls(),
            ca: self.redis_ca.is_some(),
            cert: self.redis_cert.is_some(),
        }
    }
}

/// Where PostgreSQL is, and how to trust it: for every command that touches the database.
#[derive(Args, Debug, Clone)]
pub struct PostgresSettings {
    /// PostgreSQL URL (postgres://user[:password]@host:port/db) or key=value string.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "URL",
        hide_env_values = true,
        value_parser = database_url
    )]
    pub database_url: SecretUrl,
    /// `STREAMSINK_PG_TLS`, `STREAMSINK_PG_CA`.
    #[command(flatten)]
    pub tls: PostgresTlsSettings,
}

impl PostgresSettings {
    /// The TLS mode ([`PostgresTlsSettings::mode`]).
    pub fn tls_mode(&self) -> PgTls {
        self.tls.mode(&self.database_url)
    }

    /// [`PostgresTlsSettings::check`] for this URL.
    pub fn check(&self) -> Result<(), SettingsError> {
        self.tls.check(&self.database_url)
    }
}

/// How to trust PostgreSQL: the TLS mode and the CA. A group of its own, so that a command
/// reaching Postgres through another URL setting (an optional one, say) flattens the same
/// definitions; its methods take the URL they apply to.
#[derive(Args, Debug, Clone)]
pub struct PostgresTlsSettings {
    /// TLS to PostgreSQL: off, require (encrypted; the certificate checked only against STREAMSINK_PG_CA) or verify-full (chain and host name verified); over the URL's sslmode [default: <the URL's sslmode>]
    #[arg(long, env = "STREAMSINK_PG_TLS", value_name = "MODE", value_parser = tls::pg_tls)]
    pub pg_tls: Option<PgTls>,
    /// CA certificates (PEM) to verify the PostgreSQL server by, instead of the system's trust store.
    #[arg(long, env = "STREAMSINK_PG_CA", value_name = "PATH", value_parser = tls::ca_file)]
    pub pg_ca: Option<CaFile>,
}

impl PostgresTlsSettings {
    /// The TLS mode for `url`: `STREAMSINK_PG_TLS` when set, else the URL's sslmode (`prefer`
    /// when the URL names none, as libpq). `prefer` with `STREAMSINK_PG_CA` is `require`: an
    /// operator who names a CA means "verify", and `prefer` would take clear text from any
    /// server (or relay) that declines TLS.
    pub fn mode(&self, url: &SecretUrl) -> PgTls {
        match PgTls::resolve(self.pg_tls, url.postgres_sslmode()) {
            PgTls::Prefer if self.pg_ca.is_some() => PgTls::Require,
            mode => mode,
        }
    }

    /// Refuses TLS settings that would be ignored or cannot work with `url`: a CA with TLS off,
    /// and a mode requiring TLS where the client has no host name to verify or speak TLS with
    /// (a socket directory, where PostgreSQL never uses TLS, or a bare `hostaddr`).
    pub fn check(&self, url: &SecretUrl) -> Result<(), SettingsError> {
        let named = named::<PostgresSettings>;
        let mode = self.mode(url);
        if self.pg_ca.is_some() && mode == PgTls::Off {
            let problem = format!(
                "TLS to PostgreSQL is off ({}=off or sslmode=disable), so no certificate is checked",
                env_name::<PostgresSettings>("pg_tls")
            );
            return Err(SettingsError::invalid(&named("pg_ca"), problem));
        }
        let by = if self.pg_tls.is_some() { named("pg_tls") } else { named("database_url") };
        let Some(config) = url.postgres_config() else {
            return Ok(());
        };
        let hosts = config.get_hosts();
        let named_hosts = !hosts.is_empty()
            && hosts.len() >= config.get_hostaddrs().len()
            && hosts.iter().all(|h| matches!(h, postgres::config::Host::Tcp(_)));
        if mode.requires_tls() && !named_hosts {
            let problem = format!(
                "asks for TLS ({mode}), but {} has a host that is a socket directory (where PostgreSQL \
                 never uses TLS) or only a hostaddr (no host name to verify): give host names or addresses",
                named("database_url")
            );
            return Err(SettingsError::invalid(&by, problem));
        }
        Ok(())
    }

    /// What a failed connection's diagnosis needs to know (`tls::diagnose`).
    pub(crate) fn peer(&self, url: &SecretUrl) -> tls::Peer {
        tls::Peer::Postgres { mode: self.mode(url), ca: self.pg_ca.is_some() }
    }
}

/// `ENV (--flag)` of the field `id` of the settings group `A`, as its `#[arg]` defines them.
fn named<A: Args>(id: &str) -> String {
    let cmd = A::augment_args(clap::Command::new("streamsink"));
    let arg = cmd.get_arguments().find(|a| a.get_id() == id);
    let env = arg.and_then(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned());
    match (env, arg.and_then(|a| a.get_long())) {
        (Some(env), Some(long)) => format!("{env} (--{long})"),
        _ => id.to_string(),
    }
}

/// The environment variable of the field `id` of the settings group `A`.
fn env_name<A: Args>(id: &str) -> String {
    let cmd = A::augment_args(clap::Command::new("streamsink"));
    let env = cmd.get_arguments().find(|a| a.get_id() == id).and_then(|a| a.get_env());
    env.map_or_else(|| id.to_string(), |e| e.to_string_lossy().into_owned())
}

impl OptionalPostgresSettings {
    /// The URL, unless it is unset or empty (an env file's `DATABASE_URL=` line).
    pub fn database_url(&self) -> Option<&SecretUrl> {
        self.database_url.as_ref().and_then(|u| u.0.as_ref())
    }
}

/// A URL setting that may be set to nothing (empty).
#[derive(Debug, Clone)]
pub struct MaybeUrl(Option<SecretUrl>);

/// Where PostgreSQL is, for a command that can do without it (`check` checks Redis alone).
#[derive(Args, Debug, Clone)]
pub struct OptionalPostgresSettings {
    /// PostgreSQL URL (postgres://user[:password]@host:port/db) or key=value string.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "URL",
        hide_env_values = true,
        value_parser = optional_database_url
    )]
    database_url: Option<MaybeUrl>,
    /// `STREAMSINK_PG_TLS`, `STREAMSINK_PG_CA`.
    #[command(flatten)]
    pub tls: PostgresTlsSettings,
}

/// Which streams and which consumer group: for every command that works on the group.
#[derive(Args, Debug, Clone)]
pub struct GroupSettings {
    /// `STREAMSINK_STREAMS`.
    #[command(flatten)]
    pub streams: StreamsSettings,
    /// `STREAMSINK_GROUP`.
    #[command(flatten)]
    pub name: GroupName,
}

/// The streams the worker reads: a group of its own so that `status` can default to them
/// without asking for a consumer group.
#[derive(Args, Debug, Clone)]
pub struct StreamsSettings {
    /// Comma-separated streams; one reader reads them all. `events:{0..15}` is the 16 shards events:{0} … events:{15} (streamsink publish --shards).
    #[arg(
        long = "streams",
        env = "STREAMSINK_STREAMS",
        value_name = "LIST",
        default_value = "events:incoming",
        value_parser = stream_list
    )]
    pub streams: StreamList,
}

impl std::ops::Deref for StreamsSettings {
    type Target = StreamList;
    fn deref(&self) -> &StreamList {
        &self.streams
    }
}

/// The consumer group: a group of its own so that `pending` can name it without the streams.
#[derive(Args, Debug, Clone)]
pub struct GroupName {
    /// Consumer group.
    #[arg(
        long = "group",
        env = "STREAMSINK_GROUP",
        value_name = "NAME",
        default_value = "event-processors",
        value_parser = non_empty
    )]
    pub group: String,
}

impl std::ops::Deref for GroupName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.group
    }
}

impl std::fmt::Display for GroupName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.group)
    }
}

/// The stream field an envelope travels in: a group of its own so that `publish` writes and
/// `backfill` reads the very field the worker reads.
#[derive(Args, Debug, Clone)]
pub struct EventFieldSettings {
    /// Stream field holding a JSON envelope; entries without it are read as flat fields.
    #[arg(long, env = "STREAMSINK_EVENT_FIELD", value_name = "NAME", default_value = "event", value_parser = non_empty)]
    pub event_field: String,
}

impl std::ops::Deref for EventFieldSettings {
    type Target = str;
    fn deref(&self) -> &str {
        &self.event_field
    }
}

/// How the worker reads, writes, reclaims and reports.
#[derive(Args, Debug, Clone)]
pub struct WorkerSettings {
    /// Consumer name within the group, unique per process [default: <hostname>-<pid>]
    #[arg(long, env = "STREAMSINK_CONSUMER", value_name = "NAME", value_parser = non_empty)]
    pub consumer: Option<String>,
    /// Worker threads writing to Postgres (and Postgres connections); chosen by measurement.
    #[arg(long, env = "STREAMSINK_WORKERS", value_name = "N", default_value = "4", value_parser = count::<1, 256>)]
    pub workers: usize,
    /// Entries per read (XREADGROUP COUNT); chosen by measurement, see BENCHMARKS.md.
    #[arg(long, env = "STREAMSINK_BATCH", value_name = "N", default_value = "1000", value_parser = count::<1, 100_000>)]
    pub batch: usize,
    /// How long one read waits for new entries (XREADGROUP BLOCK); a stop waits at most this long (short, so an idle worker stops promptly).
    #[arg(long, env = "STREAMSINK_BLOCK", value_name = "DURATION", default_value = "1s", value_parser = duration)]
    pub block: Duration,
    /// Interval between stats lines.
    #[arg(
        long,
        env = "STREAMSINK_STATS_INTERVAL",
        value_name = "DURATION",
        default_value = "60s",
        value_parser = duration
    )]
    pub stats_interval: Duration,
    /// Where a newly created group starts: 0 (all entries already in the stream), $ (only new ones) or an entry id.
    #[arg(long, env = "STREAMSINK_GROUP_START", value_name = "ID", default_value = "0", value_parser = group_start)]
    pub group_start: String,
    /// `STREAMSINK_EVENT_FIELD`.
    #[command(flatten)]
    pub event_field: EventFieldSettings,
    /// How often entries stuck with a dead consumer are reclaimed (XAUTOCLAIM).
    #[arg(
        long,
        env = "STREAMSINK_CLAIM_INTERVAL",
        value_name = "DURATION",
        default_value = "30s",
        value_parser = duration
    )]
    pub claim_interval: Duration,
    /// How long an entry of a stopped or stuck consumer sits idle before it is reclaimed (live consumers keep theirs fresh).
    #[arg(
        long,
        env = "STREAMSINK_CLAIM_MIN_IDLE",
        value_name = "DURATION",
        default_value = "60s",
        value_parser = duration
    )]
    pub claim_min_idle: Duration,
    /// Deliveries (Redis's count, so restarts count) after which an entry is dead-lettered.
    #[arg(
        long,
        env = "STREAMSINK_MAX_DELIVERIES",
        value_name = "N",
        default_value = "3",
        value_parser = count::<1, 1000>
    )]
    pub max_deliveries: usize,
    /// Consumers idle this long with nothing pending are deleted from the group.
    #[arg(
        long,
        env = "STREAMSINK_CONSUMER_PRUNE_IDLE",
        value_name = "DURATION",
        default_value = "1h",
        value_parser = duration
    )]
    pub consumer_prune_idle: Duration,
    /// Bytes of entries the process may hold at once (read, queued or being written): 64MiB, 512KiB, 1GiB.
    #[arg(
        long,
        env = "STREAMSINK_MAX_INFLIGHT",
        value_name = "BYTES",
        default_value = "64MiB",
        value_parser = byte_size
    )]
    pub max_inflight: u64,
    /// Trim each stream to entries younger than this (30d, 12h), at most once a minute, never past an entry a group still needs; unset or empty: keep everything.
    #[arg(long, env = "STREAMSINK_RETENTION", value_name = "DURATION", value_parser = retention)]
    pub retention: Option<Retention>,
    /// Trim each dead-letter stream (<stream>:dlq) to entries younger than this (90d); unset or empty: keep everything.
    #[arg(long, env = "STREAMSINK_DLQ_RETENTION", value_name = "DURATION", value_parser = retention)]
    pub dlq_retention: Option<Retention>,
    /// Address for GET /metrics (Prometheus), /health/live and /health/ready, e.g. 127.0.0.1:9464; unset or empty: off.
    #[arg(long, env = "STREAMSINK_METRICS_ADDR", value_name = "HOST:PORT", value_parser = listen_addr)]
    pub metrics_addr: Option<Listen>,
}

/// Where the metrics endpoint listens, or nowhere (an empty value: what an env file's
/// `STREAMSINK_METRICS_ADDR=` means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<std::net::SocketAddr>);

/// How long entries are kept, or for ever (an empty value: what an env file's
/// `STREAMSINK_RETENTION=` means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

impl WorkerSettings {
    /// The consumer name: the one set, or `<hostname>-<pid>`, unique per process, so two
    /// instances on one host never share pending entries, and an operator can tell from
    /// `XINFO CONSUMERS` which machine holds what.
    pub fn consumer_name(&self) -> String {
        self.consumer.clone().unwrap_or_else(|| {
            // /proc/sys is hidden by systemd's ProcSubset=pid; /etc/hostname stays readable.
            let read = |path: &str| {
                std::fs::read_to_string(path).ok().map(|h| h.trim().to_string()).filter(|h| !h.is_empty())
            };
            let host = read("/proc/sys/kernel/hostname")
                .or_else(|| read("/etc/hostname"))
                .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
                .unwrap_or_else(|| "localhost".into());
            format!("{host}-{}", std::process::id())
        })
    }

    /// The reader's socket timeout: longer than BLOCK, so that a reply the server sends at the
    /// end of BLOCK is never abandoned (abandoned entries would sit pending until reclaimed).
    pub(crate) fn read_timeout(&self) -> Duration {
        self.block + crate::broker::COMMAND_TIMEOUT
    }

    /// `STREAMSINK_RETENTION`: `None` keeps everything.
    pub fn retention(&self) -> Option<Duration> {
        self.retention.and_then(|r| r.0)
    }

    /// `STREAMSINK_DLQ_RETENTION`: `None` keeps everything.
    pub fn dlq_retention(&self) -> Option<Duration> {
        self.dlq_retention.and_then(|r| r.0)
    }
}

/// Everything `streamsink run` needs: the worker's whole configuration.
#[derive(Args, Debug, Clone)]
pub struct Config {
    /// `REDIS_URL`.
    #[command(flatten)]
    pub redis: RedisSettings,
    /// `DATABASE_URL`.
    #[command(flatten)]
    pub postgres: PostgresSettings,
    /// `STREAMSINK_STREAMS`, `STREAMSINK_GROUP`.
    #[command(flatten)]
    pub group: GroupSettings,
    /// Everything else `run` reads.
    #[command(flatten)]
    pub worker: WorkerSettings,
}

impl Config {
    /// Refuses TLS settings that would be ignored or cannot work ([`RedisSettings::check`],
    /// [`PostgresSettings::check`]), and in a cluster a stream whose dead letters could not
    /// share its slot (`broker::keys`: a name holding `}` without a hash tag).
    pub fn check(&self) -> Result<(), SettingsError> {
        self.redis.check()?;
        if self.redis.is_cluster()
            && let Some(s) = self.group.streams.iter().find(|s| !crate::broker::keys::shares_slot(s))
        {
            let problem = format!(
                "the stream '{s}' cannot have its dead letters in its own slot of a Redis Cluster: \
                 name it without '{{' and '}}', or with a hash tag (events:{{0}})"
            );
            return Err(SettingsError::invalid(&named::<StreamsSettings>("streams"), problem));
        }
        self.postgres.check()
    }

    /// Reads the settings from `flags` (as they follow `streamsink run`), falling back to the
    /// environment and then to the defaults, exactly as the command line does.
    pub fn from_flags<I, T>(flags: I) -> Result<Config, SettingsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Run {
            #[command(flatten)]
            config: Config,
        }
        let args = std::iter::once(std::ffi::OsString::from("run")).chain(flags.into_iter().map(Into::into));
        let config = <Run as clap::Parser>::try_parse_from(args)
            .map(|r| r.config)
            .map_err(|e| SettingsError::new(&e, &<Run as clap::CommandFactory>::command()))?;
        config.check()?;
        Ok(config)
    }
}

/// A command line that was refused, as one line: a bad or missing setting is named by its
/// environment variable and its flag (an operator may have set either), and the reason is the
/// value parser's, which never quotes a URL.
///
/// Invariant: no text the operator typed reaches this line except a flag's name. clap's own
/// messages echo raw arguments ("unexpected argument 'redis://:pw@h' found" for a URL given
/// without its flag), so they are used only for the kinds whose text is built from our own
/// argument definitions; the others are rendered here.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

/// Said in place of an argument that is not echoed.
const NOT_SHOWN: &str = "not shown: it may hold a secret";

impl SettingsError {
    /// A value refused after the command line was read: `setting` is `ENV (--flag)`.
    pub(crate) fn invalid(setting: &str, problem: impl std::fmt::Display) -> SettingsError {
        SettingsError(format!("invalid setting {setting}: {problem}"))
    }

    /// Renders clap's error `e` about `cmd` (whose arguments, its subcommands' included, are
    /// the settings).
    pub fn new(e: &clap::Error, cmd: &clap::Command) -> SettingsError {
        use clap::error::{ContextKind, ContextValue, ErrorKind};
        let context = |kind| match e.get(kind) {
            Some(ContextValue::String(s)) => vec![s.clone()],
            Some(ContextValue::Strings(v)) => v.clone(),
            _ => Vec::new(),
        };
        let did_you_mean = |kind| match context(kind).first() {
            Some(s) => format!(" (did you mean '{s}'?)"),
            None => String::new(),
        };
        let commands = || {
            let names: Vec<&str> =
                cmd.get_subcommands().map(|c| c.get_name()).filter(|n| *n != "help").collect();
            names.join(", ")
        };
        let line = match e.kind() {
            ErrorKind::ValueValidation | ErrorKind::MissingRequiredArgument => {
                let problem = match std::error::Error::source(e) {
                    Some(source) => source.to_string(),
                    None => "required but not set".to_string(),
                };
                format!("invalid setting {}: {problem}", setting_name(e, cmd))
            }
            ErrorKind::UnknownArgument => {
                let arg = context(ContextKind::InvalidArg).into_iter().next().unwrap_or_default();
                let flag = arg.split('=').next().unwrap_or_default();
                let shown = if is_flag_shaped(flag) { format!("'{flag}'") } else { format!("({NOT_SHOWN})") };
                format!(
                    "unexpected argument {shown}{}; settings are flags like --database-url or variables like DATABASE_URL",
                    did_you_mean(ContextKind::SuggestedArg)
                )
            }
            ErrorKind::InvalidSubcommand => format!(
                "unknown command ({NOT_SHOWN}){}; the commands are {}",
                did_you_mean(ContextKind::SuggestedSubcommand),
                commands()
            ),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
                format!("no command given; the commands are {}", commands())
            }
            ErrorKind::InvalidValue | ErrorKind::TooManyValues => {
                let empty = context(ContextKind::InvalidValue).first().is_none_or(String::is_empty);
                let problem = if empty {
                    "a value is required".to_string()
                } else {
                    format!("value refused ({NOT_SHOWN})")
                };
                format!("invalid setting {}: {problem}", setting_name(e, cmd))
            }
            // Built from our argument definitions and counts only.
            ErrorKind::ArgumentConflict
            | ErrorKind::NoEquals
            | ErrorKind::TooFewValues
            | ErrorKind::WrongNumberOfValues
            | ErrorKind::InvalidUtf8 => {
                // One readable line, not clap's multi-line usage block.
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or("invalid command line");
                first.strip_prefix("error: ").unwrap_or(first).to_string()
            }
            _ => format!("the command line was refused ({NOT_SHOWN})"),
        };
        SettingsError(line)
    }
}

/// `--name` with a name such as a flag has: shown back to the operator. Anything else (a URL, a
/// word, a short option glued to a value like `-s3cret`) may be a secret typed in the wrong
/// place, and is not.
fn is_flag_shaped(arg: &str) -> bool {
    arg.strip_prefix("--").is_some_and(|name| {
        (1..=40).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// `ENV (--flag)` of the setting an error is about.
fn setting_name(e: &clap::Error, cmd: &clap::Command) -> String {
    use clap::error::{ContextKind, ContextValue};
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::Strings(v)) => v.first().cloned().unwrap_or_default(),
        _ => String::new(),
    };
    // A required group reads `<--all|ID|--reason <REASON>>`: name its members.
    if let Some(group) = arg.strip_prefix('<').and_then(|g| g.strip_suffix('>')) {
        let members: Vec<&str> = group.split('|').filter_map(|m| m.split_whitespace().next()).collect();
        return format!("(one of {})", members.join(", "));
    }
    let flag = arg.split_whitespace().next().unwrap_or_default().to_string();
    let env = cmd
        .get_arguments()
        .chain(cmd.get_subcommands().flat_map(|sub| sub.get_arguments()))
        .find(|a| a.get_long().is_some_and(|long| flag == format!("--{long}")))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned());
    match env {
        Some(env) => format!("{env} ({flag})"),
        None => flag,
    }
}

/// Streams to read: never empty, no name twice, no empty name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamList(pub Vec<String>);

impl std::ops::Deref for StreamList {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.0
    }
}

/// Why a setting's value was refused. The value parsers return it; the command line shows it
/// after the setting's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidValue {
    #[error("must not be empty")]
    Empty,
    #[error("'{0}' has an empty stream name")]
    EmptyStreamName(String),
    /// A stream name with a `{A..B}` that is not a range of shards.
    #[error("{0}")]
    ShardRange(String),
    #[error("'{value}' is not a whole number from {min} to {max}")]
    NotACount { value: String, min: usize, max: usize },
    #[error("'{0}' is not a duration with a unit (like 250ms, 5s, 1m, 1h, 30d)")]
    NotADuration(String),
    #[error("'{0}' must be longer than zero")]
    ZeroDuration(String),
    #[error("'{0}' is not a size (like 64MiB, 512KiB, 1GiB, or bytes) of at least 64KiB")]
    NotASize(String),
    #[error("'{0}' is not 0, $ or a stream entry id")]
    NotAGroupStart(String),
    #[error("'{0}' is not an address to listen on (like 127.0.0.1:9464 or [::1]:9464)")]
    NotAnAddress(String),
    #[error("'{0}' is not off, require or verify-full")]
    NotAPgTlsMode(String),
    /// A PEM file that cannot be read or parsed (`tls::ca_file` and its kin).
    #[error("'{path}' {problem}")]
    TlsFile { path: String, problem: String },
    /// A URL that does not parse; the message never quotes it (`secret::UrlError`).
    #[error(transparent)]
    Url(#[from] UrlError),
}

/// `REDIS_URL`, parsed into the client's connection info at once: nothing of the raw text is
/// kept, so nothing of it can be printed.
fn redis_url(value: &str) -> Result<SecretUrl, InvalidValue> {
    Ok(SecretUrl::redis(value)?)
}

/// `DATABASE_URL`, parsed into the client's configuration at once (see [`redis_url`]).
/// [`database_url`], an empty value meaning none.
fn optional_database_url(value: &str) -> Result<MaybeUrl, InvalidValue> {
    if value.trim().is_empty() { Ok(MaybeUrl(None)) } else { database_url(value).map(|u| MaybeUrl(Some(u))) }
}

fn database_url(value: &str) -> Result<SecretUrl, InvalidValue> {
    Ok(SecretUrl::postgres(value)?)
}

/// `host:port` (a host name is resolved once, here, to its first address), or empty for off.
fn listen_addr(value: &str) -> Result<Listen, InvalidValue> {
    use std::net::ToSocketAddrs;
    let value = value.trim();
    if value.is_empty() {
        return Ok(Listen(None));
    }
    let refused = || InvalidValue::NotAnAddress(value.to_string());
    let first = value.to_socket_addrs().map_err(|_| refused())?.next().ok_or_else(refused)?;
    Ok(Listen(Some(first)))
}

fn stream_list(value: &str) -> Result<StreamList, InvalidValue> {
    let mut streams: Vec<String> = Vec::new();
    for name in value.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(InvalidValue::EmptyStreamName(value.to_string()));
        }
        for name in crate::broker::shard::expand(name).map_err(InvalidValue::ShardRange)? {
            if !streams.contains(&name) {
                streams.push(name);
            }
        }
    }
    Ok(StreamList(streams))
}

fn non_empty(value: &str) -> Result<String, InvalidValue> {
    match value.trim() {
        "" => Err(InvalidValue::Empty),
        v => Ok(v.to_string()),
    }
}

fn count<const MIN: usize, const MAX: usize>(value: &str) -> Result<usize, InvalidValue> {
    match value.trim().parse::<usize>() {
        Ok(n) if (MIN..=MAX).contains(&n) => Ok(n),
        _ => Err(InvalidValue::NotACount { value: value.to_string(), min: MIN, max: MAX }),
    }
}

fn duration(value: &str) -> Result<Duration, InvalidValue> {
    match parse_duration(value) {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err(InvalidValue::ZeroDuration(value.to_string())),
        None => Err(InvalidValue::NotADuration(value.to_string())),
    }
}

/// `STREAMSINK_RETENTION`: a duration, or empty for none.
fn retention(value: &str) -> Result<Retention, InvalidValue> {
    if value.trim().is_empty() { Ok(Retention(None)) } else { duration(value).map(|d| Retention(Some(d))) }
}

/// A point in time on the command line (`--since`, `--until`): an RFC 3339 timestamp
/// (`2026-12-01T10:00:00Z`), or a duration meaning that long before now (`2h`, `7d`).
pub fn parse_time(value: &str, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
    let value = value.trim();
    if let Ok(at) = value.parse::<jiff::Timestamp>() {
        return Some(at);
    }
    let ago = jiff::SignedDuration::try_from(parse_duration(value)?).ok()?;
    now.checked_sub(ago).ok()
}

/// The inverse of [`parse_duration`] for log lines and reports: `30d`, `12h`, `90s`, `250ms`,
/// in the largest unit that divides it.
pub fn duration_text(d: Duration) -> String {
    let (s, ms) = (d.as_secs(), d.subsec_millis());
    match s {
        _ if ms != 0 || s == 0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Parses `250ms`, `5s`, `1m`, `1h`, `30d`: a whole number and a unit, which is required so that a
/// bare `5` cannot be misread as seconds by one reader and milliseconds by another.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let (n, unit) = number_and_unit(value)?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => None,
    }?;
    Some(Duration::from_millis(millis))
}

/// Splits `  64 MiB ` into `(64, "MiB")`: leading digits, then the rest trimmed.
fn number_and_unit(value: &str) -> Option<(u64, &str)> {
    let v = value.trim();
    let digits = v.len() - v.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = v.split_at(digits);
    Some((number.parse().ok()?, unit.trim()))
}

fn byte_size(value: &str) -> Result<u64, InvalidValue> {
    match parse_byte_size(value) {
        Some(n) if n >= 64 * 1024 => Ok(n),
        _ => Err(InvalidValue::NotASize(value.to_string())),
    }
}

/// Parses a byte count: a whole number and an optional unit. `KiB`/`MiB`/`GiB` and systemd's
/// `K`/`M`/`G` are powers of 1024, `KB`/`MB`/`GB` powers of 1000, `B` or none plain bytes.
fn parse_byte_size(value: &str) -> Option<u64> {
    let (n, unit) = number_and_unit(value)?;
    let scale: u64 = match unit {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

fn group_start(value: &str) -> Result<String, InvalidValue> {
    let v = value.trim();
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let is_id = match v.split_once('-') {
        Some((ms, seq)) => digits(ms) && digits(seq),
        None => digits(v),
    };
    if v == "$" || is_id { Ok(v.to_string()) } else { Err(InvalidValue::NotAGroupStart(v.to_string())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URLS: [&str; 4] =
        ["--redis-url", "redis://127.0.0.1:6379", "--database-url", "postgres://postgres@127.0.0.1/test"];

    /// The URLs, unless `extra` gives its own, then `extra`.
    fn with(extra: &[&str]) -> Result<Config, SettingsError> {
        let urls = URLS.chunks(2).filter(|pair| !extra.contains(&pair[0])).flatten();
        Config::from_flags(urls.chain(extra))
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("-5s"), None);
    }

    #[test]
    fn defaults_apply_when_only_urls_are_set() {
        let c = with(&[]).unwrap();
        assert_eq!(c.group.streams.0, vec!["events:incoming"]);
        assert_eq!(&*c.group.name, "event-processors");
        let w = &c.worker;
        assert_eq!((w.workers, w.batch, w.max_deliveries), (4, 1000, 3));
        assert_eq!(w.block, Duration::from_secs(1));
        assert_eq!(w.stats_interval, Duration::from_secs(60));
        assert_eq!(w.group_start, "0");
        assert_eq!(w.claim_interval, Duration::from_secs(30));
        assert_eq!(w.claim_min_idle, Duration::from_secs(60));
        assert_eq!(w.consumer_prune_idle, Duration::from_secs(3600));
        assert_eq!(w.max_inflight, 64 << 20);
        assert!(w.consumer_name().ends_with(&format!("-{}", std::process::id())));
    }

    #[test]
    fn each_bad_value_is_refused_in_one_line_naming_the_setting_and_why() {
        let cases: [(&str, &str, &str); 10] = [
            (
                "--redis-url",
                "http://:hunter2@x",
                "REDIS_URL (--redis-url): not a Redis URL (the scheme is 'http')",
            ),
            ("--block", "5", "STREAMSINK_BLOCK (--block): '5' is not a duration"),
            ("--block", "0s", "STREAMSINK_BLOCK (--block): '0s' must be longer than zero"),
            ("--workers", "0", "STREAMSINK_WORKERS (--workers): '0' is not a whole number from 1 to 256"),
            ("--batch", "many", "STREAMSINK_BATCH (--batch): 'many' is not a whole number"),
            ("--streams", "a,,b", "STREAMSINK_STREAMS (--streams): 'a,,b' has an empty stream name"),
            (
                "--streams",
                "e:{3..1}",
                "STREAMSINK_STREAMS (--streams): 'e:{3..1}': a shard range runs from a lower",
            ),
            ("--group-start", "yesterday", "STREAMSINK_GROUP_START (--group-start): 'yesterday' is not 0, $"),
            (
                "--stats-interval",
                "1w",
                "STREAMSINK_STATS_INTERVAL (--stats-interval): '1w' is not a duration",
            ),
            ("--group", " ", "STREAMSINK_GROUP (--group): must not be empty"),
        ];
        for (flag, value, expected) in cases {
            let line = with(&[flag, value]).unwrap_err().to_string();
            assert!(line.starts_with(&format!("invalid setting {expected}")), "{flag} {value}: {line}");
            assert!(!line.contains('\n') && !line.contains("hunter2"), "{line}");
        }
    }

    #[test]
    fn a_shard_range_in_the_stream_list_names_each_shard_once() {
        let c = with(&["--streams", "orders, events:{0..2},events:{1}"]).unwrap();
        assert_eq!(c.group.streams.0, ["orders", "events:{0}", "events:{1}", "events:{2}"]);
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_byte_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_byte_size("64M"), Some(64 << 20));
        assert_eq!(parse_byte_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_byte_size("1GB"), Some(1_000_000_000));
        assert_eq!(parse_byte_size("100000"), Some(100_000));
        assert_eq!(parse_byte_size("64 MiB"), Some(64 << 20));
        assert_eq!(parse_byte_size("lots"), None);
        assert_eq!(parse_byte_size("1TiB"), None);
        assert!(byte_size("1KiB").is_err(), "too small to hold a batch");
    }

    #[test]
    fn a_missing_url_is_named() {
        let line = Config::from_flags(["--redis-url", "redis://h"]).unwrap_err().to_string();
        assert_eq!(line, "invalid setting DATABASE_URL (--database-url): required but not set");
    }

    #[test]
    fn stream_names_are_trimmed_and_deduplicated() {
        assert_eq!(stream_list(" a, b ,a").unwrap().0, vec!["a", "b"]);
    }

    #[test]
    fn an_unexpected_argument_is_never_echoed_but_a_flag_name_is() {
        for (args, shown) in [
            (vec!["redis://:s3cret@h:6379"], "unexpected argument (not shown: it may hold a secret)"),
            (vec!["--", "host=h password=s3cret"], "unexpected argument (not shown: it may hold a secret)"),
            (vec!["-s3cret"], "unexpected argument (not shown: it may hold a secret)"),
            (vec!["--bogus=s3cret"], "unexpected argument '--bogus';"),
            (
                vec!["--redis-ulr=redis://:s3cret@h"],
                "unexpected argument '--redis-ulr' (did you mean '--redis-url'?)",
            ),
        ] {
            let line = with(&args).unwrap_err().to_string();
            assert!(line.starts_with(shown), "{args:?}: {line}");
            assert!(!line.contains("s3cret") && !line.contains('\n'), "{args:?}: {line}");
        }
        let line =
            with(&["--redis-url", "redis://:s3cret@a", "--redis-url", "redis://:s3cret@b"]).unwrap_err();
        assert_eq!(line.to_string(), "the argument '--redis-url <URL>' cannot be used multiple times");
    }

    #[test]
    fn bad_url_errors_do_not_show_the_password() {
        let err = redis_url("redis://:hunter2@host:notaport").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = database_url("postgres://u:hunter2@h:notaport/db").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

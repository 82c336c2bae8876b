//! Settings: validated once at start, so a bad value stops the process before it connects.
//!
//! Every setting has a safe default except the two URLs. The command line (`main.rs`) collects
//! raw strings from flags and environment variables into [`RawSettings`]; [`Config::from_raw`]
//! turns them into typed values or a [`ConfigError`] naming the setting that is wrong.

use std::fmt;
use std::time::Duration;

/// Raw setting values as given (flag over environment variable); `None` means "not set".
#[derive(Debug, Default, Clone)]
pub struct RawSettings {
    pub redis_url: Option<String>,
    pub database_url: Option<String>,
    pub streams: Option<String>,
    pub group: Option<String>,
    pub consumer: Option<String>,
    pub workers: Option<String>,
    pub batch: Option<String>,
    pub block: Option<String>,
    pub stats_interval: Option<String>,
    pub group_start: Option<String>,
    pub event_field: Option<String>,
    pub claim_interval: Option<String>,
    pub claim_min_idle: Option<String>,
    pub max_deliveries: Option<String>,
    pub consumer_prune_idle: Option<String>,
    pub per_event: Option<String>,
}

/// The validated configuration of one worker process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Redis URL; may hold a password, so log it only through [`mask_url`].
    pub redis_url: String,
    /// Postgres URL or key=value string; may hold a password, so log it only through [`mask_url`].
    pub database_url: String,
    /// Streams read by the one reader; never empty, no duplicates.
    pub streams: Vec<String>,
    pub group: String,
    /// Consumer name in the group; unique per process by default (`<host>-<pid>`).
    pub consumer: String,
    /// Worker threads writing to Postgres; also the Postgres pool size.
    pub workers: usize,
    /// XREADGROUP COUNT: the most entries one batch holds.
    pub batch: usize,
    /// XREADGROUP BLOCK; never zero (zero would block forever and stall shutdown).
    pub block: Duration,
    pub stats_interval: Duration,
    /// Where a newly created group starts: `0` (everything already in the stream) or `$`.
    pub group_start: String,
    /// Field holding a JSON envelope; entries without it are read as flat fields.
    pub event_field: String,
    /// How often the reader reclaims entries stuck with other (dead) consumers.
    pub claim_interval: Duration,
    /// How long an entry must sit unacknowledged before it is reclaimed.
    pub claim_min_idle: Duration,
    /// Deliveries (Redis's count, so it survives restarts) after which an entry is
    /// dead-lettered instead of processed again.
    pub max_deliveries: u64,
    /// Idle time after which a consumer with no pending entries is deleted from the group.
    pub consumer_prune_idle: Duration,
    /// Write and acknowledge one event at a time: the naive design, kept only as the
    /// benchmark's baseline. Never faster, never needed in production.
    pub per_event: bool,
    /// Reclaim with XPENDING + XCLAIM even where XAUTOCLAIM exists. Not a setting: chosen
    /// automatically on Redis < 6.2, and forced by tests to exercise that path.
    pub force_claim_fallback: bool,
}

/// A setting that is missing or invalid: names the environment variable and the flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub env: &'static str,
    pub flag: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.env, self.flag, self.problem)
    }
}

impl std::error::Error for ConfigError {}

pub const DEFAULT_STREAM: &str = "events:incoming";
pub const DEFAULT_GROUP: &str = "event-processors";
pub const DEFAULT_WORKERS: usize = 4;
pub const DEFAULT_BATCH: usize = 1000; // chosen by measurement: BENCHMARKS.md
pub const DEFAULT_BLOCK: Duration = Duration::from_secs(5);
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_CLAIM_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_CLAIM_MIN_IDLE: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_DELIVERIES: usize = 3;
pub const DEFAULT_CONSUMER_PRUNE_IDLE: Duration = Duration::from_secs(3600);

/// Which command the settings are for: `migrate` needs no Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Run,
    Migrate,
}

impl Config {
    /// Validates every setting; the first problem found is returned.
    pub fn from_raw(raw: RawSettings, purpose: Purpose) -> Result<Config, ConfigError> {
        let redis_url = match (raw.redis_url, purpose) {
            (Some(url), _) => check_redis_url(url)?,
            (None, Purpose::Migrate) => String::new(),
            (None, Purpose::Run) => return Err(missing("REDIS_URL", "--redis-url")),
        };
        let database_url = match raw.database_url {
            Some(url) => check_database_url(url)?,
            None => return Err(missing("DATABASE_URL", "--database-url")),
        };
        let streams = parse_streams(raw.streams.as_deref().unwrap_or(DEFAULT_STREAM))?;
        let group = non_empty(raw.group, DEFAULT_GROUP, "STREAMSINK_GROUP", "--group")?;
        let consumer = match raw.consumer {
            Some(c) => non_empty(Some(c), "", "STREAMSINK_CONSUMER", "--consumer")?,
            None => default_consumer_name(),
        };
        let workers = parse_count(raw.workers, DEFAULT_WORKERS, 1..=256, "STREAMSINK_WORKERS", "--workers")?;
        let batch = parse_count(raw.batch, DEFAULT_BATCH, 1..=100_000, "STREAMSINK_BATCH", "--batch")?;
        let block = parse_setting_duration(raw.block, DEFAULT_BLOCK, "STREAMSINK_BLOCK", "--block")?;
        let stats_interval = parse_setting_duration(
            raw.stats_interval,
            DEFAULT_STATS_INTERVAL,
            "STREAMSINK_STATS_INTERVAL",
            "--stats-interval",
        )?;
        let group_start = parse_group_start(raw.group_start)?;
        let event_field = non_empty(raw.event_field, "event", "STREAMSINK_EVENT_FIELD", "--event-field")?;
        let claim_interval = parse_setting_duration(
            raw.claim_interval,
            DEFAULT_CLAIM_INTERVAL,
            "STREAMSINK_CLAIM_INTERVAL",
            "--claim-interval",
        )?;
        let claim_min_idle = parse_setting_duration(
            raw.claim_min_idle,
            DEFAULT_CLAIM_MIN_IDLE,
            "STREAMSINK_CLAIM_MIN_IDLE",
            "--claim-min-idle",
        )?;
        let max_deliveries = parse_count(
            raw.max_deliveries,
            DEFAULT_MAX_DELIVERIES,
            1..=1_000,
            "STREAMSINK_MAX_DELIVERIES",
            "--max-deliveries",
        )? as u64;
        let consumer_prune_idle = parse_setting_duration(
            raw.consumer_prune_idle,
            DEFAULT_CONSUMER_PRUNE_IDLE,
            "STREAMSINK_CONSUMER_PRUNE_IDLE",
            "--consumer-prune-idle",
        )?;
        Ok(Config {
            redis_url,
            database_url,
            streams,
            group,
            consumer,
            workers,
            batch,
            block,
            stats_interval,
            group_start,
            event_field,
            claim_interval,
            claim_min_idle,
            max_deliveries,
            consumer_prune_idle,
            per_event: parse_bool(raw.per_event, "STREAMSINK_PER_EVENT", "--per-event")?,
            force_claim_fallback: false,
        })
    }
}

fn missing(env: &'static str, flag: &'static str) -> ConfigError {
    ConfigError { env, flag, problem: "required but not set".into() }
}

fn invalid(env: &'static str, flag: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { env, flag, problem: problem.into() }
}

fn check_redis_url(url: String) -> Result<String, ConfigError> {
    let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"].iter().any(|s| url.starts_with(s));
    if !scheme_ok {
        return Err(invalid(
            "REDIS_URL",
            "--redis-url",
            format!("'{}' is not a redis:// URL", mask_url(&url)),
        ));
    }
    if let Err(e) = redis::Client::open(url.as_str()) {
        // The redis error text never contains the URL, but mask anyway: the value is secret.
        return Err(invalid("REDIS_URL", "--redis-url", format!("'{}': {e}", mask_url(&url))));
    }
    Ok(url)
}

fn check_database_url(url: String) -> Result<String, ConfigError> {
    match url.parse::<postgres::Config>() {
        Ok(_) => Ok(url),
        Err(e) => Err(invalid("DATABASE_URL", "--database-url", format!("'{}': {e}", mask_url(&url)))),
    }
}

fn parse_streams(value: &str) -> Result<Vec<String>, ConfigError> {
    let mut streams: Vec<String> = Vec::new();
    for name in value.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(invalid(
                "STREAMSINK_STREAMS",
                "--streams",
                format!("'{value}' has an empty stream name"),
            ));
        }
        if !streams.iter().any(|s| s == name) {
            streams.push(name.to_string());
        }
    }
    Ok(streams)
}

fn non_empty(
    value: Option<String>,
    default: &str,
    env: &'static str,
    flag: &'static str,
) -> Result<String, ConfigError> {
    match value {
        None => Ok(default.to_string()),
        Some(v) if v.trim().is_empty() => Err(invalid(env, flag, "must not be empty")),
        Some(v) => Ok(v.trim().to_string()),
    }
}

fn parse_count(
    value: Option<String>,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
    env: &'static str,
    flag: &'static str,
) -> Result<usize, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    match v.trim().parse::<usize>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(invalid(
            env,
            flag,
            format!("'{v}' is not a whole number from {} to {}", range.start(), range.end()),
        )),
    }
}

fn parse_setting_duration(
    value: Option<String>,
    default: Duration,
    env: &'static str,
    flag: &'static str,
) -> Result<Duration, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    match parse_duration(&v) {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err(invalid(env, flag, format!("'{v}' must be longer than zero"))),
        None => {
            Err(invalid(env, flag, format!("'{v}' is not a duration with a unit (like 250ms, 5s, 1m, 1h)")))
        }
    }
}

/// Parses `250ms`, `5s`, `1m`, `1h`: a whole number and a unit, which is required so that a
/// bare `5` cannot be misread as seconds by one reader and milliseconds by another.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let v = value.trim();
    let digits = v.len() - v.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = v.split_at(digits);
    let n: u64 = number.parse().ok()?;
    let millis = match unit.trim() {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }?;
    Some(Duration::from_millis(millis))
}

fn parse_bool(value: Option<String>, env: &'static str, flag: &'static str) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("") | Some("false") | Some("0") | Some("no") => Ok(false),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some(other) => Err(invalid(env, flag, format!("'{other}' is not true or false"))),
    }
}

fn parse_group_start(value: Option<String>) -> Result<String, ConfigError> {
    let Some(v) = value else {
        return Ok("0".into());
    };
    let v = v.trim().to_string();
    let is_id = |s: &str| {
        let mut parts = s.splitn(2, '-');
        let ms_ok = parts.next().is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let seq_ok = parts.next().is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        ms_ok && seq_ok
    };
    if v == "$" || is_id(&v) {
        Ok(v)
    } else {
        Err(invalid(
            "STREAMSINK_GROUP_START",
            "--group-start",
            format!("'{v}' is not 0, $ or a stream entry id"),
        ))
    }
}

/// `<hostname>-<pid>`: unique per process, so two instances on one host never share pending
/// entries, and an operator can tell from `XINFO CONSUMERS` which machine holds what.
pub fn default_consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}

/// Hides the password of a URL (`scheme://user:***@host/...`), of a `password=` query
/// parameter, and of a `password=` key in a Postgres key/value string. Every URL that reaches a
/// log line or an error message goes through here.
pub fn mask_url(url: &str) -> String {
    let mut out = match url.find("://") {
        Some(scheme_end) => {
            let rest_start = scheme_end + 3;
            let rest = &url[rest_start..];
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            // The last '@' before the path separates userinfo from host.
            match rest[..authority_end].rfind('@').or_else(|| {
                // A password holding an unencoded '/' or '?' would end the authority early;
                // fall back to the last '@' anywhere before the query.
                rest[..rest.find('?').unwrap_or(rest.len())].rfind('@')
            }) {
                Some(at) => {
                    let userinfo = &rest[..at];
                    let masked = match userinfo.find(':') {
                        Some(colon) => format!("{}:***", &userinfo[..colon]),
                        None => userinfo.to_string(),
                    };
                    format!("{}{}{}", &url[..rest_start], masked, &rest[at..])
                }
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    };
    out = mask_password_pairs(&out);
    out
}

/// Masks `password=value` wherever it appears (URL query or key/value connection string).
fn mask_password_pairs(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    while let Some(found) = lower[pos..].find("password=") {
        let value_start = pos + found + "password=".len();
        out.push_str(&s[pos..value_start]);
        out.push_str("***");
        let rest = &s[value_start..];
        let value_len = if let Some(quoted) = rest.strip_prefix('\'') {
            quoted.find('\'').map_or(rest.len(), |e| e + 2)
        } else {
            rest.find(['&', ' ', '#']).unwrap_or(rest.len())
        };
        pos = value_start + value_len;
    }
    out.push_str(&s[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawSettings {
        RawSettings {
            redis_url: Some("redis://127.0.0.1:6379".into()),
            database_url: Some("postgres://postgres@127.0.0.1/test".into()),
            ..RawSettings::default()
        }
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
        let c = Config::from_raw(raw(), Purpose::Run).unwrap();
        assert_eq!(c.streams, vec!["events:incoming"]);
        assert_eq!(c.group, "event-processors");
        assert_eq!(c.block, Duration::from_secs(5));
        assert_eq!(c.stats_interval, Duration::from_secs(60));
        assert_eq!(c.group_start, "0");
        assert_eq!(c.claim_interval, Duration::from_secs(30));
        assert_eq!(c.claim_min_idle, Duration::from_secs(60));
        assert_eq!(c.max_deliveries, 3);
        assert_eq!(c.consumer_prune_idle, Duration::from_secs(3600));
        assert!(c.consumer.ends_with(&format!("-{}", std::process::id())));
    }

    #[test]
    fn each_bad_setting_is_named() {
        type Mutation = fn(&mut RawSettings);
        let cases: Vec<(Mutation, &str)> = vec![
            (|r| r.redis_url = None, "REDIS_URL"),
            (|r| r.redis_url = Some("http://x".into()), "REDIS_URL"),
            (|r| r.database_url = None, "DATABASE_URL"),
            (|r| r.block = Some("5".into()), "STREAMSINK_BLOCK"),
            (|r| r.block = Some("0s".into()), "STREAMSINK_BLOCK"),
            (|r| r.workers = Some("0".into()), "STREAMSINK_WORKERS"),
            (|r| r.batch = Some("many".into()), "STREAMSINK_BATCH"),
            (|r| r.streams = Some("a,,b".into()), "STREAMSINK_STREAMS"),
            (|r| r.group_start = Some("yesterday".into()), "STREAMSINK_GROUP_START"),
            (|r| r.stats_interval = Some("1d".into()), "STREAMSINK_STATS_INTERVAL"),
        ];
        for (mutate, name) in cases {
            let mut r = raw();
            mutate(&mut r);
            let err = Config::from_raw(r, Purpose::Run).unwrap_err();
            assert_eq!(err.env, name, "{err}");
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn migrate_needs_no_redis() {
        let mut r = raw();
        r.redis_url = None;
        assert!(Config::from_raw(r, Purpose::Migrate).is_ok());
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(mask_url("redis://:s3cret@host:6379/0"), "redis://:***@host:6379/0");
        assert_eq!(mask_url("redis://user:s3cret@host"), "redis://user:***@host");
        assert_eq!(mask_url("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(mask_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            mask_url("postgres://h/db?user=u&password=s3cret&sslmode=disable"),
            "postgres://h/db?user=u&password=***&sslmode=disable"
        );
        assert_eq!(mask_url("host=h password=s3cret user=u"), "host=h password=*** user=u");
        assert_eq!(mask_url("host=h password='a b' user=u"), "host=h password=*** user=u");
    }

    #[test]
    fn bad_url_errors_do_not_show_the_password() {
        let mut r = raw();
        r.redis_url = Some("redis://:hunter2@host:notaport".into());
        let err = Config::from_raw(r, Purpose::Run).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

//! `streamsink check`: one-shot health for a shell or a monitoring agent.
//!
//! Redis: answered a PING (and how fast); every stream's group exists; its length, lag,
//! pending count, oldest pending age, consumers and dead letters. Postgres, when a URL is
//! given: reachable, and the schema has every migration this binary knows. Thresholds turn
//! figures into problems. Healthy means no problem at all.
//!
//! Invariant: it only reads. It creates no group, applies no migration, acknowledges nothing:
//! a check must never change what it checks.

use crate::broker::Redis;
use std::fmt;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::broker;
use crate::broker::group::{self, StreamFigures};
use crate::config::{GroupSettings, PostgresTlsSettings, RedisSettings};
use crate::secret::SecretUrl;
use crate::sink::{migrate, pool};

/// Limits past which a figure makes the check fail.
#[derive(Debug, Clone, Copy, Default)]
pub struct Thresholds {
    /// Entries not yet delivered to the group, per stream.
    pub max_lag: Option<u64>,
    /// Age of the oldest pending entry, per stream.
    pub max_pending_age: Option<Duration>,
}

/// What Postgres answered.
#[derive(Debug, Clone)]
pub enum PostgresCheck {
    /// No `DATABASE_URL`: Redis was checked alone.
    NotChecked,
    Unreachable(String),
    /// Connected: migrations applied, and the versions this binary knows that are not.
    Schema {
        applied: usize,
        missing: Vec<i32>,
    },
}

/// The whole check.
#[derive(Debug, Clone)]
pub struct Report {
    pub redis_url: String,
    /// PING round trip, or why Redis did not answer.
    pub redis: Result<Duration, String>,
    pub postgres_url: Option<String>,
    pub postgres: PostgresCheck,
    pub group: String,
    pub streams: Vec<StreamFigures>,
    /// Every reason the check fails, one line each; empty when healthy.
    pub problems: Vec<String>,
}

impl Report {
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }

    /// Per logical stream two or more of the streams checked are shards of (`events:{0}` … of
    /// `events`): the shards' figures summed (the oldest pending: the oldest of any shard; the
    /// lag: unknown if any shard's is), with the number of shards. Thresholds stay per shard.
    pub fn sharded(&self) -> Vec<(StreamFigures, usize)> {
        let mut sums: Vec<(StreamFigures, usize)> = Vec::new();
        for s in &self.streams {
            let Some(logical) = crate::broker::shard::logical_of(&s.stream) else { continue };
            let at = match sums.iter().position(|(sum, _)| sum.stream == logical) {
                Some(at) => at,
                None => {
                    let zero = StreamFigures {
                        stream: logical.to_string(),
                        group_exists: true,
                        length: 0,
                        lag: Some(0),
                        pending: Some(0),
                        oldest_pending: None,
                        consumers: None,
                        last_delivered: None,
                        dead_letters: 0,
                    };
                    sums.push((zero, 0));
                    sums.len() - 1
                }
            };
            let (sum, shards) = &mut sums[at];
            *shards += 1;
            sum.group_exists &= s.group_exists;
            sum.length += s.length;
            sum.lag = sum.lag.zip(s.lag).map(|(a, b)| a + b);
            sum.pending = sum.pending.zip(s.pending).map(|(a, b)| a + b);
            sum.oldest_pending = sum.oldest_pending.max(s.oldest_pending);
            sum.dead_letters += s.dead_letters;
        }
        sums.retain(|(_, shards)| *shards > 1);
        sums
    }
}

impl crate::operate::Report for Report {
    /// The report for machines (`--json`).
    fn to_json(&self) -> Value {
        let postgres = match &self.postgres {
            PostgresCheck::NotChecked => json!({ "checked": false }),
            PostgresCheck::Unreachable(e) => json!({ "checked": true, "ok": false, "error": e }),
            PostgresCheck::Schema { applied, missing } => json!({
                "checked": true, "ok": missing.is_empty(), "migrations_applied": applied, "migrations_missing": missing,
            }),
        };
        json!({
            "healthy": self.healthy(),
            "problems": self.problems,
            "redis": match &self.redis {
                Ok(ping) => json!({ "url": self.redis_url, "ok": true, "ping_ms": ping.as_secs_f64() * 1000.0 }),
                Err(e) => json!({ "url": self.redis_url, "ok": false, "error": e }),
            },
            "postgres": postgres,
            "group": self.group,
            "streams": self.streams.iter().map(|s| json!({
                "stream": s.stream,
                "group_exists": s.group_exists,
                "length": s.length,
                "lag": s.lag,
                "pending": s.pending,
                "oldest_pending_seconds": s.oldest_pending.map(|d| d.as_secs_f64()),
                "consumers": s.consumers,
                "dead_letters": s.dead_letters,
            })).collect::<Vec<_>>(),
            "sharded": self.sharded().iter().map(|(s, shards)| json!({
                "stream": s.stream,
                "shards": shards,
                "group_exists": s.group_exists,
                "length": s.length,
                "lag": s.lag,
                "pending": s.pending,
                "oldest_pending_seconds": s.oldest_pending.map(|d| d.as_secs_f64()),
                "dead_letters": s.dead_letters,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The report for people: services, a table of streams, a verdict.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.redis {
            Ok(ping) => writeln!(
                f,
                "redis     ok      {}  (ping {:.1} ms)",
                self.redis_url,
                ping.as_secs_f64() * 1000.0
            )?,
            Err(e) => writeln!(f, "redis     FAILED  {}  {e}", self.redis_url)?,
        }
        let url = self.postgres_url.as_deref().unwrap_or("");
        match &self.postgres {
            PostgresCheck::NotChecked => {
                writeln!(f, "postgres  skipped (DATABASE_URL not set: Redis checked alone)")?
            }
            PostgresCheck::Unreachable(e) => writeln!(f, "postgres  FAILED  {url}  {e}")?,
            PostgresCheck::Schema { applied, missing } if missing.is_empty() => {
                writeln!(f, "postgres  ok      {url}  (schema current: {applied} migrations)")?
            }
            PostgresCheck::Schema { missing, .. } => writeln!(
                f,
                "postgres  FAILED  {url}  (migrations not applied: {missing:?}; run streamsink migrate)"
            )?,
        }
        if !self.streams.is_empty() {
            let dash = || "-".to_string();
            // Each stream, then each sharded stream's sums.
            let sums = self.sharded();
            let sums = sums.iter().map(|(s, shards)| (s, format!("{} (sum of {shards} shards)", s.stream)));
            let rows: Vec<Vec<String>> = self
                .streams
                .iter()
                .map(|s| (s, s.stream.clone()))
                .chain(sums)
                .map(|(s, name)| {
                    vec![
                        name,
                        if s.group_exists { self.group.clone() } else { format!("{} (missing)", self.group) },
                        s.length.to_string(),
                        s.lag.map_or_else(dash, |v| v.to_string()),
                        s.pending.map_or_else(dash, |v| v.to_string()),
                        s.oldest_pending.map_or_else(dash, |d| format!("{}s", d.as_secs())),
                        s.consumers.map_or_else(dash, |v| v.to_string()),
                        s.dead_letters.to_string(),
                    ]
                })
                .collect();
            let header = [
                "stream",
                "group",
                "length",
                "lag",
                "pending",
                "oldest pending",
                "consumers",
                "dead letters",
            ];
            writeln!(f)?;
            write!(f, "{}", crate::operate::table::render(&header, &rows))?;
        }
        writeln!(f)?;
        if self.healthy() {
            writeln!(f, "healthy")
        } else {
            writeln!(f, "UNHEALTHY: {}", self.problems.join("; "))
        }
    }
}

/// Runs every check; never fails as a whole (what cannot be checked is a problem reported).
pub fn check(
    redis: &RedisSettings,
    postgres: Option<(&SecretUrl, &PostgresTlsSettings)>,
    group: &GroupSettings,
    limits: Thresholds,
) -> Report {
    let database_url = postgres.map(|(url, _)| url);
    let mut report = Report {
        redis_url: redis.redis_url.to_string(),
        redis: Err(String::new()),
        postgres_url: database_url.map(|u| u.to_string()),
        postgres: PostgresCheck::NotChecked,
        group: group.name.to_string(),
        streams: Vec::new(),
        problems: Vec::new(),
    };
    check_redis(&mut report, redis, group, limits);
    if let Some((url, tls)) = postgres {
        report.postgres = check_postgres(url, tls);
        match &report.postgres {
            PostgresCheck::Unreachable(e) => report.problems.push(format!("Postgres: {e}")),
            PostgresCheck::Schema { missing, .. } if !missing.is_empty() => report
                .problems
                .push(format!("Postgres: migrations {missing:?} not applied (streamsink migrate)")),
            _ => {}
        }
    }
    report
}

fn check_redis(report: &mut Report, redis: &RedisSettings, group: &GroupSettings, limits: Thresholds) {
    let mut con = match broker::connect(redis, broker::COMMAND_TIMEOUT) {
        Ok(con) => con,
        Err(e) => {
            report.redis = Err(format!("cannot connect: {e}"));
            report.problems.push(format!("Redis: cannot connect: {e}"));
            return;
        }
    };
    let started = Instant::now();
    let ping: redis::RedisResult<String> = redis::cmd("PING").query(&mut con);
    report.redis = match ping {
        Ok(_) => Ok(started.elapsed()),
        Err(e) => {
            report.problems.push(format!("Redis: PING failed: {e}"));
            Err(format!("PING failed: {e}"))
        }
    };
    if report.redis.is_err() {
        return;
    }
    for stream in group.streams.iter() {
        match check_stream(&mut con, stream, &group.name, limits) {
            Ok(s) => {
                if !s.group_exists {
                    report.problems.push(format!("group {} does not exist on stream {stream}", group.name));
                }
                match (limits.max_lag, s.lag) {
                    (Some(max), Some(lag)) if lag > max => {
                        report.problems.push(format!("{stream}: lag {lag} is over --max-lag {max}"))
                    }
                    (Some(_), None) if s.group_exists => report.problems.push(format!(
                        "{stream}: the lag is unknown (Redis cannot say), so --max-lag cannot be checked"
                    )),
                    _ => {}
                }
                if let (Some(max), Some(age)) = (limits.max_pending_age, s.oldest_pending) {
                    if age > max {
                        report.problems.push(format!(
                            "{stream}: oldest pending entry is {}s old, over --max-pending-age {}s",
                            age.as_secs(),
                            max.as_secs()
                        ));
                    }
                }
                report.streams.push(s);
            }
            Err(e) => report.problems.push(format!("Redis: {e}")),
        }
    }
}

/// Entries after `last_delivered` (XRANGE with an exclusive start, Redis ≥ 6.2), counting at
/// most `bound + 1` (enough to tell it is over the bound); `None` when Redis cannot say.
fn lag_counted(con: &mut Redis, stream: &str, last_delivered: &str, bound: Option<u64>) -> Option<u64> {
    let most = bound.map_or(10_000, |b| b.saturating_add(1));
    let ids: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XRANGE")
        .arg(stream)
        .arg(format!("({last_delivered}"))
        .arg("+")
        .arg("COUNT")
        .arg(most)
        .query(con);
    ids.ok().map(|ids| ids.len() as u64)
}

/// The stream's figures; where Redis has lost count of the lag (Redis < 7, or an entry
/// deleted past the group's position) and `--max-lag` needs it, the lag counted here.
fn check_stream(
    con: &mut Redis,
    stream: &str,
    group_name: &str,
    limits: Thresholds,
) -> Result<StreamFigures, broker::BrokerError> {
    let mut s = group::stream_figures(con, stream, group_name, jiff::Timestamp::now())?;
    if let (None, Some(last_delivered)) = (s.lag, s.last_delivered.as_deref()) {
        if limits.max_lag.is_some() {
            s.lag = lag_counted(con, stream, last_delivered, limits.max_lag);
        }
    }
    Ok(s)
}

fn check_postgres(url: &SecretUrl, tls: &PostgresTlsSettings) -> PostgresCheck {
    // One connection, its wait bounded by the connect timeout (not a pool's retries).
    let connected = pool::Postgres::new(url, tls).and_then(|p| p.connect());
    let mut client = match connected {
        Ok(c) => c,
        Err(e) => return PostgresCheck::Unreachable(e.to_string()),
    };
    match migrate::schema_state(&mut client) {
        Ok((applied, missing)) => PostgresCheck::Schema { applied, missing },
        Err(e) => PostgresCheck::Unreachable(e.to_string()),
    }
}

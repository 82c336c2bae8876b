//! `streamsink check`: one-shot health for a shell or a monitoring agent (the checks are
//! `streamsink::observe::check`). Needs Redis; Postgres only if `DATABASE_URL` is set.
//!
//! Exit codes: 0 healthy, 1 unhealthy (a service unreachable, a group missing, migrations
//! behind, a threshold passed), 2 a bad flag or setting.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use streamsink::config::{GroupSettings, OptionalPostgresSettings, RedisSettings};
use streamsink::observe::check::{self, Thresholds};

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    redis: RedisSettings,
    #[command(flatten)]
    postgres: OptionalPostgresSettings,
    #[command(flatten)]
    group: GroupSettings,
    /// Unhealthy when a stream's lag (entries not yet delivered to the group) is over N.
    #[arg(long, value_name = "N")]
    max_lag: Option<u64>,
    /// Unhealthy when a stream's oldest pending entry is older than this (30s, 5m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = super::duration)]
    max_pending_age: Option<Duration>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn execute(args: CheckArgs) -> ExitCode {
    let database_url = args.postgres.database_url();
    let settings = args.redis.check().and_then(|()| match database_url {
        Some(url) => args.postgres.tls.check(url),
        None => Ok(()),
    });
    if let Err(refused) = settings {
        return super::refused(&refused);
    }
    let limits = Thresholds { max_lag: args.max_lag, max_pending_age: args.max_pending_age };
    let postgres = database_url.map(|url| (url, &args.postgres.tls));
    let report = check::check(&args.redis, postgres, &args.group, limits);
    super::print(&report, args.json);
    if report.healthy() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

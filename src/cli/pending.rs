//! `streamsink pending`: a group's pending entries with their consumer, idle time, deliveries
//! and last recorded error (`streamsink::operate::pending`). Needs Redis only.
//!
//! Exit codes: 0 listed (none is a list), 1 Redis failed or the group does not exist, 2 a bad
//! flag or setting.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use streamsink::config::{GroupName, RedisSettings};
use streamsink::operate::pending::{self, Query};

#[derive(Args)]
pub struct PendingArgs {
    #[command(flatten)]
    redis: RedisSettings,
    /// `STREAMSINK_GROUP`.
    #[command(flatten)]
    group: GroupName,
    /// The stream whose pending entries to list (events:{0..15}: every shard, merged oldest first).
    #[arg(long, value_name = "STREAM", value_parser = super::streams_name)]
    stream: String,
    /// Only this consumer's entries.
    #[arg(long, value_name = "NAME")]
    consumer: Option<String>,
    /// Only entries idle at least this long (30s, 5m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = super::duration)]
    min_idle: Option<Duration>,
    /// At most this many entries, oldest first.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = super::count)]
    limit: u64,
    /// Print the list as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Lists and prints the pending entries; exit 0 once printed, 1 if Redis fails or the group is missing.
pub fn execute(args: PendingArgs) -> ExitCode {
    if let Err(refused) = args.redis.check() {
        return super::refused(&refused);
    }
    let query = Query {
        stream: &args.stream,
        group: &args.group,
        consumer: args.consumer.as_deref(),
        min_idle: args.min_idle,
        limit: usize::try_from(args.limit).unwrap_or(usize::MAX),
    };
    let streams = super::expand_streams(std::slice::from_ref(&args.stream));
    let listed = match streams.as_slice() {
        [one] if *one == args.stream => pending::pending(&args.redis, &query),
        shards => pending::pending_of_shards(&args.redis, &args.stream, shards, &query),
    };
    match listed {
        Ok(report) => {
            super::print(&report, args.json);
            ExitCode::SUCCESS
        }
        Err(e) => super::failed(&e),
    }
}

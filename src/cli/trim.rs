//! `streamsink trim`: trims one stream by age or length, never past an entry a group still
//! needs (`streamsink::operate::trim`). Redis only.
//!
//! Exit codes: 0 trimmed (or nothing to trim, or no such stream: a cron'd trim of a
//! dead-letter stream that never had a dead letter is not a failure), 1 Redis failed, refused
//! (older than 6.2) or the key is not a stream, 2 a bad flag or setting.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use streamsink::config::RedisSettings;
use streamsink::operate::PerShard;
use streamsink::operate::trim::{self, Options, Target};

#[derive(Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["max_age", "maxlen"]))]
pub struct TrimArgs {
    #[command(flatten)]
    redis: RedisSettings,
    /// The stream to trim (a dead-letter stream <stream>:dlq too); events:{0..15}: each shard, to the same target (--maxlen: N per shard).
    #[arg(long, value_name = "STREAM", value_parser = super::streams_name)]
    stream: String,
    /// Remove entries whose id time is older than this (30d, 12h).
    #[arg(long, value_name = "DURATION", value_parser = super::duration)]
    max_age: Option<Duration>,
    /// Keep the newest N entries, remove the older ones.
    #[arg(long, value_name = "N")]
    maxlen: Option<u64>,
    /// Say how many entries would be removed, and why some are kept; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Remove whole macro-nodes only (XTRIM ~): cheaper for Redis, may keep a few more entries.
    #[arg(long)]
    approximate: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `streamsink trim`: prints the report (or `--json`), exit 0; one line and exit 1 on a
/// failure; exit 2 for bad settings.
pub fn execute(args: TrimArgs) -> ExitCode {
    if let Err(refused) = args.redis.check() {
        return super::refused(&refused);
    }
    let target = match (args.max_age, args.maxlen) {
        (Some(age), _) => Target::MaxAge(age),
        (None, Some(n)) => Target::MaxLen(n),
        (None, None) => unreachable!("clap requires --max-age or --maxlen"),
    };
    let options = Options { dry_run: args.dry_run, approximate: args.approximate };
    let streams = super::expand_streams(std::slice::from_ref(&args.stream));
    if let [one] = streams.as_slice()
        && *one == args.stream
    {
        return match trim::trim(&args.redis, &args.stream, target, options) {
            Ok(report) => {
                super::print(&report, args.json);
                ExitCode::SUCCESS
            }
            Err(e) => super::failed(&e),
        };
    }
    // Shard by shard; a failure stops there, after printing what was done.
    let mut done = PerShard(Vec::with_capacity(streams.len()));
    for stream in &streams {
        match trim::trim(&args.redis, stream, target, options) {
            Ok(report) => done.0.push(report),
            Err(e) => {
                super::print(&done, args.json);
                return super::failed(&e);
            }
        }
    }
    super::print(&done, args.json);
    ExitCode::SUCCESS
}

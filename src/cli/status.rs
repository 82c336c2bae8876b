//! `streamsink status`: each stream's length and time span, its groups and consumers, its dead
//! letters (`streamsink::operate::status`). Needs Redis only.
//!
//! Exit codes: 0 reported (a stream that does not exist is reported as such), 1 Redis failed,
//! 2 a bad flag or setting.

use std::process::ExitCode;

use clap::Args;
use streamsink::config::{RedisSettings, StreamsSettings};
use streamsink::operate::status;

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    redis: RedisSettings,
    /// A stream to report on (repeat for several; events:{0..15} for shards) [default: the streams of STREAMSINK_STREAMS]
    #[arg(long = "stream", value_name = "STREAM", value_parser = super::streams_name)]
    only: Vec<String>,
    /// `STREAMSINK_STREAMS`: the default when no --stream is given.
    #[command(flatten)]
    streams: StreamsSettings,
    /// Print one JSON object per stream, in an array.
    #[arg(long)]
    json: bool,
}

/// Reads and prints the status; exit 0 once printed (missing streams included), 1 if Redis fails.
pub fn execute(args: StatusArgs) -> ExitCode {
    if let Err(refused) = args.redis.check() {
        return super::refused(&refused);
    }
    let streams =
        if args.only.is_empty() { args.streams.to_vec() } else { super::expand_streams(&args.only) };
    match status::status(&args.redis, &streams) {
        Ok(report) => {
            super::print(&report, args.json);
            ExitCode::SUCCESS
        }
        Err(e) => super::failed(&e),
    }
}

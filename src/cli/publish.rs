//! `streamsink publish`: JSON lines from a file or stdin onto a stream, as the worker's
//! envelopes (`streamsink::operate::publish`). Needs Redis only.
//!
//! Exit codes: 0 every line published, 1 a line failed (listed with its number), the input
//! could not be read or Redis failed, 2 a bad flag or setting.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use streamsink::broker::shard;
use streamsink::config::{EventFieldSettings, RedisSettings};
use streamsink::operate::{self, OperateError, publish};

#[derive(Args)]
pub struct PublishArgs {
    #[command(flatten)]
    redis: RedisSettings,
    #[command(flatten)]
    event_field: EventFieldSettings,
    /// Stream to publish to.
    #[arg(long, value_name = "STREAM", value_parser = super::stream_name)]
    stream: String,
    /// Keep the stream at about N entries (XADD MAXLEN ~ N); blind to consumer groups, so it can drop entries not yet delivered: prefer STREAMSINK_RETENTION or streamsink trim [default: no cap].
    #[arg(long, value_name = "N")]
    maxlen: Option<u64>,
    /// Spread the events over N shards of STREAM: each to STREAM:{crc32(id) mod N} (zlib's crc32; the whole line for an event without id); read them with STREAMSINK_STREAMS=STREAM:{0..N-1}.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(shard::MAX_SHARDS)))]
    shards: Option<u32>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// JSON lines, one event (a JSON object) per line; - or none: standard input.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
}

/// Publishes the input and prints the tally; exit 0 when every line was published, 1 otherwise.
pub fn execute(args: PublishArgs) -> ExitCode {
    if let Err(refused) = args.redis.check() {
        return super::refused(&refused);
    }
    let stdin = std::io::stdin();
    let (mut input, what): (Box<dyn BufRead>, String) = match &args.file {
        Some(path) if path.as_os_str() != "-" => match std::fs::File::open(path) {
            Ok(file) => (Box::new(std::io::BufReader::new(file)), path.display().to_string()),
            Err(source) => {
                return super::failed(&OperateError::Read { what: path.display().to_string(), source });
            }
        },
        _ => (Box::new(stdin.lock()), "standard input".to_string()),
    };
    let mut con = match operate::connect(&args.redis) {
        Ok(con) => con,
        Err(e) => return super::failed(&e),
    };
    let options = publish::Options {
        stream: args.stream,
        event_field: args.event_field.event_field,
        maxlen: args.maxlen,
        shards: args.shards,
    };
    let report = publish::publish(&mut con, &mut input, &what, &options);
    super::print(&report, args.json);
    if report.complete() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

//! `streamsink backfill`: a time range of a stream written to Postgres again, outside the
//! consumer group (`streamsink::operate::backfill`). Needs Redis and Postgres.
//!
//! Progress goes to stderr only when stderr is a terminal; the summary goes to stdout.
//! Exit codes: 0 the range was read to its end (malformed or rejected entries are counted in
//! the summary, not failures: the worker dead-letters the same ones), 1 Redis or Postgres
//! failed (a rerun is safe: what was written comes back as duplicates), 2 a bad flag or setting.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use streamsink::config::{EventFieldSettings, PostgresSettings, RedisSettings};
use streamsink::operate::backfill::{self, Progress, Total};
use streamsink::operate::{self};

#[derive(Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    redis: RedisSettings,
    #[command(flatten)]
    postgres: PostgresSettings,
    #[command(flatten)]
    event_field: EventFieldSettings,
    /// Stream to read (by entry-id time; its consumer groups are not touched).
    #[arg(long, value_name = "STREAM", value_parser = super::stream_name)]
    stream: String,
    /// Entries from this time: RFC 3339 (2026-12-01T10:00:00Z) or a duration before now (2h, 7d).
    #[arg(long, value_name = "TIME", value_parser = super::time)]
    since: jiff::Timestamp,
    /// Entries up to this time, same forms as --since [default: to the stream's end].
    #[arg(long, value_name = "TIME", value_parser = super::time)]
    until: Option<jiff::Timestamp>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Backfills the range and prints the summary; exit 0 when it ran to the end (malformed and
/// rejected entries included: the worker dead-lettered them), 1 when Redis or Postgres failed.
pub fn execute(args: BackfillArgs) -> ExitCode {
    let checked = args.redis.check().and_then(|()| args.postgres.check());
    if let Err(refused) = checked.and_then(|()| super::time_range(Some(args.since), args.until)) {
        return super::refused(&refused);
    }
    let mut con = match operate::connect(&args.redis) {
        Ok(con) => con,
        Err(e) => return super::failed(&e),
    };
    let request = backfill::Request {
        stream: args.stream,
        since: args.since,
        until: args.until,
        event_field: args.event_field.event_field,
    };
    let mut line = ProgressLine::default();
    let mut draw = |p: &Progress| line.draw(p);
    let progress: Option<&mut dyn FnMut(&Progress)> =
        if std::io::stderr().is_terminal() { Some(&mut draw) } else { None };
    let result = backfill::backfill(&mut con, &args.postgres, &request, progress);
    line.clear();
    match result {
        Ok(report) => {
            super::print(&report, args.json);
            ExitCode::SUCCESS
        }
        Err(e) => super::failed(&e),
    }
}

/// The `\r` progress line on a terminal: at most five redraws a second.
#[derive(Default)]
struct ProgressLine {
    drawn: Option<Instant>,
}

impl ProgressLine {
    fn draw(&mut self, p: &Progress) {
        if self.drawn.is_some_and(|at| at.elapsed() < Duration::from_millis(200)) {
            return;
        }
        self.drawn = Some(Instant::now());
        let total = match p.total {
            Total::Exact(n) => n.max(p.done).to_string(),
            Total::About(n) => format!("~{}", n.max(p.done)),
        };
        let secs = p.elapsed.as_secs_f64();
        let rate = if secs > 0.0 { p.done as f64 / secs } else { 0.0 };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[Kbackfill: {}/{total} entries, {rate:.0} entries/s", p.done);
        let _ = err.flush();
    }

    /// Erases the line, so the summary and any error start on a clean line.
    fn clear(&self) {
        if self.drawn.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

//! The `streamsink` command: parses the command line, then hands over to the library.
//!
//! Exit codes: 0 after a clean stop; 1 when the worker fails; 2 for a bad flag or setting
//! (one line on stderr, before anything connects); 130 on a second stop signal.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};
use streamsink::{
    Config, Pipeline, PipelineError, Purpose, RawSettings, Registry, config::mask_url, logging, store,
};

#[derive(Parser)]
#[command(
    name = "streamsink",
    version,
    about = "Drains Redis Streams into PostgreSQL: each event takes effect exactly once.",
    after_help = "Every flag can also be set through the environment variable shown \
                  (what a systemd EnvironmentFile= provides); a flag overrides its variable."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    settings: SettingsArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker until SIGTERM/SIGINT.
    Run,
    /// Apply the schema migrations and exit.
    Migrate,
}

#[derive(Args)]
struct SettingsArgs {
    /// Redis URL (redis://[:password@]host:port[/db]). Required for `run`.
    #[arg(long, env = "REDIS_URL", value_name = "URL", global = true, hide_env_values = true)]
    redis_url: Option<String>,
    /// PostgreSQL URL (postgres://user[:password]@host:port/db). Required.
    #[arg(long, env = "DATABASE_URL", value_name = "URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// Comma-separated streams to read [default: events:incoming]
    #[arg(long, env = "STREAMSINK_STREAMS", value_name = "LIST", global = true)]
    streams: Option<String>,
    /// Consumer group [default: event-processors]
    #[arg(long, env = "STREAMSINK_GROUP", value_name = "NAME", global = true)]
    group: Option<String>,
    /// Consumer name within the group [default: <hostname>-<pid>]
    #[arg(long, env = "STREAMSINK_CONSUMER", value_name = "NAME", global = true)]
    consumer: Option<String>,
    /// Worker threads writing to Postgres [default: 4]
    #[arg(long, env = "STREAMSINK_WORKERS", value_name = "N", global = true)]
    workers: Option<String>,
    /// Entries per read (XREADGROUP COUNT) [default: 1000]
    #[arg(long, env = "STREAMSINK_BATCH", value_name = "N", global = true)]
    batch: Option<String>,
    /// How long one read waits for new entries (XREADGROUP BLOCK) [default: 5s]
    #[arg(long, env = "STREAMSINK_BLOCK", value_name = "DURATION", global = true)]
    block: Option<String>,
    /// Interval between stats lines [default: 60s]
    #[arg(long, env = "STREAMSINK_STATS_INTERVAL", value_name = "DURATION", global = true)]
    stats_interval: Option<String>,
    /// Where a newly created group starts: 0 (all entries) or $ (new only) [default: 0]
    #[arg(long, env = "STREAMSINK_GROUP_START", value_name = "ID", global = true)]
    group_start: Option<String>,
    /// Stream field holding a JSON envelope [default: event]
    #[arg(long, env = "STREAMSINK_EVENT_FIELD", value_name = "NAME", global = true)]
    event_field: Option<String>,
    /// How often stuck entries are reclaimed (XAUTOCLAIM) [default: 30s]
    #[arg(long, env = "STREAMSINK_CLAIM_INTERVAL", value_name = "DURATION", global = true)]
    claim_interval: Option<String>,
    /// How long an entry sits unacknowledged before it is reclaimed [default: 60s]
    #[arg(long, env = "STREAMSINK_CLAIM_MIN_IDLE", value_name = "DURATION", global = true)]
    claim_min_idle: Option<String>,
    /// Deliveries after which an entry is dead-lettered [default: 3]
    #[arg(long, env = "STREAMSINK_MAX_DELIVERIES", value_name = "N", global = true)]
    max_deliveries: Option<String>,
    /// Idle time after which a consumer with nothing pending is deleted [default: 1h]
    #[arg(long, env = "STREAMSINK_CONSUMER_PRUNE_IDLE", value_name = "DURATION", global = true)]
    consumer_prune_idle: Option<String>,
    /// Benchmark baseline only: one transaction and one XACK per event [default: false]
    #[arg(long, env = "STREAMSINK_PER_EVENT", value_name = "BOOL", global = true)]
    per_event: Option<String>,
}

impl From<SettingsArgs> for RawSettings {
    fn from(a: SettingsArgs) -> RawSettings {
        RawSettings {
            redis_url: a.redis_url,
            database_url: a.database_url,
            streams: a.streams,
            group: a.group,
            consumer: a.consumer,
            workers: a.workers,
            batch: a.batch,
            block: a.block,
            stats_interval: a.stats_interval,
            group_start: a.group_start,
            event_field: a.event_field,
            claim_interval: a.claim_interval,
            claim_min_idle: a.claim_min_idle,
            max_deliveries: a.max_deliveries,
            consumer_prune_idle: a.consumer_prune_idle,
            per_event: a.per_event,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One readable line, not clap's multi-line usage block.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("streamsink: {first} (see streamsink --help)");
            return ExitCode::from(2);
        }
    };
    let purpose = match cli.command {
        Command::Run => Purpose::Run,
        Command::Migrate => Purpose::Migrate,
    };
    let config = match Config::from_raw(cli.settings.into(), purpose) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streamsink: invalid setting {e}");
            return ExitCode::from(2);
        }
    };
    logging::init();
    let result = match purpose {
        Purpose::Run => run(&config),
        Purpose::Migrate => migrate(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = Arc::clone(&stop);
    ctrlc::set_handler(move || {
        if on_signal.swap(true, Ordering::SeqCst) {
            eprintln!("streamsink: second stop signal, exiting now; unacknowledged entries stay pending");
            std::process::exit(130);
        }
        log::info!("stop signal received: finishing in-flight batches (signal again to exit at once)");
    })?;
    log::info!("streamsink {} starting", env!("CARGO_PKG_VERSION"));
    let pipeline = match Pipeline::start(config, Registry::builtin(), stop) {
        Ok(p) => p,
        Err(PipelineError::Stopped) => {
            log::info!("stopped during start-up");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    pipeline.wait()?;
    log::info!("stopped cleanly");
    Ok(())
}

fn migrate(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    log::info!("migrating {}", mask_url(&config.database_url));
    let pool = store::pool(&config.database_url, 1)?;
    let mut client = pool.get().map_err(store::StoreError::Connect)?;
    let applied = store::migrate(&mut client)?;
    if applied.is_empty() {
        log::info!("schema is up to date");
    } else {
        log::info!("applied migrations {applied:?}");
    }
    Ok(())
}

//! The `streamsink` command: reads the command line and hands each subcommand to its module
//! in `cli/`. Nothing else happens here.
//!
//! Exit codes: 0 after a clean stop; 1 when the command fails; 2 for a bad flag or setting
//! (one line on stderr, before anything connects); 130 on a second stop signal.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "streamsink",
    version,
    about = "Drains Redis Streams into PostgreSQL: each event takes effect exactly once.",
    after_help = "Each command's settings: streamsink <COMMAND> --help. Every flag can also be set \
                  through the environment variable shown (what a systemd EnvironmentFile= \
                  provides); a flag overrides its variable."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker until SIGTERM/SIGINT.
    Run(Box<cli::run::RunArgs>),
    /// Apply the schema migrations and exit.
    Migrate(cli::migrate::MigrateArgs),
    /// Check Redis, Postgres and every stream's group once; exit 0 healthy, 1 unhealthy.
    Check(Box<cli::check::CheckArgs>),
    /// Show each stream: its length and time span, every group's consumers, pending and lag,
    /// and its dead letters.
    Status(Box<cli::status::StatusArgs>),
    /// List a group's pending entries: consumer, idle time, deliveries, last error.
    Pending(Box<cli::pending::PendingArgs>),
    /// Inspect, replay or purge a stream's dead letters (<stream>:dlq).
    Dlq(Box<cli::dlq::DlqArgs>),
    /// Publish JSON lines (a file or stdin) as events, in pipelined batches.
    Publish(Box<cli::publish::PublishArgs>),
    /// Write a time range of a stream to Postgres again, outside the consumer group.
    Backfill(Box<cli::backfill::BackfillArgs>),
    /// Trim a stream by age or length, never past an entry a group still needs.
    Trim(Box<cli::trim::TrimArgs>),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::bad_command_line(e, &Cli::command()),
    };
    match cli.command {
        Command::Run(args) => cli::run::execute(*args),
        Command::Migrate(args) => cli::migrate::execute(args),
        Command::Check(args) => cli::check::execute(*args),
        Command::Status(args) => cli::status::execute(*args),
        Command::Pending(args) => cli::pending::execute(*args),
        Command::Dlq(args) => cli::dlq::execute(*args),
        Command::Publish(args) => cli::publish::execute(*args),
        Command::Backfill(args) => cli::backfill::execute(*args),
        Command::Trim(args) => cli::trim::execute(*args),
    }
}

//! `streamsink dlq list|show|replay|purge`: a stream's dead letters (`<stream>:dlq`), read and
//! moved by `streamsink::operate::dlq`. Needs Redis only.
//!
//! Exit codes: 0 done; 1 a failure, a dead letter not found (`show`, or an id given to
//! `replay`/`purge`) or one left in place; 2 a bad flag or setting.

use std::process::ExitCode;

use clap::{ArgGroup, Args, Subcommand};
use jiff::Timestamp;
use streamsink::config::{RedisSettings, SettingsError};
use streamsink::operate::dlq::{self, Action, Filter, Interrupted, Moved, Selection};

#[derive(Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters, oldest first: id, failed at, reason, error, original id, deliveries.
    List(ListArgs),
    /// Print one dead letter with all its fields.
    Show(ShowArgs),
    /// Put dead letters back on their stream (original fields; dlq_* fields removed), each
    /// moved atomically.
    Replay(SelectArgs),
    /// Delete dead letters.
    Purge(SelectArgs),
}

/// Redis and the stream whose dead letters are meant.
#[derive(Args)]
struct Target {
    #[command(flatten)]
    redis: RedisSettings,
    /// The stream whose dead letters (in <STREAM>:dlq) are meant; events:{0..15}: every shard's
    /// (list, replay and purge, not ids).
    #[arg(long, value_name = "STREAM", value_parser = super::streams_name)]
    stream: String,
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    filter: FilterArgs,
    /// Show at most N dead letters (default 100); the output says when more match.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = super::count)]
    limit: u64,
    /// Print the list as one JSON object (errors whole).
    #[arg(long)]
    json: bool,
}

/// Which dead letters, by reason and by the time they were dead-lettered (their entry id); the
/// three combine (`list`, and `replay`/`purge` without `--all` or ids).
#[derive(Args)]
struct FilterArgs {
    /// Only dead letters of this reason (as the reason column shows it).
    #[arg(long, value_name = "REASON")]
    reason: Option<String>,
    /// Only those dead-lettered at or after: an RFC 3339 time or a duration before now (2h, 7d).
    #[arg(long, value_name = "TIME", value_parser = super::time)]
    since: Option<Timestamp>,
    /// Only those dead-lettered at or before: an RFC 3339 time or a duration before now.
    #[arg(long, value_name = "TIME", value_parser = super::time)]
    until: Option<Timestamp>,
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        Filter { reason: self.reason.clone(), since: self.since, until: self.until }
    }
}

#[derive(Args)]
struct ShowArgs {
    #[command(flatten)]
    target: Target,
    /// The dead letter's id (as `dlq list` shows it: <ms>-<seq>).
    #[arg(value_name = "ID", value_parser = entry_id)]
    id: String,
    /// Print the dead letter as one JSON object.
    #[arg(long)]
    json: bool,
}

// Exactly one kind of selection: `--all`, ids, or `--reason` and/or `--since`/`--until`.
#[derive(Args)]
#[command(group(ArgGroup::new("selection").required(true).multiple(true).args(["all", "ids", "reason", "since", "until"])))]
struct SelectArgs {
    #[command(flatten)]
    target: Target,
    /// Every dead letter of the stream (those there when the command starts).
    #[arg(long, conflicts_with_all = ["ids", "reason", "since", "until"])]
    all: bool,
    /// These dead letters (ids as `dlq list` shows them: <ms>-<seq>).
    #[arg(value_name = "ID", value_parser = entry_id, conflicts_with_all = ["reason", "since", "until"])]
    ids: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Say which dead letters would be affected (count and ids); change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
}

impl SelectArgs {
    fn selection(&self) -> Selection {
        if self.all {
            Selection::All
        } else if !self.ids.is_empty() {
            Selection::Ids(self.ids.clone())
        } else {
            Selection::Matching(self.filter.filter())
        }
    }
}

/// Runs one `dlq` subcommand: settings checked first (exit 2), then its report or one line (exit 1).
pub fn execute(args: DlqArgs) -> ExitCode {
    let (target, since, until) = match &args.command {
        DlqCommand::List(a) => (&a.target, a.filter.since, a.filter.until),
        DlqCommand::Show(a) => (&a.target, None, None),
        DlqCommand::Replay(a) | DlqCommand::Purge(a) => (&a.target, a.filter.since, a.filter.until),
    };
    if let Err(refused) = target.redis.check().and_then(|()| super::time_range(since, until)) {
        return super::refused(&refused);
    }
    // A shard range (`events:{0..15}`) stands for its shards.
    let shards = super::expand_streams(std::slice::from_ref(&target.stream));
    let shards = (shards.len() > 1 || shards[0] != target.stream).then_some(shards);
    match args.command {
        DlqCommand::List(a) => {
            let filter = a.filter.filter();
            let limit = usize::try_from(a.limit).unwrap_or(usize::MAX);
            let (redis, stream) = (&a.target.redis, &a.target.stream);
            let listed = match &shards {
                Some(shards) => dlq::list_of_shards(redis, stream, shards, &filter, limit),
                None => dlq::list(redis, stream, &filter, limit),
            };
            match listed {
                Ok(listed) => {
                    super::print(&listed, a.json);
                    ExitCode::SUCCESS
                }
                Err(e) => super::failed(&e),
            }
        }
        DlqCommand::Show(_) if shards.is_some() => {
            let e = clap::Error::raw(
                clap::error::ErrorKind::ArgumentConflict,
                "dlq show reads one dead letter: give --stream the one shard it is on, not a range\n",
            );
            super::refused(&SettingsError::new(&e, &clap::Command::new("streamsink")))
        }
        DlqCommand::Show(a) => match dlq::show(&a.target.redis, &a.target.stream, &a.id) {
            Ok(shown) => {
                super::print(&shown, a.json);
                ExitCode::SUCCESS
            }
            Err(e) => super::failed(&e),
        },
        DlqCommand::Replay(a) if shards.is_some() => on_shards(&a, shards, Action::Replay),
        DlqCommand::Purge(a) if shards.is_some() => on_shards(&a, shards, Action::Purge),
        DlqCommand::Replay(a) => {
            moved(dlq::replay(&a.target.redis, &a.target.stream, &a.selection(), a.dry_run), a.json)
        }
        DlqCommand::Purge(a) => {
            moved(dlq::purge(&a.target.redis, &a.target.stream, &a.selection(), a.dry_run), a.json)
        }
    }
}

/// A replay or purge over the shards of a logical stream.
fn on_shards(a: &SelectArgs, shards: Option<Vec<String>>, action: Action) -> ExitCode {
    let shards = shards.unwrap_or_default();
    let (redis, stream) = (&a.target.redis, &a.target.stream);
    moved(dlq::act_on_shards(redis, stream, &shards, &a.selection(), a.dry_run, action), a.json)
}

/// Prints a replay's or purge's outcome: exit 1 when a dead letter asked for was not found or
/// was left in place (the output says which), or on a failure (one line, with how many were
/// replayed or purged before it).
fn moved(outcome: Result<Moved, Interrupted>, json: bool) -> ExitCode {
    match outcome {
        Ok(moved) => {
            super::print(&moved, json);
            if moved.complete() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => super::failed(&e),
    }
}

/// A dead letter's id: `<ms>-<seq>` in full.
fn entry_id(value: &str) -> Result<String, String> {
    dlq::entry_id(value).map(|_| value.to_string()).ok_or_else(|| {
        format!("'{value}' is not an entry id: give it in full, <ms>-<seq> (as dlq list shows it)")
    })
}

//! The subcommands, one file per family. Each declares only the settings it needs (by
//! flattening groups from `streamsink::config`) and turns its outcome into an exit code.
//!
//! Where to add a subcommand: a file here with its `Args` struct and `execute`, and one
//! variant in `main.rs`'s `Command`.

pub mod backfill;
pub mod check;
pub mod dlq;
pub mod migrate;
pub mod pending;
pub mod publish;
pub mod run;
pub mod status;
pub mod trim;

use std::io::Write;
use std::process::ExitCode;

use log::Level;
use streamsink::config::SettingsError;
use streamsink::observe::logging;
use streamsink::operate::Report;

/// Exit code of a bad flag or setting: systemd's `RestartPreventExitStatus=2` keeps a unit
/// that cannot start from restarting forever.
const BAD_SETTING: u8 = 2;

/// Reports a command line clap refused, in one line on stderr (`config::SettingsError`), and
/// returns the exit code. `--help` and `--version` print as usual and exit 0.
pub fn bad_command_line(e: clap::Error, cli: &clap::Command) -> ExitCode {
    if !e.use_stderr() {
        e.exit(); // --help, --version
    }
    refused(&SettingsError::new(&e, cli))
}

/// Reports settings refused after the command line was read (`Config::check` and its kin: TLS
/// settings that cannot work together) like a refused command line: one line, exit code 2.
pub fn refused(refused: &SettingsError) -> ExitCode {
    logging::last_words(Level::Error, &format_args!("{refused} (see streamsink --help)"));
    ExitCode::from(BAD_SETTING)
}

/// Reports a command's failure at error priority (`logging::last_words`, so the journal files
/// it under the unit) and returns exit code 1, on which systemd restarts the unit.
fn failed(e: &dyn std::error::Error) -> ExitCode {
    logging::last_words(Level::Error, e);
    ExitCode::FAILURE
}

/// Prints `report` on stdout, as JSON with `--json`, else as its table. A reader that stops
/// early (`| head`, `| grep -q`) is not a failure of the command.
fn print(report: &impl Report, json: bool) {
    let mut out = std::io::stdout().lock();
    let _ = if json { writeln!(out, "{}", report.to_json()) } else { write!(out, "{report}") };
}

/// `--since`/`--until`: an RFC 3339 time (2026-12-01T10:00:00Z) or a duration before now (2h, 7d).
fn time(value: &str) -> Result<jiff::Timestamp, String> {
    streamsink::config::parse_time(value, jiff::Timestamp::now()).ok_or_else(|| {
        format!("'{value}' is not a time: give an RFC 3339 time (2026-12-01T10:00:00Z) or a duration before now (2h, 7d)")
    })
}

/// `--since` with `--until`: refused (one line, exit code 2 through [`refused`]) when `until`
/// is before `since`, a range nothing can be in, rather than reported as finding nothing.
fn time_range(since: Option<jiff::Timestamp>, until: Option<jiff::Timestamp>) -> Result<(), SettingsError> {
    match since.zip(until) {
        Some((since, until)) if until < since => {
            let e = clap::Error::raw(
                clap::error::ErrorKind::ArgumentConflict,
                "--until is before --since: the range is empty\n",
            );
            Err(SettingsError::new(&e, &clap::Command::new("streamsink")))
        }
        _ => Ok(()),
    }
}

/// A duration flag (`--min-idle`, `--max-age`): a whole number and a unit.
fn duration(value: &str) -> Result<std::time::Duration, String> {
    streamsink::config::parse_duration(value)
        .ok_or_else(|| format!("'{value}' is not a duration with a unit (like 30s, 5m, 1h, 30d)"))
}

/// A count flag (`--limit`): a whole number, 1 or more (0 would ask for nothing).
fn count(value: &str) -> Result<u64, String> {
    value
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("'{value}' is not a count: give a whole number of 1 or more"))
}

/// `--stream`: a stream name, not blank.
fn stream_name(value: &str) -> Result<String, String> {
    if value.trim().is_empty() { Err("a stream name is required".into()) } else { Ok(value.to_string()) }
}

/// `--stream` of a command that reads several: a stream name, or shards `events:{0..15}`
/// (checked here, expanded by [`expand_streams`]).
fn streams_name(value: &str) -> Result<String, String> {
    streamsink::broker::shard::expand(stream_name(value)?.as_str())?;
    Ok(value.to_string())
}

/// The streams `names` (as [`streams_name`] accepted them) stand for, shard ranges expanded.
fn expand_streams(names: &[String]) -> Vec<String> {
    names
        .iter()
        .flat_map(|n| streamsink::broker::shard::expand(n).unwrap_or_else(|_| vec![n.clone()]))
        .collect()
}

//! The subcommands, one file per family. Each declares only the settings it needs (by
//! flattening groups from `streamsink::config`) and turns its outcome into an exit code.
//!
//! Where to add a subcommand: a file here with its `Args` struct and `execute`, and one
//! variant in `main.rs`'s `Command`.

pub mod check;
pub mod migrate;
pub mod run;

use std::process::ExitCode;

use log::Level;
use streamsink::config::SettingsError;
use streamsink::observe::logging;

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

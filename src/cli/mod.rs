//! The subcommands, one file per family. Each declares only the settings it needs (by
//! flattening groups from `streamsink::config`) and turns its outcome into an exit code.
//!
//! Where to add a subcommand: a file here with its `Args` struct and `execute`, and one
//! variant in `main.rs`'s `Command`.

pub mod migrate;
pub mod run;

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// Exit code of a bad flag or setting: systemd's `RestartPreventExitStatus=2` keeps a unit
/// that cannot start from restarting forever.
const BAD_SETTING: u8 = 2;

/// Reports a command line clap refused, in one line on stderr, and returns the exit code.
/// `--help` and `--version` print as usual and exit 0.
///
/// A bad or missing setting is named by its environment variable and its flag, since an
/// operator may have set either; the value shown is the parser's (URLs masked), never clap's
/// echo of the raw value.
pub fn bad_command_line(e: clap::Error, cli: &clap::Command) -> ExitCode {
    if !e.use_stderr() {
        e.exit(); // --help, --version
    }
    let line = match e.kind() {
        ErrorKind::ValueValidation | ErrorKind::MissingRequiredArgument => {
            let problem = match std::error::Error::source(&e) {
                Some(source) => source.to_string(),
                None => "required but not set".to_string(),
            };
            format!("invalid setting {}: {problem}", setting_name(&e, cli))
        }
        _ => {
            // One readable line, not clap's multi-line usage block.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            first.strip_prefix("error: ").unwrap_or(first).to_string()
        }
    };
    eprintln!("streamsink: {line} (see streamsink --help)");
    ExitCode::from(BAD_SETTING)
}

/// `ENV (--flag)` of the setting an error is about, found among every subcommand's arguments.
fn setting_name(e: &clap::Error, cli: &clap::Command) -> String {
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::Strings(v)) => v.first().cloned().unwrap_or_default(),
        _ => String::new(),
    };
    let flag = arg.split_whitespace().next().unwrap_or_default().to_string();
    let env = cli
        .get_subcommands()
        .flat_map(|sub| sub.get_arguments())
        .find(|a| a.get_long().is_some_and(|long| flag == format!("--{long}")))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned());
    match env {
        Some(env) => format!("{env} ({flag})"),
        None => flag,
    }
}

/// Reports a command's failure through the log (so it carries the journald priority) and
/// returns exit code 1, on which systemd restarts the unit.
fn failed(e: &dyn std::error::Error) -> ExitCode {
    log::error!("{e}");
    ExitCode::FAILURE
}

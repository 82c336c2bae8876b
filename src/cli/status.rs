//! (being built)

use std::process::ExitCode;

use clap::Args;

#[derive(Args)]
pub struct StatusArgs {}

pub fn execute(_args: StatusArgs) -> ExitCode {
    ExitCode::FAILURE
}

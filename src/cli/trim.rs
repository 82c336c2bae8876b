//! (being built)

use std::process::ExitCode;

use clap::Args;

#[derive(Args)]
pub struct TrimArgs {}

pub fn execute(_args: TrimArgs) -> ExitCode {
    ExitCode::FAILURE
}

//! (being built)

use std::process::ExitCode;

use clap::Args;

#[derive(Args)]
pub struct PendingArgs {}

pub fn execute(_args: PendingArgs) -> ExitCode {
    ExitCode::FAILURE
}

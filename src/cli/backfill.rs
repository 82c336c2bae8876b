//! (being built)

use std::process::ExitCode;

use clap::Args;

#[derive(Args)]
pub struct BackfillArgs {}

pub fn execute(_args: BackfillArgs) -> ExitCode {
    ExitCode::FAILURE
}

//! (being built)

use std::process::ExitCode;

use clap::Args;

#[derive(Args)]
pub struct DlqArgs {}

pub fn execute(_args: DlqArgs) -> ExitCode {
    ExitCode::FAILURE
}

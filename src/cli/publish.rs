//! (being built)

use std::process::ExitCode;

use clap::Args;

#[derive(Args)]
pub struct PublishArgs {}

pub fn execute(_args: PublishArgs) -> ExitCode {
    ExitCode::FAILURE
}

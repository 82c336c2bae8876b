//! `streamsink migrate`: applies the schema and exits. Needs Postgres only.

use std::process::ExitCode;

use clap::Args;
use streamsink::config::PostgresSettings;
use streamsink::observe::logging;
use streamsink::sink::migrate;

#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    postgres: PostgresSettings,
}

pub fn execute(args: MigrateArgs) -> ExitCode {
    if let Err(refused) = args.postgres.check() {
        return super::refused(&refused);
    }
    logging::init();
    let url = &args.postgres.database_url;
    log::info!("migrating {url} (TLS {})", args.postgres.tls_mode());
    match migrate::migrate_database(&args.postgres) {
        Ok(applied) if applied.is_empty() => log::info!("schema is up to date"),
        Ok(applied) => log::info!("applied migrations {applied:?}"),
        Err(e) => return super::failed(&e),
    }
    ExitCode::SUCCESS
}

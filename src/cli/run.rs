//! `streamsink run`: the worker, until SIGTERM/SIGINT. Needs Redis and Postgres.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use streamsink::observe::logging;
use streamsink::{Config, Registry, Supervisor, SupervisorError};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: Config,
}

pub fn execute(args: RunArgs) -> ExitCode {
    if let Err(refused) = args.config.check() {
        return super::refused(&refused);
    }
    logging::init();
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = Arc::clone(&stop);
    let handler = ctrlc::set_handler(move || {
        if on_signal.swap(true, Ordering::SeqCst) {
            logging::last_words(
                log::Level::Warn,
                &"second stop signal, exiting now; unacknowledged entries stay pending",
            );
            std::process::exit(130);
        }
        log::info!("stop signal received: finishing in-flight batches (signal again to exit at once)");
    });
    if let Err(e) = handler {
        return super::failed(&e);
    }
    log::info!("streamsink {} starting", env!("CARGO_PKG_VERSION"));
    let result = start(&args.config, stop).and_then(|supervisor| supervisor.wait().map(|_| ()));
    match result {
        Ok(()) => log::info!("stopped cleanly"),
        Err(SupervisorError::Stopped) => log::info!("stopped during start-up"),
        Err(e) => return super::failed(&e),
    }
    ExitCode::SUCCESS
}

/// A production build has no test hooks; asking for them is refused rather than ignored, so
/// a benchmark cannot silently measure the wrong binary.
#[cfg(not(feature = "test-hooks"))]
fn start(config: &Config, stop: Arc<AtomicBool>) -> Result<Supervisor, SupervisorError> {
    if std::env::var_os("STREAMSINK_TEST_HOOKS").is_some() {
        logging::last_words(
            log::Level::Error,
            &"STREAMSINK_TEST_HOOKS is set, but this build has no test hooks (cargo build --features test-hooks)",
        );
        std::process::exit(2);
    }
    Supervisor::start(config, Registry::builtin(), stop)
}

/// A `test-hooks` build (the benchmark's) reads `STREAMSINK_TEST_HOOKS`.
#[cfg(feature = "test-hooks")]
fn start(config: &Config, stop: Arc<AtomicBool>) -> Result<Supervisor, SupervisorError> {
    match streamsink::hooks::Hooks::from_env() {
        Ok(hooks) => Supervisor::start_hooked(config, Registry::builtin(), stop, hooks),
        Err(e) => {
            logging::last_words(log::Level::Error, &e);
            std::process::exit(2);
        }
    }
}

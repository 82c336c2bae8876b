//! Log setup: stderr, level from `RUST_LOG` (default `info`).
//!
//! Under systemd (`JOURNAL_STREAM` set) every line starts with the syslog priority `<N>` and
//! carries no timestamp of its own (the journal stamps it), so `journalctl -p warning` works.

use std::io::Write;

use log::Level;

/// The syslog priority journald reads from a `<N>` line prefix.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Installs the global logger; call once, first thing in `main`.
pub fn init() {
    let env = env_logger::Env::default().default_filter_or("info");
    let mut builder = env_logger::Builder::from_env(env);
    builder.target(env_logger::Target::Stderr);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.format(|buf, record| {
            writeln!(buf, "<{}>{}: {}", syslog_priority(record.level()), record.target(), record.args())
        });
    }
    builder.init();
}

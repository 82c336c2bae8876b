//! Log setup: level and targets from `RUST_LOG` (default `info`), wherever the lines go.
//!
//! - Under systemd, when stderr *is* the journal stream (`JOURNAL_STREAM` names stderr's device
//!   and inode), records go to journald natively: priority, message and the record's key-values
//!   as fields (`stream`, `entry_id`, `event_id` become `STREAM=`, `ENTRY_ID=`, `EVENT_ID=`), so
//!   `journalctl -u streamsink -p warning` and `journalctl STREAM=events:incoming` work.
//! - Anywhere else (a terminal, a test, stderr redirected by a unit to a file): env_logger on
//!   stderr as before, key-values appended to the line.
//!
//! Invariants: priorities are DESIGN.md's (error 3, warning 4, info 6, debug and trace 7) on
//! every path; a record the journal refuses is not dropped but written to stderr with its `<N>`
//! prefix, which journald reads from a stream line too; the last line before an exit goes down
//! the stream ([`last_words`]).

use std::fmt::Display;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use log::kv::{Key, Value, VisitSource};
use log::{Level, Log, Metadata, Record};
use systemd_journal_logger::JournalLog;

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The syslog priority journald reads from a `<N>` line prefix.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// A record's key-values as ` key=value` pairs, for lines that are not journal records.
fn fields(record: &Record<'_>) -> String {
    struct Pairs(String);
    impl<'kvs> VisitSource<'kvs> for Pairs {
        fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
            self.0.push_str(&format!(" {key}={value}"));
            Ok(())
        }
    }
    let mut pairs = Pairs(String::new());
    let _ = record.key_values().visit(&mut pairs);
    pairs.0
}

/// One stderr line journald files at the record's priority.
fn prefixed_line(record: &Record<'_>) -> String {
    format!("<{}>{}: {}{}", syslog_priority(record.level()), record.target(), record.args(), fields(record))
}

/// Journal records, filtered by `RUST_LOG` exactly as env_logger filters them.
struct Journald {
    filter: env_logger::Logger,
    journal: JournalLog,
}

impl Log for Journald {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        // systemd-journal-logger maps info to notice (5) and debug to info (6); ours are the
        // priorities of the `<N>` prefix (info 6, debug 7), as DESIGN.md states: re-level the
        // record one step down for info and debug.
        let level = match record.level() {
            Level::Info => Level::Debug,
            Level::Debug => Level::Trace,
            other => other,
        };
        let releveled = Record::builder()
            .level(level)
            .target(record.target())
            .args(*record.args())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .key_values(record.key_values())
            .build();
        if self.journal.journal_send(&releveled).is_err() {
            let _ = writeln!(std::io::stderr(), "{}", prefixed_line(record));
        }
    }

    fn flush(&self) {}
}

/// Installs the global logger; call once, first thing in a command.
pub fn init() {
    let env = env_logger::Env::default().default_filter_or("info");
    let mut builder = env_logger::Builder::from_env(env);
    builder.target(env_logger::Target::Stderr);
    if systemd_journal_logger::connected_to_journal() {
        if let Ok(journal) = JournalLog::new() {
            let filter = builder.build();
            let max = filter.filter();
            let journal = journal.with_syslog_identifier("streamsink".to_string());
            if log::set_boxed_logger(Box::new(Journald { filter, journal })).is_ok() {
                log::set_max_level(max);
                INSTALLED.store(true, Ordering::SeqCst);
            }
            return;
        }
    }
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        // A journal stream that is not our stderr, or a journal socket we cannot open: plain
        // lines with the priority prefix journald understands on a stream.
        builder.format(|buf, record| writeln!(buf, "{}", prefixed_line(record)));
    }
    if builder.try_init().is_ok() {
        INSTALLED.store(true, Ordering::SeqCst);
    }
}

/// The last record before the process exits (a refused setting, a fatal error, a second stop
/// signal), at `level`. Under systemd it is one stderr line with its `<N>` prefix: journald
/// attributes a stream to the unit when it connects, whereas a native record from a process
/// that has already exited may reach it too late to be filed under `journalctl -u`. Works
/// before [`init`] too (a refused command line is reported before logging starts).
pub fn last_words(level: Level, message: &dyn Display) {
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        let _ = writeln!(std::io::stderr(), "<{}>streamsink: {message}", syslog_priority(level));
    } else if INSTALLED.load(Ordering::SeqCst) {
        log::log!(level, "{message}");
    } else {
        let _ = writeln!(std::io::stderr(), "streamsink: {message}");
    }
}

//! What an operator sees of a running worker: `counters` (totals since start), the periodic
//! `stats` line and the systemd STATUS line, `logging` (stderr, journald priorities), and
//! `service` (systemd's notify protocol).
//!
//! Where to add a metric: a counter in `counters.rs`, incremented where the thing happens,
//! and shown by the stats line through `Snapshot`'s `Display`.

pub mod check;
pub mod counters;
pub(crate) mod heartbeat;
pub(crate) mod http;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod service;
pub(crate) mod stats;

pub use counters::{Counters, Snapshot};

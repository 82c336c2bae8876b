//! What an operator sees of a running worker: `counters` (totals since start), the periodic
//! `stats` line and the systemd STATUS line, `metrics` and `http` (Prometheus `/metrics`,
//! `/health/*`), `check` (`streamsink check`), `logging` (stderr, journald) and `service`
//! (systemd's notify protocol).
//!
//! Where to add a metric: ARCHITECTURE.md, "Where to add…".

pub mod check;
pub mod counters;
pub(crate) mod heartbeat;
pub(crate) mod http;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod service;
pub(crate) mod stats;

pub use counters::{Counters, Snapshot};

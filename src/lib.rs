//! streamsink: drains Redis Streams into PostgreSQL, each event taking effect exactly once.
//!
//! The path of an event: `ingest::reader` (XREADGROUP through [`broker`]) → bounded channel →
//! `ingest::worker` (parse with [`event`], write with [`sink`] and [`handlers`] in one
//! transaction, then acknowledge through [`broker`]). [`supervisor`] starts and stops the
//! threads; [`observe`] reports. ARCHITECTURE.md has the codemap and the invariants.
//!
//! The public surface is what the `streamsink` binary, the benchmark and the integration tests
//! need; everything else is crate-private.

pub mod broker;
pub mod config;
pub mod event;
pub mod handlers;
pub mod hooks;
mod ingest;
pub mod observe;
pub mod operate;
mod retry;
pub mod secret;
pub mod sink;
pub mod supervisor;
pub mod tls;

pub use config::Config;
pub use handlers::{Handler, HandlerError, Registry};
pub use supervisor::{Supervisor, SupervisorError};

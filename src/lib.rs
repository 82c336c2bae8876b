//! streamsink: drains Redis Streams into PostgreSQL, each event taking effect exactly once.
//!
//! The path of an event: [`reader`] (XREADGROUP) → bounded channel → [`worker`] (parse with
//! [`event`], write with [`store`] and [`handlers`] in one transaction, then acknowledge with
//! [`stream`]). [`pipeline`] starts and stops the threads; [`stats`] reports. See
//! ARCHITECTURE.md for the codemap and the invariants.

pub mod config;
pub mod event;
pub mod handlers;
pub mod logging;
pub mod pipeline;
mod reader;
mod retry;
pub mod stats;
pub mod store;
pub mod stream;
mod worker;

pub use config::{Config, Purpose, RawSettings};
pub use handlers::{Handler, HandlerError, Registry};
pub use pipeline::{Pipeline, PipelineError};

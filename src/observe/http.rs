//! The metrics and health endpoint (`STREAMSINK_METRICS_ADDR`), on a thread of its own
//! (`tiny_http`, no async runtime):
//!
//! - `GET /metrics`: Prometheus text ([`metrics::render`]);
//! - `GET /health/live`: 200 while the reader and every worker show signs of life (the
//!   watchdog's rule), 503 naming the silent thread otherwise;
//! - `GET /health/ready`: 200 only while Redis and Postgres answer and every group exists;
//!   503 with a one-line reason otherwise.
//!
//! Invariant: a request never touches Redis or Postgres; every answer comes from what the
//! threads already record (heartbeats, outages, the stats thread's refresh), so the endpoint
//! answers at once whatever the services do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};

use super::metrics;
use crate::supervisor::Shared;

/// A thread that has not beaten for this long is not alive (half the default `WatchdogSec`;
/// under a watchdog, half its interval).
const DEFAULT_LIVENESS: Duration = Duration::from_secs(30);

/// Per-stream figures older than this (several missed refreshes) make the process not ready.
const STALE_FIGURES: Duration = Duration::from_secs(30);

/// The bound socket, made before anything connects so that a taken port fails the start at
/// once, with one line.
pub(crate) struct Endpoint {
    server: Server,
    addr: SocketAddr,
}

impl Endpoint {
    /// Binds `addr`.
    pub(crate) fn bind(addr: SocketAddr) -> Result<Endpoint, std::io::Error> {
        let server = Server::http(addr).map_err(|e| std::io::Error::other(e.to_string()))?;
        let addr = server.server_addr().to_ip().unwrap_or(addr);
        Ok(Endpoint { server, addr })
    }

    /// The address it listens on (the port the OS chose, for `:0`).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves requests until `done` is set (checked every 200 ms).
    pub(crate) fn serve(self, shared: Arc<Shared>, done: Arc<AtomicBool>) {
        log::info!("metrics and health on http://{}/metrics, /health/live, /health/ready", self.addr);
        while !done.load(Ordering::Relaxed) {
            match self.server.recv_timeout(Duration::from_millis(200)) {
                Ok(Some(request)) => answer(&shared, request),
                Ok(None) => {}
                Err(e) => log::debug!("metrics endpoint: {e}"),
            }
        }
    }
}

fn answer(shared: &Shared, request: Request) {
    let (status, content_type, body) = match (request.method(), request.url()) {
        (Method::Get | Method::Head, "/metrics") => (200, metrics::CONTENT_TYPE, metrics::render(shared)),
        (Method::Get | Method::Head, "/health/live") => health(live(shared)),
        (Method::Get | Method::Head, "/health/ready") => health(ready(shared)),
        (Method::Get | Method::Head, _) => {
            (404, TEXT, "not found: try /metrics, /health/live, /health/ready\n".into())
        }
        _ => (405, TEXT, "only GET\n".into()),
    };
    let mut response = Response::from_string(body).with_status_code(status);
    if let Ok(header) = Header::from_bytes("Content-Type", content_type) {
        response.add_header(header);
    }
    if let Err(e) = request.respond(response) {
        log::debug!("metrics endpoint: cannot answer: {e}");
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn health(verdict: Result<(), String>) -> (u16, &'static str, String) {
    match verdict {
        Ok(()) => (200, TEXT, "ok\n".into()),
        Err(why) => (503, TEXT, format!("{why}\n")),
    }
}

/// Alive: every watched thread beat recently (a wait on an outage or an empty stream beats).
fn live(shared: &Shared) -> Result<(), String> {
    let limit = super::service::watchdog_interval().map_or(DEFAULT_LIVENESS, |i| i / 2);
    match shared.heartbeats.stalest() {
        Some((name, age)) if age > limit => {
            Err(format!("{name} has shown no sign of life for {}s", age.as_secs()))
        }
        _ => Ok(()),
    }
}

/// Ready: not stopping, both services answering, every group present on its stream.
fn ready(shared: &Shared) -> Result<(), String> {
    if shared.stopping() {
        return Err("stopping".into());
    }
    for outage in [&shared.redis_outage, &shared.postgres_outage] {
        if let Some(lasted) = outage.lasting() {
            return Err(format!("{} unavailable for {}s", outage.name(), lasted.as_secs()));
        }
    }
    let Some(refreshed) = shared.metrics.refreshed() else {
        return Err("starting: no figures from Redis yet".into());
    };
    if refreshed.streams.is_empty() {
        return Err("Redis did not answer the last check of the streams".into());
    }
    if refreshed.at.elapsed() > STALE_FIGURES {
        return Err(format!("no figures from Redis for {}s", refreshed.at.elapsed().as_secs()));
    }
    let group = &shared.config.group.name;
    match refreshed.streams.iter().find(|s| !s.group_exists) {
        Some(s) => Err(format!("group {group} does not exist on stream {}", s.stream)),
        None => Ok(()),
    }
}

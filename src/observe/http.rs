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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tiny_http::{Header, Method, Request, Response, Server};

use super::metrics;
use crate::supervisor::Shared;

/// A thread that has not beaten for this long is not alive (half the default `WatchdogSec`;
/// under a watchdog, half its interval; never less than two reads, which a reader may wait).
const DEFAULT_LIVENESS: Duration = Duration::from_secs(30);

/// Per-stream figures older than this (several missed refreshes) make the process not ready.
const STALE_FIGURES: Duration = Duration::from_secs(30);

/// Connections answered at once, each by a thread of its own (answers on one connection go out
/// in order anyway): a client that never reads holds its own thread, not the endpoint. Past
/// this, requests are refused by one thread that closes them.
const MAX_CONNECTIONS: usize = 64;

/// How long a connection's thread waits for its next request before it ends (a pipelining
/// client's requests are queued already; a prober opens a new connection each time).
const CONNECTION_IDLE: Duration = Duration::from_millis(100);

/// The pipeline, once start-up has built it; until then the endpoint answers "starting".
pub(crate) type Pipeline = Arc<OnceLock<Arc<Shared>>>;

/// The bound socket, made before anything connects so that a taken port fails the start at
/// once, with one line.
pub(crate) struct Endpoint {
    server: Arc<Server>,
    addr: SocketAddr,
}

impl Endpoint {
    /// Binds `addr`.
    pub(crate) fn bind(addr: SocketAddr) -> Result<Endpoint, std::io::Error> {
        let server = Server::http(addr).map_err(|e| std::io::Error::other(e.to_string()))?;
        let addr = server.server_addr().to_ip().unwrap_or(addr);
        Ok(Endpoint { server: Arc::new(server), addr })
    }

    /// Serves from now on, start-up included: until `pipeline` is filled, `/health/live` is 200
    /// (start-up retrying is progress), `/health/ready` is 503 `starting` and `/metrics` holds
    /// only `streamsink_build_info`.
    pub(crate) fn serve(self, pipeline: Pipeline) -> Result<Serving, std::io::Error> {
        log::info!("metrics and health on http://{}/metrics, /health/live, /health/ready", self.addr);
        let done = Arc::new(AtomicBool::new(false));
        let (server, stop) = (Arc::clone(&self.server), Arc::clone(&done));
        let (refuse, refused) = crossbeam_channel::unbounded::<Request>();
        std::thread::Builder::new().name("metrics-refuse".into()).spawn(move || {
            for request in refused {
                let busy = Response::from_string("busy: too many connections being answered\n");
                let _ = request.respond(busy.with_status_code(503));
            }
        })?;
        let handle = std::thread::Builder::new().name("metrics".into()).spawn(move || {
            let connections = Arc::new(Connections::default());
            while !stop.load(Ordering::Relaxed) {
                match server.recv_timeout(Duration::from_millis(200)) {
                    Ok(Some(request)) => dispatch(&pipeline, &connections, &refuse, request),
                    Ok(None) => {}
                    Err(e) => log::debug!("metrics endpoint: {e}"),
                }
            }
        })?;
        Ok(Serving { handle: Some(handle), server: self.server, done, addr: self.addr })
    }
}

/// The endpoint's thread; stopped (and its port released) when dropped.
pub(crate) struct Serving {
    handle: Option<JoinHandle<()>>,
    server: Arc<Server>,
    done: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl Serving {
    /// The address it listens on (the port the OS chose, for `:0`).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether its thread has ended (it ends only when stopped, or by a panic).
    pub(crate) fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        self.server.unblock();
        let Some(handle) = self.handle.take() else { return };
        let until = Instant::now() + Duration::from_millis(500);
        while !handle.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if handle.is_finished() && handle.join().is_err() {
            log::error!("the metrics endpoint's thread panicked");
        }
    }
}

/// The connections being answered: each one's queue of requests, served by its own thread.
#[derive(Default)]
struct Connections(Mutex<HashMap<Option<SocketAddr>, Sender<Request>>>);

/// Queues `request` for its connection's thread, starting one if the connection has none (and
/// fewer than [`MAX_CONNECTIONS`] are served); otherwise hands it to `refuse`. Never blocks.
fn dispatch(pipeline: &Pipeline, connections: &Arc<Connections>, refuse: &Sender<Request>, request: Request) {
    let peer = request.remote_addr().copied();
    let Ok(mut by_peer) = connections.0.lock() else { return };
    let request = match by_peer.get(&peer) {
        Some(queue) => match queue.send(request) {
            Ok(()) => return,
            Err(back) => back.into_inner(),
        },
        None => request,
    };
    if by_peer.len() >= MAX_CONNECTIONS {
        let _ = refuse.send(request);
        return;
    }
    let (queue, requests) = crossbeam_channel::unbounded();
    let _ = queue.send(request);
    by_peer.insert(peer, queue);
    drop(by_peer);
    let (pipeline, served) = (Arc::clone(pipeline), Arc::clone(connections));
    let spawned = std::thread::Builder::new().name("metrics-answer".into()).spawn(move || {
        loop {
            match requests.recv_timeout(CONNECTION_IDLE) {
                Ok(request) => answer(pipeline.get().map(Arc::as_ref), request),
                Err(_) => {
                    // Leave only with nothing queued, deciding under the lock `dispatch` sends under.
                    let Ok(mut by_peer) = served.0.lock() else { return };
                    if requests.is_empty() {
                        by_peer.remove(&peer);
                        return;
                    }
                }
            }
        }
    });
    if let Err(e) = spawned {
        log::debug!("metrics endpoint: cannot start a thread to answer: {e}");
        if let Ok(mut by_peer) = connections.0.lock() {
            by_peer.remove(&peer);
        }
    }
}

fn answer(shared: Option<&Shared>, request: Request) {
    let path = request.url().split('?').next().unwrap_or_default().to_string();
    let (status, content_type, body) = match (request.method(), path.as_str()) {
        (Method::Get | Method::Head, "/metrics") => (200, metrics::CONTENT_TYPE, metrics::render(shared)),
        (Method::Get | Method::Head, "/health/live") => health(shared.map_or(Ok(()), live)),
        (Method::Get | Method::Head, "/health/ready") => {
            health(shared.map_or_else(|| Err("starting: connecting to Redis and Postgres".into()), ready))
        }
        (Method::Get | Method::Head, _) => {
            (404, TEXT, "not found: try /metrics, /health/live, /health/ready\n".into())
        }
        _ => (405, TEXT, "only GET and HEAD\n".into()),
    };
    let mut response = Response::from_string(body).with_status_code(status);
    if let Ok(header) = Header::from_bytes("Content-Type", content_type) {
        response.add_header(header);
    }
    if status == 405 {
        if let Ok(header) = Header::from_bytes("Allow", "GET, HEAD") {
            response.add_header(header);
        }
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
    let reads = 2 * shared.config.worker.read_timeout();
    let limit = super::service::watchdog_interval().map_or(DEFAULT_LIVENESS.max(reads), |i| i / 2);
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
    if let Some(silent) = shared.metrics.postgres_silent_for() {
        return Err(format!("Postgres did not answer a check for {}s", silent.as_secs()));
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

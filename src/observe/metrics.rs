//! The figures `GET /metrics` exposes in Prometheus text format (`prometheus-client` encodes
//! them; `observe::http` serves them).
//!
//! Three sources, none of them costing the hot path a lock:
//! - totals: [`Counters`](super::Counters) (atomics the workers already keep), read at scrape;
//! - histograms: [`Histogram`], atomic buckets, one observation per batch or per event;
//! - Redis figures per stream (length, lag, pending, oldest pending age, dead letters), read by
//!   the stats thread every few seconds ([`Metrics::set_streams`]), never by a scrape, so a
//!   scrape costs Redis nothing and answers even while Redis is down.
//!
//! Dead letters by reason and handler errors by type are rare events, counted under a mutex.
//!
//! Labels are `stream` and `group` (plus `reason`, `type`, `service`); never the consumer, whose
//! name changes with every restart.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::broker::group::StreamFigures;
use crate::supervisor::Shared;

/// The content type of [`render`]'s text.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Entries per batch.
const BATCH_SIZE_BOUNDS: &[f64] = &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];
/// Seconds one batch transaction took, from its first statement to its commit.
const WRITE_SECONDS_BOUNDS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Seconds from an entry's id time (when Redis stored it) to the commit of its event.
const LATENCY_BOUNDS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0];

/// A histogram with fixed buckets whose observations are lock-free: workers record one per
/// event at full rate. The sum is kept in micro-units (exact enough for seconds and counts).
pub(crate) struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then the overflow (+Inf) bucket; not cumulative.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation (negative values count as 0: a clock step, not a real figure).
    /// Values are clamped at 10^6 (11 days, for seconds) so that the sum, kept in micro-units,
    /// cannot wrap (it would take 18 million such observations); the bucket is still +Inf.
    pub(crate) fn observe(&self, value: f64) {
        let value = value.clamp(0.0, 1e6);
        let i = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    fn sample(&self) -> HistogramSample {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        HistogramSample { sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6, count, buckets }
    }
}

/// The last refresh of the per-stream figures.
#[derive(Debug, Clone)]
pub(crate) struct Refreshed {
    pub at: Instant,
    /// Empty when Redis did not answer.
    pub streams: Vec<StreamFigures>,
}

/// Instruments the workers and the stats thread write, and a scrape reads.
pub(crate) struct Metrics {
    pub batch_size: Histogram,
    pub batch_write_seconds: Histogram,
    pub event_latency_seconds: Histogram,
    /// (stream, reason) → entries dead-lettered.
    dead_lettered: Mutex<BTreeMap<(String, String), u64>>,
    /// Event type → handler failures.
    handler_errors: Mutex<BTreeMap<String, u64>>,
    refreshed: Mutex<Option<Refreshed>>,
    /// Since when Postgres has not answered the stats thread's probe (`None`: it answers).
    postgres_silent_since: Mutex<Option<Instant>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            batch_size: Histogram::new(BATCH_SIZE_BOUNDS),
            batch_write_seconds: Histogram::new(WRITE_SECONDS_BOUNDS),
            event_latency_seconds: Histogram::new(LATENCY_BOUNDS),
            dead_lettered: Mutex::default(),
            handler_errors: Mutex::default(),
            refreshed: Mutex::default(),
            postgres_silent_since: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Counts entries of `stream` dead-lettered for `reason` (after their acknowledgement).
    pub(crate) fn dead_lettered(&self, stream: &str, reason: &str) {
        if let Ok(mut m) = self.dead_lettered.lock() {
            *m.entry((stream.to_string(), reason.to_string())).or_default() += 1;
        }
    }

    /// Counts a handler failure on an event of `event_type`.
    pub(crate) fn handler_failed(&self, event_type: &str) {
        if let Ok(mut m) = self.handler_errors.lock() {
            *m.entry(event_type.to_string()).or_default() += 1;
        }
    }

    /// Replaces the per-stream figures (the stats thread, every few seconds).
    pub(crate) fn set_streams(&self, streams: Vec<StreamFigures>) {
        if let Ok(mut r) = self.refreshed.lock() {
            *r = Some(Refreshed { at: Instant::now(), streams });
        }
    }

    /// Records whether Postgres answered the last probe (or a commit proved it answers).
    pub(crate) fn postgres_answered(&self, answered: bool) {
        if let Ok(mut since) = self.postgres_silent_since.lock() {
            match (answered, *since) {
                (true, _) => *since = None,
                (false, None) => *since = Some(Instant::now()),
                (false, Some(_)) => {}
            }
        }
    }

    /// How long Postgres has not answered the stats thread's probe, if it has not.
    pub(crate) fn postgres_silent_for(&self) -> Option<Duration> {
        self.postgres_silent_since.lock().ok().and_then(|s| s.map(|at| at.elapsed()))
    }

    /// The last refresh, if there was one.
    pub(crate) fn refreshed(&self) -> Option<Refreshed> {
        self.refreshed.lock().ok().and_then(|r| r.clone())
    }
}

/// The whole exposition, as `GET /metrics` returns it; during start-up (no pipeline yet),
/// only `streamsink_build_info`.
pub(crate) fn render(shared: Option<&Shared>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(BuildInfo));
    if let Some(shared) = shared {
        registry.register_collector(Box::new(Scrape::take(shared)));
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        log::debug!("metrics: encoding failed: {e}");
    }
    text
}

/// Every figure, copied at the moment of a scrape.
#[derive(Debug)]
struct Scrape {
    group: String,
    counters: crate::observe::Snapshot,
    read: u64,
    dead_lettered: BTreeMap<(String, String), u64>,
    handler_errors: BTreeMap<String, u64>,
    histograms: [(&'static str, &'static str, HistogramSample); 3],
    streams: Vec<StreamFigures>,
    last_commit_ms: u64,
    redis_up: bool,
    postgres_up: bool,
}

impl Scrape {
    fn take(shared: &Shared) -> Scrape {
        let m = &shared.metrics;
        let c = &shared.counters;
        Scrape {
            group: shared.config.group.name.to_string(),
            counters: c.snapshot(),
            read: c.read.load(Ordering::Relaxed),
            dead_lettered: m.dead_lettered.lock().map(|d| d.clone()).unwrap_or_default(),
            handler_errors: m.handler_errors.lock().map(|h| h.clone()).unwrap_or_default(),
            histograms: [
                ("streamsink_batch_size", "Entries per batch written.", m.batch_size.sample()),
                (
                    "streamsink_batch_write_seconds",
                    "Seconds one batch transaction took, first statement to commit.",
                    m.batch_write_seconds.sample(),
                ),
                (
                    "streamsink_event_latency_seconds",
                    "Seconds from an entry's id time to the commit of its event.",
                    m.event_latency_seconds.sample(),
                ),
            ],
            streams: m.refreshed().map(|r| r.streams).unwrap_or_default(),
            last_commit_ms: c.last_commit_ms.load(Ordering::Relaxed),
            redis_up: shared.redis_outage.lasting().is_none(),
            postgres_up: shared.postgres_outage.lasting().is_none() && m.postgres_silent_for().is_none(),
        }
    }
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: its descriptor, then one sample per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: Vec<(Labels, M)>,
) -> fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, metric) in samples {
        if labels.is_empty() {
            // An unlabelled metric has exactly one sample.
            return metric.encode(family);
        }
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[derive(Debug)]
struct HistogramSample {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for HistogramSample {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The version, exposed from the first moment the endpoint answers.
#[derive(Debug)]
struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        family(
            &mut enc,
            "streamsink_build_info",
            "The running version (always 1).",
            MetricType::Gauge,
            vec![(vec![("version", env!("CARGO_PKG_VERSION").to_string())], ConstGauge::new(1i64))],
        )
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let group: Labels = vec![("group", self.group.clone())];
        let per_stream = |s: &StreamFigures| -> Labels {
            vec![("stream", s.stream.clone()), ("group", self.group.clone())]
        };
        family(
            &mut enc,
            "streamsink_up",
            "1 while the service answers, 0 during an outage.",
            MetricType::Gauge,
            vec![
                (vec![("service", "redis".to_string())], ConstGauge::new(i64::from(self.redis_up))),
                (vec![("service", "postgres".to_string())], ConstGauge::new(i64::from(self.postgres_up))),
            ],
        )?;
        let c = &self.counters;
        let totals: [(&str, &str, u64); 6] = [
            ("streamsink_entries_read", "Entries read from the streams (new and reclaimed).", self.read),
            ("streamsink_events_inserted", "Events newly inserted into Postgres.", c.inserted),
            (
                "streamsink_events_duplicate",
                "Events already in Postgres (redeliveries): nothing changed.",
                c.duplicates,
            ),
            ("streamsink_entries_acked", "Entries acknowledged (XACK's count).", c.acknowledged),
            ("streamsink_entries_reclaimed", "Entries taken over from the pending list.", c.reclaimed),
            (
                "streamsink_entries_lost_upstream",
                "Pending entries deleted from the stream (trimmed) before they were processed.",
                c.lost_upstream,
            ),
        ];
        for (name, help, value) in totals {
            family(
                &mut enc,
                name,
                help,
                MetricType::Counter,
                vec![(group.clone(), ConstCounter::new(value))],
            )?;
        }
        family(
            &mut enc,
            "streamsink_entries_dead_lettered",
            "Entries moved to a dead-letter stream, by reason.",
            MetricType::Counter,
            self.dead_lettered
                .iter()
                .map(|((stream, reason), n)| {
                    let labels = vec![
                        ("stream", stream.clone()),
                        ("group", self.group.clone()),
                        ("reason", reason.clone()),
                    ];
                    (labels, ConstCounter::new(*n))
                })
                .collect(),
        )?;
        family(
            &mut enc,
            "streamsink_handler_errors",
            "Handler failures (event row kept, handler effect rolled back), by event type.",
            MetricType::Counter,
            self.handler_errors
                .iter()
                .map(|(t, n)| {
                    (vec![("group", self.group.clone()), ("type", t.clone())], ConstCounter::new(*n))
                })
                .collect(),
        )?;
        for (name, help, sample) in &self.histograms {
            sample.encode(enc.encode_descriptor(name, help, None, MetricType::Histogram)?)?;
        }
        let gauge = |value: Option<u64>| value.map(|v| ConstGauge::new(v as i64));
        let by_stream =
            |f: &dyn Fn(&StreamFigures) -> Option<ConstGauge<i64>>| -> Vec<(Labels, ConstGauge<i64>)> {
                self.streams.iter().filter_map(|s| Some((per_stream(s), f(s)?))).collect()
            };
        family(
            &mut enc,
            "streamsink_stream_length",
            "Entries in the stream (XLEN).",
            MetricType::Gauge,
            by_stream(&|s| gauge(Some(s.length))),
        )?;
        family(
            &mut enc,
            "streamsink_group_lag",
            "Entries not yet delivered to the group (XINFO GROUPS lag); absent when Redis does not know.",
            MetricType::Gauge,
            by_stream(&|s| gauge(s.lag)),
        )?;
        family(
            &mut enc,
            "streamsink_group_pending",
            "Entries delivered to the group and not yet acknowledged.",
            MetricType::Gauge,
            by_stream(&|s| gauge(s.pending)),
        )?;
        family(
            &mut enc,
            "streamsink_oldest_pending_age_seconds",
            "Age of the group's oldest pending entry (0 with none pending).",
            MetricType::Gauge,
            self.streams
                .iter()
                .filter(|s| s.pending.is_some())
                .map(|s| (per_stream(s), ConstGauge::new(s.oldest_pending.unwrap_or_default().as_secs_f64())))
                .collect(),
        )?;
        family(
            &mut enc,
            "streamsink_dead_letter_length",
            "Entries in the stream's dead-letter stream (<stream>:dlq).",
            MetricType::Gauge,
            by_stream(&|s| gauge(Some(s.dead_letters))),
        )?;
        let last_commit = (self.last_commit_ms > 0)
            .then(|| (Vec::new(), ConstGauge::new(self.last_commit_ms as f64 / 1000.0)))
            .into_iter()
            .collect();
        family(
            &mut enc,
            "streamsink_last_commit_timestamp_seconds",
            "Unix time of the last batch commit (absent before the first).",
            MetricType::Gauge,
            last_commit,
        )
    }
}

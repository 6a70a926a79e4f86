//! Prometheus metrics, served as OpenMetrics text on the admin listener.
//!
//! Everything the request path touches is a plain atomic: the per-status counters are a
//! fixed table indexed by status code and the latency histogram is an array of atomic
//! buckets. `prometheus-client`'s `Family` (a `RwLock`ed map) and `Histogram` (a
//! `RwLock`) would put a lock on every request; here the locks are only taken by
//! `/metrics` scrapes, which are rare.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Name of the per-status request counter (`_total` is appended on output).
pub const REQUESTS: &str = "leasehold_proxy_requests";
/// Name of the upstream latency histogram.
pub const UPSTREAM_LATENCY: &str = "leasehold_proxy_upstream_latency_seconds";
/// Name of the lease expiry gauge.
pub const LEASE_EXPIRY: &str = "leasehold_proxy_lease_expiry_timestamp_seconds";
/// Name of the renewal counter.
pub const RENEWALS: &str = "leasehold_proxy_lease_renewals";
/// Name of the renewal failure counter.
pub const RENEWAL_FAILURES: &str = "leasehold_proxy_lease_renewal_failures";
/// Name of the rejected-connection counter.
pub const CONNECTIONS_REJECTED: &str = "leasehold_proxy_connections_rejected";

/// Name of the store-and-forward limit gauge.
pub const BUFFER_LIMIT: &str = "leasehold_proxy_buffer_limit_bytes";
/// Name of the gauge of bytes waiting in the store-and-forward buffer.
pub const BUFFER_BYTES: &str = "leasehold_proxy_buffer_bytes";
/// Name of the gauge of the oldest buffered write's age.
pub const BUFFER_OLDEST_AGE: &str = "leasehold_proxy_buffer_oldest_age_seconds";
/// Name of the counter of buffered writes delivered on replay.
pub const BUFFER_REPLAYED: &str = "leasehold_proxy_buffer_replayed_records";
/// Name of the counter of buffered writes InfluxDB refused on replay.
pub const BUFFER_DROPPED: &str = "leasehold_proxy_buffer_dropped_records";

/// Upper bounds (seconds) of the latency buckets; a final `+Inf` bucket is implied.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The proxy's metrics and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Arc<StatusCounts>,
    latency: LatencyHistogram,
    lease_expiry: Gauge<i64, AtomicI64>,
    renewals: Counter,
    renewal_failures: Counter,
    connections_rejected: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh, registered metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Arc::new(StatusCounts::default());
        registry.register_collector(Box::new(Arc::clone(&requests)));
        let latency = LatencyHistogram::default();
        registry.register(
            UPSTREAM_LATENCY,
            "Time from sending a request upstream to receiving its response head",
            latency.clone(),
        );
        let lease_expiry = Gauge::<i64, AtomicI64>::default();
        registry.register(
            LEASE_EXPIRY,
            "Unix time at which the current lease expires",
            lease_expiry.clone(),
        );
        let renewals = Counter::default();
        registry.register(
            RENEWALS,
            "Leases obtained from the control",
            renewals.clone(),
        );
        let renewal_failures = Counter::default();
        registry.register(
            RENEWAL_FAILURES,
            "Failed attempts to obtain a lease",
            renewal_failures.clone(),
        );
        let connections_rejected = Counter::default();
        registry.register(
            CONNECTIONS_REJECTED,
            "Client connections closed because the connection limit was reached",
            connections_rejected.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            lease_expiry,
            renewals,
            renewal_failures,
            connections_rejected,
        }
    }

    /// Counts an answered request.
    pub fn record_status(&self, status: http::StatusCode) {
        self.requests.record(status.as_u16());
    }

    /// Records how long the upstream took to answer.
    pub fn observe_upstream_latency(&self, elapsed: Duration) {
        self.latency.observe(elapsed);
    }

    /// Records a new lease.
    pub fn lease_installed(&self, expires_at_unix: u64) {
        self.renewals.inc();
        self.lease_expiry
            .set(i64::try_from(expires_at_unix).unwrap_or(i64::MAX));
    }

    /// Records a failed renewal attempt.
    pub fn renewal_failed(&self) {
        self.renewal_failures.inc();
    }

    /// Records a connection refused at the limit.
    pub fn connection_rejected(&self) {
        self.connections_rejected.inc();
    }

    /// Adds the store-and-forward figures (read from `stats` at each scrape).
    pub fn register_buffer(&mut self, stats: Arc<crate::buffer::BufferStats>) {
        self.registry
            .register_collector(Box::new(BufferCollector(stats)));
    }

    /// The metrics as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Requests by status code: one atomic per possible code.
struct StatusCounts {
    counts: Box<[AtomicU64]>,
}

impl Default for StatusCounts {
    fn default() -> Self {
        Self {
            counts: (0..1000).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl StatusCounts {
    fn record(&self, code: u16) {
        if let Some(counter) = self.counts.get(usize::from(code)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for StatusCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StatusCounts")
    }
}

impl Collector for StatusCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            REQUESTS,
            "Requests answered, by HTTP status code (upstream or the proxy's own)",
            None,
            MetricType::Counter,
        )?;
        for (code, count) in self.counts.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let code = u16::try_from(code).unwrap_or(u16::MAX);
            let labels = [("code", code)];
            metric
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
        }
        Ok(())
    }
}

/// The store-and-forward buffer's figures, read at scrape time.
#[derive(Debug)]
struct BufferCollector(Arc<crate::buffer::BufferStats>);

impl Collector for BufferCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = &self.0;
        let gauge = |encoder: &mut DescriptorEncoder, name, help, value: f64| {
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&value)
        };
        let to_f64 = |value: u64| value as f64;
        gauge(
            &mut encoder,
            BUFFER_LIMIT,
            "Most bytes the store-and-forward buffer may hold",
            to_f64(stats.limit),
        )?;
        gauge(
            &mut encoder,
            BUFFER_BYTES,
            "Bytes of writes waiting in the store-and-forward buffer",
            to_f64(stats.bytes()),
        )?;
        gauge(
            &mut encoder,
            BUFFER_OLDEST_AGE,
            "Age of the oldest write waiting in the buffer (0 when empty)",
            stats.oldest_age().as_secs_f64(),
        )?;
        for (name, help, value) in [
            (
                BUFFER_REPLAYED,
                "Buffered writes delivered to InfluxDB on replay",
                stats.replayed(),
            ),
            (
                BUFFER_DROPPED,
                "Buffered writes InfluxDB refused on replay (dropped)",
                stats.dropped(),
            ),
        ] {
            encoder
                .encode_descriptor(name, help, None, MetricType::Counter)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        Ok(())
    }
}

/// A lock-free histogram with fixed buckets, in seconds.
#[derive(Clone, Default)]
struct LatencyHistogram {
    inner: Arc<HistogramInner>,
}

#[derive(Default)]
struct HistogramInner {
    /// One count per bucket in `LATENCY_BUCKETS`, then the `+Inf` bucket.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let index = LATENCY_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.inner.buckets[index].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.inner.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LatencyHistogram")
    }
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let mut buckets = [(0.0, 0u64); LATENCY_BUCKETS.len() + 1];
        let mut count = 0;
        for (i, slot) in buckets.iter_mut().enumerate() {
            let n = self.inner.buckets[i].load(Ordering::Relaxed);
            // The text encoder marks `f64::MAX` as `+Inf`.
            *slot = (LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::MAX), n);
            count += n;
        }
        let sum = self.inner.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_name() {
        let metrics = Metrics::new();
        let text = metrics.render();
        for name in [
            REQUESTS,
            UPSTREAM_LATENCY,
            LEASE_EXPIRY,
            RENEWALS,
            RENEWAL_FAILURES,
            CONNECTIONS_REJECTED,
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }

    #[test]
    fn counts_statuses_and_latency() {
        let metrics = Metrics::new();
        metrics.record_status(http::StatusCode::NO_CONTENT);
        metrics.record_status(http::StatusCode::NO_CONTENT);
        metrics.record_status(http::StatusCode::SERVICE_UNAVAILABLE);
        metrics.observe_upstream_latency(Duration::from_millis(3));
        metrics.observe_upstream_latency(Duration::from_secs(60));
        metrics.lease_installed(1_800_000_000);
        let text = metrics.render();
        assert!(
            text.contains(r#"leasehold_proxy_requests_total{code="204"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"leasehold_proxy_requests_total{code="503"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"leasehold_proxy_upstream_latency_seconds_bucket{le="0.005"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"leasehold_proxy_upstream_latency_seconds_bucket{le="+Inf"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("leasehold_proxy_upstream_latency_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("leasehold_proxy_lease_expiry_timestamp_seconds 1800000000"),
            "{text}"
        );
        assert!(
            text.contains("leasehold_proxy_lease_renewals_total 1"),
            "{text}"
        );
    }
}

//! The control's Prometheus metrics, served as OpenMetrics text by [`crate::admin`].
//!
//! Every name starts with `leasehold_control_`. What is counted where: leases issued
//! and refused (by reason) where a request is answered (`server.rs`); revocations done,
//! failed and owed, the sweep's removals and the InfluxDB calls' latency in
//! `control.rs` (and the credential creation where a lease is issued); store latency
//! around the calls on the lease path; channels and handshakes in `server.rs`.
//!
//! These are prometheus-client's own types: each observation may take a short lock,
//! which is noise beside what it measures (a store write, an HTTP call to InfluxDB, a
//! handshake). The proxy, whose request path is hotter, keeps plain atomics instead.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::AtomicI64;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::ControlError;

/// Name of the counter of leases issued (`_total` is appended on output).
pub const LEASES_ISSUED: &str = "leasehold_control_leases_issued";
/// Name of the counter of `lease create` requests refused, by `reason`.
pub const LEASES_REFUSED: &str = "leasehold_control_leases_refused";
/// Name of the counter of credentials removed from InfluxDB (expiry or revocation).
pub const REVOCATIONS_DONE: &str = "leasehold_control_revocations_done";
/// Name of the counter of failed revocation attempts, by `reason`.
pub const REVOCATIONS_FAILED: &str = "leasehold_control_revocations_failed";
/// Name of the gauge of revocations due (expired or revoked leases) and not done yet.
pub const REVOCATIONS_OWED: &str = "leasehold_control_revocations_owed";
/// Name of the counter of expired credentials the sweep removed.
pub const SWEEP_REMOVED: &str = "leasehold_control_sweep_removed";
/// Name of the histogram of InfluxDB call latency, by `op`.
pub const BACKEND_LATENCY: &str = "leasehold_control_backend_latency_seconds";
/// Name of the histogram of store call latency, by `op`.
pub const STORE_LATENCY: &str = "leasehold_control_store_latency_seconds";
/// Name of the gauge of open secure channels (handshake done).
pub const CHANNELS_OPEN: &str = "leasehold_control_channels_open";
/// Name of the counter of handshakes, by `outcome` (`ok`: a full handshake, `resumed`:
/// a channel resumed with a ticket, `failed`).
pub const HANDSHAKES: &str = "leasehold_control_handshakes";

/// Upper bounds (seconds) of the latency buckets: from a cached store read to an
/// InfluxDB call that retried.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type Labels = [(&'static str, &'static str); 1];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The control's metrics and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    leases_issued: Counter,
    leases_refused: Family<Labels, Counter>,
    revocations_done: Counter,
    revocations_failed: Family<Labels, Counter>,
    revocations_owed: Gauge<i64, AtomicI64>,
    /// The leases whose revocation is due and not done: a set, not a count, since one
    /// lease can be due twice (revoked, then its expiry) and must count once.
    owed: Mutex<HashSet<String>>,
    /// Revocations due in the embedded store's queue and not taken on yet, for want
    /// of room ([`crate::revocation_limits`]): owed too.
    waiting: std::sync::atomic::AtomicUsize,
    sweep_removed: Counter,
    backend_latency: Family<Labels, Histogram, fn() -> Histogram>,
    store_latency: Family<Labels, Histogram, fn() -> Histogram>,
    channels_open: Gauge<i64, AtomicI64>,
    handshakes: Family<Labels, Counter>,
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
        let leases_issued = Counter::default();
        registry.register(
            LEASES_ISSUED,
            "Leases issued (credential created and recorded)",
            leases_issued.clone(),
        );
        let leases_refused = Family::<Labels, Counter>::default();
        registry.register(
            LEASES_REFUSED,
            "Lease requests refused, by reason",
            leases_refused.clone(),
        );
        let revocations_done = Counter::default();
        registry.register(
            REVOCATIONS_DONE,
            "Lease credentials removed from InfluxDB (at expiry or on revocation)",
            revocations_done.clone(),
        );
        let revocations_failed = Family::<Labels, Counter>::default();
        registry.register(
            REVOCATIONS_FAILED,
            "Failed attempts to remove a lease credential (retried), by reason",
            revocations_failed.clone(),
        );
        let revocations_owed = Gauge::<i64, AtomicI64>::default();
        registry.register(
            REVOCATIONS_OWED,
            "Leases expired or revoked whose credential is not removed yet (the backlog)",
            revocations_owed.clone(),
        );
        let sweep_removed = Counter::default();
        registry.register(
            SWEEP_REMOVED,
            "Expired credentials of ours the sweep removed from InfluxDB",
            sweep_removed.clone(),
        );
        let backend_latency =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            BACKEND_LATENCY,
            "Time taken by InfluxDB calls, by operation",
            backend_latency.clone(),
        );
        let store_latency =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            STORE_LATENCY,
            "Time taken by store calls on the lease path, by operation",
            store_latency.clone(),
        );
        let channels_open = Gauge::<i64, AtomicI64>::default();
        registry.register(
            CHANNELS_OPEN,
            "Secure channels open (handshake done)",
            channels_open.clone(),
        );
        let handshakes = Family::<Labels, Counter>::default();
        registry.register(
            HANDSHAKES,
            "Secure-channel handshakes, by outcome",
            handshakes.clone(),
        );
        Self {
            registry,
            leases_issued,
            leases_refused,
            revocations_done,
            revocations_failed,
            revocations_owed,
            owed: Mutex::default(),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            sweep_removed,
            backend_latency,
            store_latency,
            channels_open,
            handshakes,
        }
    }

    /// Counts the outcome of a `lease create`.
    pub fn lease_outcome<T>(&self, outcome: &Result<T, ControlError>) {
        match outcome {
            Ok(_) => {
                self.leases_issued.inc();
            }
            Err(error) => self.lease_refused(error),
        }
    }

    /// Counts a `lease create` refused with `error`.
    pub fn lease_refused(&self, error: &ControlError) {
        self.leases_refused
            .get_or_create(&[("reason", refusal_reason(error))])
            .inc();
    }

    /// Lease `id`'s revocation is due (expiry or revocation) and being worked on.
    pub fn revocation_due(&self, id: &str) {
        self.owed_set().insert(id.to_owned());
    }

    /// Lease `id`'s credential is gone (or it needs no removal): it is owed nothing.
    pub fn revocation_settled(&self, id: &str) {
        self.owed_set().remove(id);
    }

    /// `waiting` revocations are due and queued, not taken on yet for want of room.
    pub fn revocations_waiting(&self, waiting: usize) {
        self.waiting
            .store(waiting, std::sync::atomic::Ordering::Relaxed);
    }

    /// A credential was removed from InfluxDB.
    pub fn revocation_done(&self, id: &str) {
        self.revocations_done.inc();
        self.revocation_settled(id);
    }

    /// A revocation attempt failed (it is retried).
    pub fn revocation_failed(&self, error: &ControlError) {
        self.revocations_failed
            .get_or_create(&[("reason", refusal_reason(error))])
            .inc();
    }

    /// The sweep removed `removed` credentials.
    pub fn swept(&self, removed: usize) {
        self.sweep_removed.inc_by(removed as u64);
    }

    /// Awaits `call` (an InfluxDB call named `op`), recording how long it took.
    pub async fn backend<T>(&self, op: &'static str, call: impl Future<Output = T>) -> T {
        timed(&self.backend_latency, op, call).await
    }

    /// Awaits `call` (a store call named `op`), recording how long it took.
    pub async fn store<T>(&self, op: &'static str, call: impl Future<Output = T>) -> T {
        timed(&self.store_latency, op, call).await
    }

    /// Counts a handshake: `None` when it failed, else whether the channel was resumed
    /// with a ticket. For one that succeeded, the returned guard counts the channel as
    /// open until dropped.
    pub fn handshake(&self, resumed: Option<bool>) -> Option<OpenChannel> {
        let outcome = match resumed {
            Some(false) => "ok",
            Some(true) => "resumed",
            None => "failed",
        };
        let ok = resumed.is_some();
        self.handshakes.get_or_create(&[("outcome", outcome)]).inc();
        ok.then(|| {
            self.channels_open.inc();
            OpenChannel(self.channels_open.clone())
        })
    }

    /// The metrics as OpenMetrics text.
    pub fn render(&self) -> String {
        let owed = self.owed_set().len() + self.waiting.load(std::sync::atomic::Ordering::Relaxed);
        self.revocations_owed
            .set(i64::try_from(owed).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    fn owed_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A panic while holding it left a set of ids, still usable.
        self.owed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An open channel, counted in [`CHANNELS_OPEN`] until dropped.
#[derive(Debug)]
pub struct OpenChannel(Gauge<i64, AtomicI64>);

impl Drop for OpenChannel {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn timed<T>(
    family: &Family<Labels, Histogram, fn() -> Histogram>,
    op: &'static str,
    call: impl Future<Output = T>,
) -> T {
    let started = Instant::now();
    let result = call.await;
    family
        .get_or_create(&[("op", op)])
        .observe(started.elapsed().as_secs_f64());
    result
}

/// The `reason` label for a refused request or a failed revocation: coarse and fixed,
/// so the label set stays small.
pub fn refusal_reason(error: &ControlError) -> &'static str {
    use crate::backend::BackendError;
    match error {
        ControlError::NotMember => "not_member",
        ControlError::NotAdmin | ControlError::Forbidden(_) => "forbidden",
        ControlError::NotFound(_) => "not_found",
        ControlError::BadRequest(_) => "bad_request",
        ControlError::TooManyLeases { .. } => "too_many_leases",
        ControlError::NoAddon => "no_addon",
        ControlError::Backend(BackendError::CredentialRefused(_)) => "influxdb_credential_refused",
        ControlError::Backend(_) => "influxdb",
        ControlError::Store(_) => "store",
        _ => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_name_with_the_prefix() {
        let metrics = Metrics::new();
        metrics.lease_outcome::<()>(&Err(ControlError::NoAddon));
        metrics.revocation_failed(&ControlError::NoAddon);
        let _open = metrics.handshake(Some(false));
        let text = metrics.render();
        for name in [
            LEASES_ISSUED,
            LEASES_REFUSED,
            REVOCATIONS_DONE,
            REVOCATIONS_FAILED,
            REVOCATIONS_OWED,
            SWEEP_REMOVED,
            CHANNELS_OPEN,
            HANDSHAKES,
        ] {
            assert!(name.starts_with("leasehold_control_"));
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }

    #[test]
    fn counts_leases_revocations_and_channels() {
        let metrics = Metrics::new();
        metrics.lease_outcome(&Ok(()));
        metrics.lease_outcome::<()>(&Err(ControlError::TooManyLeases { max: 1 }));
        metrics.lease_outcome::<()>(&Err(ControlError::BadRequest("ttl".into())));
        metrics.revocation_due("a");
        metrics.revocation_due("a");
        metrics.revocation_due("b");
        metrics.revocation_done("a");
        metrics.swept(3);
        let open = metrics.handshake(Some(false));
        assert!(metrics.handshake(None).is_none());
        let resumed = metrics.handshake(Some(true));
        let text = metrics.render();
        for line in [
            "leasehold_control_leases_issued_total 1",
            r#"leasehold_control_leases_refused_total{reason="too_many_leases"} 1"#,
            r#"leasehold_control_leases_refused_total{reason="bad_request"} 1"#,
            "leasehold_control_revocations_done_total 1",
            "leasehold_control_revocations_owed 1",
            "leasehold_control_sweep_removed_total 3",
            "leasehold_control_channels_open 2",
            r#"leasehold_control_handshakes_total{outcome="ok"} 1"#,
            r#"leasehold_control_handshakes_total{outcome="resumed"} 1"#,
            r#"leasehold_control_handshakes_total{outcome="failed"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        drop(open);
        drop(resumed);
        assert!(
            metrics
                .render()
                .contains("leasehold_control_channels_open 0")
        );
    }

    #[tokio::test]
    async fn latency_is_recorded_per_operation() {
        let metrics = Metrics::new();
        assert_eq!(metrics.backend("create", async { 7 }).await, 7);
        metrics.store("put_lease", async {}).await;
        let text = metrics.render();
        assert!(
            text.contains(r#"leasehold_control_backend_latency_seconds_count{op="create"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"leasehold_control_store_latency_seconds_count{op="put_lease"} 1"#),
            "{text}"
        );
    }
}

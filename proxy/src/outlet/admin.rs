//! The outlet's admin listener: `/healthz`, `/readyz` (503 while draining) and
//! `/metrics` (Prometheus text), on its own address like the proxy's.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::StatusCode;
use leasehold_probe::{Answer, PROMETHEUS_TEXT, not_found, text, with_type};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::server::Shared;

pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener, stop: CancellationToken) {
    leasehold_probe::serve(listener, stop, move |path| {
        let shared = Arc::clone(&shared);
        async move { answer(&shared, &path) }
    })
    .await;
}

fn answer(shared: &Shared, path: &str) -> Answer {
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if shared.draining.load(Ordering::Relaxed) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "not ready: draining\n")
        }
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/metrics" => with_type(StatusCode::OK, render(shared), PROMETHEUS_TEXT),
        _ => not_found(),
    }
}

/// Prometheus text exposition of the outlet's counters.
fn render(shared: &Shared) -> String {
    let m = &shared.metrics;
    let mut out = String::with_capacity(1024);
    let counters = [
        (
            "leasehold_outlet_channels_admitted_total",
            "Channels admitted with a valid membership credential.",
            &m.admitted,
        ),
        (
            "leasehold_outlet_channels_refused_total",
            "Channels refused: no, a bad, an expired or a disallowed credential.",
            &m.refused,
        ),
        (
            "leasehold_outlet_handshake_failures_total",
            "Connections that failed the Noise handshake.",
            &m.handshake_failed,
        ),
        (
            "leasehold_outlet_over_limit_total",
            "Connections closed at once because the connection limit was reached.",
            &m.over_limit,
        ),
        (
            "leasehold_outlet_channels_expired_total",
            "Channels closed because their credential expired unrenewed.",
            &m.expired,
        ),
        (
            "leasehold_outlet_upstream_failures_total",
            "Admitted channels whose InfluxDB connection failed.",
            &m.upstream_failed,
        ),
        (
            "leasehold_outlet_renewals_total",
            "Renewed credentials accepted on open channels.",
            &m.renewals,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            value.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP leasehold_outlet_channels_open Channels open now.\n# TYPE leasehold_outlet_channels_open gauge\nleasehold_outlet_channels_open {}",
        m.open.load(Ordering::Relaxed)
    );
    out
}

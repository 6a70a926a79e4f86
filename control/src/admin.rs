//! The control's admin listener: `/healthz`, `/readyz` and `/metrics` for orchestrators
//! and Prometheus, on its own address (`control serve --admin-listen`, loopback by
//! default), like the proxy's and the outlet's.
//!
//! - `/healthz`: 200 while the process serves; a liveness probe.
//! - `/readyz`: 200 when a `lease create` sent now could succeed as far as the control
//!   itself goes: the store answers (a point read, within [`STORE_PROBE_TIMEOUT`]) and
//!   an add-on is configured; 503 with the reason otherwise, and while shutting down. A
//!   load balancer or a Kubernetes Service sends sidecars only to ready replicas.
//! - `/metrics`: OpenMetrics text ([`crate::metrics`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use leasehold_probe::{Answer, not_found, text, with_type};
use tokio::net::TcpListener;

use crate::control::Control;
use crate::store::Store;

/// How long the store has to answer the readiness probe's read.
pub const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin endpoints on `listener` until the control shuts down; returns the
/// bound address. Runs on the control's task tracker.
pub fn spawn<S: Store>(
    control: &Arc<Control<S>>,
    listener: TcpListener,
) -> std::io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    tracing::info!(admin = %addr, "control admin listening (/healthz, /readyz, /metrics)");
    let serving = control.clone();
    // On the control's task tracker; a probe in progress does not hold up shutdown.
    control.tasks().spawn(leasehold_probe::serve(
        listener,
        control.shutdown().clone(),
        move |path| answer(serving.clone(), path),
    ));
    Ok(addr)
}

async fn answer<S: Store>(control: Arc<Control<S>>, path: String) -> Answer {
    match path.as_str() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match readiness(&control).await {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, reason),
        },
        "/metrics" => with_type(StatusCode::OK, control.metrics().render(), OPENMETRICS),
        _ => not_found(),
    }
}

/// Why the control is not ready, if it is not.
async fn readiness<S: Store>(control: &Control<S>) -> Result<(), &'static str> {
    if control.shutdown().is_cancelled() {
        return Err("not ready: shutting down\n");
    }
    let probe = control.store.member(control.identity().public());
    match tokio::time::timeout(STORE_PROBE_TIMEOUT, probe).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: the store failed a read");
            return Err("not ready: the store is unavailable\n");
        }
        Err(_) => return Err("not ready: the store did not answer in time\n"),
    }
    if control.addon().is_err() {
        return Err("not ready: no InfluxDB add-on is configured (leasehold addon configure)\n");
    }
    Ok(())
}

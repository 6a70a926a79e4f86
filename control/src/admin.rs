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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::control::Control;
use crate::store::Store;

/// Probes and scrapes are tiny: a few at once is plenty.
const MAX_ADMIN_CONNECTIONS: usize = 16;
/// How long the store has to answer the readiness probe's read.
pub const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a probe may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

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
    control.tasks().spawn(serve(serving, listener));
    Ok(addr)
}

async fn serve<S: Store>(control: Arc<Control<S>>, listener: TcpListener) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    let stop = control.shutdown().clone();
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of file descriptors: the channel listener logs that.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            continue;
        };
        let (control, stop) = (control.clone(), stop.clone());
        // Not on the task tracker: a probe in progress must not hold up shutdown.
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(control.clone(), request));
            let connection = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = stop.cancelled() => {}
            }
            drop(permit);
        });
    }
}

async fn handle<S: Store>(
    control: Arc<Control<S>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n"));
    }
    Ok(match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match readiness(&control).await {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, reason),
        },
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(control.metrics().render())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz or /metrics\n",
        ),
    })
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

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

//! The admin listener: liveness, readiness and metrics for orchestrators and Prometheus.
//!
//! Kept on its own address so probes and scrapes never compete with the application's
//! connection limit and are never forwarded upstream. `/readyz` means exactly "a request
//! sent now would carry a valid lease": it turns 503 before the first lease and again if
//! the lease lapses without renewal. With `--buffer-dir` it says "buffering" instead
//! while writes are being stored on the device (200 with a lease while a backlog is
//! replayed, 503 without one).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::forward::Shared;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Answers one admin request.
pub async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n"));
    }
    let response = match request.uri().path() {
        "/healthz" if shared.liveness.is_alive() => text(StatusCode::OK, "ok\n"),
        "/healthz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy: the lease refresher has stopped\n",
        ),
        "/readyz" => match (shared.store.current(Instant::now()), &shared.buffer) {
            (Some(_), Some(buffer)) if !buffer.is_empty() => text(
                StatusCode::OK,
                "buffering: replaying stored writes to InfluxDB; new writes are stored behind them\n",
            ),
            (Some(_), _) => text(StatusCode::OK, "ready\n"),
            (None, Some(_)) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "buffering: no valid lease; writes are stored on this device until one is obtained\n",
            ),
            (None, None) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: no valid lease\n",
            ),
        },
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(shared.metrics.render())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz or /metrics\n",
        ),
    };
    Ok(response)
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

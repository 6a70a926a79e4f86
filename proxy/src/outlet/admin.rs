//! The outlet's admin listener: `/healthz`, `/readyz` (503 while draining) and
//! `/metrics` (Prometheus text), on its own address like the proxy's.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::server::Shared;

/// Probes and scrapes are tiny: a few at once is plenty.
const MAX_ADMIN_CONNECTIONS: usize = 16;

pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener, stop: CancellationToken) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            continue;
        };
        let shared = Arc::clone(&shared);
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(Arc::clone(&shared), request));
            let connection = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = stop.cancelled() => {}
            }
            drop(permit);
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD\n".into(),
        ));
    }
    Ok(match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" if shared.draining.load(Ordering::Relaxed) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: draining\n".into(),
        ),
        "/readyz" => text(StatusCode::OK, "ready\n".into()),
        "/metrics" => text(StatusCode::OK, render(&shared)),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz or /metrics\n".into(),
        ),
    })
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

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

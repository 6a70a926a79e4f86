//! The admin listener the control and the outlet share: probes and scrapes
//! (`/healthz`, `/readyz`, `/metrics`) over HTTP/1 on an address of their own. What
//! each path answers is the caller's; this crate only keeps the listener small and
//! safe to expose to an orchestrator: a few connections at once, a bounded wait for a
//! request head, and nothing that outlives the shutdown signal.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Probes and scrapes are tiny: a few at once is plenty; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a probe may take to send its request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An answer.
pub type Answer = Response<Full<Bytes>>;

/// Serves `answer(path)` for GET and HEAD on `listener` until `stop`; other methods get
/// 405. Connections are not tracked: a probe in progress never holds up a shutdown.
pub async fn serve<A, F>(listener: TcpListener, stop: CancellationToken, answer: A)
where
    A: Fn(String) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Answer> + Send + 'static,
{
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of file descriptors: the main listener logs that.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            continue;
        };
        let (answer, stop) = (answer.clone(), stop.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(answer.clone(), request));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
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

async fn respond<A, F>(answer: A, request: Request<Incoming>) -> Result<Answer, Infallible>
where
    A: Fn(String) -> F,
    F: Future<Output = Answer>,
{
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n"));
    }
    Ok(answer(request.uri().path().to_owned()).await)
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    with_type(status, body, "text/plain; charset=utf-8")
}

/// An answer of content type `content_type`.
pub fn with_type(status: StatusCode, body: impl Into<Bytes>, content_type: &'static str) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The answer to a path no endpoint serves.
pub fn not_found() -> Answer {
    text(
        StatusCode::NOT_FOUND,
        "not found: try /healthz, /readyz or /metrics\n",
    )
}

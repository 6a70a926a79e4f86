//! The request path: one client request in, one upstream request out, bodies streamed.
//!
//! Per request: one `ArcSwap` load and expiry check, the header/query rewrite (no
//! allocation unless `u`/`p` must go or a base path must be prefixed), a refcount clone
//! of the prebuilt `Authorization` value, and the pooled upstream call. Bodies are
//! `hyper::body::Incoming` passed straight through in both directions — never buffered,
//! never decoded — so `Content-Encoding: gzip` arrives byte for byte and an 8 MiB write
//! costs no more memory than a small one.
//!
//! The proxy's own answers are few and InfluxDB-shaped (see [`responses`]): 503 with
//! `Retry-After` when no valid credential is held (never a request without one), 502
//! when the upstream cannot be reached. Everything the upstream says — status,
//! `Retry-After`, error bodies — reaches the client verbatim.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::connector::{self, UpstreamClient};
use crate::metrics::Metrics;
use crate::responses::{self, ErrorCode, ProxyBody};
use crate::rewrite;
use crate::store::CredentialStore;

/// What every request handler shares.
#[derive(Debug)]
pub struct Shared {
    /// The current credential.
    pub store: Arc<CredentialStore>,
    /// The pooled upstream client.
    pub client: UpstreamClient,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
}

/// Answers one client request.
pub async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let response = forward(&shared, request).await;
    shared.metrics.record_status(response.status());
    Ok(response)
}

async fn forward(shared: &Shared, request: Request<Incoming>) -> Response<ProxyBody> {
    let now = Instant::now();
    // The snapshot is an owned `Arc`: no guard is held across the upstream call.
    let Some(credential) = shared.store.current(now) else {
        let retry_after = shared.store.retry_after_secs(now);
        debug!(retry_after, "no valid credential; answering 503");
        return responses::no_credential(retry_after);
    };
    let (mut parts, body) = request.into_parts();
    if parts.method == Method::CONNECT {
        return responses::error(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Invalid,
            "CONNECT is not supported: this proxy forwards InfluxDB requests only",
        );
    }
    let target = std::mem::take(&mut parts.uri).into_parts().path_and_query;
    parts.uri = match credential.upstream().target_uri(target) {
        Ok(uri) => uri,
        Err(error) => {
            return responses::error(
                StatusCode::BAD_REQUEST,
                ErrorCode::Invalid,
                &error.to_string(),
            );
        }
    };
    // The pooled client speaks HTTP/2 on its own when ALPN negotiates it.
    parts.version = Version::HTTP_11;
    rewrite::prepare_request_headers(&mut parts.headers);
    parts
        .headers
        .insert(AUTHORIZATION, credential.header().clone());
    let generation = credential.generation();
    drop(credential);

    let started = Instant::now();
    match shared
        .client
        .request(Request::from_parts(parts, body))
        .await
    {
        Ok(response) => {
            shared.metrics.observe_upstream_latency(started.elapsed());
            if response.status() == StatusCode::UNAUTHORIZED
                && shared.store.request_renewal(generation)
            {
                info!(generation, "upstream answered 401; lease renewal requested");
            }
            let (mut parts, body) = response.into_parts();
            rewrite::prepare_response_headers(&mut parts.headers);
            parts.version = Version::HTTP_11;
            Response::from_parts(parts, Either::Left(body))
        }
        Err(error) => {
            let (unreachable, message) = connector::describe_error(&error);
            warn!(error = %message, "upstream request failed; answering 502");
            let code = if unreachable {
                ErrorCode::Unavailable
            } else {
                ErrorCode::Internal
            };
            responses::bad_gateway(code, &message)
        }
    }
}

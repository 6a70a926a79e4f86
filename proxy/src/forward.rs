//! The request path: one client request in, one upstream request out, bodies streamed.
//!
//! Per request: one `ArcSwap` load and expiry check, the header/query rewrite (no
//! allocation unless `u`/`p` must go or a base path must be prefixed), a refcount clone
//! of the prebuilt `Authorization` value, and the upstream call. Bodies are
//! `hyper::body::Incoming` passed straight through in both directions — never buffered,
//! never decoded — so `Content-Encoding: gzip` arrives byte for byte and an 8 MiB write
//! costs no more memory than a small one.
//!
//! **Two ways upstream.** A plain `http://` upstream asked by an HTTP/1 client goes over
//! the client connection's own upstream connection (see `dedicated.rs`: the fast path,
//! origin-form target and a prebuilt `Host`). The rest goes through the shared pooled
//! client: TLS upstreams, where ALPN may pick HTTP/2, and HTTP/2 clients, whose
//! concurrent requests on one connection a single HTTP/1 upstream connection could not
//! carry. Both answer alike, including their 502s.
//!
//! The proxy's own answers are few and InfluxDB-shaped (see [`responses`]): 503 with
//! `Retry-After` when no valid credential is held (never a request without one), 502
//! when the upstream cannot be reached. Everything the upstream says — status,
//! `Retry-After`, error bodies — reaches the client verbatim.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{AUTHORIZATION, HOST};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::connector::{self, PlainConnector, UpstreamClient};
use crate::dedicated::Dedicated;
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::responses::{self, ErrorCode, ProxyBody};
use crate::rewrite;
use crate::store::CredentialStore;
use crate::upstream::TargetError;

/// What every request handler shares.
#[derive(Debug)]
pub struct Shared {
    /// The current credential.
    pub store: Arc<CredentialStore>,
    /// The pooled upstream client: TLS upstreams and HTTP/2 clients.
    pub client: UpstreamClient,
    /// Opens the client connections' own upstream connections (plain `http://`).
    pub plain: PlainConnector,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// Whether the refresher still runs (`/healthz`).
    pub liveness: Arc<Liveness>,
}

/// What the requests of one client connection share: [`Shared`], and that connection's
/// own upstream connection. Made once per accepted connection (`proxy.rs`), so a request
/// costs one refcount increment for it, as it did for `Shared` alone.
pub struct ConnectionState {
    shared: Arc<Shared>,
    upstream: Dedicated<Incoming>,
}

impl ConnectionState {
    /// The state of a newly accepted connection: no upstream connection yet.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            upstream: Dedicated::default(),
        }
    }
}

/// Which way a request goes upstream.
enum Route {
    /// This client connection's own connection to this `http://` upstream.
    Dedicated(Authority),
    /// The shared pooled client.
    Pooled,
}

fn bad_target(error: TargetError) -> Response<ProxyBody> {
    responses::error(
        StatusCode::BAD_REQUEST,
        ErrorCode::Invalid,
        &error.to_string(),
    )
}

/// Answers one client request.
pub async fn handle(
    connection: Arc<ConnectionState>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let response = forward(&connection, request).await;
    connection.shared.metrics.record_status(response.status());
    Ok(response)
}

async fn forward(connection: &ConnectionState, request: Request<Incoming>) -> Response<ProxyBody> {
    let shared = &*connection.shared;
    let now = Instant::now();
    // The snapshot is an owned `Arc`: no guard is held across the upstream call.
    let Some(credential) = shared.store.current(now) else {
        let retry_after = shared.store.retry_after_secs(now);
        debug!(retry_after, "no valid credential; answering 503");
        if shared.store.not_member() {
            return responses::not_a_member(retry_after);
        }
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
    let upstream = credential.upstream();
    let target = std::mem::take(&mut parts.uri).into_parts().path_and_query;
    let path = match upstream.target_path(target) {
        Ok(path) => path,
        Err(error) => return bad_target(error),
    };
    rewrite::prepare_request_headers(&mut parts.headers);
    // The version is the client's: an HTTP/2 client connection multiplexes requests.
    let route = if !upstream.is_https() && parts.version != Version::HTTP_2 {
        // Origin form, as HTTP/1 wants it, with the `Host` the pooled client would set.
        parts.uri = Uri::from(path);
        parts.headers.insert(HOST, upstream.host_header().clone());
        Route::Dedicated(upstream.authority().clone())
    } else {
        parts.headers.remove(HOST);
        parts.uri = match upstream.absolute_uri(path) {
            Ok(uri) => uri,
            Err(error) => return bad_target(error),
        };
        Route::Pooled
    };
    // The pooled client speaks HTTP/2 on its own when ALPN negotiates it.
    parts.version = Version::HTTP_11;
    parts
        .headers
        .insert(AUTHORIZATION, credential.header().clone());
    let generation = credential.generation();
    drop(credential);

    let request = Request::from_parts(parts, body);
    let started = Instant::now();
    let result = match route {
        Route::Dedicated(authority) => connection
            .upstream
            .send(&shared.plain, &authority, request)
            .await
            .map_err(|error| error.describe()),
        Route::Pooled => shared
            .client
            .request(request)
            .await
            .map_err(|error| connector::describe_error(&error)),
    };
    match result {
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
        Err((unreachable, message)) => {
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

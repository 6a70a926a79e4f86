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
//! **Store and forward** (`--buffer-dir`, `buffer/`): line-protocol writes then take
//! `buffer::handle_write`, which reads the body whole so that a write InfluxDB cannot
//! take now can be stored; without the flag this costs one `Option` check.
//!
//! **Web pages are kept out first** (`browser.rs`): a request with a foreign `Host`, or
//! from a browser page whose origin is not allow-listed, gets 403 before anything else
//! is looked at; an allow-listed origin's preflight is answered here.
//!
//! The proxy's own answers are few and InfluxDB-shaped (see [`responses`]): 503 with
//! `Retry-After` when no valid credential is held (never a request without one), 502
//! when the upstream cannot be reached, 400/403/405 for what it will not forward. Each
//! leaves a keep-alive connection usable (`drain.rs`). Everything the upstream says —
//! status, `Retry-After`, error bodies — reaches the client verbatim, except CORS
//! headers for pages that are not allow-listed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD,
    AUTHORIZATION, HOST, ORIGIN, VARY,
};
use http::uri::Authority;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Either;
use hyper::body::{Body, Incoming};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::browser::{BrowserPolicy, Verdict};
use crate::buffer::{self, Buffer};
use crate::connector::{self, PlainConnector, UpstreamClient};
use crate::dedicated::Dedicated;
use crate::drain::{close_after, own_answer};
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::responses::{self, ErrorCode, ProxyBody};
use crate::rewrite;
use crate::store::CredentialStore;
use crate::timed_body::TimedBody;
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
    /// Which `Host` and `Origin` may reach the lease.
    pub browser: BrowserPolicy,
    /// Longest wait for the next part of a request body.
    pub body_read_timeout: Duration,
    /// Store and forward for writes (`--buffer-dir`); `None`: writes stream through.
    pub buffer: Option<Arc<Buffer>>,
}

/// What the requests of one client connection share: [`Shared`], and that connection's
/// own upstream connection. Made once per accepted connection (`proxy.rs`), so a request
/// costs one refcount increment for it, as it did for `Shared` alone.
pub struct ConnectionState {
    shared: Arc<Shared>,
    upstream: Dedicated<TimedBody>,
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
    // Header comparisons only; the origin is copied only when it is allow-listed.
    let cors_origin = match shared.browser.check(request.headers(), request.uri()) {
        Verdict::Allowed => None,
        Verdict::AllowedOrigin => request.headers().get(ORIGIN).cloned(),
        Verdict::Refused(refusal) => {
            debug!(
                ?refusal,
                "refused a request from a web page or to a foreign Host"
            );
            return answer(request, responses::forbidden(refusal.message())).await;
        }
    };
    if let Some(origin) = &cors_origin
        && request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    {
        let headers = request.headers();
        let preflight = responses::preflight(
            origin.clone(),
            headers.get(ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
            headers
                .get("access-control-request-private-network")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true")),
        );
        return answer(request, preflight).await;
    }
    // One `Option` check when the buffer is off: writes stream through as before.
    if let Some(buffer) = &shared.buffer
        && buffer::is_write(&request)
    {
        let mut response =
            buffer::handle_write(buffer, shared, request, cors_origin.is_some()).await;
        if let Some(origin) = cors_origin {
            allow_origin(response.headers_mut(), origin);
        }
        return response;
    }
    let now = Instant::now();
    // The snapshot is an owned `Arc`: no guard is held across the upstream call.
    let Some(credential) = shared.store.current(now) else {
        let retry_after = shared.store.retry_after_secs(now);
        debug!(retry_after, "no valid credential; answering 503");
        if shared.store.not_member() {
            return answer(request, responses::not_a_member(retry_after)).await;
        }
        return answer(request, responses::no_credential(retry_after)).await;
    };
    if request.method() == Method::CONNECT {
        return answer(
            request,
            responses::error(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::Invalid,
                "CONNECT is not supported: this proxy forwards InfluxDB requests only",
            ),
        )
        .await;
    }
    let (mut parts, body) = request.into_parts();
    // If the upstream call fails, whatever is left of the body is gone with it.
    let client_version = parts.version;
    let unread_body = client_version != Version::HTTP_2 && !body.is_end_stream();
    let upstream = credential.upstream();
    let target = std::mem::take(&mut parts.uri).into_parts().path_and_query;
    let path = match upstream.target_path(target) {
        Ok(path) => path,
        Err(error) => return own_answer(parts.version, body, bad_target(error)).await,
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
            Err(error) => return own_answer(parts.version, body, bad_target(error)).await,
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

    let request = Request::from_parts(parts, TimedBody::new(body, shared.body_read_timeout));
    let started = Instant::now();
    let result = match route {
        Route::Dedicated(authority) => connection
            .upstream
            .send(&shared.plain, &authority, request)
            .await
            .map_err(|failed| (failed.error.describe(), failed.unsent)),
        Route::Pooled => shared
            .client
            .request(request)
            .await
            .map_err(|error| (connector::describe_error(&error), None)),
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
            rewrite::prepare_response_headers(&mut parts.headers, cors_origin.is_some());
            if let Some(origin) = cors_origin {
                allow_origin(&mut parts.headers, origin);
            }
            parts.version = Version::HTTP_11;
            Response::from_parts(parts, Either::Left(body))
        }
        Err(((unreachable, message), unsent)) => {
            warn!(error = %message, "upstream request failed; answering 502");
            let code = if unreachable {
                ErrorCode::Unavailable
            } else {
                ErrorCode::Internal
            };
            let mut response = responses::bad_gateway(code, &message);
            match unsent {
                // Never sent (the fast path's refused connection): its body is still
                // ours to read, and the client's connection can stay open.
                Some(request) => {
                    let body = request.into_body().into_inner();
                    return own_answer(client_version, body, response).await;
                }
                None if unread_body => close_after(&mut response),
                None => {}
            }
            response
        }
    }
}

/// The proxy's own `response` to `request`, its body dealt with (see `drain.rs`).
async fn answer(request: Request<Incoming>, response: Response<ProxyBody>) -> Response<ProxyBody> {
    let version = request.version();
    own_answer(version, request.into_body(), response).await
}

/// Lets an allow-listed page read the answer, if the upstream did not say so itself.
fn allow_origin(headers: &mut http::HeaderMap, origin: HeaderValue) {
    if !headers.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
}

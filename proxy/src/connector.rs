//! Connecting to InfluxDB: the pooled client (HTTP/1.1 and, over TLS with ALPN, HTTP/2),
//! and the plain TCP connector behind the per-connection fast path (`dedicated.rs`).
//!
//! One pooled client is shared by the requests that do not take the fast path (TLS
//! upstreams, HTTP/2 clients); connections are pooled per upstream, so the TCP and TLS
//! handshakes are paid once, not per write. A second client of the same kind sends the
//! refresher's warm-up requests (`warmup.rs`). Every connector here is built by
//! [`http_connector`], so all paths resolve, connect and time out alike. Establishing a
//! connection (TCP *and* TLS) is bounded by one timeout: an upstream that accepts TCP but never finishes
//! the handshake must turn into a fast 502, not a hung request. Once connected there is
//! deliberately no request timeout: InfluxDB queries and large writes can legitimately
//! take long, and the client application owns that policy.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Empty;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use crate::timed_body::TimedBody;

type BoxError = Box<dyn StdError + Send + Sync>;

/// TCP, then TLS for `https` URIs, the whole connect bounded by one timeout.
pub type UpstreamConnector = TimeoutConnector<HttpsConnector<HttpConnector>>;

/// The client type used to reach InfluxDB.
pub type UpstreamClient = Client<UpstreamConnector, TimedBody>;

/// The client for the refresher's warm-up requests (bodiless: hyper's `Incoming` cannot
/// be built outside hyper, so it cannot share the request path's client).
pub type WarmupClient = Client<UpstreamConnector, Empty<Bytes>>;

/// Plain TCP to `http` upstreams, bounded by the connect timeout: the fast path's.
pub type PlainConnector = TimeoutConnector<HttpConnector>;

/// How long pooled idle connections to InfluxDB are kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The TCP connector every path uses: no Nagle delay, connect attempts time-bounded.
fn http_connector(connect_timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http
}

/// The connector of the pooled clients.
pub fn upstream_connector(
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
) -> UpstreamConnector {
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http_connector(connect_timeout));
    TimeoutConnector {
        inner: https,
        timeout: connect_timeout,
    }
}

/// Builds the shared upstream client.
pub fn upstream_client(connector: UpstreamConnector) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector)
}

/// Builds the warm-up client. It keeps no idle connection: it sends one request per
/// lease renewal, minutes apart, and a pooled connection would only sit there.
pub fn warmup_client(connector: UpstreamConnector) -> WarmupClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

/// Builds the fast path's plain TCP connector.
pub fn plain_connector(connect_timeout: Duration) -> PlainConnector {
    TimeoutConnector {
        inner: http_connector(connect_timeout),
        timeout: connect_timeout,
    }
}

/// The connection attempt (TCP + TLS) took too long.
#[derive(Debug, thiserror::Error)]
#[error("connecting to the upstream timed out after {0:?}")]
pub struct ConnectTimeout(Duration);

/// Bounds the whole connect of `inner` by `timeout`.
#[derive(Clone, Debug)]
pub struct TimeoutConnector<C> {
    inner: C,
    timeout: Duration,
}

impl<C> Service<Uri> for TimeoutConnector<C>
where
    C: Service<Uri>,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    // One allocation per new connection, not per request: connections are reused.
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(Box::new(ConnectTimeout(timeout)) as BoxError),
            }
        })
    }
}

/// Describes a pooled client's failure for the client and the log: whether it is worth
/// a retry (`unavailable`: the upstream could not be reached) and the causes joined.
pub fn describe_error(error: &hyper_util::client::legacy::Error) -> (bool, String) {
    // The legacy error's own text ("client error (Connect)") says nothing more.
    describe(error.is_connect(), error.source())
}

/// The message for a failure: whether the upstream could not be reached, then each cause
/// from `first` down.
pub fn describe(unreachable: bool, first: Option<&(dyn StdError + 'static)>) -> (bool, String) {
    let mut message = String::from(if unreachable {
        "cannot connect to the upstream InfluxDB"
    } else {
        "the upstream InfluxDB request failed"
    });
    let mut source = first;
    while let Some(cause) = source {
        let text = cause.to_string();
        // hyper repeats its inner error's text at each level; skip the echoes.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    (unreachable, message)
}

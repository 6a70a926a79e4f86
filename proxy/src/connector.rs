//! The pooled HTTP client to InfluxDB: HTTP/1.1 and, over TLS with ALPN, HTTP/2.
//!
//! One client is shared by all requests; connections are pooled per upstream, so the
//! TCP and TLS handshakes are paid once, not per write. Establishing a connection (TCP
//! *and* TLS) is bounded by one timeout: an upstream that accepts TCP but never finishes
//! the handshake must turn into a fast 502, not a hung request. Once connected there is
//! deliberately no request timeout: InfluxDB queries and large writes can legitimately
//! take long, and the client application owns that policy.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The client type used to reach InfluxDB.
pub type UpstreamClient = Client<TimeoutConnector<HttpsConnector<HttpConnector>>, Incoming>;

/// How long pooled idle connections to InfluxDB are kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the shared upstream client.
pub fn upstream_client(tls: rustls::ClientConfig, connect_timeout: Duration) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let connector = TimeoutConnector {
        inner: https,
        timeout: connect_timeout,
    };
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector)
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
    // One allocation per new connection, not per request: connections are pooled.
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

/// Describes an upstream failure for the client and the log: whether it is worth a
/// retry (`unavailable`: the upstream could not be reached) and the causes joined.
pub fn describe_error(error: &hyper_util::client::legacy::Error) -> (bool, String) {
    let mut message = String::from(if error.is_connect() {
        "cannot connect to the upstream InfluxDB"
    } else {
        "the upstream InfluxDB request failed"
    });
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // hyper repeats its inner error's text at each level; skip the echoes.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    (error.is_connect(), message)
}

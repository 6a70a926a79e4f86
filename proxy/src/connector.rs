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
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::outlet::{Dialer, OutletStream};
use crate::timed_body::TimedBody;

type BoxError = Box<dyn StdError + Send + Sync>;

/// TCP (or an outlet channel), then TLS for `https` URIs, the whole connect bounded by
/// one timeout.
pub type UpstreamConnector = TimeoutConnector<HttpsConnector<Transport>>;

/// The client type used to reach InfluxDB.
pub type UpstreamClient = Client<UpstreamConnector, TimedBody>;

/// The client for the refresher's warm-up requests (bodiless: hyper's `Incoming` cannot
/// be built outside hyper, so it cannot share the request path's client).
pub type WarmupClient = Client<UpstreamConnector, Empty<Bytes>>;

/// Plain TCP (or an outlet channel) to `http` upstreams, bounded by the connect timeout:
/// the fast path's.
pub type PlainConnector = TimeoutConnector<Transport>;

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
// Direct only: the tests' shorthand; the proxy itself picks its transport.
#[cfg_attr(not(test), allow(dead_code))]
pub fn upstream_connector(
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
) -> UpstreamConnector {
    upstream_connector_via(tls, connect_timeout, None)
}

/// The connector of the pooled clients, through `outlet` when given.
pub fn upstream_connector_via(
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
    outlet: Option<Dialer>,
) -> UpstreamConnector {
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(transport(connect_timeout, outlet));
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
#[cfg_attr(not(test), allow(dead_code))]
pub fn plain_connector(connect_timeout: Duration) -> PlainConnector {
    plain_connector_via(connect_timeout, None)
}

/// Builds the fast path's connector, through `outlet` when given.
pub fn plain_connector_via(connect_timeout: Duration, outlet: Option<Dialer>) -> PlainConnector {
    TimeoutConnector {
        inner: transport(connect_timeout, outlet),
        timeout: connect_timeout,
    }
}

fn transport(connect_timeout: Duration, outlet: Option<Dialer>) -> Transport {
    match outlet {
        Some(dialer) => Transport::Outlet(dialer),
        None => Transport::Tcp(http_connector(connect_timeout)),
    }
}

/// How upstream bytes travel: TCP to the URI's host, or a Noise channel to an outlet
/// (`outlet/`), whatever the URI says (its host still names InfluxDB in `Host`).
#[derive(Clone, Debug)]
pub enum Transport {
    /// Direct TCP.
    Tcp(HttpConnector),
    /// Through an outlet.
    Outlet(Dialer),
}

impl Service<Uri> for Transport {
    type Response = TransportStream;
    type Error = BoxError;
    // One allocation per new connection, not per request.
    type Future = Pin<Box<dyn Future<Output = Result<TransportStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Self::Tcp(http) => http.poll_ready(cx).map_err(Into::into),
            Self::Outlet(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        match self {
            Self::Tcp(http) => {
                let connecting = http.call(uri);
                Box::pin(async move {
                    connecting
                        .await
                        .map(TransportStream::Tcp)
                        .map_err(Into::into)
                })
            }
            Self::Outlet(dialer) => {
                let dialer = dialer.clone();
                Box::pin(async move {
                    dialer
                        .dial()
                        .await
                        .map(|stream| TransportStream::Outlet(Box::new(TokioIo::new(stream))))
                        .map_err(Into::into)
                })
            }
        }
    }
}

/// A connection made by [`Transport`].
pub enum TransportStream {
    /// Direct TCP.
    Tcp(TokioIo<TcpStream>),
    /// A channel to an outlet (boxed: its buffers and keys make it large).
    Outlet(Box<TokioIo<OutletStream>>),
}

impl Connection for TransportStream {
    fn connected(&self) -> Connected {
        match self {
            Self::Tcp(tcp) => tcp.connected(),
            Self::Outlet(_) => Connected::new(),
        }
    }
}

impl hyper::rt::Read for TransportStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_read(cx, buf),
            Self::Outlet(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for TransportStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_write(cx, buf),
            Self::Outlet(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_flush(cx),
            Self::Outlet(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_shutdown(cx),
            Self::Outlet(io) => Pin::new(io).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(io) => io.is_write_vectored(),
            Self::Outlet(io) => io.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Self::Outlet(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
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

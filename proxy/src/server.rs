//! Accepting and serving client connections, with a connection limit and graceful drain.
//!
//! One accept loop per listener. Each connection is served by hyper-util's `auto`
//! builder (HTTP/1.1, and HTTP/2 with prior knowledge) in its own task on a shared
//! [`TaskTracker`]. On shutdown the loop stops accepting and drops the listener; each
//! connection is told to shut down gracefully (finish the request in flight, then close
//! — hyper's `graceful_shutdown`), and the caller waits for the tracker within the grace
//! period before cancelling `deadline`, which closes whatever is left.
//!
//! **Limits.** A new connection first waits for its first byte in the lobby
//! (`lobby.rs`), outside the connection limit, for at most the first-byte timeout; a
//! full lobby lets its longest waiter go. Then a semaphore caps concurrent connections;
//! a connection over the cap is closed at once with a warning, rather than queued, so an
//! overloaded sidecar fails fast and visibly. Request heads are bounded by hyper's read
//! buffer (`max_buf_size`: oversized heads get `431`) and must arrive within the header
//! read timeout. The same buffer size sets how much of a large body moves per read (see
//! `Config`).
//!
//! **Quiet connections.** A connection that moves no byte for the idle timeout is
//! closed gracefully (`idle.rs`); HTTP/2 connections are pinged while quiet and closed
//! when a ping goes unanswered; request bodies must keep coming (`timed_body.rs`).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, warn};

use crate::config::Config;
use crate::connector::PlainConnector;
use crate::h1::{FastPath, Rewind, Served};
use crate::idle::{Activity, Tracked};
use crate::lobby::Lobby;
use crate::metrics::Metrics;

/// Least time between two warnings that silent connections are being evicted.
const EVICTION_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// An HTTP server builder with the configured limits.
pub fn http_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(config.http2_keepalive_interval)
        .keep_alive_timeout(config.http2_keepalive_timeout)
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// One listener's accept loop and what its connections need.
pub struct Server<F> {
    /// Which listener this is, for logs.
    pub name: &'static str,
    /// The listener.
    pub listener: TcpListener,
    /// Makes the service of one accepted connection. A factory rather than a `Clone`
    /// service: the proxy's service carries per-connection state (its own upstream
    /// connection, see `dedicated.rs`), which a clone would share, or would have to
    /// drop by surprise.
    pub new_service: F,
    /// Protocol settings.
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    /// Connection slots, shared by every accept loop of the listener's kind (on every
    /// thread).
    pub limit: Arc<Semaphore>,
    /// How many new connections this loop lets wait for their first byte (`lobby.rs`).
    pub lobby_seats: usize,
    /// Where refused connections are counted.
    pub metrics: Arc<Metrics>,
    /// How long a new connection may take to send its first byte.
    pub first_byte_timeout: Duration,
    /// How long a connection may move no byte before it is closed gracefully.
    pub idle_timeout: Duration,
    /// The HTTP/1 fast path (`h1/`), which serves a connection until it sends something
    /// for hyper; `None`: hyper serves every connection.
    pub fast: Option<Arc<FastPath<PlainConnector>>>,
}

impl<F, S, B> Server<F>
where
    F: Fn() -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    /// Accepts until `shutdown`; connection tasks go to `tracker` and are closed by
    /// force when `deadline` is cancelled.
    pub async fn run(
        self,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        deadline: CancellationToken,
    ) {
        let capacity = self.limit.available_permits();
        let mut lobby = Lobby::new(self.lobby_seats);
        let mut last_eviction_warning: Option<Instant> = None;
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(listener = self.name, %error, "accept failed");
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                        }
                    }
                },
            };
            let Some((seat, evicted)) = lobby.admit(&shutdown).await else {
                break;
            };
            if evicted {
                // Visible, but once per interval: under a flood this fires per accept.
                let now = Instant::now();
                if last_eviction_warning.is_none_or(|at| now - at >= EVICTION_WARNING_INTERVAL) {
                    last_eviction_warning = Some(now);
                    warn!(
                        listener = self.name,
                        waiting = self.lobby_seats,
                        "too many connections waiting for their first byte; closing the longest-waiting ones"
                    );
                }
            }
            let _ = stream.set_nodelay(true);
            let builder = Arc::clone(&self.builder);
            let limit = Arc::clone(&self.limit);
            let metrics = Arc::clone(&self.metrics);
            let service = (self.new_service)();
            let fast = self.fast.clone();
            let shutdown = shutdown.clone();
            let deadline = deadline.clone();
            let (name, first_byte_timeout, idle_timeout) =
                (self.name, self.first_byte_timeout, self.idle_timeout);
            let span = debug_span!("conn", listener = self.name, %peer);
            tracker.spawn(
                async move {
                    let mut first = [0u8; 1];
                    let spoke = tokio::select! {
                        biased;
                        () = seat.evicted.cancelled() => {
                            debug!("closed: the lobby was full and it had waited longest for a first byte");
                            return;
                        }
                        () = shutdown.cancelled() => return,
                        peeked = tokio::time::timeout(first_byte_timeout, stream.peek(&mut first)) => peeked,
                    };
                    // Out of the lobby: the seat is free and the entry stale.
                    seat.evicted.cancel();
                    drop(seat.permit);
                    match spoke {
                        Ok(Ok(n)) if n > 0 => {}
                        Ok(Ok(_)) => return,
                        Ok(Err(error)) => {
                            debug!(%error, "connection failed before its first byte");
                            return;
                        }
                        Err(_) => {
                            debug!(timeout = ?first_byte_timeout, "no first byte in time; closing");
                            return;
                        }
                    }
                    let Ok(_permit) = limit.try_acquire_owned() else {
                        warn!(listener = name, %peer, limit = capacity, "connection limit reached; closing the new connection");
                        metrics.connection_rejected();
                        return;
                    };
                    let mut stream = stream;
                    let prefix = match fast {
                        Some(fast) => match fast.serve(&mut stream, &shutdown, &deadline).await {
                            Served::Closed => return,
                            Served::Handoff(prefix) => prefix,
                        },
                        None => bytes::BytesMut::new(),
                    };
                    let stream = Rewind::new(prefix, stream);
                    serve(builder, stream, service, idle_timeout, shutdown, deadline).await;
                }
                .instrument(span),
            );
        }
        debug!(listener = self.name, "stopped accepting");
    }
}

impl<F, S, B> crate::shard::Serve for Server<F>
where
    F: Fn() -> S + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    fn serve(
        self,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        deadline: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        self.run(tracker, shutdown, deadline)
    }
}

/// Serves one connection until it ends, goes quiet for `idle_timeout` (then gracefully),
/// or shutdown (gracefully, then by force at `deadline`).
async fn serve<I, S, B>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: I,
    service: S,
    idle_timeout: Duration,
    shutdown: CancellationToken,
    deadline: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let activity = Activity::new();
    let io = TokioIo::new(Tracked::new(stream, activity.clone()));
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    // `closing`: graceful shutdown asked; `stopping`: for the proxy's shutdown.
    let (mut closing, mut stopping) = (false, false);
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                if !closing {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            () = deadline.cancelled(), if stopping => {
                debug!("closed at the shutdown deadline");
                return;
            }
            () = activity.quiet_for(idle_timeout), if !closing => {
                debug!(timeout = ?idle_timeout, "connection idle; closing it");
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(error) = result {
        debug!(%error, "connection ended with an error");
    }
}

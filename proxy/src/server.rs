//! Accepting and serving client connections, with a connection limit and graceful drain.
//!
//! One accept loop per listener. Each connection is served by hyper-util's `auto`
//! builder (HTTP/1.1, and HTTP/2 with prior knowledge) in its own task on a shared
//! [`TaskTracker`]. On shutdown the loop stops accepting and drops the listener; each
//! connection is told to shut down gracefully (finish the request in flight, then close
//! — hyper's `graceful_shutdown`), and the caller waits for the tracker within the grace
//! period before cancelling `deadline`, which closes whatever is left.
//!
//! **Limits.** A semaphore caps concurrent connections; a connection over the cap is
//! closed at once with a warning, rather than queued, so an overloaded sidecar fails
//! fast and visibly. Request heads are bounded by hyper's read buffer (`max_buf_size`:
//! oversized heads get `431`) and must arrive within the header read timeout. The same
//! buffer size sets how much of a large body moves per read (see `Config`).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, warn};

use crate::config::Config;
use crate::metrics::Metrics;

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
    /// Connection slots.
    pub limit: Arc<Semaphore>,
    /// Where refused connections are counted.
    pub metrics: Arc<Metrics>,
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
            let Ok(permit) = Arc::clone(&self.limit).try_acquire_owned() else {
                warn!(listener = self.name, %peer, limit = capacity, "connection limit reached; closing the new connection");
                self.metrics.connection_rejected();
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let builder = Arc::clone(&self.builder);
            let service = (self.new_service)();
            let shutdown = shutdown.clone();
            let deadline = deadline.clone();
            let span = debug_span!("conn", listener = self.name, %peer);
            tracker.spawn(
                async move {
                    let _permit = permit;
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(connection);
                    let result = tokio::select! {
                        result = connection.as_mut() => result,
                        () = shutdown.cancelled() => {
                            connection.as_mut().graceful_shutdown();
                            tokio::select! {
                                result = connection.as_mut() => result,
                                () = deadline.cancelled() => {
                                    debug!("closed at the shutdown deadline");
                                    return;
                                }
                            }
                        }
                    };
                    if let Err(error) = result {
                        debug!(%error, "connection ended with an error");
                    }
                }
                .instrument(span),
            );
        }
        debug!(listener = self.name, "stopped accepting");
    }
}

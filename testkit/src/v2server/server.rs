//! The running server: shared state (store, injected failures, request counter) and
//! the accept loop. One `CancellationToken` stops the loop and every connection
//! (hyper-util graceful shutdown, with a deadline); a `TaskTracker` lets `stop` wait.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::routes;
use super::store::Store;

/// How long a connection may finish in-flight requests after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// State shared by the handle and every connection. The store lock is never held across
/// an `.await`.
pub(crate) struct Shared {
    store: Mutex<Store>,
    failing: AtomicBool,
    fail_until: Mutex<Option<Instant>>,
    /// Requests still to fail, counted down by each request (see `fail_next`).
    fail_next: AtomicU64,
    requests: AtomicU64,
}

impl Shared {
    pub(crate) fn new(store: Store) -> Self {
        Self {
            store: Mutex::new(store),
            failing: AtomicBool::new(false),
            fail_until: Mutex::new(None),
            fail_next: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    /// Runs `f` with the store locked. A panic in another holder (a failed test
    /// assertion) does not poison the server for the rest of the test.
    pub(crate) fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut store)
    }

    /// Whether requests should be answered with 503 right now.
    pub(crate) fn failing(&self) -> bool {
        if self.failing.load(Ordering::SeqCst) {
            return true;
        }
        let counted = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if counted.is_ok() {
            return true;
        }
        let until = self
            .fail_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        until.is_some_and(|t| Instant::now() < t)
    }

    pub(crate) fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
        if !failing {
            self.fail_next.store(0, Ordering::SeqCst);
            *self
                .fail_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    pub(crate) fn fail_next(&self, requests: u64) {
        self.fail_next.store(requests, Ordering::SeqCst);
    }

    pub(crate) fn fail_for(&self, duration: Duration) {
        *self
            .fail_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + duration);
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Accepts connections until `cancel` fires; each connection runs on `tracker`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                // Out of file descriptors and the like: back off, keep serving.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let shared = Arc::clone(&shared);
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { routes::handle(&shared, req).await }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                }
            }
        });
    }
}

//! Wiring: the refresher, the proxy listener and the admin listener under one
//! shutdown token, and the handle the CLI and tests hold while it runs.
//!
//! The caller binds (so tests can use port 0 and read the address back) and owns the
//! [`CancellationToken`]; [`start`] spawns everything and returns a [`Running`] handle.
//! The proxy listener accepts from the start — before the first lease it answers 503
//! with `Retry-After`, which InfluxDB clients retry — while [`Running::ready`] (and
//! `/readyz`) resolve only once the first lease is installed.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::ValidConfig;
use crate::error::ProxyError;
use crate::forward::{ConnectionState, Shared};
use crate::metrics::Metrics;
use crate::refresher::Refresher;
use crate::server::{Server, http_builder};
use crate::source::LeaseSource;
use crate::store::CredentialStore;
use crate::warmup::Warmup;
use crate::{admin, connector, forward, outlet};

/// Concurrent admin connections (probes and scrapes are few and short).
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// A started proxy.
#[derive(Debug)]
pub struct Running {
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
    ready: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Where the application should send requests.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Resolves once the first lease is installed; fails if the proxy stopped first.
    pub async fn ready(&mut self) -> Result<(), ProxyError> {
        self.ready
            .wait_for(|ready| *ready)
            .await
            .map(|_| ())
            .map_err(|_| ProxyError::StoppedBeforeReady)
    }

    /// Resolves when the proxy has stopped: shutdown was requested and in-flight
    /// requests drained (or the grace period ran out).
    pub async fn wait(self) -> Result<(), ProxyError> {
        self.task.await.map_err(|e| ProxyError::Task(e.to_string()))
    }
}

/// Starts the proxy on already-bound listeners; it runs until `shutdown` is cancelled.
/// Must be called inside a Tokio runtime.
pub fn start<S: LeaseSource>(
    config: ValidConfig,
    source: S,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> Result<Running, ProxyError> {
    let proxy_addr = listener.local_addr().map_err(ProxyError::LocalAddr)?;
    let admin_addr = admin.local_addr().map_err(ProxyError::LocalAddr)?;
    let ValidConfig {
        config,
        upstream,
        tls,
        browser,
    } = config;

    let store = Arc::new(CredentialStore::new());
    let metrics = Arc::new(Metrics::new());
    // Through an outlet, when configured: the same clients, another transport.
    let outlet = config.outlet.clone().map(|route| {
        outlet::Dialer::new(route, Arc::clone(&store), config.upstream_connect_timeout)
    });
    let connector =
        connector::upstream_connector_via(tls, config.upstream_connect_timeout, outlet.clone());
    let warmup = Warmup::new(connector::warmup_client(connector.clone()));
    let shared = Arc::new(Shared {
        store: Arc::clone(&store),
        client: connector::upstream_client(connector),
        plain: connector::plain_connector_via(config.upstream_connect_timeout, outlet),
        metrics: Arc::clone(&metrics),
        liveness: Arc::default(),
        browser,
        body_read_timeout: config.body_read_timeout,
    });
    let ready = store.subscribe_ready();
    let builder = Arc::new(http_builder(&config));

    let proxy_server = {
        let shared = Arc::clone(&shared);
        Server {
            name: "proxy",
            listener,
            // Per accepted connection: its own state (and upstream connection), one `Arc`
            // that each of its requests clones.
            new_service: move || {
                let connection = Arc::new(ConnectionState::new(Arc::clone(&shared)));
                service_fn(move |request| forward::handle(Arc::clone(&connection), request))
            },
            builder: Arc::clone(&builder),
            limit: Arc::new(Semaphore::new(config.max_connections)),
            metrics: Arc::clone(&metrics),
            first_byte_timeout: config.first_byte_timeout,
            idle_timeout: config.idle_timeout,
        }
    };
    let admin_server = {
        let shared = Arc::clone(&shared);
        Server {
            name: "admin",
            listener: admin,
            new_service: move || {
                let shared = Arc::clone(&shared);
                service_fn(move |request| admin::handle(Arc::clone(&shared), request))
            },
            builder,
            limit: Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS)),
            metrics: Arc::clone(&metrics),
            first_byte_timeout: config.first_byte_timeout,
            idle_timeout: config.idle_timeout,
        }
    };
    let refresher = Refresher::new(source, store, upstream, warmup, metrics);
    let grace = config.shutdown_grace;

    info!(%proxy_addr, %admin_addr, upstream = ?config.upstream, "proxy starting");
    let task = tokio::spawn(async move {
        let tracker = TaskTracker::new();
        let deadline = CancellationToken::new();
        let alive = shared.liveness.guard(shutdown.clone());
        let refresher_shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _alive = alive;
            refresher.run(refresher_shutdown).await;
        });
        tracker.spawn(admin_server.run(tracker.clone(), shutdown.clone(), deadline.clone()));
        proxy_server
            .run(tracker.clone(), shutdown.clone(), deadline.clone())
            .await;
        tracker.close();
        info!(in_flight = tracker.len(), grace = ?grace, "shutting down: draining connections");
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!(
                remaining = tracker.len(),
                "grace period over; closing remaining connections"
            );
            deadline.cancel();
            tracker.wait().await;
        }
        drop(shared);
        info!("proxy stopped");
    });
    Ok(Running {
        proxy_addr,
        admin_addr,
        ready,
        task,
    })
}

/// Binds the configured addresses and runs the proxy until `shutdown` is cancelled.
pub async fn run<S: LeaseSource>(
    config: ValidConfig,
    source: S,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    let listener = bind(config.listen()).await?;
    let admin = bind(config.admin_listen()).await?;
    start(config, source, listener, admin, shutdown)?
        .wait()
        .await
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Bind { addr, source })
}

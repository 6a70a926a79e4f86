//! Wiring: the refresher, the proxy listener and the admin listener under one
//! shutdown token, and the handle the CLI and tests hold while it runs.
//!
//! The caller binds (so tests can use port 0 and read the address back) and owns the
//! [`CancellationToken`]; [`start`] spawns everything and returns a [`Running`] handle.
//! The proxy listener accepts from the start — before the first lease it answers 503
//! with `Retry-After`, which InfluxDB clients retry — while [`Running::ready`] (and
//! `/readyz`) resolve only once the first lease is installed.
//!
//! Each listener (the CLI's default is both loopbacks) gets its own accept loop; they
//! share the connection limit. With `Config::threads` above 1, each further thread runs
//! an accept loop of its own per proxy listener (`shard.rs`); the admin listener, the
//! refresher and everything else stay on the caller's runtime. On shutdown, once
//! requests drained, the leases the refresher still holds are revoked within what is
//! left of the grace period, so a stopped sidecar leaves no live credential behind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::buffer::Buffer;
use crate::config::{ListenAddr, ValidConfig};
use crate::error::ProxyError;
use crate::forward::{ConnectionState, Shared};
use crate::h1::FastPath;
use crate::metrics::Metrics;
use crate::refresher::Refresher;
use crate::server::{Server, http_builder};
use crate::shard::{self, Shard};
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
/// Must be called inside a Tokio runtime. With `Config::threads` above 1, proxy
/// listeners bound by [`bind_all`] with `shared` are joined by the further threads'
/// own sockets; others are shared by duplicating them.
pub fn start<S: LeaseSource>(
    config: ValidConfig,
    source: S,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> Result<Running, ProxyError> {
    start_on(config, source, vec![listener], vec![admin], shutdown)
}

/// [`start`] with any number of proxy and admin listeners (say both loopbacks); the
/// first of each is the one [`Running`] reports.
pub fn start_on<S: LeaseSource>(
    config: ValidConfig,
    source: S,
    listeners: Vec<TcpListener>,
    admins: Vec<TcpListener>,
    shutdown: CancellationToken,
) -> Result<Running, ProxyError> {
    let first = |listeners: &[TcpListener]| {
        listeners
            .first()
            .ok_or_else(|| ProxyError::LocalAddr(std::io::Error::other("no listener to start on")))?
            .local_addr()
            .map_err(ProxyError::LocalAddr)
    };
    let proxy_addr = first(&listeners)?;
    let admin_addr = first(&admins)?;
    let ValidConfig {
        config,
        upstream,
        tls,
        browser,
    } = config;

    let store = Arc::new(CredentialStore::new());
    let mut metrics = Metrics::new();
    // Through an outlet, when configured: the same clients, another transport.
    let outlet = config.outlet.clone().map(|route| {
        outlet::Dialer::new(route, Arc::clone(&store), config.upstream_connect_timeout)
    });
    let connector =
        connector::upstream_connector_via(tls, config.upstream_connect_timeout, outlet.clone());
    // Replays go the same way as live writes (through the outlet, when there is one).
    let buffer = match config.buffer.clone() {
        Some(settings) => {
            let buffer = Buffer::open(settings, connector.clone())?;
            metrics.register_buffer(Arc::clone(buffer.stats()));
            Some(buffer)
        }
        None => None,
    };
    let metrics = Arc::new(metrics);
    let warmup = Warmup::new(connector::warmup_client(connector.clone()));
    let shared = Arc::new(Shared {
        store: Arc::clone(&store),
        client: connector::upstream_client(connector),
        plain: connector::plain_connector_via(config.upstream_connect_timeout, outlet),
        metrics: Arc::clone(&metrics),
        liveness: Arc::default(),
        browser,
        body_read_timeout: config.body_read_timeout,
        buffer: buffer.clone(),
    });
    let ready = store.subscribe_ready();
    let builder = Arc::new(http_builder(&config));
    // The HTTP/1 fast path (`h1/`), for direct upstreams. Store and forward reads write
    // bodies whole, and the outlet's transport has its own tests on hyper's path: both
    // keep hyper for every request.
    let fast = (config.buffer.is_none() && config.outlet.is_none()).then(|| {
        Arc::new(FastPath {
            shared: Arc::clone(&shared),
            dial: shared.plain.clone(),
            max_head: config.max_header_bytes,
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
        })
    });

    // One accept loop per listener and thread; all share the connection limit, and
    // each gets its share of the lobby (see `shard.rs`).
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let threads = config.threads;
    let proxy_server = |listener: TcpListener| {
        let shared = Arc::clone(&shared);
        Server {
            name: "proxy",
            listener,
            // Per accepted connection: its own state (and upstream connection), one
            // `Arc` that each of its requests clones.
            new_service: move || {
                let connection = Arc::new(ConnectionState::new(Arc::clone(&shared)));
                service_fn(move |request| forward::handle(Arc::clone(&connection), request))
            },
            builder: Arc::clone(&builder),
            limit: Arc::clone(&limit),
            lobby_seats: config.max_connections.div_ceil(threads),
            metrics: Arc::clone(&metrics),
            first_byte_timeout: config.first_byte_timeout,
            idle_timeout: config.idle_timeout,
            fast: fast.clone(),
        }
    };
    let shards = (1..threads)
        .map(|_| {
            Shard::new(|| {
                listeners
                    .iter()
                    .map(|listener| shard::join(listener).map(proxy_server))
                    .collect()
            })
            .map_err(ProxyError::Thread)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let proxy_servers: Vec<_> = listeners.into_iter().map(proxy_server).collect();
    let admin_limit = Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS));
    let admin_servers: Vec<_> = admins
        .into_iter()
        .map(|listener| {
            let shared = Arc::clone(&shared);
            Server {
                name: "admin",
                listener,
                new_service: move || {
                    let shared = Arc::clone(&shared);
                    service_fn(move |request| admin::handle(Arc::clone(&shared), request))
                },
                builder: Arc::clone(&builder),
                limit: Arc::clone(&admin_limit),
                lobby_seats: ADMIN_MAX_CONNECTIONS,
                metrics: Arc::clone(&metrics),
                first_byte_timeout: config.first_byte_timeout,
                idle_timeout: config.idle_timeout,
                fast: None,
            }
        })
        .collect();
    let refresher = Refresher::new(source, store, upstream, warmup, metrics);
    let grace = config.shutdown_grace;

    // Values as an operator reads them: the URL itself (credentials redacted), not
    // `Some("...")`; durations in seconds.
    let upstream_text = config.upstream.as_deref().map_or_else(
        || "the lease's endpoint".to_owned(),
        crate::upstream::redact_url,
    );
    info!(%proxy_addr, %admin_addr, upstream = %upstream_text, threads, "proxy starting");
    let tracker = TaskTracker::new();
    let deadline = CancellationToken::new();
    // The further threads start accepting at once, as the first one does below. Their
    // own token, so that a thread that cannot start stops those started before it.
    let shards_shutdown = shutdown.child_token();
    for (index, shard) in shards.into_iter().enumerate() {
        if let Err(error) = shard.start(
            index + 1,
            &tracker,
            shards_shutdown.clone(),
            deadline.clone(),
        ) {
            shards_shutdown.cancel();
            return Err(ProxyError::Thread(error));
        }
    }
    let task = tokio::spawn(async move {
        // Should this task be dropped rather than finish (its runtime shut down), the
        // further threads stop accepting too.
        let _shards = shards_shutdown.drop_guard();
        let alive = shared.liveness.guard(shutdown.clone());
        let refresher_shutdown = shutdown.clone();
        let refresher = tracker.spawn(async move {
            let _alive = alive;
            refresher.run_and_hand_back(refresher_shutdown).await
        });
        if let Some(buffer) = buffer {
            tracker.spawn(buffer.replay(Arc::clone(&shared.store), shutdown.clone()));
        }
        for server in admin_servers {
            tracker.spawn(server.run(tracker.clone(), shutdown.clone(), deadline.clone()));
        }
        for server in proxy_servers {
            tracker.spawn(server.run(tracker.clone(), shutdown.clone(), deadline.clone()));
        }
        shutdown.cancelled().await;
        tracker.close();
        let stopping = tokio::time::Instant::now();
        info!(
            in_flight = tracker.len(),
            grace_secs = grace.as_secs_f64(),
            "shutting down: draining connections"
        );
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!(
                remaining = tracker.len(),
                "grace period over; closing remaining connections"
            );
            deadline.cancel();
            tracker.wait().await;
        }
        // Only now, with no request left that could use them.
        if let Ok((source, held)) = refresher.await {
            let left = grace.saturating_sub(stopping.elapsed());
            release_leases(source, held, left.max(RELEASE_MIN)).await;
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

/// Least time given to revoking the held leases at shutdown, even when draining used
/// the whole grace period (the CLI's watchdog allows a few seconds past it).
const RELEASE_MIN: Duration = Duration::from_secs(1);

/// Revokes the leases still held, within `budget`: a scaled-down sidecar leaves no
/// live credential behind. Best effort: a lease not revoked ends at its expiry.
async fn release_leases<S: LeaseSource>(mut source: S, held: Vec<String>, budget: Duration) {
    if held.is_empty() {
        return;
    }
    match tokio::time::timeout(budget, source.release(&held)).await {
        Ok(Ok(())) => info!(leases = held.len(), "revoked the leases held"),
        Ok(Err(error)) => {
            warn!(%error, leases = held.len(), "could not revoke the leases held; they end at their expiry")
        }
        Err(_) => warn!(
            budget = ?budget,
            leases = held.len(),
            "revoking the leases held took too long; they end at their expiry"
        ),
    }
}

/// Binds the configured addresses and runs the proxy until `shutdown` is cancelled.
pub async fn run<S: LeaseSource>(
    config: ValidConfig,
    source: S,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    let shared = config.config().threads > 1;
    let listeners = bind_all(config.listen(), &config.config().extra_listen, shared).await?;
    let admins = bind_all(
        config.admin_listen(),
        &config.config().extra_admin_listen,
        false,
    )
    .await?;
    start_on(config, source, listeners, admins, shutdown)?
        .wait()
        .await
}

/// Binds `first` and each of `extra`; an optional address the host cannot bind (no
/// IPv6 loopback) is skipped with a warning, unless it is in use or forbidden, which
/// would be just as wrong for the first address. `shared`: so that further threads of
/// this process can bind them too (`SO_REUSEPORT`, for proxy listeners with
/// `Config::threads` above 1); an address some other process holds is still refused.
pub async fn bind_all(
    first: SocketAddr,
    extra: &[ListenAddr],
    shared: bool,
) -> Result<Vec<TcpListener>, ProxyError> {
    let mut listeners = vec![bind(first, shared).await?];
    for listen in extra {
        match bind(listen.addr, shared).await {
            Ok(listener) => listeners.push(listener),
            Err(ProxyError::Bind { addr, source })
                if listen.optional
                    && !matches!(
                        source.kind(),
                        std::io::ErrorKind::AddrInUse | std::io::ErrorKind::PermissionDenied
                    ) =>
            {
                warn!(%addr, error = %source, "not listening on this address: the host cannot bind it");
            }
            Err(error) => return Err(error),
        }
    }
    Ok(listeners)
}

async fn bind(addr: SocketAddr, shared: bool) -> Result<TcpListener, ProxyError> {
    let bound = if shared {
        shard::bind_shared(addr)
    } else {
        TcpListener::bind(addr).await
    };
    bound.map_err(|source| ProxyError::Bind { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_optional_address_the_host_lacks_is_skipped_not_fatal() {
        let first = SocketAddr::from(([127, 0, 0, 1], 0));
        // A documentation address no host has.
        let absent: SocketAddr = "[2001:db8::1]:0".parse().unwrap();
        let optional = ListenAddr {
            addr: absent,
            optional: true,
        };
        let bound = bind_all(first, &[optional], false).await.unwrap();
        assert_eq!(bound.len(), 1);
        assert!(bound[0].local_addr().unwrap().ip().is_loopback());

        let required = ListenAddr {
            optional: false,
            ..optional
        };
        let error = bind_all(first, &[required], false).await.unwrap_err();
        assert!(error.to_string().contains("2001:db8::1"), "{error}");
    }

    #[tokio::test]
    async fn an_optional_address_in_use_is_still_an_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let optional = ListenAddr {
            addr: taken.local_addr().unwrap(),
            optional: true,
        };
        let first = SocketAddr::from(([127, 0, 0, 1], 0));
        for shared in [false, true] {
            assert!(matches!(
                bind_all(first, &[optional], shared).await,
                Err(ProxyError::Bind { .. })
            ));
        }
    }

    #[tokio::test]
    async fn an_address_another_process_binds_for_sharing_is_still_in_use() {
        // What a second sidecar on the same address would meet: the first one's socket
        // allows `SO_REUSEPORT`, and so would the second's, but it is refused all the same.
        let first = SocketAddr::from(([127, 0, 0, 1], 0));
        let taken = bind_all(first, &[], true).await.unwrap();
        let addr = taken[0].local_addr().unwrap();
        match bind_all(addr, &[], true).await {
            Err(ProxyError::Bind { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
            }
            other => panic!("expected the address to be in use, got {other:?}"),
        }
    }
}

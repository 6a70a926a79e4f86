//! The outlet: accepts Noise channels from sidecars, admits current members only, and
//! relays each admitted channel to the private InfluxDB as one TCP connection.
//!
//! Admission is offline: the first message must be a membership credential signed by
//! the control (whose key the outlet pinned when it enrolled), unexpired, about the
//! channel's authenticated identity, with the `--allow` attributes. The channel lives
//! only as long as its credential: each renewal the sidecar sends on it pushes the
//! deadline out; when the deadline passes unrenewed (a deleted member gets no lease,
//! so no credential) the channel is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leasehold_channel::conn::Channel;
use leasehold_channel::membership::Membership;
use leasehold_channel::{Identity, PublicIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use zeroize::{Zeroize, Zeroizing};

use super::admin;
use super::stream::{ChannelStream, Hooks};
use super::tunnel::{CHUNK, MAX_MESSAGE, MEMBERSHIP, REFUSED, TunnelError};

/// Outlet settings as given by the CLI.
#[derive(Debug, Clone)]
pub struct OutletConfig {
    /// The InfluxDB to relay to, `http://HOST:PORT` (bytes are relayed as they are, so
    /// an `https` InfluxDB works too: TLS then runs end to end from the sidecar).
    pub upstream: String,
    /// Attributes every admitted member must have (`--allow KEY=VALUE`).
    pub allow: Vec<(String, String)>,
    /// Most concurrent channels; further connections are closed at once.
    pub max_connections: usize,
    /// How long a sidecar has for the handshake and its credential.
    pub handshake_timeout: Duration,
    /// How long connecting to InfluxDB may take.
    pub upstream_connect_timeout: Duration,
    /// How long open channels may go on after shutdown is requested.
    pub shutdown_grace: Duration,
}

impl Default for OutletConfig {
    fn default() -> Self {
        Self {
            upstream: "http://127.0.0.1:8086".into(),
            allow: Vec::new(),
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(5),
            upstream_connect_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Why the outlet cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutletError {
    /// `--upstream` is not `http(s)://HOST[:PORT]`.
    #[error("invalid upstream URL {0:?}: expected http://HOST[:PORT] or https://HOST[:PORT]")]
    Upstream(String),
    /// A limit is out of range.
    #[error("{0} must be more than zero")]
    Limit(&'static str),
    /// A listener has no local address.
    #[error("cannot read the listener's address: {0}")]
    LocalAddr(std::io::Error),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct OutletMetrics {
    pub(crate) admitted: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) handshake_failed: AtomicU64,
    pub(crate) over_limit: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) upstream_failed: AtomicU64,
    pub(crate) renewals: AtomicU64,
    pub(crate) open: AtomicU64,
}

pub(crate) struct Shared {
    me: Identity,
    control: PublicIdentity,
    config: OutletConfig,
    upstream: String,
    pub(crate) metrics: OutletMetrics,
    pub(crate) draining: AtomicBool,
}

/// A started outlet.
pub struct RunningOutlet {
    listen: SocketAddr,
    admin: SocketAddr,
    task: JoinHandle<()>,
}

impl RunningOutlet {
    /// The channel listener's address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Resolves once shutdown was requested and open channels drained (or the grace
    /// period ran out).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// `HOST:PORT` of an `http(s)://HOST[:PORT][/]` URL.
fn upstream_addr(url: &str) -> Result<String, OutletError> {
    let bad = || OutletError::Upstream(url.to_owned());
    let uri: http::Uri = url.trim().parse().map_err(|_| bad())?;
    let default_port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => return Err(bad()),
    };
    let authority = uri.authority().ok_or_else(bad)?;
    if authority.as_str().contains('@') || uri.query().is_some() || !matches!(uri.path(), "" | "/")
    {
        return Err(bad());
    }
    Ok(format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(default_port)
    ))
}

/// Starts the outlet as `me`, admitting members of the control `control`; it runs until
/// `shutdown` is cancelled. Must be called inside a Tokio runtime.
pub fn start(
    config: OutletConfig,
    me: Identity,
    control: PublicIdentity,
    listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<RunningOutlet, OutletError> {
    let upstream = upstream_addr(&config.upstream)?;
    if config.max_connections == 0 {
        return Err(OutletError::Limit("max_connections"));
    }
    if config.handshake_timeout.is_zero() {
        return Err(OutletError::Limit("handshake_timeout"));
    }
    if config.upstream_connect_timeout.is_zero() {
        return Err(OutletError::Limit("upstream_connect_timeout"));
    }
    let listen = listener.local_addr().map_err(OutletError::LocalAddr)?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(OutletError::LocalAddr)?;
    let shared = Arc::new(Shared {
        me,
        control,
        upstream,
        metrics: OutletMetrics::default(),
        draining: AtomicBool::new(false),
        config,
    });
    info!(%listen, admin = %admin_addr, upstream = %shared.upstream, "outlet listening");
    let task = tokio::spawn(run(shared, listener, admin_listener, shutdown));
    Ok(RunningOutlet {
        listen,
        admin: admin_addr,
        task,
    })
}

async fn run(
    shared: Arc<Shared>,
    listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) {
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        Arc::clone(&shared),
        admin_listener,
        admin_stop.clone(),
    ));
    let limit = Arc::new(Semaphore::new(shared.config.max_connections));
    let tracker = TaskTracker::new();
    // Cancelled when the grace period is over: ends channels still open.
    let hard = CancellationToken::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer_addr) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            shared.metrics.over_limit.fetch_add(1, Ordering::Relaxed);
            debug!(%peer_addr, "connection limit reached; closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let hard = hard.clone();
        tracker.spawn(async move {
            shared.metrics.open.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                () = serve(&shared, stream, peer_addr) => {}
                () = hard.cancelled() => {}
            }
            shared.metrics.open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    shared.draining.store(true, Ordering::Relaxed);
    drop(listener);
    tracker.close();
    let open = tracker.len();
    if open > 0 {
        info!(open, "draining open channels");
    }
    if tokio::time::timeout(shared.config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            open = tracker.len(),
            "grace period over; closing open channels"
        );
        hard.cancel();
        tracker.wait().await;
    }
    admin_stop.cancel();
    let _ = admin_task.await;
    info!("outlet stopped");
}

/// Unix seconds now.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks a credential message from `peer`: the expiry it proves, or why not.
fn admit(shared: &Shared, peer: &PublicIdentity, message: &[u8]) -> Result<u64, String> {
    let Some((&MEMBERSHIP, text)) = message.split_first() else {
        return Err("expected a membership credential first".into());
    };
    let text = std::str::from_utf8(text).map_err(|_| "malformed membership credential")?;
    let membership =
        Membership::verify(text, &shared.control, now_secs()).map_err(|e| e.to_string())?;
    membership
        .admit(peer, &shared.config.allow)
        .map_err(|e| e.to_string())?;
    Ok(membership.expires_at)
}

async fn serve(shared: &Arc<Shared>, stream: TcpStream, peer_addr: SocketAddr) {
    let timeout = shared.config.handshake_timeout;
    let mut channel = match Channel::accept(stream, &shared.me, timeout).await {
        Ok(channel) => channel,
        Err(error) => {
            shared
                .metrics
                .handshake_failed
                .fetch_add(1, Ordering::Relaxed);
            debug!(%peer_addr, %error, "outlet handshake failed");
            return;
        }
    };
    channel.set_max_message(MAX_MESSAGE);
    let peer = channel.peer();
    let first = match tokio::time::timeout(timeout, channel.recv()).await {
        Ok(Ok(first)) => first,
        Ok(Err(error)) => {
            debug!(%peer_addr, %peer, %error, "channel ended before its credential");
            shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(_) => {
            debug!(%peer_addr, %peer, "no credential in time");
            shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let expires_at = match admit(shared, &peer, &first) {
        Ok(expires_at) => expires_at,
        Err(reason) => {
            shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            warn!(%peer_addr, %peer, %reason, "channel refused");
            refuse(&mut channel, &reason).await;
            return;
        }
    };
    let upstream = match tokio::time::timeout(
        shared.config.upstream_connect_timeout,
        TcpStream::connect(&shared.upstream),
    )
    .await
    {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(error)) => {
            shared
                .metrics
                .upstream_failed
                .fetch_add(1, Ordering::Relaxed);
            warn!(upstream = %shared.upstream, %error, "cannot connect to the upstream InfluxDB");
            refuse(&mut channel, "the outlet cannot reach its InfluxDB").await;
            return;
        }
        Err(_) => {
            shared
                .metrics
                .upstream_failed
                .fetch_add(1, Ordering::Relaxed);
            warn!(upstream = %shared.upstream, "connecting to the upstream InfluxDB timed out");
            refuse(&mut channel, "the outlet cannot reach its InfluxDB").await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    shared.metrics.admitted.fetch_add(1, Ordering::Relaxed);
    debug!(%peer_addr, %peer, "channel admitted");
    let (noise, session, received, _) = channel.into_parts();
    let deadline = Arc::new(AtomicU64::new(expires_at));
    let hooks = OutletHooks {
        shared: Arc::clone(shared),
        peer,
        deadline: Arc::clone(&deadline),
    };
    let stream = ChannelStream::new(noise, session, received, Vec::new(), hooks);
    tokio::select! {
        result = relay(stream, upstream) => match result {
            Ok(()) => debug!(%peer, "channel closed"),
            Err(error) => debug!(%peer, %error, "channel ended"),
        },
        () = lapse(&deadline) => {
            shared.metrics.expired.fetch_add(1, Ordering::Relaxed);
            info!(%peer, "membership credential expired unrenewed; channel closed");
        }
    }
}

/// Bytes read from the channel before they are written to InfluxDB in one go: a full
/// frame's data. Larger buffers (up to 256 KiB) measured no faster and cost more CPU
/// per batch (cache misses with several batches in flight).
const RELAY_DOWN: usize = 64 << 10;

/// Moves bytes both ways until both directions ended. Each direction half-closes the
/// other side when its source ends (`END` from the sidecar, FIN from InfluxDB). The
/// relay buffers are zeroized after each write: they held plaintext.
async fn relay(
    stream: ChannelStream<TcpStream, OutletHooks>,
    mut upstream: TcpStream,
) -> std::io::Result<()> {
    let (mut channel_read, mut channel_write) = tokio::io::split(stream);
    let (mut up_read, mut up_write) = upstream.split();
    let down = async {
        let mut buf = Zeroizing::new(vec![0u8; RELAY_DOWN]);
        loop {
            let n = channel_read.read(&mut buf).await?;
            if n == 0 {
                return up_write.shutdown().await;
            }
            up_write.write_all(&buf[..n]).await?;
            buf[..n].zeroize();
        }
    };
    let up = async {
        let mut buf = Zeroizing::new(vec![0u8; CHUNK]);
        loop {
            let n = up_read.read(&mut buf).await?;
            if n == 0 {
                return channel_write.shutdown().await;
            }
            channel_write.write_all(&buf[..n]).await?;
            buf[..n].zeroize();
            channel_write.flush().await?;
        }
    };
    tokio::try_join!(down, up).map(|_| ())
}

/// The outlet's hooks: credentials renewed on the channel push its deadline out;
/// nothing of its own to send.
struct OutletHooks {
    shared: Arc<Shared>,
    peer: PublicIdentity,
    deadline: Arc<AtomicU64>,
}

impl Hooks for OutletHooks {
    fn control(&mut self, tag: u8, body: &[u8]) -> Result<(), TunnelError> {
        renew(&self.shared, &self.peer, &self.deadline, tag, body)
    }

    fn poll_renewal(&mut self, _: &mut Context<'_>) -> Poll<Option<String>> {
        Poll::Pending
    }
}

/// A renewed credential on an open channel: same checks, later deadline.
fn renew(
    shared: &Shared,
    peer: &PublicIdentity,
    deadline: &AtomicU64,
    tag: u8,
    body: &[u8],
) -> Result<(), TunnelError> {
    if tag != MEMBERSHIP {
        return Err(TunnelError::Unexpected(tag));
    }
    let mut message = Vec::with_capacity(body.len() + 1);
    message.push(MEMBERSHIP);
    message.extend_from_slice(body);
    let expires_at = admit(shared, peer, &message).map_err(TunnelError::Membership)?;
    deadline.fetch_max(expires_at, Ordering::Relaxed);
    shared.metrics.renewals.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Resolves once the wall clock passes `deadline` (Unix seconds), which may move out.
async fn lapse(deadline: &AtomicU64) {
    loop {
        let left = deadline.load(Ordering::Relaxed).saturating_sub(now_secs());
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(left)).await;
    }
}

async fn refuse(channel: &mut Channel<TcpStream>, reason: &str) {
    let mut message = Vec::with_capacity(reason.len() + 1);
    message.push(REFUSED);
    message.extend_from_slice(reason.as_bytes());
    let _ = channel.send(&message).await;
    let _ = channel.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_addresses() {
        assert_eq!(
            upstream_addr("http://127.0.0.1:8086").unwrap(),
            "127.0.0.1:8086"
        );
        assert_eq!(upstream_addr("http://db/").unwrap(), "db:80");
        assert_eq!(upstream_addr("https://db").unwrap(), "db:443");
        for bad in [
            "db:8086",
            "ftp://db",
            "http://u:p@db",
            "http://db/x",
            "http://db?q",
        ] {
            assert!(upstream_addr(bad).is_err(), "{bad}");
        }
    }
}

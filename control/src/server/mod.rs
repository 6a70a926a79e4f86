//! The control's listener: accepts TCP connections, runs the secure-channel handshake,
//! and answers requests until the peer leaves, goes idle, or the control shuts down.
//!
//! The control's identifier is public, so anyone can reach the point after the
//! handshake. What a peer can hold is bounded at every stage ([`Limits`]):
//!
//! - **Before membership** (the handshake, then a non-member's request) a connection
//!   counts against the unauthenticated caps, per source and in total
//!   ([`crate::admission`]); over a cap it is closed at once.
//! - **The handshake** must finish within `handshake_timeout`.
//! - **A peer that is not a member** may then send exactly one request, within
//!   `handshake_timeout` again and of at most [`NON_MEMBER_MAX_MESSAGE`] bytes, and it
//!   must be an enrollment. Anything else is answered "not an enrolled member" and the
//!   channel closed; a successful enrollment makes the channel a member's.
//! - **A member's channel** takes messages up to the member cap
//!   ([`leasehold_channel::session::MAX_MESSAGE`]), has at most [`MAX_IN_FLIGHT`]
//!   requests and [`MAX_IN_FLIGHT_BYTES`] of request bytes in progress and one list (the
//!   only answer that can be large) at a time, and is closed after `idle_timeout` with
//!   nothing received and nothing in progress (the proxy reconnects a closed channel on
//!   its next renewal at once) or with an answer its peer does not read.
//! - **The accept loop** survives running out of file descriptors: it backs off, logs
//!   once per interval, and keeps serving the connections it has.

//!
//! This file holds the accept loop, its [`Limits`] and [`bind`]; a connection's way
//! from the handshake to membership is in `enrollment.rs`, a member's channel in
//! `member.rs`, and one request's parse, handling and answer in `request.rs`.

mod enrollment;
mod member;
mod request;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use leasehold_channel::conn::HANDSHAKE_TIMEOUT;
use leasehold_channel::session::MAX_MESSAGE;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::admission::{Admission, Caps};
use crate::control::Control;
use crate::log_throttle::{LOG_INTERVAL, LogThrottle};
use crate::store::Store;

use enrollment::connection;

/// Most connections served at once; further ones wait in the accept backlog.
pub const MAX_CONNECTIONS: usize = 8192;
/// Most requests one member channel may have in progress; further ones wait in its socket.
pub const MAX_IN_FLIGHT: usize = 64;
/// Most request bytes one member channel may have in progress. With the message being
/// received (at most the member cap), this bounds what a channel makes the control hold.
pub const MAX_IN_FLIGHT_BYTES: usize = MAX_MESSAGE;
/// Largest message a peer that is not a member may send: an enrollment is a few hundred
/// bytes.
pub const NON_MEMBER_MAX_MESSAGE: usize = 64 << 10;
/// Default for [`Limits::idle_timeout`]: well above the proxy's renewal interval (60% of
/// a lease's life, 6 minutes for the default 10-minute lease), so a sidecar's channel is
/// normally reused; a longer-lived lease's renewal simply opens a new channel.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Default for [`Limits::max_unauthenticated`].
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 1024;
/// Default for [`Limits::max_unauthenticated_per_ip`]: a handshake takes milliseconds,
/// so even a thousand sidecars behind one address restarting together rarely hold this
/// many at once (and one refused simply retries).
pub const DEFAULT_MAX_UNAUTHENTICATED_PER_IP: usize = 64;

/// Longest pause of the accept loop after a failed accept (out of file descriptors).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Connections the kernel queues for the accept loop. Far above the usual 128 to 1,024:
/// after a control restart a whole fleet of sidecars reconnects at once, and a full
/// accept queue silently drops handshakes (the client sees a connection the control
/// never received, and waits out its timeout). The kernel caps it at `somaxconn`.
pub const ACCEPT_BACKLOG: u32 = 4096;

/// Binds the control's listener on `addr` with [`ACCEPT_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted control rebinds at once, even while
    // connections of its previous run linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// What the listener lets a peer hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to complete the handshake; a peer that is not a member then has as long
    /// again to send its enrollment.
    pub handshake_timeout: Duration,
    /// A member's channel with nothing received and nothing in progress for this long
    /// is closed.
    pub idle_timeout: Duration,
    /// Connections not yet known to be a member's, at once, from all sources.
    pub max_unauthenticated: usize,
    /// Connections not yet known to be a member's, at once, from one source (an IPv4
    /// address or an IPv6 /64).
    pub max_unauthenticated_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_unauthenticated: DEFAULT_MAX_UNAUTHENTICATED,
            max_unauthenticated_per_ip: DEFAULT_MAX_UNAUTHENTICATED_PER_IP,
        }
    }
}

/// Serves the control on `listener` under `limits` until the control's shutdown signal.
pub async fn serve<S: Store>(control: Arc<Control<S>>, listener: TcpListener, limits: Limits) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let admission = Admission::new(Caps {
        total: limits.max_unauthenticated,
        per_source: limits.max_unauthenticated_per_ip,
    });
    let shutdown = control.shutdown().clone();
    let mut accept_failures = LogThrottle::new(LOG_INTERVAL);
    let mut refusals = LogThrottle::new(LOG_INTERVAL);
    let mut backoff = Duration::ZERO;
    loop {
        let Ok(permit) = (tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit,
        }) else {
            break;
        };
        let (stream, addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: the pending connection stays in the backlog.
                    // Keep serving the connections we have and try again shortly.
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                    if let Some(suppressed) = accept_failures.hit(std::time::Instant::now()) {
                        tracing::warn!(%error, suppressed, retry_in = ?backoff, "accept failed; backing off");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => continue,
                    }
                }
            },
        };
        backoff = Duration::ZERO;
        let pass = match admission.admit(addr.ip()) {
            Ok(pass) => pass,
            Err(refused) => {
                if let Some(suppressed) = refusals.hit(std::time::Instant::now()) {
                    tracing::warn!(peer.addr = %addr, reason = %refused, suppressed, "connection refused: too many unauthenticated connections");
                }
                drop(stream);
                continue;
            }
        };
        let control = control.clone();
        let span = tracing::info_span!("conn", peer.addr = %addr);
        // Boxed, as a member's requests are: a connection's future is large, and
        // spawning would copy it where a box moves a pointer.
        control.clone().tasks().spawn(Box::pin(
            async move {
                connection(control, stream, addr, limits, pass).await;
                drop(permit);
            }
            .instrument(span),
        ));
    }
}

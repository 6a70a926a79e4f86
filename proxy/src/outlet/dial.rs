//! The sidecar's side: each upstream connection becomes one Noise channel to the
//! outlet, opened with the current membership credential.
//!
//! hyper drives the channel itself (`stream.rs`): its connection is the channel, with
//! no pipe or task in between. The stream sends the renewed credential each time the
//! refresher installs a lease, so a long-lived connection (the fast path keeps one per
//! client connection; the pooled client keeps idle ones) stays admitted for as long as
//! this member's leases are renewed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use leasehold_channel::conn::Channel;
use leasehold_channel::{Identity, PublicIdentity};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::warn;

use super::stream::{ChannelStream, Hooks};
use super::tunnel::{MAX_MESSAGE, MEMBERSHIP, REFUSED, TunnelError};
use crate::store::CredentialStore;

/// A connection through the outlet, as hyper sees it.
pub type OutletStream = ChannelStream<TcpStream, SidecarHooks>;

/// Where and how to reach an outlet: `--outlet HOST:PORT` and `--outlet-identity ID`,
/// plus this sidecar's own identity.
#[derive(Clone)]
pub struct OutletRoute {
    /// `HOST:PORT` of the outlet.
    pub addr: String,
    /// The outlet's identity, pinned (the Noise IK pattern needs it up front).
    pub outlet: PublicIdentity,
    /// This sidecar's identity: the channel authenticates it, and the membership
    /// credential must be about it.
    pub me: Arc<Identity>,
}

impl fmt::Debug for OutletRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutletRoute")
            .field("addr", &self.addr)
            .field("outlet", &self.outlet)
            .field("me", &self.me.public())
            .finish()
    }
}

impl PartialEq for OutletRoute {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
            && self.outlet == other.outlet
            && self.me.public() == other.me.public()
    }
}

impl Eq for OutletRoute {}

/// Why a connection through the outlet could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// No lease, or a lease from a control that issues no membership credentials.
    #[error("no membership credential to present to the outlet (no lease yet?)")]
    NoMembership,
    /// TCP to the outlet failed.
    #[error("cannot connect to the outlet at {addr}: {source}")]
    Connect {
        /// The outlet address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The handshake or the first message failed.
    #[error("outlet channel: {0}")]
    Channel(#[from] leasehold_channel::ChannelError),
    /// Sending the credential failed.
    #[error("outlet channel: {0}")]
    Tunnel(#[from] TunnelError),
}

/// Opens tunnelled connections; cheap to clone.
#[derive(Clone, Debug)]
pub struct Dialer {
    route: Arc<OutletRoute>,
    store: Arc<CredentialStore>,
    handshake_timeout: Duration,
}

impl Dialer {
    /// A dialer presenting the credentials in `store`.
    pub fn new(
        route: OutletRoute,
        store: Arc<CredentialStore>,
        handshake_timeout: Duration,
    ) -> Self {
        Self {
            route: Arc::new(route),
            store,
            handshake_timeout,
        }
    }

    /// Connects, authenticates and presents the credential; returns the channel as
    /// hyper's connection.
    pub async fn dial(&self) -> Result<OutletStream, DialError> {
        let (generation, credential) = self
            .store
            .current(Instant::now())
            .and_then(|c| c.membership().map(|m| (c.generation(), m.to_owned())))
            .ok_or(DialError::NoMembership)?;
        let tcp = TcpStream::connect(&self.route.addr)
            .await
            .map_err(|source| DialError::Connect {
                addr: self.route.addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut channel = Channel::connect(
            tcp,
            &self.route.me,
            &self.route.outlet,
            self.handshake_timeout,
        )
        .await?;
        channel.set_max_message(MAX_MESSAGE);
        let (tcp, session, received, queued) = channel.into_parts();
        let hooks = SidecarHooks {
            store: Arc::clone(&self.store),
            sent: generation,
            change: changed(self.store.subscribe_ready()),
        };
        let mut stream = ChannelStream::new(tcp, session, received, queued, hooks);
        // The identity proof still queued from the handshake goes first, the credential
        // right behind it, in one write.
        stream.queue(MEMBERSHIP, credential.as_bytes())?;
        stream.flush().await.map_err(TunnelError::Io)?;
        Ok(stream)
    }
}

type Change = Pin<Box<dyn Future<Output = Option<watch::Receiver<bool>>> + Send + Sync>>;

/// Resolves at the store's next install (every install marks the value changed, even
/// when it stays `true`); `None` once the store is gone.
fn changed(mut ready: watch::Receiver<bool>) -> Change {
    Box::pin(async move {
        ready.changed().await.ok()?;
        Some(ready)
    })
}

/// The sidecar's hooks: renewed credentials from the store, one per installed lease;
/// a refusal ends the connection (and is logged once, here).
pub struct SidecarHooks {
    store: Arc<CredentialStore>,
    sent: u64,
    change: Change,
}

impl Hooks for SidecarHooks {
    fn control(&mut self, tag: u8, body: &[u8]) -> Result<(), TunnelError> {
        if tag == REFUSED {
            let reason = String::from_utf8_lossy(body).into_owned();
            warn!(%reason, "the outlet refused the channel");
            Err(TunnelError::Refused(reason))
        } else {
            Err(TunnelError::Unexpected(tag))
        }
    }

    fn poll_renewal(&mut self, cx: &mut Context<'_>) -> Poll<Option<String>> {
        loop {
            let ready = match self.change.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(ready)) => ready,
                Poll::Ready(None) => {
                    self.change = Box::pin(std::future::pending());
                    return Poll::Pending;
                }
            };
            self.change = changed(ready);
            let Some(current) = self.store.current(Instant::now()) else {
                continue;
            };
            if current.generation() == self.sent {
                continue;
            }
            self.sent = current.generation();
            if let Some(membership) = current.membership() {
                return Poll::Ready(Some(membership.to_owned()));
            }
        }
    }
}

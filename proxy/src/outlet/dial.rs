//! The sidecar's side: each upstream connection becomes one Noise channel to the
//! outlet, opened with the current membership credential.
//!
//! hyper gets one end of an in-memory pipe; a task per connection moves bytes between
//! the other end and the channel (`tunnel.rs`), and sends the renewed credential each
//! time the refresher installs a lease, so a long-lived pooled connection stays
//! admitted for as long as this member's leases are renewed.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold_channel::conn::Channel;
use leasehold_channel::{Identity, PublicIdentity};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::tunnel::{self, MAX_MESSAGE, MEMBERSHIP, REFUSED, Renewals, TunnelError};
use crate::store::CredentialStore;

/// Bytes buffered in the in-memory pipe in each direction.
const PIPE_BYTES: usize = 64 << 10;

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

    /// Connects, authenticates, presents the credential and starts the tunnel task;
    /// returns hyper's end of the pipe.
    pub async fn dial(&self) -> Result<DuplexStream, DialError> {
        let credential = self
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
        let (tcp, session, inbox, mut pending) = channel.into_parts();
        let session = Mutex::new(session);
        let mut first = Vec::with_capacity(credential.1.len() + 1);
        first.push(MEMBERSHIP);
        first.extend_from_slice(credential.1.as_bytes());
        let (read, mut write) = tcp.into_split();
        // The identity proof still queued from the handshake goes first, the credential
        // right behind it, in one write.
        tunnel::seal(&session, &first, &mut pending)?;
        write.write_all(&pending).await.map_err(TunnelError::Io)?;
        let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
        let renewals = StoreRenewals {
            ready: self.store.subscribe_ready(),
            store: Arc::clone(&self.store),
            sent: credential.0,
        };
        tokio::spawn(async move {
            let (plain_read, plain_write) = tokio::io::split(theirs);
            let result = tokio::try_join!(
                tunnel::outbound(&session, plain_read, write, Some(renewals)),
                tunnel::inbound(&session, read, inbox, plain_write, |tag, body| {
                    if tag == REFUSED {
                        Err(TunnelError::Refused(
                            String::from_utf8_lossy(body).into_owned(),
                        ))
                    } else {
                        Err(TunnelError::Unexpected(tag))
                    }
                }),
            );
            match result {
                Ok(_) => debug!("outlet channel closed"),
                Err(TunnelError::Refused(reason)) => {
                    warn!(%reason, "the outlet refused the channel")
                }
                Err(error) => debug!(%error, "outlet channel ended"),
            }
        });
        Ok(ours)
    }
}

/// Renewed credentials from the store: one per installed lease.
struct StoreRenewals {
    ready: watch::Receiver<bool>,
    store: Arc<CredentialStore>,
    sent: u64,
}

impl Renewals for StoreRenewals {
    async fn next(&mut self) -> Option<String> {
        loop {
            // Every install marks the value changed, even when it stays `true`.
            self.ready.changed().await.ok()?;
            let Some(current) = self.store.current(Instant::now()) else {
                continue;
            };
            if current.generation() == self.sent {
                continue;
            }
            self.sent = current.generation();
            if let Some(membership) = current.membership() {
                return Some(membership.to_owned());
            }
        }
    }
}

//! The production [`LeaseSource`]: `lease create` over the Noise channel to the control.
//!
//! The channel is kept open between renewals (a handshake per renewal would be wasted
//! work for thousands of sidecars) and dropped whenever it fails, so the next fetch
//! reconnects. Pacing of reconnects is the refresher's backoff — the source never
//! sleeps — except for one case: a long-idle connection that the control has since
//! closed (a restart, an idle timeout) fails on first use, and that is retried at once
//! on a fresh connection rather than costing a backoff round. A lease created by a
//! request whose answer was lost simply expires; leases are cheap and self-limiting.
//!
//! A new channel resumes with the ticket the last one brought (in memory only; see
//! `leasehold_channel::resume`), so a reconnecting sidecar costs the control a fraction
//! of a full handshake; a refused or expired ticket costs one more round trip.

use std::fmt;
use std::time::Duration;

use leasehold_channel::Identity;
use leasehold_channel::home::{Enrollment, Home, HomeError};
use leasehold_channel::resumption::TicketSlot;
use leasehold_protocol::client::{Client, ClientError, worth_another_replica};
use leasehold_protocol::{ErrorCode, LeaseRecord, Reply, Request};
use tracing::{debug, info};

use crate::source::{LeaseSource, SourceError};

/// Leases from the control this identity enrolled with.
pub struct ControlLeaseSource {
    enrollment: Enrollment,
    identity: Identity,
    ttl_secs: Option<u64>,
    client: Option<Client>,
    /// The resumption ticket for the next channel: never written anywhere, redacted
    /// in `Debug`, zeroized when replaced or dropped.
    tickets: TicketSlot,
}

impl ControlLeaseSource {
    /// A source for `identity`, enrolled as `enrollment`. Connects lazily.
    pub fn new(enrollment: Enrollment, identity: Identity) -> Self {
        Self {
            enrollment,
            identity,
            ttl_secs: None,
            client: None,
            tickets: TicketSlot::new(),
        }
    }

    /// Loads identity `name` and its enrollment from `home`.
    pub fn from_home(home: &Home, name: &str) -> Result<Self, HomeError> {
        Ok(Self::new(
            home.load_enrollment(name)?,
            home.load_identity(name)?,
        ))
    }

    /// Requests leases of this lifetime instead of the policy default.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl_secs = Some(ttl.as_secs().max(1));
        self
    }

    async fn connect(&mut self) -> Result<&mut Client, ClientError> {
        let client = Client::connect_resuming(
            &self.enrollment.addrs,
            &self.enrollment.control,
            &self.identity,
            &mut self.tickets,
        )
        .await?;
        info!(control = %self.enrollment.control, "connected to the control");
        Ok(self.client.insert(client))
    }

    async fn create(&mut self) -> Result<LeaseRecord, SourceError> {
        let ttl_secs = self.ttl_secs;
        match self.call(move || Request::LeaseCreate { ttl_secs }).await? {
            Reply::Lease(lease) => Ok(lease),
            _ => Err(SourceError::UnexpectedReply),
        }
    }

    /// One call on the kept-open channel (a fresh one if it went stale).
    async fn call(&mut self, request: impl Fn() -> Request) -> Result<Reply, SourceError> {
        let reply = match self.client.as_mut() {
            Some(client) => match client.call(request()).await {
                Err(e) if is_stale_connection(&e) => {
                    debug!(error = %e, "control connection went away; reconnecting");
                    self.client = None;
                    self.connect().await?.call(request()).await
                }
                other => other,
            },
            None => self.connect().await?.call(request()).await,
        };
        let reply = match (reply, self.client.take()) {
            (Err(refusal), Some(refused))
                if worth_another_replica(&refusal) && self.enrollment.addrs.len() > 1 =>
            {
                // This replica cannot serve now (its store unreachable, say): another
                // may, and waiting for the next renewal would spend the lease's margin.
                debug!(error = %refusal, "the control replica cannot serve; trying another");
                let elsewhere = refused
                    .connect_elsewhere_resuming(
                        &self.enrollment.addrs,
                        &self.enrollment.control,
                        &self.identity,
                        &mut self.tickets,
                    )
                    .await;
                match elsewhere {
                    Ok(client) => self.client.insert(client).call(request()).await,
                    // Keep the refusal: it says more than the failed reconnect.
                    Err(_) => Err(refusal),
                }
            }
            (reply, client) => {
                self.client = client;
                reply
            }
        };
        match reply {
            Ok(reply) => Ok(reply),
            Err(e) => {
                if !matches!(e, ClientError::Remote(_)) {
                    // Anything but a refusal leaves the channel in an unknown state.
                    self.client = None;
                }
                Err(e.into())
            }
        }
    }
}

impl LeaseSource for ControlLeaseSource {
    async fn fetch(&mut self) -> Result<LeaseRecord, SourceError> {
        self.create().await
    }

    /// Revokes each lease at the control (`lease revoke`), which removes its
    /// credential from InfluxDB. One already gone counts as released.
    async fn release(&mut self, lease_ids: &[String]) -> Result<(), SourceError> {
        for id in lease_ids {
            match self.call(|| Request::LeaseRevoke { id: id.clone() }).await {
                Ok(Reply::Lease(_)) => info!(lease.id = %id, "lease revoked at shutdown"),
                Ok(_) => return Err(SourceError::UnexpectedReply),
                Err(SourceError::Control(ClientError::Remote(e)))
                    if e.code == ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ControlLeaseSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlLeaseSource")
            .field("identity", &self.identity.public())
            .field("control", &self.enrollment.control)
            .field("addrs", &self.enrollment.addrs)
            .field("ttl_secs", &self.ttl_secs)
            .field("connected", &self.client.is_some())
            .field("holds_resumption_ticket", &self.tickets.ticket().is_some())
            .finish()
    }
}

/// A failure that means "the kept-open connection is dead", as opposed to "the control
/// is down" or "the control said no".
fn is_stale_connection(error: &ClientError) -> bool {
    matches!(error, ClientError::Channel(_))
}

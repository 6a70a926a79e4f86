//! The control's listener: accepts TCP connections, runs the secure-channel handshake,
//! and answers requests until the peer leaves or the control shuts down.
//!
//! A connection that sends garbage, stalls in the handshake or breaks the channel costs
//! only its own task: the handshake has a deadline, the number of connections is
//! bounded, and every failure is logged here and answered (if at all) coarsely.

use std::net::SocketAddr;
use std::sync::Arc;

use leasehold_channel::conn::{Channel, HANDSHAKE_TIMEOUT};
use leasehold_channel::protocol::{
    ErrorCode, Outcome, PROTOCOL_VERSION, RequestEnvelope, ResponseEnvelope, WireError,
};
use leasehold_channel::{ChannelError, PublicIdentity};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::control::Control;
use crate::store::Store;

/// Most connections served at once; further ones wait in the accept backlog.
pub const MAX_CONNECTIONS: usize = 8192;
/// Most requests one channel may have in progress; further ones wait in its socket.
pub const MAX_IN_FLIGHT: usize = 64;

/// Serves the control on `listener` until the control's shutdown signal.
pub async fn serve<S: Store>(control: Arc<Control<S>>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let shutdown = control.shutdown().clone();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("semaphore never closed"),
        };
        let (stream, addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: keep serving the connections we have.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let control = control.clone();
        let span = tracing::info_span!("conn", peer.addr = %addr);
        control.clone().tasks().spawn(
            async move {
                connection(control, stream, addr).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn connection<S: Store>(control: Arc<Control<S>>, stream: TcpStream, addr: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut channel = match Channel::accept(stream, control.identity(), HANDSHAKE_TIMEOUT).await {
        Ok(channel) => channel,
        Err(error) => {
            tracing::debug!(%error, %addr, "handshake failed");
            return;
        }
    };
    let peer = channel.peer();
    tracing::debug!(identity = %peer, "channel established");
    // Requests on one channel are answered concurrently, each as its own task, and the
    // answers go out as they are ready (the client matches them by id). A slow request
    // (InfluxDB retrying) does not hold up the others, and a client that pipelines
    // gets its leases committed to the store in one group.
    let shutdown = control.shutdown().clone();
    let mut in_flight: JoinSet<Vec<u8>> = JoinSet::new();
    let mut reading = true;
    let mut answering = true;
    loop {
        tokio::select! {
            biased;
            Some(done) = in_flight.join_next() => {
                let bytes = match done {
                    Ok(bytes) => bytes,
                    Err(error) => {
                        tracing::error!(%error, identity = %peer, "request handler failed");
                        continue;
                    }
                };
                if answering && let Err(error) = channel.send(&bytes).await {
                    tracing::debug!(%error, identity = %peer, "could not answer");
                    (reading, answering) = (false, false);
                }
            }
            () = shutdown.cancelled(), if reading => reading = false,
            message = channel.recv(), if reading && in_flight.len() < MAX_IN_FLIGHT => match message {
                Ok(message) => {
                    let control = control.clone();
                    in_flight.spawn(answer(control, peer, message).in_current_span());
                }
                Err(ChannelError::Closed) => reading = false,
                Err(error) => {
                    tracing::debug!(%error, identity = %peer, "channel failed");
                    (reading, answering) = (false, false);
                }
            },
            // Not reading and nothing in flight: done. Requests already taken are
            // always finished, even when the channel broke: one may be half-way
            // through issuing a lease.
            else => break,
        }
    }
}

/// Handles one request message and returns the encoded answer.
async fn answer<S: Store>(
    control: Arc<Control<S>>,
    peer: PublicIdentity,
    message: Vec<u8>,
) -> Vec<u8> {
    let (id, outcome) = match serde_json::from_slice::<RequestEnvelope>(&message) {
        Ok(envelope) if envelope.v != PROTOCOL_VERSION => (
            envelope.id,
            Outcome::Err(WireError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {} is not supported (this control speaks {PROTOCOL_VERSION})",
                    envelope.v
                ),
            )),
        ),
        Ok(envelope) => {
            let op = op_name(&envelope.req);
            let outcome = match control.handle(peer, envelope.req).await {
                Ok(reply) => Outcome::Ok(reply),
                Err(error @ crate::ControlError::Backend(_)) => {
                    // InfluxDB failed, not the peer: the operator needs the real
                    // cause (the whole chain, e.g. "connection refused"), at WARN.
                    let cause = error_chain(&error);
                    tracing::warn!(identity = %peer, op, error = %cause, "InfluxDB failed a request");
                    Outcome::Err(error.to_wire())
                }
                Err(error) => {
                    tracing::info!(identity = %peer, op, %error, "request refused");
                    Outcome::Err(error.to_wire())
                }
            };
            (envelope.id, outcome)
        }
        Err(error) => {
            tracing::info!(identity = %peer, %error, "malformed request");
            (
                0,
                Outcome::Err(WireError::new(ErrorCode::BadRequest, "malformed request")),
            )
        }
    };
    let response = ResponseEnvelope {
        v: PROTOCOL_VERSION,
        id,
        outcome,
    };
    serde_json::to_vec(&response).expect("responses serialize")
}

fn op_name(req: &leasehold_channel::protocol::Request) -> &'static str {
    use leasehold_channel::protocol::Request::*;
    match req {
        Ping => "ping",
        Enroll { .. } => "enroll",
        LeaseCreate { .. } => "lease_create",
        LeaseList => "lease_list",
        LeasePage { .. } => "lease_page",
        LeaseShow { .. } => "lease_show",
        LeaseRevoke { .. } => "lease_revoke",
        AddonConfigure { .. } => "addon_configure",
        PolicySet { .. } => "policy_set",
        PolicyList => "policy_list",
        PolicyDelete { .. } => "policy_delete",
        TicketCreate { .. } => "ticket_create",
        MemberList => "member_list",
        MemberShow { .. } => "member_show",
        MemberDelete { .. } => "member_delete",
        MemberAllow { .. } => "member_allow",
        TicketList => "ticket_list",
        TicketRevoke { .. } => "ticket_revoke",
    }
}

/// `error` and each of its sources, joined by ": " (skipping a source whose text the
/// previous one already shows).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

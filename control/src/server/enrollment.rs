//! A connection from the handshake to a member's channel: the handshake, the store's
//! look-up of the peer, and the one request a peer that is not a member may send (an
//! enrollment). Kept apart from the accept loop because this is where an
//! unauthenticated peer is bounded; a member's channel is served by [`super::member`].

use std::net::SocketAddr;
use std::sync::Arc;

use leasehold_channel::PublicIdentity;
use leasehold_channel::conn::Channel;
use leasehold_channel::session::MAX_MESSAGE;
use leasehold_protocol::{Outcome, Reply, Request};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use super::member::member_channel;
use super::request::{encode, op_name, parse, respond};
use super::{Limits, NON_MEMBER_MAX_MESSAGE};
use crate::admission::Pass;
use crate::control::Control;
use crate::error::ControlError;
use crate::metrics::Metrics;
use crate::store::Store;

pub(super) async fn connection<S: Store>(
    control: Arc<Control<S>>,
    stream: TcpStream,
    addr: SocketAddr,
    limits: Limits,
    pass: Pass,
) {
    let _ = stream.set_nodelay(true);
    // A resumed channel's peer is the client its ticket names; from here on it is
    // treated exactly as after a full handshake (membership, denial, enrollment).
    let accepted = Channel::accept_resumable(
        stream,
        control.identity(),
        control.tickets(),
        limits.handshake_timeout,
    )
    .await;
    let _open = control
        .metrics()
        .handshake(accepted.as_ref().ok().map(Channel::resumed));
    let mut channel = match accepted {
        Ok(channel) => channel,
        Err(error) => {
            tracing::debug!(%error, %addr, "handshake failed");
            return;
        }
    };
    let peer = channel.peer();
    let member = match control
        .metrics()
        .store("member", control.store.member(peer))
        .await
    {
        Ok(member) => member.is_some(),
        Err(error) => {
            tracing::error!(%error, identity = %peer, "cannot look the peer up");
            // Told why (a store out of reach is "unavailable": worth another replica)
            // rather than cut off.
            let error = ControlError::Store(error);
            refuse_first_request(&mut channel, peer, error, limits, control.metrics()).await;
            return;
        }
    };
    if !member && channel.resumed() {
        // Tickets are for members' next channels: a member deleted (and denied) since
        // its ticket was granted, or a peer that never enrolled, gets the refusal a
        // non-member's request gets after a full handshake, and nothing more (not even
        // an enrollment, which goes through a full handshake).
        tracing::debug!(identity = %peer, "resumed channel of a non-member refused");
        refuse_first_request(
            &mut channel,
            peer,
            ControlError::NotMember,
            limits,
            control.metrics(),
        )
        .await;
        return;
    }
    if !member && !enrollment(&control, &mut channel, peer, limits).await {
        return;
    }
    // A member's from here on: it no longer counts as unauthenticated.
    drop(pass);
    channel.set_max_message(MAX_MESSAGE);
    tracing::debug!(identity = %peer, resumed = channel.resumed(), "channel established");
    member_channel(control, channel, peer, limits).await;
}

/// Answers the peer's first request with `error`, then the channel ends. A `lease
/// create` refused this way is counted as a refused lease (say, for want of the store),
/// as it would be had the member been looked up.
async fn refuse_first_request(
    channel: &mut Channel<TcpStream>,
    peer: PublicIdentity,
    error: ControlError,
    limits: Limits,
    metrics: &Metrics,
) {
    channel.set_max_message(NON_MEMBER_MAX_MESSAGE);
    let Ok(Ok(message)) = tokio::time::timeout(limits.handshake_timeout, channel.recv()).await
    else {
        return;
    };
    let message = Zeroizing::new(message);
    let id = match parse(&message) {
        Ok(envelope) => {
            if matches!(envelope.req, Request::LeaseCreate { .. }) {
                metrics.lease_refused(&error);
            }
            envelope.id
        }
        Err((id, _)) => id,
    };
    if let Err(error) = channel
        .send(&encode(id, Outcome::Err(error.to_wire())))
        .await
    {
        tracing::debug!(%error, identity = %peer, "could not answer");
    }
}

/// The one request a peer that is not a member may send. Whether it enrolled (and the
/// channel goes on as a member's).
async fn enrollment<S: Store>(
    control: &Arc<Control<S>>,
    channel: &mut Channel<TcpStream>,
    peer: PublicIdentity,
    limits: Limits,
) -> bool {
    channel.set_max_message(NON_MEMBER_MAX_MESSAGE);
    let message = match tokio::time::timeout(limits.handshake_timeout, channel.recv()).await {
        Ok(Ok(message)) => Zeroizing::new(message),
        Ok(Err(error)) => {
            tracing::debug!(%error, identity = %peer, "non-member channel failed");
            return false;
        }
        Err(_) => {
            tracing::debug!(identity = %peer, "non-member sent no request in time");
            return false;
        }
    };
    let (id, outcome) = match parse(&message) {
        Ok(envelope) if matches!(envelope.req, Request::Enroll { .. }) => {
            respond(control, peer, envelope).await
        }
        Ok(envelope) => {
            tracing::debug!(identity = %peer, op = op_name(&envelope.req), "request from a non-member refused");
            (envelope.id, Outcome::Err(ControlError::NotMember.to_wire()))
        }
        Err((id, error)) => (id, Outcome::Err(error)),
    };
    let enrolled = matches!(outcome, Outcome::Ok(Reply::Member(_)));
    if let Err(error) = channel.send(&encode(id, outcome)).await {
        tracing::debug!(%error, identity = %peer, "could not answer");
        return false;
    }
    enrolled
}

//! One request's round trip, shared by the non-member and member steps: parsing the
//! message, carrying the request out (with its log line and metrics), and encoding the
//! answer. Pure of any channel: what goes over the wire is decided here.

use std::sync::Arc;

use leasehold_channel::PublicIdentity;
use leasehold_protocol::{
    ErrorCode, Outcome, PROTOCOL_VERSION, Request, RequestEnvelope, ResponseEnvelope, WireError,
};
use zeroize::Zeroizing;

use crate::control::Control;
use crate::store::Store;

/// A request message, or the request id and the error refusing it.
pub(super) fn parse(message: &[u8]) -> Result<RequestEnvelope, (u64, WireError)> {
    match serde_json::from_slice::<RequestEnvelope>(message) {
        Ok(envelope) if envelope.v != PROTOCOL_VERSION => Err((
            envelope.id,
            WireError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {} is not supported (this control speaks {PROTOCOL_VERSION})",
                    envelope.v
                ),
            ),
        )),
        Ok(envelope) => Ok(envelope),
        Err(error) => {
            tracing::info!(%error, "malformed request");
            Err((
                0,
                WireError::new(ErrorCode::BadRequest, "malformed request"),
            ))
        }
    }
}

/// Carries out one request.
pub(super) async fn respond<S: Store>(
    control: &Arc<Control<S>>,
    peer: PublicIdentity,
    envelope: RequestEnvelope,
) -> (u64, Outcome) {
    let op = op_name(&envelope.req);
    let result = control.handle(peer, envelope.req).await;
    if op == "lease_create" {
        control.metrics().lease_outcome(&result);
    }
    let outcome = match result {
        Ok(reply) => Outcome::Ok(reply),
        Err(error @ crate::ControlError::Backend(_)) => {
            // InfluxDB failed, not the peer: the operator needs the real cause (the
            // whole chain, e.g. "connection refused"), at WARN.
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

/// The encoded answer, in a buffer zeroized once sent: the answer to `lease create`
/// carries the lease's token.
pub(super) fn encode(id: u64, outcome: Outcome) -> Zeroizing<Vec<u8>> {
    let response = ResponseEnvelope {
        v: PROTOCOL_VERSION,
        id,
        outcome,
    };
    leasehold_channel::secret::to_json_zeroizing(&response).unwrap_or_else(|error| {
        tracing::error!(%error, "an answer could not be encoded");
        let internal = ResponseEnvelope {
            v: PROTOCOL_VERSION,
            id,
            outcome: Outcome::Err(WireError::new(ErrorCode::Internal, "internal error")),
        };
        Zeroizing::new(serde_json::to_vec(&internal).unwrap_or_default())
    })
}

/// Requests whose answer grows with what the store holds: one at a time per channel, so
/// the answers waiting to be sent stay bounded.
pub(super) fn is_list(req: &Request) -> bool {
    use leasehold_protocol::Request::*;
    matches!(
        req,
        LeaseList | LeasePage { .. } | PolicyList | MemberList | TicketList
    )
}

pub(super) fn op_name(req: &Request) -> &'static str {
    use leasehold_protocol::Request::*;
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

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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use leasehold_channel::conn::{Channel, HANDSHAKE_TIMEOUT};
use leasehold_channel::session::MAX_MESSAGE;
use leasehold_channel::{ChannelError, PublicIdentity};
use leasehold_protocol::{
    ErrorCode, Outcome, PROTOCOL_VERSION, Reply, Request, RequestEnvelope, ResponseEnvelope,
    WireError,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;
use zeroize::Zeroizing;

use crate::admission::{Admission, Caps, Pass};
use crate::control::Control;
use crate::error::ControlError;
use crate::log_throttle::{LOG_INTERVAL, LogThrottle};
use crate::store::Store;

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
        control.clone().tasks().spawn(
            async move {
                connection(control, stream, addr, limits, pass).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn connection<S: Store>(
    control: Arc<Control<S>>,
    stream: TcpStream,
    addr: SocketAddr,
    limits: Limits,
    pass: Pass,
) {
    let _ = stream.set_nodelay(true);
    let accepted = Channel::accept(stream, control.identity(), limits.handshake_timeout).await;
    let _open = control.metrics().handshake(accepted.is_ok());
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
            refuse_first_request(&mut channel, peer, ControlError::Store(error), limits).await;
            return;
        }
    };
    if !member && !enrollment(&control, &mut channel, peer, limits).await {
        return;
    }
    // A member's from here on: it no longer counts as unauthenticated.
    drop(pass);
    channel.set_max_message(MAX_MESSAGE);
    tracing::debug!(identity = %peer, "channel established");
    member_channel(control, channel, peer, limits).await;
}

/// Answers the peer's first request with `error`, then the channel ends.
async fn refuse_first_request(
    channel: &mut Channel<TcpStream>,
    peer: PublicIdentity,
    error: ControlError,
    limits: Limits,
) {
    channel.set_max_message(NON_MEMBER_MAX_MESSAGE);
    let Ok(Ok(message)) = tokio::time::timeout(limits.handshake_timeout, channel.recv()).await
    else {
        return;
    };
    let message = Zeroizing::new(message);
    let id = match parse(&message) {
        Ok(envelope) => envelope.id,
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

/// A finished request: its size, its encoded answer, and for a list the channel's one
/// list permit, given back once the answer is sent.
struct Answer {
    len: usize,
    bytes: Zeroizing<Vec<u8>>,
    _list: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// What a member channel has in progress (pure bookkeeping).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    requests: usize,
    bytes: usize,
}

impl InFlight {
    /// Whether another request may be read: the message read next adds at most the
    /// member cap to what is held.
    fn may_read(&self) -> bool {
        self.requests < MAX_IN_FLIGHT && self.bytes < MAX_IN_FLIGHT_BYTES
    }

    fn taken(&mut self, len: usize) {
        self.requests += 1;
        self.bytes += len;
    }

    fn answered(&mut self, len: usize) {
        self.requests -= 1;
        self.bytes -= len;
    }
}

async fn member_channel<S: Store>(
    control: Arc<Control<S>>,
    mut channel: Channel<TcpStream>,
    peer: PublicIdentity,
    limits: Limits,
) {
    // Requests on one channel are answered concurrently, each as its own task, and the
    // answers go out as they are ready (the client matches them by id). A slow request
    // (InfluxDB retrying) does not hold up the others, and a client that pipelines
    // gets its leases committed to the store in one group.
    let shutdown = control.shutdown().clone();
    let mut in_flight: JoinSet<Answer> = JoinSet::new();
    let mut held = InFlight::default();
    // Only a list's answer can be large (up to the member cap); every other answer is
    // one small record. One list at a time per channel keeps what finished answers
    // waiting to be sent hold bounded too.
    let lists = Arc::new(Semaphore::new(1));
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    let mut reading = true;
    let mut answering = true;
    loop {
        tokio::select! {
            biased;
            Some(done) = in_flight.join_next() => {
                let Answer { len, bytes, _list } = match done {
                    Ok(done) => done,
                    Err(error) => {
                        // The task's size is lost with it; the channel is closed rather
                        // than left with a budget it can never get back.
                        tracing::error!(%error, identity = %peer, "request handler failed");
                        (reading, answering) = (false, false);
                        continue;
                    }
                };
                held.answered(len);
                if answering {
                    // A peer that stops reading its answers is let go like an idle one.
                    match tokio::time::timeout(limits.idle_timeout, channel.send(&bytes)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            tracing::debug!(%error, identity = %peer, "could not answer");
                            (reading, answering) = (false, false);
                        }
                        Err(_) => {
                            tracing::debug!(identity = %peer, "peer does not read its answers; closing");
                            (reading, answering) = (false, false);
                        }
                    }
                }
                idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
            }
            () = shutdown.cancelled(), if reading => reading = false,
            () = &mut idle, if reading && in_flight.is_empty() => {
                tracing::debug!(identity = %peer, idle = ?limits.idle_timeout, "closing idle channel");
                reading = false;
            }
            message = channel.recv(), if reading && held.may_read() => match message {
                Ok(message) => {
                    let message = Zeroizing::new(message);
                    held.taken(message.len());
                    idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                    let (control, lists) = (control.clone(), lists.clone());
                    in_flight.spawn(async move {
                        let len = message.len();
                        let mut list = None;
                        let (id, outcome) = match parse(&message) {
                            Ok(envelope) => {
                                if is_list(&envelope.req) {
                                    list = lists.acquire_owned().await.ok();
                                }
                                respond(&control, peer, envelope).await
                            }
                            Err((id, error)) => (id, Outcome::Err(error)),
                        };
                        Answer { len, bytes: encode(id, outcome), _list: list }
                    }.in_current_span());
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

/// A request message, or the request id and the error refusing it.
fn parse(message: &[u8]) -> Result<RequestEnvelope, (u64, WireError)> {
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
async fn respond<S: Store>(
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
fn encode(id: u64, outcome: Outcome) -> Zeroizing<Vec<u8>> {
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
fn is_list(req: &Request) -> bool {
    use leasehold_protocol::Request::*;
    matches!(
        req,
        LeaseList | LeasePage { .. } | PolicyList | MemberList | TicketList
    )
}

fn op_name(req: &Request) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_channel_holds_a_bounded_number_and_size_of_requests() {
        let mut held = InFlight::default();
        for _ in 0..MAX_IN_FLIGHT - 1 {
            held.taken(100);
        }
        assert!(held.may_read());
        held.taken(100);
        assert!(!held.may_read(), "the request count is capped");
        held.answered(100);
        assert!(held.may_read());

        let mut held = InFlight::default();
        held.taken(MAX_IN_FLIGHT_BYTES - 1);
        assert!(held.may_read());
        held.taken(MAX_MESSAGE);
        assert!(!held.may_read(), "the request bytes are capped");
        // What is held never exceeds the budget plus one message being received.
        assert!(held.bytes < MAX_IN_FLIGHT_BYTES + MAX_MESSAGE);
        held.answered(MAX_MESSAGE);
        assert!(held.may_read());
    }
}

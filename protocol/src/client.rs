//! The typed client every leasehold command and the sidecar use to talk to the control.

use std::time::Duration;

use tokio::net::TcpStream;
use zeroize::Zeroizing;

use crate::{
    ErrorCode, Outcome, PROTOCOL_VERSION, Reply, Request, RequestEnvelope, ResponseEnvelope,
    WireError,
};
use leasehold_channel::conn::{Channel, HANDSHAKE_TIMEOUT};
use leasehold_channel::home::Enrollment;
use leasehold_channel::resumption::TicketSlot;
use leasehold_channel::{ChannelError, Identity, PublicIdentity};

/// How long to wait for a TCP connection to one control address (and then for its
/// handshake) when it is the only address, or on the second pass over several.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one of several control addresses has, on the first pass, to accept the
/// connection and finish the handshake before the next one is tried. A dead replica
/// (a host that drops packets, a stopped process whose socket still accepts) costs a
/// client at most this; a healthy control on a LAN answers in milliseconds.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to wait for an answer; the control may itself be waiting on InfluxDB.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No control address accepted a connection.
    #[error("cannot reach the control at {addrs}: {last}")]
    Unreachable {
        /// The addresses tried.
        addrs: String,
        /// The last error.
        last: String,
    },
    /// The secure channel failed.
    #[error("secure channel to the control failed: {0}")]
    Channel(#[from] ChannelError),
    /// The control answered with an error.
    #[error("control refused: {}", .0.message)]
    Remote(WireError),
    /// The control did not answer in time.
    #[error("the control did not answer within {0:?}")]
    Timeout(Duration),
    /// The control answered something this client does not understand.
    #[error("unexpected answer from the control: {0}")]
    Protocol(String),
}

/// A connection to the control over the secure channel.
pub struct Client {
    channel: Channel<TcpStream>,
    next_id: u64,
    /// Which of the addresses it was given it is connected to.
    addr_index: usize,
}

impl Client {
    /// Connects to the first reachable address of `enrollment` as `identity`.
    pub async fn connect(
        enrollment: &Enrollment,
        identity: &Identity,
    ) -> Result<Self, ClientError> {
        Self::connect_to(&enrollment.addrs, &enrollment.control, identity).await
    }

    /// Connects to one of `addrs` (a control's replicas), pinning `control`: starting
    /// at a random one, so that clients spread over the replicas, and moving on to the
    /// next when one does not answer.
    pub async fn connect_to(
        addrs: &[String],
        control: &PublicIdentity,
        identity: &Identity,
    ) -> Result<Self, ClientError> {
        Self::connect_starting_at(addrs, random_index(addrs.len()), control, identity).await
    }

    /// [`Client::connect_to`], trying `addrs[first]` first and the others after it in
    /// order (wrapping around).
    ///
    /// With several addresses, the first pass gives each [`FAILOVER_TIMEOUT`] to accept
    /// and complete the handshake; only if none did are those that timed out (not
    /// those that refused) tried again with the full [`CONNECT_TIMEOUT`] and
    /// [`HANDSHAKE_TIMEOUT`], so a control that is merely slow (a thundering herd after
    /// a restart) is still reached. A single address gets the full timeouts at once.
    pub async fn connect_starting_at(
        addrs: &[String],
        first: usize,
        control: &PublicIdentity,
        identity: &Identity,
    ) -> Result<Self, ClientError> {
        Self::connect_with(addrs, first, control, identity, None).await
    }

    /// [`Client::connect_to`] resuming with the ticket in `tickets` when it holds a
    /// usable one (any replica honours it: they share the identity), and keeping there
    /// the ticket each channel brings. For a client that opens channels often (the
    /// sidecar); see `leasehold_channel::resume`.
    pub async fn connect_resuming(
        addrs: &[String],
        control: &PublicIdentity,
        identity: &Identity,
        tickets: &mut TicketSlot,
    ) -> Result<Self, ClientError> {
        let first = random_index(addrs.len());
        Self::connect_with(addrs, first, control, identity, Some(tickets)).await
    }

    /// [`Client::connect_elsewhere`] with a resumption ticket slot, as
    /// [`Client::connect_resuming`].
    pub async fn connect_elsewhere_resuming(
        &self,
        addrs: &[String],
        control: &PublicIdentity,
        identity: &Identity,
        tickets: &mut TicketSlot,
    ) -> Result<Self, ClientError> {
        Self::connect_with(addrs, self.addr_index + 1, control, identity, Some(tickets)).await
    }

    async fn connect_with(
        addrs: &[String],
        first: usize,
        control: &PublicIdentity,
        identity: &Identity,
        mut tickets: Option<&mut TicketSlot>,
    ) -> Result<Self, ClientError> {
        let order: Vec<(usize, &String)> = rotation(addrs.len(), first)
            .map(|i| (i, &addrs[i]))
            .collect();
        let mut last = Failure::Unreachable("no address given".into());
        let mut slow = Vec::new();
        let first_pass = if order.len() > 1 {
            (FAILOVER_TIMEOUT, FAILOVER_TIMEOUT)
        } else {
            (CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT)
        };
        for &(index, addr) in &order {
            match attempt(addr, control, identity, first_pass, tickets.as_deref_mut()).await {
                Ok(channel) => return Ok(Self::over(channel, index)),
                Err(failure) => {
                    tracing::debug!(addr = %addr, error = %failure, "control address did not answer; trying the next");
                    if order.len() > 1 && failure.timed_out() {
                        slow.push((index, addr));
                    }
                    last = failure;
                }
            }
        }
        for (index, addr) in slow {
            match attempt(
                addr,
                control,
                identity,
                (CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT),
                tickets.as_deref_mut(),
            )
            .await
            {
                Ok(channel) => return Ok(Self::over(channel, index)),
                Err(failure) => last = failure,
            }
        }
        Err(match last {
            Failure::Channel(e) => ClientError::Channel(e),
            Failure::Unreachable(last) => ClientError::Unreachable {
                addrs: addrs.join(", "),
                last,
            },
        })
    }

    fn over(channel: Channel<TcpStream>, addr_index: usize) -> Self {
        Self {
            channel,
            next_id: 1,
            addr_index,
        }
    }

    /// Whether this connection's channel was resumed with a ticket.
    pub fn resumed(&self) -> bool {
        self.channel.resumed()
    }

    /// The index, in the addresses it was given, of the one this client reached.
    pub fn addr_index(&self) -> usize {
        self.addr_index
    }

    /// A new connection to another of `addrs` than this one: starting at the next
    /// address, this one last. For a refusal that another replica may not give
    /// ([`worth_another_replica`]).
    pub async fn connect_elsewhere(
        &self,
        addrs: &[String],
        control: &PublicIdentity,
        identity: &Identity,
    ) -> Result<Self, ClientError> {
        Self::connect_starting_at(addrs, self.addr_index + 1, control, identity).await
    }

    /// Sends `req` and waits for its answer.
    pub async fn call(&mut self, req: Request) -> Result<Reply, ClientError> {
        let exchange = async {
            let id = self.submit(req).await?;
            let (answered, reply) = self.next_answer().await?;
            if answered != id {
                return Err(ClientError::Protocol(format!(
                    "answer to request {answered} while waiting for {id}"
                )));
            }
            reply
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT))?
    }

    /// Sends `req` without waiting for its answer and returns its id. The control
    /// works on the requests of one channel concurrently and answers each as soon as it
    /// is done, so answers may come back in another order: [`Client::next_answer`]
    /// says which request each one is for.
    pub async fn submit(&mut self, req: Request) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let envelope = RequestEnvelope {
            v: PROTOCOL_VERSION,
            id,
            req,
        };
        // A request may carry a ticket secret or an admin credential.
        let bytes = leasehold_channel::secret::to_json_zeroizing(&envelope)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.channel.send(&bytes).await?;
        Ok(id)
    }

    /// Waits for the next answer to a [`Client::submit`]ted request: its id, and the
    /// reply or the control's refusal. An `Err` outside is the channel failing.
    pub async fn next_answer(&mut self) -> Result<(u64, Result<Reply, ClientError>), ClientError> {
        // The answer to `lease create` carries a token: the buffer is zeroized once
        // parsed (the token itself lives on in a `Secret`).
        let answer = Zeroizing::new(self.channel.recv().await?);
        let response: ResponseEnvelope =
            serde_json::from_slice(&answer).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let reply = match response.outcome {
            Outcome::Ok(reply) => Ok(reply),
            Outcome::Err(error) => Err(ClientError::Remote(error)),
        };
        Ok((response.id, reply))
    }
}

/// Whether a call that failed with `error` is worth one more try on another replica
/// (when there is one): the control said it cannot serve right now
/// ([`ErrorCode::Unavailable`]: say, that replica's store is unreachable, or InfluxDB
/// is, from there). A refusal on the merits (not a member, a TTL too long) would be
/// the same everywhere, and a broken channel is retried by reconnecting anyway.
pub fn worth_another_replica(error: &ClientError) -> bool {
    matches!(error, ClientError::Remote(e) if e.code == ErrorCode::Unavailable)
}

/// Why one address failed.
#[derive(Debug)]
enum Failure {
    /// No TCP connection (refused, unreachable, timed out).
    Unreachable(String),
    /// Connected, but the handshake failed or timed out.
    Channel(ChannelError),
}

impl Failure {
    fn timed_out(&self) -> bool {
        match self {
            Self::Unreachable(text) => text == TIMED_OUT,
            Self::Channel(e) => matches!(e, ChannelError::HandshakeTimeout),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(text) => f.write_str(text),
            Self::Channel(e) => e.fmt(f),
        }
    }
}

const TIMED_OUT: &str = "connection timed out";

/// One TCP connection and handshake to `addr`, each within its timeout.
async fn attempt(
    addr: &str,
    control: &PublicIdentity,
    identity: &Identity,
    (connect, handshake): (Duration, Duration),
    tickets: Option<&mut TicketSlot>,
) -> Result<Channel<TcpStream>, Failure> {
    let stream = match tokio::time::timeout(connect, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(Failure::Unreachable(e.to_string())),
        Err(_) => return Err(Failure::Unreachable(TIMED_OUT.into())),
    };
    // Requests are small and latency-bound: do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    match tickets {
        Some(tickets) => {
            Channel::connect_resuming(stream, identity, control, tickets, handshake).await
        }
        None => Channel::connect(stream, identity, control, handshake).await,
    }
    .map_err(Failure::Channel)
}

/// The indices `0..len`, starting at `first` (taken modulo `len`) and wrapping around.
pub fn rotation(len: usize, first: usize) -> impl Iterator<Item = usize> {
    let start = if len == 0 { 0 } else { first % len };
    (0..len).map(move |step| (start + step) % len)
}

/// A uniformly random index below `len` (0 when `len` is 0 or 1).
fn random_index(len: usize) -> usize {
    if len < 2 {
        return 0;
    }
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    // The modulo bias over 2^64 is negligible for a handful of replicas.
    (u64::from_le_bytes(bytes) % len as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_visits_every_address_once_from_the_first() {
        assert_eq!(rotation(3, 1).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(rotation(3, 0).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(rotation(3, 5).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(rotation(1, 7).collect::<Vec<_>>(), [0]);
        assert_eq!(rotation(0, 3).count(), 0);
    }

    #[test]
    fn the_random_start_stays_in_range_and_varies() {
        let seen: std::collections::BTreeSet<usize> = (0..200).map(|_| random_index(3)).collect();
        assert_eq!(seen, [0, 1, 2].into());
        assert_eq!(random_index(1), 0);
        assert_eq!(random_index(0), 0);
    }
}

//! The typed client every leasehold command and the sidecar use to talk to the control.

use std::time::Duration;

use tokio::net::TcpStream;
use zeroize::Zeroizing;

use crate::{
    Outcome, PROTOCOL_VERSION, Reply, Request, RequestEnvelope, ResponseEnvelope, WireError,
};
use leasehold_channel::conn::{Channel, HANDSHAKE_TIMEOUT};
use leasehold_channel::home::Enrollment;
use leasehold_channel::{ChannelError, Identity, PublicIdentity};

/// How long to wait for a TCP connection to one control address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
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
}

impl Client {
    /// Connects to the first reachable address of `enrollment` as `identity`.
    pub async fn connect(
        enrollment: &Enrollment,
        identity: &Identity,
    ) -> Result<Self, ClientError> {
        Self::connect_to(&enrollment.addrs, &enrollment.control, identity).await
    }

    /// Connects to the first reachable of `addrs`, pinning `control`.
    pub async fn connect_to(
        addrs: &[String],
        control: &PublicIdentity,
        identity: &Identity,
    ) -> Result<Self, ClientError> {
        let mut last = String::from("no address given");
        for addr in addrs {
            let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    last = e.to_string();
                    continue;
                }
                Err(_) => {
                    last = "connection timed out".into();
                    continue;
                }
            };
            // Requests are small and latency-bound: do not let Nagle hold them back.
            let _ = stream.set_nodelay(true);
            let channel = Channel::connect(stream, identity, control, HANDSHAKE_TIMEOUT).await?;
            return Ok(Self {
                channel,
                next_id: 1,
            });
        }
        Err(ClientError::Unreachable {
            addrs: addrs.join(", "),
            last,
        })
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

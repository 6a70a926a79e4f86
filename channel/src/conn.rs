//! The async shell around the pure channel: reads frames off a stream, feeds them to the
//! handshake or the session, writes what comes back.
//!
//! Receive buffers grow with what actually arrives, a few KiB at a time, not with what a
//! length prefix announces, and shrink back once a large frame is consumed: a server
//! holding thousands of mostly idle channels (or half-sent handshakes) pays for bytes
//! received, not for bytes promised.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{self, Decoded};
use crate::handshake::{self, Initiator};
use crate::session::Session;
use crate::{ChannelError, Identity, PublicIdentity};

/// How long a peer has to complete the handshake, by default.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most a single read adds to a receive buffer.
const READ_CHUNK: usize = 8 << 10;

/// An established, authenticated channel over a byte stream.
pub struct Channel<S> {
    io: S,
    session: Session,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Channel<S> {
    /// Connects as `identity` to the control pinned as `control`.
    pub async fn connect(
        io: S,
        identity: &Identity,
        control: &PublicIdentity,
        timeout: Duration,
    ) -> Result<Self, ChannelError> {
        tokio::time::timeout(timeout, Self::connect_inner(io, identity, control))
            .await
            .map_err(|_| ChannelError::HandshakeTimeout)?
    }

    async fn connect_inner(
        mut io: S,
        identity: &Identity,
        control: &PublicIdentity,
    ) -> Result<Self, ChannelError> {
        let mut inbox = Vec::new();
        let mut outbox = Vec::new();
        let (initiator, msg1) = Initiator::start(identity, control)?;
        frame::encode(&msg1, &mut outbox)?;
        io.write_all(&outbox).await?;
        outbox.clear();
        let msg2 = read_frame(&mut io, &mut inbox).await?;
        let (session, proof) = initiator.finish(&msg2)?;
        // The proof goes out with the first request rather than alone: no extra trip.
        Ok(Self {
            io,
            session,
            inbox,
            outbox: proof,
        })
    }

    /// Accepts a client as the control `identity`. The client is authenticated when this
    /// returns; [`Channel::peer`] says who it is.
    pub async fn accept(
        io: S,
        identity: &Identity,
        timeout: Duration,
    ) -> Result<Self, ChannelError> {
        tokio::time::timeout(timeout, Self::accept_inner(io, identity))
            .await
            .map_err(|_| ChannelError::HandshakeTimeout)?
    }

    async fn accept_inner(mut io: S, identity: &Identity) -> Result<Self, ChannelError> {
        let mut inbox = Vec::new();
        let msg1 = read_frame(&mut io, &mut inbox).await?;
        let (pending, msg2) = handshake::respond(identity, &msg1)?;
        let mut outbox = Vec::new();
        frame::encode(&msg2, &mut outbox)?;
        io.write_all(&outbox).await?;
        outbox.clear();
        let proof = read_frame(&mut io, &mut inbox).await?;
        let session = pending.verify(&proof)?;
        Ok(Self {
            io,
            session,
            inbox,
            outbox,
        })
    }

    /// The authenticated identity at the other end.
    pub fn peer(&self) -> PublicIdentity {
        self.session.peer()
    }

    /// Lowers (or restores, up to [`crate::session::MAX_MESSAGE`]) the largest message
    /// [`Channel::recv`] accepts; a larger one fails with
    /// [`ChannelError::MessageTooLarge`] as soon as its excess arrives.
    pub fn set_max_message(&mut self, max: usize) {
        self.session.set_max_message(max);
    }

    /// Writes anything queued but not sent: after [`Channel::connect`], the identity
    /// proof, which otherwise goes out with the first message.
    pub async fn flush(&mut self) -> Result<(), ChannelError> {
        let result = self.io.write_all(&self.outbox).await;
        self.outbox.clear();
        result?;
        Ok(())
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &[u8]) -> Result<(), ChannelError> {
        self.session.seal(message, &mut self.outbox)?;
        let result = self.io.write_all(&self.outbox).await;
        self.outbox.clear();
        result?;
        Ok(())
    }

    /// Receives one message. [`ChannelError::Closed`] on a clean end of stream.
    pub async fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        loop {
            let body = read_frame(&mut self.io, &mut self.inbox).await?;
            if let Some(message) = self.session.open(&body)? {
                return Ok(message);
            }
        }
    }

    /// Takes the channel apart, for a caller that drives both directions at once (the
    /// outlet's byte tunnel): the stream, the session, the bytes already read past the
    /// last frame, and the bytes queued but not sent (after [`Channel::connect`], the
    /// identity proof).
    pub fn into_parts(self) -> (S, Session, Vec<u8>, Vec<u8>) {
        (self.io, self.session, self.inbox, self.outbox)
    }

    /// Shuts the write side down.
    pub async fn shutdown(&mut self) -> Result<(), ChannelError> {
        self.io.shutdown().await?;
        Ok(())
    }
}

/// Reads one frame body, buffering any bytes past it in `inbox`. Cancel-safe: bytes
/// read stay in `inbox`.
pub async fn read_frame<S: AsyncRead + Unpin>(
    io: &mut S,
    inbox: &mut Vec<u8>,
) -> Result<Vec<u8>, ChannelError> {
    loop {
        match frame::decode(inbox)? {
            Decoded::Frame { body, consumed } => {
                let body = body.to_vec();
                inbox.drain(..consumed);
                if inbox.is_empty() && inbox.capacity() > READ_CHUNK {
                    inbox.shrink_to(READ_CHUNK);
                }
                return Ok(body);
            }
            Decoded::Incomplete { needed } => {
                inbox.reserve(needed.min(READ_CHUNK));
                let read = io.read_buf(inbox).await?;
                if read == 0 {
                    return Err(if inbox.is_empty() {
                        ChannelError::Closed
                    } else {
                        ChannelError::Io(std::io::ErrorKind::UnexpectedEof.into())
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    async fn connected() -> (
        Channel<tokio::io::DuplexStream>,
        Channel<tokio::io::DuplexStream>,
    ) {
        let client = Identity::generate();
        let control = Identity::generate();
        let pin = control.public();
        let (a, b) = duplex(1 << 16);
        let server =
            tokio::spawn(async move { Channel::accept(b, &control, HANDSHAKE_TIMEOUT).await });
        let client = Channel::connect(a, &client, &pin, HANDSHAKE_TIMEOUT)
            .await
            .unwrap();
        let mut client = client;
        // The control only finishes accepting once the proof arrives with a message.
        client.send(b"hello").await.unwrap();
        let mut server = server.await.unwrap().unwrap();
        assert_eq!(server.recv().await.unwrap(), b"hello");
        (client, server)
    }

    #[tokio::test]
    async fn request_and_response_in_memory() {
        let (mut client, mut server) = connected().await;
        server.send(b"world").await.unwrap();
        assert_eq!(client.recv().await.unwrap(), b"world");
        // Larger than the in-memory pipe: both ends must make progress concurrently.
        let big = vec![7u8; 300_000];
        let (sent, received) = tokio::join!(client.send(&big), server.recv());
        sent.unwrap();
        assert_eq!(received.unwrap(), big);
    }

    #[tokio::test]
    async fn oversized_length_prefix_is_refused() {
        let control = Identity::generate();
        let (mut a, b) = duplex(1024);
        let server =
            tokio::spawn(async move { Channel::accept(b, &control, HANDSHAKE_TIMEOUT).await });
        a.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
        assert!(matches!(
            server.await.unwrap(),
            Err(ChannelError::FrameTooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn a_promised_frame_costs_only_the_bytes_that_arrived() {
        let (mut a, mut b) = duplex(1 << 17);
        let mut sliver = (frame::MAX_FRAME as u32).to_be_bytes().to_vec();
        sliver.extend_from_slice(&[1; 100]);
        a.write_all(&sliver).await.unwrap();
        let mut inbox = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_millis(50), read_frame(&mut b, &mut inbox)).await;
        assert!(read.is_err(), "the frame is incomplete");
        assert_eq!(inbox.len(), sliver.len());
        // Not the 64 KiB announced: what arrived plus a read's worth, with the usual
        // doubling of a growing buffer.
        let bound = 2 * (sliver.len() + READ_CHUNK);
        assert!(inbox.capacity() <= bound, "{}", inbox.capacity());
        // Once a large frame is consumed, the buffer shrinks back.
        a.write_all(&vec![2; frame::MAX_FRAME - 100]).await.unwrap();
        let body = read_frame(&mut b, &mut inbox).await.unwrap();
        assert_eq!(body.len(), frame::MAX_FRAME);
        assert!(inbox.capacity() <= READ_CHUNK);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peer_times_out() {
        let control = Identity::generate();
        let (_a, b) = duplex(1024);
        let result = Channel::accept(b, &control, HANDSHAKE_TIMEOUT).await;
        assert!(matches!(result, Err(ChannelError::HandshakeTimeout)));
    }

    #[tokio::test]
    async fn truncated_handshake_is_refused() {
        let client = Identity::generate();
        let control = Identity::generate();
        let (msg1_full, _) = {
            let (_, msg1) = Initiator::start(&client, &control.public()).unwrap();
            (msg1, ())
        };
        let (mut a, b) = duplex(1024);
        let server =
            tokio::spawn(async move { Channel::accept(b, &control, HANDSHAKE_TIMEOUT).await });
        let mut wire = Vec::new();
        frame::encode(&msg1_full, &mut wire).unwrap();
        a.write_all(&wire[..wire.len() / 2]).await.unwrap();
        drop(a);
        assert!(matches!(server.await.unwrap(), Err(ChannelError::Io(_))));
    }
}

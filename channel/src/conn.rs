//! The async shell around the pure channel: reads frames off a stream, feeds them to the
//! handshake or the session, writes what comes back.
//!
//! Receive buffers grow with what actually arrives, a few KiB at a time, not with what a
//! length prefix announces, and shrink back once a large frame is consumed: a server
//! holding thousands of mostly idle channels (or half-sent handshakes) pays for bytes
//! received, not for bytes promised.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{self, Decoded};
use crate::handshake::{self, Initiator};
use crate::resume::{self, RESUME_MARKER, RESUME_REFUSED, Resuming};
use crate::resumption::{TicketKey, TicketSlot};
use crate::session::Session;
use crate::time::Timestamp;
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
    resumed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Channel<S> {
    /// Connects as `identity` to the control pinned as `control`.
    pub async fn connect(
        io: S,
        identity: &Identity,
        control: &PublicIdentity,
        timeout: Duration,
    ) -> Result<Self, ChannelError> {
        tokio::time::timeout(timeout, Self::connect_inner(io, identity, control, None))
            .await
            .map_err(|_| ChannelError::HandshakeTimeout)?
    }

    /// [`Channel::connect`] with a resumption ticket slot: resumes with the ticket it
    /// holds when that one is usable for `control`, and otherwise (or when the control
    /// refuses the ticket: one more round trip, same connection) does a full handshake
    /// asking for one. On success the slot holds the ticket the control granted (or
    /// nothing); on failure it is emptied, so the next attempt is a full handshake.
    pub async fn connect_resuming(
        io: S,
        identity: &Identity,
        control: &PublicIdentity,
        tickets: &mut TicketSlot,
        timeout: Duration,
    ) -> Result<Self, ChannelError> {
        let connected = tokio::time::timeout(
            timeout,
            Self::connect_inner(io, identity, control, Some(&mut *tickets)),
        )
        .await
        .map_err(|_| ChannelError::HandshakeTimeout)
        .and_then(|connected| connected);
        if connected.is_err() {
            tickets.clear();
        }
        connected
    }

    async fn connect_inner(
        mut io: S,
        identity: &Identity,
        control: &PublicIdentity,
        mut tickets: Option<&mut TicketSlot>,
    ) -> Result<Self, ChannelError> {
        let mut inbox = Vec::new();
        let mut outbox = Vec::new();
        let ticket = tickets
            .as_deref_mut()
            .and_then(|slot| slot.usable(control, Instant::now()));
        if let Some(ticket) = ticket {
            let (resuming, msg1) = Resuming::start(ticket)?;
            frame::encode(RESUME_MARKER, &mut outbox)?;
            frame::encode(&msg1, &mut outbox)?;
            io.write_all(&outbox).await?;
            outbox.clear();
            let msg2 = read_frame(&mut io, &mut inbox).await?;
            if msg2 != RESUME_REFUSED {
                let (session, confirmation, ticket) = resuming.finish(&msg2)?;
                if let Some(slot) = tickets {
                    slot.set(ticket);
                }
                // The confirmation goes out with the first request, as the IK proof.
                return Ok(Self {
                    io,
                    session,
                    inbox,
                    outbox: confirmation,
                    resumed: true,
                });
            }
            tracing::debug!("resumption refused; full handshake");
        }
        let (initiator, msg1) = if tickets.is_some() {
            Initiator::start_asking_ticket(identity, control)?
        } else {
            Initiator::start(identity, control)?
        };
        frame::encode(&msg1, &mut outbox)?;
        io.write_all(&outbox).await?;
        outbox.clear();
        let msg2 = read_frame(&mut io, &mut inbox).await?;
        let (session, proof, ticket) = initiator.finish_with_ticket(&msg2)?;
        if let Some(slot) = tickets {
            slot.set(ticket);
        }
        // The proof goes out with the first request rather than alone: no extra trip.
        Ok(Self {
            io,
            session,
            inbox,
            outbox: proof,
            resumed: false,
        })
    }

    /// Accepts a client as the control `identity`. The client is authenticated when this
    /// returns; [`Channel::peer`] says who it is.
    pub async fn accept(
        io: S,
        identity: &Identity,
        timeout: Duration,
    ) -> Result<Self, ChannelError> {
        tokio::time::timeout(timeout, Self::accept_inner(io, identity, None))
            .await
            .map_err(|_| ChannelError::HandshakeTimeout)?
    }

    /// [`Channel::accept`] that also resumes channels with tickets sealed by `tickets`
    /// (refusing the others, so that their clients do a full handshake on the same
    /// connection) and grants tickets to clients that ask. A resumed channel's peer is
    /// the client its ticket names: the caller checks membership exactly as after a
    /// full handshake.
    pub async fn accept_resumable(
        io: S,
        identity: &Identity,
        tickets: &TicketKey,
        timeout: Duration,
    ) -> Result<Self, ChannelError> {
        tokio::time::timeout(timeout, Self::accept_inner(io, identity, Some(tickets)))
            .await
            .map_err(|_| ChannelError::HandshakeTimeout)?
    }

    async fn accept_inner(
        mut io: S,
        identity: &Identity,
        tickets: Option<&TicketKey>,
    ) -> Result<Self, ChannelError> {
        let mut inbox = Vec::new();
        let mut outbox = Vec::new();
        let mut msg1 = read_frame(&mut io, &mut inbox).await?;
        if msg1 == RESUME_MARKER {
            let hello = read_frame(&mut io, &mut inbox).await?;
            let now = Timestamp::now();
            let resumed = match tickets {
                Some(key) => resume::respond_resumed(key, &hello, now).map_err(|refused| {
                    tracing::debug!(reason = %refused, "resumption refused");
                }),
                None => Err(()),
            };
            match resumed {
                Ok((pending, msg2)) => {
                    frame::encode(&msg2, &mut outbox)?;
                    io.write_all(&outbox).await?;
                    outbox.clear();
                    let confirmation = read_frame(&mut io, &mut inbox).await?;
                    let session = pending.verify(&confirmation)?;
                    return Ok(Self {
                        io,
                        session,
                        inbox,
                        outbox,
                        resumed: true,
                    });
                }
                Err(()) => {
                    // Not honoured: the client goes on with a full handshake here.
                    frame::encode(RESUME_REFUSED, &mut outbox)?;
                    io.write_all(&outbox).await?;
                    outbox.clear();
                    msg1 = read_frame(&mut io, &mut inbox).await?;
                }
            }
        }
        let (pending, msg2) =
            handshake::respond_granting(identity, tickets, &msg1, Timestamp::now())?;
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
            resumed: false,
        })
    }

    /// Whether this channel was resumed with a ticket rather than fully handshaken.
    pub fn resumed(&self) -> bool {
        self.resumed
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

    /// Connects `client` with `slot` to a control accepting with `tickets` (none: a
    /// control that resumes nothing), exchanges one message, and returns both ends.
    async fn resuming(
        client: &Identity,
        control: &Identity,
        tickets: Option<TicketKey>,
        slot: &mut TicketSlot,
    ) -> (
        Channel<tokio::io::DuplexStream>,
        Channel<tokio::io::DuplexStream>,
    ) {
        let (a, b) = duplex(1 << 16);
        let acceptor = control.clone();
        let server = tokio::spawn(async move {
            match tickets {
                Some(key) => Channel::accept_resumable(b, &acceptor, &key, HANDSHAKE_TIMEOUT).await,
                None => Channel::accept(b, &acceptor, HANDSHAKE_TIMEOUT).await,
            }
        });
        let mut client =
            Channel::connect_resuming(a, client, &control.public(), slot, HANDSHAKE_TIMEOUT)
                .await
                .unwrap();
        client.send(b"hello").await.unwrap();
        let mut server = server.await.unwrap().unwrap();
        assert_eq!(server.recv().await.unwrap(), b"hello");
        assert_eq!(server.resumed(), client.resumed());
        (client, server)
    }

    #[tokio::test]
    async fn a_recent_client_resumes_and_keeps_a_fresh_ticket() {
        let (client, control) = (Identity::generate(), Identity::generate());
        let key = || TicketKey::new(&control);
        let mut slot = TicketSlot::new();
        let (full, _) = resuming(&client, &control, Some(key()), &mut slot).await;
        assert!(!full.resumed());
        let first = slot
            .ticket()
            .expect("a full handshake earns a ticket")
            .ticket()
            .to_vec();
        for _ in 0..2 {
            let (mut client_end, mut server) =
                resuming(&client, &control, Some(key()), &mut slot).await;
            assert!(client_end.resumed(), "a held ticket resumes");
            assert_eq!(server.peer(), client.public());
            assert_eq!(client_end.peer(), control.public());
            server.send(b"world").await.unwrap();
            assert_eq!(client_end.recv().await.unwrap(), b"world");
        }
        assert_ne!(
            slot.ticket().unwrap().ticket(),
            &first[..],
            "each channel brings a new ticket"
        );
    }

    #[tokio::test]
    async fn a_refused_ticket_falls_back_to_a_full_handshake_on_the_same_connection() {
        let client = Identity::generate();
        let control = Identity::generate();
        let mut slot = TicketSlot::new();
        resuming(&client, &control, Some(TicketKey::new(&control)), &mut slot).await;
        assert!(slot.ticket().is_some());
        // The same identity, but a control that does not resume: refused, then IK.
        let (end, _) = resuming(&client, &control, None, &mut slot).await;
        assert!(!end.resumed());
        assert!(
            slot.ticket().is_none(),
            "a control without tickets grants none"
        );
        // A ticket the control's key does not open (its identity key changed while
        // the pin stayed: a ticket from another control identity).
        resuming(&client, &control, Some(TicketKey::new(&control)), &mut slot).await;
        let (end, _) = resuming(
            &client,
            &control,
            Some(TicketKey::new(&Identity::generate())),
            &mut slot,
        )
        .await;
        assert!(!end.resumed());
        assert!(
            slot.ticket().is_some(),
            "the full handshake brought a new ticket"
        );
    }

    #[tokio::test]
    async fn an_expired_ticket_gets_a_full_handshake() {
        let client = Identity::generate();
        let control = Identity::generate();
        let key = TicketKey::new(&control);
        // A ticket that ended an hour ago, which the client (its clock told otherwise)
        // still offers: the control refuses it and the channel is made in full.
        let past = Timestamp(Timestamp::now().0 - 7200);
        let mut grant = key
            .grant(&client.public(), past, past.plus_secs(3600))
            .unwrap();
        grant[..4].copy_from_slice(&3600u32.to_be_bytes());
        let mut slot = TicketSlot::new();
        slot.set(crate::resumption::ResumptionTicket::from_grant(
            control.public(),
            &grant[..],
            Instant::now(),
        ));
        let (end, _) = resuming(&client, &control, Some(TicketKey::new(&control)), &mut slot).await;
        assert!(!end.resumed());
        assert!(slot.ticket().is_some());
        let (end, _) = resuming(&client, &control, Some(key), &mut slot).await;
        assert!(end.resumed(), "the new ticket resumes");
    }

    #[tokio::test]
    async fn a_replayed_resumption_yields_no_channel() {
        let client = Identity::generate();
        let control = Identity::generate();
        let mut slot = TicketSlot::new();
        resuming(&client, &control, Some(TicketKey::new(&control)), &mut slot).await;
        // What a client sent to resume, as an eavesdropper recorded it, and the
        // confirmation that went with it.
        let (resuming_state, msg1) = Resuming::start(slot.ticket().unwrap()).unwrap();
        let mut recorded = Vec::new();
        frame::encode(RESUME_MARKER, &mut recorded).unwrap();
        frame::encode(&msg1, &mut recorded).unwrap();
        let (_, msg2) =
            resume::respond_resumed(&TicketKey::new(&control), &msg1, Timestamp::now()).unwrap();
        let (_, confirmation, _) = resuming_state.finish(&msg2).unwrap();
        // Replayed to the control: it answers, but the recorded confirmation (or
        // anything else) does not complete the channel.
        let (mut attacker, b) = duplex(1 << 16);
        let key = TicketKey::new(&control);
        let acceptor = control.clone();
        let server = tokio::spawn(async move {
            Channel::accept_resumable(b, &acceptor, &key, HANDSHAKE_TIMEOUT).await
        });
        attacker.write_all(&recorded).await.unwrap();
        let mut inbox = Vec::new();
        let answer = read_frame(&mut attacker, &mut inbox).await.unwrap();
        assert_ne!(answer, RESUME_REFUSED, "a replay looks like a resumption");
        attacker.write_all(&confirmation).await.unwrap();
        assert!(server.await.unwrap().is_err());
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

//! A resumed channel: `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s` keyed with a resumption
//! ticket's PSK ([`crate::resumption`]), as a pure state machine beside the IK one in
//! [`crate::handshake`]. Why this is as safe as IK for what the channel is used for is
//! argued in ARCHITECTURE.md, "Resumed channels"; in short:
//!
//! - **Authentication** of both sides is the PSK: only the client the ticket was granted
//!   to (in a full, signed IK handshake) and a control holding the identity that sealed
//!   it know it. `psk0` mixes it in before anything is sent, so message 1 already fails
//!   for anyone else, and message 2 authenticates the control to the client.
//! - **Forward secrecy** is the ephemeral-ephemeral DH (`ee`): the transport keys need
//!   both ephemeral private keys, so neither the PSK nor the control's identity key,
//!   stolen later, opens a recorded channel.
//! - **Replay** of message 1 gets a fresh message 2 (a new control ephemeral key) that
//!   only the holder of the client's ephemeral key can use: the control waits for the
//!   client's key confirmation, sealed under the final keys, before it trusts anything.
//!
//! On the wire: a one-byte frame [`RESUME_MARKER`] (no IK message 1 is that short, so
//! the control tells the two apart by the first frame), then message 1 =
//! `ticket length (2) ‖ ticket ‖ Noise e` with payload `[VERSION]`, the ticket also
//! bound as the prologue. The control answers message 2 (`e, ee`, payload: a new grant
//! with the same end) or, when it does not honour the ticket, a one-byte frame
//! [`RESUME_REFUSED`], after which the client runs IK on the same connection. Message 3
//! is the client's key confirmation, sent with its first request as the IK proof is.

use std::sync::LazyLock;
use std::time::Instant;

use zeroize::Zeroizing;

use crate::handshake::{PendingProof, VERSION};
use crate::resumption::{GRANT_LEN, ResumptionTicket, TICKET_LEN, TicketKey, TicketRefused};
use crate::session::Session;
use crate::time::Timestamp;
use crate::{ChannelError, PublicIdentity};

/// The Noise protocol name of a resumed channel.
pub const RESUME_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// The first frame of a resumption, before its message 1.
pub const RESUME_MARKER: &[u8] = b"R";
/// The control's answer to a resumption it does not honour.
pub const RESUME_REFUSED: &[u8] = &[0];
/// The parameters, parsed once.
static PARAMS: LazyLock<snow::params::NoiseParams> =
    LazyLock::new(|| RESUME_PARAMS.parse().expect("valid Noise parameters"));
const PROLOGUE: &[u8] = b"leasehold channel v1 resumed\0";
/// The client's key confirmation (message 3).
const CONFIRMATION: &[u8] = b"leasehold/1 resumed channel confirmed\0";
const NOISE_MSG1_LEN: usize = 32 + 1 + 16;
/// Room for message 2: a key, a grant and a tag.
const BUF_LEN: usize = 256;

fn state(
    psk: &[u8; 32],
    ticket: &[u8],
    initiator: bool,
) -> Result<snow::HandshakeState, ChannelError> {
    let mut prologue = Vec::with_capacity(PROLOGUE.len() + ticket.len());
    prologue.extend_from_slice(PROLOGUE);
    prologue.extend_from_slice(ticket);
    let resolver = Box::new(crate::noise_dh::Resolver::plain());
    let builder = snow::Builder::with_resolver(PARAMS.clone(), resolver)
        .psk(0, psk)
        .and_then(|b| b.prologue(&prologue))
        .map_err(|_| ChannelError::Handshake)?;
    if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .map_err(|_| ChannelError::Handshake)
}

/// The client side of a resumption, after sending message 1.
pub struct Resuming {
    state: snow::HandshakeState,
    control: PublicIdentity,
}

impl Resuming {
    /// Starts resuming with `ticket`. Returns the state and the body of message 1 (sent
    /// after a [`RESUME_MARKER`] frame).
    pub fn start(ticket: &ResumptionTicket) -> Result<(Self, Vec<u8>), ChannelError> {
        let sealed = ticket.ticket();
        let mut state = state(ticket.psk(), sealed, true)?;
        let mut msg = vec![0u8; 2 + sealed.len() + NOISE_MSG1_LEN];
        // Tickets are TICKET_LEN bytes, far below u16::MAX.
        msg[..2].copy_from_slice(&(sealed.len() as u16).to_be_bytes());
        msg[2..2 + sealed.len()].copy_from_slice(sealed);
        let len = state
            .write_message(&[VERSION], &mut msg[2 + sealed.len()..])
            .map_err(|_| ChannelError::Handshake)?;
        msg.truncate(2 + sealed.len() + len);
        let resuming = Self {
            state,
            control: ticket.control(),
        };
        Ok((resuming, msg))
    }

    /// Reads message 2. Returns the session, the frames of message 3 (the key
    /// confirmation, to send before any request) and the new ticket granted, if any.
    pub fn finish(
        mut self,
        msg2: &[u8],
    ) -> Result<(Session, Vec<u8>, Option<ResumptionTicket>), ChannelError> {
        let mut payload = Zeroizing::new([0u8; BUF_LEN]);
        let len = self
            .state
            .read_message(msg2, &mut payload[..])
            .map_err(|_| ChannelError::Handshake)?;
        let ticket = match len {
            0 => None,
            GRANT_LEN => {
                ResumptionTicket::from_grant(self.control, &payload[..len], Instant::now())
            }
            _ => return Err(ChannelError::Handshake),
        };
        if !self.state.is_handshake_finished() {
            return Err(ChannelError::Handshake);
        }
        let keys = self.state.dangerously_get_raw_split();
        let mut session = Session::new(keys, true, self.control);
        let mut frames = Vec::new();
        session.seal(CONFIRMATION, &mut frames)?;
        Ok((session, frames, ticket))
    }
}

/// Why the control did not resume a channel. The client is only told "refused" and
/// runs a full handshake; the reason is for the control's log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeRefused {
    /// The ticket is not this control's, altered, or expired.
    #[error(transparent)]
    Ticket(#[from] TicketRefused),
    /// Message 1 is malformed or not keyed with the ticket's PSK.
    #[error("malformed resumption message")]
    Malformed,
}

/// Reads a resumption's message 1 as the control whose ticket key is `tickets`, at
/// `now`. Returns the pending state (waiting for the key confirmation; its peer is the
/// client the ticket names) and message 2, which grants a new ticket with the same end.
pub fn respond_resumed(
    tickets: &TicketKey,
    msg1: &[u8],
    now: Timestamp,
) -> Result<(PendingProof, Vec<u8>), ResumeRefused> {
    let (len, rest) = msg1
        .split_first_chunk::<2>()
        .ok_or(ResumeRefused::Malformed)?;
    let len = usize::from(u16::from_be_bytes(*len));
    if len != TICKET_LEN || rest.len() < len {
        return Err(ResumeRefused::Malformed);
    }
    let (ticket, noise) = rest.split_at(len);
    let opened = tickets.open(ticket, now)?;
    let mut state = state(&opened.psk, ticket, false).map_err(|_| ResumeRefused::Malformed)?;
    let mut hello = [0u8; 8];
    let read = state
        .read_message(noise, &mut hello)
        .map_err(|_| ResumeRefused::Malformed)?;
    if hello[..read] != [VERSION] {
        return Err(ResumeRefused::Malformed);
    }
    let grant = tickets.grant(&opened.client, now, opened.expires_at);
    let payload: &[u8] = grant.as_ref().map_or(&[], |g| &g[..]);
    let mut msg = vec![0u8; BUF_LEN];
    let len = state
        .write_message(payload, &mut msg)
        .map_err(|_| ResumeRefused::Malformed)?;
    msg.truncate(len);
    if !state.is_handshake_finished() {
        return Err(ResumeRefused::Malformed);
    }
    let keys = state.dangerously_get_raw_split();
    let session = Session::new(keys, false, opened.client);
    Ok((PendingProof::confirming(session, CONFIRMATION), msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;
    use crate::frame::{Decoded, decode};
    use crate::handshake::{Initiator, respond_granting};
    use crate::resumption::TICKET_LIFETIME;

    fn body(frames: &[u8]) -> &[u8] {
        match decode(frames).unwrap() {
            Decoded::Frame { body, .. } => body,
            Decoded::Incomplete { .. } => panic!("incomplete"),
        }
    }

    /// A full handshake that earns `client` a ticket from `control`.
    fn full(client: &Identity, control: &Identity, now: Timestamp) -> ResumptionTicket {
        let key = TicketKey::new(control);
        let (initiator, msg1) = Initiator::start_asking_ticket(client, &control.public()).unwrap();
        let (pending, msg2) = respond_granting(control, Some(&key), &msg1, now).unwrap();
        let (_, proof, ticket) = initiator.finish_with_ticket(&msg2).unwrap();
        pending.verify(body(&proof)).unwrap();
        ticket.expect("a ticket is granted when asked for")
    }

    #[test]
    fn a_ticket_resumes_a_channel_bound_to_both_identities() {
        let (client, control) = (Identity::generate(), Identity::generate());
        let now = Timestamp::now();
        let ticket = full(&client, &control, now);
        let (resuming, msg1) = Resuming::start(&ticket).unwrap();
        let (pending, msg2) = respond_resumed(&TicketKey::new(&control), &msg1, now).unwrap();
        let (mut client_session, confirmation, next) = resuming.finish(&msg2).unwrap();
        let mut control_session = pending.verify(body(&confirmation)).unwrap();
        assert_eq!(control_session.peer(), client.public());
        assert_eq!(client_session.peer(), control.public());
        let mut frames = Vec::new();
        client_session.seal(b"lease, please", &mut frames).unwrap();
        assert_eq!(
            control_session.open(body(&frames)).unwrap().unwrap(),
            b"lease, please"
        );
        // The new ticket resumes too, and is not the same bytes (no linkable reuse).
        let next = next.expect("a resumed channel grants a new ticket");
        assert_ne!(next.ticket(), ticket.ticket());
        let (_, msg1) = Resuming::start(&next).unwrap();
        assert!(respond_resumed(&TicketKey::new(&control), &msg1, now).is_ok());
    }

    #[test]
    fn a_client_that_does_not_ask_gets_no_ticket() {
        let (client, control) = (Identity::generate(), Identity::generate());
        let key = TicketKey::new(&control);
        let (initiator, msg1) = Initiator::start(&client, &control.public()).unwrap();
        let (_, msg2) = respond_granting(&control, Some(&key), &msg1, Timestamp::now()).unwrap();
        let (_, _, ticket) = initiator.finish_with_ticket(&msg2).unwrap();
        assert!(ticket.is_none());
    }

    #[test]
    fn renewed_tickets_keep_the_first_end() {
        let (client, control) = (Identity::generate(), Identity::generate());
        let key = TicketKey::new(&control);
        let start = Timestamp::now();
        let ticket = full(&client, &control, start);
        let later = start.plus_secs(TICKET_LIFETIME.as_secs() - 10);
        let (resuming, msg1) = Resuming::start(&ticket).unwrap();
        let (_, msg2) = respond_resumed(&key, &msg1, later).unwrap();
        let (_, _, next) = resuming.finish(&msg2).unwrap();
        let (_, msg1) = Resuming::start(&next.unwrap()).unwrap();
        let end = start.plus_secs(TICKET_LIFETIME.as_secs());
        assert!(matches!(
            respond_resumed(&key, &msg1, end),
            Err(ResumeRefused::Ticket(TicketRefused::Expired))
        ));
    }

    #[test]
    fn expired_tampered_and_foreign_tickets_are_refused() {
        let (client, control) = (Identity::generate(), Identity::generate());
        let now = Timestamp::now();
        let ticket = full(&client, &control, now);
        let key = TicketKey::new(&control);
        let (_, msg1) = Resuming::start(&ticket).unwrap();
        let end = now.plus_secs(TICKET_LIFETIME.as_secs());
        assert!(matches!(
            respond_resumed(&key, &msg1, end),
            Err(ResumeRefused::Ticket(TicketRefused::Expired))
        ));
        let other_control = TicketKey::new(&Identity::generate());
        assert!(matches!(
            respond_resumed(&other_control, &msg1, now),
            Err(ResumeRefused::Ticket(TicketRefused::Unopenable))
        ));
        for at in [2, 2 + 20, 2 + TICKET_LEN - 1] {
            let mut tampered = msg1.clone();
            tampered[at] ^= 1;
            assert!(matches!(
                respond_resumed(&key, &tampered, now),
                Err(ResumeRefused::Ticket(TicketRefused::Unopenable))
            ));
        }
        // The Noise part altered, or cut: refused, not a channel.
        let mut tampered = msg1.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            respond_resumed(&key, &tampered, now),
            Err(ResumeRefused::Malformed)
        ));
        for cut in [0, 1, 2, 50, msg1.len() - 1] {
            assert!(
                respond_resumed(&key, &msg1[..cut], now).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_ticket_with_another_psk_is_refused() {
        // Someone who copied a ticket off the wire but not the key it seals cannot
        // write a message 1 the control accepts.
        let (client, control) = (Identity::generate(), Identity::generate());
        let now = Timestamp::now();
        let genuine = full(&client, &control, now);
        let stolen = ResumptionTicket::forged_for_tests(&genuine, [9; 32]);
        let (_, msg1) = Resuming::start(&stolen).unwrap();
        assert!(matches!(
            respond_resumed(&TicketKey::new(&control), &msg1, now),
            Err(ResumeRefused::Malformed)
        ));
    }

    #[test]
    fn a_replayed_message_1_yields_no_channel() {
        let (client, control) = (Identity::generate(), Identity::generate());
        let key = TicketKey::new(&control);
        let now = Timestamp::now();
        let ticket = full(&client, &control, now);
        let (resuming, msg1) = Resuming::start(&ticket).unwrap();
        let (_, first_answer) = respond_resumed(&key, &msg1, now).unwrap();
        let (_, confirmation, _) = resuming.finish(&first_answer).unwrap();
        // The replayer gets a message 2 under a fresh control ephemeral key...
        let (pending, replay_answer) = respond_resumed(&key, &msg1, now).unwrap();
        assert_ne!(first_answer[..32], replay_answer[..32]);
        // ...and without the client's ephemeral key it has nothing to confirm with:
        // the genuine client's confirmation belongs to the other channel, and a
        // guessed one does not open.
        assert!(pending.verify(body(&confirmation)).is_err());
        let (pending, _) = respond_resumed(&key, &msg1, now).unwrap();
        let mut guessed = Vec::new();
        crate::frame::encode(&[0u8; 1 + CONFIRMATION.len() + 16], &mut guessed).unwrap();
        assert!(pending.verify(body(&guessed)).is_err());
    }
}

//! The Noise handshake as a pure state machine, plus the identity proofs that bind each
//! side's Ed25519 identity to the channel.
//!
//! # Why IK
//! A client always knows the control's key in advance: the enrollment ticket pins it.
//! `Noise_IK` uses that knowledge to authenticate both sides in one round trip (two
//! messages), where `XX` needs three. What XX would add — hiding the responder's
//! identity from an active attacker — buys nothing here, because the client already
//! knows whom it is calling; IK still encrypts the client's static key. A replayed IK
//! first message gets a fresh answer the attacker cannot decrypt, and requests only ever
//! travel after the handshake, so a replay can never create a lease.
//!
//! # Identity binding
//! Each identity's Noise static key is derived from its Ed25519 key (see
//! [`crate::identity`]). On top of the Noise authentication, each side signs the
//! handshake transcript hash with its Ed25519 key, so the peer proves it holds the
//! identity key itself, not just some Noise key:
//!
//! 1. client → control: `e, es, s, ss` with payload `[version, client Ed25519 key]`.
//!    The control checks the claimed key maps to the Noise static key it just received.
//! 2. control → client: `e, ee, se` with payload `sign(control, "responder proof" ‖ h1)`,
//!    where `h1` is the transcript hash after message 1. The client checks it against
//!    the pinned control key.
//! 3. client → control, first transport message: `sign(client, "initiator proof" ‖ h2)`
//!    over the final transcript hash. Only then does the control accept requests.
//!
//! The client sends message 3 together with its first request, so a whole exchange is
//! one round trip of handshake plus one per request.
//!
//! # Resumption tickets
//! A client may ask, with a flags byte after its key in the message-1 payload, for a
//! resumption ticket ([`crate::resumption`]); the control then appends a grant (a fresh
//! PSK and the ticket sealing it) to its proof in message 2, whose payload only the
//! holder of the client's static key and ephemeral key can read. A client that does
//! not ask (older ones, the command line) gets the message 2 it always got. The next
//! channels resume with [`crate::resume`].

use std::sync::LazyLock;
use std::time::Instant;

use crate::resumption::{GRANT_LEN, ResumptionTicket, TICKET_LIFETIME, TicketKey};
use crate::session::Session;
use crate::time::Timestamp;
use crate::{ChannelError, Identity, PublicIdentity};

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// The channel version, carried in the prologue and in the first payload. Both sides
/// mix the prologue into the transcript, so a version mismatch cannot go unnoticed.
pub const VERSION: u8 = 1;
const PROLOGUE: &[u8] = b"leasehold channel v1";
const RESPONDER_PROOF: &[u8] = b"leasehold/1 responder proof\0";
const INITIATOR_PROOF: &[u8] = b"leasehold/1 initiator proof\0";
const HELLO_LEN: usize = 1 + 32;
/// Bit of the hello's flags byte: "send me a resumption ticket".
const WANTS_TICKET: u8 = 1;
const SIGNATURE_LEN: usize = 64;
/// Room for the largest handshake message: two keys, two tags, a signature and a grant.
const BUF_LEN: usize = 512;

/// The IK parameters, parsed once.
static PARAMS: LazyLock<snow::params::NoiseParams> =
    LazyLock::new(|| NOISE_PARAMS.parse().expect("valid Noise parameters"));

/// A builder for `identity`'s side of an IK handshake, its static key's public half
/// already known ([`crate::noise_dh`]).
fn builder(identity: &Identity) -> snow::Builder<'_> {
    let resolver =
        crate::noise_dh::Resolver::knowing(identity.noise_private(), identity.noise_public());
    snow::Builder::with_resolver(PARAMS.clone(), Box::new(resolver))
        .local_private_key(identity.noise_private())
        .expect("the static key is set once")
}

/// The client side, after sending message 1.
pub struct Initiator {
    state: snow::HandshakeState,
    identity: Identity,
    responder: PublicIdentity,
    h1: Vec<u8>,
    wants_ticket: bool,
}

impl Initiator {
    /// Starts a handshake with the control whose identity is pinned as `responder`.
    /// Returns the state and message 1 (a frame body).
    pub fn start(
        identity: &Identity,
        responder: &PublicIdentity,
    ) -> Result<(Self, Vec<u8>), ChannelError> {
        Self::start_claiming(identity, identity.public(), responder, false)
    }

    /// [`Initiator::start`], asking the control for a resumption ticket.
    pub fn start_asking_ticket(
        identity: &Identity,
        responder: &PublicIdentity,
    ) -> Result<(Self, Vec<u8>), ChannelError> {
        Self::start_claiming(identity, identity.public(), responder, true)
    }

    /// Like [`Initiator::start`], but claims `claimed` as the identity. Only tests call
    /// this with anything but the real public key, to show a forged claim fails.
    pub(crate) fn start_claiming(
        identity: &Identity,
        claimed: PublicIdentity,
        responder: &PublicIdentity,
        wants_ticket: bool,
    ) -> Result<(Self, Vec<u8>), ChannelError> {
        let remote = responder.noise_public();
        let mut state = builder(identity)
            .remote_public_key(&remote)
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.build_initiator())
            .map_err(|_| ChannelError::Handshake)?;
        let mut hello = [0u8; HELLO_LEN + 1];
        hello[0] = VERSION;
        hello[1..HELLO_LEN].copy_from_slice(&claimed.to_bytes());
        hello[HELLO_LEN] = WANTS_TICKET;
        // Without a ticket asked for, the hello of every earlier client: no flags byte.
        let hello = &hello[..HELLO_LEN + usize::from(wants_ticket)];
        let mut msg = vec![0u8; BUF_LEN];
        let len = state
            .write_message(hello, &mut msg)
            .map_err(|_| ChannelError::Handshake)?;
        msg.truncate(len);
        let h1 = state.get_handshake_hash().to_vec();
        let initiator = Self {
            state,
            identity: identity.clone(),
            responder: *responder,
            h1,
            wants_ticket,
        };
        Ok((initiator, msg))
    }

    /// Reads message 2, checks the control's proof, and returns the session plus the
    /// frames of message 3 (this side's proof) to send before any request.
    pub fn finish(self, msg2: &[u8]) -> Result<(Session, Vec<u8>), ChannelError> {
        let (session, frames, _) = self.finish_with_ticket(msg2)?;
        Ok((session, frames))
    }

    /// [`Initiator::finish`], also returning the resumption ticket the control granted
    /// (when asked for and granted).
    pub fn finish_with_ticket(
        self,
        msg2: &[u8],
    ) -> Result<(Session, Vec<u8>, Option<ResumptionTicket>), ChannelError> {
        let identity = self.identity.clone();
        self.finish_proving(msg2, |h2| identity.sign(INITIATOR_PROOF, h2))
    }

    /// [`Initiator::finish`] with the proof made by `prove` from the final transcript
    /// hash; tests use it to send forged proofs.
    fn finish_proving(
        mut self,
        msg2: &[u8],
        prove: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> Result<(Session, Vec<u8>, Option<ResumptionTicket>), ChannelError> {
        let mut payload = zeroize::Zeroizing::new([0u8; BUF_LEN]);
        let len = self
            .state
            .read_message(msg2, &mut payload[..])
            .map_err(|_| ChannelError::Handshake)?;
        let granted = self.wants_ticket && len == SIGNATURE_LEN + GRANT_LEN;
        if len != SIGNATURE_LEN && !granted {
            return Err(ChannelError::Handshake);
        }
        self.responder
            .verify(RESPONDER_PROOF, &self.h1, &payload[..SIGNATURE_LEN])?;
        let ticket = if granted {
            ResumptionTicket::from_grant(
                self.responder,
                &payload[SIGNATURE_LEN..len],
                Instant::now(),
            )
        } else {
            None
        };
        let h2 = self.state.get_handshake_hash().to_vec();
        if !self.state.is_handshake_finished() {
            return Err(ChannelError::Handshake);
        }
        let keys = self.state.dangerously_get_raw_split();
        let mut session = Session::new(keys, true, self.responder);
        let proof = prove(&h2);
        let mut frames = Vec::new();
        session.seal(&proof, &mut frames)?;
        Ok((session, frames, ticket))
    }
}

/// The control side, after answering message 1 and before the client's proof (or, on
/// a resumed channel, its key confirmation).
pub struct PendingProof {
    session: Session,
    expect: Expect,
}

/// What the client's first transport message must be.
enum Expect {
    /// Its Ed25519 signature over the final transcript hash.
    Proof(Vec<u8>),
    /// The resumption's key confirmation: proof it holds its ephemeral key.
    Confirmation(&'static [u8]),
}

/// Reads message 1 as the control `identity`. Returns the pending state and message 2.
/// Grants no resumption ticket.
pub fn respond(identity: &Identity, msg1: &[u8]) -> Result<(PendingProof, Vec<u8>), ChannelError> {
    respond_granting(identity, None, msg1, Timestamp::now())
}

/// [`respond`], granting a resumption ticket sealed with `tickets` (valid for
/// [`TICKET_LIFETIME`] from `now`) to a client that asks for one.
pub fn respond_granting(
    identity: &Identity,
    tickets: Option<&TicketKey>,
    msg1: &[u8],
    now: Timestamp,
) -> Result<(PendingProof, Vec<u8>), ChannelError> {
    let mut state = builder(identity)
        .prologue(PROLOGUE)
        .and_then(|b| b.build_responder())
        .map_err(|_| ChannelError::Handshake)?;
    let mut hello = [0u8; BUF_LEN];
    let len = state
        .read_message(msg1, &mut hello)
        .map_err(|_| ChannelError::Handshake)?;
    let hello = &hello[..len];
    match hello.first() {
        Some(&VERSION) => {}
        Some(&other) => return Err(ChannelError::UnsupportedVersion(other)),
        None => return Err(ChannelError::Handshake),
    }
    let (claimed, flags) = match hello.len() {
        HELLO_LEN => (&hello[1..], 0),
        // Flags bits this control does not know are ignored, so later clients may ask
        // for more without being refused.
        n if n == HELLO_LEN + 1 => (&hello[1..HELLO_LEN], hello[HELLO_LEN]),
        _ => return Err(ChannelError::Handshake),
    };
    let claimed: [u8; 32] = claimed.try_into().map_err(|_| ChannelError::Handshake)?;
    let claimed = PublicIdentity::from_bytes(&claimed)?;
    let remote_static = state.get_remote_static().ok_or(ChannelError::Handshake)?;
    if remote_static != claimed.noise_public() {
        return Err(ChannelError::IdentityMismatch);
    }
    let mut payload = zeroize::Zeroizing::new([0u8; SIGNATURE_LEN + GRANT_LEN]);
    payload[..SIGNATURE_LEN]
        .copy_from_slice(&identity.sign(RESPONDER_PROOF, state.get_handshake_hash()));
    let grant = tickets
        .filter(|_| flags & WANTS_TICKET != 0)
        .and_then(|key| key.grant(&claimed, now, now.plus_secs(TICKET_LIFETIME.as_secs())));
    let payload_len = match grant {
        Some(grant) => {
            payload[SIGNATURE_LEN..].copy_from_slice(&grant[..]);
            SIGNATURE_LEN + GRANT_LEN
        }
        None => SIGNATURE_LEN,
    };
    let mut msg = vec![0u8; BUF_LEN];
    let len = state
        .write_message(&payload[..payload_len], &mut msg)
        .map_err(|_| ChannelError::Handshake)?;
    msg.truncate(len);
    let h2 = state.get_handshake_hash().to_vec();
    if !state.is_handshake_finished() {
        return Err(ChannelError::Handshake);
    }
    let keys = state.dangerously_get_raw_split();
    let pending = PendingProof {
        session: Session::new(keys, false, claimed),
        expect: Expect::Proof(h2),
    };
    Ok((pending, msg))
}

impl PendingProof {
    /// A resumed channel's session, waiting for the client's key confirmation
    /// `confirmation`.
    pub(crate) fn confirming(session: Session, confirmation: &'static [u8]) -> Self {
        Self {
            session,
            expect: Expect::Confirmation(confirmation),
        }
    }

    /// Feeds one frame body of message 3. Returns the session once the client's proof
    /// has been checked; before that, nothing from the client is trusted.
    pub fn verify(mut self, body: &[u8]) -> Result<Session, ChannelError> {
        let proof = self.session.open(body)?.ok_or(ChannelError::BadProof)?;
        match &self.expect {
            Expect::Proof(h2) => self.session.peer().verify(INITIATOR_PROOF, h2, &proof)?,
            Expect::Confirmation(expected) if proof == *expected => {}
            Expect::Confirmation(_) => return Err(ChannelError::BadProof),
        }
        Ok(self.session)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::{Decoded, decode};

    fn body(frames: &[u8]) -> &[u8] {
        match decode(frames).unwrap() {
            Decoded::Frame { body, .. } => body,
            Decoded::Incomplete { .. } => panic!("incomplete"),
        }
    }

    /// A connected (client, control) pair, entirely in memory.
    pub(crate) fn pair() -> (Session, Session) {
        let client = Identity::generate();
        let control = Identity::generate();
        let (initiator, msg1) = Initiator::start(&client, &control.public()).unwrap();
        let (pending, msg2) = respond(&control, &msg1).unwrap();
        let (client_session, proof) = initiator.finish(&msg2).unwrap();
        let control_session = pending.verify(body(&proof)).unwrap();
        assert_eq!(control_session.peer(), client.public());
        assert_eq!(client_session.peer(), control.public());
        (client_session, control_session)
    }

    #[test]
    fn good_handshake_authenticates_both_sides() {
        pair();
    }

    #[test]
    fn wrong_pinned_key_fails_at_the_control() {
        let client = Identity::generate();
        let control = Identity::generate();
        let impostor_pin = Identity::generate().public();
        let (_, msg1) = Initiator::start(&client, &impostor_pin).unwrap();
        assert!(matches!(
            respond(&control, &msg1),
            Err(ChannelError::Handshake)
        ));
    }

    #[test]
    fn impostor_control_fails_at_the_client() {
        // An attacker who answers with its own key cannot produce a message 2 that the
        // client accepts for the pinned identity.
        let client = Identity::generate();
        let control = Identity::generate();
        let impostor = Identity::generate();
        let (initiator, _) = Initiator::start(&client, &control.public()).unwrap();
        let (_, msg1_to_impostor) = Initiator::start(&client, &impostor.public()).unwrap();
        let (_, msg2) = respond(&impostor, &msg1_to_impostor).unwrap();
        assert!(matches!(
            initiator.finish(&msg2),
            Err(ChannelError::Handshake)
        ));
    }

    #[test]
    fn forged_identity_claim_is_rejected() {
        let forger = Identity::generate();
        let victim = Identity::generate().public();
        let control = Identity::generate();
        let (_, msg1) =
            Initiator::start_claiming(&forger, victim, &control.public(), false).unwrap();
        assert!(matches!(
            respond(&control, &msg1),
            Err(ChannelError::IdentityMismatch)
        ));
    }

    #[test]
    fn proof_signed_by_another_key_is_rejected() {
        let client = Identity::generate();
        let control = Identity::generate();
        let (initiator, msg1) = Initiator::start(&client, &control.public()).unwrap();
        let (pending, msg2) = respond(&control, &msg1).unwrap();
        // A proof over the right transcript, but signed by a different key.
        let other = Identity::generate();
        let (_, frames, _) = initiator
            .finish_proving(&msg2, |h2| other.sign(INITIATOR_PROOF, h2))
            .unwrap();
        assert!(matches!(
            pending.verify(body(&frames)),
            Err(ChannelError::BadProof)
        ));
    }

    #[test]
    fn proof_for_another_purpose_is_rejected() {
        // A responder-proof signature must not pass as an initiator proof.
        let client = Identity::generate();
        let control = Identity::generate();
        let (initiator, msg1) = Initiator::start(&client, &control.public()).unwrap();
        let (pending, msg2) = respond(&control, &msg1).unwrap();
        let (_, frames, _) = initiator
            .finish_proving(&msg2, |h2| client.sign(RESPONDER_PROOF, h2))
            .unwrap();
        assert!(matches!(
            pending.verify(body(&frames)),
            Err(ChannelError::BadProof)
        ));
    }

    #[test]
    fn garbage_and_truncated_hellos_are_rejected() {
        let client = Identity::generate();
        let control = Identity::generate();
        let (_, msg1) = Initiator::start(&client, &control.public()).unwrap();
        for cut in [0, 1, 31, 32, 48, msg1.len() - 1] {
            assert!(respond(&control, &msg1[..cut]).is_err(), "cut at {cut}");
        }
        assert!(respond(&control, &[0xAB; 97]).is_err());
        let mut flipped = msg1.clone();
        flipped[40] ^= 1;
        assert!(respond(&control, &flipped).is_err());
    }

    #[test]
    fn replayed_hello_yields_nothing_usable() {
        // The control answers a replayed message 1, but with a fresh ephemeral key: the
        // replayer cannot finish the handshake, and the real client's state is spent.
        let client = Identity::generate();
        let control = Identity::generate();
        let (initiator, msg1) = Initiator::start(&client, &control.public()).unwrap();
        let (_, first_answer) = respond(&control, &msg1).unwrap();
        let (_, replay_answer) = respond(&control, &msg1).unwrap();
        assert_ne!(first_answer, replay_answer);
        let (_, proof) = initiator.finish(&first_answer).unwrap();
        // The proof from the original session does not satisfy the replayed one.
        let (pending, _) = respond(&control, &msg1).unwrap();
        assert!(pending.verify(body(&proof)).is_err());
    }
}

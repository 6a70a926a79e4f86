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

use crate::session::Session;
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
const SIGNATURE_LEN: usize = 64;
/// Room for the largest handshake message: two keys, two tags and a signature.
const BUF_LEN: usize = 256;

fn builder() -> snow::Builder<'static> {
    snow::Builder::new(NOISE_PARAMS.parse().expect("valid Noise parameters"))
}

/// The client side, after sending message 1.
pub struct Initiator {
    state: snow::HandshakeState,
    identity: Identity,
    responder: PublicIdentity,
    h1: Vec<u8>,
}

impl Initiator {
    /// Starts a handshake with the control whose identity is pinned as `responder`.
    /// Returns the state and message 1 (a frame body).
    pub fn start(
        identity: &Identity,
        responder: &PublicIdentity,
    ) -> Result<(Self, Vec<u8>), ChannelError> {
        Self::start_claiming(identity, identity.public(), responder)
    }

    /// Like [`Initiator::start`], but claims `claimed` as the identity. Only tests call
    /// this with anything but the real public key, to show a forged claim fails.
    pub(crate) fn start_claiming(
        identity: &Identity,
        claimed: PublicIdentity,
        responder: &PublicIdentity,
    ) -> Result<(Self, Vec<u8>), ChannelError> {
        let private = identity.noise_private();
        let remote = responder.noise_public();
        let mut state = builder()
            .local_private_key(private.as_ref())
            .and_then(|b| b.remote_public_key(&remote))
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.build_initiator())
            .map_err(|_| ChannelError::Handshake)?;
        let mut hello = [0u8; HELLO_LEN];
        hello[0] = VERSION;
        hello[1..].copy_from_slice(&claimed.to_bytes());
        let mut msg = vec![0u8; BUF_LEN];
        let len = state
            .write_message(&hello, &mut msg)
            .map_err(|_| ChannelError::Handshake)?;
        msg.truncate(len);
        let h1 = state.get_handshake_hash().to_vec();
        let initiator = Self {
            state,
            identity: identity.clone(),
            responder: *responder,
            h1,
        };
        Ok((initiator, msg))
    }

    /// Reads message 2, checks the control's proof, and returns the session plus the
    /// frames of message 3 (this side's proof) to send before any request.
    pub fn finish(self, msg2: &[u8]) -> Result<(Session, Vec<u8>), ChannelError> {
        let identity = self.identity.clone();
        self.finish_proving(msg2, |h2| identity.sign(INITIATOR_PROOF, h2))
    }

    /// [`Initiator::finish`] with the proof made by `prove` from the final transcript
    /// hash; tests use it to send forged proofs.
    fn finish_proving(
        mut self,
        msg2: &[u8],
        prove: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> Result<(Session, Vec<u8>), ChannelError> {
        let mut payload = [0u8; BUF_LEN];
        let len = self
            .state
            .read_message(msg2, &mut payload)
            .map_err(|_| ChannelError::Handshake)?;
        if len != SIGNATURE_LEN {
            return Err(ChannelError::Handshake);
        }
        self.responder
            .verify(RESPONDER_PROOF, &self.h1, &payload[..len])?;
        let h2 = self.state.get_handshake_hash().to_vec();
        if !self.state.is_handshake_finished() {
            return Err(ChannelError::Handshake);
        }
        let keys = self.state.dangerously_get_raw_split();
        let mut session = Session::new(keys, true, self.responder);
        let proof = prove(&h2);
        let mut frames = Vec::new();
        session.seal(&proof, &mut frames)?;
        Ok((session, frames))
    }
}

/// The control side, after answering message 1 and before the client's proof.
pub struct PendingProof {
    session: Session,
    h2: Vec<u8>,
}

/// Reads message 1 as the control `identity`. Returns the pending state and message 2.
pub fn respond(identity: &Identity, msg1: &[u8]) -> Result<(PendingProof, Vec<u8>), ChannelError> {
    let private = identity.noise_private();
    let mut state = builder()
        .local_private_key(private.as_ref())
        .and_then(|b| b.prologue(PROLOGUE))
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
    let claimed: [u8; 32] = hello[1..].try_into().map_err(|_| ChannelError::Handshake)?;
    let claimed = PublicIdentity::from_bytes(&claimed)?;
    let remote_static = state.get_remote_static().ok_or(ChannelError::Handshake)?;
    if remote_static != claimed.noise_public() {
        return Err(ChannelError::IdentityMismatch);
    }
    let proof = identity.sign(RESPONDER_PROOF, state.get_handshake_hash());
    let mut msg = vec![0u8; BUF_LEN];
    let len = state
        .write_message(&proof, &mut msg)
        .map_err(|_| ChannelError::Handshake)?;
    msg.truncate(len);
    let h2 = state.get_handshake_hash().to_vec();
    if !state.is_handshake_finished() {
        return Err(ChannelError::Handshake);
    }
    let keys = state.dangerously_get_raw_split();
    let pending = PendingProof {
        session: Session::new(keys, false, claimed),
        h2,
    };
    Ok((pending, msg))
}

impl PendingProof {
    /// Feeds one frame body of message 3. Returns the session once the client's proof
    /// has been checked; before that, nothing from the client is trusted.
    pub fn verify(mut self, body: &[u8]) -> Result<Session, ChannelError> {
        let proof = self.session.open(body)?.ok_or(ChannelError::BadProof)?;
        let peer = self.session.peer();
        peer.verify(INITIATOR_PROOF, &self.h2, &proof)?;
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
        let (_, msg1) = Initiator::start_claiming(&forger, victim, &control.public()).unwrap();
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
        let (_, frames) = initiator
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
        let (_, frames) = initiator
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

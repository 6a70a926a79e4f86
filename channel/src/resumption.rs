//! Resumption tickets: what lets a client that completed a full handshake recently open
//! its next channels with one Diffie-Hellman per side instead of the IK handshake's four
//! and two Ed25519 signatures (the protocol is in [`crate::resume`]; why it is safe, in
//! ARCHITECTURE.md, "Resumed channels").
//!
//! After a handshake, the control hands the client, inside the handshake's encrypted
//! answer, a **grant**: a fresh random resumption key (the PSK) and a **ticket** that
//! seals, under a key only the control's identity can derive, who the client is, that
//! same PSK and when the ticket stops being honoured. The control keeps nothing: any
//! replica holding the identity opens any ticket, and a control with another identity
//! (or a rotated one) opens none.
//!
//! The PSK is drawn at random rather than derived from the handshake: the handshake
//! hash is computed from public values only (keys and ciphertexts on the wire), so it
//! is no secret, and the transport keys must stay the transport's. A random key sent
//! under the handshake's own forward-secret encryption depends on nothing else.
//!
//! Ticket (sealed with ChaCha20-Poly1305, ring's, as the transport):
//! `nonce (12) ‖ seal(version (1) ‖ client key (32) ‖ psk (32) ‖ issued_at (8) ‖
//! expires_at (8))`, 109 bytes, times in whole seconds since the epoch (wall clock,
//! because replicas on other hosts must agree on them; hosts run NTP, as for leases).
//! Grant: `seconds left (4) ‖ psk (32) ‖ ticket (109)`.

use std::fmt;
use std::time::{Duration, Instant};

use blake2::digest::Mac as _;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::{Zeroize, Zeroizing};

use crate::cipher::TAG_LEN;
use crate::time::Timestamp;
use crate::{Identity, PublicIdentity};

/// How long a ticket is honoured after the full handshake that earned it. It bounds
/// how long a client goes without proving it still holds its identity key, and how
/// long a ticket and its key, stolen from a client's memory, are worth anything.
/// Resumed channels hand out new tickets with the same end, never a later one.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// Bytes of a resumption key.
pub const PSK_LEN: usize = 32;
const TICKET_VERSION: u8 = 1;
const PLAIN_LEN: usize = 1 + 32 + PSK_LEN + 8 + 8;
/// Bytes of a sealed ticket.
pub const TICKET_LEN: usize = NONCE_LEN + PLAIN_LEN + TAG_LEN;
/// Bytes of a grant (seconds left, PSK, ticket).
pub const GRANT_LEN: usize = 4 + PSK_LEN + TICKET_LEN;
/// Separates the ticket key from every other key derived from the identity.
const KEY_CONTEXT: &[u8] = b"leasehold resumption tickets, v1";
/// Associated data of every ticket.
const AAD: &[u8] = b"leasehold resumption ticket v1";
/// A client stops offering a ticket this long before the control would refuse it, so
/// clock skew and the time in flight rarely cost a refused attempt.
const CLIENT_MARGIN: Duration = Duration::from_secs(30);

/// Why a ticket is not honoured. The client is not told which: it falls back to a full
/// handshake either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketRefused {
    /// Not sealed by this control's identity, altered, or not a ticket at all.
    #[error("the ticket does not open with this control's key")]
    Unopenable,
    /// Past its end.
    #[error("the ticket has expired")]
    Expired,
}

/// What a control learns from a ticket it opened.
pub struct Opened {
    /// The client the ticket was issued to, as proven by a full handshake.
    pub client: PublicIdentity,
    /// The resumption key the client holds.
    pub psk: Zeroizing<[u8; PSK_LEN]>,
    /// When the ticket stops being honoured; tickets issued on a resumed channel keep it.
    pub expires_at: Timestamp,
}

/// The control's key for sealing and opening tickets, derived from its identity key.
pub struct TicketKey {
    key: Zeroizing<[u8; 32]>,
}

impl TicketKey {
    /// The ticket key of `identity` (keyed BLAKE2b of its secret key and a context of
    /// its own, as the add-on settings' key at rest is made).
    pub fn new(identity: &Identity) -> Self {
        let seed = identity.seed();
        let mut mac = <blake2::Blake2bMac<blake2::digest::consts::U32> as blake2::digest::KeyInit>::new_from_slice(&seed[..])
            .expect("a 32-byte key fits BLAKE2b");
        mac.update(KEY_CONTEXT);
        let mut key: [u8; 32] = mac.finalize().into_bytes().into();
        let this = Self {
            key: Zeroizing::new(key),
        };
        key.zeroize();
        this
    }

    fn aead(&self) -> LessSafeKey {
        // As in the transport: ring keeps no copy of the key between calls.
        LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &*self.key).expect("a 32-byte ChaCha20 key"),
        )
    }

    /// A grant for `client`: a fresh PSK and a ticket sealing it, honoured until
    /// `expires_at`, as seen at `now`. `None` when the random source fails (the
    /// handshake then goes on without a ticket).
    pub fn grant(
        &self,
        client: &PublicIdentity,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Option<Zeroizing<[u8; GRANT_LEN]>> {
        let mut grant = Zeroizing::new([0u8; GRANT_LEN]);
        let left = u32::try_from(expires_at.0.saturating_sub(now.0)).unwrap_or(u32::MAX);
        grant[..4].copy_from_slice(&left.to_be_bytes());
        // The PSK and the nonce are adjacent: one call to the random source for both.
        getrandom::fill(&mut grant[4..4 + PSK_LEN + NONCE_LEN]).ok()?;
        let (psk, ticket) = grant[4..].split_at_mut(PSK_LEN);
        let (nonce, rest) = ticket.split_at_mut(NONCE_LEN);
        let (plain, tag) = rest.split_at_mut(PLAIN_LEN);
        plain[0] = TICKET_VERSION;
        plain[1..33].copy_from_slice(&client.to_bytes());
        plain[33..65].copy_from_slice(psk);
        plain[65..73].copy_from_slice(&now.0.to_be_bytes());
        plain[73..81].copy_from_slice(&expires_at.0.to_be_bytes());
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let sealed = self
            .aead()
            .seal_in_place_separate_tag(nonce, Aad::from(AAD), plain)
            .ok()?;
        tag.copy_from_slice(sealed.as_ref());
        Some(grant)
    }

    /// Opens `ticket` at `now`: the client it names and its resumption key, or why not.
    pub fn open(&self, ticket: &[u8], now: Timestamp) -> Result<Opened, TicketRefused> {
        if ticket.len() != TICKET_LEN {
            return Err(TicketRefused::Unopenable);
        }
        let (nonce, sealed) = ticket.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| TicketRefused::Unopenable)?;
        let mut buf = Zeroizing::new([0u8; PLAIN_LEN + TAG_LEN]);
        buf.copy_from_slice(sealed);
        let plain = self
            .aead()
            .open_in_place(nonce, Aad::from(AAD), &mut buf[..])
            .map_err(|_| TicketRefused::Unopenable)?;
        // Sealed by this key, so well-formed unless a later version wrote it.
        if plain[0] != TICKET_VERSION {
            return Err(TicketRefused::Unopenable);
        }
        let expires_at = Timestamp(u64::from_be_bytes(
            plain[73..81].try_into().expect("8 bytes"),
        ));
        if now >= expires_at {
            return Err(TicketRefused::Expired);
        }
        let client = PublicIdentity::from_bytes(plain[1..33].try_into().expect("32 bytes"))
            .map_err(|_| TicketRefused::Unopenable)?;
        let mut psk = Zeroizing::new([0u8; PSK_LEN]);
        psk.copy_from_slice(&plain[33..65]);
        Ok(Opened {
            client,
            psk,
            expires_at,
        })
    }
}

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketKey(<redacted>)")
    }
}

/// A client's ticket for one control: kept in memory only (never written, never
/// logged), zeroized on drop, `Debug` redacted. Holding it is as good as holding the
/// identity key for the control until it expires, so it is guarded like one.
pub struct ResumptionTicket {
    control: PublicIdentity,
    ticket: Zeroizing<Vec<u8>>,
    psk: Zeroizing<[u8; PSK_LEN]>,
    /// On this client's monotonic clock, with [`CLIENT_MARGIN`] taken off.
    usable_until: Instant,
}

impl ResumptionTicket {
    /// Reads a grant the control `control` sent at (about) `received`.
    pub(crate) fn from_grant(
        control: PublicIdentity,
        grant: &[u8],
        received: Instant,
    ) -> Option<Self> {
        if grant.len() != GRANT_LEN {
            return None;
        }
        let left = u32::from_be_bytes(grant[..4].try_into().expect("4 bytes"));
        let mut psk = Zeroizing::new([0u8; PSK_LEN]);
        psk.copy_from_slice(&grant[4..4 + PSK_LEN]);
        Some(Self {
            control,
            ticket: Zeroizing::new(grant[4 + PSK_LEN..].to_vec()),
            psk,
            usable_until: (received + Duration::from_secs(left.into()))
                .checked_sub(CLIENT_MARGIN)
                .unwrap_or(received),
        })
    }

    /// The control that issued it.
    pub fn control(&self) -> PublicIdentity {
        self.control
    }

    /// Whether it is worth offering to `control` at `now`.
    pub fn usable_for(&self, control: &PublicIdentity, now: Instant) -> bool {
        self.control == *control && now < self.usable_until
    }

    pub(crate) fn ticket(&self) -> &[u8] {
        &self.ticket
    }

    pub(crate) fn psk(&self) -> &[u8; PSK_LEN] {
        &self.psk
    }

    /// `ticket`'s sealed bytes with another PSK: what a thief who copied the ticket off
    /// the wire, but not the key it seals, would hold.
    #[cfg(test)]
    pub(crate) fn forged_for_tests(ticket: &Self, psk: [u8; PSK_LEN]) -> Self {
        Self {
            control: ticket.control,
            ticket: ticket.ticket.clone(),
            psk: Zeroizing::new(psk),
            usable_until: ticket.usable_until,
        }
    }
}

impl fmt::Debug for ResumptionTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumptionTicket")
            .field("control", &self.control)
            .field("ticket", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Where a client keeps its ticket between channels: empty at first, filled by each
/// handshake that brings a grant, emptied when a resumption fails.
#[derive(Debug, Default)]
pub struct TicketSlot(Option<ResumptionTicket>);

impl TicketSlot {
    /// An empty slot: the next channel does a full handshake and asks for a ticket.
    pub fn new() -> Self {
        Self::default()
    }

    /// The ticket, if one is held.
    pub fn ticket(&self) -> Option<&ResumptionTicket> {
        self.0.as_ref()
    }

    /// The ticket to offer `control` at `now`, if one is usable; an unusable one is
    /// dropped.
    pub(crate) fn usable(
        &mut self,
        control: &PublicIdentity,
        now: Instant,
    ) -> Option<&ResumptionTicket> {
        if !self.0.as_ref().is_some_and(|t| t.usable_for(control, now)) {
            self.0 = None;
        }
        self.0.as_ref()
    }

    /// Replaces what is held.
    pub(crate) fn set(&mut self, ticket: Option<ResumptionTicket>) {
        self.0 = ticket;
    }

    /// Forgets the ticket.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(key: &TicketKey, client: &PublicIdentity, now: Timestamp) -> Vec<u8> {
        let grant = key
            .grant(client, now, now.plus_secs(TICKET_LIFETIME.as_secs()))
            .unwrap();
        grant[4 + PSK_LEN..].to_vec()
    }

    #[test]
    fn a_ticket_opens_with_its_control_key_only() {
        let control = Identity::generate();
        let client = Identity::generate().public();
        let key = TicketKey::new(&control);
        let now = Timestamp(1_000_000);
        let grant = key.grant(&client, now, now.plus_secs(3600)).unwrap();
        let ticket = &grant[4 + PSK_LEN..];
        let opened = key.open(ticket, now.plus_secs(10)).unwrap();
        assert_eq!(opened.client, client);
        assert_eq!(&opened.psk[..], &grant[4..4 + PSK_LEN]);
        assert_eq!(opened.expires_at, now.plus_secs(3600));
        // The same identity loaded again (another replica) derives the same key.
        let replica = TicketKey::new(&Identity::from_seed(&control.seed()));
        assert!(replica.open(ticket, now).is_ok());
        let other = TicketKey::new(&Identity::generate());
        assert_eq!(
            other.open(ticket, now).err(),
            Some(TicketRefused::Unopenable)
        );
    }

    #[test]
    fn expired_and_tampered_tickets_are_refused() {
        let key = TicketKey::new(&Identity::generate());
        let client = Identity::generate().public();
        let now = Timestamp(5_000);
        let ticket = granted(&key, &client, now);
        let end = now.plus_secs(TICKET_LIFETIME.as_secs());
        assert_eq!(key.open(&ticket, end).err(), Some(TicketRefused::Expired));
        for i in [0, NONCE_LEN, NONCE_LEN + 40, TICKET_LEN - 1] {
            let mut tampered = ticket.clone();
            tampered[i] ^= 1;
            assert_eq!(
                key.open(&tampered, now).err(),
                Some(TicketRefused::Unopenable),
                "byte {i}"
            );
        }
        assert!(key.open(&ticket[..TICKET_LEN - 1], now).is_err());
        assert!(key.open(&[], now).is_err());
    }

    #[test]
    fn each_grant_has_its_own_key_and_ticket() {
        let key = TicketKey::new(&Identity::generate());
        let client = Identity::generate().public();
        let now = Timestamp(7);
        let a = key.grant(&client, now, now.plus_secs(60)).unwrap();
        let b = key.grant(&client, now, now.plus_secs(60)).unwrap();
        assert_ne!(a[4..4 + PSK_LEN], b[4..4 + PSK_LEN]);
        assert_ne!(a[4 + PSK_LEN..], b[4 + PSK_LEN..]);
    }

    #[test]
    fn the_client_stops_offering_before_the_end_and_to_other_controls() {
        let control = Identity::generate().public();
        let key = TicketKey::new(&Identity::generate());
        let now = Timestamp(100);
        let grant = key
            .grant(&Identity::generate().public(), now, now.plus_secs(120))
            .unwrap();
        let received = Instant::now();
        let ticket = ResumptionTicket::from_grant(control, &grant[..], received).unwrap();
        assert!(ticket.usable_for(&control, received));
        assert!(!ticket.usable_for(&Identity::generate().public(), received));
        assert!(!ticket.usable_for(
            &control,
            received + Duration::from_secs(120) - CLIENT_MARGIN
        ));
        let printed = format!("{ticket:?}");
        assert!(printed.contains("redacted"), "{printed}");
        assert!(!printed.contains(&format!("{:?}", &grant[4..8])));
        let mut slot = TicketSlot::new();
        slot.set(Some(ticket));
        assert!(
            slot.usable(&Identity::generate().public(), received)
                .is_none()
        );
        assert!(
            slot.ticket().is_none(),
            "a ticket for another control is dropped"
        );
    }
}

//! Ed25519 identities.
//!
//! An identity is an Ed25519 key pair. Its printable identifier is the public key in
//! lowercase base32 (52 characters): stable, copy-pasteable, never starts with `-`, and
//! reversible, so a ticket can pin the control by identifier alone.
//!
//! The same key also gives the identity's Noise static key (the X25519 form of the
//! Ed25519 key, as libsodium's `crypto_sign_ed25519_sk_to_curve25519` does). Pinning an
//! identifier therefore pins the Noise key too, and one key file per identity suffices.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use data_encoding::{BASE32_NOPAD, Encoding};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use zeroize::Zeroizing;

use crate::ChannelError;

/// Lowercase base32 without padding, for identifiers and ticket secrets. Built once:
/// every identifier printed or parsed (several per lease issued) would otherwise
/// rebuild its tables.
pub(crate) static LOWER_BASE32: LazyLock<Encoding> = LazyLock::new(|| {
    let mut spec = BASE32_NOPAD.specification();
    spec.symbols = "abcdefghijklmnopqrstuvwxyz234567".into();
    spec.encoding().expect("valid base32 specification")
});

/// A private identity: the signing key. `Debug` shows only the public half.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
    /// The X25519 form of the key, both halves computed once here rather than in every
    /// handshake (the public half is a scalar multiplication).
    noise_private: Zeroizing<[u8; 32]>,
    noise_public: [u8; 32],
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).expect("the operating system's random source failed");
        Self::from_seed(&seed)
    }

    /// The identity whose 32-byte Ed25519 seed is `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        Self {
            noise_private: Zeroizing::new(key.to_scalar_bytes()),
            noise_public: key.verifying_key().to_montgomery().to_bytes(),
            key,
        }
    }

    /// The 32-byte seed, for writing the key file.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> PublicIdentity {
        PublicIdentity(self.key.verifying_key())
    }

    /// The X25519 private key used as this identity's Noise static key.
    pub(crate) fn noise_private(&self) -> &[u8; 32] {
        &self.noise_private
    }

    /// The public half of [`Identity::noise_private`], the identity's Noise static key.
    pub(crate) fn noise_public(&self) -> [u8; 32] {
        self.noise_public
    }

    /// Signs `context || message`. The context keeps a signature made for one purpose
    /// from being accepted for another.
    pub(crate) fn sign(&self, context: &[u8], message: &[u8]) -> [u8; 64] {
        let mut data = Vec::with_capacity(context.len() + message.len());
        data.extend_from_slice(context);
        data.extend_from_slice(message);
        self.key.sign(&data).to_bytes()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

/// A public identity: the verifying key, printed as its identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicIdentity(VerifyingKey);

impl PublicIdentity {
    /// The raw 32-byte Ed25519 public key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Parses raw public key bytes, refusing points that are not valid keys and
    /// small-order ("weak") points, whose signatures prove nothing.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, ChannelError> {
        thread_local! {
            /// The identity this thread validated last. Validating decompresses the point
            /// (a field square root, about 10 µs here), and the same identity recurs:
            /// every record a control sends a member names that member.
            static LAST_VALID: Cell<Option<PublicIdentity>> = const { Cell::new(None) };
        }
        if let Some(last) = LAST_VALID.get().filter(|last| last.0.as_bytes() == bytes) {
            return Ok(last);
        }
        match VerifyingKey::from_bytes(bytes) {
            Ok(key) if !key.is_weak() => {
                LAST_VALID.set(Some(Self(key)));
                Ok(Self(key))
            }
            _ => Err(ChannelError::InvalidIdentity),
        }
    }

    /// The X25519 public key this identity uses as its Noise static key.
    pub(crate) fn noise_public(&self) -> [u8; 32] {
        self.0.to_montgomery().to_bytes()
    }

    /// Checks a signature made by [`Identity::sign`] with the same context.
    pub(crate) fn verify(
        &self,
        context: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), ChannelError> {
        let signature = Signature::from_slice(signature).map_err(|_| ChannelError::BadProof)?;
        let mut data = Vec::with_capacity(context.len() + message.len());
        data.extend_from_slice(context);
        data.extend_from_slice(message);
        self.0
            .verify(&data, &signature)
            .map_err(|_| ChannelError::BadProof)
    }
}

impl fmt::Display for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&LOWER_BASE32.encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicIdentity({self})")
    }
}

impl FromStr for PublicIdentity {
    type Err = ChannelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = LOWER_BASE32
            .decode(s.trim().as_bytes())
            .map_err(|_| ChannelError::InvalidIdentity)?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ChannelError::InvalidIdentity)?;
        Self::from_bytes(&bytes)
    }
}

impl serde::Serialize for PublicIdentity {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PublicIdentity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_round_trips() {
        let id = Identity::generate().public();
        let text = id.to_string();
        assert_eq!(text.len(), 52);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_eq!(text.parse::<PublicIdentity>().unwrap(), id);
    }

    #[test]
    fn garbage_identifiers_are_refused() {
        for bad in ["", "abc", "-", &"a".repeat(52), &"0".repeat(52)] {
            assert!(bad.parse::<PublicIdentity>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_recurring_identity_parses_alike_and_garbage_after_it_is_still_refused() {
        let id = Identity::generate().public();
        let text = id.to_string();
        for _ in 0..2 {
            assert_eq!(text.parse::<PublicIdentity>().unwrap(), id);
            // The point with its sign bit flipped, and a weak point: neither is `id`.
            let mut other = id.to_bytes();
            other[31] ^= 0x80;
            assert_ne!(PublicIdentity::from_bytes(&other).ok(), Some(id));
            assert!(PublicIdentity::from_bytes(&[0; 32]).is_err());
        }
    }

    #[test]
    fn noise_key_pair_matches_the_identity() {
        // The private scalar we hand to snow must produce the public key that the peer
        // derives from the identifier, or pinning would never match.
        use snow::resolvers::{CryptoResolver, DefaultResolver};
        let id = Identity::generate();
        let mut dh = DefaultResolver
            .resolve_dh(&snow::params::DHChoice::Curve25519)
            .unwrap();
        dh.set(id.noise_private().as_ref());
        assert_eq!(dh.pubkey(), id.public().noise_public());
    }

    #[test]
    fn debug_shows_no_secret() {
        let id = Identity::generate();
        let debug = format!("{id:?}");
        assert!(debug.contains(&id.public().to_string()));
        assert!(!debug.contains(&format!("{:?}", id.seed().as_ref())));
    }
}

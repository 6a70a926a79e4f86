//! The Noise handshakes' crypto, as snow's default resolver provides it, except that an
//! identity's static X25519 key comes with its public half already computed.
//!
//! snow derives the public key from the private one whenever a handshake is given its
//! static key: one fixed-base scalar multiplication per IK handshake on each side, for
//! a value that never changes. [`crate::Identity`] computes it once, when the key is
//! loaded, and this resolver hands it over. Everything else (ephemeral keys, DH, hash,
//! cipher, randomness) is what snow's default resolver does, on the same
//! curve25519-dalek arithmetic.

use curve25519_dalek::MontgomeryPoint;
use snow::Error;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroizing;

const KEY_LEN: usize = 32;

/// snow's default resolver, with the public half of `static_private` known.
pub(crate) struct Resolver {
    known: Option<(Zeroizing<[u8; KEY_LEN]>, [u8; KEY_LEN])>,
}

impl Resolver {
    /// A resolver knowing that `public` is the public half of `private`.
    pub(crate) fn knowing(private: &[u8; KEY_LEN], public: [u8; KEY_LEN]) -> Self {
        Self {
            known: Some((Zeroizing::new(*private), public)),
        }
    }

    /// A resolver knowing no key (a handshake without a static key).
    pub(crate) fn plain() -> Self {
        Self { known: None }
    }
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        DefaultResolver.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519 {
                known: self.known.clone(),
                private: Zeroizing::new([0; KEY_LEN]),
                public: [0; KEY_LEN],
            })),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// X25519 as snow's `Dh25519`, zeroizing its private key on drop.
struct X25519 {
    known: Option<(Zeroizing<[u8; KEY_LEN]>, [u8; KEY_LEN])>,
    private: Zeroizing<[u8; KEY_LEN]>,
    public: [u8; KEY_LEN],
}

impl X25519 {
    fn derive_public(&mut self) {
        self.public = MontgomeryPoint::mul_base_clamped(*self.private).to_bytes();
    }
}

/// Equality of two keys in time independent of where they differ.
fn same_key(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_LEN
    }

    fn priv_len(&self) -> usize {
        KEY_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        // snow passes exactly `priv_len` bytes (checked when the builder took the key).
        let len = privkey.len().min(KEY_LEN);
        self.private[..len].copy_from_slice(&privkey[..len]);
        match &self.known {
            Some((private, public)) if same_key(private, &self.private) => self.public = *public,
            _ => self.derive_public(),
        }
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), Error> {
        rng.try_fill_bytes(&mut self.private[..])?;
        self.derive_public();
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.private[..]
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), Error> {
        let remote: [u8; KEY_LEN] = pubkey
            .get(..KEY_LEN)
            .and_then(|key| key.try_into().ok())
            .ok_or(Error::Dh)?;
        let shared = Zeroizing::new(
            MontgomeryPoint(remote)
                .mul_clamped(*self.private)
                .to_bytes(),
        );
        out.get_mut(..KEY_LEN)
            .ok_or(Error::Dh)?
            .copy_from_slice(&shared[..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_public_key_is_used_and_an_unknown_one_derived() {
        let private = [7u8; KEY_LEN];
        let public = MontgomeryPoint::mul_base_clamped(private).to_bytes();
        let mut dh = Resolver::knowing(&private, [1; KEY_LEN])
            .resolve_dh(&DHChoice::Curve25519)
            .unwrap();
        // The resolver trusts what it was told for that key: [1; 32] here shows it
        // was not recomputed.
        dh.set(&private);
        assert_eq!(dh.pubkey(), &[1; KEY_LEN]);
        dh.set(&[8; KEY_LEN]);
        assert_eq!(
            dh.pubkey(),
            &MontgomeryPoint::mul_base_clamped([8; KEY_LEN]).to_bytes()
        );
        let mut plain = Resolver::plain().resolve_dh(&DHChoice::Curve25519).unwrap();
        plain.set(&private);
        assert_eq!(plain.pubkey(), &public);
    }

    #[test]
    fn dh_agrees_with_snows_own() {
        let mut ours = Resolver::plain().resolve_dh(&DHChoice::Curve25519).unwrap();
        let mut theirs = DefaultResolver.resolve_dh(&DHChoice::Curve25519).unwrap();
        ours.set(&[3; KEY_LEN]);
        theirs.set(&[4; KEY_LEN]);
        let (mut a, mut b) = ([0u8; KEY_LEN], [0u8; KEY_LEN]);
        ours.dh(theirs.pubkey(), &mut a).unwrap();
        theirs.dh(ours.pubkey(), &mut b).unwrap();
        assert_eq!(a, b);
        assert!(ours.dh(&[0; 31], &mut a).is_err());
    }
}

//! The Noise handshakes' crypto, as snow's default resolver provides it, except that an
//! identity's static X25519 key comes with its public half already computed, and that
//! the Diffie-Hellman itself is computed on the curve's Edwards form.
//!
//! snow derives the public key from the private one whenever a handshake is given its
//! static key: one fixed-base scalar multiplication per IK handshake on each side, for
//! a value that never changes. [`crate::Identity`] computes it once, when the key is
//! loaded, and this resolver hands it over.
//!
//! The DH: curve25519-dalek's Montgomery ladder runs on its portable 64-bit field code
//! only, while its Edwards variable-base multiplication has an AVX2 backend (chosen at
//! run time). X25519 of a point on the curve equals the Montgomery u-coordinate of the
//! same (clamped, unreduced) scalar times the birationally equivalent Edwards point, so
//! [`x25519`] maps the peer's key there and back: a third fewer instructions and a
//! quarter less time per DH than the ladder here (BENCHMARKS.md, "Fresh channels:
//! trimming the lease path"), with the same output. The one difference is a key that
//! is not on the curve (on its twist): the ladder computes a value from it that
//! depends on the private key, this refuses it, as the Noise specification asks of an
//! invalid public key (an output independent of the private key, or an error: section
//! 4.1); no honest peer sends one, every X25519 public key being on the curve.
//!
//! Everything else (ephemeral keys, hash, cipher, randomness) is what snow's default
//! resolver does, on the same curve25519-dalek arithmetic.

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

/// X25519 (RFC 7748) of the private key `private` and the peer's public key `remote`,
/// computed on the Edwards form (see the module comment); `None` for a key that is not
/// on the curve. Constant-time in `private`: the Edwards multiplication is, and only
/// the public `remote` decides the refusal.
fn x25519(private: &[u8; KEY_LEN], remote: [u8; KEY_LEN]) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    // Either sign of the Edwards x-coordinate gives the same u-coordinate of the
    // product (k·(−P) = −(k·P), and a point and its negation share u).
    let point = MontgomeryPoint(remote).to_edwards(0)?;
    // Clamped and not reduced, as X25519 multiplies: for a point with a small-order
    // component, the two differ.
    let product = Zeroizing::new(point.mul_clamped(*private));
    let shared = Zeroizing::new(product.to_montgomery());
    Some(Zeroizing::new(shared.to_bytes()))
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
        let shared = x25519(&self.private, remote).ok_or(Error::Dh)?;
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

    fn hex(text: &str) -> [u8; KEY_LEN] {
        let bytes: Vec<u8> = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect();
        bytes.try_into().unwrap()
    }

    /// The Montgomery ladder, as snow's default resolver computes X25519.
    fn ladder(private: &[u8; KEY_LEN], remote: [u8; KEY_LEN]) -> [u8; KEY_LEN] {
        MontgomeryPoint(remote).mul_clamped(*private).to_bytes()
    }

    #[test]
    fn rfc7748_key_agreement() {
        // RFC 7748, section 6.1.
        let alice = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let alice_public = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        let bob = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        let bob_public = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let shared = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(
            MontgomeryPoint::mul_base_clamped(alice).to_bytes(),
            alice_public
        );
        assert_eq!(*x25519(&alice, bob_public).unwrap(), shared);
        assert_eq!(*x25519(&bob, alice_public).unwrap(), shared);
    }

    /// 32 bytes from a deterministic sequence (splitmix64), so a failure reproduces.
    fn bytes(seed: &mut u64) -> [u8; KEY_LEN] {
        let mut out = [0u8; KEY_LEN];
        for chunk in out.chunks_mut(8) {
            *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out
    }

    #[test]
    fn the_edwards_form_gives_the_ladders_output_or_refuses_a_key_off_the_curve() {
        // RFC 7748, section 5.2 (its first u is on the curve, its second is not).
        let scalar = hex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
        let u = hex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
        let out = hex("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
        assert_eq!(ladder(&scalar, u), out);
        if let Some(shared) = x25519(&scalar, u) {
            assert_eq!(*shared, out);
        }
        let scalar = hex("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d");
        let u = hex("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493");
        if let Some(shared) = x25519(&scalar, u) {
            assert_eq!(*shared, ladder(&scalar, u));
        }
        // Keys of honest peers (always on the curve): always the ladder's output.
        // Arbitrary 32-byte strings (about half on the curve): the ladder's output
        // whenever not refused.
        let mut seed = 1;
        let mut refused = 0;
        for _ in 0..2000 {
            let private = bytes(&mut seed);
            let public = MontgomeryPoint::mul_base_clamped(bytes(&mut seed)).to_bytes();
            assert_eq!(*x25519(&private, public).unwrap(), ladder(&private, public));
            let arbitrary = bytes(&mut seed);
            match x25519(&private, arbitrary) {
                Some(shared) => assert_eq!(*shared, ladder(&private, arbitrary)),
                None => refused += 1,
            }
        }
        assert!((800..1200).contains(&refused), "{refused} of 2000 refused");
    }

    #[test]
    fn small_order_points_give_the_ladders_output() {
        // The small-order points X25519 implementations are tested with (some as
        // non-canonical encodings, u + p): the ladder's output (zero: a clamped scalar
        // is a multiple of the cofactor) whenever not refused; u = -1 is on the twist.
        for u in [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ] {
            let u = hex(u);
            let private = [0x42; KEY_LEN];
            match x25519(&private, u) {
                Some(shared) => assert_eq!(*shared, ladder(&private, u), "{u:?}"),
                None => assert_eq!(u[0], 0xec, "only u = -1 is refused"),
            }
        }
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

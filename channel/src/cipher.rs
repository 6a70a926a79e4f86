//! Noise's transport cipher state for `ChaChaPoly`, encrypting and decrypting in place.
//!
//! **Why not snow's transport.** snow's `write_message`/`read_message` take the input and
//! the output as two buffers and copy one into the other before running the cipher
//! there, so every byte of a bulk transfer was copied once more at each end, and the
//! plaintext had to sit in a buffer of its own first. The outlet tunnel moves whole
//! InfluxDB batches, so the session now keeps the two keys snow's handshake produced
//! (its `split`, taken with `dangerously_get_raw_split`) and runs the cipher on the
//! caller's buffer directly. The handshake itself stays snow's.
//!
//! **Why ring.** The cipher is ring's ChaCha20-Poly1305 (assembly, already built for
//! rustls), measured at about twice the speed of the pure-Rust one snow uses; a 1 MiB
//! batch is sealed once and opened once on its way to InfluxDB, so this is most of the
//! outlet path's CPU. ring keeps no key between calls here: a key object is made per
//! message from the zeroizing copy, as snow did.
//!
//! This is Noise's `CipherState` (specification §5.1) for `ChaChaPoly` and nothing
//! more: the 96-bit nonce is 32 zero bits then the 64-bit counter, little-endian; the
//! associated data of a transport message is empty; `REKEY(k)` is the first 32 bytes of
//! `ENCRYPTWITHAD(k, 2^64 − 1, ε, zeros(32))`; the counter value 2^64 − 1 is reserved.
//! A test seals with this state and opens with snow's transport (and back), across
//! rekeys, so both stay the same protocol.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::{Zeroize, Zeroizing};

use crate::ChannelError;

/// Bytes of the Poly1305 tag after each ciphertext.
pub const TAG_LEN: usize = 16;
/// Bytes in a key.
pub(crate) const KEY_LEN: usize = 32;

/// One direction's key and message counter.
pub(crate) struct CipherState {
    key: Zeroizing<[u8; KEY_LEN]>,
    nonce: u64,
}

impl CipherState {
    pub(crate) fn new(key: [u8; KEY_LEN]) -> Self {
        let mut key = key;
        let state = Self {
            key: Zeroizing::new(key),
            nonce: 0,
        };
        key.zeroize();
        state
    }

    fn aead(&self) -> LessSafeKey {
        // Cannot fail: the key has the algorithm's length.
        LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &*self.key).expect("a 32-byte ChaCha20 key"),
        )
    }

    /// Encrypts `buf` in place with the next nonce; returns the tag.
    pub(crate) fn encrypt(&mut self, buf: &mut [u8]) -> Result<[u8; TAG_LEN], ChannelError> {
        let nonce = self.next_nonce()?;
        let tag = self
            .aead()
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), buf)
            .map_err(|_| ChannelError::Decrypt)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `buf` in place with the next nonce, if `tag` authenticates it. On
    /// failure `buf` holds garbage and the caller must give the session up.
    pub(crate) fn decrypt(&mut self, buf: &mut [u8], tag: &[u8]) -> Result<(), ChannelError> {
        let nonce = self.next_nonce()?;
        let tag = Tag::try_from(tag).map_err(|_| ChannelError::Decrypt)?;
        self.aead()
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                tag,
                buf,
                0..,
            )
            .map(|_| ())
            .map_err(|_| ChannelError::Decrypt)
    }

    /// Noise's `REKEY`: the key becomes the encryption of 32 zero bytes under the
    /// reserved nonce. The counter goes on.
    pub(crate) fn rekey(&mut self) {
        let mut next = [0u8; KEY_LEN];
        // Cannot fail: the buffer is far below ChaCha20's limit.
        let _ = self.aead().seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce_bytes(u64::MAX)),
            Aad::empty(),
            &mut next,
        );
        self.key.copy_from_slice(&next);
        next.zeroize();
    }

    fn next_nonce(&mut self) -> Result<[u8; 12], ChannelError> {
        if self.nonce == u64::MAX {
            // Reserved for rekeying; 2^64 − 1 messages is not a limit anyone reaches.
            return Err(ChannelError::Closed);
        }
        let nonce = nonce_bytes(self.nonce);
        self.nonce += 1;
        Ok(nonce)
    }
}

fn nonce_bytes(counter: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    nonce
}

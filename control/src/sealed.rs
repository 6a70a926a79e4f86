//! The add-on settings as a shared store keeps them: encrypted (XChaCha20-Poly1305)
//! with a key derived from the control identity's secret key, which every replica
//! holds and the database never sees. A dump of the database alone does not yield the
//! admin credential inside. The configuration's id is bound as associated data, so a
//! sealed record moved under another id does not open.

use blake2::digest::Mac as _;
use chacha20poly1305::aead::Aead as _;
use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305, XNonce};
use leasehold_channel::Identity;
use leasehold_protocol::AddonConfig;
use zeroize::Zeroizing;

/// Separates this key from any other derived from the identity.
const CONTEXT: &[u8] = b"leasehold add-on settings at rest, v1";
const NONCE_LEN: usize = 24;

/// Why sealed settings could not be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The system's random source failed.
    #[error("random source: {0}")]
    Random(String),
    /// Not sealed with this identity's key (or altered).
    #[error(
        "the add-on settings in the store do not open with this replica's identity key \
         (another control's, or altered)"
    )]
    Open,
    /// The settings do not encode or decode.
    #[error("add-on settings: {0}")]
    Encoding(String),
}

fn cipher(identity: &Identity) -> XChaCha20Poly1305 {
    let seed = identity.seed();
    let mut mac = <blake2::Blake2bMac<blake2::digest::consts::U32> as blake2::digest::KeyInit>::new_from_slice(&seed[..])
        .expect("a 32-byte key fits BLAKE2b");
    mac.update(CONTEXT);
    let mut key: [u8; 32] = mac.finalize().into_bytes().into();
    let cipher = XChaCha20Poly1305::new(&key.into());
    zeroize::Zeroize::zeroize(&mut key);
    cipher
}

/// `config`, sealed under id `id`: a random nonce, then the ciphertext.
pub fn seal(identity: &Identity, id: &str, config: &AddonConfig) -> Result<Vec<u8>, SealError> {
    let plain =
        Zeroizing::new(serde_json::to_vec(config).map_err(|e| SealError::Encoding(e.to_string()))?);
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
    let sealed = cipher(identity)
        .encrypt(
            XNonce::from_slice(&nonce),
            chacha20poly1305::aead::Payload {
                msg: &plain,
                aad: id.as_bytes(),
            },
        )
        .map_err(|_| SealError::Encoding("encryption failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The settings sealed under `id`.
pub fn open(identity: &Identity, id: &str, sealed: &[u8]) -> Result<AddonConfig, SealError> {
    if sealed.len() < NONCE_LEN {
        return Err(SealError::Open);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let plain = Zeroizing::new(
        cipher(identity)
            .decrypt(
                XNonce::from_slice(nonce),
                chacha20poly1305::aead::Payload {
                    msg: body,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)?,
    );
    serde_json::from_slice(&plain).map_err(|e| SealError::Encoding(e.to_string()))
}

#[cfg(test)]
mod tests {
    use leasehold_channel::{Identity, Secret};
    use leasehold_protocol::AddonConfig;

    use super::{SealError, open, seal};

    fn config() -> AddonConfig {
        AddonConfig::InfluxdbV1 {
            endpoint_url: "http://influx:8086".into(),
            username: "admin".into(),
            password: Secret::new("the-admin-password-1234"),
            privileges: vec![r#"WRITE ON "telemetry""#.into()],
            default_ttl_secs: None,
            max_ttl_secs: None,
            max_live_leases: None,
            ca_pem: None,
        }
    }

    #[test]
    fn sealed_settings_open_only_with_the_identity_and_id_they_were_sealed_with() {
        let identity = Identity::generate();
        let sealed = seal(&identity, "a1", &config()).unwrap();
        // What a database dump shows: neither the password nor anything readable.
        let needle = b"the-admin-password-1234";
        assert!(!sealed.windows(needle.len()).any(|w| w == needle));
        assert!(!sealed.windows(5).any(|w| w == b"admin"));
        let opened = open(&identity, "a1", &sealed).unwrap();
        assert_eq!(
            serde_json::to_string(&opened).unwrap(),
            serde_json::to_string(&config()).unwrap()
        );
        // Another control's key, another id, a flipped bit: refused.
        assert!(matches!(
            open(&Identity::generate(), "a1", &sealed),
            Err(SealError::Open)
        ));
        assert!(matches!(
            open(&identity, "a2", &sealed),
            Err(SealError::Open)
        ));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            open(&identity, "a1", &altered),
            Err(SealError::Open)
        ));
        // Two seals of the same settings differ (a fresh nonce each).
        assert_ne!(seal(&identity, "a1", &config()).unwrap(), sealed);
    }
}

//! Membership credentials: the control's signed statement "this identity is a member,
//! with these attributes, until then", handed out with every lease and checked by an
//! outlet without asking the control.
//!
//! The text form is `base64url(payload) "." base64url(signature)`, the payload being
//! JSON and the signature Ed25519 by the control over a purpose-specific context plus
//! the payload bytes exactly as sent (no re-serialisation, so no canonical-JSON
//! question). Pure: no I/O, the clock is an argument.

use std::collections::BTreeMap;

use data_encoding::BASE64URL_NOPAD;
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::{Identity, PublicIdentity};

/// Keeps a membership signature from being accepted as any other signature the
/// control makes, and the other way round.
const CONTEXT: &[u8] = b"leasehold membership credential v1\0";

/// The longest credential text accepted: a bound on what an unauthenticated peer can
/// make the verifier decode. Real ones are a few hundred bytes.
pub const MAX_CREDENTIAL_LEN: usize = 8 << 10;

/// What a membership credential states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The member.
    #[serde(rename = "sub")]
    pub subject: PublicIdentity,
    /// Its attributes, from its enrollment ticket.
    #[serde(rename = "attrs")]
    pub attributes: BTreeMap<String, String>,
    /// Seconds since the Unix epoch after which the statement no longer holds.
    #[serde(rename = "exp")]
    pub expires_at: u64,
}

/// Why a credential was refused. Deliberately says nothing about which byte was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// Too long, not two base64url parts, or a payload that is not the expected JSON.
    #[error("malformed membership credential")]
    Malformed,
    /// The signature is not the control's over this payload.
    #[error("membership credential signature is invalid")]
    BadSignature,
    /// Past its expiry.
    #[error("membership credential has expired")]
    Expired,
    /// Issued to another identity than the one on the channel.
    #[error("membership credential was issued to another identity")]
    WrongSubject,
    /// The member lacks an attribute the verifier requires.
    #[error("member is not allowed here (attribute {0} does not match)")]
    NotAllowed(String),
}

impl Membership {
    /// Signs this statement as `control`, giving the text form.
    pub fn sign(&self, control: &Identity) -> String {
        // Serialising a struct of strings and an integer cannot fail.
        let payload = serde_json::to_vec(self).unwrap_or_default();
        let signature = control.sign(CONTEXT, &payload);
        let mut out = BASE64URL_NOPAD.encode(&payload);
        out.push('.');
        out.push_str(&BASE64URL_NOPAD.encode(&signature));
        out
    }

    /// Checks `text` was signed by `control` and has not expired at `now` (Unix
    /// seconds): the statement it carries. Signature first, so nothing an attacker
    /// wrote is parsed as JSON.
    pub fn verify(text: &str, control: &PublicIdentity, now: u64) -> Result<Self, MembershipError> {
        if text.len() > MAX_CREDENTIAL_LEN {
            return Err(MembershipError::Malformed);
        }
        let (payload, signature) = text.split_once('.').ok_or(MembershipError::Malformed)?;
        let payload = BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .map_err(|_| MembershipError::Malformed)?;
        let signature = BASE64URL_NOPAD
            .decode(signature.as_bytes())
            .map_err(|_| MembershipError::Malformed)?;
        control
            .verify(CONTEXT, &payload, &signature)
            .map_err(|_| MembershipError::BadSignature)?;
        let membership: Self =
            serde_json::from_slice(&payload).map_err(|_| MembershipError::Malformed)?;
        if now >= membership.expires_at {
            return Err(MembershipError::Expired);
        }
        Ok(membership)
    }

    /// Checks the statement is about `peer` and that the member has every
    /// `key=value` in `allow` (all must match; an empty list allows any member).
    pub fn admit(
        &self,
        peer: &PublicIdentity,
        allow: &[(String, String)],
    ) -> Result<(), MembershipError> {
        if self.subject != *peer {
            return Err(MembershipError::WrongSubject);
        }
        for (key, value) in allow {
            if self.attributes.get(key) != Some(value) {
                // The key is the operator's own configuration: safe to name.
                return Err(MembershipError::NotAllowed(key.clone()));
            }
        }
        Ok(())
    }

    /// The expiry as a timestamp.
    pub fn expiry(&self) -> Timestamp {
        Timestamp(self.expires_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(subject: PublicIdentity, expires_at: u64) -> Membership {
        Membership {
            subject,
            attributes: BTreeMap::from([("role".to_owned(), "sensor".to_owned())]),
            expires_at,
        }
    }

    #[test]
    fn round_trip() {
        let control = Identity::generate();
        let member = Identity::generate().public();
        let text = statement(member, 100).sign(&control);
        let back = Membership::verify(&text, &control.public(), 99).unwrap();
        assert_eq!(back, statement(member, 100));
        back.admit(&member, &[]).unwrap();
        back.admit(&member, &[("role".into(), "sensor".into())])
            .unwrap();
    }

    #[test]
    fn expired_is_refused() {
        let control = Identity::generate();
        let text = statement(Identity::generate().public(), 100).sign(&control);
        assert_eq!(
            Membership::verify(&text, &control.public(), 100),
            Err(MembershipError::Expired)
        );
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let control = Identity::generate();
        let text = statement(Identity::generate().public(), 100).sign(&control);
        for i in 0..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] ^= 0x01;
            let Ok(tampered) = String::from_utf8(bytes) else {
                continue;
            };
            assert!(
                Membership::verify(&tampered, &control.public(), 0).is_err(),
                "byte {i} flipped was accepted"
            );
        }
    }

    #[test]
    fn another_signer_is_refused() {
        let text = statement(Identity::generate().public(), 100).sign(&Identity::generate());
        assert_eq!(
            Membership::verify(&text, &Identity::generate().public(), 0),
            Err(MembershipError::BadSignature)
        );
    }

    #[test]
    fn wrong_subject_and_attributes_are_refused() {
        let member = Identity::generate().public();
        let m = statement(member, 100);
        assert_eq!(
            m.admit(&Identity::generate().public(), &[]),
            Err(MembershipError::WrongSubject)
        );
        assert_eq!(
            m.admit(&member, &[("role".into(), "admin".into())]),
            Err(MembershipError::NotAllowed("role".into()))
        );
        assert_eq!(
            m.admit(&member, &[("site".into(), "a".into())]),
            Err(MembershipError::NotAllowed("site".into()))
        );
    }

    #[test]
    fn garbage_and_oversize_are_malformed() {
        let control = Identity::generate().public();
        for text in ["", ".", "abc", "a.b.c", "!!!.???"] {
            assert!(Membership::verify(text, &control, 0).is_err(), "{text:?}");
        }
        let long = "a".repeat(MAX_CREDENTIAL_LEN + 1);
        assert_eq!(
            Membership::verify(&long, &control, 0),
            Err(MembershipError::Malformed)
        );
    }
}

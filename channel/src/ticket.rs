//! Enrollment tickets: one line that tells a new member where the control is, which key
//! to pin, and the secret that admits it.
//!
//! Format: `lht1:<control identifier>:<secret>@<addr>[,<addr>...]`, where the secret is
//! 32 random bytes in lowercase base32. The control stores only [`secret_hash`].

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::PublicIdentity;
use crate::identity::LOWER_BASE32;

const PREFIX: &str = "lht1";

/// A parsed ticket. `Debug` redacts the secret.
#[derive(Clone)]
pub struct Ticket {
    /// Where the control listens: every replica's address; clients start at a random one.
    pub addrs: Vec<String>,
    /// The control's identity, to pin.
    pub control: PublicIdentity,
    /// The 32-byte admission secret.
    pub secret: Zeroizing<[u8; 32]>,
}

/// Why a ticket line was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TicketError {
    /// The line does not start with the ticket prefix.
    #[error("not a leasehold ticket (expected it to start with `{PREFIX}:`)")]
    NotATicket,
    /// The line lacks a part.
    #[error("malformed ticket: {0}")]
    Malformed(&'static str),
}

impl Ticket {
    /// A new ticket with a fresh random secret.
    pub fn generate(addrs: Vec<String>, control: PublicIdentity) -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(secret.as_mut()).expect("the operating system's random source failed");
        Self {
            addrs,
            control,
            secret,
        }
    }

    /// The one-line text form, as a [`crate::Secret`] since it carries the secret.
    pub fn to_line(&self) -> crate::Secret {
        crate::Secret::new(format!(
            "{PREFIX}:{}:{}@{}",
            self.control,
            LOWER_BASE32.encode(self.secret.as_ref()),
            self.addrs.join(",")
        ))
    }
}

/// Decodes a ticket secret from its base32 text form.
pub fn decode_secret(text: &str) -> Result<Zeroizing<[u8; 32]>, TicketError> {
    let bytes = Zeroizing::new(
        LOWER_BASE32
            .decode(text.as_bytes())
            .map_err(|_| TicketError::Malformed("the secret is not valid base32"))?,
    );
    let secret: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| TicketError::Malformed("the secret is not 32 bytes"))?;
    Ok(Zeroizing::new(secret))
}

/// The secret in its base32 text form, as sent to the control when enrolling.
pub fn encode_secret(secret: &[u8; 32]) -> crate::Secret {
    crate::Secret::new(LOWER_BASE32.encode(secret))
}

/// The hash under which the control stores a ticket secret. Secrets are 256 random bits,
/// so an unsalted hash is as strong as the secret; BLAKE2s with a purpose string keeps
/// the value useless for anything else.
pub fn secret_hash(secret: &[u8]) -> String {
    use blake2::{Blake2s256, Digest};
    let mut hasher = Blake2s256::new();
    hasher.update(b"leasehold ticket secret v1\0");
    hasher.update(secret);
    data_encoding::HEXLOWER.encode(&hasher.finalize())
}

/// The public id of a ticket, derived from its stored hash: the first 16 hex digits.
/// It names the ticket in `ticket list` and `ticket revoke` and in logs; it does not
/// help anyone redeem it (the hash is one-way, and this is only part of it).
pub fn ticket_id(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

impl FromStr for Ticket {
    type Err = TicketError;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let line = line.trim();
        let rest = line
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix(':'))
            .ok_or(TicketError::NotATicket)?;
        let (keys, addrs) = rest.split_once('@').ok_or(TicketError::Malformed(
            "missing `@` before the control address",
        ))?;
        let (control, secret) = keys
            .split_once(':')
            .ok_or(TicketError::Malformed("missing the secret"))?;
        let control = control
            .parse()
            .map_err(|_| TicketError::Malformed("the control identifier is not valid"))?;
        let secret = decode_secret(secret)?;
        let addrs: Vec<String> = addrs
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if addrs.is_empty() {
            return Err(TicketError::Malformed("no control address"));
        }
        Ok(Self {
            addrs,
            control,
            secret,
        })
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("addrs", &self.addrs)
            .field("control", &self.control)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    #[test]
    fn round_trips() {
        let control = Identity::generate().public();
        let ticket = Ticket::generate(vec!["127.0.0.1:4100".into(), "[::1]:4100".into()], control);
        let line = ticket.to_line();
        let parsed: Ticket = line.expose().parse().unwrap();
        assert_eq!(parsed.addrs, ticket.addrs);
        assert_eq!(parsed.control, control);
        assert_eq!(*parsed.secret, *ticket.secret);
        assert!(!format!("{parsed:?}").contains(&LOWER_BASE32.encode(ticket.secret.as_ref())));
    }

    #[test]
    fn malformed_tickets_say_what_is_wrong() {
        let control = Identity::generate().public();
        let good = Ticket::generate(vec!["h:1".into()], control).to_line();
        let good = good.expose();
        assert_eq!(
            "hello".parse::<Ticket>().unwrap_err(),
            TicketError::NotATicket
        );
        for bad in [
            good.replace('@', "#"),
            good.replacen(&control.to_string(), "zz", 1),
            good.split('@').next().unwrap().to_string() + "@",
            good.replacen(':', "", 2),
        ] {
            assert!(
                matches!(
                    bad.parse::<Ticket>(),
                    Err(TicketError::Malformed(_)) | Err(TicketError::NotATicket)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn hashes_differ_per_secret() {
        assert_ne!(secret_hash(&[1; 32]), secret_hash(&[2; 32]));
        assert_eq!(secret_hash(&[1; 32]).len(), 64);
        let hash = secret_hash(&[1; 32]);
        assert_eq!(ticket_id(&hash), &hash[..16]);
    }
}

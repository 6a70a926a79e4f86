//! A lease turned into what the request path needs: a ready-made `Authorization` header,
//! the upstream it is valid for, and a local deadline after which it is never used.
//!
//! Built once per lease by [`Credential::from_lease`] (pure: the caller passes the
//! clocks), so forwarding a request costs one refcount increment for the header, not a
//! base64 encoding or a string format.
//!
//! **Expiry on the local clock.** A proxy must not need a correct wall clock: devices
//! often boot with a wrong one. The control states the lease's remaining lifetime
//! outright (`ttl_ms`, counted from when it received the request), and the local
//! deadline is that long after the monotonic instant the proxy *asked* for the lease —
//! which is earlier, so the local deadline never outlives the real one, whatever either
//! wall clock says. The difference between the wall clocks is measured on the way (the
//! control's clock on receipt is `expires_at` − `ttl_ms`, ours when asking is
//! `received_wall` less the monotonic time since) for the log to warn about.
//!
//! A record without `ttl_ms` (an older control) falls back to the wall clocks: the
//! earlier of "`expires_at` on our wall clock" and "received + (`expires_at` −
//! `created_at`)". The deadline is a monotonic [`Instant`] either way, so wall-clock
//! jumps cannot revive a credential.
//!
//! **Secrets.** The header value is marked sensitive (HPACK never indexes it, hyper never
//! logs it); `Debug` prints `<redacted>`; the temporary buffers holding the plain token
//! and its base64 form are zeroized. The `HeaderValue`'s own bytes are not zeroized on
//! drop (the `http` crate offers no hook); they live only as long as the credential.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use leasehold_protocol::{AuthScheme, LeaseRecord, LeaseStatus, Timestamp};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::upstream::{Upstream, UpstreamUrlError};

/// Why a lease cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The lease came without a token (only `lease create` answers carry one).
    #[error("lease {0} has no token")]
    NoToken(String),
    /// The token is empty: never forwarded.
    #[error("lease {0} has an empty token")]
    EmptyToken(String),
    /// The token has bytes that cannot go into a header (the token itself is not shown).
    #[error("lease {0} has a token that is not a valid header value")]
    InvalidToken(String),
    /// A v1 (`Basic`) token must be `user:password`.
    #[error("lease {0} uses Basic auth but its token is not `user:password`")]
    NotUserPassword(String),
    /// The lease is revoked or expired.
    #[error("lease {id} is {status:?}")]
    NotActive {
        /// Lease id.
        id: String,
        /// Its status.
        status: LeaseStatus,
    },
    /// The lease has already expired on arrival.
    #[error("lease {id} expired at {expires_at} before it could be used")]
    Expired {
        /// Lease id.
        id: String,
        /// Its expiry.
        expires_at: Timestamp,
    },
    /// The lease's endpoint URL is not usable and no `--upstream` overrides it.
    #[error("lease {id} has an unusable endpoint URL: {reason}")]
    Endpoint {
        /// Lease id.
        id: String,
        /// What is wrong with it.
        reason: UpstreamUrlError,
    },
}

/// A usable lease. Immutable; replaced wholesale on renewal.
pub struct Credential {
    header: HeaderValue,
    scheme: AuthScheme,
    upstream: Upstream,
    lease_id: String,
    expires_at: Timestamp,
    valid_until: Instant,
    received: Instant,
    generation: u64,
    /// Our wall clock minus the control's, in milliseconds, when `ttl_ms` allowed
    /// measuring it (a few milliseconds of transit included).
    clock_skew_ms: Option<i64>,
    /// The membership credential that came with the lease, for an outlet.
    membership: Option<Box<str>>,
}

impl Credential {
    /// Turns `lease`, asked for at `asked` and received at `received` (monotonic) /
    /// `received_wall` (wall clock), into a credential. `upstream` overrides the lease's
    /// endpoint when given. `generation` numbers credentials so a 401 can tell which one
    /// it was about.
    pub fn from_lease(
        lease: &LeaseRecord,
        upstream: Option<&Upstream>,
        asked: Instant,
        received: Instant,
        received_wall: SystemTime,
        generation: u64,
    ) -> Result<Self, CredentialError> {
        let id = || lease.id.clone();
        if lease.status != LeaseStatus::Active {
            return Err(CredentialError::NotActive {
                id: id(),
                status: lease.status,
            });
        }
        let token = lease
            .token
            .as_ref()
            .ok_or_else(|| CredentialError::NoToken(id()))?;
        if token.is_empty() {
            return Err(CredentialError::EmptyToken(id()));
        }
        let (valid_until, clock_skew_ms) = match lease.ttl_ms {
            Some(ttl_ms) => {
                let ttl = Duration::from_millis(ttl_ms);
                let asked_wall =
                    received_wall.checked_sub(received.saturating_duration_since(asked));
                let skew = asked_wall.and_then(|wall| clock_skew_ms(lease.expires_at, ttl, wall));
                (asked + ttl, skew)
            }
            None => (
                received + remaining_lifetime(lease.created_at, lease.expires_at, received_wall),
                None,
            ),
        };
        if valid_until <= received {
            return Err(CredentialError::Expired {
                id: id(),
                expires_at: lease.expires_at,
            });
        }
        let upstream = match upstream {
            Some(upstream) => upstream.clone(),
            None => Upstream::parse(&lease.endpoint_url)
                .map_err(|reason| CredentialError::Endpoint { id: id(), reason })?,
        };
        let header =
            authorization_header(lease.auth_scheme, token.expose()).map_err(|e| match e {
                HeaderError::NotUserPassword => CredentialError::NotUserPassword(id()),
                HeaderError::Invalid => CredentialError::InvalidToken(id()),
            })?;
        Ok(Self {
            header,
            scheme: lease.auth_scheme,
            upstream,
            lease_id: lease.id.clone(),
            expires_at: lease.expires_at,
            valid_until,
            received,
            generation,
            clock_skew_ms,
            membership: lease.membership.as_deref().map(Into::into),
        })
    }

    /// The membership credential to present to an outlet, if the control issued one.
    pub fn membership(&self) -> Option<&str> {
        self.membership.as_deref()
    }

    /// The `Authorization` value to send (sensitive).
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// How the header authenticates: `Token` (InfluxDB 2.x) or `Basic` (1.x).
    pub fn scheme(&self) -> AuthScheme {
        self.scheme
    }

    /// Where requests go with this credential.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The lease id (not a secret).
    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }

    /// The lease's expiry as the control stated it.
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }

    /// The local instant from which this credential must not be used.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// When it was received.
    pub fn received(&self) -> Instant {
        self.received
    }

    /// Whether it may still be used at `now`.
    pub fn is_valid_at(&self, now: Instant) -> bool {
        now < self.valid_until
    }

    /// Which credential this is (1 for the first, +1 per renewal).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Our wall clock minus the control's, in milliseconds, if it could be measured.
    pub fn clock_skew_ms(&self) -> Option<i64> {
        self.clock_skew_ms
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("lease_id", &self.lease_id)
            .field("expires_at", &self.expires_at)
            .field("upstream", &self.upstream)
            .field("generation", &self.generation)
            .field("scheme", &self.scheme)
            .field("header", &format_args!("<redacted>"))
            .finish()
    }
}

/// Our wall clock when asking (`asked_wall`) minus the control's when it received the
/// request, which was `expires_at` − `ttl` (ms; the one-way transit included). `None` if
/// the figures make no sense.
fn clock_skew_ms(expires_at: Timestamp, ttl: Duration, asked_wall: SystemTime) -> Option<i64> {
    let control_then = expires_at.to_system().checked_sub(ttl)?;
    let millis = |d: Duration| i64::try_from(d.as_millis()).ok();
    match asked_wall.duration_since(control_then) {
        Ok(ahead) => millis(ahead),
        Err(behind) => millis(behind.duration()).map(|m| -m),
    }
}

/// How long a lease with these times, received at `received_wall`, may be used (for
/// records without `ttl_ms`).
fn remaining_lifetime(
    created_at: Timestamp,
    expires_at: Timestamp,
    received_wall: SystemTime,
) -> Duration {
    let lifetime = Duration::from_secs(expires_at.0.saturating_sub(created_at.0));
    let by_wall_clock = expires_at
        .to_system()
        .duration_since(received_wall)
        .unwrap_or_default();
    lifetime.min(by_wall_clock)
}

enum HeaderError {
    NotUserPassword,
    Invalid,
}

/// `Token <token>` or `Basic base64(<user:password>)`, marked sensitive.
fn authorization_header(scheme: AuthScheme, token: &str) -> Result<HeaderValue, HeaderError> {
    let text = match scheme {
        AuthScheme::Token => {
            let mut text = Zeroizing::new(String::with_capacity(6 + token.len()));
            text.push_str("Token ");
            text.push_str(token);
            text
        }
        AuthScheme::Basic => {
            if !token.contains(':') {
                return Err(HeaderError::NotUserPassword);
            }
            let encoded = Zeroizing::new(data_encoding::BASE64.encode(token.as_bytes()));
            let mut text = Zeroizing::new(String::with_capacity(6 + encoded.len()));
            text.push_str("Basic ");
            text.push_str(&encoded);
            text
        }
    };
    let mut value = HeaderValue::from_str(&text).map_err(|_| HeaderError::Invalid)?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use leasehold_channel::{Identity, Secret};

    use super::*;

    fn lease(scheme: AuthScheme, token: Option<&str>, created: u64, expires: u64) -> LeaseRecord {
        LeaseRecord {
            id: "00000000000000aa".into(),
            issued_for: Identity::from_seed(&[7; 32]).public(),
            created_at: Timestamp(created),
            expires_at: Timestamp(expires),
            token: token.map(Secret::new),
            status: LeaseStatus::Active,
            auth_scheme: scheme,
            endpoint_url: "http://influx.test:8086".into(),
            ttl_ms: None,
            membership: None,
        }
    }

    fn at(secs: u64) -> SystemTime {
        Timestamp(secs).to_system()
    }

    #[test]
    fn token_scheme_header() {
        let now = Instant::now();
        let c = Credential::from_lease(
            &lease(AuthScheme::Token, Some("t0k"), 100, 400),
            None,
            now,
            now,
            at(100),
            1,
        )
        .unwrap();
        assert_eq!(c.header(), "Token t0k");
        assert!(c.header().is_sensitive());
        assert_eq!(c.valid_until() - now, Duration::from_secs(300));
        assert_eq!(c.upstream().to_string(), "http://influx.test:8086");
    }

    #[test]
    fn basic_scheme_header() {
        let now = Instant::now();
        let c = Credential::from_lease(
            &lease(AuthScheme::Basic, Some("lease_1:pw"), 100, 400),
            None,
            now,
            now,
            at(100),
            1,
        )
        .unwrap();
        assert_eq!(c.header(), "Basic bGVhc2VfMTpwdw==");
        assert_eq!(c.scheme(), AuthScheme::Basic);
        let err = Credential::from_lease(
            &lease(AuthScheme::Basic, Some("nocolon"), 100, 400),
            None,
            now,
            now,
            at(100),
            1,
        );
        assert!(matches!(err, Err(CredentialError::NotUserPassword(_))));
    }

    #[test]
    fn expiry_takes_the_earlier_clock() {
        let now = Instant::now();
        // Our clock is 100 s ahead of the control's: only 200 s left.
        let c = Credential::from_lease(
            &lease(AuthScheme::Token, Some("t"), 100, 400),
            None,
            now,
            now,
            at(200),
            1,
        )
        .unwrap();
        assert_eq!(c.valid_until() - now, Duration::from_secs(200));
        // Our clock is behind: the lifetime caps it.
        let c = Credential::from_lease(
            &lease(AuthScheme::Token, Some("t"), 100, 400),
            None,
            now,
            now,
            at(0),
            1,
        )
        .unwrap();
        assert_eq!(c.valid_until() - now, Duration::from_secs(300));
        assert!(c.is_valid_at(now) && !c.is_valid_at(c.valid_until()));
    }

    #[test]
    fn a_stated_lifetime_counts_from_when_it_was_asked_for_whatever_the_clocks_say() {
        let asked = Instant::now();
        let received = asked + Duration::from_millis(40);
        // The control got the request at 100 s and states 300 000 ms (expires at 400 s).
        let mut l = lease(AuthScheme::Token, Some("t"), 100, 400);
        l.ttl_ms = Some(300_000);
        for (our_wall, skew) in [(100, 0), (700, 600_000), (0, -100_000)] {
            // Our clock when asking: right, 10 minutes fast (past `expires_at`!), 100 s
            // slow; the answer arrives 40 ms later.
            let wall = at(our_wall) + Duration::from_millis(40);
            let c = Credential::from_lease(&l, None, asked, received, wall, 1).unwrap();
            assert_eq!(c.valid_until() - asked, Duration::from_secs(300));
            assert_eq!(c.clock_skew_ms(), Some(skew));
        }
        // Nothing left, or used up in transit: refused.
        l.ttl_ms = Some(0);
        let err = Credential::from_lease(&l, None, asked, received, at(100), 1).unwrap_err();
        assert!(matches!(err, CredentialError::Expired { .. }));
        l.ttl_ms = Some(30);
        let err = Credential::from_lease(&l, None, asked, received, at(100), 1).unwrap_err();
        assert!(matches!(err, CredentialError::Expired { .. }));
        // Without `ttl_ms` (an older control) the skew is unknown.
        l.ttl_ms = None;
        let c = Credential::from_lease(&l, None, asked, received, at(100), 1).unwrap();
        assert_eq!(c.clock_skew_ms(), None);
    }

    #[test]
    fn unusable_leases_are_refused() {
        let now = Instant::now();
        let e =
            |l: &LeaseRecord| Credential::from_lease(l, None, now, now, at(100), 1).unwrap_err();
        assert!(matches!(
            e(&lease(AuthScheme::Token, None, 100, 400)),
            CredentialError::NoToken(_)
        ));
        assert!(matches!(
            e(&lease(AuthScheme::Token, Some(""), 100, 400)),
            CredentialError::EmptyToken(_)
        ));
        assert!(matches!(
            e(&lease(AuthScheme::Token, Some("a\nb"), 100, 400)),
            CredentialError::InvalidToken(_)
        ));
        assert!(matches!(
            e(&lease(AuthScheme::Token, Some("t"), 50, 100)),
            CredentialError::Expired { .. }
        ));
        let mut revoked = lease(AuthScheme::Token, Some("t"), 100, 400);
        revoked.status = LeaseStatus::Revoked;
        assert!(matches!(e(&revoked), CredentialError::NotActive { .. }));
        let mut bad = lease(AuthScheme::Token, Some("t"), 100, 400);
        bad.endpoint_url = "ftp://x".into();
        assert!(matches!(e(&bad), CredentialError::Endpoint { .. }));
        // An explicit upstream makes the lease's endpoint irrelevant.
        let up = Upstream::parse("https://override").unwrap();
        let c = Credential::from_lease(&bad, Some(&up), now, now, at(100), 1).unwrap();
        assert_eq!(c.upstream(), &up);
    }

    #[test]
    fn debug_and_errors_never_show_the_token() {
        let now = Instant::now();
        let c = Credential::from_lease(
            &lease(AuthScheme::Token, Some("sekrit"), 100, 400),
            None,
            now,
            now,
            at(100),
            1,
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("sekrit"));
        let err = Credential::from_lease(
            &lease(AuthScheme::Token, Some("sek\nrit"), 100, 400),
            None,
            now,
            now,
            at(100),
            1,
        )
        .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("sek"));
    }
}

//! The lease core: ids, status at a time, the record users see, and the plan for a new
//! lease (which terms apply, what lifetime, when it ends). Pure: no I/O, no clock read,
//! no randomness drawn here; the caller passes the time and the random bits, so every
//! edge (a second boundary, a clock stepped back, a TTL at the limit) is a plain test.
//!
//! The async shell around it is `ops/lease.rs` (who asks, the store, the backend).

use std::collections::BTreeMap;
use std::time::SystemTime;

use leasehold_channel::PublicIdentity;
use leasehold_protocol::{
    AddonConfig, AuthScheme, LeaseRecord, LeaseStatus, PolicyRecord, Timestamp,
};

use crate::policy::{Terms, TtlTooLong, lease_ttl, terms_for};
use crate::store::StoredLease;

/// The id for a lease issued at `millis` since the epoch, with 20 of `random`'s bits:
/// 44 bits of milliseconds (until the year 2527), then the top 20 random bits.
///
/// Time-ordered ids keep the store's inserts at the right edge of its B-tree, so a
/// group commit of many leases rewrites a few pages instead of one page per lease, and
/// the lease table reads in issue order. The random bits keep ids from two processes
/// (a restarted control, a clock stepped back) apart. Credentials carry the id in their
/// name, which is how a sweep tells ours from everyone else's.
pub fn id_at(millis: u64, random: u32) -> u64 {
    (millis << 20) | u64::from(random >> 12)
}

/// The next id after `last` (the previous one this process gave out): the candidate
/// from the time and random bits, or `last + 1` if that is not greater. Ids stay
/// strictly increasing within a process even when the clock steps back.
pub fn next_id(last: u64, millis: u64, random: u32) -> u64 {
    id_at(millis, random).max(last.saturating_add(1))
}

/// An id as it is written: 16 lowercase hex digits.
pub fn format_id(id: u64) -> String {
    format!("{id:016x}")
}

/// Whether `id` has the form [`format_id`] gives.
pub fn is_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A lease's status at `now`: revoked wins over expired (the record says why it ended),
/// and a lease is expired from its expiry second on.
pub fn status_at(
    revoked_at: Option<Timestamp>,
    expires_at: Timestamp,
    now: Timestamp,
) -> LeaseStatus {
    if revoked_at.is_some() {
        LeaseStatus::Revoked
    } else if expires_at <= now {
        LeaseStatus::Expired
    } else {
        LeaseStatus::Active
    }
}

/// A stored lease's status at `now`.
pub fn status(lease: &StoredLease, now: Timestamp) -> LeaseStatus {
    lease.status_at(now)
}

/// A stored lease as users see it (never with a token: the control keeps none).
pub fn record(lease: &StoredLease, now: Timestamp) -> LeaseRecord {
    LeaseRecord {
        id: lease.id.clone(),
        issued_for: lease.member,
        created_at: lease.created_at,
        expires_at: lease.expires_at,
        token: None,
        status: status(lease, now),
        auth_scheme: lease.auth_scheme,
        endpoint_url: lease.endpoint_url.clone(),
        ttl_ms: None,
        membership: None,
    }
}

/// The terms and times of a lease about to be issued.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The terms that applied (grant, cap, the policy's name for the log).
    pub terms: Terms,
    /// The lifetime granted, in seconds.
    pub ttl_secs: u64,
    /// When it is issued.
    pub created_at: Timestamp,
    /// When it ends.
    pub expires_at: Timestamp,
}

/// Why a lease is refused before anything is reserved or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// More than the terms' maximum was asked for. Refused, not clamped: a caller given
    /// less than it asked for would renew too late; told the limit, it asks again.
    #[error(transparent)]
    TtlTooLong(#[from] TtlTooLong),
}

/// Plans a lease for a member with `attributes` at `now`: the most specific policy's
/// terms (else the add-on's), the requested lifetime checked against them (the default
/// when none is asked for), and the expiry that follows.
pub fn plan(
    attributes: &BTreeMap<String, String>,
    addon: &AddonConfig,
    policies: &[PolicyRecord],
    requested_ttl: Option<u64>,
    now: Timestamp,
) -> Result<Planned, Refusal> {
    let terms = terms_for(addon, policies, attributes);
    let ttl_secs = lease_ttl(&terms, requested_ttl)?;
    Ok(Planned {
        terms,
        ttl_secs,
        created_at: now,
        expires_at: now.plus_secs(ttl_secs),
    })
}

/// Where and how a planned lease's credential is created, for its intent record.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// The name the credential will carry (until issued, what finds it again).
    pub credential_name: String,
    /// How the proxy presents the token.
    pub auth_scheme: AuthScheme,
    /// The InfluxDB it is valid for.
    pub endpoint_url: String,
    /// The add-on configuration that issues it.
    pub addon_id: String,
}

/// The intent record written before InfluxDB is asked for anything (see
/// ARCHITECTURE.md, "The intent record"): not issued, not removed, found by name.
pub fn intent(id: &str, member: PublicIdentity, planned: &Planned, issuer: Issuer) -> StoredLease {
    StoredLease {
        id: id.to_owned(),
        member,
        created_at: planned.created_at,
        expires_at: planned.expires_at,
        credential_id: issuer.credential_name,
        auth_scheme: issuer.auth_scheme,
        endpoint_url: issuer.endpoint_url,
        revoked_at: None,
        removed: false,
        issued: false,
        addon_id: Some(issuer.addon_id),
    }
}

/// Milliseconds from `from` until `at`; 0 if `at` is not later. The lifetime the
/// proxy counts on its monotonic clock, stated from when the control began the request
/// (the client counts from when it sent it, earlier, so its deadline never outlives
/// the lease).
pub fn millis_until(from: SystemTime, at: Timestamp) -> u64 {
    at.to_system().duration_since(from).map_or(0, |left| {
        u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
    })
}

/// Why a lease's credential was removed, for the log line that says so.
pub fn removal_reason(lease: &StoredLease) -> &'static str {
    if !lease.issued {
        "never issued"
    } else if lease.revoked_at.is_some() {
        "revoked"
    } else {
        "expired"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{MAX_TTL_SECS, policy_id};
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    use crate::policy::tests::{addon, attrs};

    /// A policy granting writes on a database named after its own match set.
    fn policy(matches: &[(&str, &str)], max: Option<u64>) -> PolicyRecord {
        let privilege = format!("WRITE ON {}", policy_id(&attrs(matches)));
        crate::policy::tests::policy(matches, &privilege, max)
    }

    fn stored(expires_at: u64, revoked_at: Option<u64>) -> StoredLease {
        StoredLease {
            id: format_id(1),
            member: leasehold_channel::Identity::generate().public(),
            created_at: Timestamp(10),
            expires_at: Timestamp(expires_at),
            credential_id: "c".into(),
            auth_scheme: AuthScheme::Basic,
            endpoint_url: "http://x".into(),
            revoked_at: revoked_at.map(Timestamp),
            removed: false,
            issued: true,
            addon_id: None,
        }
    }

    #[test]
    fn ids_order_by_issue_time_before_randomness() {
        let first = id_at(1_795_000_000_000, u32::MAX);
        let next_millisecond = id_at(1_795_000_000_001, 0);
        assert!(first < next_millisecond);
        assert_eq!(
            id_at(1, 0xfff),
            1 << 20,
            "only the top 20 random bits are kept"
        );
        // 44 bits of milliseconds last until the year 2527.
        let year_2500 = 16_725_225_600_000;
        assert_eq!(id_at(year_2500, 0) >> 20, year_2500);
    }

    #[test]
    fn ids_keep_increasing_when_the_clock_steps_back() {
        let last = id_at(2_000, 5 << 12);
        assert_eq!(next_id(last, 1_000, u32::MAX), last + 1);
        assert_eq!(
            next_id(last, 2_000, 5 << 12),
            last + 1,
            "same instant, same bits"
        );
        assert_eq!(next_id(last, 2_001, 0), id_at(2_001, 0));
        assert_eq!(next_id(u64::MAX, 0, 0), u64::MAX, "saturates, never wraps");
    }

    #[test]
    fn ids_are_sixteen_lowercase_hex_digits() {
        assert!(is_id(&format_id(id_at(1_795_000_000_000, 7))));
        assert!(is_id(&format_id(0)));
        for bad in [
            "",
            "0123456789abcde",
            "0123456789abcdeF",
            "0123456789abcdefa",
            "g123456789abcdef",
        ] {
            assert!(!is_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn status_at_the_edges() {
        assert_eq!(
            status_at(None, Timestamp(100), Timestamp(99)),
            LeaseStatus::Active
        );
        assert_eq!(
            status_at(None, Timestamp(100), Timestamp(100)),
            LeaseStatus::Expired
        );
        assert_eq!(
            status_at(Some(Timestamp(50)), Timestamp(100), Timestamp(200)),
            LeaseStatus::Revoked,
            "revoked says why it ended, even once expired"
        );
        let lease = stored(100, None);
        let shown = record(&lease, Timestamp(100));
        assert_eq!(shown.status, LeaseStatus::Expired);
        assert!(shown.token.is_none() && shown.ttl_ms.is_none() && shown.membership.is_none());
        assert_eq!(removal_reason(&lease), "expired");
        assert_eq!(removal_reason(&stored(100, Some(5))), "revoked");
    }

    #[test]
    fn plan_uses_the_default_refuses_above_the_max_and_counts_from_now() {
        let a = addon(Some(60), Some(900));
        let planned = plan(&attrs(&[]), &a, &[], None, Timestamp(1_000)).unwrap();
        assert_eq!(
            (planned.ttl_secs, planned.expires_at),
            (60, Timestamp(1_060))
        );
        assert_eq!(planned.created_at, Timestamp(1_000));
        let planned = plan(&attrs(&[]), &a, &[], Some(900), Timestamp(1_000)).unwrap();
        assert_eq!(planned.expires_at, Timestamp(1_900));
        assert_eq!(
            plan(&attrs(&[]), &a, &[], Some(901), Timestamp(1_000)),
            Err(Refusal::TtlTooLong(TtlTooLong {
                requested: 901,
                max: 900
            }))
        );
        // Zero is not a lifetime: the shortest lease lasts a second.
        let planned = plan(&attrs(&[]), &a, &[], Some(0), Timestamp(1_000)).unwrap();
        assert_eq!(planned.ttl_secs, 1);
    }

    #[test]
    fn plan_takes_the_most_specific_policy() {
        let policies = [
            policy(&[("svc", "iot")], Some(100)),
            policy(&[("svc", "iot"), ("zone", "eu")], Some(50)),
        ];
        let a = addon(None, None);
        let eu = plan(
            &attrs(&[("svc", "iot"), ("zone", "eu")]),
            &a,
            &policies,
            None,
            Timestamp(0),
        )
        .unwrap();
        assert_eq!(eu.terms.policy.as_deref(), Some("svc=iot,zone=eu"));
        assert_eq!(
            eu.ttl_secs, 50,
            "the default is held under the policy's max"
        );
        let iot = plan(
            &attrs(&[("svc", "iot")]),
            &a,
            &policies,
            Some(100),
            Timestamp(0),
        )
        .unwrap();
        assert_eq!(iot.terms.policy.as_deref(), Some("svc=iot"));
        assert!(
            plan(
                &attrs(&[("svc", "iot"), ("zone", "eu")]),
                &a,
                &policies,
                Some(100),
                Timestamp(0)
            )
            .is_err()
        );
    }

    #[test]
    fn ttl_ms_counts_from_when_the_request_began() {
        let at = Timestamp(1_000);
        let from = UNIX_EPOCH + Duration::from_millis(999_250);
        assert_eq!(millis_until(from, at), 750);
        assert_eq!(millis_until(UNIX_EPOCH + Duration::from_secs(2_000), at), 0);
    }

    proptest! {
        /// Whatever the policies and the request, a granted lifetime is within
        /// 1..=the terms' max, never past the 30-day bound, and the expiry is exactly
        /// that far from now.
        #[test]
        fn granted_lifetimes_stay_within_bounds(
            default in proptest::option::of(1u64..=MAX_TTL_SECS),
            max in proptest::option::of(1u64..=MAX_TTL_SECS),
            policy_max in proptest::option::of(1u64..=u64::MAX),
            requested in proptest::option::of(0u64..=2 * MAX_TTL_SECS),
            now in 0u64..=4_000_000_000,
        ) {
            let a = addon(default, max);
            let policies = [policy(&[("svc", "iot")], policy_max)];
            match plan(&attrs(&[("svc", "iot")]), &a, &policies, requested, Timestamp(now)) {
                Ok(planned) => {
                    prop_assert!(planned.ttl_secs >= 1);
                    prop_assert!(planned.ttl_secs <= planned.terms.max_ttl);
                    prop_assert!(planned.terms.max_ttl <= MAX_TTL_SECS);
                    prop_assert_eq!(planned.expires_at.0, now + planned.ttl_secs);
                    if let Some(r) = requested { prop_assert_eq!(planned.ttl_secs, r.max(1)); }
                }
                Err(Refusal::TtlTooLong(e)) => {
                    prop_assert_eq!(Some(e.requested), requested);
                    prop_assert!(e.requested > e.max);
                }
            }
        }

        /// Ids given out one after another are strictly increasing and well formed,
        /// whatever the clock and the random bits do.
        #[test]
        fn ids_strictly_increase(steps in proptest::collection::vec((0u64..1u64 << 44, any::<u32>()), 1..64)) {
            let mut last = 0;
            for (millis, random) in steps {
                let id = next_id(last, millis, random);
                prop_assert!(id > last);
                prop_assert!(is_id(&format_id(id)));
                last = id;
            }
        }
    }
}

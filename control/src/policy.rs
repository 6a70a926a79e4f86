//! Which grant and lifetimes apply to a member, and what TTL a request gets. Pure.
//!
//! The add-on's settings are the default policy. A policy applies to a member when every
//! one of its `KEY=VALUE` matches is among the member's attributes; when several apply,
//! the most specific (most matches) wins, ties broken by id so the answer is stable.

use std::collections::BTreeMap;

use leasehold_protocol::{AddonConfig, Grant, PolicyRecord};

/// Default lease lifetime when neither the add-on nor a policy sets one: five minutes,
/// as in the InfluxDB Cloud add-on this product mirrors.
pub const DEFAULT_TTL_SECS: u64 = 300;
/// Maximum lease lifetime when neither the add-on nor a policy sets one.
pub const DEFAULT_MAX_TTL_SECS: u64 = 3600;
/// The longest lifetime any lease, add-on or policy may have (30 days). A lease is a
/// short-lived credential; the bound also keeps every expiry a representable time.
pub const MAX_TTL_SECS: u64 = 30 * 86_400;
/// How many live leases a member may hold when neither the add-on nor a policy says.
pub const DEFAULT_MAX_LIVE_LEASES: u32 = 8;
/// The highest live-lease cap an add-on or policy may set.
pub const MAX_LIVE_LEASES_LIMIT: u32 = 1_000_000;

/// The terms a member's leases are issued under.
#[derive(Debug, Clone, PartialEq)]
pub struct Terms {
    /// What the credential may do.
    pub grant: Grant,
    /// Lifetime when the request names none.
    pub default_ttl: u64,
    /// Longest lifetime allowed.
    pub max_ttl: u64,
    /// The policy that applied, if not the add-on default.
    pub policy: Option<String>,
    /// How many live leases the member may hold at once.
    pub max_live_leases: u32,
}

/// A refused TTL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "requested ttl {requested}s exceeds the maximum of {max}s: refused (ask for at most {max}s)"
)]
pub struct TtlTooLong {
    /// What was asked for.
    pub requested: u64,
    /// The policy maximum.
    pub max: u64,
}

/// The add-on's own lifetimes, with the defaults applied and kept consistent.
pub fn addon_ttls(addon: &AddonConfig) -> (u64, u64) {
    let (default, max) = match addon {
        AddonConfig::Influxdb {
            default_ttl_secs,
            max_ttl_secs,
            ..
        }
        | AddonConfig::InfluxdbV1 {
            default_ttl_secs,
            max_ttl_secs,
            ..
        } => (*default_ttl_secs, *max_ttl_secs),
    };
    // Settings saved before the bound existed are held to it too.
    let default = default.map(|d| d.min(MAX_TTL_SECS));
    let max = max
        .unwrap_or(DEFAULT_MAX_TTL_SECS.max(default.unwrap_or(0)))
        .min(MAX_TTL_SECS);
    let default = default.unwrap_or(DEFAULT_TTL_SECS.min(max));
    (default, max)
}

/// The add-on's live-lease cap per member, with the default applied.
pub fn addon_max_live_leases(addon: &AddonConfig) -> u32 {
    match addon {
        AddonConfig::Influxdb {
            max_live_leases, ..
        }
        | AddonConfig::InfluxdbV1 {
            max_live_leases, ..
        } => max_live_leases.unwrap_or(DEFAULT_MAX_LIVE_LEASES),
    }
}

/// The add-on's default grant.
pub fn addon_grant(addon: &AddonConfig) -> Grant {
    match addon {
        AddonConfig::Influxdb { permissions, .. } => Grant::Permissions(permissions.clone()),
        AddonConfig::InfluxdbV1 { privileges, .. } => Grant::Privileges(privileges.clone()),
    }
}

/// The terms for a member with `attributes`.
pub fn terms_for(
    addon: &AddonConfig,
    policies: &[PolicyRecord],
    attributes: &BTreeMap<String, String>,
) -> Terms {
    let (default_ttl, max_ttl) = addon_ttls(addon);
    let best = policies
        .iter()
        .filter(|p| {
            p.spec
                .matches
                .iter()
                .all(|(k, v)| attributes.get(k) == Some(v))
        })
        .max_by(|a, b| {
            a.spec
                .matches
                .len()
                .cmp(&b.spec.matches.len())
                .then_with(|| b.id.cmp(&a.id))
        });
    match best {
        None => Terms {
            grant: addon_grant(addon),
            default_ttl,
            max_ttl,
            policy: None,
            max_live_leases: addon_max_live_leases(addon),
        },
        Some(policy) => {
            let max_ttl = policy
                .spec
                .max_ttl_secs
                .unwrap_or(max_ttl)
                .min(MAX_TTL_SECS);
            Terms {
                grant: policy.spec.grant.clone(),
                default_ttl: policy
                    .spec
                    .default_ttl_secs
                    .unwrap_or(default_ttl)
                    .min(max_ttl),
                max_ttl,
                policy: Some(policy.id.clone()),
                max_live_leases: policy
                    .spec
                    .max_live_leases
                    .unwrap_or_else(|| addon_max_live_leases(addon)),
            }
        }
    }
}

/// The lifetime a request gets: the default when it names none; refused above the max.
pub fn lease_ttl(terms: &Terms, requested: Option<u64>) -> Result<u64, TtlTooLong> {
    match requested {
        None => Ok(terms.default_ttl),
        Some(requested) if requested > terms.max_ttl => Err(TtlTooLong {
            requested,
            max: terms.max_ttl,
        }),
        Some(requested) => Ok(requested.max(1)),
    }
}

/// A policy's id: its match set, e.g. `service=iot-sensor,zone=eu`. Setting a policy
/// with the same matches replaces it.
pub fn policy_id(matches: &BTreeMap<String, String>) -> String {
    matches
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use leasehold_channel::Secret;
    use leasehold_protocol::PolicySpec;

    pub(crate) fn addon(default: Option<u64>, max: Option<u64>) -> AddonConfig {
        AddonConfig::InfluxdbV1 {
            endpoint_url: "http://x".into(),
            username: "admin".into(),
            password: Secret::new("pw"),
            privileges: vec!["WRITE ON db".into()],
            default_ttl_secs: default,
            max_ttl_secs: max,
            max_live_leases: None,
            ca_pem: None,
        }
    }

    pub(crate) fn policy(
        matches: &[(&str, &str)],
        privilege: &str,
        max: Option<u64>,
    ) -> PolicyRecord {
        let matches: BTreeMap<String, String> = matches
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PolicyRecord {
            id: policy_id(&matches),
            spec: PolicySpec {
                matches,
                grant: Grant::Privileges(vec![privilege.into()]),
                default_ttl_secs: None,
                max_ttl_secs: max,
                max_live_leases: None,
            },
        }
    }

    pub(crate) fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_stay_consistent() {
        assert_eq!(addon_ttls(&addon(None, None)), (300, 3600));
        assert_eq!(addon_ttls(&addon(None, Some(900))), (300, 900));
        // Saved before the bound existed: held to it, never past it.
        assert_eq!(
            addon_ttls(&addon(None, Some(u64::MAX))),
            (300, MAX_TTL_SECS)
        );
        assert_eq!(addon_ttls(&addon(None, Some(300))), (300, 300));
        assert_eq!(addon_ttls(&addon(Some(7200), None)), (7200, 7200));
        assert_eq!(addon_ttls(&addon(Some(60), Some(900))), (60, 900));
    }

    #[test]
    fn most_specific_matching_policy_wins() {
        let policies = vec![
            policy(&[("service", "iot")], "WRITE ON iot", None),
            policy(
                &[("service", "iot"), ("zone", "eu")],
                "WRITE ON iot_eu",
                Some(120),
            ),
            policy(&[("service", "web")], "WRITE ON web", None),
        ];
        let a = addon(None, None);
        let t = terms_for(&a, &policies, &attrs(&[("service", "iot"), ("zone", "eu")]));
        assert_eq!(t.grant, Grant::Privileges(vec!["WRITE ON iot_eu".into()]));
        assert_eq!((t.default_ttl, t.max_ttl), (120, 120));
        let t = terms_for(&a, &policies, &attrs(&[("service", "iot")]));
        assert_eq!(t.policy.as_deref(), Some("service=iot"));
        let t = terms_for(&a, &policies, &attrs(&[("service", "db")]));
        assert_eq!(t.policy, None);
        assert_eq!(t.grant, Grant::Privileges(vec!["WRITE ON db".into()]));
        assert_eq!(t.max_live_leases, DEFAULT_MAX_LIVE_LEASES);
    }

    #[test]
    fn the_live_lease_cap_comes_from_the_policy_then_the_addon_then_the_default() {
        let mut capped = policy(&[("service", "iot")], "WRITE ON iot", None);
        capped.spec.max_live_leases = Some(2);
        let mut a = addon(None, None);
        let iot = attrs(&[("service", "iot")]);
        assert_eq!(terms_for(&a, &[capped.clone()], &iot).max_live_leases, 2);
        assert_eq!(
            terms_for(&a, &[], &iot).max_live_leases,
            DEFAULT_MAX_LIVE_LEASES
        );
        if let AddonConfig::InfluxdbV1 {
            max_live_leases, ..
        } = &mut a
        {
            *max_live_leases = Some(20);
        }
        assert_eq!(terms_for(&a, &[], &iot).max_live_leases, 20);
        capped.spec.max_live_leases = None;
        assert_eq!(terms_for(&a, &[capped], &iot).max_live_leases, 20);
    }

    #[test]
    fn ttl_above_max_is_refused_not_clamped() {
        let t = terms_for(&addon(Some(60), Some(900)), &[], &BTreeMap::new());
        assert_eq!(lease_ttl(&t, None), Ok(60));
        assert_eq!(lease_ttl(&t, Some(900)), Ok(900));
        assert_eq!(
            lease_ttl(&t, Some(901)),
            Err(TtlTooLong {
                requested: 901,
                max: 900
            })
        );
    }
}

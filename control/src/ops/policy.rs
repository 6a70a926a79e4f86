//! Policy operations (set, list, delete) and the bounds every lifetime and cap setting
//! is held to, shared with the add-on's settings.

use leasehold_protocol::{AddonConfig, Grant, PolicyRecord, PolicySpec, Reply};

use super::{Admin, Result};
use crate::control::Control;
use crate::error::ControlError;
use crate::grant::{Privilege, normalize_permissions};
use crate::policy::{MAX_LIVE_LEASES_LIMIT, MAX_TTL_SECS, policy_id};
use crate::store::Store;

impl<S: Store> Control<S> {
    /// Sets (or replaces, by its match set) a policy. Its grant is checked against the
    /// configured add-on, so a policy can only ever issue what the backend understands.
    pub(super) async fn set_policy(&self, _: &Admin, spec: PolicySpec) -> Result<Reply> {
        if spec.matches.is_empty() {
            return Err(ControlError::BadRequest(
                "a policy needs at least one --match KEY=VALUE".into(),
            ));
        }
        check_ttls(spec.default_ttl_secs, spec.max_ttl_secs)?;
        check_max_live_leases(spec.max_live_leases)?;
        // The grant's kind depends on the add-on (v2 permissions, v1 privileges), so
        // there must be one to check against.
        let addon = self.addon.load_full().ok_or_else(|| {
            ControlError::BadRequest("configure the add-on before setting policies".into())
        })?;
        let grant = match (&addon.config, spec.grant) {
            (AddonConfig::Influxdb { org_id, .. }, Grant::Permissions(p)) => Grant::Permissions(
                normalize_permissions(&p, org_id)
                    .map_err(|e| ControlError::BadRequest(e.to_string()))?,
            ),
            (AddonConfig::InfluxdbV1 { .. }, Grant::Privileges(p)) => {
                Grant::Privileges(validate_privileges(p)?)
            }
            (AddonConfig::Influxdb { .. }, Grant::Privileges(_)) => {
                return Err(ControlError::BadRequest(
                    "the influxdb add-on takes --permissions, not --privileges".into(),
                ));
            }
            (AddonConfig::InfluxdbV1 { .. }, Grant::Permissions(_)) => {
                return Err(ControlError::BadRequest(
                    "the influxdb-v1 add-on takes --privileges, not --permissions".into(),
                ));
            }
        };
        // The id is the match set: setting a policy for the same matches replaces it,
        // so there is never a question of which of two identical policies applies.
        let policy = PolicyRecord {
            id: policy_id(&spec.matches),
            spec: PolicySpec { grant, ..spec },
        };
        self.store.put_policy(policy.clone()).await?;
        tracing::info!(policy = %policy.id, "policy set");
        Ok(Reply::Policy(policy))
    }

    pub(super) async fn list_policies(&self, _: &Admin) -> Result<Reply> {
        Ok(Reply::Policies {
            policies: self.store.policies().await?,
        })
    }

    /// Deletes a policy by id (its match set). Leases already issued under it keep
    /// their terms until they expire; new ones get the next policy that matches.
    pub(super) async fn delete_policy(&self, _: &Admin, id: String) -> Result<Reply> {
        if self.store.delete_policy(id).await? {
            Ok(Reply::Done)
        } else {
            Err(ControlError::NotFound("policy"))
        }
    }
}

/// Lifetimes an add-on or policy may set: above zero, within the 30-day bound, the
/// default no longer than the maximum. Refused rather than adjusted, so what an admin
/// reads back is what they wrote.
pub(super) fn check_ttls(default: Option<u64>, max: Option<u64>) -> Result<()> {
    if default == Some(0) || max == Some(0) {
        return Err(ControlError::BadRequest(
            "ttls must be greater than zero".into(),
        ));
    }
    if let Some(ttl) = default.into_iter().chain(max).find(|t| *t > MAX_TTL_SECS) {
        return Err(ControlError::BadRequest(format!(
            "ttl {ttl}s exceeds the limit of {MAX_TTL_SECS}s (30 days) for any lease"
        )));
    }
    if let (Some(default), Some(max)) = (default, max)
        && default > max
    {
        return Err(ControlError::BadRequest(format!(
            "default ttl {default}s exceeds max ttl {max}s"
        )));
    }
    Ok(())
}

/// A live-lease cap an add-on or policy may set: 1 to [`MAX_LIVE_LEASES_LIMIT`].
pub(super) fn check_max_live_leases(max: Option<u32>) -> Result<()> {
    match max {
        Some(n) if n == 0 || n > MAX_LIVE_LEASES_LIMIT => Err(ControlError::BadRequest(format!(
            "the live-lease cap must be between 1 and {MAX_LIVE_LEASES_LIMIT}, not {n}"
        ))),
        _ => Ok(()),
    }
}

/// v1 privileges, parsed and written back in canonical form (quoted database names),
/// so what is stored is exactly what the backend will grant.
pub(super) fn validate_privileges(privileges: Vec<String>) -> Result<Vec<String>> {
    if privileges.is_empty() {
        return Err(ControlError::BadRequest(
            "at least one --privileges is required".into(),
        ));
    }
    privileges
        .iter()
        .map(|p| Privilege::parse(p).map(|p| p.to_string()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| ControlError::BadRequest(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_settings_are_bounded() {
        assert!(check_ttls(None, None).is_ok());
        assert!(check_ttls(Some(60), Some(60)).is_ok());
        assert!(check_ttls(Some(MAX_TTL_SECS), None).is_ok());
        assert!(check_ttls(Some(0), None).is_err());
        assert!(check_ttls(None, Some(0)).is_err());
        assert!(check_ttls(None, Some(MAX_TTL_SECS + 1)).is_err());
        assert!(check_ttls(Some(61), Some(60)).is_err());
    }

    #[test]
    fn live_lease_caps_are_bounded() {
        assert!(check_max_live_leases(None).is_ok());
        assert!(check_max_live_leases(Some(1)).is_ok());
        assert!(check_max_live_leases(Some(MAX_LIVE_LEASES_LIMIT)).is_ok());
        assert!(check_max_live_leases(Some(0)).is_err());
        assert!(check_max_live_leases(Some(MAX_LIVE_LEASES_LIMIT + 1)).is_err());
    }

    #[test]
    fn privileges_are_required_and_canonical() {
        assert!(validate_privileges(vec![]).is_err());
        assert!(validate_privileges(vec!["FLY ON db".into()]).is_err());
        let ok = validate_privileges(vec!["write on telemetry".into()]).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(
            ok,
            validate_privileges(ok.clone()).unwrap(),
            "stable once canonical"
        );
    }
}

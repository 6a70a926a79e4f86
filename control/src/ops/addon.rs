//! Configuring the add-on: the settings validated, checked against InfluxDB (unless
//! `--skip-verify`), then installed. Refused settings change nothing.

use leasehold_protocol::{AddonConfig, AddonSummary, Reply};

use super::policy::{check_max_live_leases, check_ttls, validate_privileges};
use super::{Admin, Result};
use crate::control::{Addon, Control};
use crate::error::ControlError;
use crate::grant::normalize_permissions;
use crate::policy;
use crate::store::Store;

impl<S: Store> Control<S> {
    pub(super) async fn configure_addon(
        &self,
        _: &Admin,
        addon: AddonConfig,
        skip_verify: bool,
    ) -> Result<Reply> {
        let addon = Addon::new(validate_addon(addon)?)?;
        // Checked before anything is written: refused settings change nothing.
        let verified_version = if skip_verify {
            tracing::warn!(endpoint = %addon.backend.endpoint_url(), "add-on configured without verification (--skip-verify)");
            None
        } else {
            match addon.backend.verify().await {
                Ok(verified) => Some(verified.version),
                Err(error) => {
                    tracing::warn!(%error, "add-on settings refused");
                    return Err(ControlError::Unverified(error));
                }
            }
        };
        let summary = summary(&addon, verified_version);
        let id = addon.id.clone();
        // Installing keeps the previous configuration (if another) until its leases
        // are revoked through it, and starts a sweep with the new one.
        self.install_addon(addon).await?;
        tracing::info!(addon.id = %id, backend = %summary.backend, endpoint = %summary.endpoint_url, default_ttl_secs = summary.default_ttl_secs, max_ttl_secs = summary.max_ttl_secs, "add-on configured");
        Ok(Reply::Addon(summary))
    }
}

/// What `addon configure` answers: the settings in effect, never the secret.
fn summary(addon: &Addon, verified_version: Option<String>) -> AddonSummary {
    let (default_ttl_secs, max_ttl_secs) = policy::addon_ttls(&addon.config);
    AddonSummary {
        backend: match addon.config {
            AddonConfig::Influxdb { .. } => "influxdb",
            AddonConfig::InfluxdbV1 { .. } => "influxdb-v1",
        }
        .into(),
        endpoint_url: addon.backend.endpoint_url().to_owned(),
        default_ttl_secs,
        max_ttl_secs,
        max_live_leases: policy::addon_max_live_leases(&addon.config),
        verified_version,
        private_ca: matches!(
            &addon.config,
            AddonConfig::Influxdb {
                ca_pem: Some(_),
                ..
            } | AddonConfig::InfluxdbV1 {
                ca_pem: Some(_),
                ..
            }
        ),
    }
}

/// An `http(s)://host[:port]` URL. Checked here so that a typo is refused with the
/// flag's name rather than surfacing later as every lease failing to connect.
fn validate_url(url: &str) -> Result<()> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(ControlError::BadRequest(format!(
            "invalid --endpoint-url {url:?}: expected http(s)://host[:port]"
        ))),
    }
}

/// A CA bundle given with the add-on must hold at least one certificate: an empty or
/// garbled file would otherwise silently fall back to the system roots alone.
fn check_ca_pem(pem: Option<&str>) -> Result<()> {
    match pem {
        Some(pem) => crate::backend::parse_ca_pem(pem)
            .map(drop)
            .map_err(|e| ControlError::BadRequest(format!("--ca-file: {e}"))),
        None => Ok(()),
    }
}

/// The add-on's settings, checked and normalized (v2 permissions scoped to the org,
/// v1 privileges in canonical form). Nothing here talks to InfluxDB.
fn validate_addon(addon: AddonConfig) -> Result<AddonConfig> {
    match addon {
        AddonConfig::Influxdb {
            endpoint_url,
            token,
            org_id,
            permissions,
            default_ttl_secs,
            max_ttl_secs,
            max_live_leases,
            ca_pem,
        } => {
            validate_url(&endpoint_url)?;
            check_max_live_leases(max_live_leases)?;
            check_ca_pem(ca_pem.as_deref())?;
            if token.is_empty() {
                return Err(ControlError::BadRequest("the admin token is empty".into()));
            }
            // Refused now rather than sent as something else in a header later.
            if !crate::backend::is_valid_token(&token) {
                return Err(ControlError::BadRequest(
                    crate::backend::INVALID_TOKEN_MESSAGE.into(),
                ));
            }
            // InfluxDB's org ids are 16 hex digits; permissions are scoped to it below.
            if org_id.len() != 16 || !org_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ControlError::BadRequest(format!(
                    "invalid --org-id {org_id:?}: expected 16 hex digits"
                )));
            }
            check_ttls(default_ttl_secs, max_ttl_secs)?;
            // Normalized once here, so every lease sends the same, org-scoped grant.
            let permissions = normalize_permissions(&permissions, &org_id)
                .map_err(|e| ControlError::BadRequest(e.to_string()))?;
            Ok(AddonConfig::Influxdb {
                endpoint_url,
                token,
                org_id,
                permissions,
                default_ttl_secs,
                max_ttl_secs,
                max_live_leases,
                ca_pem,
            })
        }
        AddonConfig::InfluxdbV1 {
            endpoint_url,
            username,
            password,
            privileges,
            default_ttl_secs,
            max_ttl_secs,
            max_live_leases,
            ca_pem,
        } => {
            validate_url(&endpoint_url)?;
            check_max_live_leases(max_live_leases)?;
            check_ca_pem(ca_pem.as_deref())?;
            // An empty user would make every call anonymous: refused, not sent.
            if username.is_empty() {
                return Err(ControlError::BadRequest(
                    "the admin username is empty".into(),
                ));
            }
            check_ttls(default_ttl_secs, max_ttl_secs)?;
            Ok(AddonConfig::InfluxdbV1 {
                endpoint_url,
                username,
                password,
                privileges: validate_privileges(privileges)?,
                default_ttl_secs,
                max_ttl_secs,
                max_live_leases,
                ca_pem,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_channel::Secret;

    fn v1(endpoint_url: &str, username: &str) -> AddonConfig {
        AddonConfig::InfluxdbV1 {
            endpoint_url: endpoint_url.into(),
            username: username.into(),
            password: Secret::new("pw"),
            privileges: vec!["WRITE ON db".into()],
            default_ttl_secs: None,
            max_ttl_secs: None,
            max_live_leases: None,
            ca_pem: None,
        }
    }

    fn v2(token: &str, org_id: &str) -> AddonConfig {
        AddonConfig::Influxdb {
            endpoint_url: "http://influx:8086".into(),
            token: Secret::new(token.to_owned()),
            org_id: org_id.into(),
            permissions: serde_json::json!([{"action": "write", "resource": {"type": "buckets"}}]),
            default_ttl_secs: None,
            max_ttl_secs: None,
            max_live_leases: None,
            ca_pem: None,
        }
    }

    #[test]
    fn addon_settings_are_checked_before_anything_is_written() {
        assert!(validate_addon(v1("http://influx:8086", "admin")).is_ok());
        assert!(validate_addon(v1("ftp://influx", "admin")).is_err());
        assert!(validate_addon(v1("influx:8086", "admin")).is_err());
        assert!(validate_addon(v1("http://influx:8086", "")).is_err());
        assert!(validate_addon(v2("tok", "0123456789abcdef")).is_ok());
        assert!(validate_addon(v2("", "0123456789abcdef")).is_err());
        assert!(validate_addon(v2("to k", "0123456789abcdef")).is_err());
        assert!(validate_addon(v2("tok", "0123")).is_err());
        let ControlError::BadRequest(message) =
            validate_addon(v2("secret\ntoken", "0123456789abcdef")).unwrap_err()
        else {
            panic!("not a bad request")
        };
        assert!(
            !message.contains("secret"),
            "the token is never echoed: {message}"
        );
    }
}

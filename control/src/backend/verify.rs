//! Checking an add-on's settings against InfluxDB before they are installed, as
//! Vault's database engine does with `verify_connection`: the server answers, speaks
//! the add-on's API, and accepts the admin credential for a harmless call that needs
//! admin rights (v1 `SHOW USERS`, v2 listing the org's authorizations). A wrong
//! password or a 1.x server behind a 2.x add-on is refused at `addon configure`,
//! rather than found later as every lease failing.

use super::BackendError;

/// What the check found.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The version InfluxDB reports (`1.6.7`, `v2.7.11`), or `unknown`.
    pub version: String,
}

/// Why the settings were refused. Messages name the endpoint and the cause, never a
/// credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Nothing answered (connection refused, timeout, DNS).
    #[error("cannot reach InfluxDB at {url}: {cause}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// Why.
        cause: String,
    },
    /// The TLS handshake failed (unknown issuer, name mismatch, expired).
    #[error("cannot connect to InfluxDB at {url}: {cause}")]
    Tls {
        /// The endpoint.
        url: String,
        /// Which TLS failure.
        cause: String,
    },
    /// The server does not speak the add-on's API.
    #[error("{url} {found}; {hint}")]
    WrongApi {
        /// The endpoint.
        url: String,
        /// What the server turned out to be.
        found: String,
        /// What to do instead.
        hint: &'static str,
    },
    /// InfluxDB answered 401/403 to the admin check.
    #[error("InfluxDB at {url} refused the admin credential: {cause}")]
    CredentialRefused {
        /// The endpoint.
        url: String,
        /// InfluxDB's answer.
        cause: String,
    },
    /// Any other refusal of the check.
    #[error("InfluxDB at {url} failed the add-on check: {cause}")]
    Failed {
        /// The endpoint.
        url: String,
        /// InfluxDB's answer.
        cause: String,
    },
}

impl VerifyError {
    /// Whether the server could not be reached at all (as opposed to answering no).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Tls { .. })
    }

    /// The refusal for a backend call made during the check.
    pub(super) fn from_backend(url: &str, error: BackendError) -> Self {
        let url = url.to_owned();
        match error {
            BackendError::Unavailable(cause) => Self::Unreachable { url, cause },
            BackendError::Tls(cause) => Self::Tls { url, cause },
            BackendError::CredentialRefused(cause) => Self::CredentialRefused { url, cause },
            BackendError::Refused(cause) | BackendError::Config(cause) => {
                Self::Failed { url, cause }
            }
            BackendError::Random(e) => Self::Failed {
                url,
                cause: e.to_string(),
            },
        }
    }
}

/// Whether `version` is an InfluxDB 1.x version (`1.6.7`, `v1.8.10`, `1.11.8-c1.11.8`).
pub(super) fn is_v1(version: &str) -> bool {
    version
        .strip_prefix('v')
        .unwrap_or(version)
        .starts_with("1.")
}

/// The version InfluxDB reports: `/health`'s `version` (2.x, 1.8+), else `/ping`'s
/// `X-Influxdb-Version` header (every 1.x and 2.x). `None` when neither says; an error
/// only when the server cannot be reached.
pub(super) async fn server_version(
    http: &reqwest::Client,
    endpoint_url: &str,
) -> Result<Option<String>, BackendError> {
    let health = http
        .get(format!("{endpoint_url}/health"))
        .send()
        .await
        .map_err(super::http::transport)?;
    if health.status().is_success() {
        let version = health
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.get("version")?.as_str().map(str::to_owned));
        if version.is_some() {
            return Ok(version);
        }
    }
    ping_version(http, endpoint_url).await
}

/// `/ping`'s `X-Influxdb-Version` header, if it has one.
pub(super) async fn ping_version(
    http: &reqwest::Client,
    endpoint_url: &str,
) -> Result<Option<String>, BackendError> {
    let ping = http
        .get(format!("{endpoint_url}/ping"))
        .send()
        .await
        .map_err(super::http::transport)?;
    Ok(ping
        .headers()
        .get("x-influxdb-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_the_first_generation_are_told_apart() {
        for v1 in ["1.6.7", "v1.8.10", "1.11.8-c1.11.8"] {
            assert!(is_v1(v1), "{v1}");
        }
        for other in ["v2.7.11", "2.7.1", "3.0.0", "", "unknown", "10.1"] {
            assert!(!is_v1(other), "{other}");
        }
    }
}

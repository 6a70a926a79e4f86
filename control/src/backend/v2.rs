//! InfluxDB 2.x / Cloud: a lease is an authorization (`POST /api/v2/authorizations`),
//! revoked by `DELETE /api/v2/authorizations/{id}`. Authorizations have no expiry of
//! their own, so the description carries the lease id and expiry for the sweep.

use leasehold_channel::Secret;
use leasehold_protocol::{Grant, Timestamp};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::{Deserialize, Serialize};

use super::http::Endpoint;
use super::verify::{is_v1, server_version};
use super::{BackendError, Found, Issued, LeaseSpec, Verified, VerifyError, is_lease_id};

const DESCRIPTION_PREFIX: &str = "leasehold lease ";

/// The description of a lease's authorization:
/// `leasehold lease <id> expires <unix seconds> (<RFC 3339>)`.
pub fn lease_description(id: &str, expires_at: Timestamp) -> String {
    format!(
        "{DESCRIPTION_PREFIX}{id} expires {} ({expires_at})",
        expires_at.0
    )
}

/// The lease id and expiry in a description made by [`lease_description`].
pub fn parse_lease_description(description: &str) -> Option<(&str, Timestamp)> {
    let rest = description.strip_prefix(DESCRIPTION_PREFIX)?;
    let mut words = rest.split(' ');
    let id = words.next()?;
    if words.next()? != "expires" {
        return None;
    }
    let expires = words.next()?.parse().ok()?;
    is_lease_id(id).then_some((id, Timestamp(expires)))
}

/// The v2 backend. Its `Debug` shows the endpoint and org; the admin token is a
/// sensitive header value, which prints as `Sensitive`.
#[derive(Debug, Clone)]
pub struct V2Backend {
    endpoint: Endpoint,
    /// `{endpoint_url}/api/v2/authorizations`, parsed once: every lease posts to it.
    authorizations: reqwest::Url,
    admin: HeaderValue,
    org_id: String,
}

/// The body of `POST /api/v2/authorizations`, serialized straight from borrowed parts.
#[derive(Serialize)]
struct CreateAuthorization<'a> {
    #[serde(rename = "orgID")]
    org_id: &'a str,
    description: String,
    permissions: &'a serde_json::Value,
}

#[derive(Deserialize)]
struct Authorization {
    id: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct Authorizations {
    #[serde(default)]
    authorizations: Vec<Authorization>,
}

/// `Token <token>` as a sensitive header value; fails for a token that is not visible
/// ASCII (the error carries nothing of the token). Stricter than HTTP, which lets
/// Latin-1 bytes and spaces through: InfluxDB tokens are printable ASCII words, so
/// anything else is a copy-and-paste accident to report, not to send.
pub(super) fn admin_header(token: &Secret) -> Result<HeaderValue, ()> {
    if !token.expose().bytes().all(|b| b.is_ascii_graphic()) {
        return Err(());
    }
    let text = zeroize::Zeroizing::new(format!("Token {}", token.expose()));
    let mut value = HeaderValue::from_str(&text).map_err(|_| ())?;
    value.set_sensitive(true);
    Ok(value)
}

impl V2Backend {
    /// A backend talking to `endpoint_url` with the admin `token`.
    pub(super) fn new(
        endpoint: Endpoint,
        token: Secret,
        org_id: &str,
    ) -> Result<Self, BackendError> {
        let admin = admin_header(&token)
            .map_err(|_| BackendError::Config(super::INVALID_TOKEN_MESSAGE.into()))?;
        let authorizations = format!("{}/api/v2/authorizations", endpoint.url())
            .parse()
            .map_err(|e| BackendError::Config(format!("invalid endpoint URL: {e}")))?;
        Ok(Self {
            endpoint,
            authorizations,
            admin,
            org_id: org_id.to_owned(),
        })
    }

    /// The InfluxDB base URL.
    pub fn endpoint_url(&self) -> &str {
        self.endpoint.url()
    }

    /// A request as the admin to `url`.
    fn admin_request(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        self.endpoint
            .client()
            .request(method, url)
            .header(AUTHORIZATION, self.admin.clone())
    }

    /// The org's authorizations (the sweep's list, and the add-on check's admin call).
    fn list_request(&self) -> reqwest::RequestBuilder {
        self.admin_request(reqwest::Method::GET, self.authorizations.clone())
            .query(&[("orgID", self.org_id.as_str())])
    }

    pub(super) async fn create(&self, spec: LeaseSpec<'_>) -> Result<Issued, BackendError> {
        let Grant::Permissions(permissions) = spec.grant else {
            return Err(BackendError::Config(
                "a v2 lease needs permissions, not privileges".into(),
            ));
        };
        let body = CreateAuthorization {
            org_id: &self.org_id,
            description: lease_description(spec.id, spec.expires_at),
            permissions,
        };
        let request = self
            .admin_request(reqwest::Method::POST, self.authorizations.clone())
            .json(&body);
        let body = self
            .endpoint
            .exchange(request)
            .await?
            .expect(&[StatusCode::CREATED])?;
        let created: Authorization = serde_json::from_slice(&body)
            .map_err(|e| BackendError::Refused(format!("unexpected authorization answer: {e}")))?;
        // An authorization without its token is useless to the member; refused, and
        // the intent removes it at expiry.
        let token = created.token.filter(|t| !t.is_empty()).ok_or_else(|| {
            BackendError::Refused("the authorization answer carried no token".into())
        })?;
        Ok(Issued {
            credential_id: created.id,
            token: Secret::new(token),
        })
    }

    /// The add-on check: the server is not 1.x, and listing the org's authorizations
    /// (what the sweep does; it needs an all-access or operator token) succeeds.
    pub(super) async fn verify(&self) -> Result<Verified, VerifyError> {
        let url = &self.endpoint_url().to_owned();
        let refused = |e| VerifyError::from_backend(url, e);
        let version = server_version(self.endpoint.client(), url)
            .await
            .map_err(refused)?;
        if let Some(v) = version.as_deref().filter(|v| is_v1(v)) {
            return Err(VerifyError::WrongApi {
                url: url.clone(),
                found: format!("reports InfluxDB {v}, which does not speak the 2.x API"),
                hint: "for InfluxDB 1.x use `addon configure influxdb-v1`",
            });
        }
        let answer = self
            .endpoint
            .exchange(self.list_request())
            .await
            .map_err(refused)?;
        let status = answer.status;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(VerifyError::WrongApi {
                    url: url.clone(),
                    found: format!("answered HTTP {status} to /api/v2/authorizations"),
                    hint: "check --endpoint-url and --org-id (the influxdb add-on needs \
                           InfluxDB 2.x or Cloud)",
                });
            }
            _ => return Err(refused(super::http::classify(status, &answer.body))),
        }
        serde_json::from_slice::<Authorizations>(&answer.body).map_err(|e| {
            VerifyError::WrongApi {
                url: url.clone(),
                found: format!("answered /api/v2/authorizations with something else ({e})"),
                hint: "the influxdb add-on needs InfluxDB 2.x or Cloud",
            }
        })?;
        Ok(Verified {
            version: version.unwrap_or_else(|| "unknown".into()),
        })
    }

    pub(super) async fn revoke(&self, id: &str) -> Result<(), BackendError> {
        let url = format!("{}/{id}", self.authorizations)
            .parse()
            .map_err(|e| BackendError::Config(format!("invalid authorization id: {e}")))?;
        let request = self.admin_request(reqwest::Method::DELETE, url);
        // Already gone counts as done: the credential is what must not outlive the lease.
        self.endpoint
            .exchange(request)
            .await?
            .expect(&[
                StatusCode::NO_CONTENT,
                StatusCode::OK,
                StatusCode::NOT_FOUND,
            ])
            .map(drop)
    }

    /// Whether authorization `id` still exists.
    pub(super) async fn exists(&self, id: &str) -> Result<bool, BackendError> {
        let url = format!("{}/{id}", self.authorizations)
            .parse()
            .map_err(|e| BackendError::Config(format!("invalid authorization id: {e}")))?;
        let request = self.admin_request(reqwest::Method::GET, url);
        let answer = self.endpoint.exchange(request).await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(false),
            _ => answer.expect(&[StatusCode::OK]).map(|_| true),
        }
    }

    /// Every authorization whose description says it expired by `now`.
    /// Authorizations have no expiry of their own; the description is the only place
    /// it can live, and reading it needs no store.
    pub(super) async fn expired(&self, now: Timestamp) -> Result<Vec<Found>, BackendError> {
        Ok(self
            .marked()
            .await?
            .into_iter()
            .filter(|(_, _, expires)| *expires <= now)
            .map(|(credential_id, lease_id, _)| Found {
                lease_id,
                credential_id,
            })
            .collect())
    }

    /// Removes the credential (if any) InfluxDB created for lease `lease_id`, found
    /// by its description: the lease's record never learnt the authorization id.
    pub(super) async fn revoke_lease(&self, lease_id: &str) -> Result<(), BackendError> {
        for (credential_id, id, _) in self.marked().await? {
            if id == lease_id {
                self.revoke(&credential_id).await?;
            }
        }
        Ok(())
    }

    /// The org's authorizations whose description marks them as a lease: (id, lease
    /// id, expiry).
    async fn marked(&self) -> Result<Vec<(String, String, Timestamp)>, BackendError> {
        let body = self
            .endpoint
            .exchange(self.list_request())
            .await?
            .expect(&[StatusCode::OK])?;
        let list: Authorizations = serde_json::from_slice(&body)
            .map_err(|e| BackendError::Refused(format!("unexpected authorization list: {e}")))?;
        Ok(list
            .authorizations
            .into_iter()
            .filter_map(|auth| {
                let (lease_id, expires) = auth
                    .description
                    .as_deref()
                    .and_then(parse_lease_description)?;
                Some((auth.id.clone(), lease_id.to_owned(), expires))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_that_is_not_a_header_value_is_refused_not_replaced() {
        let http = reqwest::Client::new();
        for bad in [
            "abc\ndef",
            "tab\u{1b}esc",
            "caf\u{e9}",
            "nul\0",
            "two words",
        ] {
            let error = V2Backend::new(
                Endpoint::new(http.clone(), "http://127.0.0.1:1"),
                Secret::new(bad.to_owned()),
                "0000000000000001",
            )
            .unwrap_err();
            assert!(matches!(error, BackendError::Config(_)), "{error}");
            assert!(!error.to_string().contains(bad));
        }
        V2Backend::new(
            Endpoint::new(http, "http://127.0.0.1:1"),
            Secret::new("a-token_with=signs==".to_owned()),
            "0000000000000001",
        )
        .unwrap();
    }

    #[test]
    fn descriptions_round_trip_and_strangers_are_ignored() {
        let d = lease_description("0123456789abcdef", Timestamp(1_800_000_000));
        assert_eq!(
            d,
            "leasehold lease 0123456789abcdef expires 1800000000 (2027-01-15T08:00:00Z)"
        );
        assert_eq!(
            parse_lease_description(&d),
            Some(("0123456789abcdef", Timestamp(1_800_000_000)))
        );
        for other in [
            "",
            "telegraf token",
            "leasehold lease x expires 1",
            "leasehold lease 0123456789abcdef until 5",
            "my leasehold lease 0123456789abcdef expires 1",
        ] {
            assert_eq!(parse_lease_description(other), None, "{other}");
        }
    }
}

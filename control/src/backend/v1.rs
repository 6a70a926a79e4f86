//! InfluxDB 1.x: a lease is a dynamic user, created with its grants in one `/query`,
//! dropped at expiry. The user name carries the expiry so the sweep (`SHOW USERS`)
//! needs no store. InfluxQL reports statement errors inside an HTTP 200, so every
//! answer's `results[].error` is read.

use leasehold_channel::Secret;
use leasehold_protocol::{Grant, Timestamp};
use reqwest::StatusCode;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::http::{Endpoint, classify};
use super::verify::{is_v1, ping_version};
use super::{BackendError, Found, Issued, LeaseSpec, Verified, VerifyError, is_lease_id};
use crate::grant::{Privilege, merge, quote_identifier, quote_string};

const USER_PREFIX: &str = "leasehold_";

/// The user name of a lease: `leasehold_<expiry unix seconds>_<lease id>`.
pub fn lease_user(id: &str, expires_at: Timestamp) -> String {
    format!("{USER_PREFIX}{}_{id}", expires_at.0)
}

/// The lease id and expiry in a user name made by [`lease_user`]; `None` for any
/// other user, which the sweep must never touch.
pub fn parse_lease_user(name: &str) -> Option<(&str, Timestamp)> {
    let (expires, id) = name.strip_prefix(USER_PREFIX)?.split_once('_')?;
    let expires = expires.parse().ok()?;
    is_lease_id(id).then_some((id, Timestamp(expires)))
}

/// The v1 backend. Its `Debug` shows the endpoint and user; the password is a
/// [`Secret`], which prints redacted.
#[derive(Debug, Clone)]
pub struct V1Backend {
    endpoint: Endpoint,
    username: String,
    password: Secret,
}

#[derive(Deserialize)]
struct QueryAnswer {
    #[serde(default)]
    results: Vec<StatementResult>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct StatementResult {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    series: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    values: Vec<Vec<serde_json::Value>>,
}

impl V1Backend {
    /// A backend talking to `endpoint_url` as the admin `username`.
    pub(super) fn new(endpoint: Endpoint, username: &str, password: Secret) -> Self {
        Self {
            endpoint,
            username: username.to_owned(),
            password,
        }
    }

    /// The InfluxDB base URL.
    pub fn endpoint_url(&self) -> &str {
        self.endpoint.url()
    }

    /// Runs `q` as the admin. Statement errors become [`BackendError::Refused`], with
    /// `hide` (a password in the statement) scrubbed from any message.
    async fn query(
        &self,
        q: &str,
        hide: Option<&str>,
    ) -> Result<Vec<StatementResult>, BackendError> {
        let scrub = |message: String| match hide {
            Some(secret) if !secret.is_empty() => message.replace(secret, "<redacted>"),
            _ => message,
        };
        let request = self
            .endpoint
            .client()
            .post(format!("{}/query", self.endpoint.url()))
            .basic_auth(&self.username, Some(self.password.expose()))
            .form(&[("q", q)]);
        let answer = self.endpoint.exchange(request).await?;
        let (status, body) = (answer.status, answer.body);
        if status != StatusCode::OK {
            // Not `Answer::expect`: a message may quote the statement, password included.
            return Err(match classify(status, &body) {
                BackendError::Refused(m) => BackendError::Refused(scrub(m)),
                BackendError::Unavailable(m) => BackendError::Unavailable(scrub(m)),
                other => other,
            });
        }
        let answer: QueryAnswer = serde_json::from_slice(&body)
            .map_err(|e| BackendError::Refused(format!("unexpected /query answer: {e}")))?;
        if let Some(error) = answer.error {
            return Err(BackendError::Refused(scrub(error)));
        }
        if let Some(error) = answer.results.iter().find_map(|r| r.error.clone()) {
            return Err(BackendError::Refused(scrub(error)));
        }
        Ok(answer.results)
    }

    pub(super) async fn create(&self, spec: LeaseSpec<'_>) -> Result<Issued, BackendError> {
        let Grant::Privileges(privileges) = spec.grant else {
            return Err(BackendError::Config(
                "a v1 lease needs privileges, not permissions".into(),
            ));
        };
        let privileges = privileges
            .iter()
            .map(|p| Privilege::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BackendError::Config(e.to_string()))?;
        let privileges = merge(&privileges);
        // The user, its password and its grants in one `/query`: InfluxDB runs the
        // statements in order, so a user never exists without its grants for long,
        // and a failure part-way is cleaned up below.
        let user = lease_user(spec.id, spec.expires_at);
        let password = random_password()?;
        let mut q = format!(
            "CREATE USER {} WITH PASSWORD {}",
            quote_identifier(&user),
            quote_string(&password)
        );
        for privilege in &privileges {
            q.push_str("; ");
            q.push_str(&privilege.grant_to(&user));
        }
        let q = Zeroizing::new(q);
        if let Err(error) = self.query(&q, Some(&password)).await {
            // A grant may have failed after the user was created: leave nothing behind.
            let _ = self.revoke(&user).await;
            return Err(error);
        }
        let token = Secret::new(format!("{user}:{}", password.as_str()));
        Ok(Issued {
            credential_id: user,
            token,
        })
    }

    /// The add-on check: `/ping` reports a 1.x version, and `SHOW USERS` (admin only)
    /// succeeds with the admin credential.
    pub(super) async fn verify(&self) -> Result<Verified, VerifyError> {
        let url = &self.endpoint_url().to_owned();
        let refused = |e| VerifyError::from_backend(url, e);
        let version = ping_version(self.endpoint.client(), url)
            .await
            .map_err(refused)?;
        let version = match version {
            Some(v) if is_v1(&v) => v,
            Some(v) => {
                return Err(VerifyError::WrongApi {
                    url: url.clone(),
                    found: format!("reports InfluxDB {v}, not 1.x"),
                    hint: "the influxdb-v1 add-on needs InfluxDB 1.x \
                           (for 2.x use `addon configure influxdb`)",
                });
            }
            None => {
                return Err(VerifyError::WrongApi {
                    url: url.clone(),
                    found: "does not answer /ping as InfluxDB does (no X-Influxdb-Version)".into(),
                    hint: "check --endpoint-url",
                });
            }
        };
        self.query("SHOW USERS", None).await.map_err(refused)?;
        Ok(Verified { version })
    }

    /// Drops a lease user. "User not found" counts as done: a retry after a lost
    /// answer, or an intent whose user was never created, must not loop for ever.
    pub(super) async fn revoke(&self, user: &str) -> Result<(), BackendError> {
        match self
            .query(&format!("DROP USER {}", quote_identifier(user)), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(BackendError::Refused(message)) if message.contains("user not found") => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Whether user `user` exists (`SHOW GRANTS FOR`, one user's answer rather than
    /// every user's).
    pub(super) async fn exists(&self, user: &str) -> Result<bool, BackendError> {
        match self
            .query(&format!("SHOW GRANTS FOR {}", quote_identifier(user)), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(BackendError::Refused(message)) if message.contains("user not found") => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Every lease user whose name says it expired by `now`. The name is the only
    /// record the sweep reads (1.x users have no expiry nor description), which is
    /// why it carries both the expiry and the lease id: the sweep works without the
    /// store, and a user not named by [`lease_user`] never matches.
    pub(super) async fn expired(&self, now: Timestamp) -> Result<Vec<Found>, BackendError> {
        let results = self.query("SHOW USERS", None).await?;
        Ok(results
            .iter()
            .flat_map(|r| &r.series)
            .flat_map(|s| &s.values)
            .filter_map(|row| row.first()?.as_str())
            .filter_map(|user| {
                let (id, expires) = parse_lease_user(user)?;
                (expires <= now).then(|| Found {
                    lease_id: id.to_owned(),
                    credential_id: user.to_owned(),
                })
            })
            .collect())
    }
}

/// 32 random bytes as lowercase base32: 52 characters that need no quoting.
fn random_password() -> Result<Zeroizing<String>, crate::entropy::RandomError> {
    let bytes = crate::entropy::secret32()?;
    Ok(Zeroizing::new(
        data_encoding::BASE32_NOPAD
            .encode(bytes.as_ref())
            .to_ascii_lowercase(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_round_trip_and_strangers_are_ignored() {
        let u = lease_user("0123456789abcdef", Timestamp(1_800_000_000));
        assert_eq!(u, "leasehold_1800000000_0123456789abcdef");
        assert_eq!(
            parse_lease_user(&u),
            Some(("0123456789abcdef", Timestamp(1_800_000_000)))
        );
        for other in [
            "admin",
            "leasehold",
            "leasehold_x_0123456789abcdef",
            "leasehold_1_short",
            "leaseholder_1_0123456789abcdef",
            "leasehold_1_0123456789abcdeg",
        ] {
            assert_eq!(parse_lease_user(other), None, "{other}");
        }
    }

    #[test]
    fn passwords_are_long_and_quote_free() {
        let p = random_password().unwrap();
        assert_eq!(p.len(), 52);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}

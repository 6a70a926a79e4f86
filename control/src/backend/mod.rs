//! The InfluxDB side of a lease: create a credential, revoke it, and find the expired
//! ones the control created (for the sweep). One implementation per InfluxDB generation.

mod http;
mod tls;
mod v1;
mod v2;
mod verify;

use leasehold_channel::Secret;
use leasehold_protocol::{AddonConfig, AuthScheme, Grant, Timestamp};

pub use tls::parse_ca_pem;
pub use v1::{V1Backend, lease_user, parse_lease_user};
pub use v2::{V2Backend, lease_description, parse_lease_description};
pub use verify::{Verified, VerifyError};

/// Whether `id` has the form of a lease id ([`crate::lease::is_id`]).
pub use crate::lease::is_id as is_lease_id;

/// Why an admin token is refused; says nothing of the token itself.
pub const INVALID_TOKEN_MESSAGE: &str = "the admin token is not a valid header value: \
     it holds a space, a control character such as a newline, or non-ASCII text \
     (check INFLUXDB_ADMIN_TOKEN)";

/// Whether `token` can travel in `Authorization: Token <token>`: visible ASCII, no
/// spaces.
/// Checked when the add-on is configured, so a bad token is refused then rather than
/// sent as something else.
pub fn is_valid_token(token: &Secret) -> bool {
    v2::admin_header(token).is_ok()
}

/// What to create.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSpec<'a> {
    /// Lease id, encoded into the credential's name so a sweep can recognise it.
    pub id: &'a str,
    /// Expiry, also encoded, so a sweep works without the store.
    pub expires_at: Timestamp,
    /// What the credential may do.
    pub grant: &'a Grant,
}

/// A created credential.
#[derive(Debug)]
pub struct Issued {
    /// How to find it again to revoke it (authorization id or user name).
    pub credential_id: String,
    /// The secret handed to the member.
    pub token: Secret,
}

/// A credential of ours found in InfluxDB by its marks (v1 user name, v2
/// description), with the lease they name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The lease its marks name.
    pub lease_id: String,
    /// How to revoke it ([`Backend::revoke`]): the user name or authorization id.
    pub credential_id: String,
}

/// Why InfluxDB did not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// InfluxDB could not be reached or answered 5xx/429: worth retrying.
    #[error("InfluxDB unavailable: {0}")]
    Unavailable(String),
    /// InfluxDB refused the request (bad admin credential, invalid grant...).
    #[error("InfluxDB refused the request: {0}")]
    Refused(String),
    /// The add-on's settings do not fit the backend.
    #[error("invalid add-on settings: {0}")]
    Config(String),
    /// InfluxDB answered 401 or 403: the add-on's admin credential is wrong or may not
    /// do this. Retrying does not help until the add-on is configured again.
    #[error("InfluxDB refused the add-on's admin credential: {0}")]
    CredentialRefused(String),
    /// The TLS handshake failed: InfluxDB's certificate is not trusted (the message
    /// names why: unknown issuer, name mismatch, expired).
    #[error("InfluxDB's TLS certificate was refused: {0}")]
    Tls(String),
    /// No random password could be drawn for a v1 credential; nothing was created.
    #[error(transparent)]
    Random(#[from] crate::entropy::RandomError),
}

impl BackendError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// The configured backend.
#[derive(Debug, Clone)]
pub enum Backend {
    /// InfluxDB 2.x / Cloud.
    V2(V2Backend),
    /// InfluxDB 1.x.
    V1(V1Backend),
}

impl Backend {
    /// The backend the add-on settings describe.
    pub fn from_addon(addon: &AddonConfig) -> Result<Self, BackendError> {
        let endpoint = |url: &str| http::Endpoint::for_addon(addon, url);
        Ok(match addon {
            AddonConfig::Influxdb {
                endpoint_url,
                token,
                org_id,
                ..
            } => Self::V2(V2Backend::new(
                endpoint(endpoint_url)?,
                token.clone(),
                org_id,
            )?),
            AddonConfig::InfluxdbV1 {
                endpoint_url,
                username,
                password,
                ..
            } => Self::V1(V1Backend::new(
                endpoint(endpoint_url)?,
                username,
                password.clone(),
            )),
        })
    }

    /// Creates the credential for a lease.
    pub async fn create(&self, spec: LeaseSpec<'_>) -> Result<Issued, BackendError> {
        match self {
            Self::V2(b) => b.create(spec).await,
            Self::V1(b) => b.create(spec).await,
        }
    }

    /// Removes a credential. Already gone counts as done.
    pub async fn revoke(&self, credential_id: &str) -> Result<(), BackendError> {
        match self {
            Self::V2(b) => b.revoke(credential_id).await,
            Self::V1(b) => b.revoke(credential_id).await,
        }
    }

    /// The name lease `lease_id`'s credential carries in InfluxDB: the v1 user name,
    /// or the v2 authorization's description. Written into the lease's intent.
    pub fn credential_name(&self, lease_id: &str, expires_at: Timestamp) -> String {
        match self {
            Self::V2(_) => lease_description(lease_id, expires_at),
            Self::V1(_) => lease_user(lease_id, expires_at),
        }
    }

    /// Whether a credential still exists: asked before removing one that another
    /// attempt (a replica since killed, an answer lost) may have removed already, so
    /// that InfluxDB sees it removed once.
    pub async fn exists(&self, credential_id: &str) -> Result<bool, BackendError> {
        match self {
            Self::V2(b) => b.exists(credential_id).await,
            Self::V1(b) => b.exists(credential_id).await,
        }
    }

    /// Removes the credential of a lease whose creation was never recorded, found by
    /// the name the lease's id and expiry give it. None found counts as done; nothing
    /// is removed that is not there (InfluxDB may never have created it).
    pub async fn revoke_unrecorded(
        &self,
        lease_id: &str,
        expires_at: Timestamp,
    ) -> Result<(), BackendError> {
        match self {
            Self::V2(b) => b.revoke_lease(lease_id).await,
            Self::V1(b) => {
                let user = lease_user(lease_id, expires_at);
                if b.exists(&user).await? {
                    b.revoke(&user).await?;
                }
                Ok(())
            }
        }
    }

    /// Every credential this control created (by its marks) that expired at or
    /// before `now`: what the sweep considers ([`crate::housekeeping`] removes those
    /// the store does not account for).
    pub async fn expired(&self, now: Timestamp) -> Result<Vec<Found>, BackendError> {
        match self {
            Self::V2(b) => b.expired(now).await,
            Self::V1(b) => b.expired(now).await,
        }
    }

    /// Checks the settings against the server before they are installed: it answers,
    /// speaks this backend's API, and accepts the admin credential for a harmless call
    /// that needs admin rights.
    pub async fn verify(&self) -> Result<Verified, VerifyError> {
        match self {
            Self::V2(b) => b.verify().await,
            Self::V1(b) => b.verify().await,
        }
    }

    /// How the proxy presents this backend's tokens.
    pub fn auth_scheme(&self) -> AuthScheme {
        match self {
            Self::V2(_) => AuthScheme::Token,
            Self::V1(_) => AuthScheme::Basic,
        }
    }

    /// The InfluxDB base URL.
    pub fn endpoint_url(&self) -> &str {
        match self {
            Self::V2(b) => b.endpoint_url(),
            Self::V1(b) => b.endpoint_url(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    /// A redirect must not take the admin credential anywhere else: the answer is an
    /// error and the other address never hears from the control.
    #[tokio::test]
    async fn the_admin_credential_never_follows_a_redirect() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpListener;

        let elsewhere = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let redirector = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let answer = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{}/api/v2/authorizations\r\nContent-Length: 0\r\n\r\n",
            elsewhere.local_addr().unwrap()
        );
        let endpoint_url = format!("http://{}", redirector.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut stream, _) = redirector.accept().await.unwrap();
            let mut buf = vec![0; 64 * 1024];
            let _ = stream.read(&mut buf).await.unwrap();
            stream.write_all(answer.as_bytes()).await.unwrap();
        });
        let backend = Backend::from_addon(&AddonConfig::Influxdb {
            endpoint_url,
            token: Secret::new("admin-token".to_owned()),
            org_id: "0000000000000001".to_owned(),
            permissions: serde_json::json!([]),
            default_ttl_secs: None,
            max_ttl_secs: None,
            max_live_leases: None,
            ca_pem: None,
        })
        .unwrap();
        let grant = Grant::Permissions(serde_json::json!([
            {"action": "write", "resource": {"type": "buckets"}}
        ]));
        let error = backend
            .create(LeaseSpec {
                id: &crate::entropy::new_lease_id(SystemTime::now()).unwrap(),
                expires_at: Timestamp(4_000_000_000),
                grant: &grant,
            })
            .await
            .unwrap_err();
        assert!(matches!(error, BackendError::Refused(_)), "{error}");
        assert!(error.to_string().contains("307"), "{error}");
        let contacted = tokio::time::timeout(Duration::from_millis(300), elsewhere.accept()).await;
        assert!(contacted.is_err(), "the redirect target was contacted");
    }
}

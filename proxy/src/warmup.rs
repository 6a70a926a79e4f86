//! Warming a new InfluxDB 1.x credential up before it is installed.
//!
//! **Why.** InfluxDB 1.x checks a user's password with bcrypt (about 90 ms of CPU) on
//! every request until the user is in its authentication cache, and the v1 add-on
//! creates a new user for every lease. Right after each swap, every connection's first
//! request with the new credential would pay bcrypt at once: N × 90 ms ÷ cores, about a
//! second for a busy sidecar (`BENCHMARKS.md`, "Real InfluxDB 1.x"). So the refresher
//! sends one request with the new credential *before* installing it, while the old one
//! still serves traffic, and the application's requests find the user already cached.
//! `Token` credentials (InfluxDB 2.x) need none: tokens are looked up, not hashed.
//!
//! **Which request.** `GET /query?q=SHOW DATABASES`: authenticated (unlike `/ping`),
//! allowed with `GET` (it only reads), cheap, and allowed to any user whatever its grants
//! — a non-admin user sees only the databases it may read or write. Checked against
//! influxd 1.6.7: a user with only `WRITE ON "telemetry"` gets `200` and `telemetry`, a
//! user without any grant `200` and an empty list, and the first request takes ~85 ms
//! against ~1 ms afterwards; writes after the warm-up are as fast as cached ones.
//!
//! **Never in the way.** The warm-up is bounded by [`WARMUP_TIMEOUT`] (and by the connect
//! timeout inside it), and never outlasts the credential it replaces (the refresher
//! gives it what is left of that one's life, less [`WARMUP_MARGIN`]): when a renewal
//! came late, the application's requests pay the new user's first check rather than
//! find no valid credential at all, and whatever happens — success, `401`, an error, the timeout —
//! the credential is installed afterwards: a lease is never dropped because its warm-up
//! failed. If the upstream really rejects the new credential, the
//! request path's 401 handling deals with it as it would have without a warm-up.

use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::uri::PathAndQuery;
use http::{Request, StatusCode};
use http_body_util::Empty;
use leasehold_protocol::AuthScheme;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::connector::{self, WarmupClient};
use crate::credential::Credential;

/// Longest a warm-up may hold back a new credential.
pub const WARMUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long before the credential it replaces ends a warm-up gives up: requests in
/// flight then still meet a valid credential.
pub const WARMUP_MARGIN: Duration = Duration::from_millis(250);

/// The request target of the warm-up: `SHOW DATABASES`, percent-encoded.
const WARMUP_TARGET: &str = "/query?q=SHOW%20DATABASES";

/// How a warm-up ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered (any status: the credential is installed either way).
    Answered(StatusCode),
    /// No answer: the connection or the request failed.
    Failed(String),
    /// No answer within the time allowed.
    TimedOut,
}

/// Sends warm-up requests for new credentials.
pub struct Warmup {
    client: WarmupClient,
    timeout: Duration,
}

impl Warmup {
    /// Warm-ups through `client`, each bounded by [`WARMUP_TIMEOUT`].
    pub fn new(client: WarmupClient) -> Self {
        Self {
            client,
            timeout: WARMUP_TIMEOUT,
        }
    }

    /// Warms `credential` up if its scheme needs it (see the module docs), for at most
    /// `budget` (or [`WARMUP_TIMEOUT`] if shorter); returns how it went, or `None` when
    /// no warm-up was needed. Logs the outcome.
    pub async fn run(&self, credential: &Credential, budget: Duration) -> Option<Outcome> {
        let request = request(credential)?;
        let started = Instant::now();
        let timeout = self.timeout.min(budget);
        let outcome = match tokio::time::timeout(timeout, self.client.request(request)).await {
            // The authentication happened before the response head; the body (a short
            // JSON list) is not needed, and dropping it closes the unpooled connection.
            Ok(Ok(response)) => Outcome::Answered(response.status()),
            Ok(Err(error)) => Outcome::Failed(connector::describe_error(&error).1),
            Err(_) => Outcome::TimedOut,
        };
        let elapsed = started.elapsed();
        let lease_id = credential.lease_id();
        match &outcome {
            Outcome::Answered(status) if status.is_success() => {
                debug!(lease.id = lease_id, elapsed_secs = elapsed.as_secs_f64(), %status, "new credential warmed up");
            }
            Outcome::Answered(status) => {
                info!(lease.id = lease_id, elapsed_secs = elapsed.as_secs_f64(), %status, "warm-up of the new credential was refused; installing it anyway");
            }
            Outcome::Failed(error) => {
                info!(lease.id = lease_id, elapsed_secs = elapsed.as_secs_f64(), %error, "warm-up of the new credential failed; installing it anyway");
            }
            Outcome::TimedOut => {
                info!(
                    lease.id = lease_id,
                    elapsed_secs = elapsed.as_secs_f64(),
                    "warm-up of the new credential timed out; installing it anyway"
                );
            }
        }
        Some(outcome)
    }
}

#[cfg(test)]
impl Warmup {
    /// Warm-ups bounded by `timeout`, trusting no TLS root (tests use plain HTTP).
    pub fn for_tests(timeout: Duration) -> Self {
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let connector = connector::upstream_connector(tls, Duration::from_secs(2));
        Self {
            client: connector::warmup_client(connector),
            timeout,
        }
    }
}

/// The warm-up request for `credential`, or `None` when its scheme needs none.
fn request(credential: &Credential) -> Option<Request<Empty<Bytes>>> {
    match credential.scheme() {
        AuthScheme::Token => None,
        AuthScheme::Basic => {
            let uri = credential
                .upstream()
                .target_uri(Some(PathAndQuery::from_static(WARMUP_TARGET)))
                .ok()?;
            let mut request = Request::new(Empty::new());
            *request.uri_mut() = uri;
            request
                .headers_mut()
                .insert(AUTHORIZATION, credential.header().clone());
            Some(request)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use leasehold_channel::{Identity, Secret};
    use leasehold_protocol::{LeaseRecord, LeaseStatus, Timestamp};
    use tokio::net::TcpListener;

    use super::*;

    fn credential(scheme: AuthScheme, endpoint: &str) -> Credential {
        let created = Timestamp::now();
        let lease = LeaseRecord {
            id: "00000000000000ab".into(),
            issued_for: Identity::from_seed(&[4; 32]).public(),
            created_at: created,
            expires_at: created.plus_secs(60),
            token: Some(Secret::new("lease_1:pw")),
            status: LeaseStatus::Active,
            auth_scheme: scheme,
            endpoint_url: endpoint.into(),
            ttl_ms: None,
            membership: None,
        };
        Credential::from_lease(
            &lease,
            None,
            Instant::now(),
            Instant::now(),
            SystemTime::now(),
            1,
        )
        .unwrap()
    }

    fn warmup(timeout: Duration) -> Warmup {
        Warmup::for_tests(timeout)
    }

    #[test]
    fn only_basic_credentials_are_warmed_up_with_show_databases() {
        assert!(request(&credential(AuthScheme::Token, "http://h:8086")).is_none());
        let request = request(&credential(AuthScheme::Basic, "http://h:8086/base")).unwrap();
        assert_eq!(request.method(), http::Method::GET);
        assert_eq!(
            request.uri().to_string(),
            "http://h:8086/base/query?q=SHOW%20DATABASES"
        );
        // base64("lease_1:pw"), and still marked sensitive.
        assert_eq!(request.headers()[AUTHORIZATION], "Basic bGVhc2VfMTpwdw==");
        assert!(request.headers()[AUTHORIZATION].is_sensitive());
    }

    #[tokio::test]
    async fn an_upstream_that_never_answers_times_out() {
        // Accepts TCP (the kernel does it) but never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", silent.local_addr().unwrap());
        // The outer timeout only turns a hang into a failure; it is no claim of speed.
        let outcome = tokio::time::timeout(
            Duration::from_secs(60),
            warmup(Duration::from_millis(200))
                .run(&credential(AuthScheme::Basic, &endpoint), WARMUP_TIMEOUT),
        )
        .await
        .expect("the warm-up's own timeout ended it");
        assert_eq!(outcome, Some(Outcome::TimedOut));
    }

    #[tokio::test]
    async fn an_unreachable_upstream_fails_fast() {
        // Bound but not listening: refused, and no other process can take the port.
        let reserved = tokio::net::TcpSocket::new_v4().unwrap();
        reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let endpoint = format!("http://{}", reserved.local_addr().unwrap());
        let outcome = warmup(WARMUP_TIMEOUT)
            .run(&credential(AuthScheme::Basic, &endpoint), WARMUP_TIMEOUT)
            .await;
        let Some(Outcome::Failed(message)) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(message.contains("cannot connect"), "{message}");
        assert!(!message.contains("bGVhc2"), "{message}");
        // Token credentials need no warm-up and send nothing.
        let outcome = warmup(WARMUP_TIMEOUT)
            .run(&credential(AuthScheme::Token, &endpoint), WARMUP_TIMEOUT)
            .await;
        assert_eq!(outcome, None);
    }
}

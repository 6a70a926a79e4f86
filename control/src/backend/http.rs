//! What both InfluxDB generations share on the wire: the admin's HTTP client, the base
//! URL, and one exchange (send, read the whole answer, classify a status the caller did
//! not expect). The v1 and v2 backends differ only in what they send and how they read
//! a success.

use std::time::Duration;

use leasehold_protocol::AddonConfig;
use reqwest::StatusCode;

use super::{BackendError, tls};

/// An InfluxDB base URL and the client that talks to it as the add-on's admin.
#[derive(Clone)]
pub struct Endpoint {
    http: reqwest::Client,
    url: String,
}

/// The URL only: the client holds nothing worth showing, and the credentials live in
/// the backends (redacted there).
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// An answer read whole: InfluxDB's answers to the admin calls are small.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body, if the status is one of `ok`; otherwise the classified error.
    pub fn expect(self, ok: &[StatusCode]) -> Result<Vec<u8>, BackendError> {
        if ok.contains(&self.status) {
            Ok(self.body)
        } else {
            Err(classify(self.status, &self.body))
        }
    }
}

impl Endpoint {
    /// The endpoint at `url` with the client the add-on's settings call for: short
    /// timeouts (a revocation retries rather than hangs), the add-on's own CA besides
    /// the system roots, and no redirects.
    pub fn for_addon(addon: &AddonConfig, url: &str) -> Result<Self, BackendError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            // The admin credential goes to the configured URL and nowhere else; an
            // answer that points elsewhere is an error, not a request to repeat.
            .redirect(reqwest::redirect::Policy::none());
        let (AddonConfig::Influxdb { ca_pem, .. } | AddonConfig::InfluxdbV1 { ca_pem, .. }) = addon;
        if let Some(pem) = ca_pem {
            // Besides the system roots, not instead of them.
            for cert in tls::parse_ca_pem(pem).map_err(BackendError::Config)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| BackendError::Config(e.to_string()))?;
        Ok(Self::new(http, url))
    }

    /// The endpoint at `url` (a trailing `/` dropped) with client `http`.
    pub fn new(http: reqwest::Client, url: &str) -> Self {
        Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
        }
    }

    /// The base URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The client, to build requests with.
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends `request` and reads its answer whole; a failure to get one is
    /// [`BackendError::Unavailable`] (or [`BackendError::Tls`]).
    pub async fn exchange(&self, request: reqwest::RequestBuilder) -> Result<Answer, BackendError> {
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        Ok(Answer {
            status,
            body: body.to_vec(),
        })
    }
}

/// What an unexpected status means: 5xx and 429 are worth retrying, 401/403 name the
/// admin credential (retrying cannot help until it is fixed), anything else is a
/// refusal. The message is InfluxDB's own, cut short.
pub fn classify(status: StatusCode, body: &[u8]) -> BackendError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("error"))
                .and_then(|m| m.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        BackendError::Unavailable(format!("HTTP {status}: {message}"))
    } else if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        BackendError::CredentialRefused(format!("HTTP {status}: {message}"))
    } else {
        BackendError::Refused(format!("HTTP {status}: {message}"))
    }
}

/// A request that got no answer.
pub fn transport(error: reqwest::Error) -> BackendError {
    if let Some(tls) = tls::tls_failure(&error) {
        return BackendError::Tls(tls);
    }
    // reqwest errors carry the URL, never headers or bodies: safe to show. The top
    // line alone ("error sending request") hides the cause, so the chain is joined.
    BackendError::Unavailable(error_chain(&error.without_url()))
}

/// `error` and its causes, joined with `: `.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        next = cause.source();
    }
    text
}

//! The proxy's own answers, shaped like InfluxDB's errors so clients handle them the same
//! way: `{"code":"unavailable","message":"..."}` with `Content-Type: application/json`.
//!
//! Messages never contain credentials: they are built from fixed text, upstream URLs
//! (validated to have no user-info) and transport errors (which never see headers).

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, CONTENT_TYPE, RETRY_AFTER, VARY,
};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use serde::Serialize;

/// What the proxy answers with: an upstream body streamed through, or its own.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// InfluxDB's error codes used by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The service cannot answer now; retry.
    Unavailable,
    /// Something went wrong inside.
    Internal,
    /// The request cannot be forwarded.
    Invalid,
    /// The request is refused (a web page, an unknown `Host`).
    Forbidden,
}

impl ErrorCode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Internal => "internal error",
            Self::Invalid => "invalid",
            Self::Forbidden => "forbidden",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

/// An InfluxDB-style JSON error response.
pub fn error(status: StatusCode, code: ErrorCode, message: &str) -> Response<ProxyBody> {
    let body = error_body(code, message);
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// The JSON body of an InfluxDB-style error (`Content-Type: application/json;
/// charset=utf-8`).
pub fn error_body(code: ErrorCode, message: &str) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody {
        code: code.as_str(),
        message,
    })
    .expect("error bodies serialize")
}

/// `503` while the proxy holds no valid credential.
pub fn no_credential(retry_after_secs: u64) -> Response<ProxyBody> {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        "no valid credential yet: the proxy is waiting for a lease from the control",
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

/// `403` for a request from a web page or to an unknown `Host` (see `browser.rs`).
pub fn forbidden(message: &str) -> Response<ProxyBody> {
    error(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
}

/// The answer to a CORS preflight from an allow-listed `origin`: the methods InfluxDB's
/// API uses, and the request headers the page asked for.
pub fn preflight(
    origin: HeaderValue,
    request_headers: Option<HeaderValue>,
    private_network: bool,
) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, DELETE, OPTIONS"),
    );
    if let Some(requested) = request_headers {
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, requested);
    }
    if private_network {
        headers.insert(
            "access-control-allow-private-network",
            HeaderValue::from_static("true"),
        );
    }
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    headers.insert(VARY, HeaderValue::from_static("Origin"));
    response
}

/// `503` once the control has refused this identity as no longer a member: waiting
/// will not help, an operator must re-enroll it.
pub fn not_a_member(retry_after_secs: u64) -> Response<ProxyBody> {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        "this identity is no longer a member of the control: re-enroll it (see the proxy's log)",
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

/// `502` when the upstream could not be reached or failed mid-request.
pub fn bad_gateway(code: ErrorCode, message: &str) -> Response<ProxyBody> {
    error(StatusCode::BAD_GATEWAY, code, message)
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn body_of(response: Response<ProxyBody>) -> serde_json::Value {
        let Either::Right(full) = response.into_body() else {
            panic!("own body expected")
        };
        serde_json::from_slice(&full.collect().await.unwrap().to_bytes()).unwrap()
    }

    #[tokio::test]
    async fn no_credential_is_503_with_retry_after_and_json() {
        let response = no_credential(7);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "7");
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/json; charset=utf-8"
        );
        let body = body_of(response).await;
        assert_eq!(body["code"], "unavailable");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("no valid credential")
        );
    }

    #[tokio::test]
    async fn messages_are_json_escaped() {
        let body = body_of(bad_gateway(ErrorCode::Internal, "a \"quoted\"\nthing")).await;
        assert_eq!(body["code"], "internal error");
        assert_eq!(body["message"], "a \"quoted\"\nthing");
    }
}

//! The JSON the v2 API speaks: the `Error` body (`{"code","message"}` with the contract's
//! code strings), and the request bodies of `POST` / `PATCH /api/v2/authorizations`
//! (`AuthorizationPostRequest`, `AuthorizationUpdateRequest`). Fields are optional here
//! so that validation (in `store.rs`) can answer with influxd's own messages.

use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// An error answer: HTTP status plus the contract's `Error` schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    /// One of the `Error.code` enum values of the contract.
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `invalid`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    /// 401 `unauthorized access`, the contract's `AuthorizationError` example verbatim.
    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unauthorized access",
        )
    }

    /// 403 `forbidden`.
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not found", message)
    }

    /// 404 for an authorization id that does not exist (the contract's example).
    pub(crate) fn authorization_not_found() -> Self {
        Self::not_found("authorization not found")
    }

    /// 405 `method not allowed`.
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
            "method not allowed",
        )
    }

    /// 413 `request too large`.
    pub(crate) fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "request too large", message)
    }

    /// 503 `unavailable` (failure injection).
    pub(crate) fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "service unavailable (injected failure)",
        )
    }

    /// The `Error` body.
    pub(crate) fn body(&self) -> Value {
        json!({ "code": self.code, "message": self.message })
    }
}

/// `AuthorizationPostRequest`. Unknown fields are ignored, as Go's decoder does.
#[derive(Debug, Deserialize)]
pub(crate) struct PostAuthorization {
    #[serde(rename = "orgID")]
    pub org_id: Option<String>,
    #[serde(rename = "userID")]
    pub user_id: Option<String>,
    pub description: Option<String>,
    pub status: Option<String>,
    pub permissions: Option<Vec<PermissionIn>>,
}

/// `Permission` as sent by a client.
#[derive(Debug, Deserialize)]
pub(crate) struct PermissionIn {
    pub action: Option<String>,
    pub resource: Option<ResourceIn>,
}

/// `Resource` as sent by a client.
#[derive(Debug, Deserialize)]
pub(crate) struct ResourceIn {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub id: Option<String>,
    #[serde(rename = "orgID")]
    pub org_id: Option<String>,
    pub name: Option<String>,
}

/// `AuthorizationUpdateRequest` (PATCH).
#[derive(Debug, Deserialize)]
pub(crate) struct PatchAuthorization {
    pub status: Option<String>,
    pub description: Option<String>,
}

/// Parses a JSON request body; any failure is influxd's 400 `invalid json structure`.
pub(crate) fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::invalid("invalid json structure"))
}

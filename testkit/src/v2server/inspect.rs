//! What tests can look at after the fact: copies of the authorizations and the
//! line-protocol lines the server accepted.

use std::fmt;

use serde_json::Value;

/// A copy of one authorization, token included (tests need it to write with).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorizationSnapshot {
    /// 16 lowercase hex digits.
    pub id: String,
    pub description: String,
    /// The real token (the HTTP API shows it only in the 201 answer).
    pub token: String,
    /// `active` or `inactive`.
    pub status: String,
    pub org_id: String,
    /// The `permissions` array exactly as the API renders it.
    pub permissions: Value,
    /// RFC 3339 UTC.
    pub created_at: String,
}

impl fmt::Debug for AuthorizationSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationSnapshot")
            .field("id", &self.id)
            .field("description", &self.description)
            .field("token", &"<redacted>")
            .field("status", &self.status)
            .field("org_id", &self.org_id)
            .field("permissions", &self.permissions)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// One accepted line of line protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenPoint {
    /// The `bucket` query parameter of `/api/v2/write`; for v1 `/write`, `db`, or
    /// `db/rp` when `rp` is given and is not `autogen` (the 2.x DBRP naming).
    pub bucket: String,
    /// Id of the authorization whose token made the write.
    pub authorization_id: String,
    /// The `precision` query parameter, if any.
    pub precision: Option<String>,
    /// The line, trimmed, after gzip decoding.
    pub line: String,
}

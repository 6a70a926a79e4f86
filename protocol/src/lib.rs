//! The wire protocol above the secure channel: the typed, versioned requests, replies
//! and records the control and its clients share, the InfluxDB add-on's settings, and
//! the typed [`client`]. The channel (`leasehold-channel`) carries these messages and
//! knows nothing of them.
//!
//! Every message is JSON inside one channel message: `{"v":1,"id":N,"req":{...}}` from
//! the client, `{"v":1,"id":N,"ok":{...}}` or `{"v":1,"id":N,"err":{...}}` back. `v`
//! lets a future control refuse (or translate) an old client explicitly instead of
//! misreading it. Errors that reach the peer are coarse on purpose: a code and a short,
//! fixed message; the details stay in the control's log.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use leasehold_channel::{PublicIdentity, Secret};

pub use leasehold_channel::time::Timestamp;

pub mod client;
pub mod influxdb;

/// The request/response protocol version.
pub const PROTOCOL_VERSION: u16 = 1;

/// The most lease records one [`Reply::LeasePage`] carries. Pages are sized by count: a
/// record is about 300 bytes of JSON, so a full page stays far below the size of a
/// message the control accepts from or sends to a member.
pub const LEASE_PAGE_MAX: u32 = 100;

/// A request, as sent.
#[derive(Debug, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// Protocol version.
    pub v: u16,
    /// Correlates the response.
    pub id: u64,
    /// The request.
    pub req: Request,
}

/// A response, as sent.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    /// Protocol version.
    pub v: u16,
    /// The id of the request this answers.
    pub id: u64,
    /// The outcome.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Success or a coarse error.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// One outcome exists per request and lives only until it is serialized; boxing the
// reply would cost an allocation to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// The request succeeded.
    Ok(Reply),
    /// The request failed.
    Err(WireError),
}

/// What a client can ask the control.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Liveness check; answers with the control's identity.
    Ping,
    /// Redeem an enrollment ticket for the calling identity.
    Enroll {
        /// The ticket secret (base32, as in the ticket line).
        secret: Secret,
        /// The caller's local name for itself, recorded for humans.
        name: String,
    },
    /// Issue a lease to the caller.
    LeaseCreate {
        /// Requested lifetime; the policy default when absent.
        ttl_secs: Option<u64>,
    },
    /// The caller's leases (all leases for an admin).
    LeaseList,
    /// One lease.
    LeaseShow {
        /// Lease id.
        id: String,
    },
    /// Revoke a lease now.
    LeaseRevoke {
        /// Lease id.
        id: String,
    },
    /// Configure the InfluxDB add-on (admin).
    AddonConfigure {
        /// The settings.
        addon: AddonConfig,
        /// Install the settings without first checking them against InfluxDB
        /// (reachable, admin credential accepted, the add-on's API spoken).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        skip_verify: bool,
    },
    /// Create or replace a per-attribute policy (admin).
    PolicySet {
        /// The policy.
        policy: PolicySpec,
    },
    /// All policies (admin).
    PolicyList,
    /// Delete a policy (admin).
    PolicyDelete {
        /// Policy id.
        id: String,
    },
    /// One page of leases (the caller's; any member's for an admin), oldest first.
    LeasePage {
        /// Only leases in this state.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<LeaseStatus>,
        /// Only this member's leases (an identity identifier); an admin may name anyone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        member: Option<String>,
        /// The cursor: the `next` of the previous page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        /// At most this many records (capped at [`LEASE_PAGE_MAX`]).
        limit: u32,
    },
    /// Create an enrollment ticket (admin).
    TicketCreate {
        /// Attributes the enrolled member will carry.
        attributes: BTreeMap<String, String>,
        /// How long the ticket can be redeemed.
        expires_in_secs: u64,
        /// How many identities can redeem it.
        usage_count: u32,
    },
    /// All members (admin).
    MemberList,
    /// One member (admin).
    MemberShow {
        /// Member id (the identity's identifier).
        id: String,
    },
    /// Remove a member and revoke its live leases (admin). The identity is also denied:
    /// no ticket enrolls it again until [`Request::MemberAllow`].
    MemberDelete {
        /// Member id.
        id: String,
    },
    /// Lift the denial of a deleted member's identity (admin): a ticket can enroll it again.
    MemberAllow {
        /// Member id (the identity's identifier).
        id: String,
    },
    /// Enrollment tickets that can still be redeemed, without their secrets (admin).
    TicketList,
    /// Revoke an enrollment ticket before it expires or is used up (admin).
    TicketRevoke {
        /// Ticket id, as `ticket list` shows it.
        id: String,
    },
}

/// Successful answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to `Ping`.
    Pong {
        /// The control's identity.
        control: PublicIdentity,
    },
    /// A member record (enroll, show).
    Member(MemberRecord),
    /// Several members.
    Members {
        /// The members.
        members: Vec<MemberRecord>,
        /// Identities removed with `member delete` and refused re-enrollment.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        denied: Vec<DeniedIdentity>,
    },
    /// A lease record.
    Lease(LeaseRecord),
    /// Several leases.
    Leases {
        /// The leases.
        leases: Vec<LeaseRecord>,
    },
    /// The add-on as configured, without its secret.
    Addon(AddonSummary),
    /// A policy.
    Policy(PolicyRecord),
    /// Several policies.
    Policies {
        /// The policies.
        policies: Vec<PolicyRecord>,
    },
    /// A new ticket.
    Ticket(TicketRecord),
    /// One page of leases.
    LeasePage {
        /// The leases, oldest first.
        leases: Vec<LeaseRecord>,
        /// The cursor for the next page; absent on the last one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// The request was carried out and has nothing to report.
    Done,
    /// Enrollment tickets (no secrets).
    Tickets {
        /// The tickets.
        tickets: Vec<TicketInfo>,
    },
}

/// Coarse error categories, safe to show a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was malformed or invalid.
    BadRequest,
    /// The caller is not an enrolled member (or the ticket is not valid).
    Unauthorized,
    /// The caller is a member but may not do this.
    Forbidden,
    /// No such object (or not visible to the caller).
    NotFound,
    /// The object exists already or the request conflicts with state.
    Conflict,
    /// A dependency (InfluxDB) is not reachable; retry later.
    Unavailable,
    /// The protocol version is not supported.
    UnsupportedVersion,
    /// Something failed inside the control.
    Internal,
}

/// An error as a peer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code:?})")]
pub struct WireError {
    /// Category.
    pub code: ErrorCode,
    /// A short human message without internal detail.
    pub message: String,
}

impl WireError {
    /// An error with a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A lease's state as users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseStatus {
    /// Valid until `expires_at`.
    Active,
    /// Revoked before its expiry.
    Revoked,
    /// Past its expiry.
    Expired,
}

/// How the proxy must present a lease's token to InfluxDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthScheme {
    /// `Authorization: Token <token>` (InfluxDB 2.x / Cloud).
    Token,
    /// `Authorization: Basic base64(<token>)`, the token being `user:password`
    /// (InfluxDB 1.x).
    Basic,
}

/// A lease as shown to users: the JSON record of `lease create/show/list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Lease id (16 hex digits).
    pub id: String,
    /// The member it was issued to (identifier).
    pub issued_for: PublicIdentity,
    /// Issue time.
    pub created_at: Timestamp,
    /// Expiry time; the credential is revoked then.
    pub expires_at: Timestamp,
    /// The credential: only in the answer to `lease create`; the control keeps no copy.
    pub token: Option<Secret>,
    /// State.
    pub status: LeaseStatus,
    /// How to present the token.
    pub auth_scheme: AuthScheme,
    /// The InfluxDB the credential is valid for.
    pub endpoint_url: String,
    /// The lease's lifetime in milliseconds, counted from when the control received the
    /// request: only in the answer to `lease create`. A proxy counts it on its own
    /// monotonic clock from when it sent the request (earlier), so its deadline never
    /// outlives the lease and no wall clock, right or wrong, comes into it
    /// (`expires_at` − `created_at` is rounded and assumes both clocks agree). Absent
    /// from older controls; older clients ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// The member's membership credential (`membership.rs`), valid until `expires_at`:
    /// what an outlet checks. Only in the answer to `lease create`; absent from older
    /// controls; older clients ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<String>,
}

/// A member as shown to admins.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The member's identity identifier.
    pub id: PublicIdentity,
    /// The name the member enrolled under (informational).
    pub name: String,
    /// Attributes from its ticket; `role=admin` makes it an admin.
    pub attributes: BTreeMap<String, String>,
    /// Enrollment time.
    pub enrolled_at: Timestamp,
}

impl MemberRecord {
    /// Whether this member may run admin commands.
    pub fn is_admin(&self) -> bool {
        self.attributes.get("role").map(String::as_str) == Some("admin")
    }
}

/// Settings for the InfluxDB add-on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "kebab-case")]
pub enum AddonConfig {
    /// InfluxDB 2.x / Cloud: leases are authorizations.
    Influxdb {
        /// Base URL of InfluxDB.
        endpoint_url: String,
        /// The admin (all-access or operator) token.
        token: Secret,
        /// The organization leases are created in.
        org_id: String,
        /// Default permissions, as the v2 `permissions` array.
        permissions: serde_json::Value,
        /// Default lease lifetime.
        default_ttl_secs: Option<u64>,
        /// Maximum lease lifetime.
        max_ttl_secs: Option<u64>,
        /// How many live leases a member may hold (the control's default when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_live_leases: Option<u32>,
        /// PEM CA certificates trusted for a TLS endpoint besides the system roots (the
        /// certificates themselves, so every replica of the control trusts them).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_pem: Option<String>,
    },
    /// InfluxDB 1.x: leases are dynamic users.
    InfluxdbV1 {
        /// Base URL of InfluxDB.
        endpoint_url: String,
        /// The admin user.
        username: String,
        /// The admin password.
        password: Secret,
        /// Default privileges, e.g. `WRITE ON "telemetry"`.
        privileges: Vec<String>,
        /// Default lease lifetime.
        default_ttl_secs: Option<u64>,
        /// Maximum lease lifetime.
        max_ttl_secs: Option<u64>,
        /// How many live leases a member may hold (the control's default when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_live_leases: Option<u32>,
        /// PEM CA certificates trusted for a TLS endpoint besides the system roots (the
        /// certificates themselves, so every replica of the control trusts them).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_pem: Option<String>,
    },
}

/// The add-on as configured, secrets left out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddonSummary {
    /// `influxdb` or `influxdb-v1`.
    pub backend: String,
    /// Base URL of InfluxDB.
    pub endpoint_url: String,
    /// Default lease lifetime.
    pub default_ttl_secs: u64,
    /// Maximum lease lifetime.
    pub max_ttl_secs: u64,
    /// How many live leases a member may hold.
    #[serde(default)]
    pub max_live_leases: u32,
    /// The InfluxDB version found when the settings were verified; absent when the
    /// check was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_version: Option<String>,
    /// Whether the add-on trusts its own CA certificates for a TLS endpoint.
    #[serde(default)]
    pub private_ca: bool,
}

/// What a policy grants: v2 permissions or v1 privileges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// A v2 `permissions` array.
    Permissions(serde_json::Value),
    /// v1 privilege clauses such as `WRITE ON "db"`.
    Privileges(Vec<String>),
}

/// A policy to set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicySpec {
    /// Attributes a member must all have for the policy to apply.
    pub matches: BTreeMap<String, String>,
    /// What it grants.
    pub grant: Grant,
    /// Default lease lifetime under this policy (the add-on's when absent).
    pub default_ttl_secs: Option<u64>,
    /// Maximum lease lifetime under this policy (the add-on's when absent).
    pub max_ttl_secs: Option<u64>,
    /// How many live leases a member may hold under this policy (the add-on's when
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_live_leases: Option<u32>,
}

/// A stored policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// Derived from the match set, so setting the same match again replaces it.
    pub id: String,
    /// The policy.
    #[serde(flatten)]
    pub spec: PolicySpec,
}

/// A new enrollment ticket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketRecord {
    /// The ticket line (a secret).
    pub ticket: Secret,
    /// Attributes the member will carry.
    pub attributes: BTreeMap<String, String>,
    /// Last moment it can be redeemed.
    pub expires_at: Timestamp,
    /// How many identities can redeem it.
    pub usage_count: u32,
    /// The id `ticket list` and `ticket revoke` use (not a secret).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
}

/// An enrollment ticket as `ticket list` shows it: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketInfo {
    /// Derived from the stored hash of the secret; what `ticket revoke` takes.
    pub id: String,
    /// Attributes the member will carry.
    pub attributes: BTreeMap<String, String>,
    /// Last moment it can be redeemed.
    pub expires_at: Timestamp,
    /// Redemptions left.
    pub uses_left: u32,
}

/// An identity removed with `member delete`: enrolling it again is refused until
/// `member allow`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeniedIdentity {
    /// The identity's identifier.
    pub id: PublicIdentity,
    /// The name it had enrolled under.
    pub name: String,
    /// The attributes it had.
    pub attributes: BTreeMap<String, String>,
    /// When it was deleted.
    pub denied_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_have_the_documented_shape() {
        let req = RequestEnvelope {
            v: PROTOCOL_VERSION,
            id: 7,
            req: Request::LeaseCreate { ttl_secs: Some(60) },
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"v":1,"id":7,"req":{"op":"lease_create","ttl_secs":60}}"#
        );
        let resp = ResponseEnvelope {
            v: PROTOCOL_VERSION,
            id: 7,
            outcome: Outcome::Err(WireError::new(ErrorCode::Forbidden, "admin only")),
        };
        assert_eq!(
            serde_json::to_string(&resp).unwrap(),
            r#"{"v":1,"id":7,"err":{"code":"forbidden","message":"admin only"}}"#
        );
        let back: ResponseEnvelope =
            serde_json::from_str(&serde_json::to_string(&resp).unwrap()).unwrap();
        assert!(matches!(back.outcome, Outcome::Err(e) if e.code == ErrorCode::Forbidden));
    }

    #[test]
    fn lease_pages_have_the_documented_shape() {
        let req = Request::LeasePage {
            status: Some(LeaseStatus::Active),
            member: None,
            after: Some("0123456789abcdef".into()),
            limit: 100,
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"op":"lease_page","status":"active","after":"0123456789abcdef","limit":100}"#
        );
        let last: Reply = serde_json::from_str(r#"{"kind":"lease_page","leases":[]}"#).unwrap();
        assert!(matches!(last, Reply::LeasePage { leases, next: None } if leases.is_empty()));
    }

    #[test]
    fn secrets_in_requests_do_not_reach_debug() {
        let req = Request::Enroll {
            secret: Secret::new("s3cr3t"),
            name: "x".into(),
        };
        assert!(!format!("{req:?}").contains("s3cr3t"));
    }
}

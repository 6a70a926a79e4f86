//! The server's state and rules, with no I/O: one organization, one user, the
//! authorizations (the operator's first) and the accepted line-protocol lines.
//!
//! Validation follows influxd's `authorization/http_server.go` and `service.go`, in the
//! same order and with the same messages where the contract does not give one:
//! non-empty permissions, known actions and resource types, valid ids, every
//! permission's `orgID` equal to the authorization's, and an existing org and user
//! (else 400 `unable to create token`, influxd's `ErrUnableToCreateToken`).

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use serde::Serialize;

use super::ids::{check_id, is_valid_id, random_id, random_token, rfc3339};
use super::inspect::{AuthorizationSnapshot, WrittenPoint};
use super::wire::{ApiError, PatchAuthorization, PermissionIn, PostAuthorization};

/// `Resource.type` enum of the contract (identical in `oss.yml` and `cloud.yml`); the
/// one list, shared with the control.
pub use leasehold_protocol::influxdb::RESOURCE_TYPES;

/// Name of the single user every authorization belongs to (the operator, as after
/// `influx setup`).
const USER_NAME: &str = "admin";

/// `Permission.action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Read,
    Write,
}

impl Action {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// A validated permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Permission {
    action: Action,
    kind: &'static str,
    id: Option<String>,
    /// `None` means every organization (only the operator's permissions look like this:
    /// created permissions get the authorization's org filled in).
    org_id: Option<String>,
    name: Option<String>,
}

impl Permission {
    /// Whether this permission allows `action` on `kind` in `org_id`, for the resource
    /// named or identified by `target`. A permission without `id` and `name` covers every
    /// resource of its type. Matching a bucket by `name` is a test convenience: influxd
    /// ignores `name` on input, and this server has no bucket registry to map names to ids.
    fn grants(&self, action: Action, kind: &str, org_id: &str, target: Option<&str>) -> bool {
        if self.action != action || self.kind != kind {
            return false;
        }
        if self.org_id.as_deref().is_some_and(|org| org != org_id) {
            return false;
        }
        if self.id.is_none() && self.name.is_none() {
            return true;
        }
        target.is_some_and(|t| self.id.as_deref() == Some(t) || self.name.as_deref() == Some(t))
    }

    /// influxd's `Permission.String()`, used in its org-mismatch message.
    fn describe(&self) -> String {
        let mut s = format!("{}:", self.action.as_str());
        if let Some(org) = &self.org_id {
            s.push_str(&format!("orgs/{org}/"));
        }
        s.push_str(self.kind);
        if let Some(id) = &self.id {
            s.push_str(&format!("/{id}"));
        }
        s
    }
}

/// One authorization. Not `Debug`: it holds a token.
pub(crate) struct Authorization {
    pub id: String,
    pub token: String,
    pub active: bool,
    pub description: String,
    pub org_id: String,
    pub user_id: String,
    permissions: Vec<Permission>,
    created_at: String,
    updated_at: String,
}

impl Authorization {
    /// Whether this token may do `action` on `kind` (in `org_id`, on `target`). An
    /// inactive authorization permits nothing.
    pub(crate) fn permits(
        &self,
        action: Action,
        kind: &str,
        org_id: &str,
        target: Option<&str>,
    ) -> bool {
        self.active
            && self
                .permissions
                .iter()
                .any(|p| p.grants(action, kind, org_id, target))
    }

    fn status(&self) -> &'static str {
        if self.active { "active" } else { "inactive" }
    }
}

/// Filters of `GET /api/v2/authorizations` (query parameters, already decoded).
#[derive(Debug, Default)]
pub(crate) struct ListFilter {
    pub id: Option<String>,
    pub org_id: Option<String>,
    pub org: Option<String>,
    pub user_id: Option<String>,
    pub user: Option<String>,
    /// Cloud only (OSS ignores it); harmless to support.
    pub token: Option<String>,
}

/// The whole state, behind one mutex in the server.
pub(crate) struct Store {
    pub org_id: String,
    pub org_name: String,
    user_id: String,
    /// Id of the operator's authorization (it may be deleted over HTTP, like any other).
    operator_id: String,
    /// Authorizations by creation sequence, so lists come out in creation order.
    auths: BTreeMap<u64, Authorization>,
    next_seq: u64,
    /// Id and token to sequence: lookups stay O(1) however many leases a benchmark makes.
    by_id: HashMap<String, u64>,
    by_token: HashMap<String, u64>,
    points: Vec<WrittenPoint>,
}

impl Store {
    /// A store whose operator authorization carries `admin_token` and every permission
    /// on every organization, like the token `influx setup` creates.
    pub(crate) fn new(org_id: String, org_name: String, admin_token: String) -> Self {
        let permissions = RESOURCE_TYPES
            .iter()
            .flat_map(|kind| {
                [Action::Read, Action::Write].map(|action| Permission {
                    action,
                    kind,
                    id: None,
                    org_id: None,
                    name: None,
                })
            })
            .collect();
        let mut store = Self {
            org_id,
            org_name,
            user_id: random_id(),
            operator_id: String::new(),
            auths: BTreeMap::new(),
            next_seq: 0,
            by_id: HashMap::new(),
            by_token: HashMap::new(),
            points: Vec::new(),
        };
        store.operator_id = store
            .push(
                format!("{USER_NAME}'s Token"),
                true,
                permissions,
                admin_token,
                SystemTime::now(),
            )
            .id
            .clone();
        store
    }

    /// The operator's authorization id, while it exists.
    pub(crate) fn operator_id(&self) -> Option<&str> {
        self.get(&self.operator_id).map(|a| a.id.as_str())
    }

    /// `POST /api/v2/authorizations`: validates and creates.
    pub(crate) fn create(
        &mut self,
        req: PostAuthorization,
        now: SystemTime,
    ) -> Result<&Authorization, ApiError> {
        let active = match req.status.as_deref() {
            None | Some("") | Some("active") => true,
            Some("inactive") => false,
            Some(_) => return Err(ApiError::invalid("status must be active or inactive")),
        };
        let requested = req.permissions.unwrap_or_default();
        if requested.is_empty() {
            return Err(ApiError::invalid("authorization must include permissions"));
        }
        let mut permissions = requested
            .into_iter()
            .map(parse_permission)
            .collect::<Result<Vec<_>, _>>()?;
        let org_id = match req.org_id {
            Some(id) if is_valid_id(&id) => id,
            _ => return Err(ApiError::invalid("org id required")),
        };
        if let Some(p) = permissions
            .iter()
            .find(|p| p.org_id.as_ref().is_some_and(|o| *o != org_id))
        {
            return Err(ApiError::invalid(format!(
                "permission {} is not for org id {org_id}",
                p.describe()
            )));
        }
        let user_ok = req.user_id.as_ref().is_none_or(|u| *u == self.user_id);
        if org_id != self.org_id || !user_ok {
            return Err(ApiError::invalid("unable to create token"));
        }
        // The brief asks for the org to be filled in; it also keeps created permissions
        // org-scoped, which is what a lease must be.
        for p in &mut permissions {
            p.org_id = Some(org_id.clone());
        }
        let description = req.description.unwrap_or_default();
        Ok(self.push(description, active, permissions, random_token(), now))
    }

    /// Seeds an authorization in this org, bypassing HTTP (test setup).
    pub(crate) fn insert(
        &mut self,
        description: &str,
        permissions: Vec<PermissionIn>,
        now: SystemTime,
    ) -> Result<&Authorization, ApiError> {
        let req = PostAuthorization {
            org_id: Some(self.org_id.clone()),
            user_id: None,
            description: Some(description.to_owned()),
            status: None,
            permissions: Some(permissions),
        };
        self.create(req, now)
    }

    fn push(
        &mut self,
        description: String,
        active: bool,
        permissions: Vec<Permission>,
        token: String,
        now: SystemTime,
    ) -> &Authorization {
        let mut id = random_id();
        while self.by_id.contains_key(&id) {
            id = random_id();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.insert(id.clone(), seq);
        self.by_token.insert(token.clone(), seq);
        let at = rfc3339(now);
        self.auths.entry(seq).or_insert(Authorization {
            id,
            token,
            active,
            description,
            org_id: self.org_id.clone(),
            user_id: self.user_id.clone(),
            permissions,
            created_at: at.clone(),
            updated_at: at,
        })
    }

    /// The authorization that `token` belongs to, active or not.
    pub(crate) fn by_token(&self, token: &str) -> Option<&Authorization> {
        self.by_token.get(token).and_then(|seq| self.auths.get(seq))
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Authorization> {
        self.by_id.get(id).and_then(|seq| self.auths.get(seq))
    }

    /// Removes an authorization; `false` if there was none.
    pub(crate) fn delete(&mut self, id: &str) -> bool {
        let Some(seq) = self.by_id.remove(id) else {
            return false;
        };
        if let Some(auth) = self.auths.remove(&seq) {
            self.by_token.remove(&auth.token);
        }
        true
    }

    /// `PATCH /api/v2/authorizations/{id}`: status and description.
    pub(crate) fn patch(
        &mut self,
        id: &str,
        req: PatchAuthorization,
        now: SystemTime,
    ) -> Result<&Authorization, ApiError> {
        let active = match req.status.as_deref() {
            None => None,
            Some("active") => Some(true),
            Some("inactive") => Some(false),
            Some(_) => return Err(ApiError::invalid("status must be active or inactive")),
        };
        let auth = self
            .by_id
            .get(id)
            .and_then(|seq| self.auths.get_mut(seq))
            .ok_or_else(ApiError::authorization_not_found)?;
        if let Some(active) = active {
            auth.active = active;
        }
        if let Some(description) = req.description {
            auth.description = description;
        }
        auth.updated_at = rfc3339(now);
        Ok(auth)
    }

    /// `GET /api/v2/authorizations`. Unknown user or org names are 404 (influxd looks
    /// them up first); unknown ids simply match nothing.
    pub(crate) fn list(&self, f: &ListFilter) -> Result<Vec<&Authorization>, ApiError> {
        for id in [&f.id, &f.org_id, &f.user_id].into_iter().flatten() {
            check_id(id)?;
        }
        if f.user.as_ref().is_some_and(|u| u != USER_NAME) {
            return Err(ApiError::not_found("user not found"));
        }
        if let Some(org) = f.org.as_ref().filter(|o| **o != self.org_name) {
            return Err(ApiError::not_found(format!(
                "organization name \"{org}\" not found"
            )));
        }
        let want =
            |filter: &Option<String>, value: &str| filter.as_ref().is_none_or(|f| f == value);
        Ok(self
            .auths
            .values()
            .filter(|a| {
                want(&f.id, &a.id)
                    && want(&f.org_id, &a.org_id)
                    && want(&f.user_id, &a.user_id)
                    && want(&f.token, &a.token)
            })
            .collect())
    }

    /// The contract's `Authorization` object. `token` is shown only when `show_token`
    /// (the 201 answer); elsewhere it is the string `redacted`, as InfluxDB Cloud answers
    /// on GET (the contract's `GetAuthorizations` description: "returns `token: redacted`").
    pub(crate) fn render<'a>(
        &'a self,
        a: &'a Authorization,
        show_token: bool,
    ) -> AuthorizationOut<'a> {
        AuthorizationOut {
            id: &a.id,
            token: if show_token { &a.token } else { "redacted" },
            status: a.status(),
            description: &a.description,
            org_id: &a.org_id,
            org: &self.org_name,
            user_id: &a.user_id,
            user: USER_NAME,
            permissions: self.render_permissions(a),
            created_at: &a.created_at,
            updated_at: &a.updated_at,
            links: Links {
                this: Link("/api/v2/authorizations/", &a.id),
                user: Link("/api/v2/users/", &a.user_id),
            },
        }
    }

    fn render_permissions<'a>(&'a self, a: &'a Authorization) -> Vec<PermissionOut<'a>> {
        let render = |p: &'a Permission| {
            let org_id = p.org_id.as_deref();
            PermissionOut {
                action: p.action.as_str(),
                resource: ResourceOut {
                    kind: p.kind,
                    id: p.id.as_deref(),
                    org_id,
                    org: (org_id == Some(self.org_id.as_str())).then_some(self.org_name.as_str()),
                    name: p.name.as_deref(),
                },
            }
        };
        a.permissions.iter().map(render).collect()
    }

    /// A test-facing copy of one authorization.
    pub(crate) fn snapshot(&self, a: &Authorization) -> AuthorizationSnapshot {
        let permissions = self.render_permissions(a);
        AuthorizationSnapshot {
            id: a.id.clone(),
            description: a.description.clone(),
            token: a.token.clone(),
            status: a.status().to_owned(),
            org_id: a.org_id.clone(),
            permissions: serde_json::to_value(permissions).expect("permissions serialize"),
            created_at: a.created_at.clone(),
        }
    }

    /// Every authorization except the operator's.
    pub(crate) fn non_operator(&self) -> impl Iterator<Item = &Authorization> {
        self.auths.values().filter(|a| a.id != self.operator_id)
    }

    pub(crate) fn record(&mut self, points: impl IntoIterator<Item = WrittenPoint>) {
        self.points.extend(points);
    }

    pub(crate) fn points(&self) -> &[WrittenPoint] {
        &self.points
    }
}

/// An authorization as the API shows it, borrowed from the store: serialized straight
/// to the answer's bytes, with no intermediate JSON tree.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuthorizationOut<'a> {
    id: &'a str,
    token: &'a str,
    status: &'static str,
    description: &'a str,
    #[serde(rename = "orgID")]
    org_id: &'a str,
    org: &'a str,
    #[serde(rename = "userID")]
    user_id: &'a str,
    user: &'static str,
    permissions: Vec<PermissionOut<'a>>,
    created_at: &'a str,
    updated_at: &'a str,
    links: Links<'a>,
}

#[derive(Serialize)]
struct Links<'a> {
    #[serde(rename = "self")]
    this: Link<'a>,
    user: Link<'a>,
}

/// A resource path: a fixed prefix and an id, written out only when serialized.
struct Link<'a>(&'static str, &'a str);

impl Serialize for Link<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}{}", self.0, self.1))
    }
}

#[derive(Serialize)]
struct PermissionOut<'a> {
    action: &'static str,
    resource: ResourceOut<'a>,
}

#[derive(Serialize)]
struct ResourceOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "orgID", skip_serializing_if = "Option::is_none")]
    org_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    org: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

/// Validates one permission (influxd's `Permission.Valid` and `Resource.Valid`).
fn parse_permission(p: PermissionIn) -> Result<Permission, ApiError> {
    let resource = p
        .resource
        .ok_or_else(|| ApiError::invalid("unknown resource type for permission"))?;
    let kind = resource
        .kind
        .as_deref()
        .and_then(|k| RESOURCE_TYPES.iter().copied().find(|t| *t == k))
        .ok_or_else(|| ApiError::invalid("unknown resource type for permission"))?;
    for id in [&resource.id, &resource.org_id].into_iter().flatten() {
        check_id(id)?;
    }
    let action = p
        .action
        .as_deref()
        .and_then(Action::parse)
        .ok_or_else(|| ApiError::invalid("unknown action for permission"))?;
    Ok(Permission {
        action,
        kind,
        id: resource.id,
        org_id: resource.org_id,
        name: resource.name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2server::wire::parse_json;
    use serde_json::{Value, json};

    const ORG: &str = "0123456789abcdef";

    fn store() -> Store {
        Store::new(ORG.into(), "org".into(), "admin-token".into())
    }

    fn post(body: Value) -> Result<PostAuthorization, ApiError> {
        parse_json(body.to_string().as_bytes())
    }

    #[test]
    fn operator_token_may_do_anything() {
        let s = store();
        let op = s.by_token("admin-token").expect("operator");
        assert!(op.permits(Action::Write, "authorizations", ORG, None));
        assert!(op.permits(Action::Write, "buckets", ORG, Some("b")));
        assert_eq!(s.non_operator().count(), 0);
    }

    #[test]
    fn operator_can_be_deleted_like_any_other() {
        let mut s = store();
        let seeded = s
            .insert(
                "seed",
                parse_json(br#"[{"action":"read","resource":{"type":"buckets"}}]"#).expect("json"),
                SystemTime::now(),
            )
            .expect("seeded")
            .id
            .clone();
        let op = s.operator_id().expect("operator").to_owned();
        assert!(s.delete(&op));
        assert_eq!(s.operator_id(), None);
        assert!(s.by_token("admin-token").is_none());
        assert_eq!(
            s.non_operator().map(|a| a.id.clone()).collect::<Vec<_>>(),
            [seeded]
        );
    }

    #[test]
    fn bucket_permissions_scope_by_id_or_name() {
        let mut s = store();
        let req = post(json!({"orgID": ORG, "permissions": [
            {"action": "write", "resource": {"type": "buckets", "name": "metrics"}},
            {"action": "read", "resource": {"type": "buckets"}},
        ]}))
        .expect("json");
        let a = s.create(req, SystemTime::now()).expect("created");
        assert!(a.permits(Action::Write, "buckets", ORG, Some("metrics")));
        assert!(!a.permits(Action::Write, "buckets", ORG, Some("other")));
        assert!(a.permits(Action::Read, "buckets", ORG, Some("other")));
        assert!(!a.permits(
            Action::Write,
            "buckets",
            "fedcba9876543210",
            Some("metrics")
        ));
    }

    #[test]
    fn validation_follows_influxd() {
        let mut s = store();
        let cases = [
            (
                json!({"orgID": ORG, "permissions": []}),
                "authorization must include permissions",
            ),
            (
                json!({"orgID": ORG}),
                "authorization must include permissions",
            ),
            (
                json!({"orgID": ORG, "permissions": [{"action": "delete", "resource": {"type": "buckets"}}]}),
                "unknown action for permission",
            ),
            (
                json!({"orgID": ORG, "permissions": [{"action": "read", "resource": {"type": "bogus"}}]}),
                "unknown resource type for permission",
            ),
            (
                json!({"permissions": [{"action": "read", "resource": {"type": "buckets"}}]}),
                "org id required",
            ),
            (
                json!({"orgID": "fedcba9876543210", "permissions": [{"action": "read", "resource": {"type": "buckets"}}]}),
                "unable to create token",
            ),
            (
                json!({"orgID": ORG, "permissions": [{"action": "read", "resource": {"type": "buckets", "orgID": "fedcba9876543210"}}]}),
                "permission read:orgs/fedcba9876543210/buckets is not for org id 0123456789abcdef",
            ),
        ];
        for (body, message) in cases {
            let err = s.create(post(body).expect("json"), SystemTime::now()).err();
            assert_eq!(
                err.map(|e| (e.status.as_u16(), e.message)),
                Some((400, message.into()))
            );
        }
        assert_eq!(s.non_operator().count(), 0);
    }

    #[test]
    fn inactive_permits_nothing_and_list_filters() {
        let mut s = store();
        let req = post(json!({"orgID": ORG, "status": "inactive", "permissions": [
            {"action": "write", "resource": {"type": "buckets"}}]}))
        .expect("json");
        let id = s
            .create(req, SystemTime::now())
            .expect("created")
            .id
            .clone();
        assert!(
            !s.get(&id)
                .expect("exists")
                .permits(Action::Write, "buckets", ORG, Some("b"))
        );
        let by_org = ListFilter {
            org_id: Some(ORG.into()),
            ..ListFilter::default()
        };
        assert_eq!(s.list(&by_org).expect("list").len(), 2);
        let other = ListFilter {
            org_id: Some("fedcba9876543210".into()),
            ..ListFilter::default()
        };
        assert!(s.list(&other).expect("list").is_empty());
        let bad = ListFilter {
            org_id: Some("x".into()),
            ..ListFilter::default()
        };
        assert_eq!(s.list(&bad).err().map(|e| e.status.as_u16()), Some(400));
        assert!(s.delete(&id));
        assert!(!s.delete(&id));
    }
}

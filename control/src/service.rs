//! What each request does, with who may do it.

use std::collections::BTreeMap;
use std::sync::Arc;

use leasehold_channel::protocol::{
    AddonConfig, AddonSummary, Grant, MemberRecord, PolicyRecord, PolicySpec, Reply, Request,
    TicketRecord, Timestamp,
};
use leasehold_channel::ticket::{Ticket, secret_hash};
use leasehold_channel::{PublicIdentity, Secret};

use tracing::Instrument;

use crate::backend::{Backend, LeaseSpec, new_lease_id};
use crate::control::{Addon, Control, record, status};
use crate::error::ControlError;
use crate::grant::{Privilege, normalize_permissions};
use crate::policy::{self, lease_ttl, policy_id, terms_for};
use crate::store::{Store, StoredLease, StoredTicket};

type Result<T> = std::result::Result<T, ControlError>;

/// The longest a ticket may stay redeemable.
const MAX_TICKET_LIFETIME_SECS: u64 = 30 * 86_400;

impl<S: Store> Control<S> {
    /// Carries out `req` for the authenticated `peer`.
    pub async fn handle(self: &Arc<Self>, peer: PublicIdentity, req: Request) -> Result<Reply> {
        match req {
            Request::Ping => Ok(Reply::Pong {
                control: self.identity.public(),
            }),
            Request::Enroll { secret, name } => self.enroll(peer, &secret, name).await,
            Request::LeaseCreate { ttl_secs } => self.create_lease(peer, ttl_secs).await,
            Request::LeaseList => self.list_leases(peer).await,
            Request::LeaseShow { id } => {
                let (lease, _) = self.visible_lease(peer, &id).await?;
                Ok(Reply::Lease(record(&lease, Timestamp::now())))
            }
            Request::LeaseRevoke { id } => {
                let (lease, _) = self.visible_lease(peer, &id).await?;
                let lease = self.revoke_now(lease, peer).await?;
                Ok(Reply::Lease(record(&lease, Timestamp::now())))
            }
            Request::AddonConfigure { addon } => {
                self.admin(peer).await?;
                self.configure_addon(addon).await
            }
            Request::PolicySet { policy } => {
                self.admin(peer).await?;
                self.set_policy(policy).await
            }
            Request::PolicyList => {
                self.admin(peer).await?;
                Ok(Reply::Policies {
                    policies: self.store.policies().await?,
                })
            }
            Request::PolicyDelete { id } => {
                self.admin(peer).await?;
                if self.store.delete_policy(id).await? {
                    Ok(Reply::Done)
                } else {
                    Err(ControlError::NotFound("policy"))
                }
            }
            Request::TicketCreate {
                attributes,
                expires_in_secs,
                usage_count,
            } => {
                self.admin(peer).await?;
                self.create_ticket(attributes, expires_in_secs, usage_count)
                    .await
            }
            Request::MemberList => {
                self.admin(peer).await?;
                Ok(Reply::Members {
                    members: self.store.members().await?,
                })
            }
            Request::MemberShow { id } => {
                self.admin(peer).await?;
                let id = parse_member_id(&id)?;
                let member = self
                    .store
                    .member(id)
                    .await?
                    .ok_or(ControlError::NotFound("member"))?;
                Ok(Reply::Member(member))
            }
            Request::MemberDelete { id } => {
                self.admin(peer).await?;
                self.delete_member(peer, &id).await
            }
        }
    }

    async fn member(&self, peer: PublicIdentity) -> Result<MemberRecord> {
        self.store
            .member(peer)
            .await?
            .ok_or(ControlError::NotMember)
    }

    async fn admin(&self, peer: PublicIdentity) -> Result<MemberRecord> {
        let member = self.member(peer).await?;
        if member.is_admin() {
            Ok(member)
        } else {
            Err(ControlError::NotAdmin)
        }
    }

    async fn enroll(&self, peer: PublicIdentity, secret: &Secret, name: String) -> Result<Reply> {
        let bytes = leasehold_channel::ticket::decode_secret(secret.expose())
            .map_err(|_| ControlError::BadRequest("malformed ticket secret".into()))?;
        if name.is_empty() || name.len() > 64 {
            return Err(ControlError::BadRequest(
                "identity name must be 1-64 characters".into(),
            ));
        }
        let member = self
            .store
            .redeem_ticket(secret_hash(bytes.as_ref()), Timestamp::now(), peer, name)
            .await??;
        tracing::info!(identity = %member.id, name = %member.name, attributes = ?member.attributes, "member enrolled");
        Ok(Reply::Member(member))
    }

    async fn create_lease(&self, peer: PublicIdentity, ttl_secs: Option<u64>) -> Result<Reply> {
        // The lifetime is stated from here: the client counts it from when it sent the
        // request, which was earlier, so its deadline never outlives the lease.
        let asked = std::time::SystemTime::now();
        let member = self.member(peer).await?;
        let addon = self.addon()?;
        let backend = &addon.backend;
        let terms = terms_for(
            &addon.config,
            &self.store.policies().await?,
            &member.attributes,
        );
        let ttl =
            lease_ttl(&terms, ttl_secs).map_err(|e| ControlError::BadRequest(e.to_string()))?;
        let id = new_lease_id();
        let created_at = Timestamp::now();
        let expires_at = created_at.plus_secs(ttl);
        // Everything logged while issuing (backend errors included) carries the lease.
        let span = tracing::info_span!("lease", lease.id = %id, identity = %peer);
        let issued = backend
            .create(LeaseSpec {
                id: &id,
                expires_at,
                grant: &terms.grant,
            })
            .instrument(span)
            .await?;
        let lease = StoredLease {
            id: id.clone(),
            member: peer,
            created_at,
            expires_at,
            credential_id: issued.credential_id,
            auth_scheme: backend.auth_scheme(),
            endpoint_url: backend.endpoint_url().to_owned(),
            revoked_at: None,
            removed: false,
        };
        // Durable before the token leaves: a crash from here on still revokes it.
        if let Err(error) = self.store.put_lease(lease.clone()).await {
            if let Err(cleanup) = backend.revoke(&lease.credential_id).await {
                tracing::error!(lease.id = %id, error = %cleanup, "could not remove an unrecorded credential; the sweep will after expiry");
            }
            return Err(error.into());
        }
        self.schedule(expires_at, id.clone());
        tracing::info!(
            lease.id = %id,
            identity = %peer,
            expires_at = %expires_at,
            ttl_secs = ttl,
            policy = terms.policy.as_deref().unwrap_or("add-on default"),
            "lease issued"
        );
        let mut record = record(&lease, created_at);
        record.token = Some(issued.token);
        // Stated outright: the proxy counts it on its monotonic clock.
        record.ttl_ms = Some(millis_between(asked, expires_at));
        Ok(Reply::Lease(record))
    }

    async fn list_leases(&self, peer: PublicIdentity) -> Result<Reply> {
        let member = self.member(peer).await?;
        let now = Timestamp::now();
        let mut leases: Vec<_> = self
            .store
            .leases()
            .await?
            .iter()
            .filter(|l| member.is_admin() || l.member == peer)
            .map(|l| record(l, now))
            .collect();
        leases.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(Reply::Leases { leases })
    }

    /// A lease the caller may see: its own, or any for an admin. Others' leases are
    /// "not found", so ids cannot be probed.
    async fn visible_lease(
        &self,
        peer: PublicIdentity,
        id: &str,
    ) -> Result<(StoredLease, MemberRecord)> {
        let member = self.member(peer).await?;
        match self.store.lease(id.to_owned()).await? {
            Some(lease) if member.is_admin() || lease.member == peer => Ok((lease, member)),
            _ => Err(ControlError::NotFound("lease")),
        }
    }

    async fn delete_member(self: &Arc<Self>, by: PublicIdentity, id: &str) -> Result<Reply> {
        let id = parse_member_id(id)?;
        let member = self
            .store
            .delete_member(id)
            .await?
            .ok_or(ControlError::NotFound("member"))?;
        tracing::info!(identity = %member.id, by = %by, "member deleted; revoking its leases");
        let now = Timestamp::now();
        for lease in self.store.leases().await? {
            if lease.member == id
                && status(&lease, now) == leasehold_channel::protocol::LeaseStatus::Active
            {
                self.revoke_now(lease, by).await?;
            }
        }
        Ok(Reply::Member(member))
    }

    async fn configure_addon(&self, addon: AddonConfig) -> Result<Reply> {
        let addon = validate_addon(addon)?;
        let backend = Backend::from_addon(&addon)?;
        let (default_ttl_secs, max_ttl_secs) = policy::addon_ttls(&addon);
        let summary = AddonSummary {
            backend: match addon {
                AddonConfig::Influxdb { .. } => "influxdb",
                AddonConfig::InfluxdbV1 { .. } => "influxdb-v1",
            }
            .into(),
            endpoint_url: backend.endpoint_url().to_owned(),
            default_ttl_secs,
            max_ttl_secs,
        };
        self.data.save_addon(&addon)?;
        self.set_addon(Addon {
            config: addon,
            backend,
        });
        tracing::info!(backend = %summary.backend, endpoint = %summary.endpoint_url, default_ttl_secs, max_ttl_secs, "add-on configured");
        Ok(Reply::Addon(summary))
    }

    async fn set_policy(&self, spec: PolicySpec) -> Result<Reply> {
        if spec.matches.is_empty() {
            return Err(ControlError::BadRequest(
                "a policy needs at least one --match KEY=VALUE".into(),
            ));
        }
        check_ttls(spec.default_ttl_secs, spec.max_ttl_secs)?;
        let addon = self.addon.load_full().ok_or_else(|| {
            ControlError::BadRequest("configure the add-on before setting policies".into())
        })?;
        let grant = match (&addon.config, spec.grant) {
            (AddonConfig::Influxdb { org_id, .. }, Grant::Permissions(p)) => Grant::Permissions(
                normalize_permissions(&p, org_id)
                    .map_err(|e| ControlError::BadRequest(e.to_string()))?,
            ),
            (AddonConfig::InfluxdbV1 { .. }, Grant::Privileges(p)) => {
                Grant::Privileges(validate_privileges(p)?)
            }
            (AddonConfig::Influxdb { .. }, Grant::Privileges(_)) => {
                return Err(ControlError::BadRequest(
                    "the influxdb add-on takes --permissions, not --privileges".into(),
                ));
            }
            (AddonConfig::InfluxdbV1 { .. }, Grant::Permissions(_)) => {
                return Err(ControlError::BadRequest(
                    "the influxdb-v1 add-on takes --privileges, not --permissions".into(),
                ));
            }
        };
        let policy = PolicyRecord {
            id: policy_id(&spec.matches),
            spec: PolicySpec { grant, ..spec },
        };
        self.store.put_policy(policy.clone()).await?;
        tracing::info!(policy = %policy.id, "policy set");
        Ok(Reply::Policy(policy))
    }

    async fn create_ticket(
        &self,
        attributes: BTreeMap<String, String>,
        expires_in_secs: u64,
        usage_count: u32,
    ) -> Result<Reply> {
        if usage_count == 0 {
            return Err(ControlError::BadRequest(
                "usage count must be at least 1".into(),
            ));
        }
        if expires_in_secs == 0 || expires_in_secs > MAX_TICKET_LIFETIME_SECS {
            return Err(ControlError::BadRequest(format!(
                "ticket lifetime must be between 1s and {MAX_TICKET_LIFETIME_SECS}s"
            )));
        }
        if let Some(key) = attributes
            .keys()
            .find(|k| k.is_empty() || k.contains(['=', ',']))
        {
            return Err(ControlError::BadRequest(format!(
                "invalid attribute name {key:?}"
            )));
        }
        let ticket = Ticket::generate(self.advertise.clone(), self.identity.public());
        let expires_at = Timestamp::now().plus_secs(expires_in_secs);
        self.store
            .put_ticket(
                secret_hash(ticket.secret.as_ref()),
                StoredTicket {
                    attributes: attributes.clone(),
                    expires_at,
                    remaining: usage_count,
                },
            )
            .await?;
        tracing::info!(attributes = ?attributes, expires_at = %expires_at, usage_count, "ticket created");
        Ok(Reply::Ticket(TicketRecord {
            ticket: ticket.to_line(),
            attributes,
            expires_at,
            usage_count,
        }))
    }
}

fn parse_member_id(id: &str) -> Result<PublicIdentity> {
    id.parse().map_err(|_| {
        ControlError::BadRequest(format!(
            "{id:?} is not a member id (an identity identifier)"
        ))
    })
}

fn check_ttls(default: Option<u64>, max: Option<u64>) -> Result<()> {
    if default == Some(0) || max == Some(0) {
        return Err(ControlError::BadRequest(
            "ttls must be greater than zero".into(),
        ));
    }
    if let (Some(default), Some(max)) = (default, max)
        && default > max
    {
        return Err(ControlError::BadRequest(format!(
            "default ttl {default}s exceeds max ttl {max}s"
        )));
    }
    Ok(())
}

fn validate_privileges(privileges: Vec<String>) -> Result<Vec<String>> {
    if privileges.is_empty() {
        return Err(ControlError::BadRequest(
            "at least one --privileges is required".into(),
        ));
    }
    privileges
        .iter()
        .map(|p| Privilege::parse(p).map(|p| p.to_string()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| ControlError::BadRequest(e.to_string()))
}

fn validate_url(url: &str) -> Result<()> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(ControlError::BadRequest(format!(
            "invalid --endpoint-url {url:?}: expected http(s)://host[:port]"
        ))),
    }
}

fn validate_addon(addon: AddonConfig) -> Result<AddonConfig> {
    match addon {
        AddonConfig::Influxdb {
            endpoint_url,
            token,
            org_id,
            permissions,
            default_ttl_secs,
            max_ttl_secs,
        } => {
            validate_url(&endpoint_url)?;
            if token.is_empty() {
                return Err(ControlError::BadRequest("the admin token is empty".into()));
            }
            if org_id.len() != 16 || !org_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ControlError::BadRequest(format!(
                    "invalid --org-id {org_id:?}: expected 16 hex digits"
                )));
            }
            check_ttls(default_ttl_secs, max_ttl_secs)?;
            let permissions = normalize_permissions(&permissions, &org_id)
                .map_err(|e| ControlError::BadRequest(e.to_string()))?;
            Ok(AddonConfig::Influxdb {
                endpoint_url,
                token,
                org_id,
                permissions,
                default_ttl_secs,
                max_ttl_secs,
            })
        }
        AddonConfig::InfluxdbV1 {
            endpoint_url,
            username,
            password,
            privileges,
            default_ttl_secs,
            max_ttl_secs,
        } => {
            validate_url(&endpoint_url)?;
            if username.is_empty() {
                return Err(ControlError::BadRequest(
                    "the admin username is empty".into(),
                ));
            }
            check_ttls(default_ttl_secs, max_ttl_secs)?;
            Ok(AddonConfig::InfluxdbV1 {
                endpoint_url,
                username,
                password,
                privileges: validate_privileges(privileges)?,
                default_ttl_secs,
                max_ttl_secs,
            })
        }
    }
}

/// Milliseconds from `from` until `at`; 0 if `at` is not later.
fn millis_between(from: std::time::SystemTime, at: Timestamp) -> u64 {
    at.to_system().duration_since(from).map_or(0, |left| {
        u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
    })
}

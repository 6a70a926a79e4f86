//! What each request does, with who may do it.

use std::collections::BTreeMap;
use std::sync::Arc;

use leasehold_channel::membership::Membership;
use leasehold_channel::protocol::{
    AddonConfig, AddonSummary, Grant, LEASE_PAGE_MAX, LeaseStatus, MemberRecord, PolicyRecord,
    PolicySpec, Reply, Request, TicketInfo, TicketRecord, Timestamp,
};
use leasehold_channel::ticket::{Ticket, secret_hash, ticket_id};
use leasehold_channel::{PublicIdentity, Secret};

use tracing::Instrument;

use crate::backend::{LeaseSpec, new_lease_id};
use crate::control::{Addon, Control, record, status};
use crate::error::ControlError;
use crate::grant::{Privilege, normalize_permissions};
use crate::policy::{self, MAX_LIVE_LEASES_LIMIT, MAX_TTL_SECS, lease_ttl, policy_id, terms_for};
use crate::store::{LeaseFilter, Store, StoredLease, StoredTicket};

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
            Request::LeasePage {
                status,
                member,
                after,
                limit,
            } => self.lease_page(peer, status, member, after, limit).await,
            Request::LeaseShow { id } => {
                let (lease, _) = self.visible_lease(peer, &id).await?;
                Ok(Reply::Lease(record(&lease, Timestamp::now())))
            }
            Request::LeaseRevoke { id } => {
                let (lease, _) = self.visible_lease(peer, &id).await?;
                let lease = self.revoke_now(lease, peer).await?;
                Ok(Reply::Lease(record(&lease, Timestamp::now())))
            }
            Request::AddonConfigure { addon, skip_verify } => {
                self.admin(peer).await?;
                self.configure_addon(addon, skip_verify).await
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
                    denied: self.store.denied().await?,
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
            Request::MemberAllow { id } => {
                self.admin(peer).await?;
                let id = parse_member_id(&id)?;
                if !self.store.allow(id).await? {
                    return Err(ControlError::NotFound("denied identity"));
                }
                tracing::info!(identity = %id, by = %peer, "identity allowed to enroll again");
                Ok(Reply::Done)
            }
            Request::TicketList => {
                self.admin(peer).await?;
                self.list_tickets().await
            }
            Request::TicketRevoke { id } => {
                self.admin(peer).await?;
                self.revoke_ticket(peer, &id).await
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
        validate_enrollment_name(&name)?;
        let member = self
            .store
            .redeem_ticket(secret_hash(bytes.as_ref()), Timestamp::now(), peer, name)
            .await??;
        tracing::info!(identity = %member.id, name = %member.name, attributes = %json_text(&member.attributes), "member enrolled");
        Ok(Reply::Member(member))
    }

    async fn create_lease(&self, peer: PublicIdentity, ttl_secs: Option<u64>) -> Result<Reply> {
        // The lifetime is stated from here: the client counts it from when it sent the
        // request, which was earlier, so its deadline never outlives the lease.
        let asked = std::time::SystemTime::now();
        let member = self.member(peer).await?;
        let addon = self.addon()?;
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
        // Counted before anything else happens, so creates that arrive together
        // cannot all pass the cap.
        self.live
            .reserve(peer, &id, expires_at, created_at, terms.max_live_leases)
            .map_err(|at_cap| ControlError::TooManyLeases { max: at_cap.max })?;
        let issued = self
            .issue(peer, &id, created_at, expires_at, &terms.grant, &addon)
            .await;
        let (lease, token) = match issued {
            Ok(issued) => issued,
            Err(error) => {
                self.live.release(peer, &id, expires_at);
                return Err(error);
            }
        };
        tracing::info!(
            lease.id = %id,
            identity = %peer,
            name = %member.name,
            expires_at = %expires_at,
            ttl_secs = ttl,
            policy = terms.policy.as_deref().unwrap_or("add-on default"),
            "lease issued"
        );
        let mut record = record(&lease, created_at);
        record.token = Some(token);
        // Stated outright: the proxy counts it on its monotonic clock.
        record.ttl_ms = Some(millis_between(asked, expires_at));
        // Membership for as long as the lease: an outlet stops admitting this member
        // when it stops being renewed (`membership.rs`).
        record.membership = Some(
            Membership {
                subject: peer,
                attributes: member.attributes.clone(),
                expires_at: expires_at.0,
            }
            .sign(&self.identity),
        );
        Ok(Reply::Lease(record))
    }

    /// Issues a lease: records the intent durably, has InfluxDB create the
    /// credential, then records the lease as issued. A credential InfluxDB created is
    /// either recorded or removed before this returns; and if the control dies in
    /// between, the intent gets it removed at expiry (see ARCHITECTURE.md).
    async fn issue(
        &self,
        peer: PublicIdentity,
        id: &str,
        created_at: Timestamp,
        expires_at: Timestamp,
        grant: &Grant,
        addon: &Arc<Addon>,
    ) -> Result<(StoredLease, Secret)> {
        let backend = &addon.backend;
        let mut lease = StoredLease {
            id: id.to_owned(),
            member: peer,
            created_at,
            expires_at,
            // Until issued, the name the credential will carry; then its id.
            credential_id: backend.credential_name(id, expires_at),
            auth_scheme: backend.auth_scheme(),
            endpoint_url: backend.endpoint_url().to_owned(),
            revoked_at: None,
            removed: false,
            issued: false,
            addon_id: Some(addon.id.clone()),
        };
        self.metrics
            .store("put_lease", self.store.put_lease(lease.clone()))
            .await?;
        if let Err(error) = self.keep_issuer(addon).await {
            // Recorded, so the next start tries again; the sweep covers the rest.
            tracing::error!(lease.id = %id, %error, "could not keep the add-on configuration that issued this lease");
        }
        // From here the store owes this lease's credential a removal at expiry, and
        // the revoker is told now rather than only at the next start.
        self.schedule(expires_at, id.to_owned());
        // Everything logged while issuing (backend errors included) carries the lease.
        let span = tracing::info_span!("lease", lease.id = %id, identity = %peer);
        // A failure leaves the intent in place: InfluxDB may have created the
        // credential before failing to answer (a timeout), and the intent removes it.
        let create = backend.create(LeaseSpec {
            id,
            expires_at,
            grant,
        });
        let issued = self
            .metrics
            .backend("create", create.instrument(span))
            .await?;
        crate::failpoint::after_credential_created();
        lease.credential_id = issued.credential_id;
        lease.issued = true;
        // Durable before the token leaves: a crash from here on still revokes it.
        if let Err(error) = self
            .metrics
            .store("put_lease", self.store.put_lease(lease.clone()))
            .await
        {
            match backend.revoke(&lease.credential_id).await {
                Ok(()) => {
                    tracing::warn!(lease.id = %id, "could not record an issued lease; its credential was removed")
                }
                Err(cleanup) => {
                    tracing::error!(lease.id = %id, error = %cleanup, "could not record an issued lease nor remove its credential; its intent removes it at expiry")
                }
            }
            return Err(error.into());
        }
        Ok((lease, issued.token))
    }

    /// The unpaged `lease list` of older clients: its first page only, so that no
    /// answer outgrows a message.
    async fn list_leases(&self, peer: PublicIdentity) -> Result<Reply> {
        match self
            .lease_page(peer, None, None, None, LEASE_PAGE_MAX)
            .await?
        {
            Reply::LeasePage { leases, .. } => Ok(Reply::Leases { leases }),
            other => Ok(other),
        }
    }

    /// One page of the leases the caller may see, oldest first, with the cursor for
    /// the next page when this one is full.
    async fn lease_page(
        &self,
        peer: PublicIdentity,
        status: Option<LeaseStatus>,
        member: Option<String>,
        after: Option<String>,
        limit: u32,
    ) -> Result<Reply> {
        let caller = self.member(peer).await?;
        let member = match member {
            Some(id) => Some(parse_member_id(&id)?),
            None => None,
        };
        let member = match member {
            _ if caller.is_admin() => member,
            None => Some(peer),
            Some(id) if id == peer => Some(peer),
            Some(_) => {
                return Err(ControlError::Forbidden(
                    "only an admin can list another member's leases",
                ));
            }
        };
        let now = Timestamp::now();
        let filter = LeaseFilter {
            member,
            status,
            now,
        };
        let limit = limit.clamp(1, LEASE_PAGE_MAX);
        let page = self
            .store
            .lease_page(filter, after, usize::try_from(limit).unwrap_or(usize::MAX))
            .await?;
        let next = (page.len() == usize::try_from(limit).unwrap_or(usize::MAX))
            .then(|| page.last().map(|l| l.id.clone()))
            .flatten();
        Ok(Reply::LeasePage {
            leases: page.iter().map(|l| record(l, now)).collect(),
            next,
        })
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
            // An intent never issued is no lease anyone holds.
            Some(lease) if !lease.issued => Err(ControlError::NotFound("lease")),
            Some(lease) if member.is_admin() || lease.member == peer => Ok((lease, member)),
            _ => Err(ControlError::NotFound("lease")),
        }
    }

    async fn delete_member(self: &Arc<Self>, by: PublicIdentity, id: &str) -> Result<Reply> {
        let id = parse_member_id(id)?;
        let member = self
            .store
            .deny_member(id, Timestamp::now())
            .await?
            .ok_or(ControlError::NotFound("member"))?;
        tracing::info!(identity = %member.id, name = %member.name, by = %by, "member deleted and denied re-enrollment; revoking its leases");
        let now = Timestamp::now();
        for lease in self.store.leases().await? {
            if lease.member == id
                && lease.issued
                && status(&lease, now) == leasehold_channel::protocol::LeaseStatus::Active
            {
                self.revoke_now(lease, by).await?;
            }
        }
        Ok(Reply::Member(member))
    }

    async fn configure_addon(&self, addon: AddonConfig, skip_verify: bool) -> Result<Reply> {
        let addon = Addon::new(validate_addon(addon)?)?;
        // Checked before anything is written: refused settings change nothing.
        let verified_version = if skip_verify {
            tracing::warn!(endpoint = %addon.backend.endpoint_url(), "add-on configured without verification (--skip-verify)");
            None
        } else {
            match addon.backend.verify().await {
                Ok(verified) => Some(verified.version),
                Err(error) => {
                    tracing::warn!(%error, "add-on settings refused");
                    return Err(ControlError::Unverified(error));
                }
            }
        };
        let (default_ttl_secs, max_ttl_secs) = policy::addon_ttls(&addon.config);
        let summary = AddonSummary {
            backend: match addon.config {
                AddonConfig::Influxdb { .. } => "influxdb",
                AddonConfig::InfluxdbV1 { .. } => "influxdb-v1",
            }
            .into(),
            endpoint_url: addon.backend.endpoint_url().to_owned(),
            default_ttl_secs,
            max_ttl_secs,
            max_live_leases: policy::addon_max_live_leases(&addon.config),
            verified_version,
            private_ca: matches!(
                &addon.config,
                AddonConfig::Influxdb {
                    ca_pem: Some(_),
                    ..
                } | AddonConfig::InfluxdbV1 {
                    ca_pem: Some(_),
                    ..
                }
            ),
        };
        let id = addon.id.clone();
        self.install_addon(addon).await?;
        tracing::info!(addon.id = %id, backend = %summary.backend, endpoint = %summary.endpoint_url, default_ttl_secs, max_ttl_secs, "add-on configured");
        Ok(Reply::Addon(summary))
    }

    async fn set_policy(&self, spec: PolicySpec) -> Result<Reply> {
        if spec.matches.is_empty() {
            return Err(ControlError::BadRequest(
                "a policy needs at least one --match KEY=VALUE".into(),
            ));
        }
        check_ttls(spec.default_ttl_secs, spec.max_ttl_secs)?;
        check_max_live_leases(spec.max_live_leases)?;
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
        let hash = secret_hash(ticket.secret.as_ref());
        let id = ticket_id(&hash).to_owned();
        self.store
            .put_ticket(
                hash,
                StoredTicket {
                    attributes: attributes.clone(),
                    expires_at,
                    remaining: usage_count,
                },
            )
            .await?;
        tracing::info!(ticket = %id, attributes = %json_text(&attributes), expires_at = %expires_at, usage_count, "ticket created");
        Ok(Reply::Ticket(TicketRecord {
            ticket: ticket.to_line(),
            attributes,
            expires_at,
            usage_count,
            id,
        }))
    }

    /// Tickets that can still be redeemed, soonest expiry first. Dead ones are pruned
    /// first, so what is listed is exactly what can be revoked.
    async fn list_tickets(&self) -> Result<Reply> {
        self.prune_tickets().await?;
        let mut tickets: Vec<TicketInfo> = self
            .store
            .tickets()
            .await?
            .into_iter()
            .map(|(hash, t)| TicketInfo {
                id: ticket_id(&hash).to_owned(),
                attributes: t.attributes,
                expires_at: t.expires_at,
                uses_left: t.remaining,
            })
            .collect();
        tickets.sort_by(|a, b| a.expires_at.cmp(&b.expires_at).then(a.id.cmp(&b.id)));
        Ok(Reply::Tickets { tickets })
    }

    async fn revoke_ticket(&self, by: PublicIdentity, id: &str) -> Result<Reply> {
        if id.len() != 16 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ControlError::BadRequest(format!(
                "{:?} is not a ticket id (16 hex digits, as ticket list shows)",
                id.escape_debug().take(40).collect::<String>()
            )));
        }
        let hash = self
            .store
            .tickets()
            .await?
            .into_iter()
            .map(|(hash, _)| hash)
            .find(|hash| ticket_id(hash) == id)
            .ok_or(ControlError::NotFound("ticket"))?;
        if !self.store.delete_ticket(hash).await? {
            return Err(ControlError::NotFound("ticket"));
        }
        tracing::info!(ticket = %id, by = %by, "ticket revoked");
        Ok(Reply::Done)
    }

    /// Removes expired and used-up tickets from the store.
    pub(crate) async fn prune_tickets(&self) -> Result<()> {
        let pruned = self.store.prune_tickets(Timestamp::now()).await?;
        if pruned > 0 {
            tracing::info!(pruned, "expired tickets pruned");
        }
        Ok(())
    }
}

/// The name a member enrolls under is shown to admins and written to logs: it follows
/// the rules of local identity names (1-64 letters, digits, `.`, `_`, `-`), so it can
/// carry no control character or terminal escape. A long name is not echoed back.
fn validate_enrollment_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 {
        return Err(ControlError::BadRequest(
            "identity name must be 1-64 characters".into(),
        ));
    }
    leasehold_channel::home::validate_name(name)
        .map_err(|e| ControlError::BadRequest(e.to_string()))
}

/// Attributes for the log as JSON text (the CLI's JSON log format turns it into an
/// object), not Rust `Debug`.
fn json_text(attributes: &BTreeMap<String, String>) -> String {
    serde_json::to_string(attributes).unwrap_or_default()
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
    if let Some(ttl) = default.into_iter().chain(max).find(|t| *t > MAX_TTL_SECS) {
        return Err(ControlError::BadRequest(format!(
            "ttl {ttl}s exceeds the limit of {MAX_TTL_SECS}s (30 days) for any lease"
        )));
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

fn check_max_live_leases(max: Option<u32>) -> Result<()> {
    match max {
        Some(n) if n == 0 || n > MAX_LIVE_LEASES_LIMIT => Err(ControlError::BadRequest(format!(
            "the live-lease cap must be between 1 and {MAX_LIVE_LEASES_LIMIT}, not {n}"
        ))),
        _ => Ok(()),
    }
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

/// A CA bundle given with the add-on must hold at least one certificate.
fn check_ca_pem(pem: Option<&str>) -> Result<()> {
    match pem {
        Some(pem) => crate::backend::parse_ca_pem(pem)
            .map(drop)
            .map_err(|e| ControlError::BadRequest(format!("--ca-file: {e}"))),
        None => Ok(()),
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
            max_live_leases,
            ca_pem,
        } => {
            validate_url(&endpoint_url)?;
            check_max_live_leases(max_live_leases)?;
            check_ca_pem(ca_pem.as_deref())?;
            if token.is_empty() {
                return Err(ControlError::BadRequest("the admin token is empty".into()));
            }
            if !crate::backend::is_valid_token(&token) {
                return Err(ControlError::BadRequest(
                    crate::backend::INVALID_TOKEN_MESSAGE.into(),
                ));
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
                max_live_leases,
                ca_pem,
            })
        }
        AddonConfig::InfluxdbV1 {
            endpoint_url,
            username,
            password,
            privileges,
            default_ttl_secs,
            max_ttl_secs,
            max_live_leases,
            ca_pem,
        } => {
            validate_url(&endpoint_url)?;
            check_max_live_leases(max_live_leases)?;
            check_ca_pem(ca_pem.as_deref())?;
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
                max_live_leases,
                ca_pem,
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

//! Lease operations: create (plan, the intent recorded under the member's cap in one
//! step, credential, issued record), list, show and revoke. Which terms apply and when
//! a lease ends is decided by the pure core ([`crate::lease`]); this file does the
//! asking and the writing.

use std::sync::Arc;
use std::time::SystemTime;

use leasehold_channel::membership::Membership;
use leasehold_channel::{PublicIdentity, Secret};
use leasehold_protocol::{LEASE_PAGE_MAX, LeaseStatus, Reply, Timestamp};
use tracing::Instrument;

use super::{Member, Result, parse_member_id};
use crate::backend::LeaseSpec;
use crate::control::{Addon, Control};
use crate::error::ControlError;
use crate::lease::{self, Issuer, Planned, record};
use crate::store::{LeaseFilter, Store, StoredLease};

/// The intent record of lease `id` about to be issued to `peer` by `addon`.
fn intent_for(peer: PublicIdentity, id: &str, planned: &Planned, addon: &Addon) -> StoredLease {
    let backend = &addon.backend;
    let issuer = Issuer {
        // Until issued, the name the credential will carry; then its id.
        credential_name: backend.credential_name(id, planned.expires_at),
        auth_scheme: backend.auth_scheme(),
        endpoint_url: backend.endpoint_url().to_owned(),
        addon_id: addon.id.clone(),
    };
    lease::intent(id, peer, planned, issuer)
}

impl<S: Store> Control<S> {
    pub(super) async fn create_lease(
        &self,
        caller: &Member,
        ttl_secs: Option<u64>,
    ) -> Result<Reply> {
        // The lifetime is stated from here: the client counts it from when it sent the
        // request, which was earlier, so its deadline never outlives the lease.
        let asked = SystemTime::now();
        let peer = caller.peer;
        let addon = self.addon()?;
        let policies = self.store.policies().await?;
        let now = SystemTime::now();
        let planned = lease::plan(
            &caller.record.attributes,
            &addon.config,
            &policies,
            ttl_secs,
            Timestamp::from_system(now),
        )
        // Refused, not clamped: the message names the maximum, so the caller can ask
        // again for what it may have.
        .map_err(|e| ControlError::BadRequest(e.to_string()))?;
        // The id from the same instant as the plan: ids are time-ordered, so the
        // store's inserts land at the right edge of its B-tree.
        let id = crate::entropy::new_lease_id(now)?;
        let expires_at = planned.expires_at;
        let intent = intent_for(peer, &id, &planned, &addon);
        // Checked and recorded in one step before anything else happens, so creates
        // that arrive together (on this replica or another sharing the store) cannot
        // all pass the cap. From here the store owes the intent's credential a removal.
        let reserve = self.store.reserve_lease(
            intent.clone(),
            planned.created_at,
            planned.terms.max_live_leases,
        );
        self.metrics
            .store("reserve_lease", reserve)
            .await?
            .map_err(|at_cap| ControlError::TooManyLeases { max: at_cap.max })?;
        // A failed issue gives its place under the cap back at once; its intent stays
        // owed a revocation but is no lease the member holds.
        let (lease, token) = match self.issue(intent.clone(), &planned, &addon).await {
            Ok(issued) => issued,
            Err(error) => {
                if let Err(release) = self.store.release_lease(intent).await {
                    tracing::warn!(lease.id = %id, error = %release, "could not give back a failed lease's place under the cap; it holds it until its expiry");
                }
                return Err(error);
            }
        };
        tracing::info!(
            lease.id = %id,
            identity = %peer,
            name = %caller.record.name,
            expires_at = %expires_at,
            ttl_secs = planned.ttl_secs,
            policy = planned.terms.policy.as_deref().unwrap_or("add-on default"),
            "lease issued"
        );
        let mut record = record(&lease, planned.created_at);
        record.token = Some(token);
        // Stated outright: the proxy counts it on its monotonic clock.
        record.ttl_ms = Some(lease::millis_until(asked, expires_at));
        // Membership for as long as the lease: an outlet stops admitting this member
        // when it stops being renewed (`membership.rs`).
        record.membership = Some(
            Membership {
                subject: peer,
                attributes: caller.record.attributes.clone(),
                expires_at: expires_at.0,
            }
            .sign(&self.identity),
        );
        Ok(Reply::Lease(record))
    }

    /// Issues the lease whose intent [`Store::reserve_lease`] recorded: has InfluxDB
    /// create the credential, then records the lease as issued. A credential InfluxDB
    /// created is either recorded or removed before this returns; and if the control
    /// dies in between, the intent gets it removed at expiry (see ARCHITECTURE.md).
    async fn issue(
        &self,
        mut lease: StoredLease,
        planned: &Planned,
        addon: &Arc<Addon>,
    ) -> Result<(StoredLease, Secret)> {
        let backend = &addon.backend;
        let (id, peer, expires_at) = (lease.id.clone(), lease.member, lease.expires_at);
        let id = id.as_str();
        if let Err(error) = self.keep_issuer(addon).await {
            // Recorded, so the next start tries again; the sweep covers the rest.
            tracing::error!(lease.id = %id, %error, "could not keep the add-on configuration that issued this lease");
        }
        // The store owes this lease's credential a removal at expiry, and the revoker
        // is told now rather than only at the next start.
        self.schedule(expires_at, id.to_owned());
        // Everything logged while issuing (backend errors included) carries the lease.
        let span = tracing::info_span!("lease", lease.id = %id, identity = %peer);
        // A failure leaves the intent in place: InfluxDB may have created the
        // credential before failing to answer (a timeout), and the intent removes it.
        let create = backend.create(LeaseSpec {
            id,
            expires_at,
            grant: &planned.terms.grant,
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
    pub(super) async fn list_leases(&self, caller: &Member) -> Result<Reply> {
        match self
            .lease_page(caller, None, None, None, LEASE_PAGE_MAX)
            .await?
        {
            Reply::LeasePage { leases, .. } => Ok(Reply::Leases { leases }),
            other => Ok(other),
        }
    }

    /// One page of the leases the caller may see, oldest first, with the cursor for
    /// the next page when this one is full.
    pub(super) async fn lease_page(
        &self,
        caller: &Member,
        status: Option<LeaseStatus>,
        member: Option<String>,
        after: Option<String>,
        limit: u32,
    ) -> Result<Reply> {
        let peer = caller.peer;
        let member = match member {
            Some(id) => Some(parse_member_id(&id)?),
            None => None,
        };
        let member = match member {
            _ if caller.record.is_admin() => member,
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
        // Pages are bounded by count, far below a message's cap, whatever is asked.
        let limit = usize::try_from(limit.clamp(1, LEASE_PAGE_MAX)).unwrap_or(usize::MAX);
        let page = self.store.lease_page(filter, after, limit).await?;
        // A full page may have a next one; its cursor is the last id (ids are
        // time-ordered keys, so the next page is a range scan from there).
        let next = (page.len() == limit)
            .then(|| page.last().map(|l| l.id.clone()))
            .flatten();
        Ok(Reply::LeasePage {
            leases: page.iter().map(|l| record(l, now)).collect(),
            next,
        })
    }

    pub(super) async fn show_lease(&self, caller: &Member, id: &str) -> Result<Reply> {
        let lease = self.visible_lease(caller, id).await?;
        Ok(Reply::Lease(record(&lease, Timestamp::now())))
    }

    pub(super) async fn revoke_lease(self: &Arc<Self>, caller: &Member, id: &str) -> Result<Reply> {
        let lease = self.visible_lease(caller, id).await?;
        let lease = self.revoke_now(lease, caller.peer).await?;
        Ok(Reply::Lease(record(&lease, Timestamp::now())))
    }

    /// A lease the caller may see: its own, or any for an admin. Others' leases are
    /// "not found", so ids cannot be probed.
    async fn visible_lease(&self, caller: &Member, id: &str) -> Result<StoredLease> {
        match self.store.lease(id.to_owned()).await? {
            // An intent never issued is no lease anyone holds.
            Some(lease) if !lease.issued => Err(ControlError::NotFound("lease")),
            Some(lease) if caller.record.is_admin() || lease.member == caller.peer => Ok(lease),
            _ => Err(ControlError::NotFound("lease")),
        }
    }
}

//! The control's operations, one file per group, and the dispatcher in front of them.
//!
//! Who may call what is decided here, once, by [`required_role`]: one table from
//! request to role, with no wildcard arm, so a new request does not compile until it is
//! given a role. The dispatcher looks the caller up accordingly and hands each operation
//! the proof it needs: a [`Member`] (the caller's record) or an [`Admin`]. Operations
//! take these proofs as arguments, so none can run without its check having passed.
//!
//! - [`lease`]: create (with its intent record), list, show, revoke.
//! - [`member`]: enroll, list, show, delete (and deny), allow.
//! - [`ticket`]: create, list, revoke, prune.
//! - [`policy`]: set, list, delete; the TTL and cap bounds settings are held to.
//! - [`addon`]: configure (validated, verified against InfluxDB, then installed).

mod addon;
mod lease;
mod member;
mod policy;
mod ticket;

use std::collections::BTreeMap;
use std::sync::Arc;

use leasehold_channel::PublicIdentity;
use leasehold_protocol::{MemberRecord, Reply, Request};

use crate::control::Control;
use crate::error::ControlError;
use crate::store::Store;

type Result<T> = std::result::Result<T, ControlError>;

/// Who may make a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Any authenticated peer, member or not (ping, and enrollment itself).
    Anyone,
    /// An enrolled member (its own leases; an admin's reach is wider, decided by the
    /// operation from the record it is given).
    Member,
    /// A member with `role=admin`.
    Admin,
}

/// The one table of who may call what.
pub fn required_role(request: &Request) -> Role {
    match request {
        Request::Ping | Request::Enroll { .. } => Role::Anyone,
        Request::LeaseCreate { .. }
        | Request::LeaseList
        | Request::LeasePage { .. }
        | Request::LeaseShow { .. }
        | Request::LeaseRevoke { .. } => Role::Member,
        Request::AddonConfigure { .. }
        | Request::PolicySet { .. }
        | Request::PolicyList
        | Request::PolicyDelete { .. }
        | Request::TicketCreate { .. }
        | Request::TicketList
        | Request::TicketRevoke { .. }
        | Request::MemberList
        | Request::MemberShow { .. }
        | Request::MemberDelete { .. }
        | Request::MemberAllow { .. } => Role::Admin,
    }
}

/// Proof that the caller is an enrolled member: its identity and record, as looked up
/// by the dispatcher for this request.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) peer: PublicIdentity,
    pub(crate) record: MemberRecord,
}

/// Proof that the caller is an admin.
#[derive(Debug, Clone)]
pub(crate) struct Admin(pub(crate) Member);

/// What the dispatcher established about the caller.
enum Caller {
    Anyone,
    Member(Member),
    Admin(Admin),
}

impl Caller {
    /// The member proof; only requests the table gives a member role reach for it.
    /// A table and dispatcher that disagreed would refuse, never grant.
    fn member(self) -> Result<Member> {
        match self {
            Self::Member(member) | Self::Admin(Admin(member)) => Ok(member),
            Self::Anyone => Err(ControlError::NotMember),
        }
    }

    fn admin(self) -> Result<Admin> {
        match self {
            Self::Admin(admin) => Ok(admin),
            Self::Member(_) => Err(ControlError::NotAdmin),
            Self::Anyone => Err(ControlError::NotMember),
        }
    }
}

impl<S: Store> Control<S> {
    /// Carries out `req` for the authenticated `peer`, after the check
    /// [`required_role`] names.
    pub async fn handle(self: &Arc<Self>, peer: PublicIdentity, req: Request) -> Result<Reply> {
        let caller = self.authorize(peer, required_role(&req)).await?;
        match req {
            Request::Ping => Ok(Reply::Pong {
                control: self.identity.public(),
            }),
            Request::Enroll { secret, name } => self.enroll(peer, &secret, name).await,
            Request::LeaseCreate { ttl_secs } => {
                self.create_lease(&caller.member()?, ttl_secs).await
            }
            Request::LeaseList => self.list_leases(&caller.member()?).await,
            Request::LeasePage {
                status,
                member,
                after,
                limit,
            } => {
                self.lease_page(&caller.member()?, status, member, after, limit)
                    .await
            }
            Request::LeaseShow { id } => self.show_lease(&caller.member()?, &id).await,
            Request::LeaseRevoke { id } => self.revoke_lease(&caller.member()?, &id).await,
            Request::AddonConfigure { addon, skip_verify } => {
                self.configure_addon(&caller.admin()?, addon, skip_verify)
                    .await
            }
            Request::PolicySet { policy } => self.set_policy(&caller.admin()?, policy).await,
            Request::PolicyList => self.list_policies(&caller.admin()?).await,
            Request::PolicyDelete { id } => self.delete_policy(&caller.admin()?, id).await,
            Request::TicketCreate {
                attributes,
                expires_in_secs,
                usage_count,
            } => {
                self.create_ticket(&caller.admin()?, attributes, expires_in_secs, usage_count)
                    .await
            }
            Request::TicketList => self.list_tickets(&caller.admin()?).await,
            Request::TicketRevoke { id } => self.revoke_ticket(&caller.admin()?, &id).await,
            Request::MemberList => self.list_members(&caller.admin()?).await,
            Request::MemberShow { id } => self.show_member(&caller.admin()?, &id).await,
            Request::MemberDelete { id } => self.delete_member(&caller.admin()?, &id).await,
            Request::MemberAllow { id } => self.allow_member(&caller.admin()?, &id).await,
        }
    }

    /// Looks the caller up as `role` needs: not at all for [`Role::Anyone`] (a
    /// non-member must be able to enroll), else its member record, refused with
    /// `NotMember` before `NotAdmin`.
    async fn authorize(&self, peer: PublicIdentity, role: Role) -> Result<Caller> {
        if role == Role::Anyone {
            return Ok(Caller::Anyone);
        }
        let record = self
            .store
            .member(peer)
            .await?
            .ok_or(ControlError::NotMember)?;
        let is_admin = record.is_admin();
        let member = Member { peer, record };
        match role {
            _ if is_admin => Ok(Caller::Admin(Admin(member))),
            Role::Admin => Err(ControlError::NotAdmin),
            _ => Ok(Caller::Member(member)),
        }
    }
}

/// A member id as given on the command line: an identity identifier.
fn parse_member_id(id: &str) -> Result<PublicIdentity> {
    id.parse().map_err(|_| {
        ControlError::BadRequest(format!(
            "{id:?} is not a member id (an identity identifier)"
        ))
    })
}

/// Attributes for the log as JSON text (the CLI's JSON log format turns it into an
/// object), not Rust `Debug`.
fn json_text(attributes: &BTreeMap<String, String>) -> String {
    serde_json::to_string(attributes).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests;

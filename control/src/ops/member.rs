//! Member operations: enrollment (a ticket redeemed), list, show, delete (which denies
//! re-enrollment and revokes the member's leases) and allow (which lifts the denial).

use std::sync::Arc;

use leasehold_channel::ticket::{decode_secret, secret_hash};
use leasehold_channel::{PublicIdentity, Secret};
use leasehold_protocol::{LeaseStatus, Reply, Timestamp};

use super::{Admin, Result, json_text, parse_member_id};
use crate::control::Control;
use crate::error::ControlError;
use crate::lease::status;
use crate::store::Store;

impl<S: Store> Control<S> {
    /// Enrolls `peer` with a ticket's secret. Anyone may try: the store checks and
    /// consumes the ticket in one transaction, and refuses members, denied identities
    /// and dead tickets alike without spending a use.
    pub(super) async fn enroll(
        &self,
        peer: PublicIdentity,
        secret: &Secret,
        name: String,
    ) -> Result<Reply> {
        // Malformed secrets and names are refused before the store is asked, so a
        // bad request spends no use of a real ticket.
        let bytes = decode_secret(secret.expose())
            .map_err(|_| ControlError::BadRequest("malformed ticket secret".into()))?;
        validate_enrollment_name(&name)?;
        let member = self
            .store
            .redeem_ticket(secret_hash(bytes.as_ref()), Timestamp::now(), peer, name)
            .await??;
        tracing::info!(identity = %member.id, name = %member.name, attributes = %json_text(&member.attributes), "member enrolled");
        Ok(Reply::Member(member))
    }

    /// Members and, separately, the identities denied re-enrollment (deleted ones),
    /// so an admin sees who could come back with `member allow`.
    pub(super) async fn list_members(&self, _: &Admin) -> Result<Reply> {
        Ok(Reply::Members {
            members: self.store.members().await?,
            denied: self.store.denied().await?,
        })
    }

    pub(super) async fn show_member(&self, _: &Admin, id: &str) -> Result<Reply> {
        let id = parse_member_id(id)?;
        let member = self
            .store
            .member(id)
            .await?
            .ok_or(ControlError::NotFound("member"))?;
        Ok(Reply::Member(member))
    }

    /// Deletes a member and denies its identity re-enrollment in one store transaction
    /// (a ticket it still holds must not bring it back), then revokes its live leases.
    pub(super) async fn delete_member(self: &Arc<Self>, by: &Admin, id: &str) -> Result<Reply> {
        let by = by.0.peer;
        let id = parse_member_id(id)?;
        let member = self
            .store
            .deny_member(id, Timestamp::now())
            .await?
            .ok_or(ControlError::NotFound("member"))?;
        tracing::info!(identity = %member.id, name = %member.name, by = %by, "member deleted and denied re-enrollment; revoking its leases");
        // Its leases end now rather than at expiry: a deleted member's proxy must stop
        // writing. Revocation continues in the background if InfluxDB is down.
        let now = Timestamp::now();
        for lease in self.store.leases().await? {
            if lease.member == id && lease.issued && status(&lease, now) == LeaseStatus::Active {
                self.revoke_now(lease, by).await?;
            }
        }
        Ok(Reply::Member(member))
    }

    pub(super) async fn allow_member(&self, by: &Admin, id: &str) -> Result<Reply> {
        let id = parse_member_id(id)?;
        if !self.store.allow(id).await? {
            return Err(ControlError::NotFound("denied identity"));
        }
        tracing::info!(identity = %id, by = %by.0.peer, "identity allowed to enroll again");
        Ok(Reply::Done)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrollment_names_follow_identity_names() {
        for good in ["a", "sensor-1.eu_west", &"x".repeat(64)] {
            assert!(validate_enrollment_name(good).is_ok(), "{good}");
        }
        for bad in ["", &"x".repeat(65), "a b", "a\u{1b}[31m", "é"] {
            assert!(validate_enrollment_name(bad).is_err(), "{bad:?}");
        }
    }
}

//! What the store holds about tickets and leases, and the filter for a page of leases:
//! plain records every [`super::Store`] implementation reads and writes the same way.

use std::collections::BTreeMap;

use leasehold_channel::PublicIdentity;
use leasehold_protocol::{AuthScheme, LeaseStatus, Timestamp};
use serde::{Deserialize, Serialize};

/// A ticket as stored: the secret itself is not, only its hash (the key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredTicket {
    /// Attributes the member will carry.
    pub attributes: BTreeMap<String, String>,
    /// Last moment it can be redeemed.
    pub expires_at: Timestamp,
    /// Redemptions left.
    pub remaining: u32,
}

/// A lease as stored. The credential's secret is never stored, only how to revoke it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredLease {
    /// Lease id (16 hex digits).
    pub id: String,
    /// The member it was issued to.
    pub member: PublicIdentity,
    /// Issue time.
    pub created_at: Timestamp,
    /// Expiry time.
    pub expires_at: Timestamp,
    /// What identifies the credential in InfluxDB: the v2 authorization id or the v1 user.
    /// In an intent (not yet `issued`), the name the credential will carry.
    pub credential_id: String,
    /// How the proxy presents the token.
    pub auth_scheme: AuthScheme,
    /// The InfluxDB it is valid for.
    pub endpoint_url: String,
    /// When it was revoked early, if it was.
    pub revoked_at: Option<Timestamp>,
    /// Whether the credential has been removed from InfluxDB. A lease with `removed`
    /// false is one the control still owes a revocation.
    pub removed: bool,
    /// Whether the credential was created and the lease handed out. `false` marks the
    /// *intent* written before InfluxDB is asked for the credential: if the control
    /// dies before recording the outcome, the intent is what gets any credential
    /// InfluxDB did create removed at expiry. Records written before intents existed
    /// were all issued.
    #[serde(default = "issued_by_default")]
    pub issued: bool,
    /// The add-on configuration that issued it ([`crate::issuer::addon_id`]): its
    /// revocation goes there, with that configuration's credential. Absent in leases
    /// recorded before configurations were told apart (matched by `endpoint_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addon_id: Option<String>,
}

fn issued_by_default() -> bool {
    true
}

impl StoredLease {
    /// Its status at `now`.
    pub fn status_at(&self, now: Timestamp) -> LeaseStatus {
        crate::lease::status_at(self.revoked_at, self.expires_at, now)
    }

    /// When it stopped being usable: revoked, or else expired.
    pub fn ended_at(&self) -> Timestamp {
        self.revoked_at
            .map_or(self.expires_at, |revoked| revoked.min(self.expires_at))
    }

    /// Whether the control still has business with it at `now`: it has not ended (it
    /// may be active), or its credential is still owed a removal. Every lease the
    /// control keeps in memory or lists as active is open; the rest is history, which
    /// grows with time (until retention prunes it) and which start-up and `lease list
    /// --status active` must not have to read.
    pub fn open_at(&self, now: Timestamp) -> bool {
        !self.removed || self.ended_at() > now
    }

    /// When its credential is owed a removal: when it ended, and for an intent not
    /// before [`ISSUE_WINDOW`] after it was begun.
    pub fn owed_at(&self) -> Timestamp {
        if self.issued {
            return self.ended_at();
        }
        let issuing_until = Timestamp(self.created_at.0.saturating_add(ISSUE_WINDOW.as_secs()));
        self.ended_at().max(issuing_until)
    }
}

/// How long after an intent is recorded the replica that recorded it may still be
/// issuing it: the backend's request timeout (10 s) and the time to record the
/// outcome. An intent's credential is not removed before, even past the lease's
/// expiry: when InfluxDB takes longer than the lease lives, removing the credential
/// under the issuing replica would have that replica then record it issued, and have
/// it removed a second time. An intent's credential was never handed out, so it
/// waiting a little longer costs nothing.
pub const ISSUE_WINDOW: std::time::Duration = std::time::Duration::from_secs(15);

/// Which leases a page of `lease list` holds. Intents never issued are not leases
/// anyone holds and are never listed.
#[derive(Debug, Clone, Copy)]
pub struct LeaseFilter {
    /// Only this member's.
    pub member: Option<PublicIdentity>,
    /// Only leases in this state at `now`.
    pub status: Option<LeaseStatus>,
    /// The time the status is judged at.
    pub now: Timestamp,
}

impl LeaseFilter {
    /// Whether `lease` belongs on the page.
    pub fn keeps(&self, lease: &StoredLease) -> bool {
        lease.issued
            && self.member.is_none_or(|m| m == lease.member)
            && self.status.is_none_or(|s| s == lease.status_at(self.now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intent_is_owed_its_removal_only_once_it_can_no_longer_be_in_the_making() {
        let mut lease = StoredLease {
            id: "0000000000000001".into(),
            member: leasehold_channel::Identity::generate().public(),
            created_at: Timestamp(100),
            expires_at: Timestamp(105),
            credential_id: "user".into(),
            auth_scheme: leasehold_protocol::AuthScheme::Basic,
            endpoint_url: "http://influx".into(),
            revoked_at: None,
            removed: false,
            issued: false,
            addon_id: None,
        };
        let window = ISSUE_WINDOW.as_secs();
        assert_eq!(
            lease.owed_at(),
            Timestamp(100 + window),
            "a short lease's intent"
        );
        lease.expires_at = Timestamp(1000);
        assert_eq!(lease.owed_at(), Timestamp(1000), "a long lease's intent");
        lease.issued = true;
        lease.expires_at = Timestamp(105);
        assert_eq!(lease.owed_at(), Timestamp(105), "issued: when it ended");
        lease.revoked_at = Some(Timestamp(102));
        assert_eq!(lease.owed_at(), Timestamp(102));
    }
}

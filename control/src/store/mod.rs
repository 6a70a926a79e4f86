//! The control's persistent state, behind a small interface.
//!
//! The rest of the control only sees these methods. Every method is one transaction;
//! [`Store::redeem_ticket`] in particular checks and consumes a ticket atomically.
//! The default implementation is [`RedbStore`], an embedded, crash-safe B-tree file;
//! [`PostgresStore`] is shared by several control replicas, with the claims and locks
//! that decide which replica does what ([`Store::shared`] and after).
//!
//! The add-on settings are not here but in the data directory (see
//! [`crate::datadir`]): they hold the credential needed to sweep InfluxDB, which must
//! work even when this state is lost.

mod any;
#[cfg(any(test, feature = "memory"))]
pub mod contract;
#[cfg(any(test, feature = "memory"))]
mod memory;
pub mod postgres;
mod redb;

use std::collections::BTreeMap;
use std::future::Future;

use leasehold_channel::PublicIdentity;
use leasehold_protocol::{
    AuthScheme, DeniedIdentity, LeaseStatus, MemberRecord, PolicyRecord, Timestamp,
};
use serde::{Deserialize, Serialize};

pub use self::any::AnyStore;
#[cfg(any(test, feature = "memory"))]
pub use self::memory::MemoryStore;
pub use self::postgres::PostgresStore;
pub use self::redb::RedbStore;

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
}

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

/// Why a ticket could not be redeemed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedeemError {
    /// No ticket with that secret (never issued, or used up).
    #[error("unknown or used-up ticket")]
    Unknown,
    /// The ticket expired.
    #[error("ticket expired")]
    Expired,
    /// The identity is a member already.
    #[error("identity is already enrolled")]
    AlreadyMember,
    /// The identity was deleted and is denied re-enrollment (`member allow` lifts it).
    #[error("identity was deleted and is denied re-enrollment")]
    Denied,
}

/// A storage failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {message}")]
pub struct StoreError {
    message: String,
    unavailable: bool,
}

impl StoreError {
    /// A failure of the store itself (a corrupt record, a refused write).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unavailable: false,
        }
    }

    /// The store could not be reached (a shared database down or cut off): another
    /// control replica may well reach it, so clients are told to try one.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unavailable: true,
        }
    }

    /// Whether the store could not be reached.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The control's persistent state.
pub trait Store: Send + Sync + 'static {
    /// Inserts or replaces a member.
    fn put_member(&self, member: MemberRecord) -> impl Future<Output = StoreResult<()>> + Send;
    /// A member by identity.
    fn member(
        &self,
        id: PublicIdentity,
    ) -> impl Future<Output = StoreResult<Option<MemberRecord>>> + Send;
    /// All members.
    fn members(&self) -> impl Future<Output = StoreResult<Vec<MemberRecord>>> + Send;
    /// Removes a member; returns it if it existed.
    fn delete_member(
        &self,
        id: PublicIdentity,
    ) -> impl Future<Output = StoreResult<Option<MemberRecord>>> + Send;

    /// Stores a new ticket under the hash of its secret.
    fn put_ticket(
        &self,
        hash: String,
        ticket: StoredTicket,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Atomically checks the ticket (exists, unexpired, uses left), consumes one use,
    /// and enrolls `member` with the ticket's attributes. Two concurrent redemptions of
    /// a one-use ticket: exactly one succeeds.
    fn redeem_ticket(
        &self,
        hash: String,
        now: Timestamp,
        member: PublicIdentity,
        name: String,
    ) -> impl Future<Output = StoreResult<Result<MemberRecord, RedeemError>>> + Send;

    /// Inserts or replaces a policy.
    fn put_policy(&self, policy: PolicyRecord) -> impl Future<Output = StoreResult<()>> + Send;
    /// All policies.
    fn policies(&self) -> impl Future<Output = StoreResult<Vec<PolicyRecord>>> + Send;
    /// Removes a policy; whether it existed.
    fn delete_policy(&self, id: String) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Inserts or replaces a lease. Durable when the future resolves.
    fn put_lease(&self, lease: StoredLease) -> impl Future<Output = StoreResult<()>> + Send;
    /// A lease by id.
    fn lease(&self, id: String) -> impl Future<Output = StoreResult<Option<StoredLease>>> + Send;
    /// All leases.
    fn leases(&self) -> impl Future<Output = StoreResult<Vec<StoredLease>>> + Send;
    /// Up to `limit` leases `filter` keeps, in id order (ids are time-ordered, so
    /// oldest first), starting after the id `after`.
    fn lease_page(
        &self,
        filter: LeaseFilter,
        after: Option<String>,
        limit: usize,
    ) -> impl Future<Output = StoreResult<Vec<StoredLease>>> + Send;
    /// Deletes the records of leases that ended (expired or revoked) at or before
    /// `ended_by` and whose credential is gone from InfluxDB; returns how many.
    fn prune_leases(&self, ended_by: Timestamp) -> impl Future<Output = StoreResult<usize>> + Send;

    /// In one transaction: removes member `id` and records its identity as denied, so
    /// no ticket enrolls it again. Returns the member if it existed (nothing is recorded
    /// otherwise).
    fn deny_member(
        &self,
        id: PublicIdentity,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<MemberRecord>>> + Send;
    /// Identities denied re-enrollment.
    fn denied(&self) -> impl Future<Output = StoreResult<Vec<DeniedIdentity>>> + Send;
    /// Lifts the denial of `id`; whether it was denied.
    fn allow(&self, id: PublicIdentity) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Every stored ticket with the hash it is stored under.
    fn tickets(&self) -> impl Future<Output = StoreResult<Vec<(String, StoredTicket)>>> + Send;
    /// Removes the ticket stored under `hash`; whether it existed.
    fn delete_ticket(&self, hash: String) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Removes every ticket that expired before `now` or has no use left; how many.
    fn prune_tickets(&self, now: Timestamp) -> impl Future<Output = StoreResult<usize>> + Send;

    /// Whether other control replicas share this store. A store of one process
    /// (embedded) needs none of the claims below: its in-process revocation queue
    /// already does each revocation once.
    fn shared(&self) -> bool {
        false
    }

    /// Claims the revocation of lease `id` for this process until `until`: true
    /// unless another replica holds a claim still current at `now`, or the credential
    /// is already removed. A process renews its own claim by claiming again.
    fn claim_revocation(
        &self,
        id: String,
        now: Timestamp,
        until: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        let _ = (id, now, until);
        async { Ok(true) }
    }

    /// Claims (until `until`) up to `limit` leases whose credential is owed a removal
    /// at `now` and that nobody holds a current claim on; their ids.
    fn claim_due(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> impl Future<Output = StoreResult<Vec<String>>> + Send {
        let _ = (now, until, limit);
        async { Ok(Vec::new()) }
    }

    /// Keeps add-on configuration `id` (sealed, see [`crate::sealed`]) and, if
    /// `current`, makes it the one in effect. Only a shared store keeps them: one
    /// process has them in its data directory.
    fn put_addon(
        &self,
        id: String,
        sealed: Vec<u8>,
        current: bool,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        let _ = (id, sealed, current);
        async { Ok(()) }
    }

    /// The id of the add-on configuration in effect, if the store keeps one.
    fn current_addon(&self) -> impl Future<Output = StoreResult<Option<String>>> + Send {
        async { Ok(None) }
    }

    /// Add-on configuration `id`, sealed, if the store keeps it.
    fn addon(&self, id: String) -> impl Future<Output = StoreResult<Option<Vec<u8>>>> + Send {
        let _ = id;
        async { Ok(None) }
    }

    /// The right to run housekeeping job `name` alone among the replicas, held until
    /// the guard drops; `None` when another replica holds it.
    fn exclusive(
        &self,
        name: &'static str,
    ) -> impl Future<Output = StoreResult<Option<Exclusive>>> + Send {
        let _ = name;
        async { Ok(Some(Exclusive::alone())) }
    }
}

/// The right to run a housekeeping job alone ([`Store::exclusive`]), until dropped.
pub struct Exclusive(#[allow(dead_code)] Option<Box<dyn Send + Sync>>);

impl Exclusive {
    /// In a store of one process: nothing to hold.
    pub fn alone() -> Self {
        Self(None)
    }

    /// Held by `guard` (a lock's session, say) until dropped.
    pub fn held(guard: Box<dyn Send + Sync>) -> Self {
        Self(Some(guard))
    }
}

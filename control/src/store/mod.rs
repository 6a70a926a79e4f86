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
//!
//! This file holds the interface ([`Store`]), [`Claimed`] and [`Exclusive`]; the records it stores
//! are in `records.rs`, its errors in `error.rs`.

mod any;
#[cfg(any(test, feature = "memory"))]
pub mod contract;
mod error;
#[cfg(any(test, feature = "memory"))]
mod memory;
pub mod postgres;
mod records;
mod redb;
mod redb_open_leases;

use std::future::Future;

use leasehold_channel::PublicIdentity;
use leasehold_protocol::{DeniedIdentity, MemberRecord, PolicyRecord, Timestamp};

pub use self::any::AnyStore;
pub use self::error::{AtCap, RedeemError, StoreError, StoreResult};
#[cfg(any(test, feature = "memory"))]
pub use self::memory::MemoryStore;
pub use self::postgres::PostgresStore;
pub use self::records::{LeaseFilter, StoredLease, StoredTicket};
pub use self::redb::RedbStore;

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

    /// Inserts or replaces a lease. Durable when the future resolves. A lease written
    /// revoked, or with its credential removed, stops counting against its member's
    /// cap (see [`Store::reserve_lease`]).
    fn put_lease(&self, lease: StoredLease) -> impl Future<Output = StoreResult<()>> + Send;
    /// Records `intent` (a lease about to be issued, see [`crate::lease::intent`]) only
    /// if its member holds fewer than `max` live leases at `now`, and counts it from
    /// then on: the check and the record are one atomic step for every process using
    /// the store, so creates that arrive together, on one replica or several, cannot
    /// all pass the cap. A member's live leases are those reserved (or written issued)
    /// that are not revoked, not removed, not released ([`Store::release_lease`]) and
    /// not expired at `now`.
    fn reserve_lease(
        &self,
        intent: StoredLease,
        now: Timestamp,
        max: u32,
    ) -> impl Future<Output = StoreResult<Result<(), AtCap>>> + Send;
    /// Gives back the place reservation `intent` took (its issue failed): the intent
    /// stays recorded, owed its revocation, but is no lease the member holds.
    fn release_lease(&self, intent: StoredLease) -> impl Future<Output = StoreResult<()>> + Send;
    /// A lease by id.
    fn lease(&self, id: String) -> impl Future<Output = StoreResult<Option<StoredLease>>> + Send;
    /// All leases.
    fn leases(&self) -> impl Future<Output = StoreResult<Vec<StoredLease>>> + Send;
    /// The leases [open](StoredLease::open_at) at `now`, in id order: what start-up
    /// rebuilds its in-memory views from. A store that can find them without reading
    /// every lease (an index) should say so here; this default reads them all.
    fn open_leases(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Vec<StoredLease>>> + Send {
        async move {
            let mut open = self.leases().await?;
            open.retain(|lease| lease.open_at(now));
            Ok(open)
        }
    }
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

    /// Claims the revocation of lease `id` for this process until `until`; `None`
    /// when another replica holds a claim still current at `now`, or the credential
    /// is already removed. A process renews its own claim by claiming again.
    fn claim_revocation(
        &self,
        id: String,
        now: Timestamp,
        until: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<Claimed>>> + Send {
        let _ = (now, until);
        async {
            Ok(Some(Claimed {
                id,
                taken_over: false,
            }))
        }
    }

    /// Claims (until `until`) up to `limit` leases whose credential is owed a removal
    /// at `now` and that nobody holds a current claim on.
    fn claim_due(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> impl Future<Output = StoreResult<Vec<Claimed>>> + Send {
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

/// A revocation this process now holds the claim on ([`Store::claim_revocation`],
/// [`Store::claim_due`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The lease.
    pub id: String,
    /// Whether another process's claim on it lapsed first. That process (a replica
    /// killed mid-revocation, say) may have removed the credential without living to
    /// record it, so the removal looks before it acts: InfluxDB then sees each
    /// credential removed once.
    pub taken_over: bool,
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

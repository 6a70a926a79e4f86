//! The store a serving control uses, chosen at start-up (`--store`): the embedded one
//! or the shared PostgreSQL one. One concrete type, so the rest of the control is
//! compiled once.

use leasehold_channel::PublicIdentity;
use leasehold_protocol::{DeniedIdentity, MemberRecord, PolicyRecord, Timestamp};

use super::{
    AtCap, Claimed, Exclusive, LeaseFilter, PostgresStore, RedbStore, RedeemError, Store,
    StoreResult, StoredLease, StoredTicket,
};

/// Where the control's state lives.
pub enum AnyStore {
    /// The embedded store in the data directory (one control process).
    Redb(RedbStore),
    /// Shared PostgreSQL (several replicas).
    Postgres(Box<PostgresStore>),
}

/// Calls the same method on whichever store it is.
macro_rules! each {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match $self {
            AnyStore::Redb(store) => store.$method($($arg),*).await,
            AnyStore::Postgres(store) => store.$method($($arg),*).await,
        }
    };
}

impl Store for AnyStore {
    async fn put_member(&self, member: MemberRecord) -> StoreResult<()> {
        each!(self.put_member(member))
    }
    async fn member(&self, id: PublicIdentity) -> StoreResult<Option<MemberRecord>> {
        each!(self.member(id))
    }
    async fn members(&self) -> StoreResult<Vec<MemberRecord>> {
        each!(self.members())
    }
    async fn delete_member(&self, id: PublicIdentity) -> StoreResult<Option<MemberRecord>> {
        each!(self.delete_member(id))
    }
    async fn put_ticket(&self, hash: String, ticket: StoredTicket) -> StoreResult<()> {
        each!(self.put_ticket(hash, ticket))
    }
    async fn redeem_ticket(
        &self,
        hash: String,
        now: Timestamp,
        member: PublicIdentity,
        name: String,
    ) -> StoreResult<Result<MemberRecord, RedeemError>> {
        each!(self.redeem_ticket(hash, now, member, name))
    }
    async fn put_policy(&self, policy: PolicyRecord) -> StoreResult<()> {
        each!(self.put_policy(policy))
    }
    async fn policies(&self) -> StoreResult<Vec<PolicyRecord>> {
        each!(self.policies())
    }
    async fn delete_policy(&self, id: String) -> StoreResult<bool> {
        each!(self.delete_policy(id))
    }
    async fn put_lease(&self, lease: StoredLease) -> StoreResult<()> {
        each!(self.put_lease(lease))
    }
    async fn reserve_lease(
        &self,
        intent: StoredLease,
        now: Timestamp,
        max: u32,
    ) -> StoreResult<Result<(), AtCap>> {
        each!(self.reserve_lease(intent, now, max))
    }
    async fn release_lease(&self, intent: StoredLease) -> StoreResult<()> {
        each!(self.release_lease(intent))
    }
    async fn lease(&self, id: String) -> StoreResult<Option<StoredLease>> {
        each!(self.lease(id))
    }
    async fn leases(&self) -> StoreResult<Vec<StoredLease>> {
        each!(self.leases())
    }
    async fn open_leases(&self, now: Timestamp) -> StoreResult<Vec<StoredLease>> {
        each!(self.open_leases(now))
    }
    async fn lease_page(
        &self,
        filter: LeaseFilter,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Vec<StoredLease>> {
        each!(self.lease_page(filter, after, limit))
    }
    async fn prune_leases(&self, ended_by: Timestamp) -> StoreResult<usize> {
        each!(self.prune_leases(ended_by))
    }
    async fn deny_member(
        &self,
        id: PublicIdentity,
        now: Timestamp,
    ) -> StoreResult<Option<MemberRecord>> {
        each!(self.deny_member(id, now))
    }
    async fn denied(&self) -> StoreResult<Vec<DeniedIdentity>> {
        each!(self.denied())
    }
    async fn allow(&self, id: PublicIdentity) -> StoreResult<bool> {
        each!(self.allow(id))
    }
    async fn tickets(&self) -> StoreResult<Vec<(String, StoredTicket)>> {
        each!(self.tickets())
    }
    async fn delete_ticket(&self, hash: String) -> StoreResult<bool> {
        each!(self.delete_ticket(hash))
    }
    async fn prune_tickets(&self, now: Timestamp) -> StoreResult<usize> {
        each!(self.prune_tickets(now))
    }
    fn shared(&self) -> bool {
        matches!(self, AnyStore::Postgres(_))
    }
    async fn claim_revocation(
        &self,
        id: String,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Option<Claimed>> {
        each!(self.claim_revocation(id, now, until))
    }
    async fn claim_due(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Claimed>> {
        each!(self.claim_due(now, until, limit))
    }
    async fn put_addon(&self, id: String, sealed: Vec<u8>, current: bool) -> StoreResult<()> {
        each!(self.put_addon(id, sealed, current))
    }
    async fn current_addon(&self) -> StoreResult<Option<String>> {
        each!(self.current_addon())
    }
    async fn addon(&self, id: String) -> StoreResult<Option<Vec<u8>>> {
        each!(self.addon(id))
    }
    async fn exclusive(&self, name: &'static str) -> StoreResult<Option<Exclusive>> {
        each!(self.exclusive(name))
    }
}

//! An in-memory [`Store`]: the same contract as [`super::RedbStore`] (checked by the
//! shared suite in [`super::contract`]), without a file, so the operations can be
//! unit-tested without a temporary directory. Nothing is durable: for tests only
//! (the `memory` feature), never for a serving control.
//!
//! One lock over all the tables makes every method one transaction, as the trait
//! asks; `redeem_ticket` checks and consumes under it, so it is atomic. Live leases are
//! counted as the embedded store counts them ([`crate::live`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use leasehold_channel::PublicIdentity;
use leasehold_protocol::{DeniedIdentity, MemberRecord, PolicyRecord, Timestamp};

use super::{AtCap, LeaseFilter, RedeemError, Store, StoreResult, StoredLease, StoredTicket};
use crate::live::LiveLeases;

/// The tables, keyed as the redb store keys them (so lists come out in the same order).
#[derive(Debug, Default)]
struct Tables {
    members: BTreeMap<String, MemberRecord>,
    tickets: BTreeMap<String, StoredTicket>,
    policies: BTreeMap<String, PolicyRecord>,
    leases: BTreeMap<String, StoredLease>,
    denied: BTreeMap<String, DeniedIdentity>,
}

/// A store held in memory; clones share it.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    tables: Arc<Mutex<Tables>>,
    live: Arc<LiveLeases>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tables. A panic while they were held cannot leave them half-written (every
    /// method writes after its checks), so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    async fn put_member(&self, member: MemberRecord) -> StoreResult<()> {
        self.lock().members.insert(member.id.to_string(), member);
        Ok(())
    }

    async fn member(&self, id: PublicIdentity) -> StoreResult<Option<MemberRecord>> {
        Ok(self.lock().members.get(&id.to_string()).cloned())
    }

    async fn members(&self) -> StoreResult<Vec<MemberRecord>> {
        Ok(self.lock().members.values().cloned().collect())
    }

    async fn delete_member(&self, id: PublicIdentity) -> StoreResult<Option<MemberRecord>> {
        Ok(self.lock().members.remove(&id.to_string()))
    }

    async fn put_ticket(&self, hash: String, ticket: StoredTicket) -> StoreResult<()> {
        self.lock().tickets.insert(hash, ticket);
        Ok(())
    }

    async fn redeem_ticket(
        &self,
        hash: String,
        now: Timestamp,
        member: PublicIdentity,
        name: String,
    ) -> StoreResult<Result<MemberRecord, RedeemError>> {
        let mut tables = self.lock();
        let key = member.to_string();
        // The same order of checks as the redb store: already a member, then denied
        // (spending no use and saying nothing of the ticket), then the ticket itself.
        if tables.members.contains_key(&key) {
            return Ok(Err(RedeemError::AlreadyMember));
        }
        if tables.denied.contains_key(&key) {
            return Ok(Err(RedeemError::Denied));
        }
        let attributes = match tables.tickets.get_mut(&hash) {
            None => return Ok(Err(RedeemError::Unknown)),
            Some(t) if t.remaining == 0 => return Ok(Err(RedeemError::Unknown)),
            Some(t) if t.expires_at < now => return Ok(Err(RedeemError::Expired)),
            Some(t) => {
                t.remaining -= 1;
                t.attributes.clone()
            }
        };
        // Used up: removed, as the redb store does, so `tickets` lists only live ones.
        if tables.tickets.get(&hash).is_some_and(|t| t.remaining == 0) {
            tables.tickets.remove(&hash);
        }
        let record = MemberRecord {
            id: member,
            name,
            attributes,
            enrolled_at: now,
        };
        tables.members.insert(key, record.clone());
        Ok(Ok(record))
    }

    async fn put_policy(&self, policy: PolicyRecord) -> StoreResult<()> {
        self.lock().policies.insert(policy.id.clone(), policy);
        Ok(())
    }

    async fn policies(&self) -> StoreResult<Vec<PolicyRecord>> {
        Ok(self.lock().policies.values().cloned().collect())
    }

    async fn delete_policy(&self, id: String) -> StoreResult<bool> {
        Ok(self.lock().policies.remove(&id).is_some())
    }

    async fn put_lease(&self, lease: StoredLease) -> StoreResult<()> {
        self.live.follow(&lease);
        self.lock().leases.insert(lease.id.clone(), lease);
        Ok(())
    }

    async fn reserve_lease(
        &self,
        intent: StoredLease,
        now: Timestamp,
        max: u32,
    ) -> StoreResult<Result<(), AtCap>> {
        let (member, expires_at) = (intent.member, intent.expires_at);
        if let Err(at_cap) = self.live.reserve(member, &intent.id, expires_at, now, max) {
            return Ok(Err(at_cap));
        }
        self.lock().leases.insert(intent.id.clone(), intent);
        Ok(Ok(()))
    }

    async fn release_lease(&self, intent: StoredLease) -> StoreResult<()> {
        self.live
            .release(intent.member, &intent.id, intent.expires_at);
        Ok(())
    }

    async fn lease(&self, id: String) -> StoreResult<Option<StoredLease>> {
        Ok(self.lock().leases.get(&id).cloned())
    }

    async fn leases(&self) -> StoreResult<Vec<StoredLease>> {
        Ok(self.lock().leases.values().cloned().collect())
    }

    async fn lease_page(
        &self,
        filter: LeaseFilter,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Vec<StoredLease>> {
        let tables = self.lock();
        // Keys are lease ids, time-ordered: a page is a range scan after the cursor.
        let start = match after {
            Some(after) => std::ops::Bound::Excluded(after),
            None => std::ops::Bound::Unbounded,
        };
        Ok(tables
            .leases
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, lease)| lease)
            .filter(|lease| filter.keeps(lease))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn prune_leases(&self, ended_by: Timestamp) -> StoreResult<usize> {
        let mut tables = self.lock();
        let before = tables.leases.len();
        tables
            .leases
            .retain(|_, lease| !(lease.removed && lease.ended_at() <= ended_by));
        Ok(before - tables.leases.len())
    }

    async fn deny_member(
        &self,
        id: PublicIdentity,
        now: Timestamp,
    ) -> StoreResult<Option<MemberRecord>> {
        let mut tables = self.lock();
        let key = id.to_string();
        let removed = tables.members.remove(&key);
        if let Some(member) = &removed {
            let record = DeniedIdentity {
                id,
                name: member.name.clone(),
                attributes: member.attributes.clone(),
                denied_at: now,
            };
            tables.denied.insert(key, record);
        }
        Ok(removed)
    }

    async fn denied(&self) -> StoreResult<Vec<DeniedIdentity>> {
        Ok(self.lock().denied.values().cloned().collect())
    }

    async fn allow(&self, id: PublicIdentity) -> StoreResult<bool> {
        Ok(self.lock().denied.remove(&id.to_string()).is_some())
    }

    async fn tickets(&self) -> StoreResult<Vec<(String, StoredTicket)>> {
        Ok(self
            .lock()
            .tickets
            .iter()
            .map(|(hash, t)| (hash.clone(), t.clone()))
            .collect())
    }

    async fn delete_ticket(&self, hash: String) -> StoreResult<bool> {
        Ok(self.lock().tickets.remove(&hash).is_some())
    }

    async fn prune_tickets(&self, now: Timestamp) -> StoreResult<usize> {
        let mut tables = self.lock();
        let before = tables.tickets.len();
        tables
            .tickets
            .retain(|_, t| !(t.remaining == 0 || t.expires_at < now));
        Ok(before - tables.tickets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;

    async fn fresh() -> ((), MemoryStore) {
        ((), MemoryStore::new())
    }

    crate::store_contract!(fresh);
}

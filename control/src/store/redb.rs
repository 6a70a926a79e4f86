//! [`Store`] on redb: one embedded file, ACID, crash-safe (copy-on-write B-trees with
//! a checksummed commit), pure Rust. Chosen over SQLite because it needs no C build and
//! the data is a handful of key-value tables; over a hand-rolled file because crash
//! safety is exactly the part not to write by hand.
//!
//! Values are JSON: readable with any tool, and tolerant of added fields. Every write is
//! a durable commit before the call returns. redb calls block, so each runs on tokio's
//! blocking pool.

use std::path::Path;
use std::sync::Arc;

use leasehold_channel::PublicIdentity;
use leasehold_channel::protocol::{MemberRecord, PolicyRecord, Timestamp};
use redb::{Database, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{RedeemError, Store, StoreError, StoreResult, StoredLease, StoredTicket};

const MEMBERS: TableDefinition<&str, &[u8]> = TableDefinition::new("members");
const TICKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("tickets");
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");
const POLICIES: TableDefinition<&str, &[u8]> = TableDefinition::new("policies");

/// The embedded store.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("stored records serialize")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError(format!("corrupt record: {e}")))
}

impl RedbStore {
    /// Opens (or creates) the store file and its tables.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let db = Database::create(path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        for table in [MEMBERS, TICKETS, LEASES, POLICIES] {
            txn.open_table(table).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        Ok(Self { db: Arc::new(db) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(err)?
    }

    async fn put(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: String,
        value: Vec<u8>,
    ) -> StoreResult<()> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            txn.open_table(table)
                .map_err(err)?
                .insert(key.as_str(), value.as_slice())
                .map_err(err)?;
            txn.commit().map_err(err)
        })
        .await
    }

    async fn get<T: DeserializeOwned + Send + 'static>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: String,
    ) -> StoreResult<Option<T>> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(table).map_err(err)?;
            match table.get(key.as_str()).map_err(err)? {
                Some(value) => decode(value.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn all<T: DeserializeOwned + Send + 'static>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
    ) -> StoreResult<Vec<T>> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(table).map_err(err)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(err)? {
                let (_, value) = entry.map_err(err)?;
                out.push(decode(value.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn delete<T: DeserializeOwned + Send + 'static>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: String,
    ) -> StoreResult<Option<T>> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            let removed = {
                let mut table = txn.open_table(table).map_err(err)?;
                let removed = table.remove(key.as_str()).map_err(err)?;
                match removed {
                    Some(value) => Some(decode(value.value())?),
                    None => None,
                }
            };
            txn.commit().map_err(err)?;
            Ok(removed)
        })
        .await
    }
}

impl Store for RedbStore {
    async fn put_member(&self, member: MemberRecord) -> StoreResult<()> {
        self.put(MEMBERS, member.id.to_string(), encode(&member))
            .await
    }

    async fn member(&self, id: PublicIdentity) -> StoreResult<Option<MemberRecord>> {
        self.get(MEMBERS, id.to_string()).await
    }

    async fn members(&self) -> StoreResult<Vec<MemberRecord>> {
        self.all(MEMBERS).await
    }

    async fn delete_member(&self, id: PublicIdentity) -> StoreResult<Option<MemberRecord>> {
        self.delete(MEMBERS, id.to_string()).await
    }

    async fn put_ticket(&self, hash: String, ticket: StoredTicket) -> StoreResult<()> {
        self.put(TICKETS, hash, encode(&ticket)).await
    }

    async fn redeem_ticket(
        &self,
        hash: String,
        now: Timestamp,
        member: PublicIdentity,
        name: String,
    ) -> StoreResult<Result<MemberRecord, RedeemError>> {
        // One write transaction: redb serializes writers, so check-and-consume is atomic.
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            let outcome = {
                let mut tickets = txn.open_table(TICKETS).map_err(err)?;
                let mut members = txn.open_table(MEMBERS).map_err(err)?;
                let ticket: Option<StoredTicket> = match tickets.get(hash.as_str()).map_err(err)? {
                    Some(value) => Some(decode(value.value())?),
                    None => None,
                };
                let member_key = member.to_string();
                let already = members.get(member_key.as_str()).map_err(err)?.is_some();
                // Already a member first: re-enrolling is then a no-op, whatever the ticket.
                match ticket {
                    _ if already => Err(RedeemError::AlreadyMember),
                    None => Err(RedeemError::Unknown),
                    Some(t) if t.remaining == 0 => Err(RedeemError::Unknown),
                    Some(t) if t.expires_at < now => Err(RedeemError::Expired),
                    Some(mut t) => {
                        t.remaining -= 1;
                        if t.remaining == 0 {
                            tickets.remove(hash.as_str()).map_err(err)?;
                        } else {
                            tickets
                                .insert(hash.as_str(), encode(&t).as_slice())
                                .map_err(err)?;
                        }
                        let record = MemberRecord {
                            id: member,
                            name,
                            attributes: t.attributes,
                            enrolled_at: now,
                        };
                        members
                            .insert(member_key.as_str(), encode(&record).as_slice())
                            .map_err(err)?;
                        Ok(record)
                    }
                }
            };
            if outcome.is_ok() {
                txn.commit().map_err(err)?;
            } else {
                txn.abort().map_err(err)?;
            }
            Ok(outcome)
        })
        .await
    }

    async fn put_policy(&self, policy: PolicyRecord) -> StoreResult<()> {
        self.put(POLICIES, policy.id.clone(), encode(&policy)).await
    }

    async fn policies(&self) -> StoreResult<Vec<PolicyRecord>> {
        self.all(POLICIES).await
    }

    async fn delete_policy(&self, id: String) -> StoreResult<bool> {
        Ok(self.delete::<PolicyRecord>(POLICIES, id).await?.is_some())
    }

    async fn put_lease(&self, lease: StoredLease) -> StoreResult<()> {
        self.put(LEASES, lease.id.clone(), encode(&lease)).await
    }

    async fn lease(&self, id: String) -> StoreResult<Option<StoredLease>> {
        self.get(LEASES, id).await
    }

    async fn leases(&self) -> StoreResult<Vec<StoredLease>> {
        self.all(LEASES).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_channel::Identity;
    use std::collections::BTreeMap;

    fn store() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("store.redb")).unwrap();
        (dir, store)
    }

    fn ticket(remaining: u32, expires_at: u64) -> StoredTicket {
        StoredTicket {
            attributes: BTreeMap::from([("service".into(), "iot".into())]),
            expires_at: Timestamp(expires_at),
            remaining,
        }
    }

    #[tokio::test]
    async fn one_use_ticket_enrolls_exactly_one_of_many_concurrent_redeemers() {
        let (_dir, store) = store();
        store.put_ticket("h".into(), ticket(1, 2000)).await.unwrap();
        let attempts = (0..16).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .redeem_ticket(
                        "h".into(),
                        Timestamp(1000),
                        Identity::generate().public(),
                        format!("n{i}"),
                    )
                    .await
                    .unwrap()
            })
        });
        let mut wins = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(_) => wins += 1,
                Err(e) => assert_eq!(e, RedeemError::Unknown),
            }
        }
        assert_eq!(wins, 1);
        assert_eq!(store.members().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn expired_and_reused_tickets_are_refused_and_change_nothing() {
        let (_dir, store) = store();
        store
            .put_ticket("old".into(), ticket(1, 999))
            .await
            .unwrap();
        let id = Identity::generate().public();
        assert_eq!(
            store
                .redeem_ticket("old".into(), Timestamp(1000), id, "a".into())
                .await
                .unwrap()
                .unwrap_err(),
            RedeemError::Expired
        );
        assert!(store.members().await.unwrap().is_empty());
        store
            .put_ticket("two".into(), ticket(2, 2000))
            .await
            .unwrap();
        store
            .redeem_ticket("two".into(), Timestamp(1000), id, "a".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store
                .redeem_ticket("two".into(), Timestamp(1000), id, "a".into())
                .await
                .unwrap()
                .unwrap_err(),
            RedeemError::AlreadyMember
        );
        // The refused attempt did not consume the second use.
        let other = Identity::generate().public();
        store
            .redeem_ticket("two".into(), Timestamp(1000), other, "b".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store
                .redeem_ticket(
                    "two".into(),
                    Timestamp(1000),
                    Identity::generate().public(),
                    "c".into()
                )
                .await
                .unwrap()
                .unwrap_err(),
            RedeemError::Unknown
        );
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let id = Identity::generate().public();
        {
            let store = RedbStore::open(&path).unwrap();
            store
                .put_member(MemberRecord {
                    id,
                    name: "n".into(),
                    attributes: BTreeMap::new(),
                    enrolled_at: Timestamp(1),
                })
                .await
                .unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.member(id).await.unwrap().unwrap().name, "n");
        assert!(store.delete_member(id).await.unwrap().is_some());
        assert!(store.member(id).await.unwrap().is_none());
    }
}

//! [`Store`] on redb: one embedded file, ACID, crash-safe (copy-on-write B-trees with
//! a checksummed commit), pure Rust. Chosen over SQLite because it needs no C build and
//! the data is a handful of key-value tables; over a hand-rolled file because crash
//! safety is exactly the part not to write by hand.
//!
//! Values are JSON: readable with any tool, and tolerant of added fields. Every write is
//! a durable commit before the call returns. Writes (an fsync each) and whole-table
//! scans of leases or members run on tokio's blocking pool. Point reads and the small
//! policies table are read in place: a redb read transaction on cached pages takes a
//! few microseconds, less than the two thread hand-offs of `spawn_blocking`, and every
//! lease issued does two of them (its member, the policies).
//!
//! Each member's live leases are counted in memory ([`crate::live`]): one process owns
//! the file, so the check under the cap and the reservation are one step under the
//! count's lock, with no read of the file; the counts are rebuilt when it is opened.
//!
//! The file is created 0600 (and an older, wider one narrowed to 0600 on open): it
//! holds every member and lease record, for the control's user only, like the key
//! beside it.
//!
//! Plain inserts (every lease issued is one) are **group-committed**: an insert joins a
//! queue, and whoever finds no commit in progress becomes the committer, taking every
//! insert queued by then into one transaction. Under load one fsync covers many leases;
//! alone, an insert costs what it did before. A commit costs about the same CPU however
//! few inserts it holds (~150–200 µs here: the fdatasync's writeback, redb's page
//! bookkeeping), and every lease makes two inserts, so when a commit ends with inserts
//! already waiting (writers are concurrent) the committer waits a little before taking
//! them, as long as that commit took and at most [`MAX_LINGER`], and the next commit
//! carries more. A lone writer never waits. No thread outlives the work, so dropping
//! the store closes the file. The commit cannot wedge the queue: if it fails, every insert
//! of the batch gets the error; if it panics, a drop guard fails every waiting insert
//! and hands the committer's role back, so the next insert commits as usual.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use leasehold_channel::PublicIdentity;
use leasehold_protocol::{DeniedIdentity, LeaseStatus, MemberRecord, PolicyRecord, Timestamp};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::redb_open_leases::{self as open_leases, Mark, OPEN_LEASES};
use super::{
    AtCap, LeaseFilter, RedeemError, Store, StoreError, StoreResult, StoredLease, StoredTicket,
};
use crate::live::LiveLeases;

const MEMBERS: TableDefinition<&str, &[u8]> = TableDefinition::new("members");
const TICKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("tickets");
pub(super) const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");
const POLICIES: TableDefinition<&str, &[u8]> = TableDefinition::new("policies");
/// Identities removed by `member delete`, refused re-enrollment: identifier → record.
const DENIED: TableDefinition<&str, &[u8]> = TableDefinition::new("denied");

/// A stored [`MemberRecord`] without its `id` (which is the key).
#[derive(serde::Deserialize)]
struct MemberFields {
    name: String,
    attributes: std::collections::BTreeMap<String, String>,
    enrolled_at: Timestamp,
}

/// Most inserts one group commit takes.
const MAX_BATCH: usize = 512;

/// Longest a committer waits for more inserts before committing those already waiting
/// (see the module comment). Waiting as long as the last commit took, bounded by this,
/// at most doubles a waiting insert's time to its commit on a fast disk; the measured
/// effect on commits and CPU per lease is in BENCHMARKS.md ("Group commit in the
/// embedded store").
const MAX_LINGER: Duration = Duration::from_micros(500);

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

/// One insert waiting for the writer thread.
struct Insert {
    table: Table,
    key: String,
    value: Vec<u8>,
    /// For a lease: its entry in the index of open leases.
    mark: Option<Mark>,
    done: tokio::sync::oneshot::Sender<StoreResult<()>>,
}

/// Inserts waiting for a commit, and whether a committer is at work.
#[derive(Default)]
struct Queue {
    inserts: Vec<Insert>,
    committing: bool,
    /// A failure to inject into the next batch (tests only).
    #[cfg(test)]
    fail_next: Option<InjectedFailure>,
}

/// What a test makes the next group commit do.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Clone, Copy)]
enum InjectedFailure {
    /// Fail the batch, as a failed fsync would.
    Error,
    /// Panic while holding the queue's lock, which also poisons it.
    Panic,
}

#[cfg(test)]
fn take_injected(queue: &mut Queue) -> Option<InjectedFailure> {
    queue.fail_next.take()
}

#[cfg(not(test))]
fn take_injected(_: &mut Queue) -> Option<InjectedFailure> {
    None
}

/// Locks the queue. A panic elsewhere cannot leave it inconsistent (every change under
/// the lock is a push, a drain or a flag), so a poisoned lock is simply taken over.
fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The committer's role, held by one thread at a time. Dropped without
/// [`Committer::finish`] (a panic while committing), it fails every insert still waiting
/// (their callers get an error instead of waiting for ever) and lets the next insert
/// become the committer.
struct Committer<'a> {
    queue: &'a Mutex<Queue>,
    finished: bool,
}

impl Committer<'_> {
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Committer<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let abandoned = {
                let mut queue = lock(self.queue);
                queue.committing = false;
                std::mem::take(&mut queue.inserts)
            };
            // Dropping an insert's sender answers its caller "commit abandoned".
            drop(abandoned);
        }
    }
}

/// The embedded store.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    queue: Arc<Mutex<Queue>>,
    live: Arc<LiveLeases>,
}

/// Commits queued inserts in batches until the queue is empty. The last batch is
/// answered only after this committer has let go of the database, so a caller that
/// drops the store after its write can reopen the file at once.
fn commit_queued(db: Arc<Database>, queue: &Mutex<Queue>) {
    let committer = Committer {
        queue,
        finished: false,
    };
    let mut db = Some(db);
    // Set after a commit that left inserts waiting: more are likely on their way.
    let mut linger = None;
    while let Some(handle) = db.as_deref() {
        if let Some(wait) = linger.take() {
            std::thread::sleep(wait);
        }
        // A batch being committed lives on this stack: a panic drops it, and with it
        // every sender, so its callers are answered too.
        let (batch, injected) = {
            let mut queue = lock(queue);
            let injected = take_injected(&mut queue);
            if let Some(InjectedFailure::Panic) = injected {
                panic!("injected panic while committing");
            }
            let take = queue.inserts.len().min(MAX_BATCH);
            (queue.inserts.drain(..take).collect::<Vec<_>>(), injected)
        };
        let started = Instant::now();
        let result = match injected {
            Some(_) => Err(StoreError::new("injected failure")),
            None => commit_batch(handle, &batch),
        };
        let took = started.elapsed();
        {
            let mut queue = lock(queue);
            if queue.inserts.is_empty() {
                queue.committing = false;
                db = None;
            } else if queue.inserts.len() < MAX_BATCH {
                // Wait for more, unless a full batch is waiting already.
                linger = Some(took.min(MAX_LINGER));
            }
        }
        for insert in batch {
            let _ = insert.done.send(result.clone());
        }
    }
    committer.finish();
}

/// One write transaction holding every insert of `batch`.
fn commit_batch(db: &Database, batch: &[Insert]) -> StoreResult<()> {
    let txn = db.begin_write().map_err(err)?;
    // One table opening per run of inserts into it: batches are nearly always all leases.
    for run in batch.chunk_by(|a, b| a.table.name() == b.table.name()) {
        let mut table = txn.open_table(run[0].table).map_err(err)?;
        for insert in run {
            table
                .insert(insert.key.as_str(), insert.value.as_slice())
                .map_err(err)?;
        }
    }
    for insert in batch {
        if let Some(mark) = insert.mark {
            mark.apply(&txn, &insert.key)?;
        }
    }
    txn.commit().map_err(err)
}

/// Every record of `table`, in key order.
fn scan<T: DeserializeOwned>(db: &Database, table: Table) -> StoreResult<Vec<T>> {
    let txn = db.begin_read().map_err(err)?;
    let table = txn.open_table(table).map_err(err)?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(err)? {
        let (_, value) = entry.map_err(err)?;
        out.push(decode(value.value())?);
    }
    Ok(out)
}

/// Creates the store file 0600 if it is missing (redb would create it with the
/// process's umask, 0644 as a rule), and narrows one an older release created wider.
fn private_file(path: &Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let mut permissions = file.metadata()?.permissions();
    if permissions.mode() & 0o077 != 0 {
        permissions.set_mode(0o600);
        file.set_permissions(permissions)?;
    }
    Ok(())
}

pub(super) fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(e.to_string())
}

/// A record as stored: JSON. The records are plain data that always serialize; a
/// failure is still an error for the caller, never a panic on a request path.
fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::new(format!("cannot encode a record: {e}")))
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::new(format!("corrupt record: {e}")))
}

impl RedbStore {
    /// Opens (or creates, 0600) the store file and its tables, and counts the live
    /// leases it holds.
    pub fn open(path: &Path) -> StoreResult<Self> {
        private_file(path)
            .map_err(|e| StoreError::new(format!("cannot create {}: {e}", path.display())))?;
        let db = Database::create(path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        for table in [MEMBERS, TICKETS, LEASES, POLICIES, DENIED] {
            txn.open_table(table).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        open_leases::ensure(&db)?;
        // The live-lease counts (for the cap) from the open leases only: history holds
        // no place under it.
        let live = LiveLeases::default();
        let now = Timestamp::now();
        for lease in open_leases::open(&db, now)? {
            if lease.issued && lease.status_at(now) == LeaseStatus::Active {
                live.restore(lease.member, lease.id, lease.expires_at);
            }
        }
        Ok(Self {
            db: Arc::new(db),
            queue: Arc::default(),
            live: Arc::new(live),
        })
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
        table: Table,
        key: String,
        value: Vec<u8>,
        mark: Option<Mark>,
    ) -> StoreResult<()> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let become_committer = {
            let mut queue = lock(&self.queue);
            queue.inserts.push(Insert {
                table,
                key,
                value,
                mark,
                done,
            });
            !std::mem::replace(&mut queue.committing, true)
        };
        if become_committer {
            let (db, queue) = (self.db.clone(), self.queue.clone());
            tokio::task::spawn_blocking(move || commit_queued(db, &queue));
        }
        answer
            .await
            .map_err(|_| StoreError::new("the store commit was abandoned"))?
    }

    /// A point read, in place (see the module comment).
    fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> StoreResult<Option<T>> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(table).map_err(err)?;
        match table.get(key).map_err(err)? {
            Some(value) => decode(value.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Every record of a table, on the blocking pool.
    async fn all<T: DeserializeOwned + Send + 'static>(&self, table: Table) -> StoreResult<Vec<T>> {
        self.blocking(move |db| scan(db, table)).await
    }

    async fn delete<T: DeserializeOwned + Send + 'static>(
        &self,
        table: Table,
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
        self.put(MEMBERS, member.id.to_string(), encode(&member)?, None)
            .await
    }

    async fn member(&self, id: PublicIdentity) -> StoreResult<Option<MemberRecord>> {
        // Every request looks its member up. The record's own `id` is the key we were
        // given, so it is not decoded again: parsing an identifier validates the point
        // (a field square root), which was 5% of the CPU of issuing a lease.
        let found: Option<MemberFields> = self.get(MEMBERS, &id.to_string())?;
        Ok(found.map(|m| MemberRecord {
            id,
            name: m.name,
            attributes: m.attributes,
            enrolled_at: m.enrolled_at,
        }))
    }

    async fn members(&self) -> StoreResult<Vec<MemberRecord>> {
        self.all(MEMBERS).await
    }

    async fn delete_member(&self, id: PublicIdentity) -> StoreResult<Option<MemberRecord>> {
        self.delete(MEMBERS, id.to_string()).await
    }

    async fn put_ticket(&self, hash: String, ticket: StoredTicket) -> StoreResult<()> {
        self.put(TICKETS, hash, encode(&ticket)?, None).await
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
                let denied = txn
                    .open_table(DENIED)
                    .map_err(err)?
                    .get(member_key.as_str())
                    .map_err(err)?
                    .is_some();
                // Already a member first: re-enrolling is then a no-op, whatever the ticket.
                match ticket {
                    _ if already => Err(RedeemError::AlreadyMember),
                    // Checked before the ticket: a denied identity learns nothing about it
                    // and spends none of its uses.
                    _ if denied => Err(RedeemError::Denied),
                    None => Err(RedeemError::Unknown),
                    Some(t) if t.remaining == 0 => Err(RedeemError::Unknown),
                    Some(t) if t.expires_at < now => Err(RedeemError::Expired),
                    Some(mut t) => {
                        t.remaining -= 1;
                        if t.remaining == 0 {
                            tickets.remove(hash.as_str()).map_err(err)?;
                        } else {
                            tickets
                                .insert(hash.as_str(), encode(&t)?.as_slice())
                                .map_err(err)?;
                        }
                        let record = MemberRecord {
                            id: member,
                            name,
                            attributes: t.attributes,
                            enrolled_at: now,
                        };
                        members
                            .insert(member_key.as_str(), encode(&record)?.as_slice())
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
        self.put(POLICIES, policy.id.clone(), encode(&policy)?, None)
            .await
    }

    async fn policies(&self) -> StoreResult<Vec<PolicyRecord>> {
        // A handful of records an administrator wrote: read in place.
        scan(&self.db, POLICIES)
    }

    async fn delete_policy(&self, id: String) -> StoreResult<bool> {
        Ok(self.delete::<PolicyRecord>(POLICIES, id).await?.is_some())
    }

    async fn put_lease(&self, lease: StoredLease) -> StoreResult<()> {
        let mark = Mark::of(&lease, Timestamp::now());
        self.put(LEASES, lease.id.clone(), encode(&lease)?, Some(mark))
            .await?;
        self.live.follow(&lease);
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
        // Not written: the place is given back at once.
        let id = intent.id.clone();
        let mark = Some(Mark::of(&intent, now));
        if let Err(error) = self.put(LEASES, id.clone(), encode(&intent)?, mark).await {
            self.live.release(member, &id, expires_at);
            return Err(error);
        }
        Ok(Ok(()))
    }

    async fn release_lease(&self, intent: StoredLease) -> StoreResult<()> {
        self.live
            .release(intent.member, &intent.id, intent.expires_at);
        Ok(())
    }

    async fn lease(&self, id: String) -> StoreResult<Option<StoredLease>> {
        self.get(LEASES, &id)
    }

    async fn leases(&self) -> StoreResult<Vec<StoredLease>> {
        self.all(LEASES).await
    }

    async fn open_leases(&self, now: Timestamp) -> StoreResult<Vec<StoredLease>> {
        self.blocking(move |db| open_leases::open(db, now)).await
    }

    async fn lease_page(
        &self,
        filter: LeaseFilter,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Vec<StoredLease>> {
        if filter.status == Some(leasehold_protocol::LeaseStatus::Active) {
            return self
                .blocking(move |db| open_leases::active_page(db, filter, after.as_deref(), limit))
                .await;
        }
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(LEASES).map_err(err)?;
            let start = match after.as_deref() {
                Some(after) => std::ops::Bound::Excluded(after),
                None => std::ops::Bound::Unbounded,
            };
            let mut page = Vec::new();
            for entry in table
                .range::<&str>((start, std::ops::Bound::Unbounded))
                .map_err(err)?
            {
                if page.len() >= limit {
                    break;
                }
                let lease: StoredLease = decode(entry.map_err(err)?.1.value())?;
                if filter.keeps(&lease) {
                    page.push(lease);
                }
            }
            Ok(page)
        })
        .await
    }

    async fn deny_member(
        &self,
        id: PublicIdentity,
        now: Timestamp,
    ) -> StoreResult<Option<MemberRecord>> {
        self.blocking(move |db| {
            let key = id.to_string();
            let txn = db.begin_write().map_err(err)?;
            let removed: Option<MemberRecord> = {
                let mut members = txn.open_table(MEMBERS).map_err(err)?;
                let removed = members.remove(key.as_str()).map_err(err)?;
                match removed {
                    Some(value) => Some(decode(value.value())?),
                    None => None,
                }
            };
            if let Some(member) = &removed {
                let record = DeniedIdentity {
                    id,
                    name: member.name.clone(),
                    attributes: member.attributes.clone(),
                    denied_at: now,
                };
                txn.open_table(DENIED)
                    .map_err(err)?
                    .insert(key.as_str(), encode(&record)?.as_slice())
                    .map_err(err)?;
            }
            txn.commit().map_err(err)?;
            Ok(removed)
        })
        .await
    }

    async fn prune_leases(&self, ended_by: Timestamp) -> StoreResult<usize> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            let pruned = {
                let mut table = txn.open_table(LEASES).map_err(err)?;
                let mut done = Vec::new();
                for entry in table.iter().map_err(err)? {
                    let (key, value) = entry.map_err(err)?;
                    let lease: StoredLease = decode(value.value())?;
                    if lease.removed && lease.ended_at() <= ended_by {
                        done.push(key.value().to_owned());
                    }
                }
                let mut index = txn.open_table(OPEN_LEASES).map_err(err)?;
                for key in &done {
                    table.remove(key.as_str()).map_err(err)?;
                    index.remove(key.as_str()).map_err(err)?;
                }
                done.len()
            };
            txn.commit().map_err(err)?;
            Ok(pruned)
        })
        .await
    }

    async fn denied(&self) -> StoreResult<Vec<DeniedIdentity>> {
        self.all(DENIED).await
    }

    async fn allow(&self, id: PublicIdentity) -> StoreResult<bool> {
        Ok(self
            .delete::<DeniedIdentity>(DENIED, id.to_string())
            .await?
            .is_some())
    }

    async fn tickets(&self) -> StoreResult<Vec<(String, StoredTicket)>> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(TICKETS).map_err(err)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(err)? {
                let (key, value) = entry.map_err(err)?;
                out.push((key.value().to_owned(), decode(value.value())?));
            }
            Ok(out)
        })
        .await
    }

    async fn delete_ticket(&self, hash: String) -> StoreResult<bool> {
        Ok(self.delete::<StoredTicket>(TICKETS, hash).await?.is_some())
    }

    async fn prune_tickets(&self, now: Timestamp) -> StoreResult<usize> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            let pruned = {
                let mut table = txn.open_table(TICKETS).map_err(err)?;
                let before = table.len().map_err(err)?;
                // Same test as redemption: a ticket is dead once past its expiry. A
                // record that does not decode is left for a human to look at.
                table
                    .retain(|_, value| {
                        !matches!(
                            serde_json::from_slice::<StoredTicket>(value),
                            Ok(t) if t.remaining == 0 || t.expires_at < now
                        )
                    })
                    .map_err(err)?;
                before - table.len().map_err(err)?
            };
            txn.commit().map_err(err)?;
            Ok(usize::try_from(pruned).unwrap_or(usize::MAX))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_channel::Identity;
    use std::collections::BTreeMap;

    async fn fresh() -> (tempfile::TempDir, RedbStore) {
        store()
    }

    crate::store_contract!(fresh);

    fn store() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("store.redb")).unwrap();
        (dir, store)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_inserts_are_group_committed_and_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let store = RedbStore::open(&path).unwrap();
        // Policies and members interleaved, so batches hold runs of both tables.
        let writes = (0..200).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    store
                        .put_policy(PolicyRecord {
                            id: format!("p{i}"),
                            spec: leasehold_protocol::PolicySpec {
                                matches: BTreeMap::from([("n".into(), i.to_string())]),
                                grant: leasehold_protocol::Grant::Privileges(vec![]),
                                default_ttl_secs: None,
                                max_ttl_secs: None,
                                max_live_leases: None,
                            },
                        })
                        .await
                } else {
                    store
                        .put_member(MemberRecord {
                            id: Identity::generate().public(),
                            name: format!("m{i}"),
                            attributes: BTreeMap::new(),
                            enrolled_at: Timestamp(1),
                        })
                        .await
                }
            })
        });
        for write in writes {
            write.await.unwrap().unwrap();
        }
        drop(store);
        let reopened = RedbStore::open(&path).unwrap();
        assert_eq!(reopened.policies().await.unwrap().len(), 100);
        assert_eq!(reopened.members().await.unwrap().len(), 100);
    }

    fn member(name: &str) -> MemberRecord {
        MemberRecord {
            id: Identity::generate().public(),
            name: name.into(),
            attributes: BTreeMap::new(),
            enrolled_at: Timestamp(1),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_or_panicking_group_commit_fails_its_inserts_and_later_ones_proceed() {
        for failure in [InjectedFailure::Error, InjectedFailure::Panic] {
            let (_dir, store) = store();
            lock(&store.queue).fail_next = Some(failure);
            // Every insert waiting when the commit fails is answered with an error
            // (none waits for ever); the injection hits the first batch only.
            let waiting: Vec<_> = (0..8)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move { store.put_member(member(&format!("w{i}"))).await })
                })
                .collect();
            let mut failed = 0;
            for insert in waiting {
                if insert.await.unwrap().is_err() {
                    failed += 1;
                }
            }
            assert!(failed >= 1, "the injected failure reached no insert");
            if let InjectedFailure::Panic = failure {
                assert!(store.queue.is_poisoned(), "the panic held the lock");
            }
            // The queue is not wedged: later inserts commit, alone and together.
            let later = member("later");
            store.put_member(later.clone()).await.unwrap();
            assert_eq!(store.member(later.id).await.unwrap().unwrap().name, "later");
            let together: Vec<_> = (0..16)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move { store.put_member(member(&format!("t{i}"))).await })
                })
                .collect();
            for insert in together {
                insert.await.unwrap().unwrap();
            }
            assert!(!lock(&store.queue).committing);
            assert_eq!(store.members().await.unwrap().len(), 8 - failed + 17);
        }
    }

    /// Reservations refused at the cap share the queue with accepted ones and with
    /// issued leases of other members: a refused one writes nothing and holds no other
    /// insert back, the accepted ones and the issued leases are all durable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_reservations_write_nothing_and_fail_no_other_insert_of_their_commit() {
        use crate::store::contract::lease;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let store = RedbStore::open(&path).unwrap();
        let (capped, other) = (Identity::generate().public(), Identity::generate().public());
        let now = Timestamp::now();
        let far = now.0 + 3600;
        let writes: Vec<_> = (0..96u64)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    if n % 3 == 0 {
                        store.put_lease(lease(n, other, far)).await.map(|()| None)
                    } else {
                        let intent = StoredLease {
                            issued: false,
                            ..lease(n, capped, far)
                        };
                        let reserved = store.reserve_lease(intent, now, 20).await?;
                        Ok(Some((n, reserved)))
                    }
                })
            })
            .collect();
        let mut reserved = Vec::new();
        for write in writes {
            match write.await.unwrap().unwrap() {
                Some((n, Ok(()))) => reserved.push(format!("{n:016x}")),
                Some((_, Err(at_cap))) => assert_eq!(at_cap, AtCap { max: 20 }),
                None => {}
            }
        }
        assert_eq!(reserved.len(), 20, "exactly the cap's worth");
        drop(store);
        let reopened = RedbStore::open(&path).unwrap();
        let leases = reopened.leases().await.unwrap();
        let mut of_capped: Vec<_> = leases
            .iter()
            .filter(|l| l.member == capped)
            .map(|l| l.id.clone())
            .collect();
        of_capped.sort();
        reserved.sort();
        assert_eq!(of_capped, reserved, "the refused wrote nothing");
        assert_eq!(leases.iter().filter(|l| l.member == other).count(), 32);
    }

    #[test]
    fn the_store_file_is_created_0600_and_an_older_wider_one_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        drop(RedbStore::open(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600, "narrowed on open");
        drop(store);
        assert!(RedbStore::open(&path).is_ok(), "still a store");
    }

    #[tokio::test]
    async fn live_leases_are_counted_again_when_the_file_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let member = Identity::generate().public();
        let now = Timestamp::now();
        let far = now.0 + 3600;
        {
            let store = RedbStore::open(&path).unwrap();
            for n in 0..2 {
                let lease = crate::store::contract::lease(n, member, far);
                store.put_lease(lease).await.unwrap();
            }
            let mut revoked = crate::store::contract::lease(2, member, far);
            revoked.revoked_at = Some(now);
            store.put_lease(revoked).await.unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        let mut intent = crate::store::contract::lease(3, member, far);
        intent.issued = false;
        assert_eq!(
            store.reserve_lease(intent.clone(), now, 2).await.unwrap(),
            Err(AtCap { max: 2 }),
            "the two issued leases count, the revoked one does not"
        );
        assert!(store.reserve_lease(intent, now, 3).await.unwrap().is_ok());
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
    /// A file written before the index of open leases existed gets it when opened: the
    /// open leases are found, the history is not.
    #[tokio::test]
    async fn a_store_without_the_open_lease_index_gets_it_built() {
        use crate::store::contract::lease;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let member = Identity::generate().public();
        {
            let store = RedbStore::open(&path).unwrap();
            let mut done = lease(1, member, 500);
            done.removed = true;
            store.put_lease(done).await.unwrap();
            store.put_lease(lease(2, member, 500)).await.unwrap();
        }
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            assert!(txn.delete_table(OPEN_LEASES).unwrap());
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        let open = store.open_leases(Timestamp(1000)).await.unwrap();
        assert_eq!(
            open.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
            [format!("{:016x}", 2)]
        );
    }
}

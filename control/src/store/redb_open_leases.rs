//! The embedded store's index of open leases (see [`StoredLease::open_at`]): lease id →
//! end time, for every lease not yet ended or still owed a removal when last written.
//!
//! History (leases ended, credential removed) is nearly every record of a long-lived
//! control, and only retention shrinks it. Start-up ([`open`]) and `lease list --status
//! active` ([`active_page`]) read this table, a few entries per live sidecar, instead
//! of decoding the whole lease table: both stay flat as history grows. Every lease
//! write updates the index in the same transaction ([`Mark`]), so the two never
//! disagree; a file written before the index existed gets it built once when opened
//! ([`ensure`]).
//!
//! The index may hold more than the open leases (a lease written while it still had
//! time left stays until its next write or its pruning), never fewer: readers check
//! each record it points to.

use redb::{Database, ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use super::{LeaseFilter, StoreResult, StoredLease};
use crate::store::redb::{LEASES, decode, err};
use leasehold_protocol::Timestamp;

/// Open lease id → its end time (whole seconds since the epoch).
pub(super) const OPEN_LEASES: TableDefinition<&str, u64> = TableDefinition::new("open_leases");

/// What writing a lease does to the index.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mark {
    /// Keep it, ending then.
    Open(u64),
    /// Drop it: it ended and its credential is gone.
    Closed,
}

impl Mark {
    /// The mark for `lease` written at `now`.
    pub(super) fn of(lease: &StoredLease, now: Timestamp) -> Self {
        if lease.open_at(now) {
            Self::Open(lease.ended_at().0)
        } else {
            Self::Closed
        }
    }

    /// Applies it to lease `id` in `txn`.
    pub(super) fn apply(self, txn: &WriteTransaction, id: &str) -> StoreResult<()> {
        let mut index = txn.open_table(OPEN_LEASES).map_err(err)?;
        match self {
            Self::Open(ended_at) => index.insert(id, ended_at).map(drop),
            Self::Closed => index.remove(id).map(drop),
        }
        .map_err(err)
    }
}

/// Creates the index if the file predates it, from one scan of the leases.
pub(super) fn ensure(db: &Database) -> StoreResult<()> {
    let txn = db.begin_write().map_err(err)?;
    let exists = txn
        .list_tables()
        .map_err(err)?
        .any(|table| table.name() == OPEN_LEASES.name());
    if !exists {
        let now = Timestamp::now();
        let mut indexed = 0;
        {
            let leases = txn.open_table(LEASES).map_err(err)?;
            let mut index = txn.open_table(OPEN_LEASES).map_err(err)?;
            for entry in leases.iter().map_err(err)? {
                let (id, value) = entry.map_err(err)?;
                let lease: StoredLease = decode(value.value())?;
                if let Mark::Open(ended_at) = Mark::of(&lease, now) {
                    index.insert(id.value(), ended_at).map_err(err)?;
                    indexed += 1;
                }
            }
        }
        tracing::info!(leases = indexed, "index of open leases built");
    }
    txn.commit().map_err(err)
}

/// The leases open at `now`, in id order.
pub(super) fn open(db: &Database, now: Timestamp) -> StoreResult<Vec<StoredLease>> {
    let txn = db.begin_read().map_err(err)?;
    let index = txn.open_table(OPEN_LEASES).map_err(err)?;
    let leases = txn.open_table(LEASES).map_err(err)?;
    let mut open = Vec::new();
    for entry in index.iter().map_err(err)? {
        let (id, _) = entry.map_err(err)?;
        if let Some(value) = leases.get(id.value()).map_err(err)? {
            let lease: StoredLease = decode(value.value())?;
            if lease.open_at(now) {
                open.push(lease);
            }
        }
    }
    Ok(open)
}

/// Up to `limit` active leases after `after` that `filter` keeps, in id order: only
/// index entries not yet ended at `filter.now` are read.
pub(super) fn active_page(
    db: &Database,
    filter: LeaseFilter,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<StoredLease>> {
    let txn = db.begin_read().map_err(err)?;
    let index = txn.open_table(OPEN_LEASES).map_err(err)?;
    let leases = txn.open_table(LEASES).map_err(err)?;
    let start = match after {
        Some(after) => std::ops::Bound::Excluded(after),
        None => std::ops::Bound::Unbounded,
    };
    let mut page = Vec::new();
    for entry in index
        .range::<&str>((start, std::ops::Bound::Unbounded))
        .map_err(err)?
    {
        if page.len() >= limit {
            break;
        }
        let (id, ended_at) = entry.map_err(err)?;
        if ended_at.value() <= filter.now.0 {
            continue;
        }
        if let Some(value) = leases.get(id.value()).map_err(err)? {
            let lease: StoredLease = decode(value.value())?;
            if filter.keeps(&lease) {
                page.push(lease);
            }
        }
    }
    Ok(page)
}

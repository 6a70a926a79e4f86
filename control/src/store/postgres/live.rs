//! Each member's live-lease cap, held across every replica: the check and the
//! reservation are one transaction. It takes a transaction-scoped advisory lock keyed
//! by the member, counts the member's live leases, and records the intent only under
//! the cap; a second replica reserving for the same member waits on the lock, then
//! counts the intent the first one committed. Members do not wait on each other
//! (short of a 32-bit hash collision, which only serializes two of them).
//!
//! A lease holds its place while its row's `holds` is true (set by a reservation or
//! by writing it issued, cleared by a revocation, a removal or a release) and its
//! `ended_at` (its expiry, since it is not revoked) is still ahead: the partial index
//! `leases_live (member, ended_at) WHERE holds` makes the count a short range scan of
//! the member's leases not yet ended or removed, whatever the table's history.

use leasehold_protocol::Timestamp;

use super::{PostgresStore, encode, secs, store_err};
use crate::store::{AtCap, StoreResult, StoredLease};

/// The first key of the advisory locks that serialize reservations (the second is the
/// member's hash): a range of two-key locks of its own, apart from the one-key locks
/// of migrations and housekeeping.
const RESERVATION_LOCKS: i32 = 0x6c68_6c76; // "lhlv"

/// [`crate::store::Store::reserve_lease`].
pub(super) async fn reserve(
    store: &PostgresStore,
    intent: StoredLease,
    now: Timestamp,
    max: u32,
) -> StoreResult<Result<(), AtCap>> {
    let record = encode(&intent)?;
    let member = intent.member.to_string();
    let mut client = store.client().await?;
    let txn = client.transaction().await.map_err(store_err)?;
    // Released at commit or rollback, whichever ends the transaction.
    txn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&RESERVATION_LOCKS, &member],
    )
    .await
    .map_err(store_err)?;
    // Read committed: this statement sees every reservation committed before the lock
    // was granted.
    let live: i64 = txn
        .query_one(
            "SELECT count(*) FROM leases WHERE member = $1 AND holds AND ended_at > $2",
            &[&member, &secs(now)],
        )
        .await
        .map_err(store_err)?
        .get(0);
    if live >= i64::from(max) {
        // Dropping the transaction rolls it back (and lets go of the lock).
        return Ok(Err(AtCap { max }));
    }
    txn.execute(
        "INSERT INTO leases (id, member, issued, removed, ended_at, record, holds)
         VALUES ($1, $2, $3, $4, $5, $6, true)",
        &[
            &intent.id,
            &member,
            &intent.issued,
            &intent.removed,
            &secs(intent.ended_at()),
            &record,
        ],
    )
    .await
    .map_err(store_err)?;
    txn.commit().await.map_err(store_err)?;
    Ok(Ok(()))
}

/// [`crate::store::Store::release_lease`]: the row stays, its place goes.
pub(super) async fn release(store: &PostgresStore, intent: StoredLease) -> StoreResult<()> {
    store
        .execute(
            "UPDATE leases SET holds = false WHERE id = $1",
            &[&intent.id],
        )
        .await?;
    Ok(())
}

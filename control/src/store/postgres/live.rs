//! Each member's live-lease cap, held across every replica: the check and the
//! reservation are one transaction (one statement, see [`RESERVE`]). It takes a
//! transaction-scoped advisory lock keyed by the member, counts the member's live
//! leases, and records the intent only under the cap; a second replica reserving for
//! the same member waits on the lock, then counts the intent the first one committed.
//! Members do not wait on each other (short of a 32-bit hash collision, which only
//! serializes two of them).
//!
//! A lease holds its place while its row's `holds` is true (set by a reservation or
//! by writing it issued, cleared by a revocation, a removal or a release) and its
//! `ended_at` (its expiry, since it is not revoked) is still ahead: the partial index
//! `leases_live (member, ended_at) WHERE holds` makes the count a short range scan of
//! the member's leases not yet ended or removed, whatever the table's history.

use leasehold_protocol::Timestamp;

use super::{PostgresStore, encode, secs, store_err};
use crate::store::{AtCap, StoreResult, StoredLease};

/// The reservation, one statement: `leasehold_reserve_lease` (migration 3) takes a
/// transaction-scoped advisory lock on (1818782838 = "lhlv", the member's hash), a
/// range of two-key locks apart from the one-key locks of migrations and housekeeping;
/// counts the member's live leases; and inserts the intent only under the cap. It runs
/// in the statement's own transaction, so the lock is let go at its commit. Inside
/// the function each statement reads afresh (read committed, which it insists on), so
/// the count sees every reservation committed before the lock was granted. One round
/// trip, the lock held for the server's work only.
const RESERVE: &str = "SELECT leasehold_reserve_lease($1, $2, $3, $4, $5, $6, $7, $8)";

/// [`crate::store::Store::reserve_lease`].
pub(super) async fn reserve(
    store: &PostgresStore,
    intent: StoredLease,
    now: Timestamp,
    max: u32,
) -> StoreResult<Result<(), AtCap>> {
    let record = encode(&intent)?;
    let client = store.client().await?;
    let statement = client.prepare_cached(RESERVE).await.map_err(store_err)?;
    let reserved: bool = client
        .query_one(
            &statement,
            &[
                &intent.member.to_string(),
                &secs(now),
                &i64::from(max),
                &intent.id,
                &intent.issued,
                &intent.removed,
                &secs(intent.owed_at()),
                &record,
            ],
        )
        .await
        .map_err(store_err)?
        .get(0);
    Ok(if reserved { Ok(()) } else { Err(AtCap { max }) })
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

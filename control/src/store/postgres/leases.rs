//! A page of leases: filtered by member and issued in SQL (indexed), by status (which
//! depends on the time) here, read in batches until the page is full. Active leases
//! are also narrowed in SQL (`ended_at` after now, the `leases_ended` index): they are
//! the few newest among a long history, which a scan in id order would read first.

use leasehold_protocol::LeaseStatus;

use super::{PostgresStore, secs};
use crate::store::{LeaseFilter, StoreResult, StoredLease};

/// Rows read per round trip when a page is filtered here rather than in SQL.
const SCAN_BATCH: i64 = 512;

/// Up to `limit` leases after `after` that `filter` keeps, in id order.
pub(super) async fn page(
    store: &PostgresStore,
    filter: LeaseFilter,
    after: Option<String>,
    limit: usize,
) -> StoreResult<Vec<StoredLease>> {
    // Member and issued in SQL (indexed); the status, which depends on `now`, here.
    let member = filter.member.map(|m| m.to_string());
    // An active lease has not ended (`ended_at` is its expiry, whole seconds like now).
    let live_after = (filter.status == Some(LeaseStatus::Active)).then(|| secs(filter.now));
    let mut cursor = after.unwrap_or_default();
    let mut page = Vec::new();
    while page.len() < limit {
        let batch: Vec<StoredLease> = store
            .records(
                "SELECT record FROM leases
                 WHERE id > $1 AND issued AND ($2::TEXT IS NULL OR member = $2)
                   AND ($4::BIGINT IS NULL OR ended_at > $4)
                 ORDER BY id LIMIT $3",
                &[&cursor, &member, &SCAN_BATCH, &live_after],
            )
            .await?;
        let Some(last) = batch.last() else { break };
        cursor = last.id.clone();
        let full = batch.len() < SCAN_BATCH as usize;
        page.extend(
            batch
                .into_iter()
                .filter(|lease| filter.keeps(lease))
                .take(limit - page.len()),
        );
        if full {
            break;
        }
    }
    Ok(page)
}

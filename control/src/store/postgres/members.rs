//! Denying a member: one transaction that removes the member and records the identity
//! on the denylist, so no replica sees one without the other.

use leasehold_channel::PublicIdentity;
use leasehold_protocol::{DeniedIdentity, MemberRecord, Timestamp};

use super::{PostgresStore, decode, encode, store_err};
use crate::store::StoreResult;

/// Removes member `id` and denies its identity; the removed record, if it was one.
pub(super) async fn deny(
    store: &PostgresStore,
    id: PublicIdentity,
    now: Timestamp,
) -> StoreResult<Option<MemberRecord>> {
    let mut client = store.client().await?;
    let txn = client.transaction().await.map_err(store_err)?;
    let key = id.to_string();
    let Some(row) = txn
        .query_opt(
            "DELETE FROM members WHERE id = $1 RETURNING record",
            &[&key],
        )
        .await
        .map_err(store_err)?
    else {
        return Ok(None);
    };
    let member: MemberRecord = decode(row.get::<_, &str>(0))?;
    let denied = DeniedIdentity {
        id,
        name: member.name.clone(),
        attributes: member.attributes.clone(),
        denied_at: now,
    };
    txn.execute(
        "INSERT INTO denied (id, record) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
        &[&key, &encode(&denied)?],
    )
    .await
    .map_err(store_err)?;
    txn.commit().await.map_err(store_err)?;
    Ok(Some(member))
}

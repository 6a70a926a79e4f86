//! The sealed add-on configurations and which one is in effect (a `leasehold_meta`
//! key), written together in one transaction.

use super::{PostgresStore, store_err};
use crate::store::StoreResult;

/// The `leasehold_meta` key of the add-on configuration in effect.
const CURRENT_ADDON_KEY: &str = "current_addon";

/// Records add-on configuration `id` (sealed), and makes it the one in effect if `current`.
pub(super) async fn put(
    store: &PostgresStore,
    id: String,
    sealed: Vec<u8>,
    current: bool,
) -> StoreResult<()> {
    let mut client = store.client().await?;
    let txn = client.transaction().await.map_err(store_err)?;
    txn.execute(
        "INSERT INTO addons (id, sealed) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET sealed = EXCLUDED.sealed",
        &[&id, &sealed],
    )
    .await
    .map_err(store_err)?;
    if current {
        txn.execute(
            "INSERT INTO leasehold_meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&CURRENT_ADDON_KEY, &id],
        )
        .await
        .map_err(store_err)?;
    }
    txn.commit().await.map_err(store_err)
}

/// The add-on configuration in effect, if any.
pub(super) async fn current(store: &PostgresStore) -> StoreResult<Option<String>> {
    let row = store
        .client()
        .await?
        .query_opt(
            "SELECT value FROM leasehold_meta WHERE key = $1",
            &[&CURRENT_ADDON_KEY],
        )
        .await
        .map_err(store_err)?;
    Ok(row.map(|r| r.get(0)))
}

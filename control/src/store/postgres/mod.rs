//! The shared store of a replicated control: PostgreSQL (`--store postgres://…`).
//!
//! Every replica reads and writes the same database, so everything they must agree on
//! is here: members, denylist, tickets (by hash), policies, leases with the revocations
//! still owed, and who is revoking what (claims, see `claims.rs`). Each
//! [`Store`](super::Store) method is one statement or one transaction; ticket
//! redemption locks the ticket's row (`SELECT … FOR UPDATE`), so two replicas
//! redeeming one single-use ticket at once enroll exactly one member; a lease's
//! reservation under its member's cap takes an advisory lock keyed by the member
//! (`live.rs`), so replicas creating leases for one member at once cannot all pass it.
//!
//! A database that cannot be reached is [`StoreError::unavailable`]: the replica
//! refuses what needs the store (a lease above all: the intent must be recorded before
//! InfluxDB is asked for a credential) and its clients move on to another replica.
//!
//! Connections are plain or TLS as the URL's `sslmode` says, with libpq's meaning
//! (`url.rs`), through rustls (`tls.rs`).
//!
//! This file holds the store's type and the helpers every statement uses. Opening it
//! and the identity checks are in `connect.rs`, its errors in `error.rs`, the
//! [`Store`](super::Store) methods in `store_impl.rs`, and the longer transactions
//! each in a file of their own: ticket redemption (`tickets.rs`), denying a member
//! (`members.rs`), a page of leases (`leases.rs`), the live-lease cap (`live.rs`), the
//! add-on settings (`addon.rs`) and claims (`claims.rs`).

mod addon;
mod claims;
mod connect;
mod error;
mod leases;
mod live;
mod members;
pub mod schema;
mod store_impl;
mod tickets;
mod tls;
mod url;

use deadpool_postgres::Pool;
use leasehold_protocol::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{StoreError, StoreResult};

pub use connect::is_postgres_url;
pub use error::PgError;
pub(crate) use error::pg;
use error::{pool_err, store_err};

fn encode<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::new(format!("cannot encode a record: {e}")))
}

fn decode<T: DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::new(format!("corrupt record: {e}")))
}

fn secs(t: Timestamp) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

/// The PostgreSQL store: a pool of connections, and this replica's name for claims.
pub struct PostgresStore {
    pool: Pool,
    /// For the dedicated connections that hold advisory locks (`claims.rs`).
    config: tokio_postgres::Config,
    /// Their TLS, as the pool's.
    tls: tls::PgTls,
    /// Names this process in claims (random per start).
    replica: String,
}

impl std::fmt::Debug for PostgresStore {
    // The configuration holds the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }

    async fn records<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<Vec<T>> {
        let rows = self
            .client()
            .await?
            .query(sql, params)
            .await
            .map_err(store_err)?;
        rows.iter()
            .map(|row| decode(row.get::<_, &str>(0)))
            .collect()
    }

    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> StoreResult<u64> {
        self.client()
            .await?
            .execute(sql, params)
            .await
            .map_err(store_err)
    }
}

#[cfg(test)]
mod live_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tls_tests;
#[cfg(test)]
mod upgrade_tests;

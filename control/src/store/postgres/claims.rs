//! Which replica does what, decided in the database.
//!
//! - A revocation is done by the replica holding the lease's claim: a row-level
//!   `claimed_by` / `claimed_until` pair, taken only while no other replica's claim is
//!   current. A replica renews its own claim at every attempt; one killed mid-revocation
//!   stops renewing, its claim lapses ([`crate::control::CLAIM_FOR`]), and the next
//!   replica's poll for due revocations takes the lease over. A takeover is reported
//!   as such ([`Claimed::taken_over`]): the dead holder may have removed the
//!   credential without recording it, so the new one looks before it removes.
//! - Due revocations are found with `FOR UPDATE SKIP LOCKED`: replicas polling at the
//!   same moment take disjoint sets instead of waiting on each other's rows.
//! - The periodic sweep and pruning run under a PostgreSQL advisory lock held by a
//!   connection of their own: one replica at a time, and a replica that dies releases
//!   it with its connection.

use leasehold_protocol::Timestamp;

use super::{PostgresStore, pg, secs, store_err};
use crate::store::{Claimed, Exclusive, StoreError, StoreResult};

/// Claims lease `id`'s revocation for this replica until `until`, unless another
/// replica's claim is current or the credential is already gone. The claim it
/// replaces (read under the row's lock, in the same statement) says whether another
/// replica's lapsed claim was taken over.
pub(super) async fn claim_one(
    store: &PostgresStore,
    id: String,
    now: Timestamp,
    until: Timestamp,
) -> StoreResult<Option<Claimed>> {
    let row = store
        .client()
        .await?
        .query_opt(
            "UPDATE leases AS l SET claimed_by = $2, claimed_until = $4
             FROM (SELECT id, claimed_by FROM leases WHERE id = $1 FOR UPDATE) AS before
             WHERE l.id = before.id AND NOT l.removed
               AND (l.claimed_by IS NULL OR l.claimed_by = $2 OR l.claimed_until <= $3)
             RETURNING before.claimed_by IS NOT NULL AND before.claimed_by <> $2",
            &[&id, &store.replica, &secs(now), &secs(until)],
        )
        .await
        .map_err(store_err)?;
    Ok(row.map(|row| Claimed {
        id,
        taken_over: row.get(0),
    }))
}

/// Claims up to `limit` leases whose credential is owed a removal by `now` (ended, or
/// an intent past its expiry) and that no replica holds a current claim on. A lease
/// that had a claim before (lapsed: its holder died or stalled) is a takeover.
pub(super) async fn claim_due(
    store: &PostgresStore,
    now: Timestamp,
    until: Timestamp,
    limit: usize,
) -> StoreResult<Vec<Claimed>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = store
        .client()
        .await?
        .query(
            "UPDATE leases AS l SET claimed_by = $2, claimed_until = $3
             FROM (
                 SELECT id, claimed_by FROM leases
                 WHERE NOT removed AND ended_at <= $1
                   AND (claimed_until IS NULL OR claimed_until <= $1)
                 ORDER BY ended_at
                 LIMIT $4
                 FOR UPDATE SKIP LOCKED
             ) AS due
             WHERE l.id = due.id
             RETURNING l.id, due.claimed_by IS NOT NULL",
            &[&secs(now), &store.replica, &secs(until), &limit],
        )
        .await
        .map_err(store_err)?;
    Ok(rows
        .iter()
        .map(|row| Claimed {
            id: row.get(0),
            taken_over: row.get(1),
        })
        .collect())
}

/// The advisory lock named `name`, if no other replica holds it. Held by a connection
/// of its own, closed when the returned guard drops (which releases the lock).
pub(super) async fn exclusive(
    store: &PostgresStore,
    name: &'static str,
) -> StoreResult<Option<Exclusive>> {
    let (client, connection) = store
        .config
        .connect(store.tls.clone())
        .await
        .map_err(|e| StoreError::from(pg(e)))?;
    let driver = tokio::spawn(connection);
    // The lock lives as long as this session does on the server's side. A replica cut
    // off from the database (packets dropped without a word) would keep it until the
    // server's own keepalives end the session: two hours with the usual defaults,
    // during which no replica sweeps or prunes. Ask the server to probe this session
    // as the replica probes its own connections (ignored over a Unix socket; a server
    // that refuses the settings still gives the lock, only later after a cut).
    if let Err(error) = client.batch_execute(SESSION_KEEPALIVES).await {
        tracing::debug!(%error, "the server kept its own keepalives for a lock session");
    }
    let held: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&lock_key(name)])
        .await
        .map_err(store_err)?
        .get(0);
    if !held {
        return Ok(None);
    }
    Ok(Some(Exclusive::held(Box::new(Held {
        _client: client,
        driver,
    }))))
}

/// Server-side keepalives for a lock session: a session across a cut ends after about
/// 3 s idle + 3 unanswered probes a second apart.
pub(super) const SESSION_KEEPALIVES: &str =
    "SET tcp_keepalives_idle = 3; SET tcp_keepalives_interval = 1; SET tcp_keepalives_count = 3";

/// A held advisory lock: its session.
struct Held {
    _client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // Ends the session, which releases the lock.
        self.driver.abort();
    }
}

/// A stable 64-bit key for lock `name` (FNV-1a), within leasehold's own range of keys.
fn lock_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"leasehold:".iter().chain(name.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

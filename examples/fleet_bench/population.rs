//! Filling the store before the control starts: enrolled identities and lease history.
//!
//! Enrollment is not what the benchmark measures, so members are written straight into
//! the store (the record a redeemed ticket would leave) rather than through 10,000
//! handshakes and ticket redemptions. Lease history is written the same way through the
//! store API; for PostgreSQL a million rows go in one `INSERT … SELECT generate_series`
//! through `psql`, the same columns and JSON record `put_lease` writes.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use leasehold_channel::{Identity, PublicIdentity};
use leasehold_control::store::{AnyStore, PostgresStore, RedbStore, Store, StoredLease};
use leasehold_protocol::{AuthScheme, MemberRecord, Timestamp};
use leasehold_testkit::postgres::{Postgres, USER};
use tokio::task::JoinSet;

use crate::fleet::Fleet;

/// Writes in flight at once: enough for redb's group commit to fill its batches and
/// for PostgreSQL's pool (16 connections) to stay busy.
const WRITERS: usize = 512;

/// Attempts at one write before the fill gives up.
const WRITE_ATTEMPTS: u32 = 5;

/// How long ago the oldest history record was issued: inside the default retention
/// (7 days), so that pruning at start-up keeps every record.
const HISTORY_SPAN: Duration = Duration::from_secs(6 * 86_400);

/// How long ago the newest history record was issued: long enough for it to have
/// ended (history is leases that ended; the live ones are written apart).
const HISTORY_END: Duration = Duration::from_secs(3600);

/// The lifetime of every history record (the default lease, 5 minutes).
const HISTORY_TTL_SECS: u64 = 300;

/// The fleet's store, opened from this process while no replica runs (redb allows one
/// process only).
pub async fn open(fleet: &Fleet, url: Option<&str>) -> anyhow::Result<Arc<AnyStore>> {
    Ok(Arc::new(match url {
        Some(url) => AnyStore::Postgres(Box::new(PostgresStore::open(url, fleet.control).await?)),
        None => AnyStore::Redb(RedbStore::open(&fleet.data().store_path())?),
    }))
}

/// `count` new identities, enrolled as members without attributes.
pub async fn enroll(store: &Arc<AnyStore>, count: usize) -> anyhow::Result<Vec<Identity>> {
    let identities: Vec<Identity> = (0..count).map(|_| Identity::generate()).collect();
    let records = identities
        .iter()
        .enumerate()
        .map(|(i, identity)| MemberRecord {
            id: identity.public(),
            name: format!("sidecar-{i}"),
            attributes: BTreeMap::new(),
            enrolled_at: Timestamp::now(),
        })
        .collect();
    write_all(store, records, |store, member| async move {
        store.put_member(member).await
    })
    .await?;
    Ok(identities)
}

/// `count` leases of `member` active for the next hour, issued now (the newest ids).
pub async fn active(
    store: &Arc<AnyStore>,
    member: PublicIdentity,
    endpoint: &str,
    count: usize,
) -> anyhow::Result<()> {
    let now = SystemTime::now();
    let leases = (0..count)
        .map(|_| {
            let id = leasehold_control::entropy::new_lease_id(now)?;
            let created = Timestamp::from_system(now);
            Ok(lease(
                id,
                member,
                created,
                Timestamp(created.0 + 3600),
                false,
                endpoint,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    write_all(store, leases, |store, lease| async move {
        store.put_lease(lease).await
    })
    .await
}

/// `count` ended leases of `member` (expired, credential removed) through the store
/// API, issued evenly over the last [`HISTORY_SPAN`] with ids of their issue time.
pub async fn history(
    store: &Arc<AnyStore>,
    member: PublicIdentity,
    endpoint: &str,
    count: usize,
) -> anyhow::Result<()> {
    let start_ms = unix_ms(SystemTime::now() - HISTORY_SPAN);
    let step_ms = (HISTORY_SPAN - HISTORY_END).as_millis() as u64 / (count as u64).max(1);
    let leases = (0..count as u64)
        .map(|i| {
            let issued_ms = start_ms + i * step_ms;
            let created = Timestamp(issued_ms / 1000);
            let id =
                leasehold_control::lease::format_id(leasehold_control::lease::id_at(issued_ms, 0));
            let expires = Timestamp(created.0 + HISTORY_TTL_SECS);
            lease(id, member, created, expires, true, endpoint)
        })
        .collect();
    write_all(store, leases, |store, lease| async move {
        store.put_lease(lease).await
    })
    .await
}

/// [`history`] in PostgreSQL with one statement (`psql`, the password in its
/// environment, not its arguments), then `ANALYZE`, as autovacuum would after such
/// growth.
pub fn history_sql(
    pg: &Postgres,
    database: &str,
    member: PublicIdentity,
    endpoint: &str,
    count: usize,
) -> anyhow::Result<()> {
    // The record `put_lease` writes, with placeholders for what varies per row.
    let template = serde_json::to_string(&lease(
        "@ID@".into(),
        member,
        Timestamp(1),
        Timestamp(2),
        true,
        endpoint,
    ))?
    .replace(&serde_json::to_string(&Timestamp(1))?, "\"@CREATED@\"")
    .replace(&serde_json::to_string(&Timestamp(2))?, "\"@EXPIRES@\"");
    anyhow::ensure!(template.contains("@CREATED@") && template.contains("@EXPIRES@"));
    let start_ms = unix_ms(SystemTime::now() - HISTORY_SPAN);
    let step_ms = (HISTORY_SPAN - HISTORY_END).as_millis() as u64 / (count as u64).max(1);
    let rfc3339 = |secs: &str| {
        format!(
            "to_char(to_timestamp({secs}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
        )
    };
    let sql = format!(
        "INSERT INTO leases (id, member, issued, removed, ended_at, record)
         SELECT id, '{member}', true, true, e,
                replace(replace(replace('{template}', '@ID@', id), '@CREATED@', {created}),
                        '@EXPIRES@', {expires})
         FROM (SELECT lpad(to_hex(ms << 20), 16, '0') AS id, ms / 1000 AS c,
                      ms / 1000 + {HISTORY_TTL_SECS} AS e
               FROM (SELECT {start_ms}::BIGINT + i * {step_ms}::BIGINT AS ms
                     FROM generate_series(0, {last}) AS i) AS times) AS rows;
         ANALYZE leases;",
        template = template.replace('\'', "''"),
        created = rfc3339("c"),
        expires = rfc3339("e"),
        last = count as i64 - 1,
    );
    let output = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args(["-p", &pg.port().to_string(), "-U", USER, "-d", database])
        .args(["-c", &sql])
        .env("PGPASSWORD", pg.password())
        .output()
        .context("running psql (Debian package postgresql-client)")?;
    anyhow::ensure!(
        output.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn lease(
    id: String,
    member: PublicIdentity,
    created_at: Timestamp,
    expires_at: Timestamp,
    ended: bool,
    endpoint: &str,
) -> StoredLease {
    StoredLease {
        credential_id: id.clone(),
        id,
        member,
        created_at,
        expires_at,
        auth_scheme: AuthScheme::Token,
        endpoint_url: endpoint.to_owned(),
        revoked_at: None,
        removed: ended,
        issued: true,
        addon_id: None,
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes `item`, again after a failure (a new PostgreSQL connection may take longer
/// than the pool waits on a loaded machine): up to [`WRITE_ATTEMPTS`] times.
async fn write_retrying<T, F, Fut>(store: &Arc<AnyStore>, write: &F, item: T) -> anyhow::Result<()>
where
    T: Clone + Send,
    F: Fn(Arc<AnyStore>, T) -> Fut + Sync,
    Fut: std::future::Future<Output = leasehold_control::store::StoreResult<()>> + Send,
{
    let mut attempt = 1;
    loop {
        match write(store.clone(), item.clone()).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt >= WRITE_ATTEMPTS => return Err(error.into()),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Writes every item with [`WRITERS`] writes in flight.
async fn write_all<T, F, Fut>(store: &Arc<AnyStore>, items: Vec<T>, write: F) -> anyhow::Result<()>
where
    T: Clone + Send + 'static,
    F: Fn(Arc<AnyStore>, T) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = leasehold_control::store::StoreResult<()>> + Send,
{
    let mut stripes: Vec<Vec<T>> = (0..WRITERS).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        stripes[i % WRITERS].push(item);
    }
    let mut writers = JoinSet::new();
    for stripe in stripes {
        let (store, write) = (store.clone(), write.clone());
        writers.spawn(async move {
            for item in stripe {
                write_retrying(&store, &write, item).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    Ok(())
}

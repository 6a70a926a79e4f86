//! The PostgreSQL schema, as numbered migrations.
//!
//! `control init` applies them to a new database; `control migrate` brings the
//! database of an existing control to this build's version (after checking that it
//! belongs to this replica's identity); `control serve` only checks ([`check`]): it
//! refuses an older schema, naming the command to run, and a newer one, so that a
//! replica restarted on an old release does not start against a schema it does not
//! know. A migration is never edited once released: a change is a new entry at the
//! end.
//!
//! Every migration is additive (new tables, columns with a default, indexes,
//! functions; nothing dropped or renamed), so that the statements of the previous
//! release still run against it: during a rolling upgrade, the replicas still on the
//! old release keep serving until they are restarted on the new one. A change that
//! cannot be made so would need a release of its own that stops the old replicas.
//!
//! Records are kept whole as JSON text (the same serde forms the embedded store
//! keeps), beside the few columns the queries select or order on. Times are whole
//! seconds since the Unix epoch (`BIGINT`).

use super::{PgError, pg};

/// A member's (`$1`) live leases at a time (`$2`): in the reservation function of
/// migration 3 (whose first two parameters these are) and in the test that checks the
/// index `leases_live` serves it, one text for both.
macro_rules! count_live {
    () => {
        "SELECT count(*) FROM leases WHERE member = $1 AND holds AND ended_at > $2"
    };
}

/// [`count_live!`], for the tests.
#[cfg(test)]
pub(super) const COUNT_LIVE: &str = count_live!();

/// The migrations, in order: migration `i` brings the schema to version `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: everything the replicas share.
    "CREATE TABLE leasehold_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE members (id TEXT PRIMARY KEY, record TEXT NOT NULL);
     CREATE TABLE denied (id TEXT PRIMARY KEY, record TEXT NOT NULL);
     CREATE TABLE tickets (
         hash TEXT PRIMARY KEY,
         expires_at BIGINT NOT NULL,
         remaining BIGINT NOT NULL,
         record TEXT NOT NULL
     );
     CREATE TABLE policies (id TEXT PRIMARY KEY, record TEXT NOT NULL);
     CREATE TABLE leases (
         id TEXT PRIMARY KEY,
         member TEXT NOT NULL,
         issued BOOLEAN NOT NULL,
         removed BOOLEAN NOT NULL,
         ended_at BIGINT NOT NULL,
         record TEXT NOT NULL,
         claimed_by TEXT,
         claimed_until BIGINT
     );
     CREATE INDEX leases_owed ON leases (ended_at) WHERE NOT removed;
     CREATE INDEX leases_by_member ON leases (member, id);",
    // 2: the add-on configurations, sealed with the identity's key; the current one's
    // id in leasehold_meta.
    "CREATE TABLE addons (id TEXT PRIMARY KEY, sealed BYTEA NOT NULL);",
    // 3: each member's live-lease cap held in the database (`live.rs`): whether a lease
    // holds a place under it, the index that keeps counting a member's cheap, and the
    // function that checks and reserves in one statement. Leases recorded before count
    // if issued and neither revoked nor removed.
    concat!(
        "ALTER TABLE leases ADD COLUMN holds BOOLEAN NOT NULL DEFAULT false;
         UPDATE leases SET holds = true
             WHERE issued AND NOT removed AND (record::jsonb ->> 'revoked_at') IS NULL;
         CREATE INDEX leases_live ON leases (member, ended_at) WHERE holds;
         CREATE FUNCTION leasehold_reserve_lease(
             p_member TEXT, p_now BIGINT, p_max BIGINT, p_id TEXT, p_issued BOOLEAN,
             p_removed BOOLEAN, p_ended_at BIGINT, p_record TEXT
         ) RETURNS BOOLEAN LANGUAGE plpgsql AS $fn$
         BEGIN
             IF current_setting('transaction_isolation') <> 'read committed' THEN
                 RAISE EXCEPTION 'leasehold reserves leases at read committed, not %',
                     current_setting('transaction_isolation');
             END IF;
             PERFORM pg_advisory_xact_lock(1818782838, hashtext(p_member));
             IF (",
        count_live!(),
        ") >= p_max THEN
                 RETURN false;
             END IF;
             INSERT INTO leases (id, member, issued, removed, ended_at, record, holds)
                 VALUES (p_id, p_member, p_issued, p_removed, p_ended_at, p_record, true);
             RETURN true;
         END
         $fn$;"
    ),
    // 4: leases by end, so that the live ones (`ended_at` in the future: start-up,
    // `lease list --status active`) and pruning's victims are found without reading
    // the whole history.
    "CREATE INDEX leases_ended ON leases (ended_at);",
];

/// The schema version this build writes and reads.
pub const CURRENT: i32 = MIGRATIONS.len() as i32;

/// A constant key for the advisory lock that serializes concurrent migrations.
const MIGRATION_LOCK: i64 = 0x6c65_6173_6568_6f6c; // "leasehol"

/// The `leasehold_meta` key of the control identity every replica must share.
pub(super) const IDENTITY_KEY: &str = "control_identity";

/// What [`migrate`] did: the schema it found and the one it left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The version before (0 for an empty database).
    pub from: i32,
    /// The version after: [`CURRENT`].
    pub to: i32,
}

impl Migrated {
    /// Whether any migration was applied.
    pub fn applied(&self) -> bool {
        self.from != self.to
    }
}

/// The version a database's schema is at (0 for an empty database).
pub async fn version(client: &tokio_postgres::Client) -> Result<i32, PgError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('leasehold_schema') IS NOT NULL", &[])
        .await
        .map_err(pg)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_opt("SELECT max(version) FROM leasehold_schema", &[])
        .await
        .map_err(pg)?;
    Ok(row.and_then(|r| r.get::<_, Option<i32>>(0)).unwrap_or(0))
}

/// Brings the schema to [`CURRENT`], each migration in its own transaction, under an
/// advisory lock held for the whole run, so that of two replicas migrating at once one
/// applies every migration and the other then finds nothing to do.
///
/// `owner` is shown the control identity the database records (none for an empty
/// one) under the lock and before anything is applied: when it refuses, the
/// transaction is rolled back and the database is left as it was.
pub async fn migrate(
    client: &mut tokio_postgres::Client,
    owner: impl Fn(Option<&str>) -> Result<(), PgError>,
) -> Result<Migrated, PgError> {
    // A session lock (the connection is pooled: it is released on every path below).
    // It conflicts with the transaction-level lock an older release's `init` takes on
    // the same key.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    let result = migrate_locked(client, owner).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg);
    let migrated = result?;
    unlocked?;
    Ok(migrated)
}

async fn migrate_locked(
    client: &mut tokio_postgres::Client,
    owner: impl Fn(Option<&str>) -> Result<(), PgError>,
) -> Result<Migrated, PgError> {
    let mut from = None;
    loop {
        let txn = client.transaction().await.map_err(pg)?;
        // Under the lock: two first `init`s at once would otherwise race to create it.
        txn.batch_execute("CREATE TABLE IF NOT EXISTS leasehold_schema (version INTEGER NOT NULL)")
            .await
            .map_err(pg)?;
        let at: i32 = txn
            .query_one(
                "SELECT coalesce(max(version), 0) FROM leasehold_schema",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        if at > CURRENT {
            return Err(PgError::Newer { found: at });
        }
        // leasehold_meta exists from version 1 on.
        let recorded: Option<String> = if at >= 1 {
            txn.query_opt(
                "SELECT value FROM leasehold_meta WHERE key = $1",
                &[&IDENTITY_KEY],
            )
            .await
            .map_err(pg)?
            .map(|row| row.get(0))
        } else {
            None
        };
        // Dropping the transaction on refusal rolls it back.
        owner(recorded.as_deref())?;
        let from = *from.get_or_insert(at);
        if at == CURRENT {
            txn.commit().await.map_err(pg)?;
            return Ok(Migrated { from, to: at });
        }
        txn.batch_execute(MIGRATIONS[at as usize])
            .await
            .map_err(pg)?;
        txn.execute(
            "INSERT INTO leasehold_schema (version) VALUES ($1)",
            &[&(at + 1)],
        )
        .await
        .map_err(pg)?;
        txn.commit().await.map_err(pg)?;
        tracing::info!(version = at + 1, "PostgreSQL schema migrated");
    }
}

/// Checks that the schema is the one this build knows (what `serve` does).
pub async fn check(client: &tokio_postgres::Client) -> Result<(), PgError> {
    match version(client).await? {
        at if at > CURRENT => Err(PgError::Newer { found: at }),
        at if at < CURRENT => Err(PgError::Older { found: at }),
        _ => Ok(()),
    }
}

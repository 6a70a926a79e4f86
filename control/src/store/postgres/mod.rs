//! The shared store of a replicated control: PostgreSQL (`--store postgres://…`).
//!
//! Every replica reads and writes the same database, so everything they must agree on
//! is here: members, denylist, tickets (by hash), policies, leases with the revocations
//! still owed, and who is revoking what (claims, see [`claims`]). Each [`Store`] method
//! is one statement or one transaction; ticket redemption locks the ticket's row
//! (`SELECT … FOR UPDATE`), so two replicas redeeming one single-use ticket at once
//! enroll exactly one member.
//!
//! A database that cannot be reached is [`StoreError::unavailable`]: the replica
//! refuses what needs the store (a lease above all: the intent must be recorded before
//! InfluxDB is asked for a credential) and its clients move on to another replica.

mod claims;
pub mod schema;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use leasehold_channel::PublicIdentity;
use leasehold_protocol::{DeniedIdentity, MemberRecord, PolicyRecord, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;

use super::{LeaseFilter, RedeemError, Store, StoreError, StoreResult, StoredLease, StoredTicket};

/// Connections a replica keeps to PostgreSQL at most.
const POOL_SIZE: usize = 16;
/// How long a new connection has to be made (unless the URL says otherwise): an
/// unreachable database must fail a request fast enough for the client to try
/// another replica.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// The `leasehold_meta` key of the control identity every replica must share.
const IDENTITY_KEY: &str = "control_identity";
/// The `leasehold_meta` key of the add-on configuration in effect.
const CURRENT_ADDON_KEY: &str = "current_addon";
/// Rows read per round trip when a page is filtered here rather than in SQL.
const SCAN_BATCH: i64 = 512;

/// Why the PostgreSQL store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL does not parse (the message never repeats the URL: it may hold a password).
    #[error("the store URL is not a valid PostgreSQL URL: {0}")]
    Url(String),
    /// TLS was required, which this build does not do yet.
    #[error(
        "sslmode={0} asks for TLS to PostgreSQL, which this control does not support yet: \
         use sslmode=disable or prefer on a trusted network, or a TLS-terminating proxy"
    )]
    TlsUnsupported(&'static str),
    /// The database could not be reached.
    #[error("PostgreSQL is unreachable: {0}")]
    Unreachable(String),
    /// A statement failed.
    #[error("PostgreSQL: {0}")]
    Query(String),
    /// The schema is newer than this build.
    #[error(
        "the database's schema is at version {found}, newer than this control knows ({known}): \
         upgrade this replica to the release that migrated it",
        known = schema::CURRENT
    )]
    Newer {
        /// The version found.
        found: i32,
    },
    /// The schema is older than this build (or absent).
    #[error(
        "the database's schema is at version {found}, this control needs {known}: run \
         `leasehold control init --store URL` (it applies the migrations)",
        known = schema::CURRENT
    )]
    Older {
        /// The version found.
        found: i32,
    },
    /// The database belongs to another control identity.
    #[error(
        "this replica's control identity ({local}) is not the one recorded in the database \
         ({recorded}): every replica must have the same identity key (copy control.key from \
         the data directory of the replica that ran `control init`)"
    )]
    IdentityMismatch {
        /// This replica's.
        local: String,
        /// The database's.
        recorded: String,
    },
    /// `control init` on a database another control identity already owns.
    #[error(
        "the database already belongs to control {recorded}: nothing was changed; for \
         another replica, copy the data directory of the one that ran `control init` (its \
         identity key) instead of running init again"
    )]
    AlreadyInitialized {
        /// The database's.
        recorded: String,
    },
    /// `control init` never recorded an identity in this database.
    #[error(
        "no control identity is recorded in the database: run `leasehold control init --store URL` first"
    )]
    NoIdentity,
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Unreachable(_) => StoreError::unavailable(e.to_string()),
            other => StoreError::new(other.to_string()),
        }
    }
}

/// A statement's error: unreachable (connection lost or refused, server shutting
/// down or starting up) or a failure of the statement itself.
pub(crate) fn pg(e: tokio_postgres::Error) -> PgError {
    match e.as_db_error() {
        // Class 57 (operator intervention: shutdown, starting up) and 08 (connection
        // exception) mean "this server, now": another attempt may well work.
        Some(db) if matches!(&db.code().code()[..2], "57" | "08") => {
            PgError::Unreachable(db.message().to_owned())
        }
        Some(db) => PgError::Query(db.message().to_owned()),
        None => PgError::Unreachable(e.to_string()),
    }
}

fn store_err(e: tokio_postgres::Error) -> StoreError {
    pg(e).into()
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => store_err(e),
        other => StoreError::unavailable(format!("PostgreSQL: {other}")),
    }
}

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
    /// For the dedicated connections that hold advisory locks ([`claims`]).
    config: tokio_postgres::Config,
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

/// Whether `url` names a PostgreSQL store rather than the embedded one.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl PostgresStore {
    /// A pool for `url`; connects lazily (see [`Self::init`] and [`Self::open`]).
    pub fn connect(url: &str) -> Result<Self, PgError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| {
                // The parser's messages name the bad part, never the whole URL.
                PgError::Url(e.to_string())
            })?;
        // `prefer` falls back to plain connections, as libpq does without TLS.
        if config.get_ssl_mode() == SslMode::Require {
            return Err(PgError::TlsUnsupported("require"));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("leasehold-control");
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| PgError::Url(e.to_string()))?;
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| PgError::Query(format!("random source: {e}")))?;
        Ok(Self {
            pool,
            config,
            replica: data_encoding::HEXLOWER.encode(&id),
        })
    }

    /// `control init`: applies the migrations and records `identity` as the control's,
    /// or checks it against the one already recorded.
    pub async fn init(url: &str, identity: PublicIdentity) -> Result<Self, PgError> {
        let store = Self::connect(url)?;
        {
            let mut client = store.client_for_setup().await?;
            schema::migrate(&mut client).await?;
        }
        store.record_identity(identity).await?;
        Ok(store)
    }

    /// The first half of `control init`, before any identity exists: connects, applies
    /// the migrations, and refuses a database that already records a control identity.
    pub async fn prepare(url: &str) -> Result<Self, PgError> {
        let store = Self::connect(url)?;
        {
            let mut client = store.client_for_setup().await?;
            schema::migrate(&mut client).await?;
        }
        if let Some(recorded) = store.recorded_identity().await? {
            return Err(PgError::AlreadyInitialized { recorded });
        }
        Ok(store)
    }

    /// The second half: records `identity` as the control's (or refuses when another
    /// init recorded its own meanwhile).
    pub async fn claim_for(self, identity: PublicIdentity) -> Result<Self, PgError> {
        self.record_identity(identity).await?;
        Ok(self)
    }

    /// `control serve`: checks the schema and the identity; changes nothing.
    pub async fn open(url: &str, identity: PublicIdentity) -> Result<Self, PgError> {
        let store = Self::connect(url)?;
        {
            let client = store.client_for_setup().await?;
            schema::check(&client).await?;
        }
        match store.recorded_identity().await? {
            None => Err(PgError::NoIdentity),
            Some(recorded) if recorded != identity.to_string() => Err(PgError::IdentityMismatch {
                local: identity.to_string(),
                recorded,
            }),
            Some(_) => Ok(store),
        }
    }

    async fn client_for_setup(&self) -> Result<deadpool_postgres::Object, PgError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => pg(e),
            other => PgError::Unreachable(other.to_string()),
        })
    }

    async fn recorded_identity(&self) -> Result<Option<String>, PgError> {
        let client = self.client_for_setup().await?;
        let row = client
            .query_opt(
                "SELECT value FROM leasehold_meta WHERE key = $1",
                &[&IDENTITY_KEY],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn record_identity(&self, identity: PublicIdentity) -> Result<(), PgError> {
        let client = self.client_for_setup().await?;
        client
            .execute(
                "INSERT INTO leasehold_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&IDENTITY_KEY, &identity.to_string()],
            )
            .await
            .map_err(pg)?;
        match self.recorded_identity().await? {
            Some(recorded) if recorded == identity.to_string() => Ok(()),
            Some(recorded) => Err(PgError::IdentityMismatch {
                local: identity.to_string(),
                recorded,
            }),
            None => Err(PgError::NoIdentity),
        }
    }

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

impl Store for PostgresStore {
    async fn put_member(&self, member: MemberRecord) -> StoreResult<()> {
        let record = encode(&member)?;
        self.execute(
            "INSERT INTO members (id, record) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&member.id.to_string(), &record],
        )
        .await?;
        Ok(())
    }

    async fn member(&self, id: PublicIdentity) -> StoreResult<Option<MemberRecord>> {
        let mut found = self
            .records(
                "SELECT record FROM members WHERE id = $1",
                &[&id.to_string()],
            )
            .await?;
        Ok(found.pop())
    }

    async fn members(&self) -> StoreResult<Vec<MemberRecord>> {
        self.records("SELECT record FROM members ORDER BY id", &[])
            .await
    }

    async fn delete_member(&self, id: PublicIdentity) -> StoreResult<Option<MemberRecord>> {
        let mut found = self
            .records(
                "DELETE FROM members WHERE id = $1 RETURNING record",
                &[&id.to_string()],
            )
            .await?;
        Ok(found.pop())
    }

    async fn put_ticket(&self, hash: String, ticket: StoredTicket) -> StoreResult<()> {
        let record = encode(&ticket)?;
        self.execute(
            "INSERT INTO tickets (hash, expires_at, remaining, record) VALUES ($1, $2, $3, $4)
             ON CONFLICT (hash) DO UPDATE SET expires_at = EXCLUDED.expires_at,
                 remaining = EXCLUDED.remaining, record = EXCLUDED.record",
            &[
                &hash,
                &secs(ticket.expires_at),
                &i64::from(ticket.remaining),
                &record,
            ],
        )
        .await?;
        Ok(())
    }

    async fn redeem_ticket(
        &self,
        hash: String,
        now: Timestamp,
        member: PublicIdentity,
        name: String,
    ) -> StoreResult<Result<MemberRecord, RedeemError>> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(store_err)?;
        let key = member.to_string();
        // The ticket's row stays locked until the end of the transaction: a concurrent
        // redemption of the same ticket (on this replica or another) waits here, then
        // sees the use this one spent.
        let ticket = txn
            .query_opt(
                "SELECT record FROM tickets WHERE hash = $1 FOR UPDATE",
                &[&hash],
            )
            .await
            .map_err(store_err)?;
        let ticket: Option<StoredTicket> = match ticket {
            Some(row) => Some(decode(row.get::<_, &str>(0))?),
            None => None,
        };
        let already = txn
            .query_opt("SELECT 1 FROM members WHERE id = $1", &[&key])
            .await
            .map_err(store_err)?
            .is_some();
        let denied = txn
            .query_opt("SELECT 1 FROM denied WHERE id = $1", &[&key])
            .await
            .map_err(store_err)?
            .is_some();
        // The same order of checks as every store (see the contract).
        let mut ticket = match ticket {
            _ if already => return Ok(Err(RedeemError::AlreadyMember)),
            _ if denied => return Ok(Err(RedeemError::Denied)),
            None => return Ok(Err(RedeemError::Unknown)),
            Some(t) if t.remaining == 0 => return Ok(Err(RedeemError::Unknown)),
            Some(t) if t.expires_at < now => return Ok(Err(RedeemError::Expired)),
            Some(t) => t,
        };
        ticket.remaining -= 1;
        if ticket.remaining == 0 {
            txn.execute("DELETE FROM tickets WHERE hash = $1", &[&hash])
                .await
                .map_err(store_err)?;
        } else {
            txn.execute(
                "UPDATE tickets SET remaining = $2, record = $3 WHERE hash = $1",
                &[&hash, &i64::from(ticket.remaining), &encode(&ticket)?],
            )
            .await
            .map_err(store_err)?;
        }
        let record = MemberRecord {
            id: member,
            name,
            attributes: ticket.attributes,
            enrolled_at: now,
        };
        // The same identity redeeming two tickets at once: the primary key lets one in.
        let inserted = txn
            .execute(
                "INSERT INTO members (id, record) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                &[&key, &encode(&record)?],
            )
            .await
            .map_err(store_err)?;
        if inserted == 0 {
            // Dropping the transaction rolls it back: the use is not spent.
            return Ok(Err(RedeemError::AlreadyMember));
        }
        txn.commit().await.map_err(store_err)?;
        Ok(Ok(record))
    }

    async fn put_policy(&self, policy: PolicyRecord) -> StoreResult<()> {
        let record = encode(&policy)?;
        self.execute(
            "INSERT INTO policies (id, record) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&policy.id, &record],
        )
        .await?;
        Ok(())
    }

    async fn policies(&self) -> StoreResult<Vec<PolicyRecord>> {
        self.records("SELECT record FROM policies ORDER BY id", &[])
            .await
    }

    async fn delete_policy(&self, id: String) -> StoreResult<bool> {
        Ok(self
            .execute("DELETE FROM policies WHERE id = $1", &[&id])
            .await?
            > 0)
    }

    async fn put_lease(&self, lease: StoredLease) -> StoreResult<()> {
        let record = encode(&lease)?;
        // A removal recorded ends any claim on it.
        self.execute(
            "INSERT INTO leases (id, member, issued, removed, ended_at, record)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET member = EXCLUDED.member, issued = EXCLUDED.issued,
                 removed = EXCLUDED.removed, ended_at = EXCLUDED.ended_at,
                 record = EXCLUDED.record,
                 claimed_by = CASE WHEN EXCLUDED.removed THEN NULL ELSE leases.claimed_by END,
                 claimed_until = CASE WHEN EXCLUDED.removed THEN NULL ELSE leases.claimed_until END",
            &[
                &lease.id,
                &lease.member.to_string(),
                &lease.issued,
                &lease.removed,
                &secs(lease.ended_at()),
                &record,
            ],
        )
        .await?;
        Ok(())
    }

    async fn lease(&self, id: String) -> StoreResult<Option<StoredLease>> {
        let mut found = self
            .records("SELECT record FROM leases WHERE id = $1", &[&id])
            .await?;
        Ok(found.pop())
    }

    async fn leases(&self) -> StoreResult<Vec<StoredLease>> {
        self.records("SELECT record FROM leases ORDER BY id", &[])
            .await
    }

    async fn lease_page(
        &self,
        filter: LeaseFilter,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Vec<StoredLease>> {
        // Member and issued in SQL (indexed); the status, which depends on `now`, here.
        let member = filter.member.map(|m| m.to_string());
        let mut cursor = after.unwrap_or_default();
        let mut page = Vec::new();
        while page.len() < limit {
            let batch: Vec<StoredLease> = self
                .records(
                    "SELECT record FROM leases
                     WHERE id > $1 AND issued AND ($2::TEXT IS NULL OR member = $2)
                     ORDER BY id LIMIT $3",
                    &[&cursor, &member, &SCAN_BATCH],
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

    async fn prune_leases(&self, ended_by: Timestamp) -> StoreResult<usize> {
        let pruned = self
            .execute(
                "DELETE FROM leases WHERE removed AND ended_at <= $1",
                &[&secs(ended_by)],
            )
            .await?;
        Ok(pruned as usize)
    }

    async fn deny_member(
        &self,
        id: PublicIdentity,
        now: Timestamp,
    ) -> StoreResult<Option<MemberRecord>> {
        let mut client = self.client().await?;
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

    async fn denied(&self) -> StoreResult<Vec<DeniedIdentity>> {
        self.records("SELECT record FROM denied ORDER BY id", &[])
            .await
    }

    async fn allow(&self, id: PublicIdentity) -> StoreResult<bool> {
        Ok(self
            .execute("DELETE FROM denied WHERE id = $1", &[&id.to_string()])
            .await?
            > 0)
    }

    async fn tickets(&self) -> StoreResult<Vec<(String, StoredTicket)>> {
        let rows = self
            .client()
            .await?
            .query("SELECT hash, record FROM tickets ORDER BY hash", &[])
            .await
            .map_err(store_err)?;
        rows.iter()
            .map(|row| Ok((row.get::<_, String>(0), decode(row.get::<_, &str>(1))?)))
            .collect()
    }

    async fn delete_ticket(&self, hash: String) -> StoreResult<bool> {
        Ok(self
            .execute("DELETE FROM tickets WHERE hash = $1", &[&hash])
            .await?
            > 0)
    }

    async fn prune_tickets(&self, now: Timestamp) -> StoreResult<usize> {
        let pruned = self
            .execute(
                "DELETE FROM tickets WHERE remaining = 0 OR expires_at < $1",
                &[&secs(now)],
            )
            .await?;
        Ok(pruned as usize)
    }

    fn shared(&self) -> bool {
        true
    }

    async fn claim_revocation(
        &self,
        id: String,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<bool> {
        claims::claim_one(self, id, now, until).await
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        claims::claim_due(self, now, until, limit).await
    }

    async fn put_addon(&self, id: String, sealed: Vec<u8>, current: bool) -> StoreResult<()> {
        let mut client = self.client().await?;
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

    async fn current_addon(&self) -> StoreResult<Option<String>> {
        let row = self
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

    async fn addon(&self, id: String) -> StoreResult<Option<Vec<u8>>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT sealed FROM addons WHERE id = $1", &[&id])
            .await
            .map_err(store_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn exclusive(&self, name: &'static str) -> StoreResult<Option<super::Exclusive>> {
        claims::exclusive(self, name).await
    }
}

#[cfg(test)]
mod tests;

//! [`Store`] on PostgreSQL: each method one statement, or one transaction in the file
//! named for it (`tickets.rs`, `members.rs`, `leases.rs`, `live.rs`, `addon.rs`,
//! `claims.rs`).

use leasehold_channel::PublicIdentity;
use leasehold_protocol::{DeniedIdentity, MemberRecord, PolicyRecord, Timestamp};

use super::{
    PostgresStore, addon, claims, decode, encode, leases, live, members, secs, store_err, tickets,
};
use crate::store::{
    AtCap, Claimed, Exclusive, LeaseFilter, RedeemError, Store, StoreResult, StoredLease,
    StoredTicket,
};

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
        tickets::redeem(self, hash, now, member, name).await
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
        // Revoked or removed, a lease stops holding a place under its member's cap
        // (`live.rs`); written issued without a reservation, it takes one.
        let ended = lease.revoked_at.is_some() || lease.removed;
        let holds = lease.issued && !ended;
        // A removal recorded ends any claim on it.
        self.execute(
            "INSERT INTO leases (id, member, issued, removed, ended_at, record, holds)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET member = EXCLUDED.member, issued = EXCLUDED.issued,
                 removed = EXCLUDED.removed, ended_at = EXCLUDED.ended_at,
                 record = EXCLUDED.record,
                 holds = (leases.holds OR EXCLUDED.holds) AND NOT $8,
                 claimed_by = CASE WHEN EXCLUDED.removed THEN NULL ELSE leases.claimed_by END,
                 claimed_until = CASE WHEN EXCLUDED.removed THEN NULL ELSE leases.claimed_until END",
            &[
                &lease.id,
                &lease.member.to_string(),
                &lease.issued,
                &lease.removed,
                // When it is owed a removal, which claims go by (for an issued lease,
                // when it ended).
                &secs(lease.owed_at()),
                &record,
                &holds,
                &ended,
            ],
        )
        .await?;
        Ok(())
    }

    async fn reserve_lease(
        &self,
        intent: StoredLease,
        now: Timestamp,
        max: u32,
    ) -> StoreResult<Result<(), AtCap>> {
        live::reserve(self, intent, now, max).await
    }

    async fn release_lease(&self, intent: StoredLease) -> StoreResult<()> {
        live::release(self, intent).await
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

    async fn open_leases(&self, now: Timestamp) -> StoreResult<Vec<StoredLease>> {
        // Each arm has its index (`leases_ended`, and `leases_owed` for the unremoved):
        // PostgreSQL reads only the open rows, however long the history.
        self.records(
            "SELECT record FROM leases WHERE ended_at > $1 OR NOT removed ORDER BY id",
            &[&secs(now)],
        )
        .await
    }

    async fn lease_page(
        &self,
        filter: LeaseFilter,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Vec<StoredLease>> {
        leases::page(self, filter, after, limit).await
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
        members::deny(self, id, now).await
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
    ) -> StoreResult<Option<Claimed>> {
        claims::claim_one(self, id, now, until).await
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Claimed>> {
        claims::claim_due(self, now, until, limit).await
    }

    async fn put_addon(&self, id: String, sealed: Vec<u8>, current: bool) -> StoreResult<()> {
        addon::put(self, id, sealed, current).await
    }

    async fn current_addon(&self) -> StoreResult<Option<String>> {
        addon::current(self).await
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

    async fn exclusive(&self, name: &'static str) -> StoreResult<Option<Exclusive>> {
        claims::exclusive(self, name).await
    }
}

//! Redeeming an enrollment ticket: one transaction that locks the ticket's row, so two
//! replicas redeeming one single-use ticket at once enroll exactly one member.

use leasehold_channel::PublicIdentity;
use leasehold_protocol::{MemberRecord, Timestamp};

use super::{PostgresStore, decode, encode, store_err};
use crate::store::{RedeemError, StoreResult, StoredTicket};

/// Spends one use of ticket `hash` to enroll `member` as `name`, checked in the same
/// order as every store (see the contract).
pub(super) async fn redeem(
    store: &PostgresStore,
    hash: String,
    now: Timestamp,
    member: PublicIdentity,
    name: String,
) -> StoreResult<Result<MemberRecord, RedeemError>> {
    let mut client = store.client().await?;
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

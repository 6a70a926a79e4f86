//! Enrollment tickets: create (only the secret's hash is stored), list, revoke, prune.

use std::collections::BTreeMap;

use leasehold_channel::ticket::{Ticket, secret_hash, ticket_id};
use leasehold_protocol::{Reply, TicketInfo, TicketRecord, Timestamp};

use super::{Admin, Result, json_text};
use crate::control::Control;
use crate::error::ControlError;
use crate::store::{Store, StoredTicket};

/// The longest a ticket may stay redeemable.
const MAX_TICKET_LIFETIME_SECS: u64 = 30 * 86_400;

impl<S: Store> Control<S> {
    pub(super) async fn create_ticket(
        &self,
        _: &Admin,
        attributes: BTreeMap<String, String>,
        expires_in_secs: u64,
        usage_count: u32,
    ) -> Result<Reply> {
        validate_ticket(&attributes, expires_in_secs, usage_count)?;
        // The secret is drawn here, not by `Ticket::generate`, so that a failing random
        // source is an error for this request rather than a panic.
        let ticket = Ticket {
            addrs: self.advertise.clone(),
            control: self.identity.public(),
            secret: crate::entropy::secret32()?,
        };
        let expires_at = Timestamp::now().plus_secs(expires_in_secs);
        // The store keeps the hash only: a copy of the store enrolls nobody.
        let hash = secret_hash(ticket.secret.as_ref());
        let id = ticket_id(&hash).to_owned();
        self.store
            .put_ticket(
                hash,
                StoredTicket {
                    attributes: attributes.clone(),
                    expires_at,
                    remaining: usage_count,
                },
            )
            .await?;
        tracing::info!(ticket = %id, attributes = %json_text(&attributes), expires_at = %expires_at, usage_count, "ticket created");
        Ok(Reply::Ticket(TicketRecord {
            ticket: ticket.to_line(),
            attributes,
            expires_at,
            usage_count,
            id,
        }))
    }

    /// Tickets that can still be redeemed, soonest expiry first. Dead ones are pruned
    /// first, so what is listed is exactly what can be revoked.
    pub(super) async fn list_tickets(&self, _: &Admin) -> Result<Reply> {
        self.prune_tickets().await?;
        let mut tickets: Vec<TicketInfo> = self
            .store
            .tickets()
            .await?
            .into_iter()
            .map(|(hash, t)| TicketInfo {
                id: ticket_id(&hash).to_owned(),
                attributes: t.attributes,
                expires_at: t.expires_at,
                uses_left: t.remaining,
            })
            .collect();
        tickets.sort_by(|a, b| a.expires_at.cmp(&b.expires_at).then(a.id.cmp(&b.id)));
        Ok(Reply::Tickets { tickets })
    }

    /// Revokes a ticket by the id `ticket list` shows. The id is derived from the
    /// stored hash, so finding it is a scan of the (pruned, small) ticket table.
    pub(super) async fn revoke_ticket(&self, by: &Admin, id: &str) -> Result<Reply> {
        validate_ticket_id(id)?;
        let hash = self
            .store
            .tickets()
            .await?
            .into_iter()
            .map(|(hash, _)| hash)
            .find(|hash| ticket_id(hash) == id)
            .ok_or(ControlError::NotFound("ticket"))?;
        // Redeemed or pruned between the scan and here: still "not found".
        if !self.store.delete_ticket(hash).await? {
            return Err(ControlError::NotFound("ticket"));
        }
        tracing::info!(ticket = %id, by = %by.0.peer, "ticket revoked");
        Ok(Reply::Done)
    }

    /// Removes expired and used-up tickets from the store.
    pub(crate) async fn prune_tickets(&self) -> Result<()> {
        let pruned = self.store.prune_tickets(Timestamp::now()).await?;
        if pruned > 0 {
            tracing::info!(pruned, "expired tickets pruned");
        }
        Ok(())
    }
}

/// A ticket's settings: at least one use, a lifetime of 1 s to 30 days, and attribute
/// names that survive the `KEY=VALUE,...` form they are shown and matched in.
fn validate_ticket(
    attributes: &BTreeMap<String, String>,
    expires_in_secs: u64,
    usage_count: u32,
) -> Result<()> {
    if usage_count == 0 {
        return Err(ControlError::BadRequest(
            "usage count must be at least 1".into(),
        ));
    }
    if expires_in_secs == 0 || expires_in_secs > MAX_TICKET_LIFETIME_SECS {
        return Err(ControlError::BadRequest(format!(
            "ticket lifetime must be between 1s and {MAX_TICKET_LIFETIME_SECS}s"
        )));
    }
    if let Some(key) = attributes
        .keys()
        .find(|k| k.is_empty() || k.contains(['=', ',']))
    {
        return Err(ControlError::BadRequest(format!(
            "invalid attribute name {key:?}"
        )));
    }
    Ok(())
}

/// A ticket id is 16 lowercase hex digits; anything else is echoed back only escaped
/// and cut short.
fn validate_ticket_id(id: &str) -> Result<()> {
    if id.len() != 16 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ControlError::BadRequest(format!(
            "{:?} is not a ticket id (16 hex digits, as ticket list shows)",
            id.escape_debug().take(40).collect::<String>()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_settings_are_bounded() {
        let attrs = BTreeMap::from([("service".to_owned(), "iot".to_owned())]);
        assert!(validate_ticket(&attrs, 1, 1).is_ok());
        assert!(validate_ticket(&attrs, MAX_TICKET_LIFETIME_SECS, u32::MAX).is_ok());
        assert!(validate_ticket(&attrs, 60, 0).is_err());
        assert!(validate_ticket(&attrs, 0, 1).is_err());
        assert!(validate_ticket(&attrs, MAX_TICKET_LIFETIME_SECS + 1, 1).is_err());
        for key in ["", "a=b", "a,b"] {
            let bad = BTreeMap::from([(key.to_owned(), "v".to_owned())]);
            assert!(validate_ticket(&bad, 60, 1).is_err(), "{key:?}");
        }
    }

    #[test]
    fn ticket_ids_are_sixteen_lowercase_hex_digits() {
        assert!(validate_ticket_id("0123456789abcdef").is_ok());
        for bad in [
            "",
            "0123456789ABCDEF",
            "0123456789abcde",
            "x".repeat(100).as_str(),
        ] {
            assert!(validate_ticket_id(bad).is_err(), "{bad}");
        }
        let ControlError::BadRequest(message) =
            validate_ticket_id(&"\u{1b}".repeat(100)).unwrap_err()
        else {
            panic!("not a bad request")
        };
        assert!(
            !message.contains('\u{1b}') && message.len() < 200,
            "{message}"
        );
    }
}

//! Each member's live leases, counted in memory by the stores of one process (the
//! embedded store, and the in-memory one of the tests) so that the per-member cap holds
//! even for requests that arrive together (a client pipelining creates on one channel):
//! the check and the reservation are one step under one lock, taken before InfluxDB is
//! asked for anything. Pure bookkeeping; the caller passes the clock.
//!
//! A store shared by several replicas cannot count in memory (each replica would see
//! only its own creates): PostgreSQL checks and reserves in one transaction instead
//! (`store/postgres/live.rs`). Both keep the rule [`crate::store::Store::reserve_lease`]
//! states, which the store contract suite checks against every store.
//!
//! The store stays the truth: the counts are rebuilt from it when it is opened. A lease
//! leaves the count when it is revoked or its credential removed ([`LiveLeases::follow`]),
//! when its issue failed ([`LiveLeases::release`]) or, lazily, once its expiry has
//! passed, so memory is bounded by the cap times the number of members.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use leasehold_channel::PublicIdentity;
use leasehold_protocol::Timestamp;

use crate::store::{AtCap, StoredLease};

/// Live leases per member, as (expiry, lease id).
#[derive(Debug, Default)]
pub struct LiveLeases {
    members: Mutex<HashMap<PublicIdentity, BTreeSet<(Timestamp, String)>>>,
}

impl LiveLeases {
    /// Counts lease `id` for `member` if the member holds fewer than `max` leases that
    /// are still live at `now`.
    pub fn reserve(
        &self,
        member: PublicIdentity,
        id: &str,
        expires_at: Timestamp,
        now: Timestamp,
        max: u32,
    ) -> Result<(), AtCap> {
        let mut members = self.lock();
        let live = members.entry(member).or_default();
        while live.first().is_some_and(|(expires, _)| *expires <= now) {
            live.pop_first();
        }
        if live.len() >= usize::try_from(max).unwrap_or(usize::MAX) {
            return Err(AtCap { max });
        }
        live.insert((expires_at, id.to_owned()));
        Ok(())
    }

    /// Stops counting lease `id` (revoked, or never issued).
    pub fn release(&self, member: PublicIdentity, id: &str, expires_at: Timestamp) {
        let mut members = self.lock();
        if let Some(live) = members.get_mut(&member) {
            live.remove(&(expires_at, id.to_owned()));
            if live.is_empty() {
                members.remove(&member);
            }
        }
    }

    /// Follows a lease written to the store: revoked, or its credential removed, it
    /// stops counting; issued, it counts (in the place its reservation took, or, written
    /// without one, whatever the cap). An intent is counted by its reservation only.
    pub fn follow(&self, lease: &StoredLease) {
        if lease.revoked_at.is_some() || lease.removed {
            self.release(lease.member, &lease.id, lease.expires_at);
        } else if lease.issued {
            self.restore(lease.member, lease.id.clone(), lease.expires_at);
        }
    }

    /// Counts a lease loaded from the store at start-up, whatever the cap.
    pub fn restore(&self, member: PublicIdentity, id: String, expires_at: Timestamp) {
        self.lock()
            .entry(member)
            .or_default()
            .insert((expires_at, id));
    }

    /// How many leases `member` holds that are live at `now`.
    pub fn count(&self, member: PublicIdentity, now: Timestamp) -> usize {
        self.lock()
            .get(&member)
            .map_or(0, |live| live.iter().filter(|(e, _)| *e > now).count())
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<PublicIdentity, BTreeSet<(Timestamp, String)>>> {
        // The map is consistent after every statement; a panic elsewhere while the
        // lock was held leaves nothing half-done.
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_channel::Identity;

    #[test]
    fn the_cap_counts_reservations_and_frees_on_release_and_expiry() {
        let live = LiveLeases::default();
        let (a, b) = (Identity::generate().public(), Identity::generate().public());
        let now = Timestamp(1000);
        for i in 0..3 {
            live.reserve(a, &format!("a{i}"), Timestamp(1010 + i), now, 3)
                .unwrap();
        }
        assert_eq!(
            live.reserve(a, "a3", Timestamp(1100), now, 3),
            Err(AtCap { max: 3 })
        );
        // Another member has its own count.
        live.reserve(b, "b0", Timestamp(1100), now, 3).unwrap();
        // A revocation frees a place.
        live.release(a, "a1", Timestamp(1011));
        live.reserve(a, "a3", Timestamp(1100), now, 3).unwrap();
        assert_eq!(live.count(a, now), 3);
        // Expiry frees places without any call.
        let later = Timestamp(1012);
        assert_eq!(live.count(a, later), 1);
        live.reserve(a, "a4", Timestamp(1200), later, 3).unwrap();
        live.reserve(a, "a5", Timestamp(1200), later, 3).unwrap();
        assert!(live.reserve(a, "a6", Timestamp(1200), later, 3).is_err());
    }

    #[test]
    fn restored_leases_count_even_above_a_lowered_cap() {
        let live = LiveLeases::default();
        let a = Identity::generate().public();
        for i in 0..4 {
            live.restore(a, format!("a{i}"), Timestamp(2000));
        }
        assert_eq!(
            live.reserve(a, "new", Timestamp(2000), Timestamp(1000), 2),
            Err(AtCap { max: 2 })
        );
        assert_eq!(live.count(a, Timestamp(1000)), 4);
    }
}

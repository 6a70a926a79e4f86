//! How much revocation work one control takes on at a time.
//!
//! Revocation is housekeeping: it must never take the store connections or the
//! InfluxDB calls that `lease create` and the handshakes need. After every replica
//! restarted, each found the ~20,000 leases of the previous hour expiring at once and
//! started one task per lease: the 16-connection PostgreSQL pool was exhausted and
//! handshakes failed for want of a connection. Two limits prevent that:
//!
//! - **attempts in flight** ([`ATTEMPTS`]): a permit is held around each attempt
//!   (claim renewal, lookup, InfluxDB call, record), never across the backoff sleep;
//! - **revocations held** ([`HELD`]): claimed from a shared store or taken off the
//!   embedded store's timer queue, and not settled yet. With a shared store a replica
//!   claims only as many as it has room for, so the rest stay in the store for the
//!   other replicas, and a claim never lapses while it waits here for a permit; the
//!   embedded queue keeps what is due in its (cheap) ordered set instead of spawning a
//!   task per lease.
//!
//! `lease revoke` and `member delete` revoke at once on the request path, without these
//! limits: they are requests, bounded by the requests in flight, and must not wait
//! behind the backlog.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Revocation attempts one control makes at once. An attempt holds at most one store
/// connection at a time (claim, lookup, record run one after the other), so this is
/// at most half of the PostgreSQL pool (`store/postgres/connect.rs`, 16): the other
/// half is always there for the request path (handshakes, `lease create`). Eight
/// calls in flight also keep InfluxDB's DELETEs well within what one server answers
/// without queueing, and at a few milliseconds an attempt they still clear a
/// backlog of 20,000 in under a minute per replica.
pub const ATTEMPTS: usize = 8;

/// Revocations one control holds (claimed, or taken off the queue) and has not
/// settled. Enough to keep [`ATTEMPTS`] busy between two claim polls; few enough to be
/// worked through well within a claim's lifetime (`CLAIM_FOR`, 30 s), so a claim does
/// not lapse while it waits for a permit. One that retries because InfluxDB is down
/// keeps its place: a replica whose revocations all fail stops claiming more.
pub const HELD: usize = 256;

/// The two limits of one control.
#[derive(Debug, Clone)]
pub struct RevocationLimits {
    attempts: Arc<Semaphore>,
    held: Arc<Semaphore>,
    attempts_max: usize,
    held_max: usize,
}

/// A place among the revocations held ([`HELD`]), given back when dropped.
#[derive(Debug)]
pub struct Held(#[allow(dead_code)] OwnedSemaphorePermit);

/// A revocation attempt in flight ([`ATTEMPTS`]), ended when dropped.
#[derive(Debug)]
pub struct Attempt(#[allow(dead_code)] OwnedSemaphorePermit);

impl Default for RevocationLimits {
    fn default() -> Self {
        Self::new(ATTEMPTS, HELD)
    }
}

impl RevocationLimits {
    /// At most `attempts` attempts in flight and `held` revocations held.
    pub fn new(attempts: usize, held: usize) -> Self {
        Self {
            attempts: Arc::new(Semaphore::new(attempts.max(1))),
            held: Arc::new(Semaphore::new(held.max(1))),
            attempts_max: attempts.max(1),
            held_max: held.max(1),
        }
    }

    /// How many more revocations this control can take on now.
    pub fn room(&self) -> usize {
        self.held.available_permits()
    }

    /// A place among the revocations held, if there is one now.
    pub fn try_hold(&self) -> Option<Held> {
        self.held.clone().try_acquire_owned().ok().map(Held)
    }

    /// Waits until at least half the places are free (or `shutdown`): the moment to
    /// take on a new batch, rather than one revocation at a time.
    pub async fn half_free(&self, shutdown: &CancellationToken) {
        let half = u32::try_from(self.held_max.div_ceil(2)).unwrap_or(u32::MAX);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            // Acquired and given back at once: only the wait matters. The semaphore is
            // never closed, so the error cannot happen.
            _ = self.held.acquire_many(half) => {}
        }
    }

    /// Waits for a permit to make one attempt; `None` on `shutdown`.
    pub async fn attempt(&self, shutdown: &CancellationToken) -> Option<Attempt> {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            permit = self.attempts.clone().acquire_owned() => permit.ok().map(Attempt),
        }
    }

    /// Attempts in flight now.
    pub fn attempts_in_flight(&self) -> usize {
        self.attempts_max
            .saturating_sub(self.attempts.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn places_and_attempts_run_out_and_come_back() {
        let limits = RevocationLimits::new(2, 3);
        let shutdown = CancellationToken::new();
        let held: Vec<_> = (0..3).map(|_| limits.try_hold().expect("room")).collect();
        assert_eq!(limits.room(), 0);
        assert!(limits.try_hold().is_none(), "no fourth place");
        drop(held);
        assert_eq!(limits.room(), 3);

        let a = limits.attempt(&shutdown).await.expect("first");
        let _b = limits.attempt(&shutdown).await.expect("second");
        assert_eq!(limits.attempts_in_flight(), 2);
        let third = limits.attempt(&shutdown);
        tokio::pin!(third);
        assert!(
            futures_poll_once(third.as_mut()).await.is_none(),
            "a third attempt waits"
        );
        drop(a);
        assert!(third.await.is_some(), "and goes once one ends");
        shutdown.cancel();
        assert!(
            limits.attempt(&shutdown).await.is_none(),
            "no attempt starts after shutdown"
        );
    }

    /// Polls `fut` once: `Some` if it was ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(fut: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = fut => Some(out),
            _ = std::future::ready(()) => None,
        }
    }
}

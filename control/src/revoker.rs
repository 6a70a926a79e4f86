//! Revocation at expiry: a timer queue of leases owed a revocation, and the retry loop
//! that carries each one out.
//!
//! The queue is in memory; the store is the truth. Every lease with `removed == false`
//! is re-armed at start-up, so a crash only delays a revocation until the next start,
//! and the start-up sweep covers even a lost store.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use leasehold_channel::protocol::Timestamp;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// First retry delay after a failed revocation.
pub const RETRY_INITIAL: Duration = Duration::from_millis(250);
/// Longest delay between revocation attempts while InfluxDB is down.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// The delay before retry number `attempt` (0-based): doubling, capped.
pub fn backoff(attempt: u32) -> Duration {
    RETRY_INITIAL
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(RETRY_MAX)
}

/// How long from `now` until `at`; zero if it has passed.
pub fn until(at: Timestamp, now: SystemTime) -> Duration {
    at.to_system().duration_since(now).unwrap_or(Duration::ZERO)
}

/// Handle for scheduling revocations.
#[derive(Debug, Clone)]
pub struct Schedule {
    tx: mpsc::UnboundedSender<(Timestamp, String)>,
}

impl Schedule {
    /// A schedule and the receiving end for [`run_queue`].
    pub fn new() -> (Self, mpsc::UnboundedReceiver<(Timestamp, String)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Revoke lease `id` at `at` (now if it has passed).
    pub fn at(&self, at: Timestamp, id: String) {
        // Fails only after shutdown, when the start-up re-arm takes over anyway.
        let _ = self.tx.send((at, id));
    }
}

/// Runs the timer queue: calls `due(lease id)` when each lease's time comes.
pub async fn run_queue(
    mut rx: mpsc::UnboundedReceiver<(Timestamp, String)>,
    shutdown: CancellationToken,
    mut due: impl FnMut(String),
) {
    let mut queue: BTreeSet<(Timestamp, String)> = BTreeSet::new();
    loop {
        while let Some(first) = queue.first() {
            if until(first.0, SystemTime::now()) > Duration::ZERO {
                break;
            }
            let (_, id) = queue.pop_first().expect("non-empty queue");
            due(id);
        }
        let wait = queue.first().map_or(Duration::from_secs(3600), |(at, _)| {
            until(*at, SystemTime::now())
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            job = rx.recv() => match job {
                Some(job) => { queue.insert(job); }
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(5), RETRY_MAX);
        assert_eq!(backoff(u32::MAX), RETRY_MAX);
    }

    #[tokio::test]
    async fn fires_in_expiry_order_and_past_ones_at_once() {
        let (schedule, rx) = Schedule::new();
        let shutdown = CancellationToken::new();
        let (tx, mut fired) = mpsc::unbounded_channel();
        let now = Timestamp::now();
        schedule.at(now.plus_secs(1), "later".into());
        schedule.at(Timestamp(now.0 - 5), "overdue".into());
        let task = tokio::spawn(run_queue(rx, shutdown.clone(), move |id| {
            let _ = tx.send(id);
        }));
        assert_eq!(fired.recv().await.unwrap(), "overdue");
        assert_eq!(fired.recv().await.unwrap(), "later");
        shutdown.cancel();
        task.await.unwrap();
    }
}

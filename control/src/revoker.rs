//! Revocation at expiry: a timer queue of leases owed a revocation, and the backoff of
//! the retry loop that carries each one out (`control.rs`).
//!
//! The queue is in memory; the store is the truth. Every lease with `removed == false`
//! is re-armed at start-up, so a crash only delays a revocation until the next start,
//! and the start-up sweep covers even a lost store.
//!
//! The queue's order and "what is due, how long until the next" are pure ([`Queue`]);
//! [`run_queue`] is the shell that sleeps, and it is given its wall clock rather than
//! reading one, like the proxy's schedule: the control passes `SystemTime::now`, the
//! tests a clock that follows tokio's paused time, so nothing in them waits for real.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use leasehold_protocol::Timestamp;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::revocation_limits::{Held, RevocationLimits};

/// First retry delay after a failed revocation.
pub const RETRY_INITIAL: Duration = Duration::from_millis(250);
/// Longest delay between revocation attempts while InfluxDB is down: short, since a
/// credential outliving its lease is what the control exists to prevent.
pub const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long the queue sleeps when it holds nothing (a new lease wakes it at once).
const IDLE: Duration = Duration::from_secs(3600);

/// The delay before retry number `attempt` (0-based): doubling, capped.
pub fn backoff(attempt: u32) -> Duration {
    leasehold_channel::backoff::capped_doubling(RETRY_INITIAL, RETRY_MAX, attempt)
}

/// How long from `now` until `at`; zero if it has passed.
pub fn until(at: Timestamp, now: SystemTime) -> Duration {
    at.to_system().duration_since(now).unwrap_or(Duration::ZERO)
}

/// Leases owed a revocation, soonest first (ties by id, so the order is total). Pure.
#[derive(Debug, Default)]
pub struct Queue {
    due: BTreeSet<(Timestamp, String)>,
}

impl Queue {
    /// Revoke lease `id` at `at`.
    pub fn insert(&mut self, at: Timestamp, id: String) {
        self.due.insert((at, id));
    }

    /// The next lease whose time has come at `now`, taken off the queue.
    pub fn pop_due(&mut self, now: SystemTime) -> Option<String> {
        let (at, _) = self.due.first()?;
        if until(*at, now) > Duration::ZERO {
            return None;
        }
        self.due.pop_first().map(|(_, id)| id)
    }

    /// How long from `now` until the next lease is due (`IDLE` when none is).
    pub fn wait(&self, now: SystemTime) -> Duration {
        self.due.first().map_or(IDLE, |(at, _)| until(*at, now))
    }

    /// How many leases are due at `now` (still queued).
    pub fn due_count(&self, now: SystemTime) -> usize {
        self.due
            .iter()
            .take_while(|(at, _)| until(*at, now).is_zero())
            .count()
    }

    /// How many leases are queued.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
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

/// Runs the timer queue: calls `due(lease id, place)` when each lease's time comes by
/// `clock`, as long as `limits` has room for one more; what is due beyond that stays
/// queued (an entry in an ordered set, not a task) until half the places are free, and
/// its number is told to `waiting` (the backlog the metrics show).
pub async fn run_queue(
    mut rx: mpsc::UnboundedReceiver<(Timestamp, String)>,
    shutdown: CancellationToken,
    clock: impl Fn() -> SystemTime,
    limits: RevocationLimits,
    mut waiting: impl FnMut(usize),
    mut due: impl FnMut(String, Held),
) {
    let mut queue = Queue::default();
    loop {
        let mut full = false;
        while queue.wait(clock()).is_zero() {
            let Some(place) = limits.try_hold() else {
                full = true;
                break;
            };
            let Some(id) = queue.pop_due(clock()) else {
                break;
            };
            due(id, place);
        }
        waiting(if full { queue.due_count(clock()) } else { 0 });
        // Full: what is due waits for room, not for a clock.
        let wait = if full { IDLE } else { queue.wait(clock()) };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = limits.half_free(&shutdown), if full => {}
            job = rx.recv() => match job {
                Some((at, id)) => queue.insert(at, id),
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(5), RETRY_MAX);
        assert_eq!(backoff(u32::MAX), RETRY_MAX);
    }

    #[test]
    fn the_queue_gives_out_what_is_due_in_order_and_the_wait_for_the_rest() {
        let mut queue = Queue::default();
        assert_eq!(queue.wait(at(0)), IDLE);
        queue.insert(Timestamp(110), "b".into());
        queue.insert(Timestamp(100), "a".into());
        queue.insert(Timestamp(100), "0".into());
        assert_eq!(queue.pop_due(at(99)), None);
        assert_eq!(queue.wait(at(99)), Duration::from_secs(1));
        // Due at its second, not after it: expiry is inclusive, as the status is.
        assert_eq!(queue.pop_due(at(100)).as_deref(), Some("0"));
        assert_eq!(queue.pop_due(at(100)).as_deref(), Some("a"));
        assert_eq!(queue.pop_due(at(100)), None);
        assert_eq!(queue.wait(at(100)), Duration::from_secs(10));
        // A clock stepped far ahead (or a restart long after): everything overdue now.
        assert_eq!(queue.pop_due(at(10_000)).as_deref(), Some("b"));
        assert!(queue.is_empty());
    }

    /// A wall clock that follows tokio's (paused) clock from `start`.
    fn paused_clock(start: SystemTime) -> impl Fn() -> SystemTime {
        let origin = tokio::time::Instant::now();
        move || start + origin.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn fires_in_expiry_order_past_ones_at_once_and_not_before_their_time() {
        let start = at(1_000);
        let (schedule, rx) = Schedule::new();
        let shutdown = CancellationToken::new();
        let (tx, mut fired) = mpsc::unbounded_channel();
        schedule.at(Timestamp(1_000 + 3_600), "later".into());
        schedule.at(Timestamp(1_000 + 60), "soon".into());
        schedule.at(Timestamp(1_000 - 5), "overdue".into());
        let began = tokio::time::Instant::now();
        let task = tokio::spawn(run_queue(
            rx,
            shutdown.clone(),
            paused_clock(start),
            RevocationLimits::default(),
            |_| {},
            move |id, _place| {
                let _ = tx.send(id);
            },
        ));
        assert_eq!(fired.recv().await.unwrap(), "overdue");
        assert_eq!(
            began.elapsed(),
            Duration::ZERO,
            "an overdue lease is revoked at once"
        );
        assert_eq!(fired.recv().await.unwrap(), "soon");
        assert_eq!(began.elapsed(), Duration::from_secs(60));
        assert_eq!(fired.recv().await.unwrap(), "later");
        assert_eq!(began.elapsed(), Duration::from_secs(3_600));
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_scheduled_while_the_queue_waits_is_not_held_up_by_it() {
        let (schedule, rx) = Schedule::new();
        let shutdown = CancellationToken::new();
        let (tx, mut fired) = mpsc::unbounded_channel();
        let start = at(1_000);
        schedule.at(Timestamp(1_000 + 3_600), "hour".into());
        let began = tokio::time::Instant::now();
        let task = tokio::spawn(run_queue(
            rx,
            shutdown.clone(),
            paused_clock(start),
            RevocationLimits::default(),
            |_| {},
            move |id, _place| {
                let _ = tx.send(id);
            },
        ));
        // The queue is asleep until the hour; a minute's lease arrives meanwhile.
        tokio::time::sleep(Duration::from_secs(10)).await;
        schedule.at(Timestamp(1_000 + 70), "minute".into());
        assert_eq!(fired.recv().await.unwrap(), "minute");
        assert_eq!(began.elapsed(), Duration::from_secs(70));
        shutdown.cancel();
        task.await.unwrap();
        assert!(fired.try_recv().is_err(), "the hour's lease never came due");
    }

    #[tokio::test(start_paused = true)]
    async fn what_is_due_beyond_the_room_waits_queued_and_goes_when_places_free() {
        let (schedule, rx) = Schedule::new();
        let shutdown = CancellationToken::new();
        let (tx, mut fired) = mpsc::unbounded_channel();
        let waiting = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for n in 0..10 {
            schedule.at(Timestamp(1_000 - 5), format!("lease{n:02}"));
        }
        let limits = RevocationLimits::new(1, 4);
        let reported = waiting.clone();
        let task = tokio::spawn(run_queue(
            rx,
            shutdown.clone(),
            paused_clock(at(1_000)),
            limits.clone(),
            move |n| reported.store(n, std::sync::atomic::Ordering::SeqCst),
            move |id, place| {
                let _ = tx.send((id, place));
            },
        ));
        let mut places = Vec::new();
        for _ in 0..4 {
            places.push(fired.recv().await.unwrap());
        }
        // Ten due, four places: the six others stay queued, counted, no task for them.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(fired.try_recv().is_err(), "a fifth handed out with no room");
        assert_eq!(waiting.load(std::sync::atomic::Ordering::SeqCst), 6);
        // One place back is not half the room: still nothing.
        places.pop();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            fired.try_recv().is_err(),
            "taken on in batches, not one by one"
        );
        places.pop();
        let next = fired.recv().await.unwrap();
        assert_eq!(next.0, "lease04", "in order");
        let _ = fired.recv().await.unwrap();
        assert_eq!(waiting.load(std::sync::atomic::Ordering::SeqCst), 4);
        shutdown.cancel();
        task.await.unwrap();
    }
}

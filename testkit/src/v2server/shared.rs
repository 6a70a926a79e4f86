//! The state every connection shares: the store, injected failures, the request
//! counter. A leaf module, so the routes and the write handlers use it without
//! importing the server that runs them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::store::Store;

/// State shared by the handle and every connection. The store lock is never held across
/// an `.await`.
pub(crate) struct Shared {
    store: Mutex<Store>,
    failing: AtomicBool,
    fail_until: Mutex<Option<Instant>>,
    /// Requests still to fail, counted down by each request (see `fail_next`).
    fail_next: AtomicU64,
    requests: AtomicU64,
    /// While `true`, `DELETE /api/v2/authorizations/{id}` waits (see `hold_deletes`).
    hold_deletes: tokio::sync::watch::Sender<bool>,
    /// DELETEs waiting now, and the most that ever waited at once.
    deletes_held: AtomicU64,
    most_deletes_held: AtomicU64,
}

impl Shared {
    pub(crate) fn new(store: Store) -> Self {
        Self {
            store: Mutex::new(store),
            failing: AtomicBool::new(false),
            fail_until: Mutex::new(None),
            fail_next: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            hold_deletes: tokio::sync::watch::channel(false).0,
            deletes_held: AtomicU64::new(0),
            most_deletes_held: AtomicU64::new(0),
        }
    }

    /// Runs `f` with the store locked. A panic in another holder (a failed test
    /// assertion) does not poison the server for the rest of the test.
    pub(crate) fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut store)
    }

    /// Whether requests should be answered with 503 right now.
    pub(crate) fn failing(&self) -> bool {
        if self.failing.load(Ordering::SeqCst) {
            return true;
        }
        let counted = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if counted.is_ok() {
            return true;
        }
        let until = self
            .fail_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        until.is_some_and(|t| Instant::now() < t)
    }

    pub(crate) fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
        if !failing {
            self.fail_next.store(0, Ordering::SeqCst);
            *self
                .fail_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    pub(crate) fn fail_next(&self, requests: u64) {
        self.fail_next.store(requests, Ordering::SeqCst);
    }

    pub(crate) fn fail_for(&self, duration: Duration) {
        *self
            .fail_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + duration);
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn hold_deletes(&self, hold: bool) {
        self.hold_deletes.send_replace(hold);
    }

    /// Waits while DELETEs are held, counted among those held meanwhile.
    pub(crate) async fn delete_gate(&self) {
        let mut held = self.hold_deletes.subscribe();
        if !*held.borrow_and_update() {
            return;
        }
        let now = self.deletes_held.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_deletes_held.fetch_max(now, Ordering::SeqCst);
        // An error means the server is gone: nothing left to wait for.
        let _ = held.wait_for(|hold| !*hold).await;
        self.deletes_held.fetch_sub(1, Ordering::SeqCst);
    }

    pub(crate) fn deletes_held(&self) -> (u64, u64) {
        (
            self.deletes_held.load(Ordering::SeqCst),
            self.most_deletes_held.load(Ordering::SeqCst),
        )
    }
}

//! The current credential, shared between one writer (the refresher) and every request.
//!
//! The request path does one lock-free `ArcSwap::load_full` and an expiry check; it
//! never holds a guard across an `.await`, so a renewal never waits for, or disturbs,
//! in-flight requests: they finish with the `Arc` they took.
//!
//! Requests talk back through two atomics: the instant of the refresher's next attempt
//! (for `Retry-After`) and a single-flight "renew now" request keyed by credential
//! generation. A burst of 401s for generation N sets the request once (`fetch_max`) and
//! wakes the refresher once; a 401 for a credential that has already been replaced is
//! ignored, so a burst never turns into a renewal storm.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::credential::Credential;
use crate::schedule;

/// The credential snapshot plus the small amount of shared refresher state.
#[derive(Debug)]
pub struct CredentialStore {
    current: ArcSwapOption<Credential>,
    /// Origin for `next_attempt_ms`.
    epoch: Instant,
    /// Milliseconds after `epoch` of the refresher's next attempt (0: now).
    next_attempt_ms: AtomicU64,
    /// The highest credential generation for which a renewal was requested.
    renewal_requested_for: AtomicU64,
    renew_now: Notify,
    /// `true` once a first credential has been installed.
    ready: watch::Sender<bool>,
    /// The control's last answer was that this identity is not a member (it was
    /// deleted): read only when there is no credential, to say so in the 503.
    not_member: AtomicBool,
}

impl Default for CredentialStore {
    fn default() -> Self {
        Self::new()
    }
}

impl CredentialStore {
    /// An empty store: every request is refused until the first install.
    pub fn new() -> Self {
        Self {
            current: ArcSwapOption::empty(),
            epoch: Instant::now(),
            next_attempt_ms: AtomicU64::new(0),
            renewal_requested_for: AtomicU64::new(0),
            renew_now: Notify::new(),
            ready: watch::Sender::new(false),
            not_member: AtomicBool::new(false),
        }
    }

    /// Records whether the control refused this identity as no longer a member
    /// (refresher only).
    pub fn set_not_member(&self, not_member: bool) {
        self.not_member.store(not_member, Ordering::Relaxed);
    }

    /// Whether the control last refused this identity as no longer a member.
    pub fn not_member(&self) -> bool {
        self.not_member.load(Ordering::Relaxed)
    }

    /// The credential to use at `now`, if there is a valid one.
    pub fn current(&self, now: Instant) -> Option<Arc<Credential>> {
        self.current.load_full().filter(|c| c.is_valid_at(now))
    }

    /// The installed credential's deadline, valid or not.
    pub fn valid_until(&self) -> Option<Instant> {
        self.current.load().as_ref().map(|c| c.valid_until())
    }

    /// Replaces the credential (refresher only).
    pub fn install(&self, credential: Arc<Credential>) {
        self.current.store(Some(credential));
        self.ready.send_replace(true);
    }

    /// Drops the credential, e.g. once it has expired, so its bytes do not linger.
    pub fn clear(&self) {
        self.current.store(None);
    }

    /// Records when the refresher will next try (refresher only).
    pub fn set_next_attempt(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.epoch).as_millis();
        self.next_attempt_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// `Retry-After` seconds for a request refused at `now`.
    pub fn retry_after_secs(&self, now: Instant) -> u64 {
        let ms = self.next_attempt_ms.load(Ordering::Relaxed);
        let next = self.epoch + std::time::Duration::from_millis(ms);
        schedule::retry_after_secs(now, next)
    }

    /// Asks for an immediate renewal because credential `generation` was rejected.
    /// Returns whether this call woke the refresher (at most once per generation, and
    /// never for a credential that is no longer current).
    pub fn request_renewal(&self, generation: u64) -> bool {
        let is_current = self
            .current
            .load()
            .as_ref()
            .is_some_and(|c| c.generation() == generation);
        if !is_current {
            return false;
        }
        let previous = self
            .renewal_requested_for
            .fetch_max(generation, Ordering::AcqRel);
        if previous < generation {
            self.renew_now.notify_one();
            true
        } else {
            false
        }
    }

    /// Whether a pending wake-up is for credential `generation` (the refresher's current
    /// one) rather than a stale request for an older one.
    pub fn renewal_wanted_for(&self, generation: u64) -> bool {
        self.renewal_requested_for.load(Ordering::Acquire) == generation
    }

    /// Resolves when a renewal is requested (refresher only).
    pub async fn renewal_requested(&self) {
        self.renew_now.notified().await;
    }

    /// A receiver that turns `true` once the first credential is installed.
    pub fn subscribe_ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use leasehold_channel::{Identity, Secret};
    use leasehold_protocol::{AuthScheme, LeaseRecord, LeaseStatus, Timestamp};

    use super::*;

    fn credential(generation: u64, now: Instant) -> Arc<Credential> {
        let created = Timestamp::now();
        let lease = LeaseRecord {
            id: format!("{generation:016x}"),
            issued_for: Identity::from_seed(&[3; 32]).public(),
            created_at: created,
            expires_at: created.plus_secs(60),
            token: Some(Secret::new("t")),
            status: LeaseStatus::Active,
            auth_scheme: AuthScheme::Token,
            endpoint_url: "http://h".into(),
            ttl_ms: None,
            membership: None,
        };
        Arc::new(
            Credential::from_lease(&lease, None, now, now, SystemTime::now(), generation).unwrap(),
        )
    }

    #[test]
    fn empty_until_installed_and_never_past_expiry() {
        let store = CredentialStore::new();
        let now = Instant::now();
        assert!(store.current(now).is_none());
        let c = credential(1, now);
        let until = c.valid_until();
        store.install(c);
        assert!(*store.subscribe_ready().borrow());
        assert!(store.current(now).is_some());
        assert!(store.current(until).is_none());
        assert_eq!(store.valid_until(), Some(until));
        store.clear();
        assert!(store.current(now).is_none());
    }

    #[test]
    fn renewal_requests_are_single_flight_per_generation() {
        let store = CredentialStore::new();
        let now = Instant::now();
        assert!(!store.request_renewal(1), "nothing installed");
        store.install(credential(1, now));
        assert!(store.request_renewal(1));
        assert!(!store.request_renewal(1));
        assert!(store.renewal_wanted_for(1));
        store.install(credential(2, now));
        assert!(!store.request_renewal(1), "stale generation");
        assert!(!store.renewal_wanted_for(2));
        assert!(store.request_renewal(2));
    }

    #[test]
    fn retry_after_tracks_the_next_attempt() {
        let store = CredentialStore::new();
        let now = Instant::now();
        store.set_next_attempt(now + Duration::from_millis(7_300));
        assert_eq!(store.retry_after_secs(now), 8);
        store.set_next_attempt(now);
        assert_eq!(store.retry_after_secs(now), 1);
    }
}

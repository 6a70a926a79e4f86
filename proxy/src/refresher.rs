//! The only writer of the credential store: obtains leases, renews them, backs off.
//!
//! One loop, one task, three waits: the scheduled renewal (≈60% of the lifetime, see
//! [`schedule`]), the expiry of the current credential (to drop it and say so in the
//! log), and a "renew now" request from the request path after a 401. All of them also
//! watch the shutdown token. Failures keep the old credential in place — requests go on
//! using it until it expires — and are retried with jittered, capped exponential backoff,
//! never later than the old credential's expiry.
//!
//! **Warm-up.** A new `Basic` (InfluxDB 1.x) credential is sent upstream once before it
//! is installed, so InfluxDB's bcrypt check is paid by that request rather than by every
//! connection's first request after the swap (see [`warmup`](crate::warmup)). It is
//! bounded in time and never stops the credential from being installed.
//!
//! **401s.** An upstream 401 usually means the lease was revoked (a member deleted, an
//! operator revoking it); waiting for the scheduled renewal would fail every write until
//! then. So a 401 wakes this loop at once — single-flight per credential generation (see
//! [`CredentialStore::request_renewal`]), and no more often than once per
//! [`FORCED_RENEWAL_MIN_GAP`], so an upstream that rejects every fresh lease (wrong
//! permissions) cannot turn into a renewal storm against the control.

use std::future::pending;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::credential::{Credential, CredentialError};
use crate::metrics::Metrics;
use crate::schedule;
use crate::source::{LeaseSource, SourceError};
use crate::store::CredentialStore;
use crate::upstream::Upstream;
use crate::warmup::{WARMUP_MARGIN, WARMUP_TIMEOUT, Warmup};

/// A difference between our wall clock and the control's worth a warning.
pub const CLOCK_SKEW_WARN: Duration = Duration::from_secs(5);

/// How often a proxy whose identity is no longer a member asks again (and says so at
/// ERROR): only an operator can fix it, so asking every few seconds would only fill
/// the log and the control's.
pub const NOT_MEMBER_RETRY: Duration = Duration::from_secs(60);

/// Least time between two renewals forced by upstream 401s.
pub const FORCED_RENEWAL_MIN_GAP: Duration = Duration::from_secs(5);

/// Why one renewal attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("lease request failed: {0}")]
    Source(#[from] SourceError),
    #[error("lease is unusable: {0}")]
    Credential(#[from] CredentialError),
}

/// Everything the refresher works with.
pub struct Refresher<S> {
    source: S,
    store: Arc<CredentialStore>,
    upstream: Option<Upstream>,
    warmup: Warmup,
    metrics: Arc<Metrics>,
    /// Generation of the newest installed credential (0: none yet).
    generation: u64,
    /// Consecutive failed attempts.
    failures: u32,
    last_forced: Option<Instant>,
    /// Leases installed and not yet expired (the current one, and the one before it
    /// while it may still serve requests): what to give back at shutdown.
    held: Vec<(String, leasehold_protocol::Timestamp)>,
}

impl<S: LeaseSource> Refresher<S> {
    /// A refresher filling `store` from `source`. `upstream` overrides lease endpoints;
    /// `warmup` sends new `Basic` credentials upstream once before they are installed.
    pub fn new(
        source: S,
        store: Arc<CredentialStore>,
        upstream: Option<Upstream>,
        warmup: Warmup,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            source,
            store,
            upstream,
            warmup,
            metrics,
            generation: 0,
            failures: 0,
            last_forced: None,
            held: Vec::new(),
        }
    }

    /// Runs until `shutdown` is cancelled.
    // The proxy uses `run_and_hand_back`; tests drive the loop alone.
    #[cfg_attr(not(test), allow(dead_code))]
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.serve(shutdown).await;
    }

    /// Runs until `shutdown` is cancelled, then hands back the source and the ids of
    /// the leases still live, so the caller can release them once requests drained.
    pub async fn run_and_hand_back(mut self, shutdown: CancellationToken) -> (S, Vec<String>) {
        self.serve(shutdown).await;
        let now = leasehold_protocol::Timestamp::now();
        let held = self
            .held
            .into_iter()
            .filter(|(_, expires_at)| *expires_at > now)
            .map(|(id, _)| id)
            .collect();
        (self.source, held)
    }

    async fn serve(&mut self, shutdown: CancellationToken) {
        loop {
            // At or before the moment the request goes out (a reconnect comes first), so
            // a lifetime counted from here ends no later than the control's.
            let asked = Instant::now();
            self.store.set_next_attempt(asked);
            let fetched = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                fetched = self.source.fetch() => fetched,
            };
            let next = match self.build(asked, fetched) {
                Ok(credential) => {
                    // Meanwhile the old credential, if any, keeps serving requests: the
                    // warm-up ends before it does.
                    let now = Instant::now();
                    let budget = match self.store.current(now) {
                        Some(old) => old
                            .valid_until()
                            .saturating_duration_since(now)
                            .saturating_sub(WARMUP_MARGIN),
                        None => WARMUP_TIMEOUT,
                    };
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => return,
                        _ = self.warmup.run(&credential, budget) => {}
                    }
                    self.install(credential)
                }
                Err(error) => self.record_failure(&error),
            };
            self.store.set_next_attempt(next);
            if !self.wait(next, &shutdown).await {
                return;
            }
        }
    }

    /// Turns a lease asked for at `asked` into the next credential (stamped as received
    /// now).
    fn build(
        &self,
        asked: Instant,
        fetched: Result<leasehold_protocol::LeaseRecord, SourceError>,
    ) -> Result<Credential, AttemptError> {
        let lease = fetched?;
        let credential = Credential::from_lease(
            &lease,
            self.upstream.as_ref(),
            asked,
            Instant::now(),
            SystemTime::now(),
            self.generation + 1,
        )?;
        Ok(credential)
    }

    /// Installs a new credential; returns when to renew it.
    fn install(&mut self, credential: Credential) -> Instant {
        let now = Instant::now();
        self.generation = credential.generation();
        self.failures = 0;
        self.store.set_not_member(false);
        // Its lifetime counts from when it was received, before any warm-up.
        let renew_at = schedule::renew_at(
            credential.received(),
            credential.valid_until(),
            schedule::jitter_sample(),
        );
        info!(
            lease.id = credential.lease_id(),
            expires_at = %credential.expires_at(),
            upstream = %credential.upstream(),
            renew_in_secs = renew_at.saturating_duration_since(now).as_secs_f64(),
            // Both counted on the monotonic clock from when the lease arrived.
            lifetime_secs = credential.valid_until().saturating_duration_since(credential.received()).as_secs_f64(),
            renew_after_secs = renew_at.saturating_duration_since(credential.received()).as_secs_f64(),
            "lease installed"
        );
        if let Some(skew_ms) = credential.clock_skew_ms()
            && skew_ms.unsigned_abs() >= CLOCK_SKEW_WARN.as_millis() as u64
        {
            warn!(
                skew_ms,
                "this host's clock differs from the control's (positive: ours is ahead); leases are timed on the monotonic clock and stay valid, but fix the clock (NTP) for readable logs and timestamps"
            );
        }
        self.metrics.lease_installed(credential.expires_at().0);
        let now_wall = leasehold_protocol::Timestamp::now();
        self.held.retain(|(_, expires_at)| *expires_at > now_wall);
        self.held
            .push((credential.lease_id().to_owned(), credential.expires_at()));
        self.store.install(Arc::new(credential));
        renew_at
    }

    /// Records a failed attempt; returns when to try again.
    fn record_failure(&mut self, error: &AttemptError) -> Instant {
        let now = Instant::now();
        self.failures = self.failures.saturating_add(1);
        self.metrics.renewal_failed();
        let live_until = self.store.current(now).map(|c| c.valid_until());
        if matches!(error, AttemptError::Source(e) if e.is_not_member()) {
            // Deleted by an operator: one ERROR per (long) retry period, not a WARN
            // every few seconds, and requests are told why.
            self.store.set_not_member(true);
            // Its leases were revoked with the membership: the old credential is dead.
            self.store.clear();
            let retry_at = now + NOT_MEMBER_RETRY;
            error!(
                retry_in_secs = NOT_MEMBER_RETRY.as_secs(),
                "this identity is no longer a member: re-enroll (an admin runs `leasehold member allow ID` and issues a ticket; then `leasehold enroll TICKET --identity NAME`)"
            );
            return retry_at;
        }
        self.store.set_not_member(false);
        let retry_at =
            schedule::next_retry(now, self.failures, live_until, schedule::jitter_sample());
        warn!(
            %error,
            failures = self.failures,
            retry_in_secs = retry_at.saturating_duration_since(now).as_secs_f64(),
            holding_valid_lease = live_until.is_some(),
            "could not obtain a lease"
        );
        retry_at
    }

    /// Waits until the next attempt is due. Returns `false` on shutdown.
    async fn wait(&mut self, mut next: Instant, shutdown: &CancellationToken) -> bool {
        loop {
            let expiry = self.store.valid_until().filter(|&until| until <= next);
            let expired = async {
                match expiry {
                    Some(until) => sleep_until(until).await,
                    None => pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return false,
                () = expired => {
                    self.store.clear();
                    warn!("lease expired before it could be renewed; answering 503 until a new one arrives");
                }
                () = self.store.renewal_requested() => {
                    if !self.store.renewal_wanted_for(self.generation) {
                        continue; // a stale request for a credential already replaced
                    }
                    let now = Instant::now();
                    match self.last_forced {
                        Some(last) if now < last + FORCED_RENEWAL_MIN_GAP => {
                            next = next.min(last + FORCED_RENEWAL_MIN_GAP);
                            self.store.set_next_attempt(next);
                        }
                        _ => {
                            self.last_forced = Some(now);
                            info!(generation = self.generation, "upstream rejected the credential; renewing now");
                            return true;
                        }
                    }
                }
                () = sleep_until(next) => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use leasehold_channel::{Identity, Secret};
    use leasehold_protocol::{AuthScheme, LeaseRecord, LeaseStatus, Timestamp};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::warmup::WARMUP_TIMEOUT;

    /// Leases of 100 s with tokens `t1`, `t2`, ... (`Token`, or `u1:p1`, ... with
    /// `basic`) for `endpoint` (default: a port nothing listens on); fails while `fail`
    /// is set, and answers as the control does for a deleted member while `not_member`
    /// is set.
    #[derive(Clone, Default)]
    struct Fake {
        calls: Arc<AtomicUsize>,
        fail: Arc<AtomicBool>,
        not_member: Arc<AtomicBool>,
        basic: bool,
        endpoint: Option<String>,
        /// Lease lifetime in seconds (100 unless set).
        lifetime_secs: Option<u64>,
    }

    impl LeaseSource for Fake {
        async fn fetch(&mut self) -> Result<LeaseRecord, SourceError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if self.fail.load(Ordering::SeqCst) {
                return Err(SourceError::Other("injected".into()));
            }
            if self.not_member.load(Ordering::SeqCst) {
                return Err(SourceError::Control(
                    leasehold_protocol::client::ClientError::Remote(
                        leasehold_protocol::WireError::new(
                            leasehold_protocol::ErrorCode::Unauthorized,
                            "not an enrolled member",
                        ),
                    ),
                ));
            }
            // With a paused clock, wall time stands still relative to tokio time;
            // leases are stamped from the real clock and that is fine for the lifetime.
            let now = Timestamp::now();
            let lifetime = self.lifetime_secs.unwrap_or(100);
            let (token, auth_scheme) = if self.basic {
                (format!("u{n}:p{n}"), AuthScheme::Basic)
            } else {
                (format!("t{n}"), AuthScheme::Token)
            };
            Ok(LeaseRecord {
                id: format!("{n:016x}"),
                issued_for: Identity::from_seed(&[1; 32]).public(),
                created_at: now,
                expires_at: now.plus_secs(lifetime),
                token: Some(Secret::new(token)),
                status: LeaseStatus::Active,
                auth_scheme,
                endpoint_url: self
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| "http://127.0.0.1:1".into()),
                ttl_ms: Some(lifetime * 1000),
                membership: None,
            })
        }
    }

    fn start(fake: &Fake) -> (Arc<CredentialStore>, CancellationToken) {
        let (store, shutdown, _) = start_with(fake, WARMUP_TIMEOUT);
        (store, shutdown)
    }

    fn start_with(
        fake: &Fake,
        warmup_timeout: Duration,
    ) -> (Arc<CredentialStore>, CancellationToken, JoinHandle<()>) {
        let store = Arc::new(CredentialStore::new());
        let shutdown = CancellationToken::new();
        let refresher = Refresher::new(
            fake.clone(),
            Arc::clone(&store),
            None,
            Warmup::for_tests(warmup_timeout),
            Arc::new(Metrics::new()),
        );
        let task = tokio::spawn(refresher.run(shutdown.clone()));
        (store, shutdown, task)
    }

    async fn until(mut cond: impl FnMut() -> bool) {
        for _ in 0..100_000 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition never became true");
    }

    #[tokio::test(start_paused = true)]
    async fn renews_before_expiry_and_retries_with_backoff() {
        let fake = Fake::default();
        let (store, shutdown) = start(&fake);
        until(|| store.current(Instant::now()).is_some()).await;
        let first = store.current(Instant::now()).unwrap();
        assert_eq!(first.header(), "Token t1");
        // The remaining lifetime is at most 100 s (wall clock truncation may shave some).
        let life = first.valid_until() - first.received();
        until(|| fake.calls.load(Ordering::SeqCst) == 2).await;
        let renewed_after = Instant::now() - first.received();
        assert!(
            renewed_after >= life.mul_f64(0.54) && renewed_after <= life.mul_f64(0.67),
            "{renewed_after:?} of {life:?}"
        );
        assert_eq!(store.current(Instant::now()).unwrap().header(), "Token t2");

        // Failures keep the old credential and back off.
        fake.fail.store(true, Ordering::SeqCst);
        let failing_from = fake.calls.load(Ordering::SeqCst);
        let held = store.current(Instant::now()).unwrap();
        until(|| fake.calls.load(Ordering::SeqCst) >= failing_from + 4).await;
        assert_eq!(
            store.current(Instant::now()).unwrap().generation(),
            held.generation()
        );
        // ... until it expires, then nothing is served.
        until(|| store.current(Instant::now()).is_none()).await;
        assert!(Instant::now() >= held.valid_until());
        fake.fail.store(false, Ordering::SeqCst);
        until(|| store.current(Instant::now()).is_some()).await;
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_member_drops_its_lease_and_asks_again_only_after_the_long_period() {
        let fake = Fake::default();
        let (store, shutdown) = start(&fake);
        until(|| store.current(Instant::now()).is_some()).await;
        let generation = store.current(Instant::now()).unwrap().generation();
        fake.not_member.store(true, Ordering::SeqCst);
        // The upstream's 401 for the revoked lease makes the refresher ask at once.
        assert!(store.request_renewal(generation));
        until(|| store.not_member()).await;
        let refused_at = Instant::now();
        let calls = fake.calls.load(Ordering::SeqCst);
        assert!(
            store.current(Instant::now()).is_none(),
            "the dead lease is dropped"
        );
        assert!(store.retry_after_secs(Instant::now()) >= NOT_MEMBER_RETRY.as_secs() - 1);
        until(|| fake.calls.load(Ordering::SeqCst) > calls).await;
        assert!(Instant::now() - refused_at >= NOT_MEMBER_RETRY - Duration::from_millis(50));
        // Re-enrolled: the next attempt succeeds and the flag clears.
        fake.not_member.store(false, Ordering::SeqCst);
        until(|| store.current(Instant::now()).is_some()).await;
        assert!(!store.not_member());
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_401s_renews_once() {
        let fake = Fake::default();
        let (store, shutdown) = start(&fake);
        until(|| store.current(Instant::now()).is_some()).await;
        let generation = store.current(Instant::now()).unwrap().generation();
        let woke: usize = (0..50)
            .map(|_| usize::from(store.request_renewal(generation)))
            .sum();
        assert_eq!(woke, 1);
        until(|| store.current(Instant::now()).unwrap().generation() == generation + 1).await;
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        // A late 401 for the replaced credential does nothing.
        assert!(!store.request_renewal(generation));
        // A 401 for the new one within the minimum gap waits for the gap.
        let before = Instant::now();
        assert!(store.request_renewal(generation + 1));
        until(|| fake.calls.load(Ordering::SeqCst) == 3).await;
        assert!(Instant::now() - before >= FORCED_RENEWAL_MIN_GAP - Duration::from_millis(200));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_basic_lease_is_installed_although_its_warm_up_failed() {
        // The default endpoint refuses connections: the warm-up fails at once.
        let fake = Fake {
            basic: true,
            ..Fake::default()
        };
        // A warm-up timeout far beyond the wait below: installing cannot be the timeout
        // running out, only the refused warm-up being let go.
        let (store, shutdown, _) = start_with(&fake, Duration::from_secs(600));
        tokio::time::timeout(
            Duration::from_secs(60),
            until(|| store.current(Instant::now()).is_some()),
        )
        .await
        .expect("installed long before the warm-up timeout");
        assert_eq!(
            store.current(Instant::now()).unwrap().header(),
            "Basic dTE6cDE="
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn shutdown_does_not_wait_for_a_warm_up() {
        // Reads the warm-up request, says so, and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", silent.local_addr().unwrap());
        let (received, mut warming_up) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (mut stream, _) = silent.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let n = tokio::io::AsyncReadExt::read(&mut stream, &mut head)
                .await
                .unwrap();
            received.send(head[..n].to_vec()).unwrap();
            // Hold the connection open, unanswered, until the test ends.
            std::future::pending::<()>().await;
        });
        let fake = Fake {
            basic: true,
            endpoint: Some(endpoint),
            ..Fake::default()
        };
        let (store, shutdown, task) = start_with(&fake, Duration::from_secs(600));
        // The warm-up request is at the upstream: the refresher is now waiting on it.
        let request = warming_up.recv().await.unwrap();
        assert!(request.starts_with(b"GET /query"), "{request:?}");
        assert!(store.current(Instant::now()).is_none(), "still warming up");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("stopped while the warm-up was pending")
            .unwrap();
    }

    #[tokio::test]
    async fn a_renewal_warm_up_ends_before_the_credential_it_replaces() {
        // An upstream that reads every warm-up request and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", silent.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });
        let fake = Fake {
            basic: true,
            endpoint: Some(endpoint),
            lifetime_secs: Some(3),
            ..Fake::default()
        };
        // The first warm-up has no credential to outlast: it times out (1.5 s), leaving
        // 1.5 s of the first lease; renewed at 60% (1.8 s), the second lease's warm-up
        // would take 1.5 s again, past the first's end, and must give up before it.
        let (store, shutdown, _) = start_with(&fake, Duration::from_millis(1500));
        until(|| store.current(Instant::now()).is_some()).await;
        let first = store.current(Instant::now()).unwrap().generation();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let current = store.current(Instant::now());
            assert!(
                current.is_some(),
                "the first credential ended while its successor was warming up"
            );
            if current.unwrap().generation() > first {
                break;
            }
            assert!(Instant::now() < deadline, "never renewed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.cancel();
    }
}

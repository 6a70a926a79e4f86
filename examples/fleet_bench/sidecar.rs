//! A sidecar's lease loop without the HTTP proxy around it: the proxy's own lease source
//! (`ControlLeaseSource`: one kept-open channel, failover, reconnect on a stale one), its
//! credential check (`Credential::from_lease`) and its schedule (`schedule::renew_at`
//! with the proxy's jitter, `schedule::next_retry` after a failure) — the same calls the
//! refresher (`proxy/src/refresher.rs`) makes, so the renewals the control sees are
//! spread exactly as a fleet of proxies spreads them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use leasehold_channel::Identity;
use leasehold_channel::home::Enrollment;
use leasehold_proxy::control_source::ControlLeaseSource;
use leasehold_proxy::credential::Credential;
use leasehold_proxy::schedule;
use leasehold_proxy::source::LeaseSource;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What one sidecar saw.
#[derive(Default)]
pub struct Tally {
    /// Each lease received: when, and how long the request took.
    pub leases: Vec<(Instant, Duration)>,
    /// Attempts that failed (refused, timed out, connection closed).
    pub failures: u64,
    /// The last failure, for the report.
    pub last_failure: Option<String>,
}

/// One attempt: a lease from `source`, checked as the proxy checks it.
async fn attempt(
    source: &mut ControlLeaseSource,
    generation: u64,
) -> Result<(Credential, Duration), String> {
    let asked = Instant::now();
    let lease = source.fetch().await.map_err(|e| e.to_string())?;
    let received = Instant::now();
    let credential =
        Credential::from_lease(&lease, None, asked, received, SystemTime::now(), generation)
            .map_err(|e| e.to_string())?;
    Ok((credential, received - asked))
}

/// Renews leases of `ttl` from `first_at` until `stop`, as the proxy's refresher does;
/// counts itself in `holding` once it has its first lease.
pub async fn renew(
    enrollment: Enrollment,
    identity: Identity,
    ttl: Duration,
    first_at: Instant,
    holding: Arc<AtomicUsize>,
    stop: CancellationToken,
) -> Tally {
    let mut source = ControlLeaseSource::new(enrollment, identity).with_ttl(ttl);
    let mut tally = Tally::default();
    let (mut next, mut failures, mut valid_until) = (first_at, 0, None);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return tally,
            _ = tokio::time::sleep_until(next) => {}
        }
        let outcome = tokio::select! {
            _ = stop.cancelled() => return tally,
            outcome = attempt(&mut source, tally.leases.len() as u64 + 1) => outcome,
        };
        match outcome {
            Ok((credential, took)) => {
                if tally.leases.is_empty() {
                    holding.fetch_add(1, Ordering::Relaxed);
                }
                tally.leases.push((credential.received(), took));
                failures = 0;
                valid_until = Some(credential.valid_until());
                next = schedule::renew_at(
                    credential.received(),
                    credential.valid_until(),
                    schedule::jitter_sample(),
                );
            }
            Err(error) => {
                failures += 1;
                tally.failures += 1;
                tally.last_failure = Some(error);
                next = schedule::next_retry(
                    Instant::now(),
                    failures,
                    valid_until,
                    schedule::jitter_sample(),
                );
            }
        }
    }
}

/// Waits for `go`, then asks for one lease on a new channel, retrying with the proxy's
/// backoff until one is received or `give_up` passes.
pub async fn first_lease(
    enrollment: Enrollment,
    identity: Identity,
    ttl: Duration,
    go: CancellationToken,
    give_up: Duration,
) -> Tally {
    let mut source = ControlLeaseSource::new(enrollment, identity).with_ttl(ttl);
    let mut tally = Tally::default();
    go.cancelled().await;
    let deadline = Instant::now() + give_up;
    let mut failures = 0;
    while Instant::now() < deadline {
        match attempt(&mut source, 1).await {
            Ok((credential, took)) => {
                tally.leases.push((credential.received(), took));
                return tally;
            }
            Err(error) => {
                failures += 1;
                tally.failures += 1;
                tally.last_failure = Some(error);
                let next =
                    schedule::next_retry(Instant::now(), failures, None, schedule::jitter_sample());
                tokio::time::sleep_until(next.min(deadline)).await;
            }
        }
    }
    tally
}

/// Lease requests back to back for `seconds` (a saturation run, not a fleet): on one
/// kept-open channel, or on a new channel each (`fresh`).
pub async fn back_to_back(
    enrollment: Enrollment,
    identity: Identity,
    fresh: bool,
    until: Instant,
) -> Tally {
    let mut source = ControlLeaseSource::new(enrollment.clone(), identity.clone());
    let mut tally = Tally::default();
    while Instant::now() < until {
        if fresh {
            source = ControlLeaseSource::new(enrollment.clone(), identity.clone());
        }
        match attempt(&mut source, 1).await {
            Ok((credential, took)) => tally.leases.push((credential.received(), took)),
            Err(error) => {
                tally.failures += 1;
                tally.last_failure = Some(error);
                tokio::time::sleep(schedule::backoff(1, schedule::jitter_sample())).await;
            }
        }
    }
    tally
}

//! When to renew a lease and when to retry after a failure: pure arithmetic on instants.
//!
//! Nothing here reads a clock or sleeps; the refresher (`refresher.rs`) feeds in "now"
//! and a random sample and sleeps until the answer. That keeps the policy testable (unit
//! and property tests below) without sockets or timers.
//!
//! **Why renew at 60% of the lifetime.** The remaining 40% is the budget for things going
//! wrong: a control restart, a slow InfluxDB behind it, a few backoff rounds. With the
//! 10 s backoff cap, a 5-minute lease leaves ~2 minutes, i.e. a dozen attempts, before the
//! old credential lapses, while a lease is still used for more than half its life so
//! the control is not asked for one every few seconds. (linkerd refreshes at 70% for
//! certificates that live for a day; leases are short, so the margin is wider.)
//!
//! **Why jitter.** Thousands of sidecars started together (a deploy, a node reboot) would
//! otherwise renew in lock-step forever. ±10% of the 60% point spreads them over a window
//! of 12% of the lifetime; retries are jittered the same way for the same reason after a
//! control outage.

use std::time::Duration;

use tokio::time::Instant;

/// Fraction of the lease lifetime after which it is renewed.
pub const RENEW_FRACTION: f64 = 0.6;
/// Relative jitter applied to the renewal point (±).
pub const RENEW_JITTER: f64 = 0.1;
/// Delay before the first retry after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest delay between two attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Share of a backoff delay that is randomised away (the delay is in `[1-this, 1] × d`).
pub const BACKOFF_JITTER: f64 = 0.25;

/// When to renew a lease received at `received` that is valid until `valid_until`.
///
/// `jitter_sample` is uniform in `[0, 1)`; it moves the renewal point within
/// `RENEW_FRACTION × (1 ± RENEW_JITTER)` of the lifetime. The answer always lies in
/// `[received, valid_until)` when the lifetime is not empty.
pub fn renew_at(received: Instant, valid_until: Instant, jitter_sample: f64) -> Instant {
    let lifetime = valid_until.saturating_duration_since(received);
    let spread = (clamp_sample(jitter_sample) * 2.0 - 1.0) * RENEW_JITTER;
    received + lifetime.mul_f64(RENEW_FRACTION * (1.0 + spread))
}

/// The delay before attempt number `failures + 1`, after `failures` (≥ 1) consecutive
/// failures: `BACKOFF_BASE` doubling up to `BACKOFF_CAP`, reduced by up to
/// `BACKOFF_JITTER` according to `jitter_sample` (uniform in `[0, 1)`).
pub fn backoff(failures: u32, jitter_sample: f64) -> Duration {
    let full = leasehold_channel::backoff::capped_doubling(
        BACKOFF_BASE,
        BACKOFF_CAP,
        failures.saturating_sub(1),
    );
    full.mul_f64(1.0 - BACKOFF_JITTER * clamp_sample(jitter_sample))
}

/// When to try again after `failures` consecutive failures at `now`.
///
/// While an old credential is still valid (`valid_until` in the future), the retry is
/// never scheduled after its expiry: the last chance to replace it without a gap is
/// taken even if the backoff would say otherwise.
pub fn next_retry(
    now: Instant,
    failures: u32,
    valid_until: Option<Instant>,
    jitter_sample: f64,
) -> Instant {
    let at = now + backoff(failures, jitter_sample);
    match valid_until {
        Some(deadline) if deadline > now => at.min(deadline),
        _ => at,
    }
}

/// The `Retry-After` value, in whole seconds (at least 1), for a client told to come back
/// when the next attempt at `next_attempt` may have produced a credential.
pub fn retry_after_secs(now: Instant, next_attempt: Instant) -> u64 {
    let wait = next_attempt.saturating_duration_since(now);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// A sample from `[0, 1)`, defensively clamped (NaN counts as 0).
fn clamp_sample(sample: f64) -> f64 {
    if sample.is_nan() {
        0.0
    } else {
        sample.clamp(0.0, 1.0)
    }
}

/// A uniform sample from `[0, 1)` from the operating system's random source; 0.5 (no
/// jitter) if that fails, since jitter is an optimisation, not a safety property.
pub fn jitter_sample() -> f64 {
    getrandom::u32().map_or(0.5, |x| f64::from(x) / (f64::from(u32::MAX) + 1.0))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn renews_at_sixty_percent_without_jitter() {
        let t0 = Instant::now();
        let at = renew_at(t0, t0 + Duration::from_secs(100), 0.5);
        assert_eq!(at - t0, Duration::from_secs(60));
    }

    #[test]
    fn jitter_bounds() {
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(100);
        assert_eq!(renew_at(t0, end, 0.0) - t0, Duration::from_secs(54));
        let high = renew_at(t0, end, 0.999_999) - t0;
        assert!(high > Duration::from_millis(65_990) && high <= Duration::from_secs(66));
    }

    #[test]
    fn empty_lifetime_renews_immediately() {
        let t0 = Instant::now();
        assert_eq!(renew_at(t0, t0, 0.3), t0);
        assert_eq!(
            renew_at(t0 + Duration::from_secs(5), t0, 0.3),
            t0 + Duration::from_secs(5)
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let full: Vec<_> = (1..=8).map(|n| backoff(n, 0.0)).collect();
        let ms = |m| Duration::from_millis(m);
        assert_eq!(
            full,
            [
                ms(250),
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(10_000),
                ms(10_000)
            ]
        );
        assert_eq!(backoff(u32::MAX, 0.0), BACKOFF_CAP);
        assert_eq!(backoff(1, 1.0), ms(187) + Duration::from_micros(500));
    }

    #[test]
    fn retry_never_after_a_live_credential_expires() {
        let now = Instant::now();
        let soon = now + Duration::from_millis(100);
        assert_eq!(next_retry(now, 10, Some(soon), 0.0), soon);
        // An expired credential does not pull the retry into the past.
        let past = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        assert_eq!(next_retry(now, 1, Some(past), 0.0), now + BACKOFF_BASE);
        assert_eq!(next_retry(now, 1, None, 0.0), now + BACKOFF_BASE);
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_one_second() {
        let now = Instant::now();
        assert_eq!(retry_after_secs(now, now), 1);
        assert_eq!(retry_after_secs(now + Duration::from_secs(3), now), 1);
        assert_eq!(retry_after_secs(now, now + Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(now, now + Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(now, now + Duration::from_secs(10)), 10);
    }

    #[test]
    fn samples_are_in_range() {
        for _ in 0..100 {
            let s = jitter_sample();
            assert!((0.0..1.0).contains(&s));
        }
        assert_eq!(clamp_sample(f64::NAN), 0.0);
    }

    proptest! {
        #[test]
        fn renewal_lies_in_the_jitter_window(lifetime_ms in 0u64..10_000_000, sample in 0.0f64..1.0) {
            let t0 = Instant::now();
            let lifetime = Duration::from_millis(lifetime_ms);
            let at = renew_at(t0, t0 + lifetime, sample);
            let offset = at - t0;
            let lo = lifetime.mul_f64(RENEW_FRACTION * (1.0 - RENEW_JITTER));
            let hi = lifetime.mul_f64(RENEW_FRACTION * (1.0 + RENEW_JITTER));
            prop_assert!(offset + Duration::from_nanos(1) >= lo && offset <= hi + Duration::from_nanos(1));
            prop_assert!(lifetime.is_zero() || at < t0 + lifetime);
        }

        #[test]
        fn backoff_is_monotonic_and_bounded(failures in 1u32..64, sample in 0.0f64..1.0) {
            let d = backoff(failures, sample);
            prop_assert!(d <= BACKOFF_CAP);
            prop_assert!(d >= BACKOFF_BASE.mul_f64(1.0 - BACKOFF_JITTER));
            prop_assert!(backoff(failures + 1, 0.0) >= backoff(failures, 0.0));
        }

        #[test]
        fn retry_respects_deadline(failures in 1u32..64, sample in 0.0f64..1.0, left_ms in 1u64..60_000) {
            let now = Instant::now();
            let deadline = now + Duration::from_millis(left_ms);
            let at = next_retry(now, failures, Some(deadline), sample);
            prop_assert!(at > now && at <= deadline);
        }
    }
}

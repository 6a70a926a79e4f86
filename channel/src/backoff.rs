//! Capped doubling: the one backoff curve behind every retry in leasehold (the proxy's
//! renewals, which add jitter on top, and the control's revocations and sweeps). Pure.
//!
//! Here because it is the one crate both the proxy and the control depend on; it has
//! nothing to do with the channel itself.

use std::time::Duration;

/// The delay for retry `step` (0-based): `base` doubled `step` times, at most `cap`.
/// Doubling stops at 2^16 so the arithmetic never overflows, whatever `step` is.
pub fn capped_doubling(base: Duration, cap: Duration, step: u32) -> Duration {
    base.saturating_mul(1u32 << step.min(16)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps_and_never_overflows() {
        let ms = Duration::from_millis;
        let d = |step| capped_doubling(ms(250), ms(5_000), step);
        assert_eq!(
            [d(0), d(1), d(2), d(3), d(4), d(5)],
            [ms(250), ms(500), ms(1_000), ms(2_000), ms(4_000), ms(5_000)]
        );
        assert_eq!(d(u32::MAX), ms(5_000));
        assert_eq!(
            capped_doubling(Duration::MAX, Duration::MAX, 40),
            Duration::MAX
        );
    }
}

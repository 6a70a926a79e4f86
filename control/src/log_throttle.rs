//! Logging a repeated event at most once per interval (pure: the caller passes the time).
//!
//! Under a flood, "accept failed: too many open files" or "connection refused: cap
//! reached" would otherwise be written thousands of times a second, costing the disk and
//! the CPU the control needs to keep serving. The first occurrence is logged at once;
//! later ones within the interval are counted and reported with the next line.

use std::time::{Duration, Instant};

/// How often a throttled event is logged at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One kind of event's throttle.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    /// A throttle that lets one line through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Records an occurrence at `now`. `Some(n)`: log it now, mentioning the `n`
    /// occurrences not logged since the last line; `None`: stay quiet.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_reporting_what_was_skipped() {
        let start = Instant::now();
        let mut throttle = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(throttle.hit(start), Some(0));
        for ms in [1, 500, 9_999] {
            assert_eq!(throttle.hit(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(throttle.hit(start + Duration::from_secs(10)), Some(3));
        assert_eq!(throttle.hit(start + Duration::from_secs(11)), None);
        assert_eq!(throttle.hit(start + Duration::from_secs(25)), Some(1));
    }
}

//! Replay scheduling, as arithmetic: which records go in the next request, how long to
//! pause after it so replay stays under its rate, and how long to wait after a failure.

use std::time::Duration;

/// The most body bytes one replay request carries. Consecutive records for the same
/// target are joined (each body ends in a newline) so a backlog of small writes is not
/// replayed one round trip at a time.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// First wait after a failed replay; doubled per failure up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Longest wait between replay attempts while delivery fails.
pub const MAX_RETRY: Duration = Duration::from_secs(5);

/// How many of the leading records (given as `(target, body length)`) form the next
/// request: at least one, then while the target is the same and the batch stays within
/// [`MAX_BATCH_BYTES`].
pub fn batch_len<'a>(records: impl IntoIterator<Item = (&'a str, usize)>) -> usize {
    let mut records = records.into_iter();
    let Some((target, mut bytes)) = records.next() else {
        return 0;
    };
    let mut count = 1;
    for (next, len) in records {
        if next != target || bytes + len > MAX_BATCH_BYTES {
            break;
        }
        bytes += len;
        count += 1;
    }
    count
}

/// How long sending `bytes` should take at `rate` bytes per second: replay waits out
/// what is left of it after each request, so live writes and InfluxDB keep headroom.
pub fn paced(bytes: usize, rate: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    Duration::from_micros(bytes.saturating_mul(1_000_000) / rate)
}

/// The wait after `failures` consecutive failed attempts (1 or more).
pub fn retry_after(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1u32 << failures.saturating_sub(1).min(8))
        .min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_to_one_target_and_the_size_bound() {
        assert_eq!(batch_len([]), 0);
        assert_eq!(batch_len([("/write?db=a", 10)]), 1);
        assert_eq!(
            batch_len([("/write?db=a", 10), ("/write?db=a", 10), ("/write?db=b", 1)]),
            2
        );
        assert_eq!(
            batch_len([("/write?db=a", MAX_BATCH_BYTES), ("/write?db=a", 1)]),
            1
        );
        // A single record larger than the bound still goes, alone.
        assert_eq!(batch_len([("/write?db=a", MAX_BATCH_BYTES * 2)]), 1);
    }

    #[test]
    fn pacing_and_retries() {
        assert_eq!(paced(1_000_000, 1_000_000), Duration::from_secs(1));
        assert_eq!(paced(5, 0), Duration::ZERO);
        assert_eq!(retry_after(1), FIRST_RETRY);
        assert_eq!(retry_after(2), FIRST_RETRY * 2);
        assert_eq!(retry_after(100), MAX_RETRY);
    }
}

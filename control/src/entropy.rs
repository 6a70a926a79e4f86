//! The control's randomness and lease ids: the only places it draws from the operating
//! system's random source, each failure a typed error rather than a panic on a request
//! path (a starved or broken source fails the request; the control stays up).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::lease;

/// The operating system's random source failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(String);

/// Fills `bytes` from the operating system's random source.
pub fn fill(bytes: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(bytes).map_err(|e| RandomError(e.to_string()))
}

/// A fresh 32-byte secret (enrollment tickets, v1 passwords).
pub fn secret32() -> Result<Zeroizing<[u8; 32]>, RandomError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    fill(bytes.as_mut())?;
    Ok(bytes)
}

/// A fresh lease id for a lease issued at `now` ([`lease::id_at`]), strictly greater
/// than every id this process gave out before.
pub fn new_lease_id(now: SystemTime) -> Result<String, RandomError> {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let millis = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut random = [0u8; 4];
    fill(&mut random)?;
    let random = u32::from_le_bytes(random);
    // One compare-and-swap loop: the id given out is the one stored, so two threads
    // never hand out the same id.
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let id = lease::next_id(last, millis, random);
        match LAST.compare_exchange_weak(last, id, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Ok(lease::format_id(id)),
            Err(actual) => last = actual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_well_formed_and_strictly_increasing() {
        let ids: Vec<String> = (0..10_000)
            .map(|_| new_lease_id(SystemTime::now()).unwrap())
            .collect();
        assert!(ids.iter().all(|id| lease::is_id(id)), "{ids:?}");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids out of order");
    }

    #[test]
    fn secrets_differ() {
        assert_ne!(*secret32().unwrap(), *secret32().unwrap());
    }
}

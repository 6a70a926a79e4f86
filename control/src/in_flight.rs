//! The revocations this process is carrying out at this moment, by lease id.
//!
//! Two tasks of one process can come to revoke the same lease at once: `lease revoke`
//! (a proxy giving its lease back at shutdown) records the revocation, and before it
//! claims the removal, this replica's own poll for due revocations has claimed it too
//! (a replica's claims are its own to renew). Both would then remove the credential,
//! and InfluxDB would see it removed twice. The second task finds the lease here and
//! leaves it to the first.

use std::collections::HashSet;
use std::sync::Mutex;

/// The lease ids being revoked by this process.
#[derive(Debug, Default)]
pub struct InFlight(Mutex<HashSet<String>>);

impl InFlight {
    /// Marks lease `id` as being revoked here until the guard drops; `None` if another
    /// task already is.
    pub fn begin(&self, id: &str) -> Option<InFlightGuard<'_>> {
        let mut ids = self.0.lock().unwrap_or_else(|e| e.into_inner());
        ids.insert(id.to_owned()).then(|| InFlightGuard {
            set: self,
            id: id.to_owned(),
        })
    }
}

/// A revocation in progress ([`InFlight::begin`]); ends when dropped.
#[derive(Debug)]
pub struct InFlightGuard<'a> {
    set: &'a InFlight,
    id: String,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        let mut ids = self.set.0.lock().unwrap_or_else(|e| e.into_inner());
        ids.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_task_per_lease_at_a_time() {
        let in_flight = InFlight::default();
        let first = in_flight.begin("a").expect("nobody revokes a yet");
        assert!(in_flight.begin("a").is_none(), "a is being revoked");
        let other = in_flight.begin("b").expect("b is another lease");
        drop(first);
        assert!(in_flight.begin("a").is_some(), "a's revocation ended");
        drop(other);
    }
}

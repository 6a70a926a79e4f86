//! Whether the proxy can still do its job: `/healthz` fails once the refresher has died.
//!
//! Requests keep flowing on the last credential for a while after the refresher stops,
//! so nothing else would notice until that credential expires and every write turns
//! into a 503. A failing liveness probe instead gets the sidecar restarted by its
//! supervisor while the old credential still serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

/// Liveness of the proxy's one essential background task.
#[derive(Debug, Default)]
pub struct Liveness {
    refresher_died: AtomicBool,
}

impl Liveness {
    /// True while the refresher runs (or has ended because of shutdown).
    pub fn is_alive(&self) -> bool {
        !self.refresher_died.load(Ordering::Relaxed)
    }

    /// A guard to hold inside the refresher's task: dropped when the task ends for any
    /// reason, a panic included, it marks the proxy dead unless shutdown was asked for.
    pub fn guard(self: &Arc<Self>, shutdown: CancellationToken) -> RefresherGuard {
        RefresherGuard {
            liveness: Arc::clone(self),
            shutdown,
        }
    }
}

/// See [`Liveness::guard`].
#[derive(Debug)]
pub struct RefresherGuard {
    liveness: Arc<Liveness>,
    shutdown: CancellationToken,
}

impl Drop for RefresherGuard {
    fn drop(&mut self) {
        if !self.shutdown.is_cancelled() {
            self.liveness.refresher_died.store(true, Ordering::Relaxed);
            tracing::error!(
                "the lease refresher stopped unexpectedly; /healthz now fails so that a \
                 supervisor restarts the proxy"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresher_that_ends_during_shutdown_leaves_the_proxy_alive() {
        let liveness = Arc::new(Liveness::default());
        let shutdown = CancellationToken::new();
        let guard = liveness.guard(shutdown.clone());
        shutdown.cancel();
        drop(guard);
        assert!(liveness.is_alive());
    }

    #[test]
    fn a_refresher_that_ends_otherwise_makes_the_proxy_dead() {
        let liveness = Arc::new(Liveness::default());
        let guard = liveness.guard(CancellationToken::new());
        assert!(liveness.is_alive());
        drop(guard);
        assert!(!liveness.is_alive());
    }

    #[test]
    fn a_panicking_refresher_makes_the_proxy_dead() {
        let liveness = Arc::new(Liveness::default());
        let guard = liveness.guard(CancellationToken::new());
        let result = std::panic::catch_unwind(move || {
            let _guard = guard;
            panic!("refresher failed");
        });
        assert!(result.is_err());
        assert!(!liveness.is_alive());
    }
}

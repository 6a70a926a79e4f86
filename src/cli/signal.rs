//! Shutdown for the long-running commands (`control serve`, `proxy`): SIGTERM or Ctrl-C
//! cancels the one shutdown token, and the process is gone within the grace period
//! whatever else happens.
//!
//! The service drains on its own within its grace period; the watchdog here is the
//! backstop for the case it cannot (a task that ignores cancellation), because an
//! orchestrator that sends SIGTERM expects the process to end, and a sidecar that
//! outlives its pod's termination holds the pod up until SIGKILL.

use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// How long past the grace period the watchdog waits before ending the process: time
/// for the drain's own deadline to close what is left and for the last log lines.
const WATCHDOG_MARGIN: Duration = Duration::from_secs(3);

/// SIGTERM and Ctrl-C, installed before the service starts, so a signal that arrives
/// during start-up is not lost and a failure to install is reported, not panicked on.
pub struct Signals {
    term: Signal,
}

impl Signals {
    /// Installs the SIGTERM handler (Ctrl-C is installed on first wait by Tokio).
    pub fn install() -> anyhow::Result<Self> {
        let term = signal(SignalKind::terminate())
            .map_err(|e| anyhow::anyhow!("cannot install the SIGTERM handler: {e}"))?;
        Ok(Self { term })
    }

    /// Resolves on the first SIGTERM or Ctrl-C.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }

    /// Spawns the task that, on the first signal, cancels `shutdown` and, if the process
    /// is still running `grace` (plus a small margin) later, ends it with exit code 1.
    pub fn cancel_on_signal(mut self, shutdown: CancellationToken, grace: Duration) {
        tokio::spawn(async move {
            self.recv().await;
            tracing::info!(grace_secs = grace.as_secs_f64(), "shutting down");
            shutdown.cancel();
            tokio::time::sleep(grace + WATCHDOG_MARGIN).await;
            tracing::error!(
                grace_secs = grace.as_secs_f64(),
                "still running past the shutdown grace period; exiting now"
            );
            std::process::exit(1);
        });
    }
}

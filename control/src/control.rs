//! The control: its identity, store, the configured backend and the revocation
//! machinery, shared by every connection.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use leasehold_channel::protocol::{LeaseRecord, LeaseStatus, Timestamp};
use leasehold_channel::{Identity, PublicIdentity};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::Backend;
use crate::error::ControlError;
use crate::revoker::{self, Schedule};
use crate::store::{Store, StoredLease};

/// The control plane's shared state.
pub struct Control<S> {
    pub(crate) identity: Identity,
    pub(crate) store: S,
    pub(crate) backend: ArcSwapOption<Backend>,
    pub(crate) advertise: Vec<String>,
    schedule: Schedule,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// A stored lease's status at `now`.
pub fn status(lease: &StoredLease, now: Timestamp) -> LeaseStatus {
    if lease.revoked_at.is_some() {
        LeaseStatus::Revoked
    } else if lease.expires_at <= now {
        LeaseStatus::Expired
    } else {
        LeaseStatus::Active
    }
}

/// A stored lease as users see it (never with a token: the control keeps none).
pub fn record(lease: &StoredLease, now: Timestamp) -> LeaseRecord {
    LeaseRecord {
        id: lease.id.clone(),
        issued_for: lease.member,
        created_at: lease.created_at,
        expires_at: lease.expires_at,
        token: None,
        status: status(lease, now),
        auth_scheme: lease.auth_scheme,
        endpoint_url: lease.endpoint_url.clone(),
    }
}

impl<S: Store> Control<S> {
    /// Starts the control's background work (revocation queue, re-arming every lease
    /// still owed a revocation, the start-up sweep) and returns the shared state.
    /// Background tasks stop on `shutdown`; wait for them with [`Control::tasks`].
    pub async fn start(
        identity: Identity,
        store: S,
        advertise: Vec<String>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, ControlError> {
        let backend = match store.addon().await? {
            Some(addon) => Some(Arc::new(Backend::from_addon(&addon)?)),
            None => None,
        };
        let (schedule, rx) = Schedule::new();
        let control = Arc::new(Self {
            identity,
            store,
            backend: ArcSwapOption::new(backend),
            advertise,
            schedule,
            tasks: TaskTracker::new(),
            shutdown,
        });
        let weak = Arc::downgrade(&control);
        control.tasks.spawn(revoker::run_queue(rx, control.shutdown.clone(), move |id| {
            if let Some(control) = weak.upgrade() {
                control.revoke_in_background(id);
            }
        }));
        let mut owed = 0;
        for lease in control.store.leases().await? {
            if !lease.removed {
                let at = lease.revoked_at.unwrap_or(lease.expires_at);
                control.schedule.at(at.min(lease.expires_at), lease.id);
                owed += 1;
            }
        }
        tracing::info!(leases = owed, "re-armed revocations owed from the store");
        let sweeper = control.clone();
        control.tasks.spawn(async move { sweeper.sweep_until_done().await });
        Ok(control)
    }

    /// The control's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The control's background tasks and connections, to wait on after shutdown.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// The shutdown signal.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub(crate) fn backend(&self) -> Result<Arc<Backend>, ControlError> {
        self.backend.load_full().ok_or(ControlError::NoAddon)
    }

    pub(crate) fn schedule(&self, at: Timestamp, id: String) {
        self.schedule.at(at, id);
    }

    /// Removes every expired credential this control created, retrying with backoff
    /// while InfluxDB is unreachable. Runs once at start-up.
    async fn sweep_until_done(&self) {
        let mut attempt = 0;
        loop {
            let Some(backend) = self.backend.load_full() else {
                return;
            };
            match backend.sweep(Timestamp::now()).await {
                Ok(removed) => {
                    tracing::info!(removed, "start-up sweep done");
                    return;
                }
                Err(error) => tracing::warn!(%error, attempt, "start-up sweep failed; retrying"),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(revoker::backoff(attempt)) => {}
            }
            attempt = attempt.saturating_add(1);
        }
    }

    fn revoke_in_background(self: Arc<Self>, id: String) {
        let control = self.clone();
        self.tasks.spawn(async move { control.revoke_until_done(&id).await });
    }

    /// Removes lease `id`'s credential from InfluxDB, retrying with capped backoff
    /// until it succeeds or the control shuts down (the next start re-arms it).
    pub(crate) async fn revoke_until_done(&self, id: &str) {
        let mut attempt = 0;
        loop {
            match self.revoke_once(id).await {
                Ok(()) => return,
                Err(error) => tracing::warn!(lease.id = %id, %error, attempt, "revocation failed; retrying"),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(revoker::backoff(attempt)) => {}
            }
            attempt = attempt.saturating_add(1);
        }
    }

    /// One attempt at removing lease `id`'s credential; records success in the store.
    pub(crate) async fn revoke_once(&self, id: &str) -> Result<(), ControlError> {
        let Some(mut lease) = self.store.lease(id.to_owned()).await? else {
            return Ok(());
        };
        if lease.removed {
            return Ok(());
        }
        self.backend()?.revoke(&lease.credential_id).await?;
        lease.removed = true;
        self.store.put_lease(lease.clone()).await?;
        let reason = if lease.revoked_at.is_some() { "revoked" } else { "expired" };
        tracing::info!(
            lease.id = %lease.id,
            identity = %lease.member,
            expires_at = %lease.expires_at,
            reason,
            "lease credential removed from InfluxDB"
        );
        Ok(())
    }

    /// Marks lease `lease` revoked now and removes its credential, retrying in the
    /// background if InfluxDB does not answer at once.
    pub(crate) async fn revoke_now(self: &Arc<Self>, mut lease: StoredLease, by: PublicIdentity) -> Result<StoredLease, ControlError> {
        let now = Timestamp::now();
        if status(&lease, now) == LeaseStatus::Active {
            lease.revoked_at = Some(now);
            self.store.put_lease(lease.clone()).await?;
            tracing::info!(lease.id = %lease.id, identity = %lease.member, by = %by, "lease revoked");
        }
        if !lease.removed {
            if let Err(error) = self.revoke_once(&lease.id).await {
                tracing::warn!(lease.id = %lease.id, %error, "immediate revocation failed; retrying in the background");
                self.clone().revoke_in_background(lease.id.clone());
            } else {
                lease.removed = true;
            }
        }
        Ok(lease)
    }
}

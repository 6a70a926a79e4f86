//! The control's periodic work besides revocation: the sweep of InfluxDB for expired
//! credentials it created, pruning the records of ended leases, and pruning dead
//! tickets. Each loop stops on shutdown; a failure is logged and tried again.

use leasehold_protocol::Timestamp;

use crate::control::{Control, Housekeeping, SWEEP_INTERVAL};
use crate::error::ControlError;
use crate::revoker;
use crate::store::Store;

impl<S: Store> Control<S> {
    /// Sweeps InfluxDB for expired credentials this control created: at start-up, when
    /// the add-on is configured, and every [`SWEEP_INTERVAL`]; a failed sweep is
    /// retried with backoff.
    ///
    /// The sweep reads InfluxDB, not the store: it recognises our credentials by the
    /// name (v1 user) or description (v2) that carries the lease id and expiry. That
    /// is what lets it work when the store is lost or restored from an old backup, the
    /// case the revocation queue (which trusts the store) cannot cover; other users'
    /// credentials never match the pattern and are never touched. What the store does
    /// account for is left to the revocations ([`Self::sweep_with`]).
    pub(crate) async fn sweep_loop(&self) {
        let mut attempt: u32 = 0;
        loop {
            self.sweep_retired().await;
            let wait = match self.addon.load_full() {
                None => self.sweep_interval(),
                Some(addon) => match self.sweep_alone(&addon).await {
                    Ok(removed) => {
                        self.metrics.swept(removed);
                        tracing::debug!(removed, "sweep done");
                        attempt = 0;
                        self.sweep_interval()
                    }
                    Err(
                        error @ ControlError::Backend(
                            crate::backend::BackendError::CredentialRefused(_),
                        ),
                    ) => {
                        tracing::error!(%error, attempt, "sweep refused: fix the add-on's admin credential (leasehold addon configure)");
                        attempt = attempt.saturating_add(1);
                        revoker::backoff(attempt - 1)
                    }
                    Err(error) => {
                        tracing::warn!(%error, attempt, "sweep failed; retrying");
                        attempt = attempt.saturating_add(1);
                        revoker::backoff(attempt - 1)
                    }
                },
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.sweep_now.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Deletes the records of leases that ended more than the retention ago and whose
    /// credential is gone, every prune interval (the first one an interval after
    /// start-up). A failure is logged and tried again next time.
    pub(crate) async fn prune_loop(&self, housekeeping: Housekeeping) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(housekeeping.prune_interval) => {}
            }
            let ended_by = Timestamp::from_system(
                std::time::SystemTime::now()
                    .checked_sub(housekeeping.retention)
                    .unwrap_or(std::time::UNIX_EPOCH),
            );
            let Some(_alone) = self.alone("prune_leases").await else {
                continue;
            };
            match self
                .metrics
                .store("prune_leases", self.store.prune_leases(ended_by))
                .await
            {
                Ok(0) => {}
                Ok(pruned) => {
                    tracing::info!(pruned, ended_by = %ended_by, "pruned the records of ended leases")
                }
                Err(error) => tracing::warn!(%error, "pruning ended leases failed"),
            }
        }
    }

    /// Removes expired and used-up enrollment tickets at start-up and every
    /// [`SWEEP_INTERVAL`], so the ticket table holds only tickets that can be redeemed.
    pub(crate) async fn ticket_prune_loop(&self) {
        loop {
            if let Some(_alone) = self.alone("prune_tickets").await
                && let Err(error) = self.prune_tickets().await
            {
                tracing::warn!(%error, "pruning tickets failed");
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
            }
        }
    }

    /// The sweep, by one replica at a time (a replica sharing its store with others
    /// skips a round another one is doing: nothing is left for it).
    async fn sweep_alone(&self, addon: &crate::control::Addon) -> Result<usize, ControlError> {
        match self.alone("sweep").await {
            Some(_alone) => self.sweep_with(&addon.backend).await,
            None => Ok(0),
        }
    }

    /// Removes the expired credentials of ours on `backend` that the store does not
    /// account for; returns how many.
    ///
    /// A credential whose lease the store holds, not yet removed (issued with this
    /// very credential, or an intent, which is removed by its name), is the
    /// revocations' to remove: the queue's, or whichever replica claims it. The sweep
    /// removing it as well would race them, and InfluxDB would see it removed twice.
    /// So the sweep takes what the store has never heard of (a lost store, a store
    /// restored from before the lease, a stray copy), and what the store says was
    /// removed and is still there when looked up again (the list may have been read
    /// just before that removal): a credential InfluxDB created after its lease's
    /// removal was recorded.
    pub(crate) async fn sweep_with(
        &self,
        backend: &crate::backend::Backend,
    ) -> Result<usize, ControlError> {
        let expired = self
            .metrics
            .backend("sweep", backend.expired(Timestamp::now()))
            .await?;
        let mut removed = 0;
        for found in expired {
            let lease = self
                .metrics
                .store("lease", self.store.lease(found.lease_id.clone()))
                .await?;
            let known = lease.filter(|l| !l.issued || l.credential_id == found.credential_id);
            match known {
                Some(lease) if !lease.removed => continue,
                Some(_) => {
                    let exists = backend.exists(&found.credential_id);
                    if !self.metrics.backend("exists", exists).await? {
                        continue;
                    }
                }
                None => {}
            }
            self.metrics
                .backend("revoke", backend.revoke(&found.credential_id))
                .await?;
            tracing::info!(
                lease.id = %found.lease_id,
                credential = %found.credential_id,
                "swept expired lease credential"
            );
            removed += 1;
        }
        Ok(removed)
    }

    /// The right to run housekeeping job `name` now: always for a store of one
    /// process; for a shared one, unless another replica holds it (or the store cannot
    /// be reached, and then the job could not work anyway).
    pub(crate) async fn alone(&self, name: &'static str) -> Option<crate::store::Exclusive> {
        match self.store.exclusive(name).await {
            Ok(Some(alone)) => Some(alone),
            Ok(None) => {
                tracing::debug!(job = name, "another control replica is doing it");
                None
            }
            Err(error) => {
                tracing::warn!(%error, job = name, "cannot take the housekeeping lock; skipped");
                None
            }
        }
    }
}

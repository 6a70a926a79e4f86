//! The control: its identity, store, the configured backend and the revocation
//! machinery, shared by every connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use leasehold_channel::protocol::{AddonConfig, LeaseRecord, LeaseStatus, Timestamp};
use leasehold_channel::{Identity, PublicIdentity};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::backend::Backend;
use crate::datadir::DataDir;
use crate::error::ControlError;
use crate::live::LiveLeases;
use crate::revoker::{self, Schedule};
use crate::store::{Store, StoredLease};

/// How often the control sweeps InfluxDB for expired credentials it created, besides
/// at start-up and whenever the add-on is configured. The sweep is one list call, and it
/// bounds how long a credential can outlive a lost store.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// How long the records of ended leases are kept, and how often they are pruned.
#[derive(Debug, Clone, Copy)]
pub struct Housekeeping {
    /// A lease that expired or was revoked, and whose credential is gone from
    /// InfluxDB, is deleted from the store this long after it ended.
    pub retention: Duration,
    /// How often the store is pruned.
    pub prune_interval: Duration,
}

impl Default for Housekeeping {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 86_400),
            prune_interval: Duration::from_secs(3600),
        }
    }
}

/// The configured add-on: its settings and the backend built from them.
pub struct Addon {
    /// The settings.
    pub config: AddonConfig,
    /// The backend client.
    pub backend: Backend,
    /// Which configuration this is ([`crate::issuer::addon_id`]); leases record it.
    pub id: String,
}

impl Addon {
    /// The add-on `config` describes.
    pub fn new(config: AddonConfig) -> Result<Self, crate::backend::BackendError> {
        Ok(Self {
            backend: Backend::from_addon(&config)?,
            id: crate::issuer::addon_id(&config),
            config,
        })
    }
}

/// The control plane's shared state.
pub struct Control<S> {
    pub(crate) identity: Identity,
    pub(crate) store: S,
    pub(crate) data: DataDir,
    pub(crate) addon: ArcSwapOption<Addon>,
    /// Earlier add-on configurations still owed revocations, by id (see
    /// [`crate::issuer`]). Held across their file writes, so it also orders them.
    pub(crate) retired: tokio::sync::Mutex<std::collections::BTreeMap<String, Arc<Addon>>>,
    /// Asks [`Control::forget_loop`] to check which earlier configurations are owed
    /// nothing; a burst of revocations coalesces into one check (one lease scan).
    pub(crate) forget_now: tokio::sync::Notify,
    pub(crate) advertise: Vec<String>,
    sweep_now: tokio::sync::Notify,
    pub(crate) live: LiveLeases,
    /// The periodic sweep's interval in milliseconds ([`SWEEP_INTERVAL`] unless set).
    sweep_interval_ms: AtomicU64,
    schedule: Schedule,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Revocation attempts InfluxDB refused with 401/403 (the add-on's admin
    /// credential no longer works), since start-up.
    revocations_refused: std::sync::atomic::AtomicU64,
    /// What `/metrics` shows ([`crate::admin`]).
    pub(crate) metrics: crate::metrics::Metrics,
}

/// A stored lease's status at `now`.
pub fn status(lease: &StoredLease, now: Timestamp) -> LeaseStatus {
    lease.status_at(now)
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
        ttl_ms: None,
        membership: None,
    }
}

impl<S: Store> Control<S> {
    /// Starts the control's background work (revocation queue, re-arming every lease
    /// still owed a revocation, the start-up sweep) and returns the shared state.
    /// Background tasks stop on `shutdown`; wait for them with [`Control::tasks`].
    pub async fn start(
        identity: Identity,
        store: S,
        data: DataDir,
        advertise: Vec<String>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, ControlError> {
        Self::start_with(
            identity,
            store,
            data,
            advertise,
            shutdown,
            Housekeeping::default(),
        )
        .await
    }

    /// [`Control::start`], with the retention of ended leases' records given.
    pub async fn start_with(
        identity: Identity,
        store: S,
        data: DataDir,
        advertise: Vec<String>,
        shutdown: CancellationToken,
        housekeeping: Housekeeping,
    ) -> Result<Arc<Self>, ControlError> {
        let addon = match data.load_addon()? {
            Some(config) => Some(Arc::new(Addon::new(config)?)),
            None => None,
        };
        let (schedule, rx) = Schedule::new();
        let control = Arc::new(Self {
            identity,
            store,
            data,
            addon: ArcSwapOption::new(addon),
            retired: tokio::sync::Mutex::default(),
            forget_now: tokio::sync::Notify::new(),
            advertise,
            sweep_now: tokio::sync::Notify::new(),
            live: LiveLeases::default(),
            sweep_interval_ms: AtomicU64::new(SWEEP_INTERVAL.as_millis() as u64),
            schedule,
            tasks: TaskTracker::new(),
            shutdown,
            revocations_refused: std::sync::atomic::AtomicU64::new(0),
            metrics: crate::metrics::Metrics::new(),
        });
        let weak = Arc::downgrade(&control);
        control.tasks.spawn(revoker::run_queue(
            rx,
            control.shutdown.clone(),
            move |id| {
                if let Some(control) = weak.upgrade() {
                    control.revoke_in_background(id);
                }
            },
        ));
        control.load_retired().await?;
        let mut owed = 0;
        let now = Timestamp::now();
        for lease in control.store.leases().await? {
            if lease.issued && status(&lease, now) == LeaseStatus::Active {
                control
                    .live
                    .restore(lease.member, lease.id.clone(), lease.expires_at);
            }
            if !lease.removed {
                let at = lease.revoked_at.unwrap_or(lease.expires_at);
                control.schedule.at(at.min(lease.expires_at), lease.id);
                owed += 1;
            }
        }
        tracing::info!(leases = owed, "re-armed revocations owed from the store");
        let sweeper = control.clone();
        control
            .tasks
            .spawn(async move { sweeper.sweep_loop().await });
        let pruner = control.clone();
        control
            .tasks
            .spawn(async move { pruner.prune_loop(housekeeping).await });
        let forgetter = control.clone();
        control
            .tasks
            .spawn(async move { forgetter.forget_loop().await });
        let ticket_pruner = control.clone();
        control
            .tasks
            .spawn(async move { ticket_pruner.ticket_prune_loop().await });
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

    /// The control's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// How many revocation attempts InfluxDB refused with 401/403 since start-up.
    pub fn revocations_refused(&self) -> u64 {
        self.revocations_refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Logs a failed revocation attempt: at ERROR, counted, when InfluxDB refused the
    /// add-on's admin credential (retrying cannot help until an operator fixes it); at
    /// WARN otherwise.
    fn revocation_failed(&self, id: &str, error: &ControlError, attempt: u32, what: &str) {
        self.metrics.revocation_failed(error);
        if let ControlError::Backend(crate::backend::BackendError::CredentialRefused(_)) = error {
            let refused_total = self
                .revocations_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            tracing::error!(
                lease.id = %id,
                %error,
                attempt,
                revocations_refused_total = refused_total,
                "{what}: InfluxDB refused the add-on's admin credential, so the lease's \
                 credential stays in InfluxDB; fix the add-on (leasehold addon configure) \
                 and the retries will remove it"
            );
        } else {
            tracing::warn!(lease.id = %id, %error, attempt, "{what}; retrying");
        }
    }

    pub(crate) fn addon(&self) -> Result<Arc<Addon>, ControlError> {
        self.addon.load_full().ok_or(ControlError::NoAddon)
    }

    /// Installs new add-on settings and sweeps with them.
    pub(crate) fn set_addon(&self, addon: Addon) {
        self.addon.store(Some(Arc::new(addon)));
        self.sweep_now.notify_one();
    }

    /// Changes how often the periodic sweep runs (at least every millisecond), and
    /// sweeps now so that the new interval counts from here.
    pub fn set_sweep_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.sweep_interval_ms.store(ms, Ordering::Relaxed);
        self.sweep_now.notify_one();
    }

    fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn schedule(&self, at: Timestamp, id: String) {
        self.schedule.at(at, id);
    }

    /// Sweeps InfluxDB for expired credentials this control created: at start-up, when
    /// the add-on is configured, and every [`SWEEP_INTERVAL`]; a failed sweep is
    /// retried with backoff.
    async fn sweep_loop(&self) {
        let mut attempt: u32 = 0;
        loop {
            self.sweep_retired().await;
            let wait = match self.addon.load_full() {
                None => self.sweep_interval(),
                Some(addon) => match self
                    .metrics
                    .backend("sweep", addon.backend.sweep(Timestamp::now()))
                    .await
                {
                    Ok(removed) => {
                        self.metrics.swept(removed);
                        tracing::debug!(removed, "sweep done");
                        attempt = 0;
                        self.sweep_interval()
                    }
                    Err(error @ crate::backend::BackendError::CredentialRefused(_)) => {
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
    async fn prune_loop(&self, housekeeping: Housekeeping) {
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
    async fn ticket_prune_loop(&self) {
        loop {
            if let Err(error) = self.prune_tickets().await {
                tracing::warn!(%error, "pruning tickets failed");
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
            }
        }
    }

    fn revoke_in_background(self: Arc<Self>, id: String) {
        let control = self.clone();
        let span = tracing::info_span!("lease", lease.id = %id);
        self.tasks
            .spawn(async move { control.revoke_until_done(&id).await }.instrument(span));
    }

    /// Removes lease `id`'s credential from InfluxDB, retrying with capped backoff
    /// until it succeeds or the control shuts down (the next start re-arms it).
    pub(crate) async fn revoke_until_done(&self, id: &str) {
        let mut attempt = 0;
        self.metrics.revocation_due(id);
        loop {
            match self.revoke_once(id).await {
                Ok(()) => return self.metrics.revocation_settled(id),
                Err(error) => self.revocation_failed(id, &error, attempt, "revocation failed"),
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
        let Some(mut lease) = self
            .metrics
            .store("lease", self.store.lease(id.to_owned()))
            .await?
        else {
            return Ok(());
        };
        if lease.removed {
            return Ok(());
        }
        // Where it was issued, with the credential that issued it.
        let issuer = self.issuer_of(&lease).await?;
        if lease.issued {
            self.metrics
                .backend("revoke", issuer.backend.revoke(&lease.credential_id))
                .await?;
        } else {
            // An intent whose outcome was never recorded: InfluxDB may or may not
            // have created the credential; remove it by the name it would carry.
            let unrecorded = issuer
                .backend
                .revoke_unrecorded(&lease.id, lease.expires_at);
            self.metrics.backend("revoke", unrecorded).await?;
        }
        lease.removed = true;
        self.metrics
            .store("put_lease", self.store.put_lease(lease.clone()))
            .await?;
        self.metrics.revocation_done(&lease.id);
        if !self.is_current(&issuer.id) {
            self.forget_now.notify_one();
        }
        let reason = if !lease.issued {
            "never issued"
        } else if lease.revoked_at.is_some() {
            "revoked"
        } else {
            "expired"
        };
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
    pub(crate) async fn revoke_now(
        self: &Arc<Self>,
        mut lease: StoredLease,
        by: PublicIdentity,
    ) -> Result<StoredLease, ControlError> {
        let now = Timestamp::now();
        if status(&lease, now) == LeaseStatus::Active {
            lease.revoked_at = Some(now);
            self.store.put_lease(lease.clone()).await?;
            self.live.release(lease.member, &lease.id, lease.expires_at);
            // The member's name beside its id, for the operator reading the log (none
            // once the member is deleted).
            let name = match self.store.member(lease.member).await {
                Ok(Some(member)) => member.name,
                _ => "-".to_owned(),
            };
            tracing::info!(lease.id = %lease.id, identity = %lease.member, %name, by = %by, "lease revoked");
        }
        if !lease.removed {
            if let Err(error) = self.revoke_once(&lease.id).await {
                self.revocation_failed(
                    &lease.id,
                    &error,
                    0,
                    "immediate revocation failed (continuing in the background)",
                );
                self.clone().revoke_in_background(lease.id.clone());
            } else {
                lease.removed = true;
            }
        }
        Ok(lease)
    }
}

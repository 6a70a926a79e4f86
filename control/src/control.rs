//! The control: its identity, store, the configured backend and the revocation
//! machinery, shared by every connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use leasehold_channel::Identity;
use leasehold_channel::resumption::TicketKey;
use leasehold_protocol::{AddonConfig, Timestamp};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::Backend;
use crate::datadir::DataDir;
use crate::error::ControlError;
use crate::revoker::{self, Schedule};
use crate::store::Store;

/// How often the control sweeps InfluxDB for expired credentials it created, besides
/// at start-up and whenever the add-on is configured. The sweep is one list call, and it
/// bounds how long a credential can outlive a lost store.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How long a replica sharing its store holds the claim on a revocation it is doing
/// (renewed at every attempt): a replica killed mid-revocation leaves the lease to
/// the others this long after its last attempt. Longer than an attempt can take.
pub const CLAIM_FOR: Duration = Duration::from_secs(30);
/// How often a replica sharing its store looks for revocations due: at most this late
/// past a lease's end, whichever replica issued it (or died issuing it).
pub const CLAIM_POLL: Duration = Duration::from_secs(1);

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
    /// Seals and opens resumption tickets (derived from `identity` once, not per
    /// handshake).
    pub(crate) tickets: TicketKey,
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
    pub(crate) sweep_now: tokio::sync::Notify,
    /// The periodic sweep's interval in milliseconds ([`SWEEP_INTERVAL`] unless set).
    pub(crate) sweep_interval_ms: AtomicU64,
    pub(crate) schedule: Schedule,
    /// The revocations this process is carrying out now ([`crate::in_flight`]).
    pub(crate) in_flight: crate::in_flight::InFlight,
    /// How much revocation work this control takes on at once
    /// ([`crate::revocation_limits`]).
    pub(crate) revocation_limits: crate::revocation_limits::RevocationLimits,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    /// Revocation attempts InfluxDB refused with 401/403 (the add-on's admin
    /// credential no longer works), since start-up.
    pub(crate) revocations_refused: std::sync::atomic::AtomicU64,
    /// What `/metrics` shows ([`crate::admin`]).
    pub(crate) metrics: crate::metrics::Metrics,
}

pub use crate::lease::{record, status};

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
            tickets: TicketKey::new(&identity),
            identity,
            store,
            data,
            addon: ArcSwapOption::new(addon),
            retired: tokio::sync::Mutex::default(),
            forget_now: tokio::sync::Notify::new(),
            advertise,
            sweep_now: tokio::sync::Notify::new(),
            sweep_interval_ms: AtomicU64::new(SWEEP_INTERVAL.as_millis() as u64),
            schedule,
            in_flight: crate::in_flight::InFlight::default(),
            revocation_limits: crate::revocation_limits::RevocationLimits::default(),
            tasks: TaskTracker::new(),
            shutdown,
            revocations_refused: std::sync::atomic::AtomicU64::new(0),
            metrics: crate::metrics::Metrics::new(),
        });
        let weak = Arc::downgrade(&control);
        let counting = Arc::downgrade(&control);
        control.tasks.spawn(revoker::run_queue(
            rx,
            control.shutdown.clone(),
            std::time::SystemTime::now,
            control.revocation_limits.clone(),
            move |waiting| {
                if let Some(control) = counting.upgrade() {
                    control.metrics.revocations_waiting(waiting);
                }
            },
            move |id, place| {
                if let Some(control) = weak.upgrade() {
                    control.revoke_in_background(id, false, Some(place));
                }
            },
        ));
        control.load_retired().await?;
        // A store of one process: one scan of the open leases re-arms the revocation
        // queue with every credential still owed removal (intents included), at its
        // revocation or expiry time, whichever is first. A shared store's revocations are
        // claimed from the store instead (below), and it counts live leases itself:
        // nothing to scan.
        if !control.store.shared() {
            let mut owed = 0;
            // Only the open leases: history (ended, credential gone) is owed nothing,
            // and reading it would make start-up grow with it.
            for lease in control.store.open_leases(Timestamp::now()).await? {
                if !lease.removed {
                    let at = lease.revoked_at.unwrap_or(lease.expires_at);
                    control.schedule.at(at.min(lease.expires_at), lease.id);
                    owed += 1;
                }
            }
            tracing::info!(leases = owed, "re-armed revocations owed from the store");
        }
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
        if control.store.shared() {
            let claimer = control.clone();
            control
                .tasks
                .spawn(async move { claimer.claim_loop().await });
        }
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

    /// The key of the resumption tickets this control grants and honours.
    pub fn tickets(&self) -> &TicketKey {
        &self.tickets
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

    /// The add-on in effect, or `NoAddon`. Loaded once per request: a concurrent
    /// `addon configure` swaps it atomically, and the request finishes with the
    /// configuration it started with (its lease records which one that was).
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

    pub(crate) fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms.load(Ordering::Relaxed))
    }

    /// Tells the revocation queue to revoke lease `id` at `at`. Memory only: the
    /// store's `removed: false` is what re-arms it after a restart.
    pub(crate) fn schedule(&self, at: Timestamp, id: String) {
        // With a shared store, whichever replica claims it first revokes it
        // ([`Control::claim_loop`]): the issuing one may be gone by then.
        if self.store.shared() {
            return;
        }
        self.schedule.at(at, id);
    }
}

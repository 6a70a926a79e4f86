//! The leasehold control plane.
//!
//! - [`datadir`]: the control's files (identity, settings, store).
//! - [`store`]: persistent state behind the [`store::Store`] interface; [`store::RedbStore`]
//!   is the embedded default.
//! - [`lease`]: lease ids, status, the record users see, and the plan for a new lease
//!   (pure); [`entropy`] draws the random bits.
//! - [`grant`] and [`policy`]: what a lease may do and for how long (pure).
//! - [`backend`]: InfluxDB 2.x authorizations and 1.x users.
//! - [`issuer`]: which add-on configuration issued a lease; earlier ones kept until
//!   their leases are revoked.
//! - [`control`] and [`revoker`]: shared state, revoking and expiring leases; the
//!   operations (one file each under `ops/`) and [`required_role`], the one table of
//!   who may call what.
//! - [`server`]: the secure-channel listener.
//! - [`StoreLocation`] (`location.rs`): `--store`, the embedded store or shared
//!   PostgreSQL.
//! - [`live`]: each member's live leases, counted by the stores of one process for the per-member cap.
//! - [`failpoint`]: test-only failure points (debug builds only).
//! - [`admission`]: how many connections may be open before proving membership.
//! - [`admin`] and [`metrics`]: `/healthz`, `/readyz` and `/metrics`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod backend;
pub mod control;
pub mod datadir;
pub mod entropy;
pub mod failpoint;
pub mod grant;
pub mod issuer;
pub mod lease;
pub mod live;
pub mod metrics;
pub mod policy;
pub mod revoker;
pub mod server;
pub mod store;

mod error;
mod housekeeping;
mod in_flight;
mod location;
mod log_throttle;
mod ops;
mod revocation;
pub mod revocation_limits;
#[cfg(test)]
mod revocation_tests;
pub mod sealed;

use std::collections::BTreeMap;

use leasehold_channel::Identity;
use leasehold_channel::home::{Enrollment, Home};
use leasehold_protocol::{MemberRecord, Timestamp};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use control::Control;
pub use error::ControlError;
pub use location::StoreLocation;
pub use ops::{Role, required_role};

use crate::datadir::{DataDir, DataDirError, Settings, local_address};
use crate::store::postgres::PgError;
use crate::store::{AnyStore, PostgresStore, RedbStore, Store, StoreError};

/// Why the control could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The shared PostgreSQL store (unreachable, schema, identity).
    #[error(transparent)]
    Postgres(#[from] PgError),
    /// The local admin identity.
    #[error(transparent)]
    Home(#[from] leasehold_channel::home::HomeError),
    /// Start-up work.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The listener.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
}

/// `control init`: creates the data directory, the control identity and store, and the
/// local `admin` identity (if missing) enrolled with `role=admin`.
pub async fn init(
    home: &Home,
    data: &DataDir,
    settings: &Settings,
) -> Result<Identity, StartError> {
    init_with_store(home, data, settings, &StoreLocation::Embedded).await
}

/// [`init`] with the store at `location`. For PostgreSQL: applies the schema's
/// migrations and records the control identity there (or checks it is the one
/// already recorded: every replica shares one identity).
pub async fn init_with_store(
    home: &Home,
    data: &DataDir,
    settings: &Settings,
    location: &StoreLocation,
) -> Result<Identity, StartError> {
    // The database is checked before the data directory is created: a refused init
    // leaves nothing behind, and can be run again.
    let prepared = match location {
        StoreLocation::Embedded => None,
        StoreLocation::Postgres(url) => Some(PostgresStore::prepare(url).await?),
    };
    let identity = data.init(settings)?;
    let store = match prepared {
        None => AnyStore::Redb(RedbStore::open(&data.store_path())?),
        Some(prepared) => {
            AnyStore::Postgres(Box::new(prepared.claim_for(identity.public()).await?))
        }
    };
    let admin = if home.has_identity("admin")? {
        home.load_identity("admin")?
    } else {
        home.create_identity("admin")?
    };
    store
        .put_member(MemberRecord {
            id: admin.public(),
            name: "admin".into(),
            attributes: BTreeMap::from([("role".to_owned(), "admin".to_owned())]),
            enrolled_at: Timestamp::now(),
        })
        .await?;
    home.save_enrollment(
        "admin",
        &Enrollment {
            addrs: vec![local_address(settings.listen)],
            control: identity.public(),
        },
    )?;
    Ok(identity)
}

/// `control migrate`: brings the schema of a shared store to this build's, for the
/// control whose data directory `data` is (its identity must be the one the database
/// records; refused, with nothing changed, otherwise). `None` for the embedded store,
/// which needs no step of the operator's: what a newer release adds to it (the
/// open-lease index table) is built when `control serve` opens it.
pub async fn migrate_store(
    data: &DataDir,
    location: &StoreLocation,
) -> Result<Option<store::postgres::schema::Migrated>, StartError> {
    let (identity, _) = data.load()?;
    match location {
        StoreLocation::Embedded => Ok(None),
        StoreLocation::Postgres(url) => {
            Ok(Some(PostgresStore::upgrade(url, identity.public()).await?))
        }
    }
}

/// A control that is serving.
pub struct Running {
    /// The address it listens on.
    pub local_addr: std::net::SocketAddr,
    /// The control identity.
    pub identity: leasehold_channel::PublicIdentity,
    task: tokio::task::JoinHandle<()>,
    control: std::sync::Arc<Control<AnyStore>>,
}

impl Running {
    /// Changes how often the periodic sweep runs (default [`control::SWEEP_INTERVAL`]).
    pub fn set_sweep_interval(&self, interval: std::time::Duration) {
        self.control.set_sweep_interval(interval);
    }

    /// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until the control
    /// shuts down; returns the bound address.
    pub fn serve_admin(&self, listener: TcpListener) -> std::io::Result<std::net::SocketAddr> {
        admin::spawn(&self.control, listener)
    }

    /// Waits until the control has shut down (after the shutdown signal) and every
    /// connection and background task has ended.
    pub async fn wait(self) {
        let _ = self.task.await;
        self.control.tasks().close();
        self.control.tasks().wait().await;
    }
}

/// `control serve`: opens the data directory and serves on `listener` until `shutdown`,
/// with the default [`server::Limits`].
pub async fn start(
    data: &DataDir,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    start_with(
        data,
        listener,
        shutdown,
        control::Housekeeping::default(),
        server::Limits::default(),
    )
    .await
}

/// [`start`] with the given limits on what peers may hold.
pub async fn start_with_limits(
    data: &DataDir,
    listener: TcpListener,
    shutdown: CancellationToken,
    limits: server::Limits,
) -> Result<Running, StartError> {
    start_with(
        data,
        listener,
        shutdown,
        control::Housekeeping::default(),
        limits,
    )
    .await
}

/// [`start`], with the retention of ended leases' records and the limits on peers given.
pub async fn start_with(
    data: &DataDir,
    listener: TcpListener,
    shutdown: CancellationToken,
    housekeeping: control::Housekeeping,
    limits: server::Limits,
) -> Result<Running, StartError> {
    start_with_store(
        data,
        &StoreLocation::Embedded,
        listener,
        shutdown,
        housekeeping,
        limits,
    )
    .await
}

/// [`start_with`], with the store at `location`.
pub async fn start_with_store(
    data: &DataDir,
    location: &StoreLocation,
    listener: TcpListener,
    shutdown: CancellationToken,
    housekeeping: control::Housekeeping,
    limits: server::Limits,
) -> Result<Running, StartError> {
    let (identity, settings) = data.load()?;
    let store = location.open(data, &identity).await?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: settings.listen.to_string(),
        source,
    })?;
    let public = identity.public();
    let control = Control::start_with(
        identity,
        store,
        data.clone(),
        settings.advertise,
        shutdown,
        housekeeping,
    )
    .await?;
    tracing::info!(listen = %local_addr, control = %public, "control serving");
    let task = tokio::spawn(server::serve(control.clone(), listener, limits));
    Ok(Running {
        local_addr,
        identity: public,
        task,
        control,
    })
}

//! An in-process InfluxDB v2 test server, written from InfluxData's official OpenAPI
//! contract (`shared/influxdb-openapi/`: `oss.yml`, `cloud.yml`, `swaggerV1Compat.yml`)
//! and influxd's handlers where the contract is silent.
//!
//! It serves, on `127.0.0.1` (or the address given to [`V2Server::start_on`]) and an
//! ephemeral port:
//! - `POST/GET /api/v2/authorizations`, `GET/PATCH/DELETE /api/v2/authorizations/{id}`
//!   (operator token required; 16-hex ids; the token only in the 201 answer, `redacted`
//!   elsewhere, as InfluxDB Cloud does);
//! - `POST /api/v2/write` and the v1-compatible `POST /write` (token checked against
//!   the authorization's bucket permissions; gzip bodies; lines recorded);
//! - `GET /ping` (204) and `GET /health` (200);
//! - failure injection: every request answers 503 with `Retry-After: 1`; DELETEs held
//!   until released ([`V2Server::hold_deletes`]).
//!
//! The operator authorization (the admin token, all permissions on every org) exists
//! from the start and is listed by `GET /api/v2/authorizations`, as on a real server;
//! the inspection methods ([`V2Server::authorizations`], ...) leave it out.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let server = leasehold_testkit::v2server::V2Server::start_default().await?;
//! let url = server.url(); // http://127.0.0.1:PORT
//! # Ok(()) }
//! ```

mod ids;
mod inspect;
mod request;
mod routes;
mod server;
mod shared;
mod store;
mod wire;
mod write;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections waiting to be accepted (the kernel caps it at `somaxconn`).
const ACCEPT_BACKLOG: u32 = 4096;

pub use inspect::{AuthorizationSnapshot, WrittenPoint};
pub use store::RESOURCE_TYPES;

use shared::Shared;
use store::Store;
use wire::PermissionIn;

/// How the server is set up.
#[derive(Clone)]
pub struct V2Options {
    /// The operator token: it may manage authorizations and write anywhere.
    pub admin_token: String,
    /// The organization id, 16 hex digits (served in lowercase).
    pub org_id: String,
    /// The organization name (`org` on writes may be the name or the id).
    pub org_name: String,
}

impl V2Options {
    /// A random operator token and org id, and the org name `leasehold-test`.
    pub fn random() -> Self {
        Self {
            admin_token: ids::random_token(),
            org_id: ids::random_id(),
            org_name: "leasehold-test".to_owned(),
        }
    }
}

impl fmt::Debug for V2Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V2Options")
            .field("admin_token", &"<redacted>")
            .field("org_id", &self.org_id)
            .field("org_name", &self.org_name)
            .finish()
    }
}

/// A running server. Dropping it stops the server (its tasks end on the next poll).
pub struct V2Server {
    addr: SocketAddr,
    options: V2Options,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl V2Server {
    /// Binds `127.0.0.1:0` and starts serving on the current tokio runtime.
    ///
    /// Fails with `InvalidInput` if `org_id` is not 16 hex digits or the token is empty.
    pub async fn start(options: V2Options) -> io::Result<Self> {
        Self::start_on(options, Ipv4Addr::LOCALHOST.into()).await
    }

    /// [`start`](Self::start) on `ip` (say a veth address, for a client in a network
    /// namespace) instead of loopback.
    pub async fn start_on(mut options: V2Options, ip: IpAddr) -> io::Result<Self> {
        options.org_id.make_ascii_lowercase();
        if !ids::is_valid_id(&options.org_id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "org_id must be 16 hex digits, not all zero",
            ));
        }
        if options.admin_token.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "admin_token must not be empty",
            ));
        }
        // The accept queue of a real server (the control's is 4096), not the 128 of
        // `TcpListener::bind`: under a fleet benchmark every control replica opens
        // connections here in bursts, and a full queue drops them silently.
        let socket = match ip {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind((ip, 0).into())?;
        let listener = socket.listen(ACCEPT_BACKLOG)?;
        let addr = listener.local_addr()?;
        let store = Store::new(
            options.org_id.clone(),
            options.org_name.clone(),
            options.admin_token.clone(),
        );
        let shared = Arc::new(Shared::new(store));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(server::accept_loop(
            listener,
            Arc::clone(&shared),
            cancel.clone(),
            tracker.clone(),
        ));
        Ok(Self {
            addr,
            options,
            shared,
            cancel,
            tracker,
        })
    }

    /// [`start`](Self::start) with [`V2Options::random`].
    pub async fn start_default() -> io::Result<Self> {
        Self::start(V2Options::random()).await
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn admin_token(&self) -> &str {
        &self.options.admin_token
    }

    pub fn org_id(&self) -> &str {
        &self.options.org_id
    }

    pub fn org_name(&self) -> &str {
        &self.options.org_name
    }

    /// Id of the operator's authorization (listed over HTTP, absent from
    /// [`authorizations`](Self::authorizations)); `None` once it was deleted over HTTP.
    pub fn operator_authorization_id(&self) -> Option<String> {
        self.shared
            .with_store(|s| s.operator_id().map(str::to_owned))
    }

    /// Every request answers 503 (`{"code":"unavailable",...}`, `Retry-After: 1`) for
    /// `duration` from now (wall clock, not tokio's paused clock).
    pub fn fail_for(&self, duration: Duration) {
        self.shared.fail_for(duration);
    }

    /// The next `requests` requests answer 503, whatever the time: a failure a test
    /// can count on without racing a clock.
    pub fn fail_next(&self, requests: u64) {
        self.shared.fail_next(requests);
    }

    /// Every request answers 503 while `true`; `false` also ends a
    /// [`fail_for`](Self::fail_for) or [`fail_next`](Self::fail_next).
    pub fn set_failing(&self, failing: bool) {
        self.shared.set_failing(failing);
    }

    /// While `true`, every `DELETE /api/v2/authorizations/{id}` waits (holding its
    /// connection) until `hold_deletes(false)`: an InfluxDB slow to revoke, for tests
    /// that count how many revocations a client makes at once.
    pub fn hold_deletes(&self, hold: bool) {
        self.shared.hold_deletes(hold);
    }

    /// How many DELETEs are waiting now ([`hold_deletes`](Self::hold_deletes)), and the
    /// most that ever waited at once.
    pub fn deletes_held(&self) -> (u64, u64) {
        self.shared.deletes_held()
    }

    /// The authorizations other than the operator's, in creation order.
    pub fn authorizations(&self) -> Vec<AuthorizationSnapshot> {
        self.shared
            .with_store(|s| s.non_operator().map(|a| s.snapshot(a)).collect())
    }

    /// One authorization by id (the operator's too).
    pub fn authorization(&self, id: &str) -> Option<AuthorizationSnapshot> {
        self.shared.with_store(|s| s.get(id).map(|a| s.snapshot(a)))
    }

    /// How many authorizations exist besides the operator's.
    pub fn authorization_count(&self) -> usize {
        self.shared.with_store(|s| s.non_operator().count())
    }

    /// Creates an authorization in this org without HTTP, e.g. one that is not a lease
    /// (for "the sweep never touches others" tests). `permissions` is a contract
    /// `Permission` array; each gets the org's `orgID`.
    ///
    /// # Panics
    /// If `permissions` is not a valid, non-empty permission array (a test bug).
    pub fn insert_authorization(
        &self,
        description: &str,
        permissions: serde_json::Value,
    ) -> AuthorizationSnapshot {
        let parsed: Vec<PermissionIn> = serde_json::from_value(permissions)
            .unwrap_or_else(|e| panic!("insert_authorization: bad permissions JSON: {e}"));
        self.shared.with_store(|s| {
            let id = match s.insert(description, parsed, SystemTime::now()) {
                Ok(a) => a.id.clone(),
                Err(e) => panic!("insert_authorization: {}", e.message),
            };
            let auth = s.get(&id).expect("just inserted");
            s.snapshot(auth)
        })
    }

    /// Every accepted line, in arrival order.
    pub fn points(&self) -> Vec<WrittenPoint> {
        self.shared.with_store(|s| s.points().to_vec())
    }

    /// How many lines were accepted for `bucket`.
    pub fn point_count(&self, bucket: &str) -> usize {
        self.shared
            .with_store(|s| s.points().iter().filter(|p| p.bucket == bucket).count())
    }

    /// How many HTTP requests arrived (503s included).
    pub fn requests_seen(&self) -> u64 {
        self.shared.requests()
    }

    /// Stops accepting, lets in-flight requests finish (5 s at most) and waits for all
    /// tasks.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for V2Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl fmt::Debug for V2Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V2Server")
            .field("addr", &self.addr)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

//! The leasehold sidecar: applications write plain InfluxDB requests to localhost; the
//! proxy forwards them with a short-lived leased credential injected and renews the lease
//! before it lapses.
//!
//! Where things live (files under `src/`):
//! - [`config`]: settings, validated once before binding.
//! - [`source`] and [`control_source`]: where leases come from (the control, over the
//!   Noise channel; fakes in tests).
//! - [`schedule`]: pure renewal and backoff arithmetic (why 60%: see there).
//! - [`credential`]: a lease turned into a prebuilt, sensitive `Authorization` header.
//! - `store.rs`: the `ArcSwap` snapshot the refresher writes and requests read, plus the
//!   single-flight "renew now" signal.
//! - `refresher.rs`: the loop that renews, backs off and reacts to 401s;
//!   `warmup.rs`: one request with a new InfluxDB 1.x credential before it is installed.
//! - [`upstream`] and `rewrite.rs`: pure URL mapping and header/query rewriting.
//! - `browser.rs`: which `Host` and `Origin` may reach the lease (web pages may not).
//! - `forward.rs`: the request path; `responses.rs`: the proxy's own InfluxDB-style errors;
//!   `drain.rs`: leaving the connection usable after them; `timed_body.rs`: a request
//!   body that fails when the client stops sending it.
//! - [`h1`]: the HTTP/1 fast path (plain `http://` upstreams, common-case heads): its own
//!   head parser and chunked decoder, one task per connection; hyper takes the rest.
//! - `dedicated.rs`: each client connection's own upstream HTTP/1 connection, for
//!   requests hyper serves (after a hand-off from the fast path).
//! - `connector.rs` and `tls.rs`: connecting upstream, the pooled HTTP/1.1 + HTTP/2
//!   client (TLS upstreams, HTTP/2 clients) and its trust roots.
//! - `shard.rs`: thread per core, further threads serving client connections on their
//!   own current-thread runtimes and `SO_REUSEPORT` sockets.
//! - `server.rs`: accept loops, connection limit, graceful drain; `lobby.rs`: where new
//!   connections wait for their first byte; `idle.rs`: closing quiet connections; `admin.rs`: probes and
//!   metrics; [`metrics`]: lock-free counters rendered for Prometheus.
//! - [`buffer`]: store and forward (`--buffer-dir`): writes that cannot be delivered
//!   now are kept on disk, checksummed, and replayed in order.
//! - [`proxy`]: wiring it all under one shutdown token.
//!
//! How the CLI runs it:
//!
//! ```no_run
//! # async fn cli(home: leasehold_channel::home::Home) -> anyhow_like::Result {
//! use leasehold_proxy::{Config, ControlLeaseSource};
//! use tokio_util::sync::CancellationToken;
//!
//! let config = Config { upstream: None, ..Config::default() }.validate()?; // exit 2 on error
//! let source = ControlLeaseSource::from_home(&home, "iot-sensor")?;
//! let shutdown = CancellationToken::new();
//! // wire SIGINT/SIGTERM to `shutdown.cancel()`, then:
//! leasehold_proxy::run(config, source, shutdown).await?;
//! # Ok(()) }
//! # mod anyhow_like { pub type Result = std::result::Result<(), Box<dyn std::error::Error>>; }
//! ```
//!
//! Design in one paragraph: a pure core (schedule, credential, rewrite, upstream) and a
//! thin async shell. One writer (the refresher) swaps an immutable credential snapshot;
//! the request path takes that snapshot with one lock-free load and never holds it
//! across an await, so renewals never disturb in-flight requests. Bodies are streamed,
//! never buffered (except writes under `--buffer-dir`, see [`buffer`]). Fail closed: without a valid credential the answer is 503, never a
//! request without (or with an expired) token.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
pub mod browser;
pub mod buffer;
pub mod config;
mod connector;
pub mod control_source;
pub mod credential;
mod dedicated;
mod drain;
mod forward;
pub mod h1;
mod idle;
mod liveness;
mod lobby;
pub mod metrics;
pub mod outlet;
pub mod proxy;
mod refresher;
mod responses;
mod rewrite;
pub mod schedule;
mod server;
mod shard;
pub mod source;
mod store;
mod timed_body;
mod tls;
pub mod upstream;
mod warmup;

mod error;

pub use config::{Config, ConfigError, ListenAddr, ValidConfig};
pub use control_source::ControlLeaseSource;
pub use error::ProxyError;
pub use proxy::{Running, run, start, start_on};
pub use source::{LeaseSource, SourceError};

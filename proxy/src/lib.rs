//! The leasehold sidecar: applications write plain InfluxDB requests to localhost; the
//! proxy forwards them with a short-lived leased credential injected and renews the lease
//! before it lapses.
//!
//! Where things live:
//! - [`config`]: settings, validated once before binding.
//! - [`source`] and [`control_source`]: where leases come from (the control, over the
//!   Noise channel; fakes in tests).
//! - [`schedule`]: pure renewal and backoff arithmetic.
//! - [`credential`]: a lease turned into a prebuilt, sensitive `Authorization` header.
//! - [`store`]: the `ArcSwap` snapshot the refresher writes and requests read.
//! - [`refresher`]: the loop that renews, backs off and reacts to 401s.
//! - [`upstream`] and [`rewrite`]: pure URL mapping and header/query rewriting.
//! - [`forward`]: the request path; [`responses`]: the proxy's own InfluxDB-style errors.
//! - [`connector`] and [`tls`]: the pooled HTTP/1.1 + HTTP/2 client and its trust roots.
//! - [`server`]: accept loops, connection limit, graceful drain; [`admin`]: probes and
//!   metrics; [`metrics`]: lock-free counters rendered for Prometheus.
//! - [`proxy`]: wiring it all under one shutdown token.
//!
//! Design in one paragraph: a pure core (schedule, credential, rewrite, upstream) and a
//! thin async shell. One writer (the refresher) swaps an immutable credential snapshot;
//! the request path takes that snapshot with one lock-free load and never holds it
//! across an await, so renewals never disturb in-flight requests. Bodies are streamed,
//! never buffered. Fail closed: without a valid credential the answer is 503, never a
//! request without (or with an expired) token.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
pub mod config;
mod connector;
pub mod control_source;
pub mod credential;
mod forward;
pub mod metrics;
pub mod proxy;
mod refresher;
mod responses;
mod rewrite;
pub mod schedule;
mod server;
pub mod source;
mod store;
mod tls;
pub mod upstream;

mod error;

pub use config::{Config, ConfigError, ValidConfig};
pub use control_source::ControlLeaseSource;
pub use error::ProxyError;
pub use proxy::{Running, run, start};
pub use source::{LeaseSource, SourceError};

//! Test support shared by leasehold's integration tests, benchmarks and demo:
//!
//! - [`v2server`]: an in-process InfluxDB v2 test server written from InfluxData's
//!   official OpenAPI contract (authorizations, writes, failure injection).
//! - [`influxd`]: starts a real InfluxDB 1.x (`influxd`) with auth on loopback ports.
//! - [`postgres`]: starts a PostgreSQL server of the test's own (`initdb` + `pg_ctl`).
//! - [`tls`]: a private CA and a server certificate it signed (HTTPS tests).
#![forbid(unsafe_code)]

pub mod influxd;
pub mod postgres;
pub mod tls;
pub mod v2server;

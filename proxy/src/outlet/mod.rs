//! The data path over the secure channel: an *outlet* next to a private InfluxDB, and
//! the sidecar's connector that reaches it.
//!
//! - `tunnel.rs`: the tagged messages inside one Noise channel (both ends);
//!   `stream.rs`: the channel as a byte stream, sealing and opening in place.
//! - `dial.rs`: the sidecar side, one channel per upstream connection, presenting and
//!   renewing the membership credential.
//! - `server.rs`: the outlet, admitting current members offline and relaying to
//!   InfluxDB; `admin.rs`: its `/healthz`, `/readyz`, `/metrics`.
//!
//! The credential itself (encode, sign, verify) is pure and lives in the channel crate
//! (`membership.rs`), next to the identities it speaks of.

mod admin;
mod dial;
mod server;
pub mod stream;
pub mod tunnel;

pub use dial::{DialError, Dialer, OutletRoute, OutletStream};
pub use server::{OutletConfig, OutletError, OutletMetrics, RunningOutlet, start};

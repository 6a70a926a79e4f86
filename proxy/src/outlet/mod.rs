//! The data path over the secure channel: an *outlet* next to a private InfluxDB, and
//! the sidecar's connector that reaches it.
//!
//! - `tunnel.rs`: the tagged byte tunnel inside one Noise channel (both ends).
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
pub mod tunnel;

pub use dial::{DialError, Dialer, OutletRoute};
pub use server::{OutletConfig, OutletError, OutletMetrics, RunningOutlet, start};

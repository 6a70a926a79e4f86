//! The pieces of leasehold that both ends of the control channel share.
//!
//! - [`identity`] and [`home`]: Ed25519 identities and where they live on disk.
//! - [`ticket`]: the one-line enrollment ticket a control hands out.
//! - [`frame`], [`handshake`] and [`session`]: the Noise secure channel as a pure state
//!   machine — bytes in, bytes out, no I/O — so every step is testable without sockets.
//!   (`cipher.rs`: the transport cipher, in place.) [`resumption`] and [`resume`]: the
//!   tickets that let a recent client open channels without the IK handshake's
//!   asymmetric work, and the resumed handshake itself.
//! - [`conn`]: the thin tokio shell that moves those bytes over a stream.
//! - [`membership`]: the signed, short-lived proof of membership an outlet checks.
//! - [`time`]: whole-second wall-clock times as exchanged (RFC 3339 UTC).
//!
//! The messages carried (requests, replies, records) and the typed client are the
//! protocol crate's (`leasehold-protocol`), above this one.
//! - [`backoff`]: the capped doubling every retry loop uses (proxy and control).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backoff;
mod cipher;
pub mod conn;
pub mod frame;
pub mod handshake;
pub mod home;
pub mod identity;
pub mod membership;
mod noise_dh;
pub mod resume;
pub mod resumption;
pub mod secret;
pub mod session;
pub mod ticket;
pub mod time;

mod error;

pub use error::ChannelError;
pub use identity::{Identity, PublicIdentity};
pub use secret::Secret;

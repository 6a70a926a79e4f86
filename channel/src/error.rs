//! The channel's error type.

use std::io;

/// Everything that can go wrong on the secure channel. The variants are precise for the
/// local log; what reaches a peer is coarser (see `leasehold_protocol::WireError`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The underlying stream failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// A frame's length prefix exceeded the maximum frame size.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The length the prefix announced.
        len: usize,
        /// The largest frame accepted.
        max: usize,
    },
    /// A frame had length zero.
    #[error("empty frame")]
    EmptyFrame,
    /// A reassembled message exceeded the maximum message size.
    #[error("message exceeds the maximum of {max} bytes")]
    MessageTooLarge {
        /// The largest message accepted.
        max: usize,
    },
    /// The handshake did not complete within its deadline.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// A handshake message was malformed or failed Noise processing: garbage, a
    /// truncated message, or a key the peer does not hold (wrong pinned key).
    #[error("handshake failed")]
    Handshake,
    /// A transport frame failed authentication: tampered, replayed, reordered or forged.
    #[error("frame failed authentication (tampered, replayed or out of order)")]
    Decrypt,
    /// The peer speaks a channel version we do not.
    #[error("unsupported channel version {0}")]
    UnsupportedVersion(u8),
    /// The claimed Ed25519 identity does not match the Noise static key in use.
    #[error("claimed identity does not match the channel key")]
    IdentityMismatch,
    /// A peer failed to prove it holds its identity key.
    #[error("identity proof failed")]
    BadProof,
    /// An identifier or key was not a valid Ed25519 public key.
    #[error("invalid identity")]
    InvalidIdentity,
    /// A message could not be decoded.
    #[error("malformed message: {0}")]
    Malformed(String),
}

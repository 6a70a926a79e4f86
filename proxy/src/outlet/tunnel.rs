//! The byte tunnel inside one Noise channel: what both ends of an outlet connection
//! speak once the handshake is done (the stream that carries it: `stream.rs`).
//!
//! Every channel message is a single frame and starts with a tag byte:
//! - `DATA`: bytes of the tunnelled TCP stream (at most [`CHUNK`] per message);
//! - `MEMBERSHIP`: a membership credential, sidecar → outlet, first message and then
//!   after every lease renewal;
//! - `REFUSED`: why the outlet will not serve this channel, outlet → sidecar, last;
//! - `END`: the sender will send no more data (an authenticated half-close: a bare TCP
//!   FIN, which anyone on the path can forge, only aborts).
//!
//! Replay, reordering and tampering are the session's business (`session.rs`): any of
//! them fails `open` and ends the tunnel. Messages are at most [`MAX_MESSAGE`] bytes,
//! one frame each (a chunked message is refused), so a receiver never reassembles.

use leasehold_channel::session::MAX_SINGLE;
use leasehold_channel::{ChannelError, PublicIdentity};

/// Tunnelled stream bytes.
pub const DATA: u8 = 0;
/// A membership credential.
pub const MEMBERSHIP: u8 = 1;
/// The outlet's refusal, with its reason.
pub const REFUSED: u8 = 2;
/// No more data from the sender.
pub const END: u8 = 3;

/// The largest message either end accepts: one full frame.
pub const MAX_MESSAGE: usize = MAX_SINGLE;
/// The most stream bytes one message carries: a full frame less the tag byte. Bulk
/// writes go out in messages this size (64 KiB frames, Noise's maximum), so a 1 MiB
/// batch is 17 messages, not 64.
pub const CHUNK: usize = MAX_MESSAGE - 1;

/// Why a tunnel ended other than cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// The channel failed: I/O, authentication (tampered, replayed, reordered), size.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The plain side's stream failed.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    /// The outlet refused the channel.
    #[error("the outlet refused the channel: {0}")]
    Refused(String),
    /// A message this end does not expect.
    #[error("unexpected tunnel message (tag {0})")]
    Unexpected(u8),
    /// The peer's membership could not be (re)established.
    #[error("membership refused: {0}")]
    Membership(String),
}

/// The identity a channel authenticated, for logs.
pub fn short(peer: &PublicIdentity) -> String {
    peer.to_string().chars().take(12).collect()
}

//! The byte tunnel inside one Noise channel: what both ends of an outlet connection run
//! once the handshake is done.
//!
//! Every channel message starts with a tag byte:
//! - `DATA`: bytes of the tunnelled TCP stream (at most [`CHUNK`] per message);
//! - `MEMBERSHIP`: a membership credential, sidecar → outlet, first message and then
//!   after every lease renewal;
//! - `REFUSED`: why the outlet will not serve this channel, outlet → sidecar, last;
//! - `END`: the sender will send no more data (an authenticated half-close: a bare TCP
//!   FIN, which anyone on the path can forge, only aborts).
//!
//! Replay, reordering and tampering are the session's business (`session.rs`): any of
//! them fails `open` and ends the tunnel. Memory per tunnel is bounded: messages are at
//! most `CHUNK + 1` bytes (the receiver's session refuses larger ones), one read buffer
//! per direction, and writes are awaited before the next read (backpressure).

use std::sync::Mutex;

use leasehold_channel::conn::read_frame;
use leasehold_channel::session::Session;
use leasehold_channel::{ChannelError, PublicIdentity};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Tunnelled stream bytes.
pub const DATA: u8 = 0;
/// A membership credential.
pub const MEMBERSHIP: u8 = 1;
/// The outlet's refusal, with its reason.
pub const REFUSED: u8 = 2;
/// No more data from the sender.
pub const END: u8 = 3;

/// The most stream bytes one message carries.
pub const CHUNK: usize = 16 << 10;
/// The largest message either end accepts: a data chunk, or a credential.
pub const MAX_MESSAGE: usize = CHUNK + 1;

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

/// Seals `message` (tag first) onto the end of `out`.
pub fn seal(
    session: &Mutex<Session>,
    message: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), TunnelError> {
    lock(session).seal(message, out)?;
    Ok(())
}

/// Seals `message` (tag first) and writes it.
pub async fn send<W: AsyncWrite + Unpin>(
    session: &Mutex<Session>,
    io: &mut W,
    out: &mut Vec<u8>,
    message: &[u8],
) -> Result<(), TunnelError> {
    out.clear();
    lock(session).seal(message, out)?;
    io.write_all(out).await?;
    Ok(())
}

/// Copies `plain` into the channel until `plain` ends, then sends `END`. `renewals`,
/// when given, yields credentials to send on the way (the sidecar's lease renewals).
pub async fn outbound<R, W, F>(
    session: &Mutex<Session>,
    mut plain: R,
    mut noise: W,
    mut renewals: Option<F>,
) -> Result<(), TunnelError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    F: Renewals,
{
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut out = Vec::with_capacity(MAX_MESSAGE + 64);
    buf[0] = DATA;
    loop {
        let read = tokio::select! {
            read = plain.read(&mut buf[1..]) => read?,
            Some(credential) = next_renewal(&mut renewals) => {
                let mut message = Vec::with_capacity(credential.len() + 1);
                message.push(MEMBERSHIP);
                message.extend_from_slice(credential.as_bytes());
                send(session, &mut noise, &mut out, &message).await?;
                continue;
            }
        };
        if read == 0 {
            send(session, &mut noise, &mut out, &[END]).await?;
            // Errors are moot here: the other direction decides when the tunnel ends.
            let _ = noise.shutdown().await;
            return Ok(());
        }
        send(session, &mut noise, &mut out, &buf[..=read]).await?;
    }
}

async fn next_renewal<F: Renewals>(renewals: &mut Option<F>) -> Option<String> {
    match renewals {
        Some(renewals) => renewals.next().await,
        None => std::future::pending().await,
    }
}

/// A source of renewed membership credentials.
pub trait Renewals {
    /// The next credential to send; `None` when there will be none.
    fn next(&mut self) -> impl Future<Output = Option<String>> + Send;
}

/// No renewals (the outlet's side).
pub struct NoRenewals;

impl Renewals for NoRenewals {
    async fn next(&mut self) -> Option<String> {
        None
    }
}

/// Copies the channel's `DATA` into `plain` until `END` (then shuts `plain`'s write side)
/// or an error. Any other message goes to `control`, which may end the tunnel.
pub async fn inbound<R, W, C>(
    session: &Mutex<Session>,
    mut noise: R,
    mut inbox: Vec<u8>,
    mut plain: W,
    mut control: C,
) -> Result<(), TunnelError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    C: FnMut(u8, &[u8]) -> Result<(), TunnelError>,
{
    loop {
        let body = read_frame(&mut noise, &mut inbox).await?;
        let Some(message) = lock(session).open(&body)? else {
            continue;
        };
        match message.split_first() {
            Some((&DATA, data)) => plain.write_all(data).await?,
            Some((&END, _)) => {
                let _ = plain.shutdown().await;
                return Ok(());
            }
            Some((&tag, rest)) => control(tag, rest)?,
            None => return Err(TunnelError::Unexpected(u8::MAX)),
        }
    }
}

/// The session lock: held only for one seal or open, never across an `.await`, so a
/// poisoned lock can only mean a panic inside the cipher; the session is then marked
/// broken by its own checks or the tunnel ends anyway.
fn lock(session: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    session
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The identity a channel authenticated, for logs.
pub fn short(peer: &PublicIdentity) -> String {
    peer.to_string().chars().take(12).collect()
}

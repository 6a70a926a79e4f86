//! One outlet channel as a byte stream (`AsyncRead + AsyncWrite`): what hyper drives on
//! the sidecar, and what the outlet relays to InfluxDB.
//!
//! **Why a stream, not a pipe and a pump.** The first version gave hyper one end of an
//! in-memory pipe and moved bytes between its other end and the channel in a task of
//! its own: every byte was copied twice more, and every request woke two tasks per
//! direction. Here the channel *is* hyper's connection: a write seals hyper's bytes
//! straight into the outgoing buffer (one copy, then encryption in place), a read opens
//! frames where they landed in the receive buffer and copies the plaintext out.
//!
//! **Batching.** A write seals as many full-size messages as it is given (up to
//! [`WRITE_HIGH`] buffered) and sends them with one system call; hyper's vectored
//! writes (head and body) become one message. A read takes whatever the socket has, up
//! to [`READ_MAX`], and hands out the data of every complete frame in it. The receive
//! buffer grows only while reads fill it, so an idle or small-request channel keeps a
//! few KiB.
//!
//! **Bounded memory.** At most [`READ_MAX`] received and [`WRITE_HIGH`] plus one
//! message waiting to be sent, per channel; a writer beyond that waits for the socket.
//!
//! **Plaintext.** Only ciphertext stays in the buffers: a frame is encrypted as soon
//! as its plaintext is written into the outgoing buffer, and decrypted data is zeroized
//! as soon as it is handed out (and on drop, if it never was).
//!
//! Control messages (credentials, refusals) go through [`Hooks`]: the sidecar sends its
//! renewed credentials and turns a refusal into an error; the outlet checks renewals.

use std::io::{self, IoSlice};
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use leasehold_channel::frame::{self, Decoded};
use leasehold_channel::session::Session;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use zeroize::Zeroize;

use super::tunnel::{CHUNK, DATA, END, MEMBERSHIP, TunnelError};

/// The most received bytes buffered: two full frames per system call. (256 KiB here and
/// 128 KiB for [`WRITE_HIGH`] measured no faster and cost more CPU per 1 MiB batch.)
pub const READ_MAX: usize = 128 << 10;
/// A receive buffer's first size, and the least room a read is given.
const READ_MIN: usize = 16 << 10;
/// Sealed bytes buffered before a writer must wait for the socket.
pub const WRITE_HIGH: usize = 64 << 10;

/// What each end does with control messages and when it has its own to send.
pub trait Hooks: Unpin {
    /// A message other than data or end arrived; an error ends the stream.
    fn control(&mut self, tag: u8, body: &[u8]) -> Result<(), TunnelError>;
    /// A credential to send now, or `Pending` (with the waker kept) until there is one.
    fn poll_renewal(&mut self, cx: &mut Context<'_>) -> Poll<Option<String>>;
}

/// An established channel carrying one tunnelled byte stream.
pub struct ChannelStream<S, H> {
    io: S,
    session: Session,
    /// Received bytes; `inbox[start..end]` not yet looked at.
    inbox: Vec<u8>,
    start: usize,
    end: usize,
    /// The last read filled the buffer: give the next one more room.
    grow: bool,
    /// Decrypted data in `inbox`, not yet read by the caller.
    plain: Range<usize>,
    /// Sealed frames; `out[sent..]` not yet written.
    out: Vec<u8>,
    sent: usize,
    /// The peer sent `END`.
    ended: bool,
    /// We sent `END`.
    closed: bool,
    hooks: H,
}

impl<S: AsyncRead + AsyncWrite + Unpin, H: Hooks> ChannelStream<S, H> {
    /// A stream over an established channel's parts: `received` are bytes read past
    /// the handshake, `queued` sealed bytes still to send (the initiator's proof).
    pub fn new(io: S, session: Session, received: Vec<u8>, queued: Vec<u8>, hooks: H) -> Self {
        let end = received.len();
        let mut inbox = received;
        if inbox.len() < READ_MIN {
            inbox.resize(READ_MIN, 0);
        }
        Self {
            io,
            session,
            inbox,
            start: 0,
            end,
            grow: false,
            plain: 0..0,
            out: queued,
            sent: 0,
            ended: false,
            closed: false,
            hooks,
        }
    }

    /// Seals `message` (tag first) behind whatever is queued; it goes out with the next
    /// write or flush.
    pub fn queue(&mut self, tag: u8, body: &[u8]) -> Result<(), TunnelError> {
        self.session
            .seal_single_with(1 + body.len(), &mut self.out, |out| {
                out.push(tag);
                out.extend_from_slice(body);
            })?;
        Ok(())
    }

    /// Writes queued frames until none is left or the socket would block.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Queues a renewed credential when one is due, and pushes queued frames out as far
    /// as the socket takes them now.
    fn poll_hooks(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while let Poll::Ready(Some(credential)) = self.hooks.poll_renewal(cx) {
            if !self.closed {
                self.queue(MEMBERSHIP, credential.as_bytes())
                    .map_err(into_io)?;
            }
        }
        match self.drive(cx) {
            Poll::Ready(Err(error)) => Err(error),
            _ => Ok(()),
        }
    }

    /// Opens the next complete frame in the receive buffer, if any: data becomes
    /// `plain`, `END` sets `ended`, anything else goes to the hooks.
    fn next_message(&mut self) -> io::Result<bool> {
        let (body, consumed) = match frame::decode(&self.inbox[self.start..self.end]) {
            Ok(Decoded::Frame { body, consumed }) => (body.len(), consumed),
            Ok(Decoded::Incomplete { .. }) => return Ok(false),
            Err(error) => return Err(into_io(error.into())),
        };
        let body = self.start + frame::PREFIX_LEN..self.start + frame::PREFIX_LEN + body;
        self.start += consumed;
        let message = self
            .session
            .open_in_place(&mut self.inbox[body.clone()])
            .map_err(|e| into_io(e.into()))?;
        let len = message.len();
        // The message starts after the chunk flag.
        let message = body.start + 1..body.start + 1 + len;
        match self.inbox.get(message.start) {
            Some(&DATA) => self.plain = message.start + 1..message.end,
            Some(&END) => self.ended = true,
            Some(&tag) => {
                let result = self
                    .hooks
                    .control(tag, &self.inbox[message.start + 1..message.end]);
                self.inbox[message].zeroize();
                result.map_err(into_io)?;
            }
            None => return Err(into_io(TunnelError::Unexpected(u8::MAX))),
        }
        Ok(true)
    }

    /// Reads more bytes from the socket into the receive buffer; `Ok(0)` at its end.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let needed = match frame::decode(&self.inbox[self.start..self.end]) {
            Ok(Decoded::Incomplete { needed }) => needed,
            _ => 1,
        };
        let mut room = self.inbox.len() - self.end;
        if room < needed.max(READ_MIN) && self.start > 0 {
            // Only ciphertext moves: data handed out was zeroized where it lay.
            self.inbox.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            room = self.inbox.len() - self.end;
        }
        if room < needed || (self.grow && self.inbox.len() < READ_MAX) {
            let len = (self.end + needed).max((2 * self.inbox.len()).min(READ_MAX));
            self.inbox.resize(len, 0);
            self.grow = false;
        }
        let mut buf = ReadBuf::new(&mut self.inbox[self.end..]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        self.grow = n == buf.capacity();
        self.end += n;
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin, H: Hooks> AsyncRead for ChannelStream<S, H> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.poll_hooks(cx)?;
        let mut produced = false;
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                let taken = this.plain.start..this.plain.start + n;
                buf.put_slice(&this.inbox[taken.clone()]);
                this.inbox[taken].zeroize();
                this.plain.start += n;
                produced = true;
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.ended {
                // End of stream (after any data handed out above).
                return Poll::Ready(Ok(()));
            }
            if this.next_message()? {
                continue;
            }
            if produced {
                return Poll::Ready(Ok(()));
            }
            if ready!(this.fill(cx))? == 0 {
                // A bare FIN is not the authenticated end: anyone on the path can send one.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the channel closed without its end message",
                )));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin, H: Hooks> AsyncWrite for ChannelStream<S, H> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        this.poll_hooks(cx)?;
        if this.out.len() - this.sent >= WRITE_HIGH {
            // The socket did not take what is queued: wait for it.
            ready!(this.drive(cx))?;
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let budget = total.min(
            WRITE_HIGH
                .saturating_sub(this.out.len() - this.sent)
                .max(CHUNK),
        );
        let mut taken = 0;
        while taken < budget {
            let len = (budget - taken).min(CHUNK);
            this.session
                .seal_single_with(1 + len, &mut this.out, |out| {
                    out.push(DATA);
                    extend_from_slices(out, bufs, taken, len);
                })
                .map_err(|e| into_io(e.into()))?;
            taken += len;
        }
        if let Poll::Ready(Err(error)) = this.drive(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.poll_hooks(cx)?;
        ready!(this.drive(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closed {
            this.queue(END, &[]).map_err(into_io)?;
            this.closed = true;
        }
        ready!(this.drive(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<S, H> Drop for ChannelStream<S, H> {
    fn drop(&mut self) {
        if let Some(plain) = self.inbox.get_mut(self.plain.clone()) {
            plain.zeroize();
        }
    }
}

/// Appends `len` bytes of the concatenation of `bufs`, from offset `skip`.
fn extend_from_slices(out: &mut Vec<u8>, bufs: &[IoSlice<'_>], mut skip: usize, mut len: usize) {
    for buf in bufs {
        if len == 0 {
            return;
        }
        if skip >= buf.len() {
            skip -= buf.len();
            continue;
        }
        let take = (buf.len() - skip).min(len);
        out.extend_from_slice(&buf[skip..skip + take]);
        skip = 0;
        len -= take;
    }
}

fn into_io(error: TunnelError) -> io::Error {
    match error {
        TunnelError::Io(error) => error,
        other => io::Error::other(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_channel::Identity;
    use leasehold_channel::conn::{Channel, HANDSHAKE_TIMEOUT};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    struct NoHooks;

    impl Hooks for NoHooks {
        fn control(&mut self, tag: u8, _: &[u8]) -> Result<(), TunnelError> {
            Err(TunnelError::Unexpected(tag))
        }

        fn poll_renewal(&mut self, _: &mut Context<'_>) -> Poll<Option<String>> {
            Poll::Pending
        }
    }

    type Stream = ChannelStream<DuplexStream, NoHooks>;

    /// Two ends of a channel over an in-memory pipe smaller than a frame, so both ends
    /// see partial frames and full buffers.
    async fn pair() -> (Stream, Stream) {
        let (a, b) = tokio::io::duplex(40 << 10);
        let (client, server) = (Identity::generate(), Identity::generate());
        let pin = server.public();
        let accepting =
            tokio::spawn(async move { Channel::accept(b, &server, HANDSHAKE_TIMEOUT).await });
        let channel = Channel::connect(a, &client, &pin, HANDSHAKE_TIMEOUT)
            .await
            .unwrap();
        let (io, session, received, queued) = channel.into_parts();
        let mut client = ChannelStream::new(io, session, received, queued, NoHooks);
        // The proof queued by the handshake completes the other side's accept.
        client.flush().await.unwrap();
        let (io, session, received, _) = accepting.await.unwrap().unwrap().into_parts();
        (
            client,
            ChannelStream::new(io, session, received, Vec::new(), NoHooks),
        )
    }

    #[tokio::test]
    async fn large_transfers_both_ways_then_an_authenticated_end() {
        let (mut client, mut server) = pair().await;
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let small = b"HTTP/1.1 204 No Content\r\n\r\n".repeat(100);
        let (client_side, server_side) = tokio::join!(
            async {
                // Vectored, as hyper writes a head and a body.
                let mut rest = &big[..];
                while !rest.is_empty() {
                    let (head, body) = rest.split_at(rest.len().min(1000));
                    let body = &body[..body.len().min(200_000)];
                    let n = client
                        .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                        .await?;
                    rest = &rest[n..];
                }
                client.shutdown().await?;
                let mut answer = Vec::new();
                client.read_to_end(&mut answer).await?;
                Ok::<_, io::Error>(answer)
            },
            async {
                let mut got = Vec::new();
                server.read_to_end(&mut got).await?;
                server.write_all(&small).await?;
                server.shutdown().await?;
                Ok::<_, io::Error>(got)
            }
        );
        assert_eq!(server_side.unwrap(), big);
        assert_eq!(client_side.unwrap(), small);
        assert!(server.inbox.len() <= READ_MAX);
    }

    #[tokio::test]
    async fn a_bare_close_is_an_error_not_an_end() {
        let (mut client, mut server) = pair().await;
        client.write_all(b"partial request").await.unwrap();
        client.flush().await.unwrap();
        drop(client);
        let mut got = Vec::new();
        let error = server.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(got, b"partial request");
    }

    #[tokio::test]
    async fn an_unexpected_control_message_ends_the_stream() {
        let (mut client, mut server) = pair().await;
        client.queue(MEMBERSHIP, b"not for you").unwrap();
        client.flush().await.unwrap();
        let mut buf = [0u8; 16];
        assert!(server.read(&mut buf).await.is_err());
    }

    #[test]
    fn slices_are_taken_across_their_boundaries() {
        let bufs = [
            IoSlice::new(b"abc"),
            IoSlice::new(b""),
            IoSlice::new(b"defgh"),
        ];
        let mut out = Vec::new();
        extend_from_slices(&mut out, &bufs, 2, 4);
        assert_eq!(out, b"cdef");
        out.clear();
        extend_from_slices(&mut out, &bufs, 0, 8);
        assert_eq!(out, b"abcdefgh");
        out.clear();
        extend_from_slices(&mut out, &bufs, 7, 1);
        assert_eq!(out, b"h");
    }
}

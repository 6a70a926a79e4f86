//! The byte streams around the fast path: the upstream connection it opens (TCP, or
//! a channel to an outlet), and the client connection handed to hyper with the
//! bytes already read put back in front.

use std::error::Error as StdError;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use http::Uri;
use http::uri::{Authority, Scheme};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::connector::{PlainConnector, TransportStream};
use crate::outlet::OutletStream;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Opens upstream connections for the fast path. Generic so that any byte stream can
/// carry it (an outlet's channel as well as TCP).
pub trait Dial: Send + Sync {
    /// The connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send;
    /// Connects to `authority`, bounded by the connect timeout.
    fn dial(
        &self,
        authority: &Authority,
    ) -> impl Future<Output = Result<Self::Io, BoxError>> + Send;
}

impl Dial for PlainConnector {
    type Io = UpstreamIo;

    async fn dial(&self, authority: &Authority) -> Result<UpstreamIo, BoxError> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query("/")
            .build()?;
        let mut connector = self.clone();
        poll_fn(|cx| connector.poll_ready(cx)).await?;
        Ok(match connector.call(uri).await? {
            TransportStream::Tcp(tcp) => UpstreamIo::Tcp(tcp.into_inner()),
            TransportStream::Outlet(outlet) => UpstreamIo::Outlet(Box::new(outlet.into_inner())),
        })
    }
}

/// A connection made by the plain connector.
pub enum UpstreamIo {
    /// Direct TCP.
    Tcp(TcpStream),
    /// A channel to an outlet.
    Outlet(Box<OutletStream>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_read(cx, buf),
            Self::Outlet(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_write(cx, buf),
            Self::Outlet(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Self::Outlet(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(io) => io.is_write_vectored(),
            Self::Outlet(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_flush(cx),
            Self::Outlet(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_shutdown(cx),
            Self::Outlet(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// Whether an idle connection is still open: nothing to read and no end seen. One
/// non-blocking poll; tokio remembers that the last read drained the socket, so this
/// usually costs no system call.
pub fn is_idle_open<R: AsyncRead + Unpin>(io: &mut R) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    // Data from an idle upstream (or its end) means the connection cannot be reused.
    Pin::new(io).poll_read(&mut cx, &mut buf).is_pending()
}

/// Writes `first` then `second`, in one vectored write when the stream takes it.
pub async fn write_two<W: AsyncWrite + Unpin>(
    io: &mut W,
    first: &[u8],
    second: &[u8],
) -> io::Result<()> {
    let mut slices = [IoSlice::new(first), IoSlice::new(second)];
    let mut left: &mut [IoSlice<'_>] = &mut slices;
    IoSlice::advance_slices(&mut left, 0);
    while !left.is_empty() {
        let n = io.write_vectored(left).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut left, n);
    }
    io.flush().await
}

/// A client connection with bytes already read from it put back in front, so that hyper
/// can take over a connection the fast path has started reading.
pub struct Rewind<T> {
    prefix: BytesMut,
    inner: T,
}

impl<T> Rewind<T> {
    /// `inner`, whose next bytes are to be `prefix`.
    pub fn new(prefix: BytesMut, inner: T) -> Self {
        Self { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn rewind_replays_the_prefix_then_reads_on() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut rewound = Rewind::new(BytesMut::from(&b"GET / "[..]), near);
        far.write_all(b"HTTP/1.1").await.unwrap();
        drop(far);
        let mut all = Vec::new();
        rewound.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET / HTTP/1.1");
    }

    #[tokio::test]
    async fn an_idle_connection_is_open_until_its_peer_goes() {
        let (mut near, far) = tokio::io::duplex(64);
        assert!(is_idle_open(&mut near));
        drop(far);
        assert!(!is_idle_open(&mut near));
    }
}

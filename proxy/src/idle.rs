//! Noticing a connection that has gone quiet: the time of its last byte, either way.
//!
//! [`Tracked`] wraps a connection's socket and stamps each read or write that moved
//! bytes; the connection's task waits on [`Activity::quiet_for`] beside hyper and asks
//! hyper to close the connection gracefully once nothing has moved for the idle
//! timeout. Graceful means a request in flight is finished first, so a slow query that
//! moves no bytes for a while loses nothing: its connection is just not kept alive
//! afterwards. (HTTP/2 connections that stop answering altogether are caught by the
//! keep-alive pings; request bodies that stall by `timed_body.rs`.)
//!
//! Cost: one clock read (vDSO, no system call) and one relaxed atomic store per read or
//! write system call, which move up to a whole buffer each; and one `Arc` per connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, sleep_until};

/// When a connection last moved a byte.
#[derive(Debug, Clone)]
pub struct Activity {
    inner: Arc<Stamp>,
}

#[derive(Debug)]
struct Stamp {
    /// The connection's start; `last` counts milliseconds from it.
    start: Instant,
    last: AtomicU64,
}

impl Activity {
    /// A connection that starts now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Stamp {
                start: Instant::now(),
                last: AtomicU64::new(0),
            }),
        }
    }

    fn touch(&self) {
        let millis = self.inner.start.elapsed().as_millis();
        self.inner
            .last
            .store(u64::try_from(millis).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.inner.start + Duration::from_millis(self.inner.last.load(Ordering::Relaxed))
    }

    /// Resolves once no byte has moved for `idle`.
    pub async fn quiet_for(&self, idle: Duration) {
        loop {
            let due = self.last() + idle;
            if Instant::now() >= due {
                return;
            }
            sleep_until(due).await;
        }
    }
}

/// A socket whose reads and writes stamp an [`Activity`].
#[derive(Debug)]
pub struct Tracked<T> {
    io: T,
    activity: Activity,
}

impl<T> Tracked<T> {
    /// Wraps `io`.
    pub fn new(io: T, activity: Activity) -> Self {
        Self { io, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn quiet_means_no_byte_either_way_for_the_whole_period() {
        let (near, mut far) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut tracked = Tracked::new(near, activity.clone());
        let idle = Duration::from_secs(10);
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(6)).await;
        tracked.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
        far.write_all(b"y").await.unwrap();
        let mut byte = [0];
        tracked.read_exact(&mut byte).await.unwrap();
        activity.quiet_for(idle).await;
        // The last byte moved at 12 s: quiet from then, not from the start.
        assert!(Instant::now() - start >= Duration::from_secs(22));
    }
}

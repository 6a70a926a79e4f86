//! A request body that fails when the client stops sending it.
//!
//! A client that announces a body and then goes quiet would otherwise hold its
//! connection, its upstream connection and an InfluxDB request open for ever. Each
//! frame of the body must arrive within the body read timeout of the previous one (or
//! of the head); otherwise the body fails with [`BodyTimeout`], which aborts the
//! upstream request and closes the client's connection.
//!
//! The timer only runs while the body is *waiting for the client*: a body that is not
//! polled (the upstream is slow to read it) is not the client's fault. No timer is
//! created for a body whose bytes are already buffered, as a small write's are; a body
//! that does wait gets one boxed timer (the upstream clients want an `Unpin` body),
//! re-armed rather than re-made for each later wait.

use std::error::Error as StdError;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep, sleep};

type BoxError = Box<dyn StdError + Send + Sync>;

/// The client sent no part of its request body for the body read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client sent nothing of its request body for {0:?}")]
pub struct BodyTimeout(Duration);

/// `Incoming`, with a deadline on each wait for the client.
pub struct TimedBody {
    inner: Incoming,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer is armed for the current wait.
    armed: bool,
    timeout: Duration,
}

impl TimedBody {
    /// Wraps a request body.
    pub fn new(inner: Incoming, timeout: Duration) -> Self {
        Self {
            inner,
            timer: None,
            armed: false,
            timeout,
        }
    }
}

impl TimedBody {
    /// The body without its timer.
    pub fn into_inner(self) -> Incoming {
        self.inner
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            // The next wait starts its own clock.
            this.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let timer = this.timer.get_or_insert_with(|| Box::pin(sleep(timeout)));
        if !this.armed {
            timer.as_mut().reset(Instant::now() + timeout);
            this.armed = true;
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(BodyTimeout(timeout).into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! Leaving a keep-alive connection usable after the proxy answers a request itself.
//!
//! When the proxy answers on its own (503 without a lease, 400, 403, 405, 502) the
//! request body has not been read. hyper would then close the connection under a client
//! that is still sending it, and a keep-alive client sees a broken pipe instead of the
//! answer. So the unread body is read and discarded, up to [`DRAIN_LIMIT`] bytes within
//! [`DRAIN_TIME`]; a body that is longer (by its `Content-Length`, or as it turns out)
//! or slower gets the answer with `Connection: close` instead, so the client knows to
//! open a new connection. HTTP/2 needs neither: the stream is reset on its own.
//!
//! **Lingering.** Closing a socket with unread bytes in it makes the kernel send a
//! reset, and a client still writing its body (most write the whole request before
//! reading) then gets "connection reset" and never sees the answer. So a body not worth
//! waiting for is still read and discarded *after* the answer goes out, in the
//! background, up to [`LINGER_LIMIT`] bytes within [`LINGER_TIME`] (what web servers call
//! a lingering close); hyper closes the connection once it is read.

use std::time::Duration;

use http::header::CONNECTION;
use http::{HeaderValue, Response, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use tokio::time::{Instant, timeout_at};

use crate::responses::ProxyBody;

/// Most unread body bytes discarded to keep a connection open.
pub const DRAIN_LIMIT: u64 = 1024 * 1024;
/// Longest time spent discarding them.
pub const DRAIN_TIME: Duration = Duration::from_secs(1);
/// Most body bytes discarded after a `Connection: close` answer.
pub const LINGER_LIMIT: u64 = 32 * 1024 * 1024;
/// Longest time spent discarding them.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// `response`, the proxy's own answer to a request of `version` whose body is `body`:
/// the body read to its end if that is cheap, else `Connection: close` added.
pub async fn own_answer(
    version: Version,
    body: Incoming,
    mut response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    if version == Version::HTTP_2 || body.is_end_stream() {
        return response;
    }
    let mut body = body;
    match discard(&mut body, DRAIN_LIMIT, Instant::now() + DRAIN_TIME).await {
        Discarded::Ended => {}
        Discarded::Failed => close_after(&mut response),
        Discarded::Unfinished => {
            close_after(&mut response);
            // Bounded in bytes and time; ends at once if the connection goes.
            tokio::spawn(async move {
                let _ = discard(&mut body, LINGER_LIMIT, Instant::now() + LINGER_TIME).await;
            });
        }
    }
    response
}

/// How discarding a body went.
#[derive(Debug, PartialEq, Eq)]
enum Discarded {
    /// Read to its end.
    Ended,
    /// Longer than the limit, or not over by the deadline: more may follow.
    Unfinished,
    /// The body failed (the client went away or sent garbage).
    Failed,
}

/// Marks `response` as the last on its connection.
pub fn close_after<B>(response: &mut Response<B>) {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
}

/// Reads `body` to its end unless it is longer than `limit` or not over by `deadline`.
async fn discard<B: Body + Unpin>(body: &mut B, limit: u64, deadline: Instant) -> Discarded {
    if body.size_hint().lower() > limit {
        return Discarded::Unfinished;
    }
    let mut read: u64 = 0;
    loop {
        match timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    read = read.saturating_add(bytes::Buf::remaining(data) as u64);
                    if read > limit {
                        return Discarded::Unfinished;
                    }
                }
            }
            Ok(None) => return Discarded::Ended,
            Ok(Some(Err(_))) => return Discarded::Failed,
            Err(_) => return Discarded::Unfinished,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::body::{Frame, SizeHint};

    use super::*;

    /// `chunks` of unannounced length, then the end, or nothing ever (`stall`).
    struct Chunks {
        chunks: Vec<Bytes>,
        stall: bool,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.chunks.pop() {
                Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                None if self.stall => Poll::Pending,
                None => Poll::Ready(None),
            }
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::default()
        }
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn short_bodies_are_read_to_the_end() {
        for len in [1000, 1024] {
            let mut body = Full::new(Bytes::from(vec![1; len]));
            assert_eq!(discard(&mut body, 1024, later()).await, Discarded::Ended);
        }
        let chunks = vec![Bytes::from(vec![1; 512]); 2];
        let mut body = Chunks {
            chunks,
            stall: false,
        };
        assert_eq!(discard(&mut body, 1024, later()).await, Discarded::Ended);
    }

    #[tokio::test]
    async fn long_bodies_are_not() {
        // Known length over the limit: not read at all.
        let mut body = Full::new(Bytes::from(vec![1; 1025]));
        assert_eq!(
            discard(&mut body, 1024, later()).await,
            Discarded::Unfinished
        );
        assert_eq!(body.size_hint().exact(), Some(1025));
        // Unknown length, found to be over the limit while reading; the rest can still
        // be read (the lingering close does).
        let chunks = vec![Bytes::from(vec![1; 512]); 3];
        let mut body = Chunks {
            chunks,
            stall: false,
        };
        assert_eq!(
            discard(&mut body, 1024, later()).await,
            Discarded::Unfinished
        );
        assert_eq!(discard(&mut body, 1024, later()).await, Discarded::Ended);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_given_up_at_the_deadline() {
        let chunks = vec![Bytes::from(vec![1; 10])];
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut body = Chunks {
            chunks,
            stall: true,
        };
        assert_eq!(
            discard(&mut body, 1024, deadline).await,
            Discarded::Unfinished
        );
        assert!(Instant::now() >= deadline);
    }
}

//! Leaving a keep-alive connection usable after the proxy answers a request itself.
//!
//! When the proxy answers on its own (503 without a lease, 400, 403, 405, 502) the
//! request body has not been read. hyper would then close the connection under a client
//! that is still sending it, and a keep-alive client sees a broken pipe instead of the
//! answer. So the unread body is read and discarded, up to [`DRAIN_LIMIT`] bytes within
//! [`DRAIN_TIME`]; a body that is longer (by its `Content-Length`, or as it turns out)
//! or slower gets the answer with `Connection: close` instead, so the client knows to
//! open a new connection. HTTP/2 needs neither: the stream is reset on its own.

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
    if !discard(body, DRAIN_LIMIT, Instant::now() + DRAIN_TIME).await {
        close_after(&mut response);
    }
    response
}

/// Marks `response` as the last on its connection.
pub fn close_after<B>(response: &mut Response<B>) {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
}

/// Reads `body` to its end unless it is longer than `limit` or not over by `deadline`.
/// `true` when it ended.
async fn discard<B: Body + Unpin>(mut body: B, limit: u64, deadline: Instant) -> bool {
    if body.size_hint().lower() > limit {
        return false;
    }
    let mut read: u64 = 0;
    loop {
        match timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    read = read.saturating_add(bytes::Buf::remaining(data) as u64);
                    if read > limit {
                        return false;
                    }
                }
            }
            Ok(None) => return true,
            // A broken body or a stalled client: the connection is not worth keeping.
            Ok(Some(Err(_))) | Err(_) => return false,
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
        assert!(discard(Full::new(Bytes::from(vec![1; 1000])), 1024, later()).await);
        assert!(discard(Full::new(Bytes::from(vec![1; 1024])), 1024, later()).await);
        let chunks = vec![Bytes::from(vec![1; 512]); 2];
        assert!(
            discard(
                Chunks {
                    chunks,
                    stall: false
                },
                1024,
                later()
            )
            .await
        );
    }

    #[tokio::test]
    async fn long_bodies_are_not() {
        // Known length over the limit: not read at all.
        assert!(!discard(Full::new(Bytes::from(vec![1; 1025])), 1024, later()).await);
        // Unknown length, found to be over the limit while reading.
        let chunks = vec![Bytes::from(vec![1; 512]); 3];
        assert!(
            !discard(
                Chunks {
                    chunks,
                    stall: false
                },
                1024,
                later()
            )
            .await
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_given_up_at_the_deadline() {
        let chunks = vec![Bytes::from(vec![1; 10])];
        let deadline = Instant::now() + Duration::from_secs(1);
        assert!(
            !discard(
                Chunks {
                    chunks,
                    stall: true
                },
                1024,
                deadline
            )
            .await
        );
        assert!(Instant::now() >= deadline);
    }
}

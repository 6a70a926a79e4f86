//! A client connection's own upstream HTTP/1 connection: the fast path to plain
//! `http://` upstreams.
//!
//! **Why not the pooled client.** A profile of small writes put about 11% of the proxy's
//! CPU in hyper-util's legacy pooled client: per request it builds a pool key from the
//! URI, looks it up in a SipHash map, clones the connector for a lazy connect future,
//! and hands the request to the connection over a channel. None of that is needed here.
//! A client's HTTP/1 connection carries one request at a time (hyper's server reads the
//! next request only after answering the previous one), so it needs at most one upstream
//! connection at a time: it gets its own, opened on its first request (bounded by the
//! same connect timeout as the pooled client), reused while it stays open, and reopened
//! when the upstream closes it. Its lifetime follows the client's connection: when the
//! client goes, the sender is dropped and hyper closes the upstream connection, so there
//! is no idle timeout or pool reaper, and the upstream connections are bounded by
//! `max_connections`.
//!
//! **Where the sender lives, and why a `std::sync::Mutex`.** hyper calls a service with
//! `&self` and wants a `'static` future, so the sender cannot be borrowed by the request:
//! it sits in a slot in the per-connection state (one `Arc` per accepted connection, see
//! `forward.rs`) and the request *takes it out*, uses it, and puts it back once the
//! response head has arrived. The slot is locked twice per request, each time for a few
//! instructions and never across an `.await`, by one request at a time, so the lock is
//! never contended and costs one atomic operation each way. A `tokio::sync::Mutex` would
//! be held across the upstream call for nothing and costs an async acquire. Taking the
//! sender out also makes cancellation simple: if the client goes away mid-request, the
//! future with the sender in it is dropped (hyper then closes that upstream connection,
//! which HTTP/1 could not reuse anyway), and the next request finds the slot empty and
//! connects anew. The body of the previous response may still be streaming when the
//! sender is back in the slot; the next request waits for it with `ready()`.
//!
//! **Stale connections.** An upstream may close an idle keep-alive connection at any
//! moment. A closed sender is noticed before use (`is_closed`, then `ready`); and if a
//! request still could not be written on a reused connection, hyper hands it back unsent
//! and it is sent once more on a fresh connection, as the pooled client does. A request
//! that was (maybe partly) written is never retried: its body is streamed, not kept.
//! One that never went out (no connection could be made) is handed back with the error
//! ([`Failed`]), so the 502 can read its body and leave the client's connection open.

use std::error::Error as StdError;
use std::future::poll_fn;
use std::sync::{Mutex, PoisonError};

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use tower_service::Service;
use tracing::{Instrument, debug};

use crate::connector::{self, PlainConnector};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a request on the dedicated connection failed.
#[derive(Debug, thiserror::Error)]
pub enum DedicatedError {
    /// No connection could be established (refused, unresolvable, timed out).
    #[error("cannot connect to the upstream")]
    Connect(#[source] BoxError),
    /// The connection was established but the request failed on it.
    #[error("the upstream request failed")]
    Request(#[source] hyper::Error),
}

impl DedicatedError {
    /// The same description as the pooled client's errors get (see
    /// [`connector::describe_error`]): the client sees one kind of 502 whichever path
    /// its request took.
    pub fn describe(&self) -> (bool, String) {
        match self {
            Self::Connect(cause) => connector::describe(true, Some(&**cause)),
            Self::Request(cause) => connector::describe(false, Some(cause)),
        }
    }
}

/// A failed [`Dedicated::send`]: why, and the request back if none of it was sent (a
/// refused connection, typically), so the caller can still read its body and keep the
/// client's connection usable.
pub struct Failed<B> {
    /// What went wrong.
    pub error: DedicatedError,
    /// The request, untouched, when it never went out.
    pub unsent: Option<Request<B>>,
}

/// The upstream connection of one client connection (empty until its first request).
pub struct Dedicated<B> {
    slot: Mutex<Option<Held<B>>>,
}

/// An open upstream connection and where it goes.
struct Held<B> {
    /// The upstream it is connected to: a renewed lease may name another endpoint.
    authority: Authority,
    sender: SendRequest<B>,
}

impl<B> Default for Dedicated<B> {
    fn default() -> Self {
        Self {
            slot: Mutex::new(None),
        }
    }
}

impl<B> Dedicated<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Sends `request` (origin-form URI, `Host` set) to `authority` over this client
    /// connection's upstream connection, connecting first if there is none yet, or it
    /// was closed, or it goes elsewhere.
    pub async fn send(
        &self,
        connector: &PlainConnector,
        authority: &Authority,
        mut request: Request<B>,
    ) -> Result<Response<Incoming>, Failed<B>> {
        let mut reusable = self
            .take()
            .filter(|held| held.authority == *authority && !held.sender.is_closed());
        loop {
            let reused = reusable.is_some();
            let mut held = match reusable.take() {
                Some(held) => held,
                None => match connect(connector, authority).await {
                    Ok(sender) => Held {
                        authority: authority.clone(),
                        sender,
                    },
                    Err(error) => {
                        return Err(Failed {
                            error,
                            unsent: Some(request),
                        });
                    }
                },
            };
            // Waits for the previous response's body to finish; fails if the upstream
            // closed the connection in the meantime.
            if let Err(error) = held.sender.ready().await {
                if reused {
                    debug!(%error, "upstream connection closed while idle; reconnecting");
                    continue;
                }
                return Err(Failed {
                    error: DedicatedError::Request(error),
                    unsent: Some(request),
                });
            }
            match held.sender.try_send_request(request).await {
                Ok(response) => {
                    self.put_back(held);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    // Never written: safe to send again, once, on a fresh connection.
                    Some(unsent) if reused => {
                        debug!(error = %error.error(), "upstream connection closed before the request went out; reconnecting");
                        request = unsent;
                    }
                    unsent => {
                        return Err(Failed {
                            error: DedicatedError::Request(error.into_error()),
                            unsent,
                        });
                    }
                },
            }
        }
    }

    fn take(&self) -> Option<Held<B>> {
        // Nothing panics while holding the lock; a poisoned slot is still consistent.
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn put_back(&self, held: Held<B>) {
        if !held.sender.is_closed() {
            *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(held);
        }
    }
}

/// Opens an HTTP/1 connection to `authority` and spawns the task that drives it.
async fn connect<B>(
    connector: &PlainConnector,
    authority: &Authority,
) -> Result<SendRequest<B>, DedicatedError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|e| DedicatedError::Connect(e.into()))?;
    let mut connector = connector.clone();
    poll_fn(|cx| connector.poll_ready(cx))
        .await
        .map_err(DedicatedError::Connect)?;
    let io = connector.call(uri).await.map_err(DedicatedError::Connect)?;
    let (sender, connection) = http1::handshake(io)
        .await
        .map_err(|e| DedicatedError::Connect(e.into()))?;
    tokio::spawn(
        async move {
            if let Err(error) = connection.await {
                debug!(%error, "upstream connection ended with an error");
            }
        }
        .in_current_span(),
    );
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use http::header::{CONNECTION, HOST};
    use http::{HeaderValue, StatusCode};
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;

    /// An upstream that counts connections and answers `/close` with `Connection: close`.
    async fn upstream() -> (Authority, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let connection = count.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| async move {
                        let close = request.uri().path() == "/close";
                        let host = request.headers()[HOST].clone();
                        let mut response = Response::new(Full::new(Bytes::from(format!(
                            "{connection} {} {}",
                            request.uri(),
                            host.to_str().unwrap()
                        ))));
                        if close {
                            response
                                .headers_mut()
                                .insert(CONNECTION, HeaderValue::from_static("close"));
                        }
                        Ok::<_, Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (authority, accepted)
    }

    async fn get(
        dedicated: &Dedicated<Full<Bytes>>,
        authority: &Authority,
        path: &'static str,
    ) -> Result<String, DedicatedError> {
        let connector = connector::plain_connector(Duration::from_secs(2));
        let request = Request::get(path)
            .header(HOST, authority.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = dedicated
            .send(&connector, authority, request)
            .await
            .map_err(|failed| failed.error)?;
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Ok(String::from_utf8(body.to_vec()).unwrap())
    }

    /// Which upstream connection (counted from 1) answered a GET of `path`.
    async fn served_by(
        dedicated: &Dedicated<Full<Bytes>>,
        authority: &Authority,
        path: &'static str,
    ) -> usize {
        let answer = get(dedicated, authority, path).await.unwrap();
        answer.split(' ').next().unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn one_connection_serves_consecutive_requests_in_origin_form() {
        let (authority, accepted) = upstream().await;
        let dedicated = Dedicated::default();
        for path in ["/ping", "/write?db=x", "/query?q=1"] {
            let answer = get(&dedicated, &authority, path).await.unwrap();
            assert_eq!(answer, format!("1 {path} {authority}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced() {
        let (authority, accepted) = upstream().await;
        let dedicated = Dedicated::default();
        assert_eq!(served_by(&dedicated, &authority, "/close").await, 1);
        // Whether the close is seen before the next request or only when sending it,
        // the request goes out on a new connection and succeeds.
        assert_eq!(served_by(&dedicated, &authority, "/ping").await, 2);
        assert_eq!(served_by(&dedicated, &authority, "/ping").await, 2);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn another_authority_gets_its_own_connection() {
        let (first, _) = upstream().await;
        let (second, accepted) = upstream().await;
        let dedicated = Dedicated::default();
        assert_eq!(served_by(&dedicated, &first, "/ping").await, 1);
        let answer = get(&dedicated, &second, "/ping").await.unwrap();
        assert_eq!(answer, format!("1 /ping {second}"));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_connect_error() {
        let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = reserved.local_addr().unwrap().to_string().parse().unwrap();
        drop(reserved);
        let dedicated = Dedicated::default();
        let error = get(&dedicated, &authority, "/ping").await.unwrap_err();
        assert!(matches!(error, DedicatedError::Connect(_)), "{error:?}");
        let (unreachable, message) = error.describe();
        assert!(unreachable);
        assert!(
            message.starts_with("cannot connect to the upstream InfluxDB: "),
            "{message}"
        );
    }
}

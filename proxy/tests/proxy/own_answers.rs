//! The proxy's own answers leave a keep-alive connection usable: the unread body is read
//! and discarded when it is small, and a large one gets `Connection: close`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use leasehold_protocol::AuthScheme;

use crate::support::*;

/// A proxy that never gets a lease: it answers every request 503 itself.
async fn leaseless() -> (FakeUpstream, FakeSource, Proxy) {
    let upstream = FakeUpstream::start().await;
    let source = FakeSource::new(AuthScheme::Token, &upstream.url(), 300);
    source.set_fail(true);
    let proxy = Proxy::start(config(), source.clone()).await;
    (upstream, source, proxy)
}

fn write(body: TestBody) -> Request<TestBody> {
    Request::post("/write?db=x")
        .header("host", "localhost")
        .body(body)
        .unwrap()
}

async fn assert_no_credential(response: http::Response<hyper::body::Incoming>) -> http::HeaderMap {
    let (status, headers, body) = read(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "unavailable");
    headers
}

/// A body of announced length that is sent a moment after the head, as a client that
/// writes the head and the body separately does: the proxy has to wait for it.
struct LateBody {
    delay: Pin<Box<tokio::time::Sleep>>,
    data: Option<Bytes>,
    len: u64,
}

impl LateBody {
    fn new(data: Bytes) -> Self {
        Self {
            delay: Box::pin(tokio::time::sleep(Duration::from_millis(2))),
            len: data.len() as u64,
            data: Some(data),
        }
    }
}

impl Body for LateBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.delay.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(self.data.take().map(|data| Ok(Frame::data(data))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

#[tokio::test]
async fn five_hundred_writes_without_a_lease_get_503_on_one_connection() {
    let (upstream, _source, proxy) = leaseless().await;
    let mut connection = proxy.connect_nodelay().await;
    let line = format!("cpu,host=a value=1 {}\n", "0".repeat(1024));
    let body = &line.as_bytes()[..1024];
    for i in 0..500 {
        connection
            .ready()
            .await
            .unwrap_or_else(|e| panic!("connection unusable before write {i}: {e}"));
        let response = tokio::time::timeout(
            Duration::from_secs(20),
            connection.send_request(write(LateBody::new(Bytes::copy_from_slice(body)).boxed())),
        )
        .await
        .expect("answer in time")
        .unwrap_or_else(|e| panic!("write {i} failed: {e}"));
        let headers = assert_no_credential(response).await;
        assert!(headers.get("connection").is_none(), "{headers:?}");
    }
    // Chunked bodies (no length announced) are drained the same way.
    for _ in 0..20 {
        connection.ready().await.unwrap();
        let response = connection
            .send_request(write(PatternBody::new(64 * 1024, 4096).boxed()))
            .await
            .unwrap();
        assert_no_credential(response).await;
    }
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn a_large_body_gets_connection_close_and_the_next_connection_works() {
    let (_upstream, _source, proxy) = leaseless().await;
    let mut connection = proxy.connect().await;
    let response = tokio::time::timeout(
        Duration::from_secs(20),
        connection.send_request(write(full(vec![b'x'; 2 * 1024 * 1024]))),
    )
    .await
    .expect("answer in time")
    .expect("the 503 arrives, not a broken connection");
    let headers = assert_no_credential(response).await;
    assert_eq!(headers["connection"], "close");
    // The client knows to reconnect, and the new connection is served.
    let mut fresh = proxy.connect().await;
    fresh.ready().await.unwrap();
    let response = fresh.send_request(write(full("m v=1"))).await.unwrap();
    assert_no_credential(response).await;
}

/// A client that writes its whole request before reading (as many do) still reads the
/// 503 for a large body, rather than a reset connection.
#[tokio::test]
async fn a_client_that_writes_everything_first_reads_the_503() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (_upstream, _source, proxy) = leaseless().await;
    for _ in 0..5 {
        let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let len = 2 * 1024 * 1024;
        let writing = tokio::spawn(async move {
            let head = format!(
                "POST /write?db=x HTTP/1.1\r\nhost: localhost\r\ncontent-length: {len}\r\n\r\n"
            );
            writer.write_all(head.as_bytes()).await?;
            writer.write_all(&vec![b'x'; len]).await?;
            Ok::<_, std::io::Error>(writer)
        });
        // Whether or not all of it could be written, the answer is there to read.
        let _ = writing.await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut answer))
            .await
            .expect("the proxy closes the connection in time")
            .expect("the answer is read, not a reset");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
    }
}

/// The same for the other answers the proxy gives itself: 403 (a web page), 400 (a dot
/// segment under the base path); and the connection then carries a normal write.
#[tokio::test]
async fn refusals_keep_the_connection_usable_too() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::under_base_path(&upstream).await;
    let mut connection = proxy.connect_nodelay().await;
    let body = || LateBody::new(Bytes::from(vec![b'x'; 1024])).boxed();
    for i in 0..100 {
        let (path, origin, expected) = if i % 2 == 0 {
            (
                "/write?db=x",
                Some("https://evil.example"),
                StatusCode::FORBIDDEN,
            )
        } else {
            ("/a/../write?db=x", None, StatusCode::BAD_REQUEST)
        };
        let mut request = Request::post(path).header("host", "localhost");
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        connection
            .ready()
            .await
            .unwrap_or_else(|e| panic!("connection unusable before request {i}: {e}"));
        let response = connection
            .send_request(request.body(body()).unwrap())
            .await
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        let (status, headers, _) = read(response).await;
        assert_eq!(status, expected, "request {i}");
        assert!(headers.get("connection").is_none(), "{headers:?}");
    }
    connection.ready().await.unwrap();
    let response = connection.send_request(write(body())).await.unwrap();
    assert_eq!(read(response).await.0, StatusCode::NO_CONTENT);
    assert_eq!(upstream.seen().len(), 1);
    assert_eq!(upstream.last().path, "/influx/write");
}

/// With InfluxDB down, the fast path's 502 (the request never went out) keeps the
/// connection too: the body is still read and discarded.
#[tokio::test]
async fn an_unreachable_upstream_gets_502_on_one_connection() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let proxy = Proxy::with_token(config(), &url).await;
    let mut connection = proxy.connect_nodelay().await;
    for i in 0..50 {
        connection
            .ready()
            .await
            .unwrap_or_else(|e| panic!("connection unusable before write {i}: {e}"));
        let body = LateBody::new(Bytes::from(vec![b'x'; 1024])).boxed();
        let response = connection
            .send_request(write(body))
            .await
            .unwrap_or_else(|e| panic!("write {i} failed: {e}"));
        let (status, headers, body) = read(response).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "write {i}");
        assert!(headers.get("connection").is_none(), "{headers:?}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "unavailable");
    }
}

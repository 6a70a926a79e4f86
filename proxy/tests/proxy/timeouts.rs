//! Connections that never speak, go quiet, or stop sending a body: none of them holds
//! the proxy or its admin port.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const PING: &[u8] = b"GET /ping HTTP/1.1\r\nhost: localhost\r\n\r\n";

/// Reads until the proxy closes the connection (EOF or reset); fails after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the proxy closed the connection");
    seen
}

async fn ping(addr: std::net::SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(PING).await.unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn silent_sockets_up_to_the_limit_do_not_block_the_next_client() {
    let upstream = FakeUpstream::start().await;
    // A first-byte timeout far beyond the test: the silent sockets do not time out.
    let proxy = Proxy::with_token(
        leasehold_proxy::Config {
            max_connections: 6,
            first_byte_timeout: Duration::from_secs(600),
            ..config()
        },
        &upstream.url(),
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..6 {
        silent.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    for round in 0..3 {
        let answer = ping(proxy.addr).await;
        assert!(
            answer.starts_with("HTTP/1.1 204"),
            "round {round}: {answer}"
        );
    }
    // Twice as many silent sockets: the oldest are let go, clients still get through.
    for _ in 0..6 {
        silent.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    let answer = ping(proxy.addr).await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let oldest = &mut silent[0];
    assert!(
        closed_within(oldest, Duration::from_secs(20))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_socket_that_sends_nothing_is_closed_after_the_first_byte_timeout() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(
        leasehold_proxy::Config {
            first_byte_timeout: Duration::from_millis(200),
            ..config()
        },
        &upstream.url(),
    )
    .await;
    for addr in [proxy.addr, proxy.admin] {
        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_within(&mut silent, Duration::from_secs(20))
                .await
                .is_empty()
        );
    }
    assert!(ping(proxy.addr).await.starts_with("HTTP/1.1 204"));
}

#[tokio::test]
async fn silent_sockets_on_the_admin_port_do_not_fail_the_health_probe() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(
        leasehold_proxy::Config {
            first_byte_timeout: Duration::from_secs(600),
            ..config()
        },
        &upstream.url(),
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(proxy.admin).await.unwrap());
    }
    for _ in 0..3 {
        let (status, _, body) = proxy.get(&proxy.admin_url("/healthz")).await;
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"ok\n");
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(
        leasehold_proxy::Config {
            idle_timeout: Duration::from_secs(1),
            ..config()
        },
        &upstream.url(),
    )
    .await;
    // HTTP/1.1: answered, then closed once idle.
    for addr in [proxy.addr, proxy.admin] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request: &[u8] = if addr == proxy.addr {
            PING
        } else {
            b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n"
        };
        stream.write_all(request).await.unwrap();
        let seen = closed_within(&mut stream, Duration::from_secs(20)).await;
        assert!(
            seen.starts_with(b"HTTP/1.1 2"),
            "{}",
            String::from_utf8_lossy(&seen)
        );
    }
    // HTTP/2: the connection ends once idle (GOAWAY, then close).
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(proxy.addr).await.unwrap());
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    let driver = tokio::spawn(connection);
    let request = http::Request::get(proxy.url("/ping"))
        .body(empty())
        .unwrap();
    assert_eq!(
        read(sender.send_request(request).await.unwrap()).await.0,
        204
    );
    tokio::time::timeout(Duration::from_secs(20), driver)
        .await
        .expect("the idle HTTP/2 connection was closed")
        .unwrap()
        .ok();
}

/// A long request in flight is not cut by the idle timeout: it finishes, then the
/// connection closes.
#[tokio::test]
async fn a_slow_request_outlives_the_idle_timeout() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(
        leasehold_proxy::Config {
            idle_timeout: Duration::from_millis(500),
            ..config()
        },
        &upstream.url(),
    )
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let entered = upstream.state.slow_entered.notified();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    entered.await;
    // Well past the idle timeout with nothing moving (an event, not a timing assertion:
    // the answer must still come whole).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    upstream.state.release.notify_one();
    let seen = closed_within(&mut stream, Duration::from_secs(20)).await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.ends_with("slow done"), "{seen}");
}

#[tokio::test]
async fn an_http2_client_that_stops_answering_pings_is_closed() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(
        leasehold_proxy::Config {
            http2_keepalive_interval: Duration::from_millis(200),
            http2_keepalive_timeout: Duration::from_millis(200),
            ..config()
        },
        &upstream.url(),
    )
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // The connection preface and an empty SETTINGS frame, then nothing: no SETTINGS
    // acknowledgement, no PING answer. The idle timeout (60 s) is far off, and the
    // bytes the proxy sends keep resetting it anyway: only the unanswered ping ends it.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    closed_within(&mut stream, Duration::from_secs(20)).await;
}

/// An upstream that reads request bodies to the end or to an error and reports which.
async fn body_reporting_upstream() -> (String, tokio::sync::mpsc::UnboundedReceiver<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (report, reports) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let report = report.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let report = report.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let whole = request.into_body().collect().await.is_ok();
                            let _ = report.send(whole);
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Empty::<bytes::Bytes>::new(),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, reports)
}

#[tokio::test]
async fn a_request_body_that_stops_coming_is_given_up() {
    let (upstream, mut reports) = body_reporting_upstream().await;
    let proxy = Proxy::with_token(
        leasehold_proxy::Config {
            body_read_timeout: Duration::from_secs(2),
            ..config()
        },
        &upstream,
    )
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"POST /write?db=x HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\nm v=1",
        )
        .await
        .unwrap();
    // The client's connection is closed (after a 502 or without an answer) ...
    let seen = closed_within(&mut stream, Duration::from_secs(20)).await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        seen.is_empty() || seen.starts_with("HTTP/1.1 502"),
        "{seen}"
    );
    // ... and the upstream request was aborted rather than left waiting.
    let whole = tokio::time::timeout(Duration::from_secs(20), reports.recv())
        .await
        .expect("the upstream request ended")
        .unwrap();
    assert!(!whole);
    // Bodies that keep coming, however slowly overall, go through.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"POST /write?db=x HTTP/1.1\r\nhost: localhost\r\ncontent-length: 15\r\n\r\n")
        .await
        .unwrap();
    // Each byte within the timeout, all of them well beyond it.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream.write_all(b"x").await.unwrap();
    }
    let mut buf = vec![0; 1024];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(reports.recv().await.unwrap());
}

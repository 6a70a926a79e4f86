//! The connection limit and the request-head size limit.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A proxy with `config`, holding a token lease for a fake upstream.
async fn proxy_with(config: leasehold_proxy::Config) -> (FakeUpstream, Proxy) {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(config, &upstream.url()).await;
    (upstream, proxy)
}

#[tokio::test]
async fn connections_over_the_limit_are_closed() {
    let (_upstream, proxy) = proxy_with(leasehold_proxy::Config {
        max_connections: 1,
        ..config()
    })
    .await;
    let request = b"GET /ping HTTP/1.1\r\nhost: localhost\r\n\r\n";

    // The first connection is served and stays open (keep-alive), holding the only slot.
    let mut first = TcpStream::connect(proxy.addr).await.unwrap();
    let answer = send_and_read(&mut first, request).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 204"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // The second is closed without an answer.
    let mut second = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(send_and_read(&mut second, request).await.is_empty());
    let (_, _, metrics) = proxy.get(&proxy.admin_url("/metrics")).await;
    assert!(
        std::str::from_utf8(&metrics)
            .unwrap()
            .contains("leasehold_proxy_connections_rejected_total 1")
    );

    // Once the first goes away, there is room again.
    drop(first);
    eventually(DEADLINE, || async {
        let mut again = TcpStream::connect(proxy.addr).await.unwrap();
        send_and_read(&mut again, request)
            .await
            .starts_with(b"HTTP/1.1 204")
    })
    .await;
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let (upstream, proxy) = proxy_with(leasehold_proxy::Config {
        max_header_bytes: 16 * 1024,
        ..config()
    })
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let big = "x".repeat(64 * 1024);
    let request = format!("GET /ping HTTP/1.1\r\nhost: localhost\r\nx-big: {big}\r\n\r\n");
    let answer = send_and_read(&mut stream, request.as_bytes()).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(upstream.seen().is_empty());
    // The server keeps serving.
    assert_eq!(proxy.get(&proxy.url("/ping")).await.0, 204);
}

#[tokio::test]
async fn a_client_that_stalls_in_its_request_head_is_cut_off() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let (upstream, proxy) = proxy_with(leasehold_proxy::Config {
        header_read_timeout: TIMEOUT,
        ..config()
    })
    .await;

    // The clock starts before the connection exists, so it cannot start after the
    // proxy's (which starts at accept, or at the first byte): the measured time is an
    // upper bound on the proxy's, and the lower-bound check below cannot misfire.
    let started = std::time::Instant::now();
    let mut stalled = TcpStream::connect(proxy.addr).await.unwrap();
    // Half a head, then silence: the proxy answers 408 or closes.
    stalled
        .write_all(b"GET /ping HTTP/1.1\r\nhost: lo")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(DEADLINE, stalled.read(&mut buf))
        .await
        .expect("the stalled connection is closed")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() >= TIMEOUT, "cut before the timeout");
    assert!(upstream.seen().is_empty());
    // The server keeps serving.
    assert_eq!(proxy.get(&proxy.url("/ping")).await.0, 204);
}

#[tokio::test]
async fn the_head_timeout_bounds_each_head_not_the_connection() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let (_upstream, proxy) = proxy_with(leasehold_proxy::Config {
        header_read_timeout: TIMEOUT,
        ..config()
    })
    .await;
    // Prompt requests, back to back, on one keep-alive connection for well over the
    // timeout: each head arrives in microseconds, so no scheduling delay on this side
    // comes near the timeout, and the connection is served throughout.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let request = b"GET /ping HTTP/1.1\r\nhost: localhost\r\n\r\n";
    let opened = std::time::Instant::now();
    let mut served = 0;
    while opened.elapsed() < TIMEOUT * 3 {
        let answer = send_and_read(&mut stream, request).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 204"),
            "request {served} on a connection {:?} old: {}",
            opened.elapsed(),
            String::from_utf8_lossy(&answer)
        );
        served += 1;
    }

    // Left idle, the connection is closed (hyper counts the wait for the next head),
    // which a client sees as an ordinary idle close.
    let mut idle = [0u8; 1];
    let closed = tokio::time::timeout(DEADLINE, stream.read(&mut idle)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
}

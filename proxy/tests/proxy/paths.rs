//! Request paths and queries the proxy must not forward as given: dot segments under an
//! upstream base path, credentials in `;`-separated queries.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Sends `request` on a fresh connection and returns the whole answer (until close or
/// a pause; the answers here are small and come in one piece).
async fn raw(proxy: &Proxy, request: &str) -> String {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0; 8192];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn dot_segments_under_a_base_path_get_400_and_never_reach_the_upstream() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::under_base_path(&upstream).await;
    for path in [
        "/../admin",
        "/api/%2e%2e/%2E%2E/x",
        "/write/.%2e",
        "/./ping",
    ] {
        let answer = raw(
            &proxy,
            &format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains(r#""code":"invalid""#), "{answer}");
        assert!(answer.contains("segments"), "{answer}");
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
    // An ordinary path still goes through, under the base path.
    let answer = raw(&proxy, "GET /ping HTTP/1.1\r\nhost: localhost\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert_eq!(upstream.last().path, "/influx/ping");
}

#[tokio::test]
async fn credentials_after_a_semicolon_are_stripped() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(config(), &upstream.url()).await;
    let (status, _, _) = proxy
        .get(&proxy.url("/query?db=x;u=me;p=secret&q=show;rp=y"))
        .await;
    assert_eq!(status, 204);
    let seen = upstream.last();
    assert_eq!(seen.query.as_deref(), Some("db=x&q=show;rp=y"));
    assert_eq!(seen.authorization.as_deref(), Some("Token token-1"));
}

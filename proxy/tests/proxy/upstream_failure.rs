//! An unreachable or stuck upstream: a fast 502 with an InfluxDB-style body, and
//! recovery once it is back.

use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};

use crate::support::*;

#[tokio::test]
async fn upstream_down_is_a_fast_502_and_recovery_is_automatic() {
    // A port held (bound) but not listening: connections are refused, and no other
    // process can take it before the upstream comes back on it.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let proxy = Proxy::with_token(config(), &format!("http://{addr}")).await;

    // An answer rather than a hang (`Proxy::send` fails the test after its deadline).
    let (status, headers, body) = proxy.get(&proxy.url("/api/v2/write")).await;
    assert_eq!(status, 502);
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], "unavailable");
    let message = json["message"].as_str().unwrap();
    assert!(message.contains("cannot connect"), "{message}");
    assert!(!message.contains("token-"), "{message}");

    let upstream = FakeUpstream::start_on(socket.listen(64).unwrap());
    assert_eq!(proxy.get(&proxy.url("/api/v2/write")).await.0, 204);
    assert_eq!(token_of(&upstream.last()), "token-1");
}

#[tokio::test]
async fn an_upstream_that_never_completes_the_handshake_times_out() {
    // Accepts TCP (the kernel does it) but never speaks TLS.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let config = leasehold_proxy::Config {
        upstream_connect_timeout: Duration::from_millis(300),
        ..config()
    };
    let proxy = Proxy::with_token(config, &format!("https://{addr}")).await;
    let (status, _, body) = proxy.get(&proxy.url("/ping")).await;
    assert_eq!(status, 502);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        json["message"].as_str().unwrap().contains("timed out"),
        "{json}"
    );
    drop(silent);
}

#[tokio::test]
async fn an_upstream_that_hangs_up_on_the_request_is_a_fast_502() {
    // Accepts, reads the request head, and closes without answering.
    let rude = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = rude.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = rude.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
        }
    });
    let proxy = Proxy::with_token(config(), &format!("http://{addr}")).await;
    let (status, _, body) = proxy.get(&proxy.url("/ping")).await;
    assert_eq!(status, 502);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], "internal error");
    let message = json["message"].as_str().unwrap();
    assert!(
        message.starts_with("the upstream InfluxDB request failed"),
        "{message}"
    );
    assert!(!message.contains("token-"), "{message}");
}

//! Graceful shutdown: in-flight requests finish, stuck ones are cut at the deadline.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn an_in_flight_request_completes_after_cancel() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(config(), &upstream.url()).await;
    let client = proxy.client.clone();
    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move {
        read(
            client
                .request(http::Request::get(url).body(empty()).unwrap())
                .await
                .unwrap(),
        )
        .await
    });
    upstream.state.slow_entered.notified().await;

    let addr = proxy.addr;
    let state = std::sync::Arc::clone(&upstream.state);
    proxy.shutdown.cancel();
    // New connections are no longer accepted...
    eventually(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    // ...but the request in flight still gets its answer.
    state.release.notify_one();
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"slow done");
    proxy.stop().await;
}

#[tokio::test]
async fn requests_still_running_at_the_deadline_are_cut() {
    let upstream = FakeUpstream::start().await;
    let config = leasehold_proxy::Config {
        shutdown_grace: Duration::from_millis(200),
        ..config()
    };
    let proxy = Proxy::with_token(config, &upstream.url()).await;
    let client = proxy.client.clone();
    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move {
        client
            .request(http::Request::get(url).body(empty()).unwrap())
            .await
    });
    upstream.state.slow_entered.notified().await;
    // Stops within the grace period plus a margin, although the request never finishes.
    proxy.stop().await;
    let outcome = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_err(), "the stuck request was cut");
}

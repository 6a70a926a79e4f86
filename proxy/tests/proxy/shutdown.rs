//! Graceful shutdown: in-flight requests finish, stuck ones are cut at the deadline.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn an_in_flight_request_completes_after_cancel() {
    let upstream = FakeUpstream::start().await;
    // A grace period far longer than the test: the request is released during it.
    let config = leasehold_proxy::Config {
        shutdown_grace: DEADLINE,
        ..config()
    };
    let proxy = Proxy::with_token(config, &upstream.url()).await;
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
    eventually(DEADLINE, || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    // ...but the request in flight still gets its answer.
    state.release.notify_one();
    let (status, _, body) = tokio::time::timeout(DEADLINE, in_flight)
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
    const GRACE: Duration = Duration::from_secs(1);
    let config = leasehold_proxy::Config {
        shutdown_grace: GRACE,
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
    // Stops although the request never finishes, but not before the grace period is
    // over (the clock starts before the shutdown signal, so it cannot read short).
    let stopping = std::time::Instant::now();
    proxy.stop().await;
    assert!(
        stopping.elapsed() >= GRACE,
        "the stuck request was cut before the grace period ended"
    );
    let outcome = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_err(), "the stuck request was cut");
}

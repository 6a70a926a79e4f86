//! Thread per core (`Config::threads`): further threads serve client connections from
//! their own sockets, under the one connection limit and the one shutdown.

use std::time::Duration;

use http::Request;
use leasehold_protocol::AuthScheme;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// A ready proxy with `threads` threads in front of `upstream`, its proxy listener bound
/// for sharing (`SO_REUSEPORT`), as the CLI binds it.
async fn shared_proxy(config: leasehold_proxy::Config, upstream: &FakeUpstream) -> Proxy {
    let listener = leasehold_proxy::proxy::bind_all("127.0.0.1:0".parse().unwrap(), &[], true)
        .await
        .unwrap()
        .remove(0);
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let mut running = leasehold_proxy::start(
        config.validate().unwrap(),
        FakeSource::new(AuthScheme::Token, &upstream.url(), 300),
        listener,
        admin,
        shutdown.clone(),
    )
    .unwrap();
    tokio::time::timeout(DEADLINE, running.ready())
        .await
        .expect("proxy ready in time")
        .unwrap();
    Proxy {
        addr: running.proxy_addr(),
        admin: running.admin_addr(),
        running: Some(running),
        shutdown,
        client: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http(),
    }
}

/// `count` GETs of `/slow`, each on a connection of its own, sent in the background.
async fn slow_requests(
    proxy: &Proxy,
    upstream: &FakeUpstream,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Result<http::StatusCode, hyper::Error>>> {
    let mut requests = Vec::new();
    for _ in 0..count {
        let mut connection = proxy.connect().await;
        requests.push(tokio::spawn(async move {
            let request = Request::get("/slow")
                .header("host", "localhost")
                .body(empty())
                .unwrap();
            let response = connection.send_request(request).await?;
            let (status, _, _) = read(response).await;
            Ok(status)
        }));
    }
    // Every one reached the upstream, whichever thread took its connection.
    eventually(DEADLINE, || async { upstream.seen().len() == count }).await;
    requests
}

#[tokio::test]
async fn every_thread_serves_and_in_flight_requests_drain_on_shutdown() {
    let upstream = FakeUpstream::start().await;
    let config = leasehold_proxy::Config {
        threads: 4,
        shutdown_grace: DEADLINE,
        ..config()
    };
    let proxy = shared_proxy(config, &upstream).await;
    // Sixteen connections, spread by the kernel over the four threads' sockets: a
    // thread that did not serve its socket would leave its connections hanging.
    let in_flight = slow_requests(&proxy, &upstream, 16).await;

    proxy.shutdown.cancel();
    // No thread accepts any longer (a socket still open on one would take connections)...
    let addr = proxy.addr;
    eventually(DEADLINE, || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    // ...but every request in flight still gets its answer, on whichever thread.
    upstream.state.release.notify_waiters();
    for request in in_flight {
        let status = tokio::time::timeout(DEADLINE, request)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(status, 200);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn requests_still_running_on_any_thread_at_the_deadline_are_cut() {
    let upstream = FakeUpstream::start().await;
    const GRACE: Duration = Duration::from_secs(1);
    let config = leasehold_proxy::Config {
        threads: 3,
        shutdown_grace: GRACE,
        ..config()
    };
    let proxy = shared_proxy(config, &upstream).await;
    let in_flight = slow_requests(&proxy, &upstream, 9).await;
    // Stops although no request ever finishes.
    proxy.stop().await;
    for request in in_flight {
        let outcome = tokio::time::timeout(DEADLINE, request)
            .await
            .unwrap()
            .unwrap();
        assert!(outcome.is_err(), "a stuck request was not cut");
    }
}

#[tokio::test]
async fn a_listener_bound_without_reuse_port_is_shared_by_the_threads() {
    let upstream = FakeUpstream::start().await;
    let config = leasehold_proxy::Config {
        threads: 3,
        ..config()
    };
    // `Proxy` binds its listener the plain way.
    let proxy = Proxy::with_token(config, &upstream.url()).await;
    for _ in 0..12 {
        let mut connection = proxy.connect().await;
        assert_eq!(get_on(&mut connection, "/write?db=x").await, 204);
    }
    assert_eq!(upstream.seen().len(), 12);
    proxy.stop().await;
}

#[tokio::test]
async fn the_connection_limit_holds_across_threads() {
    let upstream = FakeUpstream::start().await;
    let config = leasehold_proxy::Config {
        threads: 2,
        max_connections: 1,
        ..config()
    };
    let proxy = shared_proxy(config, &upstream).await;
    let request = b"GET /ping HTTP/1.1\r\nhost: localhost\r\n\r\n";
    // The first connection holds the only slot (keep-alive)...
    let mut first = TcpStream::connect(proxy.addr).await.unwrap();
    let answer = send_and_read(&mut first, request).await;
    assert!(answer.starts_with(b"HTTP/1.1 204"));
    // ...so every other one is closed, whichever thread accepts it.
    for _ in 0..6 {
        let mut other = TcpStream::connect(proxy.addr).await.unwrap();
        let answer = send_and_read(&mut other, request).await;
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    }
    let (_, _, metrics) = proxy.get(&proxy.admin_url("/metrics")).await;
    assert!(
        std::str::from_utf8(&metrics)
            .unwrap()
            .contains("leasehold_proxy_connections_rejected_total 6")
    );
    proxy.stop().await;
}

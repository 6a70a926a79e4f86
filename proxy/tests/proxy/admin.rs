//! `/healthz`, `/readyz` and `/metrics`, and the 503 before the first lease.

use leasehold_protocol::AuthScheme;

use crate::support::*;

#[tokio::test]
async fn readiness_follows_the_lease() {
    let upstream = FakeUpstream::start().await;
    let source = FakeSource::new(AuthScheme::Token, &upstream.url(), 2);
    source.set_fail(true);
    let mut proxy = Proxy::start(config(), source.clone()).await;

    // Before the first lease: alive, not ready, and requests fail closed.
    assert_eq!(proxy.get(&proxy.admin_url("/healthz")).await.0, 200);
    assert_eq!(proxy.get(&proxy.admin_url("/readyz")).await.0, 503);
    let (status, headers, body) = proxy.get(&proxy.url("/api/v2/write")).await;
    assert_eq!(status, 503);
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["code"],
        "unavailable"
    );
    assert!(
        upstream.seen().is_empty(),
        "nothing forwarded without a credential"
    );

    // The first lease makes it ready.
    source.set_fail(false);
    tokio::time::timeout(DEADLINE, proxy.running.as_mut().unwrap().ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(proxy.get(&proxy.admin_url("/readyz")).await.0, 200);

    // A lease that lapses without renewal makes it unready again.
    source.set_fail(true);
    eventually(DEADLINE, || async {
        proxy.get(&proxy.admin_url("/readyz")).await.0 == 503
    })
    .await;
    assert_eq!(proxy.get(&proxy.admin_url("/healthz")).await.0, 200);
}

#[tokio::test]
async fn metrics_are_served_as_prometheus_text() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(config(), &upstream.url()).await;
    assert_eq!(proxy.get(&proxy.url("/ping")).await.0, 204);
    assert_eq!(proxy.get(&proxy.url("/status/500")).await.0, 500);
    let (status, headers, body) = proxy.get(&proxy.admin_url("/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = std::str::from_utf8(&body).unwrap();
    for needle in [
        r#"leasehold_proxy_requests_total{code="204"} 1"#,
        r#"leasehold_proxy_requests_total{code="500"} 1"#,
        "leasehold_proxy_upstream_latency_seconds_count 2",
        "leasehold_proxy_upstream_latency_seconds_bucket",
        "leasehold_proxy_lease_expiry_timestamp_seconds",
        "leasehold_proxy_lease_renewals_total 1",
        "leasehold_proxy_lease_renewal_failures_total 0",
        "leasehold_proxy_connections_rejected_total 0",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    assert_eq!(proxy.get(&proxy.admin_url("/nope")).await.0, 404);
}

/// A source that fails the refresher the hard way, as a panicking log write once did.
struct PanickingSource;

impl leasehold_proxy::source::LeaseSource for PanickingSource {
    async fn fetch(
        &mut self,
    ) -> Result<leasehold_protocol::LeaseRecord, leasehold_proxy::source::SourceError> {
        panic!("the refresher dies");
    }
}

#[tokio::test]
async fn a_dead_refresher_fails_the_liveness_probe() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = leasehold_proxy::start(
        config().validate().unwrap(),
        PanickingSource,
        listener,
        admin,
        shutdown.clone(),
    )
    .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<TestBody>();
    let url = format!("http://{admin_addr}/healthz");
    eventually(DEADLINE, || async {
        let response = client.get(url.parse().unwrap()).await.unwrap();
        response.status() == 503
    })
    .await;
    // Shutdown still works with the refresher gone.
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, running.wait())
        .await
        .expect("the proxy stops after shutdown")
        .unwrap();
}

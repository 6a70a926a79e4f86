//! Renewal before expiry, keeping the old credential through failures, failing closed
//! after expiry, recovery, and 401-triggered single-flight renewal.

use std::time::{Duration, SystemTime};

use http::Request;
use leasehold_channel::protocol::AuthScheme;
use tokio::time::Instant;

use crate::support::*;

#[tokio::test]
async fn short_leases_are_renewed_before_they_expire() {
    let upstream = FakeUpstream::start().await;
    let source = FakeSource::new(AuthScheme::Token, &upstream.url(), 2);
    let proxy = Proxy::ready(config(), source.clone()).await;
    let first_expiry = source.last_expires_at().unwrap().to_system();
    assert_eq!(
        read(
            proxy
                .send(Request::get(proxy.url("/ping")).body(empty()).unwrap())
                .await
        )
        .await
        .0,
        204
    );
    assert_eq!(token_of(&upstream.last()), "token-1");

    eventually(Duration::from_secs(5), || async { source.calls() >= 2 }).await;
    assert!(
        SystemTime::now() < first_expiry,
        "renewed only after the first lease expired"
    );
    eventually(Duration::from_secs(5), || async {
        read(
            proxy
                .send(Request::get(proxy.url("/ping")).body(empty()).unwrap())
                .await,
        )
        .await;
        token_of(&upstream.last()) != "token-1"
    })
    .await;
}

#[tokio::test]
async fn failures_keep_the_old_credential_until_expiry_then_503_then_recover() {
    let upstream = FakeUpstream::start().await;
    let source = FakeSource::new(AuthScheme::Token, &upstream.url(), 2);
    let proxy = Proxy::ready(config(), source.clone()).await;
    source.set_fail(true);
    let expires_at = source.last_expires_at().unwrap().to_system();

    // Until it expires, the old credential keeps working; afterwards, 503.
    let started = Instant::now();
    let (headers, body) = loop {
        let (status, headers, body) = proxy.get(&proxy.url("/ping")).await;
        if status == 503 {
            break (headers, body);
        }
        assert_eq!(status, 204);
        assert_eq!(token_of(&upstream.last()), "token-1");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the expired credential was still used"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Not a moment early (the wall-clock expiry, less rounding slack).
    assert!(SystemTime::now() + Duration::from_millis(50) >= expires_at);
    assert!(
        source.calls() >= 3,
        "retried while the old credential lived"
    );
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], "unavailable");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("no valid credential")
    );
    let forwarded = upstream.seen().len();

    // Nothing reaches the upstream while there is no credential.
    assert_eq!(proxy.get(&proxy.url("/ping")).await.0, 503);
    assert_eq!(upstream.seen().len(), forwarded);

    // The source comes back: so does the proxy.
    source.set_fail(false);
    eventually(Duration::from_secs(15), || async {
        proxy.get(&proxy.url("/ping")).await.0 == 204
    })
    .await;
    assert_ne!(token_of(&upstream.last()), "token-1");
}

#[tokio::test]
async fn a_burst_of_401s_triggers_exactly_one_renewal() {
    let upstream = FakeUpstream::start().await;
    let source = FakeSource::new(AuthScheme::Token, &upstream.url(), 300);
    let proxy = std::sync::Arc::new(Proxy::ready(config(), source.clone()).await);
    upstream.reject("Token token-1");
    assert_eq!(source.calls(), 1);

    let burst: Vec<_> = (0..50)
        .map(|_| {
            let proxy = std::sync::Arc::clone(&proxy);
            tokio::spawn(async move { proxy.get(&proxy.url("/api/v2/write?bucket=b")).await.0 })
        })
        .collect();
    let mut unauthorized = 0;
    for request in burst {
        let status = request.await.unwrap();
        assert!(status == 401 || status == 204, "{status}");
        unauthorized += usize::from(status == 401);
    }
    assert!(unauthorized >= 1);
    eventually(Duration::from_secs(5), || async {
        proxy.get(&proxy.url("/ping")).await.0 == 204
    })
    .await;
    assert_eq!(token_of(&upstream.last()), "token-2");
    assert_eq!(source.calls(), 2, "exactly one renewal for the whole burst");
}

//! Renewal before expiry, keeping the old credential through failures, failing closed
//! after expiry, recovery, and 401-triggered single-flight renewal.

use std::time::{Duration, SystemTime};

use http::Request;
use leasehold_protocol::AuthScheme;

use crate::support::*;

#[tokio::test]
async fn short_leases_are_renewed_before_they_expire() {
    let upstream = FakeUpstream::start().await;
    // A 10 s lease (9-10 s at seconds precision) is renewed at 54-66% of its life: over
    // 3 s before expiry, a margin no scheduler delay eats.
    let source = FakeSource::new(AuthScheme::Token, &upstream.url(), 10);
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

    eventually(DEADLINE, || async { source.calls() >= 2 }).await;
    // When the renewal was asked for, not when this test got to look.
    let renewed_at = source.call_times()[1];
    assert!(
        renewed_at < first_expiry,
        "renewed only after the first lease expired"
    );
    eventually(DEADLINE, || async {
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
    // An 8 s lease (7-8 s) is renewed after 3.5-5 s, leaving seconds for retries.
    let source = FakeSource::new(AuthScheme::Token, &upstream.url(), 8);
    // Every renewal fails, from the start: none can slip in before the test looks.
    source.fail_after(1);
    let proxy = Proxy::ready(config(), source.clone()).await;
    let expires_at = source.last_expires_at().unwrap().to_system();

    // Until it expires, the old credential keeps working; afterwards, 503.
    let (headers, body) = loop {
        let asked = SystemTime::now();
        let (status, headers, body) = proxy.get(&proxy.url("/ping")).await;
        if status == 503 {
            break (headers, body);
        }
        assert_eq!(status, 204);
        assert_eq!(token_of(&upstream.last()), "token-1");
        // Served after it was asked for: if that was past expiry (plus the proxy's
        // rounding slack), the expired credential was used.
        assert!(
            asked < expires_at + Duration::from_millis(500),
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
    source.fail_after(usize::MAX);
    eventually(DEADLINE, || async {
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
    eventually(DEADLINE, || async {
        proxy.get(&proxy.url("/ping")).await.0 == 204
    })
    .await;
    assert_eq!(token_of(&upstream.last()), "token-2");
    assert_eq!(source.calls(), 2, "exactly one renewal for the whole burst");
}

//! New InfluxDB 1.x (`Basic`) credentials are sent upstream once before they are
//! installed, so InfluxDB's bcrypt check is not paid by the application's requests.

use leasehold_protocol::AuthScheme;

use crate::support::*;

/// `Basic base64("user{n}:pass{n}")`, as the fake source's `n`-th lease goes out.
fn basic(n: usize) -> String {
    let plain = format!("user{n}:pass{n}");
    format!("Basic {}", data_encoding::BASE64.encode(plain.as_bytes()))
}

#[tokio::test]
async fn each_new_v1_credential_is_warmed_up_before_any_request_uses_it() {
    assert_eq!(basic(1), "Basic dXNlcjE6cGFzczE=");
    let upstream = FakeUpstream::start().await;
    // 5 s leases (4-5 s): renewed about every 3 s, with over a second of margin.
    let source = FakeSource::new(AuthScheme::Basic, &upstream.url(), 5);
    let proxy = Proxy::ready(config(), source.clone()).await;
    // The first lease was warmed up before the proxy became ready.
    let first = upstream.seen();
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(is_warmup(&first[0]), "{first:?}");
    assert_eq!(first[0].authorization.as_deref(), Some(basic(1).as_str()));

    // Keep writing through two renewals.
    eventually(DEADLINE, || async {
        assert_eq!(proxy.get(&proxy.url("/write?db=telemetry")).await.0, 204);
        upstream
            .seen()
            .iter()
            .any(|s| !is_warmup(s) && s.authorization.as_deref() == Some(basic(3).as_str()))
    })
    .await;
    // Every credential's first appearance upstream is its warm-up.
    let seen = upstream.seen();
    for n in 1..=3 {
        let header = basic(n);
        let first = seen
            .iter()
            .find(|s| s.authorization.as_deref() == Some(header.as_str()))
            .unwrap();
        assert!(is_warmup(first), "lease {n}: {first:?}");
        let warmups = seen
            .iter()
            .filter(|s| is_warmup(s) && s.authorization.as_deref() == Some(header.as_str()))
            .count();
        assert_eq!(warmups, 1, "lease {n}");
    }
}

#[tokio::test]
async fn a_refused_warm_up_still_installs_the_credential() {
    let upstream = FakeUpstream::start().await;
    upstream.reject(&basic(1));
    let source = FakeSource::new(AuthScheme::Basic, &upstream.url(), 300);
    let proxy = Proxy::ready(config(), source.clone()).await;
    assert!(is_warmup(&upstream.last()));
    // Installed: the request carries it, and its 401 triggers the usual renewal...
    assert_eq!(proxy.get(&proxy.url("/write?db=telemetry")).await.0, 401);
    assert_eq!(upstream.last().authorization, Some(basic(1)));
    // ...whose credential is warmed up in turn, then used.
    eventually(DEADLINE, || async {
        proxy.get(&proxy.url("/write?db=telemetry")).await.0 == 204
    })
    .await;
    assert_eq!(upstream.last().authorization, Some(basic(2)));
    assert_eq!(source.calls(), 2);
    let seen = upstream.seen();
    let second = seen
        .iter()
        .find(|s| s.authorization == Some(basic(2)))
        .unwrap();
    assert!(is_warmup(second), "{second:?}");
}

#[tokio::test]
async fn v2_tokens_are_not_warmed_up() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(config(), &upstream.url()).await;
    assert!(upstream.seen().is_empty());
    assert_eq!(proxy.get(&proxy.url("/ping")).await.0, 204);
    assert_eq!(upstream.seen().len(), 1);
    assert!(!is_warmup(&upstream.last()));
}

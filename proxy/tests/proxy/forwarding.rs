//! What reaches InfluxDB, and what comes back, for every kind of request.

use http::Request;
use leasehold_protocol::AuthScheme;

use crate::support::*;

#[tokio::test]
async fn method_path_and_query_are_preserved_and_credentials_replaced() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(config(), &upstream.url()).await;

    let request =
        Request::post(proxy.url("/api/v2/write?org=o&u=evil&bucket=b&p=secret&precision=s"))
            .header("authorization", "Token client-supplied")
            .header("content-type", "text/plain; charset=utf-8")
            .body(full("cpu value=1"))
            .unwrap();
    let (status, _, _) = read(proxy.send(request).await).await;
    assert_eq!(status, 204);
    let seen = upstream.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/api/v2/write");
    assert_eq!(seen.query.as_deref(), Some("org=o&bucket=b&precision=s"));
    assert_eq!(seen.authorization.as_deref(), Some("Token token-1"));
    assert_eq!(
        seen.host.as_deref(),
        Some(upstream.addr.to_string().as_str())
    );
    assert_eq!(seen.body_len, "cpu value=1".len());

    // Other methods, and a query without credentials passes byte for byte.
    for method in ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let request = Request::builder()
            .method(method)
            .uri(proxy.url("/query?db=x&q=SELECT%20*%20FROM%20%22m%22&epoch=ms"))
            .body(empty())
            .unwrap();
        let (status, _, _) = read(proxy.send(request).await).await;
        assert_eq!(status, 204, "{method}");
        let seen = upstream.last();
        assert_eq!(seen.method, method);
        assert_eq!(seen.path, "/query");
        assert_eq!(
            seen.query.as_deref(),
            Some("db=x&q=SELECT%20*%20FROM%20%22m%22&epoch=ms")
        );
        assert_eq!(seen.authorization.as_deref(), Some("Token token-1"));
    }

    // Only credentials in the query: the query disappears.
    read(
        proxy
            .send(
                Request::get(proxy.url("/ping?u=a&p=b"))
                    .body(empty())
                    .unwrap(),
            )
            .await,
    )
    .await;
    assert_eq!(upstream.last().query, None);
}

#[tokio::test]
async fn v1_leases_go_out_as_basic_auth() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::ready(
        config(),
        FakeSource::new(AuthScheme::Basic, &upstream.url(), 300),
    )
    .await;
    let request = Request::post(proxy.url("/write?db=telemetry&u=app&p=apppw"))
        .header("authorization", "Basic YXBwOmFwcHB3")
        .body(full("m v=1"))
        .unwrap();
    assert_eq!(read(proxy.send(request).await).await.0, 204);
    let seen = upstream.last();
    // base64("user1:pass1")
    assert_eq!(
        seen.authorization.as_deref(),
        Some("Basic dXNlcjE6cGFzczE=")
    );
    assert_eq!(seen.query.as_deref(), Some("db=telemetry"));
}

#[tokio::test]
async fn a_large_chunked_body_streams_through_intact() {
    const LEN: usize = 8 * 1024 * 1024;
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(config(), &upstream.url()).await;
    let body = http_body_util::BodyExt::boxed(PatternBody::new(LEN, 64 * 1024));
    let request = Request::post(proxy.url("/api/v2/write?bucket=big"))
        .body(body)
        .unwrap();
    assert_eq!(read(proxy.send(request).await).await.0, 204);
    let seen = upstream.last();
    assert_eq!(seen.body_len, LEN);
    assert_eq!(seen.body_hash, PatternBody::hash(LEN));
}

#[tokio::test]
async fn gzip_bodies_pass_untouched_both_ways() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(config(), &upstream.url()).await;
    let request = Request::post(proxy.url("/api/v2/write?bucket=b"))
        .header("content-encoding", "gzip")
        .body(full(GZIP_BODY))
        .unwrap();
    assert_eq!(read(proxy.send(request).await).await.0, 204);
    let seen = upstream.last();
    assert_eq!(seen.content_encoding.as_deref(), Some("gzip"));
    let mut expected = Fnv::default();
    expected.write(GZIP_BODY);
    assert_eq!(
        (seen.body_len, seen.body_hash),
        (GZIP_BODY.len(), expected.0)
    );

    let request = Request::get(proxy.url("/gzip"))
        .header("accept-encoding", "gzip")
        .body(empty())
        .unwrap();
    let (status, headers, body) = read(proxy.send(request).await).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(&body[..], GZIP_BODY);
}

#[tokio::test]
async fn upstream_status_retry_after_and_body_pass_verbatim() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(config(), &upstream.url()).await;
    for code in [400u16, 404, 413, 429, 500, 503] {
        let (status, headers, body) = proxy.get(&proxy.url(&format!("/status/{code}"))).await;
        assert_eq!(status.as_u16(), code);
        assert_eq!(headers["retry-after"], "42");
        assert_eq!(headers["content-type"], "application/json; charset=utf-8");
        assert_eq!(
            body,
            format!(r#"{{"code":"upstream","message":"upstream said {code}"}}"#)
        );
    }
}

#[tokio::test]
async fn an_explicit_upstream_with_a_base_path_overrides_the_lease_endpoint() {
    let upstream = FakeUpstream::start().await;
    let config = leasehold_proxy::Config {
        upstream: Some(format!("{}/influx/", upstream.url())),
        ..config()
    };
    let proxy = Proxy::with_token(config, "http://127.0.0.1:9/not-used").await;
    assert_eq!(
        read(
            proxy
                .send(
                    Request::get(proxy.url("/ping?verbose=true"))
                        .body(empty())
                        .unwrap()
                )
                .await
        )
        .await
        .0,
        204
    );
    let seen = upstream.last();
    assert_eq!(seen.path, "/influx/ping");
    assert_eq!(seen.query.as_deref(), Some("verbose=true"));
}

#[tokio::test]
async fn each_client_connection_keeps_its_own_upstream_connection() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(config(), &upstream.url()).await;
    let mut first = proxy.connect().await;
    let mut second = proxy.connect().await;
    for _ in 0..3 {
        assert_eq!(get_on(&mut first, "/api/v2/write?bucket=a").await, 204);
        assert_eq!(get_on(&mut second, "/api/v2/write?bucket=b").await, 204);
    }
    let seen = upstream.seen();
    let on = |bucket: &str| -> Vec<usize> {
        seen.iter()
            .filter(|s| s.query.as_deref() == Some(bucket))
            .map(|s| s.connection)
            .collect()
    };
    let (a, b) = (on("bucket=a"), on("bucket=b"));
    assert_eq!(a.len(), 3);
    assert!(a.iter().all(|&c| c == a[0]), "{a:?}");
    assert!(b.iter().all(|&c| c == b[0]), "{b:?}");
    assert_ne!(a[0], b[0]);
    assert_eq!(upstream.connections(), 2);
    // Origin form with the upstream's Host, as the pooled client sent it.
    let last = upstream.last();
    assert_eq!(last.path, "/api/v2/write");
    assert_eq!(last.version, http::Version::HTTP_11);
    assert_eq!(
        last.host.as_deref(),
        Some(upstream.addr.to_string().as_str())
    );
}

#[tokio::test]
async fn an_upstream_connection_closed_by_the_upstream_is_replaced() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(config(), &upstream.url()).await;
    let mut client = proxy.connect().await;
    assert_eq!(get_on(&mut client, "/ping").await, 204);
    // The upstream closes after this answer; the client's connection stays open
    // (`Connection` is hop-by-hop) and its next requests go over a new upstream one.
    assert_eq!(get_on(&mut client, "/close").await, 204);
    assert_eq!(get_on(&mut client, "/ping").await, 204);
    assert_eq!(get_on(&mut client, "/ping").await, 204);
    let connections: Vec<usize> = upstream.seen().iter().map(|s| s.connection).collect();
    assert_eq!(connections, [1, 1, 2, 2]);
}

#[tokio::test]
async fn http2_clients_are_served_over_the_pooled_client() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(config(), &upstream.url()).await;
    let h2: hyper_util::client::legacy::Client<_, TestBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    // Concurrent requests on one HTTP/2 connection.
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let request = Request::post(proxy.url(&format!("/api/v2/write?bucket=b{i}")))
                .body(full("cpu value=1"))
                .unwrap();
            let h2 = h2.clone();
            tokio::spawn(async move { read(h2.request(request).await.unwrap()).await.0 })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 204);
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 20);
    for s in &seen {
        assert_eq!(s.version, http::Version::HTTP_11);
        assert_eq!(s.authorization.as_deref(), Some("Token token-1"));
        assert_eq!(s.host.as_deref(), Some(upstream.addr.to_string().as_str()));
        assert_eq!(s.body_len, "cpu value=1".len());
    }
}

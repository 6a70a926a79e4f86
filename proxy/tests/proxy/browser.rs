//! Web pages are kept out: requests with a foreign `Origin`, `Sec-Fetch-Site` or `Host`
//! get 403 and reach nothing; allow-listed origins and hosts work, preflights included;
//! CORS headers from the upstream reach only allow-listed pages.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::support::*;

fn write(proxy: &Proxy, headers: &[(&str, &str)]) -> Request<TestBody> {
    let mut request = Request::post(proxy.url("/write?db=x"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(full("m v=1")).unwrap()
}

async fn assert_forbidden(response: Response<hyper::body::Incoming>, mentions: &str) {
    let (status, headers, body) = read(response).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "forbidden");
    assert!(
        body["message"].as_str().unwrap().contains(mentions),
        "{body}"
    );
}

#[tokio::test]
async fn browser_requests_are_refused_and_nothing_is_written() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(config(), &upstream.url()).await;
    // The HTTP/1 fast path and, through an HTTP/2 client, the pooled path.
    let h2: Client<_, TestBody> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for http2 in [false, true] {
        let send = |request: Request<TestBody>| async {
            if http2 {
                h2.request(request).await.unwrap()
            } else {
                proxy.send(request).await
            }
        };
        let cases: &[&[(&str, &str)]] = &[
            &[("origin", "https://evil.example")],
            &[("origin", "null")],
            &[("sec-fetch-site", "cross-site")],
            &[
                ("sec-fetch-site", "same-site"),
                ("sec-fetch-mode", "no-cors"),
            ],
        ];
        for headers in cases {
            assert_forbidden(send(write(&proxy, headers)).await, "--allow-origin").await;
        }
        // DNS rebinding: the page's own name arrives as Host (HTTP/2: :authority).
        let rebound = Request::post(format!(
            "http://rebind.evil.example:{}/write?db=x",
            proxy.addr.port()
        ))
        .body(full("m v=1"))
        .unwrap();
        let rebound = if http2 {
            // Connect to the proxy, name the attacker's host.
            let (mut parts, body) = rebound.into_parts();
            parts.version = Version::HTTP_2;
            let io = TokioIo::new(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender
                .send_request(Request::from_parts(parts, body))
                .await
                .unwrap()
        } else {
            let mut request = write(&proxy, &[]);
            request
                .headers_mut()
                .insert("host", "rebind.evil.example:8086".parse().unwrap());
            send(request).await
        };
        assert_forbidden(rebound, "--allow-host").await;
        // A preflight from a page that is not allow-listed.
        let preflight = Request::options(proxy.url("/api/v2/write"))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .body(empty())
            .unwrap();
        assert_forbidden(send(preflight).await, "--allow-origin").await;
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());

    // What applications send still works: no Origin, a local Host, a typed URL.
    let (status, _, _) = read(proxy.send(write(&proxy, &[])).await).await;
    assert_eq!(status, 204);
    let typed = write(&proxy, &[("sec-fetch-site", "none")]);
    assert_eq!(read(proxy.send(typed).await).await.0, 204);
    let mut localhost = write(&proxy, &[]);
    localhost.headers_mut().insert(
        "host",
        format!("localhost:{}", proxy.addr.port()).parse().unwrap(),
    );
    assert_eq!(read(proxy.send(localhost).await).await.0, 204);
    assert_eq!(upstream.seen().len(), 3);
}

#[tokio::test]
async fn allow_listed_origins_and_hosts_are_served() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::with_token(
        leasehold_proxy::Config {
            allow_origins: vec!["http://localhost:3000".into()],
            allow_hosts: vec!["influx-sidecar".into()],
            ..config()
        },
        &upstream.url(),
    )
    .await;
    let page = ("origin", "http://localhost:3000");

    let preflight = Request::options(proxy.url("/api/v2/write"))
        .header(page.0, page.1)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .body(empty())
        .unwrap();
    let (status, headers, _) = read(proxy.send(preflight).await).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert_eq!(headers["access-control-allow-headers"], "content-type");
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        upstream.seen().is_empty(),
        "preflights are answered by the proxy"
    );

    let (status, headers, _) = read(proxy.send(write(&proxy, &[page])).await).await;
    assert_eq!(status, 204);
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert_eq!(
        upstream.last().authorization.as_deref(),
        Some("Token token-1")
    );

    let mut by_name = write(&proxy, &[]);
    by_name
        .headers_mut()
        .insert("host", "Influx-Sidecar:8086".parse().unwrap());
    assert_eq!(read(proxy.send(by_name).await).await.0, 204);
    assert_eq!(upstream.seen().len(), 2);
}

/// An upstream that grants CORS to everyone, as InfluxDB 1.x does.
async fn cors_granting_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let origin = request
                        .headers()
                        .get("origin")
                        .cloned()
                        .unwrap_or_else(|| "*".parse().unwrap());
                    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                    let headers = response.headers_mut();
                    headers.insert("access-control-allow-origin", origin);
                    headers.insert("access-control-allow-credentials", "true".parse().unwrap());
                    headers.insert("x-influxdb-version", "1.8.10".parse().unwrap());
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn upstream_cors_headers_reach_only_allow_listed_pages() {
    let upstream = cors_granting_upstream().await;
    let proxy = Proxy::with_token(
        leasehold_proxy::Config {
            allow_origins: vec!["http://localhost:3000".into()],
            ..config()
        },
        &upstream,
    )
    .await;
    let (status, headers, _) = proxy.get(&proxy.url("/query?q=show")).await;
    assert_eq!(status, 200);
    assert!(
        !headers
            .keys()
            .any(|k| k.as_str().starts_with("access-control-")),
        "{headers:?}"
    );
    assert_eq!(headers["x-influxdb-version"], "1.8.10");

    let request = Request::get(proxy.url("/query?q=show"))
        .header("origin", "http://localhost:3000")
        .body(empty())
        .unwrap();
    let (status, headers, _) = read(proxy.send(request).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
}

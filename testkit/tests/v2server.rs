//! The InfluxDB v2 test server against its contract, over real HTTP with reqwest.

use std::io::Write;
use std::time::Duration;

use leasehold_testkit::v2server::{V2Options, V2Server};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

fn client() -> Client {
    Client::new()
}

async fn body(resp: Response) -> Value {
    resp.json().await.expect("JSON body")
}

async fn create(server: &V2Server, request: Value) -> Response {
    client()
        .post(format!("{}/api/v2/authorizations", server.url()))
        .header("Authorization", format!("Token {}", server.admin_token()))
        .json(&request)
        .send()
        .await
        .expect("POST")
}

/// Creates an authorization and returns `(id, token)`.
async fn lease(server: &V2Server, permissions: Value) -> (String, String) {
    let resp = create(
        server,
        json!({"orgID": server.org_id(), "description": "lease test", "permissions": permissions}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let auth = body(resp).await;
    (
        auth["id"].as_str().expect("id").to_owned(),
        auth["token"].as_str().expect("token").to_owned(),
    )
}

async fn write(server: &V2Server, token: Option<&str>, bucket: &str, lines: &str) -> Response {
    let mut req = client()
        .post(format!("{}/api/v2/write", server.url()))
        .query(&[
            ("org", server.org_name()),
            ("bucket", bucket),
            ("precision", "s"),
        ])
        .body(lines.to_owned());
    if let Some(token) = token {
        req = req.header("Authorization", format!("Token {token}"));
    }
    req.send().await.expect("write")
}

fn write_buckets() -> Value {
    json!([{"action": "write", "resource": {"type": "buckets"}}])
}

fn is_id(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test]
async fn create_answers_201_with_token_and_16_hex_id() {
    let server = V2Server::start_default().await.expect("start");
    let resp = create(
        &server,
        json!({"orgID": server.org_id(), "description": "lease_1700000000_abc",
               "permissions": [{"action": "write", "resource": {"type": "buckets", "name": "metrics"}}]}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let auth = body(resp).await;
    let id = auth["id"].as_str().expect("id");
    assert!(is_id(id), "{id}");
    let token = auth["token"].as_str().expect("token");
    assert_eq!(token.len(), 88);
    assert!(token.ends_with("=="));
    assert_eq!(auth["status"], "active");
    assert_eq!(auth["description"], "lease_1700000000_abc");
    assert_eq!(auth["orgID"], server.org_id());
    assert_eq!(auth["org"], server.org_name());
    assert_eq!(
        auth["links"]["self"],
        format!("/api/v2/authorizations/{id}")
    );
    assert!(auth["createdAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    let resource = &auth["permissions"][0]["resource"];
    assert_eq!(resource["type"], "buckets");
    assert_eq!(resource["name"], "metrics");
    assert_eq!(resource["orgID"], server.org_id());

    let seen = server.authorizations();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].id, id);
    assert_eq!(seen[0].token, token);
    assert!(
        !format!("{:?}", seen[0]).contains(token),
        "Debug must redact the token"
    );
    assert_eq!(server.authorization_count(), 1);
}

#[tokio::test]
async fn management_needs_the_admin_token() {
    let server = V2Server::start_default().await.expect("start");
    let url = format!("{}/api/v2/authorizations", server.url());
    let request = json!({"orgID": server.org_id(), "permissions": write_buckets()});
    for auth in [None, Some("Token wrong"), Some("Basic Zm9vOmJhcg==")] {
        let mut req = client().post(&url).json(&request);
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        let resp = req.send().await.expect("POST");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            body(resp).await,
            json!({"code": "unauthorized", "message": "unauthorized access"})
        );
    }
    // `Bearer` is accepted too.
    let resp = client()
        .post(&url)
        .header("Authorization", format!("Bearer {}", server.admin_token()))
        .json(&request)
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), StatusCode::CREATED);
    // A leased write token cannot manage authorizations.
    let (_, token) = lease(&server, write_buckets()).await;
    let resp = client()
        .get(&url)
        .header("Authorization", format!("Token {token}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn get_shows_the_token_redacted() {
    let server = V2Server::start_default().await.expect("start");
    let (id, token) = lease(&server, write_buckets()).await;
    let admin = format!("Token {}", server.admin_token());

    let resp = client()
        .get(format!("{}/api/v2/authorizations", server.url()))
        .query(&[("orgID", server.org_id())])
        .header("Authorization", &admin)
        .send()
        .await
        .expect("list");
    assert_eq!(resp.status(), StatusCode::OK);
    let list = body(resp).await;
    assert_eq!(list["links"]["self"], "/api/v2/authorizations");
    let auths = list["authorizations"].as_array().expect("array");
    // The operator's authorization is listed too, as on a real server.
    assert_eq!(auths.len(), 2);
    let ids: Vec<&str> = auths.iter().filter_map(|a| a["id"].as_str()).collect();
    assert!(ids.contains(&id.as_str()));
    assert_eq!(server.operator_authorization_id().as_deref(), Some(ids[0]));
    assert!(auths.iter().all(|a| a["token"] == "redacted"));
    assert!(!list.to_string().contains(&token));

    let other = client()
        .get(format!(
            "{}/api/v2/authorizations?orgID=fedcba9876543210",
            server.url()
        ))
        .header("Authorization", &admin)
        .send()
        .await
        .expect("list");
    assert_eq!(body(other).await["authorizations"], json!([]));

    let one = client()
        .get(format!("{}/api/v2/authorizations/{id}", server.url()))
        .header("Authorization", &admin)
        .send()
        .await
        .expect("get");
    assert_eq!(one.status(), StatusCode::OK);
    let one = body(one).await;
    assert_eq!(one["id"], id.as_str());
    assert_eq!(one["token"], "redacted");

    let missing = client()
        .get(format!(
            "{}/api/v2/authorizations/0123456789abcdef",
            server.url()
        ))
        .header("Authorization", &admin)
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        body(missing).await,
        json!({"code": "not found", "message": "authorization not found"})
    );

    let bad = client()
        .get(format!("{}/api/v2/authorizations/nope", server.url()))
        .header("Authorization", &admin)
        .send()
        .await
        .expect("get");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body(bad).await,
        json!({"code": "invalid", "message": "id must have a length of 16 bytes"})
    );
}

#[tokio::test]
async fn invalid_create_requests_answer_400_and_create_nothing() {
    let server = V2Server::start_default().await.expect("start");
    let org = server.org_id().to_owned();
    let malformed = client()
        .post(format!("{}/api/v2/authorizations", server.url()))
        .header("Authorization", format!("Token {}", server.admin_token()))
        .body("{not json")
        .send()
        .await
        .expect("POST");
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body(malformed).await,
        json!({"code": "invalid", "message": "invalid json structure"})
    );

    let cases = [
        json!({"orgID": org, "permissions": []}),
        json!({"orgID": org, "permissions": [{"action": "own", "resource": {"type": "buckets"}}]}),
        json!({"orgID": org, "permissions": [{"action": "read", "resource": {"type": "cows"}}]}),
        json!({"permissions": write_buckets()}),
        json!({"orgID": "fedcba9876543210", "permissions": write_buckets()}),
        json!({"orgID": org, "permissions": [
            {"action": "write", "resource": {"type": "buckets", "orgID": "fedcba9876543210"}}]}),
        json!({"orgID": org, "permissions": write_buckets(), "status": "sleeping"}),
    ];
    for case in cases {
        let resp = create(&server, case.clone()).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{case}");
        let err = body(resp).await;
        assert_eq!(err["code"], "invalid", "{case}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let mismatch = create(
        &server,
        json!({"orgID": org, "permissions": [
            {"action": "write", "resource": {"type": "buckets", "orgID": "fedcba9876543210"}}]}),
    )
    .await;
    assert_eq!(
        body(mismatch).await["message"],
        format!("permission write:orgs/fedcba9876543210/buckets is not for org id {org}")
    );
    assert_eq!(server.authorization_count(), 0);
}

#[tokio::test]
async fn writes_check_the_token_and_its_permissions() {
    let server = V2Server::start_default().await.expect("start");
    let (write_id, writer) = lease(&server, write_buckets()).await;
    let (_, reader) = lease(
        &server,
        json!([{"action": "read", "resource": {"type": "buckets"}}]),
    )
    .await;
    let (_, scoped) = lease(
        &server,
        json!([{"action": "write", "resource": {"type": "buckets", "name": "only"}}]),
    )
    .await;

    let ok = write(
        &server,
        Some(&writer),
        "metrics",
        "# c\ncpu v=1 1\n\nmem v=2 2\n",
    )
    .await;
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.point_count("metrics"), 2);
    let points = server.points();
    assert_eq!(points[0].authorization_id, write_id);
    assert_eq!(points[0].line, "cpu v=1 1");
    assert_eq!(points[0].precision.as_deref(), Some("s"));

    let none = write(&server, None, "metrics", "cpu v=1").await;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body(none).await["code"], "unauthorized");
    let unknown = write(&server, Some("not-a-token"), "metrics", "cpu v=1").await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);

    let read_only = write(&server, Some(&reader), "metrics", "cpu v=1").await;
    assert_eq!(read_only.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        body(read_only).await,
        json!({"code": "forbidden", "message": "insufficient permissions for write"})
    );

    assert_eq!(
        write(&server, Some(&scoped), "only", "cpu v=1")
            .await
            .status(),
        204
    );
    assert_eq!(
        write(&server, Some(&scoped), "metrics", "cpu v=1")
            .await
            .status(),
        403
    );

    let wrong_org = client()
        .post(format!(
            "{}/api/v2/write?org=elsewhere&bucket=metrics",
            server.url()
        ))
        .header("Authorization", format!("Token {writer}"))
        .body("cpu v=1")
        .send()
        .await
        .expect("write");
    assert_eq!(wrong_org.status(), StatusCode::BAD_REQUEST);
    let malformed = write(&server, Some(&writer), "metrics", "cpu v=1\nbroken\n").await;
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let empty = write(&server, Some(&writer), "metrics", "").await;
    assert_eq!(body(empty).await["message"], "writing requires points");
    assert_eq!(
        server.point_count("metrics"),
        2,
        "rejected batches record nothing"
    );

    // PATCH to inactive: writes are refused with 403.
    let patched = client()
        .patch(format!("{}/api/v2/authorizations/{write_id}", server.url()))
        .header("Authorization", format!("Token {}", server.admin_token()))
        .json(&json!({"status": "inactive"}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(body(patched).await["status"], "inactive");
    assert_eq!(
        write(&server, Some(&writer), "metrics", "cpu v=1")
            .await
            .status(),
        403
    );
}

#[tokio::test]
async fn gzip_and_v1_writes_are_counted() {
    let server = V2Server::start_default().await.expect("start");
    let (_, token) = lease(&server, write_buckets()).await;

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"cpu,host=a v=1 1\ncpu,host=b v=2 2\ncpu,host=c v=3 3\n")
        .expect("gzip");
    let resp = client()
        .post(format!(
            "{}/api/v2/write?org={}&bucket=gz",
            server.url(),
            server.org_id()
        ))
        .header("Authorization", format!("Token {token}"))
        .header("Content-Encoding", "gzip")
        .body(gz.finish().expect("gzip"))
        .send()
        .await
        .expect("write");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.point_count("gz"), 3);

    let bad_gzip = client()
        .post(format!("{}/api/v2/write?bucket=gz", server.url()))
        .header("Authorization", format!("Token {token}"))
        .header("Content-Encoding", "gzip")
        .body("plain text")
        .send()
        .await
        .expect("write");
    assert_eq!(bad_gzip.status(), StatusCode::BAD_REQUEST);

    // v1 compatibility: Basic auth (password = token), then u/p query parameters.
    let basic = client()
        .post(format!("{}/write?db=telegraf", server.url()))
        .basic_auth("anyone", Some(&token))
        .body("cpu v=1")
        .send()
        .await
        .expect("v1 write");
    assert_eq!(basic.status(), StatusCode::NO_CONTENT);
    let query = client()
        .post(format!("{}/write", server.url()))
        .query(&[
            ("db", "telegraf"),
            ("rp", "weekly"),
            ("u", "x"),
            ("p", token.as_str()),
        ])
        .body("cpu v=1\ncpu v=2")
        .send()
        .await
        .expect("v1 write");
    assert_eq!(query.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.point_count("telegraf"), 1);
    assert_eq!(server.point_count("telegraf/weekly"), 2);
    let anonymous = client()
        .post(format!("{}/write?db=telegraf", server.url()))
        .body("cpu v=1")
        .send()
        .await
        .expect("v1 write");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn delete_answers_204_then_404_and_kills_the_token() {
    let server = V2Server::start_default().await.expect("start");
    let (id, token) = lease(&server, write_buckets()).await;
    let url = format!("{}/api/v2/authorizations/{id}", server.url());
    let admin = format!("Token {}", server.admin_token());
    let first = client()
        .delete(&url)
        .header("Authorization", &admin)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    let second = client()
        .delete(&url)
        .header("Authorization", &admin)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(second.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        body(second).await,
        json!({"code": "not found", "message": "authorization not found"})
    );
    assert_eq!(server.authorization_count(), 0);
    assert_eq!(
        write(&server, Some(&token), "metrics", "cpu v=1")
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn seeded_authorizations_are_listed_but_not_leases() {
    let server = V2Server::start(V2Options {
        admin_token: "operator-token".into(),
        org_id: "00000000000000aa".into(),
        org_name: "acme".into(),
    })
    .await
    .expect("start");
    let seeded = server.insert_authorization(
        "telegraf (not a lease)",
        json!([{"action": "write", "resource": {"type": "buckets", "name": "telegraf"}}]),
    );
    assert!(is_id(&seeded.id));
    assert_eq!(seeded.org_id, "00000000000000aa");
    assert_eq!(
        seeded.permissions[0]["resource"]["orgID"],
        "00000000000000aa"
    );
    assert_eq!(server.authorization_count(), 1);
    let list = client()
        .get(format!("{}/api/v2/authorizations?org=acme", server.url()))
        .header("Authorization", "Token operator-token")
        .send()
        .await
        .expect("list");
    let list = body(list).await;
    let descriptions: Vec<&str> = list["authorizations"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|a| a["description"].as_str())
        .collect();
    assert_eq!(descriptions, ["admin's Token", "telegraf (not a lease)"]);
    assert_eq!(
        write(&server, Some(&seeded.token), "telegraf", "cpu v=1")
            .await
            .status(),
        204
    );
}

#[tokio::test]
async fn injected_failures_answer_503_then_recover() {
    let server = V2Server::start_default().await.expect("start");
    // Counted, not timed: exactly the next two requests fail, however slow they are.
    server.fail_next(2);
    let resp = client()
        .get(format!("{}/ping", server.url()))
        .send()
        .await
        .expect("ping");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(body(resp).await["code"], "unavailable");
    let during = create(
        &server,
        json!({"orgID": server.org_id(), "permissions": write_buckets()}),
    )
    .await;
    assert_eq!(during.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(server.authorization_count(), 0);

    let ping = client()
        .get(format!("{}/ping", server.url()))
        .send()
        .await
        .expect("ping");
    assert_eq!(ping.status(), StatusCode::NO_CONTENT);
    assert!(ping.headers().contains_key("x-influxdb-version"));

    server.set_failing(true);
    let health = client()
        .get(format!("{}/health", server.url()))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    server.set_failing(false);
    let health = client()
        .get(format!("{}/health", server.url()))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), StatusCode::OK);
    let health = body(health).await;
    assert_eq!(
        (health["name"].clone(), health["status"].clone()),
        (json!("influxdb"), json!("pass"))
    );

    // A timed window fails until it ends or `set_failing(false)` ends it early.
    server.fail_for(Duration::from_secs(600));
    let ping = |server: &V2Server| client().get(format!("{}/ping", server.url())).send();
    assert_eq!(ping(&server).await.expect("ping").status(), 503);
    server.set_failing(false);
    assert_eq!(ping(&server).await.expect("ping").status(), 204);
    assert_eq!(server.requests_seen(), 7);
}

#[tokio::test]
async fn unknown_paths_and_methods_use_error_bodies() {
    let server = V2Server::start_default().await.expect("start");
    let missing = client()
        .get(format!("{}/api/v2/nothing", server.url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(missing).await["code"], "not found");
    let wrong = client()
        .get(format!("{}/api/v2/write", server.url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn stop_and_drop_end_the_server() {
    let server = V2Server::start_default().await.expect("start");
    let url = server.url();
    // A kept-alive connection must not keep the server alive.
    let keep = client();
    assert_eq!(
        keep.get(format!("{url}/ping"))
            .send()
            .await
            .expect("ping")
            .status(),
        204
    );
    server.stop().await;
    assert!(client().get(format!("{url}/ping")).send().await.is_err());

    let dropped = V2Server::start_default().await.expect("start");
    let url = dropped.url();
    drop(dropped);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(client().get(format!("{url}/ping")).send().await.is_err());
}

//! The sidecar end to end: real `leasehold control` and `leasehold proxy` processes in
//! front of a real InfluxDB 1.x (and the v2 test server), driven the way applications
//! drive them — plain, unauthenticated InfluxDB requests to localhost.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::python::{official_v2_client_writes, run_python};
use common::setup::{start_influxd, v1_control_with_app};
use common::{ControlProcess, EVENT_DEADLINE, Env};
use leasehold_testkit::influxd::Influxd;

/// A serving control with the v1 add-on (WRITE on telemetry) and an enrolled `app`.
async fn setup() -> (Influxd, Env, ControlProcess) {
    let db = start_influxd().await;
    db.create_database("other").await.unwrap();
    let (env, control) =
        v1_control_with_app(&db, &[r#"WRITE ON "telemetry""#, r#"READ ON "telemetry""#]);
    (db, env, control)
}

async fn lease_users(db: &Influxd) -> usize {
    db.show_users()
        .await
        .unwrap()
        .iter()
        .filter(|(n, _)| n.starts_with("leasehold_"))
        .count()
}

async fn write(client: &reqwest::Client, url: &str) -> reqwest::Response {
    client
        .post(url)
        .body("cpu,host=a v=1\n")
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_writes_land_and_client_credentials_are_replaced() {
    let (db, env, _control) = setup().await;
    let proxy = env.proxy("app", &[]);
    proxy.wait_ready().await;
    let client = reqwest::Client::new();
    let url = format!("{}/write?db=telemetry", proxy.url());
    assert_eq!(write(&client, &url).await.status(), 204);
    // Bogus credentials would be refused by InfluxDB (401) if they were passed on.
    let bogus = client
        .post(&url)
        .header("Authorization", "Basic Ym9ndXM6Ym9ndXM=")
        .body("cpu,host=b v=1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(bogus.status(), 204);
    let with_up = client
        .post(format!("{url}&u=bogus&p=bogus"))
        .body("cpu,host=c v=1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(with_up.status(), 204);
    assert_eq!(db.count("telemetry", "cpu").await.unwrap(), 3);
    // Reads go through too, and InfluxDB's own errors pass through verbatim.
    let query = client
        .get(format!(
            "{}/query?db=telemetry&q=SELECT%20count(*)%20FROM%20cpu",
            proxy.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), 200);
    let denied = write(&client, &format!("{}/write?db=other", proxy.url())).await;
    assert_eq!(denied.status(), 403, "the lease grants only telemetry");
    assert!(denied.text().await.unwrap().contains("error"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_under_load_loses_nothing() {
    let (db, env, _control) = setup().await;
    // A 5 s lease lives 4-5 s (seconds precision) and is renewed at ~60%: a rotation
    // every ~3 s, with over a second of margin for a renewal on a loaded machine.
    let proxy = env.proxy("app", &["--ttl", "5s"]);
    proxy.wait_ready().await;
    let url = Arc::new(format!("{}/write?db=telemetry&precision=n", proxy.url()));
    let ok = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let writers: Vec<_> = (0..4u64)
        .map(|writer| {
            let (url, ok) = (url.clone(), ok.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut failures = Vec::new();
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    seq += 1;
                    let line = format!(
                        "load,writer={writer} seq={seq}i {}\n",
                        1_600_000_000_000_000_000 + writer * 1_000_000_000_000 + seq
                    );
                    let response = client.post(url.as_str()).body(line).send().await.unwrap();
                    if response.status() == 204 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.push((
                            response.status().as_u16(),
                            response.text().await.unwrap_or_default(),
                        ));
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for writer in writers {
        failures.extend(writer.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} non-204 answers, first: {:?}",
        failures.len(),
        failures.first()
    );
    let sent = ok.load(Ordering::Relaxed);
    assert!(sent > 100, "only {sent} writes in 30 s");
    assert_eq!(
        db.count("telemetry", "load").await.unwrap(),
        sent,
        "every 204 is a point in InfluxDB"
    );
    let renewals = proxy.log().matches("lease installed").count();
    assert!(
        renewals >= 4,
        "expected a rotation every ~3 s, saw {renewals}:\n{}",
        proxy.log()
    );
    // Old lease users go: soon at most the current one and one not yet expired remain,
    // and once the proxy stops, all of them go at expiry.
    let deadline = Instant::now() + EVENT_DEADLINE;
    while lease_users(&db).await > 2 {
        assert!(Instant::now() < deadline, "old lease users linger");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = proxy.stop();
    assert!(status.success(), "the proxy exits 0 on SIGTERM: {status}");
    let deadline = Instant::now() + EVENT_DEADLINE;
    while lease_users(&db).await > 0 {
        assert!(
            Instant::now() < deadline,
            "lease users outlived their leases"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn control_outage_serves_until_expiry_then_503_then_recovers() {
    let (_db, env, control) = setup().await;
    // A 10 s lease lives 9-10 s and is renewed at 54-66% of that, so over 3 s of it
    // remain whenever the control dies: time for writes to land on the live lease.
    let proxy = env.proxy("app", &["--ttl", "10s"]);
    proxy.wait_ready().await;
    let client = reqwest::Client::new();
    let url = format!("{}/write?db=telemetry", proxy.url());
    control.kill9();
    let killed = Instant::now();
    let mut first_503 = None;
    let mut served_after_kill = 0;
    while first_503.is_none() {
        assert!(killed.elapsed() < EVENT_DEADLINE, "never fell back to 503");
        let response = write(&client, &url).await;
        match response.status().as_u16() {
            204 => served_after_kill += 1,
            503 => {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .expect("Retry-After on 503");
                assert!(retry_after.to_str().unwrap().parse::<u64>().unwrap() >= 1);
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["code"], "unavailable");
                first_503 = Some(killed.elapsed());
            }
            other => panic!("unexpected {other} during the control outage (never 401)"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        served_after_kill > 0,
        "the live lease kept serving (503 after {:?})",
        first_503
    );
    assert_eq!(
        proxy.admin_status("/readyz").await,
        503,
        "not ready after expiry without renewal"
    );
    assert_eq!(proxy.admin_status("/healthz").await, 200);

    let _control = env.serve();
    let back = Instant::now();
    loop {
        let status = write(&client, &url).await.status().as_u16();
        if status == 204 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            back.elapsed() < EVENT_DEADLINE,
            "did not recover after the control came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(proxy.admin_status("/readyz").await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn not_ready_before_the_first_lease_and_metrics_are_prometheus_text() {
    let (_db, env, control) = setup().await;
    control.kill9();
    let proxy = env.proxy("app", &[]);
    assert_eq!(proxy.admin_status("/readyz").await, 503);
    let early = reqwest::Client::new()
        .post(format!("{}/write?db=telemetry", proxy.url()))
        .body("cpu v=1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), 503);
    let _control = env.serve();
    proxy.wait_ready().await;
    let client = reqwest::Client::new();
    assert_eq!(
        write(&client, &format!("{}/write?db=telemetry", proxy.url()))
            .await
            .status(),
        204
    );

    let metrics = reqwest::get(proxy.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    check_prometheus_text(&metrics);
    for name in [
        "leasehold_proxy_requests_total",
        "leasehold_proxy_upstream_latency_seconds",
        "leasehold_proxy_lease_expiry_timestamp_seconds",
        "leasehold_proxy_lease_renewals_total",
        "leasehold_proxy_lease_renewal_failures_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    assert!(
        metrics.contains(r#"leasehold_proxy_requests_total{code="204"} 1"#),
        "{metrics}"
    );
}

/// Checks every line is a comment or `name{labels} value`, the exposition format.
fn check_prometheus_text(text: &str) {
    assert!(!text.is_empty());
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value: {line}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name.chars().next().unwrap().is_ascii_alphabetic()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels: {line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_fails_fast_and_recovers() {
    let (mut db, env, _control) = setup().await;
    let proxy = env.proxy("app", &["--ttl", "60s"]);
    proxy.wait_ready().await;
    let client = reqwest::Client::new();
    let url = format!("{}/write?db=telemetry", proxy.url());
    assert_eq!(write(&client, &url).await.status(), 204);
    db.stop().await.unwrap();
    // An answer, not a hang (the client's own timeout is the generous bound).
    let guarded = reqwest::Client::builder()
        .timeout(EVENT_DEADLINE)
        .build()
        .unwrap();
    let status = write(&guarded, &url).await.status().as_u16();
    assert!(matches!(status, 502 | 503), "got {status}");
    db.start_again().await.unwrap();
    let back = Instant::now();
    while write(&client, &url).await.status() != 204 {
        assert!(back.elapsed() < EVENT_DEADLINE, "did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn official_v1_python_client_writes_through_the_proxy_without_credentials() {
    let (db, env, _control) = setup().await;
    let proxy = env.proxy("app", &[]);
    proxy.wait_ready().await;
    let python = tokio::task::spawn_blocking(move || {
        run_python(
            "v1_client_write.py",
            &["127.0.0.1", &proxy.port.to_string(), "telemetry"],
        );
        proxy
    });
    let _proxy = python.await.unwrap();
    assert_eq!(db.count("telemetry", "python_v1").await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn official_v2_python_client_writes_through_the_proxy_without_a_token() {
    let v2 = leasehold_testkit::v2server::V2Server::start_default()
        .await
        .unwrap();
    let mut env = Env::new();
    env.init_control();
    let _control = env.serve();
    env.configure_v2(&v2, &[]);
    env.enrolled_identity("app", &[]);
    let proxy = env.proxy("app", &[]);
    proxy.wait_ready().await;
    official_v2_client_writes(&v2, proxy.url()).await;
    drop(proxy);
}

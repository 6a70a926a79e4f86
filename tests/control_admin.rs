//! The control's admin listener (`control serve --admin-listen`): `/readyz` is not ready
//! until an add-on is configured, `/metrics` counts what the control did (revocations
//! owed while InfluxDB is down among it), and `leasehold health --url` probes it.

mod common;

use std::net::SocketAddr;

use common::setup::eventually;
use common::{EVENT_DEADLINE, Env};
use leasehold_testkit::v2server::V2Server;

/// `GET http://addr/path`: status and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The value of the sample `series` (name and labels as rendered) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_addon_and_metrics_count_leases() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.init_control();
    let (_control, addrs) = env.serve_reporting("info", &[]);
    let admin = addrs["admin"];
    assert!(admin.ip().is_loopback(), "{addrs:?}");

    assert_eq!(get(admin, "/healthz").await.0, 200);
    let (status, body) = get(admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no InfluxDB add-on"), "{body}");
    let readyz = format!("http://{admin}/readyz");
    let (code, stderr) = env.fails(&["health", "--url", &readyz]);
    assert_eq!(code, 1, "{stderr}");

    env.configure_v2(&v2, &["--max-ttl", "900"]);
    let (status, body) = get(admin, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    env.ok(&["health", "--url", &readyz]);

    env.enrolled_identity("app", &[]);
    let lease = env.json(&["lease", "create", "--identity", "app"]);
    let id = lease["id"].as_str().unwrap();
    let (code, stderr) = env.fails(&["lease", "create", "--identity", "app", "--ttl", "1h"]);
    assert_eq!(code, 1, "{stderr}");
    env.ok(&["lease", "revoke", id, "--identity", "app"]);

    let (status, text) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    for (series, at_least) in [
        ("leasehold_control_leases_issued_total", 1.0),
        (
            r#"leasehold_control_leases_refused_total{reason="bad_request"}"#,
            1.0,
        ),
        ("leasehold_control_revocations_done_total", 1.0),
        (
            r#"leasehold_control_handshakes_total{outcome="ok"}"#,
            // addon configure, ticket create, enroll, two creates, revoke
            6.0,
        ),
        (
            r#"leasehold_control_backend_latency_seconds_count{op="create"}"#,
            1.0,
        ),
        (
            r#"leasehold_control_backend_latency_seconds_count{op="revoke"}"#,
            1.0,
        ),
        (
            // The intent, recorded under the member's cap.
            r#"leasehold_control_store_latency_seconds_count{op="reserve_lease"}"#,
            1.0,
        ),
        (
            // Issued, then removed.
            r#"leasehold_control_store_latency_seconds_count{op="put_lease"}"#,
            2.0,
        ),
    ] {
        let value = sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
        assert!(value >= at_least, "{series} = {value}:\n{text}");
    }
    assert_eq!(
        sample(&text, "leasehold_control_revocations_owed"),
        Some(0.0),
        "{text}"
    );
    // InfluxDB down: a revocation is owed (the backlog) and its attempts fail, until
    // InfluxDB is back.
    let lease = env.json(&["lease", "create", "--identity", "app"]);
    v2.set_failing(true);
    env.ok(&[
        "lease",
        "revoke",
        lease["id"].as_str().unwrap(),
        "--identity",
        "app",
    ]);
    eventually(
        EVENT_DEADLINE,
        "a revocation owed and failing",
        async || {
            let text = get(admin, "/metrics").await.1;
            sample(&text, "leasehold_control_revocations_owed") == Some(1.0)
                && sample(
                    &text,
                    r#"leasehold_control_revocations_failed_total{reason="influxdb"}"#,
                )
                .is_some_and(|n| n >= 1.0)
        },
    )
    .await;
    v2.set_failing(false);
    eventually(EVENT_DEADLINE, "the backlog to clear", async || {
        let text = get(admin, "/metrics").await.1;
        sample(&text, "leasehold_control_revocations_owed") == Some(0.0)
            && sample(&text, "leasehold_control_revocations_done_total") == Some(2.0)
    })
    .await;

    // The CLI's channels are closed once each command exits.
    eventually(EVENT_DEADLINE, "the CLI's channels to close", async || {
        let text = get(admin, "/metrics").await.1;
        sample(&text, "leasehold_control_channels_open") == Some(0.0)
    })
    .await;
}

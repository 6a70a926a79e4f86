//! On SIGTERM the proxy revokes the leases it holds once its requests drained, so a
//! scaled-down sidecar leaves no live credential behind in InfluxDB.

mod common;

use common::setup::{lease_users, start_influxd, v1_control_with_app};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_revokes_the_lease_the_proxy_holds() {
    let db = start_influxd().await;
    let (env, _control) = v1_control_with_app(&db, &[r#"WRITE ON "telemetry""#]);

    let proxy = env.proxy("app", &[]);
    proxy.wait_ready().await;
    let held = lease_users(&db).await;
    assert_eq!(held.len(), 1, "{held:?}");
    // The lease works through the proxy before shutdown.
    let written = reqwest::Client::new()
        .post(format!("{}/write?db=telemetry", proxy.url()))
        .body("m v=1")
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 204);

    let status = proxy.stop();
    assert!(status.success(), "the proxy exited with {status}");
    assert_eq!(
        lease_users(&db).await,
        Vec::<String>::new(),
        "the lease user outlived the proxy"
    );
    let leases = env.json(&["lease", "list"]);
    let text = leases.to_string();
    assert!(text.contains("revoked"), "{text}");
}

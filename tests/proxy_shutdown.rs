//! On SIGTERM the proxy revokes the leases it holds once its requests drained, so a
//! scaled-down sidecar leaves no live credential behind in InfluxDB.

mod common;

use common::Env;
use leasehold_testkit::influxd::Influxd;

async fn lease_users(db: &Influxd) -> Vec<String> {
    db.show_users()
        .await
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("leasehold_"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_revokes_the_lease_the_proxy_holds() {
    let db = Influxd::start()
        .await
        .expect("a real influxd (Debian package influxdb) is required");
    let mut env = Env::new();
    env.init_control();
    let _control = env.serve();
    env.configure_v1(&db, &[r#"WRITE ON "telemetry""#]);
    env.enrolled_identity("app", &[]);

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

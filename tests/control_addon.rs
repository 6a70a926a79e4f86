//! Configuring the add-on: re-pointing it at another InfluxDB still revokes every lease
//! where it was issued, with the credential that issued it (two real `influxd`
//! servers), and settings that cannot work are refused and change nothing.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::setup::{eventually, lease_users, start_influxd, write_v2};
use common::{Env, WRITE_BUCKETS, v2_addon_args};
use leasehold_testkit::v2server::V2Server;
use serde_json::Value;

const WRITE_TELEMETRY: &str = r#"WRITE ON "telemetry""#;

/// A v1 lease for `app`: the record, its user and its password.
fn lease(env: &Env, ttl: &str) -> (Value, String, String) {
    let lease = env.json(&["lease", "create", "--identity", "app", "--ttl", ttl]);
    let (user, password) = lease["token"].as_str().unwrap().split_once(':').unwrap();
    (lease.clone(), user.to_owned(), password.to_owned())
}

/// The earlier add-on configurations the control keeps, checked to be private.
fn kept_configurations(data_dir: &Path) -> Vec<String> {
    let dir = data_dir.join("addons");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} mode {mode:o}", dir.display());
    entries
        .map(|entry| {
            let path = entry.unwrap().path();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} mode {mode:o}", path.display());
            std::fs::read_to_string(&path).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_is_revoked_where_it_was_issued_after_the_addon_is_re_pointed() {
    let (a, b) = (start_influxd().await, start_influxd().await);
    let mut env = Env::new();
    env.init_control();
    let control = env.serve();
    env.configure_v1(&a, &[WRITE_TELEMETRY]);
    env.enrolled_identity("app", &[]);

    // Two leases on A: one left to expire, one revoked by hand later. Seconds-precision
    // expiry: a 20 s lease lives 19-20 s, far longer than re-pointing and a restart.
    let (expiring, user, password) = lease(&env, "20s");
    let (revoked, revoked_user, revoked_password) = lease(&env, "10m");
    assert_eq!(expiring["endpoint_url"], a.url());
    assert_eq!(
        a.write("telemetry", "m v=1\n", &user, &password)
            .await
            .unwrap(),
        204
    );

    // Re-point the add-on at B, then crash: the earlier configuration must survive both.
    env.configure_v1(&b, &[WRITE_TELEMETRY]);
    // An expired credential of ours on A that the store knows nothing of (as after a
    // lost store): only a sweep of A, the earlier configuration's server, removes it.
    let stray = "leasehold_1_0123456789abcdef";
    a.query(&format!("CREATE USER {stray} WITH PASSWORD 'x'"))
        .await
        .unwrap();
    control.kill9();
    let control = env.serve();
    eventually(
        Duration::from_secs(30),
        "the sweep of A to remove the stray credential",
        async || !lease_users(&a).await.iter().any(|u| u == stray),
    )
    .await;
    let kept = kept_configurations(&env.data_dir());
    assert_eq!(kept.len(), 1, "the configuration for A is kept");
    assert!(kept[0].contains(a.url()), "{}", kept[0]);

    // New leases come from B.
    let (on_b, b_user, b_password) = lease(&env, "10m");
    assert_eq!(on_b["endpoint_url"], b.url());
    assert!(lease_users(&b).await.contains(&b_user));
    assert!(!lease_users(&a).await.contains(&b_user));

    // A lease revoked by hand is dropped on A at once, not looked for on B.
    env.revoke_as_app(&revoked);
    assert!(!lease_users(&a).await.contains(&revoked_user));
    assert_eq!(
        a.write("telemetry", "m v=2\n", &revoked_user, &revoked_password)
            .await
            .unwrap(),
        401
    );

    // The expiring lease's user on A is dropped at expiry by the restarted control,
    // and its credential stops working there.
    eventually(
        Duration::from_secs(60),
        "the lease user on A to be dropped at expiry",
        async || !lease_users(&a).await.contains(&user),
    )
    .await;
    assert_eq!(
        a.write("telemetry", "m v=3\n", &user, &password)
            .await
            .unwrap(),
        401,
        "the old credential still works on A"
    );
    // The control logs the removal once it has recorded it, just after InfluxDB
    // dropped the user: wait for the line rather than race it.
    let removed = expiring["id"].as_str().unwrap();
    eventually(
        Duration::from_secs(30),
        "the restarted control to log the removal",
        async || {
            control
                .log()
                .lines()
                .any(|l| l.contains("removed from InfluxDB") && l.contains(removed))
        },
    )
    .await;
    assert!(
        lease_users(&a).await.is_empty(),
        "nothing of ours is left on A"
    );

    // Owed nothing any more, the configuration for A is dropped; B is untouched.
    // The file goes first, the log line just after: wait for both.
    eventually(
        Duration::from_secs(30),
        "the configuration for A to be dropped",
        async || {
            kept_configurations(&env.data_dir()).is_empty()
                && control
                    .log()
                    .contains("earlier add-on configuration dropped")
        },
    )
    .await;
    assert_eq!(
        b.write("telemetry", "m v=4\n", &b_user, &b_password)
            .await
            .unwrap(),
        204
    );
    let statuses = env.json(&["lease", "list"]);
    let status = |id: &Value| {
        statuses
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == *id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status(&expiring["id"]), "expired");
    assert_eq!(status(&revoked["id"]), "revoked");
    assert_eq!(status(&on_b["id"]), "active");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_token_that_is_not_a_header_value_is_refused_and_changes_nothing() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.init_control();
    let _control = env.serve();
    env.configure_v2(&v2, &[]);
    let addon_json = env.data_dir().join("addon.json");
    let before = std::fs::read(&addon_json).unwrap();

    let url = v2.url();
    for bad in [
        "tok\nen-secret-part",
        "tok\u{1b}en-secret-part",
        "tök-secret-part",
        "two secret-part",
    ] {
        env.set_env("INFLUXDB_ADMIN_TOKEN", bad);
        let (code, stderr) = env.fails(&v2_addon_args(&url, v2.org_id(), WRITE_BUCKETS));
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("not a valid header value"), "{stderr}");
        assert!(
            !stderr.contains("secret-part"),
            "the token was echoed: {stderr}"
        );
        assert_eq!(
            std::fs::read(&addon_json).unwrap(),
            before,
            "nothing changed"
        );
    }

    // The add-on configured before still issues working leases.
    env.enrolled_identity("app", &[]);
    env.json(&["lease", "create", "--identity", "app"]);
    assert_eq!(v2.authorization_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v2_authorization_is_deleted_on_the_server_that_issued_it() {
    let a = V2Server::start_default().await.unwrap();
    let b = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.init_control();
    let _control = env.serve();
    env.configure_v2(&a, &[]);
    env.enrolled_identity("app", &[]);
    let revoked = env.json(&["lease", "create", "--identity", "app", "--ttl", "10m"]);
    let expiring = env.json(&["lease", "create", "--identity", "app", "--ttl", "4s"]);
    let token = expiring["token"].as_str().unwrap();
    assert_eq!(a.authorization_count(), 2);
    assert_eq!(write_v2(&a, token).await, 204);

    // B answers 404 for A's authorizations: were revocations sent there, they would
    // count as done while A kept the credentials.
    env.configure_v2(&b, &[]);
    env.revoke_as_app(&revoked);
    assert_eq!(a.authorization_count(), 1, "revoked on A at once");
    common::wait_until(
        Duration::from_secs(30),
        "the expiring authorization to be deleted on A",
        || a.authorization_count() == 0,
    );
    assert_eq!(write_v2(&a, token).await, 401);
    assert_eq!(b.authorization_count(), 0);
    common::wait_until(
        Duration::from_secs(30),
        "the configuration for A to be dropped",
        || kept_configurations(&env.data_dir()).is_empty(),
    );
}

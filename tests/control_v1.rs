//! The InfluxDB 1.x backend against a real `influxd`: leases are dynamic users with
//! exactly the configured grants, dropped at expiry, on revoke, after crashes, after a
//! lost store, and after InfluxDB itself was down.

mod common;

use common::setup::{eventually, lease_users, start_influxd, v1_control_with_app};
use common::{EVENT_DEADLINE, Env, time, wait_until};
use leasehold_testkit::influxd::Influxd;
use serde_json::Value;

/// A database whose name needs quoting and escaping in InfluxQL.
const ODD_DB: &str = "we\"ird db";

async fn influxd() -> Influxd {
    let db = start_influxd().await;
    db.create_database(ODD_DB).await.unwrap();
    db.create_database("other").await.unwrap();
    db
}

/// A serving control with the v1 add-on configured: WRITE on telemetry, READ on ODD_DB.
fn configured(db: &Influxd) -> (Env, common::ControlProcess) {
    let (env, control) =
        v1_control_with_app(db, &[r#"WRITE ON "telemetry""#, r#"READ ON "we\"ird db""#]);
    (env, control)
}

fn lease(env: &Env, ttl: Option<&str>) -> (Value, String, String) {
    let mut args = vec!["lease", "create", "--identity", "app"];
    if let Some(ttl) = ttl {
        args.extend_from_slice(&["--ttl", ttl]);
    }
    let lease = env.json(&args);
    assert_eq!(lease["auth_scheme"], "basic");
    let (user, password) = lease["token"].as_str().unwrap().split_once(':').unwrap();
    (lease.clone(), user.to_owned(), password.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_is_a_user_with_exactly_the_configured_grants() {
    let db = influxd().await;
    let (env, _control) = configured(&db);
    let (_, user, password) = lease(&env, None);

    let users = db.show_users().await.unwrap();
    assert!(
        users.contains(&(user.clone(), false)),
        "{users:?}: the lease user exists and is not admin"
    );
    let mut grants = db.show_grants(&user).await.unwrap();
    grants.sort();
    assert_eq!(
        grants,
        vec![
            ("telemetry".to_owned(), "WRITE".to_owned()),
            (ODD_DB.to_owned(), "READ".to_owned())
        ]
    );

    let point = "cpu,host=a usage=1\n";
    assert_eq!(
        db.write("telemetry", point, &user, &password)
            .await
            .unwrap(),
        204
    );
    assert_eq!(db.count("telemetry", "cpu").await.unwrap(), 1);
    assert_eq!(
        db.write("other", point, &user, &password).await.unwrap(),
        403
    );
    assert_eq!(
        db.write(ODD_DB, point, &user, &password).await.unwrap(),
        403,
        "read-only there"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_user_is_dropped_and_revoke_drops_at_once() {
    let db = influxd().await;
    let (env, _control) = configured(&db);
    // A 6 s lease lives 5-6 s: room for the write below (a bcrypt check on a loaded
    // machine) to land before expiry.
    let (_, user, password) = lease(&env, Some("6s"));
    assert_eq!(
        db.write("telemetry", "m v=1\n", &user, &password)
            .await
            .unwrap(),
        204
    );
    eventually(EVENT_DEADLINE, "the lease user to be dropped", async || {
        lease_users(&db).await.is_empty()
    })
    .await;
    assert_eq!(
        db.write("telemetry", "m v=2\n", &user, &password)
            .await
            .unwrap(),
        401
    );

    let (lease, user, password) = lease(&env, None);
    env.revoke_as_app(&lease);
    assert!(
        lease_users(&db).await.is_empty(),
        "revoke drops the user at once"
    );
    assert_eq!(
        db.write("telemetry", "m v=3\n", &user, &password)
            .await
            .unwrap(),
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_lease_user_outlives_a_crash_or_a_lost_store() {
    let db = influxd().await;
    let (env, control) = configured(&db);
    db.query(r#"CREATE USER "telegraf" WITH PASSWORD 'x'"#)
        .await
        .unwrap();
    db.query(r#"CREATE USER "leasehold_notours" WITH PASSWORD 'x'"#)
        .await
        .unwrap();
    lease(&env, Some("2s"));
    lease(&env, Some("3s"));
    control.kill9();
    let control = env.serve();
    eventually(EVENT_DEADLINE, "leases revoked after restart", async || {
        lease_users(&db).await.len() == 1
    })
    .await;

    // Now lose the store as well.
    // Seconds-precision expiry: a 6 s lease lives 5-6 s, with margin to outlive the kill.
    let (first, _, _) = lease(&env, Some("6s"));
    let (last, _, _) = lease(&env, Some("6s"));
    control.kill9();
    std::fs::remove_file(env.data_dir().join("store.redb")).unwrap();
    let expired = time(&first["expires_at"]).max(time(&last["expires_at"]));
    wait_until(EVENT_DEADLINE, "the leases' expiry", || {
        std::time::SystemTime::now() > expired
    });
    assert_eq!(lease_users(&db).await.len(), 3);
    let _control = env.serve();
    eventually(
        EVENT_DEADLINE,
        "the sweep to drop expired lease users",
        async || lease_users(&db).await == vec!["leasehold_notours".to_owned()],
    )
    .await;
    let users: Vec<String> = db
        .show_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.0)
        .collect();
    assert!(
        users.contains(&"telegraf".to_owned()) && users.contains(&db.admin_user().to_owned()),
        "{users:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_retries_while_influxdb_is_stopped() {
    let mut db = influxd().await;
    let (env, control) = configured(&db);
    lease(&env, Some("2s"));
    db.stop().await.unwrap();
    wait_until(EVENT_DEADLINE, "a failed attempt", || {
        control.log().contains("revocation failed; retrying")
    });
    db.start_again().await.unwrap();
    eventually(EVENT_DEADLINE, "the retried revocation", async || {
        lease_users(&db).await.is_empty()
    })
    .await;
}

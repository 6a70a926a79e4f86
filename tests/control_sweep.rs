//! The sweep for expired credentials of ours that the store does not know (a lost
//! store, a crash between creating and recording): when the add-on is configured, and
//! periodically (`control serve --sweep-interval`); and a credential already deleted
//! out of band ends its lease without a retry loop.

mod common;

use std::time::SystemTime;

use common::{EVENT_DEADLINE, Env, WRITE_BUCKETS, time, wait_until};
use leasehold_testkit::v2server::V2Server;
use serde_json::Value;

/// A serving control (with `serve_flags`) and the v2 add-on configured; `app` enrolled.
fn setup(v2: &V2Server, serve_flags: &[&str]) -> (Env, common::ControlProcess) {
    let mut env = Env::new();
    env.init_control();
    let control = env.serve_with("info", serve_flags);
    env.configure_v2(v2, &[]);
    env.enrolled_identity("app", &[]);
    (env, control)
}

/// Creates a `ttl` lease, and beside its credential a stray copy carrying the same
/// description: ours by its marks, expiring with it, but unknown to the store, so only a
/// sweep can remove it. Returns (lease, stray authorization id).
fn lease_with_stray_copy(env: &Env, v2: &V2Server, ttl: &str) -> (Value, String) {
    let lease = env.json(&["lease", "create", "--identity", "app", "--ttl", ttl]);
    let token = lease["token"].as_str().unwrap();
    let real = v2
        .authorizations()
        .into_iter()
        .find(|a| a.token == token)
        .expect("the lease's authorization");
    let stray = v2.insert_authorization(
        &real.description,
        serde_json::from_str(WRITE_BUCKETS).unwrap(),
    );
    (lease, stray.id)
}

/// Waits until `lease` has expired and its own credential is gone (the revocation).
fn wait_for_revocation(v2: &V2Server, lease: &Value) {
    let expires = time(&lease["expires_at"]);
    let token = lease["token"].as_str().unwrap().to_owned();
    wait_until(EVENT_DEADLINE, "the lease's revocation at expiry", || {
        SystemTime::now() > expires && v2.authorizations().iter().all(|a| a.token != token)
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn configuring_the_addon_sweeps() {
    let v2 = V2Server::start_default().await.unwrap();
    // No periodic sweep within the test: only configuring can remove the stray.
    let (mut env, _control) = setup(&v2, &["--sweep-interval", "1h"]);
    let (lease, stray) = lease_with_stray_copy(&env, &v2, "2s");
    wait_for_revocation(&v2, &lease);
    assert!(
        v2.authorization(&stray).is_some(),
        "nothing has swept yet: the stray outlives its expiry"
    );
    env.configure_v2(&v2, &[]);
    wait_until(EVENT_DEADLINE, "the sweep on configure", || {
        v2.authorization(&stray).is_none()
    });
    assert_eq!(v2.authorization_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_periodic_sweep_runs_at_the_configured_interval() {
    let v2 = V2Server::start_default().await.unwrap();
    // At debug level the control logs each sweep ("sweep done").
    let mut env = Env::new();
    env.init_control();
    let control = env.serve_with("debug", &["--sweep-interval", "1s"]);
    env.configure_v2(&v2, &[]);
    env.enrolled_identity("app", &[]);
    let foreign = v2.insert_authorization("telegraf", serde_json::from_str(WRITE_BUCKETS).unwrap());
    let (lease, stray) = lease_with_stray_copy(&env, &v2, "2s");
    // The start-up and configure sweeps ran before the stray existed: a later sweep,
    // on the interval, removes it once expired.
    wait_until(EVENT_DEADLINE, "a periodic sweep", || {
        v2.authorization(&stray).is_none()
    });
    assert!(
        SystemTime::now() > time(&lease["expires_at"]),
        "not before expiry"
    );
    // Logged just after the deletion: wait for the line rather than race it.
    wait_until(EVENT_DEADLINE, "the sweep to log the removal", || {
        control.log().contains("swept expired lease credential")
    });
    assert!(v2.authorization(&foreign.id).is_some(), "never others'");
    // The interval is the one asked for: sweeps keep coming, many more than the
    // start-up and configure sweeps (at the default 60 s this would take minutes).
    wait_until(EVENT_DEADLINE, "more periodic sweeps", || {
        control.log().matches("sweep done").count() >= 6
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credential_already_gone_ends_its_lease_without_retrying() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, control) = setup(&v2, &[]);
    let lease = env.json(&["lease", "create", "--identity", "app", "--ttl", "2s"]);
    let id = lease["id"].as_str().unwrap();
    let auth = v2
        .authorizations()
        .into_iter()
        .find(|a| Some(a.token.as_str()) == lease["token"].as_str())
        .unwrap();
    // An operator deletes it by hand before it expires.
    let deleted = reqwest::Client::new()
        .delete(format!("{}/api/v2/authorizations/{}", v2.url(), auth.id))
        .header("Authorization", format!("Token {}", v2.admin_token()))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    wait_until(EVENT_DEADLINE, "the lease to end at expiry", || {
        control
            .log()
            .contains("lease credential removed from InfluxDB")
    });
    let log = control.log();
    assert!(log.contains(id), "{log}");
    assert!(
        !log.contains("revocation failed"),
        "already gone counts as done:\n{log}"
    );
    assert_eq!(
        env.json(&["lease", "show", id, "--identity", "app"])["status"],
        "expired"
    );
}

//! The control plane end to end against the InfluxDB v2 test server: the DESIGN.md
//! walk-through, expiry, revocation, crashes, outages, tickets and hostile clients.

mod common;

use std::io::Write;
use std::time::{Duration, SystemTime};

use common::setup::write_v2;
use common::{EVENT_DEADLINE, Env, WRITE_BUCKETS, time, wait_until};
use leasehold_testkit::v2server::V2Server;
use serde_json::Value;

/// An initialized, serving control with the v2 add-on configured.
fn configured(v2: &V2Server, extra: &[&str]) -> (Env, common::ControlProcess) {
    let mut env = Env::new();
    env.init_control();
    let control = env.serve();
    env.configure_v2(v2, extra);
    (env, control)
}

fn lease_create(env: &Env, identity: &str, ttl: Option<&str>) -> Value {
    let mut args = vec!["lease", "create", "--identity", identity];
    if let Some(ttl) = ttl {
        args.extend_from_slice(&["--ttl", ttl]);
    }
    env.json(&args)
}

#[tokio::test(flavor = "multi_thread")]
async fn walkthrough_issues_a_working_token_with_the_default_ttl() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, _control) = configured(&v2, &["--default-ttl", "120", "--max-ttl", "900"]);
    env.enrolled_identity("iot-sensor", &["service=iot-sensor"]);

    let lease = lease_create(&env, "iot-sensor", None);
    let token = lease["token"].as_str().unwrap();
    assert_eq!(lease["status"], "active");
    let ttl = time(&lease["expires_at"])
        .duration_since(time(&lease["created_at"]))
        .unwrap();
    assert_eq!(ttl, Duration::from_secs(120));

    // The token is a real authorization, ours by its description, and it writes.
    let auth = v2
        .authorizations()
        .into_iter()
        .find(|a| a.token == token)
        .expect("authorization exists");
    assert!(auth.description.starts_with(&format!(
        "leasehold lease {}",
        lease["id"].as_str().unwrap()
    )));
    assert_eq!(write_v2(&v2, token).await, 204);
    assert_eq!(v2.point_count("telemetry"), 1);

    // Piped plain output is the bare token, for TOKEN=$(leasehold lease create).
    let piped = env.ok(&["lease", "create", "--identity", "iot-sensor"]);
    let piped = piped.trim();
    assert!(!piped.contains(' ') && !piped.is_empty());
    assert_eq!(write_v2(&v2, piped).await, 204);

    // A TTL above the max is refused by the control (not clamped): exit code 1, with a
    // reason.
    let (code, stderr) = env.fails(&["lease", "create", "--identity", "iot-sensor", "--ttl", "1h"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("exceeds the maximum of 900s"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_lease_is_deleted_after_expiry_and_revoke_is_immediate() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, _control) = configured(&v2, &[]);
    env.enrolled_identity("app", &[]);

    let lease = lease_create(&env, "app", Some("3s"));
    let id = lease["id"].as_str().unwrap().to_owned();
    let expires = time(&lease["expires_at"]);
    // Never before expiry: whenever the authorization is seen gone, expiry has passed
    // (count first, clock second, so a slow scheduler cannot fake a pass or a fail).
    wait_until(EVENT_DEADLINE, "the expired authorization to go", || {
        let gone = v2.authorization_count() == 0;
        assert!(
            !gone || SystemTime::now() >= expires,
            "deleted before its expiry"
        );
        gone
    });
    assert_eq!(
        env.json(&["lease", "show", &id, "--identity", "app"])["status"],
        "expired"
    );

    let lease = lease_create(&env, "app", None);
    let id = lease["id"].as_str().unwrap();
    assert_eq!(v2.authorization_count(), 1);
    let revoked = env.json(&["lease", "revoke", id, "--identity", "app"]);
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(v2.authorization_count(), 0, "revoke deletes at once");
    assert_eq!(write_v2(&v2, lease["token"].as_str().unwrap()).await, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_survive_kill_9_and_are_revoked_after_restart() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, control) = configured(&v2, &[]);
    env.enrolled_identity("app", &[]);
    // Long enough to outlive the kill on a slow machine; whether they expire before
    // or after the restart, only the restarted control can remove them.
    for _ in 0..3 {
        lease_create(&env, "app", Some("8s"));
    }
    control.kill9();
    assert_eq!(v2.authorization_count(), 3, "nobody revoked them yet");
    let _control = env.serve();
    wait_until(EVENT_DEADLINE, "all leases revoked after restart", || {
        v2.authorization_count() == 0
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_sweep_removes_expired_credentials_even_without_the_store() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, control) = configured(&v2, &[]);
    env.enrolled_identity("app", &[]);
    // Seconds-precision expiry: a 6 s lease lives 5-6 s, with margin to outlive the
    // kill on a slow machine.
    let first = lease_create(&env, "app", Some("6s"));
    let last = lease_create(&env, "app", Some("6s"));
    let foreign = v2.insert_authorization("telegraf", serde_json::from_str(WRITE_BUCKETS).unwrap());
    control.kill9();
    assert_eq!(v2.authorization_count(), 3, "the kill came before expiry");
    std::fs::remove_file(env.data_dir().join("store.redb")).unwrap();
    let expired = time(&first["expires_at"]).max(time(&last["expires_at"]));
    wait_until(EVENT_DEADLINE, "the leases' expiry", || {
        SystemTime::now() > expired
    });
    assert_eq!(v2.authorization_count(), 3);
    let control = env.serve();
    wait_until(EVENT_DEADLINE, "the sweep to remove expired leases", || {
        v2.authorization_count() == 1
    });
    assert!(
        v2.authorization(&foreign.id).is_some(),
        "the sweep never touches credentials that are not ours"
    );
    drop(control);
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_is_retried_while_influxdb_is_down() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, control) = configured(&v2, &[]);
    env.enrolled_identity("app", &[]);
    lease_create(&env, "app", Some("2s"));
    // Down until the test says otherwise: no clock decides when InfluxDB is back.
    v2.set_failing(true);
    wait_until(EVENT_DEADLINE, "a failed revocation attempt", || {
        control.log().contains("revocation failed; retrying")
    });
    assert_eq!(v2.authorization_count(), 1, "InfluxDB is down: still there");
    // Still retrying, not given up: a second failed attempt follows.
    wait_until(EVENT_DEADLINE, "a second failed attempt", || {
        control.log().matches("revocation failed; retrying").count() >= 2
    });
    assert_eq!(v2.authorization_count(), 1);
    v2.set_failing(false);
    wait_until(EVENT_DEADLINE, "the retried revocation", || {
        v2.authorization_count() == 0
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn tickets_are_single_use_expire_and_race_safely() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, _control) = configured(&v2, &[]);
    for name in ["a", "b", "c", "d", "e"] {
        env.ok(&["identity", "create", name]);
    }
    let ticket = env.ticket(&["service=x"], &[]);
    let ticket = ticket.to_str().unwrap();
    env.ok(&["enroll", ticket, "--identity", "a"]);
    let (_, stderr) = env.fails(&["enroll", ticket, "--identity", "b"]);
    assert!(stderr.contains("ticket refused"), "{stderr}");

    let short = env.ticket(&[], &["--expires-in", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let (_, stderr) = env.fails(&["enroll", short.to_str().unwrap(), "--identity", "b"]);
    assert!(stderr.contains("ticket refused"), "{stderr}");

    // Two identities race for one use: exactly one wins.
    let race = env.ticket(&[], &[]);
    let race = race.to_str().unwrap();
    let (c, d) = std::thread::scope(|s| {
        let c = s.spawn(|| env.run(&["enroll", race, "--identity", "c"]));
        let d = s.spawn(|| env.run(&["enroll", race, "--identity", "d"]));
        (c.join().unwrap(), d.join().unwrap())
    });
    assert_eq!(c.status.success() as u8 + d.status.success() as u8, 1);
    let members = env.json(&["member", "list"]);
    assert_eq!(
        members.as_array().unwrap().len(),
        3,
        "admin, a and one of c/d"
    );

    // Garbage tickets are refused clearly, as usage errors.
    let bad = env.home().join("bad.ticket");
    std::fs::write(&bad, "not a ticket").unwrap();
    let (code, stderr) = env.fails(&["enroll", bad.to_str().unwrap(), "--identity", "e"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a leasehold ticket"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn non_members_and_deleted_members_cannot_lease() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, _control) = configured(&v2, &[]);
    env.enrolled_identity("app", &[]);
    env.enrolled_identity("other", &[]);

    // An identity that copies a member's enrollment file but holds another key.
    env.ok(&["identity", "create", "stranger"]);
    let enrollments = env.home().join("enrollments");
    std::fs::copy(
        enrollments.join("app.json"),
        enrollments.join("stranger.json"),
    )
    .unwrap();
    let (_, stderr) = env.fails(&["lease", "create", "--identity", "stranger"]);
    assert!(stderr.contains("not an enrolled member"), "{stderr}");

    // Members see only their own leases; admins see all; members cannot administer.
    let mine = lease_create(&env, "app", None);
    lease_create(&env, "other", None);
    assert_eq!(
        env.json(&["lease", "list", "--identity", "app"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(env.json(&["lease", "list"]).as_array().unwrap().len(), 2);
    let (_, stderr) = env.fails(&[
        "lease",
        "show",
        mine["id"].as_str().unwrap(),
        "--identity",
        "other",
    ]);
    assert!(stderr.contains("not found"), "{stderr}");
    let (_, stderr) = env.fails(&["member", "list", "--identity", "app"]);
    assert!(stderr.contains("admin only"), "{stderr}");

    // Deleting the member revokes its live lease and refuses new ones.
    let app_id = env.json(&["identity", "show", "app"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(v2.authorization_count(), 2);
    env.ok(&["member", "delete", &app_id]);
    assert_eq!(v2.authorization_count(), 1);
    let (_, stderr) = env.fails(&["lease", "create", "--identity", "app"]);
    assert!(stderr.contains("not an enrolled member"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_permissions_are_refused_with_the_field_named_and_change_nothing() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, _control) = configured(&v2, &["--default-ttl", "60"]);
    let url = v2.url();
    let bad = r#"[{"action":"write","resource":{"type":"bukkits"}}]"#;
    let (code, stderr) = env.fails(&common::v2_addon_args(&url, v2.org_id(), bad));
    assert_eq!(code, 2);
    assert!(stderr.contains("permissions[0].resource.type"), "{stderr}");
    let (code, stderr) = env.fails(&[
        "policy",
        "set",
        "--match",
        "service=x",
        "--permissions",
        "[{]",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not valid JSON"), "{stderr}");
    env.enrolled_identity("app", &[]);
    let lease = lease_create(&env, "app", None);
    let ttl = time(&lease["expires_at"])
        .duration_since(time(&lease["created_at"]))
        .unwrap();
    assert_eq!(
        ttl,
        Duration::from_secs(60),
        "the earlier settings still apply"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_pick_permissions_and_ttls_by_attribute() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, _control) = configured(&v2, &[]);
    let read_only = r#"[{"action":"read","resource":{"type":"buckets"}}]"#;
    env.ok(&[
        "policy",
        "set",
        "--match",
        "service=dashboard",
        "--permissions",
        read_only,
        "--max-ttl",
        "30",
        "--default-ttl",
        "20",
    ]);
    assert_eq!(env.json(&["policy", "list"]).as_array().unwrap().len(), 1);
    env.enrolled_identity("dash", &["service=dashboard"]);
    let lease = lease_create(&env, "dash", None);
    let ttl = time(&lease["expires_at"])
        .duration_since(time(&lease["created_at"]))
        .unwrap();
    assert_eq!(ttl, Duration::from_secs(20));
    assert_eq!(
        write_v2(&v2, lease["token"].as_str().unwrap()).await,
        403,
        "read-only by policy"
    );
    env.ok(&["policy", "delete", "service=dashboard"]);
    let lease = lease_create(&env, "dash", None);
    assert_eq!(
        write_v2(&v2, lease["token"].as_str().unwrap()).await,
        204,
        "back to the add-on default"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_connections_do_not_stop_the_control_serving_others() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, control) = configured(&v2, &[]);
    env.enrolled_identity("app", &[]);
    let addr = ("127.0.0.1", env.control_port);
    // Garbage, an oversized length prefix, a truncated handshake, and silent clients.
    let mut garbage = std::net::TcpStream::connect(addr).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut huge = std::net::TcpStream::connect(addr).unwrap();
    huge.write_all(&[0xff; 4]).unwrap();
    let mut truncated = std::net::TcpStream::connect(addr).unwrap();
    truncated.write_all(&[0, 0, 0, 96, 1, 2, 3]).unwrap();
    let silent: Vec<_> = (0..50)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    for _ in 0..3 {
        lease_create(&env, "app", None);
    }
    assert_eq!(
        env.json(&["lease", "list", "--identity", "app"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
    drop((garbage, huge, truncated, silent));
    assert!(control.log().contains("control serving"));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_appears_in_the_control_output_even_at_trace() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.init_control();
    let control = env.serve_with_log_level("trace");
    env.set_env("RUST_LOG", "trace");
    env.configure_v2(&v2, &[]);
    env.ok(&["identity", "create", "app"]);
    let ticket_path = env.ticket(&[], &[]);
    let ticket = std::fs::read_to_string(&ticket_path).unwrap();
    let secret = ticket
        .trim()
        .split('@')
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    env.ok(&["enroll", ticket_path.to_str().unwrap(), "--identity", "app"]);
    let lease = lease_create(&env, "app", Some("2s"));
    let token = lease["token"].as_str().unwrap().to_owned();
    wait_until(EVENT_DEADLINE, "expiry", || v2.authorization_count() == 0);
    let log = control.log();
    assert!(log.contains("lease issued"), "trace logging is on");
    for (what, secret) in [
        ("admin token", v2.admin_token()),
        ("lease token", token.as_str()),
        ("ticket secret", secret.as_str()),
    ] {
        assert!(
            !log.contains(secret),
            "the {what} leaked into the control's log"
        );
    }
}

//! `addon configure` checks its settings against InfluxDB before installing them: a
//! wrong admin credential, an unreachable server or the wrong InfluxDB generation is
//! refused with exit 1 and changes nothing; `--skip-verify` installs anyway. A private
//! CA travels with the add-on (`--ca-file`), and TLS failures are named. Revocations
//! that InfluxDB keeps refusing with 401 are logged at ERROR and counted.

mod common;

use std::time::Duration;

use common::setup::start_influxd;
use common::{Env, WRITE_BUCKETS, v2_addon_args, wait_until};
use leasehold_testkit::influxd::Influxd;
use leasehold_testkit::tls::TestCa;
use leasehold_testkit::v2server::V2Server;

const WRITE_TELEMETRY: &str = r#"WRITE ON "telemetry""#;

fn v1_args<'a>(url: &'a str, user: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "addon",
        "configure",
        "influxdb-v1",
        "--endpoint-url",
        url,
        "--username",
        user,
        "--privileges",
        WRITE_TELEMETRY,
    ];
    args.extend_from_slice(extra);
    args
}

/// The add-on file, or `None` when no add-on was ever configured.
fn addon_file(env: &Env) -> Option<Vec<u8>> {
    std::fs::read(env.data_dir().join("addon.json")).ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_admin_password_is_refused_and_skip_verify_installs_anyway() {
    let db = start_influxd().await;
    let mut env = Env::new();
    env.init_control();
    let _control = env.serve();

    env.set_env("INFLUXDB_ADMIN_PASSWORD", "not-the-password");
    let (code, stderr) = env.fails(&v1_args(db.url(), db.admin_user(), &[]));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("refused the admin credential") && stderr.contains("401"),
        "{stderr}"
    );
    assert!(stderr.contains(db.url()), "names the endpoint: {stderr}");
    assert!(stderr.contains("--skip-verify"), "{stderr}");
    assert!(!stderr.contains("not-the-password"), "{stderr}");
    assert_eq!(addon_file(&env), None, "nothing changed");

    // A user that exists but is no admin is refused as well: `SHOW USERS` needs admin.
    db.query("CREATE USER reader WITH PASSWORD 'reader-pw'")
        .await
        .unwrap();
    env.set_env("INFLUXDB_ADMIN_PASSWORD", "reader-pw");
    let (code, stderr) = env.fails(&v1_args(db.url(), "reader", &[]));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("admin"), "{stderr}");
    assert_eq!(addon_file(&env), None, "nothing changed");

    // The rare case: install without the check.
    env.set_env("INFLUXDB_ADMIN_PASSWORD", "not-the-password");
    let out = env.ok(&v1_args(db.url(), db.admin_user(), &["--skip-verify"]));
    assert!(out.contains("--skip-verify"), "{out}");
    assert!(addon_file(&env).is_some());

    // The right password passes and says what it found.
    env.set_env("INFLUXDB_ADMIN_PASSWORD", db.admin_password());
    let summary = env.json(&v1_args(db.url(), db.admin_user(), &[]));
    let version = summary["verified_version"].as_str().unwrap();
    assert!(version.starts_with("1."), "{summary}");
}

#[test]
fn an_unreachable_server_is_refused() {
    let mut env = Env::new();
    env.init_control();
    let _control = env.serve();
    // A port that was free a moment ago: nothing listens there.
    let url = format!("http://127.0.0.1:{}", common::free_port());
    env.set_env("INFLUXDB_ADMIN_PASSWORD", "pw");
    let (code, stderr) = env.fails(&v1_args(&url, "admin", &[]));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach InfluxDB at {url}")),
        "{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("connect"),
        "the cause: {stderr}"
    );
    assert_eq!(addon_file(&env), None, "nothing changed");

    env.set_env("INFLUXDB_ADMIN_TOKEN", "some-token");
    let (code, stderr) = env.fails(&v2_addon_args(&url, "0000000000000001", WRITE_BUCKETS));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot reach InfluxDB"), "{stderr}");

    env.ok(&v1_args(&url, "admin", &["--skip-verify"]));
    assert!(addon_file(&env).is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn each_addon_refuses_the_other_generation() {
    let db = start_influxd().await;
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.init_control();
    let _control = env.serve();

    // A v2 add-on pointed at a real InfluxDB 1.6.7.
    env.set_env("INFLUXDB_ADMIN_TOKEN", "some-token");
    let (code, stderr) = env.fails(&v2_addon_args(db.url(), v2.org_id(), WRITE_BUCKETS));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("reports InfluxDB 1.") && stderr.contains("influxdb-v1"),
        "{stderr}"
    );
    assert_eq!(addon_file(&env), None, "nothing changed");

    // A v1 add-on pointed at a 2.x server.
    let url = v2.url();
    env.set_env("INFLUXDB_ADMIN_PASSWORD", "pw");
    let (code, stderr) = env.fails(&v1_args(&url, "admin", &[]));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("not 1.x") && stderr.contains("addon configure influxdb"),
        "{stderr}"
    );
    assert_eq!(addon_file(&env), None, "nothing changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_v2_server_passes_with_its_admin_token_only() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.init_control();
    let _control = env.serve();

    let url = v2.url();
    env.set_env("INFLUXDB_ADMIN_TOKEN", "a-token-the-server-never-issued");
    let (code, stderr) = env.fails(&v2_addon_args(&url, v2.org_id(), WRITE_BUCKETS));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("refused the admin credential") && stderr.contains("401"),
        "{stderr}"
    );
    assert_eq!(addon_file(&env), None, "nothing changed");

    env.set_env("INFLUXDB_ADMIN_TOKEN", v2.admin_token());
    let out = env.ok(&v2_addon_args(&url, v2.org_id(), WRITE_BUCKETS));
    assert!(out.contains("yes, InfluxDB v2."), "{out}");
    env.enrolled_identity("app", &[]);
    let lease = env.json(&["lease", "create", "--identity", "app"]);
    assert_eq!(lease["auth_scheme"], "token");
    assert_eq!(v2.authorization_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_refused_with_401_is_an_error_counted_and_retried() {
    let db = start_influxd().await;
    // The add-on's own admin, which the test can take away while the harness's stays.
    db.query("CREATE USER operator WITH PASSWORD 'operator-pw' WITH ALL PRIVILEGES")
        .await
        .unwrap();
    let mut env = Env::new();
    env.init_control();
    let control = env.serve();
    env.set_env("INFLUXDB_ADMIN_PASSWORD", "operator-pw");
    env.ok(&v1_args(db.url(), "operator", &[]));
    env.enrolled_identity("app", &[]);
    let lease = env.json(&["lease", "create", "--identity", "app"]);
    let id = lease["id"].as_str().unwrap().to_owned();
    let user = lease["token"].as_str().unwrap().split_once(':').unwrap().0;

    db.query("DROP USER operator").await.unwrap();
    env.ok(&["lease", "revoke", &id]);
    wait_until(
        Duration::from_secs(30),
        "a second refused revocation",
        || control.log().contains("revocations_refused_total=2"),
    );
    let log = control.log();
    let line = log
        .lines()
        .find(|l| l.contains("revocations_refused_total=1"))
        .unwrap();
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("401") && line.contains("admin credential"),
        "{line}"
    );
    assert!(!log.contains("operator-pw"), "the password leaked:\n{log}");
    let users = db.show_users().await.unwrap();
    assert!(users.iter().any(|(name, _)| name == user), "still there");

    // Once the credential works again, the retries remove the lease's user.
    db.query("CREATE USER operator WITH PASSWORD 'operator-pw' WITH ALL PRIVILEGES")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let users = db.show_users().await.unwrap();
        if !users.iter().any(|(name, _)| name == user) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease user was never removed:\n{}",
            control.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_ca_is_stored_with_the_addon_and_tls_failures_are_named() {
    let ca = TestCa::new().unwrap();
    let db = Influxd::start_https(&ca)
        .await
        .expect("a real influxd (Debian package influxdb) is required");
    assert!(db.url().starts_with("https://"));
    let mut env = Env::new();
    env.init_control();
    let control = env.serve();
    env.set_env("INFLUXDB_ADMIN_PASSWORD", db.admin_password());

    // Without the CA: refused, naming the unknown issuer.
    let (code, stderr) = env.fails(&v1_args(db.url(), db.admin_user(), &[]));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("unknown issuer"), "{stderr}");
    assert!(stderr.contains("--ca-file"), "{stderr}");
    assert_eq!(addon_file(&env), None, "nothing changed");

    // Installed anyway, a lease fails with the TLS cause, in the answer and the log.
    env.ok(&v1_args(db.url(), db.admin_user(), &["--skip-verify"]));
    env.enrolled_identity("app", &[]);
    let (code, stderr) = env.fails(&["lease", "create", "--identity", "app"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("unknown issuer"), "{stderr}");
    assert!(
        control.log().contains("unknown issuer"),
        "{}",
        control.log()
    );

    // With the CA file: verified, stored as PEM in the add-on, and leases work.
    let ca_file = env.home().join("influx-ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let out = env.ok(&v1_args(
        db.url(),
        db.admin_user(),
        &["--ca-file", ca_file.to_str().unwrap()],
    ));
    assert!(out.contains("yes, InfluxDB 1."), "{out}");
    let stored = String::from_utf8(addon_file(&env).unwrap()).unwrap();
    assert!(stored.contains("BEGIN CERTIFICATE"), "the PEM, not a path");
    assert!(!stored.contains("influx-ca.pem"), "the PEM, not a path");
    std::fs::remove_file(&ca_file).unwrap();
    let lease = env.json(&["lease", "create", "--identity", "app"]);
    let user = lease["token"].as_str().unwrap().split_once(':').unwrap().0;
    let users = db.show_users().await.unwrap();
    assert!(users.iter().any(|(name, _)| name == user), "{users:?}");

    // A file that holds no certificate is a usage error.
    let junk = env.home().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let (code, stderr) = env.fails(&v1_args(
        db.url(),
        db.admin_user(),
        &["--ca-file", junk.to_str().unwrap()],
    ));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no PEM certificate"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_for_another_name_is_a_name_mismatch() {
    // Valid for the address only; the add-on names the host `localhost`.
    let ca = TestCa::for_names(&["127.0.0.1"]).unwrap();
    let db = Influxd::start_https(&ca)
        .await
        .expect("a real influxd (Debian package influxdb) is required");
    let mut env = Env::new();
    env.init_control();
    let _control = env.serve();
    env.set_env("INFLUXDB_ADMIN_PASSWORD", db.admin_password());
    let ca_file = env.home().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let by_name = db.url().replace("127.0.0.1", "localhost");
    let (code, stderr) = env.fails(&v1_args(
        &by_name,
        db.admin_user(),
        &["--ca-file", ca_file.to_str().unwrap()],
    ));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("name mismatch"), "{stderr}");
    assert_eq!(addon_file(&env), None, "nothing changed");

    // The same CA by the certificate's own name: verified.
    env.ok(&v1_args(
        db.url(),
        db.admin_user(),
        &["--ca-file", ca_file.to_str().unwrap()],
    ));
}

//! Crash safety of issuing, against a real `influxd`: the control records a lease's
//! intent before it asks InfluxDB for the credential, so a control killed right after
//! InfluxDB created the user (a test-only failure point aborts it there) leaves a record
//! the next start acts on: the user is dropped at the lease's expiry, not at some later
//! sweep.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::setup::{start_influxd, v1_control_with_app};
use common::wait_until;
use leasehold_control::backend::parse_lease_user;
use leasehold_control::failpoint;
use leasehold_testkit::influxd::Influxd;

async fn lease_users(db: &Influxd) -> Vec<String> {
    db.show_users()
        .await
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| parse_lease_user(name).is_some())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_control_killed_after_creating_a_credential_drops_it_at_expiry_after_restart() {
    let db = start_influxd().await;
    let (env, control) = v1_control_with_app(&db, &[r#"WRITE ON "telemetry""#]);
    assert!(control.stop().success());

    // A control that aborts right after InfluxDB created the lease's user.
    let log = env.home().join("aborting-control.log");
    let mut aborting = env
        .command(&["control", "serve"])
        .env(failpoint::ENV, "abort-after-credential-created")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the control to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", env.control_port)).is_ok()
    });
    let (code, stderr) = env.fails(&["lease", "create", "--identity", "app", "--ttl", "8s"]);
    assert_eq!(code, 1, "{stderr}");
    let status = aborting.wait().unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        !status.success() && said.contains("aborting after the credential was created"),
        "the failure point needs a debug build; the control exited {status}:\n{said}"
    );

    // InfluxDB holds a user nobody was told about.
    let users = lease_users(&db).await;
    assert_eq!(users.len(), 1, "{users:?}");
    let (lease_id, expires) = parse_lease_user(&users[0]).unwrap();
    let lease_id = lease_id.to_owned();

    // The next start finds the intent and drops the user once the lease expires.
    let control = env.serve();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !lease_users(&db).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the orphaned user was never dropped:\n{}",
            control.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        leasehold_protocol::Timestamp::now() >= expires,
        "dropped at expiry, not before"
    );
    // By the intent (not only by a sweep): the removal is logged for this lease.
    wait_until(Duration::from_secs(10), "the removal to be logged", || {
        control.log().lines().any(|line| {
            line.contains(&lease_id)
                && line.contains("never issued")
                && line.contains("lease credential removed from InfluxDB")
        })
    });
    // The intent was never a lease anyone held: it is not listed.
    let listed = env.json(&["lease", "list", "--identity", "app"]);
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
}

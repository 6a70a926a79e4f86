//! The real-`influxd` harness against the real binary: these tests fail (never skip)
//! when the Debian package `influxdb` is missing.

use std::path::Path;

use leasehold_testkit::influxd::{Influxd, InfluxdError, TELEMETRY_DB};
use reqwest::StatusCode;

/// Whether `pid` is a live (not reaped) process running influxd.
fn influxd_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("influxd"))
}

async fn create_writer(influxd: &Influxd, user: &str, password: &str, db: &str) {
    influxd
        .query(&format!(
            "CREATE USER \"{user}\" WITH PASSWORD '{password}'; GRANT WRITE ON \"{db}\" TO \"{user}\""
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn starts_with_an_admin_and_the_telemetry_database() {
    let influxd = Influxd::start().await.unwrap();
    assert!(influxd.url().starts_with("http://127.0.0.1:"));
    assert!(influxd_alive(influxd.pid().unwrap()));
    assert_eq!(
        influxd.show_users().await.unwrap(),
        vec![(influxd.admin_user().to_owned(), true)]
    );
    let databases = influxd.query("SHOW DATABASES").await.unwrap();
    assert!(
        databases
            .to_string()
            .contains(&format!("\"{TELEMETRY_DB}\""))
    );
    // Auth is really on: no credentials and wrong credentials are both refused.
    let anonymous = reqwest::Client::new()
        .post(format!("{}/query", influxd.url()))
        .form(&[("q", "SHOW DATABASES")])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = influxd
        .query_as(influxd.admin_user(), "not-the-password", None, "SHOW USERS")
        .await;
    assert!(
        matches!(wrong, Err(InfluxdError::Status { status, .. }) if status == StatusCode::UNAUTHORIZED),
        "{wrong:?}"
    );
}

#[tokio::test]
async fn statement_errors_in_a_200_answer_are_errors() {
    let influxd = Influxd::start().await.unwrap();
    let missing = influxd.query("DROP USER \"nobody\"").await;
    assert!(
        matches!(&missing, Err(InfluxdError::Statement { error, .. }) if error == "user not found"),
        "{missing:?}"
    );
    // The failing statement is found after a succeeding one.
    let second = influxd
        .query("SHOW USERS; SHOW GRANTS FOR \"nobody\"")
        .await;
    assert!(
        matches!(second, Err(InfluxdError::Statement { statement: 1, .. })),
        "{second:?}"
    );
    assert!(matches!(
        influxd.count("no_such_db", "m").await,
        Err(InfluxdError::Statement { .. })
    ));
}

#[tokio::test]
async fn users_grants_writes_and_counts() {
    let influxd = Influxd::start().await.unwrap();
    influxd.create_database("other").await.unwrap();
    create_writer(&influxd, "writer", "s3cret", TELEMETRY_DB).await;

    let mut users = influxd.show_users().await.unwrap();
    users.sort();
    assert_eq!(
        users,
        vec![("admin".to_owned(), true), ("writer".to_owned(), false)]
    );
    assert_eq!(
        influxd.show_grants("writer").await.unwrap(),
        vec![(TELEMETRY_DB.to_owned(), "WRITE".to_owned())]
    );

    assert_eq!(influxd.count(TELEMETRY_DB, "cpu").await.unwrap(), 0);
    let lines = "cpu,host=a usage=1,idle=9\ncpu,host=b usage=2\ncpu,host=a usage=3 1";
    assert_eq!(
        influxd
            .write(TELEMETRY_DB, lines, "writer", "s3cret")
            .await
            .unwrap(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(influxd.count(TELEMETRY_DB, "cpu").await.unwrap(), 3);

    // The grant is enforced: no write to another database, no write with a bad password.
    assert_eq!(
        influxd
            .write("other", "cpu usage=1", "writer", "s3cret")
            .await
            .unwrap(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        influxd
            .write(TELEMETRY_DB, "cpu usage=1", "writer", "wrong")
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(influxd.count("other", "cpu").await.unwrap(), 0);
    assert_eq!(influxd.count(TELEMETRY_DB, "cpu").await.unwrap(), 3);

    influxd.query("DROP USER \"writer\"").await.unwrap();
    assert_eq!(
        influxd
            .write(TELEMETRY_DB, "cpu usage=1", "writer", "s3cret")
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn stop_and_start_again_keep_port_users_and_data() {
    let mut influxd = Influxd::start().await.unwrap();
    create_writer(&influxd, "writer", "pw", TELEMETRY_DB).await;
    let status = influxd
        .write(TELEMETRY_DB, "temp v=1\ntemp v=2 1", "writer", "pw")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let url = influxd.url().to_owned();
    let first_pid = influxd.pid().unwrap();

    influxd.stop().await.unwrap();
    assert_eq!(influxd.pid(), None);
    assert!(!influxd_alive(first_pid));
    // Unreachable while stopped, as a lease's revoker would see it.
    assert!(
        reqwest::get(format!("{url}/ping")).await.is_err(),
        "something still answers on {url}"
    );
    assert!(influxd.show_users().await.is_err());

    influxd.start_again().await.unwrap();
    assert_eq!(influxd.url(), url);
    assert_ne!(influxd.pid(), Some(first_pid));
    assert_eq!(influxd.count(TELEMETRY_DB, "temp").await.unwrap(), 2);
    assert_eq!(
        influxd.show_grants("writer").await.unwrap(),
        vec![(TELEMETRY_DB.to_owned(), "WRITE".to_owned())]
    );
    assert!(matches!(
        influxd.start_again().await,
        Err(InfluxdError::AlreadyRunning)
    ));
}

#[tokio::test]
async fn drop_kills_and_reaps_the_process_and_removes_its_files() {
    let influxd = Influxd::start().await.unwrap();
    let pid = influxd.pid().unwrap();
    let dir = influxd.dir().to_owned();
    assert!(influxd_alive(pid));
    drop(influxd);
    // Drop waits for the child, so the process is gone at once, not eventually.
    assert!(!influxd_alive(pid), "influxd {pid} survived the drop");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_run_side_by_side() {
    let (a, b) = tokio::join!(Influxd::start(), Influxd::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.url(), b.url());
    assert_ne!(a.dir(), b.dir());
    assert_ne!(a.admin_password(), b.admin_password());
    assert_ne!(a.pid(), b.pid());
    a.write(TELEMETRY_DB, "m v=1", a.admin_user(), a.admin_password())
        .await
        .unwrap();
    assert_eq!(a.count(TELEMETRY_DB, "m").await.unwrap(), 1);
    assert_eq!(b.count(TELEMETRY_DB, "m").await.unwrap(), 0);
    // Each server knows only its own admin.
    let cross = b
        .query_as(a.admin_user(), a.admin_password(), None, "SHOW USERS")
        .await;
    assert!(
        matches!(cross, Err(InfluxdError::Status { .. })),
        "{cross:?}"
    );
}

#[test]
fn debug_output_redacts_the_admin_password() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let influxd = runtime.block_on(Influxd::start()).unwrap();
    let debug = format!("{influxd:?}");
    assert!(!debug.contains(influxd.admin_password()), "{debug}");
    assert!(debug.contains("<redacted>"));
}

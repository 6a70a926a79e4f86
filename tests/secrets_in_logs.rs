//! Secrets never reach a log, even at `RUST_LOG=trace`: every process on every path —
//! the control, the proxy (its own lease credential, renewed on a 401) and the CLI
//! (configure, ticket, enroll, lease create) — against InfluxDB v2 (admin token, lease
//! tokens, ticket secrets) and a real InfluxDB 1.x (admin password, lease passwords).
//! (`control_v2.rs` has the control-only scan; this one adds the rest.)

mod common;

use std::process::Output;

use common::setup::start_influxd;
use common::{EVENT_DEADLINE, Env, wait_until};
use leasehold_testkit::v2server::V2Server;

/// Everything the CLI wrote to stderr, at trace level.
#[derive(Default)]
struct CliLogs(String);

impl CliLogs {
    /// Runs `leasehold args` at trace level; must fail; keeps its stderr (errors are a
    /// path too: a refused ticket must not be echoed back).
    fn fails(&mut self, env: &Env, args: &[&str]) {
        let out = env.command(args).env("RUST_LOG", "trace").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "leasehold {args:?} succeeded");
        assert!(stderr.contains("error"), "{stderr}");
        self.0.push_str(&stderr);
    }

    /// Runs `leasehold args` at trace level; must succeed; returns stdout.
    fn ok(&mut self, env: &Env, args: &[&str]) -> String {
        let Output {
            status,
            stdout,
            stderr,
        } = env.command(args).env("RUST_LOG", "trace").output().unwrap();
        let stderr = String::from_utf8_lossy(&stderr);
        assert!(status.success(), "leasehold {args:?}: {stderr}");
        self.0.push_str(&stderr);
        String::from_utf8(stdout).unwrap()
    }
}

/// Enrolls `app` with a fresh ticket, then presents the spent ticket again for `late`
/// (refused), every CLI call logging into `cli`; returns the ticket line.
fn enroll_app_then_replay_ticket(cli: &mut CliLogs, env: &Env) -> String {
    cli.ok(env, &["identity", "create", "app"]);
    let ticket = cli.ok(env, &["ticket", "create"]);
    let ticket_path = env.home().join("app.ticket");
    std::fs::write(&ticket_path, &ticket).unwrap();
    cli.ok(
        env,
        &["enroll", ticket_path.to_str().unwrap(), "--identity", "app"],
    );
    // The spent ticket, again: refused.
    cli.ok(env, &["identity", "create", "late"]);
    cli.fails(
        env,
        &[
            "enroll",
            ticket_path.to_str().unwrap(),
            "--identity",
            "late",
        ],
    );
    ticket
}

/// The secret part of a ticket line `lht1:<control>:<secret>@<addrs>`.
fn ticket_secret(ticket: &str) -> String {
    let before_addrs = ticket.trim().split('@').next().unwrap();
    before_addrs.rsplit(':').next().unwrap().to_owned()
}

/// Asserts that no `(what, secret)` appears in any `(name, log)`.
fn assert_no_leak(logs: &[(&str, String)], secrets: &[(&str, String)]) {
    for (name, log) in logs {
        for (what, secret) in secrets {
            assert!(secret.len() >= 8, "{what} is not a real secret: {secret:?}");
            assert!(
                !log.contains(secret.as_str()),
                "the {what} leaked into the {name} log"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_control_proxy_and_cli_at_trace() {
    let v2 = V2Server::start_default().await.unwrap();
    let env = Env::new();
    let mut cli = CliLogs::default();
    cli.ok(
        &env,
        &[
            "control",
            "init",
            "--listen",
            &format!("127.0.0.1:{}", env.control_port),
        ],
    );
    let control = env.serve_with_log_level("trace");
    let url = v2.url();
    let configure = common::v2_addon_args(&url, v2.org_id(), common::WRITE_BUCKETS);
    let mut configure_cmd = env.command(&configure);
    configure_cmd
        .env("INFLUXDB_ADMIN_TOKEN", v2.admin_token())
        .env("RUST_LOG", "trace");
    let out = configure_cmd.output().unwrap();
    assert!(out.status.success());
    cli.0.push_str(&String::from_utf8_lossy(&out.stderr));

    let ticket = enroll_app_then_replay_ticket(&mut cli, &env);
    let lease: serde_json::Value = serde_json::from_str(&cli.ok(
        &env,
        &["--output", "json", "lease", "create", "--identity", "app"],
    ))
    .unwrap();
    let cli_token = lease["token"].as_str().unwrap().to_owned();

    // The proxy with its own lease; a 401 from upstream makes it renew, so it goes
    // through the renewal path too.
    let proxy = env.proxy_command(
        env.command(&["proxy", "--identity", "app"])
            .env("RUST_LOG", "trace"),
    );
    proxy.wait_ready().await;
    let client = reqwest::Client::new();
    let write = format!(
        "{}/api/v2/write?org={}&bucket=telemetry&precision=s",
        proxy.url(),
        v2.org_name()
    );
    let response = client
        .post(&write)
        .body("cpu v=1 1700000000\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let before_renewal: Vec<String> = v2.authorizations().into_iter().map(|a| a.token).collect();
    // Revoke every lease the proxy could hold, out of band: its next request gets a 401.
    for auth in v2.authorizations() {
        if auth.token != cli_token {
            client
                .delete(format!("{}/api/v2/authorizations/{}", v2.url(), auth.id))
                .header("Authorization", format!("Token {}", v2.admin_token()))
                .send()
                .await
                .unwrap();
        }
    }
    let _ = client
        .post(&write)
        .body("cpu v=2 1700000001\n")
        .send()
        .await
        .unwrap();
    wait_until(EVENT_DEADLINE, "the proxy's renewal after a 401", || {
        v2.authorizations()
            .iter()
            .any(|a| !before_renewal.contains(&a.token))
    });
    let renewed = tokio::time::Instant::now() + EVENT_DEADLINE;
    while client
        .post(&write)
        .body("cpu v=3 1700000002\n")
        .send()
        .await
        .unwrap()
        .status()
        != 204
    {
        assert!(tokio::time::Instant::now() < renewed, "never recovered");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let mut secrets = vec![
        ("admin token", v2.admin_token().to_owned()),
        ("ticket secret", ticket_secret(&ticket)),
        ("CLI lease token", cli_token),
    ];
    // Every token ever issued: the proxy's first and renewed credentials included.
    for token in before_renewal {
        secrets.push(("lease token", token));
    }
    for auth in v2.authorizations() {
        secrets.push(("lease token", auth.token));
    }
    assert!(proxy.log().contains("TRACE"), "trace logging is on");
    assert!(control.log().contains("TRACE"), "trace logging is on");
    let logs = [
        ("control", control.log()),
        ("proxy", proxy.log()),
        ("CLI", cli.0.clone()),
    ];
    assert_no_leak(&logs, &secrets);
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_passwords_stay_out_of_the_control_and_cli_logs_at_trace() {
    let db = start_influxd().await;
    let env = Env::new();
    let mut cli = CliLogs::default();
    cli.ok(
        &env,
        &[
            "control",
            "init",
            "--listen",
            &format!("127.0.0.1:{}", env.control_port),
        ],
    );
    let control = env.serve_with_log_level("trace");
    let out = env
        .command(&[
            "addon",
            "configure",
            "influxdb-v1",
            "--endpoint-url",
            db.url(),
            "--username",
            db.admin_user(),
            "--privileges",
            r#"WRITE ON "telemetry""#,
        ])
        .env("INFLUXDB_ADMIN_PASSWORD", db.admin_password())
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cli.0.push_str(&String::from_utf8_lossy(&out.stderr));
    let ticket = enroll_app_then_replay_ticket(&mut cli, &env);

    let mut secrets = vec![
        ("InfluxDB admin password", db.admin_password().to_owned()),
        ("ticket secret", ticket_secret(&ticket)),
    ];
    for round in 0..2 {
        let lease: serde_json::Value = serde_json::from_str(&cli.ok(
            &env,
            &["--output", "json", "lease", "create", "--identity", "app"],
        ))
        .unwrap();
        let (user, password) = lease["token"].as_str().unwrap().split_once(':').unwrap();
        assert_eq!(
            db.write("telemetry", "m v=1\n", user, password)
                .await
                .unwrap(),
            204,
            "a working credential"
        );
        let id = lease["id"].as_str().unwrap().to_owned();
        secrets.push(("lease password", password.to_owned()));
        // Revoke one (the DROP USER path), let the other stand.
        if round == 0 {
            cli.ok(&env, &["lease", "revoke", &id]);
        }
    }
    assert!(
        control.log().contains("lease issued"),
        "trace logging is on"
    );
    let logs = [("control", control.log()), ("CLI", cli.0.clone())];
    assert_no_leak(&logs, &secrets);
}

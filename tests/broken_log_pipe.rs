//! A closed log pipe (`leasehold proxy 2>&1 | head -1`) must not stop a service: the
//! proxy keeps renewing and serving, `/healthz` stays honest, and SIGTERM still ends
//! both the proxy and the control with exit code 0.

mod common;

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use common::{Env, free_port, wait_until};
use leasehold_testkit::v2server::V2Server;

/// Spawns `command` with stdout and stderr on pipes whose reading ends are closed at
/// once, as when the reader (`head -1`) has exited.
fn spawn_with_closed_pipes(command: &mut Command) -> Child {
    let mut child = command
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    child
}

fn terminate(child: &mut Child) -> ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut status = None;
    wait_until(Duration::from_secs(30), "the process to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

fn renewals(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("leasehold_proxy_lease_renewals_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn services_outlive_a_closed_log_pipe_and_still_stop_on_sigterm() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.init_control();
    let mut control = spawn_with_closed_pipes(&mut env.command(&["control", "serve"]));
    let port = env.control_port;
    wait_until(Duration::from_secs(20), "the control to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // Every admin command makes the control log at debug level into the closed pipe.
    env.configure_v2(&v2, &[]);
    env.enrolled_identity("app", &[]);

    let (listen, admin) = (free_port(), free_port());
    let mut proxy = spawn_with_closed_pipes(&mut env.command(&[
        "proxy",
        "--identity",
        "app",
        "--ttl",
        "3s",
        "--listen",
        &format!("127.0.0.1:{listen}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
    ]));
    let client = reqwest::Client::new();
    let metrics_url = format!("http://127.0.0.1:{admin}/metrics");
    // 3-second leases are renewed about every 2 seconds: three renewals prove the
    // refresher survived many log lines written into the closed pipe.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = match client.get(&metrics_url).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if renewals(&text) >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy stopped renewing with a closed log pipe"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = client
        .get(format!("http://127.0.0.1:{admin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let write = client
        .post(format!(
            "http://127.0.0.1:{listen}/api/v2/write?org={}&bucket=b",
            v2.org_id()
        ))
        .body("cpu v=1\n")
        .send()
        .await
        .unwrap();
    assert_ne!(write.status(), 503, "the proxy holds a lease");

    let proxy_status = terminate(&mut proxy);
    assert!(proxy_status.success(), "proxy exited with {proxy_status}");
    let control_status = terminate(&mut control);
    assert!(
        control_status.success(),
        "control exited with {control_status}"
    );
}

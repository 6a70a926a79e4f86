//! The sidecar's defences, end to end with the real binary: `curl` works and a browser's
//! request is refused, against a real InfluxDB 1.x; silent sockets on the admin port do
//! not make `leasehold health` fail.

mod common;

use std::net::TcpStream;
use std::process::Command;

use common::python::run_python;
use common::setup::{start_influxd, v1_control_with_app};
use common::{ControlProcess, Env};
use leasehold_testkit::influxd::Influxd;

async fn setup() -> (Influxd, Env, ControlProcess) {
    let db = start_influxd().await;
    let (env, control) = v1_control_with_app(&db, &[r#"WRITE ON "telemetry""#]);
    (db, env, control)
}

/// `curl` with `args`; returns (HTTP status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is required");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_writes_and_a_browser_page_is_refused() {
    let (db, env, _control) = setup().await;
    let proxy = env.proxy("app", &[]);
    proxy.wait_ready().await;
    let url = format!("{}/write?db=telemetry", proxy.url());
    let (status, body) = curl(&["-X", "POST", &url, "--data-binary", "curl v=1"]);
    assert_eq!(status, 204, "{body}");
    // What a web page's fetch() sends: refused before anything reaches InfluxDB.
    for headers in [
        &[
            "-H",
            "Origin: https://evil.example",
            "-H",
            "Sec-Fetch-Site: cross-site",
        ][..],
        &["-H", "Host: rebind.evil.example:8086"][..],
    ] {
        let mut args = vec!["-X", "POST", &url, "--data-binary", "page v=1"];
        args.extend_from_slice(headers);
        let (status, body) = curl(&args);
        assert_eq!(status, 403, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], "forbidden");
    }
    assert_eq!(db.count("telemetry", "curl").await.unwrap(), 1);
    assert_eq!(db.count("telemetry", "page").await.unwrap(), 0);
    drop(proxy);

    // Allowed by flag, the same page writes.
    let proxy = env.proxy("app", &["--allow-origin", "https://app.example"]);
    proxy.wait_ready().await;
    let url = format!("{}/write?db=telemetry", proxy.url());
    let (status, body) = curl(&[
        "-X",
        "POST",
        &url,
        "--data-binary",
        "page v=1",
        "-H",
        "Origin: https://app.example",
    ]);
    assert_eq!(status, 204, "{body}");
    assert_eq!(db.count("telemetry", "page").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_sockets_on_the_admin_port_do_not_fail_leasehold_health() {
    let env = Env::new();
    env.init_control();
    let _control = env.serve();
    env.enrolled_identity("app", &[]);
    // No add-on: the proxy never gets a lease, and its liveness must not care.
    let proxy = env.proxy("app", &[]);
    let admin = format!("127.0.0.1:{}", proxy.admin_port);
    let silent: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(&admin).unwrap())
        .collect();
    for _ in 0..3 {
        env.ok(&["health", "--url", &proxy.admin_url("/healthz")]);
    }
    drop(silent);
}

/// Runs `tests/python/keepalive_own_answers.py` against `port`; its JSON summary.
fn keepalive_writes(port: u16, count: usize, body_bytes: usize) -> serde_json::Value {
    let out = run_python(
        "keepalive_own_answers.py",
        &[
            "127.0.0.1",
            &port.to_string(),
            &count.to_string(),
            &body_bytes.to_string(),
        ],
    );
    serde_json::from_str(&out).unwrap()
}

/// The held-out run's client: keep-alive writes of 1 KiB while the proxy holds no lease.
#[tokio::test(flavor = "multi_thread")]
async fn a_keep_alive_client_without_a_lease_gets_503s_and_no_broken_connections() {
    let env = Env::new();
    env.init_control();
    let _control = env.serve();
    env.enrolled_identity("app", &[]);
    // No add-on: no lease ever, every write is the proxy's own 503.
    let proxy = env.proxy("app", &[]);
    let port = proxy.port;
    let small = tokio::task::spawn_blocking(move || keepalive_writes(port, 500, 1024))
        .await
        .unwrap();
    assert_eq!(small["statuses"]["503"], 500, "{small}");
    assert_eq!(small["errors"], 0, "{small}");
    assert_eq!(small["closes"], 0, "{small}");
    assert_eq!(small["connections"], 1, "{small}");
    assert_eq!(small["well_formed"], true, "{small}");
    // 2 MiB bodies are not worth reading: each answer closes, the next one reconnects.
    let large = tokio::task::spawn_blocking(move || keepalive_writes(port, 3, 2 * 1024 * 1024))
        .await
        .unwrap();
    assert_eq!(large["statuses"]["503"], 3, "{large}");
    assert_eq!(large["errors"], 0, "{large}");
    assert_eq!(large["closes"], 3, "{large}");
    assert_eq!(large["well_formed"], true, "{large}");
    drop(proxy);
}

#[test]
fn unusable_allow_lists_exit_2_with_the_entry_named() {
    let env = Env::new();
    for (flag, value, says) in [
        ("--allow-origin", "*", "must be an origin"),
        ("--allow-origin", "http://app.example/path", "no path"),
        ("--allow-host", "app:8086", "without scheme or port"),
    ] {
        let (code, stderr) = env.fails(&["proxy", "--identity", "app", flag, value]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(value) && stderr.contains(says), "{stderr}");
    }
}
